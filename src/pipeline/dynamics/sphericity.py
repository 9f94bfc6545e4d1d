"""Sphericity (isotropy) tests and covariance spectra of an ``(N, d)`` sample, valid for ``N < d``.

Everything is computed from the ``N x N`` Gram matrix, never from the ``d x d`` covariance.  With
rows ``z_i`` centered by their mean, ``Zc``, the sample covariance is ``S = Zc^T Zc / n`` with
``n = N - 1`` degrees of freedom, and with ``G = Zc Zc^T``::

    tr S = tr G / n,    tr S^2 = ||G||_F^2 / n^2,    nonzero eig(S) = eig(G) / n.

Statistics (:func:`sphericity_test`):

* ``john_u`` -- John's ``U = d tr(S^2) / tr(S)^2 - 1``.  This is exactly the paper's Appendix E
  statistic ``T = ||S~ - I||_F^2 / d`` with ``S~ = S / (tr S / d)``.  Scale invariant, so its null
  distribution under ``H0: Sigma = s^2 I`` depends only on ``(N, d)``.
* ``p_value`` -- Monte-Carlo (parametric bootstrap) p-value ``(1 + #{U_b >= U}) / (B + 1)`` from ``B``
  Gaussian ``(N, d)`` matrices processed identically (:func:`sphericity_null`).  The Gram matrix of a
  Gaussian ``(N, d)`` matrix is Wishart ``W_N(d, I)``; for ``d >= N`` it is drawn directly by the
  Bartlett decomposition (``O(N^2)`` random numbers per resample instead of ``N d``), for ``d < N``
  from the Gaussian matrix itself.
* ``ledoit_wolf_z`` -- Ledoit & Wolf (2002): under H0, ``n U - d -> N(1, 4)`` as ``n, d -> oo``
  (``d / n -> c``), so ``z = (n U - d - 1) / 2``; ``ledoit_wolf_p`` its upper tail.
* ``srivastava_z`` -- Srivastava (2005): ``a1 = tr S / d``,
  ``a2 = n^2 / ((n - 1)(n + 2)) * (tr S^2 - (tr S)^2 / n) / d``, ``z = (n / 2)(a2 / a1^2 - 1) -> N(0, 1)``;
  ``srivastava_p`` its upper tail.
* ``spatial_sign_u`` / ``spatial_sign_p_value`` -- John's U of the spatial-sign covariance
  ``(1/M) sum u_k u_k^T`` of unit vectors ``u_k`` (rows scaled to unit norm), calibrated by the same
  Monte Carlo.  A heavy-tailed but isotropic sample makes every Gaussian-calibrated test reject; the
  signs of an isotropic sample are uniform on the sphere whatever the radial law, so this variant
  keeps its size.  The location is removed by differencing disjoint row pairs
  (``u_k ~ z_{2k} - z_{2k+1}``, ``M = N // 2``), which keeps the signs exactly uniform for any radial
  law (centering by an estimated mean or spatial median does not: in ``N < d`` the estimate mixes
  the rows with radius-dependent weights and the test over-rejects under heavy tails).
* ``participation_ratio`` ``tr(S)^2 / tr(S^2)``, ``trace`` ``tr S``, ``eigenvalues`` (top ``k`` of ``S``),
  ``topk_energy`` (their share of ``tr S``) -- also from :func:`covariance_spectrum`.

Dead coordinates (:func:`moving_coordinates`).  A coordinate whose value is exactly zero in every
row (an inactive ReLU unit that no draw switches on) has zero variance; under ``H0: Sigma = s^2 I``
that has probability zero, so a test over all ``d`` coordinates rejects isotropy for *any* such
sample -- it measures the share of dead units, not the shape of the noise.  The tests are therefore
meant for the coordinates that can move: :func:`moving_coordinates` finds them, and
``sphericity_test(Z[:, mask])`` tests ``H0`` on that subspace with the null of its own ``(N, d')``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from pipeline.core.device import numpy_rng

__all__ = ["SphericityNull", "sphericity_null", "sphericity_test", "sphericity_statistics",
           "covariance_spectrum", "gram_matrix", "moving_coordinates", "TOP_K"]

TOP_K = 5
_CHUNK = 64          # resamples per vectorised chunk


# ----------------------------------------------------------------------------- Gram-route statistics

def gram_matrix(Z: np.ndarray) -> np.ndarray:
    """Raw (uncentered) Gram matrix ``Z Z^T`` in float64, for ``(N, d)`` or batched ``(b, N, d)``."""
    Z = np.asarray(Z, dtype=np.float64)
    return Z @ np.swapaxes(Z, -1, -2)


def _center_gram(W: np.ndarray) -> np.ndarray:
    """``C W C`` with ``C = I - 11^T / N`` (the Gram matrix of the mean-centered rows)."""
    row = W.mean(axis=-1, keepdims=True)
    col = W.mean(axis=-2, keepdims=True)
    tot = W.mean(axis=(-2, -1), keepdims=True)
    return W - row - col + tot


def _john_u(G: np.ndarray, d: int) -> np.ndarray:
    """``d ||G||_F^2 / tr(G)^2 - 1`` (any normalisation of G cancels)."""
    tr = np.trace(G, axis1=-2, axis2=-1)
    fro2 = (G * G).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return d * fro2 / tr ** 2 - 1.0


def _spatial_sign_u(W: np.ndarray, d: int, center: bool) -> np.ndarray:
    """John's U of the spatial-sign covariance ``(1/M) sum u_k u_k^T``, from the raw Gram ``W``
    (batched ``(b, N, N)``).  ``center=False``: ``u_k`` are the rows scaled to unit norm (known zero
    location).  ``center=True``: ``u_k`` are the unit-scaled differences of disjoint row pairs
    ``z_{2k} - z_{2k+1}`` (``M = N // 2``), which removes any common location without estimating it;
    for iid rows from *any* spherically symmetric law the ``u_k`` are then iid uniform on the sphere,
    so the Gaussian Monte-Carlo null is exact whatever the radial (tail) distribution."""
    if center:
        M = W.shape[-1] // 2
        a, b = slice(0, 2 * M, 2), slice(1, 2 * M, 2)
        D = W[..., a, a] - W[..., a, b] - W[..., b, a] + W[..., b, b]
    else:
        D = W
    r = np.sqrt(np.maximum(np.diagonal(D, axis1=-2, axis2=-1), 0.0))
    keep = r > 0
    inv = np.where(keep, 1.0 / np.where(keep, r, 1.0), 0.0)
    K = D * inv[..., :, None] * inv[..., None, :]            # Gram of the unit signs
    m = keep.sum(axis=-1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return d * (K * K).sum(axis=(-2, -1)) / m ** 2 - 1.0   # tr S = 1, tr S^2 = ||K||_F^2 / M^2


def sphericity_statistics(Z: np.ndarray, *, center: bool = True, spatial_sign: bool = True
                          ) -> dict[str, np.ndarray | float]:
    """``john_u``, ``ledoit_wolf_z``, ``srivastava_z``, ``spatial_sign_u``, ``trace``,
    ``participation_ratio`` of ``(N, d)`` data, or arrays of them for a batch ``(b, N, d)``."""
    Z = np.asarray(Z, dtype=np.float64)
    single = Z.ndim == 2
    Zb = Z[None] if single else Z
    if Zb.ndim != 3:
        raise ValueError(f"Z must be (N, d) or (b, N, d), got shape {Z.shape}")
    W = gram_matrix(Zb)
    out = _statistics_from_raw_gram(W, Zb.shape[-1], center=center, spatial_sign=spatial_sign)
    return {k: float(v[0]) for k, v in out.items()} if single else out


def _statistics_from_raw_gram(W: np.ndarray, d: int, *, center: bool, spatial_sign: bool) -> dict:
    N = W.shape[-1]
    n = N - 1 if center else N
    if n < 2:
        raise ValueError(f"need at least {3 if center else 2} rows, got N = {N}")
    G = _center_gram(W) if center else W
    tr_g = np.trace(G, axis1=-2, axis2=-1)
    fro2 = (G * G).sum(axis=(-2, -1))
    tr_s, tr_s2 = tr_g / n, fro2 / n ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        u = d * tr_s2 / tr_s ** 2 - 1.0
        a1 = tr_s / d
        a2 = n ** 2 / ((n - 1) * (n + 2)) * (tr_s2 - tr_s ** 2 / n) / d
        out = {"john_u": u, "ledoit_wolf_z": (n * u - d - 1.0) / 2.0,
               "srivastava_z": n / 2.0 * (a2 / a1 ** 2 - 1.0), "trace": tr_s,
               "participation_ratio": tr_s ** 2 / tr_s2}
    if spatial_sign:
        out["spatial_sign_u"] = _spatial_sign_u(W, d, center)
    return out


def moving_coordinates(Z: np.ndarray) -> np.ndarray:
    """Boolean mask of the columns of an ``(N, d)`` sample that are not exactly zero in every row.

    Exact zeros, not a tolerance: an inactive ReLU unit gives a feature change of exactly 0.0 for
    every perturbation that leaves it inactive, while any coordinate that moves at all in floating
    point is kept (so the mask removes nothing an isotropic sample could produce)."""
    Z = np.asarray(Z)
    if Z.ndim != 2:
        raise ValueError(f"Z must be (N, d), got shape {Z.shape}")
    return (Z != 0).any(axis=0)


# ----------------------------------------------------------------------------- Monte-Carlo null

@dataclass(frozen=True)
class SphericityNull:
    """Monte-Carlo null of John's U (and its spatial-sign variant) for Gaussian ``(N, d)`` data."""

    n_rows: int
    dim: int
    center: bool
    seed: int
    john_u: np.ndarray
    spatial_sign_u: np.ndarray | None

    @property
    def n_resamples(self) -> int:
        return int(self.john_u.shape[0])

    @staticmethod
    def _p(null: np.ndarray, observed) -> np.ndarray | float:
        obs = np.asarray(observed, dtype=np.float64)
        counts = (null[None, :] >= obs.reshape(-1, 1)).sum(axis=1)
        p = (1.0 + counts) / (null.shape[0] + 1.0)
        p = np.where(np.isnan(obs.reshape(-1)), np.nan, p)
        return float(p[0]) if obs.ndim == 0 else p.reshape(obs.shape)

    def p_value(self, john_u) -> np.ndarray | float:
        """``(1 + #{U_b >= U}) / (B + 1)`` (vectorised over ``john_u``)."""
        return self._p(self.john_u, john_u)

    def spatial_sign_p_value(self, spatial_sign_u) -> np.ndarray | float:
        if self.spatial_sign_u is None:
            raise ValueError("this null was drawn without the spatial-sign statistic")
        return self._p(self.spatial_sign_u, spatial_sign_u)


def _wishart_raw_grams(rng: np.random.Generator, b: int, N: int, d: int) -> np.ndarray:
    """``b`` draws of ``Z Z^T`` for ``Z`` ``(N, d)`` iid N(0, 1)."""
    if d < N:
        Z = rng.standard_normal((b, N, d))
        return gram_matrix(Z)
    A = np.tril(rng.standard_normal((b, N, N)), k=-1)
    dof = d - np.arange(N)                                   # chi^2 with d, d-1, ..., d-N+1 dof
    A[:, np.arange(N), np.arange(N)] = np.sqrt(rng.chisquare(dof, size=(b, N)))
    return A @ np.swapaxes(A, -1, -2)                         # Bartlett: W = A A^T ~ W_N(d, I)


@lru_cache(maxsize=512)  # one null per tested dimension d' (it varies by input)
def _cached_null(n_rows: int, dim: int, n_resamples: int, seed: int, center: bool,
                 spatial_sign: bool) -> SphericityNull:
    rng = numpy_rng(seed, n_rows, dim, 0x5F3)
    u, s = [], []
    for start in range(0, n_resamples, _CHUNK):
        b = min(_CHUNK, n_resamples - start)
        W = _wishart_raw_grams(rng, b, n_rows, dim)
        out = _statistics_from_raw_gram(W, dim, center=center, spatial_sign=spatial_sign)
        u.append(out["john_u"])
        if spatial_sign:
            s.append(out["spatial_sign_u"])
    ju = np.concatenate(u)
    ss = np.concatenate(s) if spatial_sign else None
    ju.setflags(write=False)
    if ss is not None:
        ss.setflags(write=False)
    return SphericityNull(n_rows, dim, center, int(seed), ju, ss)


def sphericity_null(n_rows: int, dim: int, n_resamples: int = 999, seed: int = 0, *,
                    center: bool = True, spatial_sign: bool = True) -> SphericityNull:
    """The Monte-Carlo null for ``(n_rows, dim)`` (cached; pass it to :func:`sphericity_test` to
    reuse it across many samples of one shape)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    return _cached_null(int(n_rows), int(dim), int(n_resamples), int(seed), bool(center),
                        bool(spatial_sign))


# ----------------------------------------------------------------------------- public API

def covariance_spectrum(Z: np.ndarray, k: int = TOP_K, *, center: bool = True) -> dict:
    """Top-``k`` eigenvalues of the sample covariance (zero-padded beyond its rank), its trace, the
    participation ratio ``tr(S)^2 / tr(S^2)`` and the top-``k`` energy share -- via the Gram matrix."""
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2:
        raise ValueError(f"Z must be (N, d), got shape {Z.shape}")
    N, d = Z.shape
    n = N - 1 if center else N
    if n < 1:
        raise ValueError(f"need at least 2 rows, got N = {N}")
    G = gram_matrix(Z)
    if center:
        G = _center_gram(G)
    eig = np.clip(np.linalg.eigvalsh(G)[::-1] / n, 0.0, None)
    top = np.zeros(k)
    top[:min(k, eig.size)] = eig[:k]
    trace = float(np.trace(G) / n)
    tr2 = float((G * G).sum() / n ** 2)
    return {"eigenvalues": top, "trace": trace,
            "participation_ratio": trace ** 2 / tr2 if tr2 > 0 else float("nan"),
            "topk_energy": float(top.sum() / trace) if trace > 0 else float("nan"),
            "n_rows": N, "dim": d, "k": k}


def sphericity_test(Z: np.ndarray, n_resamples: int = 999, seed: int = 0, *, center: bool = True,
                    null: SphericityNull | None = None, k: int = TOP_K) -> dict:
    """Test ``H0: Sigma = s^2 I`` for the rows of an ``(N, d)`` matrix (``N < d`` allowed).

    Returns a dict with ``john_u``, ``p_value`` (Monte Carlo), ``ledoit_wolf_z``, ``ledoit_wolf_p``,
    ``srivastava_z``, ``srivastava_p``, ``spatial_sign_u``, ``spatial_sign_p_value``,
    ``participation_ratio``, ``trace``, ``eigenvalues`` (top ``k``), ``topk_energy``, ``n_rows``,
    ``dim``, ``n_resamples``.  ``null`` reuses a precomputed :func:`sphericity_null` of the same shape
    (then ``n_resamples`` and ``seed`` are the null's).
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2:
        raise ValueError(f"Z must be (N, d), got shape {Z.shape}")
    N, d = Z.shape
    if null is None:
        null = sphericity_null(N, d, n_resamples, seed, center=center)
    elif (null.n_rows, null.dim, null.center) != (N, d, center):
        raise ValueError(f"null is for (N, d, center) = {(null.n_rows, null.dim, null.center)}, "
                         f"data is {(N, d, center)}")
    st = sphericity_statistics(Z, center=center, spatial_sign=null.spatial_sign_u is not None)
    spec = covariance_spectrum(Z, k, center=center)
    out = {
        "john_u": st["john_u"], "p_value": null.p_value(st["john_u"]),
        "ledoit_wolf_z": st["ledoit_wolf_z"], "ledoit_wolf_p": float(stats.norm.sf(st["ledoit_wolf_z"])),
        "srivastava_z": st["srivastava_z"], "srivastava_p": float(stats.norm.sf(st["srivastava_z"])),
        "spatial_sign_u": st.get("spatial_sign_u", float("nan")),
        "spatial_sign_p_value": (null.spatial_sign_p_value(st["spatial_sign_u"])
                                 if "spatial_sign_u" in st else float("nan")),
        "participation_ratio": st["participation_ratio"], "trace": st["trace"],
        "eigenvalues": spec["eigenvalues"], "topk_energy": spec["topk_energy"],
        "n_rows": N, "dim": d, "n_resamples": null.n_resamples, "seed": null.seed, "center": center,
    }
    return out
