rule extract_activations:
    input:
        labels=run_file("labels.npz"),
        index=run_file("checkpoints/index.json"),
    output:
        activation_file("activations/epoch_{epoch}.h5"),
    params:
        config=section("data", "train", "activations"),
        run=run_args,
        checkpoint=run_file("checkpoints/epoch_{epoch}.pt"),
    log:
        run_log("extract_epoch_{epoch}.log"),
    threads: 1
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline extract --threads {threads} --config-json {params.config:q} {params.run} --epoch {wildcards.epoch} "
        "--labels {input.labels} --checkpoint {params.checkpoint} --out {output} > {log} 2>&1"
