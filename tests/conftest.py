"""Shared by the workflow tests: the tiny config and a Snakemake runner.

* :data:`TINY` / the ``tiny_config`` fixture: two runs (digits MLP, corruption 0 and 0.8), three
  checkpoints each (epochs 0, 2, 4), one probe, no modular arithmetic; the tests that need something else write their
  differences out next to it (``{**tiny_config, "corruptions": [0.5], ...}``).
* the ``snakemake`` fixture (:class:`Snakemake`): runs this environment's Snakemake in a
  subprocess and returns a :class:`SnakemakeResult`, whose :meth:`~SnakemakeResult.job_counts`
  reads the job table of a dry run.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"train_subset": 300, "test_subset": 150},
    "datasets": ["digits"],
    "models": ["mlp"],
    "corruptions": [0.0, 0.8],
    "seeds": [0],
    "train": {"max_epochs": 4, "target_train_accuracy": 1.0, "num_threads": 1, "overrides": {"mlp": {"lr": 0.01}}},
    "probes": {"settings": [{"name": "masc", "params": {"variance": 0.99}}]},
    # the modular-arithmetic experiment (on in the embedded default) has tests of its own
    "arithmetic": {"enabled": False},
}


def pytest_report_header(config) -> list[str]:
    """What a failure far from here needs to be read: the free space where the tests write (the
    end-to-end tests write checkpoints) and the CPU kernels torch picked on this machine."""
    import shutil
    import tempfile

    import torch

    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    return [f"free disk under {tempfile.gettempdir()}: {free:.1f} GiB; torch {torch.__version__}, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs"]


@pytest.fixture
def tiny_config() -> dict:
    """A fresh copy of :data:`TINY` (tests may change it in place)."""
    return copy.deepcopy(TINY)


@dataclass
class SnakemakeResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def job_counts(self) -> dict[str, int]:
        """Rule -> number of jobs, from the 'Job stats' table a (dry) run prints; without the
        'total' row. Empty when there is nothing to be done; an error when there should be a
        table and none can be read (so that a changed Snakemake output cannot pass silently)."""
        if re.search(r"^Nothing to be done", self.output, re.M):
            return {}
        lines = self.output.splitlines()
        try:
            start = next(i for i, line in enumerate(lines) if line.split() == ["job", "count"])
        except StopIteration:
            raise AssertionError(f"no job table in the output of snakemake {' '.join(self.args)}:\n"
                                 f"{self.output[-3000:]}") from None
        counts, total = {}, None
        for line in lines[start + 1:]:
            parts = line.split()
            if parts and set(parts[0]) <= set("-"):  # the rule under the header
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                break
            if parts[0] == "total":
                total = int(parts[1])
            else:
                counts[parts[0]] = int(parts[1])
        assert total == sum(counts.values()), (total, counts)
        return counts


class Snakemake:
    """Runs Snakemake from this interpreter's environment (its bin/ first on PATH, so that the
    jobs' ``python`` and ``snakemake`` are this environment's too)."""

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    @staticmethod
    def command(*args: str, workdir: Path | None = None) -> list[str]:
        """``python -m snakemake``; with ``workdir``: the repository's Snakefile run in ``workdir``.
        (Targets go before options that take several values, such as ``--configfile``.)"""
        cmd = [sys.executable, "-m", "snakemake"]
        if workdir is not None:
            cmd += ["-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
        return cmd + [str(a) for a in args]

    def __call__(self, *args, workdir: Path | None = None, config: dict | None = None, cwd: Path | None = None,
                 check: bool = True, timeout: int = 900) -> SnakemakeResult:
        """Run ``snakemake *args``; ``config`` is written to ``workdir/config.yaml`` and given
        with ``--configfile``. With ``check``, a non-zero exit fails the test with the output."""
        if config is not None:
            assert workdir is not None, "a config is written into the workdir"
            path = workdir / "config.yaml"
            path.write_text(yaml.safe_dump(config))
            args = (*args, "--configfile", str(path))  # last: it takes every value up to the next option
        cmd = self.command(*args, workdir=workdir)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=self.env, timeout=timeout)
        result = SnakemakeResult([str(a) for a in args], proc.returncode, proc.stdout, proc.stderr,
                                 time.monotonic() - t0)
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(result.args)} failed (exit {proc.returncode}):\n"
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return result


@pytest.fixture
def snakemake() -> Snakemake:
    return Snakemake()


@pytest.fixture
def one_torch_thread():
    """Tiny models: one intra-op thread is faster, and robust on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class TrainedRun:
    """A standard run trained by the pipeline's own training stage, in a temporary folder."""

    config: dict      # validated, defaults filled in
    run: object       # pipeline.core.config.Run
    arrays: object    # pipeline.core.datasets.DatasetArrays (the run's subset)
    labels: object    # pipeline.core.labels.RunLabels (also saved as run_dir/labels.npz)
    run_dir: Path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """``trained_run(config, corruption=0.5, seed=0, model="mlp", dataset="digits")``: train the run
    once per session and argument set (its labels, checkpoints, log and index in ``run_dir``) and
    return a :class:`TrainedRun`. Tests must not change its files; copy them first."""
    from pipeline.config import validate_config
    from pipeline.core.config import Run
    from pipeline.core.labels import load_run_dataset, make_run_labels, save_labels
    from pipeline.core.runtime import RunRuntime
    from pipeline.images.train import train_run

    cache: dict[str, TrainedRun] = {}

    def make(config: dict, *, corruption: float = 0.5, seed: int = 0, model: str = "mlp",
             dataset: str = "digits") -> TrainedRun:
        key = yaml.safe_dump([config, corruption, seed, model, dataset], sort_keys=True)
        if key not in cache:
            full = validate_config(config)
            run = Run(dataset, model, corruption, seed)
            arrays = load_run_dataset(full, dataset)
            labels = make_run_labels(arrays, dataset=dataset, corruption=corruption, seed=seed)
            run_dir = tmp_path_factory.mktemp("trained_run")
            save_labels(labels, run_dir / "labels.npz")
            train_run(RunRuntime(full, run, arrays=arrays, labels=labels, run_dir=run_dir), progress=False)
            cache[key] = TrainedRun(full, run, arrays, labels, run_dir)
        return cache[key]

    return make
