"""Weight intervention during training (section 9): edit at epoch E, then keep training.

An intervened run is the standard run of the same (dataset, model, corruption, seed) trained for
``E = transfer.intervention.epoch`` epochs, then edited exactly as in :mod:`pipeline.transfer.editing`
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

The first E epochs: training is deterministic given (seed, epoch) (see :mod:`pipeline.train`), so
retraining them reproduces the standard run's weights. With ``reset_optimizer`` the optimizer state
at E is not needed, and when the standard run saved a checkpoint at epoch E (``standard_dir``) the
intervened run branches from it directly (its log rows 0..E are copied): cheaper, and on a GPU,
whose kernels are not bitwise deterministic, it makes the branch point exactly the standard run's.
Otherwise (optimizer kept, or no standard checkpoint at E because the standard run stopped
earlier or E is off its schedule) epochs 1..E are trained here, exactly like :func:`train_run`.

Resumable like training: each epoch ends with an atomically written ``resume.pt``.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Callable

from pipeline.config import Run, provenance

from pipeline.workflow import intervention_schedule, intervention_variant

PRE_EDIT_FILE = "epoch_{epoch}_pre_edit.pt"


def _standard_branch(standard_dir: str | Path | None, epoch: int):
    """The standard run's epoch-E checkpoint and log rows 0..E, if it saved that checkpoint."""
    import pandas as pd

    from pipeline.train import INDEX_FILE, LOG_COLUMNS

    if standard_dir is None:
        return None
    standard_dir = Path(standard_dir)
    index = standard_dir / "checkpoints" / INDEX_FILE
    if not index.exists():
        return None
    with open(index) as fh:
        if epoch not in json.load(fh)["epochs"]:
            return None
    log = pd.read_parquet(standard_dir / "train_log.parquet")
    log = log[log.epoch <= epoch][LOG_COLUMNS]
    if list(log.epoch) != list(range(epoch + 1)):
        return None
    return standard_dir / "checkpoints" / f"epoch_{epoch}.pt", log


def intervene_run(config: dict, run: Run, arrays, labels, out_dir: str | Path, *,
                  standard_dir: str | Path | None = None,
                  after_epoch: Callable[[int], None] | None = None):
    """Train ``run`` (an intervention variant) into ``out_dir``: E epochs, the edit, N more epochs.

    Returns a :class:`pipeline.train.TrainResult`.
    """
    from pipeline.transfer.editing import cpu_threads

    with cpu_threads(config):
        return _intervene_run(config, run, arrays, labels, out_dir, standard_dir=standard_dir,
                              after_epoch=after_epoch)


def _intervene_run(config, run, arrays, labels, out_dir, *, standard_dir, after_epoch):
    import pandas as pd
    import torch

    from pipeline.transfer.editing import edit_classifier, fit_class_vectors, layer_activations
    from pipeline.io import atomic_path, write_json, write_parquet
    from pipeline.train import (INDEX_FILE, LOG_COLUMNS, RESUME_FILE, TrainResult, build_run_model,
                                evaluate, hyperparameters, input_transform, load_checkpoint,
                                make_optimizer, resolve_device, save_checkpoint, train_one_epoch)

    icfg, tcfg = config["transfer"]["intervention"], config["train"]
    if run.variant != intervention_variant(icfg):
        raise ValueError(f"run variant {run.variant!r} does not match transfer.intervention "
                         f"(expected {intervention_variant(icfg)!r})")
    edit_epoch, last_epoch = int(icfg["epoch"]), int(icfg["epoch"]) + int(icfg["extra_epochs"])
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(tcfg["device"])
    hp = hyperparameters(config, run.model, run.dataset)
    schedule = intervention_schedule(config, run.model)
    transform = input_transform(arrays, run.model)

    torch.manual_seed(run.seed)  # as train_run: the initialization is a function of the seed only
    model = build_run_model(run, arrays, dropout=tcfg["dropout"]).to(device)
    optimizer = make_optimizer(model, hp)
    x_train = torch.from_numpy(arrays.x_train)
    x_test = torch.from_numpy(arrays.x_test)
    y = torch.from_numpy(labels.corrupted)
    if device.type == "cuda":
        x_train, x_test, y = x_train.to(device), x_test.to(device), y.to(device)

    def eval_row(epoch: int, loss: float, seconds: float) -> dict:
        return {"epoch": epoch, "loss": loss,
                **evaluate(model, arrays, labels, transform, device, x_train, x_test),
                "lr": hp["lr"], "seconds": seconds}

    resume_path = out_dir / RESUME_FILE
    info: dict = {"epoch": edit_epoch, "extra_epochs": int(icfg["extra_epochs"]),
                  "reset_optimizer": bool(icfg["reset_optimizer"]), "sign": icfg["sign"],
                  "fit_labels": "corrupted", "bias": "zero"}
    rows: list[dict] = []
    saved: list[int] = []
    epoch = 0
    if resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rows, saved, epoch = state["rows"], state["saved"], state["epoch"]
        info = json.loads(state["info"])
        print(f"resuming {run.path} from epoch {epoch}", flush=True)
    else:
        branch = _standard_branch(standard_dir, edit_epoch) if icfg["reset_optimizer"] else None
        if branch is not None:
            load_checkpoint(branch[0], model)
            model.to(device)
            rows = branch[1].to_dict("records")
            epoch = edit_epoch
            info["branched_from"] = str(branch[0])
        else:
            rows.append(eval_row(0, math.nan, 0.0))
            info["branched_from"] = None

    def save_state(epoch: int) -> None:
        with atomic_path(resume_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rows": rows,
                        "saved": saved, "epoch": epoch, "info": json.dumps(info)}, tmp)
        if after_epoch is not None:
            after_epoch(epoch)

    def train_epoch(epoch: int) -> float:
        return train_one_epoch(model, optimizer, x_train, y, transform, batch_size=hp["batch_size"],
                               seed=run.seed, epoch=epoch, device=device)

    # epochs 1..E: standard training (skipped when branched from the standard run or resumed past it)
    while epoch < edit_epoch:
        epoch += 1
        t0 = time.perf_counter()
        loss = train_epoch(epoch)
        rows.append(eval_row(epoch, loss, time.perf_counter() - t0))
        save_state(epoch)

    if "pre_edit" not in info:  # the edit, at the end of epoch E
        save_checkpoint(model, ckpt_dir / PRE_EDIT_FILE.format(epoch=edit_epoch))
        info["pre_edit"] = {k: rows[-1][k] for k in ("train_acc_corrupted", "train_acc_true", "test_acc")}
        t0 = time.perf_counter()
        features = layer_activations(model, x_train, transform, model.last_probe_layer)
        probe = fit_class_vectors(features, labels.corrupted, sign=icfg["sign"])
        edit_classifier(model, probe, bias="zero")
        if icfg["reset_optimizer"]:
            optimizer = make_optimizer(model, hp)
        post = eval_row(edit_epoch, rows[-1]["loss"], rows[-1]["seconds"] + time.perf_counter() - t0)
        rows[-1] = post
        info["post_edit"] = {k: post[k] for k in ("train_acc_corrupted", "train_acc_true", "test_acc")}
        save_checkpoint(model, ckpt_dir / f"epoch_{edit_epoch}.pt")
        saved.append(edit_epoch)
        save_state(edit_epoch)
        print(f"{run.path}: edit at epoch {edit_epoch}: test acc {info['pre_edit']['test_acc']:.3f} -> "
              f"{info['post_edit']['test_acc']:.3f}", flush=True)

    # epochs E+1..E+N: standard training on the corrupted labels, no stopping criterion
    while epoch < last_epoch:
        epoch += 1
        t0 = time.perf_counter()
        loss = train_epoch(epoch)
        rows.append(eval_row(epoch, loss, time.perf_counter() - t0))
        if epoch in schedule:
            save_checkpoint(model, ckpt_dir / f"epoch_{epoch}.pt")
            saved.append(epoch)
        save_state(epoch)

    log = pd.DataFrame(rows, columns=LOG_COLUMNS)
    for position, (key, value) in enumerate(run.keys().items()):
        log.insert(position, key, value)
    meta = provenance(config, sections=("data", "train"), run=run.keys(), hyperparameters=hp,
                      stop_reason="fixed_epochs", intervention=info,
                      transfer=json.dumps({"intervention": icfg}, sort_keys=True))
    write_parquet(log, out_dir / "train_log.parquet", meta)
    write_json(ckpt_dir / INDEX_FILE, {"epochs": sorted(saved), "final_epoch": last_epoch,
                                       "stop_reason": "fixed_epochs", "hyperparameters": hp,
                                       "run": run.keys(), "intervention": info})
    resume_path.unlink(missing_ok=True)
    return TrainResult(sorted(saved), last_epoch, "fixed_epochs", log)

