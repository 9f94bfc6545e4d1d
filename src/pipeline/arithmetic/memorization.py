"""The memorization-order check on a small image set (the paper's MNIST check, offline on digits).

A 3-layer MLP (Linear-ReLU-Linear-ReLU-Linear) trained full batch on the digits training images
with a fraction ``alpha`` of the labels replaced by a wrong one (uniform over the 9 others, as the
arithmetic's ``wrong_only``); per epoch (0 = initialization) the accuracy on the clean training
images, the noisy training images against their given and their true labels, and the test set.
The paper reports (MNIST, full batch) noisy / clean training accuracy 10.87 % / 2.86 % after
epoch 1 and 6.47 % / 46.29 % after epoch 2 (alpha 0.05).

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

from pipeline.arithmetic.data import SPLITS

DEFAULTS = {"dataset": "digits", "alpha": [0.05, 0.2], "epochs": 60, "hidden": 256,
            "optimizer": "adam", "lr": 1e-3, "seed": 0, "enabled": True}
COLUMNS = {"dataset": "string", "model": "string", "corruption": "float64", "seed": "int64",
           "variant": "string", "epoch": "int64", "loss": "float64",
           **{f"acc_{s}": "float64" for s in SPLITS}}


def _inputs(arrays) -> tuple[torch.Tensor, torch.Tensor]:
    x_train = arrays.x_train.reshape(len(arrays.x_train), -1).astype(np.float32) / 255.0
    x_test = arrays.x_test.reshape(len(arrays.x_test), -1).astype(np.float32) / 255.0
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return torch.from_numpy((x_train - mean) / std), torch.from_numpy((x_test - mean) / std)


def noisy_labels(y: np.ndarray, num_classes: int, alpha: float, seed: int) -> np.ndarray:
    """``round(alpha * n)`` labels replaced by a uniformly drawn wrong one."""
    rng = np.random.default_rng([seed, 17, int(round(alpha * 1e6))])
    given = y.copy()
    idx = rng.permutation(len(y))[: int(round(alpha * len(y)))]
    draw = rng.integers(0, num_classes - 1, size=idx.size)
    given[idx] = np.where(draw >= y[idx], draw + 1, draw)
    return given


def memorization_order(alpha: float, *, dataset: str = "digits", epochs: int = 60, hidden: int = 256,
                       optimizer: str = "adam", lr: float = 1e-3, seed: int = 0, root: str = "data") -> pd.DataFrame:
    """The per-epoch accuracy table of one run (see the module docstring)."""
    from pipeline.core.datasets import load_dataset

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
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(x_train.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, arrays.num_classes))
    opts = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    if optimizer not in opts:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: {sorted(opts)}")
    opt = opts[optimizer](model.parameters(), lr=lr)
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

    log(0, float("nan"))
    for epoch in range(1, epochs + 1):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_train), y)
        loss.backward()
        opt.step()
        log(epoch, float(loss.detach()))
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)


def memorization_table(settings: dict, root: str = "data") -> pd.DataFrame:
    """One run per alpha of ``settings`` (the config's ``arithmetic.memorization``)."""
    s = {**DEFAULTS, **settings}
    frames = [memorization_order(a, dataset=s["dataset"], epochs=s["epochs"], hidden=s["hidden"],
                                 optimizer=s["optimizer"], lr=s["lr"], seed=s["seed"], root=root)
              for a in s["alpha"]]
    return pd.concat(frames, ignore_index=True)
