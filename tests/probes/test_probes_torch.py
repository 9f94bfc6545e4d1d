"""The torch route of the probes (``device="cpu"``, and ``"cuda"`` where a GPU is visible) against
the numpy reference route (``device=None``) on the synthetic cases of tests/probes/test_probes.py.

Predictions must be identical, fitted arrays the same arrays (names, dtypes, shapes) and equal within
a tight tolerance (MASC bases up to the sign of each eigenvector: compared as projectors), and a
probe fitted by one route must score identically by the other.  The CUDA-only code (the device
chunk budget, host -> device copies) shares everything else with the CPU torch route tested here;
the same tests run on CUDA when one is present.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_probes import KEYS, blobs, subspace_data, write_activation_file

from pipeline.probes import (
    MASC,
    LinearProbe,
    NearestClassMean,
    VeLPIC,
    accel,
    fit_subspaces,
    load_fitted,
    make_probe,
    probe_from_arrays,
    probe_to_arrays,
    score_probes,
    setting_id,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["lapack", "torch_eigh"], autouse=True)
def cpu_eigensolver(request, monkeypatch):
    """Every test twice on CPU: with the numpy route's LAPACK eigensolvers, and with
    ``torch.linalg.eigh`` (the CUDA branch's code, run on CPU tensors)."""
    monkeypatch.setattr(accel, "CPU_EIGH_WITH_LAPACK", request.param == "lapack")
    return request.param
GEOMETRIC = [(MASC, {"variance": 0.99}), (MASC, {"variance": 0.9}), (MASC, {"variance": 4}),
             (VeLPIC, {"sign": "class_mean"}), (VeLPIC, {"sign": "global_mean"}), (NearestClassMean, {})]
CASES = {  # name -> (dims per class, d, n per class, noise, seed): n_c < d, n_c > d, integer counts
    "gram": ([3, 5, 8, 4], 96, 40, 0.05, 1),
    "square": ([3, 5, 2], 24, 150, 0.05, 2),
    "integer": ([3, 5, 8, 4], 64, 40, 0.05, 3),
}


def case_data(case, dtype=np.float32):
    dims, d, n, noise, seed = CASES[case]
    X, y, _, Xt, _ = subspace_data(dims, d=d, n_per_class=n, noise=noise, seed=seed, n_test=50, dtype=dtype)
    X = X + np.asarray(0.3, dtype)  # non-zero means, so the VeLPIC sign conventions matter
    rng = np.random.default_rng(9)  # points from no class at all: agreement is not trivial
    Xt = np.vstack([Xt + np.asarray(0.3, dtype), rng.standard_normal((200, d)).astype(dtype)])
    return X, y, Xt


def assert_same_fit(ref, ours, atol=1e-5):
    """Same arrays (names, dtypes, shapes), equal within ``atol``; MASC bases as projectors."""
    a, b = probe_to_arrays(ref), probe_to_arrays(ours)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
    if isinstance(ref, MASC):
        np.testing.assert_array_equal(ref.n_components_, ours.n_components_)
        np.testing.assert_allclose(ref.explained_energy_, ours.explained_energy_, rtol=1e-12, atol=1e-12)
        for B, C in zip(ref.bases_, ours.bases_, strict=True):
            B, C = B.astype(np.float64), C.astype(np.float64)
            np.testing.assert_allclose(B @ B.T, C @ C.T, atol=atol)
            # each basis vector equals the reference's up to its sign (distinct eigenvalues here)
            signs = np.sign(np.sum(B * C, axis=0))
            np.testing.assert_allclose(B, C * signs, atol=atol)
    else:
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol if a[key].dtype.kind == "f" else 0)


# ----------------------------------------------------------------------------------------------
# predictions and arrays: torch route == numpy route
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("cls, params", GEOMETRIC, ids=lambda v: getattr(v, "__name__", str(v)))
def test_torch_route_matches_numpy_route(device, case, cls, params):
    X, y, Xt = case_data(case)
    ref = cls(**params).fit(X, y)
    ours = cls(**params, device=device).fit(X, y)
    assert_same_fit(ref, ours)
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    scores = ours.decision_function(Xt)
    assert scores.dtype == ref.decision_function(Xt).dtype == np.float32
    np.testing.assert_allclose(scores, ref.decision_function(Xt), rtol=1e-5, atol=1e-5)
    if cls is MASC and params["variance"] == 4:  # an integer component count
        assert (ours.n_components_ == 4).all()
    if cls is MASC and case == "gram":
        assert (ours.n_components_ < X.shape[1]).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls, params", GEOMETRIC, ids=lambda v: getattr(v, "__name__", str(v)))
def test_fitted_on_torch_scores_the_same_with_numpy_and_back(device, cls, params, tmp_path):
    import h5py

    X, y, Xt = case_data("gram")
    ours = cls(**params, device=device).fit(X, y)
    pred = ours.predict(Xt)
    # the same object switched to the numpy route, and a copy rebuilt from its arrays (via HDF5)
    np.testing.assert_array_equal(ours.set_params(device=None).predict(Xt), pred)
    with h5py.File(tmp_path / "p.h5", "w") as fh:
        for k, v in probe_to_arrays(ours).items():
            fh[k] = v
    with h5py.File(tmp_path / "p.h5", "r") as fh:
        arrays = {k: fh[k][()] for k in fh}
    name = ours._name
    np.testing.assert_array_equal(probe_from_arrays(name, params, arrays).predict(Xt), pred)
    # and a numpy-fitted probe scored by the torch route
    ref = cls(**params).fit(X, y)
    np.testing.assert_array_equal(ref.set_params(device=device).predict(Xt), ref.set_params(device=None).predict(Xt))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls, params", GEOMETRIC, ids=lambda v: getattr(v, "__name__", str(v)))
def test_float16_float64_and_tensor_inputs(device, cls, params):
    X, y, Xt = case_data("gram")
    # float16: upcast exactly as the numpy route does (float32 compute, float32 scores)
    X16, Xt16 = X.astype(np.float16), Xt.astype(np.float16)
    ref16 = cls(**params).fit(X16, y)
    ours16 = cls(**params, device=device).fit(X16, y)
    assert_same_fit(ref16, ours16)
    np.testing.assert_array_equal(ours16.predict(Xt16), ref16.predict(Xt16))
    assert ours16.decision_function(Xt16).dtype == np.float32
    # float64: float64 scores, same predictions
    X64, Xt64 = X.astype(np.float64), Xt.astype(np.float64)
    ref64 = cls(**params).fit(X64, y)
    ours64 = cls(**params, device=device).fit(X64, y)
    assert_same_fit(ref64, ours64)
    assert ours64.decision_function(Xt64).dtype == np.float64
    np.testing.assert_array_equal(ours64.predict(Xt64), ref64.predict(Xt64))
    # torch tensors (on the device, as the fused path passes them), labels too
    Xd, yd = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    ref = cls(**params).fit(X, y)
    ourst = cls(**params, device=device).fit(Xd, yd)
    assert_same_fit(ref, ourst)
    np.testing.assert_array_equal(ourst.predict(torch.from_numpy(Xt).to(device)), ref.predict(Xt))
    # the numpy route takes (host copies of) tensors too
    np.testing.assert_array_equal(cls(**params).fit(Xd, yd).predict(torch.from_numpy(Xt).to(device)),
                                  cls(**params).fit(X, y).predict(Xt))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls, params", GEOMETRIC, ids=lambda v: getattr(v, "__name__", str(v)))
def test_single_sample_class_and_zero_rows(device, cls, params):
    X, y, Xt = case_data("gram")
    X = np.vstack([X, X[:1] * 2, np.zeros((4, X.shape[1]), np.float32)])
    y = np.concatenate([y, [11], np.full(4, 12)])  # class 11: one sample; class 12: all zero
    Xt = np.vstack([Xt, np.zeros((2, X.shape[1]), np.float32)])  # all-zero test rows score 0
    ref = cls(**params).fit(X, y)
    ours = cls(**params, device=device).fit(X, y)
    assert_same_fit(ref, ours)
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    np.testing.assert_allclose(ours.decision_function(Xt), ref.decision_function(Xt), rtol=1e-5, atol=1e-5)
    if cls is MASC:
        assert ours.n_components_[-2] == 1 and ours.n_components_[-1] == 0
    if cls is VeLPIC:
        assert not ours.class_vectors_[-1].any()


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_fit_and_scoring(device, monkeypatch):
    """Tiny chunk budgets: the d x d second moment accumulated over many row blocks and scoring
    in many blocks give the unchunked results (within rounding) and the same predictions."""
    X, y, Xt = case_data("square")
    full = {cls: cls(**params, device=device).fit(X, y) for cls, params in GEOMETRIC[:1] + GEOMETRIC[3:]}
    scores = {cls: p.decision_function(Xt) for cls, p in full.items()}
    monkeypatch.setattr("pipeline.probes._common.CHUNK_ELEMENTS", 24 * 7)
    monkeypatch.setattr(accel, "DEVICE_CHUNK_ELEMENTS", 24 * 7)
    for cls, params in GEOMETRIC[:1] + GEOMETRIC[3:]:
        chunked = cls(**params, device=device).fit(X, y)
        assert_same_fit(full[cls], chunked, atol=1e-6)
        np.testing.assert_allclose(chunked.decision_function(Xt), scores[cls], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(chunked.predict(Xt), full[cls].predict(Xt))


@pytest.mark.parametrize("device", DEVICES)
def test_linear_probe_scores_with_torch(device):
    X, y = blobs(sep=3.0, K=4, seed=2)
    Xt, _ = blobs(sep=3.0, K=4, seed=3)
    probe = LinearProbe(epochs=5, lr=1e-2, device=device).fit(X, y)
    torch_scores = probe.decision_function(Xt)
    numpy_scores = probe.set_params(device=None).decision_function(Xt)
    np.testing.assert_allclose(torch_scores, numpy_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(torch_scores, 1), np.argmax(numpy_scores, 1))


# ----------------------------------------------------------------------------------------------
# parameters, device resolution, numerics guards
# ----------------------------------------------------------------------------------------------
def test_device_is_an_execution_parameter():
    for name in ("masc", "velpic", "ncm", "linear"):
        assert "device" in make_probe(name).get_params()
        assert setting_id(name, {"device": "cpu"}) == setting_id(name, {})
    assert setting_id("masc", {"device": "cuda"}) == "variance=0.99"
    assert setting_id("ncm", {"device": "cpu"}) == ""
    for name in ("masc", "velpic", "ncm"):
        with pytest.raises(ValueError, match=r"device must be None or one of \['cpu', 'cuda'\]"):
            make_probe(name, device="gpu")
        with pytest.raises(ValueError, match="device"):
            make_probe(name, device="cuda:x")
        make_probe(name, device="cuda:1")  # not used until fit


def test_probe_device(monkeypatch):
    assert accel.probe_device(None) is None
    assert accel.probe_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert accel.probe_device("auto") is None  # no GPU: the numpy reference route
    with pytest.raises(RuntimeError, match="probes.device is 'cuda' but no GPU is visible"):
        accel.probe_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert accel.probe_device("auto") == "cuda"


def test_full_precision_is_restored_and_enforced():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        X, y, Xt = case_data("gram")
        pred = MASC(device="cpu").fit(X, y).predict(Xt)
        np.testing.assert_array_equal(pred, MASC().fit(X, y).predict(Xt))
        assert torch.get_float32_matmul_precision() == "medium"
        with accel.full_precision(torch):
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


# ----------------------------------------------------------------------------------------------
# the stages: probes.device "cpu" gives the rows of probes.device null
# ----------------------------------------------------------------------------------------------
STAGE_SETTINGS = [{"name": "masc", "params": {"variance": 0.99}}, {"name": "masc", "params": {"variance": 2}},
                  {"name": "velpic", "params": {}}, {"name": "velpic", "params": {"sign": "global_mean"}},
                  {"name": "ncm", "params": {}}, {"name": "linear", "params": {"epochs": 2, "lr": 1e-2}}]


@pytest.mark.parametrize("device", DEVICES)
def test_stages_on_a_device_give_the_reference_rows(device, tmp_path):
    import h5py

    acts = write_activation_file(tmp_path / "epoch_0.h5", n=90, m=45, d=40, K=3)
    tables, files = {}, {}
    for route in (None, device):
        tag = str(route)
        files[tag] = fit_subspaces(acts, tmp_path / f"s_{tag}.h5", settings=STAGE_SETTINGS, device=route)
        score_probes(acts, files[tag], tmp_path / f"p_{tag}.parquet", run_keys=KEYS, epoch=0, device=route)
        tables[tag] = pd.read_parquet(tmp_path / f"p_{tag}.parquet")
    ref, ours = tables["None"], tables[device]
    pd.testing.assert_frame_equal(ref, ours)
    assert set(ref.probe_setting) >= {"variance=0.99", "variance=2", "sign=class_mean", ""}
    # the same groups and arrays in both subspace files; only the recorded device differs
    with h5py.File(files["None"], "r") as a, h5py.File(files[device], "r") as b:
        names = []
        a.visit(names.append)
        other = []
        b.visit(other.append)
        assert names == other
        for group in (n for n in names if isinstance(a[n], h5py.Group) and "probe" in a[n].attrs):
            assert b[group].attrs["device"] == device
            assert a[group].attrs["params"] == b[group].attrs["params"]
    # a file fitted on the device is scored by the numpy route with the same rows
    score_probes(acts, files[device], tmp_path / "cross.parquet", run_keys=KEYS, epoch=0, device=None)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cross.parquet"), ref)
    assert load_fitted(files[device], "a", "masc", {"variance": 0.99}, "true", device=device).device == device


def test_stage_device_auto_without_gpu_is_the_numpy_route(tmp_path, monkeypatch):
    import h5py

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    acts = write_activation_file(tmp_path / "epoch_0.h5")
    out = fit_subspaces(acts, tmp_path / "s.h5", settings=STAGE_SETTINGS[:1], device="auto")
    with h5py.File(out, "r") as h5:
        assert h5["a/masc/variance=0_99/true"].attrs["device"] == "None"
    with pytest.raises(RuntimeError, match="no GPU"):
        fit_subspaces(acts, tmp_path / "t.h5", settings=STAGE_SETTINGS[:1], device="cuda")


def test_config_accepts_the_probe_device():
    from pipeline.config import validate_config
    from pipeline.core.config import ConfigError

    assert validate_config({})["probes"]["device"] is None
    for value in ("cpu", "cuda", "cuda:1", "auto", None):
        # devices=False: planning, or a cluster submission from a login node without a GPU
        assert validate_config({"probes": {"device": value}}, devices=False)["probes"]["device"] == value
    for value in ("cpu", "auto", None):
        assert validate_config({"probes": {"device": value}})["probes"]["device"] == value
    if not torch.cuda.is_available():  # where it runs, a GPU it cannot have is refused before any job
        with pytest.raises(ConfigError, match="probes.device is 'cuda' but no GPU is visible"):
            validate_config({"probes": {"device": "cuda"}})
    with pytest.raises(ConfigError, match="probes.device"):
        validate_config({"probes": {"device": "gpu"}})
