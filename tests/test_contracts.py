"""crowdlib.contracts: Luce contracts (Goel & Hann-Caruthers), against exact enumeration."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from crowdlib import contracts as C
from mechanism_properties import Deviation, MechanismCase, MechanismPropertyTests


def brute_force_share(weights, p, priority, i):
    """b_i by listing the others' success sets one by one (independent of crowdlib)."""
    n = len(weights)
    others = [j for j in range(n) if j != i]
    total = 0.0
    for bits in itertools.product([0, 1], repeat=n - 1):
        S = [j for j, b in zip(others, bits) if b] + [i]
        prob = np.prod([p[j] if b else 1 - p[j] for j, b in zip(others, bits)])
        top = min(priority[j] for j in S)
        if priority[i] == top:
            total += prob * weights[i] / sum(weights[j] for j in S if priority[j] == top)
    return total


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_luce_win_probabilities_match_brute_force(n, seed):
    rng = np.random.default_rng(seed)
    w, p, pr = rng.uniform(0.1, 3, n), rng.uniform(0.01, 0.99, n), rng.integers(0, 3, n)
    b = C.luce_win_probabilities(w, p, pr)
    assert np.allclose(b, [brute_force_share(w, p, pr, i) for i in range(n)], atol=1e-13)
    # the general-contract path gives the same b and a = 0 (Luce contracts are FGN)
    a, b2 = C.expected_shares(C.luce_contract_matrix(w, pr), p)
    assert np.allclose(b2, b, atol=1e-13) and np.all(a == 0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 14), seed=st.integers(0, 10_000))
def test_integral_form_equals_enumeration(n, seed):
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(-4, 4, n))
    p = rng.uniform(0.001, 0.999, n)
    exact = C.weighted_win_probabilities(w, p, method="exact")
    assert np.allclose(C.weighted_win_probabilities(w, p, method="integral"), exact, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 7), seed=st.integers(0, 10_000))
def test_equilibrium_is_a_fixed_point_of_best_responses(n, seed):
    rng = np.random.default_rng(seed)
    w, pr = rng.uniform(0.2, 3, n), rng.integers(0, 2, n)
    k = rng.uniform(1.5, 6, n)
    B = float(rng.uniform(0.1, 0.95) * k.min())
    p = C.luce_equilibrium(w, B, k, pr)
    # independent check: best responses computed from the full share array
    a, b = C.expected_shares(C.luce_contract_matrix(w, pr), p)
    assert np.allclose(p, B * (b - a) / k, atol=1e-10)
    # SGE contracts leave no gap (Corollary 1)
    assert abs(C.payment_gap(p, B, k)) < 1e-10


def test_exact_and_integral_equilibria_agree_and_scale():
    rng = np.random.default_rng(5)
    n = 12
    w, k = rng.uniform(0.3, 2, n), rng.uniform(2, 4, n)
    p1 = C.luce_equilibrium(w, 1.5, k, method="exact")
    p2 = C.luce_equilibrium(w, 1.5, k, method="integral")
    assert np.allclose(p1, p2, atol=1e-11)
    big = rng.uniform(0.3, 2, 2000)
    kb = rng.uniform(2, 4, 2000)
    p = C.luce_equilibrium(big, 1.5, kb)
    assert C.foc_residual(p, big, 1.5, kb) < 1e-9
    assert abs(C.payment_gap(p, 1.5, kb)) < 1e-9


def test_general_marginal_cost_callable():
    k = np.array([2.0, 3.0, 4.0])
    p = C.luce_equilibrium([1, 2, 1], 1.2, lambda q: k * q + q ** 3)
    b = C.weighted_win_probabilities([1, 2, 1], p)
    assert np.allclose(k * p + p ** 3, 1.2 * b, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7), seed=st.integers(0, 10_000))
def test_inverse_map_recovers_the_contract(n, seed):
    rng = np.random.default_rng(seed)
    w, pr = rng.uniform(0.2, 3, n), rng.integers(0, 3, n)
    k = rng.uniform(1.5, 5, n)
    B = float(rng.uniform(0.2, 0.95) * k.min())
    p = C.luce_equilibrium(w, B, k, pr)
    assert C.implementable_by_luce(p, B, k)
    w2, pr2 = C.luce_contract_for(p, B, k)
    assert np.allclose(C.luce_equilibrium(w2, B, k, pr2), p, atol=1e-9)
    # the contract is unique (Corollary 2): same share array up to rounding
    assert np.allclose(C.luce_contract_matrix(w2, pr2), C.luce_contract_matrix(w, pr), atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_prefix_check_equals_full_enumeration_of_condition5(n, seed):
    rng = np.random.default_rng(seed)
    p, k = rng.uniform(0.02, 0.9, n), rng.uniform(0.5, 5, n)
    # a budget that makes T = N tight, so only the proper subsets decide
    B = float(np.sum(k * p ** 2) / (1 - np.prod(1 - p)))
    full = all(np.sum((k * p ** 2)[list(T)]) <= B * (1 - np.prod(1 - p[list(T)])) + 1e-12
               for r in range(1, n + 1) for T in itertools.combinations(range(n), r))
    assert C.implementable_by_luce(p, B, k) == full


def test_refusal_names_the_violated_set():
    p, k = np.array([0.6, 0.1]), np.array([3.0, 1.0])
    B = float(np.sum(k * p ** 2) / (1 - np.prod(1 - p)))
    assert not C.implementable_by_luce(p, B, k)
    with pytest.raises(ValueError, match=r"T = \[0\]"):
        C.luce_contract_for(p, B, k)
    with pytest.raises(ValueError, match="equality for T = N"):
        C.luce_contract_for([0.2, 0.2], 1.0, [2.0, 2.0])


@pytest.mark.parametrize("c1,c2,r,x", [(2, 3, 2, 0.928203), (5, 1.5, 0.5, 0.143842),
                                       (1.2, 8, 3, 0.896249), (1.5, 1.5, 2, 0.8166),
                                       (1.5, 6, 2, 0.8592), (6, 1.5, 2, 1.0)])
def test_two_agent_optimal_share_known_values(c1, c2, r, x):
    assert C.two_agent_optimal_share(r, 1.0, c1, c2) == pytest.approx(x, abs=5e-5)


@settings(max_examples=60, deadline=None)
@given(c1=st.floats(1.05, 10), c2=st.floats(1.05, 10), r=st.floats(0.1, 10))
def test_two_agent_optimal_share_beats_a_grid(c1, c2, r):
    x = np.linspace(0, 1, 4001)
    value = (r * (c2 - 1 + x) + (c1 - x)) / (c1 * c2 - x * (1 - x))
    xs = C.two_agent_optimal_share(r, 1.0, c1, c2)
    best = (r * (c2 - 1 + xs) + (c1 - xs)) / (c1 * c2 - xs * (1 - xs))
    assert best >= value.max() - 1e-12
    # and the closed form (4) is the equilibrium of that SGE contract
    p1, p2 = C.two_agent_equilibrium(xs, c1, c2)
    X = C.luce_contract_matrix([max(xs, 1e-300), max(1 - xs, 1e-300)]) if 0 < xs < 1 else None
    if X is not None:
        assert np.allclose(C.contract_equilibrium(X, 1.0, [c1, c2]), [p1, p2], atol=1e-10)


def test_fgn_reduction_keeps_equilibrium_and_minimises_payment():
    rng = np.random.default_rng(3)
    n, B, k = 3, 1.5, np.array([2.0, 3.0, 2.5])
    M = C.outcomes(n)
    X = rng.uniform(0, 1, (8, n)) * np.where(M, 1.0, 0.3)
    X /= X.sum(axis=1, keepdims=True) * 1.05
    p = C.contract_equilibrium(X, B, k)
    Xf = C.fgn_reduction(X, p, B, k)
    assert C.is_fgn(Xf) and not C.is_fgn(X)
    assert np.allclose(C.contract_equilibrium(Xf, B, k, p0=p), p, atol=1e-10)
    assert C.expected_payment(Xf, p, B) == pytest.approx(np.sum(k * p ** 2), abs=1e-12)
    assert C.expected_payment(Xf, p, B) < C.expected_payment(X, p, B)


def test_dominating_profile_for_piece_rate():
    rng = np.random.default_rng(11)
    k = rng.uniform(2, 4, 5)
    B = 1.2
    p = C.contract_equilibrium(C.piece_rate(np.full(5, B / 5), B), B, k)
    q = C.dominating_luce_profile(p, B, k)
    assert np.all(q > p) and abs(C.payment_gap(q, B, k)) < 1e-12
    w, pr = C.luce_contract_for(q, B, k)
    assert np.allclose(C.luce_equilibrium(w, B, k, pr), q, atol=1e-9)


def test_mean_preserving_spread_exact():
    rng = np.random.default_rng(4)
    n, k = 4, rng.uniform(2, 4, 4)
    w = rng.uniform(0.5, 2, n)
    B = 1.3
    p = C.luce_equilibrium(w, B, k)
    luce_pay, pr = C.total_payment_distribution(C.luce_contract_matrix(w), p, B)
    rate_pay, _ = C.total_payment_distribution(C.piece_rate(k * p, float((k * p).sum())), p,
                                               float((k * p).sum()))
    assert pr @ luce_pay == pytest.approx(pr @ rate_pay, abs=1e-12)
    nonempty = np.arange(2 ** n) > 0
    # E[T_x | T_L = B] = B: the piece-rate payment averages B over the non-empty outcomes
    assert (pr[nonempty] @ rate_pay[nonempty]) / pr[nonempty].sum() == pytest.approx(B, abs=1e-12)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,match", [
    (lambda: C.luce_equilibrium([1, -1], 1.0, [2, 2]), "weights"),
    (lambda: C.luce_equilibrium([1, np.nan], 1.0, [2, 2]), "weights"),
    (lambda: C.luce_equilibrium([1, 1], 0.0, [2, 2]), "budget"),
    (lambda: C.luce_equilibrium([1, 1], 1.0, [2, 0]), "cost_coefficients"),
    (lambda: C.luce_equilibrium([1, 1], 1.0, [2, 2, 2]), "cost_coefficients"),
    (lambda: C.luce_equilibrium([1, 1], 3.0, [2, 2]), "Assumption 1"),
    (lambda: C.luce_equilibrium([1, 1], 1.0, [2, 2], priority=[0]), "priority"),
    (lambda: C.implementable_by_luce([0.5, 1.0], 1.0, [2, 2]), "p"),
    (lambda: C.implementable_by_luce([0.5, 0.0], 1.0, [2, 2]), "p"),
    (lambda: C.implementable_by_luce([0.5, 0.2], 1.0, [2, 2, 3]), "cost_coefficients"),
    (lambda: C.luce_contract_for([0.5, np.nan], 1.0, [2, 2]), "p"),
    (lambda: C.luce_contract_for([0.5, 0.2], -1.0, [2, 2]), "budget"),
    (lambda: C.two_agent_optimal_share(1, 1, 1.0, 2), "c1"),
    (lambda: C.two_agent_optimal_share(1, 0, 2, 2), "v2"),
    (lambda: C.two_agent_optimal_share(1, 1, 2, np.nan), "c2"),
])
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call,match", [
    (lambda: C.luce_equilibrium("ab", 1.0, [2, 2]), "weights"),
    (lambda: C.luce_equilibrium([1, 1], "1", [2, 2]), "budget"),
    (lambda: C.luce_equilibrium([1, 1], 1.0, [2, 2], priority=[0.5, 1.5]), "priority"),
    (lambda: C.two_agent_optimal_share(None, 1, 2, 2), "v1"),
])
def test_wrong_types_name_the_parameter(call, match):
    with pytest.raises(TypeError, match=match):
        call()


# ------------------------------------- the shared mechanism checks (IC, IR, budget)
EFFORTS = np.linspace(0, 1, 21)


def _contract_case(label, X, B, k):
    p = C.contract_equilibrium(X, B, k)
    u = C.expected_utilities(X, p, B, k)
    devs = []
    for i in range(len(k)):
        for e in EFFORTS:
            q = p.copy()
            q[i] = e
            devs.append(Deviation(f"agent {i}", f"p = {e:.2f}", u[i], C.expected_utilities(X, q, B, k)[i]))
    pay, _ = C.total_payment_distribution(X, p, B)
    # "revenue" here is the budget left in the worst outcome: never negative
    return MechanismCase(label, float(1 - np.prod(1 - p)), u, float(B - pay.max()), devs)


class TestLuceContracts(MechanismPropertyTests):
    """Luce and weighted contracts: effort is a best response, agents gain, B is never exceeded."""

    budget_balanced = False

    def cases(self):
        k = np.array([2.0, 3.0, 2.5])
        yield _contract_case("equal split", C.equal_split(3), 1.5, k)
        yield _contract_case("weighted", C.weighted_contract([1, 2, 0.5]), 1.5, k)
        yield _contract_case("Luce with priority", C.luce_contract_matrix([1, 2, 1], [0, 1, 1]), 1.5, k)
        yield _contract_case("piece rate", C.piece_rate([0.5, 0.5, 0.5], 1.5), 1.5, k)


def test_two_agent_share_is_stable_at_equal_values():
    # r = 1 + 2^-52 made the textbook form (r - c1 - c2 r + sqrt D)/(r - 1) return 0
    assert abs(C.two_agent_optimal_share(0.1 + 0.2, 0.3, 2, 3) - 0.5) < 1e-12
    for c1, c2 in [(1.01, 10.0), (10.0, 1.01), (2.0, 3.0)]:
        xs = [C.two_agent_optimal_share(1 + d, 1, c1, c2) for d in (-1e-6, -1e-12, 0.0, 1e-12, 1e-6)]
        assert np.all(np.diff(xs) > -1e-14) and abs(xs[2] - 0.5) < 1e-15


def test_integral_equilibrium_with_widely_spread_weights():
    # weights e^-4..e^4 broke Newton-Krylov in p (clipping at 0 flattened the residual)
    rng = np.random.default_rng(7)
    w, k = np.exp(rng.uniform(-4, 4, 300)), rng.uniform(2.0, 6.0, 300)
    p = C.luce_equilibrium(w, 1.5, k)
    assert np.all((p > 0) & (p < 1))
    assert C.foc_residual(p, w, 1.5, k) < 1e-12


def test_inverse_map_applies_assumption1_like_the_forward_map():
    # condition (5) holds, but B >= c_1'(1) = 0.785: luce_equilibrium would refuse the contract
    p, k = np.array([0.822, 0.08, 0.707]), np.array([0.785, 3.466, 2.212])
    B = float(np.sum(k * p**2) / (1 - np.prod(1 - p)))
    assert C.implementable_by_luce(p, B, k) and B >= k.min()
    with pytest.raises(ValueError, match="Assumption 1"):
        C.luce_contract_for(p, B, k)
