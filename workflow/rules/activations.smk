rule extract_activations:
    input:
        labels=run_file("labels.npz"),
        index=run_file("checkpoints/index.json"),
    output:
        activation_file("activations/epoch_{epoch}.h5"),
    log:
        run_log("extract_epoch_{epoch}.log"),
    benchmark:
        run_benchmark("extract_activations", "epoch")
    priority: CHAIN
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        config=extract_section,
        run=run_args,
        checkpoint=run_file("checkpoints/epoch_{epoch}.pt"),
    shell:
        "python -m pipeline extract --threads {threads} --config-json {params.config:q} {params.run} --epoch {wildcards.epoch} "
        "--labels {input.labels} --checkpoint {params.checkpoint} --out {output} > {log} 2>&1"


# storage.persist: moments|auto. The kept artifact: the activation file with the training
# activations of (some) layers replaced by per-class statistics (pipeline.sufficient); the
# activation file itself is then temporary. Only `storage.persist` reruns it.
rule reduce_activations:
    input:
        run_file("activations/epoch_{epoch}.h5"),
    output:
        run_file("reduced/epoch_{epoch}.h5"),
    log:
        run_log("reduce_epoch_{epoch}.log"),
    benchmark:
        run_benchmark("reduce_activations", "epoch")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        config=json.dumps({"storage": {"persist": PERSIST}}),
        run=run_args,
    shell:
        "python -m pipeline reduce --threads {threads} --config-json {params.config:q} {params.run} "
        "--epoch {wildcards.epoch} --activations {input} --out {output} > {log} 2>&1"
