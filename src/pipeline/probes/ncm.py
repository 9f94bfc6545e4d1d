"""Nearest class mean: cosine similarity to the class means (the authors' baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.probes._common import _check_Xy, _compute_dtype, _Probe

__all__ = ["NearestClassMean"]


class NearestClassMean(_Probe):
    """Cosine similarity to the class means: ``argmax_c cos(x, mu_c)`` (the authors' baseline).

    Attributes: ``means_`` (K, d) float32 class means, ``classes_``, ``n_features_in_``.
    ``decision_function`` returns the cosines (0 for an all-zero row or mean).
    :meth:`fit_moments` fits the same probe from per-class statistics (sums and counts).
    """

    _name = "ncm"
    _array_keys = ("means", "classes")

    def fit(self, X: Any, y: Any) -> NearestClassMean:
        X, _, classes, y_index = _check_Xy(X, y)
        sums = np.zeros((classes.size, X.shape[1]), dtype=np.float64)
        np.add.at(sums, y_index, X)
        means = sums / np.bincount(y_index, minlength=classes.size)[:, None]
        self.classes_ = classes
        self.means_ = means.astype(np.float32)
        self.n_features_in_ = int(X.shape[1])
        return self

    def fit_moments(self, moments) -> NearestClassMean:
        """Fit from per-class statistics (a :class:`pipeline.probes.ClassMoments`)."""
        means = moments.sums / np.maximum(moments.counts, 1)[:, None]
        self._from_arrays({"means": means.astype(np.float32), "classes": np.asarray(moments.classes)})
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        X = self._check_predict_X(X)
        dtype = _compute_dtype(X)
        M = self.means_.astype(np.float64)
        mnorm = np.linalg.norm(M, axis=1)
        U = np.divide(M, mnorm[:, None], out=np.zeros_like(M), where=mnorm[:, None] > 0).astype(dtype)
        S = X @ U.T
        xnorm = np.sqrt(np.einsum("ij,ij->i", X, X))
        np.divide(S, xnorm[:, None], out=S, where=xnorm[:, None] > 0)
        S[xnorm == 0] = 0.0
        return S

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means_, "classes": self.classes_}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.classes_ = np.asarray(arrays["classes"])
        self.means_ = np.ascontiguousarray(arrays["means"], dtype=np.float32)
        if self.means_.ndim != 2 or self.means_.shape[0] != self.classes_.size:
            raise ValueError("NearestClassMean: means must be (K, d) with one row per class")
        self.n_features_in_ = int(self.means_.shape[1])
