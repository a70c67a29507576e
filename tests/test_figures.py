"""python -m crowdlib figures: every figure of a chapter redrawn without Jupyter, with an index."""

import csv
import subprocess
import sys
from pathlib import Path

from crowdlib import book

ROOT = Path(__file__).resolve().parent.parent


def test_every_figure_has_a_label_a_caption_and_a_section():
    import nbformat

    rows = [r for c in book.chapter_names() for r in book.figure_index(c)]
    stored_pngs = sum("image/png" in o.get("data", {})
                      for c in book.chapter_names()
                      for cell in nbformat.read(ROOT / "chapters" / f"{c}.ipynb", as_version=4).cells
                      if cell.cell_type == "code" for o in cell.outputs)
    assert len(rows) == len({r["figure"] for r in rows}) == stored_pngs >= 22
    assert all(r["label"].startswith("fig-") and r["caption"] and r["section"] for r in rows)
    assert all(f"--chapter {r['chapter']}" in r["caption"] for r in rows)  # the redraw command


def test_cli_redraws_a_chapter_as_svg_with_its_index(tmp_path):
    out = subprocess.run([sys.executable, "-m", "crowdlib", "figures", "--chapter", "rating",
                          "--out", str(tmp_path), "--format", "svg", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "index.csv") as handle:
        index = list(csv.DictReader(handle))
    assert [r["file"] for r in index] == [f"{r['figure']}.svg" for r in book.figure_index("rating")]
    assert all((tmp_path / r["file"]).read_text().lstrip().startswith("<?xml") for r in index)
    bad = subprocess.run([sys.executable, "-m", "crowdlib", "figures", "--chapter", "typo"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "contests" in bad.stderr
