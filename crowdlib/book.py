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


def cached(name: str, compute: Callable[..., Mapping[str, Any]], **params: Any) -> dict[str, np.ndarray]:
    """Return ``compute(**params)``, computed once and stored as ``.npz``.

    The key is ``name`` plus a hash of the JSON of ``params`` (which must be
    JSON-serialisable), of crowdlib's source and of ``$CROWDLIB_CACHE_SALT``, so editing
    the library recomputes. ``python -m crowdlib execute`` sets the salt to a hash of the
    chapter's code cells, so editing a chapter's code (a setting a compute function reads
    from the chapter, say) recomputes that chapter's results too. Delete the cache
    directory (``make force``) to force recomputation.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string, got {name!r}")
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    digest.update(_library_fingerprint())  # a change to crowdlib invalidates every entry
    digest.update(os.environ.get("CROWDLIB_CACHE_SALT", "").encode())
    key = digest.hexdigest()[:16]
    path = _cache_dir() / f"{name}-{key}.npz"
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    result = {k: np.asarray(v) for k, v in compute(**params).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one temporary file per process
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


def execution_key(chapter: str, root: Path | None = None, ledger: bool = True) -> str:
    """Hash of everything a chapter's execution depends on: its source, crowdlib's source, the
    pinned requirements, the Python version and (``ledger``) the stored ledger it is verified
    against."""
    import platform

    root = root or book_root()
    h = hashlib.sha256(platform.python_version().encode())
    parts = [root / "chapters" / f"{chapter}.md", root / "requirements.txt"]
    parts += [root / "ledger" / f"{chapter}.json"] if ledger else []
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
    names = chapter_names(root)
    if chapter not in names:
        raise ValueError(f"chapter must be one of {names}, got {chapter!r}")
    key = execution_key(chapter, root)
    out = root / "_build" / "executed" / f"{chapter}.ipynb"
    stored_path = root / "chapters" / f"{chapter}.ipynb"
    ran = False
    mode = "write" if store else "verify"
    try:
        previous = nbformat.read(out, as_version=4).metadata.get("crowdlib", {}).get("key")
    except Exception:  # missing, or left half-written by an interrupted run: execute again
        previous = None
    if force or previous != key:
        sources = execution_key(chapter, root, ledger=False)
        nb = jupytext.read(root / "chapters" / f"{chapter}.md")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        env = {**os.environ, "CROWDLIB_LEDGER": mode,
               "CROWDLIB_CACHE_SALT": hashlib.sha256(code.encode()).hexdigest()[:16]}
        env.setdefault("CROWDLIB_CACHE", str(root / ".crowdlib-cache"))
        env.pop("MPLBACKEND", None)  # the inline backend, so figures are stored as PNG outputs
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(root / "chapters")}})
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
            raise ChapterFailed(f"{stored_path.name} is missing: run `make chapter NAME={chapter}`")
        problems = compare_outputs(fresh, nbformat.read(stored_path, as_version=4))
        if problems:
            raise ChapterFailed(f"chapter {chapter!r}: the outputs differ from {stored_path.name} (run "
                                f"`make chapter NAME={chapter}` if the change is intended):\n  "
                                + "\n  ".join(problems))
    return out, ran


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
    for cell in jupytext.read(root / "chapters" / f"{chapter}.md").cells:
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
    if chapter not in chapter_names(root):
        raise ValueError(f"chapter must be one of {chapter_names(root)}, got {chapter!r}")
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
    namespace: dict[str, Any] = {"__name__": f"crowdlib_figures_{chapter}"}
    try:
        os.chdir(root / "chapters")
        for number, cell in enumerate(jupytext.read(root / "chapters" / f"{chapter}.md").cells):
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
