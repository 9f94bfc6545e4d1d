"""MASC, the Minimum Angle Subspace Classifier (Ketha & Ramaswamy 2026, App. B of "Dynamics and
transferability of latent generalization").

Per class ``c`` the subspace *through the origin* spanned by the top eigenvectors of the
**uncentered** second-moment matrix ``X_c^T X_c`` of the class's training activations.  This is
what the papers call "PCA of the class data augmented with its negatives": ``[X_c; -X_c]`` has
zero mean, so its covariance is ``X_c^T X_c / n_c`` and the PCA subspace passes through the
origin.  (scikit-learn's ``PCA`` on ``X_c`` itself would centre the data and give an affine
subspace: *not* MASC.)  A point ``x`` is assigned to the class whose subspace makes the smallest
angle with it, ``argmax_c ||B_c^T x||^2 / ||x||^2`` with ``B_c`` orthonormal; MASC is therefore a
*quadratic* classifier (Prop. 1 of the paper).

The eigenproblem is solved in float64 (an all-float32 eigensolver moves near-equal eigenvalues
across the energy cut and changes predictions).  When ``n_c < d`` the ``n_c x n_c`` Gram matrix
``G = X_c X_c^T`` is decomposed instead of the ``d x d`` one (same non-zero eigenvalues; basis
``X_c^T U / sqrt(lambda)``), which is exact and much faster for wide layers.  Eigenvalues
``<= lambda_max * max(n_c, d) * eps(float64)`` are numerically zero and dropped.  Bases are stored
as float32 and stacked into one ``d x sum(k_c)`` matrix, so scoring costs one matrix product (in
row chunks to bound memory) plus a segment sum per class, in the input's precision.

``device="cpu"`` / ``"cuda"`` runs the same algorithm with torch on that device (same float64
eigenproblem and cut, same float32 artifacts; :mod:`pipeline.probes.accel`); ``None`` (default) is
the numpy reference route.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from pipeline.probes._common import _as_int, _compute_dtype, _Probe, _row_chunks
from pipeline.probes.accel import check_device, fitted_device_rows
from pipeline.probes.spectral import fit_spectral, fit_spectral_moments

__all__ = ["MASC"]


class MASC(_Probe):
    """Minimum Angle Subspace Classifier.

    Parameters
    ----------
    variance : float in (0, 1] or int >= 1, default 0.99
        Float: keep, per class, the fewest top components of the uncentered second moment whose
        cumulative energy (eigenvalue sum over the total) reaches ``variance``.  Int: keep exactly
        that many components (capped at the class's numerical rank).
    device : None, "cpu", "cuda" or "cuda:<i>", default None
        Where to fit and score: None is the numpy reference route; a device runs the torch route
        there (:mod:`pipeline.probes.accel`).  Execution only: not part of :func:`setting_id`, and
        the fitted arrays are the same whichever route produced them.

    Attributes
    ----------
    classes_ : (K,) int array
    bases_ : list of K float32 arrays of shape (d, k_c), orthonormal columns
    n_components_ : (K,) int64 array, ``k_c``
    explained_energy_ : (K,) float64 array, energy fraction captured by each class's subspace
    n_features_in_ : int

    ``decision_function`` returns ``cos^2`` of the angle between each row and each class subspace,
    ``||B_c^T x||^2 / ||x||^2`` (0 for an all-zero row); ``predict`` is its argmax.
    :meth:`fit_moments` fits the same probe from per-class statistics
    (:class:`pipeline.probes.ClassMoments`) instead of activations.
    """

    _name = "masc"
    _execution_params = ("device",)
    _array_keys = ("bases", "n_components", "explained_energy", "classes")
    _optional_keys = ("explained_energy",)

    def __init__(self, variance: float | int = 0.99, device: str | None = None):
        self.variance = variance
        self.device = device

    def _validate_params(self) -> None:
        v = self.variance
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise ValueError(f"MASC: variance must be a float in (0, 1] or an int >= 1; got {v!r}")
        if _as_int(v) is not None:
            if int(v) < 1:
                raise ValueError(f"MASC: an integer variance is a component count and must be >= 1; got {v!r}")
        elif not (0.0 < float(v) <= 1.0):
            raise ValueError(f"MASC: a float variance is an energy fraction in (0, 1]; got {v!r}")
        check_device("MASC", self.device)

    def fit(self, X: Any, y: Any) -> MASC:
        """Fit one origin-centred subspace per class (float64 eigendecomposition; the algorithm,
        both routes, is :func:`pipeline.probes.spectral.fit_spectral`)."""
        fit_spectral([self], X, y)
        return self

    def fit_moments(self, moments) -> MASC:
        """Fit from per-class statistics (a :class:`pipeline.probes.ClassMoments`): the top
        eigenvectors of each class's second moment ``M_c`` (the d x d route, same cut-off)."""
        fit_spectral_moments([self], moments)
        return self

    def _set_state(self, classes, stacked, n_components, energy) -> None:
        stacked = np.ascontiguousarray(stacked, dtype=np.float32)
        n_components = np.asarray(n_components, dtype=np.int64)
        if stacked.ndim != 2 or stacked.shape[1] != int(n_components.sum()) or n_components.size != len(classes):
            raise ValueError("MASC: inconsistent state (bases columns must equal sum(n_components), "
                             "one n_components entry per class)")
        self.classes_ = np.asarray(classes)
        self.n_components_ = n_components
        self.explained_energy_ = np.asarray(energy, dtype=np.float64)
        self.n_features_in_ = int(stacked.shape[0])
        self.stacked_bases_ = stacked  # d x sum(k_c); ``bases_`` are column views into it
        offsets = np.concatenate([[0], np.cumsum(n_components)])
        self.bases_ = [stacked[:, offsets[i]:offsets[i + 1]] for i in range(n_components.size)]
        self._offsets = offsets

    def decision_function(self, X: Any) -> np.ndarray:
        """(n, K) squared cosines between each row and each class subspace."""
        if self.device is not None:
            return self._decision_torch(X)
        X = self._check_predict_X(X)
        dtype = _compute_dtype(X)
        B = self.stacked_bases_.astype(dtype, copy=False)
        ks = self.n_components_
        nonempty = ks > 0
        starts = self._offsets[:-1][nonempty]
        out = np.zeros((X.shape[0], ks.size), dtype=dtype)
        if B.shape[1] == 0:
            return out
        for rows in _row_chunks(X.shape[0], B.shape[1]):
            Xb = X[rows]
            P = Xb @ B
            np.square(P, out=P)
            sums = np.add.reduceat(P, starts, axis=1)
            norm2 = np.einsum("ij,ij->i", Xb, Xb)
            nz = norm2 > 0
            sums[nz] /= norm2[nz, None]
            sums[~nz] = 0.0
            out[rows, nonempty] = sums  # classes without components keep score 0
        return out

    def _decision_torch(self, X: Any) -> np.ndarray:
        """The torch route of :meth:`decision_function`: one product with the stacked bases per
        row block, the per-class sums of squares as a product with a 0/1 class-membership matrix
        (deterministic, unlike a scatter-add on CUDA)."""
        import torch

        from pipeline.probes.accel import full_precision

        rows = fitted_device_rows(self, X)
        np_dtype = np.float64 if rows.dtype == torch.float64 else np.float32
        ks = self.n_components_
        nonempty = ks > 0
        out = np.zeros((rows.n, ks.size), dtype=np_dtype)
        total = self.stacked_bases_.shape[1]
        if total == 0:
            return out
        with torch.no_grad(), full_precision(torch):
            B = torch.from_numpy(self.stacked_bases_).to(rows.device, rows.dtype)
            owner = np.repeat(np.arange(int(nonempty.sum())), ks[nonempty])
            E = torch.zeros((total, owner.max() + 1), dtype=rows.dtype, device=rows.device)
            E[torch.arange(total, device=rows.device), torch.from_numpy(owner).to(rows.device)] = 1
            for sl in rows.row_chunks(rows.d + total):
                Xb = rows.rows(sl)
                P = Xb @ B
                P.square_()
                sums = P @ E
                del P
                norm2 = (Xb * Xb).sum(1, keepdim=True)
                sums = torch.where(norm2 > 0, sums / torch.where(norm2 > 0, norm2, 1), 0)
                out[sl, nonempty] = sums.cpu().numpy()
        return out

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"bases": self.stacked_bases_, "n_components": self.n_components_,
                "explained_energy": self.explained_energy_, "classes": self.classes_}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._set_state(arrays["classes"], arrays["bases"], arrays["n_components"],
                        arrays.get("explained_energy", np.full(len(arrays["classes"]), np.nan)))
