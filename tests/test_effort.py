"""crowdlib.effort: Lemma 1's checker, the extreme-effort threshold, the counterexample."""

import itertools

import numpy as np
import pytest

from crowdlib import effort as e
from crowdlib.quality import TruncNormQuality


@pytest.mark.parametrize("v", [0.5, 3.0, 8.0, 50.0])
def test_lemma2_uniform_satisfies_lemma1(v):
    assert e.lemma1_condition(v, "uniform").holds


def test_lemma1_detects_a_violation_for_truncnorm_at_small_value():
    check = e.lemma1_condition(3.0, "truncnorm")
    assert not check.holds and check.violations.size > 0


def test_lemma1_derivative_matches_eq17_for_uniform():
    v, s = 6.0, 1.0
    check = e.lemma1_condition(v, "uniform", n_effort=51, n_beta=7)
    d, b = np.meshgrid(check.efforts, check.betas, indexing="ij")
    expected = np.where(d * s * v > b, s * v / 2 - b**2 / (2 * s * v * d**2), 0.0)
    mask = np.abs(d * s * v - b) > 1e-3  # away from the kink
    assert np.allclose(check.derivative[mask], expected[mask], atol=1e-5)


def test_threshold_is_where_the_grid_check_changes_sign():
    v_star, _ = e.extreme_effort_threshold()
    assert 2.75 < v_star < 2.76
    assert e.interior_effort_gap(v_star - 0.02, n_effort=4001, n_beta=2001) > 0
    assert e.interior_effort_gap(v_star + 0.02, n_effort=4001, n_beta=2001) <= 1e-12


def test_threshold_barely_depends_on_meaning_of_zero_effort():
    a, _ = e.extreme_effort_threshold(zero_effort="abstain")
    b, _ = e.extreme_effort_threshold(zero_effort="participate")
    assert abs(a - b) < 1e-6


def test_grid_threshold_on_coarse_grid():
    assert e.grid_threshold(np.arange(2.5, 3.01, 0.1), n_effort=401, n_beta=401) == pytest.approx(2.8)


def test_counterexample_optimum_by_brute_force():
    grid = np.round(np.linspace(0, 1, 101), 10)
    best = max(itertools.product(grid, grid), key=lambda p: e.counterexample_welfare(*p))
    assert sorted(best) == [0.0, 0.3]
    assert e.counterexample_welfare(0.3, 0.0) == pytest.approx(0.36)
    assert e.counterexample_welfare(0.3, 0.05) == pytest.approx(0.358)


def test_bad_input():
    with pytest.raises(ValueError, match="zero_effort"):
        e.interior_effort_gap(3.0, zero_effort="nothing")
    with pytest.raises(ValueError, match="effort"):
        e.counterexample_quality(1.5)
    with pytest.raises(ValueError, match="v"):
        e.lemma1_condition(0.0)
    with pytest.raises(ValueError, match="values"):
        e.grid_threshold(np.array([3.0, 2.0]))


def test_threshold_for_wide_spreads_is_checked_against_the_grid():
    v_star, _ = e.extreme_effort_threshold(0.5, zero_effort="participate")
    assert 4.5 < v_star < 4.6
    assert e.interior_effort_gap(v_star - 0.05, TruncNormQuality(0.5), 2001, 1001, "participate") > 0
    assert e.interior_effort_gap(v_star + 0.05, TruncNormQuality(0.5), 2001, 1001, "participate") <= 1e-12
    # under "abstain" an effort near 0 buys a valuable good at this spread: no merge at full effort
    with pytest.raises(ValueError, match="grid_threshold"):
        e.extreme_effort_threshold(0.5, zero_effort="abstain")


def test_threshold_small_spread_limit():
    v_star, _ = e.extreme_effort_threshold(1 / 64)
    assert v_star == pytest.approx(1 / (1 - 2 / np.pi), abs=1e-6)
