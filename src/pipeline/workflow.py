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

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.config import (  # noqa: F401 (re-exported for the rule files)
    CHECKED_BY_WORKFLOW,
    read_config_file,
    validate_config,
)
from pipeline.core.artifacts import read_index
from pipeline.core.config import (  # noqa: F401 (re-exported for the rule files)
    BASE_VARIANT,
    RUN_PATH,
    ConfigError,
    Run,
    corruption_chosen,
    iter_runs,
    pairs,
)
from pipeline.core.schedule import probe_blocks, probed_epochs  # noqa: F401 (re-exported for the rule files)
from pipeline.dynamics.paths import (  # noqa: F401 (re-exported for the rule files)
    DYNAMICS_CORRUPTION_FIGURES,
    DYNAMICS_FIGURES,
    DYNAMICS_PLOT_DIR,
    DYNAMICS_RUN_FILES,
    DYNAMICS_TABLES,
)
from pipeline.images.layers import (  # noqa: F401 (re-exported for the rule files)
    check_fused,
    fused_enabled,
    fused_layers,
    probe_layer_split,
    probed_layers,
    stored_layers,
)
from pipeline.images.variants import (  # noqa: F401 (re-exported for the rule files)
    INTERVENTION_PATTERN,
    RELABEL_PROTOCOLS,
    intervention_variant,
    is_intervention,
)
from pipeline.labels.paths import (  # noqa: F401 (re-exported for the rule files)
    LABELS_PLOT_DIR,
    LABELS_REPAIR_FIGURE,
    LABELS_RUN_FILES,
    LABELS_TABLES,
    labels_runs,
    labels_targets,
    repair_retrains,
    repair_runs,
)

#: A run's folder, with the run wildcards open; the one template (``pipeline.core.config.RUN_PATH``).
RUN_DIR = f"results/{RUN_PATH}"
LOG_DIR = "logs/" + RUN_PATH.removeprefix("runs/")
RUN_WILDCARDS = ("dataset", "model", "corruption", "seed", "variant")


#: Rules that run on the submitting host under the SLURM profile (cheap bookkeeping).
LOCAL_RULES = ("all", "corrupt_labels", "run_probe_table", "aggregate_probes",
               "aggregate_train_logs", "plots", "aggregate_benchmarks",
               "labels", "labels_run_detection", "labels_detection_table", "labels_repair",
               "labels_repair_table")
#: Rules that need a GPU on a cluster (training, extraction, and the transfer experiments).
GPU_RULES = ("train", "extract_activations", "intervene", "edit_model", "relabel_retrain",
             "labels_cleanlab_network", "labels_repair_retrain")


# ----------------------------------------------------------------------------- run layout


def run_wildcards(wildcards) -> dict:
    """Only the run's wildcards (drops e.g. epoch or block), as a dict."""
    get = wildcards.get if isinstance(wildcards, dict) else lambda k: getattr(wildcards, k)
    return {k: get(k) for k in RUN_WILDCARDS}


def all_runs(config: dict) -> list[Run]:
    """Standard runs, then the intervened runs of ``transfer.intervention``."""
    return list(iter_runs(config)) + intervention_runs(config)


# ----------------------------------------------------------------------------- checkpoint schedule


# ----------------------------------------------------------------------------- probed epochs


# ----------------------------------------------------------------------------- intervention runs


def intervention_runs(config: dict) -> list[Run]:
    """The intervened runs when ``transfer.intervention.enabled`` (else []): one per standard run at
    each degree of ``transfer.intervention.corruptions`` (null: every degree of the grid)."""
    icfg = config.get("transfer", {}).get("intervention", {})
    if not icfg.get("enabled"):
        return []
    return [run for run in iter_runs(config, variant=intervention_variant(icfg))
            if corruption_chosen(run.corruption, icfg.get("corruptions"))]



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


# ----------------------------------------------------------------------------- feature dynamics (issue 9)

#: models with a 2-D boundary whose feature trajectories and decision regions are drawn (Fig. 6)
TRAJECTORY_MODELS = ("bottleneck_mlp",)
#: the ablation figure's name under results/plots/dynamics/<dataset>/<model>/ (Fig. 18, App. F)
ABLATION_FIGURE = "ablations"
ABLATION_PATTERN = r"(freeze|reinit)-[A-Za-z0-9_]+-e[0-9]+|reinit-[A-Za-z0-9_]+-final|restart-e[0-9]+"


def dynamics_pairs(config: dict) -> list[tuple[str, str]]:
    """(dataset, model) pairs of the dynamics family ([] when it is off)."""

    section = config.get("dynamics", {})
    if not section.get("enabled"):
        return []
    chosen = section.get("pairs")
    return [tuple(p) for p in chosen] if chosen is not None else pairs(config)


def dynamics_runs(config: dict) -> list[Run]:
    """Standard runs analysed by the dynamics family (its pairs x corruptions x seeds)."""
    section = config.get("dynamics", {})
    corruptions = section.get("corruptions") or config["corruptions"]
    return [Run(d, m, float(c), int(s)) for d, m in dynamics_pairs(config)
            for c in corruptions for s in config["seeds"]]


def dynamics_figures(config: dict, model: str) -> list[str]:
    """Figure names drawn for a (dataset, ``model``) pair."""
    section = config.get("dynamics", {})
    names = list(DYNAMICS_FIGURES)
    if section.get("sgd_noise", {}).get("enabled"):
        names.append("eigen_spectra")
    if model in TRAJECTORY_MODELS:
        names.append("trajectories")
    if section.get("induction", {}).get("enabled", True):
        names += ["feature_pca", "induction"]  # Figs. 11, 14 (pipeline.dynamics.trajectories)
    return names


def dynamics_plots(config: dict, fmt: str | None = None) -> list[str]:
    fmt = fmt or config.get("plots", {}).get("format", "png")
    return [f"{DYNAMICS_PLOT_DIR}/{d}/{m}/{name}.{fmt}" for d, m in dynamics_pairs(config)
            for name in dynamics_figures(config, m)]


def _depth_slug(depth: str) -> str:
    return depth.replace(".", "_")


def ablation_variants(config: dict, model: str) -> list[str]:
    """Run variants of the enabled ablations for ``model`` (:mod:`pipeline.dynamics.ablation`):
    ``freeze-<depth>-e<E>`` per freeze depth, ``restart-e<E>``, ``reinit-<depth>-e<E>`` or
    ``reinit-<depth>-final`` per retained depth (dots of a depth name written as underscores)."""
    section = config.get("dynamics", {})
    abl = section.get("ablations", {})
    if not section.get("enabled") or not abl.get("enabled"):
        return []
    chosen = (abl.get("depths") or {}).get(model)
    if not chosen:
        depths = (section.get("depths") or {}).get(model)
        if not depths:
            from pipeline.dynamics.stage import default_depths  # torch: only when the config leaves it

            depths = default_depths(model)
        chosen = [depths[0]]
    reinit = abl.get("reinit") or {}
    retained = (reinit.get("depths") or {}).get(model) or chosen
    reinit_epoch = reinit.get("epoch", "final")
    reinit_at = "final" if reinit_epoch == "final" else f"e{int(reinit_epoch)}"
    out = []
    for kind in abl["kinds"]:
        if kind == "freeze":
            out += [f"freeze-{_depth_slug(d)}-e{int(abl['epoch'])}" for d in chosen]
        elif kind == "restart":
            out.append(f"restart-e{int(abl['epoch'])}")
        else:
            out += [f"reinit-{_depth_slug(d)}-{reinit_at}" for d in retained]
    return out


def ablation_runs(config: dict) -> list[Run]:
    """The ablation run variants of every analysed standard run whose corruption is among
    ``dynamics.ablations.corruptions`` (null: all)."""
    wanted = (config.get("dynamics", {}).get("ablations") or {}).get("corruptions")
    return [Run(r.dataset, r.model, r.corruption, r.seed, v) for r in dynamics_runs(config)
            if corruption_chosen(r.corruption, wanted)
            for v in ablation_variants(config, r.model)]


def ablation_pairs(config: dict) -> list[tuple[str, str]]:
    """(dataset, model) pairs with ablation runs (each gets the ablation figure)."""
    return list(dict.fromkeys((r.dataset, r.model) for r in ablation_runs(config)))


def ablation_standard_logs(config: dict, results: str = "results") -> list[str]:
    """Training logs of the standard runs the ablations branch from (the figure's baseline)."""
    runs = dict.fromkeys(Run(r.dataset, r.model, r.corruption, r.seed) for r in ablation_runs(config))
    return [f"{results}/{r.path}/train_log.parquet" for r in runs]


def ablation_plots(config: dict, fmt: str | None = None) -> list[str]:
    """The ablation figure (Fig. 18 and App. F) of every pair with ablation runs."""
    fmt = fmt or config.get("plots", {}).get("format", "png")
    return [f"{DYNAMICS_PLOT_DIR}/{d}/{m}/{ABLATION_FIGURE}.{fmt}" for d, m in ablation_pairs(config)]


def dynamics_targets(config: dict, results: str = "results") -> list[str]:
    """What `all` (and the `dynamics` target) asks for; nothing unless dynamics.enabled."""
    if not config.get("dynamics", {}).get("enabled"):
        return []
    section = config["dynamics"]
    tables = [DYNAMICS_TABLES[k] for k in ("composite", "pointwise", "trajectories", "welch")]
    if section["sgd_noise"]["enabled"]:
        tables.append(DYNAMICS_TABLES["sgd_noise"])
    if ablation_runs(config):
        tables.append(DYNAMICS_TABLES["ablations"])
    return (tables + dynamics_plots(config) + ablation_plots(config) + dynamics_corruption_outputs(config)
            + sgd_noise_outputs(config))


#: the SGD-noise figure of each pair (Figs. 8 and 15, one column per dynamics.sgd_noise.epoch) and the
#: anisotropy-consistency figure across runs (pipeline.dynamics.noise_figures)
SGD_NOISE_EPOCHS_FIGURE = "sgd_noise_epochs"
ANISOTROPY_FIGURE = "anisotropy_consistency"


def sgd_noise_epoch_figures(config: dict, fmt: str | None = None) -> list[str]:
    fmt = fmt or config.get("plots", {}).get("format", "png")
    return [f"{DYNAMICS_PLOT_DIR}/{d}/{m}/{SGD_NOISE_EPOCHS_FIGURE}.{fmt}" for d, m in dynamics_pairs(config)]


def sgd_noise_outputs(config: dict, fmt: str | None = None) -> list[str]:
    """What the anisotropy job writes (only with dynamics.sgd_noise.enabled): the anisotropy tables,
    the relation figure and each pair's SGD-noise-by-epoch figure."""
    section = config.get("dynamics", {})
    if not section.get("enabled") or not section.get("sgd_noise", {}).get("enabled"):
        return []
    fmt = fmt or config.get("plots", {}).get("format", "png")
    return [DYNAMICS_TABLES["anisotropy"], DYNAMICS_TABLES["anisotropy_correlation"],
            f"{DYNAMICS_PLOT_DIR}/{ANISOTROPY_FIGURE}.{fmt}", *sgd_noise_epoch_figures(config, fmt)]


def dynamics_corruption_outputs(config: dict, fmt: str | None = None) -> list[str]:
    """The corrupted-input tables and figures (paper Figs. 16/17, mCE): only when dynamics.splits
    has test_corrupted."""
    section = config.get("dynamics", {})
    if not section.get("enabled") or "test_corrupted" not in (section.get("splits") or []):
        return []
    fmt = fmt or config.get("plots", {}).get("format", "png")
    return [DYNAMICS_TABLES["corruption_error"], DYNAMICS_TABLES["mce"]] + [
        f"{DYNAMICS_PLOT_DIR}/{d}/{m}/{name}.{fmt}" for d, m in dynamics_pairs(config)
        for name in DYNAMICS_CORRUPTION_FIGURES]


# ----------------------------------------------------------------------------- the report (issue 17)

#: where the report's HTML views of the aggregated tables go (workflow/rules/report.smk)
REPORT_TABLE_DIR = "results/report/tables"


def report_table_views(targets: Iterable) -> dict[str, str]:
    """Aggregated table -> its HTML view in :data:`REPORT_TABLE_DIR`, for every Parquet table under
    results/tables/ among ``targets`` (the default run's; nested lists are flattened), in order."""
    def flat(items):
        for item in items:
            if isinstance(item, (list, tuple)):
                yield from flat(item)
            else:
                yield str(item)

    views: dict[str, str] = {}
    for target in flat(targets):
        path = Path(target)
        if path.suffix == ".parquet" and path.parent == Path("results/tables"):
            views[target] = f"{REPORT_TABLE_DIR}/{path.stem}.html"
    return views


# ----------------------------------------------------------------------------- fused extraction + probing (issue 11)


def probe_on_gpu(config: dict) -> bool:
    """Whether the probe jobs (probe_checkpoint, probe_fused, probe_block) ask the cluster for a
    GPU: ``probes.device`` is ``cuda[:i]`` or ``auto``."""
    device = config.get("probes", {}).get("device")
    return isinstance(device, str) and (device == "auto" or device.startswith("cuda"))


def probe_resources(config: dict) -> dict:
    """The probe rules' ``resources:``: the GPU partition and one GPU when the probes run on the
    accelerator (:func:`probe_on_gpu`), else nothing (the profile's CPU default)."""
    return {"gpu": 1, "slurm_partition": "gpu"} if probe_on_gpu(config) else {}


# ----------------------------------------------------------------------------- re-exports
# The rule files import this module only; what they need from the figure registry, the cost
# tables and the transfer experiments is named here (each of those modules is torch-free at
# import, so the Snakefile stays cheap to parse).
from pipeline.costs import BENCHMARK_DIR, BENCHMARK_TABLE, benchmark_path  # noqa: E402, F401
from pipeline.images.plots import FIGURES, figures_for  # noqa: E402, F401

# ----------------------------------------------------------------------------- damaged tables

def set_aside_damaged_tables(folder: str | Path = "results/tables") -> list[str]:
    """Rename every aggregated table in ``folder`` that is not readable Parquet to ``<name>.damaged``
    and return one line per file saying so.

    Snakemake judges an output by its modification time alone, so a truncated or garbage table
    newer than its inputs would count as up to date and every later reader would fail on it. Set
    aside (never deleted: nothing is lost), its aggregate job reruns in this very invocation.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    from pipeline.core.tables import damaged_tables  # pyarrow: only when there are tables to vet

    lines = []
    for path, problem in sorted(damaged_tables(sorted(folder.glob("*.parquet"))).items()):
        aside = Path(f"{path}.damaged")
        os.replace(path, aside)
        lines.append(f"{path} is not a readable table ({problem}); moved it to {aside} so that the job "
                     "that writes it runs again")
    return lines
