"""Helpers the chapters share: saving figures and caching expensive results.

* :func:`save_figure` writes a figure to ``$CROWDLIB_FIGURES/<name>.png`` when
  that variable is set (``make chapter NAME=...`` sets it) and does nothing
  otherwise, so building the book or running the tests writes no files.
* :func:`cached` computes a dictionary of arrays once per set of parameters
  and stores it under ``$CROWDLIB_CACHE`` (default ``.crowdlib-cache`` in the
  working directory); later calls with the same parameters load it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np


def save_figure(fig: Any, name: str) -> Path | None:
    """Save ``fig`` as ``<name>.png`` in ``$CROWDLIB_FIGURES`` if it is set."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty file stem without '/', got {name!r}")
    target = os.environ.get("CROWDLIB_FIGURES")
    if not target:
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    out = path / f"{name}.png"
    fig.savefig(out, dpi=150, bbox_inches="tight")
    return out


def _cache_dir() -> Path:
    return Path(os.environ.get("CROWDLIB_CACHE", ".crowdlib-cache"))


def _library_fingerprint() -> bytes:
    """Hash of crowdlib's own source files."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.digest()


def cached(name: str, compute: Callable[..., Mapping[str, Any]], **params: Any) -> dict[str, np.ndarray]:
    """Return ``compute(**params)``, computed once and stored as ``.npz``.

    The key is ``name`` plus a hash of the JSON of ``params`` (which must be
    JSON-serialisable) and of crowdlib's source, so editing the library
    recomputes. Delete the cache directory to force recomputation.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string, got {name!r}")
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    digest.update(_library_fingerprint())  # a change to crowdlib invalidates every entry
    key = digest.hexdigest()[:16]
    path = _cache_dir() / f"{name}-{key}.npz"
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    result = {k: np.asarray(v) for k, v in compute(**params).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **result)
    tmp.replace(path)
    return result


def table(headers: list[str], rows: list[list[Any]] | list[tuple[Any, ...]]) -> Any:
    """A Markdown table for display in a notebook (cells are formatted with ``str``).

    A ``|`` inside a cell (as in ``E[X | Y]``) is escaped so it cannot split the cell.
    """
    if not headers or any(len(r) != len(headers) for r in rows):
        raise ValueError("every row of rows must have one cell per header")
    from IPython.display import Markdown

    def cell(c: Any) -> str:
        return str(c).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return Markdown("\n".join(lines))


def glue(name: str, value: Any, display: bool = False) -> None:
    """Paste a computed value into the chapter's prose.

    A number is pasted with a format, ``{glue:text}`name:.3f```; a string is Markdown (math
    included), pasted with ``{glue:md}`name```. A thin wrapper of :func:`myst_nb.glue` that
    hands it plain Python numbers: NumPy 2 prints its scalars as ``np.float64(...)``, which a
    format spec in the prose cannot parse.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string, got {name!r}")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"value must be a number or a string, got {type(value).__name__}")
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    from myst_nb import glue as _glue

    if isinstance(value, str):
        from IPython.display import Markdown

        value = Markdown(value)
    _glue(name, value, display=display)
