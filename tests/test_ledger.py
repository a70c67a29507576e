"""crowdlib.ledger: verdicts follow from checks; the stored ledgers are complete and consistent."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crowdlib import book, ledger
from crowdlib.ledger import CheckFailed, Ledger, LedgerDrift

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = book.chapter_names(ROOT)
INV = [("Lemma 1", "a lemma"), ("Theorem 1", "a theorem"), ("Figure 1", "a figure")]
#: the least inventory size of each chapter (the paper's numbered items)
MINIMUM = {"contests": 18, "contracts": 12, "procurement": 18, "incentives": 10, "rating": 12}


def book(**kw):
    return Ledger("demo", INV, anchor="sec-a", **kw)


def test_status_is_computed_from_the_checks():
    lg = book()
    assert lg.check("Lemma 1", "x", kind="exact", holds=np.bool_(True)).status == "reproduced"
    r = lg.check("Theorem 1", "y", kind="numeric", holds=False, condition="c",
                 holds_under_condition=True, evidence="fails at 3")
    assert (r.status, r.condition) == ("qualified", "c")
    r = lg.check("Theorem 1", "z", kind="numeric", holds=False, instead="w", holds_instead=True,
                 evidence="n = 3")
    assert (r.status, r.instead) == ("erratum", "w")
    assert "erratum" in r._repr_markdown_() and "w" in r._repr_markdown_()
    rows = lg.all_rows()
    assert [x.status for x in rows] == ["reproduced", "qualified", "erratum", "not covered"]
    assert rows[-1].label == "Figure 1" and rows[-1].anchor == "sec-a"


@pytest.mark.parametrize("kw", [
    dict(holds=False),
    dict(holds=True, condition="c", holds_under_condition=True, evidence="e"),
    dict(holds=False, condition="c", holds_under_condition=False, evidence="e"),
    dict(holds=True, instead="w", holds_instead=True, evidence="e"),
    dict(holds=False, instead="w", holds_instead=False, evidence="e"),
])
def test_a_failed_or_unexplained_check_stops_and_names_the_row(kw):
    with pytest.raises(CheckFailed, match="demo / Lemma 1: the claim"):
        book().check("Lemma 1", "the claim", kind="exact", **kw)


def test_bad_rows_are_refused():
    lg = book()
    with pytest.raises(KeyError, match="not in the demo inventory"):
        lg.check("Lemma 9", "x", kind="exact", holds=True)
    with pytest.raises(ValueError, match="kind"):
        lg.check("Lemma 1", "x", kind="proof", holds=True)
    with pytest.raises(TypeError, match="holds must be a bool"):
        lg.check("Lemma 1", "x", kind="exact", holds=1)
    with pytest.raises(TypeError, match="holds must be a bool"):
        lg.check("Lemma 1", "x", kind="exact", holds="reproduced")
    with pytest.raises(ValueError, match="not both"):
        lg.check("Lemma 1", "x", kind="exact", holds=False, condition="c",
                 holds_under_condition=True, instead="w", holds_instead=True, evidence="e")
    with pytest.raises(ValueError, match="needs evidence"):
        lg.check("Lemma 1", "x", kind="exact", holds=False, condition="c", holds_under_condition=True)
    with pytest.raises(ValueError, match="without a condition"):
        lg.check("Lemma 1", "x", kind="exact", holds=True, holds_under_condition=True)
    with pytest.raises(ValueError, match="without instead"):
        lg.check("Lemma 1", "x", kind="exact", holds=True, holds_instead=False)
    with pytest.raises(ValueError, match="item of the paper"):
        lg.extension("Lemma 1", "x", kind="exact", holds=True)
    with pytest.raises(CheckFailed):
        lg.extension("Ours: speed", "x", kind="numeric", holds=False)
    with pytest.raises(ValueError, match="value must be finite"):
        lg.check("Lemma 1", "x", kind="exact", holds=True, value=float("nan"))
    with pytest.raises(ValueError, match="unique"):
        Ledger("demo", [("A", "a"), ("A", "b")], anchor="s")
    lg.check("Lemma 1", "x", kind="exact", holds=True)
    with pytest.raises(ValueError, match="already recorded"):
        lg.check("Lemma 1", "x", kind="exact", holds=True)


def test_write_then_verify_and_drift_names_the_row(tmp_path):
    def run(v, holds_as_stated=True):
        lg = book()
        lg.check("Lemma 1", "x", kind="numeric", holds=True, ours=v, value=v, tol=1e-3)
        if holds_as_stated:
            lg.check("Theorem 1", "y", kind="exact", holds=True)
        else:
            lg.check("Theorem 1", "y", kind="exact", holds=False, instead="z", holds_instead=True,
                     evidence="a counterexample")
        lg.unreproducible("Figure 1", "f", missing="the figure's data")
        return lg

    run(0.5).close("write", tmp_path)
    run(0.5004).close("verify", tmp_path)  # within tol
    with pytest.raises(LedgerDrift, match=r"Lemma 1: value 0\.5 -> 0\.51"):
        run(0.51).close("verify", tmp_path)
    with pytest.raises(LedgerDrift, match="Theorem 1: status 'reproduced' -> 'erratum'"):
        run(0.5, holds_as_stated=False).close("verify", tmp_path)
    lg = run(0.5)
    lg.section("sec-b")
    lg.extension("Ours: x", "y", kind="numeric", holds=True)
    with pytest.raises(LedgerDrift, match="Ours: x: new row"):
        lg.close("verify", tmp_path)
    lg = book()
    with pytest.raises(LedgerDrift, match="Lemma 1: row vanished"):
        lg.close("verify", tmp_path)
    with pytest.raises(LedgerDrift, match="no stored ledger"):
        book().close("verify", tmp_path / "empty")
    stored = json.loads((tmp_path / "demo.json").read_text())
    assert [r["status"] for r in stored["rows"]] == ["reproduced", "reproduced", "not reproducible"]


def test_closed_ledger_takes_no_rows(tmp_path):
    lg = book()
    lg.close("off", tmp_path)
    with pytest.raises(RuntimeError, match="closed"):
        lg.check("Lemma 1", "x", kind="exact", holds=True)


def test_markdown_pages_link_every_row(tmp_path):
    lg = book()
    lg.check("Lemma 1", "a | b", kind="exact", holds=True)
    lg.check("Theorem 1", "y", kind="numeric", holds=False, instead="w", holds_instead=True,
             evidence="n = 3")
    lg.close("write", tmp_path)
    stored = json.loads((tmp_path / "demo.json").read_text())
    changed = json.loads(json.dumps(stored))
    changed["rows"][1]["evidence"] = "n = 4"
    assert ledger.drift(stored, changed) == ["Theorem 1: evidence 'n = 3' -> 'n = 4' ('y')"]
    rows = ledger.load_all(tmp_path)
    assert "a \\| b" in ledger.rows_markdown(rows)
    assert "{ref}`Theorem 1 <sec-a>`" in ledger.errata_markdown(rows)
    summary = ledger.summary_markdown(rows).splitlines()
    assert summary[-1].startswith("| **all** | 1 | 0 | 1 | 0 | 0 | 1 | 3 |")


# -- the stored ledgers of the book ----------------------------------------------------------
STORED = {c: ledger.load(c, ROOT / "ledger") for c in CHAPTERS
          if (ROOT / "ledger" / f"{c}.json").exists()}


def test_every_chapter_has_a_stored_ledger():
    on_disk = sorted(p.stem for p in (ROOT / "chapters").glob("*.md"))
    assert sorted(CHAPTERS) == on_disk, "every chapter source must be in _toc.yml, and only those"
    assert sorted(STORED) == on_disk, "run `make chapter NAME=...` for the missing ones"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_stored_ledger_is_complete_and_well_formed(chapter):
    data = STORED[chapter]
    labels = [i["label"] for i in data["inventory"]]
    assert len(labels) >= MINIMUM[chapter], f"{chapter}: inventory has only {len(labels)} items"
    targets = set(re.findall(r"^\((\S+)\)=\s*$", (ROOT / "chapters" / f"{chapter}.md").read_text(),
                             re.M))
    covered = set()
    for row in data["rows"]:
        name = f"{chapter} / {row['label']}"
        assert row["status"] in ledger.STATUSES, name
        if row["status"] == "extension":
            assert row["label"] not in labels, name
        else:
            assert row["label"] in labels, f"{name}: label not in the inventory"
            covered.add(row["label"])
        if row["status"] not in ("not covered", "not reproducible"):
            assert row["kind"] in ledger.KINDS, name
        assert bool(row["condition"]) == (row["status"] == "qualified"), name
        assert row["anchor"] in targets, f"{name}: anchor {row['anchor']!r} is not a section target"
    assert covered == set(labels), f"{chapter}: inventory items without a row"


def test_cli_json_has_exactly_the_documented_keys():
    out = subprocess.run([sys.executable, "-m", "crowdlib", "ledger", "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    assert rows and all(tuple(r) == ledger.JSON_KEYS for r in rows)
    assert {r["chapter"] for r in rows} == set(STORED)
    text = subprocess.run([sys.executable, "-m", "crowdlib", "ledger"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert text.splitlines()[-1].startswith("all")
    bad = subprocess.run([sys.executable, "-m", "crowdlib", "ledger", "--chapter", "nope"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "contests" in bad.stderr


def test_reader_facing_text_stays_inside_the_book():
    pattern = re.compile(r"reference note|shared/|commissioned|referee|the note\b|note §|"
                         r"the seed(?:'s| text| lost| says| is a| does| keeps| prints| criticises)", re.I)
    files = [*ROOT.glob("chapters/*.md"), *ROOT.glob("experiments/*.md"), ROOT / "experiments.md",
             ROOT / "intro.md", ROOT / "README.md",
             *ROOT.glob("appendices/*.md"), *ROOT.glob("crowdlib/*.py"), *ROOT.glob("benchmarks/*.py")]
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files if p.exists()
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_assert_counts_the_chapters_own_records(chapter):
    text = (ROOT / "chapters" / f"{chapter}.md").read_text()
    assert not re.search(r"assert\s+len\((scorecard|rows|records)", text)
    assert "scorecard = []" not in text and "record(" not in text


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_verdict_is_a_literal(chapter):
    """A check's outcome is computed: holds, holds_under_condition and holds_instead are never
    written as True or False in a chapter."""
    text = (ROOT / "chapters" / f"{chapter}.md").read_text()
    assert not re.search(r"\bholds(_under_condition|_instead)?\s*=\s*(True|False)\b", text)


def test_every_function_a_row_names_exists():
    import importlib

    missing = []
    for chapter, data in STORED.items():
        for row in data["rows"]:
            for name in row.get("functions", []):
                module, *attrs = name.split(".")
                obj = importlib.import_module(f"crowdlib.{module}")
                try:
                    for a in attrs:
                        obj = getattr(obj, a)
                except AttributeError:
                    missing.append(f"{chapter} / {row['label']}: crowdlib.{name}")
    assert not missing, "\n".join(missing)
