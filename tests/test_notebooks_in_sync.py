"""Each chapter is a Jupytext pair: the MyST .md and the .ipynb hold the same cells."""

from pathlib import Path

import jupytext
import pytest

CHAPTERS = sorted((Path(__file__).parent.parent / "chapters").glob("*.md"))


def _cells(nb):
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_pair_exists_and_matches(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make chapter NAME={md.stem}`"
    assert _cells(jupytext.read(md)) == _cells(jupytext.read(ipynb)), (
        f"{md.name} and {ipynb.name} differ: run `make chapter NAME={md.stem}`")


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_stored_notebook_is_executed(md):
    nb = jupytext.read(md.with_suffix(".ipynb"))
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), (
        f"{md.stem}.ipynb must be stored executed (the book renders its outputs)")


def test_there_is_at_least_one_chapter():
    assert CHAPTERS


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_fences_are_balanced_and_closed_on_their_own_line(md):
    """An unclosed ::: or ```` fence makes Sphinx swallow the code cells after it (jupytext,
    and so nbval, would still see them): every closing fence must stand alone on its line."""
    stack = []
    for number, line in enumerate(md.read_text().splitlines(), 1):
        stripped = line.strip()
        for fence in ("::::", ":::", "````"):
            if stripped.startswith(fence) and not stripped.startswith(fence + fence[0]):
                rest = stripped[len(fence):]
                if rest.startswith("{"):
                    stack.append((fence, number))
                else:
                    assert rest == "", f"{md.name}:{number}: text after a closing {fence}"
                    assert stack and stack[-1][0] == fence, f"{md.name}:{number}: unmatched {fence}"
                    stack.pop()
                break
    assert not stack, f"{md.name}: fence opened at line {stack[-1][1]} is never closed"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_code_cell_fence_is_a_code_cell(md):
    """A directive whose title holds backticks can make jupytext read the code cells after it as
    Markdown; their checks would then never run. Every ```{code-cell} fence must be a code cell."""
    fences = sum(line.startswith("```{code-cell}") for line in md.read_text().splitlines())
    cells = sum(c.cell_type == "code" for c in jupytext.read(md).cells)
    assert fences == cells, f"{md.name}: {fences} code-cell fences but {cells} code cells"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_stored_outputs_name_no_machine_path(md):
    """A warning's text carries the absolute path of the file that raised it; stored, it would
    differ on every machine (and fail the verification of a fresh clone)."""
    import re

    text = md.with_suffix(".ipynb").read_text()
    assert not re.search(r"(/[\w.-]+)+/crowdlib/\w+\.py", text)
