"""Weight intervention during training (section 9): edit at epoch E, then keep training.

An intervened run is the standard run of the same (dataset, model, corruption, seed) trained for
``E = transfer.intervention.epoch`` epochs, then edited exactly as in :mod:`pipeline.images.transfer.editing`
(classifier weights := VeLPIC class vectors fitted on the last probe layer with the corrupted
training labels, biases zeroed), then trained on the corrupted labels for ``N = extra_epochs`` more
epochs, numbered ``E+1 .. E+N``. There is no stop-at-target criterion: it always runs ``E+N``
epochs, as in the papers. ``reset_optimizer`` (default true, as the authors) starts a fresh
optimizer at the edit; false keeps the optimizer state (momentum / Adam moments) of epoch E.

Run variant (the last component of the run path): ``intervene-e{E}``, or ``intervene-e{E}-keepopt``
when the optimizer is not reset; :func:`intervention_runs` lists them. Artifacts are the standard
run's: ``train_log.parquet`` (every epoch ``0 .. E+N``; the epoch-E row holds the accuracies *after*
the edit, its loss is epoch E's training loss), ``checkpoints/epoch_{e}.pt`` for the epochs after
the edit (``E`` itself = the edited model, then the training schedule or every
``checkpoint_every`` epochs, and ``E+N``), ``checkpoints/epoch_{E}_pre_edit.pt`` (the weights
just before the edit) and ``checkpoints/index.json`` (the "done" marker with the epochs, the
accuracies before and after the edit and the intervention settings). The listed checkpoints go
through the same extract / fit / score rules as a standard run's.

The first E epochs: training is deterministic given (seed, epoch) (see :mod:`pipeline.core.training`), so
retraining them reproduces the standard run's weights. With ``reset_optimizer`` the optimizer state
at E is not needed, and when the standard run saved a checkpoint at epoch E (``standard_dir``) the
intervened run branches from it directly (its log rows 0..E are copied): cheaper, and on a GPU,
whose kernels are not bitwise deterministic, it makes the branch point exactly the standard run's.
Otherwise (optimizer kept, or no standard checkpoint at E because the standard run stopped
earlier or E is off its schedule) epochs 1..E are trained here, exactly like :func:`train_run`.

It is training plus one hook: :class:`EditHook` runs at the end of epoch E inside
:class:`pipeline.core.training.Trainer`, so the loop, the log columns, resuming (with its staleness check,
which here also covers ``transfer.intervention``), checkpoints and provenance are the training's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.core.artifacts import checkpoint_file, index_file
from pipeline.core.runtime import RunRuntime, layer_outputs
from pipeline.core.training import LOG_COLUMNS, Hook, Plan, Trainer, TrainResult
from pipeline.images.variants import intervention_schedule, intervention_variant

PRE_EDIT_FILE = "epoch_{epoch}_pre_edit.pt"
_ACCURACIES = ("train_acc_corrupted", "train_acc_true", "test_acc")


class EditHook(Hook):
    """At the end of epoch E: keep the pre-edit weights, edit the classifier, maybe reset the optimizer."""

    name = "intervention"

    def __init__(self, icfg: dict):
        super().__init__()
        self.icfg = icfg
        self.edit_epoch = int(icfg["epoch"])
        self.info = {"epoch": self.edit_epoch, "extra_epochs": int(icfg["extra_epochs"]),
                     "reset_optimizer": bool(icfg["reset_optimizer"]), "sign": icfg["sign"],
                     "fit_labels": "corrupted", "bias": "zero", "branched_from": None}

    def fingerprint(self) -> dict:
        return {"intervention": self.icfg}

    def on_start(self, trainer: Trainer, resumed: bool) -> None:
        if not resumed:
            self.info["branched_from"] = None if trainer.branched_from is None else str(trainer.branched_from)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        from pipeline.images.transfer.editing import edit_classifier, fit_class_vectors

        if epoch != self.edit_epoch or "pre_edit" in self.info:
            return
        model, rt = trainer.model, trainer.rt
        trainer.save_checkpoint(epoch, name=PRE_EDIT_FILE.format(epoch=epoch))
        self.info["pre_edit"] = {k: trainer.rows[-1][k] for k in _ACCURACIES}
        t0 = time.perf_counter()
        features = layer_outputs(model, rt.x_train, rt.transform, model.last_probe_layer)
        probe = fit_class_vectors(features, rt.labels.corrupted, sign=self.icfg["sign"])
        edit_classifier(model, probe, bias="zero")
        if self.icfg["reset_optimizer"]:
            trainer.new_optimizer()
        last = trainer.rows[-1]
        post = trainer.log_row(epoch, last["loss"], last["seconds"] + time.perf_counter() - t0)
        trainer.rows[-1] = post
        self.info["post_edit"] = {k: post[k] for k in _ACCURACIES}
        print(f"{rt.run.path}: edit at epoch {epoch}: test acc {self.info['pre_edit']['test_acc']:.3f} "
              f"-> {self.info['post_edit']['test_acc']:.3f}", flush=True)


def _standard_branch(standard_dir: str | Path | None, epoch: int):
    """The standard run's epoch-E checkpoint and log rows 0..E, if it saved that checkpoint."""
    import pandas as pd

    if standard_dir is None or not index_file(standard_dir).exists():
        return None
    with open(index_file(standard_dir)) as fh:
        if epoch not in json.load(fh)["epochs"]:
            return None
    log = pd.read_parquet(Path(standard_dir) / "train_log.parquet")
    log = log[log.epoch <= epoch][LOG_COLUMNS]
    if list(log.epoch) != list(range(epoch + 1)):
        return None
    return checkpoint_file(standard_dir, epoch), log


def intervene_run(rt: RunRuntime, out_dir: str | Path | None = None, *,
                  standard_dir: str | Path | None = None,
                  after_epoch: Callable[[int], None] | None = None,
                  progress: bool = False) -> TrainResult:
    """Train the run of ``rt`` (an intervention variant) into ``out_dir``: E epochs, the edit, N more."""
    config, run = rt.config, rt.run
    icfg = config["transfer"]["intervention"]
    if run.variant != intervention_variant(icfg):
        raise ValueError(f"run variant {run.variant!r} does not match transfer.intervention "
                         f"(expected {intervention_variant(icfg)!r})")
    hook = EditHook(icfg)
    plan = Plan(last_epoch=hook.edit_epoch + int(icfg["extra_epochs"]),
                schedule=set(intervention_schedule(config, run.model)), stop_at_target=None,
                stop_reason="fixed_epochs")
    out_dir = Path(out_dir) if out_dir is not None else rt.run_dir
    trainer = Trainer(rt, out_dir, plan, hooks=[hook], after_epoch=after_epoch, progress=progress,
                      provenance_extra={"transfer": json.dumps({"intervention": icfg}, sort_keys=True)})
    branch = _standard_branch(standard_dir, hook.edit_epoch) if icfg["reset_optimizer"] else None
    if branch is not None:
        trainer.start_from(branch[0], branch[1].to_dict("records"))
    return trainer.run()
