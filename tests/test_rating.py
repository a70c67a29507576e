"""Tests of crowdlib.rating (Lu et al., rating protocols), with independent cross-checks."""

import warnings

import nashpy
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import linalg, optimize

from crowdlib import rating as Rt

S1 = ((0.10, 0.15), (0.05, 0.08), 0.30, 0.05, 0.05, 0.90)
S3 = ((0.10, 0.12), (0.02, 0.03), 0.40, 0.10, 0.15, 0.90)
S7 = ((0.05, 0.06), (0.01, 0.02), 0.45, 0.30, 0.30, 0.95)


# ------------------------------------------------------------ stage game vs nashpy
@pytest.mark.parametrize("variant", ["L", "L'"])
def test_pure_equilibria_match_nashpy_support_enumeration(variant):
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(150):
        c, a = rng.uniform(0, 0.5, 2), rng.uniform(0, 0.3, 2)
        d = a.max() + rng.uniform(0, 1) * (1 - a.max())
        g = Rt.stage_game(c[0], c[1], a[0], a[1], d, variant=variant)
        ours = set(Rt.pure_equilibria(g))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nashpy warns on degenerate games
            eqs = list(nashpy.Game(g.payoff_i, g.payoff_j).support_enumeration())
        names = ("C", "S")
        theirs = {(names[int(np.argmax(x))], names[int(np.argmax(y))]) for x, y in eqs
                  if np.isclose(x.max(), 1) and np.isclose(y.max(), 1)}
        assert ours == theirs
        checked += len(ours)
    assert checked >= 150


def test_stage_game_table_for_game_L():
    g = Rt.stage_game(0.1, 0.15, 0.05, 0.08, 0.3)
    assert np.allclose(g.payoff_i, [[0.5 - 0.025 - 0.1, 1 - 0.3 - 0.1], [0.3 - 0.05, 0.5 - 0.025]])
    assert np.all(g.attacks == 1)
    assert Rt.pure_equilibria(Rt.stage_game(0.1, 0.1, 0.05, 0.05, 0.3)) == [("C", "C")]


# ------------------------------------------------------------ dynamics and utilities
@settings(max_examples=50, deadline=None)
@given(alpha=st.floats(0.01, 1), beta=st.floats(0.01, 1), e1=st.floats(0, 0.45), e2=st.floats(0, 0.45))
def test_stationary_distribution_matches_the_null_space(alpha, beta, e1, e2):
    M = Rt.transition_matrix(alpha, beta, e1, e2)
    w, vecs = linalg.eig(M.T)                     # an independent route: the left eigenvector for 1
    v = np.real(vecs[:, np.argmin(np.abs(w - 1))])
    assert np.allclose(Rt.stationary_distribution(alpha, beta, e1, e2), v / v.sum(), atol=1e-10)


def test_stationary_distribution_refuses_a_non_unique_chain():
    with pytest.raises(ValueError, match="not unique"):
        Rt.stationary_distribution(0.0, 0.0, 0.1, 0.1)


@settings(max_examples=50, deadline=None)
@given(c=st.floats(0, 0.3), pm=st.floats(0, 0.5), extra=st.floats(0, 0.5), alpha=st.floats(0, 1),
       beta=st.floats(0, 1), e1=st.floats(0, 0.3), e2=st.floats(0, 0.3), delta=st.floats(0.3, 0.95))
def test_value_gap_and_value_iteration_agree_with_the_linear_solve(c, pm, extra, alpha, beta, e1, e2, delta):
    U0, U1 = Rt.long_term_utilities(c, pm, pm + extra, alpha, beta, e1, e2, delta)
    assert U1 - U0 == pytest.approx(Rt.value_gap(pm, pm + extra, alpha, beta, e1, e2, delta), abs=1e-12)
    V, _ = Rt.best_responses(c, 0.0, 0.0, pm, pm + extra, alpha, beta, e1, e2, delta, actions=("CN",))
    assert np.allclose(V, [U0, U1], atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_proposition1_condition8_equals_best_response(seed):
    rng = np.random.default_rng(seed)
    cs, as_ = rng.uniform(0, 0.3, 2), rng.uniform(0, 0.2, 2)
    d, e1, e2, dl = rng.uniform(0.2, 0.6), rng.uniform(0, 0.2), rng.uniform(0, 0.3), rng.uniform(0.5, 0.99)
    al, be = rng.uniform(0, 1, 2)
    pm, pM = np.sort(rng.uniform(0, 1, 2))
    claim = Rt.sustainable(as_, d, pm, pM, al, be, e1, e2, dl)
    truth = all(Rt.best_responses(cs[k], as_[k], d, pm, pM, al, be, e1, e2, dl)[1] == ["CN", "CN"] for k in (0, 1))
    assert claim == truth


def test_requester_utility_is_the_average_over_rating_pairs():
    al, be, pm, pM, e1, e2 = 0.6, 0.8, 0.1, 0.5, 0.05, 0.1
    eta = Rt.stationary_distribution(al, be, e1, e2)
    qN = (1 - e1) * (1 - e2)
    Ur = [qN - pm, qN - pM]
    direct = sum(eta[i] * eta[j] * (Ur[i] + Ur[j]) / 2 for i in (0, 1) for j in (0, 1))
    assert Rt.requester_utility(al, be, pm, pM, e1, e2) == pytest.approx(direct, abs=1e-15)


# ------------------------------------------------------------ design
@pytest.mark.parametrize("args, U", [(S1, 0.569167), (S3, 0.491327)])
def test_algorithm1_reference_values(args, U):
    assert Rt.design_protocol(*args, grid=1000).requester_utility == pytest.approx(U, abs=5e-7)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_algorithm1_equals_the_exact_lp_within_its_grid(seed):
    rng = np.random.default_rng(seed)
    c, a = rng.uniform(0, 0.3, 2), rng.uniform(0, 0.1, 2)
    args = (c, a, rng.uniform(0.1, 0.6), rng.uniform(0, 0.2), rng.uniform(0, 0.7), rng.uniform(0.6, 0.99))
    alg, lp = Rt.design_protocol(*args, grid=2000), Rt.design_protocol_exact(*args)
    assert alg.feasible == lp.feasible
    if lp.feasible:
        assert 0 <= lp.requester_utility - alg.requester_utility <= 1e-3
        # the LP optimum really is sustainable and individually rational for both workers
        assert Rt.sustainable(a, args[2], 0, lp.p_max, lp.alpha, lp.beta, *args[3:])
        assert min(Rt.long_term_utilities(ck, 0, lp.p_max, lp.alpha, lp.beta, *args[3:])[0] for ck in c) > -1e-9
    else:
        assert np.isnan(alg.requester_utility) and np.isnan(lp.p_max)


def test_brute_force_agrees_and_infeasible_is_reported():
    for args in (S1, S3):
        brute, lp = Rt.design_protocol_brute(*args), Rt.design_protocol_exact(*args)
        assert 0 <= lp.requester_utility - brute.requester_utility <= 5e-4
    for fn in (Rt.design_protocol, Rt.design_protocol_exact, Rt.design_protocol_brute):
        p = fn(*S7)
        assert not p.feasible and np.isnan(p.alpha) and np.isnan(p.requester_utility)


def test_free_pmin_beats_pmin_zero_in_S1():
    free = Rt.best_protocol_free_pmin(*S1, grid=25)
    assert free.feasible and free.p_min > 0.1
    assert free.requester_utility > Rt.design_protocol_exact(*S1).requester_utility + 0.01


def test_exact_lp_matches_scipy_minimize_on_the_reduced_problem():
    # an independent route: maximise s = alpha q_N + beta eps_bar with SLSQP
    (ci, cj), (ai, aj), d, e1, e2, dl = S3
    c, a = max(ci, cj), min(ai, aj)
    qN, eb = (1 - e1) * (1 - e2), 1 - (1 - e1) * (1 - e2)
    K = (1 - e1) * (1 - 2 * e2)
    cons = [{"type": "ineq", "fun": lambda x: dl * c * (K - 2 * d * eb) * x[1] + dl * qN * (a - 2 * c * d) * x[0]
             - 2 * c * d * (1 - dl)},
            {"type": "ineq", "fun": lambda x: dl * qN * (1 - 2 * c) * x[0] - 2 * c * dl * eb * x[1] - 2 * c * (1 - dl)}]
    res = optimize.minimize(lambda x: -(x[0] * qN + x[1] * eb), [0.5, 0.5], bounds=[(0, 1), (0, 1)],
                            constraints=cons, method="SLSQP", options={"ftol": 1e-14})
    lp = Rt.design_protocol_exact(*S3)
    assert lp.alpha == pytest.approx(res.x[0], abs=1e-6) and lp.beta == pytest.approx(res.x[1], abs=1e-6)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, match", [
    (lambda: Rt.stationary_distribution(1.2, 0.5, 0.1, 0.1), "alpha"),
    (lambda: Rt.stationary_distribution(0.5, -0.1, 0.1, 0.1), "beta"),
    (lambda: Rt.stationary_distribution(0.5, 0.5, float("nan"), 0.1), "eps1"),
    (lambda: Rt.stationary_distribution(0.5, 0.5, 0.1, 1.5), "eps2"),
    (lambda: Rt.design_protocol((0.1, -0.1), (0.01, 0.02), 0.3, 0.05, 0.05, 0.9), "costs"),
    (lambda: Rt.design_protocol((0.1, 0.1), (0.01, float("nan")), 0.3, 0.05, 0.05, 0.9), "attack_costs"),
    (lambda: Rt.design_protocol((0.1, 0.1), (0.01, 0.02), 1.3, 0.05, 0.05, 0.9), "damage"),
    (lambda: Rt.design_protocol((0.1, 0.1), (0.01, 0.02), 0.3, 0.05, 0.05, 1.0), "delta"),
    (lambda: Rt.design_protocol((0.1, 0.1), (0.01, 0.02), 0.3, 0.05, 0.05, 0.0), "delta"),
    (lambda: Rt.design_protocol((0.1, 0.1, 0.2), (0.01, 0.02), 0.3, 0.05, 0.05, 0.9), "costs"),
    (lambda: Rt.design_protocol((0.1, 0.1), (0.01, 0.02), 0.3, 0.05, 0.05, 0.9, grid=0), "grid"),
    (lambda: Rt.design_protocol_exact((0.1, 0.1), (0.01, 0.02), 0.3, -0.05, 0.05, 0.9), "eps1"),
    (lambda: Rt.stage_game(0.1, 0.1, 0.05, 0.05, 0.3, variant="shift"), "variant"),
])
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: Rt.stationary_distribution("0.5", 0.5, 0.1, 0.1), "alpha"),
    (lambda: Rt.design_protocol("ab", (0.01, 0.02), 0.3, 0.05, 0.05, 0.9), "costs"),
    (lambda: Rt.design_protocol((0.1, 0.1), (0.01, 0.02), 0.3, 0.05, 0.05, 0.9, grid=10.5), "grid"),
])
def test_wrong_types_name_the_parameter(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_noisy_attack_records_make_condition_16_bind():
    # eps2 > 1/2 (K < 0): an attack improves the record; a counter-example that all
    # three routines used to call feasible although sustainable() said no
    args = ((0.1, 0.1), (0.03, 0.03), 0.05, 0.05, 0.6, 0.9)
    for fn in (Rt.design_protocol, Rt.design_protocol_exact, Rt.design_protocol_brute):
        assert not fn(*args).feasible


def test_compliance_never_recorded_is_infeasible_not_an_error():
    for c in ((0.1, 0.1), (0.0, 0.0)):
        for fn in (Rt.design_protocol, Rt.design_protocol_exact, Rt.design_protocol_brute):
            p = fn(c, (0.03, 0.03), 0.3, 1.0, 0.1, 0.9)
            assert not p.feasible and np.isnan(p.requester_utility)


def test_deviation_gains_agree_with_value_iteration():
    """The one-shot deviation principle (deviation_gains) and value iteration (best_responses)
    agree on whether complying is optimal, on random protocols."""
    rng = np.random.default_rng(17)
    agree = 0
    for _ in range(200):
        c, a, d = rng.uniform(0.02, 0.3), rng.uniform(0.0, 0.1), rng.uniform(0.1, 0.6)
        pmin, pmax = np.sort(rng.uniform(0, 1, 2))
        al, be = rng.uniform(0.05, 1, 2)
        e1, e2, dl = rng.uniform(0, 0.3), rng.uniform(0, 0.3), rng.uniform(0.6, 0.97)
        gains = Rt.deviation_gains(c, a, d, pmin, pmax, al, be, e1, e2, dl)
        _, best = Rt.best_responses(c, a, d, pmin, pmax, al, be, e1, e2, dl, actions=Rt.ACTIONS)
        assert np.all(np.abs(gains[0]) < 1e-12)
        agree += (gains.max() <= 1e-9) == (best == ["CN", "CN"])
    assert agree == 200


def test_all_action_design_is_sustainable_and_shirking_breaks_algorithm_1():
    args = ((0.10, 0.12), (0.02, 0.03), 0.40, 0.10, 0.15, 0.90)
    alg = Rt.design_protocol(*args, grid=1000)
    assert not Rt.sustainable_all_actions(args[0], args[1], args[2], alg.p_min, alg.p_max,
                                          alg.alpha, alg.beta, *args[3:])
    _, best = Rt.best_responses(0.12, 0.03, 0.40, alg.p_min, alg.p_max, alg.alpha, alg.beta,
                                0.10, 0.15, 0.90, actions=Rt.ACTIONS)
    assert best == ["SN", "CA"]                    # shirk at rating 0, attack at rating 1
    full = Rt.design_protocol_all_actions(*args, grid=20)
    assert full.feasible
    for c, a in ((0.10, 0.02), (0.12, 0.03)):
        _, best = Rt.best_responses(c, a, 0.40, full.p_min, full.p_max, full.alpha, full.beta,
                                    0.10, 0.15, 0.90, actions=Rt.ACTIONS)
        assert best == ["CN", "CN"]
    with pytest.raises(TypeError, match="grid"):
        Rt.design_protocol_all_actions(*args, grid=(10, 10))
    with pytest.raises(ValueError, match="alpha"):
        Rt.sustainable_all_actions(*args[:3], 0.0, 0.5, 1.5, 0.5, *args[3:])


def test_census_and_shared_predicates():
    full = Rt.equilibrium_census(5000, 3, equal=True, variant="L", domain="full")
    dil = Rt.equilibrium_census(5000, 3, equal=True, variant="L", domain="dilemma")
    assert dil["attack possible"] == 1.0 and full["attack possible"] < 1.0
    assert 0.0 in full["attacks at equilibria"] and dil["attacks at equilibria"] == [1.0]
    assert full["CS or SC"] == 0.0 and Rt.equilibrium_census(5000, 3, equal=False)["CS or SC"] > 0
    with pytest.raises(ValueError, match="domain"):
        Rt.equilibrium_census(10, 1, domain="all")
    args = ((0.10, 0.12), (0.02, 0.03), 0.40, 0.10, 0.15, 0.90)
    p = Rt.design_protocol_exact(*args)
    assert Rt.feasible_protocol(args[0], args[1], args[2], p.p_min, p.p_max, p.alpha, p.beta, *args[3:])
    assert not Rt.participation(args[0], 0.0, 0.01, p.alpha, p.beta, *args[3:])


def test_design_case_and_region():
    args = ((0.10, 0.12), (0.02, 0.03), 0.40, 0.10, 0.15, 0.90)     # S3: a dilemma, Case 1-2
    assert Rt.design_case(*args) == "1-2"
    no_dilemma = ((0.1, 0.1), (0.1, 0.1), 0.4, 0.1, 0.4, 0.9)        # K < 2 d eps_bar, a >= 2 c d
    assert Rt.design_case(*no_dilemma) == "3-4" and Rt.design_protocol_exact(*no_dilemma).feasible
    assert Rt.design_case((0.1, 0.1), (0.01, 0.01), 0.4, 1.0, 0.1, 0.9) == "hopeless"
    al, be = np.meshgrid(np.linspace(0.05, 1, 20), np.linspace(0, 1, 21), indexing="ij")
    reg = Rt.design_region(*args, al, be)
    p = Rt.design_protocol_exact(*args)
    assert reg.any() and Rt.design_region(*args, p.alpha, min(p.beta, 1.0))
    with pytest.raises(ValueError, match="alpha"):
        Rt.design_region(*args, 0.0, 0.5)
    with pytest.raises(ValueError, match="p_min"):
        Rt.deviation_gains(0.1, 0.02, 0.4, 0.6, 0.5, 0.3, 0.5, 0.1, 0.1, 0.9)
    with pytest.raises(ValueError, match="tol"):
        Rt.sustainable_all_actions(*args[:3], 0.0, 0.5, 0.3, 0.5, *args[3:], tol=float("nan"))
    with pytest.raises(TypeError, match="p_min"):
        Rt.sustainable_all_actions(*args[:3], "0", 0.5, 0.3, 0.5, *args[3:])
    with pytest.raises(TypeError, match="equal"):
        Rt.equilibrium_census(10, 1, equal="no")
