rule corrupt_labels:
    output:
        run_file("labels.npz"),
    params:
        config=section("data"),
        run=run_args,
    log:
        run_log("labels.log"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline labels --config-json {params.config:q} {params.run} --out {output} > {log} 2>&1"
