# Which training labels are wrong, and what fixing them gains (issue 17; src/pipeline/labels/,
# docs/labels.md). Per run of labels.pairs (at labels.corruptions) and probed epoch, one job scores
# every training label from the epoch's activation file (cross-fitted probes and cleanlab on each
# layer); per run, cleanlab on the network's own out-of-fold probabilities (labels.cleanlab.network),
# the run's tables gathered, the ranked suspects and, at labels.repair.corruptions, retraining after
# relabeling or removing the flagged examples (one job per retraining, gathered per run); per pair,
# the figures. Nothing unless labels.enabled.
#   snakemake --cores 2 labels          only this family (and the runs it needs)


rule labels:
    input:
        labels_targets(config),


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
    priority: CHAIN
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


rule labels_repair_retrain:
    input:
        labels=run_file("labels.npz"),
        log=run_file("train_log.parquet"),
        detection=detect_epoch_files("detect"),
        scores=detect_epoch_files("scores"),
        network=network_files("network_detect"),
        network_scores=network_files("network_scores"),
    output:
        table=run_file(LABELS_RUN_FILES["repair_part"]),
        details=run_file(LABELS_RUN_FILES["repair_part_details"]),
    log:
        run_log("labels_repair_{retrain}.log"),
    benchmark:
        run_benchmark("labels_repair_retrain", "retrain")
    wildcard_constraints:
        variant=BASE_VARIANT,
        retrain="|".join(REPAIR_RETRAINS),
    priority: CHAIN_START
    conda:
        "../envs/pipeline.yaml"
    params:
        config=labels_section("data", "train"),
        run=run_args,
    shell:
        "python -m pipeline repair --config-json {params.config:q} {params.run} --labels {input.labels} "
        "--detection {input.detection} {input.network} --scores {input.scores} {input.network_scores} "
        "--log {input.log} --only {wildcards.retrain} --out {output.table} "
        "--details-out {output.details} > {log} 2>&1"


rule labels_repair:
    input:
        tables=expand(
            run_file(LABELS_RUN_FILES["repair_part"]),
            retrain=REPAIR_RETRAINS,
            allow_missing=True,
        ),
        details=expand(
            run_file(LABELS_RUN_FILES["repair_part_details"]),
            retrain=REPAIR_RETRAINS,
            allow_missing=True,
        ),
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
    shell:
        "python -m pipeline repair-gather {input.tables} --details {input.details} --out {output.table} "
        "--details-out {output.details} > {log} 2>&1"


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
