"""The prepared device-check script (benchmarks/device_checks.sh) runs end to end at toy sizes on
the CPU, so the one command a GPU lease gets does not rot between the sessions that have one."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FASHION.exists() and not os.environ.get("CI"),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_device_checks_smoke_runs_every_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "benchmarks/device_checks.sh", "--smoke"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / "summary.txt").read_text()
    for step in ("fashion-mnist", "calibrate", "extract", "probes", "spectral"):
        assert f"== {step}: exit 0 " in summary, summary
    # the figures each step exists for
    assert "best MASC / VeLPIC" in summary and "agree" in summary and "checkpoint total" in summary
    assert "one by one" in summary
    calibration = json.loads((tmp_path / "cost_calibration.json").read_text())
    assert {e["device"] for e in calibration["entries"]} >= {"cpu", "cuda"}
    with tarfile.open(tmp_path / "device_checks.tar.gz") as tar:
        names = tar.getnames()
        runs = json.load(tar.extractfile("./fashion_mnist/summary.json"))
    assert not [n for n in names if n.endswith((".pt", ".h5"))]  # checkpoints, fitted probes stay behind
    assert "./fashion_mnist/c0.8/probes.parquet" in names  # the fused stage's tidy table
    assert [r["corruption"] for r in runs] == [0.0, 0.8]
    assert all(r["epochs"] == 2 and [p["epoch"] for p in r["probes"]][0] == 0 for r in runs)


def test_device_checks_rejects_an_unknown_argument():
    done = subprocess.run(["bash", "benchmarks/device_checks.sh", "--gpu"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "unknown argument '--gpu'" in done.stderr


def test_fashion_mnist_full_checks_the_data_before_starting_processes(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/fashion_mnist_full.py", "--root", str(tmp_path / "none"),
                           "--corruptions", "0", "0.8", "--out", str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 1
    assert done.stderr.strip().startswith("fashion_mnist_full: Dataset 'fashion_mnist' not found")
    assert not (tmp_path / "out").exists()  # nothing started, nothing written
