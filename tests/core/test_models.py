"""Model registry: shapes, probe layers, exact activations, classifier, defaults."""

from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.models import MODELS, PAPER_TABLE2, ModelSpec, ProbedModel, build_model, layer_dims

N = 2  # tiny batches keep the whole file fast
NUM_CLASSES = 10

# (in_channels, image_size) per dataset shape
DIGITS, MNIST, CIFAR, TINY, STL10 = (1, 8), (1, 28), (3, 32), (3, 64), (3, 96)
SHAPES = {"mlp": (DIGITS, MNIST, CIFAR), "cnn": (DIGITS, MNIST, CIFAR),
          "alexnet": (DIGITS, MNIST, CIFAR, TINY), "resnet18": (DIGITS, MNIST, CIFAR),
          "resnet20": (DIGITS, MNIST, CIFAR), "bottleneck_mlp": (DIGITS, MNIST, CIFAR),
          # the paper's SVHN / STL-10 networks need their datasets' image sizes (padding-0 convs)
          "mnist_mlp": (DIGITS, MNIST), "svhn_cnn": (CIFAR,), "stl10_cnn": (STL10,)}
PROBE_LAYERS = {
    "mlp": ("fc1", "fc2", "fc3", "fc4"),
    "cnn": ("block1", "block2", "flat", "fc1", "fc2", "fc3"),  # block3 = flat: probed once
    "alexnet": ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"),
    "resnet18": ("L0", "L1", "L2", "L3", "L4", "avg_pool"),
    "resnet20": ("stem", "stage1", "stage2", "stage3", "avg_pool"),
    "bottleneck_mlp": ("fc1", "bottleneck"),
    "mnist_mlp": ("fc1", "fc2"),
    "svhn_cnn": tuple(f"layer{i}" for i in range(1, 8)),
    "stl10_cnn": tuple(f"layer{i}" for i in range(1, 7)),
}
CASES = [(name, shape, dropout) for name, shapes in SHAPES.items() for shape in shapes
         for dropout in (False, True)]


@cache
def _model(name: str, shape: tuple[int, int], dropout: bool) -> ProbedModel:
    torch.manual_seed(0)
    channels, size = shape
    return build_model(name, in_channels=channels, image_size=size, num_classes=NUM_CLASSES,
                       dropout=dropout).eval()


def _input(shape, n=N, seed=1):
    channels, size = shape
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_keys():
    """One registry: the probing papers' four models, then the feature-dynamics paper's five."""
    assert list(MODELS) == ["mlp", "cnn", "alexnet", "resnet18", "resnet20", "bottleneck_mlp",
                            "mnist_mlp", "svhn_cnn", "stl10_cnn"]
    assert all(isinstance(spec, ModelSpec) and spec.name == key for key, spec in MODELS.items())
    assert set(MODELS) == set(SHAPES) == set(PROBE_LAYERS)
    import pipeline.core.models as models

    for gone in ("DYNAMICS_MODELS", "ALL_MODELS", "get_model_spec"):  # no second registry
        assert not hasattr(models, gone)


@pytest.mark.parametrize("name,shape,dropout", CASES)
def test_forward_and_forward_layers_agree(name, shape, dropout):
    model = _model(name, shape, dropout)
    assert isinstance(model, ProbedModel)
    assert model.probe_layers == PROBE_LAYERS[name]
    assert model.last_probe_layer == model.probe_layers[-1]
    assert set(model.paper_layers) <= set(model.probe_layers)
    x = _input(shape)
    with torch.no_grad():
        logits = model(x)
        logits2, acts = model.forward_layers(x)
    assert logits.shape == (N, NUM_CLASSES)
    assert list(acts) == list(model.probe_layers)
    assert all(a.shape[0] == N for a in acts.values())
    assert torch.equal(logits, logits2)


@pytest.mark.parametrize("name", list(MODELS))
def test_classifier_reads_last_probe_layer(name):
    for shape in SHAPES[name]:
        model = _model(name, shape, False)
        clf = model.classifier
        assert isinstance(clf, nn.Linear) and clf.out_features == NUM_CLASSES
        dims = layer_dims(name, in_channels=shape[0], image_size=shape[1], num_classes=NUM_CLASSES)
        assert clf.in_features == dims[model.last_probe_layer]
        with torch.no_grad():
            logits, acts = model.forward_layers(_input(shape))
            again = clf(acts[model.last_probe_layer].flatten(1))
        torch.testing.assert_close(again, logits, rtol=0, atol=0)
    assert (_model("cnn", CIFAR, False).classifier.bias is None)


@pytest.mark.parametrize("name", list(MODELS))
def test_train_mode_consistency_with_dropout(name):
    """Same RNG state -> same dropout masks: forward() == forward_layers(), and the classifier
    sees the last probe layer *after* dropout, also in training mode."""
    shape = SHAPES[name][-1]
    model = _model(name, shape, True)
    x = _input(shape, n=4)
    model.train()
    try:
        torch.manual_seed(5)
        logits = model(x)
        torch.manual_seed(5)
        logits2, acts = model.forward_layers(x)
        torch.manual_seed(6)
        logits3 = model(x)
    finally:
        model.eval()
    assert torch.equal(logits, logits2)
    assert not torch.equal(logits, logits3)  # dropout is active in training mode
    torch.testing.assert_close(model.classifier(acts[model.last_probe_layer].flatten(1)), logits)


@pytest.mark.parametrize("name", ["mlp", "cnn", "alexnet", "bottleneck_mlp"])
def test_no_dropout_means_deterministic_training_forward(name):
    model = _model(name, DIGITS, False)  # no BatchNorm in these: train == eval without dropout
    x = _input(DIGITS)
    with torch.no_grad():
        eval_logits = model(x)
        model.train()
        train_logits = model(x)
        model.eval()
    assert torch.equal(eval_logits, train_logits)


def test_exact_layer_dims():
    mlp = layer_dims("mlp", in_channels=1, image_size=28, num_classes=10)
    assert mlp == {"fc1": 128, "fc2": 512, "fc3": 2048, "fc4": 2048}
    assert layer_dims("mlp", in_channels=3, image_size=32, num_classes=10) == mlp
    cnn_cifar = layer_dims("cnn", in_channels=3, image_size=32, num_classes=10)
    assert cnn_cifar["flat"] == 1024 and "block3" not in cnn_cifar  # the same tensor as flat
    assert cnn_cifar["fc1"] == cnn_cifar["fc2"] == cnn_cifar["fc3"] == 250
    assert layer_dims("cnn", in_channels=1, image_size=28, num_classes=10)["flat"] == 576
    assert layer_dims("cnn", in_channels=1, image_size=8, num_classes=10)["flat"] == 64
    res = layer_dims("resnet18", in_channels=3, image_size=32, num_classes=10)
    assert res == {"L0": 16384, "L1": 16384, "L2": 8192, "L3": 4096, "L4": 2048, "avg_pool": 512}
    # AlexNet on Tiny ImageNet: the authors' geometry (conv5 pooled to 256x1x1 feeds fc1)
    alex = layer_dims("alexnet", in_channels=3, image_size=64, num_classes=200)
    assert alex == {"conv1": 64 * 7 * 7, "conv2": 192 * 3 * 3, "conv3": 384 * 3 * 3,
                    "conv4": 256 * 3 * 3, "conv5": 256, "fc1": 4096, "fc2": 4096}
    assert _model("alexnet", TINY, False).fc1.in_features == 256
    # dropout changes no dimension
    assert layer_dims("cnn", in_channels=3, image_size=32, num_classes=10, dropout=True) == cnn_cifar
    # ResNet-20 on CIFAR-10: 16x32x32, 16x32x32, 32x16x16, 64x8x8, 64
    r20 = layer_dims("resnet20", in_channels=3, image_size=32, num_classes=10)
    assert r20 == {"stem": 16384, "stage1": 16384, "stage2": 8192, "stage3": 4096, "avg_pool": 64}
    # akamaster's resnet20 prints "Total number of params 269722" (He et al.: 0.27M)
    assert sum(p.numel() for p in _model("resnet20", CIFAR, False).parameters()) == 269722
    # the bottleneck MLP flattens images of any size: 784 on MNIST, 64 on digits, 3072 on CIFAR
    for (channels, size), flat in ((MNIST, 784), (DIGITS, 64), (CIFAR, 3072)):
        model = _model("bottleneck_mlp", (channels, size), False)
        assert model.fc1.in_features == flat
        assert layer_dims("bottleneck_mlp", in_channels=channels, image_size=size,
                          num_classes=10) == {"fc1": 100, "bottleneck": 2}


def test_forward_layers_subset_and_unknown_layer():
    model = _model("cnn", DIGITS, False)
    x = _input(DIGITS)
    with torch.no_grad():
        logits, acts = model.forward_layers(x, ["fc2", "flat"])
    assert list(acts) == ["fc2", "flat"] and torch.equal(logits, model(x))
    assert acts["flat"].shape == (N, 64)
    with pytest.raises(ValueError, match="L0"):
        model.forward_layers(x, ["L0"])


def test_mlp_linears_registered_in_forward_order():
    """Other code walks ``model.modules()`` to find the MLP's Linear layers in forward order."""
    model = _model("mlp", MNIST, False)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 128), (128, 512), (512, 2048), (2048, 2048), (2048, NUM_CLASSES)]
    assert linears[-1] is model.classifier


# ----------------------------------------------------------------------------- manual passes

def _manual_block(block, x):
    """A BasicBlock written out op by op, with no in-place operation."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    shortcut = x if isinstance(block.shortcut, nn.Identity) else block.shortcut[1](block.shortcut[0](x))
    return F.relu(out + shortcut)


@pytest.mark.parametrize("dropout", [False, True])
def test_resnet_manual_forward_matches(dropout):
    model = _model("resnet18", CIFAR, dropout)
    x = _input(CIFAR)
    with torch.no_grad():
        logits, acts = model.forward_layers(x)
        manual = {}
        h = model.maxpool(F.relu(model.bn1(model.conv1(x))))
        manual["L0"] = h
        for i in range(1, 5):
            for block in getattr(model, f"layer{i}"):
                h = _manual_block(block, h)
            manual[f"L{i}"] = h
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        manual["avg_pool"] = h
        manual_logits = h @ model.fc.weight.T + model.fc.bias
    assert acts["L0"].shape == (N, 64, 16, 16) and acts["L1"].shape == (N, 64, 16, 16)
    for layer in model.probe_layers:
        torch.testing.assert_close(acts[layer], manual[layer], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, manual_logits, rtol=1e-5, atol=1e-5)
    # L0 is post-ReLU (non-negative) and was not modified by the residual stages that followed
    assert acts["L0"].min() >= 0


@pytest.mark.parametrize("shape", [CIFAR, MNIST])
def test_cnn_manual_forward_matches(shape):
    model = _model("cnn", shape, True)  # eval mode: dropout is the identity
    x = _input(shape)
    with torch.no_grad():
        _, acts = model.forward_layers(x)
        manual, h = {}, x
        for name in ("block1", "block2", "block3"):
            conv_a, _, conv_b, _, _ = getattr(model, name)
            h = F.max_pool2d(F.relu(conv_b(F.relu(conv_a(h)))), 2, 2)
            manual[name] = h
        h = h.reshape(h.shape[0], -1)
        manual["flat"] = h
        for name in ("fc1", "fc2", "fc3"):
            lin = getattr(model, name)
            h = F.relu(h @ lin.weight.T + lin.bias)
            manual[name] = h
        manual_logits = h @ model.output.weight.T
    for layer in model.probe_layers:
        torch.testing.assert_close(acts[layer], manual[layer], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x), manual_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_backward_through_all_probe_layers(name):
    """Autograd raises if any op modified in place a tensor it saved: every probe layer and the
    logits can be differentiated together in training mode."""
    torch.manual_seed(0)
    channels, size = SHAPES[name][0]
    model = build_model(name, in_channels=channels, image_size=size, num_classes=3, dropout=True).train()
    logits, acts = model.forward_layers(_input(SHAPES[name][0], n=3))
    loss = logits.sum() + sum(a.sum() for a in acts.values())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------- registry

def test_build_model_unknown_name():
    with pytest.raises(ValueError) as err:
        build_model("vgg", in_channels=3, image_size=32, num_classes=10)
    message = str(err.value)
    assert "vgg" in message and all(name in message for name in MODELS)


def test_model_spec_defaults():
    mlp, cnn, alex, res = (MODELS[k] for k in ("mlp", "cnn", "alexnet", "resnet18"))
    assert (mlp.optimizer, mlp.lr, mlp.momentum, mlp.batch_size) == ("sgd", 1e-3, 0.9, 32)
    assert (cnn.optimizer, cnn.lr, cnn.momentum) == ("adam", 2e-4, 0.0)
    assert (alex.optimizer, alex.lr, alex.momentum, alex.batch_size) == ("adam", 1e-4, 0.0, 500)
    assert (res.optimizer, res.lr, res.momentum, res.batch_size) == ("sgd", 1e-3, 0.9, 32)
    assert cnn.default_batch_size("cifar10") == 32
    assert cnn.default_batch_size("mnist") == 128 == cnn.default_batch_size("fashion_mnist")
    assert cnn.default_batch_size("digits") == 128
    assert mlp.default_batch_size("cifar10") == 32 and res.default_batch_size("cifar10") == 32
    assert alex.default_batch_size("tiny_imagenet") == 500
    assert [MODELS[k].late_checkpoint_interval for k in MODELS] == [5, 5, 10, 5, 5, 5, 5, 5, 5]
    assert mlp.normalization == "unit"
    assert cnn.normalization == alex.normalization == res.normalization == "standardize"
    for spec in MODELS.values():
        channels, size = SHAPES[spec.name][0]
        model = spec.build(channels, size, 4, dropout=False)
        assert isinstance(model, ProbedModel)
    # the probing models: no weight decay, no step decay, the same defaults dict as always
    for spec in (mlp, cnn, alex, res):
        assert spec.weight_decay == 0.0 and spec.lr_decay_epochs == () and not spec.by_dataset
        for dataset in ("digits", "mnist", "cifar10", "svhn", "stl10"):
            assert list(spec.defaults(dataset)) == ["optimizer", "lr", "momentum", "batch_size", "weight_decay"]
    assert mlp.defaults("mnist") == {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 32,
                                     "weight_decay": 0.0}


def test_feature_dynamics_recipes():
    """ResNet-20: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, x0.1 at 100 and 150; Table 2 per dataset.
    Bottleneck MLP (Experiment 3): lr 0.1, wd 1e-5, unit inputs."""
    r20, bot = MODELS["resnet20"], MODELS["bottleneck_mlp"]
    assert r20.normalization == "standardize" and bot.normalization == "unit"
    assert r20.defaults("cifar10") == {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 128,
                                       "weight_decay": 1e-4, "lr_decay_epochs": [100, 150],
                                       "lr_decay_factor": 0.1}
    assert r20.defaults("cifar100") == r20.defaults("cifar10")
    assert r20.defaults("digits") == r20.defaults("cifar10")  # no Table 2 row: the CIFAR recipe
    table2 = {  # dataset: (optimizer, batch size, lr, weight decay, momentum), as printed
        "svhn": ("adam", 200, 0.001, 0.0, 0.0), "stl10": ("adam", 200, 0.001, 0.001, 0.0),
        "mnist": ("sgd", 200, 0.01, 0.0001, 0.9), "cifar10": ("sgd", 128, 0.1, 0.0001, 0.9),
        "cifar100": ("sgd", 128, 0.1, 0.0001, 0.9)}
    assert set(PAPER_TABLE2) == set(table2)
    for dataset, (opt, batch, lr, wd, momentum) in table2.items():
        hp = r20.defaults(dataset)
        assert (hp["optimizer"], hp["batch_size"], hp["lr"], hp["weight_decay"], hp["momentum"]) == (
            opt, batch, lr, wd, momentum), dataset
        assert r20.default_batch_size(dataset) == batch
        assert r20.paper_epochs(dataset) == 300
    assert r20.defaults("svhn")["lr_decay_epochs"] == [80, 120]
    assert bot.defaults("mnist") == {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "batch_size": 200,
                                     "weight_decay": 1e-5}
    assert bot.paper_epochs("mnist") == 200 and bot.paper_epochs("cifar10") is None


def test_too_small_inputs_are_refused():
    with pytest.raises(ValueError, match="image_size"):
        build_model("cnn", in_channels=1, image_size=4, num_classes=2)
    with pytest.raises(ValueError, match="image_size"):
        build_model("alexnet", in_channels=1, image_size=5, num_classes=2)


# ------------------------------------------------------------------ the paper's MNIST / SVHN / STL-10 networks

def test_playground_models_as_the_cited_code_defines_them():
    """pytorch-playground's mnist/svhn/stl10 model.py (n_channel 32): layer shapes, parameter
    counts of the code's networks, BatchNorm without affine parameters, the code's dropout, and
    Table 2's optimizer rows."""
    mlp = layer_dims("mnist_mlp", in_channels=1, image_size=28, num_classes=10)
    assert mlp == {"fc1": 256, "fc2": 256}
    svhn = _model("svhn_cnn", CIFAR, False)
    stl = _model("stl10_cnn", STL10, False)
    with torch.no_grad():
        _, acts = svhn.forward_layers(_input(CIFAR))
        assert [tuple(a.shape[1:]) for a in acts.values()] == [
            (32, 32, 32), (32, 16, 16), (64, 16, 16), (64, 8, 8), (128, 8, 8), (128, 4, 4), (256, 1, 1)]
        _, acts = stl.forward_layers(_input(STL10))
        assert [tuple(a.shape[1:]) for a in acts.values()] == [
            (32, 48, 48), (64, 24, 24), (128, 12, 12), (128, 6, 6), (256, 4, 4), (256, 1, 1)]

    def conv_params(cfg, c=3):
        total = 0
        for v in cfg:
            if v != "M":
                out = v[0] if isinstance(v, tuple) else v
                total += c * out * 9 + out
                c = out
        return total + c * 10 + 10
    n = 32
    assert sum(p.numel() for p in svhn.parameters()) == conv_params(
        [n, n, "M", 2 * n, 2 * n, "M", 4 * n, 4 * n, "M", (8 * n, 0), "M"])
    assert sum(p.numel() for p in stl.parameters()) == conv_params(
        [n, "M", 2 * n, "M", 4 * n, "M", 4 * n, "M", (8 * n, 0), (8 * n, 0), "M"])
    assert sum(p.numel() for p in _model("mnist_mlp", MNIST, False).parameters()) == (
        784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10)
    bns = [m for m in svhn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 7 and not any(bn.affine for bn in bns)
    assert [m.p for m in svhn.modules() if isinstance(m, nn.Dropout)] == [0.3] * 7
    assert not any(isinstance(m, nn.Dropout) for m in stl.modules())
    assert [m.p for m in _model("mnist_mlp", MNIST, False).modules() if isinstance(m, nn.Dropout)] == [0.2]
    for name, dataset in (("mnist_mlp", "mnist"), ("svhn_cnn", "svhn"), ("stl10_cnn", "stl10")):
        hp = MODELS[name].defaults(dataset)
        row = PAPER_TABLE2[dataset]
        assert {k: hp[k] for k in ("optimizer", "batch_size", "lr", "weight_decay", "momentum")} == {
            k: row[k] for k in ("optimizer", "batch_size", "lr", "weight_decay", "momentum")}
        assert hp["lr_decay_epochs"] == [80, 120]
    with pytest.raises(ValueError, match="at least 96 pixels"):
        build_model("stl10_cnn", in_channels=3, image_size=32, num_classes=10)(_input(CIFAR))
