"""Exact draws of an arm's total tasks from its precomputed law (crowdlib.bandits.total_law),
against per-user draws and against an independent convolution."""
import numpy as np
import pytest
from scipy import stats

from crowdlib import bandits as Bd


def test_total_law_is_the_convolution_power_of_scipys_betabinom():
    R, mean, kappa = 20, 7.0, 2.0
    one = stats.betabinom.pmf(np.arange(R + 1), R, kappa * mean / R, kappa * (1 - mean / R))
    direct = one.copy()
    for _ in range(4):
        direct = np.convolve(direct, one)                 # five users, by direct convolution
    assert np.allclose(Bd.total_law(R, mean, kappa, 5), direct, atol=1e-14)
    assert Bd.total_law(R, 0.0, kappa, 3).tolist() == [1.0] + [0.0] * 60     # a degenerate arm
    assert Bd.total_law(R, 20.0, kappa, 2)[-1] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="m"):
        Bd.total_law(R, mean, kappa, 0)


@pytest.mark.parametrize("users", [1, 7, 40, 600, 5000])
def test_law_draws_match_per_user_draws(users):
    """Mean and variance against the formulas, and a chi-square test of the law draws against
    the exact law, on cells of 1 to 5000 users (the largest split into exactly drawn blocks)."""
    inst = Bd.instance_family("C", 20)
    arm = 3
    u = np.zeros((20000, inst.arms), dtype=np.int64)
    u[:, arm] = users
    law = inst.draw(u, np.random.default_rng(users), "law")[:, arm]
    mean, var = users * inst.mean_tasks[arm], users * inst.user_variance()[arm]
    assert abs(law.mean() - mean) < 5 * np.sqrt(var / law.size)
    assert law.var() == pytest.approx(var, rel=0.06)
    if users * inst.max_tasks + 1 <= Bd.LAW_MAX_SUPPORT:
        pmf = Bd.total_law(inst.max_tasks, inst.mean_tasks[arm], inst.dispersion, users)
        # pool the support into 30 bins of about equal probability, then chi-square
        edges = np.searchsorted(np.cumsum(pmf), np.linspace(0, 1, 31)[1:-1])
        edges = np.unique(edges)
        expected = np.diff(np.concatenate([[0.0], np.cumsum(pmf)[edges], [1.0]])) * law.size
        observed = np.bincount(np.searchsorted(edges, law, side="left"), minlength=edges.size + 1)
        chi2 = ((observed - expected) ** 2 / expected).sum()
        assert stats.chi2.sf(chi2, edges.size) > 1e-4
    if users <= 40:   # per-user draws are the reference model; compare the two samples
        ref = inst.draw(u[:4000], np.random.default_rng(users + 1), "exact")[:, arm]
        assert stats.ks_2samp(law, ref).pvalue > 1e-4


def test_blocks_keep_large_cells_exact():
    inst = Bd.ISPInstance([1.0], [1], [5.0], max_tasks=20)
    big = (Bd.LAW_MAX_SUPPORT // 20) * 3 + 17                # three whole blocks and a remainder
    x = inst.draw(np.full((4000, 1), big), np.random.default_rng(0), "law")[:, 0]
    assert abs(x.mean() - big * 5.0) < 5 * np.sqrt(big * inst.user_variance()[0] / x.size)
    assert x.var() == pytest.approx(big * inst.user_variance()[0], rel=0.08)


def test_law_draws_keep_the_skew_the_normal_approximation_loses():
    inst = Bd.ISPInstance([1.0], [1], [2.0], max_tasks=20, dispersion=0.5)   # a skewed user law
    u = np.full((40000, 1), 30)
    law = inst.draw(u, np.random.default_rng(3), "law")[:, 0]
    normal = inst.draw(u, np.random.default_rng(3), "auto")[:, 0]
    exact_pmf = Bd.total_law(20, 2.0, 0.5, 30)
    q01 = int(np.searchsorted(np.cumsum(exact_pmf), 0.01))
    assert abs(np.quantile(law, 0.01) - q01) <= 1
    assert stats.skew(law) > 0.3 and abs(stats.skew(normal)) < 0.15
