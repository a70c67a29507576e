"""Quality distributions of Cavallo & Jain (2012), Sections 2.1 and 2.2.

An agent with skill ``s`` who spends effort ``delta`` produces a good whose
quality (value to the principal, in dollars) is random with a distribution that
scales with the principal's value ``v``. The two canonical models of the paper:

* ``UniformQuality`` -- Eq. (12): quality ~ U[0, delta * s * v].
* ``TruncNormQuality`` -- Section 2.2: a normal with location ``delta * s * v``
  and scale ``v * sigma_ratio`` (the paper: ``sigma_ratio = 1/8``) truncated to
  ``[0, v]``.

Ambiguity resolved here: an agent with effort 0 is a *non-participant* and
submits no good (quality 0). For the uniform model this is what Eq. (12) gives
anyway (U[0, 0]); for the truncated normal it is a choice, because the formula
with ``mu = 0`` would give a good of positive expected quality for free. The
alternative reading is studied in :mod:`crowdlib.effort`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import integrate, special, stats

from . import _validation as check

__all__ = ["QualityModel", "UniformQuality", "TruncNormQuality", "get_quality"]


class QualityModel(ABC):
    """A family of quality distributions indexed by the level ``effort * skill``.

    Subclasses implement the c.d.f., the partial expectation
    ``E[(Q - beta)^+]`` and sampling; everything else is derived here.
    """

    name: str = "abstract"

    @abstractmethod
    def cdf(self, x: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        """P(Q <= x) for a participant with ``level = effort * skill`` (broadcasts)."""

    @abstractmethod
    def partial_expectation(self, beta: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        """E[(Q - beta)^+], the expected improvement over a standing best ``beta``.

        This is Eq. (6) of the paper before the effort cost is subtracted;
        by Eqs. (7)-(8) it equals ``v - beta - int_beta^v F(x) dx``.
        """

    @abstractmethod
    def sample(self, rng: np.random.Generator, v: float, level: ArrayLike,
               size: tuple[int, ...]) -> NDArray[np.float64]:
        """Draw qualities for participants of the given levels (broadcast to ``size``)."""

    def breakpoints(self, v: float, levels: NDArray[np.float64]) -> list[float]:
        """Points where the c.d.f. has a kink (helps the quadrature)."""
        return []

    def quantile(self, u: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        """The inverse c.d.f.: the smallest ``x`` in ``[0, v]`` with ``F(x) >= u`` (broadcasts).

        Used for common random numbers (the same uniforms drive every deviation). This default
        bisects the c.d.f. (60 halvings of ``[0, v]``); the built-in models use closed forms.
        """
        v = _v(v)
        u, level = np.broadcast_arrays(*_quantile_args(u, level))
        lo, hi = np.zeros(u.shape), np.full(u.shape, float(v))
        for _ in range(60):
            mid = (lo + hi) / 2
            below = self.cdf(mid, v, level) < u
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return hi

    def expected_max_iid(self, v: float, m: int) -> float:
        """E[max of m i.i.d. full-effort, skill-1 goods]; 0 for m = 0."""
        v, m = _v(v), check.integer("m", m, low=0, high=10**7)
        if m == 0 or v == 0.0:
            return 0.0
        return self.expected_max(v, np.ones(m), np.ones(m))

    def expected_max(self, v: float, efforts: ArrayLike, skills: ArrayLike) -> float:
        """E[max_i Q_i] for independent agents; effort 0 means no good (quality 0).

        ``int_0^v (1 - prod_i F_i(x)) dx`` by Gauss-Legendre quadrature on the
        pieces between the c.d.f.s' kinks (exact for the uniform model, whose
        integrand is a polynomial of degree n on each piece).
        """
        return float(self.expected_max_leave_one_out(v, efforts, skills)[0])

    def expected_max_leave_one_out(self, v: float, efforts: ArrayLike,
                                   skills: ArrayLike) -> tuple[float, NDArray[np.float64]]:
        """E[max of all goods] and, for each agent i, E[max of the goods of the others]."""
        v = _v(v)
        efforts = check.real_vector("efforts", efforts, low=0.0, high=1.0)
        skills = check.real_vector("skills", skills, low=0.0, high=1.0, length=efforts.size,
                                   length_name="one per effort")
        active = efforts > 0
        without = np.zeros(efforts.size)
        if v == 0.0 or not np.any(active):
            return 0.0, without
        levels = efforts[active] * skills[active]
        cuts = np.unique(np.clip([0.0, v, *self.breakpoints(v, levels)], 0.0, v))
        nodes, weights = _GAUSS
        lo, hi = cuts[:-1, None], cuts[1:, None]
        x = ((hi - lo) / 2 * nodes[None, :] + (hi + lo) / 2).ravel()
        w = ((hi - lo) / 2 * weights[None, :]).ravel()
        cdf = np.broadcast_to(self.cdf(x[None, :], v, levels[:, None]), (levels.size, x.size))
        k = levels.size
        full = float(w @ (1.0 - np.prod(cdf, axis=0)))
        if k > 1:
            # product over j != i as (prefix product before i) * (suffix product after i)
            ones = np.ones((1, x.size))
            before = np.vstack([ones, np.cumprod(cdf, axis=0)[:-1]])
            after = np.vstack([np.cumprod(cdf[::-1], axis=0)[::-1][1:], ones])
            without[active] = (1.0 - before * after) @ w
        return full, without


_GAUSS = np.polynomial.legendre.leggauss(96)


def _v(v) -> float:
    """The principal's value: finite and >= 0."""
    return check.real("v", v, low=0.0)


def _array(name: str, x, *, low: float | None = None, high: float | None = None,
           allow_inf: bool = False) -> NDArray[np.float64]:
    """A real array (any shape), no NaN, finite unless ``allow_inf``, within [low, high]."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a number or an array of numbers, got a string")
    arr = np.asarray(x)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex values")
    try:
        arr = arr.astype(float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(x).__name__}") from None
    if np.any(np.isnan(arr)) or (not allow_inf and not np.all(np.isfinite(arr))):
        raise ValueError(f"{name} must be {'real' if allow_inf else 'finite'} numbers, got NaN or inf")
    if (low is not None and np.any(arr < low)) or (high is not None and np.any(arr > high)):
        raise ValueError(f"{name} must lie in [{low}, {high}]")
    return arr


def _level(level) -> NDArray[np.float64]:
    """``effort * skill`` (>= 0; in [0, 1] for the paper's agents, slightly above for the
    central differences of Lemma 1)."""
    return _array("level", level, low=0.0)


def _top(level, v) -> NDArray[np.float64]:
    """``level * v``, the top of a good's support, which must be finite."""
    with np.errstate(over="ignore"):
        top = _level(level) * _v(v)
    if not np.all(np.isfinite(top)):
        raise ValueError("level * v must be finite (the top of a good's quality range)")
    return top


def _broadcast(**arrays: NDArray[np.float64]) -> None:
    """Refuse arrays that do not broadcast together, naming them."""
    try:
        np.broadcast_shapes(*(np.shape(a) for a in arrays.values()))
    except ValueError:
        shapes = ", ".join(f"{k} {np.shape(a)}" for k, a in arrays.items())
        raise ValueError(f"{' and '.join(arrays)} must broadcast together, got shapes {shapes}") from None


def _to_size(level: NDArray[np.float64], size: tuple[int, ...]) -> None:
    """Refuse levels that do not broadcast to the sample's shape, naming both."""
    try:
        if np.broadcast_shapes(np.shape(level), size) != tuple(size):
            raise ValueError
    except ValueError:
        raise ValueError(f"level (shape {np.shape(level)}) must broadcast to size {tuple(size)}") from None


def _size(size) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size),)
    if not isinstance(size, tuple) or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                              and s >= 0 for s in size):
        raise TypeError(f"size must be a tuple of non-negative ints, got {size!r}")
    if int(np.prod(size, dtype=float)) > 10**9:
        raise ValueError(f"size must describe at most 1e9 draws, got {size}")
    return tuple(int(s) for s in size)


def _quantile_args(u: ArrayLike, level: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    u = _array("u", u, low=0.0, high=1.0)
    level = _level(level)
    _broadcast(u=u, level=level)
    return u, level


class UniformQuality(QualityModel):
    """Eq. (12): quality ~ U[0, level * v]; level 0 is a point mass at 0."""

    name = "uniform"

    def cdf(self, x: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        x = _array("x", x, allow_inf=True)
        top = _top(level, v)
        _broadcast(x=x, level=top)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = np.where(top > 0, x / np.where(top > 0, top, 1.0), np.inf)
        return np.clip(np.where(x < 0, 0.0, ratio), 0.0, 1.0)

    def partial_expectation(self, beta: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        beta = _array("beta", beta, allow_inf=True)
        top = _top(level, v)
        _broadcast(beta=beta, level=top)
        gap = np.clip(top - beta, 0.0, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            # gap * (gap / 2 top), not gap**2 / (2 top): the square overflows for v near 1e154
            return np.where(top > 0, gap * (gap / (2 * np.where(top > 0, top, 1.0))), 0.0)

    def sample(self, rng: np.random.Generator, v: float, level: ArrayLike,
               size: tuple[int, ...]) -> NDArray[np.float64]:
        rng, size = check.generator("rng", rng), _size(size)
        top = _top(level, v)
        _to_size(top, size)
        return rng.uniform(0.0, 1.0, size=size) * top

    def quantile(self, u: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        u, level = _quantile_args(u, level)
        return u * _top(level, v)

    def breakpoints(self, v: float, levels: NDArray[np.float64]) -> list[float]:
        return list(np.ravel(_top(levels, v)))

    def expected_max_iid(self, v: float, m: int) -> float:
        """Eq. (20): the maximum of m draws from U[0, v] has mean m v / (m + 1)."""
        v, m = _v(v), check.integer("m", m, low=0, high=10**15)
        return m * v / (m + 1)


class TruncNormQuality(QualityModel):
    """Section 2.2: N(level * v, (sigma_ratio * v)^2) truncated to [0, v].

    Parameters
    ----------
    sigma_ratio : float
        Scale over value; the paper uses 1/8 (Figure 2).
    """

    def __init__(self, sigma_ratio: float = 1 / 8) -> None:
        self.sigma_ratio = check.real("sigma_ratio", sigma_ratio, low=0.0, low_open=True)
        self.name = "truncnorm" if sigma_ratio == 1 / 8 else f"truncnorm(sigma=v*{sigma_ratio:g})"

    def _std(self, v: float, level: ArrayLike) -> tuple[NDArray[np.float64], float, NDArray[np.float64], NDArray[np.float64]]:
        v = _v(v)
        if v == 0.0:
            raise ValueError("v must be > 0 for the truncated normal (its scale is sigma_ratio * v)")
        if np.any(_level(level) > 1.001):
            raise ValueError("level (effort * skill) must lie in [0, 1] for the truncated normal (a "
                             "location far above v leaves no mass on [0, v])")
        mu = _top(level, v)
        sd = self.sigma_ratio * v
        if sd < np.finfo(float).tiny:
            raise ValueError(f"v must be large enough that the scale sigma_ratio * v is a normal float "
                             f"(at least {np.finfo(float).tiny / self.sigma_ratio:g}), got {v:g}")
        return mu, sd, (0.0 - mu) / sd, (v - mu) / sd

    def cdf(self, x: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        mu, sd, a, b = self._std(v, level)
        x = _array("x", x, allow_inf=True)
        _broadcast(x=x, level=mu)
        return stats.truncnorm.cdf(x, a, b, loc=mu, scale=sd)

    def partial_expectation(self, beta: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        """Closed form: for X ~ N(mu, sd) on [0, v] and beta in [0, v],

        ``E[(X - beta)^+] = [(mu - beta)(Phi(b) - Phi(c)) + sd (phi(c) - phi(b))] / Z``

        with ``c = (beta - mu)/sd``, ``b = (v - mu)/sd``, ``Z = Phi(b) - Phi(a)``.
        """
        mu, sd, a, b = self._std(v, level)
        beta = np.clip(_array("beta", beta, allow_inf=True), 0.0, v)
        _broadcast(beta=beta, level=mu)
        c = (beta - mu) / sd
        z = special.ndtr(b) - special.ndtr(a)
        pdf = stats.norm.pdf
        return ((mu - beta) * (special.ndtr(b) - special.ndtr(c)) + sd * (pdf(c) - pdf(b))) / z

    def sample(self, rng: np.random.Generator, v: float, level: ArrayLike,
               size: tuple[int, ...]) -> NDArray[np.float64]:
        rng, size = check.generator("rng", rng), _size(size)
        mu, sd, a, b = self._std(v, level)
        _to_size(mu, size)
        return stats.truncnorm.rvs(a, b, loc=mu, scale=sd, size=size, random_state=rng)

    def quantile(self, u: ArrayLike, v: float, level: ArrayLike) -> NDArray[np.float64]:
        u, level = _quantile_args(u, level)
        mu, sd, a, b = self._std(v, level)
        return stats.truncnorm.ppf(u, a, b, loc=mu, scale=sd)

    def expected_max_iid(self, v: float, m: int) -> float:
        """Scale invariance: E[max] = v * c_m with c_m computed once at v = 1."""
        v, m = _v(v), check.integer("m", m, low=0, high=10**6)
        if m == 0 or v == 0.0:
            return 0.0
        return v * _truncnorm_unit_max(self.sigma_ratio, m)


@lru_cache(maxsize=4096)
def _truncnorm_unit_max(sigma_ratio: float, m: int) -> float:
    unit = TruncNormQuality(sigma_ratio)

    def survival(x: float) -> float:
        return 1.0 - float(unit.cdf(x, 1.0, 1.0)) ** m

    value, _ = integrate.quad(survival, 0.0, 1.0, epsabs=1e-14, epsrel=1e-13, limit=200)
    return float(value)


_NAMED = {"uniform": UniformQuality, "truncnorm": TruncNormQuality}


def get_quality(quality: str | QualityModel) -> QualityModel:
    """Resolve ``"uniform"``, ``"truncnorm"`` or a :class:`QualityModel` instance."""
    if isinstance(quality, QualityModel):
        return quality
    if not isinstance(quality, str):
        raise TypeError(f"quality must be 'uniform', 'truncnorm' or a QualityModel, "
                        f"got {type(quality).__name__}")
    if quality not in _NAMED:
        raise ValueError(f"quality must be one of {sorted(_NAMED)}, got {quality!r}")
    return _NAMED[quality]()
