"""Atomic artifact writing and the one tidy result schema.

Every artifact is written under a temporary name in the same folder and renamed into place only
when complete, so a killed job never leaves a file that looks finished. Parquet tables carry their
provenance in the file's key-value metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: One row per (run keys, epoch, layer, probe, probe setting, fit labels, split, target).
#: ``fit_labels`` is the training-label source the probe was fit on ("corrupted" or "true"; the
#: model itself is "corrupted"); ``target`` is the label set the accuracy is measured against
#: (the test split only ever has "true"). The model's own accuracy is a row with probe "model".
RESULT_COLUMNS: dict[str, str] = {
    "dataset": "string",
    "model": "string",
    "corruption": "float64",
    "seed": "int64",
    "variant": "string",
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_h5_attrs(obj, attrs: Mapping) -> None:
    """Set HDF5 attributes: scalars and strings as they are, anything else as JSON."""
    for key, value in attrs.items():
        obj.attrs[key] = value if isinstance(value, (str, int, float, np.generic)) else json.dumps(value)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


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
