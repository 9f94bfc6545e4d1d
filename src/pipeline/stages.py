"""The stages that belong to no family: tables of every family's rows, and the cost table.

Each family's stages are in its own package (:mod:`pipeline.images.stages`,
:mod:`pipeline.dynamics.stages`, :mod:`pipeline.arithmetic.stages`); :data:`pipeline.__main__.STAGES`
names every one. As there, the signature declares the command line and the docstring's first line is
its help. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path


def aggregate(inputs: list[str | Path], /, out: str | Path, *, check_schema: bool = True,
              benchmarks: bool = False):
    """Concatenate tidy tables into one (--benchmarks: Snakemake benchmark files into the cost table).

    Every input's schema is checked (:func:`pipeline.core.tables.read_tables`): result tables against
    the result schema, sorted by their keys, others (``check_schema=False``, ``--no-check-schema``,
    e.g. training logs) against the first input. ``benchmarks``: the inputs are Snakemake benchmark
    files or folders of them (results/benchmarks), gathered into the per-job cost table
    (:func:`pipeline.costs.write_benchmark_table`). Returns the table written.
    """
    if benchmarks:
        from pipeline.costs import write_benchmark_table

        return write_benchmark_table(inputs, out)
    from pipeline.core.tables import (
        RESULT_KEYS,
        check_result_schema,
        read_parquet_metadata,
        read_tables,
        write_parquet,
    )

    table = read_tables(inputs, result_schema=check_schema)
    if check_schema:
        check_result_schema(table)  # no duplicate rows across the inputs
        table = table.sort_values(RESULT_KEYS, kind="stable").reset_index(drop=True)
    meta = read_parquet_metadata(inputs[0])
    meta = {k: v for k, v in meta.items() if k in ("pipeline_version", "config")}
    meta["sources"] = json.dumps([str(p) for p in inputs])
    write_parquet(table, out, meta)
    return table
