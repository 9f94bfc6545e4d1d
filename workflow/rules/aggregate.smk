rule aggregate_probes:
    input:
        all_probe_tables,
    output:
        "results/tables/probes.parquet",
    log:
        "logs/aggregate_probes.log",
    benchmark:
        benchmark_path("aggregate_probes")
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
    benchmark:
        benchmark_path("aggregate_train_logs")
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline aggregate --no-check-schema --out {output} {input} > {log} 2>&1"


# What each job cost (pipeline.costs): every job's Snakemake benchmark file under
# results/benchmarks/ in one table. It runs last (after every other target of the default run: the
# tables and figures of every family), so it sees every job of this invocation; jobs of earlier
# invocations keep their (older) files.
rule aggregate_benchmarks:
    input:
        before_costs,
    output:
        BENCHMARK_TABLE,
    log:
        "logs/aggregate_benchmarks.log",
    benchmark:
        benchmark_path("aggregate_benchmarks")
    conda:
        "../envs/pipeline.yaml"
    params:
        root=BENCHMARK_DIR,
    shell:
        "python -m pipeline aggregate --benchmarks --out {output} {params.root} > {log} 2>&1"
