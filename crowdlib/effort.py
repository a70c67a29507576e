"""When is extreme effort efficient? Lemma 1, Corollary 1 and Section 2.2 of
Cavallo & Jain (2012), plus the paper's intermediate-effort counterexample.

The marginal efficiency of agent ``i`` facing a standing best quality ``beta``
is Eq. (6)-(8): ``g(delta) = E[(Q_delta - beta)^+] - delta``. Lemma 1's
condition asks that ``D(beta, delta) = -d/d delta int_beta^v F(x) dx`` (Eq. 10
plus one), once at least 1, stays at least 1 as effort grows; since
``int_beta^v F = v - beta - E[(Q - beta)^+]``, ``D`` is the effort derivative of
the partial expectation.

Ambiguity resolved here: "effort 0" has two readings for the truncated normal.
``zero_effort="abstain"`` (as in :mod:`crowdlib.quality`): no good is submitted
and ``g(0) = 0``. ``zero_effort="participate"``: the formula with ``mu = 0`` is
taken literally and a zero-effort good has positive quality. The grid checks
default to "abstain"; :func:`extreme_effort_threshold` defaults to
"participate", the reading under which an exact threshold exists (under
"abstain" an effort ``0+`` buys a good of positive quality for free, so some
tiny effort always beats abstaining, by a margin that is usually negligible).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import optimize
from tqdm import tqdm

from . import _validation as check
from .quality import QualityModel, TruncNormQuality, get_quality

__all__ = [
    "Lemma1Check",
    "lemma1_condition",
    "marginal_efficiency",
    "interior_effort_gap",
    "grid_threshold",
    "extreme_effort_threshold",
    "counterexample_quality",
    "counterexample_welfare",
]

ZeroEffort = Literal["abstain", "participate"]


def _zero_effort(value: str) -> ZeroEffort:
    if value not in ("abstain", "participate"):
        raise ValueError(f"zero_effort must be 'abstain' or 'participate', got {value!r}")
    return value  # type: ignore[return-value]


def marginal_efficiency(v: float, efforts: NDArray[np.float64], betas: NDArray[np.float64],
                        quality: str | QualityModel = "truncnorm", skill: float = 1.0,
                        zero_effort: str = "abstain") -> NDArray[np.float64]:
    """Eq. (8): ``g[i, j] = E[(Q(efforts[i]) - betas[j])^+] - efforts[i]``."""
    v = check.real("v", v, low=0.0, low_open=True)
    skill = check.real("skill", skill, low=0.0, high=1.0)
    d = check.real_vector("efforts", efforts, low=0.0, high=1.0)
    b = check.real_vector("betas", betas, low=0.0, high=v)
    model = get_quality(quality)
    g = model.partial_expectation(b[None, :], v, (d * skill)[:, None]) - d[:, None]
    if _zero_effort(zero_effort) == "abstain":
        g[d == 0, :] = 0.0
    return g


@dataclass(frozen=True)
class Lemma1Check:
    """Result of checking Lemma 1's condition (Eqs. 4-5) on a grid.

    ``holds`` is True when, for every ``beta``, the set of efforts with
    ``D >= 1`` is an upper interval of ``[a, b]``. ``violations`` lists the
    ``beta`` values where ``D`` rises to 1 and falls back below it.
    """

    holds: bool
    betas: NDArray[np.float64]
    efforts: NDArray[np.float64]
    derivative: NDArray[np.float64]
    violations: NDArray[np.float64]


def lemma1_condition(v: float, quality: str | QualityModel = "uniform", skill: float = 1.0,
                     a: float = 0.0, b: float = 1.0, n_effort: int = 401,
                     n_beta: int = 401, tol: float = 1e-9) -> Lemma1Check:
    """Check Lemma 1's sufficient condition for extreme effort on ``[a, b]``.

    ``D(beta, delta)`` is computed by central differences of the closed-form
    partial expectation on an effort grid over ``[a, b]`` (``a`` excluded when
    it is 0, where the uniform model is degenerate) and a ``beta`` grid over
    ``[0, v]``. When it holds, Lemma 1 says the best effort in ``[a, b]`` is
    ``a`` or ``b``; Corollary 1 follows with ``[a, b] = [0, 1]``.
    """
    v = check.real("v", v, low=0.0, low_open=True)
    a = check.real("a", a, low=0.0, high=1.0)
    b = check.real("b", b, low=a, high=1.0, low_open=True)
    n_effort = check.integer("n_effort", n_effort, low=3)
    n_beta = check.integer("n_beta", n_beta, low=2)
    model = get_quality(quality)
    lo = a if a > 0 else (b - a) / (10 * n_effort)
    d = np.linspace(lo, b, n_effort)
    betas = np.linspace(0.0, v, n_beta)
    h = 1e-6 * (b - a)
    up = model.partial_expectation(betas[None, :], v, ((d + h) * skill)[:, None])
    down = model.partial_expectation(betas[None, :], v, ((d - h) * skill)[:, None])
    deriv = (up - down) / (2 * h)
    ok = deriv >= 1.0 - tol
    # violation: some effort with D >= 1 followed by a larger effort with D < 1
    seen = np.maximum.accumulate(ok, axis=0)
    bad = np.any(seen & ~ok, axis=0)
    return Lemma1Check(holds=not bool(bad.any()), betas=betas, efforts=d,
                       derivative=deriv, violations=betas[bad])


def interior_effort_gap(v: float, quality: str | QualityModel = "truncnorm",
                        n_effort: int = 1001, n_beta: int = 1001,
                        zero_effort: str = "abstain") -> float:
    """How much the best interior effort beats both extremes, worst case over beta.

    Returns ``max_beta [max_{0<delta<1} g(delta) - max(g(0), g(1))]`` on uniform
    grids of ``n_effort`` efforts in [0, 1] and ``n_beta`` values of beta in
    [0, v]. A positive value means that for some standing best quality an
    intermediate effort is strictly better than 0 and 1 (the direct check of
    Section 2.2); a value <= 0 means extreme effort is optimal on the grid.
    """
    n_effort = check.integer("n_effort", n_effort, low=3)
    n_beta = check.integer("n_beta", n_beta, low=2)
    v = check.real("v", v, low=0.0, low_open=True)
    g = marginal_efficiency(v, np.linspace(0.0, 1.0, n_effort), np.linspace(0.0, v, n_beta),
                            quality, zero_effort=zero_effort)
    ends = np.maximum(g[0], g[-1])
    out = float(np.max(g[1:-1].max(axis=0) - ends))
    if not np.isfinite(out):
        raise ValueError(f"v = {v:g} is outside the range where the {quality if isinstance(quality, str) else 'given'} "
                         "model's efficiencies are finite; use a smaller v")
    return out


def grid_threshold(values: NDArray[np.float64], quality: str | QualityModel = "truncnorm",
                   n_effort: int = 1001, n_beta: int = 1001, zero_effort: str = "abstain",
                   tol: float = 1e-12, progress: bool | str = False) -> float:
    """Smallest grid value above which no ``v`` of the grid has an interior optimum.

    Returns ``values[k]`` where ``k - 1`` is the last index with a positive
    :func:`interior_effort_gap` (``values[0]`` if there is none). ``progress``
    shows a tqdm bar (a string is used as its label).
    """
    vs = check.real_vector("values", values, low=0.0)
    if vs.size == 0 or np.any(np.diff(vs) <= 0) or vs[0] <= 0:
        raise ValueError("values must be a non-empty, strictly increasing grid of positive v")
    label = progress if isinstance(progress, str) else "grid threshold"
    gaps = np.array([interior_effort_gap(v, quality, n_effort, n_beta, zero_effort)
                     for v in tqdm(vs, desc=label, disable=not progress, file=sys.stderr, mininterval=2.0)])
    bad = np.flatnonzero(gaps > tol)
    if bad.size == 0:
        return float(vs[0])
    if bad[-1] + 1 >= vs.size:
        raise ValueError("the grid ends before the threshold: extend values")
    return float(vs[bad[-1] + 1])


def extreme_effort_threshold(sigma_ratio: float = 1 / 8, zero_effort: str = "participate",
                             verify: bool = True) -> tuple[float, float]:
    """The value above which extreme effort is always optimal (truncated normal).

    Derived for this book (not in the paper). Write ``g = v h(delta, b) - delta``
    with ``b = beta / v`` and ``h`` the scale-free partial expectation. If, as
    ``v`` grows to the threshold, the last interior optimum merges into
    ``delta = 1``, then there ``g'(1) = 0`` and ``g(1) = g(0)``:

        ``v * dh/d delta (1, b) = 1``  and  ``v * (h(1, b) - h(0, b)) = 1``

    (``h(0, b) = 0`` when a zero-effort agent abstains). Solving the pair gives
    ``(v*, b*)``. The merge-at-full-effort premise is checked, not assumed: with
    ``verify=True`` the grid check of :func:`interior_effort_gap` (same reading,
    efforts on a 0.0005 grid) must be positive at ``0.98 v*`` and non-positive
    at ``1.005 v*``, else ``ValueError`` says to use :func:`grid_threshold`.
    Under "abstain" this fails for wide spreads (``sigma_ratio`` 1/4 and more),
    where the last interior optimum sits near effort 0 instead.

    Under ``zero_effort="abstain"`` an effort ``0+`` buys a good of positive
    quality for free, so some tiny effort beats abstaining whenever that good
    can beat ``beta``; the value returned is then the threshold for efforts
    bounded away from 0.

    Returns
    -------
    (v_star, b_star)
    """
    ratio = check.real("sigma_ratio", sigma_ratio, low=0.0, low_open=True)
    model = TruncNormQuality(ratio)
    abstain = _zero_effort(zero_effort) == "abstain"
    eps = 1e-3 * min(ratio, 1.0)  # finite-difference step, scaled with the spread

    def h(delta: float, b: float) -> float:
        return float(model.partial_expectation(b, 1.0, delta))

    def equations(x: NDArray[np.float64]) -> list[float]:
        v, b = float(x[0]), float(x[1])
        slope = (h(1 + eps, b) - h(1 - eps, b)) / (2 * eps)
        base = 0.0 if abstain else h(0.0, b)
        return [v * slope - 1.0, v * (h(1.0, b) - base) - 1.0]

    guess = [1.0 / (1.0 - 2.0 / np.pi), max(0.05, 1.0 - 0.8 * ratio - (1.0 - 2.0 / np.pi))]
    sol, _, ier, msg = optimize.fsolve(equations, guess, xtol=1e-13, full_output=True)
    if ier != 1 or not 0.0 < sol[1] < 1.0 or max(map(abs, equations(sol))) > 1e-9:
        raise ValueError(f"the threshold equations have no solution for sigma_ratio={ratio:g} "
                         f"({msg.strip()}); use grid_threshold")
    v_star, b_star = float(sol[0]), float(sol[1])
    if verify:
        reading = "abstain" if abstain else "participate"
        below = interior_effort_gap(v_star * 0.98, model, 2001, 1001, reading)
        above = interior_effort_gap(v_star * 1.005, model, 2001, 1001, reading)
        if not (below > 0 >= above - 1e-12):
            raise ValueError(f"for sigma_ratio={ratio:g} the last interior optimum does not merge into "
                             f"full effort at v={v_star:.4f} (grid gap {below:.2e} below, {above:.2e} "
                             "above); use grid_threshold")
    return v_star, b_star


# ---------------------------------------------------------------------------
# The counterexample after Corollary 1
# ---------------------------------------------------------------------------

def counterexample_quality(effort: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The step quality distribution of the paper's counterexample (Section 2).

    Effort in [0, 0.05): quality 0. In [0.05, 0.3): 0 w.p. 0.8, 0.9 w.p. 0.2.
    In [0.3, 1]: 0.6 w.p. 0.8, 0.9 w.p. 0.2. Returns (values, probabilities).
    """
    effort = check.real("effort", effort, low=0.0, high=1.0)
    if effort < 0.05:
        return np.array([0.0]), np.array([1.0])
    if effort < 0.3:
        return np.array([0.0, 0.9]), np.array([0.8, 0.2])
    return np.array([0.6, 0.9]), np.array([0.8, 0.2])


def counterexample_welfare(effort_1: float, effort_2: float) -> float:
    """Eq. (3) for two agents in the counterexample: E[max(Q1, Q2)] - e1 - e2."""
    effort_1 = check.real("effort_1", effort_1, low=0.0, high=1.0)
    effort_2 = check.real("effort_2", effort_2, low=0.0, high=1.0)
    v1, p1 = counterexample_quality(effort_1)
    v2, p2 = counterexample_quality(effort_2)
    joint = np.maximum(v1[:, None], v2[None, :])
    return float((p1[:, None] * p2[None, :] * joint).sum() - effort_1 - effort_2)
