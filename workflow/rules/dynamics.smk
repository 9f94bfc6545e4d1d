# Feature dynamics across checkpoints (issue 9; src/pipeline/dynamics/, README "Feature dynamics"):
# per standard run, one job for the composite grid (composites, controls, point-wise consistency,
# 2-D trajectories) and one for one-step SGD noise, each reading the run's checkpoints through
# RunRuntime; one job gathering each family of per-run tables into results/tables/; one figures job
# per (dataset, model) pair; the freeze / reinit ablations as run variants. Nothing unless
# dynamics.enabled.
#   snakemake --cores 2 dynamics          only this family (and the runs it needs)
from pipeline.workflow import (
    ABLATION_FIGURE,
    ABLATION_PATTERN,
    DYNAMICS_PLOT_DIR,
    DYNAMICS_RUN_FILES,
    DYNAMICS_TABLES,
    ablation_runs,
    ablation_standard_logs,
    dynamics_figures,
    dynamics_pairs,
    dynamics_runs,
    dynamics_targets,
    standard_run_dir,
)

workflow.localrules(
    "dynamics",
    "dynamics_tables",
    "dynamics_sgd_table",
    "dynamics_ablation_table",
    "dynamics_ablation_figure",
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


# Ablation run variants freeze-<depth>-e<E>, restart-e<E>, reinit-<depth>-e<E> | -final (App. F;
# pipeline.dynamics.ablation): branch from a checkpoint of the standard run (so they wait for its
# training), apply the hook, train on.
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


# The ablation runs' logs and, as the baseline, their standard runs' logs.
rule dynamics_ablation_table:
    input:
        [run_path(run, "train_log.parquet") for run in DYNAMICS_ABLATION_RUNS]
        + ablation_standard_logs(config),
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


# Fig. 18 (freezing, with the restart control) and App. F (reinitialisation), per (dataset, model).
rule dynamics_ablation_figure:
    input:
        DYNAMICS_TABLES["ablations"],
    output:
        report(
            f"{DYNAMICS_PLOT_DIR}/{{dataset}}/{{model}}/{ABLATION_FIGURE}.{PLOT_FORMAT}",
            caption=f"../report/dynamics/{ABLATION_FIGURE}.rst",
            category="Dynamics",
            subcategory="{dataset} / {model}",
        ),
    log:
        "logs/dynamics_ablation_figure/{dataset}/{model}.log",
    benchmark:
        f"{BENCHMARK_DIR}/dynamics_ablation_figure/dataset={{dataset}}/model={{model}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        dpi=config["plots"]["dpi"],
    shell:
        "python -m pipeline dynamics-ablation-figure --ablations {input} --out {output} "
        "--dataset {wildcards.dataset} --model {wildcards.model} --dpi {params.dpi} > {log} 2>&1"


# One figures job per (dataset, model) pair; the figures read the aggregated tables only.
from pipeline.dynamics.windows import figure_options

for _dyn_dataset, _dyn_model in dynamics_pairs(config):
    _dyn_figures = dynamics_figures(config, _dyn_model)
    # the figures' windows resolved (a named window that is not computed is refused here)
    _dyn_options = json.dumps(figure_options(config))
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
                report(
                    f"{DYNAMICS_PLOT_DIR}/{_dyn_dataset}/{_dyn_model}/{name}.{PLOT_FORMAT}",
                    caption=f"../report/dynamics/{name}.rst",
                    category="Dynamics",
                    subcategory=f"{_dyn_dataset} / {_dyn_model}",
                )
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
            options=_dyn_options,
        shell:
            "python -m pipeline dynamics-figures --figure {params.figures} --outputs {output} "
            "{params.pair} --composite {input.composite} --pointwise {input.pointwise} "
            "--trajectories {input.trajectories} {params.sgd} {params.depth} --dpi {params.dpi} "
            "--options-json {params.options:q} > {log} 2>&1"


# Corrupted inputs (dynamics.splits test_corrupted; paper Figs. 16/17 and App. F's mean corruption
# error): the error of every run's final network per corrupted test set and the mCE, from the
# aggregated composite table; then one figures job per (dataset, model) pair.
from pipeline.workflow import DYNAMICS_CORRUPTION_FIGURES, dynamics_corruption_outputs

if dynamics_corruption_outputs(config):
    workflow.localrules("dynamics_corruption_tables")

    rule dynamics_corruption_tables:
        input:
            DYNAMICS_TABLES["composite"],
        output:
            corruption_error=DYNAMICS_TABLES["corruption_error"],
            mce=DYNAMICS_TABLES["mce"],
        log:
            "logs/dynamics_corruption_tables.log",
        benchmark:
            benchmark_path("dynamics_corruption_tables")
        conda:
            "../envs/pipeline.yaml"
        shell:
            "python -m pipeline dynamics-corruption-tables --composite {input} "
            "--corruption-error {output.corruption_error} --mce {output.mce} > {log} 2>&1"

    for _dyn_dataset, _dyn_model in dynamics_pairs(config):
        _dyn_window = (DYNAMICS.get("figures") or {}).get("memory_window")

        rule:
            name:
                f"dynamics_corruption_figures_{_dyn_dataset}_{_dyn_model}"
            input:
                pointwise=DYNAMICS_TABLES["pointwise"],
                corruption_error=DYNAMICS_TABLES["corruption_error"],
                mce=DYNAMICS_TABLES["mce"],
            output:
                [
                    report(
                        f"{DYNAMICS_PLOT_DIR}/{_dyn_dataset}/{_dyn_model}/{name}.{PLOT_FORMAT}",
                        caption=f"../report/dynamics/{name}.rst",
                        category="Dynamics",
                        subcategory=f"{_dyn_dataset} / {_dyn_model}",
                    )
                    for name in DYNAMICS_CORRUPTION_FIGURES
                ],
            log:
                f"logs/dynamics_corruption_figures/{_dyn_dataset}/{_dyn_model}.log",
            conda:
                "../envs/pipeline.yaml"
            params:
                figures=" ".join(DYNAMICS_CORRUPTION_FIGURES),
                pair=f"--dataset {_dyn_dataset} --model {_dyn_model}",
                depth=(
                    f"--depth {DYNAMICS['figure_depth']}"
                    if DYNAMICS["figure_depth"]
                    else ""
                ),
                window=(
                    f"--window {_dyn_window[0]} {_dyn_window[1]}"
                    if _dyn_window and "final" not in _dyn_window
                    else ""
                ),
                dpi=config["plots"]["dpi"],
            shell:
                "python -m pipeline dynamics-corruption-figures --figure {params.figures} "
                "--outputs {output} {params.pair} --pointwise {input.pointwise} "
                "--corruption-error {input.corruption_error} --mce {input.mce} {params.depth} "
                "{params.window} --dpi {params.dpi} > {log} 2>&1"


# SGD noise across runs (issue 16): the anisotropy-consistency table, its correlations and figure,
# and each pair's SGD-noise-by-epoch figure (paper Figs. 8 and 15), from the aggregated tables.
from pipeline.workflow import (
    ANISOTROPY_FIGURE,
    sgd_noise_epoch_figures,
    sgd_noise_outputs,
)

if sgd_noise_outputs(config):
    workflow.localrules("dynamics_anisotropy")

    rule dynamics_anisotropy:
        input:
            sgd_noise=DYNAMICS_TABLES["sgd_noise"],
            pointwise=DYNAMICS_TABLES["pointwise"],
        output:
            table=DYNAMICS_TABLES["anisotropy"],
            correlation=DYNAMICS_TABLES["anisotropy_correlation"],
            figure=report(
                f"{DYNAMICS_PLOT_DIR}/{ANISOTROPY_FIGURE}.{PLOT_FORMAT}",
                caption=f"../report/dynamics/{ANISOTROPY_FIGURE}.rst",
                category="Dynamics",
                subcategory="across runs",
            ),
            # one per pair: results/plots/dynamics/<dataset>/<model>/sgd_noise_epochs.<format>
            epoch_figures=[
                report(
                    path,
                    caption="../report/dynamics/sgd_noise_epochs.rst",
                    category="Dynamics",
                    subcategory=" / ".join(path.split("/")[-3:-1]),
                )
                for path in sgd_noise_epoch_figures(config, PLOT_FORMAT)
            ],
        log:
            "logs/dynamics_anisotropy.log",
        benchmark:
            benchmark_path("dynamics_anisotropy")
        conda:
            "../envs/pipeline.yaml"
        params:
            pairs=" ".join(f"{d}/{m}" for d, m in dynamics_pairs(config)),
            dpi=config["plots"]["dpi"],
        shell:
            "python -m pipeline dynamics-anisotropy --sgd-noise {input.sgd_noise} "
            "--pointwise {input.pointwise} --out {output.table} --correlation {output.correlation} "
            "--figure {output.figure} --pairs {params.pairs} --epoch-figures {output.epoch_figures} "
            "--dpi {params.dpi} > {log} 2>&1"
