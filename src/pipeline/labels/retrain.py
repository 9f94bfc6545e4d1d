"""Train a run's network from scratch on other labels, or on part of its training set.

One function, :func:`train_from_scratch`, serves both the repair (retrain after relabeling or
removing the flagged examples, and the baselines on the given and the true labels) and cleanlab's
network route (:func:`out_of_fold_probabilities`: the network trained on each ``folds - 1`` folds,
predicting the held-out one). It is the run's own training, nothing else changed: the one training
loop (:class:`pipeline.core.training.Trainer`) with the run's seed (so the same initialization and
the same (seed, epoch)-seeded batch order and dropout), hyperparameters (the model's defaults and
``train.overrides``), augmentation, ``train.max_epochs`` and ``train.target_train_accuracy``
(training stops once the model fits the labels it is given to that accuracy), and the run's input
normalization (computed on the whole training set, also when some examples are left out). So a
retrain on the given labels with nothing left out reproduces the run's training epoch for epoch
(``tests/labels/test_repair.py`` checks it against the run's own log).

The trainer writes its checkpoint and resume state into a temporary folder that is removed
afterwards: a retrain is a measurement, not a run of the workflow.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from pipeline.core.runtime import RunRuntime


@dataclass
class Retrained:
    """One from-scratch training: its log (one row per epoch, epoch 0 = the initialization, with the
    test accuracy of every epoch) and the final model."""

    n_train: int               # training examples used
    final_epoch: int           # epochs trained
    stop_reason: str           # "target_train_accuracy" or "max_epochs"
    log: pd.DataFrame          # the trainer's log (pipeline.core.training.LOG_COLUMNS)
    cpu_seconds: float         # CPU time of this process (all its threads) spent training
    wall_seconds: float
    model: torch.nn.Module | None = field(repr=False)   # None once no longer needed (fold models)

    @property
    def test_accuracy(self) -> float:
        """Test accuracy of the final model (what one gets without peeking at the test set)."""
        return float(self.log["test_acc"].iloc[-1])

    @property
    def best_test_accuracy(self) -> float:
        """The best test accuracy over the epochs (an oracle stopping epoch: it reads test labels)."""
        return float(self.log["test_acc"].max())

    def summary(self) -> dict:
        return {"n_train": self.n_train, "final_epoch": self.final_epoch, "stop_reason": self.stop_reason,
                "test_accuracy": self.test_accuracy, "best_test_accuracy": self.best_test_accuracy,
                "best_test_epoch": int(self.log["epoch"].iloc[int(self.log["test_acc"].to_numpy().argmax())]),
                "cpu_seconds": self.cpu_seconds, "wall_seconds": self.wall_seconds}


def _check_labels(rt: RunRuntime, labels: np.ndarray, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as int64 and ``keep`` as sorted indices, checked against the run's training set."""
    n, k = len(rt.labels.corrupted), int(rt.labels.num_classes)
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{rt.run.path}: training labels must be {n} integers (one per training image), "
                         f"got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"{rt.run.path}: training labels must lie in [0, {k}), got {labels.min()}..{labels.max()}")
    if keep is None:
        idx = np.arange(n)
    else:
        keep = np.asarray(keep)
        if keep.dtype == bool:
            if keep.shape != (n,):
                raise ValueError(f"{rt.run.path}: the keep mask has shape {keep.shape}, expected ({n},)")
            idx = np.flatnonzero(keep)
        else:
            idx = np.unique(keep.astype(np.int64))
            if idx.size and (idx[0] < 0 or idx[-1] >= n):
                raise ValueError(f"{rt.run.path}: keep indices must lie in [0, {n})")
    if idx.size < 2:
        raise ValueError(f"{rt.run.path}: {idx.size} training example(s) left to train on; at least 2 are needed")
    return labels.astype(np.int64), idx


def train_from_scratch(rt: RunRuntime, labels: np.ndarray, *, keep: np.ndarray | None = None,
                       true: np.ndarray | None = None, work_dir: str | Path | None = None) -> Retrained:
    """Train the run of ``rt`` from its initialization on ``labels`` (one per training image) with
    the run's settings (module docstring), on the examples ``keep`` (a boolean mask or indices;
    default all of them).

    ``true`` (one per training image) fills the log's ``train_acc_true`` column (the given labels'
    when None). The test accuracy is measured against the run's test labels after every epoch.
    ``work_dir`` holds the trainer's temporary folder (default: the system's).
    """
    import torch

    from pipeline.core.labels import RunLabels
    from pipeline.core.runtime import RunRuntime
    from pipeline.core.training import Plan, Trainer

    labels, idx = _check_labels(rt, labels, keep)
    true = labels if true is None else np.asarray(true, dtype=np.int64)
    arrays = rt.arrays
    if idx.size < len(labels):
        # every per-example field of the training split follows the subset (file names of a user's
        # image folder, the labels as a user's file gives them)
        per_example = {name: [value[i] for i in idx] if isinstance(value, list) else np.asarray(value)[idx]
                       for name in ("train_files", "y_train_given")
                       if (value := getattr(arrays, name, None)) is not None}
        arrays = replace(arrays, x_train=arrays.x_train[idx], y_train=arrays.y_train[idx], **per_example)
    run_labels = RunLabels(corrupted=labels[idx], true=true[idx], resampled=np.zeros(idx.size, dtype=bool),
                           test=rt.labels.test, num_classes=rt.labels.num_classes)
    # threads: keep this process's (the stage's --threads), not train.num_threads again
    sub = RunRuntime(rt.config, rt.run, arrays=arrays, labels=run_labels, transform=rt.transform,
                     threads=torch.get_num_threads())
    tcfg = rt.config["train"]
    # no schedule: the only checkpoint is the final one, in the temporary folder
    plan = Plan(last_epoch=int(tcfg["max_epochs"]), schedule=set(), stop_at_target=tcfg["target_train_accuracy"])
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retrain-", dir=work_dir) as tmp:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        trainer = Trainer(sub, tmp, plan, progress=False)
        result = trainer.run()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return Retrained(n_train=int(idx.size), final_epoch=int(result.final_epoch), stop_reason=result.stop_reason,
                     log=result.log, cpu_seconds=cpu, wall_seconds=wall, model=trainer.model.eval())


def predict_proba(model: torch.nn.Module, x_uint8: torch.Tensor, transform, *, device=None,
                  batch_size: int = 1024) -> np.ndarray:
    """Softmax probabilities ``(n, classes)`` of ``model`` on ``x_uint8`` (eval mode, float64)."""
    import torch

    from pipeline.core.runtime import forward

    out = [torch.softmax(logits.double(), dim=1).cpu() for _, _, logits, _ in
           forward(model, x_uint8, transform, batch_size=batch_size, device=device)]
    return torch.cat(out).numpy()


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number (0 .. folds-1) of each example: ``folds`` folds stratified by ``labels``
    (sklearn's ``StratifiedKFold``, shuffled with ``seed``)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if not 2 <= folds <= labels.size:
        raise ValueError(f"labels.folds must be between 2 and the {labels.size} training examples; got {folds}")
    fold = np.empty(labels.size, dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(labels.size), labels)):
        fold[held] = k
    return fold


@dataclass
class OutOfFold:
    """Out-of-fold predicted probabilities: row ``i`` comes from the network trained without fold
    ``fold[i]``, the one example ``i`` is in."""

    pred_probs: np.ndarray      # (n, classes)
    fold: np.ndarray            # (n,) fold of each example
    fits: list[Retrained]       # one training per fold

    def details(self) -> list[dict]:
        return [{"fold": k, "n_heldout": int((self.fold == k).sum()), **fit.summary()}
                for k, fit in enumerate(self.fits)]


def out_of_fold_probabilities(rt: RunRuntime, given: np.ndarray, *, folds: int, seed: int | None = None,
                              true: np.ndarray | None = None, work_dir: str | Path | None = None,
                              fold: np.ndarray | None = None) -> OutOfFold:
    """cleanlab's recommended input: for each of ``folds`` folds stratified by ``given`` (seeded by
    the run's seed unless ``seed`` is given; or the assignment ``fold``), the network trained from
    scratch on the other folds (:func:`train_from_scratch`, given labels) predicts the fold's
    examples; no example is predicted by a network that saw it."""
    import torch

    given = np.asarray(given, dtype=np.int64)
    if fold is None:
        fold = stratified_folds(given, folds, rt.run.seed if seed is None else seed)
    fold = np.asarray(fold, dtype=np.int64)
    pred_probs = np.full((given.size, int(rt.labels.num_classes)), np.nan)
    fits = []
    for k in np.unique(fold):
        held = fold == k
        fit = train_from_scratch(rt, given, keep=~held, true=true, work_dir=work_dir)
        pred_probs[held] = predict_proba(fit.model, rt.x_train[torch.from_numpy(np.flatnonzero(held))],
                                         rt.transform, device=rt.device)
        fit.model = None  # K models of a large network need not stay in memory
        fits.append(fit)
        print(f"{rt.run.path}: fold {k + 1}/{len(np.unique(fold))} trained {fit.final_epoch} epochs "
              f"on {fit.n_train} examples ({fit.stop_reason}), predicted {int(held.sum())}", flush=True)
    return OutOfFold(pred_probs, fold, fits)


#: ``layer`` of the network route's rows in the detection tables (setting ``"network"``)
NETWORK_LAYER = "network"


def truth_of(labels) -> np.ndarray | None:
    """The run's true training labels, or None where they are not known (a user's data without
    ``y_true``: :attr:`pipeline.core.labels.RunLabels.truth_known`)."""
    return np.asarray(labels.true, dtype=np.int64) if getattr(labels, "truth_known", True) else None


def cleanlab_network_run(rt: RunRuntime, *, folds: int, detection_out: str | Path, scores_out: str | Path,
                         details_out: str | Path, metadata: dict | None = None,
                         work_dir: str | Path | None = None) -> pd.DataFrame:
    """cleanlab's network route for the run of ``rt``: out-of-fold probabilities of the network
    trained from scratch on each ``folds - 1`` folds of the given labels
    (:func:`out_of_fold_probabilities`, folds stratified and seeded like the probe detectors'), then
    :func:`pipeline.labels.detect.cleanlab_detection` (setting ``"network"``, its CPU and wall
    seconds including the fold trainings). Rows go to the detection and label_scores tables with
    ``layer = "network"`` and ``epoch`` = the most epochs a fold network trained (each stops, like
    the run, at ``train.max_epochs`` or once it fits its labels to ``train.target_train_accuracy``;
    the details file has every fold's). Returns the detection rows."""
    from pipeline.core.artifacts import write_json
    from pipeline.core.tables import write_table
    from pipeline.labels.detect import check_detection_labels, cleanlab_detection, detection_metrics
    from pipeline.labels.tables import DETECTION, LABEL_SCORES, detection_frame, scores_frame

    given = np.asarray(rt.labels.corrupted, dtype=np.int64)
    # refused before any training: a class with fewer examples than folds
    check_detection_labels(given, folds, int(rt.labels.num_classes))
    true = truth_of(rt.labels)
    wrong = None if true is None else given != true
    oof = out_of_fold_probabilities(rt, given, folds=folds, true=true, work_dir=work_dir)
    det = cleanlab_detection(given, oof.pred_probs, setting="network",
                             cpu_seconds=sum(f.cpu_seconds for f in oof.fits),
                             wall_seconds=sum(f.wall_seconds for f in oof.fits))
    epoch = max(f.final_epoch for f in oof.fits)
    detection = detection_frame(rt.run, epoch, NETWORK_LAYER, [det], wrong)
    scores = scores_frame(rt.run, epoch, NETWORK_LAYER, [det], given, wrong)
    meta = {**(metadata or {}), "epoch": str(epoch)}
    write_table(scores, scores_out, LABEL_SCORES, meta)
    write_table(detection, detection_out, DETECTION, meta)
    write_json(details_out, {"run": rt.run.keys(), "folds": folds, "epoch": epoch, "layer": NETWORK_LAYER,
                             "heldout_accuracy": det.heldout_accuracy, "metrics": detection_metrics(det, wrong),
                             "fold_trainings": oof.details()})
    return detection
