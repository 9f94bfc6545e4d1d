# Latent generalization during memorization: the whole DAG.
#   snakemake --cores 2                      # embedded default (config/config.yaml), offline, minutes
#   snakemake all --profile slurm            # a cluster run (see docs/scale-out.md, "SLURM")
# Stage rules live one per file in workflow/rules/; all logic lives in src/pipeline/.

# Read config/config.yaml with pipeline.config first: a YAML error then names the file and line
# (Snakemake's own message names neither). A missing file is reported by `configfile:` itself.
import os

from pipeline.workflow import ConfigError, read_config_file, set_aside_damaged_tables

if os.path.exists("config/config.yaml"):
    try:
        read_config_file("config/config.yaml")
    except ConfigError as exc:
        raise WorkflowError(f"invalid configuration: {exc}") from None

# A damaged aggregated table would count as up to date (Snakemake looks at times only): set it
# aside so that its job reruns.
for line in set_aside_damaged_tables("results/tables"):
    logger.warning(line)


configfile: "config/config.yaml"


wildcard_constraints:
    dataset="[a-z0-9_]+",
    model="[a-z0-9_]+",
    corruption="[0-9.e-]+",
    seed="[0-9]+",
    variant="[A-Za-z0-9_-]+",
    epoch="[0-9]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/edit.smk"
include: "workflow/rules/intervene.smk"
include: "workflow/rules/relabel.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/arithmetic.smk"
include: "workflow/rules/dynamics.smk"
include: "workflow/rules/labels.smk"


# What the default run makes. The report (`snakemake --report report.html`, workflow/rules/report.smk)
# shows every figure and an HTML view of every table under results/tables/ among these.
DEFAULT_TARGETS = [
    "results/tables/probes.parquet",
    "results/tables/train_log.parquet",
    all_plots(),
    BENCHMARK_TABLE,
    ARITHMETIC_TARGETS,
    dynamics_targets(config),
    labels_targets(config),
]


include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        DEFAULT_TARGETS,
        list(REPORT_TABLE_VIEWS.values()),
