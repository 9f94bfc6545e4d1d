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

from pipeline.config import validate_config
from pipeline.core.config import Run
from pipeline.core.datasets import load_dataset, subsample
from pipeline.core.labels import make_run_labels
from pipeline.core.runtime import RunRuntime
from pipeline.core.schedule import checkpoint_schedule, checkpoint_windows, schedule_for
from pipeline.core.tables import read_parquet_metadata
from pipeline.core.training import (
    crop_flip,
    crop_flip_draws,
    hyperparameters,
    lr_at_epoch,
    make_optimizer,
    train_one_epoch,
)
from pipeline.images.train import train_run


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
                                                       "batch_size": 32, "weight_decay": 0.0, "fused": True}
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


def test_deadline_ends_training_at_an_epoch_boundary_checkpointed(tmp_path):
    """A passed deadline: the epoch in flight is finished, checkpointed off-schedule, and the run
    is complete (log, index) with stop_reason "deadline"; no deadline trains to max_epochs."""
    import time

    config, arrays, run, labels = _tiny_inputs()
    result = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path), progress=False,
                       deadline=time.monotonic())
    assert result.stop_reason == "deadline" and result.final_epoch == 1
    assert result.epochs == [0, 1]  # epoch 1 is off the schedule [0, 2, 4, 6, 7] yet saved
    assert list(pd.read_parquet(tmp_path / "train_log.parquet").epoch) == [0, 1]
    assert json.loads((tmp_path / "checkpoints/index.json").read_text())["stop_reason"] == "deadline"
    far = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path / "far"),
                    progress=False, deadline=time.monotonic() + 3600)
    assert far.stop_reason == "max_epochs" and far.final_epoch == 7


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_train import _tiny_inputs
    from pipeline.core.runtime import RunRuntime
    from pipeline.images.train import train_run
    config, arrays, run, labels = _tiny_inputs()
    config = {json_config}
    def die(epoch):
        if epoch == 4:
            os.kill(os.getpid(), signal.SIGKILL)
    train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir={out!r}), after_epoch=die, progress=False)
""")


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    config, arrays, run, labels = _tiny_inputs()
    reference = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path / "ref"),
                          progress=False)

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


# ----------------------------------------------------------------------------- feature-dynamics recipes (issue 9)



@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_fused_optimizer_is_the_same_update_up_to_rounding(name):
    """train.fused_optimizer (default true) builds torch's fused kernel; false, torch's per-tensor
    loop; both give the same weights after a few steps up to float rounding."""
    from pipeline.core.training import make_optimizer

    assert "fused" not in hyperparameters(validate_config({"train": {"fused_optimizer": False}}), "mlp", "mnist")
    weights = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        opt = make_optimizer(model, {"optimizer": name, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3,
                                     "fused": fused})
        assert bool(opt.defaults.get("fused")) is fused
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            opt.zero_grad()
            x, y = torch.randn(32, 8, generator=gen), torch.randint(0, 3, (32,), generator=gen)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        weights[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)


def test_a_strided_parameter_gets_the_per_tensor_loop():
    """The fused CPU kernel reads each parameter as one flat run of memory; a model holding a
    transposed view (as a user's model may) is updated by torch's per-tensor loop instead."""
    from pipeline.core.training import make_optimizer

    model = torch.nn.Linear(4, 3)
    assert make_optimizer(model, {"optimizer": "adam", "lr": 0.1, "weight_decay": 0.0, "fused": True}).defaults["fused"]
    model.weight = torch.nn.Parameter(torch.randn(4, 3).t())
    assert not model.weight.is_contiguous()
    opt = make_optimizer(model, {"optimizer": "adam", "lr": 0.1, "weight_decay": 0.0, "fused": True})
    assert not opt.defaults.get("fused")
    before = model.weight.detach().clone()
    torch.nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
    opt.step()
    # Adam's first step moves every weight by lr in the direction against its gradient's sign
    torch.testing.assert_close(before - model.weight.detach(), 0.1 * model.weight.grad.sign())


def test_recipes_of_the_feature_dynamics_paper():
    config = validate_config({})
    assert hyperparameters(config, "resnet20", "cifar10") == {
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 128, "weight_decay": 1e-4,
        "lr_decay_epochs": [100, 150], "lr_decay_factor": 0.1, "fused": True}
    svhn = hyperparameters(config, "resnet20", "svhn")  # Table 2: Adam 1e-3, batch 200, no wd
    assert (svhn["optimizer"], svhn["lr"], svhn["batch_size"], svhn["weight_decay"]) == ("adam", 0.001, 200, 0.0)
    assert hyperparameters(config, "resnet20", "stl10")["weight_decay"] == 0.001
    assert hyperparameters(config, "resnet20", "mnist")["lr"] == 0.01
    assert hyperparameters(config, "bottleneck_mlp", "mnist") == {
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "batch_size": 200, "weight_decay": 1e-5, "fused": True}
    # decay epochs and factor are config, recorded in the hyperparameters; [] turns the decay off
    config = validate_config({"train": {"overrides": {
        "resnet20": {"lr_decay_epochs": [225, 150], "lr_decay_factor": 0.2},
        "mlp": {"lr_decay_epochs": [3]}}}})
    hp = hyperparameters(config, "resnet20", "cifar10")
    assert hp["lr_decay_epochs"] == [150, 225] and hp["lr_decay_factor"] == 0.2
    assert hyperparameters(config, "mlp", "digits")["lr_decay_epochs"] == [3]
    assert hyperparameters(config, "mlp", "digits")["lr_decay_factor"] == 0.1
    off = validate_config({"train": {"overrides": {"resnet20": {"lr_decay_epochs": []}}}})
    assert "lr_decay_epochs" not in hyperparameters(off, "resnet20", "cifar10")
    assert [lr_at_epoch(hp, e) for e in (0, 1, 150, 151, 225, 226)] == pytest.approx(
        [0.1, 0.1, 0.1, 0.02, 0.02, 0.004])
    # weight decay reaches the optimizer
    opt = make_optimizer(torch.nn.Linear(2, 2), hyperparameters(validate_config({}), "resnet20", "cifar10"))
    assert opt.param_groups[0]["weight_decay"] == 1e-4


def _reference_epoch(model, optimizer, x_uint8, y, transform, *, batch_size, seed, epoch):
    """The training epoch as it was before augmentation and lr schedules existed (verbatim logic)."""
    model.train()
    torch.manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(x_uint8.shape[0], generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    loss_fn = torch.nn.CrossEntropyLoss()
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(order)
        idx = order[start:stop]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(transform(x_uint8[idx])), y[idx]).backward()
        optimizer.step()


def _epoch_weights(augmentation, reference=False, epochs=2):
    config, arrays, run, labels = _tiny_inputs()
    rt = RunRuntime(config, run, arrays=arrays, labels=labels)
    model = rt.new_model()
    opt = make_optimizer(model, hyperparameters(config, "mlp", "digits"))
    y = torch.from_numpy(labels.corrupted)
    for epoch in range(1, epochs + 1):
        if reference:
            _reference_epoch(model, opt, rt.x_train, y, rt.transform, batch_size=32, seed=0, epoch=epoch)
        else:
            train_one_epoch(model, opt, rt.x_train, y, rt.transform, batch_size=32, seed=0, epoch=epoch,
                            device=torch.device("cpu"), augmentation=augmentation)
    return model.state_dict()


def test_augmentation_none_is_the_old_epoch_and_crop_flip_is_deterministic():
    before = _epoch_weights(None, reference=True)
    none = _epoch_weights("none")
    assert all(torch.equal(before[k], none[k]) for k in before)  # bit-identical to before
    a, b = _epoch_weights("crop_flip"), _epoch_weights("crop_flip")
    assert all(torch.equal(a[k], b[k]) for k in a)                # a function of the seed
    assert not all(torch.equal(a[k], none[k]) for k in a)         # and it does augment
    with pytest.raises(ValueError, match="crop_flip"):
        _epoch_weights("mixup", epochs=1)


def test_crop_flip_matches_a_hand_written_pad_crop_flip():
    x = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    offsets, flips = crop_flip_draws(6, seed=3, epoch=2)
    assert offsets.shape == (6, 2) and offsets.min() >= 0 and offsets.max() <= 8
    again = crop_flip_draws(6, seed=3, epoch=2)
    assert torch.equal(offsets, again[0]) and torch.equal(flips, again[1])
    assert not torch.equal(offsets, crop_flip_draws(6, seed=3, epoch=3)[0])
    out = crop_flip(x, offsets, flips)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for b in range(6):
        padded = torch.zeros(3, 5 + 8, 7 + 8, dtype=torch.uint8)
        padded[:, 4:9, 4:11] = x[b]
        top, left = offsets[b].tolist()
        crop = padded[:, top:top + 5, left:left + 7]
        expected = crop.flip(-1) if flips[b] else crop
        assert torch.equal(out[b], expected), b
    # no shift, no flip: the identity; full flip: a mirror
    zero = torch.full((6, 2), 4)
    assert torch.equal(crop_flip(x, zero, torch.zeros(6, dtype=torch.bool)), x)
    assert torch.equal(crop_flip(x, zero, torch.ones(6, dtype=torch.bool)), x.flip(-1))


def test_checkpoint_windows_add_every_epoch():
    base = validate_config({"train": {"max_epochs": 60}})
    assert checkpoint_windows(base) == [] and "windows" not in base["train"]["checkpoints"]
    dense = validate_config({"train": {"max_epochs": 60, "checkpoints": {"windows": [[31, 34], [58, 70]]}}})
    assert schedule_for(dense, "mlp") == sorted(set(schedule_for(base, "mlp")) | {31, 32, 33, 34, 58, 59, 60})
    assert schedule_for(validate_config({"train": {"max_epochs": 60, "checkpoints": {"windows": []}}}),
                        "alexnet") == schedule_for(base, "alexnet")
    with pytest.raises(ValueError, match="t_a <= t_b"):
        schedule_for(validate_config({"train": {"checkpoints": {"windows": [[5, 3]]}}}), "mlp")


DECAY = {"lr": 0.01, "lr_decay_epochs": [3, 5], "lr_decay_factor": 0.5}
DECAY_CONFIG = ("dict(config, train=dict(config['train'], augmentation='crop_flip', "
                f"overrides={{'mlp': {DECAY!r}}}, checkpoints=dict(config['train']['checkpoints'], "
                "windows=[[1, 3]])))")


def test_step_decay_augmentation_and_windows_in_training_and_resume(tmp_path, capsys):
    """The log's lr column is each epoch's actual lr; the scheduler and the augmentation survive a
    kill: resumed == uninterrupted, checkpoint by checkpoint and row by row."""
    config, arrays, run, labels = _tiny_inputs()
    config = eval(DECAY_CONFIG)
    reference = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path / "ref"),
                          progress=False)
    assert reference.epochs == [0, 1, 2, 3, 4, 6, 7]  # window [1, 3] added
    assert list(reference.log.lr) == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])
    hp = json.loads(read_parquet_metadata(tmp_path / "ref/train_log.parquet")["hyperparameters"])
    assert hp["lr_decay_epochs"] == [3, 5] and hp["lr_decay_factor"] == 0.5
    index = json.loads((tmp_path / "ref/checkpoints/index.json").read_text())
    assert index["hyperparameters"]["lr_decay_epochs"] == [3, 5]

    out = _killed_at_epoch_4(tmp_path, DECAY_CONFIG)
    assert "scheduler" in torch.load(out / "resume.pt", weights_only=True)
    capsys.readouterr()
    resumed = train_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=out), progress=False)
    printed = capsys.readouterr().out
    assert "resuming" in printed and "discarding" not in printed  # really resumed, not retrained
    assert resumed.epochs == reference.epochs
    for epoch in reference.epochs:
        a = torch.load(tmp_path / f"ref/checkpoints/epoch_{epoch}.pt", weights_only=True)
        b = torch.load(out / f"checkpoints/epoch_{epoch}.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), epoch
    pd.testing.assert_frame_equal(reference.log.drop(columns="seconds"), resumed.log.drop(columns="seconds"))


def test_new_optimizer_keeps_the_lr_schedule(tmp_path):
    """A hook that resets the optimizer (the intervention) continues the step decay where it was."""
    from pipeline.core.training import Trainer, current_lr
    from pipeline.images.train import standard_plan

    config, arrays, run, labels = _tiny_inputs()
    config = eval(DECAY_CONFIG)
    trainer = Trainer(RunRuntime(config, run, arrays=arrays, labels=labels), tmp_path,
                      standard_plan(config, "mlp"), progress=False)
    for done in (0, 2, 3, 4, 5, 6):
        trainer.epoch = done
        trainer.new_optimizer()
        assert current_lr(trainer.optimizer) == pytest.approx(lr_at_epoch(trainer.hp, done + 1)), done
