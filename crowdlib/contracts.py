"""Multi-agent contracts with an exclusive-use budget (Goel & Hann-Caruthers).

Model (paper, Section 2).  Agent ``i`` chooses a success probability ``p_i`` at
a convex cost ``c_i(p_i)``; successes are independent.  A *contract* divides a
budget ``B`` among the agents according to the success set ``S``: agent ``i``
receives ``B * x_i(S)`` with ``x_i(S) >= 0`` and ``sum_i x_i(S) <= 1``.

Representations used here.

* Costs are quadratic, ``c_i(p) = k_i p**2 / 2``, given by
  ``cost_coefficients`` ``k``; where only the marginal cost enters (the Luce
  forward and inverse maps) a vectorised callable ``marginal_cost(p) -> array``
  is accepted instead.
* A general contract on ``n <= 16`` agents is a ``(2**n, n)`` array ``X`` whose
  row ``s`` holds the shares at the success set with bitmask ``s`` (agent ``i``
  succeeds iff bit ``i`` of ``s`` is set); :func:`outcomes` lists the sets.
* A Luce contract (Definition 5) is a weight vector and a priority vector of
  integers (smaller = higher priority); equal priorities give a weighted
  contract (Definition 4).

Ambiguities of the paper and how they are resolved (see the chapter):

* The text we worked from lost its formulas; Eqs. (1)-(5) are re-derived in the chapter and
  the constructions below follow those derivations.
* The integral form of the weighted expected share,
  ``E[w_i / (w_i + W)] = w_i * int_0^inf exp(-t w_i) prod_j (1 - p_j + p_j
  exp(-t w_j)) dt``, is ours (it follows from ``1/a = int exp(-t a) dt``); it is
  evaluated by the trapezoidal rule in ``log t``, which converges
  geometrically because the integrand is analytic in a strip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from ._validation import integer, real, real_vector

__all__ = [
    "ENUMERATION_LIMIT",
    "outcomes",
    "outcome_probabilities",
    "equal_split",
    "piece_rate",
    "bonus_pool",
    "weighted_contract",
    "luce_contract_matrix",
    "expected_shares",
    "expected_utilities",
    "contract_equilibrium",
    "fgn_reduction",
    "expected_payment",
    "total_payment_distribution",
    "payment_gap",
    "is_fgn",
    "is_sge",
    "weighted_win_probabilities",
    "luce_win_probabilities",
    "luce_equilibrium",
    "foc_residual",
    "implementable_by_luce",
    "luce_contract_for",
    "dominating_luce_profile",
    "two_agent_equilibrium",
    "two_agent_optimal_share",
    "optimal_luce_contract",
    "best_piece_rate",
    "LuceOptimum",
]

#: Largest number of agents for which success sets are enumerated exactly.
ENUMERATION_LIMIT = 16

FloatArray = NDArray[np.float64]
MarginalCost = Callable[[FloatArray], FloatArray]


# ---------------------------------------------------------------- validation
def _positive_vector(name: str, values: Any, length: int | None = None,
                     length_name: str | None = None) -> FloatArray:
    arr = real_vector(name, values, length=length, length_name=length_name)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if np.any(arr <= 0):
        raise ValueError(f"every entry of {name} must be > 0, got min {arr.min():g}")
    return arr


def _probabilities(name: str, p: Any, *, open_low: bool = True,
                   length: int | None = None, length_name: str | None = None) -> FloatArray:
    arr = real_vector(name, p, length=length, length_name=length_name)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    low_bad = arr <= 0 if open_low else arr < 0
    if np.any(low_bad) or np.any(arr >= 1):
        interval = "(0, 1)" if open_low else "[0, 1)"
        raise ValueError(f"every entry of {name} must be in {interval}, got {arr.tolist()}")
    return arr


def _marginal_cost(cost_coefficients: Any, n: int, length_name: str) -> MarginalCost:
    """Return the vectorised marginal cost ``p -> c'(p)`` for ``n`` agents."""
    if callable(cost_coefficients):
        fn = cost_coefficients

        def checked(p: FloatArray) -> FloatArray:
            out = np.asarray(fn(p), dtype=float)
            if out.shape != p.shape or not np.all(np.isfinite(out)):
                raise ValueError("cost_coefficients (a marginal-cost callable) must map an "
                                 f"array of shape {p.shape} to finite values of that shape")
            return out

        return checked
    k = _positive_vector("cost_coefficients", cost_coefficients, n, length_name)
    return lambda p: k * p


def _quadratic(cost_coefficients: Any, n: int, length_name: str) -> FloatArray:
    if callable(cost_coefficients):
        raise TypeError("cost_coefficients must be a sequence of quadratic-cost coefficients "
                        "k_i here (c_i(p) = k_i p^2 / 2), not a callable")
    return _positive_vector("cost_coefficients", cost_coefficients, n, length_name)


def _contract(contract: Any) -> tuple[FloatArray, int]:
    if isinstance(contract, (str, bytes)):
        raise TypeError("contract must be a (2**n, n) array of shares, got a string")
    try:
        X = np.asarray(contract, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"contract must be a (2**n, n) array of real shares, got "
                        f"{type(contract).__name__}") from None
    if X.ndim != 2 or X.shape[1] < 1 or X.shape[0] != 2 ** X.shape[1]:
        raise ValueError(f"contract must have shape (2**n, n), got {X.shape}")
    n = X.shape[1]
    if n > ENUMERATION_LIMIT:
        raise ValueError(f"contract: at most {ENUMERATION_LIMIT} agents can be enumerated, got {n}")
    if not np.all(np.isfinite(X)) or np.any(X < 0):
        raise ValueError("contract shares must be finite and >= 0")
    if np.any(X.sum(axis=1) > 1 + 1e-12):
        raise ValueError("contract shares must sum to at most 1 at every success set")
    return X, n


def _priority(priority: Any, n: int) -> NDArray[np.int64]:
    if priority is None:
        return np.zeros(n, dtype=np.int64)
    if isinstance(priority, (str, bytes)) or not isinstance(priority, (Sequence, np.ndarray)):
        raise TypeError("priority must be a sequence of integers")
    arr = np.asarray(priority)
    if arr.ndim != 1 or arr.size != n:
        raise ValueError(f"priority must have length {n} (one entry per weight), got {arr.size}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"priority must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


# ------------------------------------------------------ exact enumeration
def outcomes(n: int, *, of: str | None = None) -> NDArray[np.bool_]:
    """All ``2**n`` success sets as a boolean ``(2**n, n)`` array (row = bitmask).

    ``of`` names the parameter ``n`` was taken from (its number of entries), for the message
    when ``n`` is outside ``[1, ENUMERATION_LIMIT]``.
    """
    if of is not None and isinstance(n, (int, np.integer)) and not 1 <= n <= ENUMERATION_LIMIT:
        raise ValueError(f"{of} must have between 1 and {ENUMERATION_LIMIT} entries (one per agent, "
                         f"enumerated exactly), got {n}")
    n = integer("n", n, low=1)
    if n > ENUMERATION_LIMIT:
        raise ValueError(f"n must be at most {ENUMERATION_LIMIT} for exact enumeration, got {n}")
    s = np.arange(2 ** n)[:, None]
    return ((s >> np.arange(n)) & 1).astype(bool)


def outcome_probabilities(p: Any) -> FloatArray:
    """``Pr_p(S) = prod_{j in S} p_j prod_{j not in S} (1 - p_j)`` for every ``S``."""
    p = real_vector("p", p, low=0.0, high=1.0)
    if not 1 <= p.size <= ENUMERATION_LIMIT:
        raise ValueError(f"p must have between 1 and {ENUMERATION_LIMIT} entries (one per agent, "
                         f"enumerated exactly), got {p.size}")
    M = outcomes(p.size)
    return np.prod(np.where(M, p, 1.0 - p), axis=1)


def _leave_one_out(p: FloatArray, M: NDArray[np.bool_]) -> FloatArray:
    """``L[S, i] = prod_{j != i} (p_j if j in S else 1 - p_j)`` by prefix/suffix products."""
    F = np.where(M, p, 1.0 - p)
    ones = np.ones((F.shape[0], 1))
    prefix = np.cumprod(np.hstack([ones, F[:, :-1]]), axis=1)
    suffix = np.cumprod(np.hstack([ones, F[:, :0:-1]]), axis=1)[:, ::-1]
    return prefix * suffix


def expected_shares(contract: Any, p: Any) -> tuple[FloatArray, FloatArray]:
    """Expected shares ``(a, b)`` of Eq. (1), by enumerating all success sets.

    ``b_i = E[x_i(S_-i + i)]`` (agent ``i`` succeeds) and ``a_i = E[x_i(S_-i)]``
    (agent ``i`` fails), where ``S_-i`` is the random success set of the others.
    """
    X, n = _contract(contract)
    p = real_vector("p", p, low=0.0, high=1.0, length=n, length_name="contract's agents")
    M = outcomes(n)
    L = _leave_one_out(p, M)
    b = np.sum(np.where(M, X * L, 0.0), axis=0)
    a = np.sum(np.where(M, 0.0, X * L), axis=0)
    return a, b


def expected_utilities(contract: Any, p: Any, budget: float, cost_coefficients: Any) -> FloatArray:
    """``u_i(p) = B sum_S Pr_p(S) x_i(S) - k_i p_i^2 / 2`` by direct enumeration."""
    X, n = _contract(contract)
    B = real("budget", budget, low=0.0, low_open=True)
    k = _quadratic(cost_coefficients, n, "agents")
    p = real_vector("p", p, low=0.0, high=1.0, length=n, length_name="contract's agents")
    pr = np.prod(np.where(outcomes(n), p, 1.0 - p), axis=1)
    return B * pr @ X - k * p ** 2 / 2


def contract_equilibrium(contract: Any, budget: float, cost_coefficients: Any,
                         p0: Any | None = None) -> FloatArray:
    """An equilibrium of a general contract from the first-order condition (2).

    Each agent's best response is ``clip(B (b_i - a_i) / k_i, 0, 1)`` (the
    utility is strictly concave in ``p_i``, Eq. (1)); the fixed point is found
    with Powell's hybrid method and verified.  Raises ``RuntimeError`` if the
    solver does not reach a fixed point to 1e-10.
    """
    X, n = _contract(contract)
    B = real("budget", budget, low=0.0, low_open=True)
    k = _quadratic(cost_coefficients, n, "agents")
    M = outcomes(n)

    def best_response(p: FloatArray) -> FloatArray:
        q = np.clip(p, 0.0, 1.0)
        L = _leave_one_out(q, M)
        gain = np.sum(np.where(M, X * L, -X * L), axis=0)
        return np.clip(B * gain / k, 0.0, 1.0)

    start = np.full(n, 0.3) if p0 is None else real_vector("p0", p0, low=0, high=1, length=n)
    sol = optimize.root(lambda p: p - best_response(p), start, method="hybr",
                        options={"xtol": 1e-14})
    p = np.clip(sol.x, 0.0, 1.0)
    if np.max(np.abs(p - best_response(p))) > 1e-10:
        raise RuntimeError("contract_equilibrium: no fixed point found from this start")
    return p


def expected_payment(contract: Any, p: Any, budget: float) -> float:
    """Expected total payment ``B E[sum_i x_i(S)]`` at profile ``p``."""
    X, n = _contract(contract)
    B = real("budget", budget, low=0.0, low_open=True)
    p = real_vector("p", p, low=0.0, high=1.0, length=n, length_name="contract's agents")
    pr = np.prod(np.where(outcomes(n), p, 1.0 - p), axis=1)
    return float(B * pr @ X.sum(axis=1))


def total_payment_distribution(contract: Any, p: Any, budget: float) -> tuple[FloatArray, FloatArray]:
    """Total payment ``B sum_i x_i(S)`` and ``Pr_p(S)`` for every success set ``S``."""
    X, n = _contract(contract)
    B = real("budget", budget, low=0.0, low_open=True)
    p = real_vector("p", p, low=0.0, high=1.0, length=n, length_name="contract's agents")
    pr = np.prod(np.where(outcomes(n), p, 1.0 - p), axis=1)
    return B * X.sum(axis=1), pr


def fgn_reduction(contract: Any, p: Any, budget: float, cost_coefficients: Any) -> FloatArray:
    """The FGN contract of Proposition 2 implementing the same equilibrium ``p``.

    ``xhat_i(S) = alpha_i x_i(S)`` for ``i`` in ``S`` and 0 otherwise, with
    ``alpha_i = c_i'(p_i) / (B b_i)``; ``alpha_i`` lies in ``[0, 1]`` by Eq. (2).
    ``p`` must be an equilibrium of ``contract`` (checked to 1e-8).
    """
    X, n = _contract(contract)
    B = real("budget", budget, low=0.0, low_open=True)
    k = _quadratic(cost_coefficients, n, "agents")
    p = real_vector("p", p, low=0.0, high=1.0, length=n, length_name="contract's agents")
    a, b = expected_shares(X, p)
    if np.max(np.abs(p - np.clip(B * (b - a) / k, 0, 1))) > 1e-8:
        raise ValueError("p must be an equilibrium of contract (first-order condition (2) fails)")
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(b > 0, k * p / (B * b), 0.0)
    alpha = np.clip(alpha, 0.0, 1.0)
    return np.where(outcomes(n), X * alpha, 0.0)


def is_fgn(contract: Any, atol: float = 1e-12) -> bool:
    """Definition 2: failures get nothing."""
    X, n = _contract(contract)
    return bool(np.all(np.where(outcomes(n), 0.0, X) <= atol))


def is_sge(contract: Any, atol: float = 1e-12) -> bool:
    """Definition 3: FGN and the whole budget goes out whenever someone succeeds."""
    X, _ = _contract(contract)
    return is_fgn(X, atol) and bool(np.all(np.abs(X[1:].sum(axis=1) - 1) <= atol))


def payment_gap(p: Any, budget: float, cost_coefficients: Any) -> float:
    """The gap of Corollary 1, ``delta(p) = B (1 - prod(1 - p_i)) - sum p_i c_i'(p_i)``."""
    p = real_vector("p", p, low=0.0, high=1.0)
    B = real("budget", budget, low=0.0, low_open=True)
    mc = _marginal_cost(cost_coefficients, p.size, "p's agents")
    return float(B * (1 - np.prod(1 - p)) - np.sum(p * mc(p)))


# ------------------------------------------------------ contract builders
def equal_split(n: int) -> FloatArray:
    """The equal-split contract ``x_i(S) = 1/|S|`` for ``i`` in ``S``."""
    M = outcomes(n).astype(float)
    size = M.sum(axis=1, keepdims=True)
    return np.divide(M, size, out=np.zeros_like(M), where=size > 0)


def piece_rate(rewards: Any, budget: float) -> FloatArray:
    """Piece rate: each successful agent ``i`` gets ``rewards[i]`` (``x_i(S) = r_i / B``).

    Feasible for every success set only when ``sum(rewards) <= budget``.
    """
    r = real_vector("rewards", rewards, low=0.0)
    B = real("budget", budget, low=0.0, low_open=True)
    if r.sum() > B * (1 + 1e-12):
        raise ValueError(f"rewards must sum to at most budget={B:g}, got {r.sum():g}")
    return outcomes(r.size, of="rewards") * (r / B)


def bonus_pool(shares: Any) -> FloatArray:
    """Bonus pool: agent ``i`` gets ``shares[i]`` of the budget only if all agents succeed."""
    s = real_vector("shares", shares, low=0.0)
    if s.size == 0 or s.size > ENUMERATION_LIMIT:
        raise ValueError(f"shares must hold 1 to {ENUMERATION_LIMIT} agents (exact enumeration), got {s.size}")
    if s.sum() > 1 + 1e-12:
        raise ValueError(f"shares must sum to at most 1, got {s.sum():g}")
    X = np.zeros((2 ** s.size, s.size))
    X[-1] = s
    return X


def luce_contract_matrix(weights: Any, priority: Any | None = None) -> FloatArray:
    """The Luce contract of Definition 5 as a ``(2**n, n)`` share array.

    At a success set ``S``, the successful agents of the highest priority class
    that meets ``S`` split the budget in proportion to their weights.
    """
    w = _positive_vector("weights", weights)
    pr = _priority(priority, w.size)
    M = outcomes(w.size, of="weights")
    big = np.iinfo(np.int64).max
    top = np.min(np.where(M, pr, big), axis=1, keepdims=True)
    winners = M & (pr == top)
    ww = np.where(winners, w, 0.0)
    total = ww.sum(axis=1, keepdims=True)
    return np.divide(ww, total, out=np.zeros_like(ww), where=total > 0)


def weighted_contract(weights: Any) -> FloatArray:
    """The weighted contract of Definition 4 as a share array."""
    return luce_contract_matrix(weights)


# -------------------------------------------- weighted win probabilities
def _log_t_nodes(w: FloatArray, step: float) -> tuple[FloatArray, FloatArray]:
    """Trapezoid nodes and weights in ``y = log t`` covering the integrand's mass.

    Weights are normalised to ``max(w) = 1``.  The part below ``t = 1e-17`` is at
    most ``w_i * 1e-17``; the part above ``t = 48 / min(w)`` is at most
    ``exp(-48)``.  The integrand is analytic in the strip ``|Im y| < pi/2``, so
    the trapezoid error is of order ``exp(-pi**2 / step)``.
    """
    lo, hi = np.log(1e-17), np.log(48.0 / w.min())
    y = np.arange(lo, hi + step, step)
    t = np.exp(y)
    return t, step * t  # dt = t dy


def _weighted_integral(w: FloatArray, p: FloatArray, step: float = 0.2) -> FloatArray:
    w = w / w.max()
    t, dt = _log_t_nodes(w, step)
    decay = np.exp(-np.outer(t, w))                      # (K, n): exp(-t w_j)
    factor = 1.0 - p * (1.0 - decay)                    # 1 - p_j + p_j exp(-t w_j)
    log_g = np.sum(np.log(factor), axis=1, keepdims=True)
    others = np.exp(log_g - np.log(factor))             # prod over j != i
    return w * np.sum(dt[:, None] * decay * others, axis=0)


def _weighted_exact(w: FloatArray, p: FloatArray) -> FloatArray:
    M = outcomes(w.size)
    L = _leave_one_out(p, M)
    W = M @ w
    share = w / (w + W[:, None])
    return np.sum(np.where(M, 0.0, L * share), axis=0)


def weighted_win_probabilities(weights: Any, p: Any, method: str = "auto") -> FloatArray:
    """``E[w_i / (w_i + W(S_-i))]``: agent ``i``'s expected share when it succeeds.

    This is ``b_i`` of Eq. (3) for the weighted contract of Definition 4.
    ``method`` is ``"exact"`` (enumerate the ``2**(n-1)`` sets of the others),
    ``"integral"`` (the one-dimensional integral in the module docstring, O(n)
    per node) or ``"auto"`` (exact up to :data:`ENUMERATION_LIMIT` agents).
    """
    w = _positive_vector("weights", weights)
    p = real_vector("p", p, low=0.0, high=1.0, length=w.size, length_name="weights")
    if np.any(p >= 1):
        raise ValueError("every entry of p must be < 1 here")
    if method not in ("auto", "exact", "integral"):
        raise ValueError(f"method must be 'auto', 'exact' or 'integral', got {method!r}")
    if method == "exact" or (method == "auto" and w.size <= ENUMERATION_LIMIT):
        return _weighted_exact(w, p)
    return _weighted_integral(w, p)


def luce_win_probabilities(weights: Any, p: Any, priority: Any | None = None,
                           method: str = "auto") -> FloatArray:
    """``b_i`` of Eq. (3) for a Luce contract (Definition 5).

    Agent ``i`` in class ``k`` is paid only when nobody of a higher class
    succeeds, so ``b_i = prod_{j higher} (1 - p_j) * E[w_i / (w_i + W(S_-i in k))]``.
    """
    w = _positive_vector("weights", weights)
    p = real_vector("p", p, low=0.0, high=1.0, length=w.size, length_name="weights")
    pr = _priority(priority, w.size)
    b = np.empty(w.size)
    survive = 1.0
    for level in np.unique(pr):
        cls = pr == level
        b[cls] = survive * weighted_win_probabilities(w[cls], p[cls], method)
        survive *= float(np.prod(1.0 - p[cls]))
    return b


# ---------------------------------------------------------- forward map
def _solve_foc(win: Callable[[FloatArray], FloatArray], B: float, mc: MarginalCost,
               n: int, p0: FloatArray) -> FloatArray:
    def residual(p: FloatArray) -> FloatArray:
        q = np.clip(p, 1e-300, 1 - 1e-12)
        return mc(q) - B * win(q)

    if n <= 64:
        sol = optimize.root(residual, p0, method="hybr", options={"xtol": 1e-14})
        p = sol.x
    else:
        # Jacobian-free Newton-Krylov in log-odds z = logit(p) on the relative residual
        # log c_i'(p_i) - log(B b_i(p)): agents with tiny weights have tiny p_i, and in p
        # itself their steps overshoot below 0, where clipping flattens the residual and
        # the Krylov solve breaks down.  Each residual costs O(n * nodes).  SciPy's
        # step-size test divides 0 by 0 when all agents are identical; harmless.
        def log_residual(z: FloatArray) -> FloatArray:
            q = special.expit(z)
            return np.log(mc(q)) - np.log(B * win(q))

        try:
            with np.errstate(invalid="ignore", divide="ignore"):
                z = optimize.newton_krylov(log_residual, special.logit(np.clip(p0, 1e-12, 0.99)),
                                           f_tol=1e-13, method="lgmres", maxiter=200)
        except (ValueError, optimize.NoConvergence) as exc:
            raise RuntimeError(f"luce_equilibrium: the Newton-Krylov solve failed ({exc})") from exc
        p = special.expit(z)
    p = np.clip(p, 1e-300, 1 - 1e-12)
    return p


def luce_equilibrium(weights: Any, budget: float, cost_coefficients: Any,
                     priority: Any | None = None, method: str = "auto") -> FloatArray:
    """Equilibrium success probabilities of a Luce (or weighted) contract.

    Solves Eq. (3), ``c_i'(p_i) = B b_i(p)``, with ``b_i`` from
    :func:`luce_win_probabilities` (exact enumeration up to 16 agents per
    priority class, the one-dimensional integral beyond).  ``cost_coefficients``
    are the ``k_i`` of ``c_i(p) = k_i p^2 / 2`` or a vectorised marginal-cost
    callable.  Assumption 1 (``B < c_i'(1)`` for all ``i``) is required, so every
    ``p_i`` lies in ``(0, 1)``.  The solution is verified: the largest FOC
    residual must be below ``1e-9`` or ``RuntimeError`` is raised.
    """
    w = _positive_vector("weights", weights)
    n = w.size
    B = real("budget", budget, low=0.0, low_open=True)
    mc = _marginal_cost(cost_coefficients, n, "weights")
    pr = _priority(priority, n)
    if method not in ("auto", "exact", "integral"):
        raise ValueError(f"method must be 'auto', 'exact' or 'integral', got {method!r}")
    top = mc(np.ones(n))
    if np.any(B >= top):
        raise ValueError(f"budget must be < c_i'(1) = {top.min():g} for every agent (Assumption 1), "
                         f"got {B:g}")
    if np.any(B / top < 1e-280):
        raise ValueError(f"budget / c_i'(1) must be at least 1e-280 for every agent (below it the "
                         f"equilibrium p_i underflows double precision), got {float(np.min(B / top)):g}")
    # start near the symmetric large-n equilibrium, c_i'(1) p_i^2 n = B
    guess = np.clip(np.sqrt(B / (n * top)), 1e-6, 0.9)
    try:
        p = _solve_foc(lambda q: luce_win_probabilities(w, q, pr, method), B, mc, n, guess)
    except ValueError as err:           # the solver stepped to a non-finite p
        raise ValueError(f"weights, budget and cost_coefficients: the first-order conditions could not "
                         f"be solved in double precision ({err})") from None
    res = np.max(np.abs(mc(p) - B * luce_win_probabilities(w, p, pr, method)))
    if not res <= 1e-9 * max(1.0, B):
        raise RuntimeError(f"luce_equilibrium: FOC residual {res:.2e} above 1e-9")
    return p


def foc_residual(p: Any, weights: Any, budget: float, cost_coefficients: Any,
                 priority: Any | None = None, method: str = "auto") -> float:
    """Largest ``|c_i'(p_i) - B b_i(p)|`` over agents (Eq. (3)) at ``p``."""
    w = _positive_vector("weights", weights)
    p = _probabilities("p", p, length=w.size, length_name="weights")
    B = real("budget", budget, low=0.0, low_open=True)
    mc = _marginal_cost(cost_coefficients, w.size, "weights")
    return float(np.max(np.abs(mc(p) - B * luce_win_probabilities(w, p, priority, method))))


# ---------------------------------------------------------- inverse map
def _prefix_slack(p: FloatArray, B: float, r: FloatArray) -> tuple[NDArray[np.int64], FloatArray, FloatArray]:
    """Order agents by ``r_i = c_i'(p_i)`` descending; return the order, the slack of (5) on
    each prefix and the scale ``B Pr(someone in the prefix succeeds)`` it is measured against."""
    order = np.argsort(-r, kind="stable")
    pay = np.cumsum((p * r)[order])
    reach = -np.expm1(np.cumsum(np.log1p(-p[order])))      # 1 - prod(1 - p), accurate for tiny p
    return order, B * reach - pay, B * reach


def _check_condition5(p: Any, budget: float, cost_coefficients: Any, rtol: float):
    p = _probabilities("p", p)
    B = real("budget", budget, low=0.0, low_open=True)
    rtol = real("rtol", rtol, low=0.0, low_open=True)
    r = _marginal_cost(cost_coefficients, p.size, "p's agents")(p)
    order, slack, scale = _prefix_slack(p, B, r)
    # the tolerance is relative to each prefix's own scale: with tiny p the slack of a set that
    # is not tight is itself tiny (of order B p_i p_j), and an absolute tolerance would call it tight
    return p, B, r, order, slack, rtol * scale


def implementable_by_luce(p: Any, budget: float, cost_coefficients: Any, rtol: float = 1e-9) -> bool:
    """Condition (5): some Luce contract with budget ``B`` implements ``p``.

    For every set ``T`` of agents ``sum_{i in T} p_i c_i'(p_i) <= B (1 - prod_{i in T}
    (1 - p_i))``, with equality for ``T = N`` (tolerance ``rtol * B``).  Only the
    ``n`` prefixes of the agents sorted by ``c_i'(p_i)`` descending are checked:
    the slack is minimised on such a prefix (exchange argument in the chapter).
    """
    _, _, _, _, slack, tol = _check_condition5(p, budget, cost_coefficients, rtol)
    return bool(np.all(slack >= -tol) and abs(slack[-1]) <= tol[-1])


def luce_contract_for(p: Any, budget: float, cost_coefficients: Any,
                      rtol: float = 1e-9) -> tuple[FloatArray, NDArray[np.int64]]:
    """The Luce contract ``(weights, priority)`` implementing ``p`` (converse of Prop. 4).

    The tight sets of (5) form a chain of prefixes in the order of ``c_i'(p_i)``
    descending; consecutive differences are the priority classes (priority 0 is
    the highest).  Within class ``k`` the weights solve Eq. (3) with the budget
    ``B prod_{j in higher classes} (1 - p_j)``; weights are normalised to
    ``max = 1`` per class.  Raises ``ValueError`` naming the violated set (agents
    numbered from 0) when (5) fails, and when Assumption 1 (``B < c_i'(1)``) fails,
    as :func:`luce_equilibrium` does.
    """
    p, B, r, order, slack, tol = _check_condition5(p, budget, cost_coefficients, rtol)
    worst = int(np.argmin(slack / tol))
    if slack[worst] < -tol[worst]:
        T = sorted(order[: worst + 1].tolist())
        raise ValueError(f"p violates condition (5) for T = {T}: expected pay to T exceeds "
                         f"B * Pr(someone in T succeeds) by {-slack[worst]:.3g}")
    if abs(slack[-1]) > tol[-1]:
        # 1 - prod(1 - p) loses everything to rounding for tiny p; -expm1(sum log1p(-p)) does not
        reach = float(-np.expm1(np.sum(np.log1p(-p))))
        need = float(np.sum(r * (p / reach))) if reach > 0 else float("inf")
        raise ValueError(f"condition (5) needs equality for T = N: budget must be {need:.12g} "
                         f"for this p, got {B:g}")
    top = _marginal_cost(cost_coefficients, p.size, "p")(np.ones(p.size))
    if np.any(B >= top):  # as in luce_equilibrium, so that the round trip is always defined
        raise ValueError(f"budget must be < c_i'(1) = {top.min():g} for every agent (Assumption 1), "
                         f"got {B:g}")
    cuts = [i + 1 for i in range(p.size) if abs(slack[i]) <= tol[i]]
    weights = np.ones(p.size)
    priority = np.zeros(p.size, dtype=np.int64)
    start, survive = 0, 1.0
    for level, end in enumerate(cuts):
        members = order[start:end]
        priority[members] = level
        weights[members] = _class_weights(p[members], r[members], B * survive)
        survive *= float(np.prod(1.0 - p[members]))
        start = end
    return weights, priority


def _class_weights(p: FloatArray, r: FloatArray, budget: float) -> FloatArray:
    """Weights of one priority class solving ``budget * b_i(w) = r_i`` (Eq. (3))."""
    m = p.size
    if m == 1:
        return np.ones(1)

    def eqs(u: FloatArray) -> FloatArray:
        w = np.exp(np.concatenate([[0.0], u]))
        b = weighted_win_probabilities(w, p)
        return (budget * b[1:] - r[1:]) / r[1:]

    # damped Newton on the log-weights (weight 0 fixed at 1), central-difference Jacobian
    u = np.log(r[1:] / r[0])
    f = eqs(u)
    for _ in range(100):
        if np.max(np.abs(f)) <= 1e-13:
            break
        h = 1e-6
        J = np.column_stack([(eqs(u + h * e) - eqs(u - h * e)) / (2 * h) for e in np.eye(m - 1)])
        step = np.linalg.solve(J, -f)
        t = 1.0
        while t > 1e-6:
            trial = eqs(u + t * step)
            if np.linalg.norm(trial) < np.linalg.norm(f):
                break
            t /= 2
        u, f = u + t * step, trial
    if np.max(np.abs(f)) > 1e-9:
        raise RuntimeError("luce_contract_for: the weight equations did not converge")
    w = np.exp(np.concatenate([[0.0], u]))
    return w / w.max()


def dominating_luce_profile(p: Any, budget: float, cost_coefficients: Any) -> FloatArray:
    """A profile ``q >= p`` with ``delta(q) = 0`` that a Luce contract implements.

    Constructive side of the theorem "maximal iff SGE" for quadratic costs:
    scale the agents not yet fixed by the largest common factor ``lam`` that
    keeps condition (5) (with the residual budget) on every prefix; the prefix
    that becomes tight is fixed and the rest repeat with the budget left when
    it fails.  ``p`` must satisfy (5) as an inequality (every implementable
    profile does).
    """
    p = _probabilities("p", p)
    B = real("budget", budget, low=0.0, low_open=True)
    k = _quadratic(cost_coefficients, p.size, "p's agents")
    if np.any(B >= k):
        raise ValueError(f"budget must be < min(cost_coefficients) = {k.min():g} (Assumption 1)")
    q = p.copy()
    free = np.argsort(-(k * p), kind="stable")   # order by c_i'(p_i), invariant under scaling
    survive = 1.0
    while free.size:
        Bk = B * survive
        best_lam, best_len = np.inf, 0
        for length in range(1, free.size + 1):
            T = free[:length]

            def h(lam: float, T: NDArray[np.int64] = T) -> float:
                return Bk * (1 - np.prod(1 - lam * p[T])) - lam ** 2 * np.sum(k[T] * p[T] ** 2)

            top = 1.0 / p[T].max()
            if h(1.0) < -1e-12 * B:
                raise ValueError(f"p violates condition (5) for T = {sorted(T.tolist())}; "
                                 "it is not implementable")
            lam = 1.0 if h(1.0) <= 0 else optimize.brentq(h, 1.0, top, xtol=1e-15, rtol=1e-15)
            if lam < best_lam - 1e-13:
                best_lam, best_len = lam, length
        T = free[:best_len]
        q[T] = best_lam * p[T]
        survive *= float(np.prod(1 - q[T]))
        free = free[best_len:]
    return q


# ------------------------------------------------- two agents (Prop. 3)
def two_agent_equilibrium(x: float, c1: float, c2: float) -> tuple[float, float]:
    """Equilibrium (4) of the SGE contract giving agent 1 share ``x`` when both succeed (B = 1)."""
    x = real("x", x, low=0.0, high=1.0)
    c1 = real("c1", c1, low=1.0, low_open=True)
    c2 = real("c2", c2, low=1.0, low_open=True)
    d = c1 * c2 - x * (1 - x)
    return (c2 + x - 1) / d, (c1 - x) / d


def two_agent_optimal_share(v1: float, v2: float, c1: float, c2: float) -> float:
    """Proposition 3: optimal share of agent 1 when both succeed (budget normalised to 1).

    Costs ``c_i(p) = c_i p^2 / 2`` with ``c_i > 1`` (Assumption 1), objective
    ``v1 p1 + v2 p2``.  With ``r = v1 / v2`` and ``M = c1 + (c2 - 1) r``: the
    stationary point ``(r - c1 - c2 r + sqrt(D)) / (r - 1)``, ``D = (c1 + c2 - 1)(c1 + c2 r^2 - r)``,
    evaluated in the equivalent form ``(c1 c2 (r - 1) + M) / (sqrt(D) + M)`` (stable
    at ``r = 1``, where it is 1/2), clipped to ``[0, 1]`` (the corners are the chapter's
    conditions ``r <= c1 (c2 - 1) / (c1 c2 + c2 - 1)`` and
    ``r >= (c1 c2 + c1 - 1) / (c2 (c1 - 1))``).
    """
    v1 = real("v1", v1, low=0.0, low_open=True)
    v2 = real("v2", v2, low=0.0, low_open=True)
    c1 = real("c1", c1, low=1.0, low_open=True)
    c2 = real("c2", c2, low=1.0, low_open=True)
    with np.errstate(over="ignore"):
        r = v1 / v2
    if not math.isfinite(r) or r == 0.0:
        raise ValueError(f"v1 / v2 must be a positive finite ratio, got {v1:g} / {v2:g}")
    # the corner conditions divided through by c1 c2 (no overflow for costs near 1e300)
    if r <= (1 - 1 / c2) / (1 + 1 / c1 - 1 / (c1 * c2)):
        return 0.0
    if r >= (1 + 1 / c2 - 1 / (c1 * c2)) / (1 - 1 / c1):
        return 1.0
    # the stationary point rationalised: (sqrt(D) - M) / (r - 1) = (D - M^2) / ((r - 1)(sqrt(D) + M))
    # with M = c1 + (c2 - 1) r and D - M^2 = (r - 1)(c1 c2 (r - 1) + M); no cancellation at r = 1;
    # D's two factors and c1 c2 (r - 1) are formed so that no product overflows
    M = c1 + (c2 - 1) * r
    root = math.sqrt(c1 + c2 - 1) * math.sqrt(c1 + c2 * r * r - r)
    return float(np.clip((c1 * (c2 * (r - 1)) + M) / (root + M), 0.0, 1.0))


# ------------------------------------------- optimal Luce contract (n agents)
@dataclass(frozen=True)
class LuceOptimum:
    """Result of :func:`optimal_luce_contract`."""

    weights: FloatArray
    p: FloatArray
    value: float
    objective: str

    def verify(self, budget: float, cost_coefficients: Any, atol: float = 1e-8) -> bool:
        """Check that ``p`` is the equilibrium of the weighted contract ``weights``."""
        return foc_residual(self.p, self.weights, budget, cost_coefficients) <= atol


def _objective(name: str, values: FloatArray | None) -> Callable[[FloatArray], float]:
    if name == "linear":
        if values is None:
            raise ValueError("values are required for objective='linear'")
        return lambda p: float(values @ p)
    if name == "any_success":
        return lambda p: float(1 - np.prod(1 - p))
    raise ValueError(f"objective must be 'linear' or 'any_success', got {name!r}")


def optimal_luce_contract(budget: float, cost_coefficients: Any, objective: str = "linear",
                          values: Any | None = None, log_weight_bound: float = 8.0,
                          restarts: int = 2, seed: int = 0) -> LuceOptimum:
    """Maximise the principal's objective over weighted contracts (Corollary 2).

    Searches the ``n - 1`` log-weights in ``[-bound, bound]`` (weights far apart
    approximate priority classes, the closure of Definition 5) with
    L-BFGS-B from equal weights, from weights proportional to ``values`` and
    from ``restarts`` seeded random starts; each evaluation solves the
    equilibrium exactly (``n <= 16``).  ``objective`` is ``"linear"``
    (``sum v_i p_i``, needs ``values``) or ``"any_success"``
    (``1 - prod (1 - p_i)``).
    """
    k = _quadratic(cost_coefficients, None, None)
    n = k.size
    if n > ENUMERATION_LIMIT:
        raise ValueError(f"cost_coefficients: at most {ENUMERATION_LIMIT} agents, got {n}")
    B = real("budget", budget, low=0.0, low_open=True)
    v = None if values is None else _positive_vector("values", values, n, "cost_coefficients")
    V = _objective(objective, v)
    bound = real("log_weight_bound", log_weight_bound, low=0.0, low_open=True)
    restarts = integer("restarts", restarts, low=0)
    if n == 1:
        w = np.ones(1)
        p = luce_equilibrium(w, B, k)
        return LuceOptimum(w, p, V(p), objective)

    def neg(u: FloatArray) -> float:
        w = np.exp(np.concatenate([[0.0], u]))
        return -V(luce_equilibrium(w, B, k))

    rng = np.random.default_rng(seed)
    starts = [np.zeros(n - 1)]
    if v is not None:
        starts.append(np.clip(np.log(v[1:] / v[0]), -bound, bound))
    starts += [rng.uniform(-2, 2, n - 1) for _ in range(restarts)]
    best = None
    for u0 in starts:
        res = optimize.minimize(neg, u0, method="L-BFGS-B", bounds=[(-bound, bound)] * (n - 1),
                                options={"ftol": 1e-13, "gtol": 1e-10})
        if best is None or res.fun < best.fun:
            best = res
    res = best
    w = np.exp(np.concatenate([[0.0], res.x]))
    p = luce_equilibrium(w, B, k)
    return LuceOptimum(w / w.max(), p, V(p), objective)


def best_piece_rate(budget: float, cost_coefficients: Any, objective: str = "linear",
                    values: Any | None = None) -> tuple[FloatArray, FloatArray, float]:
    """The best piece-rate contract that never pays more than ``budget`` in total.

    Agent ``i`` is paid ``rho_i`` per success, so ``p_i = rho_i / k_i``; the
    budget binds when everybody succeeds: ``sum rho_i <= B``.  For the linear
    and the ``"any_success"`` objectives the maximum over the simplex is at a
    vertex (both are increasing transforms of convex functions of ``rho``):
    the whole budget goes to one agent.
    Returns ``(rewards, p, value)``.
    """
    k = _quadratic(cost_coefficients, None, None)
    n = k.size
    B = real("budget", budget, low=0.0, low_open=True)
    if np.any(B >= k):
        raise ValueError(f"budget must be < min(cost_coefficients) = {k.min():g} (Assumption 1)")
    v = None if values is None else _positive_vector("values", values, n, "cost_coefficients")
    V = _objective(objective, v)
    # both objectives are increasing transforms of convex functions of rho (linear;
    # 1 - prod(1 - rho_i/k_i) = 1 - exp(-g) with g = -sum log(1 - rho_i/k_i) convex),
    # so the maximum over the simplex sits at a vertex: one agent gets all of B
    vertices = [V(np.where(np.arange(n) == i, B / k, 0.0)) for i in range(n)]
    rho = np.zeros(n)
    rho[int(np.argmax(vertices))] = B
    p = rho / k
    return rho, p, V(p)
