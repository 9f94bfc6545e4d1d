"""Figures, drawn from the aggregated tables only (never from artifacts of a single run).

Every figure is one function registered in :data:`FIGURES` with signature
``fn(table, train_log, dataset, model) -> matplotlib Figure``; the plot rule names it. Curves are
the mean over seeds with the min-max range over seeds shaded, as in the papers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.config import BASE_VARIANT  # noqa: E402
from pipeline.io import MODEL_PROBE, atomic_path  # noqa: E402

FIGURES: dict[str, Callable] = {}


def figure(name: str):
    def register(fn):
        FIGURES[name] = fn
        return fn
    return register


def seed_band(df: pd.DataFrame, x: str = "epoch", y: str = "accuracy") -> pd.DataFrame:
    """Mean, min and max of ``y`` over seeds at each ``x``."""
    return df.groupby(x)[y].agg(["mean", "min", "max"]).reset_index()


def draw_band(ax, df: pd.DataFrame, label: str, color=None, style: str = "-", x: str = "epoch",
              y: str = "accuracy") -> None:
    band = seed_band(df, x, y)
    line, = ax.plot(band[x], band["mean"], style, label=label, color=color, lw=1.5)
    if df["seed"].nunique() > 1:
        ax.fill_between(band[x], band["min"], band["max"], color=line.get_color(), alpha=0.2, lw=0)


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


def layer_order(rows: pd.DataFrame) -> list[str]:
    # Keep the network's forward order: the order of first appearance in the (sorted-by-run) table
    # is alphabetical, so recover it from the probe-layer registry when possible.
    layers = list(dict.fromkeys(rows["layer"]))
    try:
        from pipeline.models import MODELS  # noqa: F401
        model = rows["model"].iloc[0]
        from pipeline.models import build_model
        order = list(build_model(model, in_channels=1, image_size=8, num_classes=2).probe_layers)
        return [l for l in order if l in layers] + [l for l in layers if l not in order]
    except Exception:
        return layers


def probe_dynamics(table: pd.DataFrame, dataset: str, model: str, probe: str, title: str,
                   fit_labels: str = "corrupted") -> plt.Figure:
    """Test accuracy over epochs: the model and ``probe`` on each layer, one panel per corruption."""
    sel = _select(table, dataset, model)
    test = sel[(sel.split == "test") & (sel.target == "true")]
    setting = default_setting(test, probe)
    probe_rows = test[(test.probe == probe) & (test.probe_setting == setting) & (test.fit_labels == fit_labels)]
    model_rows = test[test.probe == MODEL_PROBE]
    corruptions = sorted(test.corruption.unique())
    fig, axes = plt.subplots(1, len(corruptions), figsize=(4 * len(corruptions), 3.4), squeeze=False,
                             sharey=True)
    layers = layer_order(probe_rows) if not probe_rows.empty else []
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(layers), 1)))
    for ax, corruption in zip(axes[0], corruptions):
        for layer, color in zip(layers, colors):
            rows = probe_rows[(probe_rows.corruption == corruption) & (probe_rows.layer == layer)]
            if not rows.empty:
                draw_band(ax, rows, f"{probe.upper()} {layer}", color=color)
        rows = model_rows[model_rows.corruption == corruption]
        if not rows.empty:
            draw_band(ax, rows, "model", color="black", style="--")
        ax.set_title(f"{corruption:.0%} corruption")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (true labels)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}: {model.upper()} on {dataset}" + (f" ({setting})" if setting else ""))
    fig.tight_layout()
    return fig


@figure("masc_dynamics")
def masc_dynamics(table: pd.DataFrame, train_log: pd.DataFrame, dataset: str, model: str) -> plt.Figure:
    """Papers' Figure 1: MASC test accuracy per layer vs the model's, over training."""
    return probe_dynamics(table, dataset, model, "masc", "MASC test accuracy")


@figure("training")
def training_curves(table: pd.DataFrame, train_log: pd.DataFrame, dataset: str, model: str) -> plt.Figure:
    """Per-epoch training log: accuracy on corrupted and true training labels, and test accuracy."""
    log = train_log[(train_log.dataset == dataset) & (train_log.model == model)
                    & (train_log.variant == BASE_VARIANT)]
    corruptions = sorted(log.corruption.unique())
    fig, axes = plt.subplots(1, len(corruptions), figsize=(4 * len(corruptions), 3.4), squeeze=False,
                             sharey=True)
    for ax, corruption in zip(axes[0], corruptions):
        rows = log[log.corruption == corruption]
        for column, label in (("train_acc_corrupted", "train (corrupted labels)"),
                              ("train_acc_true", "train (true labels)"), ("test_acc", "test")):
            draw_band(ax, rows, label, y=column)
        ax.set_title(f"{corruption:.0%} corruption")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Training: {model.upper()} on {dataset}")
    fig.tight_layout()
    return fig


def draw_figure(name: str, table: str | Path, train_log: str | Path, dataset: str, model: str,
                out: str | Path, *, dpi: int = 120) -> Path:
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known figures: {sorted(FIGURES)}")
    fig = FIGURES[name](pd.read_parquet(table), pd.read_parquet(train_log), dataset, model)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out
