"""The "for all" and "iff" claims of the Luce-contracts paper on random families (seeds the
chapter does not use), including corner profiles, multi-class Luce contracts, random FGN
comparators and profiles that no contract generated."""
import numpy as np
import pytest

from crowdlib import contracts as C
from crowdlib import contracts_audit as A


def _instance(g, n_low=2, n_high=6):
    n = int(g.integers(n_low, n_high + 1))
    B = float(g.uniform(0.4, 2.5))
    return n, B, A.random_costs(n, B, g)


def _luce_profiles(seed, count):
    """``count`` random multi-class Luce contracts and their equilibria."""
    g = np.random.default_rng(seed)
    for _ in range(count):
        n, B, k = _instance(g)
        w, pr = A.random_luce(n, g)
        yield g, B, k, w, pr, C.luce_equilibrium(w, B, k, pr)


def test_fgn_reduction_for_every_contract_including_corners():
    g = np.random.default_rng(101)
    corners = 0
    for trial in range(200):
        n, B, k = _instance(g)
        X = A.random_contract(n, "corner" if trial % 2 else "any", g)
        p = C.contract_equilibrium(X, B, k)
        corners += bool(p[0] < 1e-12)
        Xf = C.fgn_reduction(X, p, B, k)
        assert C.is_fgn(Xf)
        pf = C.contract_equilibrium(Xf, B, k, p0=p)
        assert np.allclose(pf, p, atol=1e-9)
        assert C.expected_payment(Xf, pf, B) == pytest.approx(np.sum(k * pf * pf), abs=1e-10)
        assert C.expected_payment(X, p, B) >= np.sum(k * p * p) - 1e-12
    assert corners >= 100


def test_luce_contract_is_unique_on_random_multiclass_instances():
    seen = set()
    for g, B, k, w, pr, p in _luce_profiles(102, 100):
        seen.add(int(pr.max()) + 1)
        u = A.luce_uniqueness(p, B, k, g, starts=4)
        assert u.holds(), (w, pr, u)
        assert np.allclose(u.weights, A.normalise_weights(w, pr), atol=1e-6)
    assert max(seen) >= 4


def test_spread_theorem_against_random_fgn_comparators():
    for g, B, k, w, pr, p in _luce_profiles(103, 200):
        Y = A.random_fgn_comparator(p, k, g)
        check = A.spread_check(p, B, k, Y)
        assert check.holds() and check.foc_gap < 1e-9, check
        # a comparator that overpays one agent no longer implements p, and the means differ
        Y2 = Y.copy()
        Y2[:, 0] *= 1.1
        wrong = A.spread_check(p, B, k, Y2)
        assert wrong.foc_gap > 1e-6 and not wrong.holds()


def test_condition5_iff_on_profiles_no_contract_generated():
    g = np.random.default_rng(104)
    counts = {True: 0, False: 0}
    for _ in range(300):
        n, B, k = _instance(g, 2, 7)
        p = A.profile_on_budget_line(n, B, k, g)
        assert A.set_slacks(p, B, k)[frozenset(range(n))] == pytest.approx(0.0, abs=1e-9)
        full = min(A.set_slacks(p, B, k).values()) >= -1e-9 * B
        assert C.implementable_by_luce(p, B, k) == full
        counts[full] += 1
        if full:
            assert A.luce_implements(p, B, k)
        else:
            with pytest.raises(ValueError, match="condition \\(5\\)"):
                C.luce_contract_for(p, B, k)
    assert min(counts.values()) >= 30


def test_condition5_is_necessary_and_tight_on_class_unions():
    for g, B, k, w, pr, p in _luce_profiles(105, 150):
        assert min(A.set_slacks(p, B, k).values()) >= -1e-10 * B
        unions = {frozenset(np.flatnonzero(pr <= c).tolist()) for c in np.unique(pr)}
        assert set(A.tight_sets(p, B, k, rtol=1e-7)) == unions


def test_closure_both_directions():
    g = np.random.default_rng(106)
    for _ in range(200):
        n = int(g.integers(2, 7))
        w, pr = A.random_luce(n, g)
        assert A.choice_axiom_gap(C.luce_contract_matrix(w, pr)) < 1e-12
        levels = g.integers(0, 3, n).astype(float)
        d = [A.closure_distance(levels, np.log(w), t) for t in (1.0, 10.0, 40.0)]
        assert d[-1] < 1e-9 and d[0] >= d[-1] - 1e-12
        assert A.choice_axiom_gap(A.random_contract(max(n, 3), "sge", g)) > 1e-6


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="kind"):
        A.random_contract(3, "luce")
    with pytest.raises(ValueError, match="n must be"):
        A.random_costs(0, 1.0)
    with pytest.raises(TypeError, match="rng"):
        A.random_luce(3, rng="seed")
    with pytest.raises(ValueError, match="classes"):
        A.random_luce(3, 1, classes=4)
    with pytest.raises(ValueError, match="payments"):
        A.spread_check([0.2, 0.3], 1.0, [2.0, 2.0], np.ones((3, 2)))
    with pytest.raises(ValueError, match="levels"):
        A.closure_distance([0.0, 1.0], [0.0], 1.0)


def test_tiny_profiles_keep_their_partition():
    """With tiny p the slack of a set that is not tight is tiny too; tolerances are relative."""
    p = C.luce_equilibrium([1.0, 1.0], 1.0, [1e5, 1e5])
    w, pr = C.luce_contract_for(p, 1.0, [1e5, 1e5])
    assert pr.tolist() == [0, 0]
    assert A.luce_uniqueness(p, 1.0, [1e5, 1e5], rng=1).holds()
    g = np.random.default_rng(107)
    for _ in range(40):
        n = int(g.integers(2, 6))
        k = np.exp(g.uniform(4, 10, n))
        w, pr = A.random_luce(n, g)
        p = C.luce_equilibrium(w, 1.0, k, pr)
        unions = {frozenset(np.flatnonzero(pr <= c).tolist()) for c in np.unique(pr)}
        assert set(A.tight_sets(p, 1.0, k, rtol=1e-7)) == unions


def test_audit_helpers_refuse_bad_input():
    with pytest.raises(ValueError):
        A.choice_axiom_gap(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="contract"):
        A.choice_axiom_gap(np.ones((5, 2)))
    with pytest.raises(ValueError, match="pay something"):
        A.spread_check([0.2, 0.3], 1.0, [2.0, 2.0], np.zeros((4, 2)))
    with pytest.raises(ValueError, match="rtol"):
        A.tight_sets([0.2, 0.3], 1.0, [2.0, 2.0], rtol=-1.0)
    with pytest.raises(ValueError, match="budget"):
        A.profile_on_budget_line(3, float("nan"), [2.0, 2.0, 2.0], 1)
    with pytest.raises(ValueError, match="cost_coefficients"):
        A.profile_on_budget_line(2, 3.0, [2.0, 2.0], 1)
    with pytest.raises(ValueError, match="levels"):
        A.closure_distance([], [], 1.0)
    assert A.closure_distance([0.0, 1.0], [0.0, 0.0], 1e6) < 1e-12       # no underflow error
    with pytest.raises(ValueError, match="priority"):
        A.normalise_weights([1.0, 2.0], [0.0, 0.0])
