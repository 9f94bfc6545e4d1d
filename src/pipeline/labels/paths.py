"""Where the labels family writes, and which runs it reads: torch-free (the Snakefile imports it).

Per run (under the run folder ``results/runs/<dataset>/<model>/c<p>/s<seed>/<variant>/``):
``labels/detect_epoch_<E>.parquet`` and ``labels/scores_epoch_<E>.parquet`` (one per probed epoch),
``labels/network_*`` (cleanlab's network route), ``labels/detection.parquet`` (the run's epochs
gathered), ``labels/suspects.csv``, ``labels/repair.parquet`` / ``.json``. Across runs:
``results/tables/labels_detection.parquet``, ``results/tables/labels_repair.parquet`` and the
figures under ``results/plots/labels/<dataset>/<model>/``.
"""

from __future__ import annotations

from pipeline.core.config import BASE_VARIANT, Run, corruption_chosen, format_corruption

#: per-run outputs of workflow/rules/labels.smk, under the run folder
LABELS_RUN_FILES = {"detect": "labels/detect_epoch_{epoch}.parquet",
                    "scores": "labels/scores_epoch_{epoch}.parquet",
                    "network_detect": "labels/network_detect.parquet",
                    "network_scores": "labels/network_scores.parquet",
                    "network_details": "labels/network.json",
                    "detection": "labels/detection.parquet",
                    "suspects": "labels/suspects.csv",
                    "repair": "labels/repair.parquet",
                    "repair_details": "labels/repair.json",
                    # one retraining of the repair (repair_retrains), gathered into repair.parquet
                    "repair_part": "labels/repair/{retrain}.parquet",
                    "repair_part_details": "labels/repair/{retrain}.json"}

#: the tables across runs
LABELS_TABLES = {"detection": "results/tables/labels_detection.parquet",
                 "repair": "results/tables/labels_repair.parquet"}

LABELS_PLOT_DIR = "results/plots/labels"
#: figures of every (dataset, model) pair of labels.pairs
LABELS_FIGURES = ("pr_curves", "detection_epochs")
#: the repair figure of every pair with a repaired run (labels.repair)
LABELS_REPAIR_FIGURE = "repair"


def labels_pairs(config: dict) -> list[tuple[str, str]]:
    section = config.get("labels", {})
    if not section.get("enabled"):
        return []
    return [(d, m) for d, m in section.get("pairs", [])]


def _corruptions(config: dict, chosen) -> list[float]:
    grid = [float(c) for c in config["corruptions"]]
    return [c for c in grid if corruption_chosen(c, chosen)]


def labels_runs(config: dict) -> list[Run]:
    """The standard runs whose labels are judged: every seed of each pair in labels.pairs, at the
    corruption degrees of labels.corruptions (null: all of the grid's)."""
    corruptions = _corruptions(config, config.get("labels", {}).get("corruptions"))
    return [Run(dataset, model, c, seed, BASE_VARIANT) for dataset, model in labels_pairs(config)
            for c in corruptions for seed in config["seeds"]]


def repair_runs(config: dict) -> list[Run]:
    """The runs retrained after repair (labels.repair.enabled): those of labels.repair.corruptions
    among :func:`labels_runs` (null: all of them)."""
    repair = config.get("labels", {}).get("repair", {})
    if not repair.get("enabled"):
        return []
    chosen = repair.get("corruptions")
    return [run for run in labels_runs(config)
            if corruption_chosen(run.corruption, chosen)]


#: the repair's baselines: the given labels (read from the run's log) and the true labels
REPAIR_BASELINES = ("given", "true")
#: the two detectors the repair chooses (pipeline.labels.repair.choose_detectors), and its modes
REPAIR_KINDS = ("probe", "cleanlab")
REPAIR_MODES = ("relabel", "remove")


def retrain_ids(kinds, modes) -> list[str]:
    """The names of a repair's retrainings, in the repair table's order: ``given``, ``true``, then
    ``<kind>_<mode>`` per chosen detector and mode (``probe_relabel``, ..., ``cleanlab_remove``)."""
    return [*REPAIR_BASELINES, *(f"{kind}_{mode}" for kind in kinds for mode in modes)]


def repair_retrains(config: dict) -> list[str]:
    """The retrainings (one job each) of every repaired run under ``config``: a detector kind only
    where the labels section runs one (probe detectors listed; cleanlab on a layer or the network)."""
    section = config.get("labels", {})
    cleanlab = section.get("cleanlab", {})
    kinds = [kind for kind, on in (("probe", bool(section.get("detectors"))),
                                   ("cleanlab", bool(cleanlab.get("layer") or cleanlab.get("network")))) if on]
    return retrain_ids(kinds, section.get("repair", {}).get("modes", REPAIR_MODES))


def suspects_figure(run: Run, fmt: str = "png") -> str:
    return (f"{LABELS_PLOT_DIR}/{run.dataset}/{run.model}/"
            f"suspects_c{format_corruption(run.corruption)}_s{run.seed}_{run.variant}.{fmt}")


def labels_figures(config: dict, fmt: str | None = None) -> list[str]:
    fmt = fmt or config.get("plots", {}).get("format", "png")
    return [f"{LABELS_PLOT_DIR}/{d}/{m}/{name}.{fmt}" for d, m in labels_pairs(config) for name in LABELS_FIGURES]


def labels_targets(config: dict, results: str = "results") -> list[str]:
    """What `all` (and the `labels` target) asks for; nothing unless labels.enabled."""
    runs = labels_runs(config)
    if not runs:
        return []
    fmt = config.get("plots", {}).get("format", "png")
    targets = [LABELS_TABLES["detection"], *labels_figures(config, fmt)]
    targets += [f"{results}/{run.path}/{LABELS_RUN_FILES['suspects']}" for run in runs]
    targets += [suspects_figure(run, fmt) for run in runs]
    repaired = repair_runs(config)
    if repaired:
        targets.append(LABELS_TABLES["repair"])
        targets += sorted({f"{LABELS_PLOT_DIR}/{run.dataset}/{run.model}/{LABELS_REPAIR_FIGURE}.{fmt}"
                           for run in repaired})
    return targets
