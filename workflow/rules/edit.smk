# Weight editing (section 8, pipeline.images.transfer.editing): the pre-softmax weights replaced by VeLPIC class
# vectors of the last probe layer. One job per run edits all of its probed checkpoints (each edit is
# one forward pass; a job per checkpoint would spend most of its time starting Python). Its table
# joins results/tables/probes.parquet (pipeline.images.transfer.transfer_tables, in common.smk).
rule edit_model:
    input:
        labels=run_file("labels.npz"),
        index=run_file("checkpoints/index.json"),
    output:
        run_file("edits/edited_model.parquet"),
    log:
        run_log("edit_model.log"),
    benchmark:
        run_benchmark("edit_model")
    conda:
        "../envs/pipeline.yaml"
    params:
        config=transfer_section("edited_model", "data", "train", "storage"),
        run=run_args,
    shell:
        "python -m pipeline edit --config-json {params.config:q} {params.run} --index {input.index} "
        "--labels {input.labels} --out {output} > {log} 2>&1"
