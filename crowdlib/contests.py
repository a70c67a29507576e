"""Efficient crowdsourcing contests (Cavallo & Jain, AAMAS 2012).

Public API:

* :func:`optimal_participants_uniform` -- Theorem 1, Eq. (19).
* :func:`expected_max_quality` -- E[max of m i.i.d. full-effort goods] (Eq. 20).
* :func:`optimal_participants` -- Eq. (11).
* :func:`efficient_efforts` -- the efficient extreme-effort policy for any skills
  (Section 2: participants are a top-skill prefix).
* :func:`csec` -- the CSEC mechanism, Definition 2 (Eqs. 23-25), with the
  optional surplus redistribution of Eqs. (34)-(37).
* :func:`psec` -- the PSEC mechanism, Definition 3 (Eqs. 39-42).
* :func:`bilateral_trade_reduction` -- the instance built in Theorem 3's proof.

How the ambiguities of the paper are resolved:

* Ties in Eq. (11) / Theorem 1 are broken towards the *larger* number of
  participants (Eq. 19 does the same at ``v = k(k+1)``); values within a
  relative 1e-12 of the maximum count as ties, so rounding cannot flip them.
* The efficient policy for heterogeneous skills (Section 2, after Corollary 1)
  is computed as the best *top-skill prefix* over all prefix lengths, not by
  stopping at the first non-improving agent; for i.i.d. agents both agree since
  the marginal value of an agent is decreasing.
* Effort 0 means non-participation: no good is submitted (quality 0).
* Extreme effort is assumed efficient, which Lemma 2 proves for uniform quality;
  for the truncated normal it holds for ``v`` above about 2.7532
  (:func:`crowdlib.effort.extreme_effort_threshold`). Below that the policies
  returned here are the best *extreme-effort* policies, and CSEC built on them is
  not incentive compatible: :func:`csec`, :func:`csec_expected_outcome` and
  :func:`simulate_csec` then warn with :class:`crowdlib.CrowdlibWarning`.
* In PSEC (Eq. 42) the expectation over ``s~`` is over the whole skill vector,
  drawn i.i.d. from ``skill_prior``, and also over qualities; it is evaluated at
  the principal's reported value. This is the reading that reproduces the
  paper's worked example (≈ 2.6, exactly 125/48).
"""

from __future__ import annotations

import functools
import math
import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _validation as check
from .quality import QualityModel, get_quality

__all__ = [
    "optimal_participants_uniform",
    "expected_max_quality",
    "optimal_participants",
    "welfare",
    "efficient_efforts",
    "surplus_guarantee",
    "csec",
    "csec_payments",
    "CSECResult",
    "psec",
    "PSECResult",
    "PSECModel",
    "bilateral_trade_reduction",
    "BilateralTradeInstance",
    "csec_expected_outcome",
    "psec_expected_outcome",
    "ExpectedOutcome",
    "simulate_csec",
    "best_effort_deviation",
    "free_ticket_gain",
]

_TIE_RTOL = 1e-12


def _largest_argmax(values: NDArray[np.float64]) -> int:
    """Index of the largest maximiser, counting near-equal values as ties."""
    best = float(np.max(values))
    tol = _TIE_RTOL * max(1.0, abs(best))
    return int(np.flatnonzero(values >= best - tol)[-1])


def optimal_participants_uniform(v: float) -> int:
    """Theorem 1 (Eq. 19): efficient number of full-effort agents, uniform quality.

    ``m* = floor(sqrt v) - 1`` if ``floor(sqrt v)^2 + floor(sqrt v) > v``, else
    ``floor(sqrt v)``. Constant skill 1, no limit on the number of agents.

    Parameters
    ----------
    v : float
        The principal's value, ``v >= 0``.
    """
    v = _value(v)
    k = math.isqrt(math.floor(v))  # exact integer square root: k^2 <= v < (k + 1)^2
    return k - 1 if k * k + k > v else k


def expected_max_quality(v: float, m: int, quality: str | QualityModel = "uniform") -> float:
    """E[max of m i.i.d. goods], each by a full-effort, skill-1 agent.

    For ``"uniform"`` this is ``m v / (m + 1)`` (Eq. 20); for ``"truncnorm"``
    the integral ``int_0^v (1 - F(x)^m) dx`` of the [0, v] truncated normal with
    ``mu = v`` and ``sigma = v / 8`` (Section 2.2).
    """
    v = _value(v)
    m = check.integer("m", m, low=0)
    return get_quality(quality).expected_max_iid(v, m)


#: the largest value :func:`optimal_participants` scans: E[max] ~ v must resolve a unit of effort
MAX_SCAN_VALUE = 1e12


def _value(v: Any) -> float:
    """The principal's value ``v >= 0`` (finite)."""
    return check.real("v", v, low=0.0)


def optimal_participants(v: float, quality: str | QualityModel = "uniform",
                         n: int | None = None) -> int:
    """Eq. (11): the number ``m`` in ``{0..n}`` maximising ``E[max of m] - m``.

    Returns the largest maximiser. ``n=None`` means an unlimited pool. The
    marginal value of an i.i.d. agent, ``int F^m (1 - F)``, decreases in ``m``,
    so the scan stops at the first agent worth less than its unit cost.
    """
    v = _value(v)
    if v > MAX_SCAN_VALUE:
        raise ValueError(f"v must be at most {MAX_SCAN_VALUE:g} for the scan of Eq. (11): beyond it a unit "
                         f"of effort is lost in the rounding of E[max] (use optimal_participants_uniform "
                         f"for uniform quality), got {v:g}")
    if n is not None:
        n = check.integer("n", n, low=0)
    model = get_quality(quality)
    values = [0.0]
    m = 0
    while n is None or m < n:
        m += 1
        if m > MAX_SCAN:
            raise ValueError(f"v = {v:g} needs more than {MAX_SCAN} participants under the "
                             f"{model.name} model; the scan of Eq. (11) stops there (use a smaller v, "
                             "or optimal_participants_uniform for uniform quality)")
        values.append(model.expected_max_iid(v, m) - m)
        if values[-1] < values[-2] - _TIE_RTOL * max(1.0, abs(values[-2])):
            break
    return _largest_argmax(np.array(values))


#: the most participants :func:`optimal_participants` scans for a non-uniform quality model
MAX_SCAN = 100_000


def welfare(v: float, efforts: ArrayLike, skills: ArrayLike,
            quality: str | QualityModel = "uniform") -> float:
    """Eq. (3): E[max_i Q_i] - sum_i effort_i for a given effort profile."""
    v = _value(v)
    e = check.real_vector("efforts", efforts, low=0.0, high=1.0)
    s = check.real_vector("skills", skills, low=0.0, high=1.0, length=e.size,
                          length_name="the number of efforts")
    return get_quality(quality).expected_max(v, e, s) - float(e.sum())


def _efficient_welfare(v: float, s: NDArray[np.float64], model: QualityModel) -> float:
    """Welfare of the efficient extreme-effort policy, W(v, s)."""
    eff = _efficient_efforts(v, s, model)
    # the empty policy has welfare 0, so the efficient welfare is never below it (rounding aside)
    return max(model.expected_max(v, eff, s) - float(eff.sum()), 0.0)


def efficient_efforts(v: float, skills: ArrayLike,
                      quality: str | QualityModel = "uniform") -> NDArray[np.float64]:
    """The efficient extreme-effort policy delta*(v, s) (Section 2).

    Agents are ranked by skill (ties by index); the participants are the best
    top-``k`` prefix, ``k`` the largest maximiser of ``E[max] - k`` (Eq. 11
    when skills are equal, where the first m* agents participate).
    """
    v = _value(v)
    s = check.real_vector("skills", skills, low=0.0, high=1.0)
    model = get_quality(quality)
    return _efficient_efforts(v, s, model)


def _efficient_efforts(v: float, s: NDArray[np.float64], model: QualityModel) -> NDArray[np.float64]:
    n = s.size
    order = np.argsort(-s, kind="stable")
    if n and np.all(s == s[0]) and s[0] == 1.0:
        k = optimal_participants(v, model, n)
    else:
        values = np.array([
            model.expected_max(v, np.ones(j), s[order[:j]]) - j for j in range(n + 1)
        ])
        k = _largest_argmax(values)
    efforts = np.zeros(n)
    efforts[order[:k]] = 1.0
    return efforts


def surplus_guarantee(v_low: float, n: int, quality: str | QualityModel = "uniform",
                      skills: ArrayLike | None = None) -> float:
    """Eq. (34) / (39): G = efficient welfare at the lowest possible value ``v_low``."""
    v_low = check.real("v_low", v_low, low=0.0)
    n = check.integer("n", n, low=0)
    model = get_quality(quality)
    s = np.ones(n) if skills is None else check.real_vector("skills", skills, low=0.0, high=1.0,
                                                              length=n, length_name="n")
    return _efficient_welfare(v_low, s, model)


# ---------------------------------------------------------------------------
# CSEC (Definition 2)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CSECResult:
    """Outcome of the CSEC mechanism for one realisation of qualities.

    Attributes
    ----------
    efforts : efficient efforts delta* (first m* agents 1, others 0).
    principal_charge : Eq. (23), plus G when surplus is redistributed (Eq. 34).
    agent_payments : Eqs. (24)-(25) per agent (negative = the agent is charged),
        plus G / n each when surplus is redistributed.
    expected_marginal : E[Q^(1) - Q^(1)_{-i}] under delta*, per agent.
    """

    efforts: NDArray[np.float64]
    principal_charge: float
    agent_payments: NDArray[np.float64]
    expected_marginal: NDArray[np.float64]
    redistribution: float = 0.0

    @property
    def revenue(self) -> float:
        """What the mechanism keeps: principal's charge minus payments to agents."""
        return float(self.principal_charge - self.agent_payments.sum())


def _csec_expected_marginal(v: float, efforts: NDArray[np.float64], model: QualityModel) -> NDArray[np.float64]:
    m = int(efforts.sum())
    gain = model.expected_max_iid(v, m) - model.expected_max_iid(v, m - 1) if m else 0.0
    return np.where(efforts > 0, gain, 0.0)


def csec_payments(qualities: NDArray[np.float64], efforts: NDArray[np.float64],
                  expected_marginal: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vectorised Eqs. (24)-(25) for a batch of quality vectors (shape ``(R, n)``).

    Both equations are ``delta*_i + (Q^(1) - Q^(1)_{-i}) - E[Q^(1) - Q^(1)_{-i}]``:
    the realised marginal term is ``Q_h - Q^(2)`` for the top agent ``h``
    (lowest index among ties) and 0 for everyone else.
    """
    q = np.atleast_2d(check.real_array("qualities", qualities))
    if q.ndim != 2:
        raise ValueError(f"qualities must be a (runs, n) array, got shape {q.shape}")
    efforts = check.real_array("efforts", efforts)
    expected_marginal = check.real_array("expected_marginal", expected_marginal)
    for name, arr in (("efforts", efforts), ("expected_marginal", expected_marginal)):
        if arr.shape != (q.shape[1],):
            raise ValueError(f"{name} must have shape ({q.shape[1]},) (one entry per agent of "
                             f"qualities), got {arr.shape}")
    rows = np.arange(q.shape[0])
    if q.shape[1] == 0:
        return np.zeros_like(q)
    top = np.argmax(q, axis=1)
    if q.shape[1] > 1:
        second = -np.partition(-q, 1, axis=1)[:, 1]
    else:
        second = np.zeros(q.shape[0])
    realised = np.zeros_like(q)
    realised[rows, top] = q[rows, top] - second
    return efforts[None, :] + realised - expected_marginal[None, :]


def csec(v: float, n: int, qualities: Sequence[float] | NDArray[np.float64],
         quality: str | QualityModel = "uniform", v_low: float | None = None) -> CSECResult:
    """The CSEC mechanism (Definition 2) for one realisation of qualities.

    Parameters
    ----------
    v : float
        The principal's reported value, ``v >= 0``.
    n : int
        Number of agents; the first ``m* = optimal_participants(v, quality, n)``
        are asked for full effort.
    qualities : sequence of n floats in [0, v]
        Realised quality of every agent (0 for an agent who submitted nothing).
    quality : "uniform", "truncnorm" or a QualityModel
    v_low : float, optional
        Lowest value the principal can have. When given, the principal is also
        charged ``G = W(v_low)`` (Eq. 34) and each agent paid ``G / n``.
    """
    v = _value(v)
    n = check.integer("n", n, low=1)
    q = check.real_vector("qualities", qualities, low=0.0, high=v, length=n, length_name="n")
    model = get_quality(quality)
    g = 0.0
    if v_low is not None:
        v_low = check.real("v_low", v_low, low=0.0, high=v)
        g = surplus_guarantee(v_low, n, model)
    efforts, marginal = _csec_plan(v, n, model)
    pay = csec_payments(q[None, :], efforts, marginal)[0] + g / n
    return CSECResult(efforts=efforts, principal_charge=float(efforts.sum()) + g,
                      agent_payments=pay, expected_marginal=marginal, redistribution=g)


# ---------------------------------------------------------------------------
# PSEC (Definition 3)
# ---------------------------------------------------------------------------

@dataclass
class PSECModel:
    """The ingredients of PSEC that depend only on the environment, with caching.

    ``W(v, s)`` -- efficient welfare; ``G(s) = W(v_low, s)`` (Eq. 39); and the
    ex ante term of Eq. (42), ``E_s~[W(v, s~) - G(s~)/n]``.
    """

    n: int
    skill_prior: Mapping[float, float]
    v_low: float
    quality: QualityModel
    _cache: dict[tuple[float, tuple[float, ...]], float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.n = check.integer("n", self.n, low=1)
        check.distribution("skill_prior", self.skill_prior)
        self.skill_prior = {float(s): float(p) for s, p in self.skill_prior.items()}
        self.v_low = check.real("v_low", self.v_low, low=0.0)
        self.quality = get_quality(self.quality)

    def matches(self, n: int, skill_prior: Mapping[float, float], v_low: float,
                quality: QualityModel) -> bool:
        """Whether this cache belongs to the environment (n, prior, v_low, quality)."""
        prior = {float(s): float(p) for s, p in skill_prior.items()}
        return (self.n == n and self.skill_prior == prior and self.v_low == v_low
                and self.quality.name == quality.name)

    def welfare(self, v: float, skills: Sequence[float]) -> float:
        key = (float(v), tuple(sorted(float(x) for x in skills)))
        if key not in self._cache:
            self._cache[key] = _efficient_welfare(v, np.array(key[1]), self.quality)
        return self._cache[key]

    def guarantee(self, skills: Sequence[float]) -> float:
        return self.welfare(self.v_low, skills)

    def profiles(self) -> list[tuple[tuple[float, ...], float]]:
        """Every skill vector with its prior probability (i.i.d. across agents)."""
        items = list(self.skill_prior.items())
        out = []
        for combo in itertools.product(items, repeat=self.n):
            prob = float(np.prod([p for _, p in combo]))
            if prob > 0:
                out.append((tuple(float(s) for s, _ in combo), prob))
        return out

    def ex_ante_term(self, v: float) -> float:
        """E_s~[ W(v, s~) - G(s~) / n ], the expectation in Eq. (42)."""
        return sum(p * (self.welfare(v, s) - self.guarantee(s) / self.n) for s, p in self.profiles())


@dataclass(frozen=True)
class PSECResult:
    """Outcome of the PSEC mechanism for one realisation of qualities.

    Attributes
    ----------
    efforts : efficient efforts delta*(v, s) for the reported skills.
    principal_charge : Eq. (40), sum of efforts plus G(s).
    agent_payments : Eqs. (41)-(42) per agent.
    guarantee : G(s) of Eq. (39).
    ex_ante_term : the expectation subtracted in Eq. (42).
    """

    efforts: NDArray[np.float64]
    principal_charge: float
    agent_payments: NDArray[np.float64]
    guarantee: float
    ex_ante_term: float

    @property
    def revenue(self) -> float:
        """What the mechanism keeps: principal's charge minus payments to agents."""
        return float(self.principal_charge - self.agent_payments.sum())


def psec(v: float, skills: Sequence[float], qualities: Sequence[float],
         skill_prior: Mapping[float, float], v_low: float,
         quality: str | QualityModel = "uniform", *, model: PSECModel | None = None) -> PSECResult:
    """The PSEC mechanism (Definition 3) for one realisation of qualities.

    Parameters
    ----------
    v : float
        The principal's reported value, ``v >= v_low``.
    skills : sequence of floats in [0, 1]
        The agents' reported skills.
    qualities : sequence of floats in [0, v]
        Realised quality of every agent (0 for a non-participant).
    skill_prior : mapping skill -> probability
        The common prior, i.i.d. across agents; probabilities sum to 1.
    v_low : float
        The lowest value in the principal's value space (Eq. 39).
    quality : "uniform", "truncnorm" or a QualityModel
    model : PSECModel, optional
        A cache to reuse across calls with the same environment.
    """
    v_low = check.real("v_low", v_low, low=0.0)
    v = check.real("v", v, low=v_low)
    s = check.real_vector("skills", skills, low=0.0, high=1.0)
    if s.size == 0:
        raise ValueError("skills must list at least one agent")
    q = check.real_vector("qualities", qualities, low=0.0, high=v, length=s.size,
                          length_name="the number of skills")
    check.distribution("skill_prior", skill_prior)
    qm = get_quality(quality)
    if model is None:
        model = PSECModel(n=s.size, skill_prior=dict(skill_prior), v_low=v_low, quality=qm)
    elif not isinstance(model, PSECModel):
        raise TypeError(f"model must be a PSECModel, got {type(model).__name__}")
    elif not model.matches(s.size, skill_prior, v_low, qm):
        raise ValueError("model does not match the n, skill_prior, v_low or quality of this call")
    efforts = _efficient_efforts(v, s, qm)
    g = model.guarantee(s)
    term = model.ex_ante_term(v)
    best = float(q.max())
    pay = best - (efforts.sum() - efforts) - term
    return PSECResult(efforts=efforts, principal_charge=float(efforts.sum()) + g,
                      agent_payments=pay, guarantee=g, ex_ante_term=term)


# ---------------------------------------------------------------------------
# Theorem 3: the reduction from bilateral trade
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BilateralTradeInstance:
    """The crowdsourcing problem of Theorem 3's proof for one trade setting.

    The principal's value is ``v = theta_b``; one agent has skill
    ``s = 1 - theta_s``; quality is ``v`` if effort ``>= 1 - s`` and 0 otherwise
    (Eq. 38). ``efficient_effort`` is ``theta_s`` when trade is efficient, else 0.
    """

    theta_s: float
    theta_b: float
    v: float
    skill: float
    efficient_effort: float

    def quality(self, effort: float) -> float:
        """Eq. (38): deterministic quality for a given effort."""
        return self.v if effort >= 1.0 - self.skill - 1e-12 else 0.0

    def principal_gain(self, effort: float) -> float:
        return self.quality(effort)

    def welfare(self, effort: float) -> float:
        return self.quality(effort) - effort


def bilateral_trade_reduction(theta_s: float, theta_b: float) -> BilateralTradeInstance:
    """Build Theorem 3's crowdsourcing instance from a bilateral-trade setting."""
    ts = check.real("theta_s", theta_s, low=0.0, high=1.0)
    tb = check.real("theta_b", theta_b, low=0.0, high=1.0)
    skill = 1.0 - ts
    effort = ts if tb >= ts else 0.0  # = 1 - skill, without rounding
    return BilateralTradeInstance(theta_s=ts, theta_b=tb, v=tb, skill=skill, efficient_effort=effort)



# ---------------------------------------------------------------------------
# Exact expected outcomes (for Theorems 2 and 4) and Monte Carlo
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpectedOutcome:
    """Expected utilities of every player, and the mechanism's expected revenue."""

    principal: float
    agents: NDArray[np.float64]
    revenue: float


def _marginals(v: float, efforts: NDArray[np.float64], skills: NDArray[np.float64],
               model: QualityModel) -> tuple[float, NDArray[np.float64]]:
    """E[Q^(1)] and E[Q^(1) - Q^(1)_{-i}] for every agent i (0 for non-participants)."""
    full, without = model.expected_max_leave_one_out(v, efforts, skills)
    return full, np.where(efforts > 0, full - without, 0.0)


def _with_deviations(prescribed: NDArray[np.float64], changes: Mapping[int, float] | None,
                     name: str) -> NDArray[np.float64]:
    """Copy of ``prescribed`` with ``{agent: value}`` overrides, each checked."""
    out = prescribed.copy()
    for agent, value in (changes or {}).items():
        i = check.integer(f"{name} (agent index)", agent, low=0)
        if i >= out.size:
            raise ValueError(f"{name} names agent {i}, but agents are 0..{out.size - 1}")
        out[i] = check.real(f"{name}[{i}]", value, low=0.0, high=1.0)
    return out


@functools.lru_cache(maxsize=32)
def _extreme_effort_threshold(sigma_ratio: float) -> float:
    """v* for this spread, or nan when the threshold equations have no verified solution."""
    from .effort import extreme_effort_threshold

    try:
        return extreme_effort_threshold(sigma_ratio=sigma_ratio, zero_effort="participate")[0]
    except ValueError:
        return float("nan")


def _free_ticket(v: float, model: QualityModel, effort: float = 1e-9) -> float:
    """What an agent beyond m* gains in CSEC by a tiny effort (quality 0 means no good): its
    expected marginal contribution, which CSEC pays it, minus the effort."""
    m = optimal_participants(v, model)
    full, without = model.expected_max_leave_one_out(v, np.r_[np.ones(m), effort], np.ones(m + 1))
    return float(full - without[-1] - effort)


def _warn_below_threshold(v: float, model: QualityModel) -> None:
    """CSEC assumes the policy of Eq. (11) is efficient. For truncated-normal quality that needs
    v above the extreme-effort threshold v*, and no free lottery ticket (a tiny effort that buys
    a good of positive quality) worth more than rounding."""
    from .quality import TruncNormQuality

    if not (isinstance(model, TruncNormQuality) and v > 0):
        return
    v_star = _extreme_effort_threshold(model.sigma_ratio)
    if np.isnan(v_star):
        reason = (f"no extreme-effort threshold v* could be established for {model.name} quality, "
                  "so the extreme policy of Eq. (11) may not be efficient")
    elif v < v_star:
        reason = (f"v = {v:g} is below the extreme-effort threshold v* = {v_star:.4f} of "
                  f"{model.name} quality: the extreme policy of Eq. (11) is not efficient there")
    else:
        ticket = _free_ticket(v, model)
        if ticket <= 1e-6 * max(1.0, v):
            return
        reason = (f"at v = {v:g} a non-participant gains {ticket:.3g} by a tiny effort under "
                  f"{model.name} quality (a free lottery ticket), so the extreme policy of "
                  "Eq. (11) is not efficient")
    warnings.warn(f"{reason}; CSEC built on it is not incentive compatible. Use uniform quality, "
                  "a narrower spread, or v above v*.", check.CrowdlibWarning, stacklevel=4)


def _csec_plan(reported_v: float, n: int, model: QualityModel) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """delta* (first m* agents) and the expected marginals E[Q^(1) - Q^(1)_{-i}] CSEC charges."""
    _warn_below_threshold(reported_v, model)
    prescribed = np.zeros(n)
    prescribed[: optimal_participants(reported_v, model, n)] = 1.0
    return prescribed, _csec_expected_marginal(reported_v, prescribed, model)


def csec_expected_outcome(v: float, n: int, quality: str | QualityModel = "uniform", *,
                          reported_v: float | None = None,
                          efforts: Mapping[int, float] | None = None,
                          v_low: float | None = None) -> ExpectedOutcome:
    """Exact expected utilities under CSEC (Theorem 2), allowing deviations.

    Parameters
    ----------
    v : true value of the principal.
    reported_v : the principal's report (default: truthful).
    efforts : ``{agent: effort}`` for agents who deviate from delta*.
    v_low : if given, the surplus redistribution of Eqs. (34)-(37) is applied.
    """
    v = _value(v)
    n = check.integer("n", n, low=1)
    rv = v if reported_v is None else check.real("reported_v", reported_v, low=0.0)
    model = get_quality(quality)
    g = 0.0 if v_low is None else surplus_guarantee(check.real("v_low", v_low, low=0.0, high=v), n, model)
    prescribed, charged_marginal = _csec_plan(rv, n, model)
    actual = _with_deviations(prescribed, efforts, "efforts")
    skills = np.ones(n)
    best, marg = _marginals(v, actual, skills, model)
    payments = prescribed + marg - charged_marginal + g / n
    charge = float(prescribed.sum()) + g
    return ExpectedOutcome(principal=best - charge, agents=payments - actual,
                           revenue=charge - float(payments.sum()))


def psec_expected_outcome(v: float, skills: Sequence[float], skill_prior: Mapping[float, float],
                          v_low: float, quality: str | QualityModel = "uniform", *,
                          reported_v: float | None = None,
                          reported_skills: Mapping[int, float] | None = None,
                          efforts: Mapping[int, float] | None = None,
                          model: PSECModel | None = None) -> ExpectedOutcome:
    """Exact expected utilities under PSEC for one true skill vector (Theorem 4).

    The expectation is over qualities only; average over ``skill_prior`` for
    the ex ante statements. Deviations: the principal's report, agents' skill
    reports ``{agent: skill}`` and efforts ``{agent: effort}``.
    """
    v_low = check.real("v_low", v_low, low=0.0)
    v = check.real("v", v, low=v_low)
    s = check.real_vector("skills", skills, low=0.0, high=1.0)
    rv = v if reported_v is None else check.real("reported_v", reported_v, low=v_low)
    check.distribution("skill_prior", skill_prior)
    qm = get_quality(quality)
    if model is None:
        model = PSECModel(n=s.size, skill_prior=dict(skill_prior), v_low=v_low, quality=qm)
    elif not isinstance(model, PSECModel):
        raise TypeError(f"model must be a PSECModel, got {type(model).__name__}")
    elif not model.matches(s.size, skill_prior, v_low, qm):
        raise ValueError("model does not match the n, skill_prior, v_low or quality of this call")
    reports = _with_deviations(s, reported_skills, "reported_skills")
    prescribed = _efficient_efforts(rv, reports, qm)
    actual = _with_deviations(prescribed, efforts, "efforts")
    best = qm.expected_max(v, actual, s)
    term = model.ex_ante_term(rv)
    payments = best - (prescribed.sum() - prescribed) - term
    charge = float(prescribed.sum()) + model.guarantee(reports)
    return ExpectedOutcome(principal=best - charge, agents=payments - actual,
                           revenue=charge - float(payments.sum()))


def best_effort_deviation(v: float, n: int, quality: str | QualityModel = "uniform", *,
                          agent: int = 0, efforts: ArrayLike | None = None) -> tuple[float, float]:
    """An agent's best gain in CSEC from exerting an effort other than the prescribed one.

    Returns ``(gain, effort)``: the largest ``E[u | effort] - E[u | prescribed]`` over
    ``efforts`` (default 101 points of [0, 1]) and the effort that attains it. A positive gain
    means CSEC is not incentive compatible at ``v`` (Theorem 2 needs the efficient policy; for
    truncated-normal quality below v* the policy of Eq. (11) is not, and this finds the gain).
    """
    n = check.integer("n", n, low=1)
    agent = check.integer("agent", agent, low=0)
    if agent >= n:
        raise ValueError(f"agent must be in [0, {n - 1}], got {agent}")
    grid = np.linspace(0.0, 1.0, 101) if efforts is None else check.real_vector(
        "efforts", efforts, low=0.0, high=1.0)
    truth = csec_expected_outcome(v, n, quality).agents[agent]
    gains = np.array([csec_expected_outcome(v, n, quality, efforts={agent: float(e)}).agents[agent]
                      for e in grid]) - truth
    best = int(np.argmax(gains))
    return float(gains[best]), float(grid[best])


def free_ticket_gain(v: float, quality: str | QualityModel = "truncnorm", effort: float = 1e-12) -> float:
    """What one agent beyond m* gains in CSEC by exerting a tiny effort (default 1e-12).

    With truncated-normal quality a good made with effort 0+ still has positive quality (the
    "abstain" reading of effort 0), so a non-participant can buy a free lottery ticket; its value
    measures how far the extreme policy of Eq. (11) is from exactly efficient.
    """
    effort = check.real("effort", effort, low=0.0, high=1.0, low_open=True)
    model = get_quality(quality)
    m = optimal_participants(v, model)
    return float(csec_expected_outcome(v, m + 1, model, efforts={m: effort}).agents[m])


def simulate_csec(v: float, n: int, quality: str | QualityModel = "uniform", runs: int = 10_000,
                  rng: np.random.Generator | int | None = None,
                  efforts: Mapping[int, float] | None = None) -> dict[str, NDArray[np.float64]]:
    """Monte Carlo of CSEC: ``runs`` independent contests, vectorised.

    Returns per-run arrays: ``qualities`` (runs, n), ``payments`` (runs, n),
    ``agent_utility`` (runs, n), ``principal_utility`` (runs,), ``revenue`` (runs,).
    ``rng`` is a Generator or a seed; ``efforts`` lets agents deviate.
    """
    v = _value(v)
    n = check.integer("n", n, low=1)
    runs = check.integer("runs", runs, low=1)
    gen = check.generator("rng", rng)
    model = get_quality(quality)
    prescribed, marginal = _csec_plan(v, n, model)
    actual = _with_deviations(prescribed, efforts, "efforts")
    q = np.where(actual > 0, model.sample(gen, v, actual, (runs, n)), 0.0)
    pay = csec_payments(q, prescribed, marginal)
    charge = prescribed.sum()
    return {"qualities": q, "payments": pay, "agent_utility": pay - actual[None, :],
            "principal_utility": q.max(axis=1) - charge, "revenue": charge - pay.sum(axis=1)}
