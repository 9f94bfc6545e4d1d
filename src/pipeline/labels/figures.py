"""The detection figures of one (dataset, model) pair, drawn from the detection, label_scores and
training-log tables of its runs (truth-known runs only: both figures score against the truth).

* :func:`draw_pr_curves`: one panel per corruption degree; in each, the precision-recall curve of
  every detector at its best reading (the epoch and layer of its highest AUROC), its flagged set as
  a dot, and the fraction of wrong labels (a detector guessing at random) as a dotted line.
* :func:`draw_detection_epochs`: one panel per corruption degree; each detector's AUROC over the
  epochs on its best layer (highest mean AUROC over the epochs), beside the network's test accuracy
  (dashed) from its training log: whether detection is best at the early peak of test accuracy,
  before the output memorizes the wrong labels.

Runs of several seeds: the PR curves are those of the smallest seed; AUROC and test accuracy are
means over the seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["draw_pr_curves", "draw_detection_epochs", "read_scores_for", "best_by_auroc"]

_KEYS = ["dataset", "model", "corruption", "seed", "variant"]


def _label(detector: str, setting: str) -> str:
    return f"{detector} ({setting})" if setting else detector


def _truth_rows(detection: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    rows = detection[(detection["dataset"] == dataset) & (detection["model"] == model)
                     & detection["truth_known"] & detection["auroc"].notna()]
    return rows


def best_by_auroc(detection: pd.DataFrame) -> pd.DataFrame:
    """Per run, detector and setting: the row (epoch, layer) of the highest AUROC."""
    ordered = detection.sort_values(["auroc", "epoch", "layer"], ascending=[False, True, True], kind="mergesort")
    return ordered.drop_duplicates([*_KEYS, "detector", "setting"], keep="first").reset_index(drop=True)


def read_scores_for(paths: list[str | Path], wanted: pd.DataFrame) -> pd.DataFrame:
    """The label_scores rows of the (run, epoch, layer, detector, setting) readings in ``wanted``,
    reading only the tables whose recorded run and epoch are wanted."""
    import json

    from pipeline.core.tables import read_parquet_metadata, read_table
    from pipeline.labels.tables import LABEL_SCORES

    def key(keys, epoch) -> tuple:
        return (str(keys["dataset"]), str(keys["model"]), float(keys["corruption"]), int(keys["seed"]),
                str(keys["variant"]), int(epoch))

    want = {key(r, r["epoch"]) for _, r in wanted.iterrows()}
    frames = []
    for path in paths:
        meta = read_parquet_metadata(path)
        try:
            recorded = key(json.loads(meta["run"]), json.loads(meta["epoch"]))
        except (KeyError, ValueError, TypeError):
            recorded = None  # a gathered table of several runs: read it whole
        if recorded is not None and recorded not in want:
            continue
        frames.append(read_table(path, LABEL_SCORES))
    if not frames:
        return pd.DataFrame(columns=list(LABEL_SCORES.columns))
    scores = pd.concat(frames, ignore_index=True)
    sel = wanted[[*_KEYS, "epoch", "layer", "detector", "setting"]]
    return scores.merge(sel, on=list(sel.columns), how="inner")


def _empty(ax, text: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)


def draw_pr_curves(detection: pd.DataFrame, score_paths: list[str | Path], out: str | Path, *,
                   dataset: str, model: str, dpi: int = 120) -> Path:
    """Precision-recall curves of every detector at its best reading, one panel per corruption."""
    from sklearn.metrics import precision_recall_curve

    from pipeline.core.figures import save_figure, subplots, suptitle

    rows = _truth_rows(detection, dataset, model)
    corruptions = sorted(rows["corruption"].unique())
    fig, axes = subplots(1, max(len(corruptions), 1), panel_width=4.2, panel_height=3.8)
    if rows.empty:
        _empty(axes[0, 0], "no run with known true labels: nothing to score")
    else:
        first_seed = rows.groupby("corruption")["seed"].transform("min")
        best = best_by_auroc(rows[rows["seed"] == first_seed])
        scores = read_scores_for(score_paths, best)
        for ax, corruption in zip(axes[0], corruptions, strict=True):
            panel = best[best["corruption"] == corruption].sort_values(["auroc"], ascending=False)
            fraction = float("nan")
            for _, r in panel.iterrows():
                s = scores[(scores["corruption"] == corruption) & (scores["detector"] == r["detector"])
                           & (scores["setting"] == r["setting"]) & (scores["epoch"] == r["epoch"])
                           & (scores["layer"] == r["layer"])]
                wrong = s["wrong"].astype(bool).to_numpy()
                precision, recall, _ = precision_recall_curve(wrong, s["score"].to_numpy())
                line, = ax.plot(recall, precision, lw=1.4,
                                label=f"{_label(r['detector'], r['setting'])}: AP {r['average_precision']:.2f}, "
                                      f"AUROC {r['auroc']:.2f} (ep {int(r['epoch'])}, {r['layer']})")
                if pd.notna(r["precision"]) and pd.notna(r["recall"]):
                    ax.plot([r["recall"]], [r["precision"]], "o", color=line.get_color(), ms=5)
                fraction = wrong.mean()
            ax.axhline(fraction, color="grey", ls=":", lw=1, label=f"wrong labels ({fraction:.2f})")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (of the wrong labels)", ylabel="precision",
                   title=f"corruption {corruption:g} (seed {int(panel['seed'].min())})")
            ax.legend(fontsize=6.5, loc="lower left")
    suptitle(fig, f"{dataset} / {model}: finding the wrong training labels, precision vs recall of each "
                  "detector at its best epoch and layer (dot: its flagged set)")
    return save_figure(fig, out, dpi=dpi)


def draw_detection_epochs(detection: pd.DataFrame, logs: pd.DataFrame | None, out: str | Path, *,
                          dataset: str, model: str, dpi: int = 120) -> Path:
    """AUROC of each detector over the epochs (its best layer) beside the test accuracy."""
    from pipeline.core.figures import save_figure, subplots, suptitle

    rows = _truth_rows(detection, dataset, model)
    corruptions = sorted(rows["corruption"].unique())
    fig, axes = subplots(1, max(len(corruptions), 1), panel_width=4.4, panel_height=3.6)
    if rows.empty:
        _empty(axes[0, 0], "no run with known true labels: nothing to score")
    for ax, corruption in zip(axes[0], corruptions, strict=False):
        panel = rows[rows["corruption"] == corruption]
        curves = panel.groupby(["detector", "setting", "layer", "epoch"], as_index=False)["auroc"].mean()
        layer_mean = curves.groupby(["detector", "setting", "layer"], as_index=False)["auroc"].mean()
        best_layers = layer_mean.sort_values("auroc", ascending=False, kind="mergesort").drop_duplicates(
            ["detector", "setting"])
        notes = []
        for _, b in best_layers.iterrows():
            c = curves[(curves["detector"] == b["detector"]) & (curves["setting"] == b["setting"])
                       & (curves["layer"] == b["layer"])].sort_values("epoch")
            line, = ax.plot(c["epoch"], c["auroc"], marker="o", ms=3, lw=1.3,
                            label=f"{_label(b['detector'], b['setting'])} AUROC ({b['layer']})")
            top = c.loc[c["auroc"].idxmax()]
            ax.plot([top["epoch"]], [top["auroc"]], "*", color=line.get_color(), ms=10)
            notes.append(int(top["epoch"]))
        peak = None
        if logs is not None:
            log = logs[(logs["dataset"] == dataset) & (logs["model"] == model)
                       & np.isclose(logs["corruption"], corruption)]
            if not log.empty:
                acc = log.groupby("epoch")["test_acc"].mean()
                ax.plot(acc.index, acc.to_numpy(), "k--", lw=1.3, label="test accuracy (network)")
                peak = int(acc.idxmax())
                ax.axvline(peak, color="k", ls=":", lw=0.8)
        title = f"corruption {corruption:g}"
        if peak is not None:
            title += f": test accuracy peaks at epoch {peak}"
        ax.set(xlabel="epoch", ylabel="AUROC / test accuracy", ylim=(0, 1.02), title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6.5, loc="lower right")
    suptitle(fig, f"{dataset} / {model}: detection quality of the wrong labels over training (star: each "
                  "detector's best epoch) beside the test accuracy (dotted line: its peak)")
    return save_figure(fig, out, dpi=dpi)
