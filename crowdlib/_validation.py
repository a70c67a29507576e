"""Input checks shared by the public functions of :mod:`crowdlib`.

Every public function validates its arguments with these helpers so that bad
input fails early with a message that names the parameter and the allowed
range, instead of propagating a NaN or a silently wrong answer.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray


class CrowdlibWarning(UserWarning):
    """A crowdlib function was asked for something it can only do approximately or not at all
    (a silent degradation turned into a warning that says why and what to use instead)."""


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    right = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    return f"{left}, {right}"


def real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite real in range."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    too_low = low is not None and (x < low or (low_open and x == low))
    too_high = high is not None and (x > high or (high_open and x == high))
    if too_low or too_high:
        raise ValueError(f"{name} must be in {_interval(low, high, low_open, high_open)}, got {x:g}")
    return x


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    k = int(value)
    if (low is not None and k < low) or (high is not None and k > high):
        if high is None:
            raise ValueError(f"{name} must be an integer >= {low}, got {k}")
        if low is None:
            raise ValueError(f"{name} must be an integer <= {high}, got {k}")
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {k}")
    return k


def real_vector(name: str, values: Any, *, low: float | None = None,
                high: float | None = None, length: int | None = None,
                length_name: str | None = None) -> NDArray[np.float64]:
    """Return a 1-D float array after checking finiteness, range and length."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of real numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a sequence of real numbers") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    # min and max propagate NaN: two fast reductions check finiteness and the range at once
    lo_v, hi_v = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
        raise ValueError(f"{name} must contain only finite numbers (no NaN or inf)")
    if low is not None and lo_v < low:
        raise ValueError(f"every entry of {name} must be >= {low}, got min {lo_v}")
    if high is not None and hi_v > high:
        raise ValueError(f"every entry of {name} must be <= {high}, got max {hi_v}")
    if length is not None and arr.size != length:
        what = f" ({length_name})" if length_name else ""
        raise ValueError(f"{name} must have length {length}{what}, got {arr.size}")
    return arr


def real_array(name: str, values: Any) -> NDArray[np.float64]:
    """A float array of any shape (a scalar included) of finite real numbers."""
    if isinstance(values, (str, bytes)) or np.iscomplexobj(values):
        raise TypeError(f"{name} must be a real number or an array of real numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number or an array of real numbers, got "
                        f"{type(values).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite numbers (no NaN or inf)")
    return arr


def distribution(name: str, prior: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Check a finite distribution given as a mapping ``support point -> probability``.

    Returns the support (in [0, 1]) and the probabilities, both as arrays.
    """
    if not isinstance(prior, Mapping) or len(prior) == 0:
        raise TypeError(f"{name} must be a non-empty mapping from skill to probability")
    support = real_vector(f"{name} (skills)", list(prior.keys()), low=0.0, high=1.0)
    probs = real_vector(f"{name} (probabilities)", list(prior.values()), low=0.0, high=1.0)
    if abs(probs.sum() - 1.0) > 1e-9:
        raise ValueError(f"the probabilities of {name} must sum to 1, got {probs.sum()}")
    return support, probs


def generator(name: str, rng: Any) -> np.random.Generator:
    """The book's one randomness convention: an int seed (>= 0), a SeedSequence, a Generator, or
    None (fresh entropy), turned into a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool):
        raise TypeError(f"{name} must be an int seed, a SeedSequence or a Generator, got bool")
    if isinstance(rng, (Integral, np.integer)):
        if rng < 0:
            raise ValueError(f"{name} must be a seed >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    if rng is None or isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(f"{name} must be an int seed, a SeedSequence or a Generator, got "
                    f"{type(rng).__name__}")


def seed_sequence(name: str, seed: Any) -> np.random.SeedSequence:
    """An int seed (>= 0) or a SeedSequence, as a SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (Integral, np.integer)):
        raise TypeError(f"{name} must be an int seed or a SeedSequence, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name} must be a seed >= 0, got {seed}")
    return np.random.SeedSequence(int(seed))
