# Feature dynamics across checkpoints (issue 9; src/pipeline/dynamics/, README "Feature dynamics"):
# per standard run, one job for the composite grid (composites, controls, point-wise consistency,
# 2-D trajectories) and one for one-step SGD noise, each reading the run's checkpoints through
# RunRuntime; one job gathering each family of per-run tables into results/tables/; one figures job
# per (dataset, model) pair; the freeze / reinit ablations as run variants. Nothing unless
# dynamics.enabled.
#   snakemake --cores 2 dynamics          only this family (and the runs it needs)
from pipeline.workflow import (
    ABLATION_PATTERN,
    DYNAMICS_PLOT_DIR,
    DYNAMICS_RUN_FILES,
    DYNAMICS_TABLES,
    ablation_runs,
    dynamics_figures,
    dynamics_pairs,
    dynamics_runs,
    dynamics_targets,
    standard_run_dir,
)

workflow.localrules(
    "dynamics", "dynamics_tables", "dynamics_sgd_table", "dynamics_ablation_table"
)


rule dynamics:
    input:
        dynamics_targets(config),


rule dynamics_composite:
    input:
        index=run_file("checkpoints/index.json"),
        labels=run_file("labels.npz"),
    output:
        composite=run_file(DYNAMICS_RUN_FILES["composite"]),
        pointwise=run_file(DYNAMICS_RUN_FILES["pointwise"]),
        trajectories=run_file(DYNAMICS_RUN_FILES["trajectories"]),
    log:
        run_log("dynamics_composite.log"),
    benchmark:
        run_benchmark("dynamics_composite")
    wildcard_constraints:
        variant=BASE_VARIANT,
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        config=dynamics_section("sgd_noise", "ablations"),
        run=run_args,
    shell:
        "python -m pipeline dynamics-composite --threads {threads} --config-json {params.config:q} "
        "{params.run} --index {input.index} --labels {input.labels} --out {output.composite} "
        "--pointwise {output.pointwise} --trajectories {output.trajectories} > {log} 2>&1"


rule dynamics_sgd_noise:
    input:
        index=run_file("checkpoints/index.json"),
        labels=run_file("labels.npz"),
    output:
        run_file(DYNAMICS_RUN_FILES["sgd_noise"]),
    log:
        run_log("dynamics_sgd_noise.log"),
    benchmark:
        run_benchmark("dynamics_sgd_noise")
    wildcard_constraints:
        variant=BASE_VARIANT,
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        config=dynamics_section("ablations"),
        run=run_args,
    shell:
        "python -m pipeline dynamics-sgd-noise --threads {threads} --config-json {params.config:q} "
        "{params.run} --index {input.index} --labels {input.labels} --out {output} > {log} 2>&1"


# Ablation run variants freeze-<depth>-e<E> / reinit-<depth>-e<E>: branch from the standard run's
# epoch-E checkpoint (so they wait for its training), apply the hook, train extra_epochs more.
rule dynamics_ablation:
    input:
        labels=run_file("labels.npz"),
        standard=lambda w: f"{standard_run_dir(RUN_DIR, run_wildcards(w))}/checkpoints/index.json",
    output:
        index=run_file("checkpoints/index.json"),
        log=run_file("train_log.parquet"),
    log:
        run_log("dynamics_ablation.log"),
    benchmark:
        run_benchmark("dynamics_ablation")
    wildcard_constraints:
        variant=ABLATION_PATTERN,
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        config=dynamics_section("sgd_noise"),
        run=run_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.log),
        standard=lambda w: standard_run_dir(RUN_DIR, run_wildcards(w)),
    shell:
        "python -m pipeline dynamics-ablation --threads {threads} --config-json {params.config:q} "
        "{params.run} --labels {input.labels} --standard-dir {params.standard} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule dynamics_tables:
    input:
        dynamics_run_tables("composite"),
        dynamics_run_tables("pointwise"),
        dynamics_run_tables("trajectories"),
    output:
        composite=DYNAMICS_TABLES["composite"],
        pointwise=DYNAMICS_TABLES["pointwise"],
        trajectories=DYNAMICS_TABLES["trajectories"],
        welch=DYNAMICS_TABLES["welch"],
    log:
        "logs/dynamics_tables.log",
    benchmark:
        benchmark_path("dynamics_tables")
    conda:
        "../envs/pipeline.yaml"
    params:
        inputs=" ".join(dynamics_run_tables("composite")),
    shell:
        "python -m pipeline dynamics-tables --kind composite --composite {output.composite} "
        "--pointwise {output.pointwise} --trajectories {output.trajectories} --welch {output.welch} "
        "{params.inputs} > {log} 2>&1"


rule dynamics_sgd_table:
    input:
        dynamics_run_tables("sgd_noise"),
    output:
        DYNAMICS_TABLES["sgd_noise"],
    log:
        "logs/dynamics_sgd_table.log",
    benchmark:
        benchmark_path("dynamics_sgd_table")
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline dynamics-tables --kind sgd_noise --out {output} {input} > {log} 2>&1"


rule dynamics_ablation_table:
    input:
        [run_path(run, "train_log.parquet") for run in DYNAMICS_ABLATION_RUNS],
    output:
        DYNAMICS_TABLES["ablations"],
    log:
        "logs/dynamics_ablation_table.log",
    benchmark:
        benchmark_path("dynamics_ablation_table")
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline dynamics-tables --kind ablations --out {output} {input} > {log} 2>&1"


# One figures job per (dataset, model) pair; the figures read the aggregated tables only.
for _dyn_dataset, _dyn_model in dynamics_pairs(config):
    _dyn_figures = dynamics_figures(config, _dyn_model)
    _dyn_sgd = DYNAMICS["sgd_noise"]["enabled"]

    rule:
        name:
            f"dynamics_figures_{_dyn_dataset}_{_dyn_model}"
        input:
            composite=DYNAMICS_TABLES["composite"],
            pointwise=DYNAMICS_TABLES["pointwise"],
            trajectories=DYNAMICS_TABLES["trajectories"],
            sgd_noise=[DYNAMICS_TABLES["sgd_noise"]] if _dyn_sgd else [],
        output:
            [
                f"{DYNAMICS_PLOT_DIR}/{_dyn_dataset}/{_dyn_model}/{name}.{PLOT_FORMAT}"
                for name in _dyn_figures
            ],
        log:
            f"logs/dynamics_figures/{_dyn_dataset}/{_dyn_model}.log",
        benchmark:
            f"{BENCHMARK_DIR}/dynamics_figures/dataset={_dyn_dataset}/model={_dyn_model}.tsv"
        conda:
            "../envs/pipeline.yaml"
        params:
            figures=" ".join(_dyn_figures),
            pair=f"--dataset {_dyn_dataset} --model {_dyn_model}",
            sgd=f"--sgd-noise {DYNAMICS_TABLES['sgd_noise']}" if _dyn_sgd else "",
            depth=(
                f"--depth {DYNAMICS['figure_depth']}"
                if DYNAMICS["figure_depth"]
                else ""
            ),
            dpi=config["plots"]["dpi"],
        shell:
            "python -m pipeline dynamics-figures --figure {params.figures} --outputs {output} "
            "{params.pair} --composite {input.composite} --pointwise {input.pointwise} "
            "--trajectories {input.trajectories} {params.sgd} {params.depth} --dpi {params.dpi} "
            "> {log} 2>&1"
