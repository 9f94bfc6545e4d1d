rule corrupt_labels:
    output:
        run_file("labels.npz"),
    log:
        run_log("labels.log"),
    benchmark:
        run_benchmark("corrupt_labels")
    priority: CHAIN_START
    conda:
        "../envs/pipeline.yaml"
    params:
        config=section("data"),
        run=run_args,
    shell:
        "python -m pipeline labels --config-json {params.config:q} {params.run} --out {output} > {log} 2>&1"
