"""Layer-wise probes for latent generalization: one registry, scikit-learn-style estimators.

Every probe is a scikit-learn classifier (``ClassifierMixin`` + ``BaseEstimator``): ``__init__``
only stores its keyword parameters; ``fit(X, y)`` returns ``self``; ``predict``, ``score``
(accuracy) and, where meaningful, ``decision_function`` follow; fitted attributes end in ``_``
and include ``classes_`` and ``n_features_in_``. ``X`` is a 2-D float array ``(n, d)`` of layer
activations (float16 is upcast to float32; float32 and float64 are kept), ``y`` integer labels.

Probes (registry name -> class)
-------------------------------
``masc`` -> :class:`MASC` (Minimum Angle Subspace Classifier; Ketha & Ramaswamy 2026, App. B of
    "Dynamics and transferability of latent generalization").  Per class ``c`` the subspace
    *through the origin* spanned by the top eigenvectors of the **uncentered** second-moment matrix
    ``X_c^T X_c`` of the class's training activations.  This is what the papers call "PCA of the
    class data augmented with its negatives": ``[X_c; -X_c]`` has zero mean, so its covariance is
    ``X_c^T X_c / n_c`` and the PCA subspace passes through the origin.  (scikit-learn's ``PCA`` on
    ``X_c`` itself would centre the data and give an affine subspace: *not* MASC.)  The number of
    components ``k_c`` is the fewest whose cumulative energy (eigenvalue sum / total) reaches
    ``variance`` (float in (0, 1]; the papers use 0.99), or exactly ``variance`` components when it
    is an int (capped at the rank).  A point ``x`` is assigned to the class whose subspace makes the
    smallest angle with it, i.e. ``argmax_c ||B_c^T x||^2 / ||x||^2`` with ``B_c`` orthonormal;
    MASC is therefore a *quadratic* classifier (Prop. 1 of the paper).

``velpic`` -> :class:`VeLPIC` (Vector Linear Probe Intermediate-layer Classifier, Sec. 6).  Per
    class the top eigenvector ``v_c`` (unit norm) of the same uncentered second moment, i.e. the
    first principal component of the negative-augmented class data.  Its sign is arbitrary, so it
    is fixed such that the mean projection of training activations on ``v_c`` is non-negative.
    Two conventions exist and both are offered:

    * ``sign="class_mean"`` (the papers' text, Sec. 6 and Alg. 1): the mean of the **class's own**
      training activations, ``mean(X_c) . v_c >= 0``;
    * ``sign="global_mean"`` (the authors' published code): the mean over **all** training
      activations, ``mean(X) . v_c >= 0``.

    Prediction is ``argmax_c v_c^T x`` (= the smallest angle, since ``||v_c|| = 1``): a linear
    classifier whose class vectors can replace a network's pre-softmax weights (Sec. 8).

``linear`` -> :class:`LinearProbe`: the baseline logistic-regression probe of Sec. 7: one
    ``torch.nn.Linear(d, K)`` trained with cross-entropy and Adam on shuffled minibatches (seeded
    ``torch.Generator``; no feature standardisation).  Deterministic on CPU for a given ``seed``.

``ncm`` -> :class:`NearestClassMean`: cosine similarity to the class means (the authors' baseline).

``knn`` -> :class:`KNNProbe` and ``lda`` -> :class:`LDAProbe`: thin wrappers around scikit-learn's
    ``KNeighborsClassifier`` and ``LinearDiscriminantAnalysis``.

Numerics of MASC / VeLPIC
-------------------------
The eigenproblem is solved in float64 (an all-float32 eigensolver moves near-equal eigenvalues
across the energy cut and changes predictions).  When ``n_c < d`` the ``n_c x n_c`` Gram matrix
``G = X_c X_c^T`` is decomposed instead of the ``d x d`` one (same non-zero eigenvalues; basis
``X_c^T U / sqrt(lambda)``), which is exact and much faster for wide layers.  Eigenvalues
``<= lambda_max * max(n_c, d) * eps(float64)`` are numerically zero and dropped (they are below
the eigensolver's accuracy).  Bases and class vectors are stored as float32; scoring runs in the
input's precision (float32 for float16/float32 input, float64 for float64 input).

MASC scoring stacks all class bases into one ``d x sum(k_c)`` matrix, so scoring costs one matrix
product (in row chunks to bound memory) plus a segment sum per class.

Registry and persistence
------------------------
:data:`PROBES` maps names to classes; :func:`make_probe` builds one from keyword parameters
(unknown names or parameters raise ``ValueError``).  The workflow fits probes in one stage and
scores them in another, so every fitted probe round-trips through plain numpy arrays:
:func:`probe_to_arrays` / :func:`probe_from_arrays` (e.g. for HDF5).  :func:`setting_id` gives a
stable, human-readable id of a probe setting (parameters with defaults filled in, sorted by name,
``key=value`` joined by commas; execution-only parameters such as ``device`` are left out).

torch is imported lazily (only :class:`LinearProbe` needs it).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "PROBES",
    "MASC",
    "VeLPIC",
    "LinearProbe",
    "NearestClassMean",
    "KNNProbe",
    "LDAProbe",
    "make_probe",
    "probe_to_arrays",
    "probe_from_arrays",
    "setting_id",
    "probe_template_keys",
]

_EPS64 = np.finfo(np.float64).eps
#: Upper bound on the elements of one scoring block (rows x columns), ~64 MiB in float32.
_CHUNK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------
def _check_X(X: Any, name: str = "X") -> np.ndarray:
    """Return ``X`` as a finite 2-D float32/float64 array (float16 and ints are upcast)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features); got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric; got dtype {X.dtype}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name} must have at least one sample and one feature; got shape {X.shape}")
    if X.dtype == np.float16:
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


def _check_y(y: Any, n_samples: int) -> np.ndarray:
    """Return ``y`` as a 1-D int64 array of length ``n_samples``."""
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
    """Yield row slices so a block of ``rows x width`` stays below ``_CHUNK_ELEMENTS``."""
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _as_int(value: Any) -> int | None:
    """``value`` as an int if it is an integral number (not bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    return None


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


# ----------------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------------
class _Probe(ClassifierMixin, BaseEstimator):
    """Shared plumbing: parameter validation hook, predict-time checks, array state."""

    #: registry name, set by each subclass
    _name: str = ""
    #: parameters that do not change the fitted probe (left out of :func:`setting_id`)
    _execution_params: tuple[str, ...] = ()

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


# ----------------------------------------------------------------------------------------------
# MASC
# ----------------------------------------------------------------------------------------------
class MASC(_Probe):
    """Minimum Angle Subspace Classifier.

    Parameters
    ----------
    variance : float in (0, 1] or int >= 1, default 0.99
        Float: keep, per class, the fewest top components of the uncentered second moment whose
        cumulative energy (eigenvalue sum over the total) reaches ``variance``.  Int: keep exactly
        that many components (capped at the class's numerical rank).

    Attributes
    ----------
    classes_ : (K,) int array
    bases_ : list of K float32 arrays of shape (d, k_c), orthonormal columns
    n_components_ : (K,) int64 array, ``k_c``
    explained_energy_ : (K,) float64 array, energy fraction captured by each class's subspace
    n_features_in_ : int

    ``decision_function`` returns ``cos^2`` of the angle between each row and each class subspace,
    ``||B_c^T x||^2 / ||x||^2`` (0 for an all-zero row); ``predict`` is its argmax.
    """

    _name = "masc"

    def __init__(self, variance: float | int = 0.99):
        self.variance = variance

    def _validate_params(self) -> None:
        v = self.variance
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise ValueError(f"MASC: variance must be a float in (0, 1] or an int >= 1; got {v!r}")
        if _as_int(v) is not None:
            if int(v) < 1:
                raise ValueError(f"MASC: an integer variance is a component count and must be >= 1; got {v!r}")
        elif not (0.0 < float(v) <= 1.0):
            raise ValueError(f"MASC: a float variance is an energy fraction in (0, 1]; got {v!r}")

    def fit(self, X: Any, y: Any) -> "MASC":
        """Fit one origin-centred subspace per class (float64 eigendecomposition)."""
        self._validate_params()
        X, _, classes, y_index = _check_Xy(X, y)
        d = X.shape[1]
        bases, ks, energy = [], [], []
        for c in range(classes.size):
            Xc = X[y_index == c].astype(np.float64)
            lam, W, gram = _second_moment_eigh(Xc)
            k = _components_for(lam, self.variance)
            bases.append(_top_basis(Xc, lam, W, gram, k).astype(np.float32))
            ks.append(k)
            energy.append(float(lam[:k].sum() / lam.sum()) if lam.size else 0.0)
        self._set_state(classes, np.concatenate(bases, axis=1) if bases else np.zeros((d, 0), np.float32),
                        np.asarray(ks, dtype=np.int64), np.asarray(energy, dtype=np.float64))
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

    def _to_arrays(self) -> dict[str, np.ndarray]:
        return {"bases": self.stacked_bases_, "n_components": self.n_components_,
                "explained_energy": self.explained_energy_, "classes": self.classes_}

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._set_state(arrays["classes"], arrays["bases"], arrays["n_components"],
                        arrays.get("explained_energy", np.full(len(arrays["classes"]), np.nan)))


# ----------------------------------------------------------------------------------------------
# VeLPIC
# ----------------------------------------------------------------------------------------------
_SIGN_CONVENTIONS = ("class_mean", "global_mean")


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

    Attributes
    ----------
    classes_ : (K,) int array
    class_vectors_ : (K, d) float32 array, unit rows (a zero row for an all-zero class)
    n_features_in_ : int
    """

    _name = "velpic"

    def __init__(self, sign: str = "class_mean"):
        self.sign = sign

    def _validate_params(self) -> None:
        if self.sign not in _SIGN_CONVENTIONS:
            raise ValueError(f"VeLPIC: sign must be one of {list(_SIGN_CONVENTIONS)}; got {self.sign!r}")

    def fit(self, X: Any, y: Any) -> "VeLPIC":
        """Fit one unit class vector per class (float64 top eigenvector, sign by convention)."""
        self._validate_params()
        X, _, classes, y_index = _check_Xy(X, y)
        global_mean = X.mean(axis=0, dtype=np.float64)
        V = np.zeros((classes.size, X.shape[1]), dtype=np.float64)
        for c in range(classes.size):
            Xc = np.asarray(X[y_index == c], dtype=np.float64)
            v = _top_eigenvector(Xc)
            ref = Xc.mean(axis=0) if self.sign == "class_mean" else global_mean
            if ref @ v < 0:
                v = -v
            V[c] = v
        self.classes_ = classes
        self.class_vectors_ = V.astype(np.float32)
        self.n_features_in_ = int(X.shape[1])
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """(n, K) projections ``v_c^T x`` (cosines times ``||x||``)."""
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
# Logistic-regression probe (torch)
# ----------------------------------------------------------------------------------------------
class LinearProbe(_Probe):
    """Logistic-regression probe: one ``torch.nn.Linear(d, K)``, cross-entropy, Adam.

    Trained for ``epochs`` passes over shuffled minibatches of ``batch_size`` (the permutation and
    the weight initialisation, PyTorch's default ``U(-1/sqrt(d), 1/sqrt(d))``, come from a
    ``torch.Generator`` seeded with ``seed``, so the global RNG is untouched).  No feature
    standardisation.  ``device=None`` picks "cuda" when available, else "cpu"; results are
    deterministic on CPU for a given seed (GPU kernels may differ in the last bits).

    Attributes: ``coef_`` (K, d) float32, ``intercept_`` (K,) float32, ``classes_``,
    ``n_features_in_``.  Prediction is ``argmax(X coef_^T + intercept_)`` in numpy.
    """

    _name = "linear"
    _execution_params = ("device",)

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
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"LinearProbe: device must be None or a string such as 'cpu'/'cuda'; got {self.device!r}")

    def fit(self, X: Any, y: Any) -> "LinearProbe":
        """Train the linear layer; stores ``coef_`` and ``intercept_``."""
        import torch
        import torch.nn.functional as F

        self._validate_params()
        X, _, classes, y_index = _check_Xy(X, y)
        n, d = X.shape
        K = classes.size
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        gen = torch.Generator(device="cpu").manual_seed(int(self.seed))

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
        self.classes_ = classes
        self.coef_ = layer.weight.detach().cpu().numpy().astype(np.float32)
        self.intercept_ = layer.bias.detach().cpu().numpy().astype(np.float32)
        self.n_features_in_ = int(d)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """(n, K) logits ``X coef_^T + intercept_``."""
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
# Nearest class mean (cosine)
# ----------------------------------------------------------------------------------------------
class NearestClassMean(_Probe):
    """Cosine similarity to the class means: ``argmax_c cos(x, mu_c)`` (the authors' baseline).

    Attributes: ``means_`` (K, d) float32 class means, ``classes_``, ``n_features_in_``.
    ``decision_function`` returns the cosines (0 for an all-zero row or mean).
    """

    _name = "ncm"

    def fit(self, X: Any, y: Any) -> "NearestClassMean":
        X, _, classes, y_index = _check_Xy(X, y)
        sums = np.zeros((classes.size, X.shape[1]), dtype=np.float64)
        np.add.at(sums, y_index, X)
        means = sums / np.bincount(y_index, minlength=classes.size)[:, None]
        self.classes_ = classes
        self.means_ = means.astype(np.float32)
        self.n_features_in_ = int(X.shape[1])
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


# ----------------------------------------------------------------------------------------------
# scikit-learn wrappers
# ----------------------------------------------------------------------------------------------
class KNNProbe(_Probe):
    """k-nearest-neighbours probe: a thin wrapper around ``sklearn.neighbors.KNeighborsClassifier``.

    With ``metric="cosine"`` the rows of the training and query data are L2-normalised first (the
    cosine distance is unchanged), and the normalised training set is what is persisted.
    Attributes: ``estimator_`` (the fitted sklearn model), ``fit_X_``, ``fit_y_``, ``classes_``.
    """

    _name = "knn"

    def __init__(self, n_neighbors: int = 5, metric: str = "cosine"):
        self.n_neighbors = n_neighbors
        self.metric = metric

    def _validate_params(self) -> None:
        k = _as_int(self.n_neighbors)
        if k is None or k < 1:
            raise ValueError(f"KNNProbe: n_neighbors must be an int >= 1; got {self.n_neighbors!r}")
        if not isinstance(self.metric, str):
            raise ValueError(f"KNNProbe: metric must be a string; got {self.metric!r}")

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        if self.metric != "cosine":
            return X
        from sklearn.preprocessing import normalize

        return normalize(X, norm="l2", axis=1)

    def fit(self, X: Any, y: Any) -> "KNNProbe":
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

    def __init__(self, solver: str = "svd", shrinkage: float | str | None = None):
        self.solver = solver
        self.shrinkage = shrinkage

    def _validate_params(self) -> None:
        if self.solver not in ("svd", "lsqr", "eigen"):
            raise ValueError(f"LDAProbe: solver must be one of ['svd', 'lsqr', 'eigen']; got {self.solver!r}")
        s = self.shrinkage
        if s is not None and s != "auto" and not (isinstance(s, numbers.Real) and not isinstance(s, bool) and 0 <= s <= 1):
            raise ValueError(f"LDAProbe: shrinkage must be None, 'auto' or a float in [0, 1]; got {s!r}")
        if s is not None and self.solver == "svd":
            raise ValueError("LDAProbe: shrinkage needs solver='lsqr' or 'eigen' (not 'svd')")

    def fit(self, X: Any, y: Any) -> "LDAProbe":
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


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------
PROBES: dict[str, type] = {
    "masc": MASC,
    "velpic": VeLPIC,
    "linear": LinearProbe,
    "ncm": NearestClassMean,
    "knn": KNNProbe,
    "lda": LDAProbe,
}


def _probe_class(name: str) -> type:
    try:
        return PROBES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown probe {name!r}; allowed: {sorted(PROBES)}") from None


def make_probe(name: str, **params: Any) -> _Probe:
    """Construct the probe ``name`` with ``params``; unknown names/parameters or bad values raise ValueError."""
    cls = _probe_class(name)
    allowed = sorted(cls().get_params())
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for probe {name!r}; allowed: {allowed}")
    probe = cls(**params)
    probe._validate_params()
    return probe


def probe_to_arrays(probe: _Probe) -> dict[str, np.ndarray]:
    """The fitted state of ``probe`` as named numpy arrays (for HDF5 etc.).

    Keys: masc ``bases`` (d x sum k_c float32, class blocks in ``classes`` order), ``n_components``,
    ``explained_energy``, ``classes``; velpic ``class_vectors``, ``classes``; linear and lda
    ``coef``, ``intercept``, ``classes``; ncm ``means``, ``classes``; knn ``fit_X`` (normalised
    for the cosine metric), ``fit_y``, ``classes``.
    """
    if not isinstance(probe, _Probe):
        raise ValueError(f"not a probe from this registry: {type(probe).__name__}")
    check_is_fitted(probe, "classes_")
    return {k: np.asarray(v) for k, v in probe._to_arrays().items()}


def probe_from_arrays(name: str, params: dict, arrays: dict[str, np.ndarray]) -> _Probe:
    """Rebuild a fitted probe from :func:`probe_to_arrays` output; predictions are identical."""
    probe = make_probe(name, **(params or {}))
    required = set(probe_template_keys(name)) - {"explained_energy"}  # informational only
    missing = sorted(required - set(arrays))
    if missing:
        raise ValueError(f"probe {name!r}: arrays lack {missing}; got {sorted(arrays)}")
    probe._from_arrays({k: np.asarray(v) for k, v in arrays.items()})
    return probe


def probe_template_keys(name: str) -> tuple[str, ...]:
    """The array names :func:`probe_to_arrays` writes for probe ``name``."""
    return {
        "masc": ("bases", "n_components", "explained_energy", "classes"),
        "velpic": ("class_vectors", "classes"),
        "linear": ("coef", "intercept", "classes"),
        "ncm": ("means", "classes"),
        "knn": ("fit_X", "fit_y", "classes"),
        "lda": ("coef", "intercept", "classes"),
    }[_probe_class(name)._name]


def _format_value(value: Any) -> str:
    if value is None or isinstance(value, (bool, np.bool_)):
        return str(bool(value)) if value is not None else "None"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def setting_id(name: str, params: dict | None = None) -> str:
    """Stable, human-readable id of a probe setting, e.g. ``"variance=0.99"`` or ``"sign=class_mean"``.

    Defaults are filled in (so ``{}`` and the explicit defaults give the same id), keys are sorted,
    ``key=value`` pairs are joined by commas, and execution-only parameters (``device``) are left
    out.  A probe without parameters (ncm) gives ``""``.  Invalid settings raise ValueError.
    """
    probe = make_probe(name, **(params or {}))
    values = probe.get_params()
    return ",".join(f"{k}={_format_value(values[k])}" for k in sorted(values)
                    if k not in probe._execution_params)
