"""Per-class sufficient statistics: MASC, VeLPIC and NCM refit from them predict as the raw fit."""

import itertools
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.__main__ import main
from pipeline.config import validate_config
from pipeline.core.activations import ActivationFile, extract_activations
from pipeline.core.config import ConfigError
from pipeline.core.datasets import load_dataset, subsample
from pipeline.core.labels import make_run_labels
from pipeline.core.models import build_model
from pipeline.core.runtime import input_transform
from pipeline.probes import (
    FROM_MOMENTS,
    MASC,
    PROBES,
    ClassMoments,
    NearestClassMean,
    VeLPIC,
    assert_agree,
    fit_from_moments,
    fit_subspaces,
    load_fitted,
    make_probe,
    moment_bytes,
    moment_layer_choice,
    pays_off,
    probe_to_arrays,
    reduce_activations,
    score_probes,
    setting_id,
)
from pipeline.probes.agreement import float32_resolution


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


@pytest.mark.parametrize("name, cls, params", [("masc", MASC, {"variance": 0.9}), ("masc", MASC, {"variance": 2}),
                                               ("velpic", VeLPIC, {"sign": "global_mean"}),
                                               ("ncm", NearestClassMean, {})])
def test_estimators_own_their_fit_from_moments(name, cls, params):
    X, y = relu_data(40, 12)
    moments = ClassMoments.of(X, y)
    probe = cls(**params)
    assert probe.fit_moments(moments) is probe
    via_registry = probe_to_arrays(fit_from_moments(name, params, moments))
    for key, array in probe_to_arrays(probe).items():
        np.testing.assert_array_equal(array, via_registry[key])
        assert array.dtype == via_registry[key].dtype
    # FROM_MOMENTS is exactly the probes that have the method
    assert set(FROM_MOMENTS) == {n for n, c in PROBES.items() if hasattr(c, "fit_moments")}
    with pytest.raises(ValueError, match="variance"):
        MASC(variance=1.5).fit_moments(moments)
    with pytest.raises(ValueError, match="raw activations"):
        fit_from_moments("logreg", {}, moments)


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


def digits_activations(tmp_path, layers=("flat", "fc1")):
    arrays = subsample(load_dataset("digits"), 300, 100, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, image_size=8, num_classes=10).eval()
    labels = make_run_labels(arrays, dataset="digits", corruption=0.5, seed=0)
    acts = tmp_path / "epoch_0.h5"
    extract_activations(model, arrays.x_train, arrays.x_test, labels, input_transform(arrays, "cnn"),
                        acts, layers=list(layers), attrs={"epoch": 0})
    return acts


SETTINGS = [{"name": "masc", "params": {"variance": 0.99}}, {"name": "masc", "params": {"variance": 1}},
            {"name": "velpic", "params": {}}, {"name": "ncm", "params": {}}]
KEYS = {"dataset": "digits", "model": "cnn", "corruption": 0.5, "seed": 0, "variant": "standard"}


def fit_and_score(source, tmp_path, name, settings=SETTINGS, device=None):
    fit_subspaces(source, tmp_path / f"{name}_subspaces.h5", settings=settings, device=device)
    score_probes(source, tmp_path / f"{name}_subspaces.h5", tmp_path / f"{name}.parquet",
                 run_keys=KEYS, epoch=0, device=device)
    return pd.read_parquet(tmp_path / f"{name}.parquet")


def test_reduced_file_scores_like_the_activation_file(tmp_path):
    acts = digits_activations(tmp_path)
    reduced = reduce_activations(acts, tmp_path / "reduced.h5", mode="moments")
    with ActivationFile(reduced) as r, ActivationFile(acts) as a:
        assert r.moment_layers == ["flat", "fc1"]
        assert not r.has("fc1", "train") and r.has("fc1", "test")
        np.testing.assert_array_equal(r.read("fc1", "test"), a.read("fc1", "test"))
        np.testing.assert_array_equal(r.predictions("train"), a.predictions("train"))
        with pytest.raises(KeyError, match="statistics"):
            r.read("fc1", "train")
        # the stored statistics are those of the training activations, per label source
        direct = ClassMoments.of(a.read("fc1", "train"), a.labels("train", "true"), classes=range(10))
        stored = ClassMoments.from_arrays(r.moment_arrays("fc1", "true"))
        np.testing.assert_allclose(stored.second, direct.second, rtol=1e-10)
    direct = fit_and_score(acts, tmp_path, "direct")
    refit = fit_and_score(reduced, tmp_path, "reduced")
    # probes fitted from statistics score the test split exactly as those fitted on activations;
    # the train split of a layer kept as statistics has no probe rows (its activations are gone)
    probe_rows = refit[refit.probe != "model"]
    assert set(probe_rows.split) == {"test"}
    keep = (direct.probe == "model") | (direct.split == "test")
    pd.testing.assert_frame_equal(direct[keep].reset_index(drop=True), refit.reset_index(drop=True))
    # the model's own rows keep both splits (its predictions are stored)
    assert set(refit[refit.probe == "model"].split) == {"train", "test"}


def test_probe_device_gives_the_same_rows_on_activations_and_statistics(tmp_path):
    # probes.device "cpu": layers with activations fit and score with torch, layers kept as
    # statistics fit from them with numpy and score with torch.  The promise (docs/reliability.md):
    # one route run twice gives bitwise the same rows; the numpy and torch routes sum float32
    # products in another order (up to 8.5 float32 eps of the scores apart on an AMD EPYC), so
    # their scores agree to the float32 resolution (16 eps of a row's largest score) and their
    # predictions on every decided sample, while near-ties may go either way.  The untrained
    # CNN's fc1 activations are nearly collinear (cosines of 0.99999 to several class means):
    # up to 45 % of its samples are near-ties, and on the EPYC 14 rows (MASC, VeLPIC, NCM) differ
    # by one or two samples; the flat layer has at most 3 % near-ties.
    acts = digits_activations(tmp_path)
    reduced = reduce_activations(acts, tmp_path / "reduced.h5", mode="moments")
    max_near_tie_fraction = {"flat": 0.05, "fc1": 0.5}
    counts = ["accuracy", "n_correct"]
    for source, tag in ((acts, "acts"), (reduced, "reduced")):
        ref = fit_and_score(source, tmp_path, f"{tag}_numpy")
        ours = fit_and_score(source, tmp_path, f"{tag}_cpu", device="cpu")
        # same route, same machine: bitwise
        pd.testing.assert_frame_equal(fit_and_score(source, tmp_path, f"{tag}_cpu_again", device="cpu"), ours)
        # across routes: the same rows, the model's own exactly; the probes' counts below
        pd.testing.assert_frame_equal(ref.drop(columns=counts), ours.drop(columns=counts))
        model = ref.probe == "model"
        pd.testing.assert_frame_equal(ref[model], ours[model])
        unchecked = {(r.layer, r.probe_setting, r.fit_labels, r.split, r.target): (r.n_correct, n_ours)
                     for r, n_ours in zip(ref[~model].itertuples(), ours.n_correct[~model], strict=True)}
        with ActivationFile(source) as a:
            for layer, entry, fit_labels in itertools.product(("flat", "fc1"), SETTINGS, ("corrupted", "true")):
                name, params = entry["name"], entry["params"]
                sid = setting_id(name, params)
                fitted = [load_fitted(tmp_path / f"{tag}_{route}_subspaces.h5", layer, name, params, fit_labels,
                                      device=device) for route, device in (("numpy", None), ("cpu", "cpu"))]
                for split in ("train", "test"):
                    if not a.has(layer, split):
                        continue  # a layer kept as statistics has test rows only
                    X = a.read(layer, split)
                    s_ref, s_ours = (probe.decision_function(X) for probe in fitted)
                    what = f"{tag}: {layer} {sid} fitted on {fit_labels}, {split} split, numpy vs torch-cpu"
                    assert np.all(np.abs(s_ref - s_ours) <= float32_resolution(s_ref, s_ours)[:, None]), what
                    agreement = assert_agree(s_ref, s_ours, what=what,
                                             max_near_ties=int(max_near_tie_fraction[layer] * len(X)))
                    for target in ("corrupted", "true") if split == "train" else ("true",):
                        labels = a.labels(split, target)
                        n_ref, n_ours = unchecked.pop((layer, sid, fit_labels, split, target))
                        # the rows count these scores' predictions (the same code path: exactly) ...
                        assert n_ref == np.sum(fitted[0].classes_[s_ref.argmax(1)] == labels), what
                        assert n_ours == np.sum(fitted[1].classes_[s_ours.argmax(1)] == labels), what
                        # ... so they differ by at most the near-ties the routes break differently
                        assert abs(n_ref - n_ours) <= agreement.n_near_tie_disagree, what
        assert not unchecked  # every probe row was checked
    with h5py.File(tmp_path / "reduced_cpu_subspaces.h5", "r") as h5:
        assert h5["fc1/masc/variance=0_99/true"].attrs["device"] == "numpy"  # fitted from statistics
    with h5py.File(tmp_path / "acts_cpu_subspaces.h5", "r") as h5:
        assert h5["fc1/masc/variance=0_99/true"].attrs["device"] == "cpu"

def test_auto_keeps_training_activations_where_statistics_are_larger(tmp_path):
    # 300 training images: statistics of the 64-dim flat layer (10 classes x 2 sources x 2,145
    # floats) outweigh its activations (300 x 64), so auto keeps them and scoring is unchanged
    acts = digits_activations(tmp_path)
    reduced = reduce_activations(acts, tmp_path / "reduced.h5", mode="auto")
    with ActivationFile(reduced) as r:
        assert r.moment_layers == [] and r.has("flat", "train")
    pd.testing.assert_frame_equal(fit_and_score(acts, tmp_path, "direct"),
                                  fit_and_score(reduced, tmp_path, "reduced"))
    dims = {"L0": 16_384, "avg_pool": 512}
    assert moment_layer_choice(dims, "auto", num_classes=10, n_train=50_000, itemsize=4) == ["avg_pool"]
    assert moment_layer_choice(dims, "moments", num_classes=10, n_train=50_000, itemsize=4) == ["L0", "avg_pool"]
    with pytest.raises(ValueError, match="storage.persist"):
        moment_layer_choice(dims, "sometimes", num_classes=10, n_train=1, itemsize=4)


def test_raw_only_probe_on_statistics_is_refused_by_name(tmp_path):
    reduced = reduce_activations(digits_activations(tmp_path), tmp_path / "reduced.h5", mode="moments")
    out = tmp_path / "subspaces.h5"
    with pytest.raises(ValueError, match=r"'linear' needs the raw activations.*storage.persist"):
        fit_subspaces(reduced, out, settings=[{"name": "linear", "params": {"epochs": 1}}], layers=["fc1"])
    assert not out.exists()  # nothing half-written is left looking complete


def test_config_refuses_raw_only_probes_with_statistics():
    base = {"storage": {"persist": "moments"}}
    validate_config({**base, "probes": {"settings": [{"name": "ncm"}, {"name": "velpic"}]}})
    with pytest.raises(ConfigError, match=r"storage.persist.*\['knn', 'linear'\]"):
        validate_config({**base, "probes": {"settings": [{"name": "linear"}, {"name": "knn"}]}})
    with pytest.raises(ConfigError, match="persist"):
        validate_config({"storage": {"persist": "statistics"}})


def test_reducing_a_partial_activation_file_fails_and_writes_nothing(tmp_path):
    acts = digits_activations(tmp_path)
    with h5py.File(acts, "a") as h5:
        h5.attrs["complete"] = False  # as if extraction had been killed
    with pytest.raises(RuntimeError, match="incomplete"):
        reduce_activations(acts, tmp_path / "reduced.h5")
    assert not (tmp_path / "reduced.h5").exists()


def test_reduce_command_line(tmp_path):
    acts = digits_activations(tmp_path)
    out = tmp_path / "reduced.h5"
    rc = main(["reduce", "--config-json", json.dumps({"storage": {"persist": "moments"}}),
               "--dataset", "digits", "--model", "cnn", "--corruption", "0.5", "--seed", "0",
               "--epoch", "0", "--activations", str(acts), "--out", str(out)])
    assert rc == 0
    with ActivationFile(out) as r:
        assert r.moment_layers == ["flat", "fc1"]
        assert json.loads(r.attrs()["config"])["storage"]["persist"] == "moments"
