"""Atomic artifact writing and the one tidy result schema.

Every artifact is written under a temporary name in the same folder and renamed into place only
when complete, so a killed job never leaves a file that looks finished. Parquet tables carry their
provenance in the file's key-value metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: The run-key columns every table starts with (accuracy, composite, SGD-noise, arithmetic, train
#: logs, benchmarks), in this order and with these dtypes, so any two tables join on them. They are
#: :meth:`pipeline.config.Run.keys`; a family whose runs have more keys appends its own after these.
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


#: Temporary files of :func:`atomic_path` are named ``.<name>.<host>.<pid>.<token>.tmp`` in the
#: target's folder: ``host`` is this machine's name (characters other than letters, digits and
#: ``-`` replaced by ``-``), ``pid`` the writing process, ``token`` random hex.
TMP_SUFFIX = ".tmp"
#: :func:`sweep_stale_tmp` removes any temporary file older than this, whoever wrote it.
STALE_TMP_AGE_S = 7 * 24 * 3600


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"


def _tmp_name(name: str) -> str:
    return f".{name}.{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def _parse_tmp_name(name: str) -> tuple[str, int] | None:
    """``(host, pid)`` of a temporary name made by :func:`_tmp_name`, or None for any other name."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return None
    parts = name[1 : -len(TMP_SUFFIX)].rsplit(".", 3)
    if len(parts) != 4:
        return None
    _, host, pid, token = parts
    if not (host and re.fullmatch(r"[A-Za-z0-9-]+", host) and pid.isdigit()
            and re.fullmatch(r"[0-9a-f]+", token)):
        return None
    return host, int(pid)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when it cannot be told)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` where the OS allows opening a directory (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file already exists (empty) when the block starts; it is created like any
    ``open(..., "w")`` would create it, so the final file's mode is ``0o666 & ~umask`` (or what the
    folder's default ACL says), e.g. 0o644 under umask 0o022 and 0o664 under 0o002. After the block
    the file's data is fsync'ed before the rename, and the folder after it (where the OS allows),
    so a crash never leaves a complete-looking but empty or partial file. On any error the
    temporary file is removed and ``path`` is left as it was. The temporary name encodes this
    host and process (see :func:`sweep_stale_tmp`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(_tmp_name(path.name))
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        yield tmp
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except PermissionError:  # umask left the owner no read access: nothing to fsync through
            fd = None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def sweep_stale_tmp(folder: str | os.PathLike, *, recursive: bool = False,
                    max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Remove leftover temporary files of killed jobs from ``folder``; return the removed paths.

    Only hidden ``.*.tmp`` files are considered. The rule, which never removes the temporary file of
    a job that is still writing:

    * a file named by :func:`atomic_path` on **this host** (``.<name>.<host>.<pid>.<token>.tmp``)
      is removed when process ``pid`` no longer exists;
    * any ``.*.tmp`` file (another host's, one whose pid is alive or was reused, or one not named
      by :func:`atomic_path`) is removed only once it was last modified more than ``max_age_s``
      ago (default 7 days), far longer than any job runs.

    Hosts are told apart by host name, so machines (or containers sharing a folder) must not share
    one. Files that vanish meanwhile or cannot be removed are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, now = _host_tag(), time.time()
    removed = []
    for tmp in folder.rglob(f".*{TMP_SUFFIX}") if recursive else folder.glob(f".*{TMP_SUFFIX}"):
        try:
            if not tmp.is_file():
                continue
            owner = _parse_tmp_name(tmp.name)
            dead = owner is not None and owner[0] == host and not _pid_alive(owner[1])
            if dead or now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically, with reproducible bytes.

    ``torch.save`` given a *path* records that file's name in every zip record, so saving through
    :func:`atomic_path`'s random temporary name made identical runs give different checkpoint
    bytes; saving through an open file handle records a fixed name instead.
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


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


def _read_table(path: str | os.PathLike) -> pd.DataFrame:
    from pipeline.errors import ArtifactError

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
    from pipeline.errors import ArtifactError

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
