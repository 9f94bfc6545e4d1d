"""What the workflow's rule files need, in one torch-free module: run grid, paths, schedules, targets.

Every ``workflow/rules/*.smk`` file imports from here only (through ``common.smk``), so the
Snakemake DAG, the ``plan`` command and the stages agree by construction:

* the run grid (:func:`all_runs`: standard runs, then the intervened runs of
  ``transfer.intervention``) and the run folder layout (:data:`RUN_DIR`, :func:`checkpoint_file`);
* the checkpoint schedule a run saves (:func:`schedule_for`) and which saved checkpoints are
  extracted and probed (:func:`probed_epochs`, :func:`probe_blocks`);
* the tables and runs the transfer experiments add (:func:`transfer_tables`, intervention variants);
* the rules that run on the submitting host under the SLURM profile (:data:`LOCAL_RULES`).

Nothing here imports torch, pandas or matplotlib: the Snakefile imports it on every invocation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Mapping

from pipeline.config import BASE_VARIANT, RUN_PATH, Run, iter_runs

#: A run's folder, with the run wildcards open; the one template (``pipeline.config.RUN_PATH``).
RUN_DIR = f"results/{RUN_PATH}"
LOG_DIR = "logs/" + RUN_PATH.removeprefix("runs/")
RUN_WILDCARDS = ("dataset", "model", "corruption", "seed", "variant")

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = "epoch_{epoch}.pt"
INDEX_NAME = "index.json"     # the training job's "done" marker, written last
RESUME_NAME = "resume.pt"     # state of an interrupted training, removed when training completes

#: Rules that run on the submitting host under the SLURM profile (cheap bookkeeping).
LOCAL_RULES = ("all", "corrupt_labels", "run_probe_table", "aggregate_probes",
               "aggregate_train_logs", "plot")
#: Rules that need a GPU on a cluster (training, extraction, and the transfer experiments).
GPU_RULES = ("train", "extract_activations", "intervene", "edit_model", "relabel_retrain")


# ----------------------------------------------------------------------------- run layout

def checkpoint_file(run_dir: str | Path, epoch: int | str) -> Path:
    """``{run_dir}/checkpoints/epoch_{epoch}.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_NAME.format(epoch=epoch)


def index_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / INDEX_NAME


def read_index(path: str | Path) -> dict:
    """A run's ``checkpoints/index.json`` (epochs saved, final epoch, hyperparameters, run keys)."""
    from pipeline.errors import ArtifactError

    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"checkpoint index {path} is unreadable ({exc}); delete it and rerun the "
                            "workflow: the run's training job then runs again") from None


def run_wildcards(wildcards) -> dict:
    """Only the run's wildcards (drops e.g. epoch or block), as a dict."""
    get = wildcards.get if isinstance(wildcards, dict) else lambda k: getattr(wildcards, k)
    return {k: get(k) for k in RUN_WILDCARDS}


def all_runs(config: dict) -> list[Run]:
    """Standard runs, then the intervened runs of ``transfer.intervention``."""
    return list(iter_runs(config)) + intervention_runs(config)


# ----------------------------------------------------------------------------- checkpoint schedule

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


def late_interval(config: dict, model: str) -> int:
    """``train.checkpoints.late_every``, or the model's published interval (AlexNet 10, others 5)."""
    late = config["train"]["checkpoints"]["late_every"]
    if late:
        return int(late)
    from pipeline.models import MODELS  # torch; only when the config leaves it to the model

    return MODELS[model].late_checkpoint_interval


def schedule_for(config: dict, model: str) -> list[int]:
    ck = config["train"]["checkpoints"]
    return checkpoint_schedule(config["train"]["max_epochs"], early_every=ck["early_every"],
                               early_until=ck["early_until"], late_every=late_interval(config, model))


# ----------------------------------------------------------------------------- probed epochs

def probed_epochs(saved: Iterable[int], config: dict) -> list[int]:
    """The checkpoint epochs whose activations are extracted and probed.

    ``saved`` are the epochs a run saved (``checkpoints/index.json``). ``storage.every = k`` keeps
    every k-th of them by position, always with the first and the last; ``storage.epochs`` (a
    list) then keeps only the listed epochs.
    """
    saved = sorted(int(e) for e in saved)
    storage = config.get("storage", {})
    every = int(storage.get("every", 1) or 1)
    if every > 1 and saved:
        kept = saved[::every]
        if saved[-1] not in kept:
            kept.append(saved[-1])
        saved = kept
    wanted = storage.get("epochs")
    if wanted is not None:
        wanted = {int(e) for e in wanted}
        saved = [e for e in saved if e in wanted]
    return saved


def probe_block(epoch: int, config: dict) -> int:
    """Block of a checkpoint: epochs in the same window of ``cluster.probe_block_epochs``."""
    return int(epoch) // int(config.get("cluster", {}).get("probe_block_epochs", 50))


def probe_blocks(epochs: Iterable[int], config: dict) -> dict[int, list[int]]:
    """Epochs by block, blocks in order."""
    blocks: dict[int, list[int]] = {}
    for epoch in sorted(epochs):
        blocks.setdefault(probe_block(epoch, config), []).append(int(epoch))
    return blocks


# ----------------------------------------------------------------------------- intervention runs

INTERVENTION_PATTERN = r"intervene-e[0-9]+(-keepopt)?"


def intervention_variant(icfg: dict) -> str:
    """Run variant of the intervention configured by ``transfer.intervention``."""
    return f"intervene-e{int(icfg['epoch'])}" + ("" if icfg["reset_optimizer"] else "-keepopt")


def is_intervention(variant: str) -> bool:
    return re.fullmatch(INTERVENTION_PATTERN, variant) is not None


def intervention_runs(config: dict) -> list[Run]:
    """The intervened runs (one per standard run) when ``transfer.intervention.enabled``, else []."""
    icfg = config.get("transfer", {}).get("intervention", {})
    if not icfg.get("enabled"):
        return []
    return list(iter_runs(config, variant=intervention_variant(icfg)))


def intervention_schedule(config: dict, model: str) -> list[int]:
    """Checkpointed epochs of an intervened run: E (edited), then the schedule up to E+N, and E+N."""
    icfg, ck = config["transfer"]["intervention"], config["train"]["checkpoints"]
    first, last = int(icfg["epoch"]), int(icfg["epoch"]) + int(icfg["extra_epochs"])
    if icfg.get("checkpoint_every"):
        epochs = set(range(first, last + 1, int(icfg["checkpoint_every"])))
    else:
        epochs = set(checkpoint_schedule(last, early_every=ck["early_every"],
                                         early_until=ck["early_until"],
                                         late_every=late_interval(config, model)))
    return sorted(e for e in epochs | {first, last} if first <= e <= last)


def standard_run_dir(run_dir: str, wildcards: Mapping[str, str]) -> str:
    """The standard run's folder for the run named by ``wildcards`` (``run_dir``: the path pattern)."""
    return run_dir.format(**{**dict(wildcards), "variant": BASE_VARIANT})


def intervention_standard_log(config: dict, run_dir: str, wildcards: Mapping[str, str]) -> list[str]:
    """Input of an intervened run: the standard run's log when it may branch from it (optimizer reset)."""
    if not config["transfer"]["intervention"]["reset_optimizer"]:
        return []
    return [f"{standard_run_dir(run_dir, wildcards)}/train_log.parquet"]


def intervention_standard_arg(config: dict, run_dir: str, wildcards: Mapping[str, str]) -> str:
    if not config["transfer"]["intervention"]["reset_optimizer"]:
        return ""
    return f"--standard-dir {standard_run_dir(run_dir, wildcards)}"


# ----------------------------------------------------------------------------- transfer tables

EDIT_TABLE = "edits/edited_model.parquet"
RELABEL_TABLE = "relabel/{protocol}.parquet"


def transfer_tables(config: dict, runs: Iterable[Run], results: str = "results") -> list[str]:
    """Per-run result tables of the enabled transfer experiments (standard runs only); they join
    ``results/tables/probes.parquet``. The intervened runs' own tables are ordinary probe tables."""
    transfer = config.get("transfer", {})
    standard = [run for run in runs if run.variant == BASE_VARIANT]
    paths = []
    if transfer.get("edited_model", {}).get("enabled"):
        paths += [f"{results}/{run.path}/{EDIT_TABLE}" for run in standard]
    relabel = transfer.get("relabel_retrain", {})
    if relabel.get("enabled"):
        paths += [f"{results}/{run.path}/{RELABEL_TABLE.format(protocol=protocol)}"
                  for run in standard for protocol in relabel["protocols"]]
    return paths


def final_activations(run_dir: str, wildcards: Mapping[str, str], index_path: str | Path) -> str:
    """Activation file of a run's final checkpoint (``index_path``: its ``checkpoints/index.json``)."""
    final = read_index(index_path)["final_epoch"]
    return f"{run_dir.format(**dict(wildcards))}/activations/epoch_{final}.h5"
