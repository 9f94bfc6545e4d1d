"""The transfer experiments in the workflow: the tables and runs they add (imports no torch).

The experiments themselves live one per module: :mod:`pipeline.editing` (weight editing, section
8), :mod:`pipeline.intervention` (intervention during training, section 9; it also lists the
intervened runs) and :mod:`pipeline.relabel` (relabel and retrain, the MASC paper). The rule files
``workflow/rules/edit.smk``, ``intervene.smk`` and ``relabel.smk`` call these path helpers, so
they hold rules only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

from pipeline.config import BASE_VARIANT, Run

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


def final_activations(run_dir: str, wildcards: Mapping[str, str], index_path: str | Path) -> str:
    """Activation file of a run's final checkpoint (``index_path``: its ``checkpoints/index.json``)."""
    with open(index_path) as fh:
        final = json.load(fh)["final_epoch"]
    return f"{run_dir.format(**dict(wildcards))}/activations/epoch_{final}.h5"
