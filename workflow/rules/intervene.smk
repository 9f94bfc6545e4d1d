# Weight intervention during training (section 9, pipeline.images.transfer.intervention): run variant
# intervene-e{E}[-keepopt] trains E epochs, swaps in the VeLPIC vectors, trains N more. Like
# training it is a checkpoint (its index.json lists the checkpoints after the edit), and its
# checkpoints go through the same extract / fit / score rules as a standard run's. With a reset
# optimizer it branches from the standard run's epoch-E checkpoint when that run saved one, so it
# then waits for the standard run's training.
from pipeline.workflow import INTERVENTION_PATTERN as INTERVENTION_VARIANT
from pipeline.workflow import intervention_standard_arg, intervention_standard_log


checkpoint intervene:
    input:
        labels=run_file("labels.npz"),
        standard=lambda w: intervention_standard_log(config, RUN_DIR, run_wildcards(w)),
    output:
        index=run_file("checkpoints/index.json"),
        log=run_file("train_log.parquet"),
    log:
        run_log("intervene.log"),
    benchmark:
        run_benchmark("intervene")
    wildcard_constraints:
        variant=INTERVENTION_VARIANT,
    priority: CHAIN_START
    conda:
        "../envs/pipeline.yaml"
    params:
        config=transfer_section("intervention", "data", "train"),
        run=run_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.log),
        standard=lambda w: intervention_standard_arg(config, RUN_DIR, run_wildcards(w)),
    shell:
        "python -m pipeline intervene --config-json {params.config:q} {params.run} "
        "--labels {input.labels} --out-dir {params.out_dir} {params.standard} > {log} 2>&1"
