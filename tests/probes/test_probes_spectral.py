"""MASC and VeLPIC settings fitted together share one eigendecomposition per class
(pipeline.probes.spectral.fit_spectral), and the result is what each probe's own fit gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_probes import subspace_data, write_activation_file

import pipeline.probes._common as _common
import pipeline.probes.spectral as spectral
from pipeline.probes import MASC, NearestClassMean, VeLPIC, accel, fit_spectral, fit_subspaces, load_fitted

DEVICES = [None, "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# the default config's eigen-based settings: five MASC thresholds / counts, both VeLPIC signs
SETTINGS = [("masc", 0.99), ("masc", 0.75), ("masc", 0.5), ("masc", 0.25), ("masc", 1), ("masc", 3),
            ("velpic", "class_mean"), ("velpic", "global_mean")]


def make(device):
    return [MASC(v, device=device) if name == "masc" else VeLPIC(v, device=device) for name, v in SETTINGS]


def data(*args, **kwargs):
    X, y, _, Xt, _ = subspace_data(*args, **kwargs)
    return X, y, Xt


def cases():
    # n_c > d (d x d route), n_c < d (Gram route), and a mixed one with a one-sample class
    yield "d_x_d", data([3, 5, 2], d=12, n_per_class=40, noise=0.05, seed=1, n_test=30)
    yield "gram", data([4, 6, 3, 5], d=60, n_per_class=15, noise=0.05, seed=2, n_test=30)
    X, y, _, Xt, _ = subspace_data([3, 4], d=20, n_per_class=25, noise=0.1, seed=3, n_test=20)
    X = np.maximum(X + 0.3, 0)  # post-ReLU-like: the two VeLPIC signs can differ
    yield "relu_one_sample_class", (np.vstack([X, X[:1] + 1.0]), np.append(y, 7), np.maximum(Xt + 0.3, 0))


@pytest.fixture(params=["lapack", "torch_eigh"])
def cpu_eigensolver(request, monkeypatch):
    """The torch route on CPU with LAPACK's solvers and with torch.linalg.eigh (CUDA's code)."""
    monkeypatch.setattr(accel, "CPU_EIGH_WITH_LAPACK", request.param == "lapack")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", [c[0] for c in cases()])
def test_shared_fit_equals_each_probe_fitted_alone(case, device, cpu_eigensolver):
    X, y, Xt = dict(cases())[case]
    shared = fit_spectral(make(device), X, y)
    alone = [p.fit(X, y) for p in make(device)]
    for (name, _), s, a in zip(SETTINGS, shared, alone, strict=True):
        np.testing.assert_array_equal(s.classes_, a.classes_)
        if name == "masc":  # the same code on the same decomposition: the same arrays
            np.testing.assert_array_equal(s.stacked_bases_, a.stacked_bases_)
            np.testing.assert_array_equal(s.n_components_, a.n_components_)
            np.testing.assert_array_equal(s.explained_energy_, a.explained_energy_)
        else:  # the top column of the full decomposition vs the single-eigenvector solver
            np.testing.assert_allclose(s.class_vectors_, a.class_vectors_, atol=1e-6)
            assert s.class_vectors_.dtype == np.float32
        np.testing.assert_array_equal(s.predict(Xt), a.predict(Xt))
        np.testing.assert_array_equal(s.predict(X), a.predict(X))


def test_shared_route_matches_the_numpy_reference_on_the_torch_route(cpu_eigensolver):
    X, y, Xt = dict(cases())["gram"]
    for s, ref in zip(fit_spectral(make("cpu"), X, y), fit_spectral(make(None), X, y), strict=True):
        np.testing.assert_array_equal(s.predict(Xt), ref.predict(Xt))


def test_one_eigendecomposition_per_class(monkeypatch):
    X, y, _ = dict(cases())["gram"]
    K = np.unique(y).size
    calls = {"full": 0, "top": 0}
    full, top = _common._second_moment_eigh, spectral._top_eigenvector

    def count_full(Xc):
        calls["full"] += 1
        return full(Xc)

    def count_top(Xc):
        calls["top"] += 1
        return top(Xc)

    monkeypatch.setattr(spectral, "_second_moment_eigh", count_full)
    monkeypatch.setattr(spectral, "_top_eigenvector", count_top)
    fit_spectral(make(None), X, y)
    assert calls == {"full": K, "top": 0}  # 8 settings, K decompositions (was 8 K)
    fit_spectral([VeLPIC("class_mean"), VeLPIC("global_mean")], X, y)
    assert calls == {"full": K, "top": K}  # VeLPIC alone: the single-eigenvector solver, once per class
    for p in make(None):
        p.fit(X, y)
    assert calls == {"full": K + 6 * K, "top": K + 2 * K}  # one by one: once per setting and class


def test_one_eigendecomposition_per_class_on_the_torch_route(monkeypatch):
    X, y, _ = dict(cases())["gram"]
    K = np.unique(y).size
    calls = []
    real = accel.descending_eigh
    monkeypatch.setattr(accel, "descending_eigh", lambda *a, **k: calls.append(1) or real(*a, **k))
    fit_spectral(make("cpu"), X, y)
    assert len(calls) == K


def test_fit_subspaces_decomposes_each_class_once_per_layer_and_label_source(tmp_path, monkeypatch):
    acts = write_activation_file(tmp_path / "epoch_0.h5", n=60, m=30, d=8, K=3)
    settings = [{"name": n, "params": {"variance": v} if n == "masc" else {"sign": v}} for n, v in SETTINGS]
    settings.insert(3, {"name": "ncm", "params": {}})  # a non-spectral probe among them keeps its place
    calls = []
    real = _common._second_moment_eigh
    monkeypatch.setattr(spectral, "_second_moment_eigh", lambda Xc: calls.append(1) or real(Xc))
    out = fit_subspaces(acts, tmp_path / "s.h5", settings=settings, fit_labels=("corrupted", "true"))
    assert len(calls) == 2 * 2 * 3  # layers x label sources x classes (was x 6 MASC settings)
    import h5py

    with h5py.File(acts) as h5:
        X, y = h5["layers/a/train"][:], h5["labels/train_corrupted"][:]
    for entry, alone in zip(settings, make(None)[:3] + [NearestClassMean()] + make(None)[3:], strict=True):
        stored = load_fitted(out, "a", entry["name"], entry["params"], "corrupted")
        alone.fit(X, y)
        assert type(stored) is type(alone)
        np.testing.assert_array_equal(stored.predict(X), alone.predict(X))


def test_fit_spectral_refuses_other_probes_and_mixed_devices():
    X, y, _ = dict(cases())["d_x_d"]
    with pytest.raises(ValueError, match="MASC and VeLPIC only; got NearestClassMean"):
        fit_spectral([MASC(), NearestClassMean()], X, y)
    with pytest.raises(ValueError, match="share one device"):
        fit_spectral([MASC(device="cpu"), VeLPIC()], X, y)
    with pytest.raises(ValueError, match="variance"):
        fit_spectral([MASC(variance=1.5), VeLPIC()], X, y)
    assert fit_spectral([], X, y) == []
