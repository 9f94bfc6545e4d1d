# Modular arithmetic with label noise (issue 10; src/pipeline/arithmetic/, README "Modular
# arithmetic"): one job per cell of the config's `arithmetic` grid, one job gathering the cells
# into four tables (results, neurons, log, MASC/VeLPIC probes), one for the digits
# memorization-order check, one drawing every figure.
#   snakemake --cores 2 arithmetic          only this family
import json

from pipeline.arithmetic.grid import (
    CELL_PATTERN,
    CELL_WILDCARDS,
    TABLES,
    WILDCARD_CONSTRAINTS,
    cell_settings_json,
    cells_by_path,
    figure_names,
    memorization_enabled,
    plot_paths,
    table_paths,
    targets,
)

ARITHMETIC = config["arithmetic"]
ARITHMETIC_CELLS = cells_by_path(ARITHMETIC) if ARITHMETIC["enabled"] else {}
ARITHMETIC_FIGURES = figure_names(ARITHMETIC)
ARITHMETIC_MEMORIZATION = memorization_enabled(ARITHMETIC)
# what `all` (Snakefile) and `arithmetic` ask for: nothing unless arithmetic.enabled
ARITHMETIC_TARGETS = targets(ARITHMETIC, PLOT_FORMAT)
# the transformer's before/after FF table (pipeline.arithmetic.transformer): in the family's
# targets when arithmetic.transformer.enabled; `snakemake arithmetic_transformer` makes it anyway
ARITHMETIC_TRANSFORMER_TABLE = "results/tables/arithmetic_transformer.parquet"
if ARITHMETIC["enabled"] and ARITHMETIC["transformer"]["enabled"]:
    ARITHMETIC_TARGETS = ARITHMETIC_TARGETS + [ARITHMETIC_TRANSFORMER_TABLE]


# The bookkeeping rules run on the submitting host under the SLURM profile.
workflow.localrules("arithmetic", "arithmetic_tables")


rule arithmetic:
    input:
        ARITHMETIC_TARGETS,


rule arithmetic_cell:
    output:
        index=f"results/{CELL_PATTERN}/index.json",
    log:
        f"logs/{CELL_PATTERN}/arithmetic_cell.log",
    benchmark:
        benchmark_path("arithmetic_cell", CELL_WILDCARDS)
    wildcard_constraints:
        **WILDCARD_CONSTRAINTS,
    conda:
        "../envs/pipeline.yaml"
    # arithmetic.num_threads (null: the cores Snakemake is given); threads are no rerun trigger and
    # not in the settings below, so a changed thread count reruns no cell (results do not depend on it)
    threads: ARITHMETIC["num_threads"] or workflow.cores
    params:
        settings=lambda wildcards: cell_settings_json(ARITHMETIC_CELLS, wildcards),
        out_dir=lambda wildcards, output: os.path.dirname(output.index),
    shell:
        "python -m pipeline arithmetic-cell --threads {threads} --settings-json {params.settings:q} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule arithmetic_tables:
    input:
        [f"results/{path}/index.json" for path in ARITHMETIC_CELLS],
    output:
        results=TABLES["results"],
        neurons=TABLES["neurons"],
        log=TABLES["log"],
        probes=TABLES["probes"],
    log:
        "logs/arithmetic_tables.log",
    benchmark:
        benchmark_path("arithmetic_tables")
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline arithmetic-tables --results {output.results} --neurons {output.neurons} "
        "--log {output.log} --probes {output.probes} {input} > {log} 2>&1"


rule arithmetic_memorization:
    output:
        TABLES["memorization"],
    log:
        "logs/arithmetic_memorization.log",
    benchmark:
        benchmark_path("arithmetic_memorization")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        settings=json.dumps(ARITHMETIC["memorization"], sort_keys=True),
        root=config["data"]["root"],
    shell:
        "python -m pipeline arithmetic-memorization --threads {threads} --settings-json {params.settings:q} "
        "--data-root {params.root} --out {output} > {log} 2>&1"


rule arithmetic_transformer:
    output:
        ARITHMETIC_TRANSFORMER_TABLE,
    log:
        "logs/arithmetic_transformer.log",
    benchmark:
        benchmark_path("arithmetic_transformer")
    conda:
        "../envs/pipeline.yaml"
    threads: ARITHMETIC["num_threads"] or workflow.cores
    params:
        # `enabled` only decides the targets: toggling it reruns nothing
        settings=json.dumps(
            {k: v for k, v in ARITHMETIC["transformer"].items() if k != "enabled"},
            sort_keys=True,
        ),
    shell:
        "python -m pipeline arithmetic-transformer --threads {threads} --settings-json {params.settings:q} "
        "--out {output} > {log} 2>&1"


rule arithmetic_figures:
    input:
        table_paths(ARITHMETIC),
    output:
        # in the report (workflow/rules/report.smk): one caption per figure, one for every vs_<key>
        [
            report(
                path,
                caption=f"../report/arithmetic/{'sweep' if name.startswith('vs_') else name}.rst",
                category="Arithmetic",
            )
            for name, path in zip(
                ARITHMETIC_FIGURES, plot_paths(ARITHMETIC, PLOT_FORMAT), strict=True
            )
        ],
    log:
        "logs/arithmetic_figures.log",
    benchmark:
        benchmark_path("arithmetic_figures")
    conda:
        "../envs/pipeline.yaml"
    params:
        figures=" ".join(ARITHMETIC_FIGURES),
        memorization=(
            f"--memorization {TABLES['memorization']}"
            if ARITHMETIC_MEMORIZATION
            else ""
        ),
        tables=(
            f"--results {TABLES['results']} --neurons {TABLES['neurons']} --log {TABLES['log']}"
        ),
        dpi=config["plots"]["dpi"],
    shell:
        "python -m pipeline arithmetic-figures --figure {params.figures} --outputs {output} "
        "{params.tables} {params.memorization} --dpi {params.dpi} > {log} 2>&1"
