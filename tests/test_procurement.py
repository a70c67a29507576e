"""Tests of crowdlib.procurement (Anari, Goel & Nikzad)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import optimize

from crowdlib import procurement as P
from mechanism_properties import Deviation, MechanismCase, MechanismPropertyTests

RATIO = 1 - 1 / math.e


def _instance(seed, n, zero_share=0.1):
    rng = np.random.default_rng(seed)
    c = rng.exponential(1.0, n) * (rng.random(n) > zero_share)
    u = rng.uniform(0.2, 2.0, n)
    return c, u, float(rng.uniform(0.1, 1.0) * c.sum() + 1e-3)


# ------------------------------------------------------------ the shared IC / IR / budget checks
def _procurement_case(mech, seed, n, reports=np.linspace(0.0, 3.0, 13)):
    c, u, B = _instance(seed, n)
    truth = mech(c, u, B)
    honest, deviating = P.misreport_utilities(mech, c, u, B, reports)
    devs = [Deviation(f"seller {i}", f"report x{f:.3g}", honest[i], deviating[i, k])
            for i in range(n) for k, f in enumerate(reports)]
    return MechanismCase(f"seed={seed} n={n}", truth.value, honest, B - truth.payments.sum(), devs)


class _ProcurementTests(MechanismPropertyTests):
    """Buyer's utility >= 0, sellers IR, budget slack >= 0 (never balanced), truthful."""

    budget_balanced = False
    mech = None

    def cases(self):
        for seed, n in [(1, 4), (2, 7), (3, 10)]:
            yield _procurement_case(type(self).mech, seed, n)


class TestMechanism2Optimal(_ProcurementTests):
    mech = staticmethod(lambda c, u, B: P.mechanism2(c, u, B, "optimal"))


class TestMechanism2Uniform(_ProcurementTests):
    mech = staticmethod(lambda c, u, B: P.mechanism2(c, u, B, "uniform"))


class TestMechanism2Linear(_ProcurementTests):
    mech = staticmethod(lambda c, u, B: P.mechanism2(c, u, B, "linear"))


class TestSingleRateAuction(_ProcurementTests):
    """Section 2: Mechanism 1 with the uniform rule is truthful."""

    mech = staticmethod(lambda c, u, B: P.mechanism1(c, u, B, "uniform"))


def test_mechanism1_optimal_is_not_truthful():
    # the envy-free Mechanism 1(phi*) must fail the shared IC check somewhere
    case = _procurement_case(lambda c, u, B: P.mechanism1(c, u, B, "optimal"), 2, 7)
    assert any(d.deviating_utility > d.truthful_utility + 1e-6 for d in case.deviations)


# ------------------------------------------------------------ properties with hypothesis
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 25), rule=st.sampled_from(["optimal", "uniform", "linear"]),
       who=st.integers(0, 24), factor=st.floats(0.0, 5.0))
def test_budget_ir_and_no_gain_from_a_misreport(seed, n, rule, who, factor):
    c, u, B = _instance(seed, n)
    truth = P.mechanism2(c, u, B, rule)
    assert truth.payments.sum() <= B * (1 + 1e-12)
    assert np.all(truth.payments >= c * truth.allocation - 1e-12)
    assert np.all(truth.rates <= truth.stopping_rate * (1 + 1e-15))         # Lemma 1
    i = who % n
    lie = c.copy()
    lie[i] = factor * max(c[i], 0.1)
    out = P.mechanism2(lie, u, B, rule)
    honest = truth.payments[i] - c[i] * truth.allocation[i]
    assert out.payments[i] - c[i] * out.allocation[i] <= honest + 1e-9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 40))
def test_fractional_optimum_equals_linprog(seed, n):
    c, u, B = _instance(seed, n)
    lp = optimize.linprog(-u, A_ub=[c], b_ub=[B], bounds=[(0, 1)] * n, method="highs")
    assert P.fractional_optimum(c, u, B) == pytest.approx(-lp.fun, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 60))
def test_lemma4_mechanism1_optimal_rule_gets_one_minus_one_over_e(seed, n):
    c, u, B = _instance(seed, n)
    assert P.mechanism1(c, u, B).value >= RATIO * P.fractional_optimum(c, u, B) - 1e-12


# ------------------------------------------------------------ the fast Mechanism 2
@pytest.mark.parametrize("rule", ["optimal", "linear"])
@pytest.mark.parametrize("direct", ["series", True, False], ids=["polynomial", "near-exact", "near-taylor"])
def test_fast_mechanism2_equals_the_naive_definition(rule, direct, monkeypatch):
    if direct != "series":
        monkeypatch.setattr(P, "SERIES_THETA_LIMIT", 0.0)  # the Chebyshev/Taylor kernel
    if direct is False:
        monkeypatch.setattr(P, "NEAR_DIRECT_FACTOR", 0)  # force the Taylor prefix sums
    rng = np.random.default_rng(11)
    for _ in range(15):
        n = int(rng.integers(2, 150))
        c = rng.uniform(0, 1, n) * (rng.random(n) < 0.9)
        u = rng.uniform(0.5, 1.5, n)
        B = float(c.max() / rng.uniform(0.002, 0.2))
        fast, slow = P.mechanism2(c, u, B, rule), P.mechanism2_naive(c, u, B, rule)
        assert np.max(np.abs(fast.allocation - slow.allocation)) < 1e-9
        assert np.max(np.abs(fast.rates - slow.rates)) < 1e-12 * slow.stopping_rate
        assert fast.payments.sum() <= B * (1 + 1e-12)


def test_fast_mechanism2_falls_back_when_the_market_is_small():
    c, u = np.array([0.5, 0.9, 3.0]), np.ones(3)  # theta > 1/4: the naive path
    fast, slow = P.mechanism2(c, u, 1.0), P.mechanism2_naive(c, u, 1.0)
    assert np.allclose(fast.rates, slow.rates, rtol=0, atol=1e-15)


def test_uniform_rule_exact_rates_equal_bisection_on_the_step_function():
    # an equal rule object that is not UNIFORM_RULE goes through the generic bisection path
    generic = P.AllocationRule("uniform-by-bisection", P.UNIFORM_RULE.phi, P.UNIFORM_RULE.unit_payment,
                               None, continuous=False)
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        c = np.round(rng.uniform(0, 2, n), 1)  # ties on purpose
        u = rng.choice([0.5, 1.0, 2.0], n)
        B = float(rng.uniform(0.2, 3))
        exact, slow = P.mechanism2(c, u, B, "uniform"), P.mechanism2(c, u, B, generic)
        assert np.allclose(exact.rates, slow.rates, rtol=1e-12, atol=0)
        assert np.array_equal(exact.allocation, slow.allocation)


def test_taylor_series_of_the_optimal_unit_payment():
    y = np.array([1e-3, 1e-2, 0.1, 0.2])
    coef = P.OPTIMAL_RULE.taylor_at_one(60)
    series = np.polynomial.polynomial.polyval(y, coef)
    assert np.allclose(series, P.OPTIMAL_RULE.unit_payment(1 - y), rtol=1e-13, atol=0)
    assert coef[1] == pytest.approx(math.e - 1)


# ------------------------------------------------------------ known values
def test_block_instance_gives_one_half_for_the_uniform_rule():
    c, u, B = P.market("block", 400, np.random.default_rng(0))
    assert P.mechanism2(c, u, B, "uniform").value / P.fractional_optimum(c, u, B) == pytest.approx(0.5, abs=1e-8)


def test_worst_case_ratios_of_the_two_point_family():
    assert P.worst_case_ratio("optimal")[0] == pytest.approx(RATIO, abs=1e-9)
    assert P.worst_case_ratio("uniform")[0] == pytest.approx(0.5, abs=1e-12)
    R, v = P.best_step_rule_ratio(25)
    assert 0.62 < R < RATIO and np.all(np.diff(v) <= 1e-12) and v[0] == pytest.approx(1.0)


def test_hardness_distribution_and_price():
    assert P.hardness_cdf(0.0) == pytest.approx(1 / math.e)
    assert P.hardness_cdf(1 - 1 / math.e) == 1.0 and P.hardness_cdf(-0.1) == 0.0
    assert P.HARDNESS_PRICE * P.hardness_cdf(P.HARDNESS_PRICE) == pytest.approx(P.HARDNESS_MEAN)
    s = P.sample_hardness_costs(100_000, np.random.default_rng(1))
    assert s.mean() == pytest.approx(P.HARDNESS_MEAN, abs=4 * s.std() / math.sqrt(s.size))
    again = P.sample_hardness_costs(10, np.random.default_rng(1))
    assert np.array_equal(again, P.sample_hardness_costs(10, np.random.default_rng(1)))


def test_rounding_keeps_the_budget_in_expectation():
    c, u, B = P.market("uniform", 500, np.random.default_rng(2))
    m = P.mechanism2(c, u, B)
    spend, items = P.rounded_spend(m.allocation, m.payments, 3000, np.random.default_rng(3))
    assert spend.mean() == pytest.approx(m.payments.sum(), abs=4 * spend.std() / math.sqrt(spend.size))
    assert items.mean() == pytest.approx(m.allocation.sum(), abs=4 * items.std() / math.sqrt(items.size))


def test_three_level_rule_payment_is_myerson():
    rule = P.three_level_rule(0.4, 0.3)
    via_quad = P.AllocationRule.from_phi(rule.phi, "quad", continuous=False)
    x = np.array([0.0, 0.2, 0.39, 0.5, 0.99, 1.0, 1.5])
    assert np.allclose(rule.unit_payment(x), via_quad.unit_payment(x), atol=1e-10)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, match", [
    (lambda: P.mechanism2([1.0, -0.1], [1, 1], 1.0), "costs"),
    (lambda: P.mechanism2([1.0, float("nan")], [1, 1], 1.0), "costs"),
    (lambda: P.mechanism2([1.0, 0.5], [1, 0], 1.0), "utilities"),
    (lambda: P.mechanism2([1.0, 0.5], [1, -2], 1.0), "utilities"),
    (lambda: P.mechanism2([1.0, 0.5], [1], 1.0), "utilities"),
    (lambda: P.mechanism2([1.0, 0.5], [1, 1], 0.0), "budget"),
    (lambda: P.mechanism1([1.0, 0.5], [1, 1], float("inf")), "budget"),
    (lambda: P.mechanism1([], [], 1.0), "costs"),
    (lambda: P.mechanism2([1.0, 0.5], [1, 1], 1.0, rule="quadratic"), "rule"),
    (lambda: P.fractional_optimum([1.0], [1.0, 2.0], 1.0), "utilities"),
    (lambda: P.market("lognormal", 100, np.random.default_rng(0)), "family"),
    (lambda: P.three_level_rule(1.5, 0.2), "a"),
    (lambda: P.two_point_ratio(np.ones_like, np.ones_like, [1.0]), "x"),
    (lambda: P.AllocationRule.from_phi(lambda s: 1 - np.asarray(s), "no zero at 1"), "phi"),
])
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: P.mechanism2("1, 2", [1, 1], 1.0), "costs"),
    (lambda: P.mechanism2([1.0, 2.0], [1, 1], "10"), "budget"),
    (lambda: P.mechanism2([1.0, 2.0], [1, 1], 1.0, rule=3), "rule"),
    (lambda: P.sample_hardness_costs(5, 1.5), "rng"),
    (lambda: P.rounded_spend([0.5], [0.2], 10, None), "rng"),
])
def test_wrong_types_name_the_parameter(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_one_big_seller_gets_an_exact_rate_without_slowing_the_rest():
    # one seller with theta_i near the fast-path limit used to widen everybody's bracket
    rng = np.random.default_rng(9)
    n = 20_000
    c, u = rng.uniform(0, 1, n), rng.uniform(0.5, 1.5, n)
    B = 0.25 * c.sum()
    r1 = P.mechanism1(c, u, B).rate
    c, u = np.append(c, 0.2 * B), np.append(u, 0.2 * B / (r1 * P.OPTIMAL_RULE.unit_payment(0.0)))
    fast = P.mechanism2(c, u, B)
    rho = c / u
    pay = P.OPTIMAL_RULE.unit_payment
    for i in [n, 0, 1, int(np.argmin(np.abs(rho - fast.stopping_rate)))]:  # the big one and a few others
        def excess(r, i=i):
            return r * np.dot(u, pay(rho / r)) + u[i] * r * (pay(0.0) - pay(rho[i] / r)) - B
        root = optimize.brentq(excess, 0.5 * fast.stopping_rate, fast.stopping_rate, xtol=1e-16)
        assert fast.rates[i] == pytest.approx(root, rel=1e-12)
    assert fast.payments.sum() <= B * (1 + 1e-12)


def test_an_overflowing_rate_is_refused_not_looped_on():
    with pytest.raises(ValueError, match="utilities"):
        P.mechanism1([1e10, 1.0], [1e-300, 1.0], 1.0)


@pytest.mark.parametrize("M", [1, 10, 100])
def test_ties_at_the_stopping_rate_in_a_large_market(M):
    """k near-free sellers, M k sellers at rate exactly 1, B = k (1 + M) - 0.01 k: excluding the
    tied sellers buys 1/(1 + M) of OPT; serving them in index order (the default) or sharing the
    leftover buys almost all of it, within budget, for both mechanisms."""
    k = 1000
    c = np.r_[np.full(k, 1e-9), np.ones(M * k)]
    u = np.ones_like(c)
    B = k * (1 + M) - 0.01 * k
    opt = P.fractional_optimum(c, u, B)
    for mech in (P.mechanism1, P.mechanism2):
        excluded = mech(c, u, B, "uniform", ties="exclude")
        assert excluded.value / opt == pytest.approx(1 / (1 + M), rel=1e-6)
        for ties in ("index", "fractional"):
            out = mech(c, u, B, "uniform", ties=ties)
            assert out.value / opt >= 0.99
            assert out.payments.sum() <= B * (1 + 1e-12)
            assert np.all(out.payments >= c * out.allocation - 1e-12)   # IR
        assert mech(c, u, B, "uniform").value == mech(c, u, B, "uniform", ties="index").value


def _gain(mech, c, u, B, reports):
    honest, deviating = P.misreport_utilities(mech, c, u, B, reports)
    return float(np.max(deviating - honest[:, None]))


def test_which_tie_rules_keep_truthfulness():
    """Index order keeps both mechanisms truthful; equal sharing keeps Mechanism 2 truthful but
    lets a seller of Mechanism 1 set the stopping rate at its own rate and sell there."""
    rng = np.random.default_rng(3)
    reports = np.linspace(0, 3, 41)
    worst = {}
    for name, mech in (("m1", P.mechanism1), ("m2", P.mechanism2)):
        for ties in ("index", "exclude", "fractional"):
            g = 0.0
            for _ in range(15):
                c = rng.uniform(0, 1, 8)
                u = rng.uniform(0.5, 1.5, 8)
                g = max(g, _gain(lambda c_, u_, b_: mech(c_, u_, b_, "uniform", ties=ties),
                                 c, u, 0.25 * c.sum(), reports))
            c = np.array([0.2, 1.0, 1.0, 1.0, 0.5])      # three sellers tied at the stopping rate
            g = max(g, _gain(lambda c_, u_, b_: mech(c_, u_, b_, "uniform", ties=ties), c, np.ones(5),
                             2.6, np.r_[reports, 1.0 / np.maximum(c, 0.1)]))
            worst[name, ties] = g
    assert all(worst[k] <= 1e-12 for k in worst if k != ("m1", "fractional")), worst
    assert worst["m1", "fractional"] > 1e-3


def test_ties_must_be_named():
    with pytest.raises(ValueError, match="ties must be one of"):
        P.mechanism1([1.0], [1.0], 1.0, ties="share")


def test_worst_case_lp_recovers_the_known_worst_cases():
    assert P.worst_case_lp("uniform").ratio == pytest.approx(0.5, abs=1e-5)
    assert P.worst_case_lp("optimal").ratio == pytest.approx(1 - 1 / np.e, abs=1e-5)
    three = P.worst_case_lp(P.three_level_rule(0.62, 0.01))
    assert three.ratio < 0.5 < P.worst_case_ratio(P.three_level_rule(0.62, 0.01))[0]
    assert P.worst_case_lp(P.three_level_rule(0.6, 0.5)).ratio == pytest.approx(5 / 9, abs=1e-5)


def test_chapter_experiments_live_in_the_library():
    c, u, B = P.random_instance(20, 5)
    assert c.shape == u.shape == (20,) and B > 0
    assert P.unit_integral_optimum([0.5, 0.1, 0.3], 0.45) == 2
    bought, spend, cut = P.hardness_rule_spend(lambda s: 1.0)
    assert bought == pytest.approx(1.0) and spend == pytest.approx(cut, abs=1e-9)
    hs = P.hardness_experiment([50], reps=2, seed=1)
    assert 0.4 < hs["posted"][0] < 1.0 and 0.4 < hs["mech2"][0] <= 1.0
    sm = P.small_market_experiment([20], reps=3, seed=1)
    assert sm["worst"][0] <= sm["mech2"][0]
    c2, u2, B2 = P.two_point_market(200, 0.3)
    assert P.mechanism1(c2, u2, B2).rate == pytest.approx(1.0)


def test_worst_case_lp_matches_mechanism_1_on_the_instance_it_returns():
    """The LP's instance, spread over many small sellers, gives Mechanism 1 the LP's ratio; and
    grid rates a few ulps from a jump are not left to fake a tie."""
    for rule in (P.three_level_rule(0.35, 0.5), P.three_level_rule(0.62, 0.01), "uniform"):
        wc = P.worst_case_lp(rule)
        per = 2000
        u = np.repeat(wc.masses / per, per)
        c = np.repeat(wc.rates, per) * u                 # cost = rate x utility
        keep = u > 0
        ratio = P.mechanism1(c[keep], u[keep], wc.budget, rule).value / P.fractional_optimum(
            c[keep], u[keep], wc.budget)
        assert ratio == pytest.approx(wc.ratio, abs=0.02), (rule, ratio, wc.ratio)
    near = P.worst_case_lp(P.three_level_rule(np.nextafter(0.6, 0), 0.5)).ratio
    assert near == pytest.approx(5 / 9, abs=1e-5)
    two_step = lambda x: np.where(x < 0.5, 1.0, np.where(x < 1, 0.5, 0.0))
    found = P.AllocationRule.from_phi(two_step, "two-step", continuous=False)
    assert found.jumps == (0.5,) and found.steps == ((0.5, 0.25), (1.0, 0.5))
    undeclared = P.AllocationRule("two-step", two_step, found.unit_payment, continuous=False)
    with pytest.raises(ValueError, match="jumps"):
        P.worst_case_lp(undeclared)


def test_index_ties_are_exact_at_large_scale():
    c, u = np.array([0.0, 0.5e9, 5e9]), np.full(3, 1e9)
    for mech in (P.mechanism1, P.mechanism2):
        honest, dev = P.misreport_utilities(lambda c_, u_, b_: mech(c_, u_, b_, "uniform"), c, u, 1.5e9,
                                            [1.0, 1 + 4.9e-13, 1 - 1e-13])
        assert np.max(dev - honest[:, None]) <= 0.0
        assert mech(c, u, 1.5e9, "uniform").payments.sum() <= 1.5e9


def test_experiment_drivers_check_their_input():
    with pytest.raises(TypeError, match="sizes"):
        P.hardness_experiment(5, reps=1, seed=1)
    with pytest.raises(ValueError, match="sizes"):
        P.hardness_experiment([1], reps=1, seed=1)
    with pytest.raises(ValueError, match="seed"):
        P.small_market_experiment([10], reps=1, seed=-1)
    a = P.small_market_experiment([10], reps=2, seed=np.random.SeedSequence(3))
    b = P.small_market_experiment([10], reps=2, seed=np.random.SeedSequence(3))
    assert np.array_equal(a["mech2"], b["mech2"])
    with pytest.raises(ValueError, match="buy something"):
        P.hardness_rule_spend(lambda s: 0.0)
    with pytest.raises(ValueError, match="non-increasing"):
        P.hardness_rule_spend(lambda s: s)
    with pytest.raises(TypeError, match="rng"):
        P.random_instance(5, None)
    with pytest.raises(ValueError, match="a must be"):
        P.three_level_rule(0.0, 0.5)
    assert P.unit_integral_optimum([0.1, 0.2, 0.3], 0.6) == 3


def test_a_few_wide_sellers_no_longer_force_the_quadratic_path():
    """Sellers with theta_i above the fast path's limit get their own exact search; the others
    keep the fast path; the result equals the naive method (ties and theta_i up to 0.9)."""
    import warnings

    rng = np.random.default_rng(11)
    for trial in range(20):
        n = int(rng.integers(30, 300))
        c, u = rng.uniform(0, 1, n), rng.uniform(0.5, 1.5, n)
        B = 0.25 * c.sum()
        idx = rng.choice(n, 3, replace=False)
        c[idx], u[idx] = rng.uniform(0.3, 0.9, 3) * B, rng.uniform(50, 500, 3)
        c[idx[0]] = c[idx[1]]                                   # a tie among them
        for rule in ("optimal", "linear"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")                  # no fallback warning
                fast = P.mechanism2(c, u, B, rule)
            naive = P.mechanism2_naive(c, u, B, rule)
            assert fast.path == "fast"
            assert np.allclose(fast.rates, naive.rates, rtol=1e-12, atol=0)
            assert np.allclose(fast.payments, naive.payments, rtol=0, atol=1e-12 * B)


def test_step_rules_are_exact_in_n_log_n():
    """The three-level rule's rates by the search over pieces equal the definition's, for every
    tie mode, with ties and a zero cost; no quadratic path on a large market."""
    import warnings

    rng = np.random.default_rng(5)
    for trial in range(24):
        n = int(rng.integers(5, 200))
        c, u = rng.uniform(0, 1, n), rng.uniform(0.5, 1.5, n)
        B = rng.uniform(0.05, 0.6) * c.sum()
        c[: n // 3] = c[0]
        c[1] = 0.0
        rule = P.three_level_rule(rng.uniform(0.1, 0.95), rng.uniform(0, 1))
        for ties in ("index", "fractional", "exclude"):
            fast, naive = P.mechanism2(c, u, B, rule, ties=ties), P.mechanism2_naive(c, u, B, rule, ties=ties)
            assert fast.path == "steps"
            assert np.allclose(fast.rates, naive.rates, rtol=1e-12, atol=0)
            assert np.allclose(fast.allocation, naive.allocation, atol=1e-12)
            assert np.allclose(fast.payments, naive.payments, atol=1e-12 * B)
    c = rng.uniform(0, 1, 20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = P.mechanism2(c, np.ones(c.size), 0.25 * c.sum(), P.three_level_rule(0.5, 0.6))
    assert big.path == "steps" and big.payments.sum() <= 0.25 * c.sum() * (1 + 1e-12)


# ------------------------------------------------------------ the kernels of crowdlib._m2kernels
@pytest.mark.parametrize("rule", [P.OPTIMAL_RULE, P.LINEAR_RULE])
def test_stretch_series_equal_the_payment_they_expand(rule):
    """``G(1 + t; x) = (1 + t) p(x / (1 + t))`` against its series, inside the radius."""
    x = np.array([0.0, 1e-9, 0.3, 0.7, 0.95, 1 - 1e-12])
    for t in (-0.2, -1e-3, -1e-9, 0.0, 1e-4):
        series = rule.series(x, 40)
        powers = t ** np.arange(41)[:, None]
        direct = (1 + t) * rule.unit_payment(np.minimum(x / (1 + t), 1.0))
        active = x < 1 + t
        assert np.allclose((series * powers).sum(axis=0)[active], direct[active], rtol=0, atol=1e-14)
    w = np.linspace(0.5, 2.0, x.size)
    assert np.allclose(rule.series(x, 5, w), rule.series(x, 5) @ w, rtol=1e-14)


def _crossing_market(rng, n):
    """A market where many sellers' rates sit inside the bulk bracket (ties at the top): the
    roots of many sellers fall below the near sellers' rates (lower pieces)."""
    c = rng.uniform(0, 1, n)
    u = rng.uniform(0.5, 1.5, n)
    B = 0.3 * c.sum()
    r = P.mechanism1(c, u, B).rate
    k = n // 10
    c[:k] = r * u[:k] * (1 - rng.uniform(0, 3.0 / n, k))     # rates just below r*
    return c, u, B


def test_polynomial_kernel_roots_on_lower_pieces_equal_the_definition(monkeypatch):
    from crowdlib import _m2kernels as M

    calls = []
    real_newton = M._newton

    def spy(A, b, t, lo, hi):
        calls.append(t.size)
        return real_newton(A, b, t, lo, hi)

    monkeypatch.setattr(M, "_newton", spy)
    rng = np.random.default_rng(3)
    for n in (400, 1500):
        c, u, B = _crossing_market(rng, n)
        for rule in ("optimal", "linear"):
            calls.clear()
            fast, slow = P.mechanism2(c, u, B, rule), P.mechanism2_naive(c, u, B, rule)
            assert len(calls) >= 2                      # some roots were moved to lower pieces
            assert np.allclose(fast.rates, slow.rates, rtol=1e-12, atol=0)


def test_step_kernel_with_four_steps_equals_the_definition():
    """A hand-made four-step rule (p decreasing, steps at 0.2, 0.5, 0.8, 1) through the exact
    search, against Mechanism 1 per seller; ties and zero costs included."""
    t = np.array([0.2, 0.5, 0.8, 1.0])
    phi_levels = np.array([1.0, 0.7, 0.4, 0.2])           # phi on [0, .2), [.2, .5), [.5, .8), [.8, 1)

    def phi(x):
        x = np.asarray(x, dtype=float)
        return np.where(x < 1.0, phi_levels[np.minimum(np.searchsorted(t, x, side="right"), 3)], 0.0)

    # p(x) = x phi(x) + int_x^1 phi = sum_s v_s [x < t_s] with v_s = t_s (phi_s - phi_{s+1})
    v = t * (phi_levels - np.append(phi_levels[1:], 0.0))

    def pay(x):
        x = np.asarray(x, dtype=float)
        return (v[:, None] * (x.ravel()[None, :] < t[:, None])).sum(axis=0).reshape(x.shape)

    rule = P.AllocationRule("four-step", phi, pay, None, continuous=False, jumps=(0.2, 0.5, 0.8),
                            steps=tuple(zip(t, v)))
    x = np.linspace(0, 1.2, 241)
    integral = np.array([np.sum(phi(np.linspace(xi, 1, 20001)[:-1])) / 20000 * (1 - xi) for xi in x])
    assert np.allclose(pay(x), x * phi(x) + integral, atol=2e-4)   # the steps are p's
    rng = np.random.default_rng(8)
    for _ in range(12):
        n = int(rng.integers(5, 120))
        c = np.round(rng.uniform(0, 1, n), 2) * (rng.random(n) > 0.1)
        u = rng.choice([0.5, 1.0, 1.5], n)
        B = float(rng.uniform(0.05, 0.8) * c.sum() + 1e-3)
        for ties in P.TIE_MODES:
            fast, slow = P.mechanism2(c, u, B, rule, ties=ties), P.mechanism2_naive(c, u, B, rule, ties=ties)
            assert fast.path == "steps"
            assert np.allclose(fast.rates, slow.rates, rtol=1e-12, atol=0)
            assert np.allclose(fast.payments, slow.payments, rtol=0, atol=1e-12 * B)


@pytest.mark.parametrize("rule", ["optimal", "linear", "uniform", "three"])
def test_large_market_rates_equal_each_sellers_own_search(rule):
    """At 2 * 10^5 sellers (beyond the naive method), a sample of sellers' rates against the
    definition: Mechanism 1's stopping rate with that seller's cost set to 0, by the bracketing
    search, independently of the kernels. An outlier at theta = 0.5 included."""
    rng = np.random.default_rng(21)
    n = 200_000
    c, u = rng.uniform(0, 1, n), rng.uniform(0.5, 1.5, n)
    B = 0.25 * c.sum()
    c[0], u[0] = 0.5 * B, 4 * B        # cost half the budget, a third of all utility
    rl = P.three_level_rule(0.5, 0.6) if rule == "three" else P.get_rule(rule)
    out = P.mechanism2(c, u, B, rl)
    assert out.path in ("fast", "uniform", "steps")
    p0 = float(rl.unit_payment(np.zeros(1))[0])
    assert min(c[0], u[0] * out.stopping_rate * p0) / B == 0.5       # theta_0 = 0.5 indeed
    generic = P.AllocationRule("by-bisection", rl.phi, rl.unit_payment, None, continuous=rl.continuous)
    rho = c / u
    for i in [0, *rng.choice(n, 6, replace=False)]:
        saved, rho[i] = rho[i], 0.0
        r_i = P._stopping_rate(generic, rho, u, B)
        rho[i] = saved
        assert out.rates[i] == pytest.approx(r_i, rel=1e-12, abs=0), i


def test_step_breakpoints_agree_with_the_rule_to_the_ulp():
    """fl(rho / a) can be one ulp off the last rate at which rho / r >= a; a seller whose rate
    lands there would be paid a step the budget did not count (1/0.9 is not exact)."""
    rl = P.three_level_rule(0.9, 0.1)
    fast, slow = P.mechanism2([1.0, 1.0], [1.0, 1.0], 1.5, rl), P.mechanism2_naive([1.0, 1.0], [1.0, 1.0], 1.5, rl)
    assert fast.payments.sum() <= 1.5 and np.allclose(fast.payments, slow.payments, atol=1e-15)
    c = np.tile(np.arange(1.0, 11.0), 10_000)
    for a in (0.9, 0.7, 0.3):
        out = P.mechanism2(c, np.ones(c.size), 165_000.0, P.three_level_rule(a, 0.5))
        assert out.payments.sum() <= 165_000.0 * (1 + 1e-15)
    from crowdlib._m2kernels import breakpoints
    rho = np.random.default_rng(2).uniform(0, 5, 10_000)
    for t in (0.9, 0.7, 1 / 3, 0.5):
        b = breakpoints(rho, t)
        assert np.all(rho / b >= t) and np.all(rho / np.nextafter(b, np.inf) < t)


def test_many_tiny_utilities_after_a_large_one_keep_the_budget():
    """A plain cumsum rounds every 1e-16 away after a 1: the rate then overspends by 1e-10."""
    import math

    from crowdlib._m2kernels import prefix_sum

    n = 200_000
    rho = np.concatenate([[0.5], np.linspace(0.5000001, 1, n)])
    u = np.concatenate([[1.0], np.full(n, 1e-16)])
    for rule in ("uniform", P.three_level_rule(0.5, 0.5)):
        assert P.mechanism2(rho * u, u, 0.9, rule).payments.sum() <= 0.9 * (1 + 2e-15)
    assert P.mechanism1(rho * u, u, 0.9, "uniform").payments.sum() <= 0.9 * (1 + 2e-15)
    x = np.random.default_rng(0).exponential(1.0, 50_000) * np.where(np.arange(50_000) % 7, 1e-14, 1.0)
    ps = prefix_sum(x)
    for k in (0, 10, 999, 49_999):
        assert abs(ps[k] - math.fsum(x[: k + 1])) <= 2e-16 * ps[k]


def test_second_referee_regressions():
    """Pairwise sums keep the budget with many tiny payments; a tiny p(0) cannot overflow the
    payments (refused when the stopping rate itself would); extreme rates raise no warnings;
    malformed steps are refused."""
    import math
    import warnings

    n = 100_000
    u = np.r_[1.0, np.full(n, 1e-16)]
    c = np.r_[0.0, np.linspace(0.5, 0.9, n)] * u
    for rule in ("linear", "optimal"):
        assert math.fsum(P.mechanism2(c, u, 0.9, rule).payments) <= 0.9 * (1 + 4e-15)
    assert math.fsum(P.mechanism1(c, u, 0.9, P.three_level_rule(0.5, 0.5)).payments) <= 0.9 * (1 + 4e-15)
    pay = P.mechanism2([1e16, 1e16], [1e16, 1e16], 2e283, P.three_level_rule(1e-13, 0.0)).payments
    assert np.all(np.isfinite(pay)) and pay.sum() <= 2e283 * (1 + 1e-15)
    with pytest.raises(ValueError, match="p\\(0\\)"):
        P.mechanism2([1.0], [1.0], 1e280, P.three_level_rule(1e-30, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.mechanism2([1.7e308, 1.0], [1.0, 1.0], 1.0, P.three_level_rule(0.9, 0.1))
        P.mechanism2([1e300, 1.0], [1.0, 1.0], 1.0, P.three_level_rule(1e-9, 0.5))
        P.mechanism2([1e-310, 1.0], [1.0, 1.0], 1.0, "uniform")
    with pytest.raises(ValueError, match="steps"):
        P.AllocationRule("bad", P.UNIFORM_RULE.phi, P.UNIFORM_RULE.unit_payment, None, continuous=False,
                         steps=((0.5, 1.0),))
    with pytest.raises(ValueError, match="steps must describe"):
        P.AllocationRule("bad", P.UNIFORM_RULE.phi, P.UNIFORM_RULE.unit_payment, None, continuous=False,
                         steps=((0.5, 0.5), (1.0, 0.5)))


@pytest.mark.parametrize("rule", ["uniform", "three", "three-0.9"])
def test_step_kernel_window_subset_and_whole_market_agree(rule, monkeypatch):
    """On large markets the step kernel builds only a window of pieces around a sample's
    stopping rate (else the sorted subset below a cap, else the whole market). The three routes,
    each forced in turn, give the same rates on markets with ties, zero costs and a heavy
    seller; the uniform rule's rates are also compared with the independent piece search of
    Mechanism 1 (``_uniform_stopping_rates``)."""
    from crowdlib import _m2kernels as M

    rl = {"uniform": P.UNIFORM_RULE, "three": P.three_level_rule(0.5, 0.6),
          "three-0.9": P.three_level_rule(0.9, 0.3)}[rule]
    rng = np.random.default_rng(17)
    n = 30_000
    markets = []
    c, u = np.round(rng.uniform(0, 1, n), 2) * (rng.random(n) > 0.05), rng.choice([0.5, 1.0, 1.5], n)
    markets.append((c, u, 0.3 * c.sum()))
    c2, u2 = rng.uniform(0, 1, n), rng.lognormal(0, 1, n)
    B2 = 0.2 * c2.sum()
    c2[5], u2[5] = 0.3 * B2, 2 * B2                          # a heavy seller with theta = 0.3
    markets.append((c2, u2, B2))
    for c, u, B in markets:
        routes = {}
        for route in ("window", "subset", "whole"):
            with monkeypatch.context() as m:
                if route == "subset":
                    m.setattr(M, "WINDOW_FACTOR", 1.0 + 1e-9)   # the window misses r*
                if route == "whole":
                    m.setattr(M, "SAMPLE_MIN_N", 10 * n)
                routes[route] = P.mechanism2(c, u, B, rl)
        for route in ("subset", "whole"):
            assert routes[route].stopping_rate == pytest.approx(routes["window"].stopping_rate, rel=1e-14)
            assert np.allclose(routes[route].rates, routes["window"].rates, rtol=1e-13, atol=0), route
        out = routes["window"]
        assert out.payments.sum() <= B * (1 + 1e-13) and np.all(out.rates <= out.stopping_rate)
        if rule == "uniform":
            rho = c / u
            ref = P._uniform_stopping_rates(rho, u, B, u, rho)
            assert np.allclose(np.where(c == 0, out.stopping_rate, ref), out.rates, rtol=1e-14, atol=0)


@pytest.mark.parametrize("rule", ["optimal", "uniform", "linear", "three"])
def test_phi_and_payment_agree_with_the_rules_two_functions(rule):
    """A rule's one-pass ``outcome`` gives exactly ``phi`` and ``unit_payment``; phi* is 1 at 0,
    0 from 1 on, and matches 1 + ln(1 - (1 - 1/e) x) closely (more accurately near 1)."""
    rl = P.three_level_rule(0.4, 0.7) if rule == "three" else P.get_rule(rule)
    x = np.concatenate([np.linspace(0, 1.5, 3001), [0.4, np.nextafter(0.4, 0), np.nextafter(1.0, 0), 1.0]])
    a, p = rl.phi_and_payment(x)
    assert np.array_equal(a, rl.phi(x)) and np.array_equal(p, rl.unit_payment(x))
    if rule == "optimal":
        assert a[0] == 1.0 and np.all(a[x >= 1] == 0.0)
        ref = 1.0 + np.log1p(-(1 - 1 / np.e) * np.minimum(x, 1.0))
        assert np.allclose(a[x < 1], ref[x < 1], rtol=0, atol=4e-16)


def test_step_kernel_with_every_seller_wide(monkeypatch):
    """The large-market step kernel on a market where every seller's bracket is wide (forced at
    small n): no own windows, the same rates as the definition."""
    from crowdlib import _m2kernels as M

    monkeypatch.setattr(M, "SAMPLE_MIN_N", 2)
    c, u = np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4)
    for rule in ("uniform", P.three_level_rule(0.5, 0.6)):
        assert np.allclose(P.mechanism2(c, u, 5.0, rule).rates, P.mechanism2_naive(c, u, 5.0, rule).rates,
                           rtol=1e-12, atol=0)
