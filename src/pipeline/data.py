"""Data stage: label corruption and the per-run label artifact.

Corruption is exactly the papers' definition (section 3.2): with probability ``p`` each training
label is replaced by one drawn uniformly from all K classes, so it may stay the same; the expected
fraction of *changed* labels is ``p * (K - 1) / K``. The test set always keeps its true labels.

The randomness is seeded by (dataset, corruption, seed) only, so the same run always gets the same
labels, and different corruption degrees or seeds get independent draws.

The dataset loaders live in :mod:`pipeline.datasets` and are re-exported here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.datasets import DATASETS, DatasetArrays, load_dataset, subsample  # noqa: F401 (re-export)
from pipeline.io import atomic_path


def corruption_rng(dataset: str, corruption: float, seed: int) -> np.random.Generator:
    """A generator seeded by the run keys (stable across Python processes, unlike ``hash``)."""
    return np.random.default_rng([zlib.crc32(dataset.encode()), int(round(corruption * 1_000_000)), seed])


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

    @property
    def changed(self) -> np.ndarray:
        return self.corrupted != self.true


def make_run_labels(arrays: DatasetArrays, *, dataset: str, corruption: float, seed: int) -> RunLabels:
    corrupted, resampled = corrupt_labels(arrays.y_train, arrays.num_classes, corruption,
                                          corruption_rng(dataset, corruption, seed))
    return RunLabels(corrupted=corrupted, true=arrays.y_train.astype(np.int64), resampled=resampled,
                     test=arrays.y_test.astype(np.int64), num_classes=arrays.num_classes)


def save_labels(labels: RunLabels, path: str | Path, **provenance: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, corrupted=labels.corrupted, true=labels.true, resampled=labels.resampled,
                     changed=labels.changed, test=labels.test, num_classes=labels.num_classes,
                     **{f"meta_{k}": np.array(v) for k, v in provenance.items()})


def load_labels(path: str | Path) -> RunLabels:
    try:
        with np.load(path) as z:
            return RunLabels(corrupted=z["corrupted"], true=z["true"], resampled=z["resampled"],
                             test=z["test"], num_classes=int(z["num_classes"]))
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(f"label artifact {path} is unreadable or incomplete ({exc}); delete it and "
                           "rerun the workflow to regenerate it") from None


def load_run_dataset(config: dict, dataset: str) -> DatasetArrays:
    """The dataset as a run sees it: loaded from ``data.root`` and subset as the config says."""
    data_cfg = config["data"]
    arrays = load_dataset(dataset, root=data_cfg["root"], download=data_cfg["download"])
    if data_cfg.get("train_subset") or data_cfg.get("test_subset"):
        arrays = subsample(arrays, data_cfg.get("train_subset"), data_cfg.get("test_subset"), seed=0)
    return arrays
