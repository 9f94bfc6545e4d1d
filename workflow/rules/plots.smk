rule plot:
    input:
        table="results/tables/probes.parquet",
        train_log="results/tables/train_log.parquet",
    output:
        "results/plots/{dataset}/{model}/{figure}.{fmt}",
    wildcard_constraints:
        figure="|".join(FIGURES),
        fmt="png|pdf|svg",
    params:
        dpi=config["plots"]["dpi"],
    log:
        "logs/plots/{dataset}/{model}/{figure}_{fmt}.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline plot --figure {wildcards.figure} --table {input.table} "
        "--train-log {input.train_log} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--dpi {params.dpi} --out {output} > {log} 2>&1"
