"""Sphericity test for N < d (issue 9): size, power, Gram route vs d x d route, heavy tails.

Size: ``R = 2000`` null replicates per shape give a standard error of 0.49 % on a 5 % rejection
rate, so [3 %, 7 %] is a +-4 SE band; the Monte-Carlo null is drawn once per shape (B = 4999, which
keeps the conditional size of the fixed null within ~0.3 % of 5 %) and reused through ``null=``.
"""

import numpy as np
import pytest
from scipy import stats

from pipeline.dynamics import (
    SphericityNull,
    covariance_spectrum,
    sphericity_null,
    sphericity_statistics,
    sphericity_test,
)
from pipeline.dynamics.sphericity import _wishart_raw_grams, gram_matrix

R = 2000
B = 4999
# (N, d, scale): N < d, N = d, N > d, N << d, at very different scales
NULL_SHAPES = [(20, 200, 1e-3), (40, 40, 1.0), (50, 10, 1e3), (10, 500, 7.0)]


@pytest.mark.parametrize("N,d,scale", NULL_SHAPES)
def test_size_on_isotropic_gaussian_nulls(N, d, scale):
    null = sphericity_null(N, d, B, seed=11)
    rng = np.random.default_rng([N, d])
    Z = rng.standard_normal((R, N, d)) * scale + rng.standard_normal(d) * scale  # any common mean
    st = sphericity_statistics(Z)
    size = np.mean(null.p_value(st["john_u"]) <= 0.05)
    size_sign = np.mean(null.spatial_sign_p_value(st["spatial_sign_u"]) <= 0.05)
    assert 0.03 <= size <= 0.07, size
    assert 0.03 <= size_sign <= 0.07, size_sign
    # the public single-sample call gives the same p-values as the batch route
    for r in range(3):
        res = sphericity_test(Z[r], null=null)
        assert res["p_value"] == null.p_value(st["john_u"][r])
        assert res["spatial_sign_p_value"] == null.spatial_sign_p_value(st["spatial_sign_u"][r])
        assert res["n_resamples"] == B and res["n_rows"] == N and res["dim"] == d


@pytest.mark.parametrize("N,d,spike", [(20, 200, 10.0), (40, 40, 3.0), (50, 10, 2.0), (10, 500, 100.0)])
def test_power_against_a_few_spikes(N, d, spike):
    null = sphericity_null(N, d, 999, seed=3)
    rng = np.random.default_rng([N, d, 1])
    sd = np.ones(d)
    sd[:3] = np.sqrt(1.0 + spike)  # three spiked directions
    Z = rng.standard_normal((200, N, d)) * sd
    st = sphericity_statistics(Z)
    assert np.mean(null.p_value(st["john_u"]) <= 0.05) >= 0.95
    # the spatial-sign variant uses N // 2 pair differences: it needs stronger spikes
    sd[:3] = np.sqrt(1.0 + 5 * spike)
    st = sphericity_statistics(rng.standard_normal((200, N, d)) * sd)
    assert np.mean(null.spatial_sign_p_value(st["spatial_sign_u"]) <= 0.05) >= 0.95


def _direct(Z):
    """Every statistic from the d x d covariance (only for small d)."""
    N, d = Z.shape
    n = N - 1
    Zc = Z - Z.mean(0)
    S = Zc.T @ Zc / n
    tr, tr2 = np.trace(S), np.trace(S @ S)
    u = d * tr2 / tr ** 2 - 1
    a2 = n ** 2 / ((n - 1) * (n + 2)) * (tr2 - tr ** 2 / n) / d
    D = Z[0:2 * (N // 2):2] - Z[1:2 * (N // 2):2]
    Us = D / np.linalg.norm(D, axis=1, keepdims=True)
    Ss = Us.T @ Us / Us.shape[0]
    eig = np.sort(np.linalg.eigvalsh(S))[::-1]
    return {"john_u": u, "ledoit_wolf_z": (n * u - d - 1) / 2,
            "srivastava_z": n / 2 * (a2 / (tr / d) ** 2 - 1),
            "spatial_sign_u": d * np.trace(Ss @ Ss) / np.trace(Ss) ** 2 - 1,
            "participation_ratio": tr ** 2 / tr2, "trace": tr, "eig": eig}


@pytest.mark.parametrize("N,d", [(12, 6), (6, 9), (9, 9)])
def test_gram_route_equals_dxd_route(N, d):
    rng = np.random.default_rng(N * d)
    Z = rng.standard_normal((N, d)) @ rng.standard_normal((d, d)) + 3.0
    direct = _direct(Z)
    gram = sphericity_statistics(Z)
    for key in ("john_u", "ledoit_wolf_z", "srivastava_z", "spatial_sign_u", "participation_ratio", "trace"):
        np.testing.assert_allclose(gram[key], direct[key], rtol=1e-10, atol=1e-10, err_msg=key)
    spec = covariance_spectrum(Z, k=5)
    np.testing.assert_allclose(spec["eigenvalues"], direct["eig"][:5], rtol=1e-10, atol=1e-10)
    assert spec["topk_energy"] == pytest.approx(direct["eig"][:5].sum() / direct["trace"], rel=1e-10)
    res = sphericity_test(Z, n_resamples=99)
    assert set(res) >= {"john_u", "p_value", "ledoit_wolf_z", "srivastava_z", "spatial_sign_p_value",
                        "participation_ratio"}
    # the paper's T = ||S~ - I||_F^2 / d with S~ = S / (tr S / d) is John's U
    Zc = Z - Z.mean(0)
    S = Zc.T @ Zc / (N - 1)
    T = np.linalg.norm(S / (np.trace(S) / d) - np.eye(d)) ** 2 / d
    assert res["john_u"] == pytest.approx(T, rel=1e-10)


def test_huge_dimension_never_forms_dxd():
    Z = np.random.default_rng(0).standard_normal((8, 200_000)).astype(np.float32)  # d x d: 320 GB
    res = sphericity_test(Z, n_resamples=199)
    assert 0 < res["p_value"] <= 1 and res["eigenvalues"].shape == (5,)
    assert res["eigenvalues"][-1] >= 0 and res["participation_ratio"] == pytest.approx(7, rel=0.05)


def test_spatial_sign_keeps_size_under_heavy_tailed_isotropy():
    N, d = 20, 100
    null = sphericity_null(N, d, 1999, seed=5)
    rng = np.random.default_rng(9)
    g = rng.standard_normal((1000, N, d))
    Z = g / np.sqrt(rng.chisquare(1, size=(1000, N, 1))) + 5.0  # multivariate Cauchy, isotropic
    st = sphericity_statistics(Z)
    assert np.mean(null.p_value(st["john_u"]) <= 0.05) > 0.9       # Gaussian calibration fails
    assert np.mean(null.spatial_sign_p_value(st["spatial_sign_u"]) <= 0.05) <= 0.07


def test_bartlett_null_matches_direct_gaussian_grams():
    rng = np.random.default_rng(4)
    N, d, n = 8, 30, 4000
    from pipeline.dynamics.sphericity import _center_gram, _john_u
    u_bartlett = _john_u(_center_gram(_wishart_raw_grams(rng, n, N, d)), d)
    u_direct = _john_u(_center_gram(gram_matrix(rng.standard_normal((n, N, d)))), d)
    assert stats.ks_2samp(u_bartlett, u_direct).pvalue > 0.001


def test_p_value_formula_and_null_reuse():
    null = SphericityNull(5, 50, True, 0, np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert null.p_value(2.5) == pytest.approx((1 + 2) / 5)
    assert null.p_value(10.0) == pytest.approx(1 / 5)
    np.testing.assert_allclose(null.p_value(np.array([0.0, 4.0])), [1.0, 2 / 5])
    assert sphericity_null(5, 50, 99, seed=1) is sphericity_null(5, 50, 99, seed=1)  # cached
    with pytest.raises(ValueError, match="null is for"):
        sphericity_test(np.ones((6, 50)), null=sphericity_null(5, 50, 99))


def test_dead_coordinates_make_the_all_coordinate_test_reject_and_are_dropped():
    """Issue 16: an isotropic sample on 60 of 100 coordinates, exactly 0 on the other 40 (dead ReLU
    units). Over all 100 coordinates the test rejects nearly every sample; on the moving ones it keeps
    its size."""
    from pipeline.dynamics import moving_coordinates

    N, d, live = 16, 100, 60  # 40 % dead
    rng = np.random.default_rng(5)
    Z = np.zeros((300, N, d))
    Z[:, :, :live] = rng.standard_normal((300, N, live)) * 1e-7   # tiny, as one-step changes are
    null_all, null_live = sphericity_null(N, d, 999, seed=1), sphericity_null(N, live, 999, seed=1)
    all_p = null_all.p_value(sphericity_statistics(Z, spatial_sign=False)["john_u"])
    assert (all_p <= 0.05).mean() >= 0.95
    masks = np.stack([moving_coordinates(z) for z in Z])
    assert (masks.sum(1) == live).all() and masks[:, :live].all()
    live_p = null_live.p_value(sphericity_statistics(Z[:, :, :live], spatial_sign=False)["john_u"])
    assert (live_p <= 0.05).mean() <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / 300)
    # a coordinate that moves in a single draw is kept; shape errors are named
    z = np.zeros((4, 3))
    z[2, 1] = 1e-300
    assert moving_coordinates(z).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="must be"):
        moving_coordinates(np.zeros(3))
