"""Shared statistics for the book's experiments: one significance rule everywhere.

Every comparison of two simulated means in the book goes through :func:`compare`: a two-sample
test at a stated level (default 99%), with cluster-robust standard errors whenever runs share
an instance (pass the instance label of each run as ``clusters``). Claims scored over several
cells state their rule in words and count :attr:`Comparison.verdict` values.

How the choices were made:

* The standard error of a mean is the usual ``s / sqrt(n)`` for independent runs. With clusters
  (runs on the same random instance) it is the cluster-robust (CR1) form: the variance of the
  cluster sums around the overall mean, scaled by ``G / (G - 1)``, divided by ``n^2``. It
  reduces to ``s / sqrt(n)`` times ``sqrt((n - 1) / n)``-level corrections when every cluster
  has one run.
* Two means are compared by Welch's statistic ``(mean_a - mean_b) / sqrt(se_a^2 + se_b^2)``,
  or, for matched runs (``paired=True``: the same instance, the same oracle run), by the mean of
  the differences. The reference distribution is Student's t with ``G - 1`` degrees of freedom,
  ``G`` the smaller number of runs or clusters (conservative for Welch's statistic, and the usual
  choice for cluster-robust errors); intervals use the same quantile. :func:`compare` refuses
  fewer than 10 runs (or clusters) per sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from . import _validation as check

__all__ = ["MeanCI", "mean_ci", "Comparison", "compare", "MIN_SAMPLES"]

MIN_SAMPLES = 10


@dataclass(frozen=True)
class MeanCI:
    """A sample mean with its standard error and a two-sided confidence interval."""

    mean: float
    se: float
    level: float
    n: int
    clusters: int

    @property
    def half_width(self) -> float:
        return float(stats.t.ppf(0.5 + self.level / 2, self.clusters - 1) * self.se)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def _sample(name: str, x: Any) -> NDArray[np.float64]:
    arr = check.real_vector(name, np.ravel(np.asarray(x, dtype=float)))
    if arr.size < MIN_SAMPLES:
        raise ValueError(f"{name} must hold at least {MIN_SAMPLES} runs, got {arr.size}")
    return arr


def _level(level: Any) -> float:
    return check.real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)


def _se(x: NDArray[np.float64], clusters: Any, name: str) -> tuple[float, int]:
    n = x.size
    if clusters is None:
        return float(x.std(ddof=1) / np.sqrt(n)), n
    labels = np.ravel(np.asarray(clusters))
    if labels.shape != (n,):
        raise ValueError(f"{name} must give one cluster label per run ({n}), got {labels.size}")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError(f"{name} must not contain NaN or infinite labels")
    _, inv = np.unique(labels, return_inverse=True)
    G = int(inv.max()) + 1
    if G < MIN_SAMPLES:
        raise ValueError(f"{name} must span at least {MIN_SAMPLES} clusters, got {G}")
    resid = np.bincount(inv, weights=x - x.mean(), minlength=G)      # cluster sums of residuals
    var = G / (G - 1) * float(np.sum(resid ** 2)) / n ** 2
    return float(np.sqrt(var)), G


def mean_ci(x: Any, level: float = 0.99, clusters: Any = None) -> MeanCI:
    """The mean of ``x`` with a Student-t confidence interval at ``level`` (``G - 1`` degrees of
    freedom); cluster-robust (CR1) when ``clusters`` labels the instance each run shares."""
    arr = _sample("x", x)
    se, G = _se(arr, clusters, "clusters")
    return MeanCI(float(arr.mean()), se, _level(level), arr.size, G)


@dataclass(frozen=True)
class Comparison:
    """The book's two-sample test of ``mean(a) - mean(b)``.

    ``verdict`` is ``"a ahead"``, ``"b ahead"`` or ``"indistinguishable"`` at ``level``.
    """

    difference: float
    se: float
    z: float
    p_value: float
    level: float
    a: MeanCI
    b: MeanCI

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - self.level

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "indistinguishable"
        return "a ahead" if self.difference > 0 else "b ahead"


def compare(a: Any, b: Any, level: float = 0.99, clusters_a: Any = None,
            clusters_b: Any = None, paired: bool = False) -> Comparison:
    """Two-sample test of ``mean(a) = mean(b)`` at ``level`` (two-sided).

    Welch's statistic against Student's t (see the module docstring); standard errors
    cluster-robust when clusters are given. ``paired=True`` tests the mean of ``a - b`` instead (runs matched one to one, for
    example by common random numbers), clustered by ``clusters_a`` if given.
    """
    lv = _level(level)
    xa, xb = _sample("a", a), _sample("b", b)
    se_a, g_a = _se(xa, clusters_a, "clusters_a")
    se_b, g_b = _se(xb, clusters_b, "clusters_b")
    if paired:
        if xa.shape != xb.shape:
            raise ValueError(f"paired samples must have the same length, got {xa.size} and {xb.size}")
        se, dof = _se(xa - xb, clusters_a, "clusters_a")
        diff = float(np.mean(xa - xb))
    else:
        diff, se, dof = float(xa.mean() - xb.mean()), float(np.hypot(se_a, se_b)), min(g_a, g_b)
    if se == 0:
        z = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    else:
        z = diff / se
    p = float(2 * stats.t.sf(abs(z), dof - 1))
    return Comparison(float(diff), float(se), float(z), p, lv,
                      MeanCI(float(xa.mean()), se_a, lv, xa.size, g_a),
                      MeanCI(float(xb.mean()), se_b, lv, xb.size, g_b))
