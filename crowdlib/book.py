"""Helpers the chapters share: saving figures and caching expensive results.

* :func:`save_figure` writes a figure to ``$CROWDLIB_FIGURES/<name>.png`` when
  that variable is set (``make chapter NAME=...`` sets it) and does nothing
  otherwise, so building the book or running the tests writes no files.
* :func:`cached` computes a dictionary of arrays once per set of parameters
  and stores it under ``$CROWDLIB_CACHE`` (default ``.crowdlib-cache`` in the
  working directory); later calls with the same parameters load it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np


def save_figure(fig: Any, name: str) -> Path | None:
    """Save ``fig`` as ``<name>.<format>`` in ``$CROWDLIB_FIGURES`` if it is set.

    The format is ``$CROWDLIB_FIGURE_FORMAT``: ``png`` (the default) or ``svg``.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty file stem without '/', got {name!r}")
    target = os.environ.get("CROWDLIB_FIGURES")
    if not target:
        return None
    fmt = os.environ.get("CROWDLIB_FIGURE_FORMAT", "png")
    if fmt not in ("png", "svg"):
        raise ValueError(f"CROWDLIB_FIGURE_FORMAT must be 'png' or 'svg', got {fmt!r}")
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    out = path / f"{name}.{fmt}"
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


class CachedResult(dict):
    """The dict :func:`cached` returns, saying where it came from: ``from_cache`` (loaded, not
    computed) and ``path`` (the ``.npz`` file)."""

    from_cache: bool = False
    path: Path | None = None


def _fingerprint(obj: Any, seen: set[int] | None = None, depth: int = 0) -> Any:
    """A stable, JSON-able description of a compute function: its code, constants, defaults,
    closure and the globals it reads (functions recursively, values by content). Modules count by
    name only, since crowdlib's own source is hashed separately."""
    import types

    seen = set() if seen is None else seen
    if depth > 6:
        return "<deep>"
    if isinstance(obj, types.ModuleType):
        return {"module": obj.__name__}
    if isinstance(obj, functools.partial):
        return {"partial": _fingerprint(obj.func, seen, depth + 1),
                "args": [_fingerprint(a, seen, depth + 1) for a in obj.args],
                "kw": {k: _fingerprint(v, seen, depth + 1) for k, v in sorted(obj.keywords.items())}}
    if isinstance(obj, types.MethodType):
        return {"method": _fingerprint(obj.__func__, seen, depth + 1),
                "self": _fingerprint(obj.__self__, seen, depth + 1)}
    if isinstance(obj, types.FunctionType):
        if id(obj) in seen:
            return {"function": obj.__qualname__}
        seen.add(id(obj))
        if obj.__module__ and obj.__module__.split(".")[0] == "crowdlib":
            return {"function": f"{obj.__module__}.{obj.__qualname__}"}   # covered by the source hash
        code = obj.__code__
        names = _code_names(code)
        glob = {n: _fingerprint(obj.__globals__[n], seen, depth + 1) for n in sorted(names)
                if n in obj.__globals__}
        cells = [_fingerprint(c.cell_contents, seen, depth + 1) if _cell_full(c) else "<empty>"
                 for c in (obj.__closure__ or ())]
        return {"code": _code_digest(code), "defaults": _fingerprint(obj.__defaults__, seen, depth + 1),
                "kwdefaults": _fingerprint(obj.__kwdefaults__, seen, depth + 1),
                "globals": glob, "closure": cells}
    if isinstance(obj, type):
        if obj.__module__.split(".")[0] in ("crowdlib", "builtins", "numpy", "pandas", "scipy"):
            return {"class": f"{obj.__module__}.{obj.__qualname__}"}
        if id(obj) in seen:
            return {"class": obj.__qualname__}
        seen.add(id(obj))                      # a class of the reader's own: its methods' code
        return {"class": obj.__qualname__,
                "body": {k: _fingerprint(v, seen, depth + 1) for k, v in sorted(vars(obj).items())
                         if isinstance(v, (types.FunctionType, staticmethod, classmethod, property))
                         or not k.startswith("__")}}
    if isinstance(obj, (staticmethod, classmethod)):
        return _fingerprint(obj.__func__, seen, depth + 1)
    if isinstance(obj, property):
        return [_fingerprint(f, seen, depth + 1) for f in (obj.fget, obj.fset, obj.fdel)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return [_fingerprint(v, seen, depth + 1) for v in obj.tolist()]
        return {"array": obj.dtype.str, "shape": list(obj.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_fingerprint(v, seen, depth + 1) for v in obj]
        return sorted(items, key=repr) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, Mapping):
        return {str(k): _fingerprint(v, seen, depth + 1) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if callable(obj) and hasattr(obj, "__wrapped__"):
        return _fingerprint(obj.__wrapped__, seen, depth + 1)
    if type(obj).__module__.split(".")[0] == "pandas" and hasattr(obj, "to_numpy"):
        import pandas as pd

        values = pd.util.hash_pandas_object(obj, index=True).to_numpy()
        return {"pandas": type(obj).__name__, "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
                "columns": [str(c) for c in getattr(obj, "columns", [])]}
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict) and id(obj) not in seen:
        seen.add(id(obj))                      # an object by its content, its class by its code
        return {"object": _fingerprint(type(obj), seen, depth + 1),
                "state": {k: _fingerprint(v, seen, depth + 1) for k, v in sorted(state.items())}}
    for attr in ("label", "name"):               # objects without a __dict__ name themselves
        tag = getattr(obj, attr, None)
        if isinstance(tag, str) and tag:
            return {type(obj).__name__: tag}
    text = repr(obj)
    if " at 0x" in text:                            # an address is not content: the type only
        return {"object": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    return {"repr": text}


def _cell_full(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _code_names(code: Any) -> set[str]:
    import types

    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _code_digest(code: Any) -> str:
    """The bytecode, constants and names of a code object (nested code objects included)."""
    import types

    h = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(_code_digest(const).encode())
        elif isinstance(const, frozenset):          # its repr's order varies with the hash seed
            h.update(repr(sorted(map(repr, const))).encode())
        else:
            h.update(repr(const).encode())
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    return h.hexdigest()


def _json_param(value: Any) -> Any:
    """``json.dumps`` default for cache parameters: arrays by dtype, shape and content."""
    if isinstance(value, np.ndarray):
        return {"array": value.dtype.str, "shape": list(value.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"cache parameters must be JSON values or numpy arrays, got {type(value).__name__}")


def cache_key(name: str, compute: Callable[..., Any], **params: Any) -> str:
    """The key :func:`cached` files a result under (see there)."""
    try:
        text = json.dumps(params, sort_keys=True, default=_json_param)
    except TypeError as err:
        raise TypeError(f"params: {err}") from None
    digest = hashlib.sha256(text.encode())
    digest.update(json.dumps(_fingerprint(compute), sort_keys=True, default=repr).encode())
    digest.update(_library_fingerprint())  # a change to crowdlib invalidates every entry
    digest.update(os.environ.get("CROWDLIB_CACHE_SALT", "").encode())
    return digest.hexdigest()[:16]


def cached(name: str, compute: Callable[..., Mapping[str, Any]], **params: Any) -> CachedResult:
    """Return ``compute(**params)``, computed once and stored as ``.npz``.

    The key is ``name`` plus a hash of

    * the parameters (JSON values, or numpy arrays, hashed by content);
    * the compute function itself: its code, defaults, closure, and the globals it reads
      (functions recursively, values by content), so a lambda that reads a chapter's global
      recomputes when that global changes;
    * crowdlib's source, and ``$CROWDLIB_CACHE_SALT`` (``python -m crowdlib execute`` sets it to
      a hash of the page's code cells).

    ``compute`` must return a mapping of names to arrays (or scalars) that ``.npz`` can load back
    without pickling: an object array (ragged or nested data) is refused with a ``TypeError``
    before anything is written. The returned dict says where it came from (``from_cache``,
    ``path``), and the ``crowdlib.cache`` logger logs each load at INFO level. ``make
    clean-cache`` (or deleting the folder) forces recomputation. Since the values a compute
    function reads are part of the key, a function that mutates what it reads (a call counter
    in its closure, say) recomputes on every call.
    """
    import logging

    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string, got {name!r}")
    if not callable(compute):
        raise TypeError(f"compute must be callable, got {type(compute).__name__}")
    key = cache_key(name, compute, **params)
    path = _cache_dir() / f"{name}-{key}.npz"
    log = logging.getLogger("crowdlib.cache")
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            out = CachedResult({k[2:]: data[k] for k in data.files})      # keys stored as "r_<key>"
        out.from_cache, out.path = True, path
        log.info("loaded %s from the cache (%s)", name, path.name)
        return out
    raw = compute(**params)
    if not isinstance(raw, Mapping):
        raise TypeError(f"compute must return a mapping of names to arrays, got {type(raw).__name__}")
    result = CachedResult()
    for k, v in raw.items():
        if type(v).__module__.split(".")[0] == "pandas":
            raise TypeError(f"result {k!r} is a pandas object, which .npz would store without its "
                            "index and columns; return df.to_dict('list') or its columns as arrays")
        if isinstance(v, (list, tuple)) and v and len({type(x) for x in v if not isinstance(x, (int, float, bool, np.number))}) \
                and any(isinstance(x, str) for x in v) and not all(isinstance(x, str) for x in v):
            raise TypeError(f"result {k!r} mixes strings and numbers, which an array would turn into "
                            "strings; store them as separate keys")
        if not isinstance(k, str) or not k:
            raise TypeError(f"compute's result keys must be non-empty strings, got {k!r}")
        try:
            arr = np.asarray(v)
        except ValueError as err:   # ragged
            raise TypeError(f"result {k!r} cannot be stored without pickling ({err}); return "
                            "rectangular arrays") from None
        if arr.dtype == object:
            raise TypeError(f"result {k!r} is an object array (nested or ragged data), which .npz "
                            "cannot load back without pickling; return numeric or string arrays")
        result[k] = arr
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one temporary file per process
    np.savez(tmp, **{f"r_{k}": v for k, v in result.items()})   # a key named "file" cannot clash
    tmp.replace(path)
    result.from_cache, result.path = False, path
    log.info("computed %s and stored it in the cache (%s)", name, path.name)
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


# -- executing chapters: one cached execution serves the tests and the book -------------------
#: Regexes applied to text outputs before stored and fresh outputs are compared (addresses,
#: progress bars, figure reprs); the same list the stored notebooks were checked with.
SANITIZE = [(r"0x[0-9a-f]+", "0xADDRESS"), (r"\d+%\|.*\|.*", "PROGRESS"),
            (r"<Figure size \d+x\d+ with \d+ Axes>", "<Figure>")]
#: A code cell with this tag has machine-dependent output (timings): it is executed and must
#: not fail, but its output is not compared, and storing keeps the previous output while the
#: cell's source is unchanged (so re-executing an unchanged chapter changes no file).
VOLATILE_TAG = "nbval-ignore-output"


def book_root() -> Path:
    """The book's root: the nearest folder above the working directory (or above crowdlib's
    checkout) that holds ``_toc.yml``."""
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "_toc.yml").exists():
                return folder
    raise FileNotFoundError("no _toc.yml above the working directory: run this inside the book")


def chapter_names(root: Path | None = None) -> list[str]:
    """The chapters of the book, in reading order (file stems of ``chapters/*.md`` in the toc)."""
    import re

    root = root or book_root()
    return re.findall(r"file: chapters/(\w+)", (root / "_toc.yml").read_text())


def experiment_names(root: Path | None = None) -> list[str]:
    """The experiment pages, ``experiments/<stem>`` for every ``experiments/*.md``, sorted. The
    book's "Experiments" part lists them by a glob, so a new file there needs no other edit."""
    root = root or book_root()
    return [f"experiments/{p.stem}" for p in sorted((root / "experiments").glob("*.md"))]


def page_names(root: Path | None = None) -> list[str]:
    """Every executed page: the chapters (by stem), then the experiments (``experiments/...``)."""
    root = root or book_root()
    return chapter_names(root) + experiment_names(root)


def page_source(page: str, root: Path | None = None) -> Path:
    """The MyST source of a page: ``chapters/<page>.md`` or ``<page>.md`` for an experiment."""
    root = root or book_root()
    return root / (f"{page}.md" if page.startswith("experiments/") else f"chapters/{page}.md")


def _is_experiment(page: str) -> bool:
    return page.startswith("experiments/")


def execution_key(chapter: str, root: Path | None = None, ledger: bool = True) -> str:
    """Hash of everything a chapter's execution depends on: its source, crowdlib's source, the
    pinned requirements, the Python version and (``ledger``) the stored ledger it is verified
    against."""
    import platform

    root = root or book_root()
    h = hashlib.sha256(platform.python_version().encode())
    parts = [page_source(chapter, root), root / "requirements.txt"]
    parts += [root / "ledger" / f"{chapter}.json"] if ledger and not _is_experiment(chapter) else []
    parts += sorted((root / "crowdlib").glob("*.py"))
    for path in parts:
        h.update(path.name.encode())
        h.update(path.read_bytes() if path.exists() else b"<missing>")
    return h.hexdigest()[:20]



def _strip_progress(text: str) -> str:
    """``text`` without progress-bar segments (tqdm's ``NN%|...|`` lines and carriage returns);
    everything else a stream printed, warnings included, is kept."""
    import re

    segments = re.split(r"(\r|\n)", text)
    kept, out = [], []
    for piece in segments:
        if piece == "\r":
            continue
        if piece == "\n":
            if kept and kept[-1] is not None:
                out.append(kept[-1] + "\n")
            kept.clear()
            continue
        kept.append(None if re.search(r"\d+%\|", piece) or not piece.strip() else piece)
    if kept and kept[-1] is not None:
        out.append(kept[-1])
    return "".join(out)


def _clean_outputs(outputs: list) -> list:
    """Merge adjacent chunks of one stream (chunking varies between runs) and drop progress bars."""
    kept: list = []
    for out in outputs:
        if out.get("output_type") == "stream":
            text = out.get("text", "")
            text = text if isinstance(text, str) else "".join(text)
            if kept and kept[-1].get("output_type") == "stream" and kept[-1].get("name") == out.get("name"):
                kept[-1]["text"] += text
                continue
            out["text"] = text
        kept.append(out)
    for out in kept:
        if out.get("output_type") == "stream":
            out["text"] = _strip_progress(out["text"])
    return [o for o in kept if o.get("output_type") != "stream" or o["text"].strip()]


def _normalise(nb: Any) -> Any:
    """Stable ids, no execution timestamps, no progress-bar text, no machine-specific Python
    version: the same execution always serialises to the same bytes."""
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"c{index:03d}"
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell["outputs"] = _clean_outputs(cell.get("outputs", []))
    nb.metadata.pop("widgets", None)
    nb.metadata.get("language_info", {}).pop("version", None)
    return nb


def _text_outputs(cell: Any) -> list[str]:
    import copy
    import re

    texts = []
    for out in _clean_outputs(copy.deepcopy(list(cell.get("outputs", [])))):  # as stored
        kind = out.get("output_type")
        if kind == "stream":
            texts.append(f"{out.get('name')}: {out['text']}")
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            for mime in sorted(data):
                if mime.startswith("image/"):
                    blob = data[mime] if isinstance(data[mime], str) else "".join(data[mime])
                    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
                    texts.append(f"{mime}: sha256 {digest}")  # identical bytes, run after run
                else:
                    value = data[mime]
                    texts.append(f"{mime}: {value if isinstance(value, str) else ''.join(value)}")
        elif kind == "error":
            texts.append(f"error: {out.get('ename')}: {out.get('evalue')}")
    joined = "\n".join(texts)
    for pattern, repl in SANITIZE:
        joined = re.sub(pattern, repl, joined)
    return joined.splitlines()


def compare_outputs(fresh: Any, stored: Any) -> list[str]:
    """Where a fresh execution's outputs differ from the stored notebook's, one line per cell
    (cells tagged :data:`VOLATILE_TAG` are skipped)."""
    problems = []
    if len(fresh.cells) != len(stored.cells):
        return [f"{len(fresh.cells)} cells, the stored notebook has {len(stored.cells)}"]
    for number, (a, b) in enumerate(zip(fresh.cells, stored.cells), 1):
        meta = lambda c: (c.metadata.get("mystnb"), c.metadata.get("tags"))  # noqa: E731
        if (a.cell_type, a.source.strip(), meta(a)) != (b.cell_type, b.source.strip(), meta(b)):
            problems.append(f"cell {number} ({a.cell_type}): its text or figure metadata differs "
                            "from the stored notebook")
    fresh_code = [c for c in fresh.cells if c.cell_type == "code"]
    stored_code = [c for c in stored.cells if c.cell_type == "code"]
    for number, (a, b) in enumerate(zip(fresh_code, stored_code), 1):
        if VOLATILE_TAG in a.metadata.get("tags", []):
            continue
        if a.source.strip() != b.source.strip():
            problems.append(f"code cell {number}: the source differs from the stored notebook")
            continue
        new, old = _text_outputs(a), _text_outputs(b)
        if new != old:
            first = next((i for i, (x, y) in enumerate(zip(new, old)) if x != y), min(len(new), len(old)))
            got = new[first] if first < len(new) else "<nothing>"
            want = old[first] if first < len(old) else "<nothing>"
            problems.append(f"code cell {number} ({a.source.strip().splitlines()[0][:60]!r}): "
                            f"output line {first + 1} is {got[:120]!r}, stored {want[:120]!r}")
    return problems


class ChapterFailed(RuntimeError):
    """A chapter's execution raised, or its outputs differ from the stored notebook."""


def execute_chapter(chapter: str, *, store: bool = False, force: bool = False,
                    root: Path | None = None, timeout: int = 1800) -> tuple[Path, bool]:
    """Execute ``chapters/<chapter>.md`` once per :func:`execution_key`; return the executed
    notebook's path and whether it ran (``False``: the cached execution was still valid).

    ``chapter`` may also be an experiment page, ``experiments/<name>`` (:func:`page_names`). An
    experiment has no ledger, and its first execution stores its ``.ipynb`` pair, so a notebook
    just copied into ``experiments/`` needs no other step.

    The executed notebook goes to ``_build/executed/<chapter>.ipynb``. Without ``store`` its
    outputs must equal the stored ``chapters/<chapter>.ipynb`` (see :func:`compare_outputs`)
    and the chapter's ledger is verified against ``ledger/<chapter>.json``. With ``store`` the
    ledger is rewritten and the executed notebook replaces the stored one (``make chapter``).
    Raises :class:`ChapterFailed` with the failing cell's traceback.
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    root = root or book_root()
    names = page_names(root)
    if chapter not in names:
        raise ValueError(f"chapter must be one of {names}, got {chapter!r}")
    key = execution_key(chapter, root)
    out = root / "_build" / "executed" / f"{chapter}.ipynb"
    source = page_source(chapter, root)
    stored_path = source.with_suffix(".ipynb")
    if _is_experiment(chapter) and not stored_path.exists():
        store = True            # a new experiment: its first execution creates the pair
    ran = False
    mode = "write" if store else "verify"
    try:
        previous = nbformat.read(out, as_version=4).metadata.get("crowdlib", {}).get("key")
    except Exception:  # missing, or left half-written by an interrupted run: execute again
        previous = None
    if force or previous != key:
        sources = execution_key(chapter, root, ledger=False)
        nb = jupytext.read(source)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        env = {**os.environ, "CROWDLIB_LEDGER": mode,
               "CROWDLIB_CACHE_SALT": hashlib.sha256(code.encode()).hexdigest()[:16]}
        env.setdefault("CROWDLIB_CACHE", str(root / ".crowdlib-cache"))
        env.pop("MPLBACKEND", None)  # the inline backend, so figures are stored as PNG outputs
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(source.parent)}})
        try:
            client.execute(env=env)
        except CellExecutionError as err:
            raise ChapterFailed(f"chapter {chapter!r} failed:\n{err}") from None
        except Exception as err:  # a timeout or a dead kernel
            raise ChapterFailed(f"chapter {chapter!r} failed: {type(err).__name__}: {err}") from None
        if execution_key(chapter, root, ledger=False) != sources:
            raise ChapterFailed(f"chapter {chapter!r}: its sources changed while it ran; run again")
        nb = _normalise(nb)
        nb.metadata["crowdlib"] = {"key": execution_key(chapter, root)}  # the ledger as now stored
        _write_atomically(out, nbformat.writes(nb) + "\n")
        ran = True
    fresh = nbformat.read(out, as_version=4)
    if store:
        _store(fresh, stored_path)
    else:
        if not stored_path.exists():
            raise ChapterFailed(f"{stored_path.name} is missing: run `{_make_command(chapter)}`")
        problems = compare_outputs(fresh, nbformat.read(stored_path, as_version=4))
        if problems:
            raise ChapterFailed(f"chapter {chapter!r}: the outputs differ from {stored_path.name} (run "
                                f"`{_make_command(chapter)}` if the change is intended):\n  "
                                + "\n  ".join(problems))
    return out, ran


def _make_command(page: str) -> str:
    """The make command that re-executes and stores a page."""
    if _is_experiment(page):
        return f"make experiment NAME={page.split('/', 1)[1]}"
    return f"make chapter NAME={page}"


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so an interrupted run leaves either
    the old file or the new one."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _store(fresh: Any, stored_path: Path) -> None:
    """Write the executed notebook as the stored one, keeping the previous outputs of volatile
    cells whose source is unchanged."""
    import copy

    import nbformat

    nb = copy.deepcopy(fresh)
    nb.metadata.pop("crowdlib", None)
    if stored_path.exists():
        old = {c.source: c for c in nbformat.read(stored_path, as_version=4).cells
               if c.cell_type == "code" and VOLATILE_TAG in c.metadata.get("tags", [])}
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.source in old and old[cell.source].get("outputs"):
                cell["outputs"] = _clean_outputs(old[cell.source]["outputs"])
    text = nbformat.writes(nb) + "\n"
    if not stored_path.exists() or stored_path.read_text() != text:
        _write_atomically(stored_path, text)


# -- Sphinx extension: page fixes for the built book ------------------------------------------
def _one_copy_of_each_script(app: Any, pagename: str, templatename: str, context: dict,
                             doctree: Any) -> None:
    """Jupyter Book registers sphinx-thebe's inline configuration twice, so every page declared
    ``const THEBE_JS_URL`` twice (a JavaScript error). Keep the first copy of each script."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = (getattr(script, "filename", None) or "", getattr(script, "attributes", {}).get("body", ""))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def _default_theme_mode(app: Any, config: Any) -> None:
    """An empty default mode makes the theme log an error on every page; use the light theme."""
    context = dict(config.html_context or {})
    if not context.get("default_mode"):
        context["default_mode"] = "light"
    config.html_context = context


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point (``sphinx: extra_extensions: [crowdlib.book]``)."""
    app.connect("html-page-context", _one_copy_of_each_script, priority=900)
    app.connect("config-inited", _default_theme_mode, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}


# -- redrawing the figures without Jupyter -----------------------------------------------------
def figure_index(chapter: str, root: Path | None = None) -> list[dict[str, str]]:
    """The figures a chapter draws, in order: file stem, label, section target and caption, read
    from the chapter's source (``save_figure(fig, "name")`` and the cell's figure metadata)."""
    import re

    import jupytext

    root = root or book_root()
    section, rows = "", []
    for cell in jupytext.read(page_source(chapter, root)).cells:
        if cell.cell_type == "markdown":
            targets = re.findall(r"^\((\S+)\)=\s*$", cell.source, re.M)
            section = targets[-1] if targets else section
            continue
        figure = cell.metadata.get("mystnb", {}).get("figure", {})
        for name in re.findall(r'save_figure\(fig, "([^"]+)"\)', cell.source):
            rows.append({"chapter": chapter, "figure": name, "label": figure.get("name", ""),
                         "section": section, "caption": " ".join(figure.get("caption", "").split())})
        # a figure drawn by a helper the cell calls: the helper's file stem is its last argument
        for name in re.findall(r'^\w+\(.*"(\w+)"\)\s*$', cell.source, re.M | re.S):
            if figure and name not in {r["figure"] for r in rows}:
                rows.append({"chapter": chapter, "figure": name, "label": figure.get("name", ""),
                             "section": section,
                             "caption": " ".join(figure.get("caption", "").split())})
    return rows


def redraw_chapter_figures(chapter: str, out: str | os.PathLike, fmt: str = "png",
                           root: Path | None = None) -> list[Path]:
    """Run a chapter's code cells in this Python process (no Jupyter kernel, the Agg backend)
    and save every figure it draws to ``out`` in ``fmt``; return the files written.

    The cells are the chapter's own, so each figure comes from the same calls as in the book.
    The ledger is neither verified nor written (``CROWDLIB_LEDGER=off``); the checks still run.
    """
    import contextlib
    import io
    import warnings

    import jupytext
    import matplotlib

    root = root or book_root()
    if chapter not in page_names(root):
        raise ValueError(f"chapter must be one of {page_names(root)}, got {chapter!r}")
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    out = Path(out).resolve()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = {k: os.environ.get(k) for k in ("CROWDLIB_FIGURES", "CROWDLIB_FIGURE_FORMAT",
                                             "CROWDLIB_LEDGER", "CROWDLIB_CACHE")}
    os.environ.update(CROWDLIB_FIGURES=str(out), CROWDLIB_FIGURE_FORMAT=fmt, CROWDLIB_LEDGER="off")
    os.environ.setdefault("CROWDLIB_CACHE", str(root / ".crowdlib-cache"))
    cwd = Path.cwd()
    namespace: dict[str, Any] = {"__name__": f"crowdlib_figures_{chapter.replace('/', '_')}"}
    try:
        source = page_source(chapter, root)
        os.chdir(source.parent)
        for number, cell in enumerate(jupytext.read(source).cells):
            if cell.cell_type != "code":
                continue
            code = compile(cell.source, f"{chapter}.md, cell {number}", "exec")
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(code, namespace)  # noqa: S102 - the book's own chapter source
            plt.close("all")
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return [out / f"{row['figure']}.{fmt}" for row in figure_index(chapter, root)]
