"""Schemas of the detection tables and their frame builders.

* ``detection`` (:data:`DETECTION`): one row per run, epoch, layer, detector and setting: how many
  training examples (``n_train``), how many the detector flagged and, where the truth is known
  (``truth_known``), how many labels are wrong, precision / recall / F1 of the flagged set and
  AUROC / average precision of the scores against the truth (missing where the truth is not
  known, or NaN where undefined), the held-out accuracy on the given labels (always known), and
  the CPU / wall seconds the detector took.
* ``label_scores`` (:data:`LABEL_SCORES`): one row per run, epoch, layer, detector, setting and
  training example (``index``, its position in the training set): the given label, the suggested
  one, the score (higher = more suspect), the flag and, where the truth is known, whether the
  given label is wrong.

``epoch`` and ``layer`` name where a detector read: a probe or cleanlab on a layer at a checkpoint,
or, for cleanlab on the network trained per fold, the layer ``network`` at the most epochs any fold network trained.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.config import Run
from pipeline.core.tables import RUN_KEY_COLUMNS, TableSchema
from pipeline.labels.detect import Detection, detection_metrics

__all__ = ["DETECTION", "LABEL_SCORES", "DETECTION_COLUMNS", "LABEL_SCORE_COLUMNS", "detection_frame",
           "scores_frame"]

_WHERE = {"epoch": "int64", "layer": "string", "detector": "string", "setting": "string"}

DETECTION_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS, **_WHERE,
    "truth_known": "bool", "n_train": "int64", "n_wrong": "Int64", "n_flagged": "int64",
    "heldout_accuracy": "float64", "precision": "float64", "recall": "float64", "f1": "float64",
    "auroc": "float64", "average_precision": "float64", "cpu_seconds": "float64",
    "wall_seconds": "float64",
}

LABEL_SCORE_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS, **_WHERE,
    "index": "int64", "given": "int64", "suggested": "int64", "score": "float64", "flagged": "bool",
    "wrong": "boolean",
}

_METRICS = ("precision", "recall", "f1", "auroc", "average_precision")


def _check_detection(df: pd.DataFrame) -> None:
    bounded = df[list(_METRICS) + ["heldout_accuracy"]]
    if ((bounded < 0) | (bounded > 1)).any().any():
        raise ValueError("detection: a metric lies outside [0, 1]")
    unknown = ~df["truth_known"]
    if df.loc[unknown, list(_METRICS)].notna().any().any() or df.loc[unknown, "n_wrong"].notna().any():
        raise ValueError("detection: rows without the truth carry metrics against it")
    if (df["n_flagged"] > df["n_train"]).any():
        raise ValueError("detection: more examples flagged than there are")


DETECTION = TableSchema("detection", DETECTION_COLUMNS,
                        (*RUN_KEY_COLUMNS, "epoch", "layer", "detector", "setting"),
                        nullable=frozenset({"n_wrong", *_METRICS}), check_values=_check_detection)

LABEL_SCORES = TableSchema("label_scores", LABEL_SCORE_COLUMNS,
                           (*RUN_KEY_COLUMNS, "epoch", "layer", "detector", "setting", "index"),
                           nullable=frozenset({"wrong"}))


def _wrong(wrong, n: int) -> np.ndarray | None:
    if wrong is None:
        return None
    wrong = np.asarray(wrong, dtype=bool)
    if wrong.shape != (n,):
        raise ValueError(f"wrong has shape {wrong.shape}, expected ({n},)")
    return wrong


def detection_frame(run: Run, epoch: int, layer: str, detections: list[Detection], wrong) -> pd.DataFrame:
    """The detection table's rows of ``detections`` (one run, epoch and layer); ``wrong`` (bool per
    example, given != true) or None where the truth is not known."""
    rows = []
    for det in detections:
        truth = _wrong(wrong, len(det.score))
        m = detection_metrics(det, truth)
        rows.append({**run.keys(), "epoch": int(epoch), "layer": layer, "detector": det.detector,
                     "setting": det.setting, "truth_known": truth is not None, "n_train": len(det.score),
                     "n_wrong": pd.NA if truth is None else m["n_wrong"], "n_flagged": m["n_flagged"],
                     "heldout_accuracy": det.heldout_accuracy,
                     **{k: m[k] for k in _METRICS}, "cpu_seconds": det.cpu_seconds,
                     "wall_seconds": det.wall_seconds})
    return DETECTION.frame(rows)


def scores_frame(run: Run, epoch: int, layer: str, detections: list[Detection], given, wrong) -> pd.DataFrame:
    """The label_scores table's rows: every example of every detection (one run, epoch, layer)."""
    given = np.asarray(given, dtype=np.int64)
    n = len(given)
    truth = _wrong(wrong, n)
    frames = []
    for det in detections:
        if len(det.score) != n:
            raise ValueError(f"detection {det.detector}/{det.setting} has {len(det.score)} scores for {n} labels")
        frame = pd.DataFrame({
            **{k: pd.Series([v] * n, dtype=RUN_KEY_COLUMNS[k]) for k, v in run.keys().items()},
            "epoch": np.full(n, int(epoch), dtype=np.int64), "layer": layer, "detector": det.detector,
            "setting": det.setting, "index": np.arange(n, dtype=np.int64), "given": given,
            "suggested": det.suggested, "score": det.score, "flagged": det.flagged,
            "wrong": pd.array(truth if truth is not None else [pd.NA] * n, dtype="boolean")})
        frames.append(frame)
    if not frames:
        return LABEL_SCORES.frame([])
    return LABEL_SCORES.frame(pd.concat(frames, ignore_index=True))
