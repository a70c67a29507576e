"""crowdlib.book's execution pipeline: one cached execution per change, verified against the
stored notebook, stable bytes on re-execution."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from crowdlib import book

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A tiny chapter

```{code-cell} ipython3
import sys
print(VALUE)
print("progress 50%|#####     |", file=sys.stderr, end="\\r")
```

```{code-cell} ipython3
:tags: [nbval-ignore-output]

import time
print(time.time())
```
"""


def tiny_book(tmp_path, value="1"):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/tiny\n")
    (tmp_path / "chapters").mkdir(exist_ok=True)
    (tmp_path / "crowdlib").mkdir(exist_ok=True)
    (tmp_path / "crowdlib" / "lib.py").write_text("X = 1\n")
    (tmp_path / "requirements.txt").write_text("numpy==1\n")
    (tmp_path / "chapters" / "tiny.md").write_text(CHAPTER.replace("VALUE", value))
    return tmp_path


def test_key_follows_every_dependency(tmp_path):
    root = tiny_book(tmp_path)
    key = book.execution_key("tiny", root)
    (root / "crowdlib" / "lib.py").write_text("X = 2\n")
    assert book.execution_key("tiny", root) != key
    key = book.execution_key("tiny", root)
    (root / "requirements.txt").write_text("numpy==2\n")
    assert book.execution_key("tiny", root) != key


def test_store_verify_and_a_changed_output_fails(tmp_path, monkeypatch):
    root = tiny_book(tmp_path)
    monkeypatch.chdir(root)
    with pytest.raises(ValueError, match="chapter must be one of"):
        book.execute_chapter("nope", root=root)
    _, ran = book.execute_chapter("tiny", store=True, root=root)
    stored = (root / "chapters" / "tiny.ipynb").read_bytes()
    nb = nbformat.read(root / "chapters" / "tiny.ipynb", as_version=4)
    assert ran and [c.id for c in nb.cells] == ["c000", "c001", "c002"]
    assert all("stderr" not in str(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # unchanged: the cached execution is reused and verifies
    assert book.execute_chapter("tiny", root=root)[1] is False
    # re-executing and storing an unchanged chapter writes the same bytes (volatile cell kept)
    book.execute_chapter("tiny", store=True, force=True, root=root)
    assert (root / "chapters" / "tiny.ipynb").read_bytes() == stored
    # a change that moves an output fails verification, naming the cell
    (root / "chapters" / "tiny.md").write_text(CHAPTER.replace("VALUE", "2"))
    with pytest.raises(book.ChapterFailed, match="code cell 1"):
        book.execute_chapter("tiny", root=root)
    # an error in a cell fails with its traceback
    (root / "chapters" / "tiny.md").write_text(CHAPTER.replace("VALUE", "undefined_name"))
    with pytest.raises(book.ChapterFailed, match="NameError"):
        book.execute_chapter("tiny", root=root)


def test_cli_refuses_an_unknown_chapter():
    out = subprocess.run([sys.executable, "-m", "crowdlib", "execute", "--chapter", "typo"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "contests" in out.stderr


def test_progress_bars_go_and_everything_else_stays():
    text = "a warning\n 50%|#####     | 1/2 [00:01<00:01]\r100%|##########| 2/2\ndone\n"
    assert book._strip_progress(text) == "a warning\ndone\n"
    cleaned = book._clean_outputs([{"output_type": "stream", "name": "stderr", "text": "x 10%|#|\r"},
                                   {"output_type": "stream", "name": "stdout", "text": "a"},
                                   {"output_type": "stream", "name": "stdout", "text": "b\n"}])
    assert cleaned == [{"output_type": "stream", "name": "stdout", "text": "ab\n"}]


def test_a_changed_markdown_cell_or_caption_is_seen(tmp_path):
    import copy

    import jupytext

    nb = jupytext.read(ROOT / "chapters" / "rating.md")
    other = copy.deepcopy(nb)
    other.cells[0].source += " (edited)"
    assert any("cell 1" in p for p in book.compare_outputs(nb, other))


def test_a_new_experiment_is_executed_and_paired_without_make(tmp_path, monkeypatch):
    """An experiment copied into experiments/ is a page: found, executed, and its .ipynb pair
    stored on its first execution; afterwards it is verified like a chapter."""
    root = tiny_book(tmp_path)
    (root / "experiments").mkdir()
    (root / "experiments" / "mine.md").write_text(CHAPTER.replace("VALUE", "7"))
    monkeypatch.chdir(root)
    assert book.page_names(root) == ["tiny", "experiments/mine"]
    _, ran = book.execute_chapter("experiments/mine", root=root)
    assert ran and (root / "experiments" / "mine.ipynb").exists()
    assert book.execute_chapter("experiments/mine", root=root)[1] is False
    (root / "experiments" / "mine.md").write_text(CHAPTER.replace("VALUE", "8"))
    with pytest.raises(book.ChapterFailed, match="make experiment NAME=mine"):
        book.execute_chapter("experiments/mine", root=root)


def test_the_book_lists_every_experiment_by_a_glob():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p["caption"] == "Experiments")
    assert {"glob": "experiments/*"} in part["chapters"][0]["sections"]
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "experiments/*.md" in config["exclude_patterns"]     # the stored .ipynb is rendered
    assert "experiments/template" in book.page_names(ROOT)
