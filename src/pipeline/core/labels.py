"""Data stage: label corruption and the per-run label artifact.

Corruption is exactly the papers' definition (section 3.2): with probability ``p`` each training
label is replaced by one drawn uniformly from all K classes, so it may stay the same; the expected
fraction of *changed* labels is ``p * (K - 1) / K``. The test set always keeps its true labels.

The randomness is seeded by (dataset, corruption, seed) only, so the same run always gets the same
labels, and different corruption degrees or seeds get independent draws.

The dataset loaders live in :mod:`pipeline.core.datasets` and are re-exported here.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import atomic_path
from pipeline.core.datasets import DATASETS, DatasetArrays, load_dataset, subsample  # noqa: F401 (re-export)
from pipeline.core.device import numpy_rng
from pipeline.core.errors import ArtifactError


def corruption_rng(dataset: str, corruption: float, seed: int) -> np.random.Generator:
    """A generator seeded by the run keys (stable across Python processes, unlike ``hash``)."""
    # int(): round() of a numpy float is not a Python int on every numpy version
    return numpy_rng(zlib.crc32(dataset.encode()), int(round(corruption * 1_000_000)), seed)  # noqa: RUF046


def corrupt_labels(labels: np.ndarray, num_classes: int, corruption: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Resample each label uniformly from all ``num_classes`` with probability ``corruption``.

    Returns ``(corrupted, resampled)`` where ``resampled`` marks the labels that were redrawn
    (a redrawn label can equal the true one).
    """
    if not 0.0 <= corruption <= 1.0:
        raise ValueError(f"corruption must lie in [0, 1], got {corruption}")
    labels = np.asarray(labels, dtype=np.int64)
    resampled = rng.random(labels.shape[0]) < corruption
    draws = rng.integers(0, num_classes, size=labels.shape[0])
    corrupted = np.where(resampled, draws, labels).astype(np.int64)
    return corrupted, resampled


@dataclass
class RunLabels:
    corrupted: np.ndarray   # training labels the model is trained on
    true: np.ndarray        # the dataset's training labels
    resampled: np.ndarray   # bool: this label was redrawn
    test: np.ndarray        # test labels (always true)
    num_classes: int
    #: whether ``true`` is known to be the truth: false only for a user dataset without ``y_true``
    #: at corruption 0 (its labels as given, nothing to score a detector against); files written
    #: before the field existed read as true
    truth_known: bool = True

    @property
    def changed(self) -> np.ndarray:
        return self.corrupted != self.true


def make_run_labels(arrays: DatasetArrays, *, dataset: str, corruption: float, seed: int) -> RunLabels:
    """The run's labels: the dataset's training labels as given (``arrays.y_train_given`` where a
    user's file gives ``y_true`` besides them, else ``y_train``), corrupted on top with probability
    ``corruption``; ``true`` is ``arrays.y_train`` (the truth)."""
    given = arrays.y_train if arrays.y_train_given is None else arrays.y_train_given
    corrupted, resampled = corrupt_labels(given, arrays.num_classes, corruption,
                                          corruption_rng(dataset, corruption, seed))
    return RunLabels(corrupted=corrupted, true=arrays.y_train.astype(np.int64), resampled=resampled,
                     test=arrays.y_test.astype(np.int64), num_classes=arrays.num_classes,
                     truth_known=bool(arrays.truth_known or corruption > 0))


def save_labels(labels: RunLabels, path: str | Path, **provenance: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, corrupted=labels.corrupted, true=labels.true, resampled=labels.resampled,
                 changed=labels.changed, test=labels.test, num_classes=labels.num_classes,
                 truth_known=np.array(bool(labels.truth_known)),
                 **{f"meta_{k}": np.array(v) for k, v in provenance.items()})


_REMEDY = "delete it and rerun the workflow to regenerate it"


def _label_problems(labels: RunLabels) -> list[str]:
    """What is inconsistent within one label artifact (shapes, dtypes, label range)."""
    k = labels.num_classes
    if k < 1:
        return [f"num_classes is {k}"]
    problems = []
    n = len(labels.true) if labels.true.ndim == 1 else -1
    for field in ("corrupted", "true", "resampled", "test"):
        value = getattr(labels, field)
        if value.ndim != 1:
            problems.append(f"{field!r} has shape {value.shape}, expected a 1-D array")
            continue
        if field != "test" and len(value) != n:
            problems.append(f"{field!r} has {len(value)} entries but 'true' has {n}")
        if field == "resampled":
            continue
        if value.size and not np.issubdtype(value.dtype, np.integer):
            problems.append(f"{field!r} has dtype {value.dtype}, expected integers")
        elif value.size and (value.min() < 0 or value.max() >= k):
            problems.append(f"{field!r} labels span [{value.min()}, {value.max()}], outside [0, {k}) "
                            f"for num_classes={k}")
    return problems


def check_labels(labels: RunLabels, arrays: DatasetArrays, path: str | Path) -> None:
    """Raise :class:`~pipeline.core.errors.ArtifactError` unless ``labels`` (read from ``path``) fit ``arrays``.

    Checks that the training label arrays have one entry per training image, the test labels one
    per test image, ``num_classes`` equals the dataset's, every label lies in ``[0, num_classes)``,
    and the recorded true training labels and test labels are the dataset's own. A mismatch means
    the file was made for another dataset, subset or data version.
    """
    problems = _label_problems(labels)
    n_train, n_test = len(arrays.y_train), len(arrays.y_test)
    if labels.num_classes != arrays.num_classes:
        problems.append(f"num_classes is {labels.num_classes} but dataset {arrays.name!r} has "
                        f"{arrays.num_classes}")
    for field in ("corrupted", "true", "resampled"):
        value = getattr(labels, field)
        if value.ndim == 1 and len(value) != n_train:
            problems.append(f"{field!r} has {len(value)} entries but the dataset has {n_train} training images")
    if labels.test.ndim == 1 and len(labels.test) != n_test:
        problems.append(f"'test' has {len(labels.test)} labels but the dataset has {n_test} test images")
    if not problems:
        for field, expected, split in (("true", arrays.y_train, "training"), ("test", arrays.y_test, "test")):
            differ = int((getattr(labels, field) != expected).sum())
            if differ:
                problems.append(f"{field!r} differs from the dataset's {split} labels in {differ} of "
                                f"{len(expected)} places")
    if problems:
        raise ArtifactError(f"label artifact {path} does not match dataset {arrays.name!r}: "
                            f"{'; '.join(problems)}. It was made for another dataset, subset or data "
                            f"version; {_REMEDY}")


def load_labels(path: str | Path, arrays: DatasetArrays | None = None) -> RunLabels:
    """Read a label artifact written by :func:`save_labels`.

    Args:
        path: the ``labels.npz`` file.
        arrays: the dataset as the run sees it (:func:`load_run_dataset`); when given, the labels
            are checked against it (:func:`check_labels`). The file's own consistency (lengths,
            label range) is always checked.

    Raises:
        ArtifactError: the file is unreadable, incomplete or inconsistent, or does not match
            ``arrays``; the message names the file, the mismatch and the remedy.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = RunLabels(corrupted=z["corrupted"], true=z["true"], resampled=z["resampled"],
                               test=z["test"], num_classes=int(z["num_classes"]),
                               truth_known=bool(z["truth_known"]) if "truth_known" in z.files else True)
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"label artifact {path} is unreadable or incomplete ({type(exc).__name__}: "
                            f"{exc}); {_REMEDY}") from None
    problems = _label_problems(labels)
    if problems:
        raise ArtifactError(f"label artifact {path} is inconsistent: {'; '.join(problems)}; {_REMEDY}")
    if arrays is not None:
        check_labels(labels, arrays, path)
    return labels


def load_run_dataset(config: dict, dataset: str) -> DatasetArrays:
    """The dataset as a run sees it: loaded from ``data.root`` (a user dataset: its own paths,
    ``data.custom``) and subset as the config says."""
    data_cfg = config["data"]
    if dataset in (data_cfg.get("custom") or {}):
        from pipeline.core.user_data import register_user_datasets  # idempotent

        register_user_datasets(config)
    arrays = load_dataset(dataset, root=data_cfg["root"], download=data_cfg["download"])
    if data_cfg.get("train_subset") or data_cfg.get("test_subset"):
        arrays = subsample(arrays, data_cfg.get("train_subset"), data_cfg.get("test_subset"), seed=0)
    return arrays
