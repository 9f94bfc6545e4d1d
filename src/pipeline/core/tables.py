"""Result tables: the run-key columns every table starts with, the one schema of accuracy rows,
Parquet written atomically with provenance (the config that produced it and the code version),
and reading tables back with a schema check that names the file and what to do.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.artifacts import atomic_path


def _source_root() -> Path:
    """The folder holding ``src/pipeline`` when the package runs from a source tree."""
    return Path(__file__).resolve().parents[3]


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The code that makes an artifact: the package version and, when the package runs from a git
    checkout, the commit (``git_commit``; ``git_dirty`` "true" when tracked files differ from it).

    Looked up once per process. Never fails: without git, outside a checkout (an installed wheel) or
    when git errs, the commit is "unknown" -- a missing commit must not stop a run.
    """
    from pipeline import __version__

    version = {"pipeline_version": __version__, "git_commit": "unknown", "git_dirty": "unknown"}
    root = _source_root()
    # only the package's own checkout: an installed package inside some other repository would
    # otherwise be stamped with that repository's commit
    if not (root / ".git").exists() or not (root / "src" / "pipeline").is_dir():
        return version
    git = shutil.which("git")
    if git is None:
        return version

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run([git, "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                  check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit:
        version["git_commit"] = commit
        status = run("status", "--porcelain", "--untracked-files=no")
        if status is not None:
            version["git_dirty"] = "true" if status else "false"
    return version


def provenance(config: dict, sections: Any = None, **extra: Any) -> dict[str, str]:
    """Flat string metadata stored with every artifact (HDF5 attributes, Parquet metadata): the
    config that produced it, the code version (:func:`code_version`) and ``extra`` (non-strings
    JSON-encoded).

    ``sections`` limits the recorded config to the sections that produced the artifact (the ones a
    rule passes), so defaults of unrelated sections are not mistaken for what was used.
    """
    if sections is not None:
        config = {k: config[k] for k in sections if k in config}
    meta = {**code_version(), "config": json.dumps(config, sort_keys=True, default=str)}
    meta.update({k: json.dumps(v, default=str) if not isinstance(v, str) else v for k, v in extra.items()})
    return meta


#: The run-key columns every table starts with (accuracy, composite, SGD-noise, arithmetic, train
#: logs, benchmarks), in this order and with these dtypes, so any two tables join on them. They are
#: :meth:`pipeline.core.config.Run.keys`; a family whose runs have more keys appends its own after these.
RUN_KEY_COLUMNS: dict[str, str] = {
    "dataset": "string",
    "model": "string",
    "corruption": "float64",
    "seed": "int64",
    "variant": "string",
}


# ----------------------------------------------------------------------------- the table builder

@dataclass(frozen=True)
class TableSchema:
    """A table's declared schema: every family's tables are built, written and read through one.

    Attributes:
        name: what the table is called in messages (and the ``table_schema`` footer entry).
        columns: column name -> dtype, in table order.
        keys: the columns that identify a row (no two rows share them).
        run_keys: the leading key columns the table starts with (names and dtypes). By default the
            shared :data:`RUN_KEY_COLUMNS`; a family whose runs have more keys extends them, and a
            table that summarises across runs (e.g. tests across seeds) declares the subset it
            keeps. A run key named like a shared one has the shared dtype.
        nullable: columns that may hold missing values (NaN for an empty subset, ...).
        check_values: the family's checks of the values (ranges, allowed names), run when a frame
            is built; raises ValueError.
    """

    name: str
    columns: Mapping[str, str]
    keys: tuple[str, ...]
    run_keys: Mapping[str, str] = field(default_factory=lambda: dict(RUN_KEY_COLUMNS))
    nullable: frozenset[str] = frozenset()
    check_values: Callable[[pd.DataFrame], None] | None = None

    def __post_init__(self) -> None:
        # a declaration error is a bug in the family's module: fail at import, not on a result
        columns, run_keys = list(self.columns), list(self.run_keys)
        if columns[:len(run_keys)] != run_keys or any(self.columns[k] != t for k, t in self.run_keys.items()):
            raise ValueError(f"table {self.name}: columns must start with its run keys {self.run_keys}")
        shared = {k: t for k, t in self.run_keys.items() if k in RUN_KEY_COLUMNS and RUN_KEY_COLUMNS[k] != t}
        if shared:
            raise ValueError(f"table {self.name}: run keys {shared} differ from the shared dtypes {RUN_KEY_COLUMNS}")
        unknown = [c for c in (*self.keys, *self.nullable) if c not in self.columns]
        if unknown:
            raise ValueError(f"table {self.name}: keys / nullable columns {unknown} are not columns")
        if not set(run_keys) <= set(self.keys):
            raise ValueError(f"table {self.name}: the run keys {run_keys} must be among the row keys")
        object.__setattr__(self, "columns", dict(self.columns))
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "nullable", frozenset(self.nullable))

    def mismatch(self, df: pd.DataFrame, *, order: bool = True) -> str:
        """What in ``df``'s columns and dtypes differs from the schema; empty when nothing does
        (with ``order=False`` columns in another order are not a difference)."""
        return _schema_mismatch(list(self.columns), self.columns, df, order=order)

    def check(self, df: pd.DataFrame, *, dtypes: bool = True) -> None:
        """Raise ValueError unless ``df`` has exactly the schema's columns (order and, unless
        ``dtypes`` is False, dtypes) and unique keys."""
        if not dtypes:
            if list(df.columns) != list(self.columns):
                raise ValueError(f"{self.name} columns {list(df.columns)} differ from the schema {list(self.columns)}")
            problem = ""
        else:
            problem = self.mismatch(df)
        if problem:
            raise ValueError(f"{self.name} table does not follow its schema: {problem}")
        dup = df.duplicated(list(self.keys))
        if dup.any():
            raise ValueError(f"{self.name}: {int(dup.sum())} duplicate rows on {list(self.keys)}, e.g.\n"
                             f"{df[dup].head()}")

    def frame(self, rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
        """The rows as a DataFrame in the schema (column order and dtypes), validated: no column
        outside the schema, no missing value outside :attr:`nullable`, unique keys, and the
        family's :attr:`check_values`."""
        if isinstance(rows, pd.DataFrame):
            if set(rows.columns) != set(self.columns):
                raise ValueError(f"{self.name} columns {list(rows.columns)} differ from the schema "
                                 f"{list(self.columns)}")
            df = rows[list(self.columns)] if list(rows.columns) != list(self.columns) else rows
        else:
            rows = list(rows)
            extra = sorted({k for r in rows for k in r} - set(self.columns))
            if extra:
                raise ValueError(f"{self.name} rows have columns outside the schema: {extra}")
            df = pd.DataFrame(rows, columns=list(self.columns))
        if len(df):
            bad = [c for c in self.columns if c not in self.nullable and df[c].isna().any()]
            if bad:
                raise ValueError(f"{self.name} rows have missing values in columns {bad}")
        df = df.astype(self.columns).reset_index(drop=True)
        self.check(df)
        if self.check_values is not None and len(df):
            self.check_values(df)
        return df


def check_frame(df: pd.DataFrame, columns: Mapping[str, str], keys: list[str], name: str = "table") -> None:
    """Raise unless ``df`` has exactly ``columns`` (order and dtypes) and unique ``keys`` (a schema
    given by its parts; :meth:`TableSchema.check`)."""
    TableSchema(name, columns, tuple(keys), run_keys={}).check(df)


#: The accuracy table: one row per (run keys, epoch, layer, probe, probe setting, fit labels, split,
#: target). ``fit_labels`` is the training-label source the probe was fit on ("corrupted" or "true";
#: the model itself is "corrupted"); ``target`` is the label set the accuracy is measured against
#: (the test split only ever has "true"). The model's own accuracy is a row with probe "model".
RESULT_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS,
    "epoch": "int64",
    "layer": "string",
    "probe": "string",
    "probe_setting": "string",
    "fit_labels": "string",
    "split": "string",
    "target": "string",
    "accuracy": "float64",
    "n_correct": "int64",
    "n_samples": "int64",
}


RESULT_KEYS = [c for c in RESULT_COLUMNS if c not in ("accuracy", "n_correct", "n_samples")]


#: The accuracy table's schema (``probes.parquet`` and every per-checkpoint table gathered into it).
RESULTS = TableSchema("result", RESULT_COLUMNS, tuple(RESULT_KEYS))


MODEL_LAYER = "output"


MODEL_PROBE = "model"


# ----------------------------------------------------------------------------- writing

def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``df`` atomically with ``metadata`` (string key-values) in the Parquet footer, stamped
    with the code that wrote it (:func:`code_version`, over any version carried in ``metadata``
    from an input)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    for key, value in {**(metadata or {}), **code_version()}.items():
        meta[key.encode()] = str(value).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_table(df: pd.DataFrame, path: str | os.PathLike, schema: TableSchema,
                metadata: Mapping[str, str] | None = None) -> None:
    """Write a table of ``schema`` (checked first: a frame that does not follow it is a bug and is
    never written) atomically, with ``metadata`` (:func:`provenance`) and the schema's name."""
    schema.check(df)
    write_parquet(df, path, {**(metadata or {}), "table_schema": schema.name})


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The footer's key-values (the provenance), without pandas' own entry."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None
    return {k.decode(): v.decode() for k, v in meta.items() if k != b"pandas"}


def result_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Build a DataFrame in the result schema (column order and dtypes), validating the rows."""
    return RESULTS.frame(rows)


def check_result_schema(df: pd.DataFrame) -> None:
    """Raise if ``df`` does not have the result schema's columns, in order, or has duplicate rows
    (rows made in memory, not yet typed, pass: :func:`write_table` checks the dtypes)."""
    RESULTS.check(df, dtypes=False)


def accuracy_row(keys: Mapping, *, epoch: int, layer: str, probe: str, probe_setting: str,
                 fit_labels: str, split: str, target: str, predictions: np.ndarray,
                 labels: np.ndarray) -> dict:
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    n_correct = int((predictions == labels).sum())
    n = int(labels.shape[0])
    return {**keys, "epoch": int(epoch), "layer": layer, "probe": probe,
            "probe_setting": probe_setting, "fit_labels": fit_labels, "split": split,
            "target": target, "accuracy": n_correct / n if n else float("nan"),
            "n_correct": n_correct, "n_samples": n}


# ----------------------------------------------------------------------------- reading

_REMEDY = "delete it and rerun the workflow to regenerate it"


def _unreadable(path, exc: BaseException):
    from pipeline.core.errors import ArtifactError

    return ArtifactError(f"table {path} is unreadable, not a complete Parquet file ({type(exc).__name__}: "
                         f"{exc}); {_REMEDY}")


def table_problem(path: str | os.PathLike) -> str | None:
    """Why the Parquet file at ``path`` cannot be a table (garbage, truncated: its footer is
    unreadable), or None. Reads only the footer, so it can vet every table before a workflow run."""
    try:
        pq.read_metadata(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _schema_mismatch(columns: list[str], dtypes: Mapping, df: pd.DataFrame, *, order: bool = False) -> str:
    """What in ``df`` differs from the ``columns`` with ``dtypes``; empty when nothing does."""
    problems = []
    missing = [c for c in columns if c not in df.columns]
    extra = [c for c in df.columns if c not in columns]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"extra columns {extra}")
    mistyped = [f"{c} is {df[c].dtype}, expected {dtypes[c]}" for c in columns
                if c in df.columns and str(df[c].dtype) != str(dtypes[c])]
    if mistyped:
        problems.append(f"mistyped columns: {'; '.join(mistyped)}")
    if order and not problems and list(df.columns) != list(columns):
        problems.append(f"columns in the order {list(df.columns)}, expected {list(columns)}")
    return ", ".join(problems)


def read_table(path: str | os.PathLike, schema: TableSchema | None = None) -> pd.DataFrame:
    """Read one table; with ``schema``, check its columns and dtypes (columns in another order are
    put in schema order).

    Raises:
        ArtifactError: the file is not a readable Parquet table (garbage, truncated) or does not
            follow ``schema``; the message names the file, what is wrong and what to do.
    """
    from pipeline.core.errors import ArtifactError

    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None
    if schema is None:
        return df
    problem = schema.mismatch(df, order=False)
    if problem:
        raise ArtifactError(
            f"table {path} does not match the {schema.name} schema: {problem}. It was made by another "
            f"version of the pipeline or is damaged; {_REMEDY}"
        )
    return df[list(schema.columns)] if list(df.columns) != list(schema.columns) else df


def read_tables(paths: list[str | os.PathLike], *, result_schema: bool | None = None,
                schema: TableSchema | None = None) -> pd.DataFrame:
    """Read Parquet tables and concatenate them, checking **every** input's schema first.

    Args:
        paths: the tables, in order (at least one).
        schema: each table must have exactly these columns and dtypes (columns in another order
            are put in schema order).
        result_schema: True is ``schema=RESULTS`` (:data:`RESULT_COLUMNS`). With neither (e.g.
            training logs) every table must have the first table's columns and dtypes. Duplicate
            rows are not looked for here (:meth:`TableSchema.check` does).

    Raises:
        ArtifactError: a table cannot be read, or its schema differs; the message names the file,
            the missing, extra and mistyped columns, and what to do.
        ValueError: no paths.
    """
    from pipeline.core.errors import ArtifactError

    if not paths:
        raise ValueError("nothing to aggregate: no input tables")
    if result_schema:
        schema = RESULTS
    frames = []
    for path in paths:
        if schema is not None:
            frames.append(read_table(path, schema).astype(schema.columns))
            continue
        df = read_table(path)
        if frames:
            problem = _schema_mismatch(list(frames[0].columns), dict(frames[0].dtypes.items()), df)
            if problem:
                raise ArtifactError(
                    f"table {path} does not match the first table {paths[0]}: {problem}. It was made by "
                    f"another version of the pipeline or is damaged; {_REMEDY}"
                )
            df = df[list(frames[0].columns)] if list(df.columns) != list(frames[0].columns) else df
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def gather_tables(paths: Iterable[str | os.PathLike], schema: TableSchema) -> pd.DataFrame:
    """The tables of ``schema`` at ``paths`` (each read and checked, :func:`read_table`) as one
    validated table (:meth:`TableSchema.frame`: no duplicate rows across the inputs), sorted by the
    schema's keys: what every family's aggregation job writes."""
    frames = [df for df in (read_table(p, schema) for p in paths) if len(df)]
    table = schema.frame(pd.concat(frames, ignore_index=True) if frames else [])
    return table.sort_values(list(schema.keys), kind="stable").reset_index(drop=True)


def damaged_tables(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """Which of the existing files at ``paths`` are not readable Parquet tables (path -> why).

    Snakemake judges an output by its modification time alone, so a damaged aggregated table
    newer than its inputs counts as up to date; the workflow can vet its tables with this (footers
    only: cheap) and remove the damaged ones before building the DAG, so their jobs rerun."""
    out = {}
    for path in paths:
        if os.path.exists(path):
            problem = table_problem(path)
            if problem:
                out[str(path)] = problem
    return out
