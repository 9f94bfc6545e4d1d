"""The ablation figure (``results/plots/dynamics/<dataset>/<model>/ablations.<format>``) from
``results/tables/dynamics_ablations.parquet`` (:func:`pipeline.dynamics.aggregate.aggregate_ablations`):

* top row, the paper's Fig. 18 ("test accuracy with and without shallow network freezing, epochs
  150-300"): test accuracy per epoch from the branch epoch E on, for the standard run ("SGD", the
  paper's fully trainable baseline, keeping its optimizer state), the restart-only control (same
  branch and optimizer restart, nothing frozen) and each frozen depth ("fix <depth>");
* bottom row, Appendix F "Reinitializing deep layers" (the paper reports it as numbers, not a
  figure): test accuracy during the retraining of each retained depth, against the standard run's
  final test accuracy (dashed).

One column per corruption; each line is the mean over the seeds present, the band +-1 sd (drawn only
with >= 2 seeds), the seed count in the legend. Torch-free (the figures job imports no torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.figures import save_figure, subplots, suptitle

__all__ = ["read_ablations", "seed_curves", "ablation_figure", "draw_ablation_figure"]

#: the baseline rows of the ablation table (the standard runs' own logs)
STANDARD = "standard"


def read_ablations(path: str | Path) -> pd.DataFrame:
    from pipeline.core.tables import read_table

    return read_table(path)


def seed_curves(d: pd.DataFrame, measure: str = "test_acc") -> pd.DataFrame:
    """``epoch, mean, sd, n_seeds`` of ``measure`` over the seeds of ``d`` (one kind/depth/corruption)."""
    g = d.groupby("epoch")[measure]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n_seeds": g.count()}).reset_index()
    return out.sort_values("epoch")


def _line(ax, d: pd.DataFrame, label: str, gid: str, **kw) -> None:
    c = seed_curves(d)
    n = int(c["n_seeds"].max()) if len(c) else 0
    (line,) = ax.plot(c["epoch"], c["mean"], label=f"{label} (n={n})", gid=gid, lw=1.2, **kw)
    if n >= 2:
        ax.fill_between(c["epoch"], c["mean"] - c["sd"], c["mean"] + c["sd"], alpha=0.2,
                        color=line.get_color(), lw=0)


def _depth_order(d: pd.DataFrame) -> list[str]:
    return sorted(d["ablation_depth"].dropna().unique(), key=lambda s: (len(s), s))


def ablation_figure(table: pd.DataFrame, dataset: str, model: str):
    """The figure of one (dataset, model) pair (see the module doc); lines carry ``gid``s
    ``freeze|<corruption>|<label>`` / ``reinit|<corruption>|<label>`` (labels: ``standard``,
    ``restart``, a depth) so tests can read back what was drawn."""
    df = table[(table["dataset"] == dataset) & (table["model"] == model)]
    abl = df[df["ablation"] != STANDARD]
    rows = [k for k in ("freeze", "reinit") if (abl["ablation"] == k).any()
            or (k == "freeze" and (abl["ablation"] == "restart").any())]
    if not rows:
        fig, axes = subplots(1, 1, panel_width=5, panel_height=2)
        axes[0, 0].text(0.5, 0.5, f"no ablation runs for {dataset}/{model}", ha="center", va="center")
        axes[0, 0].set_axis_off()
        return fig
    corruptions = sorted(abl["corruption"].unique())
    fig, axes = subplots(len(rows), len(corruptions), panel_width=4.2, panel_height=3.2)
    for j, c in enumerate(corruptions):
        dc = df[np.isclose(df["corruption"], c)]
        std = dc[dc["ablation"] == STANDARD]
        for i, row in enumerate(rows):
            ax = axes[i, j]
            if row == "freeze":
                part = dc[dc["ablation"].isin(["freeze", "restart"])]
                start = int(part["ablation_epoch"].min())
                end = int(part["epoch"].max())
                _line(ax, std[(std["epoch"] >= start) & (std["epoch"] <= end)], "SGD (standard run)",
                      f"freeze|{c:g}|standard", color="black")
                restart = part[part["ablation"] == "restart"]
                if len(restart):
                    _line(ax, restart[restart["epoch"] >= start], "restart only",
                          f"freeze|{c:g}|restart", ls="--", color="grey")
                frozen = part[part["ablation"] == "freeze"]
                for depth in _depth_order(frozen):
                    dd = frozen[frozen["ablation_depth"] == depth]
                    _line(ax, dd[dd["epoch"] >= start], f"fix {depth}", f"freeze|{c:g}|{depth}")
                ax.set_title(f"corruption {c:g}: shallow layers frozen at epoch {start}")
            else:
                part = dc[dc["ablation"] == "reinit"]
                for depth in _depth_order(part):
                    dd = part[part["ablation_depth"] == depth]
                    branch = int(dd["ablation_epoch"].min())
                    # from the first retrained epoch: the branch row is the trained network's
                    _line(ax, dd[dd["epoch"] > branch], f"retain {depth}, reinit deeper",
                          f"reinit|{c:g}|{depth}")
                if len(std):
                    final = std[std["epoch"] == std.groupby("seed")["epoch"].transform("max")]
                    ax.axhline(float(final["test_acc"].mean()), ls="--", color="black", lw=1,
                               gid=f"reinit|{c:g}|standard",
                               label=f"standard run, final (n={final['seed'].nunique()})")
                ax.set_title(f"corruption {c:g}: deep layers reinitialised and retrained")
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy")
            ax.legend(fontsize=7)
    suptitle(fig, f"{dataset} / {model}: ablations (Fig. 18 freezing; App. F reinitialisation); "
                  "mean +- sd over seeds")
    return fig


def draw_ablation_figure(table: str | Path, out: str | Path, *, dataset: str, model: str,
                         dpi: int = 120) -> Path:
    return save_figure(ablation_figure(read_ablations(table), dataset, model), out, dpi=dpi)
