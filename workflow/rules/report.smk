# The Snakemake report (docs/labels.md, "A report to share"):
#   snakemake --report report.html           after a run, with that run's options (e.g. --configfile)
# holds the global description workflow/report/workflow.rst (the pipeline, and the run's config),
# every figure the run drew (each rule wraps its figure outputs in report(), with a caption from
# workflow/report/<family>/ and the family's category), and the tables of DEFAULT_TARGETS (the
# Snakefile), each as an HTML page that this file's one job writes (a Parquet file cannot be shown
# in a browser). Included after DEFAULT_TARGETS is defined: the job's outputs are known at parse time.
from pipeline.workflow import report_table_views


report: "../report/workflow.rst"


# table -> its HTML view, for every aggregated Parquet table the default run makes
REPORT_TABLE_VIEWS = report_table_views(DEFAULT_TARGETS)

workflow.localrules("report_tables")


rule report_tables:
    input:
        list(REPORT_TABLE_VIEWS),
    output:
        [
            report(view, caption="../report/tables.rst", category="Tables")
            for view in REPORT_TABLE_VIEWS.values()
        ],
    log:
        "logs/report_tables.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline table-views {input} --out {output} > {log} 2>&1"
