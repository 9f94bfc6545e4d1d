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


CHECKPOINT_DIR = "checkpoints"


CHECKPOINT_NAME = "epoch_{epoch}.pt"


INDEX_NAME = "index.json"     # the training job's "done" marker, written last


RESUME_NAME = "resume.pt"     # state of an interrupted training, removed when training completes
#: appended to every "rerun" advice: a Snakemake that was killed (the usual cause of a damaged
#: artifact) leaves its lock behind, and the next run then refuses to start until it is removed
UNLOCK_ADVICE = "if Snakemake says the directory is locked, run `snakemake --unlock` first"


def checkpoint_file(run_dir: str | Path, epoch: int | str) -> Path:
    """``{run_dir}/checkpoints/epoch_{epoch}.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_NAME.format(epoch=epoch)


def index_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / INDEX_NAME


def read_json(path: str | Path, what: str, redo: str):
    """A JSON file the pipeline wrote (``what`` names it in errors): a file that cannot be read or is
    cut short raises :class:`~pipeline.core.errors.ArtifactError` naming it and ``redo`` (how to
    make it again), never a bare ``JSONDecodeError``. The caller checks what the value holds."""
    from pipeline.core.errors import ArtifactError

    try:
        with open(path) as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{what} {path} is truncated or not JSON ({exc}); {redo}") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{what} {path} is unreadable ({exc}); {redo}") from None
    return obj


def read_index(path: str | Path) -> dict:
    """A run's ``checkpoints/index.json`` (epochs saved, final epoch, hyperparameters, run keys).

    The one reader (the workflow's DAG, the stages, the plan): a file that cannot be read, is cut
    short or is not the index raises :class:`~pipeline.core.errors.ArtifactError` naming it and how
    to retrain the run that wrote it, never a bare ``JSONDecodeError``/``KeyError``."""
    from pipeline.core.errors import ArtifactError

    redo = f"retrain the run: snakemake --forcerun {path} (with your usual options); {UNLOCK_ADVICE}"
    index = read_json(path, "checkpoint index", redo)
    if not isinstance(index, dict) or not isinstance(index.get("epochs"), list):
        raise ArtifactError(f"checkpoint index {path} holds no list of saved epochs ('epochs'); {redo}")
    return index
