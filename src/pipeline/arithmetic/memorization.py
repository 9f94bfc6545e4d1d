"""The memorization-order check on a small image set (the paper's MNIST check, offline on digits).

A 3-layer MLP (Linear-ReLU-Linear-ReLU-Linear) trained full batch on the digits training images
with a fraction ``alpha`` of the labels replaced by a wrong one (uniform over the 9 others, as the
arithmetic's ``wrong_only``); per epoch (0 = initialization) the accuracy on the clean training
images, the noisy training images against their given and their true labels, and the test set.
The paper reports (MNIST, full batch) noisy / clean training accuracy 10.87 % / 2.86 % after
epoch 1 and 6.47 % / 46.29 % after epoch 2 (alpha 0.05).

Training is the core :class:`~pipeline.core.training.EpochLoop` with one full batch (one step per
epoch) and :func:`~pipeline.core.training.make_optimizer` (``adam`` / ``sgd`` without momentum and
weight decay, as torch's defaults); the per-epoch accuracies are its end-of-epoch callback.

Table: the shared run keys (dataset, model = ``mlp3_h{hidden}_{optimizer}``, corruption = alpha,
seed, variant = ``memorization_order``), then ``epoch``, ``loss`` and ``acc_<split>`` for the four
:data:`pipeline.arithmetic.data.SPLITS`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.arithmetic.tables import MEMORIZATION_COLUMNS
from pipeline.core.device import numpy_rng, seed_torch
from pipeline.core.training import Batching, EpochEnd, EpochLoop, make_optimizer

#: the optimizers of the check (plain Adam / SGD, the MNIST check's)
MEMORIZATION_OPTIMIZERS = ("adam", "sgd")

COLUMNS = MEMORIZATION_COLUMNS  # declared once, with the other arithmetic tables


def _inputs(arrays) -> tuple[torch.Tensor, torch.Tensor]:
    x_train = arrays.x_train.reshape(len(arrays.x_train), -1).astype(np.float32) / 255.0
    x_test = arrays.x_test.reshape(len(arrays.x_test), -1).astype(np.float32) / 255.0
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return torch.from_numpy((x_train - mean) / std), torch.from_numpy((x_test - mean) / std)


def noisy_labels(y: np.ndarray, num_classes: int, alpha: float, seed: int) -> np.ndarray:
    """``round(alpha * n)`` labels replaced by a uniformly drawn wrong one."""
    rng = numpy_rng(seed, 17, int(round(alpha * 1e6)))
    given = y.copy()
    idx = rng.permutation(len(y))[: int(round(alpha * len(y)))]
    draw = rng.integers(0, num_classes - 1, size=idx.size)
    given[idx] = np.where(draw >= y[idx], draw + 1, draw)
    return given


def memorization_order(alpha: float, *, dataset: str = "digits", epochs: int = 60, hidden: int = 256,
                       optimizer: str = "adam", lr: float = 1e-3, seed: int = 0, root: str = "data") -> pd.DataFrame:
    """The per-epoch accuracy table of one run (see the module docstring)."""
    from pipeline.core.datasets import load_dataset

    if optimizer not in MEMORIZATION_OPTIMIZERS:
        raise ValueError(f"unknown arithmetic.memorization.optimizer {optimizer!r}; "
                         f"allowed: {list(MEMORIZATION_OPTIMIZERS)}")
    arrays = load_dataset(dataset, root=root)
    x_train, x_test = _inputs(arrays)
    y_true = np.asarray(arrays.y_train, dtype=np.int64)
    given = noisy_labels(y_true, arrays.num_classes, alpha, seed)
    changed = given != y_true
    sets = {
        "train_clean": (x_train[~changed], given[~changed]),
        "train_noisy_given": (x_train[changed], given[changed]),
        "train_noisy_true": (x_train[changed], y_true[changed]),
        "test": (x_test, np.asarray(arrays.y_test, dtype=np.int64)),
    }
    seed_torch(seed)
    model = nn.Sequential(nn.Linear(x_train.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, arrays.num_classes))
    opt = make_optimizer(model, {"optimizer": optimizer, "lr": lr, "momentum": 0.0, "weight_decay": 0.0})
    y = torch.from_numpy(given)
    keys = {"dataset": dataset, "model": f"mlp3_h{hidden}_{optimizer}", "corruption": float(alpha),
            "seed": int(seed), "variant": "memorization_order"}
    rows = []

    @torch.no_grad()
    def log(epoch: int, loss: float) -> None:
        acc = {}
        for name, (x, labels) in sets.items():
            acc[f"acc_{name}"] = (float((model(x).argmax(1).numpy() == labels).mean()) if len(labels)
                                  else float("nan"))
        rows.append({**keys, "epoch": epoch, "loss": loss, **acc})

    def log_epoch(end: EpochEnd) -> None:
        log(end.epoch, end.loss)  # full batch: the epoch's mean loss is its one step's loss

    log(0, float("nan"))
    EpochLoop(model, opt, x_train, y, loss_fn=F.cross_entropy, batching=Batching(size=None),
              on_epoch_end=[log_epoch]).run(1, epochs)
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)


def memorization_table(settings: dict, root: str = "data") -> pd.DataFrame:
    """One run per alpha of ``settings`` (the config's ``arithmetic.memorization``; what it leaves
    out takes the schema's default)."""
    from pipeline.core.config import apply_schema
    from pipeline.core.datasets import DatasetNotFoundError

    s = apply_schema({"arithmetic": {"memorization": dict(settings)}})["arithmetic"]["memorization"]
    try:
        frames = [memorization_order(a, dataset=s["dataset"], epochs=s["epochs"], hidden=s["hidden"],
                                     optimizer=s["optimizer"], lr=s["lr"], seed=s["seed"], root=root)
                  for a in s["alpha"]]
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(_offline_advice(str(exc), s["dataset"], root)) from None
    return pd.concat(frames, ignore_index=True)


def _offline_advice(message: str, dataset: str, root: str) -> str:
    """The loader's "dataset not found" message with advice this stage can follow: it reads
    ``data.root`` and never downloads, so the loader's ``data.download: true`` would change nothing."""
    missing = message.split(" Set data.download", 1)[0].split(" It cannot be downloaded", 1)[0]
    return (f"{missing} The memorization check (config key arithmetic.memorization.dataset: {dataset}) "
            f"reads {root} (data.root) and never downloads, so data.download does not help: put the "
            f"files there (e.g. fetched once with python -c \"from pipeline.core.datasets import "
            f"load_dataset; load_dataset('{dataset}', '{root}', download=True)\"), or set "
            "arithmetic.memorization.dataset: digits (bundled with scikit-learn, offline)")
