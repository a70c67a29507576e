"""Regression tests: each hostile input that once gave a wrong answer, a hang, an overflow or
an internal error now gets a correct finite answer or a ValueError/TypeError naming the
parameter."""
import math
import time

import numpy as np
import pytest

from crowdlib import bandits as Bd
from crowdlib import contests as Ct
from crowdlib import contracts as C
from crowdlib import effort as E
from crowdlib import procurement as P


def quick(fn, seconds=5.0):
    t0 = time.perf_counter()
    out = fn()
    assert time.perf_counter() - t0 < seconds, "took too long"
    return out


def test_mechanism2_refuses_prices_that_overflow():
    for mech in (P.mechanism2, P.mechanism2_naive):
        with pytest.raises(ValueError, match="budget / sum"):
            mech([0.5, 0.6], [1e-10, 1e-10], 1e300, "uniform")
    with pytest.raises(ValueError, match="budget / sum"):
        quick(lambda: P.mechanism2([0.5, 0.6], [1e300, 1e300], 1.0))
    with pytest.raises(ValueError, match="budget / sum"):
        quick(lambda: P.mechanism2([0.5, 0.6], [1, 1], 1e-300))
    out = P.mechanism2([0.5, 0.6], [1, 1], 1e6)          # a large but representable budget
    assert np.all(np.isfinite(out.payments)) and out.payments.sum() <= 1e6 * (1 + 1e-12)


def test_tiny_probabilities_are_not_swamped_by_an_absolute_tolerance():
    assert not C.implementable_by_luce([1e-300], 1.69517, [3.74844])
    with pytest.raises(ValueError, match=r"budget must be 3\.74844e-300"):
        C.luce_contract_for([1e-300], 1.69517, [3.74844])


def test_three_level_rule_must_be_standard():
    with pytest.raises(ValueError, match="a"):
        P.three_level_rule(0, 0.5)


def test_percent_of_optimal_below_every_cost_is_refused():
    with pytest.raises(ValueError, match="setting.budget"):
        Bd.percent_of_optimal(Bd.Setting("A", 0.5, 5), ["hais"], 10, 1)


def test_extreme_values_give_finite_answers_or_a_named_refusal():
    assert math.isfinite(E.interior_effort_gap(1e200, "uniform", n_effort=11, n_beta=11))
    with pytest.raises(ValueError, match="budget"):
        P.largeness([0.5], 5e-324)
    k = math.isqrt(int(1e50))                            # Theorem 1 in exact integer arithmetic
    assert quick(lambda: Ct.optimal_participants_uniform(1e50)) == (k - 1 if k * k + k > int(1e50) else k)
    with pytest.raises(ValueError, match="v must be at most"):
        quick(lambda: Ct.optimal_participants(1e300, "truncnorm"))
    with pytest.raises(ValueError, match="tol"):
        quick(lambda: P.best_step_rule_ratio(2, 1e-300))


def test_simulate_refuses_budgets_beyond_exact_contest_counts():
    for pol in ("hais", "epsilon_first", "fkube"):
        with pytest.raises(ValueError, match="budget must be at most"):
            quick(lambda: Bd.simulate(Bd.instance_family("A"), pol, 1e20, 3, 3, 0))
        with pytest.raises(ValueError, match="budget must be at most"):
            quick(lambda: Bd.simulate(Bd.instance_family("A"), pol, 1e300, 3, 3, 0))


def test_helpers_check_their_inputs():
    inst = Bd.instance_family("A")
    state = Bd.State(inst, 500, 5, np.full(2, 500.0), np.zeros((2, inst.arms)), np.zeros((2, inst.arms)),
                     np.zeros((2, inst.arms)))
    with pytest.raises(ValueError, match="p"):
        Bd.hais_targets(state, 20, 1.0)
    with pytest.raises(TypeError, match="state"):
        Bd.hais_targets(None, 20, 0.5)
    with pytest.raises(TypeError, match="state"):
        Bd.HAIS().decide("not a state")
    with pytest.raises(TypeError, match="inst"):
        Bd.hoeffding_targets(1 + 1j, 3.7, [0.5])
    with pytest.raises(ValueError, match="shares"):
        C.bonus_pool([1 / 40] * 40)          # 2^40 outcomes: refused before allocating
    with pytest.raises(TypeError, match="real"):
        P.mechanism2([0.5 + 1j, 0.6], [1, 1], 1.0)
    with pytest.raises(ValueError, match="users"):
        inst.draw(np.full((2, 3), 4), np.random.default_rng(0))
    with pytest.raises(ValueError, match="draws"):
        inst.draw(np.zeros((2, inst.arms), dtype=int), np.random.default_rng(0), "bogus")


def test_quality_models_validate_their_arguments():
    from crowdlib import quality as Q

    for model in (Q.UniformQuality(), Q.TruncNormQuality()):
        with pytest.raises(ValueError, match="level"):
            model.cdf(0.5, 1.0, -1.0)
        with pytest.raises(ValueError, match="v"):
            model.partial_expectation(0.5, math.nan, 1.0)
        with pytest.raises(TypeError, match="rng|size"):
            model.sample("seed", 1.0, 1.0, (3,))
        with pytest.raises(ValueError, match="m"):
            model.expected_max_iid(1.0, -2)
    with pytest.raises(ValueError, match="v"):
        Q.TruncNormQuality().cdf(0.5, 5e-324, 1.0)       # its scale would underflow to 0


def test_the_reference_loop_refuses_sizes_it_would_take_days_over():
    with pytest.raises(ValueError, match="runs"):
        Bd.simulate_loop(Bd.instance_family("C", 5), "hais", 500, 5, 10**9, 0)
