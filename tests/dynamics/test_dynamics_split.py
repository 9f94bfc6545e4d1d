"""Split models and composite networks (issue 9): forward_to / forward_from, composites, new models."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.models import MODELS, BottleneckMLP, ResNet20, build_model
from pipeline.dynamics import CompositeNetwork, build_composite, composite_state_dict

NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")
# smallest shape every model accepts; ResNet-20 and the bottleneck MLP also on their paper shapes
SHAPE = {"mlp": (1, 8), "cnn": (1, 8), "alexnet": (1, 8), "resnet18": (1, 8), "resnet20": (3, 16),
         "bottleneck_mlp": (1, 28), "mnist_mlp": (1, 8), "svhn_cnn": (3, 32), "stl10_cnn": (3, 96)}


def _build(name, seed=0, dropout=False):
    torch.manual_seed(seed)
    c, s = SHAPE[name]
    return build_model(name, in_channels=c, image_size=s, num_classes=NUM_CLASSES, dropout=dropout)


def _x(name, n=3, seed=1):
    c, s = SHAPE[name]
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def _trained_like(name, seed):
    """A model whose BatchNorm running statistics are not the defaults (a few train-mode passes)."""
    model = _build(name, seed)
    model.train()
    with torch.no_grad():
        for k in range(3):
            model(_x(name, n=8, seed=100 + seed * 10 + k) * (1 + seed))
    return model.eval()


def test_registries():
    """The dynamics models are in the one registry (no second one)."""
    assert list(MODELS) == ["mlp", "cnn", "alexnet", "resnet18", "resnet20", "bottleneck_mlp",
                            "mnist_mlp", "svhn_cnn", "stl10_cnn"]
    r20, bot = MODELS["resnet20"], MODELS["bottleneck_mlp"]
    assert (r20.optimizer, r20.lr, r20.momentum, r20.weight_decay, r20.batch_size) == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert r20.lr_decay_epochs == (100, 150) and r20.lr_decay_factor == 0.1
    assert (bot.optimizer, bot.lr, bot.weight_decay) == ("sgd", 0.1, 1e-5)
    for name in ("mlp", "cnn", "alexnet", "resnet18"):  # existing defaults unchanged by the new fields
        assert MODELS[name].weight_decay == 0.0 and MODELS[name].lr_decay_epochs == ()
    with pytest.raises(ValueError, match="resnet20"):
        build_model("vgg", in_channels=1, image_size=8, num_classes=2)


@pytest.mark.parametrize("name", list(MODELS))
def test_boundaries_cover_probe_layers_and_roundtrip(name):
    model = _trained_like(name, 0)
    assert set(model.probe_layers) <= set(model.split_boundaries)
    assert model.unowned_state_keys() == ()
    x = _x(name)
    with torch.no_grad():
        logits, acts = model.forward_layers(x)
        previous = set()
        for b in model.split_boundaries:
            z = model.forward_to(b, x)
            if b in acts:
                assert torch.equal(z, acts[b])
            assert torch.equal(model.forward_from(b, z), logits)
        for b in [st.name for st in model._split_stages()]:  # shallow keys grow with depth
            keys = set(model.shallow_state_keys(b))
            assert previous <= keys
            previous = keys
    with pytest.raises(ValueError, match="boundar"):
        model.forward_to("nope", x)


@pytest.mark.parametrize("name", list(MODELS))
def test_composite_of_a_checkpoint_with_itself_is_the_model(name):
    model = _trained_like(name, 1)
    state = model.state_dict()
    x = _x(name)
    fresh = _build(name, 7)  # one architecture instance, reloaded per boundary
    with torch.no_grad():
        logits = model(x)
        for b in model.split_boundaries:  # aliases included
            comp = build_composite(lambda: fresh, state, state, b)
            torch.testing.assert_close(comp(x), logits, rtol=0, atol=1e-6)
            glued = CompositeNetwork(model, model, b)
            torch.testing.assert_close(glued(x), logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet20"])
def test_composite_keeps_each_checkpoints_buffers(name):
    a, b = _trained_like(name, 1), _trained_like(name, 2)
    sa, sb = a.state_dict(), b.state_dict()
    boundary = "stage1.block2" if name == "resnet20" else "L1"
    merged = composite_state_dict(a, sa, sb, boundary)
    shallow = set(a.shallow_state_keys(boundary))
    assert "bn1.running_mean" in shallow and any("running_var" in k for k in shallow)
    for k, v in merged.items():
        assert torch.equal(v, (sa if k in shallow else sb)[k]), k
    assert not torch.equal(sa["bn1.running_mean"], sb["bn1.running_mean"])
    deep_bn = "stage3.2.bn2.running_var" if name == "resnet20" else "layer4.1.bn2.running_var"
    assert deep_bn not in shallow and torch.equal(merged[deep_bn], sb[deep_bn])
    x = _x(name)
    with torch.no_grad():
        comp = build_composite(lambda: _build(name, 9), sa, sb, boundary)(x)
        glued = CompositeNetwork(a, b, boundary)(x)
        manual = b.forward_from(boundary, a.forward_to(boundary, x))
    torch.testing.assert_close(comp, manual, rtol=0, atol=1e-6)
    torch.testing.assert_close(glued, manual, rtol=0, atol=0)
    assert not torch.allclose(comp, a(x)) and not torch.allclose(comp, b(x))


def test_mlp_composite_equals_hand_computed_products():
    a, b = _build("mlp", 1).double().eval(), _build("mlp", 2).double().eval()
    sa, sb = a.state_dict(), b.state_dict()
    x = _x("mlp").double()
    for boundary, n_shallow in (("fc1", 1), ("fc2", 2), ("fc4", 4)):
        comp = build_composite(lambda: _build("mlp", 3).double(), sa, sb, boundary)
        h = x.flatten(1)
        for i, name in enumerate(("fc1", "fc2", "fc3", "fc4"), start=1):
            src = sa if i <= n_shallow else sb
            h = torch.clamp(h @ src[f"{name}.weight"].T + src[f"{name}.bias"], min=0)
        expected = h @ sb["output.weight"].T + sb["output.bias"]
        with torch.no_grad():
            torch.testing.assert_close(comp(x), expected, rtol=0, atol=1e-10)


def test_resnet20_architecture():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, image_size=32, num_classes=NUM_CLASSES)
    assert isinstance(model, ResNet20)
    assert sum(p.numel() for p in model.parameters()) == 269_722 - 650 + 65 * NUM_CLASSES  # 0.27M at K=10
    assert len(model.stage1) == len(model.stage2) == len(model.stage3) == 3
    assert model.PAPER_SPLIT == "stage1.block2" and model.PAPER_SPLIT_ALTERNATIVE == "stage2"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        shapes = {b: tuple(model.forward_to(b, x).shape[1:])
                  for b in ("stem", "stage1.block2", "stage1", "stage2.block1", "stage2", "stage3",
                            "avg_pool")}
    assert shapes["stem"] == shapes["stage1.block2"] == shapes["stage1"] == (16, 32, 32)
    assert shapes["stage2.block1"] == shapes["stage2"] == (32, 16, 16)
    assert shapes["stage3"] == (64, 8, 8) and shapes["avg_pool"] == (64,)
    with torch.no_grad():
        _, acts = model.forward_layers(x)
    assert {k: v[0].numel() for k, v in acts.items()} == {
        "stem": 16384, "stage1": 16384, "stage2": 8192, "stage3": 4096, "avg_pool": 64}
    # option-A shortcut has no parameters
    assert not any("shortcut" in k or "downsample" in k for k in model.state_dict())


def test_bottleneck_mlp():
    model = _build("bottleneck_mlp").eval()
    assert isinstance(model, BottleneckMLP)
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert shapes == [(784, 100), (100, 2), (2, NUM_CLASSES)]
    x = _x("bottleneck_mlp", n=64)
    with torch.no_grad():
        logits, acts = model.forward_layers(x)
        z = model.forward_to("bottleneck", x)
    assert z.shape == (64, 2) and (z < 0).any()  # no activation after the 2-D layer
    torch.testing.assert_close(model.classifier(acts["bottleneck"]), logits)
    expected = F.relu(x.flatten(1) @ model.fc1.weight.T + model.fc1.bias) @ model.bottleneck.weight.T
    torch.testing.assert_close(z, expected + model.bottleneck.bias)
