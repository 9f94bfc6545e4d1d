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


def table_views(tables: list[str | Path], /, out: list[str | Path], *, max_rows: int = 2000):
    """Write an HTML view of each Parquet table, for the Snakemake report (workflow/rules/report.smk).

    ``out[i]`` is the view of ``tables[i]``: its path, shape, provenance (the pipeline version that
    wrote it) and its rows, at most ``max_rows`` of them (the page says how many it leaves out and
    where the whole table is: a report is read in a browser, and the probe table of a large grid
    has far more rows than one can scroll). Each view is written atomically. Returns the paths.
    """
    from pipeline.core.artifacts import atomic_path
    from pipeline.core.tables import read_parquet_metadata, read_table

    if len(tables) != len(out):
        raise ValueError(f"{len(tables)} tables but {len(out)} output paths")
    if max_rows < 1:
        raise ValueError(f"--max-rows must be at least 1, not {max_rows}")
    written = []
    for table, path in zip(tables, out, strict=True):
        frame = read_table(table)  # a damaged table is named, with the remedy
        version = read_parquet_metadata(table).get("pipeline_version", "unknown")
        page = _table_page(frame, Path(table), version, max_rows)
        with atomic_path(path) as tmp:
            tmp.write_text(page, encoding="utf-8")
        written.append(Path(path))
    return written


def _table_page(frame, table: Path, version: str, max_rows: int) -> str:
    """One self-contained HTML page showing ``frame`` (read from ``table``)."""
    import html

    shown = frame.head(max_rows)
    left_out = len(frame) - len(shown)
    note = (f"<p class='note'>The first {len(shown)} of {len(frame)} rows; the whole table is "
            f"<code>{html.escape(str(table))}</code>.</p>" if left_out else "")
    body = shown.to_html(index=False, na_rep="", border=0, classes="table",
                         float_format=lambda v: f"{v:.4g}")
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(table.stem)}</title><style>"
        "body{font-family:sans-serif;font-size:13px;margin:1em}"
        "table{border-collapse:collapse}th,td{padding:2px 8px;border-bottom:1px solid #ddd;"
        "text-align:right;white-space:nowrap}th{position:sticky;top:0;background:#f4f4f4}"
        ".note{color:#a33}</style></head><body>\n"
        f"<h2>{html.escape(table.name)}</h2>\n"
        f"<p><code>{html.escape(str(table))}</code>: {len(frame)} rows, {len(frame.columns)} columns "
        f"({', '.join(html.escape(str(c)) for c in frame.columns)}); written by pipeline "
        f"{html.escape(version)}.</p>\n{note}\n{body}\n</body></html>\n"
    )
