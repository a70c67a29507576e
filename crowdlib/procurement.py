"""Budget-feasible procurement in large markets (Anari, Goel & Nikzad, FOCS 2014).

A buyer with budget ``B`` buys fractions of divisible items from ``n`` sellers.
Seller ``i`` has a private cost ``c_i`` and gives the buyer utility ``u_i``; its
*rate* is ``rho_i = c_i / u_i``. The paper's mechanisms are parameterised by a
*standard allocation rule* ``phi`` (non-increasing, ``phi(0) = 1``,
``phi(x) = 0`` for ``x >= 1``) stretched by a rate ``r``: seller ``i`` gets the
fraction ``phi(rho_i / r)`` and is paid ``u_i * r * p(rho_i / r)``, where
``p(x) = x phi(x) + int_x^1 phi`` is Myerson's unit payment (Section 3.2).

* :func:`mechanism1` -- Mechanism 1(phi): one stopping rate ``r*`` for all
  sellers (envy-free, IR, budget feasible; not truthful in general).
* :func:`mechanism2` -- Mechanism 2(phi): seller ``i`` faces the stopping rate
  ``r_i`` of Mechanism 1 run with ``c_i`` set to 0 (truthful, Lemma 2).
* :func:`fractional_optimum` -- OPT, the fractional knapsack.
* :data:`OPTIMAL_RULE` -- ``phi*(x) = 1 + ln(1 - (1 - 1/e) x)`` (Theorem 1);
  :data:`UNIFORM_RULE` -- the two-level rule of Section 2 / Definition 3.

How ambiguities of the paper (whose text we worked from lost its formulas) are resolved:

* Boundary of a standard rule: ``phi(x) = 0`` for ``x >= 1`` (a seller whose
  rate equals the stretch gets nothing). For the uniform rule this means a
  tie at the stopping rate is excluded (see the chapter's remark on ties).
* Stopping rate: the largest ``r`` whose total payment is at most ``B``
  (for a discontinuous rule, the supremum, which is attained because the total
  payment is left-continuous in ``r``).
* ``r_i`` is the stopping rate with seller ``i``'s *cost* set to 0 and its
  utility kept, as Lemma 1's proof requires.
* Fast Mechanism 2: every ``r_i`` lies in ``[r* (1 - theta_i), r*]`` with
  ``theta_i = min(c_i, u_i r* p(0)) / B`` (our proof of Lemma 9's bound, in the
  chapter). The kernels of ``crowdlib._m2kernels`` use it: step rules by an exact sorted
  search over the pieces of the payment; rules with a power series by one polynomial per piece
  between the rates of the sellers inside the bracket, whose roots Newton's method finds for
  all sellers at once. Sellers with a wider bracket (``0.1 < theta_i <= 0.25``) use the earlier
  method: the sellers with ``rho_j < r_lo`` are analytic in ``r`` (a Chebyshev interpolant, via
  :class:`numpy.polynomial.Chebyshev`), those inside the bracket a Taylor series of ``p`` at 1
  in powers of ``r - rho_j`` with prefix sums over the sorted rates, and a vectorised Illinois
  (regula falsi) iteration finds the roots. A rule known only by ``phi`` and ``p`` (from
  :meth:`AllocationRule.from_phi`, or built from two functions) is run on a piecewise
  Chebyshev map of ``p`` (``crowdlib._m2pieces``): interpolants in ``r`` of the exact total
  over the bracket, between the rates at which a seller crosses an edge of ``p``. O(n log n)
  in all.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numpy.polynomial import Chebyshev
from numpy.typing import NDArray
from scipy import integrate, optimize
from scipy.special import binom
from tqdm import tqdm

from . import _m2kernels as _m2
from . import _m2pieces as _m2p
from ._validation import integer, real, real_array, real_vector

__all__ = [
    "hardness_rule_spend",
    "small_market_experiment",
    "hardness_experiment",
    "unit_integral_optimum",
    "random_instance",
    "WorstCase",
    "worst_case_lp",
    "two_point_market",
    "three_level_worst_cases",
    "AllocationRule",
    "OPTIMAL_RULE",
    "UNIFORM_RULE",
    "LINEAR_RULE",
    "three_level_rule",
    "get_rule",
    "Mechanism1Result",
    "Mechanism2Result",
    "mechanism1",
    "mechanism2",
    "mechanism2_naive",
    "large_market_limit",
    "LargeMarketLimit",
    "total_payment",
    "fractional_optimum",
    "fractional_optimum_allocation",
    "largeness",
    "two_point_ratio",
    "worst_case_ratio",
    "best_step_rule_ratio",
    "hardness_cdf",
    "sample_hardness_costs",
    "HARDNESS_MEAN",
    "HARDNESS_PRICE",
    "posted_price_outcome",
    "rounded_spend",
    "misreport_utilities",
    "FAMILIES",
    "market",
    "ratio_sweep",
]

FloatArray = NDArray[np.float64]
E = math.e
Q = 1.0 - 1.0 / E  # 1 - 1/e
#: Mean cost of the Section 6 hardness distribution, 1 - 2/e.
HARDNESS_MEAN = 1.0 - 2.0 / E
#: Posted price that spends the budget n * mu in expectation: (e - 2) / (e - 1).
HARDNESS_PRICE = (E - 2.0) / (E - 1.0)


# ------------------------------------------------------------------ allocation rules
@dataclass(frozen=True)
class AllocationRule:
    """A standard allocation rule and its Myerson unit payment (Sections 3.1-3.2).

    Parameters
    ----------
    name:
        Label used in tables and error messages.
    phi:
        Vectorised ``phi(x)`` for ``x >= 0``: non-increasing, ``phi(0) = 1``,
        ``phi(x) = 0`` for ``x >= 1``.
    unit_payment:
        Vectorised ``p(x) = x phi(x) + int_x^1 phi(t) dt`` (0 for ``x >= 1``).
    taylor_at_one:
        Optional ``K -> c`` giving the coefficients ``c_0..c_K`` of
        ``p(1 - y) = sum_k c_k y^k`` for small ``y >= 0``. Rules that provide it
        (and are continuous at 1, ``c_0 = 0``) get the O(n log n) Mechanism 2.
    continuous:
        Whether ``p`` is continuous (then the total payment is continuous in
        the stretch and a bracketing root-finder is used for stopping rates).
    jumps:
        Points of ``(0, 1)`` where ``phi`` jumps (the point 1 is always treated as one);
        :func:`worst_case_lp` refines its grid of rates around them.
    steps:
        For a step rule, ``p`` as ``((t_1, v_1), ..., (1, v_S))``: ``p(x) = sum_s v_s [x < t_s]``.
        Then every stopping rate is found exactly in O(n log n) (a search over the pieces of
        the piecewise-linear total payment), as for the uniform rule.
    series:
        Optional ``(x, K[, weights]) -> coefficients`` of ``G(1 + t; x) = sum_k c_k(x) t^k``
        with ``G(s; x) = s p(x / s)``, for ``x`` in [0, 1): the payment of an active seller as
        a power series in the stretch around 1 (weighted sums over sellers when ``weights`` is
        given). Rules that provide it get Mechanism 2's polynomial kernel
        (``crowdlib._m2kernels``).
    series_radius:
        A lower bound, over ``x`` in [0, 1), on the radius of convergence of that series in ``t``.
    outcome:
        Optional ``x -> (phi(x), p(x))`` in one pass (sharing a logarithm or a lookup); the
        mechanisms use it through :meth:`phi_and_payment`. It must agree with ``phi`` and
        ``unit_payment``.
    pieces:
        Optional map of ``p`` on [0, 1) (``crowdlib._m2pieces.Pieces``): edges between which
        ``p`` is smooth. :meth:`from_phi` sets it; for a rule with neither ``series`` nor
        ``steps``, :func:`mechanism2` builds it from ``unit_payment`` when it is missing.
    """

    name: str
    phi: Callable[[FloatArray], FloatArray] = field(repr=False)
    unit_payment: Callable[[FloatArray], FloatArray] = field(repr=False)
    taylor_at_one: Callable[[int], FloatArray] | None = field(default=None, repr=False)
    continuous: bool = True
    jumps: tuple[float, ...] = ()
    steps: tuple[tuple[float, float], ...] = ()
    series: Callable[..., FloatArray] | None = field(default=None, repr=False)
    series_radius: float = 0.0
    outcome: Callable[[FloatArray], tuple[FloatArray, FloatArray]] | None = field(default=None, repr=False)
    pieces: Any = field(default=None, repr=False, compare=False)

    def phi_and_payment(self, x: Any) -> tuple[FloatArray, FloatArray]:
        """``(phi(x), p(x))``: by ``outcome`` when the rule has one, else by its two functions."""
        if self.outcome is not None:
            return self.outcome(x)
        return self.phi(x), self.unit_payment(x)

    def __post_init__(self) -> None:
        if not self.steps:
            return
        try:
            t = np.array([float(s_[0]) for s_ in self.steps])
            v = np.array([float(s_[1]) for s_ in self.steps])
        except (TypeError, ValueError, IndexError):
            raise TypeError("steps must be a tuple of (t, v) pairs of real numbers") from None
        if (not np.all(np.isfinite(t) & np.isfinite(v)) or np.any(v < 0) or t[-1] != 1.0
                or np.any(t <= 0) or np.any(np.diff(t) <= 0)):
            raise ValueError("steps must be ((t_1, v_1), ..., (1, v_S)) with 0 < t_1 < ... < t_S = 1 "
                             f"and every v_s >= 0, got {self.steps!r}")
        # the steps must be the rule's own unit payment: checked between and at the step points
        x = np.unique(np.concatenate([np.linspace(0.0, 1.2, 61), t, np.nextafter(t, 0.0)]))
        want = (v[:, None] * (x[None, :] < t[:, None])).sum(axis=0)
        got = np.asarray(self.unit_payment(x), dtype=float)
        if got.shape != x.shape or not np.allclose(got, want, rtol=1e-12, atol=1e-12):
            raise ValueError("steps must describe unit_payment: p(x) = sum_s v_s [x < t_s]")

    @classmethod
    def from_phi(cls, phi: Callable[[FloatArray], FloatArray], name: str,
                 continuous: bool = True) -> "AllocationRule":
        """Build a rule from ``phi`` alone, with ``p(x) = x phi(x) + int_x^1 phi`` exact to ~1e-15.

        ``phi`` is checked on a grid of 2001 points of [0, 2]: finite, non-increasing,
        ``phi(0) = 1``, zero on ``[1, 2]`` and inside [0, 1] (a feature narrower than the grid can
        escape this check, and the map's samples). It is then cut into pieces of [0, 1) on each of which one
        Chebyshev interpolant reproduces it to ``2^-50`` (split at the jumps it finds, halved
        elsewhere; ``crowdlib._m2pieces``), and ``p`` is the interpolants' exact Myerson payment.
        The jumps found are the rule's ``jumps``; a ``phi`` that is constant on every piece
        becomes a step rule (``steps``). Mechanism 2 runs on the pieces in O(n log n) for large
        markets (see :func:`mechanism2`).

        Ambiguity resolved: at a jump ``t`` the value ``phi(t)`` is the right-hand one
        (``p(x) = sum_s v_s [x < t_s]``), as for the library's own step rules. Raises
        ``ValueError`` when ``continuous`` is true but ``phi`` jumps (at 1 too: ``phi(1-) > 0``),
        or when ``phi`` is too rough for 4096 pieces.
        """
        if not callable(phi):
            raise TypeError(f"phi must be callable, got {type(phi).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        if not isinstance(continuous, (bool, np.bool_)):
            raise TypeError(f"continuous must be a bool, got {type(continuous).__name__}")

        def phi_arr(x: FloatArray) -> FloatArray:
            try:
                out = np.asarray(phi(np.asarray(x, dtype=float)))
            except Exception as err:       # the user's function: its failure is bad input
                raise ValueError(f"phi failed on an array of floats: {type(err).__name__}: {err}") from err
            if out.dtype.kind not in "biuf" or out.shape != np.shape(x):
                raise ValueError(f"phi must map an array of floats to real numbers of the same shape, got "
                                 f"dtype {out.dtype} and shape {out.shape} for shape {np.shape(x)}")
            return out.astype(float)

        grid = np.linspace(0.0, 2.0, 2001)
        vals = phi_arr(grid)
        if vals.shape != grid.shape or not np.all(np.isfinite(vals)):
            raise ValueError("phi must map an array to finite values of the same shape")
        if abs(vals[0] - 1.0) > 1e-12 or np.any(vals[grid >= 1.0] != 0.0):
            raise ValueError("phi must be a standard rule: phi(0) = 1 and phi(x) = 0 for x >= 1")
        if np.any(np.diff(vals) > 1e-12) or np.any(vals < 0) or np.any(vals > 1):
            raise ValueError("phi must be non-increasing with values in [0, 1]")

        pay, ph, pp = _m2p.payment_from_phi(phi_arr)
        last = ph.coefs[-1]
        if last is None:             # phi is singular at 1: a jump only if phi(1-) dwarfs its steps
            below = np.nextafter(1.0, 0.0)
            v1, v2 = phi_arr(np.array([below, np.nextafter(below, 0.0)]))
            jumps_at_one = bool(v1 > _m2p.JUMP_MIN and v1 > 1e6 * abs(v2 - v1))
        else:
            jumps_at_one = float(np.polynomial.chebyshev.chebval(1.0, last)) > _m2p.JUMP_MIN
        if continuous and (ph.jumps or jumps_at_one):
            where = ", ".join(repr(float(t)) for t in (*ph.jumps, *((1.0,) if jumps_at_one else ())))
            raise ValueError(f"phi jumps (at x = {where}), so p is not continuous: pass continuous=False")
        steps: tuple[tuple[float, float], ...] = ()
        if all(c is not None and c.size == 1 for c in ph.coefs):
            level = np.array([float(pp.evaluate(np.array([a]))[0]) for a in ph.edges[:-1]] + [0.0])
            drop = np.flatnonzero(level[:-1] != level[1:])
            steps = tuple((float(ph.edges[k + 1]), float(level[k] - level[k + 1])) for k in drop)
            if not steps or steps[-1][0] != 1.0:
                steps = (*steps, (1.0, 0.0))
        return cls(name, phi, pay, None, bool(continuous), jumps=tuple(float(t) for t in ph.jumps),
                   steps=steps, pieces=pp)


def _phi_opt(x: Any) -> FloatArray:
    # phi*(x) = 1 + ln(1 - (1 - 1/e) x) = ln(e - (e - 1) x), written as log1p((e - 1) y) in
    # y = 1 - x: accurate relative to phi near x = 1 (1 + log1p(-Q x) cancels there), 1 at x = 0,
    # and exactly 0 from x = 1 on (and for NaN), without a where
    return _outcome_opt(x)[0]


def _p_opt(x: Any) -> FloatArray:
    # p*(x) = x - 1 + e/(e-1) ln(e - (e-1) x) = e/(e-1) phi*(x) - y, in y = 1 - x to avoid
    # cancellation; y = 0 (so p = 0 exactly) from x = 1 on and for NaN
    return _outcome_opt(x)[1]


def _outcome_opt(x: Any) -> tuple[FloatArray, FloatArray]:
    """``(phi*(x), p*(x))`` from one logarithm."""
    x = np.asarray(x, dtype=float)
    y = 1.0 - np.fmin(x, 1.0)
    phi = np.log1p((E - 1.0) * y)
    pay = phi * (E / (E - 1.0))
    pay -= y
    return phi, pay


def _taylor_opt(K: int) -> FloatArray:
    # p*(1 - y) = -y + e/(e-1) ln(1 + (e-1) y)
    k = np.arange(K + 1, dtype=float)
    c = np.zeros(K + 1)
    c[1:] = E / (E - 1.0) * (-1.0) ** (k[1:] + 1) * (E - 1.0) ** k[1:] / k[1:]
    if K >= 1:
        c[1] -= 1.0
    return c


def _taylor_linear(K: int) -> FloatArray:
    # p(1 - y) = y - y^2/2 for phi(x) = 1 - x
    c = np.zeros(K + 1)
    c[1 : 3] = [1.0, -0.5][: max(0, min(2, K))]
    return c


def _weighted(rows: list[FloatArray], weights: FloatArray | None) -> FloatArray:
    if weights is None:
        return np.vstack(rows) if rows[0].ndim else np.array(rows)
    return np.array([float(np.sum(weights * r)) for r in rows])     # pairwise, as _payment_sum


def _series_opt(x: Any, K: int, weights: FloatArray | None = None) -> FloatArray:
    """Coefficients of ``G(1 + t; x) = (1 + t) p*(x / (1 + t))`` in powers of ``t``.

    With ``sigma = e - (e - 1) x`` and ``z = e / sigma``: ``c_0 = p*(x)``,
    ``c_1 = -1 + e/(e-1) (ln sigma + z - 1)`` and, for ``k >= 2``,
    ``c_k = e/(e-1) (-1)^k (k z^(k-1) - (k-1) z^k - 1) / (k (k-1))`` (from
    ``G = x - s + e/(e-1) (s ln(e s - (e-1) x) - s ln s)``). Radius ``1 - (1 - 1/e) x >= 1/e``.
    """
    x = np.asarray(x, dtype=float)
    y = 1.0 - x
    kappa = E / (E - 1.0)
    log_sigma = np.log1p((E - 1.0) * y)
    z = E / (1.0 + (E - 1.0) * y)
    rows = [-y + kappa * log_sigma, -1.0 + kappa * (log_sigma + z - 1.0)]
    zp = z
    for k in range(2, K + 1):
        zk = zp * z
        rows.append(kappa * (-1.0) ** k * (k * zp - (k - 1) * zk - 1.0) / (k * (k - 1)))
        zp = zk
    return _weighted(rows, weights)


def _series_linear(x: Any, K: int, weights: FloatArray | None = None) -> FloatArray:
    """``G(1 + t; x) = ((1 + t) - x^2 / (1 + t)) / 2``: ``c_0 = (1 - x^2)/2``,
    ``c_1 = (1 + x^2)/2``, ``c_k = -(-1)^k x^2 / 2``. Radius 1."""
    x2 = np.asarray(x, dtype=float) ** 2
    rows = [(1.0 - x2) / 2.0, (1.0 + x2) / 2.0] + [-(-1.0) ** k * x2 / 2.0 for k in range(2, K + 1)]
    return _weighted(rows, weights)


#: phi*(x) = 1 + ln(1 - (1 - 1/e) x) on [0, 1): the optimal rule of Theorem 1.
OPTIMAL_RULE = AllocationRule("optimal", _phi_opt, _p_opt, _taylor_opt, series=_series_opt,
                              series_radius=1.0 / E, outcome=_outcome_opt)

def _uniform_outcome(x: Any) -> tuple[FloatArray, FloatArray]:
    on = (np.asarray(x, dtype=float) < 1.0).astype(float)
    return on, on.copy()


#: phi = 1 on [0, 1), 0 after (Definition 3): Mechanism 1 with it is Section 2's auction.
UNIFORM_RULE = AllocationRule(
    "uniform",
    lambda x: (np.asarray(x, dtype=float) < 1.0).astype(float),
    lambda x: (np.asarray(x, dtype=float) < 1.0).astype(float),
    None,
    continuous=False,
    outcome=_uniform_outcome,
)

#: phi(x) = 1 - x on [0, 1]: a continuous comparison rule, p(x) = (1 - x^2) / 2.
LINEAR_RULE = AllocationRule(
    "linear",
    lambda x: np.clip(1.0 - np.asarray(x, dtype=float), 0.0, 1.0),
    lambda x: np.where(np.asarray(x, dtype=float) < 1.0,
                       (1.0 - np.minimum(np.asarray(x, dtype=float), 1.0) ** 2) / 2.0, 0.0),
    _taylor_linear,
    series=_series_linear,
    series_radius=1.0,
)


def three_level_rule(a: float, h: float) -> AllocationRule:
    """The three-level rule of the roadmap: 1 on [0, a), ``h`` on [a, 1), 0 after.

    Its unit payment is ``a + h (1 - a)`` on [0, a) and ``h`` on [a, 1).
    """
    a = real("a", a, low=0.0, high=1.0, low_open=True)   # a = 0 would give phi(0) = h, not 1
    h = real("h", h, low=0.0, high=1.0)

    # looked up by level (0 from x = 1 on or for NaN, 1 on [a, 1), 2 below a): no nested where
    phi_levels = np.array([0.0, h, 1.0])
    pay_levels = np.array([0.0, h, a + h * (1.0 - a)])

    def level(x: FloatArray) -> NDArray[np.intp]:
        k = (x < 1.0).astype(np.intp)
        k += x < a
        return k

    def phi(x: Any) -> FloatArray:
        return phi_levels[level(np.asarray(x, dtype=float))]

    def pay(x: Any) -> FloatArray:
        return pay_levels[level(np.asarray(x, dtype=float))]

    def outcome(x: Any) -> tuple[FloatArray, FloatArray]:
        k = level(np.asarray(x, dtype=float))
        return phi_levels[k], pay_levels[k]

    steps = ((a, a * (1.0 - h)), (1.0, h)) if a < 1.0 else ((1.0, 1.0),)
    return AllocationRule(f"three-level(a={a:g}, h={h:g})", phi, pay, None, continuous=False,
                          jumps=(a,) if 0.0 < a < 1.0 else (), steps=steps, outcome=outcome)


_NAMED_RULES = {"optimal": OPTIMAL_RULE, "uniform": UNIFORM_RULE, "linear": LINEAR_RULE}


def get_rule(rule: Any) -> AllocationRule:
    """Resolve ``"optimal"``, ``"uniform"``, ``"linear"`` or an :class:`AllocationRule`."""
    if isinstance(rule, AllocationRule):
        return rule
    if isinstance(rule, str):
        if rule not in _NAMED_RULES:
            raise ValueError(f"rule must be one of {sorted(_NAMED_RULES)} or an AllocationRule, "
                             f"got {rule!r}")
        return _NAMED_RULES[rule]
    raise TypeError(f"rule must be a string or an AllocationRule, got {type(rule).__name__}")


# ------------------------------------------------------------------ validation
def _instance(costs: Any, utilities: Any, budget: Any) -> tuple[FloatArray, FloatArray, float]:
    c = real_vector("costs", costs, low=0.0)
    if c.size == 0:
        raise ValueError("costs must not be empty")
    u = real_vector("utilities", utilities, length=c.size, length_name="one per cost")
    if u.min() <= 0:
        raise ValueError(f"every entry of utilities must be > 0, got min {u.min():g}")
    B = real("budget", budget, low=0.0, low_open=True)
    with np.errstate(over="ignore"):
        if not math.isfinite(float(np.max(c / u))):
            raise ValueError("costs / utilities must be finite: a utility is too small for its cost "
                             f"(largest ratio {np.max(c / u):g})")
        # the stopping rate scales like budget / sum(u); beyond this range prices overflow
        scale = B / float(u.sum())
    if not (MIN_RATE_SCALE <= scale <= MAX_RATE_SCALE):
        raise ValueError(f"budget / sum(utilities) must lie in [{MIN_RATE_SCALE:g}, {MAX_RATE_SCALE:g}] "
                         f"(a price per unit of utility that floating point can represent), got {scale:g}")
    return c, u, B


#: the range of ``budget / sum(utilities)`` the mechanisms accept: prices outside it over- or
#: underflow double precision
MIN_RATE_SCALE, MAX_RATE_SCALE = 1e-280, 1e280


def largeness(costs: Any, budget: Any) -> float:
    """The largeness ratio ``theta = max_i c_i / B`` (Section 1.1.1)."""
    c = real_vector("costs", costs, low=0.0)
    if c.size == 0:
        raise ValueError("costs must not be empty")
    B = real("budget", budget, low=0.0, low_open=True)
    with np.errstate(over="ignore"):
        theta = float(c.max() / B)
    if not np.isfinite(theta):
        raise ValueError(f"budget must be large enough that max(costs) / budget is finite, got {B:g}")
    return theta


# ------------------------------------------------------------------ OPT
def fractional_optimum_allocation(costs: Any, utilities: Any, budget: Any) -> FloatArray:
    """OPT's fractions: greedy by rate ``c_i / u_i`` (the fractional knapsack)."""
    c, u, B = _instance(costs, utilities, budget)
    order = np.argsort(c / u, kind="stable")
    spent_before = np.concatenate(([0.0], np.cumsum(c[order])[:-1]))
    left = np.clip(B - spent_before, 0.0, None)
    frac = np.ones_like(c)
    pos = c[order] > 0
    frac[pos] = np.minimum(1.0, left[pos] / c[order][pos])
    out = np.empty_like(c)
    out[order] = frac
    return out


def fractional_optimum(costs: Any, utilities: Any, budget: Any) -> float:
    """OPT: the buyer's utility when costs are known and items are divisible."""
    c, u, B = _instance(costs, utilities, budget)
    return float(np.dot(u, fractional_optimum_allocation(c, u, B)))


# ------------------------------------------------------------------ Mechanism 1
#: sums over the sellers are formed in blocks of this many (the temporaries then stay in cache)
BLOCK = 1 << 16


def _block_sums(n: int, terms: Callable[[slice], FloatArray]) -> FloatArray:
    """``sum_j terms_j`` over ``n`` sellers, where ``terms(block)`` gives a block's partial sums
    (one per quantity). Pairwise sums within a block, then pairwise over the blocks, in the same
    order for every caller: the stopping-rate search and the exact check of a rate agree term
    for term."""
    parts = np.array([terms(slice(s, s + BLOCK)) for s in range(0, n, BLOCK)], dtype=float)
    if parts.size == 0:
        return np.zeros(1)
    parts = parts.reshape(parts.shape[0], -1)
    return np.array([float(np.sum(np.ascontiguousarray(parts[:, k]))) for k in range(parts.shape[1])])


def _payment_sum(rule: AllocationRule, rho: FloatArray, u: FloatArray, r: float) -> float:
    # np.sum's pairwise summation, not a dot product: many tiny payments after a large one must
    # not be rounded away (a dot product lost 3e-12 of the budget on such a market)
    return float(r * _block_sums(rho.size, lambda b: np.sum(u[b] * rule.unit_payment(rho[b] / r)))[0])


def total_payment(costs: Any, utilities: Any, rate: Any, rule: Any = "optimal") -> float:
    """Total payment ``sum_i u_i r p(rho_i / r)`` of the stretched rule at stretch ``rate``."""
    c = real_vector("costs", costs, low=0.0)
    u = real_vector("utilities", utilities, length=c.size, length_name="one per cost")
    if np.any(u <= 0):
        raise ValueError("every entry of utilities must be > 0")
    r = real("rate", rate, low=0.0, low_open=True)
    with np.errstate(over="ignore", invalid="ignore"):
        rho = c / u
        total = _payment_sum(get_rule(rule), rho, u, r) if np.all(np.isfinite(rho)) else math.inf
    if not math.isfinite(total):
        raise ValueError(f"rate * utilities must keep the total payment finite (at most {np.finfo(float).max:g}), "
                         f"got rate {r:g} with sum(utilities) {float(u.sum()):g}")
    return total


def _uniform_stopping_rates(rho: FloatArray, u: FloatArray, B: float,
                            extra: FloatArray, own: FloatArray | None) -> FloatArray:
    """sup{r : r (U(r) + extra_q [own_q >= r]) <= B} for each query q, exactly.

    ``U(r) = sum_{rho_j < r} u_j``. ``extra``/``own`` describe a seller moved to
    rate 0 (its utility and original rate); ``extra = 0`` gives r* itself.
    O((n + q) log n): a vectorised binary search over the pieces of U.
    """
    a, inv = np.unique(np.concatenate(([0.0], rho)), return_inverse=True)
    # sum over rho_j <= a_k, compensated (tiny utilities after large ones are not rounded away)
    W = _m2.prefix_sum(np.bincount(inv[1:], weights=u, minlength=a.size))
    m = a.size
    a_next = np.append(a[1:], np.inf)
    own_idx = (np.searchsorted(a, own, side="left") if own is not None
               else np.full(extra.size, m, dtype=int))

    def cap(k: NDArray[np.int_]) -> FloatArray:
        # largest r allowed by the budget on piece k = (a_k, a_{k+1}]
        w = W[k] + np.where(k < own_idx, extra, 0.0)
        with np.errstate(divide="ignore"):
            return np.where(w > 0, B / np.where(w > 0, w, 1.0), np.inf)

    # pieces reachable (cap > a_k) form a prefix; binary search for its last index
    lo = np.zeros(extra.size, dtype=int)  # piece 0 is always reachable (a_0 = 0 < cap)
    hi = np.full(extra.size, m - 1, dtype=int)
    while np.any(lo < hi):
        mid = (lo + hi + 1) // 2
        ok = cap(mid) > a[mid]
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid - 1)
    return np.minimum(a_next[lo], cap(lo))


#: a Newton step at most this relative size is followed by a certificate on the exact sum (the
#: new rate feasible, four ulps above it not) instead of one more evaluation
NEWTON_CERTIFY_STEP = 1e-8

#: markets at least this large get the stopping rate of a rule with a series by Newton's method
#: from the estimate of a small market standing for the whole (a few passes instead of Brent's dozen)
NEWTON_RATE_MIN_N = 20_000


def _value_slope(rule: AllocationRule, rho: FloatArray, u: FloatArray, r: float) -> FloatArray:
    """``sum u_j c_0(x_j)`` and ``sum u_j c_1(x_j)`` over the active sellers (``x_j = rho_j / r
    < 1``): the total payment per unit of stretch and its slope in the stretch."""
    x = rho / r
    w = u * (x < 1.0)                         # inactive sellers weigh 0 (their x is clipped to 1)
    np.minimum(x, 1.0, out=x)
    return rule.series(x, 1, w)


def _newton_rate(rule: AllocationRule, ra: FloatArray, ua: FloatArray, B: float, r0: float,
                 lo: float, hi: float, own: tuple[float, float] | None = None) -> float | None:
    """The stopping rate by Newton's method on the exact total payment, whose value and slope
    in the stretch are ``sum u_j c_0(x_j)`` and ``sum u_j c_1(x_j)`` (``rule.series``), from
    ``r0`` inside the bracket ``[lo, hi]`` (``hi`` infeasible or the end of the sellers given:
    ``ra < hi`` holds all who can be active). ``own = (rho_i, u_i)``: seller i's term replaced by
    its payment at cost 0. Returns None unless it converges within 12 steps (bisection is kept
    for the caller); the result is checked feasible on the exact sum."""
    p0 = float(rule.unit_payment(np.zeros(1))[0])
    eps = np.finfo(float).eps

    def excess(q: float) -> float:
        extra = 0.0 if own is None else own[1] * q * (p0 - float(rule.unit_payment(np.array([own[0] / q]))[0]))
        return _payment_sum(rule, ra, ua, q) + extra - B

    r, done = r0, False
    for _ in range(12):
        value, slope = _block_sums(ra.size, lambda b: _value_slope(rule, ra[b], ua[b], r))
        if own is not None:
            xi = own[0] / r
            ci = rule.series(np.array([min(xi, 1.0)]), 1) if xi < 1.0 else np.zeros((2, 1))
            value += own[1] * (p0 - ci[0, 0])
            slope += own[1] * (p0 - ci[1, 0])
        f = r * value - B
        if f <= 0:
            lo = max(lo, r)
        else:
            hi = min(hi, r)
        step = f / slope if slope > 0 else math.inf
        if abs(step) <= 2 * eps * r or (hi - lo <= 2 * eps * hi and lo == r):
            if own is None and f <= 0:
                # converged on the feasible side; the sums above are term for term those of
                # _payment_sum, so r is feasible on the exact sum as it stands
                return float(r)
            done = True                        # converged: at most a few ulps to step down
            break
        r_new = r - step
        if not (lo < r_new < hi):
            r_new = 0.5 * (lo + hi)
        elif abs(step) <= NEWTON_CERTIFY_STEP * r and r_new > 0:
            # Newton's error after a step this small is far below an ulp (quadratic convergence;
            # a seller switching on in between moves it by less than its share of the slope
            # times the step): certify r_new on the exact sum instead of evaluating once more
            q = float(r_new)
            if excess(q) <= 0:
                if excess(q * (1.0 + 4.0 * eps)) > 0:
                    return q
            else:                              # infeasible: the sup is a few ulps below, or not
                for _ in range(4):
                    q = float(np.nextafter(q, 0.0))
                    if excess(q) <= 0:
                        return q               # the next ulps up, to r_new, are infeasible
        r = r_new
    if not done:
        return None

    for _ in range(16):                        # feasible on the exact sum, by a few ulps at most
        if excess(r) <= 0:
            return float(r)
        r = float(np.nextafter(r, 0.0))
    return None


def _newton_stopping_rate(rule: AllocationRule, rho: FloatArray, u: FloatArray, B: float) -> float | None:
    """Mechanism 1's stopping rate by :func:`_newton_rate`, started from the stopping rate of a
    sample of ~4000 sellers standing for the market (``_m2kernels.sample_market``)."""
    r0 = _stopping_rate(rule, *_m2.sample_market(rho, u), B, newton=False)
    for factor in (1.02, 1.1, 2.0):            # only sellers below the cap can be active
        cap = factor * r0
        keep = np.flatnonzero(rho < cap)
        r = _newton_rate(rule, rho.take(keep), u.take(keep), B, r0, 0.0, cap)
        if r is not None and r < cap:
            return r
    return None


def _stopping_rate(rule: AllocationRule, rho: FloatArray, u: FloatArray, B: float,
                   newton: bool = True) -> float:
    """Largest r with total payment <= B (Mechanism 1's stopping rate)."""
    if rule is UNIFORM_RULE:
        return float(_uniform_stopping_rates(rho, u, B, np.zeros(1), None)[0])
    if newton and rule.series is not None and rule.continuous and rho.size >= NEWTON_RATE_MIN_N:
        r = _newton_stopping_rate(rule, rho, u, B)
        if r is not None:
            return r

    def excess_on(rr: FloatArray, uu: FloatArray) -> Callable[[float], float]:
        return lambda r: _payment_sum(rule, rr, uu, r) - B

    excess = excess_on(rho, u)
    hi = max(float(rho.max()), B / float(u.sum()), 1e-300)
    for _ in range(2200):                      # bounded: _instance keeps B / sum(u) in range
        if excess(hi) > 0:
            break
        hi *= 2.0
    else:  # pragma: no cover
        raise RuntimeError("no stopping rate spends the budget")
    active = rho < hi                          # p vanishes beyond x = 1: the others pay nothing
    if not active.all():
        compressed = excess_on(rho[active], u[active])
        if compressed(hi) > 0:                 # the same sum in another order: keep the bracket
            excess = compressed
    lo = hi / 2.0
    for _ in range(2200):
        if not (lo > 0 and excess(lo) > 0):
            break
        hi, lo = lo, lo / 2.0
    return _solve_rate(excess, lo, hi, rule.continuous)


def _solve_rate(excess: Callable[[float], float], lo: float, hi: float, continuous: bool) -> float:
    """The largest feasible rate in ``[lo, hi]``, given ``excess(lo) <= 0 < excess(hi)`` and an
    increasing ``excess`` (total payment minus budget): Brent's method for a continuous payment,
    then a step down to the feasible side; bisection otherwise. Bounded iterations."""
    def bisect(a: float, z: float) -> float:
        """The feasible end after bisection: excess(a) <= 0 < excess(z) throughout."""
        for _ in range(1100):
            mid = 0.5 * (a + z)
            if mid <= a or mid >= z:
                break
            if excess(mid) <= 0:
                a = mid
            else:
                z = mid
        return float(a)

    if continuous:
        r = optimize.brentq(excess, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
        r = min(max(r, lo), hi)
        for _ in range(16):                    # step down to the feasible side by a few ulps
            if excess(r) <= 0:
                return float(r)
            r = np.nextafter(r, 0.0)
        return bisect(lo, r)                   # still infeasible (subnormal rates): bisect
    return bisect(lo, hi)


def _own_rate(rule: AllocationRule, rho_act: FloatArray, u_act: FloatArray, B: float, rho_i: float,
              u_i: float, lo: float, r_star: float) -> float:
    """Seller i's ``r_i`` (its cost set to 0) on the bracket ``[lo, r*]``, exactly: O(n).

    ``rho_act``, ``u_act``: the sellers active at ``r*`` (``rho_j < r*``), seller i among them
    if it is; its own term ``u_i r p(rho_i / r)`` is replaced by ``u_i r p(0)``.
    """
    p0 = float(rule.unit_payment(np.zeros(1))[0])

    def excess(r: float) -> float:
        own = u_i * r * (p0 - float(rule.unit_payment(np.array([rho_i / r]))[0]))
        return _payment_sum(rule, rho_act, u_act, r) + own - B

    if excess(r_star) <= 0:
        return r_star
    lo = min(lo, r_star) if lo > 0 else 0.5 * r_star    # theta_i = 1 leaves the bracket open at 0
    for _ in range(2200):                      # the bracket lemma gives excess(lo) <= 0; rounding
        if excess(lo) <= 0 or lo <= 0:
            break
        lo *= 0.5
    if lo <= 0:  # pragma: no cover - _instance keeps every rate a normal float
        raise RuntimeError("no feasible rate below r* for this seller")
    return _solve_rate(excess, lo, r_star, rule.continuous)


TIE_MODES = ("index", "fractional", "exclude")


def _check_ties(ties: Any) -> str:
    if not isinstance(ties, str) or ties not in TIE_MODES:
        raise ValueError(f"ties must be one of {TIE_MODES}, got {ties!r}")
    return ties


#: the outcome is formed in blocks of this many sellers (its temporaries then stay in cache)
OUTCOME_BLOCK = 1 << 16


def _outcome(rule: AllocationRule, rho: FloatArray, u: FloatArray, B: float, rates: FloatArray,
             ties: str) -> tuple[FloatArray, FloatArray]:
    """Allocations ``phi(rho_i / r_i)`` and payments ``u_i r_i p(rho_i / r_i)``, tied sellers
    settled by ``ties``."""
    alloc, pay = np.empty(rho.size), np.empty(rho.size)
    for s in range(0, rho.size, OUTCOME_BLOCK):
        sl = slice(s, s + OUTCOME_BLOCK)
        r = rates[sl]
        a, p = rule.phi_and_payment(rho[sl] / r)
        alloc[sl] = a
        np.multiply(u[sl], r * p, out=pay[sl])
    return _settle_ties(rule, rho, u, B, rates, alloc, pay, ties)


def _settle_ties(rule: AllocationRule, rho: FloatArray, u: FloatArray, B: float,
                 rates: FloatArray, alloc: FloatArray, pay: FloatArray,
                 ties: str) -> tuple[FloatArray, FloatArray]:
    """Sellers whose rate equals their stopping rate exactly (``rho_i = r_i``).

    The standard rule gives them ``phi(1) = 0`` (``ties="exclude"``), which can waste most of
    the budget when many sellers share a rate. For a rule that jumps at 1 (``phi(1-) > 0``, as
    the uniform rule does) the other two modes spend what the other sellers leave:

    ``"index"``
        Tied sellers are served in index order, each selling ``phi(1-)`` at its rate ``r_i``
        per unit of utility, while the leftover pays for the next one; the first that does not
        fit, and every later one, sells nothing. This is the outcome on the instance whose tied
        rates are perturbed by ``j * eps`` (``eps -> 0``), so it keeps truthfulness and budget
        feasibility, and a tied seller, paid its cost, has utility 0.
    ``"fractional"``
        Tied sellers all sell the same fraction, the largest the leftover pays for. Budget
        feasible and IR, and truthful in Mechanism 2 (a seller's own ``r_i`` ignores its
        report), but NOT in Mechanism 1: a seller whose report sets the stopping rate at its own
        rate then sells a fraction at that price.
    """
    if ties == "exclude":
        return alloc, pay
    tied = np.flatnonzero((rho == rates) & (rho > 0))
    if tied.size == 0:
        return alloc, pay
    top = float(rule.phi(np.array([np.nextafter(1.0, 0.0)]))[0])
    if top <= 0:
        return alloc, pay
    mask = np.zeros(rho.size, dtype=bool)
    mask[tied] = True
    leftover = max(B - float(pay[~mask].sum()), 0.0)
    cost = rates[tied] * u[tied]                      # paying a tied seller for all of its item
    alloc, pay = alloc.copy(), pay.copy()
    if ties == "fractional":
        f = min(top, leftover / float(cost.sum()))
        alloc[tied] = f
        pay[tied] = f * cost
        return alloc, pay
    served = np.cumsum(top * cost) <= leftover        # no slack: a tolerance would overspend
    served = np.cumprod(served).astype(bool)          # stop at the first seller that does not fit
    alloc[tied] = np.where(served, top, 0.0)
    pay[tied] = np.where(served, top * cost, 0.0)
    return alloc, pay


class _BuyerValue:
    """The buyer's utility of an outcome with ``allocation`` and ``utilities``."""

    allocation: FloatArray
    utilities: FloatArray

    @property
    def value(self) -> float:
        """The buyer's utility ``sum_i u_i f_i``."""
        return float(np.dot(self.utilities, self.allocation))


@dataclass(frozen=True)
class Mechanism1Result(_BuyerValue):
    """Outcome of Mechanism 1(phi): fractions bought, payments, stopping rate r*."""

    allocation: FloatArray
    payments: FloatArray
    rate: float
    utilities: FloatArray = field(repr=False)


def _check_rate_scale(rule: AllocationRule, u: FloatArray, B: float) -> None:
    """The stopping rate is at least ``B / (p(0) sum(u))`` (every seller paid ``p(0)`` per unit
    of stretch at most): refuse budgets that push it beyond double precision."""
    p0 = float(rule.unit_payment(np.zeros(1))[0])
    with np.errstate(over="ignore", divide="ignore"):
        scale = B / (p0 * float(u.sum())) if p0 > 0 else math.inf
    if not scale <= MAX_RATE_SCALE:
        raise ValueError(f"budget / (p(0) * sum(utilities)) must be at most {MAX_RATE_SCALE:g} for rule "
                         f"{rule.name!r} (p(0) = {p0:g}): the stopping rate would overflow, got {scale:g}")


def mechanism1(costs: Any, utilities: Any, budget: Any, rule: Any = "optimal", *,
               ties: str = "index") -> Mechanism1Result:
    """Mechanism 1(phi) (Section 3.4): one stopping rate for every seller.

    The stopping rate ``r*`` is the largest stretch whose total payment
    ``sum_i u_i r p(rho_i / r)`` is at most ``budget``; seller ``i`` sells
    ``phi(rho_i / r*)`` and is paid ``u_i r* p(rho_i / r*)``. Envy-free, IR and
    budget feasible; truthful for the uniform rule only.

    ``ties`` resolves what the paper leaves open about sellers whose rate equals ``r*``:
    ``"index"`` (default) serves them in index order at price ``r*`` while the leftover budget
    lasts, which is the auction on rates perturbed by ``j * eps``, so it stays truthful for the
    uniform rule; ``"exclude"`` applies ``phi(1) = 0``; ``"fractional"`` shares the leftover
    equally but makes the uniform auction manipulable (see ``_settle_ties``). For rules
    continuous at 1 (the optimal and linear rules) the modes coincide.
    """
    c, u, B = _instance(costs, utilities, budget)
    ties = _check_ties(ties)
    rl = get_rule(rule)
    _check_rate_scale(rl, u, B)
    rho = c / u
    r = _stopping_rate(rl, rho, u, B)
    alloc, pay = _outcome(rl, rho, u, B, np.full(c.size, r), ties)
    return Mechanism1Result(alloc, pay, r, u)


# ------------------------------------------------------------------ Mechanism 2
@dataclass(frozen=True)
class Mechanism2Result(_BuyerValue):
    """Outcome of Mechanism 2(phi): fractions, payments, and each seller's rate r_i.

    ``path`` says how the rates were computed: ``"fast"`` (the polynomial and Chebyshev/Taylor
    kernels of a rule with a series), ``"uniform"`` or ``"steps"`` (the exact search over the
    pieces of a step rule), ``"pieces"`` (interpolants of the exact total on a map of ``p``, for
    a rule known by ``phi`` and ``p`` alone) or ``"naive"`` (one Mechanism 1 stopping rate per
    seller, O(n^2)), which :func:`mechanism2` takes only for a payment too rough to map.
    """

    allocation: FloatArray
    payments: FloatArray
    rates: FloatArray
    stopping_rate: float
    utilities: FloatArray = field(repr=False)
    path: str = "naive"


def mechanism2_naive(costs: Any, utilities: Any, budget: Any, rule: Any = "optimal", *,
                     ties: str = "index") -> Mechanism2Result:
    """Mechanism 2 by its definition: one Mechanism 1 stopping rate per seller, O(n^2).

    Kept as the reference the fast :func:`mechanism2` is tested against, and used by
    :func:`mechanism2` for a rule whose payment is too rough to map. ``ties`` as in
    :func:`mechanism2`.
    """
    c, u, B = _instance(costs, utilities, budget)
    ties = _check_ties(ties)
    rl = get_rule(rule)
    _check_rate_scale(rl, u, B)
    rho = c / u
    r_star = _stopping_rate(rl, rho, u, B)
    rates = np.empty_like(c)
    if rl is UNIFORM_RULE:
        rates = _uniform_stopping_rates(rho, u, B, u, rho)
    else:
        for i in range(c.size):
            if c[i] == 0.0:
                rates[i] = r_star
                continue
            saved = rho[i]
            rho[i] = 0.0
            rates[i] = _stopping_rate(rl, rho, u, B)
            rho[i] = saved
    alloc, pay = _outcome(rl, rho, u, B, rates, ties)
    return Mechanism2Result(alloc, pay, rates, r_star, u, "uniform" if rl is UNIFORM_RULE else "naive")


#: :func:`mechanism2` warns when it falls back to the O(n^2) method on at least this many sellers
SLOW_PATH_WARN_N = 1000


def _own_searches(rl: AllocationRule, rho: FloatArray, u: FloatArray, B: float, r_star: float,
                  who: NDArray[np.intp], theta_who: FloatArray, why: str, depth: int) -> FloatArray:
    """Each seller in ``who`` by its own exact search on its bracket ``[r* (1 - theta_i), r*]``,
    O(n) each (Newton's method on the exact sums for a continuous rule with a series, else the
    bracketing search); warns (naming ``why``) when they are many, as the cost then tends to
    O(n^2). ``depth``: frames from this function's caller up to ``mechanism2``'s caller."""
    n = rho.size
    if (who.size > max(MAX_WIDE_SELLERS, n // 64) and n >= SLOW_PATH_WARN_N) or who.size * n > WIDE_WORK_WARN:
        _m2p.slow_warning(f"{who.size} of {n} sellers {why}; each gets its own exact O(n) search, which "
                          "tends to O(n^2) when most sellers are like that", stacklevel=depth + 1)
    out = np.empty(who.size)
    act = np.flatnonzero(rho < r_star)
    rho_a, u_a = rho.take(act), u.take(act)
    for j, (i, th_i) in enumerate(zip(who, theta_who)):
        lo_i = r_star * (1.0 - float(th_i))
        r_i = None
        if rl.series is not None and rl.continuous:
            r_i = _newton_rate(rl, rho_a, u_a, B, r_star, lo_i, r_star, own=(float(rho[i]), float(u[i])))
        out[j] = r_i if r_i is not None else _own_rate(rl, rho_a, u_a, B, float(rho[i]), float(u[i]),
                                                       lo_i, r_star)
    return out


def _naive_fallback(c: FloatArray, u: FloatArray, B: float, rl: AllocationRule, ties: str,
                    why: str) -> "Mechanism2Result":
    if c.size >= SLOW_PATH_WARN_N:
        _m2p.slow_warning(f"{why}, so the {c.size} sellers' rates are computed by the O(n^2) naive "
                          "method (result.path == 'naive')", stacklevel=3)
    return mechanism2_naive(c, u, B, rl, ties=ties)


#: the fast path is used for the sellers whose theta_i = min(c_i, u_i r* p(0)) / B is at most this;
#: each seller above it gets its own exact stopping-rate search (O(n) each)
FAST_THETA_LIMIT = 0.25

#: a tier of sellers whose widest bracket is at most this uses the polynomial kernel of
#: ``crowdlib._m2kernels`` (rules with ``series``); wider ones the Chebyshev/Taylor method
SERIES_THETA_LIMIT = 0.1

#: more sellers than this (or than n / 64) above FAST_THETA_LIMIT and Mechanism 2 warns (on large
#: markets) that their own searches, O(n) each, add up towards O(n^2)
MAX_WIDE_SELLERS = 64
#: ... or when their searches together cost more than this many seller-passes (about a second)
WIDE_WORK_WARN = 2 * 10**7
#: near sellers are summed exactly while there are at most this many times (K + 1)^2 of them
#: (K = Taylor order), else through the Taylor prefix sums; tests set it to 0 to force those
NEAR_DIRECT_FACTOR = 2


def _fast_rates(rule: AllocationRule, rho: FloatArray, u: FloatArray,
                B: float, r_star: float, lo: FloatArray, which: NDArray[np.int_]) -> FloatArray:
    """r_i for the sellers ``which`` at once: Chebyshev (far sellers) + Taylor prefix sums
    (near) + Illinois. The representation spans the widest bracket among ``which``."""
    rates = np.full(rho.size, r_star)
    todo = which[lo[which] < r_star]
    if todo.size == 0:
        return rates
    r_lo = float(lo[todo].min())
    span = r_star - r_lo
    if todo.size == 0 or span <= 0:
        return rates
    p0 = float(rule.unit_payment(np.zeros(1))[0])

    far = rho < r_lo
    rho_f, u_f = rho[far], u[far]

    def far_sum(rs: FloatArray) -> FloatArray:
        return np.array([r * np.dot(u_f, rule.unit_payment(rho_f / r)) for r in np.atleast_1d(rs)])

    cheb = None
    if rho_f.size:
        # r p(rho/r) is analytic for r > (1 - 1/e) rho (phi*'s log; for the linear rule the only
        # singularity is the pole at r = 0, farther away), so the interpolant converges like
        # rho_B^-deg, rho_B the Bernstein ellipse through (1 - 1/e) max(rho_far); the tests
        # compare with the naive method
        mid, half = 0.5 * (r_lo + r_star), 0.5 * span
        t = (mid - Q * float(rho_f.max())) / half
        ellipse = t + math.sqrt(max(t * t - 1.0, 0.0))
        deg = int(min(200, math.ceil(37.0 / math.log(max(ellipse, 1.2))) + 3))
        cheb = Chebyshev.interpolate(far_sum, deg, domain=[r_lo, r_star])

    near = ~far & (rho < r_star)
    order = np.argsort(rho[near], kind="stable")
    rho_n, u_n = rho[near][order], u[near][order]
    theta_max = span / r_star
    K = int(min(80, max(2, math.ceil(-37.0 / math.log(max(theta_max * (E - 1.0), 1e-300))) + 2)))
    coef = rule.taylor_at_one(K)
    e_n = r_star - rho_n
    powers = np.vstack([u_n * e_n ** l for l in range(K + 1)]) if rho_n.size else np.zeros((K + 1, 0))
    prefix = np.hstack([np.zeros((K + 1, 1)), np.cumsum(powers, axis=1)])  # (K+1, n_near+1)
    binoms = binom(np.arange(K + 1)[:, None], np.arange(K + 1)[None, :])

    def near_sum(r: FloatArray) -> FloatArray:
        if rho_n.size <= NEAR_DIRECT_FACTOR * (K + 1) ** 2:  # few near sellers: sum them exactly
            out = np.empty_like(r)
            step = max(1, 4_000_000 // max(rho_n.size, 1))
            for s in range(0, r.size, step):
                rr = r[s : s + step, None]
                out[s : s + step] = (u_n * rr * rule.unit_payment(rho_n / rr)).sum(axis=1)
            return out
        idx = np.searchsorted(rho_n, r, side="left")  # active near sellers: rho_j < r
        d = r - r_star
        Em = prefix[:, idx]  # E_l(r) = sum u_j (r* - rho_j)^l over active near sellers
        out = np.zeros_like(r)
        dpow = np.vstack([d ** m for m in range(K + 1)])
        for k in range(1, K + 1):
            if coef[k] == 0.0:
                continue
            A = np.zeros_like(r)  # A_k = sum_j u_j (r - rho_j)^k = sum_m C(k,m) d^m E_{k-m}
            for m in range(k + 1):
                A += binoms[k, m] * dpow[m] * Em[k - m]
            out += coef[k] * A * r ** (1 - k)
        return out

    def excess(r: FloatArray, i: NDArray[np.int_]) -> FloatArray:
        total = near_sum(r) + (cheb(r) if cheb is not None else 0.0)
        own = u[i] * r * (p0 - rule.unit_payment(rho[i] / r))
        return total + own - B

    a, b = lo[todo].copy(), np.full(todo.size, r_star)
    fa, fb = excess(a, todo), excess(b, todo)
    fa = np.minimum(fa, 0.0)  # a is feasible by the bracket lemma; clip rounding noise
    fb = np.maximum(fb, 0.0)
    side = np.zeros(todo.size, dtype=int)
    live = np.arange(todo.size)
    tol = 4 * np.finfo(float).eps * r_star
    for it in range(400):
        if live.size == 0:
            break
        A_, B_, FA, FB = a[live], b[live], fa[live], fb[live]
        denom = FB - FA
        x = np.where(denom > 0, B_ - FB * (B_ - A_) / np.where(denom > 0, denom, 1.0), 0.5 * (A_ + B_))
        if it % 8 == 7:  # a bisection step now and then bounds the iteration count
            x = 0.5 * (A_ + B_)
        x = np.clip(x, A_, B_)
        fx = excess(x, todo[live])
        left = fx <= 0  # the root is at or right of x: x becomes the new feasible end
        a[live] = np.where(left, x, A_)
        fa[live] = np.where(left, fx, np.where(side[live] == -1, FA / 2, FA))
        b[live] = np.where(left, B_, x)
        fb[live] = np.where(left, np.where(side[live] == 1, FB / 2, FB), fx)
        side[live] = np.where(left, 1, -1)
        done = (b[live] - a[live] <= tol) | (fx == 0)
        live = live[~done]
    rates[todo] = a  # the feasible end: total payment <= B
    return rates


#: a rule with neither ``series`` nor ``steps`` nor ``pieces`` gets a map of its unit payment with
#: at most this many pieces (else Mechanism 2 falls back to the naive method, with a warning)
PAYMENT_MAP_PIECES = 256
_PAYMENT_MAPS: "weakref.WeakKeyDictionary[AllocationRule, Any]" = weakref.WeakKeyDictionary()


def _payment_map(rule: AllocationRule) -> Any:
    """The rule's map of ``p`` on [0, 1) (``rule.pieces``, else fitted once and kept), or None
    when ``p`` is too rough for ``PAYMENT_MAP_PIECES`` pieces."""
    if rule.pieces is not None:
        return rule.pieces
    if rule in _PAYMENT_MAPS:
        return _PAYMENT_MAPS[rule]
    p0 = float(rule.unit_payment(np.zeros(1))[0])
    try:
        fitted = _m2p.fit(lambda x: np.asarray(rule.unit_payment(x), dtype=float), 0.0, 1.0,
                          scale=max(p0, np.finfo(float).tiny), name="unit_payment",
                          max_pieces=PAYMENT_MAP_PIECES)
    except ValueError:
        fitted = None
    _PAYMENT_MAPS[rule] = fitted
    return fitted


#: the sellers off the bulk are grouped in bands of theta this many times wider than the last
PIECE_BAND = 8.0


def _mechanism2_pieces(c: FloatArray, u: FloatArray, B: float, rl: AllocationRule, ties: str,
                       rho: FloatArray, pieces: Any) -> "Mechanism2Result":
    """Mechanism 2 for a rule known by ``phi`` and ``p`` alone, on the map of ``p``
    (``crowdlib._m2pieces.piece_rates``): the bulk of sellers in one window, the others in
    bands of theta, each seller beyond ``FAST_THETA_LIMIT`` (or in a band too crowded near the
    edges of ``p``) by its own exact search."""
    r_star = _stopping_rate(rl, rho, u, B)
    p0 = float(rl.unit_payment(np.zeros(1))[0])
    theta = np.minimum(c, u * (r_star * p0)) / B
    np.minimum(theta, 1.0, out=theta)
    rates = np.full(c.size, r_star)

    def total(rr: FloatArray, uu: FloatArray, r: float) -> float:
        return _payment_sum(rl, rr, uu, r)

    inner = np.flatnonzero((theta > 0) & (theta <= FAST_THETA_LIMIT))
    wide = [np.flatnonzero(theta > FAST_THETA_LIMIT)]
    if inner.size:
        sample = theta[inner][:: max(1, inner.size // 10_000)]
        edge = 2.0 * float(np.quantile(sample, 0.99))
        bands = [edge]
        while bands[-1] < FAST_THETA_LIMIT:
            bands.append(bands[-1] * PIECE_BAND)
        band = np.searchsorted(np.array(bands), theta[inner], side="left")
        for k in np.unique(band):
            idx = inner[band == k]
            got = _m2p.piece_rates(rl.unit_payment, pieces, total, rho, u, B, r_star,
                                   r_star * (1.0 - theta), idx)
            if got is None:
                wide.append(idx)
            else:
                rates[idx] = got[idx]
    own = np.concatenate(wide)
    if own.size:
        rates[own] = _own_searches(rl, rho, u, B, r_star, own, theta[own],
                                   "have a wide bracket or sit near the edges of the rule's pieces", depth=3)
    np.putmask(rates, c == 0.0, r_star)
    alloc, pay = _outcome(rl, rho, u, B, rates, ties)
    return Mechanism2Result(alloc, pay, rates, r_star, u, "pieces")


def mechanism2(costs: Any, utilities: Any, budget: Any, rule: Any = "optimal", *,
               ties: str = "index") -> Mechanism2Result:
    """Mechanism 2(phi) (Section 4): truthful, IR and budget feasible (Lemma 2).

    Seller ``i`` faces the rule stretched by ``r_i``, the stopping rate of
    Mechanism 1 on the instance with ``c_i`` set to 0 (its report then cannot
    move its own rate); it sells ``phi(rho_i / r_i)`` and is paid
    ``u_i r_i p(rho_i / r_i)``. Lemma 1: ``r_i <= r*``.

    The uniform rule and the other step rules (``steps``, e.g. :func:`three_level_rule`) are
    computed exactly by a sorted search over the pieces of their step-shaped payment, in
    O(n log n) (``crowdlib._m2kernels.step_rates``). Rules with a power series in the
    stretch (``series``: the optimal and linear rules) get, for every seller with
    ``theta_i <= 0.1``, the root of a polynomial on a known piece
    (``crowdlib._m2kernels.series_rates``); sellers with ``0.1 < theta_i <= 0.25`` the
    Chebyshev/Taylor method of the module docstring; each seller beyond 0.25 its own exact O(n)
    search (a warning says when they are many, as their cost then tends to O(n^2)). A rule with
    neither a series nor steps (one built by :meth:`AllocationRule.from_phi`, or from two
    functions) runs on a map of its ``p`` (``crowdlib._m2pieces.piece_rates``, path
    ``"pieces"``): the bulk of sellers in one window, the others in bands of ``theta``, those
    beyond 0.25 by their own searches. Only a ``p`` too rough for 256 smooth pieces falls back
    to :func:`mechanism2_naive` (with a warning on large markets). ``result.path`` says which
    ran.

    ``ties``: a seller whose rate equals its own ``r_i`` gets ``phi(1) = 0`` with
    ``"exclude"``; with ``"index"`` (default) the tied sellers are served in index order, at
    price ``r_i``, while the budget the others leave lasts; with ``"fractional"`` they share it
    equally. Since ``r_i`` ignores seller i's report, all three are truthful, IR and budget
    feasible here. It matters only for rules that jump at 1, such as the uniform rule.
    """
    c, u, B = _instance(costs, utilities, budget)
    ties = _check_ties(ties)
    rl = get_rule(rule)
    _check_rate_scale(rl, u, B)
    rho = c / u
    if rl is UNIFORM_RULE or rl.steps:    # a step rule: every rate exactly, in O(n log n)
        if rl is UNIFORM_RULE:
            r_star, rates = _m2.uniform_rates(rho, u, B)
        else:
            r_star, rates = _m2.step_rates(rl.steps, rho, u, B)
        np.putmask(rates, c == 0.0, r_star)
        alloc, pay = _outcome(rl, rho, u, B, rates, ties)
        return Mechanism2Result(alloc, pay, rates, r_star, u, "uniform" if rl is UNIFORM_RULE else "steps")
    if rl.taylor_at_one is None and rl.series is None:
        pieces = _payment_map(rl)
        if pieces is None:
            return _naive_fallback(c, u, B, rl, ties, f"the unit payment of the rule {rl.name!r} is not "
                                   f"smooth between fewer than {PAYMENT_MAP_PIECES} breakpoints")
        return _mechanism2_pieces(c, u, B, rl, ties, rho, pieces)
    r_star = _stopping_rate(rl, rho, u, B)
    p0 = float(rl.unit_payment(np.zeros(1))[0])
    theta = np.minimum(c, u * (r_star * p0))       # r_i in [r* (1 - theta_i), r*]
    theta /= B
    top = float(theta.max())
    if top > 1.0:
        np.minimum(theta, 1.0, out=theta)
    wide = np.flatnonzero(theta > FAST_THETA_LIMIT) if top > FAST_THETA_LIMIT else np.zeros(0, dtype=np.intp)
    rates: FloatArray | None = None
    theta_wide = theta[wide]
    if wide.size:
        theta[wide] = 0.0                          # the others by the fast path
        top = float(theta.max())
    # two tiers: the bulk of sellers share a narrow bracket; the few with a much wider one
    # (a seller with a large cost or utility) get their own, so that one outlier does not widen
    # the bracket, the near set and the series order for everybody
    if top > 0:
        # the 99th percentile of theta, on an evenly strided sample of at most ~10^4 sellers
        sample = theta[:: max(1, c.size // 10_000)]
        sample = sample[sample > 0]
        cut = 2.0 * float(np.quantile(sample, 0.99)) if sample.size else 0.0
        x = rho / r_star                     # in units of r*: the kernels see rates near 1
        if top <= cut:                       # one tier: every seller in the bulk
            tiers: list[NDArray[np.intp] | None] = [None]
        else:
            bulk = theta <= cut
            tiers = [np.flatnonzero(bulk), np.flatnonzero(~bulk)]
            rates = np.full(c.size, r_star)
        for tier in tiers:
            if tier is not None and not tier.size:
                continue
            th = top if tier is None else float(theta[tier].max())
            if rl.series is not None and th <= SERIES_THETA_LIMIT:
                t = _m2.series_rates(rl.series, rl.series_radius, p0, x, u, B / r_star, theta, tier)
                t += 1.0
                t *= r_star
                if tier is None:
                    rates = t
                else:
                    assert rates is not None
                    rates[tier] = t
            else:
                idx = np.arange(c.size) if tier is None else tier
                if rates is None:
                    rates = np.full(c.size, r_star)
                rates[idx] = r_star * _fast_rates(rl, x, u, B / r_star, 1.0, 1.0 - theta, idx)[idx]
    if rates is None:
        rates = np.full(c.size, r_star)
    if wide.size:       # the few sellers with a wide bracket: each by its own exact search, O(n)
        rates[wide] = _own_searches(rl, rho, u, B, r_star, wide, theta_wide,
                                    f"have theta_i > {FAST_THETA_LIMIT} (beyond the fast path's bracket)", depth=2)
    alloc, pay = _outcome(rl, rho, u, B, rates, ties)
    return Mechanism2Result(alloc, pay, rates, r_star, u, "fast")


# ------------------------------------------------------------------ large-market limit
@dataclass(frozen=True)
class LargeMarketLimit:
    """The n -> infinity limit of Mechanism 1/2(phi) on i.i.d. costs with unit utilities.

    ``rate`` is the limiting stopping rate r (``r E[p(c / r)] = b``), ``value`` the buyer's
    utility per seller ``E[phi(c / r)]``, ``threshold`` the cost t below which the fractional
    optimum buys (``E[c; c <= t] = b``), ``optimum`` its utility per seller ``F(t)``, and
    ``ratio = value / optimum``.
    """

    ratio: float
    rate: float
    value: float
    threshold: float
    optimum: float


def large_market_limit(rule: Any, costs: Any, budget_per_seller: float) -> LargeMarketLimit:
    """Limit of Mechanism 2(phi)'s ratio to the fractional optimum in a large market.

    Sellers have unit utilities and i.i.d. costs from ``costs`` (a continuous
    ``scipy.stats`` distribution on ``[0, inf)``, frozen); the budget is
    ``budget_per_seller * n``. As ``n`` grows every seller's share of the budget vanishes
    (``theta -> 0``), each ``r_i`` tends to Mechanism 1's stopping rate (Lemma 1 and the
    large-market argument of Section 4), and the ratio tends to the quotient of two integrals,
    computed here by :func:`scipy.integrate.quad`. Theorem 1's ``1 - 1/e`` for the optimal rule
    is the worst case over cost distributions; a given distribution usually does better.

    Parameters
    ----------
    rule : str or AllocationRule
        ``"optimal"``, ``"uniform"``, ``"linear"`` or a rule of one's own.
    costs : scipy.stats frozen continuous distribution
        With support in ``[0, inf)`` and a finite mean.
    budget_per_seller : float
        ``b`` with ``0 < b < E[c]`` (at ``b >= E[c]`` every seller can be bought).
    """
    rl = get_rule(rule)
    if not all(hasattr(costs, a) for a in ("pdf", "cdf", "ppf", "mean")):
        raise TypeError("costs must be a frozen continuous scipy.stats distribution (with pdf, cdf, "
                        f"ppf and mean), got {type(costs).__name__}")
    lo_support = float(costs.ppf(0.0))
    if not lo_support >= 0.0:
        raise ValueError(f"costs must have support in [0, inf), got a lower end {lo_support}")
    mean = float(costs.mean())
    if not math.isfinite(mean):
        raise ValueError("costs must have a finite mean")
    b = real("budget_per_seller", budget_per_seller, low=0.0, low_open=True)
    if b >= mean:
        raise ValueError(f"budget_per_seller must be below the mean cost {mean:.6g} (else every "
                         f"seller is bought), got {b}")
    quad = lambda fn, a, z, pts=None: integrate.quad(fn, a, z, limit=400, points=pts,
                                                    epsabs=1e-13, epsrel=1e-11)[0]
    jumps = [j for j in rl.jumps]

    def pay(r: float) -> float:          # r E[p(c / r)]: p vanishes beyond x = 1
        pts = [r * j for j in jumps if 0 < r * j < r] or None
        return r * quad(lambda c: float(rl.unit_payment(np.array([c / r]))[0]) * float(costs.pdf(c)),
                        lo_support, r, pts)

    hi = max(float(costs.ppf(0.5)), 1e-12)
    for _ in range(2000):
        if pay(hi) > b:
            break
        hi *= 2.0
    else:  # pragma: no cover - a finite mean bounds the search
        raise RuntimeError("large_market_limit: no rate spends the budget")
    r = optimize.brentq(lambda x: pay(x) - b, 0.0 if lo_support == 0 else lo_support, hi,
                        xtol=1e-14, rtol=1e-12, maxiter=500)
    pts = [r * j for j in jumps if 0 < r * j < r] or None
    value = quad(lambda c: float(rl.phi(np.array([c / r]))[0]) * float(costs.pdf(c)), lo_support, r, pts)
    spend = lambda t: quad(lambda c: c * float(costs.pdf(c)), lo_support, t)
    t_hi = float(costs.ppf(0.5))
    while spend(t_hi) < b:
        t_hi *= 2.0
    t = optimize.brentq(lambda x: spend(x) - b, lo_support, t_hi, xtol=1e-14, rtol=1e-12, maxiter=500)
    opt = float(costs.cdf(t))
    return LargeMarketLimit(value / opt, float(r), float(value), float(t), opt)


# ------------------------------------------------------------------ worst cases (Theorem 1, App. D)
def two_point_ratio(phi: Callable[[Any], Any], unit_payment: Callable[[Any], Any], x: Any) -> FloatArray:
    """Mechanism 1's ratio on the two-point adversary with block rate ``x`` in [0, 1).

    A block of unit utility at rate ``x``, fillers at rate 1, budget ``p(x)``
    (so ``r* = 1``). Mechanism 1 buys ``phi(x)``; OPT gets
    ``min(1 + p(x) - x, p(x) / x)``. The ratio is ``phi(x) / OPT``.
    """
    if not callable(phi) or not callable(unit_payment):
        bad = "phi" if not callable(phi) else "unit_payment"
        raise TypeError(f"{bad} must be callable (a vectorised function of x)")
    x = real_vector("x", [x] if np.ndim(x) == 0 and not isinstance(x, (str, bytes)) else x,
                    low=0.0, high=1.0)
    if np.any(x >= 1.0):
        raise ValueError("every entry of x must be in [0, 1)")
    ph = np.asarray(phi(x), dtype=float)
    p = np.asarray(unit_payment(x), dtype=float)
    with np.errstate(divide="ignore"):
        opt = np.minimum(1.0 + p - x, np.where(x > 0, p / np.where(x > 0, x, 1.0), np.inf))
    return ph / opt


def worst_case_ratio(rule: Any, points: int = 20001) -> tuple[float, float]:
    """``(min ratio, argmin x)`` of :func:`two_point_ratio` on a grid of [0, 1)."""
    rl = get_rule(rule)
    points = integer("points", points, low=2)
    x = np.linspace(0.0, 1.0, points + 1)[:-1]
    ratio = two_point_ratio(rl.phi, rl.unit_payment, x)
    k = int(np.argmin(ratio))
    return float(ratio[k]), float(x[k])


@dataclass(frozen=True)
class WorstCase:
    """The worst large-market instance found by :func:`worst_case_lp`.

    ``ratio``: Mechanism 1's value over OPT on it; ``rates`` and ``masses``: the instance, as
    utility mass at each rate (stopping rate normalised to 1); ``budget``: its budget.
    """

    ratio: float
    rates: FloatArray
    masses: FloatArray
    budget: float


def worst_case_lp(rule: Any, max_rate: float = 1.6, points: int = 321,
                  refine: int = 60) -> WorstCase:
    """Mechanism 1's worst ratio over large-market instances with no ties, as a linear program.

    In a large market an instance is a distribution of utility mass ``mu_j`` over rates
    ``x_j``; normalise the stopping rate to 1. The LP chooses ``mu``, the budget ``beta`` and
    OPT's purchase ``z`` to minimise the mechanism's value ``sum_j phi(x_j) mu_j`` subject to:
    payments at stretch 1 at most ``beta``; payments above ``beta`` at every larger stretch (so
    that 1 is the stopping rate), checked just after each point where a seller joins or crosses
    a jump; ``0 <= z <= mu``, ``sum_j x_j z_j <= beta`` and ``sum_j z_j >= 1`` (so OPT >= 1).
    Its optimum is the infimum of value / OPT over instances on the grid. No rate is placed
    within a relative 1e-9 of 1 or of a jump of the rule, so the instances have no ties; the grid
    is refined geometrically just above those points, where the worst instances live. A rule
    that jumps where it does not declare (``AllocationRule.jumps``) is refused.

    The grid has ``points`` rates in ``[0, max_rate]`` plus ``refine`` per jump. Solved with
    SciPy's HiGHS.
    """
    rl = get_rule(rule)
    max_rate = real("max_rate", max_rate, low=1.0, high=1e3, low_open=True)
    points = integer("points", points, low=10)
    refine = integer("refine", refine, low=1)
    jumps = np.array(sorted({*rl.jumps, 1.0}))
    # a rule whose phi jumps somewhere it does not declare would let grid rates sit on the jump
    probe = np.linspace(0.0, 1.0, 20001)
    steps = np.flatnonzero(np.abs(np.diff(rl.phi(probe))) > 1e-3)
    for k in steps:
        if np.min(np.abs(jumps - probe[k + 1])) > 1e-4:
            raise ValueError(f"rule {rl.name!r} jumps near x = {probe[k + 1]:.4f} but does not declare "
                             "it: give it jumps=(...) (dataclasses.replace) so no rate sits on a jump")
    above = [j * (1.0 + np.geomspace(1e-6, 0.1, refine)) for j in jumps]
    xs = np.unique(np.concatenate([np.linspace(0.0, max_rate, points), *above]))
    # no rate within a relative 1e-9 of a jump: such a rate would be a tie in disguise
    near = np.min(np.abs(xs[:, None] / jumps[None, :] - 1.0), axis=1) <= 1e-9
    xs = xs[~near]
    stretches = np.concatenate([[1.0], *[xs[xs > 0] / j for j in jumps]]) * (1.0 + 1e-12)
    stretches = np.unique(stretches[(stretches > 1.0) & (stretches < 2.0 * max_rate)])
    n = xs.size
    phi, pay = rl.phi(xs), rl.unit_payment(xs)
    rows = [np.r_[pay, np.zeros(n), -1.0]]
    rows += [np.r_[-r * rl.unit_payment(xs / r), np.zeros(n), 1.0] for r in stretches]
    rows += [np.r_[np.zeros(n), xs, -1.0], np.r_[np.zeros(n), -np.ones(n), 0.0]]
    A = np.vstack([np.array(rows), np.hstack([-np.eye(n), np.eye(n), np.zeros((n, 1))])])
    b = np.r_[np.zeros(len(rows) - 1), -1.0, np.zeros(n)]
    res = optimize.linprog(np.r_[phi, np.zeros(n), 0.0], A_ub=A, b_ub=b, bounds=(0, None),
                           method="highs")
    if res.status != 0:
        raise RuntimeError(f"worst_case_lp: the LP did not solve ({res.message})")
    mu = res.x[:n]
    keep = mu > 1e-12
    return WorstCase(float(res.fun), xs[keep], mu[keep], float(res.x[-1]))


def three_level_worst_cases(a_values: Any, h_values: Any) -> dict[str, FloatArray]:
    """:func:`worst_case_lp` for every three-level rule on a grid: ``{"ratio": (len(a), len(h))}``."""
    a = real_vector("a_values", a_values, low=0.0, high=1.0)
    h = real_vector("h_values", h_values, low=0.0, high=1.0)
    if np.any(a <= 0.0):
        raise ValueError("every entry of a_values must be in (0, 1] (a = 0 gives phi(0) = h, not a "
                         f"standard rule), got min {a.min():g}")
    out = np.empty((a.size, h.size))
    with tqdm(total=out.size, desc="three-level rules", disable=None) as bar:
        for i, a_ in enumerate(a):
            for j, h_ in enumerate(h):
                out[i, j] = worst_case_lp(three_level_rule(float(a_), float(h_))).ratio
                bar.update()
    return {"ratio": out}


def two_point_market(k: int, x: float, rule: Any = "optimal",
                     fillers: float = 3.0) -> tuple[FloatArray, FloatArray, float]:
    """The block-plus-filler instance behind Theorem 1, at finite size.

    ``k`` unit-utility sellers at rate ``x`` in [0, 1), ``ceil(fillers * B) + k`` unit-utility
    fillers at rate 1 and the budget ``B = k p(x)`` of ``rule``, so that Mechanism 1 stops at
    rate 1 and buys ``phi(x)`` of the block. ``theta = 1 / p(x) / k`` shrinks as ``k`` grows.
    Returns ``(costs, utilities, budget)``.
    """
    k = integer("k", k, low=1)
    x = real("x", x, low=0.0, high=1.0, high_open=True)
    fillers = real("fillers", fillers, low=1.0)
    px = float(get_rule(rule).unit_payment(np.array([x]))[0])
    if px <= 0:
        raise ValueError(f"rule pays nothing at x = {x:g}: no budget makes it stop at rate 1")
    B = k * px
    c = np.concatenate([np.full(k, x), np.ones(int(math.ceil(fillers * B)) + k)])
    return c, np.ones(c.size), float(B)


def best_step_rule_ratio(cells: int = 100, tol: float = 1e-6) -> tuple[float, FloatArray]:
    """Appendix D numerically: the best non-increasing step rule on ``cells`` cells.

    For a fixed target ``R`` the constraints ``phi(x_k) >= R (1 + p(x_k) - x_k)`` at
    every cell's left end (the worst point of a cell) are linear in the step values, so feasibility is a
    linear program (:func:`scipy.optimize.linprog`); ``R`` is found by bisection.
    Returns ``(R, step values)``. The limit as ``cells`` grows is ``1 - 1/e``.
    """
    cells = integer("cells", cells, low=2, high=2000)
    tol = real("tol", tol, low=1e-12, high=0.5)
    h = 1.0 / cells
    # step value v_j on [j h, (j+1) h). Inside cell k, phi = v_k and p(x) = (k+1) h v_k +
    # h sum_{j>k} v_j are constant, so 1 + p(x) - x is largest, and the ratio smallest, at
    # the cell's left end x_k = k h
    xk = np.arange(cells) * h
    P = np.triu(np.full((cells, cells), h), 1) + np.diag(xk + h)

    def feasible(R: float) -> FloatArray | None:
        # -v_k + R (P v)_k <= -R (1 - x_k); monotone v_{j+1} - v_j <= 0; v_0 = 1
        A = np.vstack([-np.eye(cells) + R * P, np.eye(cells, k=1)[:-1] - np.eye(cells)[:-1]])
        b = np.concatenate([-R * (1.0 - xk), np.zeros(cells - 1)])
        res = optimize.linprog(np.zeros(cells), A_ub=A, b_ub=b,
                               A_eq=np.eye(1, cells), b_eq=[1.0], bounds=[(0, 1)] * cells,
                               method="highs")
        return res.x if res.status == 0 else None

    lo, hi, best = 0.0, 1.0, np.ones(cells)
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        v = feasible(mid)
        if v is None:
            hi = mid
        else:
            lo, best = mid, v
    return lo, best


# ------------------------------------------------------------------ Section 6
def hardness_cdf(c: Any) -> FloatArray:
    """CDF of the hardness distribution: ``F(c) = 1 / (e (1 - c))`` on [0, 1 - 1/e].

    It has an atom ``1/e`` at 0 and ``F(1 - 1/e) = 1``.
    """
    c = real_array("c", c)
    inside = np.clip(c, 0.0, Q)
    return np.where(c < 0, 0.0, np.where(c >= Q, 1.0, 1.0 / (E * (1.0 - inside))))


def _rng(rng: Any) -> np.random.Generator:
    """The book's seed convention (an int, a SeedSequence or a Generator); None is refused,
    since it would not reproduce."""
    from ._validation import generator

    if rng is None:
        raise TypeError("rng must be an int seed, a SeedSequence or a Generator (None would not "
                        "reproduce)")
    return generator("rng", rng)


def sample_hardness_costs(n: int, rng: Any) -> FloatArray:
    """``n`` i.i.d. costs from the hardness distribution, by inverse-CDF sampling."""
    n = integer("n", n, low=1)
    rng = _rng(rng)
    U = rng.random(n)
    return np.where(U <= 1.0 / E, 0.0, 1.0 - 1.0 / (E * np.maximum(U, 1.0 / E)))


def posted_price_outcome(costs: Any, price: Any) -> tuple[float, float]:
    """A uniform posted price (Definition 5): ``(items bought, money spent)``."""
    c = real_vector("costs", costs, low=0.0)
    p = real("price", price, low=0.0)
    bought = c <= p
    return float(bought.sum()), float(p * bought.sum())


# ------------------------------------------------------------------ Appendix C
#: the most trials :func:`rounded_spend` returns (two float arrays of that length)
MAX_ROUNDING_TRIALS = 10**7


def rounded_spend(allocation: Any, payments: Any, trials: int, rng: Any,
                  chunk: int = 2_000_000) -> tuple[FloatArray, FloatArray]:
    """Randomised rounding of a fractional outcome (our version of Appendix C).

    Item ``i`` is bought whole with probability ``f_i`` and then paid
    ``payment_i / f_i`` (nothing otherwise): the expected payment and the
    expected number of items equal the fractional ones, so budget feasibility
    holds in expectation, and a seller is paid at least its cost whenever it
    sells. Returns the realised ``(spend, items)`` of each trial.
    """
    f = real_vector("allocation", allocation, low=0.0, high=1.0)
    pay = real_vector("payments", payments, low=0.0, length=f.size, length_name="one per seller")
    trials = integer("trials", trials, low=1, high=MAX_ROUNDING_TRIALS)
    chunk = integer("chunk", chunk, low=1)
    rng = _rng(rng)
    keep = f > 0
    f, pay = f[keep], pay[keep]
    price = pay / f
    per = max(1, chunk // max(f.size, 1))
    spend, items = np.empty(trials), np.empty(trials)
    for start in range(0, trials, per):  # chunks bound the memory of the trials x n draw
        stop = min(trials, start + per)
        bought = rng.random((stop - start, f.size)) < f
        spend[start:stop] = bought @ price
        items[start:stop] = bought.sum(axis=1)
    return spend, items


# ------------------------------------------------------------------ truthfulness checks
def misreport_utilities(mechanism: Callable[[FloatArray, FloatArray, float], Any], costs: Any,
                        utilities: Any, budget: Any, factors: Any) -> tuple[FloatArray, FloatArray]:
    """Each seller's utility when truthful and under each misreport on a grid (Lemma 2's IC).

    ``mechanism(costs, utilities, budget)`` must return an object with
    ``allocation`` and ``payments``. Seller ``i`` reports ``factor * max(c_i, 0.1)``
    for each of ``factors``; its utility is its payment minus its *true* cost of
    what it sells. Returns ``(honest (n,), deviating (n, len(factors)))``.
    """
    c, u, B = _instance(costs, utilities, budget)
    f = real_vector("factors", factors, low=0.0)
    if not callable(mechanism):
        raise TypeError(f"mechanism must be callable (costs, utilities, budget) -> outcome, got "
                        f"{type(mechanism).__name__}")
    truth = mechanism(c, u, B)
    honest = truth.payments - c * truth.allocation
    deviating = np.empty((c.size, f.size))
    for i in range(c.size):          # one mechanism run per (seller, report): the check itself
        for k, rep in enumerate(f * max(c[i], 0.1)):
            lie = c.copy()
            lie[i] = rep
            out = mechanism(lie, u, B)
            deviating[i, k] = out.payments[i] - c[i] * out.allocation[i]
    return honest, deviating


# ------------------------------------------------------------------ instance families
#: Instance families of the chapter's ratio experiment (name -> description).
FAMILIES = {
    "uniform": "costs U(0, 1), utilities U(0.5, 1.5), budget a quarter of the total cost",
    "exponential": "costs Exp(1), utilities U(0.5, 1.5), budget a quarter of the total cost",
    "heavy-tailed": "costs lognormal(0, 1.5), utilities U(0.5, 1.5), budget a quarter of the total cost",
    "block": "n/4 near-free unit sellers (cost 1e-9), 3n/4 unit sellers at cost 1, budget n/4",
    "hardness": "Section 6: unit utilities, costs from F(c) = 1/(e(1 - c)), budget n (1 - 2/e)",
}


def market(family: str, n: int, rng: Any) -> tuple[FloatArray, FloatArray, float]:
    """One random instance ``(costs, utilities, budget)`` of a family in :data:`FAMILIES`.
    ``rng``: an int seed, a SeedSequence or a Generator."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    n = integer("n", n, low=4)
    rng = _rng(rng)
    if family == "block":
        k = n // 4
        costs = np.concatenate([np.full(k, 1e-9), np.ones(n - k)])
        return costs, np.ones(n), float(k)
    if family == "hardness":
        return sample_hardness_costs(n, rng), np.ones(n), n * HARDNESS_MEAN
    draw = {"uniform": lambda: rng.uniform(0.0, 1.0, n),
            "exponential": lambda: rng.exponential(1.0, n),
            "heavy-tailed": lambda: rng.lognormal(0.0, 1.5, n)}[family]
    costs = draw()
    return costs, rng.uniform(0.5, 1.5, n), 0.25 * float(costs.sum())


def _ratio_cell(family: str, n: int, rng: Any, *, families: tuple[str, ...], seed: Any,
                count: int) -> list[tuple[float, ...]]:
    """One (family, n) cell of :func:`ratio_sweep`, on its named stream (``rng`` unused)."""
    g = np.random.default_rng(_ratio_stream(seed, family, n))
    rows = []
    for _ in range(count):
        c, u, B = market(family, n, g)
        opt = fractional_optimum(c, u, B)
        rows.append((families.index(family), n, largeness(c, B), mechanism2(c, u, B, "optimal").value / opt,
                     mechanism2(c, u, B, "uniform").value / opt))
    return rows


def ratio_sweep(families: list[str], sizes: list[int], reps: Callable[[int], int],
                seed: int, progress: bool = True, executor: Any = None) -> dict[str, FloatArray]:
    """Mechanism 2 (optimal and uniform rules) against OPT on random markets.

    For each family and size ``n``, ``reps(n)`` instances are drawn from a stream named by the
    family and the size, ``numpy.random.default_rng([seed, crc32(family), n])`` for an int seed
    (a SeedSequence or Generator gets the two names appended to its spawn key): adding,
    removing or reordering families or sizes leaves the other cells unchanged. Returns flat arrays
    ``family`` (index into ``families``), ``n``, ``theta``, ``optimal``,
    ``uniform`` (the two ratios to OPT), one entry per instance. The cells run through
    :func:`crowdlib.experiments.map_points`, on ``executor`` if given, with the same result.
    """
    import functools

    from .experiments import map_points

    for name, seq in (("families", families), ("sizes", sizes)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, (list, tuple, np.ndarray)):
            raise TypeError(f"{name} must be a list, got {type(seq).__name__}")
    if not callable(reps):
        raise TypeError(f"reps must be callable (n -> instances per cell), got {type(reps).__name__}")
    fams = tuple(families)
    for f in fams:
        if not isinstance(f, str) or f not in FAMILIES:
            raise ValueError(f"families must be names in {sorted(FAMILIES)}, got {f!r}")
    if isinstance(seed, np.random.Generator):     # drawn from once: every cell sees one root
        from .experiments import root_sequence

        seed = root_sequence(seed)
    elif not isinstance(seed, np.random.SeedSequence):
        seed = integer("seed", seed, low=0)
    ns = [integer("sizes", n, low=4) for n in sizes]
    points = [{"family": f, "n": n, "count": integer("reps(n)", reps(n), low=1)} for f in fams for n in ns]
    cell = functools.partial(_ratio_cell_point, families=fams, seed=seed)
    _, results = map_points(cell, points, seed=0, executor=executor, progress=progress, desc="markets")
    out = np.array([row for rows in results for row in rows], dtype=float)
    return {"family": out[:, 0].astype(int), "n": out[:, 1].astype(int), "theta": out[:, 2],
            "optimal": out[:, 3], "uniform": out[:, 4]}


def _ratio_stream(seed: Any, family: str, n: int) -> Any:
    import zlib

    tag = zlib.crc32(family.encode())
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, tag, n))
    return [seed, tag, n]


def _ratio_cell_point(family: str, n: int, count: int, rng: Any, *, families: tuple[str, ...],
                      seed: int) -> list[tuple[float, ...]]:
    return _ratio_cell(family, n, rng, families=families, seed=seed, count=count)


# ------------------------------------------------------------------ experiments of the chapter
def random_instance(n: int, rng: Any) -> tuple[FloatArray, FloatArray, float]:
    """A random instance: exponential costs (a tenth of them zero), utilities U(0.2, 2), and a
    budget between a tenth and all of the total cost. ``rng``: int seed, SeedSequence or
    Generator."""
    from ._validation import generator

    n = integer("n", n, low=1)
    if rng is None:
        raise TypeError("rng must be an int seed, a SeedSequence or a Generator (None would not "
                        "reproduce)")
    g = generator("rng", rng)
    c = g.exponential(1.0, n) * (g.random(n) < 0.9)
    u = g.uniform(0.2, 2.0, n)
    return c, u, float(g.uniform(0.1, 1.0) * c.sum() + 1e-3)


def unit_integral_optimum(costs: Any, budget: Any) -> int:
    """OPT for indivisible unit-utility items: the number of cheapest items the budget buys."""
    c = real_vector("costs", costs, low=0.0)
    B = real("budget", budget, low=0.0)
    # a relative 1e-12 forgives the rounding of the running sum (0.1 + 0.2 + 0.3 > 0.6 in floats)
    return int(np.searchsorted(np.cumsum(np.sort(c)), B * (1 + 1e-12), side="right"))


def _sizes(sizes: Any) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a sequence of integers, got {type(sizes).__name__}")
    return [integer(f"sizes[{i}]", n, low=2) for i, n in enumerate(sizes)]


def _streams(seed: Any, ns: list[int], suffix: tuple[int, ...]) -> list[np.random.Generator]:
    """One generator per market size, named by the size (never by its position in ``ns``):
    ``[seed, n, *suffix]`` for an int seed (the chapters' streams); for a SeedSequence (or a
    Generator, drawn from once) the size and suffix are appended to its spawn key, without
    changing it, so the same object gives the same streams on every call."""
    from ._validation import seed_sequence
    from .experiments import root_sequence

    if isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        root = root_sequence(seed)
        return [np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, n, *suffix)))
                for n in ns]
    root = seed_sequence("seed", seed)
    return [np.random.default_rng([int(root.entropy), n, *suffix]) for n in ns]


def hardness_experiment(sizes: Any, reps: int, seed: int) -> dict[str, FloatArray]:
    """Theorem 2 and Corollary 1 on the hardness instance, ``reps`` draws per size: the mean
    ratio of the posted price (e - 2)/(e - 1) to the integral OPT, and of Mechanism 2(phi*) to
    the fractional OPT. Each size has its own stream, ``SeedSequence([seed, n])``."""
    ns = _sizes(sizes)
    reps = integer("reps", reps, low=1)
    streams = _streams(seed, ns, ())
    post, frac = [], []
    for n, g in zip(ns, streams):
        rp, rm = [], []
        for _ in range(reps):
            c = sample_hardness_costs(n, g)
            B = n * HARDNESS_MEAN
            rp.append(posted_price_outcome(c, HARDNESS_PRICE)[0] / unit_integral_optimum(c, B))
            rm.append(mechanism2(c, np.ones(n), B).value / fractional_optimum(c, np.ones(n), B))
        post.append(np.mean(rp))
        frac.append(np.mean(rm))
    return {"n": np.array(ns), "posted": np.array(post), "mech2": np.array(frac)}


def small_market_experiment(sizes: Any, reps: int, seed: int,
                            family: str = "uniform") -> dict[str, FloatArray]:
    """Mechanisms 1 and 2 (phi*) in small markets of ``family``: per size, the mean ratio of
    each to OPT, the share of Mechanism 2's runs below 1 - 1/e and its worst ratio. Each size
    has its own stream, ``SeedSequence([seed, n, 3])``."""
    ns = _sizes(sizes)
    reps = integer("reps", reps, low=1)
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    ratio = 1.0 - 1.0 / math.e
    m2, m1, below, worst = [], [], [], []
    for n, g in zip(ns, _streams(seed, ns, (3,))):
        r2, r1 = [], []
        for _ in range(reps):
            c, u, B = market(family, n, g)
            opt = fractional_optimum(c, u, B)
            r2.append(mechanism2(c, u, B).value / opt)
            r1.append(mechanism1(c, u, B).value / opt)
        r2, r1 = np.array(r2), np.array(r1)
        m2.append(r2.mean())
        m1.append(r1.mean())
        below.append((r2 < ratio).mean())
        worst.append(r2.min())
    return {"n": np.array(ns), "mech2": np.array(m2), "mech1": np.array(m1),
            "below": np.array(below), "worst": np.array(worst)}


def hardness_rule_spend(rule: Callable[[float], float]) -> tuple[float, float, float]:
    """Claim 2 on the hardness instance, for a decreasing allocation rule ``a(c)`` on costs.

    Returns ``(bought, Myerson spend, cutoff spend)``: the expected share bought, the expected
    payment when each seller is paid ``c a(c) + int_c a`` (the atom at cost 0 included), and the
    spend of the uniform price that buys the same share.
    """
    if not callable(rule):
        raise TypeError(f"rule must be callable, got {type(rule).__name__}")
    top = 1.0 - 1.0 / math.e
    probe = np.array([float(rule(x)) for x in np.linspace(0.0, top, 201)])
    if not np.all(np.isfinite(probe)) or np.any(probe < 0) or np.any(probe > 1) or np.any(np.diff(probe) > 1e-12):
        raise ValueError("rule must be a non-increasing allocation rule with values in [0, 1] on [0, 1 - 1/e]")
    if probe.max() <= 0:
        raise ValueError("rule must buy something: it is 0 on the whole support")
    dens = lambda s: 1.0 / (math.e * (1.0 - s) ** 2)       # F's density on (0, 1 - 1/e)
    tail = lambda s: integrate.quad(rule, s, top)[0]
    bought = rule(0.0) / math.e + integrate.quad(lambda s: rule(s) * dens(s), 0.0, top)[0]
    spend = tail(0.0) / math.e + integrate.quad(lambda s: (s * rule(s) + tail(s)) * dens(s), 0.0, top)[0]
    price = optimize.brentq(lambda s: float(hardness_cdf(np.array([s]))[0]) - bought, 0.0, top)
    return float(bought), float(spend), float(price * bought)
