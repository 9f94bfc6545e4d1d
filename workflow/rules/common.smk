# Shared helpers: config validation, the run grid, paths and per-stage config sections.
import json
import os

from pipeline.workflow import (
    BASE_VARIANT,
    BENCHMARK_DIR,
    CHECKED_BY_WORKFLOW,
    BENCHMARK_TABLE,
    FIGURES,
    LOCAL_RULES,
    LOG_DIR,
    RUN_DIR,
    ConfigError,
    Run,
    all_runs,
    benchmark_path,
    figures_for,
    fused_enabled,
    is_intervention,
    pairs,
    probe_blocks,
    probe_layer_split,
    probe_resources,
    probed_epochs,
    read_index,
    transfer_tables,
    validate_config,
)

# Validate before any job is scheduled, once per DAG build: one message naming the key and the
# allowed values. validate_config checks the schema (workflow/schemas/config.schema.yaml) and fills
# in its defaults, then the checks across sections, so snakemake.utils.validate would only repeat
# the schema half.
try:
    config = validate_config(config)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None

# ... so each job (`python -m pipeline <stage>`, given sections of this config) checks its schema
# only, not the cross-section checks again (pipeline.__main__.CHECKED_BY_WORKFLOW). Bash's
# strict mode stays Snakemake's default prefix.
shell.prefix(f"set -euo pipefail; export {CHECKED_BY_WORKFLOW}=1; ")


# Job priorities (Snakemake runs the ready job of highest priority first): the image runs' long
# chains (labels -> training -> extraction -> probes / detection -> the repair's retrainings) start
# before the independent jobs (the arithmetic cells, the dynamics), which then fill the cores while
# the chains wait on each other, instead of leaving one core idle behind the last chain at the end.
CHAIN_START = 10  # corrupt_labels, train, intervene, labels_repair_retrain
CHAIN = 5  # extract_activations, probe_checkpoint, labels_detect


# Standard runs, then the intervened runs of transfer.intervention (workflow/rules/intervene.smk).
RUNS = all_runs(config)


def run_file(name):
    """Path of a run artifact, with the run wildcards left open."""
    return f"{RUN_DIR}/{name}"


def run_log(name):
    return f"{LOG_DIR}/{name}"


def run_benchmark(rule, *extra):
    """The job's Snakemake benchmark file (pipeline.costs): run wildcards, then ``extra``."""
    return benchmark_path(rule, RUN_WILDCARDS + extra)


def section(*keys):
    """Config sections as JSON, for params: a change in them (and only them) triggers a rerun."""
    return json.dumps({k: config[k] for k in keys}, sort_keys=True)


def transfer_section(name, *keys):
    """Like section(*keys), plus transfer.<name> only (not the other transfer experiments)."""
    return json.dumps(
        {**{k: config[k] for k in keys}, "transfer": {name: config["transfer"][name]}},
        sort_keys=True,
    )


def run_args(wildcards):
    return (
        f"--dataset {wildcards.dataset} --model {wildcards.model} "
        f"--corruption {wildcards.corruption} --seed {wildcards.seed} --variant {wildcards.variant}"
    )


def run_path(run, name):
    return f"results/{run.path}/{name}"


def run_index(wildcards):
    """The run's checkpoints/index.json: an output of the `train` checkpoint (standard runs) or of
    the `intervene` checkpoint (variant intervene-e{E}, workflow/rules/intervene.smk).
    """
    run = run_wildcards(wildcards)
    trainer = (
        checkpoints.intervene if is_intervention(run["variant"]) else checkpoints.train
    )
    return trainer.get(**run).output.index


def checkpoint_epochs(wildcards):
    """Epochs with a saved checkpoint; known once the run's training job has finished."""
    # the one reader: a truncated or foreign index.json is named, with how to retrain its run
    return read_index(run_index(wildcards))["epochs"]


RUN_WILDCARDS = ("dataset", "model", "corruption", "seed", "variant")


def run_wildcards(wildcards):
    """Only the run's wildcards (drops e.g. epoch or block), as a dict."""
    get = (
        wildcards.get
        if isinstance(wildcards, dict)
        else lambda k: getattr(wildcards, k)
    )
    return {k: get(k) for k in RUN_WILDCARDS}


def probe_epochs(wildcards):
    """Checkpoint epochs that are extracted and probed (config `storage.epochs`/`storage.every`)."""
    return probed_epochs(checkpoint_epochs(run_wildcards(wildcards)), config)


def checkpoint_tables(model):
    """Per-checkpoint probe tables of a model: the staged one (extract + probe_checkpoint) for its
    stored probe layers, the fused one (probe_fused, `storage.fused`) for its fused layers.
    """
    staged, fused = probe_layer_split(config, model)
    return [run_file("probes/epoch_{epoch}.parquet")] * bool(staged) + [
        run_file("probes/epoch_{epoch}_fused.parquet")
    ] * bool(fused)


def run_probe_tables(wildcards):
    return expand(
        checkpoint_tables(wildcards.model),
        epoch=probe_epochs(wildcards),
        **run_wildcards(wildcards),
    )


def block_probe_tables(wildcards):
    """Per-checkpoint probe tables of one probe block (`cluster.probe_block_epochs`)."""
    epochs = probe_blocks(probe_epochs(wildcards), config).get(int(wildcards.block), [])
    return expand(
        checkpoint_tables(wildcards.model),
        epoch=epochs,
        **run_wildcards(wildcards),
    )


def run_block_tables(wildcards):
    blocks = probe_blocks(probe_epochs(wildcards), config)
    return expand(
        run_file("probes/block_{block}.parquet"),
        block=list(blocks),
        **run_wildcards(wildcards),
    )


def all_probe_tables(wildcards):
    # One table per run, each depending only on its own training checkpoint: a run's probe jobs
    # enter the DAG as soon as that run has trained, whatever the other runs are doing.
    # The transfer experiments' tables (edit.smk, relabel.smk) join them when enabled.
    return [run_path(run, "probes.parquet") for run in RUNS] + transfer_tables(
        config, RUNS
    )


PERSIST = config["storage"]["persist"]


def activation_file(name):
    """Activation output: temporary (deleted once its consumers ran) unless
    `storage.keep_activations` with `storage.persist: activations`."""
    path = run_file(name)
    keep = config["storage"]["keep_activations"] and PERSIST == "activations"
    return path if keep else temp(path)


def probe_input(epoch_wildcard="{epoch}"):
    """What the probe stages read: the activation file, or its reduced copy with per-class
    statistics (`storage.persist: moments|auto`, workflow/rules/activations.smk)."""
    folder = "activations" if PERSIST == "activations" else "reduced"
    return run_file(f"{folder}/epoch_{epoch_wildcard}.h5")


FUSED = fused_enabled(config)
# probe_checkpoint, probe_fused, probe_block: the GPU partition and a GPU when probes.device is
# cuda/auto (pipeline.workflow.probe_resources), else the profile's CPU default
PROBE_RESOURCES = probe_resources(config)


def extract_section(wildcards):
    """The extraction's config: with `storage.fused`, `activations.layers` narrowed to the model's
    stored (not fused) layers; without, exactly section(...) as always (no rerun)."""
    if not FUSED:
        return section("data", "train", "activations")
    staged = stored_layers_of(wildcards.model)
    return json.dumps(
        {
            "data": config["data"],
            "train": config["train"],
            "activations": {**config["activations"], "layers": staged},
        },
        sort_keys=True,
    )


def stored_layers_of(model):
    from pipeline.workflow import stored_layers

    return stored_layers(config, model)


def probe_section(wildcards):
    """The staged probe job's config: with `storage.fused`, `probes.layers` = the model's staged
    probe layers (the activation file holds only those)."""
    if not FUSED:
        return section("probes")
    staged, _ = probe_layer_split(config, wildcards.model)
    return json.dumps(
        {"probes": {**config["probes"], "layers": staged}}, sort_keys=True
    )


def fused_section(wildcards):
    """probe_fused's config: data, train, activations and probes, with `probes.layers` = the
    model's fused probe layers."""
    _, fused = probe_layer_split(config, wildcards.model)
    return json.dumps(
        {
            "data": config["data"],
            "train": config["train"],
            "activations": config["activations"],
            "storage": {"fused": config["storage"]["fused"]},
            "probes": {**config["probes"], "layers": fused},
        },
        sort_keys=True,
    )


def fused_flags(wildcards):
    """--no-model-rows when the model also has a staged table (which carries the model's rows)."""
    staged, _ = probe_layer_split(config, wildcards.model)
    return "--no-model-rows" if staged else ""


# Cheap bookkeeping runs on the submitting host under the SLURM profile (no allocation).
workflow.localrules(*LOCAL_RULES)


def all_train_logs(wildcards):
    return [run_path(run, "train_log.parquet") for run in RUNS]


def table_contents():
    """What the results table will hold: probe names and the transfer experiments enabled."""
    available = {entry["name"] for entry in config["probes"]["settings"]}
    for name, settings in config.get("transfer", {}).items():
        if isinstance(settings, dict) and settings.get("enabled"):
            available.add(name)
    return available


FIGURES_PER_PAIR = figures_for(table_contents())
PLOT_FORMAT = config["plots"]["format"]


def collapse(targets):
    """A flat list of the paths in nested lists of targets (as Snakemake's input takes them)."""
    if isinstance(targets, str):
        return [targets]
    return [path for item in targets for path in collapse(item)]


def before_costs(wildcards):
    """Every other target of the default run (the Snakefile's DEFAULT_TARGETS, read when the DAG is
    built): every family's jobs finish before their costs are gathered (aggregate_benchmarks).
    """
    return [t for t in collapse(DEFAULT_TARGETS) if t != BENCHMARK_TABLE]


def all_plots():
    return [
        f"results/plots/{dataset}/{model}/{figure}.{PLOT_FORMAT}"
        for dataset, model in pairs(config)
        for figure in FIGURES_PER_PAIR
    ]


# Feature dynamics (workflow/rules/dynamics.smk): its runs and the config its jobs depend on.
from pipeline.workflow import DYNAMICS_RUN_FILES, ablation_runs, dynamics_runs

DYNAMICS = config["dynamics"]
DYNAMICS_RUNS = dynamics_runs(config)
DYNAMICS_ABLATION_RUNS = ablation_runs(config)


def dynamics_section(*drop):
    """data, train and dynamics (without the subsections in ``drop``) as JSON for params: a change of
    them (and only them) reruns the job."""
    section = {k: v for k, v in DYNAMICS.items() if k not in drop}
    return json.dumps(
        {"data": config["data"], "train": config["train"], "dynamics": section},
        sort_keys=True,
    )


def dynamics_run_tables(kind):
    return [run_path(run, DYNAMICS_RUN_FILES[kind]) for run in DYNAMICS_RUNS]


# The labels family (workflow/rules/labels.smk): its runs and the inputs and config of its jobs.
from pipeline.workflow import (
    LABELS_PLOT_DIR,
    LABELS_REPAIR_FIGURE,
    LABELS_RUN_FILES,
    LABELS_TABLES,
    labels_runs,
    labels_targets,
    repair_retrains,
    repair_runs,
)

LABELS = config["labels"]


LABELS_RUNS = labels_runs(config)
# the retrainings of a repaired run, one job each (labels_repair_retrain)
REPAIR_RETRAINS = repair_retrains(config)


def labels_section(*keys):
    """The job's config as JSON, for params: the labels section narrowed to the job's own (dataset,
    model) pair (every degree: the rule's wildcards choose the run), that pair as the grid, and the
    sections ``keys``. A change of them reruns the job; a change of the grid elsewhere does not.
    """

    def params(wildcards):
        pair = [wildcards.dataset, wildcards.model]
        section = {
            **LABELS,
            "pairs": [pair],
            "corruptions": None,
            "repair": {**LABELS["repair"], "corruptions": None},
        }
        return json.dumps(
            {
                "datasets": [pair[0]],
                "models": [pair[1]],
                "labels": section,
                **{k: config[k] for k in keys},
            },
            sort_keys=True,
        )

    return params


def detect_epoch_files(kind):
    """The run's per-epoch detection (or scores) tables, one per probed epoch."""

    def files(wildcards):
        return expand(
            run_file(LABELS_RUN_FILES[kind]),
            epoch=probe_epochs(wildcards),
            **run_wildcards(wildcards),
        )

    return files


def network_files(kind):
    return [run_file(LABELS_RUN_FILES[kind])] if LABELS["cleanlab"]["network"] else []


def pair_run_files(name):
    """``name`` (a per-run file) of every labels run of the wildcards' (dataset, model) pair."""

    def files(wildcards):
        return [
            run_path(run, name)
            for run in LABELS_RUNS
            if (run.dataset, run.model) == (wildcards.dataset, wildcards.model)
        ]

    return files


def pair_score_files(wildcards):
    files = []
    for run in LABELS_RUNS:
        if (run.dataset, run.model) != (wildcards.dataset, wildcards.model):
            continue
        keys = {**run.keys(), "corruption": run.corruption_str, "seed": str(run.seed)}
        files += expand(
            run_path(run, LABELS_RUN_FILES["scores"]),
            epoch=probe_epochs(keys),
        )
        files += [
            run_path(run, LABELS_RUN_FILES[k]) for k in ("network_scores",)
        ] * bool(LABELS["cleanlab"]["network"])
    return files


def pair_repair_files(wildcards):
    return [
        run_path(run, LABELS_RUN_FILES["repair"])
        for run in repair_runs(config)
        if (run.dataset, run.model) == (wildcards.dataset, wildcards.model)
    ]


def pair_relabel_files(wildcards):
    """The images family's relabel-and-retrain tables of the repaired runs, where it runs."""
    if not config["transfer"]["relabel_retrain"]["enabled"]:
        return []
    return [
        run_path(run, f"relabel/{protocol}.parquet")
        for run in repair_runs(config)
        if (run.dataset, run.model) == (wildcards.dataset, wildcards.model)
        for protocol in config["transfer"]["relabel_retrain"]["protocols"]
    ]
