"""The one training loop (:class:`pipeline.core.training.EpochLoop`), the one optimizer factory, the
one device resolution and the one seeding helper (:mod:`pipeline.core.device`).

Small real problems only: a synthetic 3-class problem, an arithmetic cell with P = 11, two digits epochs.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core import training as core_training
from pipeline.core.config import ConfigError
from pipeline.core.device import DeviceUnavailable, derived_seed, numpy_rng, resolve_device, seed_torch, torch_generator
from pipeline.core.training import Batching, EpochEnd, EpochLoop, MuonWithAdamW, make_optimizer

SRC = Path(__file__).resolve().parents[2] / "src" / "pipeline"


# ----------------------------------------------------------------------------- a tiny synthetic problem

def synthetic(n: int = 37, d: int = 5, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch_generator(seed)
    centers = 3 * torch.randn(k, d, generator=g)
    y = torch.arange(n) % k
    return centers[y] + torch.randn(n, d, generator=g), y


def tiny_model(d: int = 5, k: int = 3, seed: int = 0) -> torch.nn.Module:
    seed_torch(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.ReLU(), torch.nn.Linear(8, k))


def loop_for(model, x, y, batching, **kw) -> EpochLoop:
    opt = make_optimizer(model, {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0})
    return EpochLoop(model, opt, x, y, loss_fn=F.cross_entropy, batching=batching, **kw)


def test_full_batch_is_one_step_per_epoch_and_equals_plain_gradient_descent():
    x, y = synthetic()
    ends: list[EpochEnd] = []
    model = tiny_model()
    loop = loop_for(model, x, y, Batching(size=None), on_epoch_end=[ends.append])
    assert loop.run(1, 6) == (6, None)
    assert [e.epoch for e in ends] == list(range(1, 7)) and {e.steps for e in ends} == {1} and loop.steps == 6
    # the same six steps written out by hand: identical weights and losses, bit for bit
    ref = tiny_model()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(ref(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert [e.loss for e in ends] == losses
    for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert losses[-1] < losses[0]


def test_mini_batches_cover_every_sample_once_in_a_seeded_order():
    x, y = synthetic(n=37)
    seen: dict[int, list[torch.Tensor]] = {}

    def prepare(epoch):
        seen[epoch] = []
        return lambda xb, idx: (seen[epoch].append(idx.clone()), xb)[1]

    ends = []
    loop = loop_for(tiny_model(), x, y, Batching(size=8, seed=3), prepare=prepare, on_epoch_end=[ends.append])
    loop.run(1, 3)
    assert [e.steps for e in ends] == [5, 5, 5] and loop.steps == 15  # ceil(37 / 8), the last batch of 5
    for epoch, batches in seen.items():
        order = torch.cat(batches)
        assert sorted(order.tolist()) == list(range(37))
        expected = torch.randperm(37, generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch))
        assert torch.equal(order, expected)  # the order is a function of (seed, epoch) only
    assert not torch.equal(torch.cat(seen[1]), torch.cat(seen[2]))
    # a rerun gives the same losses; a lone last sample joins the batch before it when asked to
    again = []
    loop_for(tiny_model(), x, y, Batching(size=8, seed=3), on_epoch_end=[again.append]).run(1, 3)
    assert [e.loss for e in again] == [e.loss for e in ends]
    assert len(Batching(size=6, seed=0).batches(37, 1)) == 7
    merged = Batching(size=6, seed=0, merge_lone_last=True).batches(37, 1)
    assert [len(b) for b in merged] == [6, 6, 6, 6, 6, 7]
    # size >= n is still one shuffled batch (the image runs' rule); None is the stored order
    (whole,) = Batching(size=100, seed=0).batches(37, 1)
    assert sorted(whole.tolist()) == list(range(37)) and whole.tolist() != list(range(37))
    assert Batching(size=None).batches(37, 1) == [slice(None)]


def test_a_callback_stops_training_and_the_optimizer_may_be_replaced():
    x, y = synthetic()
    model = tiny_model()
    loop = loop_for(model, x, y, Batching(size=None))
    swapped = []

    def swap(end):
        if end.epoch == 2:
            loop.optimizer = make_optimizer(model, {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0})
            swapped.append(loop.optimizer)
        return "enough" if end.epoch == 4 else None

    loop.on_epoch_end.append(swap)
    assert loop.run(1, 10) == (4, "enough")
    assert isinstance(swapped[0], torch.optim.Adam) and swapped[0].state  # the new one took steps


# ----------------------------------------------------------------------------- the arithmetic trains through it

def test_arithmetic_training_goes_through_the_core_loop(monkeypatch):
    from pipeline.arithmetic.data import make_data
    from pipeline.arithmetic.model import build, pair_tensor
    from pipeline.arithmetic.train import TrainSettings, loss_fn, train

    d = make_data("add", 11, 0.6, 0.3, "wrong_only", 0)
    calls = []
    original = EpochLoop.train_epoch

    def counted(self, epoch):
        calls.append(epoch)
        return original(self, epoch)

    monkeypatch.setattr(EpochLoop, "train_epoch", counted)
    hooked: list[tuple[int, int]] = []
    s = TrainSettings(epochs=7, log_every=7, seed=2)
    r = train(d, {"width": 8}, s, hooks=[lambda model, end: hooked.append((end.epoch, end.steps))])
    assert calls == list(range(1, 8))                              # every epoch ran in the core loop
    assert hooked == [(e, 1) for e in range(1, 8)] and r.steps == 7  # full batch: one step per epoch
    n = d.train_idx.size
    mini = train(d, {"width": 8}, TrainSettings(epochs=2, batch_size=16, seed=2))
    assert mini.steps == 2 * math.ceil(n / 16)
    # a hook's stop reason ends training after that epoch
    short = train(d, {"width": 8}, TrainSettings(epochs=9, log_every=1, seed=2),
                  hooks=[lambda model, end: "stop" if end.epoch == 3 else None])
    assert list(short.log["epoch"]) == [0, 1, 2, 3]

    # the weights are those of the arithmetic's former hand-written loop (AdamW, full batch), bitwise
    seed_torch(2)
    ref = build({"width": 8, "P": 11})
    opt = torch.optim.AdamW(ref.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    xb = pair_tensor(d.a[d.train_idx], d.b[d.train_idx])
    yb = torch.from_numpy(d.given.astype(np.int64))
    for _ in range(7):
        opt.zero_grad(set_to_none=True)
        loss_fn("ce", ref(xb), yb).backward()
        opt.step()
    for k, v in ref.state_dict().items():
        assert torch.equal(v, r.model.state_dict()[k]), k


def test_memorization_check_trains_through_the_core_loop(monkeypatch):
    from pipeline.arithmetic.memorization import memorization_order

    steps = []
    original = EpochLoop.train_epoch

    def counted(self, epoch):
        end = original(self, epoch)
        steps.append(end.steps)
        return end

    monkeypatch.setattr(EpochLoop, "train_epoch", counted)
    df = memorization_order(0.2, epochs=2, hidden=16)
    assert steps == [1, 1] and list(df["epoch"]) == [0, 1, 2]
    with pytest.raises(ValueError, match="arithmetic.memorization.optimizer"):
        memorization_order(0.2, epochs=1, optimizer="lbfgs")


# ----------------------------------------------------------------------------- one optimizer factory

def test_make_optimizer_builds_every_optimizer_with_its_decay():
    model = tiny_model()
    base = {"lr": 0.01, "weight_decay": 0.1, "momentum": 0.9}
    sgd = make_optimizer(model, {**base, "optimizer": "sgd"})
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    adam = make_optimizer(model, {**base, "optimizer": "adam"})  # L2 decay coupled into the gradient
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.9, 0.999)
    adamw = make_optimizer(model, {**base, "optimizer": "adamw", "betas": [0.9, 0.98]})  # decoupled decay
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["betas"] == (0.9, 0.98)
    muon = make_optimizer(model, {**base, "optimizer": "muon"})
    assert isinstance(muon, MuonWithAdamW) and len(muon.param_groups) == 2
    muon.load_state_dict(muon.state_dict())
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; allowed: sgd, adam, adamw, muon"):
        make_optimizer(model, {**base, "optimizer": "rmsprop"})


# ----------------------------------------------------------------------------- device and seeding

def test_resolve_device_auto_cpu_and_cuda_without_gpu(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DeviceUnavailable, match=rf"config arithmetic.device is '{name}' but no GPU is "
                                                    r"visible.*set arithmetic.device to 'auto' or 'cpu'") as err:
            resolve_device(name, key="arithmetic.device")
        assert isinstance(err.value, ConfigError)  # exit status 2 on the command line, no traceback
    with pytest.raises(ConfigError, match="train.device is 'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


def test_device_module_is_torch_free_to_import():
    code = "import sys, pipeline.core.device; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_seeding_helpers_draw_what_the_ad_hoc_calls_drew():
    assert derived_seed(4, 9) == 4 * 1_000_003 + 9
    seed_torch(11)
    a = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(a, torch.rand(3))
    assert torch.equal(torch.randperm(9, generator=torch_generator(5)),
                       torch.randperm(9, generator=torch.Generator().manual_seed(5)))
    assert np.array_equal(numpy_rng(3, 17, 200_000).permutation(20),
                          np.random.default_rng([3, 17, 200_000]).permutation(20))
    assert core_training._epoch_seed(4, 9) == derived_seed(4, 9)


# ----------------------------------------------------------------------------- exactly one of each

def _sources() -> dict[Path, str]:
    return {p: p.read_text() for p in SRC.rglob("*.py")}


def test_one_make_optimizer_one_resolve_device_no_ad_hoc_device_or_seed_code():
    sources = _sources()

    def defining(name):  # one entry per definition
        return sorted(p.relative_to(SRC).as_posix() for p, s in sources.items()
                      for _ in re.finditer(rf"^\s*def {name}\(", s, re.M))

    assert defining("make_optimizer") == ["core/training.py"]
    assert defining("resolve_device") == ["core/device.py"]
    outside = {p.relative_to(SRC).as_posix() for p, s in sources.items() if "cuda.is_available(" in s}
    assert outside == {"core/device.py"}, f"torch.cuda.is_available() outside core: {sorted(outside)}"
    seeding = {p.relative_to(SRC).as_posix() for p, s in sources.items()
               if re.search(r"torch\.manual_seed\(|torch\.Generator\(|np\.random\.default_rng\(|np\.random\.seed\(", s)}
    assert seeding == {"core/device.py"}, f"ad hoc seeding outside pipeline.core.device: {sorted(seeding)}"
    # backward passes: the loop, the SGD-noise measurement (gradients, no step) and the linear
    # probe's own solver (an estimator's fit, one generator across epochs); no other training loop
    loops = {p.relative_to(SRC).as_posix() for p, s in sources.items() if re.search(r"\.backward\(\)", s)}
    assert loops == {"core/training.py", "dynamics/sgd_noise.py", "probes/linear.py"}, sorted(loops)


def test_augmentation_per_dataset():
    """train.augmentation as {dataset: name}: the feature-dynamics paper's cited code augments CIFAR
    and STL-10 (pad 4, crop, flip) but not MNIST or SVHN; a dataset not listed gets none."""
    from pipeline.config import validate_config

    config = validate_config({"train": {"augmentation": {"cifar10": "crop_flip", "stl10": "crop_flip"}}})
    assert [core_training.augmentation(config, d) for d in ("cifar10", "stl10", "mnist", "svhn")] == [
        "crop_flip", "crop_flip", "none", "none"]
    assert core_training.augmentation(validate_config({"train": {"augmentation": "crop_flip"}}), "mnist") == "crop_flip"
    assert core_training.augmentation(validate_config({}), "cifar10") == "none"
    with pytest.raises(ConfigError, match="augmentation"):
        validate_config({"train": {"augmentation": {"cifar11": "crop_flip"}}})


def test_target_train_accuracy_null_trains_the_full_schedule():
    """null: no early stop (a run that reaches 100 % train accuracy still trains to max_epochs)."""
    from pipeline.config import validate_config
    from pipeline.images.train import standard_plan

    config = validate_config({"train": {"target_train_accuracy": None, "max_epochs": 7}})
    plan = standard_plan(config, "mlp")
    assert plan.stop_at_target is None and plan.last_epoch == 7
    assert standard_plan(validate_config({}), "mlp").stop_at_target == 0.99
