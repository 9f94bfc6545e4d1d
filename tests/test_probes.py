"""Tests for pipeline.probes on synthetic data with known structure.

Each class of the synthetic data lives in its own random low-dimensional subspace of R^d (plus
optional small noise), so the right subspaces, dimensions and labels are known.  MASC and VeLPIC
are checked against direct implementations of their definitions written here (d x d eigh of the
negative-augmented class data, explicit energy cut, explicit angles).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import KNeighborsClassifier

from pipeline import probes
from pipeline.probes import (PROBES, MASC, KNNProbe, LDAProbe, LinearProbe, NearestClassMean, VeLPIC,
                             make_probe, probe_from_arrays, probe_to_arrays, setting_id)

EPS = np.finfo(np.float64).eps


# ----------------------------------------------------------------------------------------------
# synthetic data
# ----------------------------------------------------------------------------------------------
def subspace_data(dims, d, n_per_class, noise=0.0, seed=0, n_test=0, labels=None, dtype=np.float32):
    """Class c lives in a random dims[c]-dimensional subspace (orthonormal Q_c) plus noise."""
    rng = np.random.default_rng(seed)
    Qs = [np.linalg.qr(rng.standard_normal((d, r)))[0] for r in dims]
    labels = np.arange(len(dims)) if labels is None else np.asarray(labels)

    def draw(n):
        X = np.concatenate([rng.standard_normal((n, Q.shape[1])) @ Q.T for Q in Qs])
        X += noise * rng.standard_normal(X.shape)
        return X.astype(dtype), np.repeat(labels, n)

    X, y = draw(n_per_class)
    if not n_test:
        return X, y, Qs
    Xt, yt = draw(n_test)
    return X, y, Qs, Xt, yt


# ----------------------------------------------------------------------------------------------
# direct implementations of the definitions
# ----------------------------------------------------------------------------------------------
def ref_masc_bases(X, y, variance):
    """Per class: eigh of the d x d matrix A^T A, A = [X_c; -X_c]; explicit cut."""
    bases = []
    for c in np.unique(y):
        Xc = X[y == c].astype(np.float64)
        A = np.vstack([Xc, -Xc])
        lam, V = np.linalg.eigh(A.T @ A)
        lam, V = lam[::-1], V[:, ::-1]
        rank = int(np.sum(lam > lam[0] * max(Xc.shape) * EPS))
        if isinstance(variance, int):
            k = min(variance, rank)
        else:
            frac = np.cumsum(lam[:rank]) / lam[:rank].sum()
            k = next((i + 1 for i, f in enumerate(frac) if f >= variance), rank)
        bases.append(V[:, :k])
    return bases


def ref_masc_predict(bases, classes, X):
    X = X.astype(np.float64)
    xnorm = np.linalg.norm(X, axis=1)
    angles = np.stack([np.arccos(np.clip(np.linalg.norm(X @ B, axis=1) / xnorm, 0.0, 1.0)) for B in bases],
                      axis=1)
    return classes[np.argmin(angles, axis=1)]


def ref_velpic_vectors(X, y, sign):
    X64 = X.astype(np.float64)
    V = []
    for c in np.unique(y):
        Xc = X64[y == c]
        A = np.vstack([Xc, -Xc])
        _, W = np.linalg.eigh(A.T @ A)
        v = W[:, -1]
        ref = Xc if sign == "class_mean" else X64  # whose mean projection must be >= 0
        if np.mean(ref @ v) < 0:
            v = -v
        V.append(v)
    return np.array(V)


# ----------------------------------------------------------------------------------------------
# MASC
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["gram", "square", "integer"])
def test_masc_matches_direct_definition(case):
    if case == "gram":  # n_c < d: the n_c x n_c Gram route
        X, y, _, Xt, yt = subspace_data([3, 5, 8, 4], d=96, n_per_class=40, noise=0.05, seed=1, n_test=50)
        variance = 0.99
    elif case == "square":  # n_c > d: the d x d route
        X, y, _, Xt, yt = subspace_data([3, 5, 2], d=24, n_per_class=150, noise=0.05, seed=2, n_test=50)
        variance = 0.9
    else:
        X, y, _, Xt, yt = subspace_data([3, 5, 8, 4], d=64, n_per_class=40, noise=0.05, seed=3, n_test=50)
        variance = 4
    # add points from no class at all, so agreement is not trivial
    Xt = np.vstack([Xt, np.random.default_rng(9).standard_normal((200, X.shape[1])).astype(np.float32)])
    probe = MASC(variance=variance).fit(X, y)
    ref = ref_masc_bases(X, y, variance)
    np.testing.assert_array_equal(probe.n_components_, [B.shape[1] for B in ref])
    np.testing.assert_array_equal(probe.predict(Xt), ref_masc_predict(ref, probe.classes_, Xt))
    # same subspaces (projectors) and same scores
    for B, R in zip(probe.bases_, ref):
        assert B.dtype == np.float32
        np.testing.assert_allclose(B.T.astype(np.float64) @ B, np.eye(B.shape[1]), atol=1e-5)
        np.testing.assert_allclose(B @ B.T, R @ R.T, atol=1e-5)
    cos2 = np.stack([np.linalg.norm(Xt @ R, axis=1) ** 2 for R in ref], 1) / np.linalg.norm(Xt, axis=1)[:, None] ** 2
    np.testing.assert_allclose(probe.decision_function(Xt), cos2, atol=1e-5)
    if case == "integer":
        assert (probe.n_components_ == 4).all()


def test_masc_uses_gram_route_when_few_samples(monkeypatch):
    sizes = []
    real = np.linalg.eigh

    def spy(M, *a, **k):
        sizes.append(M.shape[0])
        return real(M, *a, **k)

    monkeypatch.setattr(np.linalg, "eigh", spy)
    X, y, _ = subspace_data([3, 4], d=200, n_per_class=30, noise=0.01)
    MASC().fit(X, y)
    assert sizes == [30, 30]
    sizes.clear()
    X, y, _ = subspace_data([3, 4], d=20, n_per_class=30, noise=0.01)
    MASC().fit(X, y)
    assert sizes == [20, 20]


def test_masc_recovers_true_subspaces_and_classifies():
    dims = [2, 4, 6, 3, 5]
    # noiseless, float64: variance=1.0 keeps exactly the rank = true dimension
    X, y, Qs = subspace_data(dims, d=80, n_per_class=40, noise=0.0, seed=4, dtype=np.float64)
    probe = MASC(variance=1.0).fit(X, y)
    np.testing.assert_array_equal(probe.n_components_, dims)
    for B, Q in zip(probe.bases_, Qs):
        np.testing.assert_allclose(B @ B.T, Q @ Q.T, atol=1e-5)
    np.testing.assert_allclose(probe.explained_energy_, 1.0)
    # noiseless float32 (rounding noise only) with a near-1 energy cut: same dimensions
    X32, y32, _ = subspace_data(dims, d=80, n_per_class=40, noise=0.0, seed=4)
    np.testing.assert_array_equal(MASC(variance=0.9999).fit(X32, y32).n_components_, dims)
    # integer components are capped at the rank
    np.testing.assert_array_equal(MASC(variance=5).fit(X, y).n_components_, np.minimum(dims, 5))
    # known-subspace data with noise: near-perfect test accuracy
    X, y, _, Xt, yt = subspace_data(dims, d=80, n_per_class=60, noise=0.05, seed=5, n_test=100)
    assert MASC().fit(X, y).score(Xt, yt) >= 0.99


def test_masc_chunked_scoring_and_degenerate_inputs(monkeypatch):
    X, y, _, Xt, _ = subspace_data([3, 5, 4], d=40, n_per_class=30, noise=0.05, n_test=30)
    probe = MASC().fit(X, y)
    full = probe.decision_function(Xt)
    monkeypatch.setattr(probes, "_CHUNK_ELEMENTS", 64)  # forces many row chunks
    np.testing.assert_array_equal(probe.decision_function(Xt), full)
    # an all-zero test row scores 0; an all-zero class gets no components and scores 0
    assert np.all(probe.decision_function(np.zeros((1, 40))) == 0)
    Xz = np.vstack([X, np.zeros((10, 40), np.float32)])
    yz = np.concatenate([y, np.full(10, 9)])
    pz = MASC().fit(Xz, yz)
    assert pz.n_components_[-1] == 0 and np.all(pz.decision_function(Xt)[:, -1] == 0)
    np.testing.assert_array_equal(pz.predict(Xt), probe.predict(Xt))


# ----------------------------------------------------------------------------------------------
# VeLPIC
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sign", ["class_mean", "global_mean"])
@pytest.mark.parametrize("d,n", [(60, 30), (12, 80)])  # Gram route and d x d route
def test_velpic_matches_direct_definition(sign, d, n):
    rng = np.random.default_rng(7)
    X, y, _, Xt, _ = subspace_data([2, 3, 2], d=d, n_per_class=n, noise=0.05, seed=8, n_test=40)
    X = X + rng.normal(0.3, 0.1, size=d).astype(np.float32)  # a common offset, so means matter
    probe = VeLPIC(sign=sign).fit(X, y)
    V = ref_velpic_vectors(X, y, sign)
    np.testing.assert_allclose(probe.class_vectors_, V, atol=1e-5)
    assert probe.class_vectors_.dtype == np.float32
    np.testing.assert_array_equal(probe.predict(Xt), probe.classes_[np.argmax(Xt.astype(np.float64) @ V.T, 1)])


def _conventions_disagree_data(n=200, seed=0):
    """Class 0 along +e1; class 1 along u1 = (-3, 1, 0)/sqrt(10), three times as large.

    Class 0's own mean is along +e1, but the global mean has a negative e1 component, so the two
    sign conventions choose opposite signs for class 0's vector.
    """
    rng = np.random.default_rng(seed)
    u1 = np.array([-3.0, 1.0, 0.0]) / np.sqrt(10)
    X0 = rng.uniform(0.5, 1.5, (n, 1)) * np.array([1.0, 0, 0]) + 0.02 * rng.standard_normal((n, 3))
    X1 = rng.uniform(2.5, 3.5, (n, 1)) * u1 + 0.02 * rng.standard_normal((n, 3))
    return np.vstack([X0, X1]).astype(np.float32), np.repeat([0, 1], n), X0.astype(np.float32)


def test_velpic_sign_conventions_differ():
    X, y, X0 = _conventions_disagree_data()
    by_class = VeLPIC(sign="class_mean").fit(X, y)
    by_global = VeLPIC(sign="global_mean").fit(X, y)
    np.testing.assert_allclose(by_class.class_vectors_[0], [1, 0, 0], atol=0.05)
    np.testing.assert_allclose(by_global.class_vectors_[0], [-1, 0, 0], atol=0.05)
    np.testing.assert_allclose(by_class.class_vectors_[1], by_global.class_vectors_[1])
    # the papers' rule classifies class 0 correctly; the published code's rule sends it to class 1
    assert np.mean(by_class.predict(X0) == 0) > 0.95
    assert np.mean(by_global.predict(X0) == 1) > 0.95
    for sign in ("class_mean", "global_mean"):
        np.testing.assert_allclose(VeLPIC(sign=sign).fit(X, y).class_vectors_, ref_velpic_vectors(X, y, sign),
                                   atol=1e-5)


@pytest.mark.parametrize("sign", ["class_mean", "global_mean"])
def test_velpic_sign_follows_rule_when_class_negated(sign):
    X, y, _ = subspace_data([2, 3, 2], d=30, n_per_class=40, noise=0.05, seed=11)
    X = X + 0.5  # non-zero means
    Xneg = X.copy()
    Xneg[y == 1] *= -1
    for data in (X, Xneg):
        probe = VeLPIC(sign=sign).fit(data, y)
        for c, v in zip(probe.classes_, probe.class_vectors_.astype(np.float64)):
            ref = data[y == c] if sign == "class_mean" else data
            assert ref.astype(np.float64).mean(axis=0) @ v >= 0
    before = VeLPIC(sign=sign).fit(X, y).class_vectors_
    after = VeLPIC(sign=sign).fit(Xneg, y).class_vectors_
    # the eigenvector (the line) is unchanged by negating a class's data; only the sign may move
    np.testing.assert_allclose(np.abs(after @ before.T).diagonal(), 1.0, atol=1e-5)
    if sign == "class_mean":  # its own mean is negated -> that class's vector flips, others stay
        np.testing.assert_allclose(after[1], -before[1], atol=1e-5)
        np.testing.assert_allclose(after[[0, 2]], before[[0, 2]], atol=1e-5)
    assert np.allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# LinearProbe, NCM, KNN, LDA
# ----------------------------------------------------------------------------------------------
def blobs(n=100, d=10, K=3, sep=4.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = sep * rng.standard_normal((K, d))
    X = np.concatenate([c + rng.standard_normal((n, d)) for c in centers]).astype(np.float32)
    return X, np.repeat(np.arange(K), n)


def test_linear_probe_learns_and_is_deterministic():
    import torch

    X, y = blobs(sep=6.0)
    Xt, yt = blobs(sep=6.0, seed=0)[0] + 0.1, y
    state = torch.get_rng_state()
    a = LinearProbe(epochs=20, lr=1e-2, device="cpu").fit(X, y)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    assert a.score(X, y) == 1.0 and a.score(Xt, yt) >= 0.98
    assert a.coef_.shape == (3, 10) and a.intercept_.shape == (3,)
    b = LinearProbe(epochs=20, lr=1e-2, device="cpu").fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    c = LinearProbe(epochs=20, lr=1e-2, device="cpu", seed=1).fit(X, y)
    assert not np.array_equal(a.coef_, c.coef_)
    np.testing.assert_array_equal(a.predict(X), np.argmax(X @ a.coef_.T + a.intercept_, 1))


def test_ncm_matches_cosine_definition():
    X, y = blobs(K=4, seed=3)
    Xt = np.random.default_rng(4).standard_normal((300, 10)).astype(np.float32)
    probe = NearestClassMean().fit(X, y)
    M = np.stack([X[y == c].astype(np.float64).mean(0) for c in range(4)])
    cos = (Xt @ M.T) / np.linalg.norm(Xt, axis=1)[:, None] / np.linalg.norm(M, axis=1)[None]
    np.testing.assert_array_equal(probe.predict(Xt), np.argmax(cos, 1))
    np.testing.assert_allclose(probe.decision_function(Xt), cos, atol=1e-5)


def test_knn_and_lda_match_sklearn():
    X, y = blobs(K=4, sep=1.5, seed=5)  # overlapping, so the classifiers make mistakes
    Xt, _ = blobs(K=4, sep=1.5, seed=6)
    for k, metric in ((5, "cosine"), (3, "euclidean")):
        ours = KNNProbe(n_neighbors=k, metric=metric).fit(X, y).predict(Xt)
        theirs = KNeighborsClassifier(n_neighbors=k, metric=metric).fit(X, y).predict(Xt)
        np.testing.assert_array_equal(ours, theirs)
    for params in ({}, {"solver": "lsqr", "shrinkage": "auto"}):
        np.testing.assert_array_equal(LDAProbe(**params).fit(X, y).predict(Xt),
                                      LinearDiscriminantAnalysis(**params).fit(X, y).predict(Xt))
    yb = (y >= 2).astype(int)  # binary: one coef row, sign rule
    ours = LDAProbe().fit(X, yb)
    assert ours.coef_.shape[0] == 1
    np.testing.assert_array_equal(ours.predict(Xt), LinearDiscriminantAnalysis().fit(X, yb).predict(Xt))


# ----------------------------------------------------------------------------------------------
# every probe: protocol, registry, persistence, validation
# ----------------------------------------------------------------------------------------------
FAST_PARAMS = {"linear": {"epochs": 3, "lr": 1e-2, "device": "cpu"}}


@pytest.fixture(scope="module")
def data():
    X, y, _, Xt, yt = subspace_data([3, 4, 3], d=32, n_per_class=40, noise=0.1, seed=12, n_test=20,
                                    labels=[2, 5, 7])
    return X + 0.2, y, Xt + 0.2, yt


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_protocol_and_round_trip(name, data, tmp_path):
    import h5py

    X, y, Xt, yt = data
    probe = make_probe(name, **FAST_PARAMS.get(name, {}))
    assert isinstance(probe, PROBES[name]) and probe._name == name
    params = probe.get_params()
    assert clone(probe).get_params() == params
    assert probe.set_params(**params) is probe
    assert probe.fit(X, y) is probe
    pred = probe.predict(Xt)
    np.testing.assert_array_equal(probe.classes_, [2, 5, 7])
    assert set(pred) <= {2, 5, 7}
    assert probe.score(Xt, yt) == pytest.approx(np.mean(pred == yt))
    if name in ("masc", "knn"):  # the subspace-structured data suits these two
        assert probe.score(Xt, yt) >= 0.9
    # fitted clone starts unfitted and refits to the same predictions (deterministic probes)
    np.testing.assert_array_equal(clone(probe).fit(X, y).predict(Xt), pred)
    # round trip through named arrays, and through an actual HDF5 file
    arrays = probe_to_arrays(probe)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    assert set(arrays) == set(probes.probe_template_keys(name))
    np.testing.assert_array_equal(probe_from_arrays(name, params, arrays).predict(Xt), pred)
    with h5py.File(tmp_path / "p.h5", "w") as fh:
        for k, v in arrays.items():
            fh[k] = v
    with h5py.File(tmp_path / "p.h5", "r") as fh:
        loaded = {k: fh[k][()] for k in fh}
    restored = probe_from_arrays(name, params, loaded)
    np.testing.assert_array_equal(restored.predict(Xt), pred)
    assert restored.score(Xt, yt) == probe.score(Xt, yt)
    # float16 input accepted for fit and predict
    p16 = make_probe(name, **FAST_PARAMS.get(name, {})).fit(X.astype(np.float16), y)
    assert p16.predict(Xt.astype(np.float16)).shape == yt.shape
    # predict before fit is an error
    with pytest.raises(Exception, match="not fitted"):
        make_probe(name).predict(Xt)


def test_masc_round_trip_preserves_bases(data):
    X, y, _, _ = data
    probe = MASC().fit(X, y)
    restored = probe_from_arrays("masc", {"variance": 0.99}, probe_to_arrays(probe))
    for a, b in zip(probe.bases_, restored.bases_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(restored.n_components_, probe.n_components_)


def test_make_probe_errors():
    with pytest.raises(ValueError, match=r"unknown probe 'svm'.*masc"):
        make_probe("svm")
    with pytest.raises(ValueError, match=r"\['varience'\].*allowed: \['variance'\]"):
        make_probe("masc", varience=0.9)
    for bad in (0, 0.0, 1.5, -1, True, "0.9"):
        with pytest.raises(ValueError, match="variance"):
            make_probe("masc", variance=bad)
    with pytest.raises(ValueError, match="sign"):
        make_probe("velpic", sign="mean")
    with pytest.raises(ValueError, match="epochs"):
        make_probe("linear", epochs=0)
    with pytest.raises(ValueError, match="shrinkage"):
        make_probe("lda", shrinkage=0.5)  # needs lsqr/eigen
    with pytest.raises(ValueError, match="n_neighbors"):
        make_probe("knn", n_neighbors=0)
    with pytest.raises(ValueError, match="lack"):
        probe_from_arrays("masc", {}, {"bases": np.zeros((3, 1))})


def test_input_validation():
    X, y = blobs(n=10)
    probe = MASC()
    with pytest.raises(ValueError, match="2-D"):
        probe.fit(X[:, 0], y)
    with pytest.raises(ValueError, match="different numbers of samples"):
        probe.fit(X, y[:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        probe.fit(bad, y)
    with pytest.raises(ValueError, match="integer class labels"):
        probe.fit(X, y + 0.5)
    with pytest.raises(ValueError, match="at least one sample"):
        probe.fit(X[:0], y[:0])
    probe.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        probe.predict(X[:, :5])
    with pytest.raises(ValueError, match="infinity"):
        probe.predict(np.full((1, 10), np.inf))
    # a single class is fine for the geometric probes
    assert (MASC().fit(X[:10], y[:10]).predict(X) == 0).all()


def test_setting_id():
    assert setting_id("masc", {}) == "variance=0.99"
    assert setting_id("masc", {"variance": 0.99}) == "variance=0.99"
    assert setting_id("masc", {"variance": 20}) == "variance=20"
    assert setting_id("velpic", {}) == "sign=class_mean"
    assert setting_id("velpic", {"sign": "global_mean"}) == "sign=global_mean"
    assert setting_id("ncm", {}) == ""
    assert setting_id("knn", {"n_neighbors": 10}) == "metric=cosine,n_neighbors=10"
    assert setting_id("lda", {}) == "shrinkage=None,solver=svd"
    lin = setting_id("linear", {"device": "cuda", "lr": 1e-2})
    assert lin == "batch_size=128,epochs=20,lr=0.01,seed=0,weight_decay=0.0" == setting_id("linear", {"lr": 0.01})
    with pytest.raises(ValueError):
        setting_id("masc", {"bogus": 1})
