"""Nearest class mean: cosine similarity to the class means (the authors' baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.probes._common import _check_Xy, _compute_dtype, _Probe
from pipeline.probes.accel import check_device, fitted_device_rows

__all__ = ["NearestClassMean"]


class NearestClassMean(_Probe):
    """Cosine similarity to the class means: ``argmax_c cos(x, mu_c)`` (the authors' baseline).

    Attributes: ``means_`` (K, d) float32 class means, ``classes_``, ``n_features_in_``.
    ``decision_function`` returns the cosines (0 for an all-zero row or mean).
    :meth:`fit_moments` fits the same probe from per-class statistics (sums and counts).
    ``device``: None (default) is the numpy reference route; ``"cpu"``, ``"cuda"`` or
    ``"cuda:<i>"`` fits and scores with torch there (float64 class sums, float32 means; execution
    only, not part of :func:`setting_id`).
    """

    _name = "ncm"
    _execution_params = ("device",)
    _array_keys = ("means", "classes")

    def __init__(self, device: str | None = None):
        self.device = device

    def _validate_params(self) -> None:
        check_device("NearestClassMean", self.device)

    def fit(self, X: Any, y: Any) -> NearestClassMean:
        self._validate_params()
        if self.device is not None:
            return self._fit_torch(X, y)
        X, _, classes, y_index = _check_Xy(X, y)
        sums = np.zeros((classes.size, X.shape[1]), dtype=np.float64)
        np.add.at(sums, y_index, X)
        means = sums / np.bincount(y_index, minlength=classes.size)[:, None]
        self.classes_ = classes
        self.means_ = means.astype(np.float32)
        self.n_features_in_ = int(X.shape[1])
        return self

    def _fit_torch(self, X: Any, y: Any) -> NearestClassMean:
        """Class sums in float64 on the device, class by class in row blocks."""
        import torch

        from pipeline.probes.accel import DeviceRows, class_order

        rows = DeviceRows(X, self.device)
        classes, index = class_order(y, rows.n)
        means = np.zeros((classes.size, rows.d), dtype=np.float64)
        with torch.no_grad():
            for c, idx in enumerate(index):
                total = torch.zeros(rows.d, dtype=torch.float64, device=rows.device)
                for part in rows.index_chunks(idx, rows.d):
                    total += rows.take(part, torch.float64).sum(0)
                means[c] = (total / idx.size).cpu().numpy()
        self.classes_ = classes
        self.means_ = means.astype(np.float32)
        self.n_features_in_ = int(rows.d)
        return self

    def fit_moments(self, moments) -> NearestClassMean:
        """Fit from per-class statistics (a :class:`pipeline.probes.ClassMoments`)."""
        means = moments.sums / np.maximum(moments.counts, 1)[:, None]
        self._from_arrays({"means": means.astype(np.float32), "classes": np.asarray(moments.classes)})
        return self

    def _unit_means(self) -> np.ndarray:
        M = self.means_.astype(np.float64)
        mnorm = np.linalg.norm(M, axis=1)
        return np.divide(M, mnorm[:, None], out=np.zeros_like(M), where=mnorm[:, None] > 0)

    def decision_function(self, X: Any) -> np.ndarray:
        if self.device is not None:
            return self._decision_torch(X)
        X = self._check_predict_X(X)
        dtype = _compute_dtype(X)
        U = self._unit_means().astype(dtype)
        S = X @ U.T
        xnorm = np.sqrt(np.einsum("ij,ij->i", X, X))
        np.divide(S, xnorm[:, None], out=S, where=xnorm[:, None] > 0)
        S[xnorm == 0] = 0.0
        return S

    def _decision_torch(self, X: Any) -> np.ndarray:
        """Cosines with torch on ``self.device`` in row blocks, in the input's precision."""
        import torch

        from pipeline.probes.accel import full_precision

        rows = fitted_device_rows(self, X)
        K = self.means_.shape[0]
        out = np.empty((rows.n, K), dtype=np.float64 if rows.dtype == torch.float64 else np.float32)
        with torch.no_grad(), full_precision(torch):
            U = torch.from_numpy(self._unit_means()).to(rows.device, rows.dtype)
            for sl in rows.row_chunks(rows.d + K):
                Xb = rows.rows(sl)
                S = Xb @ U.T
                xnorm = (Xb * Xb).sum(1, keepdim=True).sqrt_()
                S = torch.where(xnorm > 0, S / torch.where(xnorm > 0, xnorm, 1), 0)
                out[sl] = S.cpu().numpy()
        return out

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means_, "classes": self.classes_}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.classes_ = np.asarray(arrays["classes"])
        self.means_ = np.ascontiguousarray(arrays["means"], dtype=np.float32)
        if self.means_.ndim != 2 or self.means_.shape[0] != self.classes_.size:
            raise ValueError("NearestClassMean: means must be (K, d) with one row per class")
        self.n_features_in_ = int(self.means_.shape[1])
