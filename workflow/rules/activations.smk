rule extract_activations:
    input:
        labels=RUN_DIR + "/labels.npz",
        index=RUN_DIR + "/checkpoints/index.json",
    output:
        RUN_DIR + "/activations/epoch_{epoch}.h5",
    params:
        config=section("data", "train", "activations"),
        run=run_args,
        checkpoint=RUN_DIR + "/checkpoints/epoch_{epoch}.pt",
    log:
        LOG_DIR + "/extract_epoch_{epoch}.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline extract --config-json {params.config:q} {params.run} --epoch {wildcards.epoch} "
        "--labels {input.labels} --checkpoint {params.checkpoint} --out {output} > {log} 2>&1"
