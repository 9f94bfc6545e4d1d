"""Training: the checkpoint schedule, the authors' defaults, and resume-after-kill."""

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from pipeline.runtime import RunRuntime
from pipeline.config import Run, validate_config
from pipeline.data import make_run_labels
from pipeline.datasets import load_dataset, subsample
from pipeline.io import read_parquet_metadata
from pipeline.train import hyperparameters, train_run
from pipeline.workflow import checkpoint_schedule, schedule_for


def test_schedule_matches_the_papers():
    # epoch 0, every 2 to 20, then every 5 (MLP/CNN/ResNet) or every 10 (AlexNet)
    assert checkpoint_schedule(40) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30, 35, 40]
    assert checkpoint_schedule(50, late_every=10)[-4:] == [20, 30, 40, 50]
    assert checkpoint_schedule(7) == [0, 2, 4, 6]
    config = validate_config({"train": {"max_epochs": 60}})
    assert schedule_for(config, "alexnet")[-3:] == [40, 50, 60]
    assert schedule_for(config, "mlp")[-3:] == [50, 55, 60]


def test_authors_optimizer_defaults_and_overrides():
    config = validate_config({})
    assert hyperparameters(config, "mlp", "mnist") == {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9,
                                                       "batch_size": 32, "weight_decay": 0.0}
    assert hyperparameters(config, "cnn", "cifar10")["batch_size"] == 32
    assert hyperparameters(config, "cnn", "mnist")["batch_size"] == 128
    assert hyperparameters(config, "alexnet", "tiny_imagenet")["lr"] == 1e-4
    assert hyperparameters(config, "resnet18", "cifar10")["optimizer"] == "sgd"
    config = validate_config({"train": {"overrides": {"mlp": {"lr": 0.05}}}})
    assert hyperparameters(config, "mlp", "digits")["lr"] == 0.05


TINY = {"data": {"train_subset": 200, "test_subset": 100}, "corruptions": [0.5],
        "train": {"max_epochs": 7, "target_train_accuracy": 1.0, "device": "cpu", "dropout": True,
                  "num_threads": 1,  # same float reduction order in this process and the killed one
                  "overrides": {"mlp": {"lr": 0.01}}}}


def _tiny_inputs():
    config = validate_config(TINY)
    arrays = subsample(load_dataset("digits"), 200, 100, seed=0)
    run = Run("digits", "mlp", 0.5, 0)
    labels = make_run_labels(arrays, dataset="digits", corruption=0.5, seed=0)
    return config, arrays, run, labels


def test_training_writes_schedule_log_and_index(tmp_path):
    config, arrays, run, labels = _tiny_inputs()
    result = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path), progress=False)
    assert result.epochs == [0, 2, 4, 6, 7]  # schedule plus the final epoch
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == sorted(
        f"epoch_{e}.pt" for e in result.epochs)
    log = pd.read_parquet(tmp_path / "train_log.parquet")
    assert list(log.epoch) == list(range(8))
    assert {"loss", "train_acc_corrupted", "train_acc_true", "test_acc"} <= set(log.columns)
    assert log.loc[1:, "loss"].notna().all()
    # checkpoints are plain state_dicts
    state = torch.load(tmp_path / "checkpoints/epoch_7.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not (tmp_path / "resume.pt").exists()


def test_stops_at_target_accuracy(tmp_path):
    config, arrays, run, labels = _tiny_inputs()
    config["train"]["target_train_accuracy"] = 0.3
    config["train"]["max_epochs"] = 50
    result = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path), progress=False)
    assert result.stop_reason == "target_train_accuracy"
    assert result.final_epoch < 50 and result.epochs[-1] == result.final_epoch
    assert result.log.train_acc_corrupted.iloc[-1] >= 0.3


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_train import _tiny_inputs
    from pipeline.runtime import RunRuntime
    from pipeline.train import train_run
    config, arrays, run, labels = _tiny_inputs()
    config = {json_config}
    def die(epoch):
        if epoch == 4:
            os.kill(os.getpid(), signal.SIGKILL)
    train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir={out!r}), after_epoch=die, progress=False)
""")


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    config, arrays, run, labels = _tiny_inputs()
    reference = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path / "ref"), progress=False)

    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), out=str(out), json_config="config")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "resume.pt").exists() and not (out / "checkpoints/index.json").exists()
    assert not list(out.rglob("*.tmp"))

    resumed = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=out), progress=False)
    assert resumed.epochs == reference.epochs
    for epoch in reference.epochs:
        a = torch.load(tmp_path / f"ref/checkpoints/epoch_{epoch}.pt", weights_only=True)
        b = torch.load(out / f"checkpoints/epoch_{epoch}.pt", weights_only=True)
        for key in a:
            assert torch.equal(a[key], b[key]), (epoch, key)
    pd.testing.assert_frame_equal(reference.log.drop(columns="seconds"), resumed.log.drop(columns="seconds"))


def _killed_at_epoch_4(tmp_path, config_expr="config"):
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), out=str(out), json_config=config_expr)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "resume.pt").exists()
    return out


@pytest.mark.parametrize("change", ["lr", "optimizer"])
def test_stale_resume_state_is_discarded_when_the_config_changed(tmp_path, capsys, change):
    """A killed run restarted with other settings trains afresh with them (no silent reuse of the
    old optimizer state, no KeyError on adam -> sgd), and says so."""
    config, arrays, run, labels = _tiny_inputs()
    # killed while training with SGD lr 0.01 (the tiny inputs' settings)
    out = _killed_at_epoch_4(tmp_path)
    new = copy.deepcopy(config)
    new["train"]["overrides"]["mlp"] = ({"lr": 0.05} if change == "lr" else {"optimizer": "adam", "lr": 0.001})
    resumed = train_run(RunRuntime(new, run, arrays=arrays, labels=labels, run_dir=out), progress=False)
    assert "discarding resume state" in capsys.readouterr().out
    fresh = train_run(RunRuntime(new, run, arrays=arrays, labels=labels, run_dir=tmp_path / "fresh"),
                      progress=False)
    pd.testing.assert_frame_equal(fresh.log.drop(columns="seconds"), resumed.log.drop(columns="seconds"))
    recorded = json.loads(read_parquet_metadata(out / "train_log.parquet")["hyperparameters"])
    assert recorded == fresh_hp(new)


def fresh_hp(config):
    return hyperparameters(config, "mlp", "digits")


def test_resume_state_of_other_labels_is_discarded(tmp_path, capsys):
    config, arrays, run, labels = _tiny_inputs()
    out = _killed_at_epoch_4(tmp_path)
    other = make_run_labels(arrays, dataset="digits", corruption=run.corruption, seed=run.seed + 1)
    train_run(RunRuntime(config, run, arrays=arrays, labels=other, run_dir=out), progress=False)
    assert "discarding resume state" in capsys.readouterr().out


def test_identical_runs_write_byte_identical_checkpoints(tmp_path):
    config, arrays, run, labels = _tiny_inputs()
    a = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path / "a"), progress=False)
    train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path / "b"), progress=False)
    for epoch in a.epochs:
        name = f"checkpoints/epoch_{epoch}.pt"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_cuda_request_without_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    config, arrays, run, labels = _tiny_inputs()
    config["train"]["device"] = "cuda"
    with pytest.raises(RuntimeError, match="no GPU"):
        train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path), progress=False)
