rule corrupt_labels:
    output:
        RUN_DIR + "/labels.npz",
    params:
        config=section("data"),
        run=run_args,
    log:
        LOG_DIR + "/labels.log",
    shell:
        "python -m pipeline labels --config-json {params.config:q} {params.run} --out {output} > {log} 2>&1"
