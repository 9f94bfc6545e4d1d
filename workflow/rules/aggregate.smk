rule aggregate_probes:
    input:
        all_probe_tables,
    output:
        "results/tables/probes.parquet",
    log:
        "logs/aggregate_probes.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline aggregate --out {output} {input} > {log} 2>&1"


rule aggregate_train_logs:
    input:
        all_train_logs,
    output:
        "results/tables/train_log.parquet",
    log:
        "logs/aggregate_train_logs.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline aggregate --no-schema-check --out {output} {input} > {log} 2>&1"
