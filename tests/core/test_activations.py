"""Activation extraction: HDF5 round trip, manual forward pass, chunking, corrupt files."""

import h5py
import numpy as np
import pytest
import torch

from pipeline.core.activations import ActivationFile, extract_activations
from pipeline.core.datasets import load_dataset, subsample
from pipeline.core.labels import make_run_labels
from pipeline.core.models import build_model
from pipeline.core.runtime import input_transform


@pytest.fixture(scope="module")
def digits():
    return subsample(load_dataset("digits"), 120, 60, seed=0)


def _extract(model_name, arrays, path, **kw):
    torch.manual_seed(0)
    model = build_model(model_name, in_channels=1, image_size=8, num_classes=10).eval()
    labels = make_run_labels(arrays, dataset="digits", corruption=0.5, seed=0)
    transform = input_transform(arrays, model_name)
    extract_activations(model, arrays.x_train, arrays.x_test, labels, transform, path,
                        batch_size=32, attrs={"epoch": 3}, **kw)
    return model, labels, transform


def _manual_mlp(model, x):
    """The MLP's hidden layers by hand: flatten, then Linear+ReLU four times."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    h = x.flatten(1)
    out = []
    for lin in linears[:-1]:
        h = torch.relu(lin(h))
        out.append(h)
    return out


def test_round_trip_and_manual_forward(tmp_path, digits):
    path = tmp_path / "epoch_3.h5"
    model, labels, transform = _extract("mlp", digits, path)
    with ActivationFile(path) as acts:
        assert acts.layers == list(model.probe_layers)
        assert acts.attrs()["epoch"] == 3
        assert np.array_equal(acts.labels("train", "corrupted"), labels.corrupted)
        assert np.array_equal(acts.labels("train", "true"), labels.true)
        assert np.array_equal(acts.labels("test"), labels.test)
        with torch.no_grad():
            x = transform(torch.from_numpy(digits.x_train))
            manual = _manual_mlp(model, x)
            logits = model(x)
        for layer, expected in zip(model.probe_layers, manual, strict=True):
            got = acts.read(layer, "train")
            assert got.shape == (120, expected.shape[1]) and got.dtype == np.float32
            np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
        assert np.array_equal(acts.predictions("train"), logits.argmax(1).numpy())
        # one class reads alone, in dataset order
        rows = np.flatnonzero(labels.true == 3)
        np.testing.assert_array_equal(acts.read_class(model.probe_layers[0], "train", "true", 3),
                                      acts.read(model.probe_layers[0], "train")[rows])


def test_resnet_file_matches_forward_layers(tmp_path, digits):
    """What lands in HDF5 is exactly forward_layers' output (which test_models checks against a
    manual pass through the stem and residual stages), batch boundaries included."""
    path = tmp_path / "r.h5"
    model, _, transform = _extract("resnet18", digits, path)
    with torch.no_grad():
        x = transform(torch.from_numpy(digits.x_test))
        _, acts = model.forward_layers(x)
    with ActivationFile(path) as f:
        for layer in model.probe_layers:
            np.testing.assert_allclose(f.read(layer, "test"), acts[layer].flatten(1).numpy(),
                                       rtol=1e-4, atol=1e-5)


def test_float16_and_lzf_and_chunking(tmp_path, digits):
    path = tmp_path / "h.h5"
    model, _, _ = _extract("mlp", digits, path, dtype="float16", compression="lzf")
    with h5py.File(path) as h5:
        ds = h5[f"layers/{model.probe_layers[-1]}/train"]
        assert ds.dtype == np.float16 and ds.compression == "lzf"
        assert ds.chunks[1] == ds.shape[1] and ds.chunks[0] < ds.shape[0]  # row chunks: one class reads alone
    ref = tmp_path / "f.h5"
    _extract("mlp", digits, ref)
    with ActivationFile(path) as a, ActivationFile(ref) as b:
        layer = model.probe_layers[0]
        np.testing.assert_allclose(a.read(layer, "test"), b.read(layer, "test"), rtol=2e-3, atol=2e-3)


def test_unknown_layer_is_rejected(tmp_path, digits):
    with pytest.raises(ValueError, match="probe layers"):
        _extract("mlp", digits, tmp_path / "x.h5", layers=["nope"])
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_corrupt_or_incomplete_file_gives_clear_error(tmp_path):
    bad = tmp_path / "epoch_1.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="epoch_1.h5"):
        ActivationFile(bad)
    partial = tmp_path / "epoch_2.h5"
    with h5py.File(partial, "w") as h5:
        h5.attrs["layers"] = "[]"
    with pytest.raises(RuntimeError, match="incomplete"):
        ActivationFile(partial)
