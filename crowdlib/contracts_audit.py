"""Random families and checks for the "for all" and "iff" claims of the Luce-contracts paper.

The chapter and the tests draw instances from the same generators and score them with the same
checks, so that a claim "for every contract" is tested on corner profiles, multi-class Luce
contracts, random comparators and profiles that no contract generated, not only on convenient
cases.

How the generators resolve what the paper leaves open:

* Costs are quadratic, ``c_i(p) = k_i p^2 / 2``, with ``k_i`` drawn so that Assumption 1
  (``B < c_i'(1) = k_i``) holds; quadratic costs have ``c_i'(0) = 0``.
* A "random FGN comparator" for a profile ``p`` is an FGN payment rule, drawn at random, that
  has ``p`` as an equilibrium: random success-only payments ``z`` are scaled agent by agent,
  ``y_i(S) = c_i'(p_i) z_i(S) / E[z_i(S_-i + i)]``, so Eq. (3) holds at ``p``. Section 4 of the
  paper drops the budget, so the comparator's total may exceed the Luce budget.
* A "profile on the budget line" is a random direction scaled so that condition (5) holds with
  equality for ``T = N``; whether it holds on the other sets is left to chance, so such profiles
  are implementable by a Luce contract or not, and no contract generated them.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from . import _validation as check
from .contracts import (expected_shares, luce_contract_for, luce_contract_matrix,
                        luce_equilibrium, luce_win_probabilities, outcomes,
                        total_payment_distribution)

__all__ = ["random_costs", "random_contract", "random_luce", "random_fgn_comparator",
           "profile_on_budget_line", "closure_distance", "choice_axiom_gap", "set_slacks", "tight_sets", "SpreadCheck", "spread_check",
           "UniquenessCheck", "luce_uniqueness", "luce_implements", "normalise_weights"]

FloatArray = NDArray[np.float64]


def _rng(rng) -> np.random.Generator:
    return check.generator("rng", rng)


def random_costs(n: int, budget: float, rng=None, spread: float = 3.0) -> FloatArray:
    """Quadratic-cost coefficients ``k_i`` in ``(B, spread * B)``: Assumption 1 holds."""
    n = check.integer("n", n, low=1, high=16)
    budget = check.real("budget", budget, low=0.0, low_open=True)
    spread = check.real("spread", spread, low=1.0, low_open=True)
    return budget * _rng(rng).uniform(1.02, spread, n)


def random_contract(n: int, kind: str, rng=None) -> FloatArray:
    """A random share array of ``kind``: "sge", "fgn" (leaves part of B unspent), "any"
    (also pays agents who fail) or "corner" (as "any", but agent 0 is paid only when it fails,
    so its best response is the corner ``p_0 = 0``)."""
    n = check.integer("n", n, low=1, high=12)
    if kind not in ("sge", "fgn", "any", "corner"):
        raise ValueError(f"kind must be 'sge', 'fgn', 'any' or 'corner', got {kind!r}")
    g = _rng(rng)
    M = outcomes(n)
    X = g.uniform(0, 1, (2 ** n, n))
    if kind in ("sge", "fgn"):
        X = X * M
    total = X.sum(axis=1, keepdims=True)
    X = np.divide(X, total, out=np.zeros_like(X), where=total > 0)
    if kind == "fgn":
        X *= g.uniform(0.3, 0.95, (2 ** n, 1))
    if kind in ("any", "corner"):
        X *= g.uniform(0.5, 1.0, (2 ** n, 1))
    if kind == "corner":
        X[M[:, 0], 0] = 0.0
    return X


def closure_distance(levels, log_weights, t: float) -> float:
    """Distance (largest share difference) between the weighted contract with weights
    ``exp(t * levels + log_weights)`` and the Luce contract with weights ``exp(log_weights)``
    whose priority classes are the distinct ``levels``, highest first. Tends to 0 as t grows:
    a limit of weighted contracts along a ray is a Luce contract."""
    a = check.real_vector("levels", levels)
    if a.size == 0:
        raise ValueError("levels must list at least one agent")
    b = check.real_vector("log_weights", log_weights, length=a.size, length_name="levels")
    t = check.real("t", t, low=0.0)
    from .contracts import weighted_contract

    rank = np.unique(-a, return_inverse=True)[1].astype(np.int64)
    z = t * a + b
    # weights below the smallest positive double are 0 in the limit; keep them positive
    w = np.maximum(np.exp(z - z.max()), np.finfo(float).tiny)
    return float(np.max(np.abs(weighted_contract(w) - luce_contract_matrix(np.exp(b - b.max()), rank))))


def choice_axiom_gap(contract) -> float:
    """Largest violation of the product identity ``x_i(S) x_j(S') = x_j(S) x_i(S')`` over
    ``i, j in S``, ``S`` a subset of ``S'``. Every weighted contract satisfies it (Luce's choice
    axiom), and so does every limit of weighted contracts, since the identity is closed."""
    from .contracts import _contract

    X, n = _contract(contract)
    M = outcomes(n)
    gap = 0.0
    for s in range(1, 2 ** n):
        for t in range(s, 2 ** n):
            if (s & t) != s:
                continue
            both = np.flatnonzero(M[s])
            for i, j in itertools.combinations(both, 2):
                gap = max(gap, abs(X[s, i] * X[t, j] - X[s, j] * X[t, i]))
    return float(gap)


def random_luce(n: int, rng=None, classes: int | None = None) -> tuple[FloatArray, NDArray[np.int64]]:
    """Random weights (log-uniform over ``e^-2 .. e^2``) and a random ordered partition into
    ``classes`` priority classes (default: a random number between 1 and n), each non-empty."""
    n = check.integer("n", n, low=1, high=16)
    g = _rng(rng)
    K = int(g.integers(1, n + 1)) if classes is None else check.integer("classes", classes, low=1, high=n)
    cuts = np.sort(g.choice(np.arange(1, n), size=K - 1, replace=False)) if K > 1 else np.array([], int)
    sizes = np.diff(np.concatenate([[0], cuts, [n]]))
    priority = np.repeat(np.arange(K), sizes)
    g.shuffle(priority)
    return np.exp(g.uniform(-2, 2, n)), priority.astype(np.int64)


def set_slacks(p, budget: float, cost_coefficients) -> dict[frozenset, float]:
    """Slack of condition (5) on every set T of agents, by full enumeration (no shortcut):
    ``h(T) = B (1 - prod_{i in T} (1 - p_i)) - sum_{i in T} p_i c_i'(p_i)``."""
    p = check.real_vector("p", p, low=0.0, high=1.0)
    B = check.real("budget", budget, low=0.0, low_open=True)
    k = check.real_vector("cost_coefficients", cost_coefficients, low=0.0, length=p.size,
                          length_name="p's agents")
    if p.size > 16:
        raise ValueError(f"p: at most 16 agents can be enumerated, got {p.size}")
    M = outcomes(p.size, of="p")
    reach = -np.expm1(M @ np.log1p(-np.minimum(p, 1.0 - 1e-300)))
    pay = M @ (p * k * p)
    return {frozenset(np.flatnonzero(row).tolist()): float(s)
            for row, s in zip(M, B * reach - pay)}


def tight_sets(p, budget: float, cost_coefficients, rtol: float = 1e-9) -> list[frozenset]:
    """The non-empty sets on which condition (5) holds with equality: ``|h(T)|`` at most ``rtol``
    times the set's own scale ``B Pr(someone in T succeeds)`` (with tiny ``p`` the slack of a set
    that is not tight is itself tiny, so an absolute tolerance would misclassify it)."""
    rtol = check.real("rtol", rtol, low=0.0, low_open=True)
    p_arr = check.real_vector("p", p, low=0.0, high=1.0)
    if p_arr.size == 0:
        raise ValueError("p must have at least one entry (one per agent)")
    slack = set_slacks(p_arr, budget, cost_coefficients)
    out = []
    for T, s_ in slack.items():
        if not T:
            continue
        reach = -np.expm1(np.sum(np.log1p(-p_arr[sorted(T)])))
        if abs(s_) <= rtol * budget * reach:
            out.append(T)
    return sorted(out, key=len)


def profile_on_budget_line(n: int, budget: float, cost_coefficients, rng=None) -> FloatArray:
    """A random profile with equality in (5) for ``T = N`` (see the module docstring)."""
    n = check.integer("n", n, low=1, high=16)
    budget = check.real("budget", budget, low=0.0, low_open=True)
    k = check.real_vector("cost_coefficients", cost_coefficients, low=0.0, length=n, length_name="n")
    if np.any(k <= budget):
        raise ValueError(f"cost_coefficients must exceed the budget (Assumption 1, B < c_i'(1) = k_i), "
                         f"got min {k.min():g} <= {budget:g}")
    g = _rng(rng)
    d = g.uniform(0.05, 1.0, n) * np.where(g.uniform(size=n) < 0.2, 0.05, 1.0)

    def h(lam: float) -> float:
        q = lam * d
        return budget * (1 - np.prod(1 - q)) - float(np.sum(q * k * q))

    top = 0.999 / d.max()
    if h(top) > 0:   # the budget line lies beyond the unit cube along d
        d = d / d.max()
        top = 0.999
    lam = optimize.brentq(h, 1e-9 * top, top, xtol=1e-15, rtol=1e-15)
    return lam * d


def random_fgn_comparator(p, cost_coefficients, rng=None) -> FloatArray:
    """Random FGN *payments* (absolute amounts, shape ``(2**n, n)``) that have ``p`` as an
    equilibrium: Section 4 of the paper drops the budget, so a comparator may pay any amount.

    Random success-only payments ``z_i(S)`` are scaled agent by agent,
    ``y_i(S) = c_i'(p_i) z_i(S) / E[z_i(S_-i + i)]``, which is Eq. (3) at ``p``. A third of the
    draws also zero out about 40% of the entries (sparse comparators), keeping lone successes paid.
    """
    p = check.real_vector("p", p, low=0.0, high=1.0)
    k = check.real_vector("cost_coefficients", cost_coefficients, low=0.0, length=p.size,
                          length_name="p's agents")
    g = _rng(rng)
    n = p.size
    M = outcomes(n, of="p")
    Z = g.exponential(1.0, (2 ** n, n)) * M
    if g.uniform() < 1 / 3:
        Z *= g.uniform(size=Z.shape) < 0.6
        Z[M.sum(axis=1) == 1] = M[M.sum(axis=1) == 1]   # keep lone successes paid: b_i > 0
    scale = float(Z.sum(axis=1).max())
    _, b = expected_shares(Z / scale, p)
    return (Z / scale) * (k * p / b)[None, :]


@dataclass(frozen=True)
class SpreadCheck:
    """The mean-preserving-spread theorem for one FGN contract ``x`` and the Luce contract.

    ``mean_gap``: ``E[T_x] - E[T_L]``; ``conditional_gap``: the largest
    ``abs(E[T_x | T_L = t] - t)`` over the two values of ``T_L`` (0 and B); the variances and maxima of
    both payments; ``foc_gap``: how far ``p`` is from an equilibrium of ``x`` (Eq. 3).
    """

    mean_gap: float
    conditional_gap: float
    var_luce: float
    var_other: float
    max_luce: float
    max_other: float
    foc_gap: float

    def holds(self, tol: float = 1e-9) -> bool:
        """E equal, E[T_x | T_L] = T_L, so var and max are at least Luce's."""
        return bool(abs(self.mean_gap) <= tol and self.conditional_gap <= tol
                    and self.var_other >= self.var_luce - tol and self.max_other >= self.max_luce - tol)


def spread_check(p, budget: float, cost_coefficients, payments) -> SpreadCheck:
    """Compare the total of ``payments`` (absolute FGN payments implementing ``p``, shape
    ``(2**n, n)``) with that of the Luce contract with budget ``budget`` implementing ``p``."""
    p = check.real_vector("p", p, low=0.0, high=1.0)
    B = check.real("budget", budget, low=0.0, low_open=True)
    k = check.real_vector("cost_coefficients", cost_coefficients, low=0.0, length=p.size,
                          length_name="p's agents")
    if p.size == 0:
        raise ValueError("p must have at least one entry (one per agent)")
    Y = check.real_array("payments", payments)
    if Y.shape != (2 ** p.size, p.size) or not np.all(np.isfinite(Y)) or np.any(Y < 0):
        raise ValueError(f"payments must be finite, >= 0 and of shape {(2 ** p.size, p.size)}")
    if not np.all((p > 0) & (p < 1)):
        raise ValueError("p must lie in (0, 1) for every agent (Assumption 1 and c'(0) = 0)")
    scale = float(Y.sum(axis=1).max())
    if scale <= 0:
        raise ValueError("payments must pay something: an all-zero rule implements no p in (0, 1)")
    T, prob = total_payment_distribution(Y / scale, p, scale)
    a, b = expected_shares(Y / scale, p)
    foc = float(np.max(np.abs(k * p - scale * (b - a))))
    nobody = outcomes(p.size, of="p").sum(axis=1) == 0
    TL = np.where(nobody, 0.0, B)
    mean_x, mean_l = float(prob @ T), float(prob @ TL)
    some = prob[~nobody].sum()
    cond = max(abs(float(prob[nobody] @ T[nobody]) / max(prob[nobody].sum(), 1e-300)),
               abs(float(prob[~nobody] @ T[~nobody]) / some - B))
    return SpreadCheck(mean_gap=mean_x - mean_l, conditional_gap=cond,
                       var_luce=float(prob @ (TL - mean_l) ** 2),
                       var_other=float(prob @ (T - mean_x) ** 2),
                       max_luce=float(TL[prob > 0].max()), max_other=float(T[prob > 0].max()),
                       foc_gap=foc)


@dataclass(frozen=True)
class UniquenessCheck:
    """Evidence that one Luce contract implements ``p``.

    ``chain_ok``: the tight sets of (5), found by full enumeration, are exactly the unions of the
    top priority classes of the recovered contract (so no other partition is consistent with
    ``p``); ``weight_spread``: the largest difference between class-normalised weights found by
    a generic least-squares solve of Eq. (3) from ``starts`` random starting weights;
    ``residual``: the largest Eq. (3) residual among those solves.
    """

    chain_ok: bool
    weight_spread: float
    residual: float
    weights: FloatArray
    priority: NDArray[np.int64]

    def holds(self, tol: float = 1e-6) -> bool:
        return bool(self.chain_ok and self.weight_spread <= tol and self.residual <= 1e-9)


def normalise_weights(w: FloatArray, priority: NDArray[np.int64]) -> FloatArray:
    """Weights divided by their maximum within each priority class (a Luce contract is
    unchanged by scaling the weights of one class)."""
    w = check.real_vector("w", w, low=0.0)
    if w.size == 0 or np.any(w <= 0):
        raise ValueError("w must be non-empty with every weight > 0")
    priority = np.asarray(priority)
    if priority.shape != w.shape or not np.issubdtype(priority.dtype, np.integer):
        raise ValueError(f"priority must hold one integer class per weight ({w.size})")
    out = w.astype(float).copy()
    for c in np.unique(priority):
        out[priority == c] /= out[priority == c].max()
    return out


def luce_uniqueness(p, budget: float, cost_coefficients, rng=None, starts: int = 6) -> UniquenessCheck:
    """Test that the Luce contract implementing ``p`` is unique (up to scaling within classes)."""
    p = check.real_vector("p", p, low=0.0, high=1.0)
    B = check.real("budget", budget, low=0.0, low_open=True)
    k = check.real_vector("cost_coefficients", cost_coefficients, low=0.0, length=p.size,
                          length_name="p's agents")
    g = _rng(rng)
    w, pr = luce_contract_for(p, B, k)
    levels = np.unique(pr)
    unions = {frozenset(np.flatnonzero(pr <= c).tolist()) for c in levels}
    chain_ok = set(tight_sets(p, B, k, rtol=1e-7)) == unions
    target = k * p
    found, worst = [], 0.0
    for _ in range(check.integer("starts", starts, low=1)):
        u0 = g.uniform(-3, 3, p.size)

        def eqs(u):
            return (B * luce_win_probabilities(np.exp(u), p, pr) - target) / target

        sol = optimize.least_squares(eqs, u0, xtol=1e-15, ftol=1e-15, gtol=1e-15)
        # polish with Levenberg-Marquardt: with tiny p the equations barely depend on the
        # weights, and the trust-region solve stops before the weights are pinned down
        sol = optimize.least_squares(eqs, sol.x, xtol=1e-15, ftol=1e-15, gtol=1e-15, method="lm",
                                     max_nfev=20000)
        worst = max(worst, float(np.max(np.abs(eqs(sol.x) * target))))
        found.append(normalise_weights(np.exp(sol.x), pr))
    ref = normalise_weights(w, pr)
    spread = float(max(np.max(np.abs(f - ref)) for f in found))
    return UniquenessCheck(chain_ok=chain_ok, weight_spread=spread, residual=worst,
                           weights=ref, priority=pr)


def luce_implements(p, budget: float, cost_coefficients) -> bool:
    """Whether the Luce contract recovered by the inverse map really has ``p`` as equilibrium
    (solved forward with :func:`crowdlib.contracts.luce_equilibrium`)."""
    w, pr = luce_contract_for(p, budget, cost_coefficients)
    return bool(np.allclose(luce_equilibrium(w, budget, cost_coefficients, pr), p, atol=1e-8))


