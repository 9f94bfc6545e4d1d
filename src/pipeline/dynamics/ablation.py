"""Training ablations of the feature-dynamics paper (Appendix F), as run variants of a standard run.

Each variant branches from a checkpoint of the standard run (same data, labels and seed), applies
one :class:`pipeline.core.training.Hook` and trains on with the one training loop:

* ``freeze-<depth>-e<E>`` (App. F "Freezing shallow layers", Fig. 18): from epoch E the shallow part
  f[1:d] up to ``depth`` stops training -- its parameters get no gradient *and* its BatchNorm layers
  stay in eval mode, so their running statistics are frozen too and the frozen part is one fixed
  function of the input -- while the deeper layers train on with a restarted optimizer (the
  checkpoints hold no optimizer state) and the standard run's learning-rate schedule;
* ``restart-e<E>``: the control of the freeze ablation -- the same branch and the same optimizer
  restart, nothing frozen -- so "freeze vs restart" isolates the freezing (the standard run itself
  keeps its momentum buffer and is the paper's "SGD" line);
* ``reinit-<depth>-e<E>`` / ``reinit-<depth>-final`` (App. F "Reinitializing deep layers"): from a
  well-trained network (the standard run's final checkpoint by default) the shallow part up to
  ``depth`` is *retained and frozen* (as for freeze) and every deeper layer (and the head) is
  reinitialised, then the network is retrained; by default with the learning-rate schedule restarted
  (``dynamics.ablations.reinit.lr_schedule: restart``: the deep layers are trained from scratch with
  the standard recipe), or with the standard run's schedule continued (``continue``).

Depths are split boundaries (:attr:`pipeline.core.models.ProbedModel.split_boundaries`); in a variant
name their dots are written as underscores. ResNet-20's paper depths: ``stage1.block1`` /
``stage1.block2`` / ``stage1.block3`` are "depth 1/2/3" (the stem plus the first 1/2/3 basic blocks)
of Fig. 18 and "the first (two) basic block(s) retained" of App. F.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MethodType

import pandas as pd
import torch
from torch import nn

from pipeline.core.config import Run
from pipeline.core.device import derived_seed, seed_torch

__all__ = ["ABLATION_KINDS", "parse_ablation_variant", "freeze_shallow", "FreezeShallow",
           "RestartOptimizer", "ReinitDeep", "ablation_run"]

#: the ablation kinds (``dynamics.ablations.kinds``)
ABLATION_KINDS = ("freeze", "restart", "reinit")

_ABLATION = re.compile(r"(?:(?P<kind>freeze|reinit)-(?P<depth>[A-Za-z0-9_]+)|(?P<restart>restart))"
                       r"-(?:e(?P<epoch>[0-9]+)|(?P<final>final))")


def parse_ablation_variant(variant: str, model: str) -> tuple[str, str | None, int | str]:
    """``(kind, depth, epoch)`` of ``freeze-<depth>-e<E>``, ``restart-e<E>`` or
    ``reinit-<depth>-e<E>`` / ``reinit-<depth>-final`` (``epoch`` is ``"final"`` there; ``depth`` is
    None for restart). The depth's dots were written as underscores; matched back against the
    model's boundaries."""
    from pipeline.core.models import MODELS

    m = _ABLATION.fullmatch(variant)
    if m is None or (m["final"] and m["kind"] != "reinit"):
        raise ValueError(f"{variant!r} is not an ablation variant: freeze-<depth>-e<E>, restart-e<E>, "
                         "reinit-<depth>-e<E> or reinit-<depth>-final")
    epoch: int | str = "final" if m["final"] else int(m["epoch"])
    if m["restart"]:
        return "restart", None, epoch
    names = MODELS[model].build(3, 32, 10).split_boundaries
    depth = next((b for b in names if b.replace(".", "_") == m["depth"]), None)
    if depth is None:
        raise ValueError(f"ablation variant {variant!r}: no boundary of {model} is named {m['depth']!r} "
                         f"(boundaries: {list(names)})")
    return m["kind"], depth, epoch


# ----------------------------------------------------------------------------- freezing

def _train_stays_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """``Module.train`` of a frozen BatchNorm layer: always eval mode (the training loop calls
    ``model.train()`` every epoch, which would otherwise switch it back to batch statistics and
    running-statistics updates)."""
    return nn.Module.train(self, False)


def freeze_shallow(model: nn.Module, depth: str) -> dict[str, list[str]]:
    """Freeze the shallow part of ``model`` up to boundary ``depth``: its parameters stop requiring
    gradients and its BatchNorm layers stay in eval mode for good (normalising with their running
    statistics, which no longer change). Returns ``{"frozen": parameter names, "eval_batchnorm":
    BatchNorm module names}``."""
    owned = set(model.shallow_state_keys(depth))
    frozen = []
    for name, p in model.named_parameters():
        if name in owned:
            p.requires_grad_(False)
            frozen.append(name)
    held = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(
                k.startswith(name + ".") for k in owned):
            module.train = MethodType(_train_stays_eval, module)
            module.eval()
            held.append(name)
    return {"frozen": frozen, "eval_batchnorm": held}


class FreezeShallow:
    """Hook: the shallow layers up to ``depth`` stop training from the branch epoch on
    (:func:`freeze_shallow`); the optimizer restarts (as in :class:`RestartOptimizer`)."""

    name = "freeze"

    def __init__(self, depth: str, epoch: int):
        self.depth, self.epoch, self.info = depth, int(epoch), {}

    def fingerprint(self) -> dict:
        return {"depth": self.depth, "epoch": self.epoch}

    def on_start(self, trainer, resumed: bool) -> None:
        # requires_grad and the eval-mode hold are not part of a state dict: applied on resume too
        parts = freeze_shallow(trainer.model, self.depth)
        if not resumed:
            trainer.new_optimizer()
        self.info = {"depth": self.depth, "epoch": self.epoch, **parts}

    def on_epoch_end(self, trainer, epoch: int) -> None:
        pass


class RestartOptimizer:
    """Hook: the freeze ablation's control -- the optimizer restarts at the branch epoch (no
    momentum buffer, the learning-rate schedule continues), nothing is frozen."""

    name = "restart"

    def __init__(self, epoch: int):
        self.epoch, self.info = int(epoch), {}

    def fingerprint(self) -> dict:
        return {"epoch": self.epoch}

    def on_start(self, trainer, resumed: bool) -> None:
        if not resumed:
            trainer.new_optimizer()
        self.info = {"epoch": self.epoch, "frozen": []}

    def on_epoch_end(self, trainer, epoch: int) -> None:
        pass


class ReinitDeep:
    """Hook: at the branch epoch the shallow layers up to ``depth`` are retained and frozen
    (:func:`freeze_shallow`), every deeper layer and the head is reinitialised (a fresh model seeded
    by (seed, epoch)), and the optimizer restarts; ``lr_schedule="restart"`` also restarts the
    learning-rate schedule (retraining from the base lr), ``"continue"`` keeps the standard run's."""

    name = "reinit"

    def __init__(self, depth: str, epoch: int, seed: int, lr_schedule: str = "restart"):
        if lr_schedule not in ("restart", "continue"):
            raise ValueError(f"lr_schedule {lr_schedule!r}: allowed restart, continue")
        self.depth, self.epoch, self.seed = depth, int(epoch), int(seed)
        self.lr_schedule, self.info = lr_schedule, {}

    def fingerprint(self) -> dict:
        return {"depth": self.depth, "epoch": self.epoch, "lr_schedule": self.lr_schedule}

    def on_start(self, trainer, resumed: bool) -> None:
        model = trainer.model
        parts = freeze_shallow(model, self.depth)
        self.info = {"depth": self.depth, "epoch": self.epoch, "lr_schedule": self.lr_schedule, **parts}
        if resumed:
            return
        owned = set(model.shallow_state_keys(self.depth))
        seed_torch(derived_seed(self.seed, 7919 * (self.epoch + 1)))  # the fresh layers: (seed, epoch) only
        fresh = trainer.rt.empty_model().state_dict()
        state = model.state_dict()
        reset = [k for k in state if k not in owned]
        with torch.no_grad():
            for k in reset:
                state[k].copy_(fresh[k])
        if self.lr_schedule == "restart":
            from pipeline.core.training import make_optimizer, make_scheduler

            # a fresh optimizer at the base lr and a schedule counted from the branch (not
            # Trainer.new_optimizer, which continues the schedule at the run's epoch)
            trainer.optimizer = make_optimizer(model, trainer.hp)
            trainer.scheduler = make_scheduler(trainer.optimizer, trainer.hp)
        else:
            trainer.new_optimizer()
        self.info["reinitialised"] = reset

    def on_epoch_end(self, trainer, epoch: int) -> None:
        pass


# ----------------------------------------------------------------------------- the stage

def ablation_run(config: dict, run: Run, *, labels_path: str | Path, standard_dir: str | Path,
                 out_dir: str | Path, threads: int | None = None):
    """Train the ablation run variant ``run.variant`` into ``out_dir``: branch from the standard
    run's checkpoint (epoch E, or its final epoch for ``reinit-...-final``), apply the hook, train
    ``dynamics.ablations.extra_epochs`` (freeze, restart) or ``reinit.extra_epochs`` (reinit; null:
    ``train.max_epochs``) more. Checkpoints: the branch epoch and the last (the ablation table and
    figure read the training log only)."""
    from pipeline.core.artifacts import checkpoint_file, index_file, read_index
    from pipeline.core.errors import ArtifactError
    from pipeline.core.runtime import RunRuntime
    from pipeline.core.training import LOG_COLUMNS, Plan, Trainer

    kind, depth, epoch = parse_ablation_variant(run.variant, run.model)
    abl = config["dynamics"]["ablations"]
    if epoch == "final":
        epoch = int(read_index(index_file(standard_dir))["final_epoch"])
    if kind == "reinit":
        extra = abl["reinit"]["extra_epochs"] or config["train"]["max_epochs"]
    else:
        extra = abl["extra_epochs"]
    rt = RunRuntime(config, run, run_dir=out_dir, labels_path=labels_path, threads=threads)
    ckpt = checkpoint_file(standard_dir, epoch)
    if not ckpt.exists():
        raise ArtifactError(f"the standard run {standard_dir} has no checkpoint at epoch {epoch} "
                            f"(the branch epoch of {run.variant}); choose an epoch of its checkpoint "
                            "schedule before it stopped")
    log = pd.read_parquet(Path(standard_dir) / "train_log.parquet")
    rows = log[log["epoch"] <= epoch][LOG_COLUMNS].to_dict("records")
    last = epoch + int(extra)
    if kind == "freeze":
        hook = FreezeShallow(depth, epoch)
    elif kind == "restart":
        hook = RestartOptimizer(epoch)
    else:
        hook = ReinitDeep(depth, epoch, run.seed, abl["reinit"]["lr_schedule"])
    record = {"kind": kind, "depth": depth, "epoch": epoch, "extra_epochs": int(extra)}
    if kind == "reinit":
        record["lr_schedule"] = abl["reinit"]["lr_schedule"]
    trainer = Trainer(rt, out_dir, Plan(last_epoch=last, schedule={epoch, last}, stop_at_target=None),
                      hooks=[hook], progress=False, provenance_extra={"ablation": record})
    trainer.start_from(ckpt, rows)
    result = trainer.run()
    end = result.log.iloc[-1]
    print(f"{run.path}: {kind} {depth or ''} at epoch {epoch}, trained to {result.final_epoch}; test acc "
          f"{end.test_acc:.3f}, train acc (corrupted) {end.train_acc_corrupted:.3f}", flush=True)
    return result
