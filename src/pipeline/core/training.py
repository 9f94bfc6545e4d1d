"""Training stage: train one run on its corrupted labels, saving checkpoints on the papers' schedule.

* Optimizer defaults are the authors' published ones, kept with each model in
  :data:`pipeline.core.models.MODELS`; ``train.overrides`` in the config changes them per model.
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
* Step decay of the learning rate (``lr_decay_epochs`` / ``lr_decay_factor`` in the model's defaults
  or ``train.overrides.<model>``; ResNet-20 has it, the four probing models do not): a
  ``MultiStepLR`` stepped after every epoch, so epoch ``e`` (1-based) trains with
  ``lr * factor ** #{m in lr_decay_epochs : m < e}`` (:func:`lr_at_epoch`); the log's ``lr`` column
  is the lr the epoch actually trained with, and the scheduler is part of the resume state. Without
  decay epochs there is no scheduler and nothing changes.
* ``train.augmentation``: ``none`` (absent = none: no random draw, identical to before) or
  ``crop_flip``, for every dataset or per dataset (``{cifar10: crop_flip}``; unlisted: none);
  ``crop_flip``: each training image is zero-padded by 4 pixels, randomly cropped back to its size
  and flipped horizontally with probability 1/2 (the CIFAR recipe of He et al. / akamaster), on the
  uint8 images before normalization, inside :func:`train_one_epoch` only (evaluation never
  augments). The draws come from a generator seeded by (seed, epoch), like the shuffling, so a
  resumed run stays exact.
* :class:`EpochLoop` is the package's one training loop: a model, an optimizer, ``(x, y)``, a loss,
  mini-batches drawn in a (seed, epoch)-seeded order or one full batch (:class:`Batching`), and
  end-of-epoch callbacks that log, checkpoint, run analyses or stop training. :class:`Trainer` (image
  runs: resume state, index, log, hooks) and the arithmetic family
  (:func:`pipeline.arithmetic.train.train`, :mod:`pipeline.arithmetic.memorization`) both train
  through it. :func:`make_optimizer` is the one optimizer factory (SGD, Adam with coupled L2 decay,
  AdamW with decoupled decay, Muon on matrices + AdamW on the rest).
* Image hooks (:class:`Hook`) run at the end of an epoch and may change the model or the optimizer
  (the intervention experiment is training plus one hook, :mod:`pipeline.images.transfer.intervention`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pipeline.core.artifacts import CHECKPOINT_DIR, INDEX_NAME, RESUME_NAME, write_json
from pipeline.core.device import derived_seed, seed_torch, torch_generator
from pipeline.core.models import MODELS
from pipeline.core.runtime import RunRuntime, save_checkpoint
from pipeline.core.tables import provenance, write_parquet

LOG_COLUMNS = ["epoch", "loss", "train_acc_corrupted", "train_acc_true", "test_acc", "lr", "seconds"]


# ----------------------------------------------------------------------------- settings

AUGMENTATIONS = ("none", "crop_flip")
#: zero padding (pixels per side) of the ``crop_flip`` augmentation
CROP_PADDING = 4


def hyperparameters(config: dict, model: str, dataset: str) -> dict:
    """The optimizer settings a run uses: the model's published defaults for ``dataset``
    (:meth:`pipeline.core.models.ModelSpec.defaults`: its weight decay, per-dataset defaults, step decay),
    then ``train.overrides.<model>``.

    ``optimizer, lr, momentum, batch_size, weight_decay`` always; ``lr_decay_epochs`` (sorted list)
    and ``lr_decay_factor`` only when there is a step decay (an override ``lr_decay_epochs: []``
    turns it off), so a model without decay gets the same dict as before they existed.
    """
    hp = MODELS[model].defaults(dataset)
    hp.update(config["train"].get("overrides", {}).get(model, {}))
    if config["train"].get("fused_optimizer", True):
        hp["fused"] = True
    decay = hp.pop("lr_decay_epochs", None) or []
    factor = hp.pop("lr_decay_factor", 0.1)
    if decay:
        hp["lr_decay_epochs"] = sorted({int(e) for e in decay})
        hp["lr_decay_factor"] = float(factor)
    return hp


def augmentation(config: dict, dataset: str | None = None) -> str:
    """``train.augmentation`` for ``dataset`` (absent: ``"none"``): one name for every dataset, or a
    mapping ``{dataset: name}`` in which a dataset not listed gets ``"none"``."""
    spec = config["train"].get("augmentation") or "none"
    name = (spec.get(dataset) or "none") if isinstance(spec, Mapping) else spec
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown train.augmentation {name!r}; allowed: {', '.join(AUGMENTATIONS)}")
    return name


def lr_at_epoch(hp: dict, epoch: int) -> float:
    """The learning rate epoch ``epoch`` (1-based) trains with; epoch 0 (the initialization) gets
    the initial lr. Closed form of what the Trainer's ``MultiStepLR`` does."""
    drops = sum(1 for m in hp.get("lr_decay_epochs", ()) if m < epoch)
    return hp["lr"] * hp.get("lr_decay_factor", 0.1) ** drops if drops else hp["lr"]


#: what :func:`make_optimizer` builds; the image models' configs use ``sgd`` and ``adam``
OPTIMIZERS = ("sgd", "adam", "adamw", "muon")


def make_optimizer(model: nn.Module, hp: Mapping | object) -> torch.optim.Optimizer | MuonWithAdamW:
    """The optimizer ``hp["optimizer"]`` for ``model``'s parameters, the package's one factory.

    ``hp`` is a mapping (or a dataclass such as the arithmetic's ``TrainSettings``) with ``lr`` and
    ``weight_decay``, ``momentum`` for ``sgd`` and optionally ``betas`` (torch's default when absent)
    and ``fused`` (``train.fused_optimizer``: torch's one-kernel update for SGD / Adam / AdamW, the
    same arithmetic as its per-tensor loop up to float rounding; on the digits MLP's 5.3 M parameters
    one Adam step takes 3.5 ms instead of 38 ms on one CPU thread, benchmarks/bench_optimizer.py):

    * ``sgd``: SGD with momentum, L2 decay in the gradient;
    * ``adam``: Adam, L2 decay coupled into the gradient (the image models' published setting);
    * ``adamw``: AdamW, decoupled weight decay;
    * ``muon``: :class:`MuonWithAdamW` (Muon on the 2-D weights, AdamW on the rest).
    """
    if is_dataclass(hp) and not isinstance(hp, type):
        hp = asdict(hp)
    name = hp["optimizer"]
    betas = {"betas": tuple(hp["betas"])} if hp.get("betas") is not None else {}
    params = list(model.parameters())
    # torch's CPU kernel walks each parameter (and its gradient) as one flat run of memory: a
    # strided parameter (a user's model holding a transposed or sliced view) gets the per-tensor loop
    fused = {"fused": True} if hp.get("fused") and all(p.is_contiguous() for p in params) else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"],
                               **fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"], **betas, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"], **betas, **fused)
    if name == "muon":
        return MuonWithAdamW(model, lr=hp["lr"], weight_decay=hp["weight_decay"], **betas)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")


class MuonWithAdamW:
    """Muon on the model's 2-D parameters, AdamW on the others (Muon is defined for matrices only);
    ``zero_grad`` / ``step`` / ``state_dict`` / ``load_state_dict`` / ``param_groups`` as one optimizer.

    ``torch.optim.Muon``: momentum 0.95, Nesterov, five Newton-Schulz steps; its lr is rescaled to
    AdamW's update RMS (``adjust_lr_fn="match_rms_adamw"``), so one lr serves both parts.
    """

    def __init__(self, model: nn.Module, *, lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999)):
        matrices = [p for p in model.parameters() if p.ndim == 2]
        rest = [p for p in model.parameters() if p.ndim != 2]
        self.muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(rest, lr=lr, betas=betas, weight_decay=weight_decay) if rest else None
        self.optimizers = [o for o in (self.muon, self.adamw) if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict() if self.adamw else None}

    def load_state_dict(self, state: dict) -> None:
        self.muon.load_state_dict(state["muon"])
        if self.adamw is not None:
            self.adamw.load_state_dict(state["adamw"])


def make_scheduler(optimizer: torch.optim.Optimizer, hp: dict, epochs_done: int = 0):
    """``MultiStepLR(milestones=lr_decay_epochs, gamma=lr_decay_factor)`` for ``optimizer`` (fresh,
    at ``hp['lr']``), advanced past ``epochs_done`` finished epochs; None without decay epochs."""
    if not hp.get("lr_decay_epochs"):
        return None
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(hp["lr_decay_epochs"]),
                                                     gamma=hp.get("lr_decay_factor", 0.1))
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs_done):
            scheduler.step()
    return scheduler


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


# ----------------------------------------------------------------------------- one epoch

def _epoch_seed(seed: int, epoch: int) -> int:
    return derived_seed(seed, epoch)


def _augmentation_seed(seed: int, epoch: int) -> int:
    return _epoch_seed(seed, epoch) + (1 << 40)  # a stream apart from the shuffling's


def crop_flip_draws(n: int, *, seed: int, epoch: int, padding: int = CROP_PADDING
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per training image (by index): crop offsets ``(top, left)`` in ``[0, 2 * padding]`` and a
    horizontal-flip flag; a function of (seed, epoch) only."""
    g = torch_generator(_augmentation_seed(seed, epoch))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=g)
    flips = torch.randint(0, 2, (n,), generator=g).bool()
    return offsets, flips


def crop_flip(x_uint8: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
              padding: int = CROP_PADDING) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` images by ``padding``, crop ``H x W`` at ``offsets[b] = (top, left)``,
    then mirror left-right where ``flips[b]`` (torchvision's ``RandomCrop(padding)`` followed by
    ``RandomHorizontalFlip``): ``out[b, :, i, j] = padded[b, :, top + i, left + (W-1-j if flip else j)]``."""
    b, _, h, w = x_uint8.shape
    dev = x_uint8.device
    offsets, flips = offsets.to(dev), flips.to(dev)
    padded = F.pad(x_uint8, (padding, padding, padding, padding)).permute(0, 2, 3, 1)  # B, H', W', C
    j = torch.arange(w, device=dev)
    rows = offsets[:, :1] + torch.arange(h, device=dev)                           # B, H
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - j, j)             # B, W
    out = padded[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x_uint8: torch.Tensor,
                    y: torch.Tensor, transform, *, batch_size: int, seed: int,
                    epoch: int, device: torch.device, augmentation: str = "none") -> float:
    """One pass of an image run over the training set in a (seed, epoch)-determined order; returns
    the mean loss (:func:`run_epoch` with the image settings: dropout reseeded per epoch, a lone
    last sample merged, uint8 images augmented and normalized per batch).

    ``augmentation="crop_flip"`` pads/crops/flips each batch's uint8 images (:func:`crop_flip`) with
    draws seeded by (seed, epoch); ``"none"`` draws nothing.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; allowed: {', '.join(AUGMENTATIONS)}")
    return run_epoch(model, optimizer, x_uint8, y, loss_fn=nn.CrossEntropyLoss(),
                     batching=image_batching(batch_size, seed), epoch=epoch, device=device,
                     prepare=image_prepare(transform, augmentation, n=x_uint8.shape[0], seed=seed, epoch=epoch))


def image_batching(batch_size: int, seed: int) -> Batching:
    """Image runs: always shuffled (even when one batch holds everything), the global generator
    reseeded per epoch for dropout, a lone last sample merged (BatchNorm cannot train on 1)."""
    return Batching(size=int(batch_size), seed=seed, merge_lone_last=True, reseed_global=True)


def image_prepare(transform, augmentation: str, *, n: int, seed: int, epoch: int
                  ) -> Callable[[torch.Tensor, torch.Tensor | slice], torch.Tensor]:
    """uint8 batch -> model input: crop/flip with the epoch's draws (``crop_flip``), then normalize."""
    draws = crop_flip_draws(n, seed=seed, epoch=epoch) if augmentation == "crop_flip" else None

    def prepare(xb: torch.Tensor, idx: torch.Tensor | slice) -> torch.Tensor:
        if draws is not None:
            xb = crop_flip(xb, draws[0][idx], draws[1][idx])
        return transform(xb)

    return prepare


# ----------------------------------------------------------------------------- the one epoch loop

@dataclass(frozen=True)
class Batching:
    """How an epoch cuts ``n`` training samples into optimizer steps.

    ``size=None``: full batch, one step per epoch on the samples in their stored order (no draw).
    An integer: a permutation drawn from a generator seeded by ``(seed, epoch)``
    (:func:`~pipeline.core.device.derived_seed`) cut into batches of ``size`` (one batch when
    ``size >= n``, still permuted); ``merge_lone_last`` lets a last batch of a single sample join the
    one before it. ``reseed_global`` seeds torch's global generator with ``(seed, epoch)`` before
    the epoch, so dropout masks are a function of (seed, epoch) only.
    """

    size: int | None
    seed: int = 0
    merge_lone_last: bool = False
    reseed_global: bool = False

    def batches(self, n: int, epoch: int) -> list[torch.Tensor | slice]:
        if self.size is None:
            return [slice(None)]
        order = torch.randperm(n, generator=torch_generator(_epoch_seed(self.seed, epoch)))
        starts = list(range(0, n, self.size))
        if self.merge_lone_last and len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        return [order[start:(starts[i + 1] if i + 1 < len(starts) else n)] for i, start in enumerate(starts)]


def run_epoch(model: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor, *,
              loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batching: Batching, epoch: int,
              device: torch.device | None = None,
              prepare: Callable[[torch.Tensor, torch.Tensor | slice], torch.Tensor] | None = None) -> float:
    """One epoch: for each batch of :meth:`Batching.batches`, ``loss_fn(model(prepare(x[idx])), y[idx])``,
    backward, step. Returns the sample-weighted mean of the batch losses. ``device``: where the batch
    goes (the data may stay on the CPU); ``prepare``: batch -> model input (augmentation, normalization).
    """
    return _epoch(model, optimizer, x, y, loss_fn=loss_fn, batching=batching, epoch=epoch, device=device,
                  prepare=prepare)[0]


def _epoch(model, optimizer, x, y, *, loss_fn, batching: Batching, epoch: int, device, prepare
           ) -> tuple[float, int]:
    """:func:`run_epoch`'s pass; returns (mean loss, optimizer steps taken)."""
    model.train()
    if batching.reseed_global:
        seed_torch(_epoch_seed(batching.seed, epoch))
    total, count = 0.0, 0
    batches = batching.batches(y.shape[0], epoch)
    for idx in batches:
        xb, yb = x[idx], y[idx]
        if device is not None:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if prepare is not None:
            xb = prepare(xb, idx)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * yb.shape[0]
        count += yb.shape[0]
    return total / max(count, 1), len(batches)


@dataclass
class EpochEnd:
    """What an end-of-epoch callback of :class:`EpochLoop` is told."""

    epoch: int
    loss: float        # sample-weighted mean training loss of the epoch
    seconds: float     # wall time of the epoch's optimizer steps
    steps: int         # optimizer steps the epoch took (1: full batch)


@dataclass
class EpochLoop:
    """The one training loop: epochs ``first .. last`` of ``model`` on ``(x, y)``.

    Each epoch: the ``on_epoch_start`` callbacks (with the epoch), one :func:`run_epoch` pass with
    :attr:`optimizer` (read anew each epoch: a callback may replace it), then the ``on_epoch_end``
    callbacks in order with an :class:`EpochEnd` (log rows, analyses, checkpoints, resume states).
    A callback that returns a string stops training after this epoch, that string being the stop
    reason; the remaining callbacks of the epoch still run. ``progress`` shows a bar (``desc``) whose
    line is ``postfix(end)``.
    """

    model: nn.Module
    optimizer: object
    x: torch.Tensor
    y: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batching: Batching
    device: torch.device | None = None
    prepare: Callable[[int], Callable | None] | None = None   # epoch -> batch preparation (or None)
    on_epoch_start: list[Callable[[int], None]] = field(default_factory=list)
    on_epoch_end: list[Callable[[EpochEnd], str | None]] = field(default_factory=list)
    progress: bool = False
    desc: str = ""
    postfix: Callable[[EpochEnd], dict] | None = None
    steps: int = 0     # optimizer steps taken by this loop so far

    def train_epoch(self, epoch: int) -> EpochEnd:
        for callback in self.on_epoch_start:
            callback(epoch)
        t0 = time.perf_counter()
        prepare = self.prepare(epoch) if self.prepare is not None else None
        loss, steps = _epoch(self.model, self.optimizer, self.x, self.y, loss_fn=self.loss_fn,
                             batching=self.batching, epoch=epoch, device=self.device, prepare=prepare)
        self.steps += steps
        return EpochEnd(epoch, loss, time.perf_counter() - t0, steps)

    def run(self, first: int, last: int) -> tuple[int, str | None]:
        """Train epochs ``first .. last``; returns (the last epoch trained, the stop reason or None)."""
        epoch, reason = first - 1, None
        bar = tqdm(range(first, last + 1), desc=self.desc, unit="epoch", disable=not self.progress,
                   mininterval=5.0)
        for epoch in bar:
            end = self.train_epoch(epoch)
            for callback in self.on_epoch_end:
                stop = callback(end)
                reason = reason or stop
            if self.postfix is not None:
                # shown at the bar's next refresh (mininterval): refreshing here would write one
                # line per epoch, 20,000 lines for a 20,000-epoch full-batch arithmetic cell
                bar.set_postfix(refresh=False, **self.postfix(end))
            if reason:
                break
        return epoch, reason


# ----------------------------------------------------------------------------- image runs: Trainer on the EpochLoop

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

    def on_start(self, trainer: Trainer, resumed: bool) -> None:
        """Before the first epoch (``resumed``: the state came from a resume file)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        raise NotImplementedError


@dataclass
class Plan:
    """What a training job does: epochs ``start .. last``, checkpoints, stopping rule."""

    last_epoch: int
    schedule: set[int]
    stop_at_target: float | None       # stop once accuracy on the corrupted labels reaches this
    stop_reason: str = "max_epochs"    # reason recorded when ``last_epoch`` is reached
    # a time.monotonic() after which no new epoch starts (stop_reason "deadline"): for benchmarks
    # that must end inside a machine's lease; the epoch in flight is finished and checkpointed
    deadline: float | None = None


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
        self.augmentation = augmentation(rt.config, rt.run.dataset)
        self.model = rt.new_model()  # seeded: the initialization is a function of the seed only
        self.optimizer = make_optimizer(self.model, self.hp)
        self.scheduler = make_scheduler(self.optimizer, self.hp)  # None without lr_decay_epochs
        self.epoch_lr = self._lr_now()  # the lr the latest logged epoch trained with
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
        return {"epoch": epoch, "loss": loss, **self.evaluate(), "lr": self.epoch_lr, "seconds": seconds}

    def save_checkpoint(self, epoch: int, name: str | None = None) -> None:
        save_checkpoint(self.model, self.ckpt_dir / (name or f"epoch_{epoch}.pt"))
        if name is None and epoch not in self.saved:
            self.saved.append(epoch)

    def _lr_now(self) -> float:
        """The lr the next epoch trains with (``hp['lr']`` itself when there is no schedule)."""
        return self.hp["lr"] if self.scheduler is None else current_lr(self.optimizer)

    def new_optimizer(self) -> None:
        """A fresh optimizer (no momentum/Adam state); the lr schedule continues where it is."""
        self.optimizer = make_optimizer(self.model, self.hp)
        self.scheduler = make_scheduler(self.optimizer, self.hp, epochs_done=self.epoch)

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
        from pipeline.core.artifacts import save_torch

        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "rows": self.rows, "saved": self.saved, "epoch": self.epoch,
                 "fingerprint": self.fingerprint(),
                 "hooks": json.dumps({h.name: h.info for h in self.hooks}, default=str)}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        save_torch(state, self.resume_path)

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
        if self.scheduler is not None:
            if "scheduler" in state:
                self.scheduler.load_state_dict(state["scheduler"])
            else:  # not expected (the fingerprint holds the decay epochs); rebuild from the epoch
                self.scheduler = make_scheduler(self.optimizer, self.hp, epochs_done=self.epoch)
        self.epoch_lr = self.rows[-1]["lr"]
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

    def _past_deadline(self) -> bool:
        return self.plan.deadline is not None and time.monotonic() >= self.plan.deadline

    def _reached_target(self) -> bool:
        target = self.plan.stop_at_target
        return target is not None and self.rows[-1]["train_acc_corrupted"] >= target

    def start_from(self, checkpoint: Path, rows: list[dict]) -> None:
        """Begin at the end of epoch ``rows[-1]['epoch']`` of another run (its weights and log
        rows), unless a valid resume state exists. ``self.branched_from`` says which happened."""
        self._branch = (Path(checkpoint), [dict(r) for r in rows])

    def _apply_branch(self) -> bool:
        from pipeline.core.runtime import load_checkpoint

        if self._branch is None:
            return False
        checkpoint, rows = self._branch
        load_checkpoint(checkpoint, self.model)
        self.model.to(self.rt.device)
        self.rows, self.epoch = rows, int(rows[-1]["epoch"])
        self.branched_from = checkpoint
        self.scheduler = make_scheduler(self.optimizer, self.hp, epochs_done=self.epoch)
        self.epoch_lr = rows[-1]["lr"]
        return True

    def run(self) -> TrainResult:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        resumed = self._load_state()
        branched = not resumed and self._apply_branch()
        for hook in self.hooks:
            hook.on_start(self, resumed)
        if not resumed and not branched:
            self.rows = [{"epoch": 0, "loss": math.nan, **self.evaluate(), "lr": self.epoch_lr,
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
            _, stopped = self.epoch_loop().run(self.epoch + 1, self.plan.last_epoch)
            stop_reason = stopped or stop_reason
        return self._finish(stop_reason)

    def epoch_loop(self) -> EpochLoop:
        """The run's :class:`EpochLoop`: the image batching and input preparation, this trainer's
        lr bookkeeping before each epoch and its log row, stopping rule, hooks, checkpoint and resume
        state after it."""
        rt = self.rt

        def start(epoch: int) -> None:
            self.loop.optimizer = self.optimizer  # a hook may have replaced it (new_optimizer)
            self.epoch_lr = self._lr_now()

        def end(e: EpochEnd) -> str | None:
            if self.scheduler is not None:
                self.scheduler.step()
            self.rows.append(self.log_row(e.epoch, e.loss, e.seconds))
            self.epoch = e.epoch
            reason = None
            if self._reached_target():
                reason = "target_train_accuracy"
            elif e.epoch < self.plan.last_epoch and self._past_deadline():
                reason = "deadline"
            self._end_of_epoch(e.epoch, done=reason is not None)
            return reason

        def postfix(e: EpochEnd) -> dict:
            last = self.rows[-1]
            return {"loss": f"{e.loss:.3f}", "train": f"{last['train_acc_corrupted']:.3f}",
                    "test": f"{last['test_acc']:.3f}"}

        self.loop = EpochLoop(
            self.model, self.optimizer, rt.x_train, self.y, loss_fn=nn.CrossEntropyLoss(),
            batching=image_batching(self.hp["batch_size"], rt.run.seed), device=rt.device,
            prepare=lambda epoch: image_prepare(rt.transform, self.augmentation, n=rt.x_train.shape[0],
                                                seed=rt.run.seed, epoch=epoch),
            on_epoch_start=[start], on_epoch_end=[end], progress=self.progress, desc=rt.run.path,
            postfix=postfix)
        return self.loop

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



