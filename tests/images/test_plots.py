"""Figures are drawn from tables alone; every registered figure renders from a synthetic table."""

import itertools

import numpy as np
import pandas as pd
import pytest
from canvas_checks import inside, off_canvas

from pipeline.core.tables import RESULT_COLUMNS, result_frame
from pipeline.images.plots import FIGURE_NEEDS, FIGURES, draw_figure, figures_for, seed_band


@pytest.fixture(autouse=True)
def close_figures():
    """Tests inspect the figures they render; close them after each (pyplot keeps them alive)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")

LAYERS = ["fc1", "fc2", "fc3", "fc4"]


def synthetic_tables():
    rng = np.random.default_rng(0)
    rows, log = [], []
    settings = {"masc": ["variance=0.99", "variance=0.5"], "velpic": ["sign=class_mean"],
                "linear": ["epochs=20"], "logreg": ["C=1.0"]}
    for corruption, seed, variant in itertools.product([0.0, 0.8], [0, 1], ["standard", "intervene-e4"]):
        epochs = [0, 2, 4, 6] if variant == "standard" else [4, 6, 8]
        keys = dict(dataset="digits", model="mlp", corruption=corruption, seed=seed, variant=variant)
        for epoch in range(epochs[0], epochs[-1] + 1):
            log.append({**keys, "epoch": epoch, "loss": 1.0, "train_acc_corrupted": 0.5,
                        "train_acc_true": 0.6, "test_acc": rng.uniform(0.2, 0.9), "lr": 1e-3, "seconds": 0.1})
        for epoch in epochs:
            def row(keys=keys, epoch=epoch, **kw):
                n = 100
                k = int(rng.integers(10, 100))
                base = dict(layer="output", probe_setting="", fit_labels="corrupted", split="test", target="true")
                rows.append({**keys, "epoch": epoch, **{**base, **kw}, "accuracy": k / n, "n_correct": k,
                             "n_samples": n})
            row(probe="model")
            row(probe="edited_model", probe_setting="bias=zero,sign=class_mean")
            row(probe="edited_model", probe_setting="bias=keep,sign=class_mean")
            for probe, ids in settings.items():
                for sid, layer, source in itertools.product(ids, LAYERS, ["corrupted", "true"]):
                    row(probe=probe, probe_setting=sid, layer=layer, fit_labels=source)
        if variant == "standard":
            for source in ("corrupted", "true"):
                rows.append({**keys, "epoch": 6, "layer": "fc1", "probe": "relabel_retrain",
                             "probe_setting": "protocol=heldout_true,variance=0.99", "fit_labels": source,
                             "split": "test", "target": "true", "accuracy": 0.7, "n_correct": 70,
                             "n_samples": 100})
    return result_frame(rows), pd.DataFrame(log)


def test_seed_band_is_mean_min_max():
    df = pd.DataFrame({"epoch": [0, 0, 1, 1], "seed": [0, 1, 0, 1], "accuracy": [0.2, 0.4, 0.5, 0.9]})
    band = seed_band(df)
    assert band["mean"].tolist() == pytest.approx([0.3, 0.7])
    assert band["min"].tolist() == [0.2, 0.5] and band["max"].tolist() == [0.4, 0.9]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_renders(tmp_path, name):
    table, log = synthetic_tables()
    assert list(table.columns) == list(RESULT_COLUMNS)
    table.to_parquet(tmp_path / "t.parquet")
    log.to_parquet(tmp_path / "l.parquet")
    out = draw_figure(name, tmp_path / "t.parquet", tmp_path / "l.parquet", "digits", "mlp",
                      tmp_path / f"{name}.png", dpi=60)
    assert out.stat().st_size > 5_000
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == [f"{name}.png"]


def test_figures_follow_what_the_table_holds():
    assert figures_for({"masc"}) == ["masc_dynamics", "masc_true_labels", "training"]
    assert "edited_model" not in figures_for({"masc", "velpic"})
    assert set(figures_for(set().union(*FIGURE_NEEDS.values()))) == set(FIGURES)


def test_unknown_figure_and_missing_rows(tmp_path):
    table, log = synthetic_tables()
    table.to_parquet(tmp_path / "t.parquet")
    log.to_parquet(tmp_path / "l.parquet")
    with pytest.raises(ValueError, match="unknown figure"):
        draw_figure("nope", tmp_path / "t.parquet", tmp_path / "l.parquet", "digits", "mlp", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows"):
        draw_figure("masc_dynamics", tmp_path / "t.parquet", tmp_path / "l.parquet", "mnist", "mlp",
                    tmp_path / "x.png")


# ----------------------------------------------------------------------------- what was drawn

def _render(name, table, log, dataset="digits", model="mlp"):
    from pipeline.images.plots import render

    fig = render(name, table, log, dataset, model)
    fig.canvas.draw()  # lays out (constrained layout) and makes text extents available
    return fig


def _lines(fig) -> dict:
    """Label -> list of Line2D, over every panel."""
    found = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                found.setdefault(line.get_label(), []).append((ax, line))
    return found


def test_dynamics_lines_are_the_tables_values():
    """Each probe/layer line is the mean over seeds of the table's test accuracy, per epoch; the
    model's line is the model's rows; one panel per corruption degree."""
    table, log = synthetic_tables()
    fig = _render("masc_dynamics", table, log)
    assert [ax.get_title() for ax in fig.axes] == ["0% corruption", "80% corruption"]
    lines = _lines(fig)
    assert set(lines) == {f"MASC {layer}" for layer in LAYERS} | {"model"}
    test = table[(table.split == "test") & (table.variant == "standard")]
    for corruption, (_, line) in zip([0.0, 0.8], lines["MASC fc3"], strict=True):
        rows = test[(test.probe == "masc") & (test.probe_setting == "variance=0.99")
                    & (test.fit_labels == "corrupted") & (test.layer == "fc3") & (test.corruption == corruption)]
        expected = rows.groupby("epoch").accuracy.mean()
        assert list(line.get_xdata()) == list(expected.index)
        assert np.allclose(line.get_ydata(), expected.values)
    for corruption, (_, line) in zip([0.0, 0.8], lines["model"], strict=True):
        rows = test[(test.probe == "model") & (test.corruption == corruption)]
        assert np.allclose(line.get_ydata(), rows.groupby("epoch").accuracy.mean().values)
    # layers in forward order, whatever the table's (name) order
    assert [found[0][1].get_label() for found in lines.values()][:4] == [f"MASC {x}" for x in LAYERS]


def test_difference_lines_are_the_tables_differences():
    table, log = synthetic_tables()
    fig = _render("velpic_minus_masc", table, log)
    test = table[(table.split == "test") & (table.variant == "standard") & (table.fit_labels == "corrupted")]
    key = ["corruption", "seed", "epoch", "layer"]
    velpic = test[test.probe == "velpic"].set_index(key).accuracy
    masc = test[(test.probe == "masc") & (test.probe_setting == "variance=0.99")].set_index(key).accuracy
    diff = (velpic - masc).reset_index()
    ax, line = _lines(fig)["fc2"][1]  # the 80 % panel
    expected = diff[(diff.layer == "fc2") & (diff.corruption == 0.8)].groupby("epoch").accuracy.mean()
    assert np.allclose(line.get_ydata(), expected.values)


def test_linear_vs_logreg_draws_both_probes_per_layer():
    table, log = synthetic_tables()
    assert "linear_vs_logreg" in figures_for({"linear", "logreg"})
    assert "linear_vs_logreg" not in figures_for({"linear"})
    fig = _render("linear_vs_logreg", table, log)
    lines = _lines(fig)
    assert {f"LR probe {x}" for x in LAYERS} | {f"logreg {x}" for x in LAYERS} | {"model"} == set(lines)
    test = table[(table.split == "test") & (table.variant == "standard") & (table.fit_labels == "corrupted")]
    for probe, label in (("linear", "LR probe fc1"), ("logreg", "logreg fc1")):
        ax, line = lines[label][0]
        rows = test[(test.probe == probe) & (test.layer == "fc1") & (test.corruption == 0.0)]
        assert np.allclose(line.get_ydata(), rows.groupby("epoch").accuracy.mean().values)
    # the same layer has the same colour in both probes, told apart by the line style
    (_, linear), (_, logreg) = lines["LR probe fc2"][0], lines["logreg fc2"][0]
    assert np.array_equal(linear.get_color(), logreg.get_color())
    assert linear.get_linestyle() != logreg.get_linestyle()


def _one_corruption_with_a_long_setting():
    table, log = synthetic_tables()
    table = table[table.corruption == 0.8].copy()
    long = "batch_size=128,epochs=20,lr=0.001,seed=0,weight_decay=0.0001,device=None"
    table["probe_setting"] = table.probe_setting.astype(object).where(table.probe != "linear", long)
    table["probe_setting"] = table.probe_setting.astype("string")
    return table, log[log.corruption == 0.8]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_titles_and_legends_stay_on_the_canvas(name):
    """With one narrow panel and the longest setting strings, every text (suptitle, panel titles,
    axis labels, legend) lies inside the figure, and the legend covers no panel (so it never hides
    the model's curve, at any corruption)."""
    table, log = _one_corruption_with_a_long_setting()
    fig = _render(name, table, log)
    assert not off_canvas(fig), (name, off_canvas(fig))  # titles, axis labels, legends (tests/canvas_checks.py)
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    # everything drawn (ticks, labels, titles, legends), in display units (the tight bbox is inches)
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    assert inside(drawn, canvas), (name, drawn, canvas)
    if fig._suptitle is not None:
        assert len(fig._suptitle.get_text()) > 20
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (name, "legend over a panel")


def test_legend_never_covers_the_model_curve_at_high_corruption():
    table, log = synthetic_tables()
    fig = _render("masc_dynamics", table, log)
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    ax, model = _lines(fig)["model"][1]  # 80 % corruption
    points = ax.transData.transform(np.column_stack([model.get_xdata(), model.get_ydata()]))
    assert not any(box.contains(x, y) for x, y in points)
    assert [t.get_text() for t in legend.get_texts()].count("model") == 1  # one legend, each label once


def test_layer_order_is_forward_order_without_torch():
    import subprocess
    import sys

    from pipeline.images.plots import layer_order

    rows = pd.DataFrame({"layer": ["fc2", "flat", "block1", "fc10", "block2", "fc1", "L1", "avg_pool", "L0",
                                   "conv5", "conv1"]})
    assert layer_order(rows) == ["L0", "L1", "block1", "block2", "conv1", "conv5", "flat", "fc1", "fc2",
                                 "fc10", "avg_pool"]
    # the Snakefile imports pipeline.images.plots (and pipeline.costs) on every invocation: no heavy imports
    code = ("import sys, pipeline.images.plots, pipeline.costs, pipeline.workflow; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'pandas', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_draw_figures_writes_every_figure_from_one_read(tmp_path):
    from pipeline.__main__ import main

    table, log = synthetic_tables()
    table.to_parquet(tmp_path / "t.parquet")
    log.to_parquet(tmp_path / "l.parquet")
    names = ["masc_dynamics", "training", "relabel_retrain"]
    outs = [str(tmp_path / f"{n}.png") for n in names]
    assert main(["plot", "--figure", *names, "--table", str(tmp_path / "t.parquet"), "--train-log",
                 str(tmp_path / "l.parquet"), "--dataset", "digits", "--model", "mlp", "--dpi", "50",
                 "--out", *outs]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{n}.png" for n in names)
    with pytest.raises(ValueError, match="one --out per --figure"):
        from pipeline.images import stages

        stages.plot(names, tmp_path / "t.parquet", tmp_path / "l.parquet", "digits", "mlp", outs[:1])
