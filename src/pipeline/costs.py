"""What each workflow stage costs: Snakemake's per-job benchmark files, gathered into one table.

Every rule writes a Snakemake ``benchmark:`` file (:func:`benchmark_path`):
``results/benchmarks/{rule}/dataset={dataset}/model={model}/.../epoch={epoch}.tsv``, one folder
level per wildcard of the rule, so the file's path alone names the job. :func:`benchmark_table`
reads them into ``results/tables/benchmarks.parquet``: one row per job with

* ``rule``, then the run-key columns (:data:`pipeline.io.RUN_KEY_COLUMNS`; NA for rules without
  them, e.g. aggregation), then ``epoch`` and ``other`` (the job's remaining wildcards, e.g.
  ``block=0`` or ``protocol=heldout_true``);
* ``wall_s`` (Snakemake's ``s``), ``cpu_s`` (its ``cpu_time``: user + system seconds of the
  job's process tree) and ``max_rss_mib`` (its ``max_rss``, MiB).

Snakemake samples a job's processes about once a second, so ``cpu_s`` and ``max_rss_mib`` of a
job under a second are 0 (or NA) and those of longer jobs miss their last second: lower bounds.
``wall_s`` is exact.

:func:`measured_costs` turns the table into per-rule figures per job for ``python -m pipeline
plan``. Nothing here imports pandas until a table is read, so the Snakefile can import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: Where the per-job benchmark files go (under the working directory).
BENCHMARK_DIR = "results/benchmarks"
#: The aggregated table.
BENCHMARK_TABLE = "results/tables/benchmarks.parquet"
#: Columns of the table after the rule and run keys.
COST_COLUMNS = {"epoch": "Int64", "other": "string", "wall_s": "float64", "cpu_s": "float64",
                "max_rss_mib": "float64"}


def benchmark_path(rule: str, wildcards: Iterable[str] = ()) -> str:
    """The benchmark file of ``rule``, one ``name={name}`` folder level per wildcard (the last is
    the file name): ``benchmark_path("x", ["dataset", "epoch"])`` is
    ``results/benchmarks/x/dataset={dataset}/epoch={epoch}.tsv``."""
    parts = [f"{w}={{{w}}}" for w in wildcards]
    return "/".join([BENCHMARK_DIR, rule, *parts]) + ".tsv" if parts else f"{BENCHMARK_DIR}/{rule}.tsv"


def parse_benchmark_path(path: str | os.PathLike, root: str | os.PathLike = BENCHMARK_DIR) -> tuple[str, dict]:
    """``(rule, {wildcard: value})`` of a file made by :func:`benchmark_path` under ``root``."""
    rel = Path(path).relative_to(root) if Path(path).is_relative_to(root) else Path(path)
    parts = list(rel.with_suffix("").parts)
    if len(parts) == 1:
        return parts[0], {}
    rule, wildcards = parts[0], {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"benchmark file {path}: folder {part!r} is not name=value")
        wildcards[key] = value
    return rule, wildcards


def benchmark_files(root: str | os.PathLike = BENCHMARK_DIR) -> list[Path]:
    return sorted(Path(root).rglob("*.tsv")) if Path(root).is_dir() else []


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # "NA" (Snakemake writes it when no sample was taken)
        return float("nan")


def read_benchmark(path: str | os.PathLike, root: str | os.PathLike = BENCHMARK_DIR) -> list[dict]:
    """Rows (one per repeat; Snakemake writes one unless ``repeat()``) of one benchmark TSV."""
    from pipeline.io import RUN_KEY_COLUMNS

    rule, wildcards = parse_benchmark_path(path, root)
    lines = [line.rstrip("\n").split("\t") for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        return []
    header, records = lines[0], lines[1:]
    for needed in ("s", "max_rss", "cpu_time"):
        if needed not in header:
            raise ValueError(f"benchmark file {path} has no column {needed!r} (columns: {header})")
    rows = []
    for record in records:
        values = dict(zip(header, record, strict=False))
        row: dict = {"rule": rule}
        for key in RUN_KEY_COLUMNS:
            row[key] = wildcards.get(key)
        row["epoch"] = int(wildcards["epoch"]) if "epoch" in wildcards else None
        other = {k: v for k, v in wildcards.items() if k not in RUN_KEY_COLUMNS and k != "epoch"}
        row["other"] = ",".join(f"{k}={v}" for k, v in sorted(other.items())) or None
        row["wall_s"] = _number(values["s"])
        row["cpu_s"] = _number(values["cpu_time"])
        row["max_rss_mib"] = _number(values["max_rss"])
        rows.append(row)
    return rows


def benchmark_table(paths: Iterable[str | os.PathLike], root: str | os.PathLike = BENCHMARK_DIR):
    """One DataFrame of the benchmark files ``paths`` (see the module docstring), sorted by rule
    and wildcards."""
    import pandas as pd

    from pipeline.io import RUN_KEY_COLUMNS

    rows = [row for path in paths for row in read_benchmark(path, root)]
    columns = {"rule": "string", **RUN_KEY_COLUMNS, **COST_COLUMNS}
    frame = pd.DataFrame(rows, columns=list(columns))
    # run-key dtypes with NA where a rule has no such wildcard
    dtypes = {k: {"int64": "Int64", "float64": "Float64"}.get(v, v) for k, v in columns.items()}
    dtypes.update({c: "float64" for c in ("wall_s", "cpu_s", "max_rss_mib")})
    frame = frame.astype(dtypes)
    order = ["rule", *RUN_KEY_COLUMNS, "epoch", "other"]
    return frame.sort_values(order, kind="stable", na_position="first").reset_index(drop=True)


def write_benchmark_table(inputs: Iterable[str | os.PathLike], out: str | os.PathLike):
    """Gather benchmark files (``inputs``: files, or folders searched for ``*.tsv``) into ``out``."""
    from pipeline.io import write_parquet

    files: list[Path] = []
    roots: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files += benchmark_files(item)
            roots += [item] * len(benchmark_files(item))
        else:
            files.append(item)
            roots.append(Path(BENCHMARK_DIR))
    import pandas as pd

    frames = [benchmark_table([f], r) for f, r in zip(files, roots, strict=True)]
    table = (pd.concat(frames, ignore_index=True) if frames else benchmark_table([]))
    order = ["rule", "dataset", "model", "corruption", "seed", "variant", "epoch", "other"]
    table = table.sort_values(order, kind="stable", na_position="first").reset_index(drop=True)
    write_parquet(table, out, {"sources": str(len(files))})
    return table


# ----------------------------------------------------------------------------- for the plan

def load_measurements(path: str | os.PathLike | None = None):
    """The benchmark table at ``path``, else ``results/tables/benchmarks.parquet``, else the
    benchmark files under ``results/benchmarks``; ``(table, source)`` or ``(None, None)``."""
    import pandas as pd

    if path is not None:
        path = Path(path)
        if path.is_dir():
            files = benchmark_files(path)
            return (benchmark_table(files, path), str(path)) if files else (None, None)
        return pd.read_parquet(path), str(path)
    if Path(BENCHMARK_TABLE).exists():
        return pd.read_parquet(BENCHMARK_TABLE), BENCHMARK_TABLE
    files = benchmark_files(BENCHMARK_DIR)
    if files:
        return benchmark_table(files), BENCHMARK_DIR
    return None, None


def measured_costs(table, dataset: str | None = None, model: str | None = None) -> dict[str, dict]:
    """Per rule: jobs measured, mean wall and CPU seconds per job, largest max RSS (MiB); a job
    too short for Snakemake to sample counts 0 CPU s and 0 MiB.

    With ``dataset``/``model``, only that pair's jobs count where the rule has them (rules
    without run keys, e.g. aggregation, always count)."""
    if table is None or len(table) == 0:
        return {}
    rows = table
    if dataset is not None:
        rows = rows[rows["dataset"].isna() | (rows["dataset"] == dataset)]
    if model is not None:
        rows = rows[rows["model"].isna() | (rows["model"] == model)]
    costs = {}
    for rule, group in rows.groupby("rule", sort=True):
        costs[str(rule)] = {"jobs": int(len(group)),
                            "wall_s": float(group["wall_s"].mean()),
                            "cpu_s": float(group["cpu_s"].fillna(0).mean()),
                            "max_rss_mib": float(group["max_rss_mib"].fillna(0).max())}
    return costs
