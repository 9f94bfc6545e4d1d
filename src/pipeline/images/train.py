"""The training stage of an image run: the papers' checkpoint schedule and stopping rule on the one
training loop (:class:`pipeline.core.training.Trainer`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.core.artifacts import CHECKPOINT_DIR
from pipeline.core.runtime import RunRuntime
from pipeline.core.schedule import schedule_for
from pipeline.core.training import Plan, Trainer, TrainResult


def standard_plan(config: dict, model: str) -> Plan:
    tcfg = config["train"]
    return Plan(last_epoch=tcfg["max_epochs"], schedule=set(schedule_for(config, model)),
                stop_at_target=tcfg["target_train_accuracy"])


def train_run(rt: RunRuntime, out_dir: str | Path | None = None, *,
              after_epoch: Callable[[int], None] | None = None, progress: bool = True,
              deadline: float | None = None) -> TrainResult:
    """Train the run of ``rt`` into ``out_dir`` (default: its run folder); resumable.

    ``after_epoch(epoch)`` is called once an epoch's state is safely on disk (used by tests to kill
    the process at a known point). ``deadline`` (a ``time.monotonic()`` value) ends training at the
    first epoch boundary past it, checkpointed, with ``stop_reason == "deadline"``.
    """
    from pipeline.core.artifacts import sweep_stale_tmp

    out_dir = Path(out_dir) if out_dir is not None else rt.run_dir
    for folder in (out_dir, out_dir / CHECKPOINT_DIR):
        if folder.is_dir():
            sweep_stale_tmp(folder)
    plan = standard_plan(rt.config, rt.run.model)
    plan.deadline = deadline
    trainer = Trainer(rt, out_dir, plan, after_epoch=after_epoch, progress=progress)
    return trainer.run()
