"""A rerun of the documented cell command gives the same numbers (issue 16, "claims that hold").

The cell is a function of its settings only: not of the hash seed of the Python process (set/dict
order of strings), not of the thread count, not of an earlier run in the same folder. What it may
depend on is the CPU's kernel path (AVX2 vs AVX-512), which the cell records in its index.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from pipeline.core.tables import read_parquet_metadata

#: a cell that trains in a fraction of a second but has noisy, clean and test pairs
TINY = {"P": 7, "train_fraction": 0.7, "alpha": 0.5, "width": 9, "epochs": 20, "log_every": 5,
        "checkpoint_every": 10, "partition": [[0.5, 0.5]], "prune_fractions": [0.5, 1.0]}

ROOT = Path(__file__).resolve().parents[2]


def _run_cell_command(out_dir: Path, *, hash_seed: str, threads: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "arithmetic-cell", "--threads", str(threads),
         "--settings-json", json.dumps(dict(TINY)), "--out-dir", str(out_dir)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def _results(cell: Path) -> pd.DataFrame:
    table = pd.read_parquet(cell / "arithmetic.parquet")
    return table.sort_values(list(table.columns.drop(["accuracy", "n_correct", "n_samples"]))).reset_index(drop=True)


def test_cell_command_repeats_under_other_hash_seed_and_threads(tmp_path):
    """Two processes with different PYTHONHASHSEED and thread counts write the same accuracies,
    neuron statistics, training log and final weights (checkpoint bytes)."""
    first, second = tmp_path / "first", tmp_path / "second"
    for out, hash_seed, threads in ((first, "1", 1), (second, "4242", 2)):
        done = _run_cell_command(out, hash_seed=hash_seed, threads=threads)
        assert done.returncode == 0, done.stderr[-2000:]
    pd.testing.assert_frame_equal(_results(first), _results(second))
    pd.testing.assert_frame_equal(pd.read_parquet(first / "arithmetic_neurons.parquet"),
                                  pd.read_parquet(second / "arithmetic_neurons.parquet"))
    logs = [pd.read_parquet(c / "train_log.parquet").drop(columns="seconds") for c in (first, second)]
    pd.testing.assert_frame_equal(*logs)
    last = f"epoch_{TINY['epochs']}.pt"
    assert (first / "checkpoints" / last).read_bytes() == (second / "checkpoints" / last).read_bytes()
    # the printed summary line (what the docs quote) is the same too
    assert _run_summary(first) == _run_summary(second)


def _run_summary(cell: Path) -> dict:
    res = _results(cell)
    last = res[(res["epoch"] == res["epoch"].max()) & (res["score"] == "none") & (res["split"] == "test")]
    return last.set_index("network")["accuracy"].to_dict()


def test_cell_rerun_in_process_is_identical_and_records_kernel_path(tmp_path, one_torch_thread):
    """run_cell twice in one process (torch's global generator advanced in between) and once more
    into a folder holding an earlier run: identical tables; another seed gives other weights;
    index.json names torch and the CPU's kernel path the numbers were made with."""
    import torch

    from pipeline.arithmetic.cell import run_cell

    settings = dict(TINY)
    run_cell(settings, tmp_path / "a")
    torch.rand(1000)  # state left behind by other work in the process must not matter
    run_cell(settings, tmp_path / "b")
    run_cell(settings, tmp_path / "a")  # over its own earlier artifacts
    pd.testing.assert_frame_equal(_results(tmp_path / "a"), _results(tmp_path / "b"))
    run_cell({**settings, "seed": 1}, tmp_path / "seed1")  # the seed is not ignored
    neurons = [pd.read_parquet(tmp_path / c / "arithmetic_neurons.parquet")["ipr_paper"] for c in ("a", "seed1")]
    assert not neurons[0].equals(neurons[1])
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["torch"] == torch.__version__
    assert index["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    meta = read_parquet_metadata(tmp_path / "a" / "arithmetic.parquet")
    assert "config" in meta
