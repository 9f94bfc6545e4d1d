"""Training stage: train one run on its corrupted labels, saving checkpoints on the papers' schedule.

* Optimizer defaults are the authors' published ones, kept with each model in
  :data:`pipeline.models.MODELS`; ``train.overrides`` in the config changes them per model.
* Training stops when accuracy on the corrupted training labels reaches ``target_train_accuracy``
  or at ``max_epochs``, whichever comes first (section 3.2).
* Checkpoints are plain ``state_dict``\\ s at epoch 0 (the initialization), every ``early_every``
  epochs up to ``early_until``, then every ``late_every`` epochs, and at the final epoch.
* Every epoch ends with a resume state (model, optimizer, log so far) written atomically; a killed
  job restarted with the same arguments continues from it and ends with exactly the weights of an
  uninterrupted run (on CPU), because each epoch's shuffling and dropout draw from generators seeded
  by (seed, epoch) rather than from whatever state the process happened to have.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.config import Run, provenance
from pipeline.data import RunLabels
from pipeline.datasets import DatasetArrays, channel_stats, normalize
from pipeline.io import atomic_path, write_json, write_parquet
from pipeline.models import MODELS, ProbedModel, build_model

LOG_COLUMNS = ["epoch", "loss", "train_acc_corrupted", "train_acc_true", "test_acc", "lr", "seconds"]
RESUME_FILE = "resume.pt"
INDEX_FILE = "index.json"


# ----------------------------------------------------------------------------- schedule & settings

def checkpoint_schedule(max_epochs: int, *, early_every: int = 2, early_until: int = 20,
                        late_every: int = 5) -> list[int]:
    """Epochs at which a checkpoint is saved if training gets there (the final epoch is added on stop).

    >>> checkpoint_schedule(30)
    [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30]
    """
    epochs = set(range(0, min(early_until, max_epochs) + 1, early_every))
    if early_until <= max_epochs:
        epochs.update(range(early_until, max_epochs + 1, late_every))
    epochs.add(0)
    return sorted(e for e in epochs if e <= max_epochs)


def schedule_for(config: dict, model: str) -> list[int]:
    ck = config["train"]["checkpoints"]
    late = ck["late_every"] or MODELS[model].late_checkpoint_interval
    return checkpoint_schedule(config["train"]["max_epochs"], early_every=ck["early_every"],
                               early_until=ck["early_until"], late_every=late)


def hyperparameters(config: dict, model: str, dataset: str) -> dict:
    """The optimizer settings a run uses: the model's published defaults, then config overrides."""
    spec = MODELS[model]
    hp = {"optimizer": spec.optimizer, "lr": spec.lr, "momentum": spec.momentum,
          "batch_size": spec.default_batch_size(dataset), "weight_decay": 0.0}
    hp.update(config["train"].get("overrides", {}).get(model, {}))
    return hp


def make_optimizer(model: nn.Module, hp: dict) -> torch.optim.Optimizer:
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=hp["momentum"],
                               weight_decay=hp["weight_decay"])
    if hp["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    raise ValueError(f"unknown optimizer {hp['optimizer']!r}; allowed: sgd, adam")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config train.device is 'cuda' but no GPU is visible; use 'auto' or 'cpu'")
    return torch.device(name)


# ----------------------------------------------------------------------------- inputs

@dataclass
class InputTransform:
    """uint8 images -> normalized float tensors, as the model's training used them."""

    mode: str
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return normalize(x_uint8, self.mode, self.mean, self.std)


def input_transform(arrays: DatasetArrays, model: str) -> InputTransform:
    mode = MODELS[model].normalization
    if mode == "standardize":
        mean, std = channel_stats(arrays.x_train)
        return InputTransform(mode, mean, std)
    return InputTransform(mode)


@torch.no_grad()
def predict(model: nn.Module, x_uint8: torch.Tensor, transform: InputTransform, *,
            batch_size: int = 1024, device: torch.device | None = None) -> np.ndarray:
    """Model predictions for all of ``x_uint8`` (eval mode, batched, original order)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, x_uint8.shape[0], batch_size):
        xb = transform(x_uint8[start:start + batch_size].to(device))
        out.append(model(xb).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- training loop

def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x_uint8: torch.Tensor,
                    y: torch.Tensor, transform: InputTransform, *, batch_size: int, seed: int,
                    epoch: int, device: torch.device) -> float:
    """One pass over the training set in a (seed, epoch)-determined order; returns mean loss."""
    model.train()
    torch.manual_seed(_epoch_seed(seed, epoch))  # dropout masks: a function of (seed, epoch) only
    order = torch.randperm(x_uint8.shape[0], generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch)))
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()  # a lone last sample joins the previous batch: BatchNorm cannot train on 1
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(order)
        idx = order[start:stop]
        xb = transform(x_uint8[idx].to(device, non_blocking=True))
        yb = y[idx].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total / max(count, 1)


def evaluate(model: nn.Module, arrays: DatasetArrays, labels: RunLabels, transform: InputTransform,
             device: torch.device, x_train: torch.Tensor, x_test: torch.Tensor) -> dict:
    train_pred = predict(model, x_train, transform, device=device)
    test_pred = predict(model, x_test, transform, device=device)
    return {"train_acc_corrupted": float((train_pred == labels.corrupted).mean()),
            "train_acc_true": float((train_pred == labels.true).mean()),
            "test_acc": float((test_pred == labels.test).mean())}


@dataclass
class TrainResult:
    epochs: list[int]          # checkpointed epochs
    final_epoch: int
    stop_reason: str
    log: pd.DataFrame


def save_checkpoint(model: nn.Module, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def load_checkpoint(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a plain state_dict checkpoint (``weights_only=True``) into ``model``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated file
        raise RuntimeError(f"checkpoint {path} cannot be read ({exc}); delete it and rerun the "
                           "training job (snakemake --rerun-incomplete)") from None
    model.load_state_dict(state)
    return model


def build_run_model(run: Run, arrays: DatasetArrays, *, dropout: bool = False) -> ProbedModel:
    return build_model(run.model, in_channels=arrays.channels, image_size=arrays.image_size,
                       num_classes=arrays.num_classes, dropout=dropout)


def train_run(config: dict, run: Run, arrays: DatasetArrays, labels: RunLabels, out_dir: str | Path, *,
              after_epoch: Callable[[int], None] | None = None, progress: bool = True) -> TrainResult:
    """Train ``run`` into ``out_dir`` (``checkpoints/``, ``train_log.parquet``); resumable.

    ``after_epoch(epoch)`` is called once an epoch's state is safely on disk (used by tests to kill
    the process at a known point).
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tcfg = config["train"]
    if tcfg.get("num_threads"):
        torch.set_num_threads(tcfg["num_threads"])
    device = resolve_device(tcfg["device"])
    hp = hyperparameters(config, run.model, run.dataset)
    schedule = set(schedule_for(config, run.model))
    transform = input_transform(arrays, run.model)

    torch.manual_seed(run.seed)  # the initialization is a function of the seed only
    model = build_run_model(run, arrays, dropout=tcfg["dropout"]).to(device)
    optimizer = make_optimizer(model, hp)
    x_train = torch.from_numpy(arrays.x_train)
    x_test = torch.from_numpy(arrays.x_test)
    y = torch.from_numpy(labels.corrupted)
    if device.type == "cuda":  # small enough as uint8; saves a host->device copy per batch
        x_train, x_test, y = x_train.to(device), x_test.to(device), y.to(device)

    resume_path = out_dir / RESUME_FILE
    rows: list[dict] = []
    saved: list[int] = []
    start_epoch = 0
    if resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rows, saved, start_epoch = state["rows"], state["saved"], state["epoch"]
        print(f"resuming {run.path} from epoch {start_epoch}", flush=True)
    else:
        rows.append({"epoch": 0, "loss": math.nan, **evaluate(model, arrays, labels, transform, device,
                                                              x_train, x_test),
                     "lr": hp["lr"], "seconds": 0.0})
        save_checkpoint(model, ckpt_dir / "epoch_0.pt")
        saved.append(0)

    stop_reason = "max_epochs"
    epoch = start_epoch
    last = rows[-1]
    if last["train_acc_corrupted"] >= tcfg["target_train_accuracy"] and start_epoch > 0:
        stop_reason = "target_train_accuracy"
    else:
        bar = tqdm(range(start_epoch + 1, tcfg["max_epochs"] + 1), desc=run.path, unit="epoch",
                   disable=not progress, mininterval=5.0)
        for epoch in bar:
            t0 = time.perf_counter()
            loss = train_one_epoch(model, optimizer, x_train, y, transform, batch_size=hp["batch_size"],
                                   seed=run.seed, epoch=epoch, device=device)
            metrics = evaluate(model, arrays, labels, transform, device, x_train, x_test)
            rows.append({"epoch": epoch, "loss": loss, **metrics, "lr": hp["lr"],
                         "seconds": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{loss:.3f}", train=f"{metrics['train_acc_corrupted']:.3f}",
                            test=f"{metrics['test_acc']:.3f}")
            done = metrics["train_acc_corrupted"] >= tcfg["target_train_accuracy"]
            if done:
                stop_reason = "target_train_accuracy"
            if epoch in schedule or done or epoch == tcfg["max_epochs"]:
                save_checkpoint(model, ckpt_dir / f"epoch_{epoch}.pt")
                if epoch not in saved:
                    saved.append(epoch)
            with atomic_path(resume_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "rows": rows, "saved": saved, "epoch": epoch}, tmp)
            if after_epoch is not None:
                after_epoch(epoch)
            if done:
                break
    final_epoch = rows[-1]["epoch"]
    log = pd.DataFrame(rows, columns=LOG_COLUMNS)
    for position, (key, value) in enumerate(run.keys().items()):
        log.insert(position, key, value)
    meta = provenance(config, sections=("data", "train"), run=run.keys(), hyperparameters=hp,
                      stop_reason=stop_reason)
    write_parquet(log, out_dir / "train_log.parquet", meta)
    # The index is the training job's "done" marker; written last so its presence means complete.
    write_json(ckpt_dir / INDEX_FILE, {"epochs": sorted(saved), "final_epoch": int(final_epoch),
                                       "stop_reason": stop_reason, "hyperparameters": hp,
                                       "run": run.keys()})
    resume_path.unlink(missing_ok=True)
    return TrainResult(sorted(saved), int(final_epoch), stop_reason, log)
