"""A user's own models (train.custom_models): a torchvision architecture by name and a factory by
import path, probed at module paths with forward hooks; wrong names stop the config check."""

from __future__ import annotations

import textwrap

import pytest
import torch

from pipeline.config import validate_config
from pipeline.core.config import ConfigError
from pipeline.core.datasets import DATASETS
from pipeline.core.models import MODELS, ProbedModel, build_model, layer_dims
from pipeline.core.training import hyperparameters

FACTORY = '''
from torch import nn


def small_cnn(in_channels, image_size, num_classes, width=4):
    """conv -> in-place ReLU (it overwrites the conv's output tensor) -> pool -> flatten -> head."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Sequential(nn.Linear(4 * width, 16), nn.ReLU()),
        nn.Linear(16, num_classes),
    )
'''


@pytest.fixture(autouse=True)
def _registries_restored():
    """A user model is registered into the process-wide registry: restore it after each test, so
    that tests listing the built-in models (tests/core/test_models.py) see only those."""
    before = dict(MODELS), dict(DATASETS)
    yield
    for registry, saved in zip((MODELS, DATASETS), before, strict=True):
        registry.clear()
        registry.update(saved)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    name = f"user_nets_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def models_config(entry, name="mine"):
    return {"models": [name], "train": {"custom_models": {name: entry}}}


def test_torchvision_model_by_name(one_torch_thread):
    validate_config(models_config({"torchvision": "resnet18", "layers": ["layer3", "layer4", "avgpool"],
                                   "batch_size": 16}, name="tv_resnet18"))
    spec = MODELS["tv_resnet18"]
    assert spec.build.probe_layers == ("layer3", "layer4", "avgpool") and spec.normalization == "standardize"
    assert hyperparameters({"train": {}}, "tv_resnet18", "digits")["batch_size"] == 16
    torch.manual_seed(0)
    model = build_model("tv_resnet18", in_channels=1, image_size=16, num_classes=5).eval()
    assert isinstance(model, ProbedModel)
    x = torch.rand(3, 1, 16, 16)  # grey: repeated to the 3 channels torchvision's models take
    with torch.no_grad():
        logits, acts = model.forward_layers(x)
        assert torch.equal(logits, model(x)) and logits.shape == (3, 5)
        assert list(acts) == ["layer3", "layer4", "avgpool"] and acts["layer4"].shape == (3, 512, 1, 1)
        # the classifier (the last nn.Linear, torchvision's fc) reads the last probe layer
        assert model.classifier is model.net.fc
        assert torch.allclose(model.classifier(torch.flatten(acts["avgpool"], 1)), logits, atol=1e-6)
    assert layer_dims("tv_resnet18", in_channels=1, image_size=16, num_classes=5)["layer3"] == 256


def test_factory_by_import_path(factory_module, one_torch_thread):
    entry = {"factory": f"{factory_module}:small_cnn", "kwargs": {"width": 6}, "layers": ["0", "4"],
             "optimizer": "adam", "lr": 0.002}
    validate_config({**models_config(entry), "datasets": ["digits"]})
    model = build_model("mine", in_channels=1, image_size=8, num_classes=10)
    assert model.net[0].out_channels == 6 and model.classifier is model.net[5]
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        logits, acts = model.forward_layers(x, ["0"])
    # the conv's output is read before the in-place ReLU overwrites it: the hook clones it
    assert (acts["0"] < 0).any()
    assert list(acts) == ["0"] and logits.shape == (4, 10)
    assert hyperparameters({"train": {}}, "mine", "digits")["optimizer"] == "adam"


def test_wrong_layer_name_lists_the_valid_ones(factory_module):
    with pytest.raises(ConfigError) as err:
        validate_config(models_config({"torchvision": "resnet18", "layers": ["layer3", "layer9"]}))
    message = str(err.value)
    assert "['layer9'] are not modules of the model" in message and "'layer3.0.conv1'" in message
    with pytest.raises(ConfigError, match=r"\['6'\] are not modules.*'4.0'"):
        validate_config(models_config({"factory": f"{factory_module}:small_cnn", "layers": ["6"]}))


def test_bad_model_entries_stop_the_config_check(factory_module):
    with pytest.raises(ConfigError, match=r"'resnet81' is not a torchvision classification model \(did you "
                                          r"mean \['resnet18'"):
        validate_config(models_config({"torchvision": "resnet81", "layers": ["layer3"]}))
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        validate_config(models_config({"factory": "no_such_module:net", "layers": ["fc"]}))
    with pytest.raises(ConfigError, match="give exactly one of 'torchvision'"):
        validate_config(models_config({"layers": ["fc"]}))
    with pytest.raises(ConfigError, match="'mlp' is a built-in model"):
        validate_config({"train": {"custom_models": {"mlp": {"torchvision": "resnet18", "layers": ["fc"]}}}})
    with pytest.raises(ConfigError, match=r"'models.0' has value 'mien'.*'mine'"):
        validate_config({**models_config({"torchvision": "resnet18", "layers": ["fc"]}), "models": ["mien"]})
    with pytest.raises(ConfigError, match="classifier.*'0' is Conv2d"):
        validate_config(models_config({"factory": f"{factory_module}:small_cnn", "layers": ["0"],
                                       "classifier": "0"}))


def test_probe_layer_keys_are_checked_against_the_user_model():
    entry = {"torchvision": "resnet18", "layers": ["layer4", "avgpool"]}
    config = validate_config({**models_config(entry), "probes": {"layers": ["avgpool"]}})
    assert config["probes"]["layers"] == ["avgpool"]
    with pytest.raises(ConfigError, match=r"'probes.layers': \['fc4'\] are not probe layers of model 'mine'"):
        validate_config({**models_config(entry), "probes": {"layers": ["fc4"]}})
