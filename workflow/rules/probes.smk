# Only these two rules (plus aggregation and plots) depend on the `probes` config section, so a new
# probe setting or layer list reruns them on the saved activations and nothing upstream.
rule fit_subspaces:
    input:
        run_file("activations/epoch_{epoch}.h5"),
    output:
        run_file("subspaces/epoch_{epoch}.h5"),
    params:
        config=section("probes"),
        run=run_args,
    log:
        run_log("fit_epoch_{epoch}.log"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline fit --config-json {params.config:q} {params.run} --epoch {wildcards.epoch} "
        "--activations {input} --out {output} > {log} 2>&1"


rule score_probes:
    input:
        activations=run_file("activations/epoch_{epoch}.h5"),
        subspaces=run_file("subspaces/epoch_{epoch}.h5"),
    output:
        run_file("probes/epoch_{epoch}.parquet"),
    params:
        run=run_args,
    log:
        run_log("score_epoch_{epoch}.log"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline score {params.run} --epoch {wildcards.epoch} "
        "--activations {input.activations} --subspaces {input.subspaces} --out {output} > {log} 2>&1"
