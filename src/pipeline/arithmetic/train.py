"""Training one arithmetic cell: seeded, deterministic on CPU, logged on the four evaluation sets.

* Loss ``ce`` (cross-entropy) or ``mse`` (mean over samples and classes of (logits - one_hot)^2, as
  torch's MSELoss and d-doshi/Grokking).
* Optimizers ``adamw`` / ``adam`` / ``sgd`` (momentum) / ``muon``; ``batch_size`` None or >= n_train is
  full batch; mini-batches are drawn in an order seeded by (seed, epoch). ``muon`` (the paper's third
  optimizer; ``torch.optim.Muon``: momentum 0.95, Nesterov, five Newton-Schulz steps) updates the
  weight matrices U, V, W and AdamW the bias mu (Muon is defined for matrices only), both with the
  cell's lr and weight decay; Muon's lr is rescaled to AdamW's update RMS (``adjust_lr_fn=
  "match_rms_adamw"``), so one lr serves both. The paper does not give its Muon lr.
* The initialization is a function of the seed only (:func:`pipeline.core.device.seed_torch` before
  building).
* Training is :class:`pipeline.core.training.EpochLoop` (the package's one loop) with
  :func:`pipeline.core.training.make_optimizer`; full batch is one batch of all training pairs in
  their stored order (one step per epoch). The log and the checkpoints are end-of-epoch callbacks;
  ``train(..., hooks=...)`` adds the caller's per-epoch analyses.
* ``device``: ``cpu``, ``cuda`` or ``auto`` (:func:`pipeline.core.device.resolve_device`).
* Every ``log_every`` epochs (and at epoch 0 and the last) the log gets the loss and the accuracy on
  ``train_clean``, ``train_noisy_given``, ``train_noisy_true`` and ``test`` (NaN for an empty set).
* Checkpoints are plain state_dicts written atomically at :func:`checkpoint_epochs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.arithmetic.data import SPLITS, ArithmeticData
from pipeline.arithmetic.model import ArithmeticMLP, build, pair_tensor
from pipeline.core.artifacts import save_torch
from pipeline.core.device import resolve_device, seed_torch
from pipeline.core.runtime import read_state
from pipeline.core.training import Batching, EpochEnd, EpochLoop, MuonWithAdamW, make_optimizer

__all__ = ["LOSSES", "OPTIMIZERS", "LOG_COLUMNS", "TrainSettings", "TrainResult", "checkpoint_epochs",
           "make_optimizer", "MuonWithAdamW", "loss_fn", "set_accuracies", "predict_all", "save_state", "train",
           "load_state"]

LOSSES = ("ce", "mse")
OPTIMIZERS = ("adamw", "adam", "sgd", "muon")  # the core factory's, in the cell's order of preference
LOG_COLUMNS = ["epoch", "loss", *[f"acc_{s}" for s in SPLITS], "seconds"]


@dataclass
class TrainSettings:
    epochs: int = 500
    loss: str = "ce"
    optimizer: str = "adamw"
    lr: float = 1e-2
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    momentum: float = 0.9
    batch_size: int | None = None        # None: full batch
    log_every: int = 10
    checkpoint_every: int = 0            # 0: only epoch 0 and the last
    seed: int = 0
    device: str = "cpu"                  # "cuda" where there is one; results are then not bit-equal to CPU

    @classmethod
    def from_dict(cls, d: dict) -> TrainSettings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)


def checkpoint_epochs(epochs: int, every: int) -> list[int]:
    """0, every, 2*every, ... and the last epoch (``every`` 0: only 0 and the last)."""
    marks = set(range(0, epochs + 1, every)) if every > 0 else set()
    return sorted(marks | {0, epochs})


def loss_fn(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "ce":
        return F.cross_entropy(logits, y)
    if name == "mse":
        return F.mse_loss(logits, F.one_hot(y, logits.shape[1]).to(logits.dtype))
    raise ValueError(f"unknown loss {name!r}; allowed: {list(LOSSES)}")


def set_accuracies(pred_all: np.ndarray, data: ArithmeticData) -> dict[str, tuple[int, int]]:
    """(n_correct, n_samples) on each of :data:`SPLITS`, from predictions for all P^2 pairs."""
    return {name: (int((pred_all[idx] == y).sum()), int(idx.shape[0]))
            for name, (idx, y) in data.sets().items()}


@torch.no_grad()
def predict_all(model: ArithmeticMLP, data: ArithmeticData, activation: str | None = None) -> np.ndarray:
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    pred = model(pair_tensor(data.a, data.b).to(device), activation).argmax(1).cpu().numpy()
    model.train(was)
    return pred


def save_state(model: torch.nn.Module, path: Path) -> None:
    """A plain state_dict, atomic and byte-reproducible (:func:`pipeline.core.artifacts.save_torch`)."""
    save_torch({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)


@dataclass
class TrainResult:
    model: ArithmeticMLP
    log: pd.DataFrame
    checkpoints: dict[int, Path] = field(default_factory=dict)
    states: dict[int, dict] = field(default_factory=dict)  # in-memory copies of the checkpoints
    seconds: float = 0.0
    steps: int = 0                                          # optimizer steps taken


#: a per-epoch analysis: called after every epoch with the model (train mode) and the epoch's
#: :class:`~pipeline.core.training.EpochEnd`; a returned string stops training (the stop reason)
EpochHook = Callable[[ArithmeticMLP, EpochEnd], "str | None"]


def train(data: ArithmeticData, model_settings: dict, settings: TrainSettings,
          out_dir: str | Path | None = None, *, hooks: Sequence[EpochHook] = (),
          progress: bool = False, desc: str = "") -> TrainResult:
    """Train on ``data``'s given labels through the core :class:`~pipeline.core.training.EpochLoop`;
    checkpoints go to ``out_dir/checkpoints`` if given; ``hooks`` run after every epoch, after the
    log row and the checkpoint of that epoch. ``progress``: the loop's progress line on stderr
    (``desc``, epochs done, rate, and the last log row's loss and accuracies; at most every 5 s),
    as the image runs show theirs, so a long cell's log says where it is."""
    if settings.loss not in LOSSES:
        raise ValueError(f"unknown loss {settings.loss!r}; allowed: {list(LOSSES)}")
    t_start = time.perf_counter()
    device = resolve_device(settings.device, key="arithmetic.device")
    seed_torch(settings.seed)
    model = build({**model_settings, "P": data.P}).to(device)
    x = pair_tensor(data.a[data.train_idx], data.b[data.train_idx]).to(device)
    y = torch.from_numpy(data.given.astype(np.int64)).to(device)
    n = x.shape[0]
    full_batch = not settings.batch_size or settings.batch_size >= n
    ckpt_at = set(checkpoint_epochs(settings.epochs, settings.checkpoint_every))
    ckpt_dir = Path(out_dir) / "checkpoints" if out_dir is not None else None
    result = TrainResult(model=model, log=pd.DataFrame())
    rows = []

    def log(epoch: int, loss: float, seconds: float) -> None:
        acc = set_accuracies(predict_all(model, data), data)
        rows.append({"epoch": epoch, "loss": loss,
                     **{f"acc_{k}": (c / m if m else float("nan")) for k, (c, m) in acc.items()},
                     "seconds": seconds})

    def checkpoint(epoch: int) -> None:
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        result.states[epoch] = state
        if ckpt_dir is not None:
            path = ckpt_dir / f"epoch_{epoch}.pt"
            save_state(model, path)
            result.checkpoints[epoch] = path

    def log_and_checkpoint(end: EpochEnd) -> None:
        if end.epoch % max(settings.log_every, 1) == 0 or end.epoch == settings.epochs:
            log(end.epoch, end.loss, end.seconds)
        if end.epoch in ckpt_at:
            checkpoint(end.epoch)

    log(0, float("nan"), 0.0)
    checkpoint(0)
    loop = EpochLoop(model, make_optimizer(model, settings), x, y,
                     loss_fn=lambda logits, target: loss_fn(settings.loss, logits, target),
                     batching=Batching(size=None if full_batch else int(settings.batch_size), seed=settings.seed),
                     on_epoch_end=[log_and_checkpoint, *[_bind(hook, model) for hook in hooks]],
                     progress=progress, desc=desc, postfix=lambda end: _last_logged(rows))
    loop.run(1, settings.epochs)
    result.log = pd.DataFrame(rows, columns=LOG_COLUMNS)
    result.steps = loop.steps
    result.seconds = time.perf_counter() - t_start
    return result


def _last_logged(rows: list[dict]) -> dict:
    """The progress line's fields: the last log row's epoch, loss and accuracies (3 decimals)."""
    row = rows[-1]
    short = {"acc_train_clean": "clean", "acc_train_noisy_given": "noisy", "acc_test": "test"}
    return {"logged": str(row["epoch"]), "loss": f"{row['loss']:.4g}",
            **{name: f"{row[col]:.3f}" for col, name in short.items()}}


def _bind(hook: EpochHook, model: ArithmeticMLP) -> Callable[[EpochEnd], str | None]:
    return lambda end: hook(model, end)


def load_state(path: str | Path, model_settings: dict, P: int) -> ArithmeticMLP:
    """The model of checkpoint ``path`` (``<cell>/checkpoints/epoch_<E>.pt``); a checkpoint that cannot
    be read raises an ArtifactError whose advice forces the cell's index.json (its done marker, the
    rule's declared output): deleting that file would leave Snakemake nothing to do."""
    from pipeline.arithmetic.grid import retrain_cell_advice

    model = build({**model_settings, "P": P})
    index = Path(path).parent.parent / "index.json"
    model.load_state_dict(read_state(path, retrain_cell_advice(index)))
    return model
