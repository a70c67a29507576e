"""Rating protocols for the crowdsourcing contest dilemma (Lu et al., arXiv:1712.09846).

The text of the paper we worked from lost every formula, Table II and Section V.
The book reconstructs a stage game that agrees with the surviving prose and derives
the protocol's mathematics inside it; the appendix to the rating chapter writes the
formulas out ("A.n" below names its sections). What the prose fixes is the paper's
(recovered); every closed form here is our derivation, checked in the chapter.

How the open points are resolved (A.1, A.2 and the chapter's open points):

* Stage game "L" (leader-laggard): after stage 1 one worker is ahead (1/2 each
  if both chose alike, ``w`` for C against S); only the laggard attacks, at cost
  ``a``, overturning the standing with probability ``d``. Variant ``"L'"``: only
  a crowdsourced solution can be attacked.
* Monitoring: each stage's record is flipped independently with probability
  ``eps1`` (stage 1) or ``eps2`` (stage 2). So CN is recorded as CN with
  probability ``q_N = (1 - eps1)(1 - eps2)``; a CA deviator in game L with
  probability ``(1 - eps1) / 2``; ``K = (1 - eps1)(1 - 2 eps2)`` is twice the
  detection margin.
* The rating scheme acts on the *recorded* action (Eq. (1)); the requester
  gets the task's value 1 when it reports the task fulfilled, with probability
  ``q_N`` (Eq. (18)).
* Design (Definition 3) fixes ``P_min = 0`` as the paper does after Theorem 1;
  :func:`best_protocol_free_pmin` drops that restriction (the erratum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from ._validation import integer, real, real_vector

__all__ = [
    "StageGame",
    "stage_game",
    "pure_equilibria",
    "equilibrium_mask",
    "transition_matrix",
    "stationary_distribution",
    "long_term_utilities",
    "value_gap",
    "ACTIONS",
    "action_table",
    "best_responses",
    "sustainable",
    "requester_utility",
    "Protocol",
    "design_protocol",
    "design_protocol_exact",
    "design_protocol_brute",
    "best_protocol_free_pmin",
    "deviation_gains",
    "sustainable_all_actions",
    "design_protocol_all_actions",
    "participation",
    "feasible_protocol",
    "equilibrium_census",
    "design_case",
    "design_region",
    "design_constraints",
    "utilities_by_iteration",
]

FloatArray = NDArray[np.float64]


def _prob(name: str, value: Any) -> float:
    return real(name, value, low=0.0, high=1.0)


def _nonneg(name: str, value: Any) -> float:
    return real(name, value, low=0.0)


def _pair(name: str, value: Any) -> tuple[float, float]:
    v = real_vector(name, value, low=0.0, length=2, length_name="worker i, worker j")
    return float(v[0]), float(v[1])


def _delta(delta: Any) -> float:
    return real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)


# ------------------------------------------------------------------ the stage game (the chapter's game L)
@dataclass(frozen=True)
class StageGame:
    """The reduced stage-1 game (our Table II): payoffs and expected attacks per outcome.

    Rows are worker i's action, columns worker j's, in the order (C, S).
    """

    payoff_i: FloatArray
    payoff_j: FloatArray
    attacks: FloatArray


def _prices(p_min: Any, p_max: Any) -> tuple[float, float]:
    """``(P_min, P_max)`` in [0, 1] with ``P_min <= P_max`` (the protocol's two prices)."""
    pm, px = _prob("p_min", p_min), _prob("p_max", p_max)
    if pm > px + 1e-9:
        raise ValueError(f"p_min must be at most p_max, got {pm:.12g} > {px:.12g}")
    return min(pm, px), px       # equal up to rounding (a flat price from an LP, say)


def _actions(actions: Any) -> tuple[str, ...]:
    if isinstance(actions, str) or not isinstance(actions, (list, tuple)):
        raise TypeError(f"actions must be a tuple of action names from {ACTIONS}, got {actions!r}")
    if not actions:
        raise ValueError(f"actions must name at least one action of {ACTIONS}")
    bad = [x for x in actions if x not in ACTIONS]
    if bad:
        raise ValueError(f"actions must be names from {ACTIONS}, got {bad}")
    if len(set(actions)) != len(actions):
        raise ValueError(f"actions must not repeat an action, got {actions}")
    return tuple(actions)


def _game(game: Any) -> "StageGame":
    if not isinstance(game, StageGame):
        raise TypeError(f"game must be a StageGame (from stage_game), got {type(game).__name__}")
    return game


def _nonneg_array(name: str, value: Any) -> FloatArray:
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__}") from None
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and >= 0")
    return arr


def stage_game(c_i: Any, c_j: Any, a_i: Any, a_j: Any, d: Any, w: float = 1.0,
               variant: str = "L") -> StageGame:
    """Reduced stage-1 payoffs with stage 2 folded in (A.2), for scalars or arrays.

    ``variant`` is ``"L"`` (leader-laggard) or ``"L'"`` (only a crowdsourced
    solution can be attacked). The laggard attacks iff ``d > a``. Array
    arguments broadcast; the result's arrays have shape ``(..., 2, 2)``. (The
    chapter's third reading, an attack that shifts ``d`` of the winning
    probability, has no pure equilibrium in its attack subgame once
    probabilities are clipped at 1, so the chapter discusses it for the CC
    subgame only.)
    """
    c_i, c_j, a_i, a_j = (_nonneg_array(n, v) for n, v in (("c_i", c_i), ("c_j", c_j), ("a_i", a_i), ("a_j", a_j)))
    d = _nonneg_array("d", d)
    if np.any(d > 1):
        raise ValueError("d must be in [0, 1]")
    w = real("w", w, low=0.5, high=1.0)
    if variant not in ("L", "L'"):
        raise ValueError(f"variant must be 'L' or \"L'\", got {variant!r}")
    shape = np.broadcast_shapes(c_i.shape, c_j.shape, a_i.shape, a_j.shape, d.shape)
    P_i, P_j, att = (np.zeros(shape + (2, 2)) for _ in range(3))
    for r in (0, 1):          # i: C, S
        for k in (0, 1):      # j: C, S
            ahead = 0.5 if r == k else (w if r == 0 else 1 - w)  # P(i leads after stage 1)
            i_att = (d > a_i) & (variant == "L" or k == 0)      # i attacks j's solution when behind
            j_att = (d > a_j) & (variant == "L" or r == 0)
            win_i = ahead * (1 - d * j_att) + (1 - ahead) * d * i_att
            P_i[..., r, k] = win_i - (c_i if r == 0 else 0.0) - (1 - ahead) * a_i * i_att
            P_j[..., r, k] = (1 - win_i) - (c_j if k == 0 else 0.0) - ahead * a_j * j_att
            att[..., r, k] = (1 - ahead) * i_att + ahead * j_att
    return StageGame(P_i, P_j, att)


def equilibrium_mask(game: StageGame) -> NDArray[np.bool_]:
    """``mask[..., r, k]``: whether (r, k) is a pure Nash equilibrium (rows/cols: C, S)."""
    A, B = _game(game).payoff_i, game.payoff_j
    return (A >= A[..., ::-1, :] - 1e-12) & (B >= B[..., :, ::-1] - 1e-12)


def pure_equilibria(game: StageGame) -> list[tuple[str, str]]:
    """Pure Nash equilibria of one reduced 2x2 game, as action pairs like ("C", "S")."""
    mask = equilibrium_mask(_game(game))
    if mask.shape != (2, 2):
        raise ValueError("pure_equilibria takes one game; use equilibrium_mask for arrays")
    names = ("C", "S")
    return [(names[r], names[k]) for r in (0, 1) for k in (0, 1) if mask[r, k]]


# ------------------------------------------------------------------ rating dynamics (A.3)
def _errors(eps1: Any, eps2: Any) -> tuple[float, float, float]:
    e1, e2 = _prob("eps1", eps1), _prob("eps2", eps2)
    qN = (1 - e1) * (1 - e2)
    return qN, 1 - qN, (1 - e1) * (1 - 2 * e2)


def transition_matrix(alpha: float, beta: float, eps1: float, eps2: float) -> FloatArray:
    """Eq. (3): ``M[theta, theta']`` for a population that complies (plays CN)."""
    a, b = _prob("alpha", alpha), _prob("beta", beta)
    qN, eb, _ = _errors(eps1, eps2)
    return np.array([[1 - a * qN, a * qN], [b * eb, 1 - b * eb]])


def stationary_distribution(alpha: float, beta: float, eps1: float, eps2: float) -> tuple[float, float]:
    """Eqs. (4)-(5): ``(eta0, eta1) = (beta eps_bar, alpha q_N) / (alpha q_N + beta eps_bar)``.

    Unique iff ``s = alpha q_N + beta eps_bar > 0``; ``ValueError`` otherwise.
    """
    a, b = _prob("alpha", alpha), _prob("beta", beta)
    qN, eb, _ = _errors(eps1, eps2)
    s = a * qN + b * eb
    if s <= 0:
        raise ValueError("the stationary distribution is not unique: alpha q_N + beta eps_bar = 0 "
                         f"(alpha={a:g}, beta={b:g}, eps1, eps2 give q_N={qN:g})")
    return b * eb / s, a * qN / s


# ------------------------------------------------------------------ utilities (A.2, A.4)
#: the worker's actions against a compliant opponent (game L, w = 1)
ACTIONS = ("CN", "CA", "SN", "SA")


def action_table(cost: float, attack_cost: float, damage: float, p_min: float, p_max: float,
                 eps1: float, eps2: float) -> tuple[FloatArray, FloatArray]:
    """One-period payoffs ``u[action, theta]`` and recorded-CN probabilities ``q[action]``.

    Against a compliant opponent in game L with ``w = 1`` (A.2): CN pays
    ``P/2 - c``; CA (attacks when behind) ``(1 + d) P / 2 - c - a / 2``; SN ``0``;
    SA ``d P - a``. Recorded as CN with probability ``q_N``, ``(1 - eps1)/2``,
    ``eps1 (1 - eps2)`` and ``eps1 eps2``.
    """
    c, a, d = _nonneg("cost", cost), _nonneg("attack_cost", attack_cost), _prob("damage", damage)
    P = np.array(_prices(p_min, p_max))
    e1, e2 = _prob("eps1", eps1), _prob("eps2", eps2)
    u = np.vstack([P / 2 - c, (1 + d) * P / 2 - c - a / 2, np.zeros(2), d * P - a])
    q = np.array([(1 - e1) * (1 - e2), (1 - e1) / 2, e1 * (1 - e2), e1 * e2])
    return u, q


def _kernel(alpha: float, beta: float, q: FloatArray) -> FloatArray:
    """``T[action, theta, theta']`` of the rating rule (1) for recorded-CN probabilities ``q``."""
    T = np.zeros((q.size, 2, 2))
    T[:, 0, 1] = alpha * q
    T[:, 0, 0] = 1 - alpha * q
    T[:, 1, 0] = beta * (1 - q)
    T[:, 1, 1] = 1 - beta * (1 - q)
    return T


def long_term_utilities(cost: float, p_min: float, p_max: float, alpha: float, beta: float,
                        eps1: float, eps2: float, delta: float) -> tuple[float, float]:
    """Eqs. (9)-(10): ``(U(0), U(1))`` of a compliant worker, by one 2x2 linear solve."""
    a_, b_ = _prob("alpha", alpha), _prob("beta", beta)
    dl = _delta(delta)
    u, q = action_table(cost, 0.0, 0.0, p_min, p_max, eps1, eps2)
    T = _kernel(a_, b_, q[:1])[0]
    U = np.linalg.solve(np.eye(2) - dl * T, u[0])
    return float(U[0]), float(U[1])


def utilities_by_iteration(cost: float, p_min: float, p_max: float, alpha: Any, beta: float,
                           eps1: float, eps2: float, delta: float, iterations: int) -> tuple[FloatArray, FloatArray]:
    """``(U(0), U(1))`` of a compliant worker after ``iterations`` steps of the recursion (7),
    vectorised over an array of ``alpha`` values: the paper's way of computing the long-term
    utilities inside Algorithm 1, whose cost is O(m n) for m values of alpha and n iterations.
    It converges geometrically (rate ``delta``) to :func:`long_term_utilities`' closed form."""
    al = _nonneg_array("alpha", alpha)
    if np.any(al > 1):
        raise ValueError("alpha must lie in [0, 1]")
    b_ = _prob("beta", beta)
    dl = _delta(delta)
    n = integer("iterations", iterations, low=1, high=10**8)
    u, q = action_table(cost, 0.0, 0.0, p_min, p_max, eps1, eps2)
    up, down = al * q[0], b_ * (1 - q[0])
    U0, U1 = np.zeros_like(al), np.zeros_like(al)
    for _ in range(n):
        U0, U1 = (u[0, 0] + dl * ((1 - up) * U0 + up * U1),
                  u[0, 1] + dl * (down * U0 + (1 - down) * U1))
    return U0, U1


def value_gap(p_min: float, p_max: float, alpha: float, beta: float, eps1: float, eps2: float,
              delta: float) -> float:
    """Eq. (11): ``U(1) - U(0) = (P_max - P_min) / (2 Lambda)``, ``Lambda = 1 - delta + delta s``."""
    a_, b_ = _prob("alpha", alpha), _prob("beta", beta)
    dl = _delta(delta)
    qN, eb, _ = _errors(eps1, eps2)
    pm, px = _prices(p_min, p_max)
    return (px - pm) / (2 * (1 - dl + dl * (a_ * qN + b_ * eb)))


def best_responses(cost: float, attack_cost: float, damage: float, p_min: float, p_max: float,
                   alpha: float, beta: float, eps1: float, eps2: float, delta: float,
                   actions: tuple[str, ...] = ("CN", "CA"), iterations: int = 2000) -> tuple[FloatArray, list[str]]:
    """Value iteration on the worker's rating MDP against a compliant population.

    Returns the optimal values ``V[theta]`` and the best action at each rating
    (ties resolved towards the first action given, within ``1e-12``). Used to test
    Proposition 1. Value iteration (at most ``iterations`` steps) finds a policy, which is then
    evaluated exactly by a linear solve and improved until stable (policy iteration), so the
    values are exact also where value iteration converges slowly (``delta`` near 1).
    """
    a_, b_ = _prob("alpha", alpha), _prob("beta", beta)
    dl = _delta(delta)
    iterations = integer("iterations", iterations, low=1)
    actions = _actions(actions)
    u, q = action_table(cost, attack_cost, damage, p_min, p_max, eps1, eps2)
    pick = [ACTIONS.index(x) for x in actions]
    u, T = u[pick], _kernel(a_, b_, q[pick])
    V = np.zeros(2)
    for _ in range(iterations):
        Q = u + dl * T @ V
        V_new = Q.max(axis=0)
        if np.max(np.abs(V_new - V)) <= 1e-13 * max(1.0, float(np.max(np.abs(V_new)))):
            V = V_new
            break
        V = V_new
    # polish: evaluate the greedy policy exactly and improve it until stable (policy iteration),
    # so the values are exact even where value iteration converges slowly (delta near 1)
    policy = np.argmax(u + dl * T @ V, axis=0)
    for _ in range(64):                           # two states: a few improvements suffice
        V = np.linalg.solve(np.eye(2) - dl * T[policy, [0, 1], :], u[policy, [0, 1]])
        Q = u + dl * T @ V
        better = np.where(Q.max(axis=0) > Q[policy, [0, 1]] + 1e-12 * max(1.0, float(np.abs(V).max())),
                          np.argmax(Q, axis=0), policy)
        if np.array_equal(better, policy):
            break
        policy = better
    else:  # pragma: no cover - policy iteration on two states cannot cycle
        import warnings

        from ._validation import CrowdlibWarning

        warnings.warn("best_responses: policy iteration did not settle", CrowdlibWarning, stacklevel=2)
    Q = u + dl * T @ V
    best = [actions[0] if Q[0, th] >= Q.max(axis=0)[th] - 1e-12 else actions[int(np.argmax(Q[:, th]))]
            for th in (0, 1)]
    return V, best


def sustainable(attack_costs: Any, damage: float, p_min: float, p_max: float,
                alpha: float, beta: float, eps1: float, eps2: float, delta: float) -> bool:
    """Proposition 1, condition (8), for both workers (A.5).

    ``delta alpha K gap >= d P_min - a_k`` and ``delta beta K gap >= d P_max - a_k``
    with ``gap`` from Eq. (11) -- the one-shot CA deviation is unprofitable at
    both ratings. (Written multiplied out, so ``alpha = 0`` or ``beta = 0`` is fine.)
    The crowdsourcing costs do not enter: they cancel in the gap (participation,
    which they do enter, is a separate constraint).
    """
    a_k = _pair("attack_costs", attack_costs)
    d = _prob("damage", damage)
    a_, b_ = _prob("alpha", alpha), _prob("beta", beta)
    dl = _delta(delta)
    _, _, K = _errors(eps1, eps2)
    gap = value_gap(p_min, p_max, a_, b_, eps1, eps2, dl)
    tol = 1e-12
    return all(dl * a_ * K * gap >= d * p_min - a - tol and dl * b_ * K * gap >= d * p_max - a - tol
               for a in a_k)


def requester_utility(alpha: float, beta: float, p_min: float, p_max: float, eps1: float,
                      eps2: float) -> float:
    """Eq. (20): ``U = q_N - eta0 P_min - eta1 P_max``."""
    pm, px = _prices(p_min, p_max)
    eta0, eta1 = stationary_distribution(alpha, beta, eps1, eps2)
    qN, _, _ = _errors(eps1, eps2)
    return qN - eta0 * pm - eta1 * px


# ------------------------------------------------------------------ design (A.7-A.9)
@dataclass(frozen=True)
class Protocol:
    """A designed protocol: ``feasible`` is False (and the rest NaN) when none exists."""

    feasible: bool
    alpha: float
    beta: float
    p_min: float
    p_max: float
    requester_utility: float

    @classmethod
    def infeasible(cls) -> "Protocol":
        nan = float("nan")
        return cls(False, nan, nan, nan, nan, nan)

    def as_dict(self) -> dict[str, float | bool]:
        """The fields as a plain mapping (for caching and tables)."""
        return {"feasible": self.feasible, "alpha": self.alpha, "beta": self.beta,
                "p_min": self.p_min, "p_max": self.p_max,
                "requester_utility": self.requester_utility}


def _design_inputs(costs: Any, attack_costs: Any, damage: Any, eps1: Any, eps2: Any,
                   delta: Any) -> tuple[float, float, float, float, float, float, float]:
    c_ij, a_ij = _pair("costs", costs), _pair("attack_costs", attack_costs)
    d = _prob("damage", damage)
    dl = _delta(delta)
    qN, eb, K = _errors(eps1, eps2)
    return max(c_ij), min(a_ij), d, dl, qN, eb, K  # Prop. 2: c binds for the costlier, a for the cheaper


def _hopeless(c: float, a: float, qN: float, K: float) -> bool:
    """No protocol with ``P_min = 0`` can work.

    ``q_N = 0``: compliance is never recorded, so no rating can rise. And (16),
    which holds automatically at ``P_min = 0`` only when ``K >= 0``, reads at the
    participation price ``a q_N + K c >= 0``, whatever ``alpha`` and ``beta`` are:
    with ``eps2 > 1/2`` (``K < 0``) an attack *improves* the record, and a
    rating-0 worker attacks unless the attack costs enough.
    """
    return qN <= 0 or a * qN + K * c < 0


def _protocol_at(alpha: float, beta: float, c: float, dl: float, qN: float, eb: float) -> Protocol:
    s = alpha * qN + beta * eb
    lam = 1 - dl + dl * s
    p_max = 2 * c * lam / (dl * alpha * qN)  # the participation price (our analogue of Eq. (25))
    return Protocol(True, alpha, beta, 0.0, min(p_max, 1.0), qN - 2 * c * (1 + (1 - dl) / (dl * s)))


def design_protocol(costs: Any, attack_costs: Any, damage: float, eps1: float, eps2: float,
                    delta: float, grid: int = 1000) -> Protocol:
    """Algorithm 1 (Theorem 2), with ``P_min = 0``: a search over ``alpha in {1/m, ..., 1}``.

    Part 1: ``c = max(c_i, c_j)`` and ``a = min(a_i, a_j)`` bind (Proposition 2).
    Part 2: for each ``alpha`` the constraints (S) sustainability and (P)
    ``P_max <= 1``, linear in ``beta`` once ``P_max`` is the participation price,
    give an interval for ``beta``; the largest ``beta`` in it is best
    (Proposition 3(2)). Part 3: the ``alpha`` with the largest requester utility.
    O(m) with the closed form (11).
    """
    c, a, d, dl, qN, eb, K = _design_inputs(costs, attack_costs, damage, eps1, eps2, delta)
    m = integer("grid", grid, low=1)
    if _hopeless(c, a, qN, K):
        return Protocol.infeasible()
    alpha = np.arange(1, m + 1) / m
    lo, hi = np.zeros(m), np.ones(m)
    # (P): delta qN (1 - 2c) alpha - 2 c delta eb beta >= 2 c (1 - delta)
    rhsP = dl * qN * (1 - 2 * c) * alpha - 2 * c * (1 - dl)
    if c > 0 and eb > 0:
        hi = np.minimum(hi, rhsP / (2 * c * dl * eb))
    elif c > 0:
        hi = np.where(rhsP >= 0, hi, -np.inf)
    # (S): A_S beta >= B_S
    A_S = dl * c * (K - 2 * d * eb)
    B_S = 2 * c * d * (1 - dl) - dl * alpha * qN * (a - 2 * c * d)
    if A_S > 0:
        lo = np.maximum(lo, B_S / A_S)
    elif A_S < 0:
        hi = np.minimum(hi, B_S / A_S)
    else:
        hi = np.where(B_S <= 0, hi, -np.inf)
    ok = (lo <= hi + 1e-12) & (hi >= 0)
    if not ok.any():
        return Protocol.infeasible()
    beta = np.clip(hi, 0, 1)
    s = alpha * qN + beta * eb
    with np.errstate(divide="ignore"):
        U = np.where(ok & (s > 0), qN - 2 * c * (1 + (1 - dl) / (dl * s)), -np.inf)
    k = int(np.argmax(U))
    if not np.isfinite(U[k]):
        return Protocol.infeasible()
    return _protocol_at(float(alpha[k]), float(beta[k]), c, dl, qN, eb)


def design_protocol_exact(costs: Any, attack_costs: Any, damage: float, eps1: float, eps2: float,
                          delta: float) -> Protocol:
    """The design problem with ``P_min = 0`` solved exactly as a linear program (A.9).

    With ``P_max`` at the participation price, utility increases in
    ``s = alpha q_N + beta eps_bar``; maximise ``s`` subject to (S), (P) and the
    unit box with :func:`scipy.optimize.linprog` (HiGHS).
    """
    c, a, d, dl, qN, eb, K = _design_inputs(costs, attack_costs, damage, eps1, eps2, delta)
    if _hopeless(c, a, qN, K):
        return Protocol.infeasible()
    A_ub = [[-dl * qN * (a - 2 * c * d), -dl * c * (K - 2 * d * eb)],   # (S)
            [-dl * qN * (1 - 2 * c), 2 * c * dl * eb]]                  # (P)
    b_ub = [-2 * c * d * (1 - dl), -2 * c * (1 - dl)]
    res = optimize.linprog([-qN, -eb], A_ub=A_ub, b_ub=b_ub, bounds=[(0, 1), (0, 1)], method="highs")
    if res.status != 0 or res.x[0] <= 0:
        return Protocol.infeasible()
    return _protocol_at(float(res.x[0]), float(res.x[1]), c, dl, qN, eb)


def design_protocol_brute(costs: Any, attack_costs: Any, damage: float, eps1: float, eps2: float,
                          delta: float, steps: tuple[float, float, float] = (0.01, 0.01, 0.001)) -> Protocol:
    """Brute force over an ``(alpha, beta, P_max)`` grid with ``P_min = 0``, checking the
    generic constraints for *both* workers: condition (8) via Eq. (11) and
    participation ``U_k(0) >= 0`` (Eq. (9)), without the LP reduction."""
    c_ij, a_ij = _pair("costs", costs), _pair("attack_costs", attack_costs)
    d = _prob("damage", damage)
    dl = _delta(delta)
    qN, eb, K = _errors(eps1, eps2)
    if not isinstance(steps, (tuple, list)) or len(steps) != 3:
        raise TypeError(f"steps must be a tuple (alpha step, beta step, P_max step), got {steps!r}")
    sa, sb, sp = (real(f"steps[{i}]", v, low=0.0, low_open=True, high=0.5) for i, v in enumerate(steps))
    for i, s in enumerate((sa, sb, sp)):
        if abs(1 / s - round(1 / s)) > 1e-9:
            raise ValueError(f"steps[{i}] must divide 1 (1/step an integer), got {s}")
    alphas = np.arange(1, int(round(1 / sa)) + 1) * sa
    beta = np.arange(0, int(round(1 / sb)) + 1)[:, None] * sb
    P = np.arange(0, int(round(1 / sp)) + 1)[None, :] * sp
    best = Protocol.infeasible()
    if qN <= 0:
        return best
    for al in alphas:
        s = al * qN + beta * eb
        lam = 1 - dl + dl * s
        gap = P / (2 * lam)
        ok = np.ones(np.broadcast_shapes(beta.shape, P.shape), dtype=bool)
        for c, a in zip(c_ij, a_ij):
            ok &= dl * beta * K * gap >= d * P - a - 1e-12            # (17)
            ok &= dl * al * K * gap >= -a - 1e-12                      # (16) at P_min = 0 (binds if K < 0)
            ok &= -c + dl * al * qN * gap >= -1e-12                    # (1 - delta) U_k(0) >= 0
        if not ok.any():
            continue
        U = np.where(ok, qN - (al * qN / s) * P, -np.inf)
        k = np.unravel_index(int(np.argmax(U)), U.shape)
        if not best.feasible or U[k] > best.requester_utility:
            best = Protocol(True, float(al), float(beta[k[0], 0]), 0.0, float(P[0, k[1]]), float(U[k]))
    return best


def _best_price_lp(m: int, qN: float, eb: float,
                   constraints: Callable[[float, float, float], tuple[list, list]],
                   margin: float = 0.0) -> Protocol:
    """The requester's best protocol over ``alpha`` in ``{1/m, ..., 1}`` and ``beta`` in
    ``{0, 1/m, ..., 1}``: for each pair, ``constraints(alpha, beta, s)`` gives the linear
    constraints ``rows @ (P_min, P_max) <= rhs`` and one LP minimises the expected price of Eq. (20);
    ``P_min <= P_max`` and ``0 <= P <= 1`` are added here. A later pair replaces the incumbent only
    if it is better by more than ``margin``."""
    best = Protocol.infeasible()
    for al in np.arange(1, m + 1) / m:
        for be in np.arange(0, m + 1) / m:
            s = al * qN + be * eb
            if s <= 0:
                continue
            rows, rhs = constraints(al, be, s)
            rows, rhs = [*rows, [1.0, -1.0]], [*rhs, 0.0]              # P_min <= P_max
            res = optimize.linprog([be * eb / s, al * qN / s], A_ub=np.array(rows, dtype=float),
                                   b_ub=np.array(rhs, dtype=float), bounds=[(0, 1), (0, 1)],
                                   method="highs")
            if res.status == 0:
                U = qN - res.fun
                if not best.feasible or U > best.requester_utility + margin:
                    best = Protocol(True, float(al), float(be), float(res.x[0]), float(res.x[1]), float(U))
    return best


def best_protocol_free_pmin(costs: Any, attack_costs: Any, damage: float, eps1: float, eps2: float,
                            delta: float, grid: int = 50) -> Protocol:
    """The design problem *without* fixing ``P_min = 0`` (A.7, the Theorem 1 erratum).

    For each ``(alpha, beta)`` on a ``grid x (grid + 1)`` grid the constraints
    (16), (17), participation and ``0 <= P_min <= P_max <= 1`` are linear in
    ``(P_min, P_max)``, and so is the requester's utility (20): one LP each.
    """
    c_ij, a_ij = _pair("costs", costs), _pair("attack_costs", attack_costs)
    d = _prob("damage", damage)
    dl = _delta(delta)
    qN, eb, K = _errors(eps1, eps2)
    m = integer("grid", grid, low=1)

    def constraints(al: float, be: float, s: float) -> tuple[list, list]:
        g = 1 / (2 * (1 - dl + dl * s))  # gap per unit of (P_max - P_min)
        rows, rhs = [], []
        for c, a in zip(c_ij, a_ij):
            rows.append([d + dl * al * K * g, -dl * al * K * g]); rhs.append(a)   # (16)
            rows.append([dl * be * K * g, d - dl * be * K * g]); rhs.append(a)    # (17)
            rows.append([-(0.5 - dl * al * qN * g), -dl * al * qN * g]); rhs.append(-c)  # U(0) >= 0
        return rows, rhs

    return _best_price_lp(m, qN, eb, constraints)


# ------------------------------------------------------------------ the full game (four actions)
def _compliance_values(cost: float, attack_cost: float, damage: float, p_min: FloatArray,
                       p_max: FloatArray, alpha: FloatArray, beta: FloatArray, eps1: float,
                       eps2: float, delta: float) -> tuple[FloatArray, FloatArray]:
    """For flat arrays of protocols: compliance values ``V (2, G)`` and the value of every
    one-shot deviation ``Q (4 actions, 2 ratings, G)`` against a compliant population."""
    P = np.stack([p_min, p_max])
    c, a, d = cost, attack_cost, damage
    u = np.stack([P / 2 - c, (1 + d) * P / 2 - c - a / 2, np.zeros_like(P), d * P - a])
    q = np.array([(1 - eps1) * (1 - eps2), (1 - eps1) / 2, eps1 * (1 - eps2), eps1 * eps2])
    up = alpha[None, :] * q[:, None]            # P(rating 0 -> 1) under each action
    down = beta[None, :] * (1 - q[:, None])     # P(rating 1 -> 0)
    a00, a01 = 1 - delta * (1 - up[0]), -delta * up[0]
    a10, a11 = -delta * down[0], 1 - delta * (1 - down[0])
    det = a00 * a11 - a01 * a10
    V0 = (u[0, 0] * a11 - a01 * u[0, 1]) / det
    V1 = (a00 * u[0, 1] - a10 * u[0, 0]) / det
    Q0 = u[:, 0] + delta * ((1 - up) * V0 + up * V1)
    Q1 = u[:, 1] + delta * (down * V0 + (1 - down) * V1)
    return np.stack([V0, V1]), np.stack([Q0, Q1], axis=1)


def deviation_gains(cost: float, attack_cost: float, damage: float, p_min: float, p_max: float,
                    alpha: float, beta: float, eps1: float, eps2: float, delta: float) -> FloatArray:
    """Gain of each one-shot deviation over complying, ``gains[action, rating]``.

    Rows follow :data:`ACTIONS` (CN, CA, SN, SA); the CN row is 0. By the one-shot deviation
    principle, complying is an optimal policy of the rating chain exactly when no entry is
    positive; :func:`best_responses` finds the optimal policy itself.
    """
    c, a, d = _nonneg("cost", cost), _nonneg("attack_cost", attack_cost), _prob("damage", damage)
    pm, px = _prices(p_min, p_max)
    al, be = _prob("alpha", alpha), _prob("beta", beta)
    e1, e2 = _prob("eps1", eps1), _prob("eps2", eps2)
    dl = _delta(delta)
    V, Q = _compliance_values(c, a, d, np.array([pm]), np.array([px]), np.array([al]),
                              np.array([be]), e1, e2, dl)
    return (Q - V[None])[:, :, 0]


def sustainable_all_actions(costs: Any, attack_costs: Any, damage: float, p_min: Any, p_max: Any,
                            alpha: Any, beta: Any, eps1: float, eps2: float, delta: float,
                            tol: float = 1e-12) -> NDArray[np.bool_]:
    """Whether complying is optimal against all four actions, for both workers at both ratings,
    and both take part (``U(0) >= 0``). Broadcasts over arrays of protocols."""
    c_ij, a_ij = _pair("costs", costs), _pair("attack_costs", attack_costs)
    d = _prob("damage", damage)
    e1, e2 = _prob("eps1", eps1), _prob("eps2", eps2)
    dl = _delta(delta)
    tol = real("tol", tol, low=0.0)
    arrays = []
    for name, x in zip(("p_min", "p_max", "alpha", "beta"), (p_min, p_max, alpha, beta)):
        if isinstance(x, (str, bytes)):
            raise TypeError(f"{name} must be a number or an array of numbers, got a string")
        arr = np.asarray(x, dtype=float)
        if not np.all((arr >= 0) & (arr <= 1)):
            raise ValueError(f"{name} must lie in [0, 1]")
        arrays.append(arr)
    arrays = np.broadcast_arrays(*arrays)
    shape = arrays[0].shape
    flat = [x.ravel() for x in arrays]
    ok = flat[0] <= flat[1] + 1e-9                       # a protocol has p_min <= p_max (rounding aside)
    flat[0] = np.minimum(flat[0], flat[1])
    for c, a in zip(c_ij, a_ij):
        V, Q = _compliance_values(c, a, d, *flat, e1, e2, dl)
        slack = tol * np.maximum(1.0, np.abs(V))         # relative to the values' scale
        ok &= np.all(Q <= V[None] + slack[None], axis=(0, 1)) & (V[0] >= -slack[0])
    return ok.reshape(shape)


def design_protocol_all_actions(costs: Any, attack_costs: Any, damage: float, eps1: float,
                                eps2: float, delta: float, grid: int = 40) -> Protocol:
    """The requester's best protocol that is sustainable against all four actions (ours).

    For fixed ``(alpha, beta)`` everything is linear in the prices: the payoffs of every action,
    the compliance values ``V = (I - delta T_CN)^-1 u_CN`` and the value of every one-shot
    deviation. So the one-shot deviation conditions (no action beats complying, for both workers
    at both ratings), participation (``U(0) >= 0``), ``0 <= P_min <= P_max <= 1`` and the
    requester's utility (Eq. 20) form one linear program in ``(P_min, P_max)``, solved exactly
    (HiGHS) for each ``alpha`` in ``{1/m, ..., 1}`` and ``beta`` in ``{0, 1/m, ..., 1}``.
    """
    c_ij, a_ij = _pair("costs", costs), _pair("attack_costs", attack_costs)
    d = _prob("damage", damage)
    e1, e2 = _prob("eps1", eps1), _prob("eps2", eps2)
    dl = _delta(delta)
    m = integer("grid", grid, low=2)
    qN, eb, _ = _errors(e1, e2)
    q = np.array([(1 - e1) * (1 - e2), (1 - e1) / 2, e1 * (1 - e2), e1 * e2])
    slope = np.array([0.5, (1 + d) / 2, 0.0, d])          # d u(action, theta) / d P_theta

    def constraints(al: float, be: float, s: float) -> tuple[list, list]:
        T = _kernel(al, be, q)                          # (4 actions, 2, 2)
        Minv = np.linalg.inv(np.eye(2) - dl * T[0])
        rows, rhs = [], []
        for c, a in zip(c_ij, a_ij):
            const = np.array([-c, -c - a / 2, 0.0, -a])   # u = slope * P_theta + const
            L = Minv * 0.5                                 # V = L P + v0
            v0 = Minv @ np.full(2, -c)
            for act in (1, 2, 3):
                for th in (0, 1):
                    # Q(act, th) - V(th) <= 0, linear in P = (P_min, P_max)
                    rows.append(slope[act] * np.eye(2)[th] + dl * T[act, th] @ L - L[th])
                    rhs.append(-(const[act] + dl * T[act, th] @ v0 - v0[th]))
            rows.append(-L[0])                             # participation: V(0) >= 0
            rhs.append(v0[0])
        return rows, rhs

    return _best_price_lp(m, qN, eb, constraints, margin=1e-12)


# ------------------------------------------------------------------ shared predicates
def participation(costs: Any, p_min: float, p_max: float, alpha: float, beta: float,
                  eps1: float, eps2: float, delta: float, tol: float = 1e-12) -> bool:
    """Whether both workers take part: ``U(0) >= 0`` for each (Eq. 9), up to ``tol``."""
    c_ij = _pair("costs", costs)
    tol = real("tol", tol, low=0.0)
    p_min, p_max = _prices(p_min, p_max)
    return bool(min(long_term_utilities(c, p_min, p_max, alpha, beta, eps1, eps2, delta)[0]
                    for c in c_ij) >= -tol)


def feasible_protocol(costs: Any, attack_costs: Any, damage: float, p_min: float, p_max: float,
                      alpha: float, beta: float, eps1: float, eps2: float, delta: float) -> bool:
    """A protocol of the design problem: sustainable (condition (8), CA the only deviation, as
    the paper restricts it) and both workers take part."""
    return bool(sustainable(attack_costs, damage, p_min, p_max, alpha, beta, eps1, eps2, delta)
                and participation(costs, p_min, p_max, alpha, beta, eps1, eps2, delta))


def equilibrium_census(n: int, rng: Any, equal: bool = True, variant: str = "L",
                       domain: str = "full") -> dict[str, Any]:
    """Pure equilibria of the stage game over ``n`` random parameter draws.

    Costs ``c ~ U(0, 0.5)``, attack costs ``a ~ U(0, 0.3)`` and damage ``d``: with
    ``domain="full"`` ``d ~ U(0, 1)``, so that attacks are possible (``d > a``) or not; with
    ``domain="dilemma"`` only ``d > max(a_i, a_j)``. ``equal`` draws one worker and copies it.
    Returns the shares of draws whose pure equilibria are CC only, SS only, both, or include CS
    or SC; the share of draws with ``d > a`` for some worker; and the distinct expected numbers
    of attacks at the equilibria.
    """
    n = integer("n", n, low=1)
    if not isinstance(equal, (bool, np.bool_)):
        raise TypeError(f"equal must be True or False, got {type(equal).__name__}")
    if domain not in ("full", "dilemma"):
        raise ValueError(f"domain must be 'full' or 'dilemma', got {domain!r}")
    from ._validation import generator

    g = generator("rng", rng)
    c_i, a_i = g.uniform(0, 0.5, n), g.uniform(0, 0.3, n)
    c_j, a_j = (c_i, a_i) if equal else (g.uniform(0, 0.5, n), g.uniform(0, 0.3, n))
    if domain == "dilemma":
        top = np.maximum(a_i, a_j)
        d = top + g.uniform(0, 1, n) * (1 - top)
    else:
        d = g.uniform(0, 1, n)
    game = stage_game(c_i, c_j, a_i, a_j, d, variant=variant)
    kinds = equilibrium_mask(game).reshape(n, 4)          # CC, CS, SC, SS
    return {"CC only": float(np.mean(kinds[:, 0] & ~kinds[:, 1:].any(1))),
            "SS only": float(np.mean(kinds[:, 3] & ~kinds[:, :3].any(1))),
            "CC and SS": float(np.mean(kinds[:, 0] & kinds[:, 3])),
            "CS or SC": float(np.mean(kinds[:, 1] | kinds[:, 2])),
            "attack possible": float(np.mean(d > np.minimum(a_i, a_j))),
            "attacks at equilibria": sorted(set(np.round(game.attacks[equilibrium_mask(game)], 12).tolist()))}


# ------------------------------------------------------------------ Figure 2: the design cases
def design_case(costs: Any, attack_costs: Any, damage: float, eps1: float, eps2: float,
                delta: float) -> str:
    """Which of Algorithm 1's cases applies (our reconstruction): ``"1-2"`` when (S) bounds
    ``beta`` from below (``K > 2 d eps_bar``), ``"3-4"`` when from above, ``"degenerate"`` when
    ``beta`` drops out of (S), ``"hopeless"`` when no protocol with ``P_min = 0`` can work
    (compliance is never recorded, or an attack improves the record)."""
    c, a, d, dl, qN, eb, K = _design_inputs(costs, attack_costs, damage, eps1, eps2, delta)
    if _hopeless(c, a, qN, K):
        return "hopeless"
    A_S = dl * c * (K - 2 * d * eb)
    return "1-2" if A_S > 0 else ("3-4" if A_S < 0 else "degenerate")


def design_constraints(costs: Any, attack_costs: Any, damage: float, eps1: float, eps2: float,
                       delta: float, alpha: Any, beta: Any) -> tuple[FloatArray, FloatArray]:
    """The two linear constraints of Algorithm 1's domain at ``P_min = 0`` and the participation
    price, as slacks ``(S, P)`` over ``(alpha, beta)`` (arrays, broadcast): sustainability (S)
    holds where ``S >= 0``, the price cap ``P_max <= 1`` (P) where ``P >= 0``."""
    c, a, d, dl, qN, eb, K = _design_inputs(costs, attack_costs, damage, eps1, eps2, delta)
    al, be = np.broadcast_arrays(_nonneg_array("alpha", alpha), _nonneg_array("beta", beta))
    if not (np.all((al > 0) & (al <= 1)) and np.all((be >= 0) & (be <= 1))):
        raise ValueError("alpha must lie in (0, 1] and beta in [0, 1]")
    S = dl * c * (K - 2 * d * eb) * be + dl * qN * (a - 2 * c * d) * al - 2 * c * d * (1 - dl)
    Pc = dl * qN * (1 - 2 * c) * al - 2 * c * dl * eb * be - 2 * c * (1 - dl)
    return S, Pc


def design_region(costs: Any, attack_costs: Any, damage: float, eps1: float, eps2: float,
                  delta: float, alpha: Any, beta: Any) -> NDArray[np.bool_]:
    """Whether ``(alpha, beta)`` (arrays, broadcast) satisfies (S) and (P) at ``P_min = 0`` and
    the participation price: the feasible domain Algorithm 1 searches (Figure 2's shaded area)."""
    c, a, d, dl, qN, eb, K = _design_inputs(costs, attack_costs, damage, eps1, eps2, delta)
    S, Pc = design_constraints(costs, attack_costs, damage, eps1, eps2, delta, alpha, beta)
    return (S >= -1e-12) & (Pc >= -1e-12) & (not _hopeless(c, a, qN, K))
