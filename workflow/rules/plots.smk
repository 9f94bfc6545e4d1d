# One job draws every figure of a (dataset, model) pair: the figures read the same two aggregated
# tables and change only with them, so one job per figure cached nothing more and started Python,
# pandas and matplotlib once per figure. Every figure is in the report (`snakemake --report
# report.html`, workflow/rules/report.smk) with its caption workflow/report/images/<figure>.rst.
rule plots:
    input:
        table="results/tables/probes.parquet",
        train_log="results/tables/train_log.parquet",
    output:
        [
            report(
                f"results/plots/{{dataset}}/{{model}}/{figure}.{PLOT_FORMAT}",
                caption=f"../report/images/{figure}.rst",
                category="Images",
                subcategory="{dataset} / {model}",
            )
            for figure in FIGURES_PER_PAIR
        ],
    log:
        "logs/plots/{dataset}/{model}.log",
    benchmark:
        benchmark_path("plots", ["dataset", "model"])
    conda:
        "../envs/pipeline.yaml"
    params:
        dpi=config["plots"]["dpi"],
        figures=" ".join(FIGURES_PER_PAIR),
    shell:
        "python -m pipeline plot --figure {params.figures} --table {input.table} "
        "--train-log {input.train_log} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--dpi {params.dpi} --out {output} > {log} 2>&1"
