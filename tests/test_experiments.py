"""The book's one significance rule (crowdlib.experiments), against hand computations."""
import numpy as np
import pytest
from scipy import stats

from crowdlib import experiments as X


def test_mean_ci_matches_the_textbook_formula():
    x = np.arange(20, dtype=float)
    ci = X.mean_ci(x, level=0.95)
    se = x.std(ddof=1) / np.sqrt(20)
    assert ci.mean == pytest.approx(9.5) and ci.se == pytest.approx(se)
    assert ci.half_width == pytest.approx(stats.t.ppf(0.975, 19) * se)
    assert ci.low < 9.5 < ci.high and ci.clusters == 20


def test_cluster_robust_se_by_hand():
    # 12 clusters of 3 runs; CR1: sqrt(G/(G-1) * sum_g (sum_i (x_gi - xbar))^2) / n
    rng = np.random.default_rng(4)
    x = np.repeat(rng.normal(size=12), 3) + 0.1 * rng.normal(size=36)
    g = np.repeat(np.arange(12), 3)
    xbar = x.mean()
    sums = np.array([np.sum(x[g == k] - xbar) for k in range(12)])
    hand = np.sqrt(12 / 11 * np.sum(sums ** 2)) / 36
    ci = X.mean_ci(x, clusters=g)
    assert ci.se == pytest.approx(hand) and ci.clusters == 12
    assert ci.se > X.mean_ci(x).se * 1.3        # shared instances widen the interval
    # the labels' order does not matter
    perm = rng.permutation(36)
    assert X.mean_ci(x[perm], clusters=g[perm]).se == pytest.approx(hand)


def test_compare_is_welch_with_t_quantiles():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.0, 1.0, 400), rng.normal(0.3, 2.0, 300)
    c = X.compare(a, b, level=0.99)
    se = np.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 300)
    z = (a.mean() - b.mean()) / se
    assert c.z == pytest.approx(z) and c.p_value == pytest.approx(2 * stats.t.sf(abs(z), 299))
    assert c.verdict == ("b ahead" if c.p_value < 0.01 else "indistinguishable")
    same = X.compare(a, a + 1e-3 * rng.normal(size=400), paired=True)
    assert same.verdict == "indistinguishable"
    assert X.compare(a + 1.0, a, paired=True).verdict == "a ahead"


def test_bad_input():
    with pytest.raises(ValueError, match="at least 10"):
        X.mean_ci([1.0, 2.0])
    with pytest.raises(ValueError, match="level"):
        X.mean_ci(np.arange(20.0), level=1.0)
    with pytest.raises(ValueError, match="clusters"):
        X.mean_ci(np.arange(20.0), clusters=np.arange(19))
    with pytest.raises(ValueError, match="clusters"):
        X.mean_ci(np.arange(20.0), clusters=np.repeat([0, 1], 10))
    with pytest.raises(ValueError, match="same length"):
        X.compare(np.arange(20.0), np.arange(30.0), paired=True)
    with pytest.raises(ValueError, match="x"):
        X.mean_ci([np.nan] * 20)


def test_paired_and_clustered_comparisons():
    """Runs that share an instance: the paired, clustered test sees a shift that the unpaired
    one cannot, and its standard error is the CR1 error of the differences."""
    rng = np.random.default_rng(6)
    inst = np.repeat(rng.normal(0, 5, 40), 10)              # 40 instances, 10 runs each
    g = np.repeat(np.arange(40), 10)
    a = inst + rng.normal(0, 0.1, 400)
    b = inst - 0.05 + rng.normal(0, 0.1, 400)
    unpaired = X.compare(a, b, clusters_a=g, clusters_b=g)
    paired = X.compare(a, b, clusters_a=g, paired=True)
    assert unpaired.verdict == "indistinguishable" and paired.verdict == "a ahead"
    assert paired.se == pytest.approx(X.mean_ci(a - b, clusters=g).se)
    with pytest.raises(ValueError, match="clusters_b"):
        X.compare(a, b, clusters_b=g[:10])
    with pytest.raises(ValueError, match="NaN"):
        X.mean_ci(a, clusters=np.where(g == 3, np.nan, g.astype(float)))
