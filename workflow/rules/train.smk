# Training is a checkpoint: how many epochs a run lasts (and so which model checkpoints exist) is
# known only once it has stopped (target training accuracy or max_epochs).
checkpoint train:
    input:
        labels=run_file("labels.npz"),
    output:
        index=run_file("checkpoints/index.json"),
        log=run_file("train_log.parquet"),
    log:
        run_log("train.log"),
    benchmark:
        run_benchmark("train")
    wildcard_constraints:
        variant=BASE_VARIANT,  # other variants have their own rules (e.g. intervene.smk)
    priority: CHAIN_START
    conda:
        "../envs/pipeline.yaml"
    params:
        config=section("data", "train"),
        run=run_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.log),
    shell:
        "python -m pipeline train --config-json {params.config:q} {params.run} "
        "--labels {input.labels} --out-dir {params.out_dir} > {log} 2>&1"
