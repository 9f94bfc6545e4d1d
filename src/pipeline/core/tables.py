"""Result tables: the run-key columns every table starts with, the one schema of accuracy rows,
Parquet written atomically with provenance (the config that produced it and the code version),
and reading tables back with a schema check that names the file and what to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.artifacts import atomic_path


def provenance(config: dict, sections: Any = None, **extra: Any) -> dict[str, str]:
    """Flat string metadata stored with every artifact (HDF5 attributes, Parquet metadata).

    ``sections`` limits the recorded config to the sections that produced the artifact (the ones a
    rule passes), so defaults of unrelated sections are not mistaken for what was used.
    """
    from pipeline import __version__

    if sections is not None:
        config = {k: config[k] for k in sections if k in config}
    meta = {"pipeline_version": __version__, "config": json.dumps(config, sort_keys=True, default=str)}
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


MODEL_LAYER = "output"


MODEL_PROBE = "model"


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``df`` atomically with ``metadata`` (string key-values) in the Parquet footer."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    for key, value in (metadata or {}).items():
        meta[key.encode()] = str(value).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, str]:
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k != b"pandas"}


def result_frame(rows: list[dict]) -> pd.DataFrame:
    """Build a DataFrame in the result schema (column order and dtypes), validating the rows."""
    df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    missing = df.columns[df.isna().any()].tolist() if len(df) else []
    if missing:
        raise ValueError(f"result rows have missing values in columns {missing}")
    return df.astype(RESULT_COLUMNS)


def check_result_schema(df: pd.DataFrame) -> None:
    """Raise if ``df`` does not follow the result schema exactly."""
    if list(df.columns) != list(RESULT_COLUMNS):
        raise ValueError(f"result columns {list(df.columns)} differ from the schema {list(RESULT_COLUMNS)}")
    dup = df.duplicated(RESULT_KEYS)
    if dup.any():
        raise ValueError(f"{int(dup.sum())} duplicate result rows, e.g.\n{df[dup].head()}")


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


def _read_table(path: str | os.PathLike) -> pd.DataFrame:
    from pipeline.core.errors import ArtifactError

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ArtifactError(
            f"table {path} is unreadable ({type(exc).__name__}: {exc}); delete it and rerun the "
            "workflow to regenerate it"
        ) from None


def _schema_mismatch(columns: list[str], dtypes: Mapping, df: pd.DataFrame) -> str:
    """What in ``df`` differs from the ``columns`` with ``dtypes``; empty when nothing does."""
    problems = []
    missing = [c for c in columns if c not in df.columns]
    extra = [c for c in df.columns if c not in columns]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"extra columns {extra}")
    mistyped = [f"{c} is {df[c].dtype}, expected {dtypes[c]}" for c in columns
                if c in df.columns and df[c].dtype != dtypes[c]]
    if mistyped:
        problems.append(f"mistyped columns: {'; '.join(mistyped)}")
    return ", ".join(problems)


def read_tables(paths: list[str | os.PathLike], *, result_schema: bool) -> pd.DataFrame:
    """Read Parquet tables and concatenate them, checking **every** input's schema first.

    Args:
        paths: the tables, in order (at least one).
        result_schema: each table must have exactly the result schema's columns and dtypes
            (:data:`RESULT_COLUMNS`; columns in another order are put in schema order). With
            False (e.g. training logs) every table must have the first table's columns and
            dtypes. Duplicate rows are not looked for here (:func:`check_result_schema` does).

    Raises:
        ArtifactError: a table cannot be read, or its schema differs; the message names the file,
            the missing, extra and mistyped columns, and what to do.
        ValueError: no paths.
    """
    from pipeline.core.errors import ArtifactError

    if not paths:
        raise ValueError("nothing to aggregate: no input tables")
    frames = []
    for path in paths:
        df = _read_table(path)
        if result_schema:
            columns, dtypes, against = list(RESULT_COLUMNS), RESULT_COLUMNS, "the result schema"
        elif frames:
            columns = list(frames[0].columns)
            dtypes = dict(frames[0].dtypes.items())
            against = f"the first table {paths[0]}"
        else:
            frames.append(df)
            continue
        problem = _schema_mismatch(columns, dtypes, df)
        if problem:
            raise ArtifactError(
                f"table {path} does not match {against}: {problem}. It was made by another version "
                "of the pipeline or is damaged; delete it and rerun the workflow to regenerate it"
            )
        df = df[columns] if list(df.columns) != columns else df
        frames.append(df.astype(RESULT_COLUMNS) if result_schema else df)
    return pd.concat(frames, ignore_index=True)
