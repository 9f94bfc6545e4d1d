"""Modular arithmetic data: all pairs of Z_P x Z_P, a seeded split, and label noise on training pairs.

* Pairs are enumerated row-major: index ``i = a * P + b``; ``c = a o b mod P`` for ``o`` in
  :data:`TASKS`.
* The train/test split is a seeded permutation of the ordered pairs and depends only on
  (task, P, train_fraction, seed) -- never on alpha, the noise mode or the weights' tying -- so cells
  that differ in those train on the same pairs and are tested on the same pairs (the tied-weights
  comparison of asymmetric vs symmetric noise compares like with like). ``split_pairs(...,
  symmetric=True)`` (unordered pairs on one side) remains for callers who want it; no cell uses it.
* Noise draws depend on (task, P, train_fraction, alpha, noise_mode, seed). Modes:

  ``wrong_only``  exactly ``round(alpha * n_train)`` training pairs get a label drawn uniformly from
                  the P - 1 wrong labels (the paper).
  ``uniform``     exactly ``round(alpha * n_train)`` training pairs are *resampled* uniformly from all
                  P labels, so about ``alpha * (1 - 1/P)`` of the labels change (d-doshi/Grokking).
  ``symmetric``   the training pairs are grouped by their unordered pair {a, b}; groups are drawn
                  at random and every training order of the group gets one common label, wrong for
                  both orders; the number of changed labels is ``round(alpha * n_train)`` (within
                  one when only two-element groups remain). A group has two rows when (a, b) and
                  (b, a) are both training pairs, one when a = b or when the mirror is a test pair
                  (the test label stays clean; a tied network, f(a, b) = f(b, a), then pays for
                  that label on the test pair -- as it does for the same pair under ``wrong_only``).

* "Noisy" training pairs are the ones whose given label differs from the true one (``changed``);
  a ``uniform`` resample that kept the true label counts as clean. The test set is always clean.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import atomic_path
from pipeline.core.device import numpy_rng

TASKS = ("add", "sub", "mul")
NOISE_MODES = ("wrong_only", "uniform", "symmetric")
#: the four evaluation sets every accuracy is reported on
SPLITS = ("train_clean", "train_noisy_given", "train_noisy_true", "test")


def apply_task(task: str, a: np.ndarray, b: np.ndarray, P: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if task == "add":
        return (a + b) % P
    if task == "sub":
        return (a - b) % P
    if task == "mul":
        return (a * b) % P
    raise ValueError(f"unknown task {task!r}; allowed: {list(TASKS)}")


def all_pairs(P: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) for every pair of Z_P x Z_P, row-major (index a * P + b)."""
    a, b = np.divmod(np.arange(P * P, dtype=np.int64), P)
    return a, b


def _rng(*keys) -> np.random.Generator:
    """A generator seeded by the keys (strings via crc32, floats at 1e-6 resolution)."""
    seq = []
    for k in keys:
        if isinstance(k, str):
            seq.append(zlib.crc32(k.encode()))
        elif isinstance(k, float):
            seq.append(int(round(k * 1_000_000)))
        else:
            seq.append(int(k))
    return numpy_rng(*seq)


def split_pairs(P: int, train_fraction: float, seed: int, *, task: str = "add",
                symmetric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and test pair indices; ``round(train_fraction * P^2)`` training pairs.

    ``symmetric``: split unordered pairs so (a, b) and (b, a) fall on the same side (the training
    count is then as close to ``train_fraction * P^2`` as whole groups allow).
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    rng = _rng("split", task, P, float(train_fraction), seed, int(symmetric))
    n = P * P
    target = int(round(train_fraction * n))
    if not symmetric:
        perm = rng.permutation(n)
        return np.sort(perm[:target]), np.sort(perm[target:])
    a, b = all_pairs(P)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    group = lo * P + hi
    groups = np.unique(group)
    order = rng.permutation(groups)
    sizes = np.where(order // P == order % P, 1, 2)
    take = np.cumsum(sizes) <= target
    train_groups = order[take]
    is_train = np.isin(group, train_groups)
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def _wrong_labels(true: np.ndarray, P: int, rng: np.random.Generator) -> np.ndarray:
    """One label per entry, uniform over the P - 1 labels != true."""
    draw = rng.integers(0, P - 1, size=true.shape[0])
    return np.where(draw >= true, draw + 1, draw)


def add_noise(true: np.ndarray, P: int, alpha: float, mode: str, rng: np.random.Generator, *,
              a: np.ndarray | None = None, b: np.ndarray | None = None,
              true_swapped: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels for training labels ``true``; returns ``(given, resampled)``.

    ``symmetric`` needs the pairs ``a, b`` of the training rows and ``true_swapped``, the true label
    of (b, a) for each row (equal to ``true`` for commutative tasks).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if mode not in NOISE_MODES:
        raise ValueError(f"unknown noise mode {mode!r}; allowed: {list(NOISE_MODES)}")
    true = np.asarray(true, dtype=np.int64)
    n = true.shape[0]
    k = int(round(alpha * n))
    given = true.copy()
    resampled = np.zeros(n, dtype=bool)
    if mode in ("wrong_only", "uniform"):
        idx = rng.permutation(n)[:k]
        resampled[idx] = True
        if mode == "wrong_only":
            given[idx] = _wrong_labels(true[idx], P, rng)
        else:
            given[idx] = rng.integers(0, P, size=k)
        return given, resampled
    # symmetric: groups of rows {(a, b), (b, a)} share one label, wrong for both orders
    if a is None or b is None or true_swapped is None:
        raise ValueError("symmetric noise needs a, b and true_swapped for the training rows")
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    group = np.minimum(a, b) * P + np.maximum(a, b)
    groups, inverse = np.unique(group, return_inverse=True)
    sizes = np.bincount(inverse)
    by_group = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    changed = 0
    for g in rng.permutation(groups.size):
        if changed >= k:
            break
        if changed + sizes[g] > k:
            continue  # a pair group would overshoot; a later single (a == b) may fit exactly
        rows = by_group[starts[g]:starts[g + 1]]
        banned = {int(true[rows[0]]), int(true_swapped[rows[0]])}
        allowed = np.array([c for c in range(P) if c not in banned])
        label = int(allowed[rng.integers(0, allowed.size)])
        given[rows] = label
        resampled[rows] = True
        changed += sizes[g]
    return given, resampled


@dataclass
class ArithmeticData:
    """Every pair, the split, and the training labels the model sees."""

    task: str
    P: int
    a: np.ndarray            # (P^2,) all pairs, row-major
    b: np.ndarray
    true: np.ndarray         # (P^2,) true labels of all pairs
    train_idx: np.ndarray    # indices into the pairs
    test_idx: np.ndarray
    given: np.ndarray        # (n_train,) labels trained on
    resampled: np.ndarray    # (n_train,) bool: drawn by the noise process

    @property
    def true_train(self) -> np.ndarray:
        return self.true[self.train_idx]

    @property
    def changed(self) -> np.ndarray:
        return self.given != self.true_train

    @property
    def num_classes(self) -> int:
        return self.P

    def sets(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Pair indices and the labels to score them against, for each of :data:`SPLITS`."""
        changed = self.changed
        return {
            "train_clean": (self.train_idx[~changed], self.given[~changed]),
            "train_noisy_given": (self.train_idx[changed], self.given[changed]),
            "train_noisy_true": (self.train_idx[changed], self.true_train[changed]),
            "test": (self.test_idx, self.true[self.test_idx]),
        }


def make_data(task: str, P: int, train_fraction: float, alpha: float, noise_mode: str,
              seed: int) -> ArithmeticData:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {list(TASKS)}")
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"unknown noise mode {noise_mode!r}; allowed: {list(NOISE_MODES)}")
    a, b = all_pairs(P)
    true = apply_task(task, a, b, P)
    # one split per (task, P, train_fraction, seed) whatever the noise mode (module docstring)
    train_idx, test_idx = split_pairs(P, train_fraction, seed, task=task)
    rng = _rng("noise", task, P, float(train_fraction), float(alpha), noise_mode, seed)
    ta, tb = a[train_idx], b[train_idx]
    given, resampled = add_noise(true[train_idx], P, alpha, noise_mode, rng, a=ta, b=tb,
                                 true_swapped=apply_task(task, tb, ta, P))
    return ArithmeticData(task=task, P=P, a=a, b=b, true=true, train_idx=train_idx, test_idx=test_idx,
                          given=given, resampled=resampled)


def save_data(data: ArithmeticData, path: str | Path, **provenance: str) -> None:
    """The labels artifact: noisy and true training labels, the changed mask, the (clean) test set."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, task=np.array(data.task), P=data.P, train_idx=data.train_idx,
                     test_idx=data.test_idx, corrupted=data.given, true=data.true_train,
                     resampled=data.resampled, changed=data.changed,
                     test=data.true[data.test_idx],
                     **{f"meta_{k}": np.array(v) for k, v in provenance.items()})


def load_data(path: str | Path) -> ArithmeticData:
    try:
        with np.load(path) as z:
            task, P = str(z["task"]), int(z["P"])
            a, b = all_pairs(P)
            data = ArithmeticData(task=task, P=P, a=a, b=b, true=apply_task(task, a, b, P),
                                  train_idx=z["train_idx"], test_idx=z["test_idx"],
                                  given=z["corrupted"], resampled=z["resampled"])
            if not (np.array_equal(z["true"], data.true_train) and np.array_equal(z["test"], data.true[data.test_idx])):
                raise ValueError("stored true labels disagree with the task")
            return data
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(f"arithmetic label artifact {path} is unreadable or incomplete ({exc}); delete "
                           "it and rerun the workflow to regenerate it") from None
