"""Adaptive incentive selection as a budget- and deadline-limited bandit (Truong et al., AAMAS 2018).

The paper is a two-page abstract with no formula, pseudo-code or parameter. The
book's appendix to the incentive-selection chapter writes out the reconstruction:
what the abstract and the baselines' papers fix (recovered), and explicit choices
for the rest (derived). "A.n" below names its sections. Every choice the abstract
leaves open is resolved as follows, listed here once:

* Periods: feedback arrives only at the end of a period (batched); a period has
  no capacity; every contest recruits fresh users (A.1, A.9).
* Per-user tasks: beta-binomial(``max_tasks``, a, b) with mean ``mu`` and
  ``a + b = dispersion`` (A.2). Hoeffding's range is ``max_tasks`` (A.4).
* HAIS phase 2: pairwise one-sided Hoeffding per challenger, no union bound,
  run only when at least 3 periods remain (the current one included), spending
  capped at ``eta`` times the residual budget, ``eta = 0.25`` (A.4).
* "Spread the residual budget over the periods": equal slices ``B_res / L``
  on the current leader, ``L`` periods left including the current one; the
  last period spends the rest density-greedily (A.3). Every policy, the
  oracle included, fills its final remainder greedily (A.9).
* epsilon-first under a deadline: explore in period 1, commit the rest in
  period 2 (A.5). "Evenly" is one contest per arm in turn (A.5).
* fKUBE: a pull is one contest, its reward the group total scaled by
  ``g_max * max_tasks``; counts are pulls, not users (A.6).
* SOAAv: batched (one round-robin pass over the active set per period,
  spending ``B_res / L``) and the literal one-contest-per-arm pass (A.7).

Simulation is vectorised over runs (A.2): the state of all runs is a set of
``(runs, K)`` arrays and every policy decides for all runs at once. Sums of a
period's users on one arm are drawn from their exact law (``draws="law"``, the default): a
user's tasks take the ``R + 1`` values of a beta-binomial, so the total of ``m`` users has the
law of its ``m``-fold convolution (support ``0..m R``), computed once per (arm, m) by an FFT power
(:func:`total_law`, cached) and sampled by inverse c.d.f. with one uniform per cell. Totals
whose support exceeds :data:`LAW_MAX_SUPPORT` are split into independent blocks, each drawn from
its exact law, so the draw stays exact. The references: ``draws="exact"`` draws every user (one
beta and one binomial variate each); ``draws="auto"`` is the former default, per-user draws below
:data:`EXACT_BELOW` users and a rounded, clipped normal with the exact mean and variance above
(it loses the skew: the approximation is kept only to compare with).
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._validation import integer, real, real_vector

__all__ = [
    "ISPInstance",
    "Policy",
    "Optimal",
    "EpsilonFirst",
    "SteppedEpsilonFirst",
    "HAIS",
    "FKUBE",
    "SteppedFKUBE",
    "SOAAv",
    "POLICIES",
    "CHUNK",
    "MAX_CONTESTS",
    "simulate",
    "simulate_loop",
    "instance_family",
    "random_instances",
    "hais_targets",
    "EXACT_BELOW",
    "LAW_MAX_SUPPORT",
    "DRAWS",
    "total_law",
    "Setting",
    "percent_of_optimal",
    "run_grid",
    "benchmark",
    "Z99",
    "hoeffding_targets",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
#: cells with at least this many users are drawn from the normal approximation (draws="auto")
EXACT_BELOW = 30

#: a group of cells of ``m`` users each (one arm, one period) is drawn user by user (also
#: exactly) when it has at most this many cells: computing its law, an FFT of length m R, would
#: cost more than the draws it serves; a larger group is drawn from the (cached) law
PER_USER_CELLS = 12
#: a call with at most this many users in all is drawn user by user, in one vectorised batch
PER_USER_TOTAL = 20_000

#: the largest support ``m R + 1`` of a total-task law computed in one FFT; larger totals are
#: drawn as sums of independent blocks
LAW_MAX_SUPPORT = 1 << 16

DRAWS = ("law", "exact", "auto")


def _user_pmf(R: int, mean: float, dispersion: float) -> FloatArray:
    """The law of one user's tasks: beta-binomial(R, kappa q, kappa (1 - q)), q = mean / R
    (closed form through log-gamma functions; scipy.stats.betabinom agrees, see the tests)."""
    from scipy.special import betaln, gammaln

    q = mean / R
    pmf = np.zeros(R + 1)
    a, b = dispersion * q, dispersion * (1 - q)
    # a -> 0 (b -> 0) puts all mass on 0 (on R): below 1e-290 the rest of the law is below 1e-290
    if q <= 0.0 or a < 1e-290:
        pmf[0] = 1.0
    elif q >= 1.0 or b < 1e-290:
        pmf[R] = 1.0
    else:
        k = np.arange(R + 1)
        logc = gammaln(R + 1) - gammaln(k + 1) - gammaln(R - k + 1)
        pmf = np.exp(logc + betaln(k + a, R - k + b) - betaln(a, b))
    return pmf / pmf.sum()


#: cached c.d.f.s of total-task laws, keyed by (R, mean, dispersion, m); bounded by the number of
#: stored floats (oldest entries go first)
_LAW_CACHE: dict[tuple, FloatArray] = {}
_LAW_CACHE_FLOATS = [0]
LAW_CACHE_LIMIT = 20_000_000


def _total_cdfs(R: int, mean: float, dispersion: float, ms: NDArray[np.int64]) -> list[FloatArray]:
    """c.d.f.s of the totals of ``m`` users for every ``m`` in ``ms`` (support ``0..m R``), by
    FFT powers of one user's law: the missing ones in one batched inverse transform."""
    keys = [(R, mean, dispersion, int(m)) for m in ms]
    missing = sorted({k[3] for k in keys if k not in _LAW_CACHE})
    if missing:
        from scipy.fft import irfft, next_fast_len, rfft

        pmf1 = _user_pmf(R, mean, dispersion)
        L = next_fast_len(max(missing) * R + 1, real=True)
        F = rfft(pmf1, L)
        for start in range(0, len(missing), 64):          # bounded memory: 64 laws at a time
            group = np.array(missing[start:start + 64])
            pmfs = irfft(F[None, :] ** group[:, None], L, axis=1)
            for m, pmf in zip(group, pmfs):
                pmf = np.clip(pmf[: m * R + 1], 0.0, None)   # round-off: tiny negative tails
                cdf = np.cumsum(pmf / pmf.sum())
                cdf[-1] = 1.0
                cdf.flags.writeable = False
                _LAW_CACHE[(R, mean, dispersion, int(m))] = cdf
                _LAW_CACHE_FLOATS[0] += cdf.size
        while _LAW_CACHE_FLOATS[0] > LAW_CACHE_LIMIT and len(_LAW_CACHE) > len(keys):
            old = next(iter(_LAW_CACHE))
            if old in keys:
                break
            _LAW_CACHE_FLOATS[0] -= _LAW_CACHE.pop(old).size
    return [_LAW_CACHE[k] for k in keys]


def _total_cdf(R: int, mean: float, dispersion: float, m: int) -> FloatArray:
    """c.d.f. of the total tasks of ``m`` users (support ``0..m R``)."""
    return _total_cdfs(R, mean, dispersion, np.array([m]))[0]


def total_law(R: int, mean: float, dispersion: float, m: int) -> FloatArray:
    """The exact law (p.m.f. on ``0..m R``) of the total tasks of ``m`` users of one arm.

    A user's tasks are beta-binomial(``R``, ``kappa q``, ``kappa (1 - q)``) with ``q = mean / R``
    and ``kappa = dispersion`` (A.2); the total of ``m`` independent users is the ``m``-fold
    convolution, computed by an FFT power and cached per ``(R, mean, dispersion, m)``.
    """
    R = integer("R", R, low=1, high=10_000)
    mean = real("mean", mean, low=0.0, high=float(R))
    dispersion = real("dispersion", dispersion, low=0.0, low_open=True)
    m = integer("m", m, low=1)
    if m * R + 1 > LAW_MAX_SUPPORT:
        raise ValueError(f"m * R + 1 must be at most {LAW_MAX_SUPPORT} (draws split larger totals "
                         f"into blocks), got {m * R + 1}")
    return np.diff(_total_cdf(R, mean, dispersion, m), prepend=0.0)


def _draw_law(inst: "ISPInstance", users: IntArray, rng: np.random.Generator) -> FloatArray:
    """Exact totals of ``users[r, i]`` users per cell. Cells are grouped by arm and size ``m``; a
    large group is drawn from its total-task law (one uniform per cell, per block of
    :data:`LAW_MAX_SUPPORT`), and the small groups of a call together user by user, in one
    vectorised batch (one beta and one binomial variate per user, also exact)."""
    out = np.zeros(users.shape)
    R, K = inst.max_tasks, users.shape[1]
    block = max(1, (LAW_MAX_SUPPORT - 1) // R)             # users per exactly-drawn block
    kappa = float(inst.dispersion)
    small = int(users.sum()) <= PER_USER_TOTAL              # a small call: every user, in one batch
    per_user = users > 0 if small else np.zeros(users.shape, dtype=bool)
    if small:
        block = int(users.max()) + 1                        # no cell is split into blocks
    for i in ([] if small else range(K)):
        col = users[:, i]
        if not np.any(col > 0):
            continue
        mean = float(inst.mean_tasks[i])
        full, rest = np.divmod(col, block)
        ms, inverse, counts = np.unique(rest, return_inverse=True, return_counts=True)
        by_law = (ms > 0) & (counts > PER_USER_CELLS)
        per_user[:, i] = (rest > 0) & ~by_law[inverse]
        if np.any(by_law):
            cdfs = dict(zip(ms[by_law].tolist(), _total_cdfs(R, mean, kappa, ms[by_law])))
            order = np.argsort(inverse, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(counts)])
            for j in np.flatnonzero(by_law):
                rows = order[bounds[j]:bounds[j + 1]]
                cdf = cdfs[int(ms[j])]
                out[rows, i] += np.minimum(np.searchsorted(cdf, rng.random(rows.size)), cdf.size - 1)
        if full.max() > 0:                                  # whole blocks, each drawn exactly
            cdf = _total_cdf(R, mean, kappa, block)
            for k in range(1, int(full.max()) + 1):
                rows = np.flatnonzero(full >= k)
                out[rows, i] += np.minimum(np.searchsorted(cdf, rng.random(rows.size)), cdf.size - 1)
    if np.any(per_user):                # the small groups, user by user: one uniform per user,
        cell = np.flatnonzero(per_user.ravel())           # inverted through one user's c.d.f.
        m = (users.ravel()[cell] % block).astype(np.int64)
        arm = np.repeat(cell % K, m)
        table = np.array([_total_cdf(R, float(mu), kappa, 1) for mu in inst.mean_tasks])   # (K, R + 1)
        x = (rng.random(arm.size)[:, None] > table[arm]).sum(axis=1)
        flat = out.ravel()
        flat[cell] += np.bincount(np.repeat(np.arange(cell.size), m), weights=x, minlength=cell.size)
        out = flat.reshape(users.shape)
    return out


# ------------------------------------------------------------------ the instance
#: the largest group (users per contest) an instance accepts: every count stays an exact int64
MAX_GROUP_SIZE = 10**9


@dataclass(frozen=True)
class ISPInstance:
    """An incentive selection problem: K incentives (arms) with known costs and group sizes.

    Parameters
    ----------
    costs:
        Cost ``c_i > 0`` of one contest with incentive ``i``.
    group_sizes:
        Users ``g_i >= 1`` recruited by one contest; one int is used for every arm.
    mean_tasks:
        Mean ``mu_i`` in ``[0, max_tasks]`` of one user's tasks (unknown to the policies).
    max_tasks:
        Upper bound ``R`` of one user's tasks in a period (known; Hoeffding's range).
    dispersion:
        ``kappa = a + b`` of the beta mixing law; smaller is more overdispersed.
    """

    costs: FloatArray
    group_sizes: IntArray
    mean_tasks: FloatArray
    max_tasks: int = 20
    dispersion: float = 2.0

    def __init__(self, costs: Any, group_sizes: Any, mean_tasks: Any, max_tasks: Any = 20,
                 dispersion: Any = 2.0) -> None:
        c = real_vector("costs", costs)
        if c.size == 0:
            raise ValueError("costs must not be empty")
        if np.any(c <= 0):
            raise ValueError(f"every entry of costs must be > 0, got min {c.min():g}")
        R = integer("max_tasks", max_tasks, low=1)
        if isinstance(group_sizes, (int, np.integer)) and not isinstance(group_sizes, bool):
            g = np.full(c.size, integer("group_sizes", group_sizes, low=1, high=MAX_GROUP_SIZE))
        else:
            gv = real_vector("group_sizes", group_sizes, length=c.size, length_name="one per cost",
                             high=MAX_GROUP_SIZE)
            if np.any(gv != np.round(gv)):
                raise ValueError("group_sizes must be whole numbers")
            g = gv.astype(np.int64)
        if np.any(g < 1):
            raise ValueError(f"every entry of group_sizes must be >= 1, got min {g.min()}")
        mu = real_vector("mean_tasks", mean_tasks, low=0.0, high=float(R), length=c.size,
                         length_name="one per cost")
        kappa = real("dispersion", dispersion, low=0.0, low_open=True)
        object.__setattr__(self, "costs", c)
        object.__setattr__(self, "group_sizes", g.astype(np.int64))
        object.__setattr__(self, "mean_tasks", mu)
        object.__setattr__(self, "max_tasks", R)
        object.__setattr__(self, "dispersion", kappa)

    @property
    def arms(self) -> int:
        return int(self.costs.size)

    @property
    def effectiveness(self) -> FloatArray:
        """``rho_i = g_i mu_i / c_i``: expected tasks per unit of money (A.1)."""
        return self.group_sizes * self.mean_tasks / self.costs

    @property
    def best_arm(self) -> int:
        return int(np.argmax(self.effectiveness))

    def user_variance(self) -> FloatArray:
        """Variance of one user's tasks: ``R q (1 - q) (R + kappa) / (1 + kappa)``, ``q = mu / R``."""
        R, q = self.max_tasks, self.mean_tasks / self.max_tasks
        return R * q * (1 - q) * (R + self.dispersion) / (1 + self.dispersion)

    def draw(self, users: IntArray, rng: np.random.Generator, draws: str = "law") -> FloatArray:
        """Total tasks of ``users[r, i]`` fresh users on arm ``i`` in run ``r``.

        ``users`` is an array of non-negative integers of shape ``(runs, arms)``; ``rng`` a
        Generator; ``draws`` ``"law"`` (exact, by the precomputed total laws), ``"exact"``
        (per-user draws) or ``"auto"`` (the normal approximation above :data:`EXACT_BELOW`
        users); see the module docstring.
        """
        if draws not in DRAWS:
            raise ValueError(f"draws must be one of {DRAWS}, got {draws!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        raw = np.asarray(users)
        if raw.dtype.kind not in "iu" and not (raw.dtype.kind == "f" and np.all(np.isfinite(raw))
                                               and np.all(raw == np.round(raw))):
            raise TypeError(f"users must hold integers, got dtype {raw.dtype}")
        if raw.ndim != 2 or raw.shape[1] != self.arms:
            raise ValueError(f"users must have shape (runs, {self.arms}), got {raw.shape}")
        if np.any(raw < 0):
            raise ValueError("users must be >= 0")
        users = raw.astype(np.int64)
        if draws == "law":
            return _draw_law(self, users, rng)
        out = np.zeros(users.shape)
        K = self.arms
        exact = users > 0 if draws == "exact" else (users > 0) & (users < EXACT_BELOW)
        if np.any(exact):
            cell = np.flatnonzero(exact.ravel())
            m = users.ravel()[cell]
            arm = np.repeat(cell % K, m)
            q = self.mean_tasks / self.max_tasks
            a, b = self.dispersion * q, self.dispersion * (1 - q)
            # degenerate arms (mu = 0 or R) have p fixed at q
            p = np.where((a[arm] > 0) & (b[arm] > 0),
                         rng.beta(np.maximum(a[arm], 1e-300), np.maximum(b[arm], 1e-300)), q[arm])
            x = rng.binomial(self.max_tasks, p)
            flat = out.ravel()
            flat[cell] = np.bincount(np.repeat(np.arange(cell.size), m), weights=x, minlength=cell.size)
            out = flat.reshape(users.shape)
        big = (users >= EXACT_BELOW) & ~exact
        if np.any(big):
            m = users[big]
            arm = np.nonzero(big)[1]
            mean = m * self.mean_tasks[arm]
            sd = np.sqrt(m * self.user_variance()[arm])
            out[big] = np.clip(np.round(rng.normal(mean, sd)), 0, m * self.max_tasks)
        return out


def instance_family(name: str, group_size: int | None = None) -> ISPInstance:
    """The book's fixed instances (A.2): ``"C"`` (with ``group_size`` 5 or 20), ``"A"``, ``"B"``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be 'C', 'A' or 'B', got {type(name).__name__}")
    if name == "C":
        if group_size is None:
            raise ValueError("group_size must be given for family C (the book uses 5 and 20)")
        return ISPInstance([2.5, 3, 3.5, 4, 5], integer("group_size", group_size, low=1),
                           [4, 6, 8.4, 8.4, 6.5])
    if name == "A":
        c, g, rho = np.array([1.0, 2, 4, 5, 8]), np.array([3, 6, 10, 15, 25]), np.array([8.0, 12, 18, 15, 10])
        return ISPInstance(c, g, rho * c / g)
    if name == "B":
        c, g, rho = np.array([2.0, 3, 4, 5, 6]), np.array([5, 8, 10, 15, 20]), np.array([14.0, 16, 18, 17, 15])
        return ISPInstance(c, g, rho * c / g)
    raise ValueError(f"name must be 'C', 'A' or 'B', got {name!r}")


def random_instances(count: int, rng: Any, arms: int = 5) -> list[ISPInstance]:
    """The book's random family: common ``g ~ U{5..20}``, ``mu ~ U(3, 9)``, ``rho ~ U(10, 20)``,
    ``c = round(g mu / rho, 0.1)`` (A.2)."""
    count = integer("count", count, low=1, high=10**7)
    arms = integer("arms", arms, low=2, high=10_000)
    from ._validation import generator

    if rng is None:
        raise TypeError("rng must be an int seed, a SeedSequence or a Generator (None would not reproduce)")
    rng = generator("rng", rng)
    out = []
    for _ in range(count):
        g = int(rng.integers(5, 21))
        mu = rng.uniform(3, 9, arms)
        rho = rng.uniform(10, 20, arms)
        c = np.maximum(np.round(g * mu / rho, 1), 0.1)
        out.append(ISPInstance(c, g, mu))
    return out


# ------------------------------------------------------------------ simulation state
@dataclass
class State:
    """What a policy sees for all runs at the start of a period (nothing of the truth)."""

    instance: ISPInstance
    budget: float
    periods: int
    residual: FloatArray  # (runs,) money left
    users: FloatArray     # (runs, K) users observed per arm, N_i
    tasks: FloatArray     # (runs, K) their total tasks, S_i
    pulls: FloatArray     # (runs, K) contests run per arm
    period: int = 0       # 0-based index of the current period
    memo: dict = field(default_factory=dict)  # a policy's own arrays

    @property
    def left(self) -> int:
        """Periods left, the current one included (``L`` in the appendix)."""
        return self.periods - self.period

    def estimates(self) -> FloatArray:
        """``rho_hat_i = (g_i / c_i) S_i / N_i``, ``-inf`` for an unexplored arm (A.3)."""
        inst = self.instance
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.users > 0, self.tasks / np.where(self.users > 0, self.users, 1), -np.inf)
        return np.where(self.users > 0, inst.group_sizes * mean / inst.costs, -np.inf)


# ------------------------------------------------------------------ building blocks (A.3)
def round_robin(money: FloatArray, active: NDArray[np.bool_], costs: FloatArray) -> IntArray:
    """One contest per active arm in turn while affordable (ROUND_ROBIN), for every run."""
    runs, K = active.shape
    n = np.zeros((runs, K), dtype=np.int64)
    b = np.asarray(money, dtype=float).copy()
    sweep = active @ costs
    full = np.where(sweep > 0, np.floor(b / np.where(sweep > 0, sweep, 1.0)), 0).astype(np.int64)
    n += full[:, None] * active
    b -= full * sweep
    while True:
        bought = False
        for i in range(K):
            ok = active[:, i] & (costs[i] <= b + 1e-9)
            if np.any(ok):
                n[ok, i] += 1
                b[ok] -= costs[i]
                bought = True
        if not bought:
            return n


def density_greedy(money: FloatArray, score: FloatArray, costs: FloatArray) -> IntArray:
    """As many contests of the best-scored arm as affordable, then the next (DENSITY_GREEDY)."""
    runs, K = score.shape
    order = np.argsort(-score, axis=1, kind="stable")
    n = np.zeros((runs, K), dtype=np.int64)
    b = np.asarray(money, dtype=float).copy()
    rows = np.arange(runs)
    for k in range(K):
        arm = order[:, k]
        cnt = np.floor((b + 1e-9) / costs[arm]).astype(np.int64)
        n[rows, arm] += cnt
        b -= cnt * costs[arm]
    return n


def stepped_exploit(state: State, score: FloatArray) -> IntArray:
    """One period of STEPPED_EXPLOIT: ``floor(B_res / (L c_lead))`` contests of the leader,
    or, in the last period, the density-greedy fill of everything left (A.3)."""
    c = state.instance.costs
    if state.left <= 1:
        return density_greedy(state.residual, score, c)
    affordable = c[None, :] <= state.residual[:, None] + 1e-9
    lead = np.argmax(np.where(affordable, score, -np.inf), axis=1)
    cnt = np.floor((state.residual + 1e-9) / (state.left * c[lead])).astype(np.int64)
    cnt = np.where(affordable.any(axis=1), cnt, 0)
    n = np.zeros_like(state.users, dtype=np.int64)
    n[np.arange(n.shape[0]), lead] = cnt
    return n


# ------------------------------------------------------------------ policies (A.4-A.7)
def _check_state(state: Any) -> None:
    if not isinstance(state, State):
        raise TypeError(f"state must be a crowdlib.bandits.State, got {type(state).__name__}")


class Policy:
    """A policy decides, for all runs at once, how many contests of each arm to run this period.

    Subclasses implement :meth:`decide` (return a ``(runs, K)`` integer array whose
    cost fits ``state.residual``); they may keep arrays in ``state.memo``. To add a
    policy, subclass this and pass an instance to :func:`simulate`.
    """

    name = "policy"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every method of a subclass that takes the simulation ``state`` (``decide``, and helpers
        such as ``exploit`` or ``index``) first checks that it was given a :class:`State`."""
        super().__init_subclass__(**kwargs)
        import functools
        import inspect

        for attr, raw in list(cls.__dict__.items()):
            static = isinstance(raw, staticmethod)
            fn = raw.__func__ if static else raw
            if attr.startswith("__") or not inspect.isfunction(fn) or getattr(fn, "_checks_state", False):
                continue
            params = list(inspect.signature(fn).parameters)
            if (params[:1] if static else params[1:2]) != ["state"]:
                continue
            if static:
                @functools.wraps(fn)
                def checked(state, *args, _fn=fn, **kw):
                    _check_state(state)
                    return _fn(state, *args, **kw)
                checked._checks_state = True
                setattr(cls, attr, staticmethod(checked))
            else:
                @functools.wraps(fn)
                def checked(self, state, *args, _fn=fn, **kw):
                    _check_state(state)
                    return _fn(self, state, *args, **kw)
                checked._checks_state = True
                setattr(cls, attr, checked)

    def decide(self, state: State) -> IntArray:  # pragma: no cover - abstract
        _check_state(state)
        raise NotImplementedError(f"{type(self).__name__} must implement decide(state)")

    def __repr__(self) -> str:
        return self.name


class Optimal(Policy):
    """The oracle: density-greedy on the *true* effectiveness, all in period 1 (A.1)."""

    name = "optimal"

    def decide(self, state: State) -> IntArray:
        if state.period > 0:
            return np.zeros(state.users.shape, dtype=np.int64)
        inst = state.instance
        score = np.broadcast_to(inst.effectiveness, state.users.shape)
        return density_greedy(state.residual, score, inst.costs)


def _explore_evenly(state: State, money: float) -> IntArray:
    """Period 1 of the epsilon policies: ROUND_ROBIN(max(money, sum c), all arms) (A.5)."""
    c = state.instance.costs
    cap = np.minimum(state.residual, max(money, float(c.sum())))
    return round_robin(cap, np.ones(state.users.shape, dtype=bool), c)


class EpsilonFirst(Policy):
    """epsilon-first (Tran-Thanh et al. 2010), deadline version: explore ``eps B`` in
    period 1, commit the rest density-greedily in period 2 (A.5)."""

    base_name = "epsilon_first"

    def __init__(self, epsilon: float = 0.1) -> None:
        self.epsilon = real("epsilon", epsilon, low=0.0, high=1.0)
        self.name = f"{self.base_name}({self.epsilon:.12g})"

    def decide(self, state: State) -> IntArray:
        if state.period == 0:
            return _explore_evenly(state, self.epsilon * state.budget)
        return self.exploit(state)

    def exploit(self, state: State) -> IntArray:
        if state.period == 1:
            return density_greedy(state.residual, state.estimates(), state.instance.costs)
        return np.zeros(state.users.shape, dtype=np.int64)


class SteppedEpsilonFirst(EpsilonFirst):
    """Stepped epsilon-first (the paper's Section 3.2): explore ``eps B`` evenly in period 1,
    then stepped exploitation, then a final greedy fill (A.5)."""

    base_name = "stepped_epsilon_first"

    def exploit(self, state: State) -> IntArray:
        return stepped_exploit(state, state.estimates())


def hais_targets(state: State, m0: int, p: float) -> FloatArray:
    """HAIS's phase-2 targets ``N*_i`` in users (A.4), for every run, from the estimates.

    See :func:`hoeffding_targets`, which this applies to ``state.estimates()``.
    """
    if not isinstance(state, State):
        raise TypeError(f"state must be a State, got {type(state).__name__}")
    return hoeffding_targets(state.instance, state.estimates(), p, m0)


def hoeffding_targets(inst: "ISPInstance", rho: Any, p: float, m0: int = 0) -> FloatArray:
    """Users per arm that make the Hoeffding bound on a wrong ranking at most ``1 - p`` (A.4).

    ``rho`` holds effectiveness values, one row per run (estimates inside HAIS, the true
    values for a check). With ``R'_i = R g_i / c_i`` and gaps ``D_j`` to the leader ``b`` of
    each row: ``N*_j = max(m0, ceil(R'_j^2 ln(1/(1-p)) / D_j^2))`` for ``j != b``, and ``N*_b`` the
    same with the smallest gap. A zero gap gives an infinite target; an unexplored arm (NaN)
    gets ``m0``.
    """
    if not isinstance(inst, ISPInstance):
        raise TypeError(f"inst must be an ISPInstance, got {type(inst).__name__}")
    try:
        rho = np.atleast_2d(np.asarray(rho, dtype=float))
    except (TypeError, ValueError):
        raise TypeError(f"rho must be an array of effectiveness values, got {type(rho).__name__}") from None
    if rho.ndim != 2 or rho.shape[1] != inst.arms:
        raise ValueError(f"rho must have one column per arm ({inst.arms}), got {rho.shape[1]}")
    p = real("p", p, low=0.0, high=1.0, high_open=True)
    m0 = integer("m0", m0, low=0)
    lead = np.argmax(rho, axis=1)     # an unexplored (NaN) arm leads; then every gap is NaN -> m0
    rows = np.arange(rho.shape[0])
    with np.errstate(invalid="ignore"):
        gap = rho[rows, lead][:, None] - rho
    gap = np.where(np.isnan(gap), np.inf, gap)  # nothing explored yet: no information, target m0
    gap[rows, lead] = np.inf
    gap_b = gap.min(axis=1)
    gap[rows, lead] = gap_b
    Rp2 = (inst.max_tasks * inst.group_sizes / inst.costs) ** 2
    log_term = math.log(1.0 / (1.0 - p))
    with np.errstate(divide="ignore"):
        target = np.ceil(Rp2[None, :] * log_term / gap**2)
    return np.maximum(target, m0)


class HAIS(Policy):
    """Hoeffding-based Adaptive Incentive Selection (the paper's Section 3.1; appendix A.4).

    1. Period 1: ``ceil(m0 / g_i)`` contests of every arm (at least ``m0`` users each).
    2. Period 2, if at least 3 periods remain: top every arm up to its Hoeffding
       target (:func:`hais_targets`), capped by what the budget can buy and, in
       total, by ``eta`` times the residual budget. No extra contest: a stepped period.
    3. Later periods: stepped exploitation on the estimates; the last period fills greedily.
    """

    def __init__(self, m0: int = 20, p: float = 0.5, eta: float = 0.25) -> None:
        self.m0 = integer("m0", m0, low=1)
        self.p = real("p", p, low=0.0, high=1.0, high_open=True)
        self.eta = real("eta", eta, low=0.0, high=1.0)
        self.name = f"hais({self.m0}, {self.p:.12g})" + ("" if self.eta == 0.25 else f" eta={self.eta:.12g}")

    def decide(self, state: State) -> IntArray:
        inst = state.instance
        c, g = inst.costs, inst.group_sizes
        if state.period == 0:
            first = np.ceil(self.m0 / g).astype(np.int64)
            if first @ c <= state.budget:
                return np.broadcast_to(first, state.users.shape).copy()
            import warnings

            from ._validation import CrowdlibWarning

            warnings.warn(f"{self.name}: the budget {state.budget:g} is below the cost of period 1's "
                          f"exploration ({float(first @ c):g} for m0 = {self.m0} users per arm); HAIS "
                          "falls back to a round robin over the arms", CrowdlibWarning, stacklevel=3)
            return round_robin(state.residual, np.ones(state.users.shape, dtype=bool), c)
        if state.period == 1 and state.left >= 3:
            target = hais_targets(state, self.m0, self.p)
            target = np.minimum(target, state.users + g * state.residual[:, None] / c)
            extra = np.ceil(np.maximum(target - state.users, 0) / g).astype(np.int64)
            spend = extra @ c
            limit = self.eta * state.residual
            over = spend > limit
            if np.any(over):
                scale = np.where(over, limit / np.where(spend > 0, spend, 1.0), 1.0)
                extra = np.where(over[:, None], np.floor(extra * scale[:, None]), extra).astype(np.int64)
            none = extra.sum(axis=1) == 0
            if np.any(none):
                extra[none] = stepped_exploit(state, state.estimates())[none]
            return extra
        return stepped_exploit(state, state.estimates())


def _fkube_index(state: State, pulls: FloatArray, t: FloatArray, reward_scale: float | None) -> FloatArray:
    """fKUBE's UCB density ``(mu_hat + sqrt(2 ln t / n)) / c`` on pulls scaled to [0, 1] (A.6).

    A pull's reward (the group total) is divided by ``reward_scale``, by default
    ``g_max * max_tasks``, the largest possible total (A.6).
    """
    inst = state.instance
    scale = float(inst.group_sizes.max() * inst.max_tasks) if reward_scale is None else reward_scale
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = state.tasks / np.where(state.pulls > 0, state.pulls, 1) / scale
        bonus = np.sqrt(2 * np.log(np.maximum(t, 1.0))[:, None] / np.where(pulls > 0, pulls, 1))
    return np.where(pulls > 0, (mu + bonus) / inst.costs, np.inf)


class _FKUBEBase(Policy):
    """What fKUBE and Stepped fKUBE share: the reward scale, the index, period 1."""

    base_name = "fkube"

    def __init__(self, reward_scale: float | None = None) -> None:
        self.reward_scale = None if reward_scale is None else real("reward_scale", reward_scale, low=0.0,
                                                                    low_open=True)
        self.name = self.base_name if reward_scale is None else f"{self.base_name}(scale={self.reward_scale:.12g})"

    def index(self, state: State, pulls: FloatArray, t: FloatArray) -> FloatArray:
        return _fkube_index(state, pulls, t, self.reward_scale)

    @staticmethod
    def pull_each_once(state: State) -> IntArray:
        c = state.instance.costs
        return round_robin(np.minimum(state.residual, float(c.sum())), np.ones(state.users.shape, dtype=bool), c)


class FKUBE(_FKUBEBase):
    """Fractional KUBE (Tran-Thanh et al. 2012), batched into periods (A.6).

    Period 1 pulls every arm once. In a later period the slice ``B_res / L`` (all of
    it in the last period) is scheduled one pull at a time by the UCB density, with
    the means frozen and the pull counts increased virtually.
    """

    base_name = "fkube"

    def decide(self, state: State) -> IntArray:
        if state.period == 0:
            return self.pull_each_once(state)
        c = state.instance.costs
        runs, K = state.users.shape
        money = state.residual / state.left if state.left > 1 else state.residual.copy()
        n = np.zeros((runs, K), dtype=np.int64)
        pulls = state.pulls.astype(float).copy()
        t = pulls.sum(axis=1)
        rows = np.arange(runs)
        live = np.ones(runs, dtype=bool)
        while True:
            affordable = c[None, :] <= money[:, None] + 1e-9
            live &= affordable.any(axis=1)
            if not live.any():
                break
            arm = np.argmax(np.where(affordable, self.index(state, pulls, t + 1), -np.inf), axis=1)
            r, a = rows[live], arm[live]
            n[r, a] += 1
            pulls[r, a] += 1
            t[r] += 1
            money[r] -= c[a]
        return n


class SteppedFKUBE(_FKUBEBase):
    """Stepped fKUBE (the paper's benchmark): period 1 pulls every arm once, then stepped
    exploitation on the fKUBE index, and a greedy fill by the same index (A.6)."""

    base_name = "stepped_fkube"

    def decide(self, state: State) -> IntArray:
        if state.period == 0:
            return self.pull_each_once(state)
        return stepped_exploit(state, self.index(state, state.pulls, state.pulls.sum(axis=1)))


class SOAAv(Policy):
    """Survival of the Above Average, adapted to periods (A.7).

    ``mode="batched"`` (default) spends ``B_res / L`` per period by round robin over
    the active arms; ``mode="pass"`` runs one contest per active arm per period,
    the first period included.
    After each period the active set becomes every arm with ``rho_hat >= (1 + x)``
    times the mean over the arms just pulled (the empirical best if none). The
    last period spends the rest over the survivors and fills the remainder greedily.
    """

    def __init__(self, x: float = 0.0, mode: str = "batched") -> None:
        self.x = real("x", x, low=0.0)
        if mode not in ("batched", "pass"):
            raise ValueError(f"mode must be 'batched' or 'pass', got {mode!r}")
        self.mode = mode
        self.name = ("soaav" if mode == "batched" else "soaav_pass") + ("" if self.x == 0 else f"(x={self.x:.12g})")

    def decide(self, state: State) -> IntArray:
        c = state.instance.costs
        runs, K = state.users.shape
        active = state.memo.get("active")
        if active is None:
            active = np.ones((runs, K), dtype=bool)
        elif "last" in state.memo:
            rho = state.estimates()
            pulled = state.memo["last"] > 0
            with np.errstate(invalid="ignore"):
                mean = np.where(pulled, rho, 0).sum(axis=1) / np.maximum(pulled.sum(axis=1), 1)
            active = (rho >= (1 + self.x) * mean[:, None]) & np.isfinite(rho)
            none = ~active.any(axis=1)
            active[none, np.argmax(rho[none], axis=1)] = True
        if state.left <= 1:
            n = round_robin(state.residual, active, c)
            n += density_greedy(state.residual - n @ c, state.estimates(), c)
        elif self.mode == "pass":
            n = np.where(active & (c[None, :] <= state.residual[:, None] + 1e-9), 1, 0).astype(np.int64)
            over = n @ c > state.residual + 1e-9
            n[over] = round_robin(state.residual[over], active[over], c)
        else:
            money = state.residual / state.left
            if state.period == 0:
                money = np.minimum(state.residual, np.maximum(money, float(c.sum())))
            n = round_robin(money, active, c)
        state.memo["active"], state.memo["last"] = active, n
        return n


#: The policies of the chapter under their fixed names (the book's defaults).
POLICIES: dict[str, Policy] = {
    "hais": HAIS(20, 0.5),
    "stepped_epsilon_first": SteppedEpsilonFirst(0.1),
    "epsilon_first": EpsilonFirst(0.1),
    "fkube": FKUBE(),
    "stepped_fkube": SteppedFKUBE(),
    "soaav": SOAAv(0.0, "batched"),
    "soaav_pass": SOAAv(0.0, "pass"),
    "optimal": Optimal(),
}


# ------------------------------------------------------------------ the simulator
def _resolve(policy: Any) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)} or a Policy, got {policy!r}")
        return POLICIES[policy]
    raise TypeError(f"policy must be a name or a Policy, got {type(policy).__name__}")


def _resolve_all(policies: Any) -> list[Policy]:
    """A list of policy names or Policy objects, each resolved; errors name ``policies[k]``."""
    if isinstance(policies, (str, Policy)) or not isinstance(policies, (list, tuple)):
        raise TypeError(f"policies must be a list of policy names or Policy objects, got "
                        f"{type(policies).__name__}")
    resolved = []
    for k, p in enumerate(policies):
        try:
            resolved.append(_resolve(p))
        except (TypeError, ValueError) as err:
            raise type(err)(f"policies[{k}]: {err}") from None
    return resolved


#: the most contests one run may buy (exact integers in double precision, with room for sums)
MAX_CONTESTS = 2.0 ** 40

#: runs per vectorised chunk of :func:`simulate`; a larger call is split into chunks seeded by
#: children of one SeedSequence, so its result depends on the seed and ``runs`` only
CHUNK = 50_000


def _seed_sequence(seed: Any) -> np.random.SeedSequence:
    """simulate's seeds: an int, a sequence of ints (>= 0), a SeedSequence or a Generator."""
    if isinstance(seed, (np.random.SeedSequence, np.random.Generator)):
        from .experiments import root_sequence

        return root_sequence(seed)
    parts = np.atleast_1d(np.asarray(seed, dtype=object))
    if (parts.ndim != 1 or parts.size == 0 or not all(
            isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) and x >= 0 for x in parts)):
        raise TypeError("seed must be an int >= 0, a sequence of them, a SeedSequence or a Generator, "
                        f"got {seed!r}")
    return np.random.SeedSequence([int(x) for x in parts] if np.ndim(seed) else int(seed))


def simulate(instance: ISPInstance, policy: Any, budget: float, periods: int, runs: int,
             seed: Any, *, draws: str = "law", executor: Any = None) -> FloatArray:
    """Total tasks of ``runs`` independent runs of ``policy`` (vectorised over runs).

    ``seed`` is an int, a sequence of ints, a SeedSequence or a Generator (the book's one
    convention): the same seed gives the same array. Up to :data:`CHUNK` runs use one stream,
    ``default_rng(SeedSequence(seed))``; more are split into chunks of :data:`CHUNK` runs seeded
    by the children of that SeedSequence, which run on ``executor`` (any
    :class:`concurrent.futures.Executor`) if one is given: the result depends on the seed and
    ``runs`` only, never on the executor or its number of workers. A policy that tries to spend
    more than what is left raises ``RuntimeError``: no run ever spends more than ``budget``. A
    budget that buys no contest at all warns (:class:`crowdlib.CrowdlibWarning`): every run
    then collects 0 tasks.
    """
    if not isinstance(instance, ISPInstance):
        raise TypeError(f"instance must be an ISPInstance, got {type(instance).__name__}")
    pol = _resolve(policy)
    B = real("budget", budget, low=0.0, low_open=True)
    T = integer("periods", periods, low=2, high=10_000)
    n = integer("runs", runs, low=1, high=10**9)
    if draws not in DRAWS:
        raise ValueError(f"draws must be one of {DRAWS}, got {draws!r}")
    most = MAX_CONTESTS * float(instance.costs.min())
    if B > most:
        raise ValueError(f"budget must be at most {MAX_CONTESTS:.3g} times the cheapest arm's cost "
                         f"({most:.6g}): beyond that the contest counts are not exact integers, got {B:g}")
    if executor is not None:
        from concurrent.futures import Executor

        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    ss = _seed_sequence(seed)
    if B < float(instance.costs.min()):
        import warnings

        from ._validation import CrowdlibWarning

        warnings.warn(f"budget {B:g} is below every arm's cost (cheapest {instance.costs.min():g}): "
                      "no contest can be bought and every run collects 0 tasks", CrowdlibWarning,
                      stacklevel=2)
    if n <= CHUNK:
        return _simulate_chunk(instance, pol, B, T, n, ss, draws)
    sizes = [min(CHUNK, n - k) for k in range(0, n, CHUNK)]
    from .experiments import spawn

    children = spawn(ss, len(sizes))      # the same children on every call (no spawn counter)
    if executor is None:
        parts = [_simulate_chunk(instance, pol, B, T, m, c, draws) for m, c in zip(sizes, children)]
    else:
        from .experiments import reemit

        futures = [executor.submit(_simulate_chunk_caught, instance, pol, B, T, m, c, draws)
                   for m, c in zip(sizes, children)]
        parts = []
        for k, f in enumerate(futures):
            part, caught = f.result()
            reemit(caught, f"chunk {k}")
            parts.append(part)
    return np.concatenate(parts)


def _simulate_chunk_caught(*args: Any) -> tuple[FloatArray, list]:
    """:func:`_simulate_chunk` in a worker, with the warnings it raised (re-raised by the caller)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _simulate_chunk(*args)
    return out, [(w.category, str(w.message)) for w in caught]


def _simulate_chunk(instance: ISPInstance, pol: Policy, B: float, T: int, n: int,
                    seq: np.random.SeedSequence, draws: str) -> FloatArray:
    """One vectorised block of :func:`simulate`'s runs, on the stream of ``seq``."""
    rng = np.random.default_rng(seq)
    K = instance.arms
    state = State(instance, B, T, np.full(n, B), np.zeros((n, K)), np.zeros((n, K)), np.zeros((n, K)))
    total = np.zeros(n)
    for t in range(T):
        state.period = t
        counts = np.asarray(pol.decide(state), dtype=np.int64)
        if counts.shape != (n, K) or np.any(counts < 0):
            raise RuntimeError(f"{pol}: decide() must return non-negative counts of shape {(n, K)}")
        cost = counts @ instance.costs
        if np.any(cost > state.residual + 1e-9):
            raise RuntimeError(f"{pol} tried to spend more than the residual budget in period {t + 1}")
        state.residual = np.maximum(state.residual - cost, 0.0)
        users = counts * instance.group_sizes
        tasks = instance.draw(users, rng, draws)
        state.users += users
        state.tasks += tasks
        state.pulls += counts
        total += tasks.sum(axis=1)
    return total


def simulate_loop(instance: ISPInstance, policy: Any, budget: float, periods: int, runs: int,
                  seed: Any, *, draws: str = "law") -> FloatArray:
    """The plain per-run loop reference: :func:`simulate` one run at a time.

    Used only by the benchmark, to measure what vectorising over runs buys.
    """
    runs = integer("runs", runs, low=1, high=100_000)      # a reference loop, one run at a time
    if isinstance(seed, (np.random.SeedSequence, np.random.Generator)):
        root = _seed_sequence(seed)
        streams = [np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, r)) for r in range(runs)]
    else:
        streams = [[*np.atleast_1d(seed), r] for r in range(runs)]
    return np.concatenate([simulate(instance, policy, budget, periods, 1, s, draws=draws) for s in streams])


# ------------------------------------------------------------------ experiments (A.8)
#: two-sided 99 % normal quantile, z_0.995
Z99 = 2.5758293035489004


@dataclass(frozen=True)
class Setting:
    """One cell of the experiment grid: an instance family, a budget and a deadline.

    ``family`` is ``"C"`` (with ``group_size``), ``"A"``, ``"B"``, ``"random"``
    (a fresh random instance every ``runs_per_instance`` runs, A.2), or ``"custom"`` with an
    ``instance`` of the reader's own.
    """

    family: "str | ISPInstance"
    budget: float
    periods: int
    group_size: int | None = None
    runs_per_instance: int = 10
    instance: "ISPInstance | None" = None
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.family, ISPInstance):       # Setting(my_instance, budget, periods)
            if self.instance is not None:
                raise ValueError("give the instance once: as family or as instance=")
            object.__setattr__(self, "instance", self.family)
            object.__setattr__(self, "family", "custom")
        if not isinstance(self.family, str) or self.family not in ("C", "A", "B", "random", "custom"):
            raise ValueError("family must be 'C', 'A', 'B', 'random', 'custom' or an ISPInstance, got "
                             f"{self.family!r}")
        if (self.family == "custom") != (self.instance is not None):
            raise ValueError("family 'custom' needs an instance, and only it takes one")
        if self.instance is not None and not isinstance(self.instance, ISPInstance):
            raise TypeError(f"instance must be an ISPInstance, got {type(self.instance).__name__}")
        if self.family == "C" and self.group_size is None:
            raise ValueError("family 'C' needs a group_size (an int >= 1)")
        real("budget", self.budget, low=0.0, low_open=True)
        integer("periods", self.periods, low=2)
        integer("runs_per_instance", self.runs_per_instance, low=1)
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise TypeError(f"name must be a non-empty string or None, got {self.name!r}")

    @property
    def label(self) -> str:
        """``family budget/periods``; a custom setting is named by ``name`` if given (its label
        also names its random streams, so two custom settings should have different names)."""
        fam = f"C({self.group_size})" if self.family == "C" else (self.name or self.family)
        return f"{fam} {self.budget:g}/{self.periods}"


def percent_of_optimal(setting: Setting, policies: list[Any], runs: int, seed: int) -> dict[str, FloatArray]:
    """Per-run totals and %Opt (total / Optimal's total in the same run index, in %).

    Returns ``optimal_total`` (``runs``,), and ``totals`` and ``pct`` of shape
    ``(len(policies), runs)`` in the order given. Every stream is named, not numbered: policy
    ``pol`` uses ``[seed, crc32(setting.label), crc32(pol.name), k]`` on instance chunk ``k`` and
    Optimal ``[seed, crc32(setting.label), 0, k]``, so results do not depend on the order of
    the policies or of the settings of a grid.
    """
    if isinstance(setting, ISPInstance):
        raise TypeError("setting must be a Setting; for an instance of your own use "
                        "Setting(instance, budget, periods)")
    if not isinstance(setting, Setting):
        raise TypeError(f"setting must be a Setting, got {type(setting).__name__}")
    runs = integer("runs", runs, low=1)
    if isinstance(policies, (str, Policy)) or not hasattr(policies, "__iter__"):
        raise TypeError("policies must be a list of policies or policy names")
    pols = [_resolve(p) for p in policies]   # two policies with one name share a stream (and result)
    stream = _named_streams(seed)
    if setting.family == "random":
        per = setting.runs_per_instance
        count = -(-runs // per)
        insts = random_instances(count, np.random.default_rng(stream(zlib.crc32(setting.label.encode()), 777)))
        chunks = [(inst, min(per, runs - k * per)) for k, inst in enumerate(insts)]
    elif setting.family == "custom":
        chunks = [(setting.instance, runs)]
    else:
        chunks = [(instance_family(setting.family, setting.group_size), runs)]
    tag = zlib.crc32(setting.label.encode())
    cheapest = min(float(inst.costs.min()) for inst, _ in chunks)
    if setting.budget < cheapest:
        raise ValueError(f"setting.budget {setting.budget:g} is below every arm's cost (cheapest "
                         f"{cheapest:g}): Optimal collects nothing, so %Opt is undefined")
    opt = np.concatenate([simulate(inst, Optimal(), setting.budget, setting.periods, m, stream(tag, 0, k))
                          for k, (inst, m) in enumerate(chunks)])
    totals = np.array([np.concatenate([simulate(inst, pol, setting.budget, setting.periods, m,
                                                stream(tag, zlib.crc32(pol.name.encode()), k))
                                       for k, (inst, m) in enumerate(chunks)])
                       for pol in pols]).reshape(len(pols), runs)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(opt > 0, 100.0 * totals / np.where(opt > 0, opt, 1.0), 100.0 * (totals == 0))
    if np.any(opt == 0):
        import warnings

        from ._validation import CrowdlibWarning

        warnings.warn(f"{setting.label}: Optimal collected 0 tasks in {int((opt == 0).sum())} runs; "
                      "%Opt is set to 100 there when the policy also collected 0, else 0",
                      CrowdlibWarning, stacklevel=2)
    return {"optimal_total": opt, "totals": totals, "pct": pct}


def _named_streams(seed: Any):
    """``stream(*names)``: the seed of a named stream of a sweep. An int seed gives the list
    ``[seed, *names]`` (the book's streams); a SeedSequence or a Generator gives a SeedSequence
    with the names appended to its spawn key."""
    if isinstance(seed, (np.random.SeedSequence, np.random.Generator)):
        from .experiments import root_sequence

        root = root_sequence(seed)
        return lambda *names: np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, *names))
    s = integer("seed", seed, low=0)
    return lambda *names: [s, *names]


def _grid_cell(setting: Setting, rng: Any, *, policies: tuple, runs: int, seed: Any) -> dict:
    """One setting of :func:`run_grid` (``rng`` unused: the streams are named)."""
    return percent_of_optimal(setting, list(policies), runs, seed)


def run_grid(settings: list[Setting], policies: list[Any], runs: int, seed: Any,
             progress: bool = True, executor: Any = None) -> dict[str, FloatArray]:
    """Mean %Opt and mean total tasks with 99 % CI half-widths for every (setting, policy).

    Arrays of shape ``(len(settings), len(policies))``: ``pct``, ``pct_half``,
    ``total``, ``total_half``; plus ``optimal`` and ``optimal_half`` per setting.
    Each setting is one point of :func:`crowdlib.experiments.map_points` (on ``executor`` if
    given: the same result). The CI is :func:`crowdlib.experiments.mean_ci`'s Student-t
    interval at 99 % (A.8), cluster-robust for the random family, whose runs share instances.
    For the book's significance rule the per-run values are returned too: ``pct_runs``
    ``(settings, policies, runs)`` and ``clusters`` ``(settings, runs)``, the instance each run
    used (its own index where every run has the same instance).
    """
    import functools

    from .experiments import map_points

    from .experiments import MIN_SAMPLES

    runs = integer("runs", runs, low=MIN_SAMPLES)
    if isinstance(settings, Setting) or not hasattr(settings, "__iter__"):
        raise TypeError("settings must be a list of Setting")
    settings = list(settings)
    if not settings:
        raise ValueError("settings must hold at least one Setting")
    for st in settings:
        if not isinstance(st, Setting):
            raise TypeError(f"settings must hold Setting objects, got {type(st).__name__}")
    pols = tuple(_resolve_all(policies))
    if isinstance(seed, np.random.Generator):   # drawn from once, so every setting sees one root
        from .experiments import root_sequence

        seed = root_sequence(seed)
    out = {}
    # streams named by setting and policy, so the cells can run anywhere (executor) in any order
    cell = functools.partial(_grid_cell, policies=pols, runs=runs, seed=seed)
    _, cells = map_points(cell, [{"setting": st} for st in settings], seed=seed, executor=executor,
                          progress=progress, desc="settings")
    from .experiments import mean_ci

    clusters = np.array([_clusters(st, runs) for st in settings])
    half = lambda a, g: mean_ci(a, 0.99, g).half_width
    out["pct"] = np.array([c["pct"].mean(axis=1) for c in cells])
    out["pct_half"] = np.array([[half(row, g) for row in c["pct"]] for c, g in zip(cells, clusters)])
    out["total"] = np.array([c["totals"].mean(axis=1) for c in cells])
    out["total_half"] = np.array([[half(row, g) for row in c["totals"]] for c, g in zip(cells, clusters)])
    out["optimal"] = np.array([c["optimal_total"].mean() for c in cells])
    out["optimal_half"] = np.array([half(c["optimal_total"], g) for c, g in zip(cells, clusters)])
    out["pct_runs"] = np.array([c["pct"] for c in cells])
    out["clusters"] = clusters
    return out


def _clusters(setting: "Setting", runs: int) -> NDArray[np.int64]:
    """The instance label of each run: runs of the random family share an instance in blocks of
    ``runs_per_instance``; elsewhere every run is its own cluster."""
    if setting.family == "random":
        return np.arange(runs) // setting.runs_per_instance
    return np.arange(runs)


def benchmark(instance: ISPInstance, policies: list[Any], budget: float, periods: int,
              runs: int = 2000, loop_runs: int = 200, seed: int = 0) -> list[tuple[str, float, float]]:
    """Runs per second of :func:`simulate` (vectorised) and :func:`simulate_loop` (per run).

    Both are timed in the same call, so their ratio is meaningful on any machine.
    Returns ``(policy name, vectorised runs/s, loop runs/s)`` per policy.
    """
    resolved = _resolve_all(policies)
    rows = []
    for pol in resolved:
        t0 = time.perf_counter()
        simulate(instance, pol, budget, periods, runs, seed)
        vec = runs / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        simulate_loop(instance, pol, budget, periods, loop_runs, seed)
        loop = loop_runs / (time.perf_counter() - t0)
        rows.append((pol.name, vec, loop))
    return rows
