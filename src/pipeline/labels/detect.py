"""Detectors of wrong training labels: cross-fitted probes and cleanlab, one result type.

Every detector gives, for each training example, a score that its given label is wrong (higher =
more suspect), a suggested label, and a flag at the detector's own threshold
(:class:`Detection`):

* a **probe detector** (:func:`crossfit_probe`): a probe of the registry (MASC, VeLPIC, NCM,
  logistic regression, ...; :func:`pipeline.probes.make_probe`) on a layer's activations,
  *cross-fitted*: the examples are split into ``folds`` folds stratified by the given label; the
  probe is fitted on ``folds - 1`` of them and scores the held-out one. An example is flagged when
  the held-out prediction differs from its given label; its score is the margin of the best other
  class over the given class in the probe's ``decision_function``;
* **cleanlab** (:func:`cleanlab_detection`, :func:`cleanlab_layer`): cleanlab 2.9.0 run as its
  documentation recommends, ``cleanlab.filter.find_label_issues`` (flag) and
  ``cleanlab.rank.get_label_quality_scores`` (score = 1 - quality) on out-of-fold predicted
  probabilities, with its defaults; from a logistic regression on the same layer
  (:func:`cleanlab_layer`) or from any other out-of-fold probabilities (the network trained per
  fold: ``pipeline.labels.retrain``).

Why cross-fitting: a probe fitted on the whole training set is fitted on the very labels it is
asked to judge. On a layer that has memorized the wrong labels, the class subspace of the given
class is fitted partly on the mislabeled examples themselves, so it contains them and "confirms"
their wrong label (tests/labels/test_detect.py shows an in-sample MASC missing most of the wrong
labels that the cross-fitted one finds). Held out, a mislabeled example is judged by subspaces
fitted on other examples, where only the true class's structure can claim it.

:func:`detection_metrics` scores a detection against the truth (precision / recall / F1 of the
flagged set, AUROC / average precision of the scores).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["Detection", "crossfit_probe", "cleanlab_detection", "cleanlab_layer", "detection_metrics",
           "CLEANLAB", "check_detection_labels"]

#: the detector name of cleanlab's rows
CLEANLAB = "cleanlab"


@dataclass
class Detection:
    """One detector's verdict on every training example (arrays in training-set order)."""

    detector: str                # probe registry name ("masc", "velpic", "ncm", "logreg", ...) or "cleanlab"
    setting: str                 # pipeline.probes.setting_id(name, params); "layer" / "network" for cleanlab
    score: np.ndarray            # (n,) float64, higher = more likely that the given label is wrong
    suggested: np.ndarray        # (n,) int64 suggested label
    flagged: np.ndarray          # (n,) bool, flagged at the detector's own threshold
    heldout_accuracy: float      # accuracy of the held-out predictions against the GIVEN labels
    cpu_seconds: float
    wall_seconds: float

    def __post_init__(self) -> None:
        self.score = np.asarray(self.score, dtype=np.float64)
        self.suggested = np.asarray(self.suggested, dtype=np.int64)
        self.flagged = np.asarray(self.flagged, dtype=bool)
        n = len(self.score)
        if self.score.ndim != 1 or self.suggested.shape != (n,) or self.flagged.shape != (n,):
            raise ValueError(f"detection {self.detector}/{self.setting}: score, suggested and flagged must "
                             f"be 1-D of one length, got {self.score.shape}, {self.suggested.shape}, "
                             f"{self.flagged.shape}")


def check_detection_labels(given: np.ndarray, folds: int, num_classes: int | None = None,
                           n_rows: int | None = None) -> tuple[np.ndarray, int]:
    """``(given as int64, number of classes)``; ValueError naming the problem unless every class
    has at least ``folds`` examples (stratified folds need one per fold: a class with fewer cannot
    be held out and scored by a probe fitted without it)."""
    given = np.asarray(given)
    if given.ndim != 1 or (given.size and not np.issubdtype(given.dtype, np.integer)):
        raise ValueError(f"given labels must be a 1-D integer array, got {given.dtype} {given.shape}")
    if n_rows is not None and len(given) != n_rows:
        raise ValueError(f"{len(given)} given labels for {n_rows} activation rows")
    if given.size == 0 or given.min() < 0:
        raise ValueError("given labels must be non-negative class indices, and at least one")
    given = given.astype(np.int64)
    k = int(given.max()) + 1 if num_classes is None else int(num_classes)
    if given.max() >= k:
        raise ValueError(f"given labels reach {int(given.max())}, outside [0, {k})")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    counts = np.bincount(given, minlength=k)
    present = counts[counts > 0]
    if len(present) < 2:
        raise ValueError("the given labels hold one class only: there is nothing to tell apart")
    rare = {int(c): int(counts[c]) for c in np.flatnonzero((counts > 0) & (counts < folds))}
    if rare:
        raise ValueError(f"classes {sorted(rare)} have fewer given labels ({rare}) than the {folds} "
                         f"cross-fitting folds; lower labels.folds or drop those classes")
    return given, k


def _folds(given: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    # the split cleanlab itself uses (cleanlab.count.estimate_cv_predicted_probabilities)
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(given, given)


def _full_columns(values: np.ndarray, classes: np.ndarray, k: int, fill: float) -> np.ndarray:
    """The (n, k) matrix of per-class values with the classes the probe never saw set to ``fill``."""
    out = np.full((values.shape[0], k), fill, dtype=np.float64)
    out[:, np.asarray(classes, dtype=np.int64)] = values
    return out


def _margins(values: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(score, argmax)``: the margin of the best class other than the given one over the given
    class (positive exactly when another class wins), and the winning class."""
    rows = np.arange(len(given))
    own = values[rows, given]
    others = values.copy()
    others[rows, given] = -np.inf
    return others.max(axis=1) - own, values.argmax(axis=1)


def crossfit_probe(X: np.ndarray, given: np.ndarray, name: str, params: dict | None = None, *,
                   folds: int, seed: int, num_classes: int | None = None) -> Detection:
    """The probe ``name`` (with ``params``) as a cross-fitted detector of wrong labels in ``given``.

    ``StratifiedKFold(folds, shuffle=True, random_state=seed)`` on the given labels; on each fold
    the probe is fitted on the others and its ``decision_function`` (``predict_proba`` for a probe
    without one) scores the held-out rows: flag = held-out argmax differs from the given label,
    score = best other class minus the given class, suggested = held-out argmax."""
    from pipeline.probes import make_probe, setting_id

    X = np.asarray(X)
    given, k = check_detection_labels(given, folds, num_classes, n_rows=X.shape[0])
    setting = setting_id(name, params)  # refuses an unknown probe or parameter before any fit
    wall, cpu = time.perf_counter(), time.process_time()
    values = np.empty((len(given), k), dtype=np.float64)
    for train, held in _folds(given, folds, seed):
        probe = make_probe(name, **(params or {})).fit(X[train], given[train])
        if hasattr(probe, "decision_function"):
            fold_values = np.asarray(probe.decision_function(X[held]), dtype=np.float64)
        else:
            fold_values = np.asarray(probe.predict_proba(X[held]), dtype=np.float64)
        # a class the fold's probe never saw cannot win (stratified folds make this rare)
        values[held] = _full_columns(fold_values, probe.classes_, k, -np.inf)
    score, argmax = _margins(values, given)
    return Detection(detector=name, setting=setting, score=score, suggested=argmax,
                     flagged=argmax != given, heldout_accuracy=float(np.mean(argmax == given)),
                     cpu_seconds=time.process_time() - cpu, wall_seconds=time.perf_counter() - wall)


def cleanlab_detection(given: np.ndarray, pred_probs: np.ndarray, *, setting: str,
                       cpu_seconds: float = 0.0, wall_seconds: float = 0.0) -> Detection:
    """cleanlab on out-of-fold ``pred_probs`` (n, K), with its defaults.

    ``cleanlab.filter.find_label_issues(labels, pred_probs)`` (``filter_by="prune_by_noise_rate"``,
    ``frac_noise=1.0``) gives the flag, ``cleanlab.rank.get_label_quality_scores(labels, pred_probs)``
    (``method="self_confidence"``) the score (1 - quality), ``argmax pred_probs`` the suggested
    label. ``cpu_seconds`` / ``wall_seconds``: what producing ``pred_probs`` cost (cleanlab's own
    time is added)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    given = np.asarray(given).astype(np.int64)
    if pred_probs.ndim != 2 or pred_probs.shape[0] != len(given):
        raise ValueError(f"pred_probs must be (n, K) with n = {len(given)} given labels, got {pred_probs.shape}")
    if given.min() < 0 or given.max() >= pred_probs.shape[1]:
        raise ValueError(f"given labels span [{given.min()}, {given.max()}], outside the {pred_probs.shape[1]} "
                         "columns of pred_probs")
    wall, cpu = time.perf_counter(), time.process_time()
    # n_jobs=1: an execution choice only (cleanlab's result does not depend on it); its default
    # starts a process per core, which would oversubscribe the cores a workflow job was given
    flagged = find_label_issues(given, pred_probs, n_jobs=1)
    quality = get_label_quality_scores(given, pred_probs)
    suggested = pred_probs.argmax(axis=1)
    return Detection(detector=CLEANLAB, setting=setting, score=1.0 - quality, suggested=suggested,
                     flagged=flagged, heldout_accuracy=float(np.mean(suggested == given)),
                     cpu_seconds=cpu_seconds + time.process_time() - cpu,
                     wall_seconds=wall_seconds + time.perf_counter() - wall)


def cleanlab_layer(X: np.ndarray, given: np.ndarray, *, folds: int, seed: int,
                   num_classes: int | None = None) -> Detection:
    """cleanlab on a layer: out-of-fold probabilities of a logistic regression on the standardized
    activations (``cross_val_predict`` over the same stratified folds), then
    :func:`cleanlab_detection` (setting ``"layer"``).

    ``LogisticRegression()`` keeps scikit-learn's defaults (L-BFGS, C=1, max_iter=100), the
    classifier of cleanlab's own tutorials and of ``CleanLearning``; the one change is a
    ``StandardScaler`` in front of it (fitted on the training folds only, inside the pipeline):
    raw activations of different scales leave L-BFGS far from converged after its 100
    iterations, which would handicap cleanlab."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X)  # float32 stays float32: scikit-learn converts where its solver needs it
    given, k = check_detection_labels(given, folds, num_classes, n_rows=X.shape[0])
    wall, cpu = time.perf_counter(), time.process_time()
    model = make_pipeline(StandardScaler(), LogisticRegression())
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # a fold that stops at max_iter still gives usable probabilities (cleanlab's default model)
        warnings.simplefilter("ignore", ConvergenceWarning)
        probs = cross_val_predict(model, X, given, cv=cv, method="predict_proba")
    present = np.unique(given)  # cross_val_predict's columns: the classes that occur
    pred_probs = _full_columns(probs, present, k, 0.0)
    if len(present) < k:
        # cleanlab needs every column of pred_probs to be a class that occurs among the labels
        # (its FAQ: drop classes that are absent); map back afterwards
        index = np.searchsorted(present, given)
        det = cleanlab_detection(index, probs, setting="layer")
        det.suggested = present[det.suggested]
    else:
        det = cleanlab_detection(given, pred_probs, setting="layer")
    det.cpu_seconds = time.process_time() - cpu
    det.wall_seconds = time.perf_counter() - wall
    return det


def _auc_metrics(score: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if wrong.all() or not wrong.any():
        return float("nan"), float("nan")  # one class of truth: no ranking to score
    return float(roc_auc_score(wrong, score)), float(average_precision_score(wrong, score))


def detection_metrics(det: Detection, wrong: np.ndarray | None) -> dict:
    """Scores of ``det`` against ``wrong`` (bool, the given label differs from the true one):
    precision, recall and F1 of the flagged set, AUROC and average precision of the scores,
    ``n_flagged``, ``n_wrong``. NaN where undefined (no truth, nothing flagged, nothing wrong)."""
    nan = float("nan")
    n_flagged = int(det.flagged.sum())
    if wrong is None:
        return {"precision": nan, "recall": nan, "f1": nan, "auroc": nan, "average_precision": nan,
                "n_flagged": n_flagged, "n_wrong": nan}
    wrong = np.asarray(wrong, dtype=bool)
    if wrong.shape != det.flagged.shape:
        raise ValueError(f"wrong has shape {wrong.shape}, the detection {det.flagged.shape}")
    hits = int((det.flagged & wrong).sum())
    n_wrong = int(wrong.sum())
    precision = hits / n_flagged if n_flagged else nan
    recall = hits / n_wrong if n_wrong else nan
    f1 = (2 * precision * recall / (precision + recall)
          if n_flagged and n_wrong and precision + recall > 0 else (0.0 if n_flagged and n_wrong else nan))
    auroc, ap = _auc_metrics(det.score, wrong)
    return {"precision": precision, "recall": recall, "f1": f1, "auroc": auroc, "average_precision": ap,
            "n_flagged": n_flagged, "n_wrong": n_wrong}
