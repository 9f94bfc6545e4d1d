"""The repair figure of one (dataset, model) pair: test accuracy after retraining on repaired labels.

One panel per repaired corruption degree, one bar per way of training: on the given (noisy) labels;
after relabeling and after removing what the best probe detector flagged; the same for cleanlab
(each of its routes that ran); the images family's MASC relabel-and-retrain of the same run, where
it ran (``transfer.relabel_retrain``; its rows are read from the run's relabel table, test accuracy
on the true test labels, fit on the corrupted labels); and a model trained on the true labels (an
upper bound, where the truth is known). The bar is the final test accuracy, the tick above it the
best over the retraining's epochs. Runs of several seeds: means over the seeds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["draw_repair", "relabel_retrain_rows"]

#: the images family's relabel-and-retrain rows in its tables (probe name, pipeline.images.transfer)
RELABEL_RETRAIN_PROBE = "relabel_retrain"


def relabel_retrain_rows(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Test accuracy of the MASC relabel-and-retrain per run and protocol (fit on the corrupted labels)."""
    if not tables:
        return pd.DataFrame(columns=["corruption", "seed", "setting", "test_accuracy"])
    rows = pd.concat(tables, ignore_index=True)
    rows = rows[(rows["probe"] == RELABEL_RETRAIN_PROBE) & (rows["split"] == "test") & (rows["target"] == "true")
                & (rows["fit_labels"] == "corrupted")]
    return rows.rename(columns={"accuracy": "test_accuracy", "probe_setting": "setting"})[
        ["corruption", "seed", "setting", "test_accuracy"]]


def _bars(repair: pd.DataFrame, relabel: pd.DataFrame, corruption: float) -> list[tuple[str, float, float]]:
    """(label, final test accuracy, best test accuracy) of every way of training at ``corruption``."""
    here = repair[repair["corruption"] == corruption]
    bars = []

    def add(label: str, rows: pd.DataFrame) -> None:
        if len(rows):
            bars.append((label, float(rows["test_accuracy"].mean()), float(rows["best_test_accuracy"].mean())))

    add("given labels", here[here["mode"] == "given"])
    for (detector, setting), rows in here[here["mode"].isin(["relabel", "remove"])].groupby(
            ["detector", "setting"], sort=False):
        name = "cleanlab" if detector == "cleanlab" else f"{detector}"
        where = f"{setting}" if detector == "cleanlab" else f"{rows['layer'].iloc[0]}"
        for mode in ("relabel", "remove"):
            add(f"{name} ({where}): {mode}", rows[rows["mode"] == mode])
    mine = relabel[relabel["corruption"] == corruption]
    for setting, rows in mine.groupby("setting", sort=True):
        protocol = dict(p.split("=", 1) for p in setting.split(",") if "=" in p).get("protocol", setting)
        bars.append((f"MASC relabel-and-retrain ({protocol})", float(rows["test_accuracy"].mean()), float("nan")))
    add("true labels (upper bound)", here[here["mode"] == "true"])
    return bars


def draw_repair(repair: pd.DataFrame, out: str | Path, *, dataset: str, model: str,
                relabel: pd.DataFrame | None = None, dpi: int = 120) -> Path:
    """Draw the repair figure of ``dataset``/``model`` from its repair table rows (and the relabel-
    and-retrain rows of :func:`relabel_retrain_rows`) into ``out``."""
    from pipeline.core.figures import pyplot, save_figure, subplots, suptitle

    plt = pyplot()
    rows = repair[(repair["dataset"] == dataset) & (repair["model"] == model)]
    relabel = relabel if relabel is not None else relabel_retrain_rows([])
    degrees = sorted(rows["corruption"].unique())
    if not degrees:
        raise ValueError(f"no repair rows for {dataset}/{model}: nothing to draw")
    panels = [_bars(rows, relabel, c) for c in degrees]
    height = max(2.0, 0.38 * max(len(b) for b in panels) + 1.0)
    fig, axes = subplots(1, len(degrees), panel_width=4.6, panel_height=height, squeeze=False, sharex=True)
    colors = plt.get_cmap("tab10")
    for ax, corruption, bars in zip(axes[0], degrees, panels, strict=True):
        y = range(len(bars))
        finals = [b[1] for b in bars]
        ax.barh(list(y), finals, color=[colors(i % 10) for i in y])
        for i, (_, final, best) in enumerate(bars):
            ax.text(final + 0.01, i, f"{final:.3f}", va="center", fontsize=8)
            if best == best:  # not NaN
                ax.plot([best, best], [i - 0.4, i + 0.4], color="black", linewidth=1)
        ax.axvline(finals[0], color="grey", linestyle=":", linewidth=1)
        ax.set_yticks(list(y), [b[0] for b in bars], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        ax.set_xlabel("test accuracy (true test labels)")
        ax.set_title(f"corruption {corruption:g}")
    suptitle(fig, f"{dataset} / {model}: retrained from scratch after repairing the flagged labels "
                  "(bar: final epoch; tick: best epoch; dotted: the given labels)")
    return save_figure(fig, out, dpi=dpi)
