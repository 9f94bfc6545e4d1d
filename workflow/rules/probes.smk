# Only this rule (plus aggregation and plots) depends on the `probes` config section, so a new
# probe setting or layer list reruns it on the saved activations (or reduced files, with
# `storage.persist: moments|auto`) and nothing upstream. Fitting and scoring of one checkpoint are
# one job (`python -m pipeline probe`): scoring only ever reruns with fitting (both depend on the
# probes section and the activation file), and one job starts Python and reads the activation
# file once instead of twice. The fitted probes stay an artifact of their own.
rule probe_checkpoint:
    input:
        probe_input(),
    output:
        subspaces=run_file("subspaces/epoch_{epoch}.h5"),
        table=run_file("probes/epoch_{epoch}.parquet"),
    log:
        run_log("probe_epoch_{epoch}.log"),
    benchmark:
        run_benchmark("probe_checkpoint", "epoch")
    priority: CHAIN
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        **PROBE_RESOURCES,
    params:
        config=probe_section,
        run=run_args,
    shell:
        "python -m pipeline probe --threads {threads} --config-json {params.config:q} {params.run} "
        "--epoch {wildcards.epoch} --activations {input} --subspaces {output.subspaces} "
        "--out {output.table} > {log} 2>&1"


# storage.fused: the fused layers of a checkpoint in ONE job, without an activation file: the
# forward pass (on the run's device), the activations kept in memory (on the GPU with
# probes.device cuda/auto), the probes fitted and scored there (pipeline.stages.probe_fused).
# Writes only the fitted probes and the table; its own names, so a checkpoint whose layers are
# split between the two paths has a table of each (the staged one carries the model's rows).
rule probe_fused:
    input:
        labels=run_file("labels.npz"),
        index=run_file("checkpoints/index.json"),
    output:
        subspaces=run_file("subspaces/epoch_{epoch}_fused.h5"),
        table=run_file("probes/epoch_{epoch}_fused.parquet"),
    log:
        run_log("probe_fused_epoch_{epoch}.log"),
    benchmark:
        run_benchmark("probe_fused", "epoch")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        **PROBE_RESOURCES,
    params:
        config=fused_section,
        run=run_args,
        checkpoint=run_file("checkpoints/epoch_{epoch}.pt"),
        flags=fused_flags,
    shell:
        "python -m pipeline probe-fused --threads {threads} --config-json {params.config:q} {params.run} "
        "--epoch {wildcards.epoch} --labels {input.labels} --checkpoint {params.checkpoint} "
        "--subspaces {output.subspaces} --out {output.table} {params.flags} > {log} 2>&1"


# A probe block is the probe tables of one run's checkpoints within `cluster.probe_block_epochs`
# epochs. Under the SLURM profile a block's probe jobs form one group (one allocation); the
# per-run table joins the blocks, so each run's probes start as soon as that run has trained
# (aggregation never waits on one checkpoint after another).
rule probe_block:
    input:
        block_probe_tables,
    output:
        run_file("probes/block_{block}.parquet"),
    log:
        run_log("probe_block_{block}.log"),
    benchmark:
        run_benchmark("probe_block", "block")
    wildcard_constraints:
        block="[0-9]+",
    conda:
        "../envs/pipeline.yaml"
    resources:
        **PROBE_RESOURCES,
    shell:
        "python -m pipeline aggregate --out {output} {input} > {log} 2>&1"


rule run_probe_table:
    input:
        run_block_tables,
    output:
        run_file("probes.parquet"),
    log:
        run_log("probes.log"),
    benchmark:
        run_benchmark("run_probe_table")
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline aggregate --out {output} {input} > {log} 2>&1"
