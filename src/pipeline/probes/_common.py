"""Shared internals of :mod:`pipeline.probes`: input checks, row chunking, the float64
eigen-helpers of MASC / VeLPIC / the statistics route, and the :class:`_Probe` base class.

This is the package's one internal module: the other modules of the package import from it; nothing
outside the package does.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

_EPS64 = np.finfo(np.float64).eps
#: Upper bound on the elements of one scoring block (rows x columns), ~64 MiB in float32.
CHUNK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------
def _check_X(X: Any, name: str = "X", *, upcast_half: bool = True) -> np.ndarray:
    """Return ``X`` as a finite 2-D float32/float64 array (float16 and ints are upcast).

    With ``upcast_half=False`` float16 is returned as it is (the torch route converts it block by
    block on the device, without a full-size float32 copy on the host).  A torch tensor is copied
    to the host first (the numpy route's input is numpy).
    """
    if _is_tensor(X):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features); got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric; got dtype {X.dtype}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name} must have at least one sample and one feature; got shape {X.shape}")
    if X.dtype == np.float16:
        if upcast_half:
            X = X.astype(np.float32)
    elif X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    # one float64 sum finds NaN/inf without an n x d temporary; only if it is not finite (or a
    # huge float64 input overflowed) do we look row block by row block
    if not np.isfinite(X.sum(dtype=np.float64)):
        for rows in _row_chunks(X.shape[0], X.shape[1]):
            if not np.isfinite(X[rows]).all():
                raise ValueError(f"{name} contains NaN or infinity")
    return X


def _is_tensor(X: Any) -> bool:
    """Whether ``X`` is a torch tensor (without importing torch)."""
    return type(X).__module__.split(".", 1)[0] == "torch"


def _check_y(y: Any, n_samples: int) -> np.ndarray:
    """Return ``y`` as a 1-D int64 array of length ``n_samples``."""
    if _is_tensor(y):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels; got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"X and y have different numbers of samples: {n_samples} != {y.shape[0]}")
    if y.dtype.kind in "iu":
        return y.astype(np.int64, copy=False)
    if y.dtype.kind == "f" and np.isfinite(y).all() and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise ValueError(f"y must hold integer class labels; got dtype {y.dtype}")


def _check_Xy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate training data; return ``X, y, classes, y_index`` (``classes[y_index] == y``)."""
    X = _check_X(X)
    y = _check_y(y, X.shape[0])
    classes, y_index = np.unique(y, return_inverse=True)
    if classes.size < 1:  # pragma: no cover - n >= 1 guarantees one class
        raise ValueError("y must contain at least one class")
    return X, y, classes, y_index


def _compute_dtype(X: np.ndarray) -> type:
    return np.float64 if X.dtype == np.float64 else np.float32


def _row_chunks(n: int, width: int):
    """Yield row slices so a block of ``rows x width`` stays below :data:`CHUNK_ELEMENTS`."""
    step = max(1, CHUNK_ELEMENTS // max(1, width))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _as_int(value: Any) -> int | None:
    """``value`` as an int if it is an integral number (not bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    return None


def _is_real(value: Any) -> bool:
    """Whether ``value`` is a finite real number (not bool)."""
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real)
            and bool(np.isfinite(value)))


def _check_choice(owner: str, param: str, value: Any, allowed: tuple[str, ...]) -> None:
    """ValueError naming ``value`` and the ``allowed`` strings unless ``value`` is one of them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{owner}: {param} must be one of {list(allowed)}; got {value!r}")


# ----------------------------------------------------------------------------------------------
# eigendecomposition of the uncentered second moment
# ----------------------------------------------------------------------------------------------
def _second_moment_eigh(Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Non-zero eigenpairs of the uncentered second moment ``Xc^T Xc`` (``Xc`` float64).

    Returns ``(lam, W, gram)``: eigenvalues in descending order with numerically-zero ones dropped,
    their eigenvectors ``W`` (columns), and whether the Gram route was taken.  With ``gram=True``
    ``W`` holds eigenvectors of ``Xc Xc^T`` (n_c x r) and the corresponding unit eigenvectors of
    ``Xc^T Xc`` are ``Xc^T W / sqrt(lam)``; otherwise ``W`` is already d x r.
    """
    n, d = Xc.shape
    gram = n < d
    lam, W = _descending_eigh(Xc @ Xc.T if gram else Xc.T @ Xc, n_rows=n, dim=d)
    return lam, W, gram


def _descending_eigh(M: np.ndarray, *, n_rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of the symmetric PSD ``M`` (a second moment of ``n_rows`` rows of ``dim``
    columns, or their Gram matrix), descending, with the numerically-zero ones dropped."""
    lam, W = np.linalg.eigh(M)
    lam, W = lam[::-1], W[:, ::-1]
    if lam.size == 0 or lam[0] <= 0.0:
        return lam[:0], W[:, :0]
    tol = lam[0] * max(n_rows, dim) * _EPS64
    r = int(np.count_nonzero(lam > tol))  # descending order: the kept ones come first
    return lam[:r], W[:, :r]


def _components_for(lam: np.ndarray, variance: float | int) -> int:
    """Number of leading components: fewest reaching ``variance`` energy, or an explicit int."""
    r = lam.size
    if r == 0:
        return 0
    k = _as_int(variance)
    if k is not None:
        return min(k, r)
    cum = np.cumsum(lam) / lam.sum()
    # fewest k with cum[k-1] >= variance; rounding may leave cum[-1] a hair below 1
    return min(int(np.searchsorted(cum, float(variance), side="left")) + 1, r)


def _top_basis(Xc: np.ndarray, lam: np.ndarray, W: np.ndarray, gram: bool, k: int) -> np.ndarray:
    """d x k orthonormal basis (float64) of the top-k eigenvectors of ``Xc^T Xc`` (``Xc`` float64)."""
    if not gram:
        return np.ascontiguousarray(W[:, :k])
    return (Xc.T @ W[:, :k]) / np.sqrt(lam[:k])


def _top_eigenvector(Xc: np.ndarray) -> np.ndarray:
    """Unit top eigenvector of ``Xc^T Xc`` (float64); zeros if ``Xc`` is numerically zero."""
    from scipy.linalg import eigh

    n, d = Xc.shape
    gram = n < d
    M = Xc @ Xc.T if gram else Xc.T @ Xc
    m = M.shape[0]
    lam, w = eigh(M, subset_by_index=[m - 1, m - 1])
    if lam[0] <= 0.0:
        return np.zeros(d)
    v = Xc.T @ w[:, 0] if gram else w[:, 0]
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------------
class _Probe(ClassifierMixin, BaseEstimator):
    """Shared plumbing: parameter validation hook, predict-time checks, array state."""

    #: registry name, set by each subclass
    _name: str = ""
    #: parameters that do not change the fitted probe (left out of ``setting_id``)
    _execution_params: tuple[str, ...] = ()
    #: names of the arrays ``_to_arrays`` writes (``probe_template_keys``)
    _array_keys: tuple[str, ...] = ()
    #: of those, the informational ones ``_from_arrays`` does without (older files may lack them)
    _optional_keys: tuple[str, ...] = ()

    def _validate_params(self) -> None:
        """Raise ValueError for invalid parameter values (called by ``fit`` and ``make_probe``)."""

    def _check_predict_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "classes_")
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted "
                             f"with {self.n_features_in_} features")
        return X

    def predict(self, X: Any) -> np.ndarray:
        """Class label of each row of ``X``: the argmax of :meth:`decision_function`."""
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]

    # persistence hooks ------------------------------------------------------------------------
    def _to_arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
