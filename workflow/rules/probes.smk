# Only these two rules (plus aggregation and plots) depend on the `probes` config section, so a new
# probe setting or layer list reruns them on the saved activations (or reduced files, with
# `storage.persist: moments|auto`) and nothing upstream.
rule fit_subspaces:
    input:
        probe_input(),
    output:
        run_file("subspaces/epoch_{epoch}.h5"),
    params:
        config=section("probes"),
        run=run_args,
    log:
        run_log("fit_epoch_{epoch}.log"),
    threads: 1
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline fit --threads {threads} --config-json {params.config:q} {params.run} --epoch {wildcards.epoch} "
        "--activations {input} --out {output} > {log} 2>&1"


rule score_probes:
    input:
        activations=probe_input(),
        subspaces=run_file("subspaces/epoch_{epoch}.h5"),
    output:
        run_file("probes/epoch_{epoch}.parquet"),
    params:
        run=run_args,
    log:
        run_log("score_epoch_{epoch}.log"),
    threads: 1
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline score --threads {threads} {params.run} --epoch {wildcards.epoch} "
        "--activations {input.activations} --subspaces {input.subspaces} --out {output} > {log} 2>&1"


# A probe block is the probe tables of one run's checkpoints within `cluster.probe_block_epochs`
# epochs. Under the SLURM profile a block's fitting and scoring jobs form one group (one
# allocation); the per-run table joins the blocks, so each run's probes start as soon as that run
# has trained (aggregation never waits on one checkpoint after another).
rule probe_block:
    input:
        block_probe_tables,
    output:
        run_file("probes/block_{block}.parquet"),
    wildcard_constraints:
        block="[0-9]+",
    log:
        run_log("probe_block_{block}.log"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline aggregate --out {output} {input} > {log} 2>&1"


rule run_probe_table:
    input:
        run_block_tables,
    output:
        run_file("probes.parquet"),
    log:
        run_log("probes.log"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline aggregate --out {output} {input} > {log} 2>&1"
