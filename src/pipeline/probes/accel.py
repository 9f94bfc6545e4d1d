"""The torch route of the geometric and linear probes (``device="cpu"`` / ``"cuda"``).

:class:`~pipeline.probes.MASC`, :class:`~pipeline.probes.VeLPIC`,
:class:`~pipeline.probes.NearestClassMean` and :class:`~pipeline.probes.LinearProbe` take a
``device`` parameter.  ``None`` is the numpy reference route (bit-for-bit what it always was);
``"cpu"``, ``"cuda"`` or ``"cuda:<i>"`` fit and score with torch on that device.  The numerics
rules are the numpy route's:

* the second moment ``X_c^T X_c`` (or the Gram matrix ``X_c X_c^T`` when ``n_c < d``), its
  eigendecomposition and the energy cut are float64; the numerically-zero cut-off
  (``lambda_max * max(n_c, d) * eps``) and the component count are computed from the same
  eigenvalues by the same code (:func:`pipeline.probes._common._components_for`);
* scoring products run in the input's precision (float32 for float16/float32 input, float64 for
  float64 input), as in numpy; TF32 and reduced-precision matmuls are switched off for the duration
  (:func:`full_precision`), since they change predictions;
* the fitted artifacts are the numpy arrays, dtypes and shapes of the numpy route
  (:func:`pipeline.probes.probe_to_arrays`), so a probe fitted on a GPU is saved, loaded and scored
  anywhere, by either route.

Memory is bounded by chunking: activations are read (and, from numpy, copied to the device) class
by class or in row blocks of at most :data:`DEVICE_CHUNK_ELEMENTS` (CUDA) or
``_common.CHUNK_ELEMENTS`` (CPU) elements; the d x d route accumulates ``X_c^T X_c`` block by block,
so a 50,000 x 16,384 float32 layer (3.3 GB) needs one class in float64 on the device (the Gram
route, ``n_c < d``) or one d x d matrix, never the whole layer in float64.  ``X`` may be a numpy
array or a torch tensor on any device (the fused extraction path passes the device tensor itself).

Everything here imports torch lazily: ``import pipeline.probes`` stays cheap.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

import pipeline.probes._common as _common
from pipeline.core.device import resolve_device
from pipeline.probes._common import _check_X, _check_y, _is_tensor

__all__ = ["DEVICE_CHUNK_ELEMENTS", "CPU_EIGH_WITH_LAPACK", "TORCH_DEVICES", "check_device", "probe_device",
           "full_precision", "DeviceRows", "descending_eigh", "top_eigenpair", "class_order",
           "to_numpy_labels", "second_moment", "linear_scores"]

#: device prefixes the torch route accepts (``"cuda:1"`` style indices allowed)
TORCH_DEVICES = ("cpu", "cuda")
#: elements of one row block on a CUDA device (1 GiB of float32)
DEVICE_CHUNK_ELEMENTS = 1 << 28
#: on CPU, solve the float64 eigenproblems with the numpy route's LAPACK calls (numpy's ``eigh``,
#: scipy's single-eigenvector ``eigh``) instead of ``torch.linalg.eigh`` (False, the default: the
#: CUDA branch's code). Off because interleaving numpy's BLAS threads with torch's OpenMP pool
#: makes them spin against each other: with 2 threads on the 2-core VM, MASC on the torch-cpu
#: route took 2.63 s (LAPACK) vs 0.11 s (torch) at 200 x 50 x 410 and 2.88 vs 1.96 s at
#: 10 x 1,000 x 4,096; with one thread the two are within 10 % (benchmarks/bench_spectral.py,
#: tests run both)
CPU_EIGH_WITH_LAPACK = False


def check_device(owner: str, device: Any, prefixes: tuple[str, ...] = TORCH_DEVICES) -> None:
    """ValueError unless ``device`` is None or ``"<prefix>"`` / ``"<prefix>:<index>"``."""
    if device is None:
        return
    ok = isinstance(device, str)
    if ok:
        head, colon, index = device.partition(":")
        ok = head in prefixes and (not colon or index.isdigit())
    if not ok:
        raise ValueError(f"{owner}: device must be None or one of {list(prefixes)} (optionally with an "
                         f"index, e.g. 'cuda:0'); got {device!r}")


def probe_device(device: str | None) -> str | None:
    """A config's ``probes.device`` as a probe's ``device`` (the probes' route, on top of the one
    :func:`pipeline.core.device.resolve_device`): ``None`` stays None (numpy reference); ``"auto"``
    is ``"cuda"`` where core's ``auto`` resolves to a GPU and None (the numpy reference route, not
    torch on the CPU) otherwise; ``"cuda"`` without a GPU is core's error naming ``probes.device``
    (not a silent fallback)."""
    if device is None:
        return None
    if device == "auto":
        return "cuda" if resolve_device("auto", key="probes.device").type == "cuda" else None
    check_device("probes", device)
    resolve_device(device, key="probes.device")  # raises when CUDA is asked for and absent
    return device


@contextlib.contextmanager
def full_precision(torch):
    """Float32 matmuls in full float32 (no TF32 / bfloat16 shortcuts) inside the block."""
    previous = torch.get_float32_matmul_precision()
    if previous != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if previous != "highest":
            torch.set_float32_matmul_precision(previous)


def to_numpy_labels(y: Any) -> Any:
    """Labels as something ``np.asarray`` reads (a torch tensor is copied to the host)."""
    return y.detach().cpu().numpy() if _is_tensor(y) else y


class DeviceRows:
    """Validated activations ``X`` (numpy array or torch tensor), read onto ``device`` by rows.

    Unlike ``_common._check_X`` it copies nothing up front: float16 stays float16 until a block is
    on the device.  ``dtype`` is the compute dtype of the numpy route (float64 for float64 and
    integer input, float32 otherwise).
    """

    def __init__(self, X: Any, device, name: str = "X"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if _is_tensor(X):
            X = X.detach()
            if X.ndim != 2:
                raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features); got shape "
                                 f"{tuple(X.shape)}")
            if X.is_complex():
                raise ValueError(f"{name} must be numeric; got dtype {X.dtype}")
            if X.shape[0] < 1 or X.shape[1] < 1:
                raise ValueError(f"{name} must have at least one sample and one feature; got shape "
                                 f"{tuple(X.shape)}")
            self.dtype = torch.float64 if (X.dtype == torch.float64 or not X.is_floating_point()) \
                else torch.float32
            if X.is_floating_point() and not bool(torch.isfinite(X.sum(dtype=torch.float64))):
                for rows in _common._row_chunks(X.shape[0], X.shape[1]):
                    if not bool(torch.isfinite(X[rows]).all()):
                        raise ValueError(f"{name} contains NaN or infinity")
            self.host = None
            self.tensor = X
        else:
            X = _check_X(X, name, upcast_half=False)  # float16/32/64 kept as they are (no copy)
            self.dtype = torch.float64 if X.dtype == np.float64 else torch.float32
            self.host = X
            self.tensor = None
        self.n, self.d = int(X.shape[0]), int(X.shape[1])
        self.chunk_elements = DEVICE_CHUNK_ELEMENTS if self.device.type == "cuda" else _common.CHUNK_ELEMENTS

    # ------------------------------------------------------------------------------------------
    def _move(self, block, dtype):
        torch = self.torch
        if isinstance(block, np.ndarray):
            block = torch.from_numpy(np.ascontiguousarray(block))
        if self.device.type == "cuda" and block.device != self.device:
            block = block.to(self.device, non_blocking=False)  # cross the bus in the stored dtype
        return block.to(self.device, dtype=dtype)

    def rows(self, sl: slice, dtype=None):
        """Rows ``sl`` on the device in ``dtype`` (default: the compute dtype)."""
        src = self.host if self.host is not None else self.tensor
        return self._move(src[sl], dtype or self.dtype)

    def take(self, index: np.ndarray, dtype=None):
        """Rows ``index`` (int array, increasing) on the device in ``dtype``."""
        if self.host is not None:
            return self._move(self.host[index], dtype or self.dtype)
        idx = self.torch.from_numpy(np.asarray(index, dtype=np.int64)).to(self.tensor.device)
        return self._move(self.tensor.index_select(0, idx), dtype or self.dtype)

    def row_chunks(self, width: int):
        """Row slices so a block of ``rows x max(width, d)`` fits the chunk budget."""
        step = max(1, self.chunk_elements // max(1, width, self.d))
        for start in range(0, self.n, step):
            yield slice(start, min(self.n, start + step))

    def index_chunks(self, index: np.ndarray, width: int):
        step = max(1, self.chunk_elements // max(1, width, self.d))
        for start in range(0, index.size, step):
            yield index[start:start + step]


def class_order(y: Any, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``classes`` and, per class, its row indices in increasing order (the numpy route's
    ``X[y_index == c]`` order)."""
    y = _check_y(to_numpy_labels(y), n)
    classes, y_index = np.unique(y, return_inverse=True)
    order = np.argsort(y_index, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(y_index, minlength=classes.size))])
    return classes, [order[bounds[i]:bounds[i + 1]] for i in range(classes.size)]


def descending_eigh(torch, M, *, n_rows: int, dim: int):
    """``_common._descending_eigh`` in torch: float64 eigenpairs of the PSD ``M`` descending, the
    numerically-zero ones dropped.  Returns ``(lam, W)``: ``lam`` a numpy float64 array (for the
    energy cut, by the numpy route's code), ``W`` the matching device columns."""
    if M.device.type == "cpu" and CPU_EIGH_WITH_LAPACK:  # the numpy route's solver
        lam, W = _common._descending_eigh(M.numpy(), n_rows=n_rows, dim=dim)
        return lam, torch.from_numpy(W.copy(order="C"))
    lam, W = torch.linalg.eigh(M)
    lam = lam.flip(0).cpu().numpy()
    W = W.flip(1)
    if lam.size == 0 or lam[0] <= 0.0:
        return lam[:0], W[:, :0]
    tol = lam[0] * max(n_rows, dim) * _common._EPS64
    r = int(np.count_nonzero(lam > tol))
    return lam[:r], W[:, :r]


def top_eigenpair(torch, M):
    """Largest eigenvalue (float) and its unit eigenvector (device column) of the PSD float64
    ``M``: a full ``torch.linalg.eigh`` (LAPACK's single-eigenvector solver on CPU with
    :data:`CPU_EIGH_WITH_LAPACK`)."""
    if M.device.type == "cpu" and CPU_EIGH_WITH_LAPACK:
        from scipy.linalg import eigh

        m = M.shape[0]
        lam, w = eigh(M.numpy(), subset_by_index=[m - 1, m - 1])
        return float(lam[0]), torch.from_numpy(w[:, 0].copy())
    lam, W = torch.linalg.eigh(M)
    return float(lam[-1]), W[:, -1]


def second_moment(rows: DeviceRows, index: np.ndarray, *, want_gram: bool):
    """The class's float64 data on the device and its second moment.

    ``want_gram`` (``n_c < d``): returns ``(Xc, Xc @ Xc.T, sum)`` with ``Xc`` the n_c x d float64
    rows.  Otherwise returns ``(None, Xc.T @ Xc, sum)`` accumulated over row blocks, so only one
    d x d float64 matrix and one block are ever held.
    """
    torch = rows.torch
    f64 = torch.float64
    if want_gram:
        Xc = rows.take(index, f64)
        return Xc, Xc @ Xc.T, Xc.sum(0)
    M = torch.zeros((rows.d, rows.d), dtype=f64, device=rows.device)
    s = torch.zeros(rows.d, dtype=f64, device=rows.device)
    # row blocks within the chunk budget: one d x d matrix and one block are held at a time
    for idx in rows.index_chunks(index, rows.d):
        Xb = rows.take(idx, f64)
        M.addmm_(Xb.T, Xb)
        s += Xb.sum(0)
        del Xb
    return None, M, s


def linear_scores(rows: DeviceRows, W: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``X @ W.T (+ bias)`` for the rows ``X`` with torch on their device, in row blocks, in the
    input's precision (the numpy route's ``decision_function`` of VeLPIC and LinearProbe)."""
    torch = rows.torch
    out = np.empty((rows.n, W.shape[0]), dtype=np.float64 if rows.dtype == torch.float64 else np.float32)
    with torch.no_grad(), full_precision(torch):
        Wt = torch.from_numpy(np.ascontiguousarray(W)).to(rows.device, rows.dtype).T
        b = None if bias is None else torch.from_numpy(np.asarray(bias)).to(rows.device, rows.dtype)
        for sl in rows.row_chunks(rows.d + W.shape[0]):
            S = rows.rows(sl) @ Wt
            if b is not None:
                S += b
            out[sl] = S.cpu().numpy()
    return out


def fitted_device_rows(probe, X: Any) -> DeviceRows:
    """The torch route's predict-time checks: ``X`` as :class:`DeviceRows` on ``probe.device``, for
    a fitted probe with as many features as it was fitted with."""
    check_is_fitted(probe, "classes_")
    rows = DeviceRows(X, probe.device)
    if rows.d != probe.n_features_in_:
        raise ValueError(f"X has {rows.d} features, but {type(probe).__name__} was fitted "
                         f"with {probe.n_features_in_} features")
    return rows
