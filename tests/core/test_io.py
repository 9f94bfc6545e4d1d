"""pipeline.core.artifacts: atomic artifacts (mode, fsync, cleanup, stale-temp sweep), reproducible
checkpoints, and the per-input schema checks of table aggregation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import artifacts as io
from pipeline.core.artifacts import atomic_path, save_torch, sweep_stale_tmp, write_json
from pipeline.core.errors import ArtifactError
from pipeline.core.tables import RESULT_COLUMNS, read_tables, result_frame, write_parquet

# ----------------------------------------------------------------------------------------------
# atomic_path
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    write_parquet(pd.DataFrame({"x": [1]}), tmp_path / "b.parquet")
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"c")
    for name in ("a.json", "b.parquet", "c.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_failed_block_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list((tmp_path / "sub").iterdir()) == []

    target.write_text("old")  # an existing artifact survives a failed rewrite
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and list((tmp_path / "sub").iterdir()) == [target]


def test_failed_rename_leaves_no_temporary(tmp_path, monkeypatch):
    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        write_json(tmp_path / "a.json", {})
    assert list(tmp_path.iterdir()) == []


def test_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else fd))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"data")
    kinds = [e[0] for e in events]
    assert kinds[:2] == ["fsync", "replace"]
    assert events[1][1] == str(tmp)
    if Path("/proc/self/fd").is_dir():
        assert events[0][1] == str(tmp)  # the file's data, before it gets its final name
        assert ("fsync", str(tmp_path)) in events[2:]  # the folder, after the rename


def test_temporary_name_encodes_host_and_pid(tmp_path):
    with atomic_path(tmp_path / "x.v1.parquet") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.v1.parquet.") and tmp.name.endswith(".tmp")
        assert io._parse_tmp_name(tmp.name) == (io._host_tag(), os.getpid())
        tmp.write_bytes(b"")


# ----------------------------------------------------------------------------------------------
# sweep_stale_tmp
# ----------------------------------------------------------------------------------------------


def _killed_job_tmp(folder: Path) -> Path:
    """Run a job that is SIGKILLed inside atomic_path; return the temporary file it left."""
    code = (
        "import os, signal, sys\n"
        "from pipeline.core.artifacts import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    print(tmp, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(folder / "killed.h5")],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    tmp = Path(proc.stdout.strip())
    assert tmp.exists() and tmp.parent == folder
    return tmp


def test_sweep_removes_dead_jobs_temporaries_and_keeps_live_ones(tmp_path):
    dead = _killed_job_tmp(tmp_path)
    other_host_fresh = tmp_path / ".a.parquet.some-other-node.4242.00ff00ff.tmp"
    other_host_old = tmp_path / ".b.parquet.some-other-node.4242.00ff00ff.tmp"
    foreign_fresh = tmp_path / ".c.parquet.kx81_3.tmp"  # not named by atomic_path
    foreign_old = tmp_path / ".d.parquet.kx81_3.tmp"
    unrelated = [tmp_path / "result.tmp", tmp_path / "e.parquet"]  # not hidden temporaries
    for p in [other_host_fresh, other_host_old, foreign_fresh, foreign_old, *unrelated]:
        p.write_bytes(b"x")
    week_ago = time.time() - 8 * 24 * 3600
    for p in (other_host_old, foreign_old):
        os.utime(p, (week_ago, week_ago))
    (tmp_path / "sub").mkdir()
    nested_dead = (tmp_path / "sub" / dead.name)
    nested_dead.write_bytes(b"x")

    with atomic_path(tmp_path / "live.h5") as live:  # this process is alive and still writing
        live.write_bytes(b"partial")
        removed = sweep_stale_tmp(tmp_path)
        assert live.exists()
    assert sorted(removed) == sorted([dead, other_host_old, foreign_old])
    for p in (dead, other_host_old, foreign_old):
        assert not p.exists()
    for p in (other_host_fresh, foreign_fresh, *unrelated, nested_dead):
        assert p.exists()
    assert (tmp_path / "live.h5").read_bytes() == b"partial"

    assert sweep_stale_tmp(tmp_path, recursive=True) == [nested_dead]
    assert sweep_stale_tmp(tmp_path / "missing") == []


# ----------------------------------------------------------------------------------------------
# save_torch
# ----------------------------------------------------------------------------------------------


def test_save_torch_is_atomic_and_byte_reproducible(tmp_path, umask):
    torch = pytest.importorskip("torch")
    umask(0o022)
    torch.manual_seed(0)
    state = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).state_dict()
    save_torch(state, tmp_path / "run1" / "epoch_001.pt")
    save_torch(state, tmp_path / "run2" / "model.pt")
    a, b = (tmp_path / "run1" / "epoch_001.pt").read_bytes(), (tmp_path / "run2" / "model.pt").read_bytes()
    assert a == b
    back = torch.load(tmp_path / "run2" / "model.pt", weights_only=True)
    assert all(torch.equal(back[k], v) for k, v in state.items())
    assert sorted(p.name for p in (tmp_path / "run1").iterdir()) == ["epoch_001.pt"]
    assert (tmp_path / "run1" / "epoch_001.pt").stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------------------------
# read_tables and stages.aggregate
# ----------------------------------------------------------------------------------------------


def _rows(seed: int, n: int = 2) -> pd.DataFrame:
    return result_frame([
        {"dataset": "digits", "model": "mlp", "corruption": 0.5, "seed": seed, "variant": "standard",
         "epoch": e, "layer": "output", "probe": "model", "probe_setting": "", "fit_labels": "corrupted",
         "split": "test", "target": "true", "accuracy": 0.5, "n_correct": 1, "n_samples": 2}
        for e in range(n)
    ])


def _write_results(tmp_path: Path, *frames: pd.DataFrame) -> list[Path]:
    paths = []
    for i, df in enumerate(frames):
        path = tmp_path / f"t{i}.parquet"
        write_parquet(df, path, {"config": "{}", "pipeline_version": "1"})
        paths.append(path)
    return paths


def test_aggregate_of_valid_tables(tmp_path):
    from pipeline.stages import aggregate

    paths = _write_results(tmp_path, _rows(1), _rows(0), _rows(2)[list(reversed(RESULT_COLUMNS))])
    table = aggregate(paths, tmp_path / "all.parquet")
    assert list(table.columns) == list(RESULT_COLUMNS) and len(table) == 6
    assert table["seed"].tolist() == [0, 0, 1, 1, 2, 2]
    back = pd.read_parquet(tmp_path / "all.parquet")
    assert all(back[c].dtype == t for c, t in RESULT_COLUMNS.items())


@pytest.mark.parametrize("position", [1, 2])
def test_aggregate_rejects_a_later_table_missing_a_column(tmp_path, position):
    from pipeline.stages import aggregate

    frames = [_rows(0), _rows(1), _rows(2)]
    frames[position] = frames[position].drop(columns=["n_correct"])
    paths = _write_results(tmp_path, *frames)
    with pytest.raises(ArtifactError) as err:
        aggregate(paths, tmp_path / "all.parquet")
    msg = str(err.value)
    assert str(paths[position]) in msg and "missing columns ['n_correct']" in msg
    assert not (tmp_path / "all.parquet").exists()


def test_aggregate_rejects_mistyped_and_extra_columns(tmp_path):
    from pipeline.stages import aggregate

    bad = _rows(1)
    bad["n_correct"] = bad["n_correct"].astype("float64")
    bad["note"] = "x"
    paths = _write_results(tmp_path, _rows(0), bad)
    with pytest.raises(ArtifactError) as err:
        aggregate(paths, tmp_path / "all.parquet")
    msg = str(err.value)
    assert str(paths[1]) in msg and "extra columns ['note']" in msg
    assert "n_correct is float64, expected int64" in msg


def test_aggregate_of_train_logs_checks_every_input_against_the_first(tmp_path):
    from pipeline.stages import aggregate

    log = pd.DataFrame({"epoch": np.arange(3, dtype=np.int64), "loss": [1.0, 0.5, 0.2], "run": "a"})
    good = _write_results(tmp_path, log, log.assign(run="b"))
    table = aggregate(good, tmp_path / "logs.parquet", check_schema=False)
    assert len(table) == 6 and table["epoch"].dtype == np.int64

    missing = log.drop(columns=["loss"]).assign(run="c")
    mistyped = log.assign(epoch=log["epoch"].astype("float64"))
    extra = log.assign(lr=0.1)
    for i, (bad, expect) in enumerate([(missing, "missing columns ['loss']"),
                                       (mistyped, "epoch is float64, expected int64"),
                                       (extra, "extra columns ['lr']")]):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        paths = _write_results(folder, log, log, bad)
        with pytest.raises(ArtifactError) as err:
            aggregate(paths, folder / "logs.parquet", check_schema=False)
        assert str(paths[2]) in str(err.value) and expect in str(err.value)
        assert str(paths[0]) in str(err.value)  # the table it was compared with


def test_unreadable_input_table_names_the_file(tmp_path):
    from pipeline.stages import aggregate

    paths = _write_results(tmp_path, _rows(0), _rows(1))
    paths[1].write_bytes(paths[1].read_bytes()[:40])
    with pytest.raises(ArtifactError, match="t1.parquet") as err:
        aggregate(paths, tmp_path / "all.parquet")
    assert "delete it" in str(err.value)
    with pytest.raises(ArtifactError, match="t1.parquet"):
        read_tables(paths, result_schema=False)


def test_read_tables_needs_inputs():
    with pytest.raises(ValueError, match="no input tables"):
        read_tables([], result_schema=True)


# ----------------------------------------------------------------------------------------------
# the one table builder: declared schemas, provenance with the code version, damaged tables
# ----------------------------------------------------------------------------------------------


def _family_schemas():
    """Every table schema the families declare (the builder's TableSchema instances)."""
    from pipeline.arithmetic import tables as arithmetic
    from pipeline.core import tables as core
    from pipeline.dynamics import tables as dynamics

    return {f"{module.__name__}.{name}": value for module in (core, dynamics, arithmetic)
            for name, value in vars(module).items() if isinstance(value, core.TableSchema)}


def test_every_family_table_is_declared_once_and_starts_with_the_run_keys():
    from pipeline.core.tables import RUN_KEY_COLUMNS, TableSchema

    schemas = _family_schemas()
    assert {"pipeline.core.tables.RESULTS", "pipeline.dynamics.tables.COMPOSITE", "pipeline.dynamics.tables.POINTWISE",
            "pipeline.dynamics.tables.SGD_NOISE", "pipeline.dynamics.tables.TRAJECTORIES",
            "pipeline.dynamics.tables.WELCH", "pipeline.arithmetic.tables.RESULTS",
            "pipeline.arithmetic.tables.NEURONS", "pipeline.arithmetic.tables.LOG",
            "pipeline.arithmetic.tables.MEMORIZATION"} <= set(schemas)
    for name, schema in schemas.items():
        lead = list(schema.columns)[:len(schema.run_keys)]
        assert lead == list(schema.run_keys), name
        # tables of runs join on the shared run keys; the Welch tests (across seeds) declare theirs
        if not name.endswith("WELCH"):
            assert lead[:5] == list(RUN_KEY_COLUMNS), name
        assert all(RUN_KEY_COLUMNS.get(k, t) == t for k, t in schema.run_keys.items()), name
    from pipeline.dynamics import tables as dynamics

    assert dynamics.RUN_KEY_COLUMNS is RUN_KEY_COLUMNS  # one definition, not a copy
    assert not hasattr(dynamics, "provenance")  # one provenance function: pipeline.core.tables.provenance
    with pytest.raises(ValueError, match="must start with its run keys"):
        TableSchema("bad", {"epoch": "int64", **RUN_KEY_COLUMNS}, ("epoch", *RUN_KEY_COLUMNS))
    with pytest.raises(ValueError, match="shared dtypes"):
        TableSchema("bad", {"dataset": "string", "seed": "float64"}, ("dataset", "seed"),
                    run_keys={"dataset": "string", "seed": "float64"})


def test_code_version_is_the_package_version_and_the_checkout_commit(monkeypatch, tmp_path):
    from pipeline import __version__
    from pipeline.core import tables

    tables.code_version.cache_clear()
    version = tables.code_version()
    assert version["pipeline_version"] == __version__
    root = Path(tables.__file__).resolve().parents[3]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # the tests run from the source checkout
        assert version["git_commit"] == head.stdout.strip()
        assert version["git_dirty"] in ("true", "false")
    # no git on the machine, or a package outside a checkout: "unknown", never an error
    monkeypatch.setattr(tables.shutil, "which", lambda name: None)
    tables.code_version.cache_clear()
    assert tables.code_version()["git_commit"] == "unknown"
    monkeypatch.undo()
    monkeypatch.setattr(tables, "_source_root", lambda: tmp_path)
    tables.code_version.cache_clear()
    assert tables.code_version() == {"pipeline_version": __version__, "git_commit": "unknown",
                                     "git_dirty": "unknown"}
    monkeypatch.undo()
    tables.code_version.cache_clear()


def test_every_written_table_records_the_config_sections_and_the_code_version(tmp_path):
    from pipeline.core.tables import RESULTS, code_version, provenance, read_parquet_metadata, write_table

    config = {"data": {"root": "data"}, "train": {"max_epochs": 3}, "probes": {"layers": "all"}}
    write_table(_rows(0), tmp_path / "t.parquet", RESULTS, provenance(config, sections=("data", "train")))
    meta = read_parquet_metadata(tmp_path / "t.parquet")
    assert json_loads(meta["config"]) == {"data": {"root": "data"}, "train": {"max_epochs": 3}}
    assert {k: meta[k] for k in code_version()} == code_version() and meta["table_schema"] == "result"
    # an aggregate is stamped with the code that made it, not the version an input carries
    from pipeline.stages import aggregate

    paths = _write_results(tmp_path, _rows(0))  # carries pipeline_version "1"
    aggregate(paths, tmp_path / "all.parquet")
    assert read_parquet_metadata(tmp_path / "all.parquet")["git_commit"] == code_version()["git_commit"]


def json_loads(text):
    import json

    return json.loads(text)


def test_write_table_checks_the_schema_and_writes_nothing_on_a_mismatch(tmp_path):
    from pipeline.core.tables import RESULTS, write_table

    bad = _rows(0).astype({"n_correct": "float64"})
    with pytest.raises(ValueError, match="n_correct is float64, expected int64"):
        write_table(bad, tmp_path / "t.parquet", RESULTS)
    with pytest.raises(ValueError, match="duplicate rows"):
        write_table(pd.concat([_rows(0), _rows(0)], ignore_index=True), tmp_path / "t.parquet", RESULTS)
    assert list(tmp_path.iterdir()) == []


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    else:
        path.write_bytes(b"this is not a parquet file\n" * 10)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_cell_table_is_named_with_the_remedy(tmp_path, how):
    """Gathering per-run (dynamics) or per-cell (arithmetic) tables: one error naming the file, not a
    raw ArrowInvalid."""
    from pipeline.core.tables import gather_tables
    from pipeline.dynamics import tables as T

    rows = [{"dataset": "digits", "model": "mlp", "corruption": 0.0, "seed": s, "variant": "standard",
             "depth": "fc1", "deep_epoch": 3, "window_start": 0, "reference": "paper", "split": "test",
             "subset": "all", "sample_index": 0, "consistency": 0.5, "n_epochs": 4, "dense": True}
            for s in (0, 1)]
    paths = []
    for i, row in enumerate(rows):
        paths.append(tmp_path / f"run{i}.parquet")
        T.pointwise_frame([row]).to_parquet(paths[-1])
    assert gather_tables(paths, T.POINTWISE)["seed"].tolist() == [0, 1]
    _damage(paths[1], how)
    with pytest.raises(ArtifactError, match="run1.parquet") as err:
        gather_tables(paths, T.POINTWISE)
    assert "delete it and rerun the workflow" in str(err.value)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_aggregated_table_is_refused_by_every_family_reader(tmp_path, how):
    """A damaged table in results/tables is not a figure input: each family's reader names it and
    says to delete it; :func:`damaged_tables` finds it (so the workflow can drop it and rebuild)."""
    from pipeline.arithmetic.figures import read_tables as arithmetic_tables
    from pipeline.core.tables import damaged_tables
    from pipeline.dynamics.figures import read_tables as dynamics_tables
    from pipeline.images.plots import draw_figures

    (good,) = _write_results(tmp_path, _rows(0))
    bad = tmp_path / "probes.parquet"
    bad.write_bytes(good.read_bytes())
    _damage(bad, how)
    assert damaged_tables([good, bad, tmp_path / "absent.parquet"]).keys() == {str(bad)}
    for read in (lambda: draw_figures({"training": tmp_path / "x.png"}, bad, good, "digits", "mlp"),
                 lambda: dynamics_tables(composite=bad, pointwise=good),
                 lambda: arithmetic_tables(results=bad)):
        with pytest.raises(ArtifactError, match="probes.parquet") as err:
            read()
        assert "delete it" in str(err.value)
    assert not (tmp_path / "x.png").exists()


def test_a_table_of_another_schema_is_refused_by_the_figure_readers(tmp_path):
    from pipeline.dynamics.figures import read_tables as dynamics_tables

    (results,) = _write_results(tmp_path, _rows(0))
    with pytest.raises(ArtifactError, match=r"does not match the composite schema: missing columns"):
        dynamics_tables(composite=results, pointwise=results)
