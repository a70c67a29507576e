"""The reproduction ledger: one row per numbered item of a paper, each verdict computed by a check.

A chapter opens a :class:`Ledger` with the paper's inventory (every lemma, theorem, figure, ...
in the paper's order, labelled as the paper labels them), records a row for each item with
:meth:`Ledger.check`, and ends with :meth:`Ledger.close`, which adds a ``not covered`` row for
every item still without one, stores the ledger as ``ledger/<chapter>.json`` and shows the
scorecard.

The status of a row is never typed. :meth:`Ledger.check` derives it from booleans the chapter
computes:

* ``holds`` -- the paper's statement, as stated, passed its check. With nothing else given the
  status is ``reproduced``.
* ``holds=False`` with a ``condition`` and ``holds_under_condition=True`` -- ``qualified``: the
  statement fails as stated (the failing case is the evidence) and holds under the condition.
* ``holds=False`` with ``instead`` and ``holds_instead=True`` -- ``erratum``: the failing case is
  the counterexample, ``instead`` says what holds, and its check passed.
* anything else (a failed check nothing explains, a stated condition that the statement did not
  need) raises :class:`CheckFailed` naming the row, which stops the chapter.

:meth:`Ledger.extension` records a result of our own (it must pass); :meth:`Ledger.unreproducible`
records an item whose material is lost or underspecified, saying what is missing.

Every row has a ``kind`` saying what the evidence is: ``symbolic``, ``exact``, ``numeric``,
``simulation``, ``figure`` or ``consistency`` (two routes through the same model, which is
weaker evidence than an independent check and is labelled as such).

Storing and verifying. ``CROWDLIB_LEDGER`` selects what :meth:`Ledger.close` does:
``verify`` (the default) compares the fresh rows with the stored file and raises
:class:`LedgerDrift` naming every row whose status changed, whose value moved beyond its
tolerance, or which appeared or vanished; ``write`` stores the fresh rows (``make chapter`` sets
it); ``off`` does neither. The directory is ``CROWDLIB_LEDGER_DIR`` or ``ledger/`` at the book's
root (the nearest folder above the working directory that holds ``_toc.yml``).

The module is also a Sphinx extension. Listed in ``_config.yml``, it replaces each MyST comment
line ``% ledger: summary``, ``% ledger: rows`` or ``% ledger: errata`` with a table generated from
the stored files, on every build, so the front page and the errata appendix are never typed by
hand.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

#: The statuses a row can have; :meth:`Ledger.check` derives the first three from its checks.
STATUSES = ("reproduced", "qualified", "erratum", "not reproducible", "extension", "not covered")
#: What a row's evidence is; ``consistency`` marks two routes through the same model.
KINDS = ("symbolic", "exact", "numeric", "simulation", "figure", "consistency")
#: The keys of ``python -m crowdlib ledger --json``, in this order.
JSON_KEYS = ("chapter", "label", "statement", "status", "kind", "paper", "ours", "condition",
             "anchor")

__all__ = ["Ledger", "Row", "CheckFailed", "LedgerDrift", "STATUSES", "KINDS", "JSON_KEYS",
           "load", "load_all", "ledger_dir", "drift", "summary_markdown", "rows_markdown",
           "errata_markdown"]


class CheckFailed(AssertionError):
    """A row's check failed, or its evidence does not determine a status; stops the chapter."""


class LedgerDrift(AssertionError):
    """A fresh execution disagrees with the stored ledger (status, value or set of rows)."""


@dataclass(frozen=True)
class Row:
    """One ledger row. ``value``/``tol`` make a number drift-checked; ``evidence`` is the
    counterexample (erratum) or the failing case (qualified); ``instead`` is what holds in place
    of an erratum's statement; ``functions`` name the crowdlib functions the check calls."""

    chapter: str
    label: str
    statement: str
    status: str
    kind: str
    paper: str = ""
    ours: Any = ""
    condition: str = ""
    anchor: str = ""
    evidence: str = ""
    instead: str = ""
    value: float | None = None
    tol: float = 0.0
    functions: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        """The row restricted to :data:`JSON_KEYS`."""
        d = asdict(self)
        return {k: d[k] for k in JSON_KEYS}

    @property
    def key(self) -> tuple[str, str]:
        return (self.label, self.statement)

    def _repr_markdown_(self) -> str:
        """The verdict line a cell shows after recording the row."""
        kind = f" ({self.kind})" if self.kind else ""
        line = f"**{self.label}: {self.status}**{kind}. {self.statement}"
        if self.condition:
            line += f" *Condition:* {self.condition}."
        if self.instead:
            line += f" *What holds instead:* {self.instead}."
        if self.evidence:
            line += f" *Evidence:* {self.evidence}."
        if self.ours != "":
            line += f" *Ours:* {_display(self.ours)}."
        return line

    def __repr__(self) -> str:
        return f"<ledger row {self.chapter} / {self.label}: {self.status}>"


def _text(name: str, value: Any, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _flag(name: str, value: Any) -> bool:
    """A check's outcome: a Python or NumPy bool (not a truthy number or string)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool computed by the check, got {type(value).__name__}")


def _scalar(name: str, value: Any) -> Any:
    """A JSON-ready display value: str, bool, int or finite float."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
        return float(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a string or a number, got {type(value).__name__}")


def _display(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@dataclass
class Ledger:
    """The ledger of one chapter.

    Parameters
    ----------
    chapter : str
        The chapter's file stem (``"contests"``); names the stored file.
    inventory : sequence of (label, description)
        The paper's numbered items in the paper's order, labelled as the paper labels them.
    anchor : str
        The section target (MyST ``(name)=``) that rows point to until :meth:`section` moves it;
        ``not covered`` rows point to it too.
    """

    chapter: str
    inventory: Sequence[tuple[str, str]]
    anchor: str
    rows: list[Row] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        _text("chapter", self.chapter)
        if not self.chapter.isidentifier():
            raise ValueError(f"chapter must be a file stem like 'contests', got {self.chapter!r}")
        _text("anchor", self.anchor)
        items = list(self.inventory)
        if not items:
            raise ValueError("inventory must list at least one item of the paper")
        for item in items:
            if (not isinstance(item, tuple) or len(item) != 2
                    or not all(isinstance(s, str) and s.strip() for s in item)):
                raise TypeError(f"inventory items must be (label, description) strings, got {item!r}")
        labels = [label for label, _ in items]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"inventory labels must be unique; repeated: {dupes}")
        self.inventory = tuple(items)
        self._start_anchor = self.anchor

    # -- recording -------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.inventory)

    def section(self, anchor: str) -> None:
        """Point the rows recorded from now on at the section target ``anchor``."""
        self.anchor = _text("anchor", anchor)

    def _add(self, row: Row) -> Row:
        if self.closed:
            raise RuntimeError("this ledger is closed; open a new Ledger to record more rows")
        if any(r.key == row.key for r in self.rows):
            raise ValueError(f"{row.label}: a row with this statement is already recorded")
        self.rows.append(row)
        return row

    def _common(self, label: str, statement: str, kind: str, paper: Any, ours: Any,
                value: Any, tol: Any, anchor: str | None, functions: Iterable[str]) -> dict:
        _text("label", label)
        _text("statement", statement)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
                raise TypeError(f"value must be a real number, got {type(value).__name__}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"value must be finite, got {value}")
        if isinstance(tol, bool) or not isinstance(tol, (Real, np.floating)) or not tol >= 0 \
                or not math.isfinite(float(tol)):
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        funcs = tuple(functions)
        for f in funcs:
            _text("functions", f)
        return dict(chapter=self.chapter, label=label, statement=statement, kind=kind,
                    paper=_scalar("paper", paper), ours=_scalar("ours", ours),
                    anchor=_text("anchor", anchor) if anchor is not None else self.anchor,
                    value=value, tol=float(tol), functions=funcs)

    def check(self, label: str, statement: str, *, kind: str, holds: Any, paper: Any = "",
              ours: Any = "", condition: str = "", holds_under_condition: Any = None,
              instead: str = "", holds_instead: Any = None, evidence: str = "",
              value: Any = None, tol: Any = 0.0, anchor: str | None = None,
              functions: Iterable[str] = ()) -> Row:
        """Record an item of the paper's inventory; the status follows from the checks.

        Parameters
        ----------
        label : str
            An inventory label (``"Theorem 1"``).
        statement : str
            What is checked, in a sentence.
        kind : str
            One of :data:`crowdlib.ledger.KINDS`.
        holds : bool
            Whether the paper's statement, as stated, passed the check.
        paper, ours : str or number
            The paper's value or claim, and ours.
        condition : str, optional
            The extra condition of a ``qualified`` row.
        holds_under_condition : bool, optional
            Whether the statement passed its check under ``condition``.
        instead : str, optional
            What holds where the paper's statement fails (an ``erratum``).
        holds_instead : bool, optional
            Whether ``instead`` passed its check.
        evidence : str, optional
            The counterexample or failing case, in words (shown in the errata appendix).
        value, tol : float, optional
            A number drift-checked against the stored ledger, with absolute tolerance ``tol``.
        anchor : str, optional
            The section target; default the one set by :meth:`section`.
        functions : iterable of str
            The crowdlib functions the check calls (``"contests.csec"``).

        Raises
        ------
        KeyError
            If ``label`` is not in the inventory.
        CheckFailed
            If the statement failed and neither a condition nor an erratum explains it, or a
            condition/erratum was given for a statement that held.
        """
        if label not in self.labels:
            raise KeyError(f"{label!r} is not in the {self.chapter} inventory: {list(self.labels)}")
        ok = _flag("holds", holds)
        common = self._common(label, statement, kind, paper, ours, value, tol, anchor, functions)
        _text("condition", condition, required=False)
        _text("instead", instead, required=False)
        _text("evidence", evidence, required=False)
        if condition and instead:
            raise ValueError(f"{label}: give a condition (qualified) or instead (erratum), not both")
        if holds_under_condition is not None and not condition:
            raise ValueError(f"{label}: holds_under_condition given without a condition")
        if holds_instead is not None and not instead:
            raise ValueError(f"{label}: holds_instead given without instead")
        if (condition or instead) and not evidence.strip():
            raise ValueError(f"{label}: a qualified or erratum row needs evidence: the failing case, "
                             "in words")
        where = f"{self.chapter} / {label}: {statement}"
        # a qualified row (condition) or an erratum (instead): the statement must fail as stated,
        # and the alternative must pass its own check
        for status, text, flag, flag_name, failed_alone, failed_too in (
                ("qualified", condition, holds_under_condition, "holds_under_condition",
                 f"the statement held without the condition {condition!r}: the qualification is "
                 "not shown to be needed", f"fails even under the condition {condition!r}"),
                ("erratum", instead, holds_instead, "holds_instead",
                 f"the statement held, so the erratum ({instead!r}) has no counterexample",
                 f"what should hold instead failed too: {instead!r}")):
            if not text:
                continue
            if flag is None:
                raise ValueError(f"{label}: a {status} row needs {flag_name}")
            alternative = _flag(flag_name, flag)
            if ok:
                raise CheckFailed(f"{where}\n  {failed_alone}")
            if not alternative:
                raise CheckFailed(f"{where}\n  {failed_too}")
            return self._add(Row(status=status, condition=condition, evidence=evidence,
                                 instead=instead, **common))
        if not ok:
            raise CheckFailed(f"{where}\n  check failed (paper: {_display(common['paper'])}; "
                              f"ours: {_display(common['ours'])})")
        return self._add(Row(status="reproduced", evidence=evidence, **common))

    def extension(self, label: str, statement: str, *, kind: str, holds: Any, ours: Any = "",
                  value: Any = None, tol: Any = 0.0, anchor: str | None = None,
                  functions: Iterable[str] = ()) -> Row:
        """Record a result of our own (not an item of the paper); its check must pass."""
        if label in self.labels:
            raise ValueError(f"{label!r} is an item of the paper: record it with check()")
        ok = _flag("holds", holds)
        common = self._common(label, statement, kind, "", ours, value, tol, anchor, functions)
        if not ok:
            raise CheckFailed(f"{self.chapter} / {label}: {statement}\n  check failed "
                              f"(ours: {_display(common['ours'])})")
        return self._add(Row(status="extension", **common))

    def unreproducible(self, label: str, statement: str, *, missing: str, paper: Any = "",
                       anchor: str | None = None) -> Row:
        """Record an item whose material is lost or underspecified; ``missing`` says what."""
        if label not in self.labels:
            raise KeyError(f"{label!r} is not in the {self.chapter} inventory: {list(self.labels)}")
        _text("missing", missing)
        common = self._common(label, statement, "numeric", paper, "", None, 0.0, anchor, ())
        common["kind"] = ""
        return self._add(Row(status="not reproducible", evidence=missing,
                             **{**common, "ours": f"not reproducible: {missing}"}))

    # -- closing ---------------------------------------------------------------------------
    def all_rows(self) -> list[Row]:
        """Recorded rows in inventory order, a ``not covered`` row for each item without one,
        then the extensions in the order recorded."""
        out: list[Row] = []
        for label, description in self.inventory:
            mine = [r for r in self.rows if r.label == label]
            out += mine or [Row(chapter=self.chapter, label=label, statement=description,
                                status="not covered", kind="", anchor=self._start_anchor)]
        out += [r for r in self.rows if r.status == "extension"]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"chapter": self.chapter,
                "inventory": [{"label": a, "description": b} for a, b in self.inventory],
                "rows": [_row_json(r) for r in self.all_rows()]}

    def close(self, mode: str | None = None, directory: str | os.PathLike | None = None) -> Any:
        """Finish the chapter: store or verify the ledger, and return the scorecard to display.

        ``mode`` defaults to ``$CROWDLIB_LEDGER`` (``verify``, ``write`` or ``off``; default
        ``verify``). Raises :class:`LedgerDrift` in ``verify`` mode when the stored ledger
        differs.
        """
        mode = mode or os.environ.get("CROWDLIB_LEDGER", "verify")
        if mode not in ("verify", "write", "off"):
            raise ValueError(f"mode must be 'verify', 'write' or 'off', got {mode!r}")
        data = self.to_dict()
        path = Path(directory) if directory is not None else ledger_dir()
        path = path / f"{self.chapter}.json"
        if mode == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        elif mode == "verify":
            if not path.exists():
                raise LedgerDrift(f"no stored ledger at {path}: run `make chapter NAME={self.chapter}`")
            problems = drift(json.loads(path.read_text()), data)
            if problems:
                raise LedgerDrift(f"{self.chapter}: this execution differs from {path.name} "
                                  f"(rerun `make chapter NAME={self.chapter}` if the change is "
                                  "intended):\n  " + "\n  ".join(problems))
        self.closed = True
        return scorecard(self.all_rows())


def _row_json(row: Row) -> dict[str, Any]:
    d = asdict(row)
    d["functions"] = list(row.functions)
    return d


def _row_from_json(d: dict[str, Any]) -> Row:
    return Row(**{"instead": "", **d, "functions": tuple(d.get("functions", ()))})


def drift(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """What differs between two ledgers of a chapter, one line per row, naming it.

    Compared: the inventory, the set of rows (label and statement), each row's status, kind,
    condition, evidence, what holds instead, the paper's value, anchor and functions exactly,
    and its ``value`` within the stored ``tol`` (or its ``ours`` exactly when it has no value;
    a row with a value formats ``ours`` from it, so its text may move within the tolerance).
    """
    problems = []
    if stored.get("inventory") != fresh.get("inventory"):
        problems.append("the inventory changed")
    old = {(r["label"], r["statement"]): r for r in stored.get("rows", [])}
    new = {(r["label"], r["statement"]): r for r in fresh.get("rows", [])}
    for key in old.keys() - new.keys():
        problems.append(f"{key[0]}: row vanished ({key[1]!r})")
    for key in new.keys() - old.keys():
        problems.append(f"{key[0]}: new row ({key[1]!r})")
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        for f in ("status", "kind", "condition", "evidence", "instead", "paper", "anchor", "functions"):
            if a.get(f) != b.get(f):
                problems.append(f"{key[0]}: {f} {a[f]!r} -> {b[f]!r} ({key[1]!r})")
        if a.get("value") is not None or b.get("value") is not None:
            va, vb = a.get("value"), b.get("value")
            if va is None or vb is None or abs(va - vb) > a.get("tol", 0.0):
                problems.append(f"{key[0]}: value {va!r} -> {vb!r}, beyond tol {a.get('tol', 0.0)!r}"
                                f" ({key[1]!r})")
        elif a["ours"] != b["ours"]:
            problems.append(f"{key[0]}: ours {a['ours']!r} -> {b['ours']!r} ({key[1]!r})")
    return problems


# -- reading the stored ledgers --------------------------------------------------------------
def ledger_dir() -> Path:
    """``$CROWDLIB_LEDGER_DIR``, else ``ledger/`` beside the nearest ``_toc.yml`` above the
    working directory (or beside crowdlib's checkout), else ``./ledger``."""
    env = os.environ.get("CROWDLIB_LEDGER_DIR")
    if env:
        return Path(env)
    from .book import book_root

    try:
        return book_root() / "ledger"
    except FileNotFoundError:
        return Path("ledger")


def load(chapter: str, directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """The stored ledger of ``chapter`` (its inventory and rows)."""
    _text("chapter", chapter)
    path = (Path(directory) if directory is not None else ledger_dir()) / f"{chapter}.json"
    if not path.exists():
        raise FileNotFoundError(f"no stored ledger for chapter {chapter!r} at {path}")
    return json.loads(path.read_text())


def load_all(directory: str | os.PathLike | None = None) -> list[Row]:
    """Every stored row of every chapter, chapters in reading order (others after, by name)."""
    folder = Path(directory) if directory is not None else ledger_dir()
    stems = sorted(p.stem for p in folder.glob("*.json"))
    from .book import chapter_names

    try:
        chapters = chapter_names()  # the toc's reading order
    except FileNotFoundError:
        chapters = []
    order = [c for c in chapters if c in stems] + [s for s in stems if s not in chapters]
    return [_row_from_json(r) for c in order for r in load(c, folder)["rows"]]


# -- rendering (Markdown for notebooks and for the generated pages) ---------------------------
def _cell(value: Any) -> str:
    return _display(value).replace("|", "\\|").replace("\n", " ")


def _link(row: Row) -> str:
    label = row.label.replace("<", "&lt;").replace("`", "'")
    return f"{{ref}}`{label} <{row.anchor}>`" if row.anchor else label


def scorecard(rows: Sequence[Row]) -> Any:
    """The chapter's closing scorecard: item, status, kind, paper, ours, condition."""
    from IPython.display import Markdown

    return Markdown(_table(["item", "status", "kind", "what is checked", "paper", "ours",
                            "condition"],
                           [[_link(r), f"**{r.status}**", r.kind, r.statement,
                             r.paper, r.ours, r.condition] for r in rows]))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) if str(c).startswith(("{ref}", "{py:obj}")) else _cell(c)
                                for c in r) + " |" for r in rows]
    return "\n".join(lines)


def counts(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """Rows per chapter and status."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r.chapter, dict.fromkeys(STATUSES, 0))[r.status] += 1
    return out


def summary_markdown(rows: Sequence[Row]) -> str:
    """Counts per chapter and status, with a total line."""
    table = counts(rows)
    body = [[f"{{doc}}`chapters/{c}`"] + [n[s] for s in STATUSES] + [sum(n.values())]
            for c, n in table.items()]
    total = ["**all**"] + [sum(n[s] for n in table.values()) for s in STATUSES]
    body.append(total + [sum(total[1:])])
    lines = ["| chapter | " + " | ".join(STATUSES) + " | rows |", "|" + "---|" * (len(STATUSES) + 2)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def _code_links(row: Row) -> str:
    """Links to the API reference for the crowdlib functions a row's check calls."""
    return ", ".join(f"{{py:obj}}`~crowdlib.{name}`" for name in row.functions)


def rows_markdown(rows: Sequence[Row]) -> str:
    """Every row, grouped by chapter, each linked to its section and to the functions it calls."""
    parts = []
    for chapter in dict.fromkeys(r.chapter for r in rows):
        mine = [r for r in rows if r.chapter == chapter]
        parts.append(f"### {{doc}}`chapters/{chapter}`\n\n" + _table(
            ["item", "status", "kind", "what is checked", "code"],
            [[_link(r), r.status, r.kind, r.statement, _code_links(r)] for r in mine]))
    return "\n\n".join(parts)


def errata_markdown(rows: Sequence[Row]) -> str:
    """Every ``erratum`` and ``qualified`` row with its evidence."""
    parts = []
    for status, title in (("erratum", "Errata"), ("qualified", "Qualifications")):
        mine = [r for r in rows if r.status == status]
        head = ["chapter", "item", "the paper", "evidence", "what holds"]
        body = [[r.chapter, _link(r), f"{r.statement} ({r.paper})" if r.paper else r.statement,
                 r.evidence or r.ours,
                 (f"under the condition that {r.condition}" if status == "qualified" else r.instead)]
                for r in mine]
        parts.append(f"## {title} ({len(mine)})\n\n" + (_table(head, body) if body else "None."))
    return "\n\n".join(parts)


# -- Sphinx extension ---------------------------------------------------------------------------
_MARKERS = {"summary": summary_markdown, "rows": rows_markdown, "errata": errata_markdown}


def _fill_markers(app: Any, docname: str, source: list[str]) -> None:
    text = source[0]
    if "% ledger: " not in text:
        return
    rows = load_all(Path(app.srcdir) / "ledger")
    for name, render in _MARKERS.items():
        text = text.replace(f"% ledger: {name}", render(rows))
    source[0] = text


def _always_reread(app: Any, env: Any, added: set, changed: set, removed: set) -> list[str]:
    """Pages with markers are re-read on every build, so they follow the stored ledgers."""
    out = []
    for doc in env.found_docs:
        path = Path(env.doc2path(doc))
        if path.suffix == ".md" and "% ledger: " in path.read_text(errors="ignore"):
            out.append(doc)
    return out


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point (``sphinx: extra_extensions: [crowdlib.ledger]``)."""
    app.connect("source-read", _fill_markers)
    app.connect("env-get-outdated", _always_reread)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
