# Which training labels are wrong, and what fixing them gains (issue 17; src/pipeline/labels/,
# docs/labels.md). Per run of labels.pairs (at labels.corruptions) and probed epoch, one job scores
# every training label from the epoch's activation file (cross-fitted probes and cleanlab on each
# layer); per run, cleanlab on the network's own out-of-fold probabilities (labels.cleanlab.network),
# the run's tables gathered, the ranked suspects and, at labels.repair.corruptions, retraining after
# relabeling or removing the flagged examples; per pair, the figures. Nothing unless labels.enabled.
#   snakemake --cores 2 labels          only this family (and the runs it needs)
from pipeline.workflow import (
    LABELS_PLOT_DIR,
    LABELS_REPAIR_FIGURE,
    LABELS_RUN_FILES,
    LABELS_TABLES,
    labels_runs,
    labels_targets,
    repair_runs,
)

LABELS = config["labels"]
LABELS_RUNS = labels_runs(config)


rule labels:
    input:
        labels_targets(config),


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


rule labels_detect:
    input:
        activations=run_file("activations/epoch_{epoch}.h5"),
        labels=run_file("labels.npz"),
    output:
        table=run_file(LABELS_RUN_FILES["detect"]),
        scores=run_file(LABELS_RUN_FILES["scores"]),
    log:
        run_log("labels_detect_epoch_{epoch}.log"),
    benchmark:
        run_benchmark("labels_detect", "epoch")
    wildcard_constraints:
        variant=BASE_VARIANT,
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        config=labels_section("data", "train"),
        run=run_args,
    shell:
        "python -m pipeline detect --threads {threads} --config-json {params.config:q} {params.run} "
        "--epoch {wildcards.epoch} --activations {input.activations} --labels {input.labels} "
        "--out {output.table} --scores {output.scores} > {log} 2>&1"


rule labels_cleanlab_network:
    input:
        labels=run_file("labels.npz"),
    output:
        table=run_file(LABELS_RUN_FILES["network_detect"]),
        scores=run_file(LABELS_RUN_FILES["network_scores"]),
        details=run_file(LABELS_RUN_FILES["network_details"]),
    log:
        run_log("labels_cleanlab_network.log"),
    benchmark:
        run_benchmark("labels_cleanlab_network")
    wildcard_constraints:
        variant=BASE_VARIANT,
    conda:
        "../envs/pipeline.yaml"
    params:
        config=labels_section("data", "train"),
        run=run_args,
    shell:
        "python -m pipeline cleanlab-network --config-json {params.config:q} {params.run} "
        "--labels {input.labels} --out {output.table} --scores-out {output.scores} "
        "--details-out {output.details} > {log} 2>&1"


rule labels_run_detection:
    input:
        detect_epoch_files("detect"),
        network_files("network_detect"),
    output:
        run_file(LABELS_RUN_FILES["detection"]),
    log:
        run_log("labels_detection.log"),
    benchmark:
        run_benchmark("labels_run_detection")
    wildcard_constraints:
        variant=BASE_VARIANT,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline detection-tables --out {output} {input} > {log} 2>&1"


rule labels_suspects:
    input:
        detection=detect_epoch_files("detect"),
        scores=detect_epoch_files("scores"),
        network=network_files("network_detect"),
        network_scores=network_files("network_scores"),
        log=run_file("train_log.parquet"),
    output:
        table=run_file(LABELS_RUN_FILES["suspects"]),
        figure=report(
            f"{LABELS_PLOT_DIR}/{{dataset}}/{{model}}/suspects_c{{corruption}}_s{{seed}}_{{variant}}.{PLOT_FORMAT}",
            caption="../report/labels/suspects.rst",
            category="Labels",
            subcategory="{dataset} / {model}",
        ),
    log:
        run_log("labels_suspects.log"),
    benchmark:
        run_benchmark("labels_suspects")
    wildcard_constraints:
        variant=BASE_VARIANT,
    conda:
        "../envs/pipeline.yaml"
    params:
        config=labels_section("data", "train"),
        run=run_args,
        dpi=config["plots"]["dpi"],
    shell:
        "python -m pipeline suspects --config-json {params.config:q} {params.run} "
        "--detection {input.detection} {input.network} --scores {input.scores} {input.network_scores} "
        "--log {input.log} --out {output.table} --figure {output.figure} --dpi {params.dpi} > {log} 2>&1"


rule labels_repair:
    input:
        labels=run_file("labels.npz"),
        log=run_file("train_log.parquet"),
        detection=detect_epoch_files("detect"),
        scores=detect_epoch_files("scores"),
        network=network_files("network_detect"),
        network_scores=network_files("network_scores"),
    output:
        table=run_file(LABELS_RUN_FILES["repair"]),
        details=run_file(LABELS_RUN_FILES["repair_details"]),
    log:
        run_log("labels_repair.log"),
    benchmark:
        run_benchmark("labels_repair")
    wildcard_constraints:
        variant=BASE_VARIANT,
    conda:
        "../envs/pipeline.yaml"
    params:
        config=labels_section("data", "train"),
        run=run_args,
    shell:
        "python -m pipeline repair --config-json {params.config:q} {params.run} --labels {input.labels} "
        "--detection {input.detection} {input.network} --scores {input.scores} {input.network_scores} "
        "--log {input.log} --out {output.table} --details-out {output.details} > {log} 2>&1"


rule labels_detection_table:
    input:
        [run_path(run, LABELS_RUN_FILES["detection"]) for run in LABELS_RUNS],
    output:
        LABELS_TABLES["detection"],
    log:
        "logs/labels_detection_table.log",
    benchmark:
        benchmark_path("labels_detection_table")
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline detection-tables --out {output} {input} > {log} 2>&1"


rule labels_repair_table:
    input:
        [run_path(run, LABELS_RUN_FILES["repair"]) for run in repair_runs(config)],
    output:
        LABELS_TABLES["repair"],
    log:
        "logs/labels_repair_table.log",
    benchmark:
        benchmark_path("labels_repair_table")
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline aggregate --no-check-schema --out {output} {input} > {log} 2>&1"


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


rule labels_figures:
    input:
        detection=pair_run_files(LABELS_RUN_FILES["detection"]),
        scores=pair_score_files,
        logs=pair_run_files("train_log.parquet"),
    output:
        pr_curves=report(
            f"{LABELS_PLOT_DIR}/{{dataset}}/{{model}}/pr_curves.{PLOT_FORMAT}",
            caption="../report/labels/pr_curves.rst",
            category="Labels",
            subcategory="{dataset} / {model}",
        ),
        epochs=report(
            f"{LABELS_PLOT_DIR}/{{dataset}}/{{model}}/detection_epochs.{PLOT_FORMAT}",
            caption="../report/labels/detection_epochs.rst",
            category="Labels",
            subcategory="{dataset} / {model}",
        ),
    log:
        "logs/labels/{dataset}/{model}/figures.log",
    benchmark:
        benchmark_path("labels_figures", ("dataset", "model"))
    conda:
        "../envs/pipeline.yaml"
    params:
        dpi=config["plots"]["dpi"],
    shell:
        "python -m pipeline detection-figures --detection {input.detection} --scores {input.scores} "
        "--logs {input.logs} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--pr-curves {output.pr_curves} --epochs {output.epochs} --dpi {params.dpi} > {log} 2>&1"


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


rule labels_repair_figure:
    input:
        repair=pair_repair_files,
        relabel=pair_relabel_files,
    output:
        report(
            f"{LABELS_PLOT_DIR}/{{dataset}}/{{model}}/{LABELS_REPAIR_FIGURE}.{PLOT_FORMAT}",
            caption="../report/labels/repair.rst",
            category="Labels",
            subcategory="{dataset} / {model}",
        ),
    log:
        "logs/labels/{dataset}/{model}/repair_figure.log",
    benchmark:
        benchmark_path("labels_repair_figure", ("dataset", "model"))
    conda:
        "../envs/pipeline.yaml"
    params:
        dpi=config["plots"]["dpi"],
        relabel=lambda wildcards, input: (
            f"--relabel {' '.join(input.relabel)}" if input.relabel else ""
        ),
    shell:
        "python -m pipeline repair-figure {input.repair} --out {output} --dataset {wildcards.dataset} "
        "--model {wildcards.model} {params.relabel} --dpi {params.dpi} > {log} 2>&1"
