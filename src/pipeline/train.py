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
  by (seed, epoch) rather than from whatever state the process happened to have. The resume state
  records what it was made from (the ``data`` and ``train`` config sections, the hyperparameters,
  the run keys, a digest of the training labels, and whatever the hooks add); when any of that
  differs on restart it is discarded, with a log line, and training starts afresh.
* :class:`Trainer` is the one training loop. Hooks (:class:`Hook`) run at the end of an epoch and
  may change the model or the optimizer (the intervention experiment is training plus one hook,
  :mod:`pipeline.transfer.intervention`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.config import provenance
from pipeline.io import write_json, write_parquet
from pipeline.models import MODELS
from pipeline.runtime import RunRuntime, save_checkpoint
from pipeline.workflow import CHECKPOINT_DIR, INDEX_NAME, RESUME_NAME, schedule_for

LOG_COLUMNS = ["epoch", "loss", "train_acc_corrupted", "train_acc_true", "test_acc", "lr", "seconds"]


# ----------------------------------------------------------------------------- settings

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


# ----------------------------------------------------------------------------- one epoch

def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x_uint8: torch.Tensor,
                    y: torch.Tensor, transform, *, batch_size: int, seed: int,
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


# ----------------------------------------------------------------------------- the loop

@dataclass
class TrainResult:
    epochs: list[int]          # checkpointed epochs
    final_epoch: int
    stop_reason: str
    log: pd.DataFrame


class Hook:
    """Runs at the end of an epoch, after its log row and before its checkpoint and resume state.

    ``info`` is the hook's record: saved in the resume state, in ``index.json`` and in the log's
    provenance under :attr:`name`. ``fingerprint`` is what the hook's behaviour depends on (its
    config); a resume state made with another fingerprint is discarded.
    """

    name: str = "hook"

    def __init__(self) -> None:
        self.info: dict = {}

    def fingerprint(self) -> dict:
        return {}

    def on_start(self, trainer: "Trainer", resumed: bool) -> None:
        """Before the first epoch (``resumed``: the state came from a resume file)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int) -> None:
        raise NotImplementedError


@dataclass
class Plan:
    """What a training job does: epochs ``start .. last``, checkpoints, stopping rule."""

    last_epoch: int
    schedule: set[int]
    stop_at_target: float | None       # stop once accuracy on the corrupted labels reaches this
    stop_reason: str = "max_epochs"    # reason recorded when ``last_epoch`` is reached


def _labels_digest(rt: RunRuntime) -> str:
    return hashlib.sha256(rt.labels.corrupted.tobytes()).hexdigest()[:16]


class Trainer:
    """Train one run into ``out_dir`` (``checkpoints/``, ``train_log.parquet``); resumable."""

    def __init__(self, rt: RunRuntime, out_dir: str | Path, plan: Plan, *, hooks: Sequence[Hook] = (),
                 after_epoch: Callable[[int], None] | None = None, progress: bool = True,
                 provenance_extra: dict | None = None):
        self.rt, self.plan, self.hooks = rt, plan, list(hooks)
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / CHECKPOINT_DIR
        self.resume_path = self.out_dir / RESUME_NAME
        self.after_epoch, self.progress = after_epoch, progress
        self.provenance_extra = provenance_extra or {}
        self.hp = hyperparameters(rt.config, rt.run.model, rt.run.dataset)
        self.model = rt.new_model()  # seeded: the initialization is a function of the seed only
        self.optimizer = make_optimizer(self.model, self.hp)
        self.y = torch.from_numpy(rt.labels.corrupted)
        if rt.device.type == "cuda":
            self.y = self.y.to(rt.device)
        self.rows: list[dict] = []
        self.saved: list[int] = []
        self.epoch = 0
        self._branch: tuple[Path, list[dict]] | None = None
        self.branched_from: Path | None = None

    # -- pieces hooks use -----------------------------------------------------------------
    def evaluate(self) -> dict:
        return self.rt.accuracies(self.model)

    def log_row(self, epoch: int, loss: float, seconds: float) -> dict:
        return {"epoch": epoch, "loss": loss, **self.evaluate(), "lr": self.hp["lr"], "seconds": seconds}

    def save_checkpoint(self, epoch: int, name: str | None = None) -> None:
        save_checkpoint(self.model, self.ckpt_dir / (name or f"epoch_{epoch}.pt"))
        if name is None and epoch not in self.saved:
            self.saved.append(epoch)

    def new_optimizer(self) -> None:
        self.optimizer = make_optimizer(self.model, self.hp)

    # -- resume state ---------------------------------------------------------------------
    def fingerprint(self) -> str:
        cfg = self.rt.config
        return json.dumps({"data": cfg["data"], "train": cfg["train"], "hyperparameters": self.hp,
                           "run": self.rt.run.keys(), "labels": _labels_digest(self.rt),
                           "plan": {"last_epoch": self.plan.last_epoch,
                                    "stop_at_target": self.plan.stop_at_target},
                           "hooks": {h.name: h.fingerprint() for h in self.hooks}},
                          sort_keys=True, default=str)

    def _save_state(self) -> None:
        from pipeline.io import save_torch

        save_torch({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "rows": self.rows, "saved": self.saved, "epoch": self.epoch,
                    "fingerprint": self.fingerprint(),
                    "hooks": json.dumps({h.name: h.info for h in self.hooks}, default=str)},
                   self.resume_path)

    def _load_state(self) -> bool:
        """Restore a resume state made from the same inputs; discard any other, saying why."""
        if not self.resume_path.exists():
            return False
        try:
            state = torch.load(self.resume_path, map_location="cpu", weights_only=True)
            stale = state.get("fingerprint") != self.fingerprint()
        except Exception as exc:  # truncated or foreign file: not worth keeping
            state, stale = None, f"unreadable ({type(exc).__name__})"
        if stale:
            reason = stale if isinstance(stale, str) else "made with other settings, labels or run keys"
            print(f"discarding resume state {self.resume_path}: {reason}; training from the start",
                  flush=True)
            self.resume_path.unlink(missing_ok=True)
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rows, self.saved, self.epoch = state["rows"], state["saved"], state["epoch"]
        infos = json.loads(state["hooks"])
        for hook in self.hooks:
            hook.info = infos.get(hook.name, {})
        print(f"resuming {self.rt.run.path} from epoch {self.epoch}", flush=True)
        return True

    # -- the loop -------------------------------------------------------------------------
    def _end_of_epoch(self, epoch: int, done: bool) -> None:
        for hook in self.hooks:
            hook.on_epoch_end(self, epoch)
        if epoch in self.plan.schedule or done or epoch == self.plan.last_epoch:
            self.save_checkpoint(epoch)
        self._save_state()
        if self.after_epoch is not None:
            self.after_epoch(epoch)

    def _reached_target(self) -> bool:
        target = self.plan.stop_at_target
        return target is not None and self.rows[-1]["train_acc_corrupted"] >= target

    def start_from(self, checkpoint: Path, rows: list[dict]) -> None:
        """Begin at the end of epoch ``rows[-1]['epoch']`` of another run (its weights and log
        rows), unless a valid resume state exists. ``self.branched_from`` says which happened."""
        self._branch = (Path(checkpoint), [dict(r) for r in rows])

    def _apply_branch(self) -> bool:
        from pipeline.runtime import load_checkpoint

        if self._branch is None:
            return False
        checkpoint, rows = self._branch
        load_checkpoint(checkpoint, self.model)
        self.model.to(self.rt.device)
        self.rows, self.epoch = rows, int(rows[-1]["epoch"])
        self.branched_from = checkpoint
        return True

    def run(self) -> TrainResult:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        resumed = self._load_state()
        branched = not resumed and self._apply_branch()
        for hook in self.hooks:
            hook.on_start(self, resumed)
        if not resumed and not branched:
            self.rows = [{"epoch": 0, "loss": math.nan, **self.evaluate(), "lr": self.hp["lr"],
                          "seconds": 0.0}]
            if 0 in self.plan.schedule:
                self.save_checkpoint(0)
            for hook in self.hooks:
                hook.on_epoch_end(self, 0)
        elif branched:
            self._end_of_epoch(self.epoch, done=False)

        stop_reason = self.plan.stop_reason
        if self.epoch > 0 and self._reached_target():
            stop_reason = "target_train_accuracy"
        else:
            bar = tqdm(range(self.epoch + 1, self.plan.last_epoch + 1), desc=self.rt.run.path,
                       unit="epoch", disable=not self.progress, mininterval=5.0)
            for epoch in bar:
                t0 = time.perf_counter()
                loss = train_one_epoch(self.model, self.optimizer, self.rt.x_train, self.y,
                                       self.rt.transform, batch_size=self.hp["batch_size"],
                                       seed=self.rt.run.seed, epoch=epoch, device=self.rt.device)
                self.rows.append(self.log_row(epoch, loss, time.perf_counter() - t0))
                self.epoch = epoch
                last = self.rows[-1]
                bar.set_postfix(loss=f"{loss:.3f}", train=f"{last['train_acc_corrupted']:.3f}",
                                test=f"{last['test_acc']:.3f}")
                done = self._reached_target()
                if done:
                    stop_reason = "target_train_accuracy"
                self._end_of_epoch(epoch, done)
                if done:
                    break
        return self._finish(stop_reason)

    def _finish(self, stop_reason: str) -> TrainResult:
        rt = self.rt
        final_epoch = int(self.rows[-1]["epoch"])
        log = pd.DataFrame(self.rows, columns=LOG_COLUMNS)
        for position, (key, value) in enumerate(rt.run.keys().items()):
            log.insert(position, key, value)
        hooks = {h.name: h.info for h in self.hooks}
        meta = provenance(rt.config, sections=("data", "train"), run=rt.run.keys(),
                          hyperparameters=self.hp, stop_reason=stop_reason, **hooks,
                          **self.provenance_extra)
        write_parquet(log, self.out_dir / "train_log.parquet", meta)
        # The index is the training job's "done" marker; written last so its presence means complete.
        write_json(self.ckpt_dir / INDEX_NAME, {"epochs": sorted(self.saved), "final_epoch": final_epoch,
                                                "stop_reason": stop_reason, "hyperparameters": self.hp,
                                                "run": rt.run.keys(), **hooks})
        self.resume_path.unlink(missing_ok=True)
        return TrainResult(sorted(self.saved), final_epoch, stop_reason, log)


def standard_plan(config: dict, model: str) -> Plan:
    tcfg = config["train"]
    return Plan(last_epoch=tcfg["max_epochs"], schedule=set(schedule_for(config, model)),
                stop_at_target=tcfg["target_train_accuracy"])


def train_run(rt: RunRuntime, out_dir: str | Path | None = None, *,
              after_epoch: Callable[[int], None] | None = None, progress: bool = True) -> TrainResult:
    """Train the run of ``rt`` into ``out_dir`` (default: its run folder); resumable.

    ``after_epoch(epoch)`` is called once an epoch's state is safely on disk (used by tests to kill
    the process at a known point).
    """
    from pipeline.io import sweep_stale_tmp

    out_dir = Path(out_dir) if out_dir is not None else rt.run_dir
    for folder in (out_dir, out_dir / CHECKPOINT_DIR):
        if folder.is_dir():
            sweep_stale_tmp(folder)
    trainer = Trainer(rt, out_dir, standard_plan(rt.config, rt.run.model), after_epoch=after_epoch,
                      progress=progress)
    return trainer.run()
