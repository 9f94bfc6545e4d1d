"""Figures, drawn from the aggregated tables only (never from artifacts of a single run).

Every figure is one function registered in :data:`FIGURES` with signature
``fn(table, train_log, dataset, model) -> matplotlib Figure``; the plot rule names it. Curves are
the mean over seeds with the min-max range over seeds shaded, as in the papers. Set-up, layout and
saving are the pipeline's (:mod:`pipeline.core.figures`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.config import BASE_VARIANT
from pipeline.core.figures import pyplot as _pyplot
from pipeline.core.figures import subplots, suptitle

if TYPE_CHECKING:  # imported for real only when a figure is drawn (the Snakefile imports this module)
    import matplotlib.pyplot as plt
    import pandas as pd

#: The model's own rows in the table (``pipeline.core.tables.MODEL_PROBE``; not imported: pandas).
MODEL_PROBE = "model"


FIGURES: dict[str, Callable] = {}
#: What each figure needs in the table: probe names (and/or "edited_model", "intervention").
FIGURE_NEEDS: dict[str, tuple[str, ...]] = {}

#: Layer names in forward order, by name pattern (torch-free: :mod:`pipeline.core.models` imports
#: torch, and a plot job has no use for it): stems, convolutional blocks, the flattened map,
#: fully connected layers, pooling, then the output; a trailing number orders within a kind.
_LAYER_KINDS = ("L", "block", "conv", "flat", "fc", "avg_pool", "output")
#: Panel width and height (inches).
PANEL_WIDTH, PANEL_HEIGHT = 4.0, 3.4


def figure(name: str, needs: tuple[str, ...] = ()):
    def register(fn):
        FIGURES[name] = fn
        FIGURE_NEEDS[name] = needs
        return fn
    return register


def figures_for(available: set[str]) -> list[str]:
    """The figures that can be drawn when the table holds ``available`` (probe names and
    experiment names such as "edited_model", "intervention")."""
    return [name for name, needs in FIGURE_NEEDS.items() if set(needs) <= set(available)]


def seed_band(df: pd.DataFrame, x: str = "epoch", y: str = "accuracy") -> pd.DataFrame:
    """Mean, min and max of ``y`` over seeds at each ``x``."""
    return df.groupby(x)[y].agg(["mean", "min", "max"]).reset_index()


def draw_band(ax, df: pd.DataFrame, label: str, color=None, style: str = "-", x: str = "epoch",
              y: str = "accuracy", gid: str | None = None):
    """The mean over seeds as a line (labelled ``label``; ``gid`` tags it for tests), the min-max
    range over seeds shaded when there are several seeds."""
    band = seed_band(df, x, y)
    line, = ax.plot(band[x], band["mean"], style, label=label, color=color, lw=1.5, gid=gid or label)
    if df["seed"].nunique() > 1:
        ax.fill_between(band[x], band["min"], band["max"], color=line.get_color(), alpha=0.2, lw=0)
    return line


def default_setting(table: pd.DataFrame, probe: str) -> str | None:
    """The probe setting figures show: the papers' 0.99 for MASC, otherwise the first one."""
    settings = sorted(table.loc[table.probe == probe, "probe_setting"].unique())
    if not settings:
        return None
    for preferred in ("variance=0.99",):
        if preferred in settings:
            return preferred
    return settings[0]


def _select(table: pd.DataFrame, dataset: str, model: str, variant: str = BASE_VARIANT) -> pd.DataFrame:
    sel = table[(table.dataset == dataset) & (table.model == model) & (table.variant == variant)]
    if sel.empty:
        raise ValueError(f"the table has no rows for dataset={dataset!r} model={model!r} variant={variant!r}")
    return sel


def _layer_key(name: str) -> tuple:
    match = re.fullmatch(r"(.*?)(\d*)", str(name))
    stem, number = match.group(1), match.group(2)
    kind = _LAYER_KINDS.index(stem) if stem in _LAYER_KINDS else len(_LAYER_KINDS)
    return kind, int(number) if number else -1, str(name)


def layer_order(rows: pd.DataFrame) -> list[str]:
    """The table's layers in the network's forward order (the table itself is sorted by name)."""
    return sorted(dict.fromkeys(rows["layer"]), key=_layer_key)


# ----------------------------------------------------------------------------- layout

def _panels(n: int, width: float = PANEL_WIDTH, height: float = PANEL_HEIGHT):
    """One row of ``n`` panels sharing y, with constrained layout (titles and legends outside
    the panels are given room instead of being cut off)."""
    fig, axes = subplots(1, n, panel_width=width, panel_height=height, sharey=True)
    return fig, list(axes[0])


def legend_outside(fig, axes) -> None:
    """One legend for the figure, below the panels (never over a curve or a bar): the labels of
    every panel, each once."""
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        width_in = fig.get_figwidth()
        ncol = max(1, min(len(labels), int(width_in / 1.6)))
        fig.legend([handles[label] for label in labels], labels, loc="outside lower center", ncol=ncol,
                   fontsize=7, frameon=False)


def _finish(fig, axes, ylabel: str, title: str, xlabel: str = "epoch"):
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    legend_outside(fig, axes)
    suptitle(fig, title)
    return fig


def _colors(n: int):
    import numpy as np

    return _pyplot().cm.viridis(np.linspace(0, 0.9, max(n, 1)))


# ----------------------------------------------------------------------------- figures

def probe_dynamics(table: pd.DataFrame, dataset: str, model: str, probe: str, title: str,
                   fit_labels: str = "corrupted") -> plt.Figure:
    """Test accuracy over epochs: the model and ``probe`` on each layer, one panel per corruption."""
    sel = _select(table, dataset, model)
    test = sel[(sel.split == "test") & (sel.target == "true")]
    setting = default_setting(test, probe)
    probe_rows = test[(test.probe == probe) & (test.probe_setting == setting) & (test.fit_labels == fit_labels)]
    model_rows = test[test.probe == MODEL_PROBE]
    corruptions = sorted(test.corruption.unique())
    fig, axes = _panels(len(corruptions))
    layers = layer_order(probe_rows) if not probe_rows.empty else []
    for ax, corruption in zip(axes, corruptions, strict=False):
        for layer, color in zip(layers, _colors(len(layers)), strict=False):
            rows = probe_rows[(probe_rows.corruption == corruption) & (probe_rows.layer == layer)]
            if not rows.empty:
                draw_band(ax, rows, f"{probe.upper()} {layer}", color=color)
        rows = model_rows[model_rows.corruption == corruption]
        if not rows.empty:
            draw_band(ax, rows, "model", color="black", style="--")
        ax.set_title(f"{corruption:.0%} corruption")
    return _finish(fig, axes, "test accuracy (true labels)",
                   f"{title}: {model.upper()} on {dataset}" + (f" ({setting})" if setting else ""))


@figure("masc_dynamics", needs=("masc",))
def masc_dynamics(table: pd.DataFrame, train_log: pd.DataFrame, dataset: str, model: str) -> plt.Figure:
    """Papers' Figure 1: MASC test accuracy per layer vs the model's, over training."""
    return probe_dynamics(table, dataset, model, "masc", "MASC test accuracy")


@figure("velpic_dynamics", needs=("velpic",))
def velpic_dynamics(table, train_log, dataset, model):
    """Papers' Figure 2: VeLPIC test accuracy per layer vs the model's."""
    return probe_dynamics(table, dataset, model, "velpic", "VeLPIC test accuracy")


@figure("linear_dynamics", needs=("linear",))
def linear_dynamics(table, train_log, dataset, model):
    """Papers' Figure 4: logistic-regression probe test accuracy per layer vs the model's."""
    return probe_dynamics(table, dataset, model, "linear", "LR probe test accuracy")


@figure("masc_true_labels", needs=("masc",))
def masc_true_labels(table, train_log, dataset, model):
    """MASC with true-label subspaces (the MASC paper): how much the layers could generalize."""
    return probe_dynamics(table, dataset, model, "masc", "MASC (true-label subspaces)", fit_labels="true")


@figure("linear_vs_logreg", needs=("linear", "logreg"))
def linear_vs_logreg(table, train_log, dataset, model):
    """The authors' logistic-regression probe (``linear``: a fixed number of Adam epochs) next to
    the converging baseline (``logreg``) on each layer, with the model: how much of the linear
    probe's accuracy depends on its training budget. Same colour per layer, solid = linear,
    dotted = logreg."""
    sel = _select(table, dataset, model)
    test = sel[(sel.split == "test") & (sel.target == "true") & (sel.fit_labels == "corrupted")]
    rows = {probe: test[(test.probe == probe) & (test.probe_setting == default_setting(test, probe))]
            for probe in ("linear", "logreg")}
    model_rows = test[test.probe == MODEL_PROBE]
    corruptions = sorted(test.corruption.unique())
    layers = layer_order(test[test.probe.isin(["linear", "logreg"])])
    fig, axes = _panels(len(corruptions))
    for ax, corruption in zip(axes, corruptions, strict=False):
        for layer, color in zip(layers, _colors(len(layers)), strict=False):
            for probe, style in (("linear", "-"), ("logreg", ":")):
                at = rows[probe][(rows[probe].corruption == corruption) & (rows[probe].layer == layer)]
                if not at.empty:
                    draw_band(ax, at, f"{'LR probe' if probe == 'linear' else 'logreg'} {layer}",
                              color=color, style=style)
        at = model_rows[model_rows.corruption == corruption]
        if not at.empty:
            draw_band(ax, at, "model", color="black", style="--")
        ax.set_title(f"{corruption:.0%} corruption")
    settings = ", ".join(f"{p}: {default_setting(test, p)}" for p in ("linear", "logreg")
                         if default_setting(test, p))
    return _finish(fig, axes, "test accuracy (true labels)",
                   f"LR probe (authors') vs converged logistic regression: {model.upper()} on {dataset}"
                   + (f" ({settings})" if settings else ""))


def probe_difference(table: pd.DataFrame, dataset: str, model: str, first: str, second: str) -> plt.Figure:
    """Test accuracy of ``first`` minus ``second`` per layer over epochs (papers' Figs. 3, 5, 6)."""
    sel = _select(table, dataset, model)
    test = sel[(sel.split == "test") & (sel.fit_labels == "corrupted")]
    parts = []
    for probe in (first, second):
        rows = test[(test.probe == probe) & (test.probe_setting == default_setting(test, probe))]
        parts.append(rows.set_index(["corruption", "seed", "epoch", "layer"])["accuracy"])
    diff = (parts[0] - parts[1]).dropna().rename("accuracy").reset_index()
    corruptions = sorted(diff.corruption.unique())
    fig, axes = _panels(len(corruptions))
    layers = layer_order(diff) if len(diff) else []
    for ax, corruption in zip(axes, corruptions, strict=False):
        for layer, color in zip(layers, _colors(len(layers)), strict=False):
            rows = diff[(diff.corruption == corruption) & (diff.layer == layer)]
            if not rows.empty:
                draw_band(ax, rows, layer, color=color)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"{corruption:.0%} corruption")
    return _finish(fig, axes, f"{first} - {second} test accuracy",
                   f"{first.upper()} minus {second.upper()}: {model.upper()} on {dataset}")


@figure("velpic_minus_masc", needs=("velpic", "masc"))
def velpic_minus_masc(table, train_log, dataset, model):
    return probe_difference(table, dataset, model, "velpic", "masc")


@figure("linear_minus_masc", needs=("linear", "masc"))
def linear_minus_masc(table, train_log, dataset, model):
    return probe_difference(table, dataset, model, "linear", "masc")


@figure("linear_minus_velpic", needs=("linear", "velpic"))
def linear_minus_velpic(table, train_log, dataset, model):
    return probe_difference(table, dataset, model, "linear", "velpic")


def _bars(pivot: pd.DataFrame, columns: list[str], colors, title: str, ylabel: str) -> plt.Figure:
    """Grouped bars (one group per corruption degree), legend below the axes."""
    fig, axes = _panels(1, width=7.0, height=3.6)
    ax = axes[0]
    pivot[columns].plot.bar(ax=ax, width=0.8, color=colors, legend=False)
    ax.set_xticklabels([f"{c:.0%}" for c in pivot.index], rotation=0)
    ax.set_ylim(0, 1.0)
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, axes, ylabel, title, xlabel="corruption")


@figure("init_vs_trained", needs=("masc", "velpic"))
def init_vs_trained(table, train_log, dataset, model):
    """Papers' Figure 20: model, best-layer MASC and best-layer VeLPIC at initialization (epoch 0)
    and at the end of training, per corruption degree (best layer = highest test accuracy)."""
    import pandas as pd

    sel = _select(table, dataset, model)
    test = sel[(sel.split == "test") & (sel.fit_labels == "corrupted")]
    final = test.groupby(["corruption", "seed"])["epoch"].transform("max")
    bars = []
    for when, mask in (("init", test.epoch == 0), ("trained", test.epoch == final)):
        at = test[mask]
        for probe in ("model", "masc", "velpic"):
            rows = at[at.probe == probe]
            if probe != "model":
                rows = rows[rows.probe_setting == default_setting(at, probe)]
            # best layer per (corruption, seed), then mean over seeds
            best = rows.groupby(["corruption", "seed"])["accuracy"].max().groupby("corruption").mean()
            for corruption, acc in best.items():
                bars.append({"corruption": corruption, "what": f"{probe} ({when})", "accuracy": acc})
    pivot = pd.DataFrame(bars).pivot(index="corruption", columns="what", values="accuracy")
    order = [c for p in ("model", "masc", "velpic") for c in (f"{p} (init)", f"{p} (trained)") if c in pivot]
    plt = _pyplot()
    return _bars(pivot, order, [plt.cm.tab20(i) for i in range(len(order))],
                 f"Random init vs trained: {model.upper()} on {dataset}", "test accuracy (best layer)")


@figure("edited_model", needs=("edited_model",))
def edited_model(table, train_log, dataset, model):
    """Papers' Figure 7: test accuracy of the model with its pre-softmax weights replaced by the
    last layer's VeLPIC class vectors (biases zeroed / kept) vs the unedited model, per checkpoint."""
    sel = _select(table, dataset, model)
    test = sel[(sel.split == "test") & (sel.target == "true")]
    corruptions = sorted(test.corruption.unique())
    fig, axes = _panels(len(corruptions))
    for ax, corruption in zip(axes, corruptions, strict=False):
        at = test[test.corruption == corruption]
        draw_band(ax, at[at.probe == MODEL_PROBE], "model", color="black", style="--")
        edited = at[(at.probe == "edited_model") & (at.fit_labels == "corrupted")]
        for setting in sorted(edited.probe_setting.unique()):
            draw_band(ax, edited[edited.probe_setting == setting], f"edited ({setting.split(',')[0]})")
        ax.set_title(f"{corruption:.0%} corruption")
    return _finish(fig, axes, "test accuracy", f"Edited vs unedited model: {model.upper()} on {dataset}")


def _intervention_variants(frame: pd.DataFrame) -> list[str]:
    return sorted(v for v in frame.variant.unique() if str(v).startswith("intervene"))


@figure("intervention", needs=("intervention",))
def intervention(table, train_log, dataset, model):
    """Papers' Figure 8: model test accuracy per epoch with the VeLPIC edit at epoch E and
    standard training afterwards, overlaid on the run without intervention."""
    log = train_log[(train_log.dataset == dataset) & (train_log.model == model)]
    corruptions = sorted(log.corruption.unique())
    fig, axes = _panels(len(corruptions))
    for ax, corruption in zip(axes, corruptions, strict=False):
        at = log[log.corruption == corruption]
        draw_band(ax, at[at.variant == BASE_VARIANT], "no intervention", color="black", y="test_acc")
        for variant in _intervention_variants(at):
            rows = at[at.variant == variant]
            draw_band(ax, rows, variant, y="test_acc")
            edit_epoch = re.match(r"intervene-e(\d+)", variant)
            if edit_epoch:  # the variant's name carries the epoch of the edit
                ax.axvline(int(edit_epoch.group(1)), color="grey", lw=0.8, ls=":")
        ax.set_title(f"{corruption:.0%} corruption")
    return _finish(fig, axes, "model test accuracy", f"Intervention vs none: {model.upper()} on {dataset}")


@figure("intervention_velpic", needs=("intervention", "velpic"))
def intervention_velpic(table, train_log, dataset, model):
    """Papers' Figure 9: VeLPIC test accuracy per layer at the checkpoints after the intervention."""
    variants = _intervention_variants(table[(table.dataset == dataset) & (table.model == model)])
    if not variants:
        raise ValueError(f"no intervened runs for dataset={dataset!r} model={model!r} in the table")
    sel = _select(table, dataset, model, variant=variants[0])
    test = sel[(sel.split == "test") & (sel.fit_labels == "corrupted")]
    setting = default_setting(test, "velpic")
    rows = test[(test.probe == "velpic") & (test.probe_setting == setting)]
    model_rows = test[test.probe == MODEL_PROBE]
    corruptions = sorted(test.corruption.unique())
    layers = layer_order(rows)
    fig, axes = _panels(len(corruptions))
    for ax, corruption in zip(axes, corruptions, strict=False):
        for layer, color in zip(layers, _colors(len(layers)), strict=False):
            draw_band(ax, rows[(rows.corruption == corruption) & (rows.layer == layer)],
                      f"VeLPIC {layer}", color=color)
        draw_band(ax, model_rows[model_rows.corruption == corruption], "model", color="black", style="--")
        ax.set_title(f"{corruption:.0%} corruption")
    return _finish(fig, axes, "test accuracy", f"VeLPIC after intervention ({variants[0]}): "
                                               f"{model.upper()} on {dataset}")


@figure("relabel_retrain", needs=("relabel_retrain",))
def relabel_retrain(table, train_log, dataset, model):
    """MASC relabel-and-retrain: test accuracy of the retrained model per protocol and subspace
    label source, next to the memorized model it started from."""
    import pandas as pd

    sel = _select(table, dataset, model)
    test = sel[(sel.split == "test") & (sel.target == "true")]
    retrained = test[test.probe == "relabel_retrain"]
    bars = []
    for (corruption, setting, source), rows in retrained.groupby(["corruption", "probe_setting", "fit_labels"]):
        protocol = setting.split(",")[0].replace("protocol=", "")
        bars.append({"corruption": corruption, "what": f"{protocol}, {source} subspaces",
                     "accuracy": rows.accuracy.mean()})
    final = test[test.probe == MODEL_PROBE]
    final = final[final.epoch == final.groupby(["corruption", "seed"])["epoch"].transform("max")]
    for corruption, rows in final.groupby("corruption"):
        bars.append({"corruption": corruption, "what": "memorized model", "accuracy": rows.accuracy.mean()})
    pivot = pd.DataFrame(bars).pivot(index="corruption", columns="what", values="accuracy")
    cols = ["memorized model"] + [c for c in pivot.columns if c != "memorized model"]
    plt = _pyplot()
    return _bars(pivot, cols, ["black"] + [plt.cm.tab10(i) for i in range(len(cols) - 1)],
                 f"Relabel with MASC and retrain: {model.upper()} on {dataset}", "test accuracy")


@figure("training")
def training_curves(table: pd.DataFrame, train_log: pd.DataFrame, dataset: str, model: str) -> plt.Figure:
    """Per-epoch training log: accuracy on corrupted and true training labels, and test accuracy."""
    log = train_log[(train_log.dataset == dataset) & (train_log.model == model)
                    & (train_log.variant == BASE_VARIANT)]
    corruptions = sorted(log.corruption.unique())
    fig, axes = _panels(len(corruptions))
    for ax, corruption in zip(axes, corruptions, strict=False):
        rows = log[log.corruption == corruption]
        for column, label in (("train_acc_corrupted", "train (corrupted labels)"),
                              ("train_acc_true", "train (true labels)"), ("test_acc", "test")):
            draw_band(ax, rows, label, y=column)
        ax.set_title(f"{corruption:.0%} corruption")
    return _finish(fig, axes, "accuracy", f"Training: {model.upper()} on {dataset}")


# ----------------------------------------------------------------------------- drawing

def render(name: str, table: pd.DataFrame, train_log: pd.DataFrame, dataset: str, model: str) -> plt.Figure:
    """The figure ``name`` of the (already read) tables, not saved."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known figures: {sorted(FIGURES)}")
    return FIGURES[name](table, train_log, dataset, model)


def draw_figures(outputs: dict[str, str | Path], table: str | Path, train_log: str | Path, dataset: str,
                 model: str, *, dpi: int = 120) -> list[Path]:
    """Draw each figure of ``outputs`` (figure name -> path) from one read of the two tables."""
    from pipeline.core.figures import save_figure
    from pipeline.core.tables import RESULTS, read_table

    unknown = sorted(set(outputs) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figure {unknown[0]!r}; known figures: {sorted(FIGURES)}")
    # a damaged table is refused with its name and the remedy (not a raw Arrow error)
    table, train_log = read_table(table, RESULTS), read_table(train_log)
    return [save_figure(render(name, table, train_log, dataset, model), out, dpi=dpi)
            for name, out in outputs.items()]


def draw_figure(name: str, table: str | Path, train_log: str | Path, dataset: str, model: str,
                out: str | Path, *, dpi: int = 120) -> Path:
    return draw_figures({name: out}, table, train_log, dataset, model, dpi=dpi)[0]
