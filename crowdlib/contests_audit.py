"""Audits of CSEC and PSEC (Cavallo & Jain, Theorems 2 and 4) that run the ex-post rules.

An audit evaluates a mechanism's *ex-post* charge and payment rules on common random numbers
(randomised quasi-Monte Carlo: scrambled Sobol points pushed through each agent's quality
quantile), for the truthful profile and for every deviation on a grid, and scores each property
of the theorem against the integration error. Because the rules are plain callables held in a
:class:`CSECRule` or :class:`PSECRule`, a reader can audit a variant of the mechanism, or a
deliberately wrong one, with the same code that audits the paper's.

How the ambiguities of the paper are resolved here:

* *Efficiency* is a property of the policy: the prescribed efforts must have welfare at least that
  of every extreme policy (every subset of agents at full effort) and of every profile on a grid of
  efforts. Effort 0 means no good (quality 0), as in the rest of the chapter.
* *Incentive compatibility* is checked for each player alone (no joint deviations): every agent
  tries every effort on a grid (and, in PSEC, every skill report in the prior's support together
  with every effort), and the principal tries every report on a grid. For PSEC this is checked for
  each realised skill vector, which is stronger than the ex-ante statement.
* *IR*: in CSEC every player's expected utility at the truthful profile is at least 0; in PSEC the
  principal's is, for every skill vector, and each agent's is ex ante (averaged over the prior).
* *Budget balance in expectation*: the expected revenue is 0 (CSEC), or 0 ex ante (PSEC).

A property holds when its statistic clears its bound by more than ``5`` standard errors of the
randomised quadrature (across independent scramblings) plus ``1e-7 max(1, v)`` (rounding, and the
resolution of a point set that integrates some payoffs almost exactly); the tolerance is
reported with each item. Mutated rules that move an expected utility by more than a few
thousandths of ``v`` are caught.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import qmc

from . import _validation as check
from .contests import (PSECModel, _csec_expected_marginal, _efficient_efforts, csec_payments,
                       optimal_participants)
from .quality import QualityModel, get_quality

__all__ = ["AuditItem", "MechanismAudit", "CSECRule", "PSECRule", "csec_rule", "psec_rule",
           "audit_csec", "audit_psec", "exact_csec_audit", "exact_psec_audit", "csec_mutations", "psec_mutations", "TransferCensus",
           "csec_transfer_census", "psec_transfer_census"]

SIGMAS = 5.0
FLOOR = 1e-7  # times max(1, v): rounding and the resolution of the point set


@dataclass(frozen=True)
class AuditItem:
    """One property of a theorem, scored.

    ``statistic`` is signed so that the property holds when ``statistic <= tolerance``
    (a best gain, a worst shortfall, or an absolute imbalance); ``where`` names the worst case.
    """

    name: str
    statistic: float
    tolerance: float
    where: str

    @property
    def holds(self) -> bool:
        return bool(np.isfinite(self.statistic) and self.statistic <= self.tolerance)


@dataclass(frozen=True)
class MechanismAudit:
    """The scored properties of one mechanism in one environment."""

    mechanism: str
    setting: str
    items: tuple[AuditItem, ...]

    def __getitem__(self, name: str) -> AuditItem:
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(f"no audit item {name!r}; items are {[i.name for i in self.items]}")

    @property
    def holds(self) -> bool:
        """True when every property holds."""
        return all(item.holds for item in self.items)

    def failed(self) -> list[str]:
        """Names of the properties that fail."""
        return [item.name for item in self.items if not item.holds]

    def table(self) -> pd.DataFrame:
        """One row per property: statistic, tolerance, verdict and worst case."""
        return pd.DataFrame([{"mechanism": self.mechanism, "setting": self.setting,
                              "property": i.name, "statistic": i.statistic,
                              "tolerance": i.tolerance, "holds": i.holds, "worst case": i.where}
                             for i in self.items])


# ---------------------------------------------------------------------------
# the rules
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CSECRule:
    """CSEC's three rules, each replaceable (``dataclasses.replace``) to audit a variant.

    policy(reported_v, n) -> efforts
        The prescribed efforts delta* (default: the first m* agents, Eq. 11).
    charge(efforts, reported_v) -> float
        What the principal pays (default: Eq. 23, the sum of efforts).
    payments(qualities, efforts, expected_marginal) -> array (K, n)
        Ex-post payments to the agents for K quality vectors (default: Eqs. 24-25,
        :func:`crowdlib.contests.csec_payments`). ``expected_marginal`` is
        E[Q^(1) - Q^(1)_{-i}] under the prescribed efforts at the reported value.
    """

    quality: QualityModel
    policy: Callable[[float, int], NDArray[np.float64]]
    charge: Callable[[NDArray[np.float64], float], float]
    payments: Callable[[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
                       NDArray[np.float64]]


def csec_rule(quality: str | QualityModel = "uniform", v_low: float | None = None) -> CSECRule:
    """The paper's CSEC (Definition 2) as a :class:`CSECRule`.

    With ``v_low``, the surplus redistribution of Eqs. (34)-(37): the principal is also charged
    ``G = W(v_low)`` for the ``n`` agents of the instance, and every agent is paid ``G / n``.
    """
    from .contests import surplus_guarantee

    model = get_quality(quality)
    low = None if v_low is None else check.real("v_low", v_low, low=0.0)

    def g(n: int) -> float:
        return 0.0 if low is None else surplus_guarantee(low, n, model)

    def policy(reported_v: float, n: int) -> NDArray[np.float64]:
        efforts = np.zeros(n)
        efforts[: optimal_participants(reported_v, model, n)] = 1.0
        return efforts

    def payments(q, efforts, marginal):
        return csec_payments(q, efforts, marginal) + g(efforts.size) / efforts.size

    return CSECRule(quality=model, policy=policy,
                    charge=lambda efforts, reported_v: float(np.sum(efforts)) + g(efforts.size),
                    payments=csec_payments if low is None else payments)


@dataclass(frozen=True)
class PSECRule:
    """PSEC's three rules, each replaceable (``dataclasses.replace``) to audit a variant.

    policy(reported_v, reported_skills) -> efforts
        delta*(v, s) (default: the efficient extreme policy).
    charge(efforts, reported_skills, reported_v) -> float
        What the principal pays (default: Eq. 40, the sum of efforts plus G(s) of Eq. 39).
    payments(qualities, efforts, reported_v) -> array (K, n)
        Ex-post payments (default: Eqs. 41-42, the best quality minus the others' efforts minus
        the ex-ante expectation at the reported value).
    """

    environment: PSECModel
    policy: Callable[[float, NDArray[np.float64]], NDArray[np.float64]]
    charge: Callable[[NDArray[np.float64], NDArray[np.float64], float], float]
    payments: Callable[[NDArray[np.float64], NDArray[np.float64], float], NDArray[np.float64]]


def psec_rule(environment: PSECModel) -> PSECRule:
    """The paper's PSEC (Definition 3) as a :class:`PSECRule` for one environment."""
    if not isinstance(environment, PSECModel):
        raise TypeError(f"environment must be a contests.PSECModel, got {type(environment).__name__}")
    env = environment

    def payments(q: NDArray[np.float64], efforts: NDArray[np.float64], reported_v: float):
        best = q.max(axis=1, keepdims=True)
        return best - (efforts.sum() - efforts)[None, :] - env.ex_ante_term(reported_v)

    return PSECRule(
        environment=env,
        policy=lambda reported_v, skills: _efficient_efforts(reported_v, skills, env.quality),
        charge=lambda efforts, skills, reported_v: float(efforts.sum()) + env.guarantee(skills),
        payments=payments)


# ---------------------------------------------------------------------------
# randomised quasi-Monte Carlo with common random numbers
# ---------------------------------------------------------------------------

@dataclass
class _Draws:
    """Uniforms of shape (replicates, points, n), shared by every evaluation of one audit."""

    u: NDArray[np.float64]
    cache: dict = field(default_factory=dict)

    @classmethod
    def make(cls, n: int, points: int, replicates: int, seed) -> "_Draws":
        from .experiments import spawn

        children = spawn(seed, replicates)      # int, SeedSequence or Generator; no side effect
        u = np.stack([qmc.Sobol(d=n, scramble=True, seed=np.random.default_rng(c)).random(points)
                      for c in children])
        # keep the uniforms off the end points, where some quantile functions are infinite
        return cls(u=np.clip(u, 1e-12, 1 - 1e-12))

    def qualities(self, model: QualityModel, v: float, levels: NDArray[np.float64]) -> NDArray[np.float64]:
        key = (float(v), tuple(np.round(levels, 15)))
        if key not in self.cache:
            q = np.zeros(self.u.shape)
            active = levels > 0
            if np.any(active):
                q[..., active] = model.quantile(self.u[..., active], v, levels[active])
            self.cache[key] = q
        return self.cache[key]


def _mean_se(x: NDArray[np.float64]) -> tuple[float, float]:
    """Mean and standard error across replicates (axis 0)."""
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.shape[0])) if x.shape[0] > 1 else 0.0


def _gain_item(name: str, gains: list[tuple[str, NDArray[np.float64]]], floor: float) -> AuditItem:
    """The largest mean gain over deviations; the tolerance is taken at that deviation."""
    best = max(gains, key=lambda g: g[1].mean())
    mean, se = _mean_se(best[1])
    return AuditItem(name, mean, SIGMAS * se + floor, best[0])


def _nonempty(name: str, grid: NDArray[np.float64]) -> NDArray[np.float64]:
    if grid.size == 0:
        raise ValueError(f"{name} must hold at least one value")
    return grid


def _grids(effort_grid, efforts: int, report_grid, low: float, high: float,
           reports: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The agents' effort grid (default ``efforts`` points of [0, 1]) and the principal's report
    grid (default ``reports`` points of [low, high]), checked."""
    e = np.linspace(0, 1, efforts) if effort_grid is None else _nonempty(
        "effort_grid", check.real_vector("effort_grid", effort_grid, low=0.0, high=1.0))
    r = np.linspace(low, high, reports) if report_grid is None else _nonempty(
        "report_grid", check.real_vector("report_grid", report_grid, low=low))
    return e, r


def _quadrature(points: int, replicates: int) -> tuple[int, int]:
    points = check.integer("points", points, low=64)
    if points & (points - 1):
        raise ValueError(f"points must be a power of 2, got {points}")
    return points, check.integer("replicates", replicates, low=2)


def _balance_item(name: str, revenue: NDArray[np.float64], floor: float) -> AuditItem:
    """|E[revenue]| against its integration error."""
    mean, se = _mean_se(revenue)
    return AuditItem(name, abs(mean), SIGMAS * se + floor, f"E[revenue] = {mean:.3g}")


def _grid_profiles(n: int, levels: NDArray[np.float64], symmetric: bool) -> list[tuple[float, ...]]:
    if symmetric:
        return list(itertools.combinations_with_replacement(levels, n))
    return list(itertools.product(levels, repeat=n))


def _efficiency_item(model: QualityModel, v: float, efforts: NDArray[np.float64],
                     skills: NDArray[np.float64], grid: NDArray[np.float64],
                     symmetric: bool) -> tuple[float, str]:
    """(best alternative welfare - prescribed welfare, the best alternative)."""
    def w(e):
        return model.expected_max(v, np.asarray(e, dtype=float), skills) - float(np.sum(e))

    own = w(efforts)
    alternatives = [tuple(float(b) for b in bits) for bits in itertools.product((0.0, 1.0), repeat=skills.size)] \
        if skills.size <= 10 else []
    alternatives += _grid_profiles(skills.size, grid, symmetric) if skills.size <= 6 else []
    values = [(w(a), a) for a in alternatives]
    best, where = max(values, key=lambda t: t[0]) if values else (own, tuple(efforts))
    return best - own, "efforts " + ", ".join(f"{x:g}" for x in where)


# ---------------------------------------------------------------------------
# CSEC
# ---------------------------------------------------------------------------

def audit_csec(v: float, n: int, quality: str | QualityModel = "uniform", *,
               rule: CSECRule | None = None, effort_grid: ArrayLike | None = None,
               report_grid: ArrayLike | None = None, points: int = 2048, replicates: int = 16,
               seed: int | np.random.SeedSequence = 0) -> MechanismAudit:
    """Audit Theorem 2 (efficiency, IC, IR, budget balance in expectation) for CSEC.

    Parameters
    ----------
    v : float
        The principal's true value, ``v > 0``.
    n : int
        Number of agents (all of skill 1), ``1 <= n <= 12``.
    quality : "uniform", "truncnorm" or a QualityModel
    rule : CSECRule, optional
        The mechanism to audit (default: the paper's, :func:`csec_rule`).
    effort_grid : array, optional
        Efforts every agent tries (default 11 points of [0, 1]).
    report_grid : array, optional
        Reports the principal tries (default 31 points of [0, 3v]).
    points, replicates : int
        Sobol points per scrambling (a power of 2, at least 64) and independent scramblings
        (at least 2); the error of each expectation is estimated across scramblings.
    seed : int or SeedSequence
        Seeds the scramblings; the audit depends on nothing else random.

    Returns
    -------
    MechanismAudit
        Items "efficiency", "IC (agents)", "IC (principal)", "IR" and "budget balance".
    """
    v = check.real("v", v, low=0.0, low_open=True)
    n = check.integer("n", n, low=1, high=12)
    if rule is None:
        rule = csec_rule(quality)
    elif not isinstance(rule, CSECRule):
        raise TypeError(f"rule must be a CSECRule, got {type(rule).__name__}")
    model = rule.quality
    efforts_try, reports = _grids(effort_grid, 11, report_grid, 0.0, 3 * v, 31)
    draws = _Draws.make(n, *_quadrature(points, replicates), seed)
    ones = np.ones(n)
    floor = FLOOR * max(1.0, v)

    def outcome(reported_v: float, changes: Mapping[int, float] | None = None):
        prescribed = np.asarray(rule.policy(reported_v, n), dtype=float)
        actual = prescribed.copy()
        for i, e in (changes or {}).items():
            actual[i] = e
        marginal = _csec_expected_marginal(reported_v, prescribed, model)
        q = draws.qualities(model, v, actual * ones)
        pay = np.asarray(rule.payments(q.reshape(-1, n), prescribed, marginal), dtype=float)
        pay = pay.reshape(q.shape).mean(axis=1)                       # (replicates, n)
        charge = float(rule.charge(prescribed, reported_v))
        principal = q.max(axis=2).mean(axis=1) - charge               # (replicates,)
        return principal, pay - actual[None, :], charge - pay.sum(axis=1), prescribed

    principal, agents, revenue, prescribed = outcome(v)
    margin, alt = _efficiency_item(model, v, prescribed, ones, np.linspace(0, 1, 5), True)
    agent_gains = [(f"agent {a} exerts {e:g}", outcome(v, {a: float(e)})[1][:, a] - agents[:, a])
                   for a in range(n) for e in efforts_try]
    report_gains = [(f"principal reports {r:g}", outcome(float(r))[0] - principal) for r in reports]
    shortfalls = [(f"agent {a}", -agents[:, a]) for a in range(n)] + [("principal", -principal)]
    items = (
        AuditItem("efficiency", margin, 1e-9, alt),
        _gain_item("IC (agents)", agent_gains, floor),
        _gain_item("IC (principal)", report_gains, floor),
        _gain_item("IR", shortfalls, floor),
        _balance_item("budget balance", revenue, floor),
    )
    return MechanismAudit("CSEC", f"v={v:g}, n={n}, {model.name}", items)


# ---------------------------------------------------------------------------
# PSEC
# ---------------------------------------------------------------------------

def audit_psec(v: float, environment: PSECModel, *, rule: PSECRule | None = None,
               effort_grid: ArrayLike | None = None, report_grid: ArrayLike | None = None,
               points: int = 1024, replicates: int = 16,
               seed: int | np.random.SeedSequence = 0) -> MechanismAudit:
    """Audit Theorem 4 for PSEC: efficiency, IC, IR (principal; agents ex ante), budget balance.

    Parameters
    ----------
    v : float
        The principal's true value, ``v >= environment.v_low`` and ``v > 0``.
    environment : contests.PSECModel
        Number of agents (at most 4: every skill vector is enumerated), the skill prior,
        ``v_low`` and the quality model.
    rule : PSECRule, optional
        The mechanism to audit (default: the paper's, :func:`psec_rule`).
    effort_grid, report_grid : arrays, optional
        Efforts each agent tries with each skill report in the prior's support (default
        {0, 0.25, ..., 1}); reports the principal tries (default 13 points of [v_low, 3v]).
    points, replicates, seed
        As in :func:`audit_csec`.

    Returns
    -------
    MechanismAudit
        Items "efficiency", "IC (agents)", "IC (principal)", "IR (principal)",
        "IR (agents, ex ante)" and "budget balance (ex ante)".
    """
    if not isinstance(environment, PSECModel):
        raise TypeError(f"environment must be a contests.PSECModel, got {type(environment).__name__}")
    env = environment
    n = check.integer("environment.n", env.n, low=1, high=4)
    v = check.real("v", v, low=max(env.v_low, 0.0), low_open=env.v_low <= 0)
    if rule is None:
        rule = psec_rule(env)
    elif not isinstance(rule, PSECRule):
        raise TypeError(f"rule must be a PSECRule, got {type(rule).__name__}")
    model = env.quality
    efforts_try, reports = _grids(effort_grid, 5, report_grid, env.v_low, 3 * v, 13)
    support = sorted(float(s) for s, p in env.skill_prior.items() if p > 0)
    draws = _Draws.make(n, *_quadrature(points, replicates), seed)
    floor = FLOOR * max(1.0, v)

    def outcome(skills, reported_v, skill_reports=None, changes=None):
        reps = skills.copy()
        for i, s_ in (skill_reports or {}).items():
            reps[i] = s_
        prescribed = np.asarray(rule.policy(reported_v, reps), dtype=float)
        actual = prescribed.copy()
        for i, e in (changes or {}).items():
            actual[i] = e
        q = draws.qualities(model, v, actual * skills)
        pay = np.asarray(rule.payments(q.reshape(-1, n), prescribed, reported_v), dtype=float)
        pay = pay.reshape(q.shape).mean(axis=1)
        charge = float(rule.charge(prescribed, reps, reported_v))
        principal = q.max(axis=2).mean(axis=1) - charge
        return principal, pay - actual[None, :], charge - pay.sum(axis=1), prescribed

    margins, agent_gains, report_gains, principal_short = [], [], [], []
    ex_ante_agents = np.zeros((replicates, n))
    ex_ante_revenue = np.zeros(replicates)
    for skills_t, prob in env.profiles():
        skills = np.array(skills_t)
        label = "skills " + ", ".join(f"{s:g}" for s in skills)
        principal, agents, revenue, prescribed = outcome(skills, v)
        ex_ante_agents += prob * agents
        ex_ante_revenue += prob * revenue
        principal_short.append((label, -principal))
        margin, alt = _efficiency_item(model, v, prescribed, skills, np.linspace(0, 1, 5), False)
        margins.append((margin, f"{label}: {alt}"))
        for a in range(n):
            for rep in support:
                for e in efforts_try:
                    dev = outcome(skills, v, {a: rep}, {a: float(e)})[1][:, a]
                    agent_gains.append((f"{label}: agent {a} reports {rep:g}, exerts {e:g}",
                                        dev - agents[:, a]))
        for r in reports:
            report_gains.append((f"{label}: principal reports {r:g}",
                                 outcome(skills, float(r))[0] - principal))
    margin, where = max(margins, key=lambda t: t[0])
    items = (
        AuditItem("efficiency", margin, 1e-9, where),
        _gain_item("IC (agents)", agent_gains, floor),
        _gain_item("IC (principal)", report_gains, floor),
        _gain_item("IR (principal)", principal_short, floor),
        _gain_item("IR (agents, ex ante)",
                   [(f"agent {a}", -ex_ante_agents[:, a]) for a in range(n)], floor),
        _balance_item("budget balance (ex ante)", ex_ante_revenue, floor),
    )
    prior = ", ".join(f"{s:g}: {p:g}" for s, p in sorted(env.skill_prior.items()))
    return MechanismAudit("PSEC", f"v={v:g}, n={n}, prior {{{prior}}}, v_low={env.v_low:g}, "
                          f"{model.name}", items)


# ---------------------------------------------------------------------------
# the same properties from the exact expected utilities (a second route)
# ---------------------------------------------------------------------------

def exact_csec_audit(v: float, n: int, quality: str | QualityModel = "uniform", *,
                     effort_grid: ArrayLike | None = None,
                     report_grid: ArrayLike | None = None) -> MechanismAudit:
    """Theorem 2 from exact expected utilities (:func:`crowdlib.contests.csec_expected_outcome`).

    Expectations are computed by one-dimensional quadrature, so every tolerance is ``1e-9``.
    Defaults: 21 efforts in [0, 1] for every agent, 61 reports in [0, 3v] for the principal.
    Efficiency is scored as in :func:`audit_csec`. IR and budget balance are identities of
    Eqs. (32)-(33) along this route (they hold whatever the quadrature returns); only the ex-post
    audit can catch a wrong payment rule there.
    """
    from .contests import csec_expected_outcome

    v = check.real("v", v, low=0.0, low_open=True)
    n = check.integer("n", n, low=1, high=12)
    model = get_quality(quality)
    efforts_try, reports = _grids(effort_grid, 21, report_grid, 0.0, 3 * v, 61)
    truth = csec_expected_outcome(v, n, model)
    gains = [(csec_expected_outcome(v, n, model, efforts={a: float(e)}).agents[a] - truth.agents[a],
              f"agent {a} exerts {e:g}") for a in range(n) for e in efforts_try]
    reps = [(csec_expected_outcome(v, n, model, reported_v=float(r)).principal - truth.principal,
             f"principal reports {r:g}") for r in reports]
    prescribed = csec_rule(model).policy(v, n)
    margin, alt = _efficiency_item(model, v, prescribed, np.ones(n), np.linspace(0, 1, 5), True)
    short = [(-truth.agents[a], f"agent {a}") for a in range(n)] + [(-truth.principal, "principal")]
    g, gw = max(gains)
    r, rw = max(reps)
    sh, sw = max(short)
    items = (
        AuditItem("efficiency", margin, 1e-9, alt),
        AuditItem("IC (agents)", g, 1e-9, gw),
        AuditItem("IC (principal)", r, 1e-9, rw),
        AuditItem("IR", sh, 1e-9, sw),
        AuditItem("budget balance", abs(truth.revenue), 1e-9, f"E[revenue] = {truth.revenue:.3g}"),
    )
    return MechanismAudit("CSEC (exact)", f"v={v:g}, n={n}, {model.name}", items)


def exact_psec_audit(v: float, environment: PSECModel, *, effort_grid: ArrayLike | None = None,
                     report_grid: ArrayLike | None = None) -> MechanismAudit:
    """Theorem 4 from exact expected utilities (:func:`crowdlib.contests.psec_expected_outcome`).

    The same items and grids as :func:`audit_psec` (every skill vector of the prior; each agent's
    skill report in the support with each effort; the principal's report), with tolerance
    ``1e-9``. Ex-ante IR and budget balance are identities of Eqs. (39)-(42) along this route.
    """
    from .contests import psec_expected_outcome

    if not isinstance(environment, PSECModel):
        raise TypeError(f"environment must be a contests.PSECModel, got {type(environment).__name__}")
    env = environment
    n = check.integer("environment.n", env.n, low=1, high=4)
    v = check.real("v", v, low=max(env.v_low, 0.0), low_open=env.v_low <= 0)
    efforts_try, reports = _grids(effort_grid, 5, report_grid, env.v_low, 3 * v, 13)
    support = sorted(float(s) for s, p in env.skill_prior.items() if p > 0)
    prior, model = env.skill_prior, env.quality
    gains, margins, short = [], [], []
    agents_ex_ante, revenue_ex_ante = np.zeros(n), 0.0
    for skills, p in env.profiles():
        label = "skills " + ", ".join(f"{x:g}" for x in skills)
        truth = psec_expected_outcome(v, skills, prior, env.v_low, model, model=env)
        agents_ex_ante += p * truth.agents
        revenue_ex_ante += p * truth.revenue
        short.append((-truth.principal, label))
        prescribed = _efficient_efforts(v, np.array(skills), model)
        margins.append(_efficiency_item(model, v, prescribed, np.array(skills),
                                        np.linspace(0, 1, 5), False))
        for a in range(n):
            for rep in support:
                for e in efforts_try:
                    dev = psec_expected_outcome(v, skills, prior, env.v_low, model, model=env,
                                                reported_skills={a: rep}, efforts={a: float(e)})
                    gains.append((dev.agents[a] - truth.agents[a],
                                  f"{label}: agent {a} reports {rep:g}, exerts {e:g}"))
        for r in reports:
            dev = psec_expected_outcome(v, skills, prior, env.v_low, model, model=env,
                                        reported_v=float(r))
            gains.append((dev.principal - truth.principal, f"{label}: principal reports {r:g}"))
    agent_gains = [g for g in gains if "agent" in g[1]]
    principal_gains = [g for g in gains if "principal" in g[1]]
    a_worst = int(np.argmin(agents_ex_ante))
    items = (
        AuditItem("efficiency", max(margins)[0], 1e-9, max(margins)[1]),
        AuditItem("IC (agents)", max(agent_gains)[0], 1e-9, max(agent_gains)[1]),
        AuditItem("IC (principal)", max(principal_gains)[0], 1e-9, max(principal_gains)[1]),
        AuditItem("IR (principal)", max(short)[0], 1e-9, max(short)[1]),
        AuditItem("IR (agents, ex ante)", float(-agents_ex_ante[a_worst]), 1e-9, f"agent {a_worst}"),
        AuditItem("budget balance (ex ante)", abs(revenue_ex_ante), 1e-9,
                  f"E[revenue] = {revenue_ex_ante:.3g}"),
    )
    prior_s = ", ".join(f"{x:g}: {q:g}" for x, q in sorted(env.skill_prior.items()))
    return MechanismAudit("PSEC (exact)", f"v={v:g}, n={n}, prior {{{prior_s}}}, "
                          f"v_low={env.v_low:g}, {model.name}", items)


# ---------------------------------------------------------------------------
# who is paid: the headline claim (Section 4)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TransferCensus:
    """Who receives what in simulated contests.

    ``participants``: m (CSEC) or the mean number of participants (PSEC); ``max_positive``:
    the most agents paid a positive amount in one contest; ``all_positive``: the share of
    contests in which every participant is paid a positive amount; ``all_nonzero``: the share in
    which every participant's transfer is nonzero; ``others_zero``: whether every
    non-participant's transfer is exactly 0 in every contest.
    """

    participants: float
    max_positive: int
    all_positive: float
    all_nonzero: float
    others_zero: bool


def csec_transfer_census(v: float, n: int, quality: str | QualityModel = "uniform", *,
                         runs: int = 2000, rng=None, v_low: float | None = None,
                         tol: float = 1e-12) -> TransferCensus:
    """Count positive and nonzero transfers in ``runs`` simulated CSEC contests.

    With ``v_low`` the surplus is redistributed (Eqs. 34-37): every agent also receives
    ``G / n`` with ``G = W(v_low)``. ``tol`` separates a zero transfer from rounding.
    """
    from .contests import simulate_csec, surplus_guarantee

    v = check.real("v", v, low=0.0, low_open=True)
    n = check.integer("n", n, low=1)
    tol = check.real("tol", tol, low=0.0)
    model = get_quality(quality)
    sim = simulate_csec(v, n, model, runs=runs, rng=rng)
    pay = sim["payments"]
    if v_low is not None:
        v_low = check.real("v_low", v_low, low=0.0, high=v)
        pay = pay + surplus_guarantee(v_low, n, model) / n
    m = optimal_participants(v, model, n)
    part = pay[:, :m]
    return TransferCensus(
        participants=float(m), max_positive=int((pay > tol).sum(axis=1).max()),
        all_positive=float(np.mean(np.all(part > tol, axis=1))) if m else 0.0,
        all_nonzero=float(np.mean(np.all(np.abs(part) > tol, axis=1))) if m else 0.0,
        others_zero=bool(np.all(np.abs(pay[:, m:]) <= tol)) if v_low is None else False)


def psec_transfer_census(v: float, environment: PSECModel, *, runs: int = 2000, rng=None,
                         tol: float = 1e-12) -> TransferCensus:
    """Count positive transfers in ``runs`` PSEC contests: skills drawn from the prior,
    efficient efforts, qualities drawn, payments by Eqs. (41)-(42)."""
    from .contests import psec

    if not isinstance(environment, PSECModel):
        raise TypeError(f"environment must be a contests.PSECModel, got {type(environment).__name__}")
    env = environment
    v = check.real("v", v, low=env.v_low)
    runs = check.integer("runs", runs, low=1)
    gen = _generator(rng)
    support = np.array(sorted(env.skill_prior))
    probs = np.array([env.skill_prior[s] for s in sorted(env.skill_prior)], dtype=float)
    counts, all_pos, all_nz, parts = [], 0, 0, 0.0
    for _ in range(runs):
        skills = gen.choice(support, size=env.n, p=probs / probs.sum())
        efforts = _efficient_efforts(v, skills, env.quality)
        q = np.where(efforts > 0, env.quality.sample(gen, v, efforts * skills, (env.n,)), 0.0)
        res = psec(v, skills, q, env.skill_prior, env.v_low, env.quality, model=env)
        on = efforts > 0
        parts += on.sum()
        counts.append(int((res.agent_payments > tol).sum()))
        all_pos += bool(np.all(res.agent_payments[on] > tol))
        all_nz += bool(np.all(np.abs(res.agent_payments[on]) > tol))
    return TransferCensus(participants=parts / runs, max_positive=max(counts),
                          all_positive=all_pos / runs, all_nonzero=all_nz / runs, others_zero=False)


def _generator(rng) -> np.random.Generator:
    return check.generator("rng", rng)


# ---------------------------------------------------------------------------
# wrong rules, one per property: an audit that passes the paper's rule must reject these
# ---------------------------------------------------------------------------

def _winner_keeps_quality(q, efforts, marginal):
    pay = csec_payments(q, efforts, marginal)
    if q.shape[1] > 1:
        rows, top = np.arange(q.shape[0]), np.argmax(q, axis=1)
        pay[rows, top] += -np.partition(-q, 1, axis=1)[:, 1]
    return pay


def csec_mutations(quality: str | QualityModel = "uniform") -> dict[str, tuple[CSECRule, str]]:
    """Wrong versions of CSEC, each with the property of Theorem 2 it should break.

    Returns ``{description: (rule, property)}``: the winner keeps ``Q_h`` instead of
    ``Q_h - Q^(2)`` (IC); efforts are not refunded (IR); the expected marginal is not charged
    (budget balance); the principal pays a posted price equal to the expected best quality at
    its report (IC for the principal); one participant fewer than m* is asked (efficiency).
    """
    paper = csec_rule(quality)
    model = paper.quality

    def one_fewer(reported_v: float, n: int) -> NDArray[np.float64]:
        efforts = np.zeros(n)
        efforts[: max(optimal_participants(reported_v, model, n) - 1, 0)] = 1.0
        return efforts

    return {
        "winner keeps Q_h, not Q_h - Q^(2) (Eq. 24)":
            (replace(paper, payments=_winner_keeps_quality), "IC (agents)"),
        "efforts not refunded (delta_i dropped from Eqs. 24-25)":
            (replace(paper, payments=lambda q, e, m: csec_payments(q, e, m) - e[None, :]), "IR"),
        "expected marginal not charged (Eqs. 24-25)":
            (replace(paper, payments=lambda q, e, m: csec_payments(q, e, m) + m[None, :]),
             "budget balance"),
        "principal pays E[Q^(1)] at its report (not Eq. 23)":
            (replace(paper, charge=lambda e, rv: model.expected_max_iid(rv, int(np.sum(e)))),
             "IC (principal)"),
        "one participant fewer than m* (not Eq. 11)":
            (replace(paper, policy=one_fewer), "efficiency"),
    }


def psec_mutations(environment: PSECModel) -> dict[str, tuple[PSECRule, str]]:
    """Wrong versions of PSEC, each with the property of Theorem 4 it should break.

    The others' efforts are not subtracted (IC for the agents); G is computed at the report
    rather than at v_low (IC for the principal); a fixed fee of 1 on top of Eq. (40) (IR for the
    principal); the ex-ante term counts G/n with the wrong sign (IR for the agents); a bonus of
    0.5 to every agent (budget balance); skills ignored when choosing the participants
    (efficiency).
    """
    paper = psec_rule(environment)
    env = environment
    expected_g = sum(p * env.guarantee(s) for s, p in env.profiles())
    return {
        "others' efforts not subtracted (Eq. 41)":
            (replace(paper, payments=lambda q, e, rv: q.max(axis=1, keepdims=True)
                     - env.ex_ante_term(rv) + 0.0 * e[None, :]), "IC (agents)"),
        "G(s) at the reported value, not at v_low (Eq. 39)":
            (replace(paper, charge=lambda e, s, rv: float(e.sum()) + env.welfare(rv, s)),
             "IC (principal)"),
        "a fee of 1 on top of Eq. (40)":
            (replace(paper, charge=lambda e, s, rv: float(e.sum()) + env.guarantee(s) + 1.0),
             "IR (principal)"),
        "G/n with the wrong sign in Eq. (42)":
            (replace(paper, payments=lambda q, e, rv: paper.payments(q, e, rv)
                     - 2 * expected_g / env.n), "IR (agents, ex ante)"),
        "a bonus of 0.5 to every agent":
            (replace(paper, payments=lambda q, e, rv: paper.payments(q, e, rv) + 0.5),
             "budget balance (ex ante)"),
        "skills ignored when choosing participants":
            (replace(paper, policy=lambda rv, s: _efficient_efforts(rv, np.ones_like(s), env.quality)),
             "efficiency"),
    }
