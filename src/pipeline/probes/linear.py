"""Linear probes: the authors' logistic-regression baseline (:class:`LinearProbe`, torch, Adam) and
a logistic regression that converges (:class:`LogisticProbe`, standardised features, L-BFGS).

``LinearProbe`` follows the authors' code (Sec. 7: Adam, lr 1e-3, 20 epochs, no standardisation)
and is what the papers compare with.  On layers with large activations (row norms in the
thousands, e.g. the flat layer of a memorising CNN) it does not converge: it is then a measure of
the optimiser as much as of the layer.  ``LogisticProbe`` fits the same model class to
per-feature standardised activations with a second-order solver run to a convergence criterion,
and records whether it got there (``converged_``).
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from typing import Any

import numpy as np

from pipeline.core.device import resolve_device, torch_generator
from pipeline.probes._common import _as_int, _check_Xy, _compute_dtype, _is_real, _Probe, _row_chunks
from pipeline.probes.accel import check_device, fitted_device_rows, linear_scores

__all__ = ["LinearProbe", "LogisticProbe"]

_DEVICE_PREFIXES = ("cpu", "cuda", "mps")


@contextlib.contextmanager
def _torch_threads(torch, n: int):
    """Run the block with ``torch.set_num_threads(n)``; restore the caller's setting afterwards."""
    previous = torch.get_num_threads()
    if previous != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------
# the authors' probe (torch)
# ----------------------------------------------------------------------------------------------
class LinearProbe(_Probe):
    """Logistic-regression probe as in the authors' code: one ``torch.nn.Linear(d, K)``,
    cross-entropy, Adam.

    Trained for ``epochs`` passes over shuffled minibatches of ``batch_size`` (the permutation and
    the weight initialisation, PyTorch's default ``U(-1/sqrt(d), 1/sqrt(d))``, come from a
    ``torch.Generator`` seeded with ``seed``, so the global RNG is untouched).  No feature
    standardisation and no convergence criterion (see :class:`LogisticProbe` for one that
    converges).  ``device=None`` fits on "cuda" when available, else "cpu", and scores with
    numpy (the reference route); a device fits and scores with torch there.

    Determinism: on CPU the fit is bitwise reproducible for a given ``seed``, data and torch build,
    whatever ``torch.get_num_threads()`` the caller has set: training runs under
    ``torch.set_num_threads(1)`` (the caller's setting is restored afterwards), because torch's
    multi-threaded CPU kernels sum in a thread-count-dependent order (0.180 vs 0.211 accuracy with
    one vs two threads on the same seed before this was fixed); a caller already on one thread
    gets exactly the results it always got.  On CUDA it is *not* bitwise
    reproducible (GPU kernels may differ in the last bits from run to run and from the CPU).

    Attributes: ``coef_`` (K, d) float32, ``intercept_`` (K,) float32, ``classes_``,
    ``n_features_in_``.  Prediction is ``argmax(X coef_^T + intercept_)`` (numpy, or torch on
    ``device`` when one is set).
    """

    _name = "linear"
    _execution_params = ("device",)
    _array_keys = ("coef", "intercept", "classes")

    def __init__(self, epochs: int = 20, lr: float = 1e-3, batch_size: int = 128,
                 weight_decay: float = 0.0, seed: int = 0, device: str | None = None):
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device

    def _validate_params(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = _as_int(getattr(self, name))
            if value is None or value < minimum:
                raise ValueError(f"LinearProbe: {name} must be an int >= {minimum}; got {getattr(self, name)!r}")
        for name, positive in (("lr", True), ("weight_decay", False)):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
                    or not np.isfinite(value) or (value <= 0 if positive else value < 0):
                bound = "> 0" if positive else ">= 0"
                raise ValueError(f"LinearProbe: {name} must be a finite number {bound}; got {value!r}")
        check_device("LinearProbe", self.device, _DEVICE_PREFIXES)

    def fit(self, X: Any, y: Any) -> LinearProbe:
        """Train the linear layer; stores ``coef_`` and ``intercept_``."""
        import torch

        self._validate_params()
        X, _, classes, y_index = _check_Xy(X, y)
        device = resolve_device(self.device or "auto", key="LinearProbe device")  # None: CUDA if visible
        threads = _torch_threads(torch, 1) if device.type == "cpu" else contextlib.nullcontext()
        with threads:
            weight, bias = self._train(torch, X, y_index, classes.size, device)
        self.classes_ = classes
        self.coef_ = weight
        self.intercept_ = bias
        self.n_features_in_ = int(X.shape[1])
        return self

    def _train(self, torch, X: np.ndarray, y_index: np.ndarray, K: int, device) -> tuple[np.ndarray, np.ndarray]:
        import torch.nn.functional as F

        n, d = X.shape
        gen = torch_generator(self.seed)
        layer = torch.nn.utils.skip_init(torch.nn.Linear, d, K)  # no global-RNG draw
        bound = 1.0 / np.sqrt(d)
        with torch.no_grad():
            layer.weight.copy_(torch.empty(K, d).uniform_(-bound, bound, generator=gen))
            layer.bias.copy_(torch.empty(K).uniform_(-bound, bound, generator=gen))
        layer = layer.to(device)
        Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
        yt = torch.from_numpy(y_index.astype(np.int64)).to(device)
        opt = torch.optim.Adam(layer.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        bs = int(self.batch_size)
        with torch.enable_grad():
            for _ in range(int(self.epochs)):
                perm = torch.randperm(n, generator=gen).to(device)
                for start in range(0, n, bs):
                    idx = perm[start:start + bs]
                    loss = F.cross_entropy(layer(Xt[idx]), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        return (layer.weight.detach().cpu().numpy().astype(np.float32),
                layer.bias.detach().cpu().numpy().astype(np.float32))

    def decision_function(self, X: Any) -> np.ndarray:
        """(n, K) logits ``X coef_^T + intercept_`` (numpy with ``device=None``, torch on
        ``device`` otherwise)."""
        if self.device is not None:
            rows = fitted_device_rows(self, X)  # checks fitted first
            return linear_scores(rows, self.coef_, self.intercept_)
        X = self._check_predict_X(X)
        dtype = _compute_dtype(X)
        return X @ self.coef_.astype(dtype, copy=False).T + self.intercept_.astype(dtype, copy=False)

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_, "classes": self.classes_}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.classes_ = np.asarray(arrays["classes"])
        self.coef_ = np.ascontiguousarray(arrays["coef"], dtype=np.float32)
        self.intercept_ = np.ascontiguousarray(arrays["intercept"], dtype=np.float32)
        if self.coef_.shape[0] != self.classes_.size or self.intercept_.shape != (self.classes_.size,):
            raise ValueError("LinearProbe: coef must be (K, d) and intercept (K,)")
        self.n_features_in_ = int(self.coef_.shape[1])


# ----------------------------------------------------------------------------------------------
# a logistic regression that converges (scikit-learn, L-BFGS)
# ----------------------------------------------------------------------------------------------
class LogisticProbe(_Probe):
    """L2-regularised logistic regression on standardised features, solved to convergence.

    Each feature is standardised with the mean and standard deviation of the training data
    (float64; a feature that is constant up to rounding keeps scale 1, so it contributes nothing);
    then scikit-learn's ``LogisticRegression(solver="lbfgs", C=C, max_iter=max_iter, tol=tol)``
    is fitted: the multinomial (softmax) loss for three or more classes, the binary logistic loss
    for two.  Unlike :class:`LinearProbe` (the authors' Adam baseline), the optimum does not depend
    on the scale of the activations, and whether the solver met its tolerance is recorded
    (``converged_``; a non-converged fit also warns).  Deterministic: no random state is involved
    (fitting and scoring are plain float64 numpy/scipy computations).

    Memory: the standardised training matrix is held in float64 (``8 n d`` bytes) while fitting.

    Parameters
    ----------
    C : float > 0, default 1.0
        Inverse L2 regularisation strength (scikit-learn's ``C``).
    max_iter : int >= 1, default 1000
        L-BFGS iteration limit.
    tol : float > 0, default 1e-4
        L-BFGS stopping tolerance (projected gradient).

    Attributes
    ----------
    classes_ : (K,) int array
    mean_, scale_ : (d,) float64, the standardisation
    coef_ : (K, d) float64 (one row for two classes), on standardised features
    intercept_ : (K,) float64 (one entry for two classes)
    n_iter_ : int, L-BFGS iterations run
    converged_ : bool, whether the solver reached ``tol`` within ``max_iter``
    n_features_in_ : int
    """

    _name = "logreg"
    _array_keys = ("mean", "scale", "coef", "intercept", "classes", "n_iter", "converged")
    _optional_keys = ("n_iter", "converged")

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def _validate_params(self) -> None:
        for name in ("C", "tol"):
            value = getattr(self, name)
            if not _is_real(value) or value <= 0:
                raise ValueError(f"LogisticProbe: {name} must be a finite number > 0; got {value!r}")
        value = _as_int(self.max_iter)
        if value is None or value < 1:
            raise ValueError(f"LogisticProbe: max_iter must be an int >= 1; got {self.max_iter!r}")

    def fit(self, X: Any, y: Any) -> LogisticProbe:
        """Standardise, then fit the logistic regression with L-BFGS."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        self._validate_params()
        X, y, classes, _ = _check_Xy(X, y)
        if classes.size < 2:
            raise ValueError("LogisticProbe: logistic regression needs at least 2 classes")
        n = X.shape[0]
        Z = X.astype(np.float64)  # a copy: standardised in place
        mean = Z.mean(axis=0)
        Z -= mean
        var = np.einsum("ij,ij->j", Z, Z) / n
        # scikit-learn's rule for "constant up to rounding" (StandardScaler)
        eps = np.finfo(np.float64).eps
        constant = var <= n * eps * var + (n * mean * eps) ** 2
        scale = np.where(constant, 1.0, np.sqrt(var))
        Z /= scale
        model = LogisticRegression(C=float(self.C), solver="lbfgs", max_iter=int(self.max_iter),
                                   tol=float(self.tol))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(Z, y)
        del Z
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:  # pass on anything else
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.classes_ = model.classes_
        self.mean_ = mean
        self.scale_ = scale
        self.coef_ = np.asarray(model.coef_, dtype=np.float64)
        self.intercept_ = np.asarray(model.intercept_, dtype=np.float64)
        self.n_iter_ = int(np.max(model.n_iter_))
        self.converged_ = bool(converged)
        self.n_features_in_ = int(X.shape[1])
        if not converged:
            warnings.warn(f"LogisticProbe: L-BFGS did not reach tol={self.tol} within max_iter="
                          f"{self.max_iter} iterations (n={n}, d={X.shape[1]}); raise max_iter",
                          ConvergenceWarning, stacklevel=2)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Linear scores of the standardised rows, float64: (n, K), or (n,) for two classes."""
        X = self._check_predict_X(X)
        K = self.coef_.shape[0]
        out = np.empty((X.shape[0], K), dtype=np.float64)
        for rows in _row_chunks(X.shape[0], X.shape[1]):
            Z = (X[rows].astype(np.float64) - self.mean_) / self.scale_
            out[rows] = Z @ self.coef_.T + self.intercept_
        return out[:, 0] if K == 1 else out

    def predict(self, X: Any) -> np.ndarray:
        scores = self.decision_function(X)
        idx = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes_[idx]

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                "intercept": self.intercept_, "classes": self.classes_,
                "n_iter": np.asarray(self.n_iter_, dtype=np.int64),
                "converged": np.asarray(self.converged_, dtype=bool)}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.classes_ = np.asarray(arrays["classes"])
        self.mean_ = np.ascontiguousarray(arrays["mean"], dtype=np.float64)
        self.scale_ = np.ascontiguousarray(arrays["scale"], dtype=np.float64)
        self.coef_ = np.ascontiguousarray(arrays["coef"], dtype=np.float64)
        self.intercept_ = np.ascontiguousarray(arrays["intercept"], dtype=np.float64)
        d = self.mean_.shape[0] if self.mean_.ndim == 1 else -1
        rows = 1 if self.classes_.size == 2 else self.classes_.size
        if (d < 0 or self.scale_.shape != (d,) or self.coef_.shape != (rows, d)
                or self.intercept_.shape != (rows,)):
            raise ValueError("LogisticProbe: mean and scale must be (d,), coef (K, d) and intercept (K,) "
                             "(one row for two classes)")
        self.n_iter_ = int(arrays["n_iter"]) if "n_iter" in arrays else -1
        self.converged_ = bool(arrays["converged"]) if "converged" in arrays else None
        self.n_features_in_ = int(d)
