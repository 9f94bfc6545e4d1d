"""Training one arithmetic cell: seeded, deterministic on CPU, logged on the four evaluation sets.

* Loss ``ce`` (cross-entropy) or ``mse`` (mean over samples and classes of (logits - one_hot)^2, as
  torch's MSELoss and d-doshi/Grokking).
* Optimizers ``adamw`` / ``adam`` / ``sgd`` (momentum) / ``muon``; ``batch_size`` None or >= n_train is
  full batch; mini-batches are drawn in an order seeded by (seed, epoch). ``muon`` (the paper's third
  optimizer; ``torch.optim.Muon``: momentum 0.95, Nesterov, five Newton-Schulz steps) updates the
  weight matrices U, V, W and AdamW the bias mu (Muon is defined for matrices only), both with the
  cell's lr and weight decay; Muon's lr is rescaled to AdamW's update RMS (``adjust_lr_fn=
  "match_rms_adamw"``), so one lr serves both. The paper does not give its Muon lr.
* The initialization is a function of the seed only (``torch.manual_seed(seed)`` before building).
* Every ``log_every`` epochs (and at epoch 0 and the last) the log gets the loss and the accuracy on
  ``train_clean``, ``train_noisy_given``, ``train_noisy_true`` and ``test`` (NaN for an empty set).
* Checkpoints are plain state_dicts written atomically at :func:`checkpoint_epochs`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.arithmetic.data import SPLITS, ArithmeticData
from pipeline.arithmetic.model import ArithmeticMLP, build, pair_tensor
from pipeline.core.artifacts import save_torch
from pipeline.core.runtime import read_state

LOSSES = ("ce", "mse")
OPTIMIZERS = ("adamw", "adam", "sgd", "muon")
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


def make_optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "muon":
        return MuonWithAdamW(model, lr=s.lr, weight_decay=s.weight_decay, betas=s.betas)
    raise ValueError(f"unknown optimizer {s.optimizer!r}; allowed: {list(OPTIMIZERS)}")


class MuonWithAdamW:
    """Muon on the model's 2-D parameters, AdamW on the others; ``zero_grad`` / ``step`` /
    ``state_dict`` as one optimizer."""

    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float,
                 betas: tuple[float, float]):
        matrices = [p for p in model.parameters() if p.ndim == 2]
        rest = [p for p in model.parameters() if p.ndim != 2]
        self.muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(rest, lr=lr, betas=betas, weight_decay=weight_decay) if rest else None
        self.optimizers = [o for o in (self.muon, self.adamw) if o is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict() if self.adamw else None}


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


def train(data: ArithmeticData, model_settings: dict, settings: TrainSettings,
          out_dir: str | Path | None = None) -> TrainResult:
    """Train on ``data``'s given labels; checkpoints go to ``out_dir/checkpoints`` if given."""
    if settings.loss not in LOSSES:
        raise ValueError(f"unknown loss {settings.loss!r}; allowed: {list(LOSSES)}")
    t_start = time.perf_counter()
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    model = build({**model_settings, "P": data.P}).to(device)
    opt = make_optimizer(model, settings)
    x = pair_tensor(data.a[data.train_idx], data.b[data.train_idx]).to(device)
    y = torch.from_numpy(data.given.astype(np.int64)).to(device)
    n = x.shape[0]
    batch = n if not settings.batch_size or settings.batch_size >= n else int(settings.batch_size)
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

    log(0, float("nan"), 0.0)
    checkpoint(0)
    model.train()
    for epoch in range(1, settings.epochs + 1):
        t0 = time.perf_counter()
        if batch == n:
            batches = [slice(None)]
        else:
            gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen).to(device)
            batches = [order[s:s + batch] for s in range(0, n, batch)]
        total = 0.0
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(settings.loss, model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * (n if isinstance(idx, slice) else len(idx))
        if epoch % max(settings.log_every, 1) == 0 or epoch == settings.epochs:
            log(epoch, total / n, time.perf_counter() - t0)
        if epoch in ckpt_at:
            checkpoint(epoch)
    result.log = pd.DataFrame(rows, columns=LOG_COLUMNS)
    result.seconds = time.perf_counter() - t_start
    return result


def load_state(path: str | Path, model_settings: dict, P: int) -> ArithmeticMLP:
    model = build({**model_settings, "P": P})
    model.load_state_dict(read_state(path, "delete the cell's index.json and rerun the workflow"))
    return model
