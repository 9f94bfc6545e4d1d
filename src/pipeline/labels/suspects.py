"""The ranked list of suspected training examples (``suspects.csv``) and the figure of the most
suspicious images per class (``suspects.png``), for a user who does not know the truth.

Each detector is read without the truth: at the detected epoch nearest the peak of the network's
test accuracy (from its training log, when given: the early peak, before the output memorizes the
wrong labels), on the layer where it agrees best with the given labels on held-out folds (highest
``heldout_accuracy``). Held-out agreement alone is not enough across epochs: once the network has
memorized its training set, a linear read-out (logreg, cleanlab's logistic regression) of a late
layer predicts the memorized *given* label even of the examples it was not fitted on (the network
was), so its held-out accuracy rises while it stops finding the wrong labels (digits, MLP, 50 %
corruption, layer fc2: held-out accuracy 0.35 -> 0.85 from epoch 5 to 100, recall 0.94 -> 0.32;
docs/labels.md). Its flagged examples are listed by decreasing score, at most ``top`` per
detector; detectors are listed best first (by that held-out accuracy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SUSPECT_COLUMNS", "best_readings", "suspects_frame", "write_suspects", "draw_suspects"]

#: the columns of suspects.csv, in order (``file``: the image's path where the dataset has one,
#: else empty; ``wrong``: whether the given label is wrong, where the truth is known, else empty)
SUSPECT_COLUMNS = ["detector", "rank", "index", "file", "given", "suggested", "score", "setting", "epoch",
                   "layer", "wrong"]


def best_readings(detection: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """Per (detector, setting): the row of its highest held-out accuracy (ties: the earlier epoch,
    then the layer first in name order), best detectors first; with ``epoch``, among the rows of
    the detector's detected epoch nearest to it (the earlier one on a tie)."""
    if detection.empty:
        return detection
    detection = detection.reset_index(drop=True)
    if epoch is not None:  # each detector's own detected epochs (cleanlab's network route has one)
        def nearest(rows: pd.DataFrame) -> pd.Series:
            epochs = np.sort(rows["epoch"].unique())
            return rows["epoch"] == epochs[np.argmin(np.abs(epochs - int(epoch)))]

        keep = pd.concat([nearest(rows) for _, rows in detection.groupby(["detector", "setting"], sort=False)])
        detection = detection[keep.reindex(detection.index)]
    ordered = detection.sort_values(["heldout_accuracy", "epoch", "layer"], ascending=[False, True, True],
                                    kind="mergesort")
    best = ordered.drop_duplicates(["detector", "setting"], keep="first")
    return best.reset_index(drop=True)


def _file(files, index: int) -> str:
    """The image file of training example ``index``, or "" where the dataset has none."""
    if files is None or files[index] is None:
        return ""
    return str(files[index])


def suspects_frame(detection: pd.DataFrame, scores: pd.DataFrame, *, top: int | None,
                   files: list | np.ndarray | None = None, epoch: int | None = None) -> pd.DataFrame:
    """The ranked suspects of one run: for each detector at its best reading
    (:func:`best_readings`, near ``epoch`` when given), its flagged examples by decreasing score
    (at most ``top``)."""
    runs = detection[["dataset", "model", "corruption", "seed", "variant"]].drop_duplicates()
    if len(runs) > 1:
        raise ValueError(f"suspects are listed per run; the detection table holds {len(runs)} runs")
    frames = []
    for _, row in best_readings(detection, epoch).iterrows():
        rows = scores[(scores["epoch"] == row["epoch"]) & (scores["layer"] == row["layer"])
                      & (scores["detector"] == row["detector"]) & (scores["setting"] == row["setting"])
                      & scores["flagged"]]
        rows = rows.sort_values(["score", "index"], ascending=[False, True], kind="mergesort")
        if top is not None:
            rows = rows.head(int(top))
        frame = pd.DataFrame({
            "detector": row["detector"], "rank": np.arange(1, len(rows) + 1), "index": rows["index"].to_numpy(),
            "file": [_file(files, i) for i in rows["index"]],
            "given": rows["given"].to_numpy(), "suggested": rows["suggested"].to_numpy(),
            "score": rows["score"].to_numpy(), "setting": row["setting"], "epoch": int(row["epoch"]),
            "layer": row["layer"], "wrong": rows["wrong"].astype("boolean").to_numpy()})
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=SUSPECT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[SUSPECT_COLUMNS]


def write_suspects(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the suspects table as CSV, atomically."""
    from pipeline.core.artifacts import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def _image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image (C, H, W) uint8 as imshow takes it, and its colormap."""
    if x.shape[0] == 1:
        return x[0], "gray"
    return np.transpose(x[:3], (1, 2, 0)), None


def draw_suspects(table: pd.DataFrame, images: np.ndarray, out: str | Path, *, per_class: int,
                  class_names: list[str] | None = None, max_classes: int = 20, title: str = "",
                  dpi: int = 120) -> Path:
    """The most suspicious images of the best detector (the first of ``table``), one row per given
    class (the ``max_classes`` classes with the most suspects), at most ``per_class`` per row,
    each titled with its index, given -> suggested label and score."""
    from pipeline.core.figures import save_figure, subplots, suptitle

    def name(c: int) -> str:
        return class_names[c] if class_names is not None and c < len(class_names) else str(c)

    if table.empty:
        fig, axes = subplots(1, 1, panel_width=4.0, panel_height=1.2)
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "no example flagged by any detector", ha="center", va="center")
        suptitle(fig, title or "suspected training labels")
        return save_figure(fig, out, dpi=dpi)
    best = table[table["detector"] == table["detector"].iloc[0]]
    best = best[best["setting"] == best["setting"].iloc[0]]
    counts = best["given"].value_counts()
    classes = sorted(counts.index[:max_classes].tolist())
    fig, axes = subplots(len(classes), per_class, panel_width=1.25, panel_height=1.45)
    for r, c in enumerate(classes):
        rows = best[best["given"] == c].head(per_class)
        for j in range(per_class):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(j < len(rows))
            if j >= len(rows):
                continue
            s = rows.iloc[j]
            image, cmap = _image(images[int(s["index"])])
            ax.imshow(image, cmap=cmap)
            ax.set_title(f"#{int(s['index'])} {name(int(s['given']))}\u2192{name(int(s['suggested']))}\n"
                         f"score {s['score']:.2f}", fontsize=7)
        axes[r, 0].set_ylabel(f"given {name(c)}", fontsize=8)
    d = best.iloc[0]
    what = (f"Most suspicious training images per given class: {d['detector']} ({d['setting'] or 'default'}) "
            f"at epoch {int(d['epoch'])}, layer {d['layer']}; panel title = index, given\u2192suggested label, score")
    if len(counts) > len(classes):
        what += f" ({len(classes)} of {len(counts)} classes with suspects: those with the most)"
    suptitle(fig, f"{title}\n{what}" if title else what)
    return save_figure(fig, out, dpi=dpi)
