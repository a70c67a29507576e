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
    calls = []

    def compute(k):
        calls.append(k)
        return {"x": np.arange(k)}

    a = cached("demo", compute, k=3)
    b = cached("demo", compute, k=3)
    c = cached("demo", compute, k=4)
    assert calls == [3, 4] and np.array_equal(a["x"], b["x"]) and c["x"].size == 4
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
