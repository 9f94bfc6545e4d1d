"""Tests for pipeline.probes on synthetic data with known structure.

Each class of the synthetic data lives in its own random low-dimensional subspace of R^d (plus
optional small noise), so the right subspaces, dimensions and labels are known.  MASC and VeLPIC
are checked against direct implementations of their definitions written here (d x d eigh of the
negative-augmented class data, explicit energy cut, explicit angles).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import KNeighborsClassifier

from pipeline import probes
from pipeline.core.errors import ArtifactError
from pipeline.probes import (
    KNN_METRICS,
    MASC,
    PROBES,
    KNNProbe,
    LDAProbe,
    LinearProbe,
    LogisticProbe,
    NearestClassMean,
    VeLPIC,
    assert_agree,
    fit_subspaces,
    load_fitted,
    make_probe,
    probe_from_arrays,
    probe_to_arrays,
    score_probes,
    setting_id,
)
from pipeline.probes.agreement import float32_resolution

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
    for B, R in zip(probe.bases_, ref, strict=False):
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
    for B, Q in zip(probe.bases_, Qs, strict=False):
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
    np.testing.assert_array_equal(probe.decision_function(Xt), full)  # same route rerun: bitwise
    monkeypatch.setattr("pipeline.probes._common.CHUNK_ELEMENTS", 64)  # forces many row chunks
    chunked = probe.decision_function(Xt)
    np.testing.assert_array_equal(probe.decision_function(Xt), chunked)  # same route rerun: bitwise
    # row chunks give BLAS other block shapes, so the float32 sums run in another order (up to
    # 3 eps apart on an AMD EPYC): the scores agree to the float32 resolution (16 float32 eps of
    # the row's largest score) and the predictions on every decided sample; the classes here are
    # well separated (smallest top-two gap 0.44), so there is no near-tie
    assert np.all(np.abs(chunked - full) <= float32_resolution(chunked, full)[:, None])
    assert_agree(chunked, full, max_near_ties=0, what="chunked vs unchunked MASC")
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
        for c, v in zip(probe.classes_, probe.class_vectors_.astype(np.float64), strict=False):
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
#: the torch route's devices here: the CPU, and the GPU where one is visible
TORCH_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
    for a, b in zip(probe.bases_, restored.bases_, strict=False):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(restored.n_components_, probe.n_components_)


def test_make_probe_errors():
    with pytest.raises(ValueError, match=r"unknown probe 'svm'.*masc"):
        make_probe("svm")
    with pytest.raises(ValueError, match=r"\['varience'\].*allowed: \['device', 'variance'\]"):
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


@pytest.mark.parametrize("device", [None, *TORCH_DEVICES], ids=lambda d: f"device={d}")
def test_input_validation(device):
    """The same refusals on every route: numpy (None) and torch on each device present."""
    X, y = blobs(n=10)
    probe = MASC(device=device)
    with pytest.raises(ValueError, match="2-D"):
        probe.fit(X[:, 0], y)
    with pytest.raises(ValueError, match="different numbers of samples"):
        probe.fit(X, y[:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    for given in (bad, torch.from_numpy(bad), bad.astype(np.float16)):
        with pytest.raises(ValueError, match="NaN"):
            probe.fit(given, y)
    with pytest.raises(ValueError, match="integer class labels"):
        probe.fit(X, y + 0.5)
    with pytest.raises(ValueError, match="at least one sample"):
        probe.fit(X[:0], y[:0])
    with pytest.raises(Exception, match="not fitted"):
        VeLPIC(device=device).predict(X)
    probe.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        probe.predict(X[:, :5])
    with pytest.raises(ValueError, match="infinity"):
        probe.predict(np.full((1, 10), np.inf))
    # a single class is fine for the geometric probes
    assert (MASC(device=device).fit(X[:10], y[:10]).predict(X) == 0).all()


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


# ----------------------------------------------------------------------------------------------
# logreg: a logistic regression that converges
# ----------------------------------------------------------------------------------------------
def huge_norm_data(n_per_class=150, d=60, K=4, informative=3, seed=0):
    """Rows of norm ~4,500: a large per-feature offset plus noise, the classes differing only in
    ``informative`` coordinates (by several noise widths); one constant feature. Train/test halves."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(0, 1000, d)
    means = np.zeros((K, d))
    means[:, :informative] = rng.normal(scale=200, size=(K, informative))
    y = np.repeat(np.arange(K), 2 * n_per_class)
    X = offset + means[y] + rng.normal(scale=30, size=(y.size, d))
    X[:, -1] = 7.0
    perm = rng.permutation(y.size)
    X, y = X[perm].astype(np.float32), y[perm]
    h = y.size // 2
    return X[:h], y[:h], X[h:], y[h:]


def test_logreg_converges_where_the_authors_probe_does_not():
    X, y, Xt, yt = huge_norm_data()
    assert np.linalg.norm(X, axis=1).mean() > 4000
    probe = LogisticProbe().fit(X, y)
    assert probe.converged_ and 0 < probe.n_iter_ < probe.max_iter
    assert probe.score(X, y) >= 0.99 and probe.score(Xt, yt) >= 0.98
    assert probe.scale_[-1] == 1.0 and np.all(probe.scale_[:-1] > 1)  # constant feature: scale 1
    np.testing.assert_allclose(probe.mean_, X.astype(np.float64).mean(0), rtol=1e-12)
    # the authors' Adam probe (no standardisation, 20 epochs) is far from it on the same data
    assert LinearProbe(device="cpu").fit(X, y).score(Xt, yt) < 0.9


@pytest.mark.parametrize("K", [2, 3])
def test_logreg_is_standardisation_plus_sklearn_lbfgs(K):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = blobs(K=K, sep=1.0, seed=7)  # overlapping: a regularised fit, not separable
    X = X * 300 + 1000
    Xt, _ = blobs(K=K, sep=1.0, seed=8)
    Xt = Xt * 300 + 1000
    ours = LogisticProbe(C=0.5).fit(X, y)
    scaler = StandardScaler().fit(X.astype(np.float64))
    theirs = LogisticRegression(C=0.5, max_iter=1000).fit(scaler.transform(X.astype(np.float64)), y)
    np.testing.assert_allclose(ours.scale_, scaler.scale_, rtol=1e-6)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(ours.predict(Xt), theirs.predict(scaler.transform(Xt.astype(np.float64))))
    assert ours.coef_.shape == ((1, 10) if K == 2 else (K, 10))
    assert ours.decision_function(Xt).shape == ((len(Xt),) if K == 2 else (len(Xt), K))
    restored = probe_from_arrays("logreg", ours.get_params(), probe_to_arrays(ours))
    np.testing.assert_array_equal(restored.decision_function(Xt), ours.decision_function(Xt))


def test_logreg_records_non_convergence():
    from sklearn.exceptions import ConvergenceWarning

    X, y, _, _ = huge_norm_data()
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        probe = LogisticProbe(max_iter=2).fit(X, y)
    assert not probe.converged_ and probe.n_iter_ == 2
    restored = probe_from_arrays("logreg", {"max_iter": 2}, probe_to_arrays(probe))
    assert restored.converged_ is False and restored.n_iter_ == 2
    # older files without the informational arrays still load
    arrays = {k: v for k, v in probe_to_arrays(probe).items() if k not in ("n_iter", "converged")}
    assert probe_from_arrays("logreg", {"max_iter": 2}, arrays).converged_ is None


def test_logreg_is_deterministic_across_blas_threads():
    from threadpoolctl import threadpool_limits

    X, y, Xt, _ = huge_norm_data(n_per_class=400, d=120)
    fits = []
    for threads in (1, 2, 1):
        with threadpool_limits(limits=threads):
            fits.append(LogisticProbe().fit(X, y))
    for other in fits[1:]:
        for name in ("mean_", "scale_", "coef_", "intercept_"):
            np.testing.assert_array_equal(getattr(other, name), getattr(fits[0], name))
        np.testing.assert_array_equal(other.decision_function(Xt), fits[0].decision_function(Xt))


def test_logreg_setting_id_and_not_from_moments():
    from pipeline.probes import FROM_MOMENTS

    assert setting_id("logreg", {}) == "C=1.0,max_iter=1000,tol=0.0001"
    assert "logreg" not in FROM_MOMENTS
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        LogisticProbe().fit(*blobs(n=5, K=1))


# ----------------------------------------------------------------------------------------------
# the authors' probe is deterministic whatever the caller's torch thread count
# ----------------------------------------------------------------------------------------------
def test_linear_probe_does_not_depend_on_torch_threads():
    import torch

    rng = np.random.default_rng(0)
    # wide enough that torch's CPU kernels split work across threads (these gave different
    # coefficients with 1 and 2 threads before the fit pinned itself to one thread)
    X = np.maximum(rng.normal(size=(256, 2048)) * 50, 0).astype(np.float32)
    y = rng.integers(0, 4, 256)
    before = torch.get_num_threads()
    try:
        fits = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fits.append(LinearProbe(epochs=1, device="cpu").fit(X, y))
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)
    np.testing.assert_array_equal(fits[0].intercept_, fits[1].intercept_)
    np.testing.assert_array_equal(fits[0].predict(X), fits[1].predict(X))


# ----------------------------------------------------------------------------------------------
# enumerated parameters are refused when the probe is built
# ----------------------------------------------------------------------------------------------
def test_enumerated_params_fail_at_construction():
    with pytest.raises(ValueError, match=r"metric must be one of \[.*'cosine'.*\]; got 'not_a_metric'"):
        make_probe("knn", metric="not_a_metric")
    with pytest.raises(ValueError, match=r"solver must be one of \['svd', 'lsqr', 'eigen'\]; got 'qr'"):
        make_probe("lda", solver="qr")
    with pytest.raises(ValueError, match=r"sign must be one of \['class_mean', 'global_mean'\]"):
        make_probe("velpic", sign="mean")
    with pytest.raises(ValueError, match=r"device must be None or one of \['cpu', 'cuda', 'mps'\]"):
        make_probe("linear", device="gpu")
    make_probe("linear", device="cuda:1")  # an indexed device is fine (not used until fit)
    for params in ({"C": 0}, {"C": float("inf")}, {"tol": -1.0}, {"max_iter": 0}, {"max_iter": 1.5}):
        with pytest.raises(ValueError, match=next(iter(params))):
            make_probe("logreg", **params)


@pytest.mark.parametrize("metric", KNN_METRICS)
def test_every_allowed_knn_metric_fits(metric):
    X, y = blobs(n=20, seed=1)
    assert KNNProbe(metric=metric).fit(X, y).score(X, y) > 0.9


def test_config_validation_refuses_a_bad_metric_before_any_job():
    from pipeline.config import validate_config
    from pipeline.core.config import ConfigError

    with pytest.raises(ConfigError, match="not_a_metric"):
        validate_config({"probes": {"settings": [{"name": "knn", "params": {"metric": "not_a_metric"}}]}})


# ----------------------------------------------------------------------------------------------
# the package: cheap to import, underscored names stay private
# ----------------------------------------------------------------------------------------------
def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, pipeline.probes; print('torch' in sys.modules, 'h5py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_no_module_imports_another_modules_private_names():
    import ast
    from pathlib import Path

    root = Path(probes.__file__).resolve().parents[1]  # src/pipeline
    offenders = []
    for path in sorted(root.rglob("*.py")):
        inside = path.parent.name == "probes" and path.parent.parent == root
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module is None:
                continue
            if node.module == "pipeline.probes._common" and inside:
                continue  # the package's one internal module
            def is_private(name):
                return name.startswith("_") and not name.startswith("__")

            private = [a.name for a in node.names if is_private(a.name)]
            if private or is_private(node.module.split(".")[-1]):
                offenders.append(f"{path.relative_to(root)}: from {node.module} import {private}")
    assert not offenders


# ----------------------------------------------------------------------------------------------
# stages: unreadable activation and subspace files name themselves
# ----------------------------------------------------------------------------------------------
def write_activation_file(path, n=60, m=30, d=8, K=3, seed=0):
    """A small activation file in the stage's layout (pipeline.core.activations), two layers."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        h5.attrs["layers"] = '["a", "b"]'
        h5.attrs["layer_dims"] = f'{{"a": {d}, "b": {d}}}'
        h5.attrs["num_classes"] = K
        h5.attrs["dtype"] = "float32"
        for split, rows in (("train", n), ("test", m)):
            y = np.arange(rows) % K
            h5[f"predictions/{split}"] = y
            for layer in ("a", "b"):
                h5[f"layers/{layer}/{split}"] = (rng.normal(size=(rows, d)) + 3 * np.eye(K, d)[y]).astype(np.float32)
        h5["labels/train_true"] = np.arange(n) % K
        h5["labels/train_corrupted"] = rng.integers(0, K, n)
        h5["labels/test"] = np.arange(m) % K
        h5.attrs["complete"] = True
    return path


KEYS = {"dataset": "digits", "model": "cnn", "corruption": 0.5, "seed": 0, "variant": "standard"}
STAGE_SETTINGS = [{"name": "masc", "params": {"variance": 0.99}}, {"name": "logreg", "params": {}}]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_stages_fit_and_score_logreg(tmp_path):
    import pandas as pd

    acts = write_activation_file(tmp_path / "epoch_0.h5")
    fit_subspaces(acts, tmp_path / "s.h5", settings=STAGE_SETTINGS)
    score_probes(acts, tmp_path / "s.h5", tmp_path / "p.parquet", run_keys=KEYS, epoch=0)
    rows = pd.read_parquet(tmp_path / "p.parquet")
    logreg = rows[(rows.probe == "logreg") & (rows.split == "test") & (rows.fit_labels == "true")]
    assert set(logreg.layer) == {"a", "b"} and (logreg.accuracy > 0.8).all()
    assert load_fitted(tmp_path / "s.h5", "a", "logreg", {}, "true").converged_


@pytest.mark.parametrize("damage", ["truncated", "not_hdf5", "missing_group"])
def test_unreadable_activation_file_raises_artifact_error(tmp_path, damage):
    import h5py

    acts = write_activation_file(tmp_path / "epoch_3.h5")
    if damage == "truncated":
        truncate(acts)
    elif damage == "not_hdf5":
        acts.write_text("not an HDF5 file")
    else:
        with h5py.File(acts, "a") as h5:
            del h5["labels/train_corrupted"]
    with pytest.raises(ArtifactError, match=r"epoch_3\.h5.*delete it and rerun the workflow") as info:
        fit_subspaces(acts, tmp_path / "s.h5", settings=STAGE_SETTINGS)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("damage", ["truncated", "not_hdf5", "incomplete", "missing_group"])
def test_unreadable_subspace_file_raises_artifact_error(tmp_path, damage):
    import h5py

    acts = write_activation_file(tmp_path / "epoch_0.h5")
    subspaces = fit_subspaces(acts, tmp_path / "subspaces.h5", settings=STAGE_SETTINGS)
    if damage == "truncated":
        truncate(subspaces)
    elif damage == "not_hdf5":
        subspaces.write_text("garbage")
    else:
        with h5py.File(subspaces, "a") as h5:
            if damage == "incomplete":
                h5.attrs["complete"] = False
            else:
                del h5["b/logreg"]
    with pytest.raises(ArtifactError, match=r"subspaces\.h5.*delete it and rerun the workflow") as info:
        score_probes(acts, subspaces, tmp_path / "p.parquet", run_keys=KEYS, epoch=0)
    assert "\n" not in str(info.value)
    if damage == "missing_group":
        assert "b/logreg" in str(info.value)
    assert not (tmp_path / "p.parquet").exists()
    if damage in ("truncated", "not_hdf5"):
        with pytest.raises(ArtifactError, match="subspaces.h5"):
            load_fitted(subspaces, "a", "masc", {"variance": 0.99}, "true")
