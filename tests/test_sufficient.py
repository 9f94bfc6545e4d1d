"""Per-class sufficient statistics: MASC, VeLPIC and NCM refit from them predict as the raw fit."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.activations import extract_activations
from pipeline.data import make_run_labels
from pipeline.datasets import load_dataset, subsample
from pipeline.models import build_model
from pipeline.probes import make_probe
from pipeline.probing import fit_subspaces, score_probes
from pipeline.sufficient import (ClassMoments, compute_moments, fit_from_moments,
                                 fit_subspaces_from_moments, moment_bytes, pays_off)
from pipeline.train import input_transform


def relu_data(n_per_class, d, k=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(k):
        center = rng.normal(size=d)
        X.append(np.maximum(center + rng.normal(scale=1.5, size=(n_per_class, d)), 0))
        y += [c] * n_per_class
    return np.concatenate(X).astype(dtype), np.asarray(y)


@pytest.mark.parametrize("n_per_class, d", [(200, 20), (15, 40)])  # n_c > d and n_c < d
@pytest.mark.parametrize("name, params", [("masc", {"variance": 0.99}), ("masc", {"variance": 0.6}),
                                          ("masc", {"variance": 3}), ("velpic", {}),
                                          ("velpic", {"sign": "global_mean"}), ("ncm", {})])
def test_refit_from_moments_predicts_as_the_raw_fit(n_per_class, d, name, params):
    X, y = relu_data(n_per_class, d)
    X_test, _ = relu_data(50, d, seed=1)
    raw = make_probe(name, **params).fit(X, y)
    refit = fit_from_moments(name, params, ClassMoments.of(X, y))
    assert np.array_equal(raw.predict(X_test), refit.predict(X_test))
    np.testing.assert_allclose(raw.decision_function(X_test), refit.decision_function(X_test),
                               rtol=1e-4, atol=1e-5)
    if name == "masc":
        assert np.array_equal(raw.n_components_, refit.n_components_)


def test_streaming_accumulation_and_round_trip():
    X, y = relu_data(100, 12, k=3, dtype=np.float16)
    whole = ClassMoments.of(X, y)
    parts = ClassMoments.empty([0, 1, 2], 12)
    for start in range(0, len(y), 37):
        parts.update(X[start:start + 37], y[start:start + 37])
    for field in ("counts", "sums", "second"):
        np.testing.assert_allclose(getattr(whole, field), getattr(parts, field), rtol=1e-12)
    back = ClassMoments.from_arrays(whole.to_arrays())
    np.testing.assert_array_equal(back.second, whole.second)
    assert np.array_equal(back.classes, [0, 1, 2])


def test_only_the_geometric_probes_come_from_moments():
    X, y = relu_data(30, 5)
    with pytest.raises(ValueError, match="raw activations"):
        fit_from_moments("linear", {}, ClassMoments.of(X, y))


def test_sizes():
    # 10 classes x 2 label sources x (upper triangle + sum + count), float64
    assert moment_bytes(250, 10) == 2 * 10 * (250 * 251 // 2 + 250 + 1) * 8
    assert pays_off(250, 10, n_train=60_000, itemsize=4)          # CNN fc layer on MNIST
    assert not pays_off(16_384, 10, n_train=50_000, itemsize=2)   # ResNet-18 L0


def test_files_fit_and_score_like_the_activation_path(tmp_path):
    arrays = subsample(load_dataset("digits"), 300, 100, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, image_size=8, num_classes=10).eval()
    labels = make_run_labels(arrays, dataset="digits", corruption=0.5, seed=0)
    acts = tmp_path / "epoch_0.h5"
    extract_activations(model, arrays.x_train, arrays.x_test, labels, input_transform(arrays, "cnn"),
                        acts, layers=["flat", "fc1"], attrs={"epoch": 0})
    settings = [{"name": "masc", "params": {"variance": 0.99}}, {"name": "velpic", "params": {}},
                {"name": "ncm", "params": {}}]
    compute_moments(acts, tmp_path / "moments.h5")
    fit_subspaces(acts, tmp_path / "direct.h5", settings=settings)
    fit_subspaces_from_moments(tmp_path / "moments.h5", tmp_path / "from_moments.h5", settings=settings)
    keys = {"dataset": "digits", "model": "cnn", "corruption": 0.5, "seed": 0, "variant": "standard"}
    for name in ("direct", "from_moments"):
        score_probes(acts, tmp_path / f"{name}.h5", tmp_path / f"{name}.parquet", run_keys=keys, epoch=0)
    direct = pd.read_parquet(tmp_path / "direct.parquet")
    refit = pd.read_parquet(tmp_path / "from_moments.parquet")
    pd.testing.assert_frame_equal(direct, refit)
