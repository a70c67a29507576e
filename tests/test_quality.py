"""Quality models: closed forms against scipy's own distributions and quadrature."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import integrate, stats

from crowdlib.quality import TruncNormQuality, UniformQuality, get_quality


@settings(max_examples=40, deadline=None)
@given(v=st.floats(0.5, 100), level=st.floats(0.0, 1.0), frac=st.floats(0.0, 1.0))
def test_truncnorm_partial_expectation_matches_quadrature(v, level, frac):
    model = TruncNormQuality()
    beta = frac * v
    mu, sd = level * v, v / 8
    dist = stats.truncnorm((0 - mu) / sd, (v - mu) / sd, loc=mu, scale=sd)
    ref, _ = integrate.quad(dist.sf, beta, v, epsabs=1e-12)
    assert model.partial_expectation(beta, v, level) == pytest.approx(ref, abs=1e-8 * v)


@settings(max_examples=40, deadline=None)
@given(v=st.floats(0.5, 100), level=st.floats(0.01, 1.0), frac=st.floats(0.0, 1.0))
def test_uniform_partial_expectation_matches_quadrature(v, level, frac):
    model = UniformQuality()
    beta = frac * v
    dist = stats.uniform(0, level * v)
    ref, _ = integrate.quad(dist.sf, beta, max(beta, level * v))
    assert model.partial_expectation(beta, v, level) == pytest.approx(ref, abs=1e-9 * v)


def test_truncnorm_expected_max_matches_order_statistic_density():
    # E[max of m] = int x m f(x) F(x)^(m-1) dx, an independent route to the same number
    v, m = 7.0, 3
    dist = stats.truncnorm(-8, 0, loc=v, scale=v / 8)
    ref, _ = integrate.quad(lambda x: x * m * dist.pdf(x) * dist.cdf(x) ** (m - 1), 0, v, epsabs=1e-12)
    assert TruncNormQuality().expected_max_iid(v, m) == pytest.approx(ref, rel=1e-9)


def test_heterogeneous_uniform_expected_max_is_exact():
    # max of U[0,1] and U[0,2]: int_0^1 (1 - x^2/2) + int_1^2 (1 - x/2) = 5/6 + 1/4 = 13/12
    assert UniformQuality().expected_max(2.0, np.array([1.0, 1.0]), np.array([0.5, 1.0])) \
        == pytest.approx(13 / 12, rel=1e-12)


def test_sampling_is_seeded_and_in_range():
    model = TruncNormQuality()
    a = model.sample(np.random.default_rng(3), 5.0, np.array([1.0, 0.5]), (1000, 2))
    b = model.sample(np.random.default_rng(3), 5.0, np.array([1.0, 0.5]), (1000, 2))
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() <= 5.0


def test_get_quality_rejects_unknown_names():
    with pytest.raises(ValueError, match="quality"):
        get_quality("normal")
    with pytest.raises(TypeError, match="quality"):
        get_quality(3)
    with pytest.raises(ValueError, match="sigma_ratio"):
        TruncNormQuality(0.0)


@settings(max_examples=30, deadline=None)
@given(v=st.floats(0.5, 200), levels=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
       name=st.sampled_from(["uniform", "truncnorm"]))
def test_expected_max_quadrature_matches_adaptive_quad(v, levels, name):
    model = get_quality(name)
    efforts = np.ones(len(levels))
    skills = np.array(levels)
    active = skills > 0 if name == "uniform" else np.ones(len(levels), bool)
    pts = sorted({lv * v for lv in levels if 0 < lv * v < v}) if name == "uniform" else None
    ref, _ = integrate.quad(lambda x: 1 - np.prod(model.cdf(x, v, skills[active])), 0, v,
                            points=pts or None, epsabs=1e-12, limit=200)
    full, without = model.expected_max_leave_one_out(v, efforts, skills)
    assert full == pytest.approx(ref, abs=1e-9 * v)
    for i in range(len(levels)):
        keep = np.arange(len(levels)) != i
        assert without[i] == pytest.approx(model.expected_max(v, efforts[keep], skills[keep]), abs=1e-9 * v)
