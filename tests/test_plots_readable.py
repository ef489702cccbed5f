"""Figures a reader can decode: front.png axes name the metric and which way is better, along_t.png's
dashed selected-t line has a legend entry, the PML toy figures label their axes and explain colours
and markers, and placeholder panels keep their text inside the figure."""
import os
import sys
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import extra_nurbs as ex  # noqa: E402
from common.data import load_dataset  # noqa: E402
from reproduce import aggregate  # noqa: E402


@pytest.fixture
def kept_figures(monkeypatch):
    """The figures the plotting functions close, kept open for inspection."""
    figs, real_close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    yield figs
    real_close("all")


def _data():
    return load_dataset("multimnist-lite", os.path.join(ROOT, "data"))


def _front(data):
    return [{"t": t, "delta_m": 1.0 - t, "tasks": {s.name: {"loss": 1.0 + t, "acc": 0.9 - t / 10} for s in data.tasks}}
            for t in np.linspace(0, 1, 5)]


def test_front_axes_name_the_metric_and_the_better_direction(tmp_path, kept_figures):
    data = _data()
    ex.plot_front(str(tmp_path / "front.png"), _front(data), [[0], [1]], data, 0.5)
    ax_loss, ax_metric = kept_figures[-1].axes[:2]
    assert ax_loss.get_xlabel() == "left: test loss (lower is better)"
    assert ax_metric.get_xlabel() == "left: test acc (higher is better)"
    assert ax_metric.get_ylabel() == "right: test acc (higher is better)"
    assert ex.front_axis_label(data, [0, 1], "E1", None) == "E1 (mean of 2 tasks): test acc (higher is better)"


def test_along_t_legend_has_the_selected_t_line(tmp_path, kept_figures):
    data = _data()
    curve = ex.Curve(torch.zeros(4), torch.ones(4), "nurbs", 3)
    ex.plot_along_t(str(tmp_path / "along_t.png"), _front(data), [[0], [1]], data, 0.5, curve)
    legend = kept_figures[-1].axes[1].get_legend()
    assert legend is not None and "reported t = 0.50" in [t.get_text() for t in legend.get_texts()]


def _inside(fig, artist):
    fig.canvas.draw()
    box, page = artist.get_window_extent(), fig.bbox
    return box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1


def test_placeholder_text_stays_inside_the_figure():
    fig, ax = plt.subplots(figsize=(6, 4))
    reason = ("needs celeba under data/celeba/: CelebA img_align_celeba/, list_attr_celeba.txt, "
              "list_eval_partition.txt (see data/README.md); " * 2)
    aggregate._placeholder(ax, "no finished runs\n" + reason)
    assert _inside(fig, ax.texts[0])


def test_pml_toy_figure_has_axis_labels_and_a_legend(tmp_path, kept_figures):
    pairs = [{"members": [[0.0, 1.0], [1.0, 0.0]], "init": [[0, 0], [9, 9]], "coverage": 0.5}] * 25
    ep = SimpleNamespace(entry=SimpleNamespace(plot_opts={"c": 1.0, "view": "subspace"}, paper="pml", number="8", title="toy"),
                         blocks=[SimpleNamespace(rows=[])])
    aggregate.plot_toy(ep, [SimpleNamespace(results=[{0: {"pairs": pairs}}])], str(tmp_path / "f.png"), False)
    fig = kept_figures[-1]
    assert "l_1" in fig._supxlabel.get_text() and "lower is better" in fig._supylabel.get_text()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "analytic Pareto front" in labels and any("final subspace" in x for x in labels)
    assert all(a.xaxis.get_ticklabels()[0].get_fontsize() >= 7 for a in fig.axes[:25])


def test_bar_figure_without_runs_keeps_its_text_inside(tmp_path, kept_figures):
    reason = "needs cityscapes under data/cityscapes/: MTAN-preprocessed CityScapes {train,val}/{image,label_7,depth}/<i>.npy (see data/README.md)"
    col = SimpleNamespace(metric="delta_m", key="dm", header="Δm% ↓")
    rows = [SimpleNamespace(row=SimpleNamespace(role="ours", label=f"EXTRA-{k}", paper=[None])) for k in (3, 4, 5, 6)]
    ep = SimpleNamespace(entry=SimpleNamespace(plot_opts={"y": "delta_m"}, paper="extra", number="10", title="bends"),
                         blocks=[SimpleNamespace(block=SimpleNamespace(columns=[col], title="cityscapes", dataset="cityscapes"),
                                                 rows=rows, reason=reason, dataset="cityscapes")])
    aggregate.plot_bars(ep, [SimpleNamespace(values=[{} for _ in rows])], str(tmp_path / "f.png"), False)
    fig = kept_figures[-1]
    texts = [t for t in fig.axes[0].texts if "no finished runs" in t.get_text()]
    assert texts and _inside(fig, texts[0])
