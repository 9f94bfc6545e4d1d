"""Recovery advice that works: a corrupt checkpoint stops its job with one message saying what to do,
and doing exactly that retrains the run and completes the workflow."""

from __future__ import annotations

import re

import pytest
import torch

pytestmark = pytest.mark.slow

RUN = "results/runs/digits/mlp/c0.8/s0/standard"
OFF = {"edited_model": {"enabled": False}, "intervention": {"enabled": False},
       "relabel_retrain": {"enabled": False}}


def test_corrupt_checkpoint_advice_retrains_the_run(tmp_path, snakemake, tiny_config):
    config = {**tiny_config, "corruptions": [0.8], "transfer": OFF}
    target = "results/tables/probes.parquet"
    snakemake(target, "--cores", "2", workdir=tmp_path, config=config)

    checkpoint = tmp_path / RUN / "checkpoints/epoch_2.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    (tmp_path / RUN / "probes/epoch_2.parquet").unlink()
    (tmp_path / RUN / "activations/epoch_2.h5").unlink(missing_ok=True)  # kept or temporary
    # asking for that checkpoint's probe table re-extracts it from the corrupt file
    failed = snakemake(f"{RUN}/probes/epoch_2.parquet", "--cores", "2", workdir=tmp_path, config=config,
                       check=False)
    assert failed.returncode != 0
    logs = "\n".join(p.read_text() for p in (tmp_path / "logs").rglob("extract*epoch_2*.log"))
    advice = re.search(r"retrain the run: snakemake (--forcerun \S+index\.json)", logs)
    assert advice and f"{RUN}/checkpoints/epoch_2.pt" in logs, logs[-2000:]
    assert "Traceback" not in logs  # one line, not a traceback

    # follow the advice, literally
    rerun = snakemake(target, "--cores", "2", *advice.group(1).split(), workdir=tmp_path, config=config)
    assert rerun.job_counts().get("train") == 1, rerun.output[-2000:]
    state = torch.load(checkpoint, weights_only=True)  # rewritten by the retraining
    assert isinstance(state, dict) and state
    assert snakemake(target, "-n", workdir=tmp_path, config=config).job_counts() == {}
