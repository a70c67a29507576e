"""Shared machinery for the book's experiments: sweeps, seeding and one significance rule.

* :func:`sweep` runs a function over a grid of parameters and returns a tidy
  :class:`pandas.DataFrame`, one row per point. Each point draws from its own generator, derived
  from the seed and the point's own parameters (never its position), serially or on any
  :class:`concurrent.futures.Executor` (a process pool, or a ``dask.distributed`` client's
  ``get_executor()``) with identical results.
* :func:`spawn` is the book's one seeding convention: an int, a :class:`numpy.random.SeedSequence`
  or a :class:`numpy.random.Generator` in, independent child seeds out.
* :func:`mean_ci` and :func:`compare` are the statistics, described next.

Every comparison of two simulated means in the book goes through :func:`compare`: a two-sample
test at a stated level (default 99%), with cluster-robust standard errors whenever runs share
an instance (pass the instance label of each run as ``clusters``). Claims scored over several
cells state their rule in words and count :attr:`Comparison.verdict` values.

How the choices were made:

* The standard error of a mean is the usual ``s / sqrt(n)`` for independent runs. With clusters
  (runs on the same random instance) it is the cluster-robust (CR1) form: the variance of the
  cluster sums around the overall mean, scaled by ``G / (G - 1)``, divided by ``n^2``. When
  every cluster has one run it is exactly ``s / sqrt(n)``.
* Two means are compared by Welch's statistic ``(mean_a - mean_b) / sqrt(se_a^2 + se_b^2)``,
  or, for matched runs (``paired=True``: the same instance, the same oracle run), by the mean of
  the differences. The reference distribution is Student's t with ``G - 1`` degrees of freedom,
  ``G`` the smaller number of runs or clusters (conservative for Welch's statistic, and the usual
  choice for cluster-robust errors); intervals use the same quantile. :func:`compare` refuses
  fewer than 10 runs (or clusters) per sample.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from . import _validation as check

__all__ = ["MeanCI", "mean_ci", "Comparison", "compare", "MIN_SAMPLES", "sweep", "map_points",
           "point_key", "root_sequence", "point_sequence", "spawn", "reemit"]

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

    def __iter__(self):
        """``mean, half_width = mean_ci(x)`` unpacks the pair."""
        return iter((self.mean, self.half_width))

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def _sample(name: str, x: Any) -> NDArray[np.float64]:
    if np.ndim(x) > 1:
        raise ValueError(f"{name} must be one-dimensional (one value per run), got shape {np.shape(x)}")
    arr = check.real_vector(name, np.ravel(check.real_array(name, x)))
    if arr.size < MIN_SAMPLES:
        raise ValueError(f"{name} must hold at least {MIN_SAMPLES} runs, got {arr.size}")
    return arr


def _level(level: Any) -> float:
    return check.real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)


def _se(x: NDArray[np.float64], clusters: Any, name: str) -> tuple[float, int]:
    n = x.size
    if clusters is None:
        return float(x.std(ddof=1) / np.sqrt(n)), n
    if np.ndim(clusters) != 1:
        raise ValueError(f"{name} must be one-dimensional (one label per run), got shape {np.shape(clusters)}")
    labels = np.asarray(clusters)
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
    if not isinstance(paired, (bool, np.bool_)):
        raise TypeError(f"paired must be True or False, got {paired!r}")
    xa, xb = _sample("a", a), _sample("b", b)
    if paired and clusters_b is not None and not np.array_equal(np.asarray(clusters_a), np.asarray(clusters_b)):
        raise ValueError("paired samples share their clusters: give clusters_a only (clusters_b, if "
                         "given, must equal it)")
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


# ------------------------------------------------------------------ seeding
def root_sequence(seed: Any, name: str = "seed") -> np.random.SeedSequence:
    """The book's one seeding convention, as a :class:`numpy.random.SeedSequence`.

    An int (>= 0) or a SeedSequence is used as given; a Generator gives the SeedSequence of four
    64-bit words drawn from it (so the result depends on the generator's state, and the
    generator advances).
    """
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence([int(w) for w in seed.integers(0, 2 ** 63, size=4)])
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be an int seed >= 0, a SeedSequence or a Generator, got "
                        f"{type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name} must be an int seed >= 0, got {seed}")
    return np.random.SeedSequence(int(seed))


def spawn(seed: Any, n: int, name: str = "seed") -> list[np.random.SeedSequence]:
    """``n`` independent child seeds of ``seed`` (int, SeedSequence or Generator).

    Child ``k`` is the SeedSequence with ``k`` appended to the parent's spawn key: the children
    ``numpy.random.SeedSequence.spawn`` would give a fresh parent, but without its side
    effect, so the same SeedSequence always gives the same children."""
    n = check.integer("n", n, low=0, high=10**7)
    root = root_sequence(seed, name)
    return [np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, k), pool_size=root.pool_size)
            for k in range(n)]


def _canonical(value: Any, name: str, depth: int = 0) -> Any:
    """A JSON-able stand-in for a grid value, stable across processes and runs: numbers, strings,
    booleans, None, sequences and mappings of them, arrays, and objects naming themselves by a
    ``name`` or ``label`` string (crowdlib's policies and settings)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"grid value {name} must be finite, got {v}")
        return v
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_canonical(v, name) for v in value.tolist()]
        return {"array": value.dtype.str, "shape": list(value.shape),
                "data": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{name}[{k!r}]", depth + 1)
                for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, name, depth + 1) for v in value]
    if depth > 8:
        raise ValueError(f"grid value {name} nests too deeply")
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict) and not callable(value):
        # an object by its content (a policy's parameters, a setting's instance), not its name;
        # an object holding functions falls back to its name or label below
        try:
            return {f"{type(value).__module__}.{type(value).__qualname__}":
                    {k: _canonical(v, f"{name}.{k}", depth + 1) for k, v in sorted(state.items())
                     if not k.startswith("_")}}
        except TypeError:
            pass
    for attr in ("label", "name"):
        tag = getattr(value, attr, None)
        if isinstance(tag, str) and tag:
            return {type(value).__name__: tag}
    raise TypeError(f"grid value {name} must be a number, string, bool, None, array, a sequence or "
                    f"mapping of them, or an object with a 'name' or 'label' string; got "
                    f"{type(value).__name__}")


def point_key(point: Mapping[str, Any]) -> str:
    """The canonical JSON text of a grid point: what its seed and its cache entry depend on."""
    if not isinstance(point, Mapping):
        raise TypeError(f"point must be a mapping of parameter names to values, got {type(point).__name__}")
    return json.dumps({str(k): _canonical(v, str(k)) for k, v in point.items()}, sort_keys=True)


def point_sequence(root: np.random.SeedSequence, point: Mapping[str, Any]) -> np.random.SeedSequence:
    """The SeedSequence of one grid point: ``root``'s entropy with the point's own key appended
    to its spawn key (eight 32-bit words of the SHA-256 of :func:`point_key`). Two points with
    the same parameters get the same stream; the position of a point in the grid plays no part."""
    words = np.frombuffer(hashlib.sha256(point_key(point).encode()).digest(), dtype="<u4")
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, *map(int, words)))


def _points(grid: Any) -> list[dict[str, Any]]:
    if isinstance(grid, Mapping):
        names = list(grid)
        if not names:
            raise ValueError("grid must name at least one parameter")
        axes = []
        for k in names:
            if not isinstance(k, str) or not k.isidentifier():
                raise ValueError(f"grid parameter names must be identifiers, got {k!r}")
            vals = grid[k]
            if isinstance(vals, (str, bytes)) or not isinstance(vals, Iterable):
                raise TypeError(f"grid[{k!r}] must be a sequence of values, got {type(vals).__name__}")
            vals = list(vals)
            if not vals:
                raise ValueError(f"grid[{k!r}] must hold at least one value")
            axes.append(vals)
        import itertools

        points = [dict(zip(names, combo)) for combo in itertools.product(*axes)]
    elif isinstance(grid, (list, tuple)):
        if not grid:
            raise ValueError("grid must hold at least one point")
        points = []
        for i, p in enumerate(grid):
            if not isinstance(p, Mapping):
                raise TypeError(f"grid[{i}] must be a mapping of parameter names to values, got "
                                f"{type(p).__name__}")
            for k in p:
                if not isinstance(k, str) or not k.isidentifier():
                    raise ValueError(f"grid[{i}]: parameter names must be identifiers, got {k!r}")
            points.append(dict(p))
    else:
        raise TypeError("grid must be a mapping of parameter names to value lists (their product) "
                        f"or a list of dicts, got {type(grid).__name__}")
    if "rng" in {k for p in points for k in p}:
        raise ValueError("grid must not name a parameter 'rng': sweep passes each point's generator as rng")
    keys = [point_key(p) for p in points]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"grid holds the same point twice: {dup}")
    return points


def _call(func: Callable[..., Any], point: dict[str, Any], seq: np.random.SeedSequence) -> Any:
    """One point's work (a module-level function, so process pools can pickle it), with the
    warnings it raised, so that the caller sees them wherever the point ran."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func(**point, rng=np.random.default_rng(seq))
    return result, [(w.category, str(w.message)) for w in caught]


def reemit(caught: list, where: str) -> None:
    """Raise again, in the caller, the warnings a worker recorded (category and message)."""
    import warnings

    if not isinstance(where, str):
        raise TypeError(f"where must be a string (the place the warnings came from), got {type(where).__name__}")
    if not isinstance(caught, (list, tuple)) or not all(
            isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], type) and issubclass(c[0], Warning)
            for c in caught):
        raise TypeError("caught must be a list of (warning category, message) pairs")
    for category, message in caught:
        warnings.warn(f"{message} [{where}]", category, stacklevel=3)


def map_points(func: Callable[..., Any], grid: Any, *, seed: Any, executor: Executor | None = None,
               progress: bool = True, desc: str = "points") -> tuple[list[dict[str, Any]], list[Any]]:
    """The engine of :func:`sweep`: ``(points, results)`` with each raw result in grid order.

    For results that are not scalars (arrays, dicts of arrays); :func:`sweep` builds its table
    on top of this. Seeding, executors and progress as in :func:`sweep`.
    """
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError("executor must be a concurrent.futures.Executor (a ProcessPoolExecutor, or "
                        f"a dask.distributed client's get_executor()), got {type(executor).__name__}")
    points = _points(grid)
    root = root_sequence(seed)
    seqs = [point_sequence(root, p) for p in points]
    from tqdm import tqdm

    bar = tqdm(total=len(points), desc=desc, disable=not progress, file=sys.stderr, mininterval=2.0)
    try:
        if executor is None:
            outs = []
            for p, s in zip(points, seqs):
                outs.append(_call(func, p, s))
                bar.update()
        else:
            from concurrent.futures import as_completed

            futures = {executor.submit(_call, func, p, s): i for i, (p, s) in enumerate(zip(points, seqs))}
            outs = [None] * len(points)
            for fut in as_completed(futures):
                outs[futures[fut]] = fut.result()
                bar.update()
    finally:
        bar.close()
    for p, (_, caught) in zip(points, outs):     # in grid order, whatever the executor
        reemit(caught, f"at {point_key(p)}")
    return points, [r for r, _ in outs]


def _scalar_value(v: Any, where: str) -> Any:
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    raise TypeError(f"{where} must be a scalar (number, bool or string), got {type(v).__name__}; "
                    "use map_points for array results")


def _column_value(v: Any) -> Any:
    """A grid value as a table cell: itself if scalar, else its canonical text."""
    if v is None or isinstance(v, (bool, int, float, str, np.integer, np.floating, np.bool_)):
        return v.item() if isinstance(v, np.generic) else v
    for attr in ("label", "name"):                     # a policy or setting shows its name
        tag = getattr(v, attr, None)
        if isinstance(tag, str) and tag:
            return tag
    c = _canonical(v, "value")
    if isinstance(c, dict) and len(c) == 1 and isinstance(next(iter(c.values())), str):
        return next(iter(c.values()))                  # an object's name or label
    return json.dumps(c, sort_keys=True)


def sweep(func: Callable[..., Any], grid: Any, *, seed: Any, executor: Executor | None = None,
          progress: bool = True):
    """Evaluate ``func(**point, rng=generator)`` at every point of ``grid``; one table row each.

    Parameters
    ----------
    func : callable
        Takes the grid's parameters by name and ``rng`` (a :class:`numpy.random.Generator`);
        returns a scalar (column ``value``) or a mapping of result names to scalars. With an
        executor it must be picklable (a module-level function; dask also takes lambdas).
    grid : mapping or list of dicts
        ``{name: values}`` (every combination, the first name varying slowest) or an explicit
        list of points. Values are numbers, strings, arrays, or objects with a ``name`` or
        ``label`` (policies, settings); a point may not appear twice.
    seed : int, SeedSequence or Generator
        Each point's generator is derived from ``seed`` and the point's own parameters
        (:func:`point_sequence`), never from its position: adding, removing or reordering points
        leaves every other point's result unchanged.
    executor : concurrent.futures.Executor, optional
        Where to run the points (a ``ProcessPoolExecutor``, or ``dask.distributed.Client(...)
        .get_executor()``). The results are identical to the serial run; crowdlib itself never
        imports dask.
    progress : bool
        A tqdm bar on standard error.

    Returns
    -------
    pandas.DataFrame
        One row per point, in grid order: the parameter columns, then the result columns.
    """
    import pandas as pd

    points, results = map_points(func, grid, seed=seed, executor=executor, progress=progress,
                                 desc="sweep")
    rows = []
    for p, r in zip(points, results):
        if isinstance(r, Mapping):
            res = {str(k): _scalar_value(v, f"result {k!r} at {point_key(p)}") for k, v in r.items()}
        else:
            res = {"value": _scalar_value(r, f"the result at {point_key(p)}")}
        clash = set(res) & set(p)
        if clash:
            raise ValueError(f"result names {sorted(clash)} repeat parameter names; rename them")
        rows.append({**{k: _column_value(v) for k, v in p.items()}, **res})
    return pd.DataFrame(rows)
