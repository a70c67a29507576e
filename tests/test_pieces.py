"""Rules given by phi alone (``AllocationRule.from_phi``) and Mechanism 2 on their pieces.

The payment ``p(x) = x phi(x) + int_x^1 phi`` is checked against closed forms; the piecewise
kernel (``crowdlib._m2pieces.piece_rates``) against the naive definition on small markets with
ties, zero costs and sellers at theta up to 0.9, and against each seller's own bisection search
on a large market.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from crowdlib import _m2pieces as M
from crowdlib import procurement as P
from crowdlib._validation import CrowdlibWarning


def _square(x):
    x = np.minimum(np.asarray(x, dtype=float), 1.0)
    return (1.0 - x) ** 2


def _root(x):                      # singular at 1: phi'(1) is infinite
    return np.sqrt(1.0 - np.minimum(np.asarray(x, dtype=float), 1.0))


def _kinked(x):                    # continuous, kink at 0.3
    x = np.asarray(x, dtype=float)
    return np.where(x < 0.3, 1.0 - 0.5 * x, 0.85 * np.maximum(1.0 - x, 0.0) / 0.7)


def _jumpy(x):                     # jumps at 0.4 (0.92 -> 0.4) and at 1 (0.1 -> 0)
    x = np.asarray(x, dtype=float)
    return np.where(x < 0.4, 1.0 - 0.2 * x, np.where(x < 1.0, 0.5 * (1.0 - x) + 0.1, 0.0))


CLOSED = {   # p(x) on [0, 1) by hand
    "square": lambda x: x * (1 - x) ** 2 + (1 - x) ** 3 / 3,
    "root": lambda x: x * np.sqrt(1 - x) + 2.0 / 3.0 * (1 - x) ** 1.5,
    "kinked": lambda x: np.where(
        x < 0.3, x * (1 - 0.5 * x) + (0.3 - x) - 0.25 * (0.09 - x * x) + 0.85 / 0.7 * 0.49 / 2,
        x * 0.85 * (1 - x) / 0.7 + 0.85 / 0.7 * (1 - x) ** 2 / 2),
    "jumpy": lambda x: np.where(
        x < 0.4, x * (1 - 0.2 * x) + (0.4 - x) - 0.1 * (0.16 - x * x) + 0.5 * 0.36 / 2 + 0.06,
        x * (0.5 * (1 - x) + 0.1) + 0.5 * (1 - x) ** 2 / 2 + 0.1 * (1 - x)),
}
PHIS = {"square": (_square, True), "root": (_root, True), "kinked": (_kinked, True),
        "jumpy": (_jumpy, False)}


def _rule(name):
    phi, continuous = PHIS[name]
    return P.AllocationRule.from_phi(phi, name, continuous=continuous)


@pytest.mark.parametrize("name", sorted(PHIS))
def test_from_phi_payment_matches_the_closed_form(name):
    rl = _rule(name)
    x = np.concatenate([np.linspace(0.0, 0.999, 500), [0.3, 0.4, np.nextafter(0.4, 0.0), 1 - 1e-9]])
    want = CLOSED[name](x)
    assert np.max(np.abs(rl.unit_payment(x) - want)) <= 2e-13
    assert np.all(rl.unit_payment(np.array([1.0, 1.5, 7.0])) == 0.0)


def test_from_phi_finds_the_jumps_and_the_steps():
    assert _rule("jumpy").jumps == (0.4,) and not _rule("jumpy").continuous
    assert _rule("kinked").jumps == () and _rule("square").steps == ()
    with pytest.raises(ValueError, match="continuous=False"):
        P.AllocationRule.from_phi(_jumpy, "jumpy")                  # declared continuous: refused
    with pytest.raises(ValueError, match="continuous"):
        P.AllocationRule.from_phi(lambda x: np.where(np.asarray(x) < 1, 0.5 + 0.5 * (np.asarray(x) < 0.5), 0.0),
                                  "jumps at 1 too")
    # a step phi becomes a step rule: the exact O(n log n) search over its pieces
    three = P.three_level_rule(0.4, 0.3)
    as_steps = P.AllocationRule.from_phi(three.phi, "three by phi", continuous=False)
    assert as_steps.jumps == (0.4,)
    assert np.allclose([v for _, v in as_steps.steps], [v for _, v in three.steps], rtol=1e-15)
    assert [t for t, _ in as_steps.steps] == [t for t, _ in three.steps]


def test_fit_refuses_a_function_too_rough_for_its_pieces():
    with pytest.raises(ValueError, match="wiggly is too rough"):
        M.fit(lambda x: np.sin(1e7 * np.asarray(x)), name="wiggly", max_pieces=64)
    pieces = M.fit(_kinked)
    assert np.max(np.abs(pieces.evaluate(np.linspace(0, 0.999, 999)) - _kinked(np.linspace(0, 0.999, 999)))) < 4e-15


def _market(rng, n, wide):
    c, u = rng.uniform(0, 1, n), rng.lognormal(0.0, 0.5, n)
    if rng.random() < 0.5:
        c[: n // 3], u[: n // 3] = c[0], u[0]                        # ties
    c[1] = 0.0
    B = float(rng.uniform(0.05, 0.6) * c.sum())
    if wide:
        idx = rng.choice(np.arange(2, n), 3, replace=False)
        c[idx] = rng.uniform(0.3, 0.9, 3) * B                       # theta_i from 0.3 to 0.9
        u[idx] = rng.uniform(5, 50, 3) * c[idx] / B
    return c, u, B


@pytest.mark.parametrize("name", sorted(PHIS))
def test_pieces_route_equals_the_naive_definition(name):
    rl = _rule(name)
    rng = np.random.default_rng(sorted(PHIS).index(name) + 40)
    for trial in range(8):
        c, u, B = _market(rng, int(rng.integers(5, 250)), wide=trial % 2 == 1)
        for ties in P.TIE_MODES:
            fast, naive = P.mechanism2(c, u, B, rl, ties=ties), P.mechanism2_naive(c, u, B, rl, ties=ties)
            assert fast.path == "pieces"
            assert np.allclose(fast.rates, naive.rates, rtol=1e-12, atol=0)
            assert np.allclose(fast.allocation, naive.allocation, rtol=0, atol=1e-12)
            assert np.allclose(fast.payments, naive.payments, rtol=0, atol=1e-12 * B)
            assert fast.payments.sum() <= B * (1 + 1e-12)


@pytest.mark.parametrize("name", ["root", "jumpy"])
def test_pieces_route_on_a_large_market_equals_each_sellers_own_search(name):
    """2 * 10^5 sellers with an outlier at theta = 0.5: no quadratic path, no warning; a sample of
    rates against Mechanism 1's stopping rate with that seller's cost set to 0 (bisection)."""
    rl = _rule(name)
    rng = np.random.default_rng(23)
    n = 200_000
    c, u = rng.uniform(0, 1, n), rng.uniform(0.5, 1.5, n)
    B = 0.25 * c.sum()
    c[0], u[0] = 0.5 * B, 4 * B
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = P.mechanism2(c, u, B, rl)
    assert out.path == "pieces"
    p0 = float(rl.unit_payment(np.zeros(1))[0])
    assert min(c[0], u[0] * out.stopping_rate * p0) / B == pytest.approx(0.5, rel=1e-15)
    rho = c / u
    for i in [0, *rng.choice(n, 5, replace=False)]:
        saved, rho[i] = rho[i], 0.0
        r_i = P._stopping_rate(rl, rho, u, B)
        rho[i] = saved
        assert out.rates[i] == pytest.approx(r_i, rel=1e-12, abs=0), i
    assert out.payments.sum() <= B * (1 + 1e-12)


def test_a_rule_built_from_two_functions_gets_a_map_of_its_payment(monkeypatch):
    """phi* and p* given directly (no series): the map of p is fitted, and the rates equal the
    polynomial kernel's. A payment too rough for the map falls back to the naive method, and
    says so on a large market."""
    direct = P.AllocationRule("optimal, no series", P.OPTIMAL_RULE.phi, P.OPTIMAL_RULE.unit_payment)
    rng = np.random.default_rng(3)
    c, u = rng.uniform(0, 1, 3000), rng.uniform(0.5, 1.5, 3000)
    B = 0.2 * c.sum()
    a, b = P.mechanism2(c, u, B, direct), P.mechanism2(c, u, B, "optimal")
    assert a.path == "pieces" and b.path == "fast"
    assert np.allclose(a.rates, b.rates, rtol=1e-12, atol=0)

    def rough(x):
        x = np.asarray(x, dtype=float)
        return P.OPTIMAL_RULE.unit_payment(x) * (1.0 + 1e-9 * np.sin(1e9 * x))

    noisy = P.AllocationRule("rough", P.OPTIMAL_RULE.phi, rough)
    monkeypatch.setattr(P, "SLOW_PATH_WARN_N", 10)
    with pytest.warns(CrowdlibWarning, match="naive"):
        out = P.mechanism2(c[:20], u[:20], 0.3 * c[:20].sum(), noisy)
    assert out.path == "naive"


@pytest.mark.parametrize("t0", [1e-6, 3e-4, 0.999, 1 - 1e-8])
def test_a_jump_near_either_end_is_found_at_its_float(t0):
    """Interpolation nodes all lie away from the ends of [0, 1): the map checks its pieces at
    points graded towards both ends, so a jump at 1e-6 or at 0.999 is not missed."""
    def phi(x):
        x = np.asarray(x, dtype=float)
        return np.where(x < t0, 1.0 - 0.1 * x, np.where(x < 1.0, 0.5 * (1.0 - x), 0.0))

    rl = P.AllocationRule.from_phi(phi, "edge jump", continuous=False)
    assert rl.jumps == (t0,)
    x = np.array([0.0, 0.5 * t0, np.nextafter(t0, 0.0), t0, 0.5 * (1.0 + t0)])
    tail = 0.25 * (1.0 - t0) ** 2                     # int_t0^1 0.5 (1 - s) ds
    left = np.where(x < t0, x * (1 - 0.1 * x) + (t0 - x) - 0.05 * (t0 ** 2 - x ** 2) + tail,
                    x * 0.5 * (1 - x) + 0.25 * (1 - x) ** 2)
    assert np.max(np.abs(rl.unit_payment(x) - left)) <= 1e-15
    with pytest.raises(ValueError, match=re.escape(repr(t0))):
        P.AllocationRule.from_phi(phi, "edge jump")   # continuous=True is refused, at the jump
    step = P.AllocationRule.from_phi(lambda x: np.where(np.asarray(x) < 0.003, 1.0,
                                                        np.where(np.asarray(x) < 1, 0.5, 0.0)),
                                     "step near 0", continuous=False)
    assert [t for t, _ in step.steps] == [0.003, 1.0]


def test_from_phi_refuses_bad_functions_naming_phi():
    for bad in (lambda x: 1 / 0, lambda x: np.full(np.shape(x), "a"),
                lambda x: (1 - np.minimum(x, 1)) * (1 + 0j), lambda x: 1.0 if x < 1 else 0.0):
        with pytest.raises(ValueError, match="phi"):
            P.AllocationRule.from_phi(bad, "bad")
    with pytest.raises(TypeError, match="name"):
        P.AllocationRule.from_phi(_square, 123)


def test_a_singular_phi_stays_fast_with_sellers_next_to_its_singularity():
    """phi = sqrt(1 - x) is steep next to 1: its last piece is raw (phi itself, and a graded
    quadrature). 60 sellers placed inside that piece at the stopping rate cost no more than a
    few passes; their rates equal their own searches."""
    import time

    rl = _rule("root")
    a = float(rl.pieces.edges[-2])
    rng = np.random.default_rng(4)
    n = 20_000
    c, u = rng.uniform(0, 1, n), np.ones(n)
    B = 0.2 * c.sum()
    r = P.mechanism1(c, u, B, rl).rate
    c[:60] = r * rng.uniform(a + 2e-7, 1 - 2e-7, 60)
    t0 = time.perf_counter()
    out = P.mechanism2(c, u, B, rl)
    assert time.perf_counter() - t0 < 30.0 and out.path == "pieces"
    rho = c / u
    for i in (0, 1, 7, 59, 100):
        saved, rho[i] = rho[i], 0.0
        r_i = P._stopping_rate(rl, rho, u, B)
        rho[i] = saved
        assert out.rates[i] == pytest.approx(r_i, rel=1e-12, abs=0), i


def test_jumps_closer_than_a_raw_piece_are_each_found():
    """Three jumps within 2e-7 of each other, and two within 6e-7 of 1: each found at its float,
    so a step phi stays a step rule and p is exact (a steep piece is searched for a jump before
    it is kept raw)."""
    ts, fac = [0.5, 0.5 + 0.37e-7, 0.5 + 2e-7], [0.3, 0.95, 0.6]

    def phi(x):
        x = np.asarray(x, dtype=float)
        f = np.ones_like(x)
        for t, d in zip(ts, fac):
            f = f * np.where(x < t, 1.0, d)
        return np.where(x >= 1, 0.0, f)

    rl = P.AllocationRule.from_phi(phi, "close steps", continuous=False)
    assert rl.jumps == tuple(ts) and len(rl.steps) == 4
    # p(0.5) = 0.5 phi(0.5) + int_0.5^1 phi, phi = 0.3, 0.285, 0.171 on the three stretches
    exact = 0.5 * 0.3 + 0.3 * 0.37e-7 + 0.285 * (2e-7 - 0.37e-7) + 0.171 * (0.5 - 2e-7)
    assert abs(rl.unit_payment(np.array([0.5]))[0] - exact) <= 4e-16
    near_one = P.AllocationRule.from_phi(
        lambda x: np.where(np.asarray(x) < 1 - 9e-7, 1.0,
                           np.where(np.asarray(x) < 1 - 3.33e-7, 0.5, np.where(np.asarray(x) < 1, 0.25, 0.0))),
        "steps near 1", continuous=False)
    assert near_one.jumps == (1 - 9e-7, 1 - 3.33e-7) and len(near_one.steps) == 3


def test_slow_path_warnings_name_the_caller_of_mechanism2(monkeypatch):
    """The own-search warning of both the series and the pieces routes, and the naive fallback's,
    come from one function and point at the line that called mechanism2."""
    monkeypatch.setattr(P, "MAX_WIDE_SELLERS", 0)
    monkeypatch.setattr(P, "SLOW_PATH_WARN_N", 0)
    rng = np.random.default_rng(1)
    c, u = rng.uniform(0, 1, 50), rng.uniform(0.5, 1.5, 50)
    B = 0.25 * c.sum()
    c[0], u[0] = 0.5 * B, 4 * B                         # theta_0 = 0.5: its own search
    rough = P.AllocationRule("rough", P.OPTIMAL_RULE.phi, lambda x: P.OPTIMAL_RULE.unit_payment(x) * (
        1.0 + 1e-9 * np.sin(1e9 * np.asarray(x, dtype=float))))
    for rule, path in (("optimal", "fast"), (_rule("square"), "pieces"), (rough, "naive")):
        with pytest.warns(CrowdlibWarning, match="can be slow") as record:
            out = P.mechanism2(c, u, B, rule)
        assert out.path == path and all(w.filename == __file__ for w in record)
