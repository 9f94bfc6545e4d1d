"""Thin wrappers around scikit-learn classifiers: k-nearest neighbours and LDA."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from pipeline.probes._common import _as_int, _check_choice, _check_Xy, _Probe

__all__ = ["KNNProbe", "LDAProbe", "KNN_METRICS", "LDA_SOLVERS"]

#: the distances :class:`KNNProbe` accepts: scikit-learn's real-valued metrics that need no
#: ``metric_params`` (boolean metrics, ``haversine``, ``mahalanobis``/``seuclidean`` are left out)
KNN_METRICS = ("braycurtis", "canberra", "chebyshev", "cityblock", "correlation", "cosine",
               "euclidean", "l1", "l2", "manhattan", "minkowski", "sqeuclidean")
#: the solvers of ``LinearDiscriminantAnalysis``
LDA_SOLVERS = ("svd", "lsqr", "eigen")


class KNNProbe(_Probe):
    """k-nearest-neighbours probe: a thin wrapper around ``sklearn.neighbors.KNeighborsClassifier``.

    ``metric`` is one of :data:`KNN_METRICS` (another name is refused when the probe is built).
    With ``metric="cosine"`` the rows of the training and query data are L2-normalised first (the
    cosine distance is unchanged), and the normalised training set is what is persisted.
    Attributes: ``estimator_`` (the fitted sklearn model), ``fit_X_``, ``fit_y_``, ``classes_``.
    """

    _name = "knn"
    _array_keys = ("fit_X", "fit_y", "classes")

    def __init__(self, n_neighbors: int = 5, metric: str = "cosine"):
        self.n_neighbors = n_neighbors
        self.metric = metric

    def _validate_params(self) -> None:
        k = _as_int(self.n_neighbors)
        if k is None or k < 1:
            raise ValueError(f"KNNProbe: n_neighbors must be an int >= 1; got {self.n_neighbors!r}")
        _check_choice("KNNProbe", "metric", self.metric, KNN_METRICS)

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        if self.metric != "cosine":
            return X
        from sklearn.preprocessing import normalize

        return normalize(X, norm="l2", axis=1)

    def fit(self, X: Any, y: Any) -> KNNProbe:
        self._validate_params()
        X, y, classes, _ = _check_Xy(X, y)
        if X.shape[0] < int(self.n_neighbors):
            raise ValueError(f"KNNProbe: n_neighbors={self.n_neighbors} exceeds the {X.shape[0]} training samples")
        self._fit_arrays(self._prepare(X), y)
        return self

    def _fit_arrays(self, fit_X: np.ndarray, fit_y: np.ndarray) -> None:
        from sklearn.neighbors import KNeighborsClassifier

        self.estimator_ = KNeighborsClassifier(n_neighbors=int(self.n_neighbors), metric=self.metric)
        self.estimator_.fit(fit_X, fit_y)
        self.fit_X_, self.fit_y_ = fit_X, fit_y
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = int(fit_X.shape[1])

    def predict(self, X: Any) -> np.ndarray:
        X = self._check_predict_X(X)
        return self.estimator_.predict(self._prepare(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        X = self._check_predict_X(X)
        return self.estimator_.predict_proba(self._prepare(X))

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"fit_X": self.fit_X_, "fit_y": self.fit_y_, "classes": self.classes_}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._fit_arrays(np.asarray(arrays["fit_X"]), np.asarray(arrays["fit_y"]))


class LDAProbe(_Probe):
    """Linear discriminant analysis: a thin wrapper around ``LinearDiscriminantAnalysis``.

    Fitting is delegated to scikit-learn; the fitted linear decision rule (``coef_``,
    ``intercept_``, ``classes_``) is all that prediction needs and all that is persisted.  Prediction
    is scikit-learn's: ``argmax(X coef_^T + intercept_)`` (for two classes, ``coef_`` has one row
    and class 1 wins where ``X coef_^T + intercept_ > 0``).
    """

    _name = "lda"
    _array_keys = ("coef", "intercept", "classes")

    def __init__(self, solver: str = "svd", shrinkage: float | str | None = None):
        self.solver = solver
        self.shrinkage = shrinkage

    def _validate_params(self) -> None:
        _check_choice("LDAProbe", "solver", self.solver, LDA_SOLVERS)
        s = self.shrinkage
        is_fraction = isinstance(s, numbers.Real) and not isinstance(s, bool) and 0 <= s <= 1
        if s is not None and s != "auto" and not is_fraction:
            raise ValueError(f"LDAProbe: shrinkage must be None, 'auto' or a float in [0, 1]; got {s!r}")
        if s is not None and self.solver == "svd":
            raise ValueError("LDAProbe: shrinkage needs solver='lsqr' or 'eigen' (not 'svd')")

    def fit(self, X: Any, y: Any) -> LDAProbe:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        self._validate_params()
        X, y, classes, _ = _check_Xy(X, y)
        if classes.size < 2:
            raise ValueError("LDAProbe: LinearDiscriminantAnalysis needs at least 2 classes")
        lda = LinearDiscriminantAnalysis(solver=self.solver, shrinkage=self.shrinkage).fit(X, y)
        self.classes_ = lda.classes_
        self.coef_ = lda.coef_
        self.intercept_ = lda.intercept_
        self.n_features_in_ = int(X.shape[1])
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """sklearn's linear scores, ``X coef_^T + intercept_`` ((n,) for two classes)."""
        X = self._check_predict_X(X)
        scores = X @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: Any) -> np.ndarray:
        scores = self.decision_function(X)
        idx = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes_[idx]

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_, "classes": self.classes_}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.classes_ = np.asarray(arrays["classes"])
        self.coef_ = np.asarray(arrays["coef"])
        self.intercept_ = np.asarray(arrays["intercept"])
        self.n_features_in_ = int(self.coef_.shape[1])
