# Relabel and retrain (the MASC paper, pipeline.images.transfer.relabel): MASC on a chosen layer relabels the
# training set and the final (memorized) checkpoint keeps training on it. One job per (run,
# protocol); each job does every label source of transfer.relabel_retrain.fit_labels. Its table
# joins results/tables/probes.parquet (pipeline.images.transfer.transfer_tables, in common.smk).
from pipeline.workflow import RELABEL_PROTOCOLS, final_activations


rule relabel_retrain:
    input:
        index=run_file("checkpoints/index.json"),
        labels=run_file("labels.npz"),
        activations=lambda w: final_activations(RUN_DIR, run_wildcards(w), run_index(w)),
    output:
        table=run_file("relabel/{protocol}.parquet"),
        details=run_file("relabel/{protocol}.json"),
    log:
        run_log("relabel_{protocol}.log"),
    benchmark:
        run_benchmark("relabel_retrain", "protocol")
    wildcard_constraints:
        protocol="|".join(RELABEL_PROTOCOLS),
    conda:
        "../envs/pipeline.yaml"
    params:
        config=transfer_section("relabel_retrain", "data", "train"),
        run=run_args,
    shell:
        "python -m pipeline relabel --config-json {params.config:q} {params.run} "
        "--protocol {wildcards.protocol} --index {input.index} --labels {input.labels} "
        "--activations {input.activations} --out {output.table} --details {output.details} > {log} 2>&1"
