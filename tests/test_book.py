"""crowdlib.book: figure saving and the result cache."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from crowdlib.book import cached, save_figure, table  # noqa: E402


def test_save_figure_only_when_asked(tmp_path, monkeypatch):
    fig, _ = plt.subplots()
    monkeypatch.delenv("CROWDLIB_FIGURES", raising=False)
    assert save_figure(fig, "x") is None
    monkeypatch.setenv("CROWDLIB_FIGURES", str(tmp_path / "figs"))
    out = save_figure(fig, "x")
    assert out is not None and out.exists()
    with pytest.raises(ValueError, match="name"):
        save_figure(fig, "a/b")
    plt.close(fig)


def test_cached_computes_once_per_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDLIB_CACHE", str(tmp_path))
    def compute(k):
        return {"x": np.arange(k)}

    a = cached("demo", compute, k=3)
    b = cached("demo", compute, k=3)
    c = cached("demo", compute, k=4)
    assert [a.from_cache, b.from_cache, c.from_cache] == [False, True, False]
    assert np.array_equal(a["x"], b["x"]) and c["x"].size == 4
    with pytest.raises(ValueError, match="name"):
        cached("not a name", compute, k=1)


def test_table_escapes_pipes_inside_cells():
    md = table(["E[X | Y]", "b"], [["|S|", 1]]).data
    assert md.splitlines()[0] == "| E[X \\| Y] | b |"
    assert md.splitlines()[2] == "| \\|S\\| | 1 |"


def test_glue_refuses_what_prose_cannot_format():
    from crowdlib.book import glue

    with pytest.raises(ValueError, match="name"):
        glue("not a name", 1.0)
    with pytest.raises(TypeError, match="value"):
        glue("x", [1.0])
    with pytest.raises(ValueError, match="finite"):
        glue("x", float("nan"))


def test_cached_keys_on_the_compute_function_and_what_it_reads(tmp_path, monkeypatch):
    import crowdlib.book as B

    monkeypatch.setenv("CROWDLIB_CACHE", str(tmp_path))
    settings = [1, 2]
    compute = lambda k: {"x": np.array(settings) * k}          # noqa: E731 - reads a global
    first = cached("reads_global", compute, k=2)
    assert not first.from_cache and first.path.exists()
    again = cached("reads_global", compute, k=2)
    assert again.from_cache and np.array_equal(again["x"], [2, 4])
    settings.append(3)                                           # the global changed: recompute
    assert cached("reads_global", compute, k=2)["x"].tolist() == [2, 4, 6]
    other = lambda k: {"x": np.array(settings) * k + 1}          # noqa: E731 - other code
    assert cached("reads_global", other, k=2)["x"].tolist() == [3, 5, 7]
    # an array parameter is keyed by its content
    arr = cached("array_param", lambda a: {"s": a.sum()}, a=np.arange(4))
    assert arr["s"] == 6 and cached("array_param", lambda a: {"s": a.sum()}, a=np.arange(5))["s"] == 10
    # a result .npz cannot load back is refused before anything is written
    with pytest.raises(TypeError, match="object array|pickling"):
        cached("ragged", lambda: {"r": np.array([np.zeros(2), "a"], dtype=object)})
    with pytest.raises(TypeError, match="pickling"):
        cached("ragged2", lambda: {"r": [np.zeros(2), np.zeros(3)]})
    assert not list(tmp_path.glob("ragged*"))
    with pytest.raises(TypeError, match="params"):
        cached("bad_param", lambda p: {"x": 1}, p=object())
    assert B.cache_key("k", compute, k=1) == B.cache_key("k", compute, k=1)


def test_figure_labels_are_unique_and_the_template_has_none():
    """A copy of the template must not clash with it: its figures carry no label, and the
    labels of all pages are unique."""
    import collections

    import jupytext

    from crowdlib import book

    labels = collections.Counter()
    for page in book.page_names():
        for cell in jupytext.read(book.page_source(page)).cells:
            name = cell.metadata.get("mystnb", {}).get("figure", {}).get("name")
            if name:
                labels[name] += 1
                assert page != "experiments/template", "the template's figures must have no label"
    assert not [k for k, v in labels.items() if v > 1]


def test_glue_text_is_never_used_for_a_string():
    """A glued string is Markdown: ``{glue:text}`` would show its placeholder
    ``<IPython.core.display.Markdown object>``; strings need ``{glue:md}``."""
    import json
    import re

    from crowdlib import book

    bad = []
    for page in book.page_names():
        src = book.page_source(page)
        kinds = {}
        for cell in json.loads(src.with_suffix(".ipynb").read_text())["cells"]:
            for out in cell.get("outputs", []):
                meta = out.get("metadata", {}).get("scrapbook")
                if meta:
                    kinds[meta["name"]] = "md" if any("markdown" in k for k in out.get("data", {})) else "text"
        bad += [f"{page}: {m}" for m in re.findall(r"\{glue:text\}`(\w+)", src.read_text())
                if kinds.get(m) == "md"]
    assert not bad, bad
