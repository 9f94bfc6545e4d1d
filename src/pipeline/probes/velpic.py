"""VeLPIC, the Vector Linear Probe Intermediate-layer Classifier (Sec. 6 of "Dynamics and
transferability of latent generalization").

Per class the top eigenvector ``v_c`` (unit norm) of the uncentered second moment ``X_c^T X_c``,
i.e. the first principal component of the negative-augmented class data, computed in float64
(Gram route when ``n_c < d``) and stored as float32.  Its sign is arbitrary, so it is fixed such
that the mean projection of training activations on ``v_c`` is non-negative; two conventions
exist and both are offered (``sign``).  Prediction is ``argmax_c v_c^T x`` (the smallest angle,
since ``||v_c|| = 1``): a linear classifier whose class vectors can replace a network's
pre-softmax weights (Sec. 8, :mod:`pipeline.images.transfer.editing`).

``device="cpu"`` / ``"cuda"`` runs the same algorithm with torch there
(:mod:`pipeline.probes.accel`); ``None`` (default) is the numpy reference route.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.probes._common import _check_choice, _compute_dtype, _Probe
from pipeline.probes.accel import check_device, fitted_device_rows, linear_scores
from pipeline.probes.spectral import fit_spectral, fit_spectral_moments

__all__ = ["VeLPIC", "SIGN_CONVENTIONS"]

#: VeLPIC's sign conventions (the ``sign`` parameter)
SIGN_CONVENTIONS = ("class_mean", "global_mean")


class VeLPIC(_Probe):
    """Vector Linear Probe Intermediate-layer Classifier.

    Per class the unit top eigenvector ``v_c`` of the uncentered second moment ``X_c^T X_c``
    (= first principal component of ``[X_c; -X_c]``), computed in float64 (Gram route when
    ``n_c < d``).  Its sign is chosen so that the mean projection of training activations on it is
    non-negative, where "training activations" is

    * ``sign="class_mean"``: the class's own training activations, ``mean(X_c) . v_c >= 0`` -- the
      rule as written in the papers (Sec. 6, Algorithm 1: "projection training means");
    * ``sign="global_mean"``: all training activations, ``mean(X) . v_c >= 0`` -- what the
      authors' published code does.

    The two agree whenever the class mean and the global mean lie on the same side of the
    hyperplane ``v_c^T x = 0`` (typical for non-negative post-ReLU activations) and differ
    otherwise.  Prediction: ``argmax_c v_c^T x`` (the minimum angle, as ``||v_c|| = 1``).
    :meth:`fit_moments` fits the same probe from per-class statistics.

    ``device``: None (default) is the numpy reference route; ``"cpu"``, ``"cuda"`` or
    ``"cuda:<i>"`` fits and scores with torch there (:mod:`pipeline.probes.accel`; execution only,
    not part of :func:`setting_id`; the same fitted arrays).

    Attributes
    ----------
    classes_ : (K,) int array
    class_vectors_ : (K, d) float32 array, unit rows (a zero row for an all-zero class)
    n_features_in_ : int
    """

    _name = "velpic"
    _execution_params = ("device",)
    _array_keys = ("class_vectors", "classes")

    def __init__(self, sign: str = "class_mean", device: str | None = None):
        self.sign = sign
        self.device = device

    def _validate_params(self) -> None:
        _check_choice("VeLPIC", "sign", self.sign, SIGN_CONVENTIONS)
        check_device("VeLPIC", self.device)

    def fit(self, X: Any, y: Any) -> VeLPIC:
        """Fit one unit class vector per class (float64 top eigenvector, sign by convention; the
        algorithm, both routes, is :func:`pipeline.probes.spectral.fit_spectral`)."""
        fit_spectral([self], X, y)
        return self

    def fit_moments(self, moments) -> VeLPIC:
        """Fit from per-class statistics (a :class:`pipeline.probes.ClassMoments`): the top
        eigenvector of each class's second moment, signed by the class (or global) mean."""
        fit_spectral_moments([self], moments)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """(n, K) projections ``v_c^T x`` (cosines times ``||x||``)."""
        if self.device is not None:
            rows = fitted_device_rows(self, X)  # checks fitted first
            return linear_scores(rows, self.class_vectors_)
        X = self._check_predict_X(X)
        V = self.class_vectors_.astype(_compute_dtype(X), copy=False)
        return X @ V.T

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"class_vectors": self.class_vectors_, "classes": self.classes_}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        V = np.ascontiguousarray(arrays["class_vectors"], dtype=np.float32)
        self.classes_ = np.asarray(arrays["classes"])
        if V.ndim != 2 or V.shape[0] != self.classes_.size:
            raise ValueError("VeLPIC: class_vectors must be (K, d) with one row per class")
        self.class_vectors_ = V
        self.n_features_in_ = int(V.shape[1])

