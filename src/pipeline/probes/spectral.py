"""The fit of MASC and VeLPIC: one float64 eigendecomposition per class, shared by every setting.

MASC at any energy threshold or component count and VeLPIC with either sign see a class's training
activations only through the eigenpairs of its uncentred second moment ``X_c^T X_c`` (Gram route
``X_c X_c^T`` when ``n_c < d``) and, for VeLPIC's sign, the class or global mean. The eigenproblem
is the whole cost of the fit at the papers' sizes (ten 5,000 x 5,000 float64 problems for a
ResNet-18 layer: ~4 s of an H100's 4.5 s MASC fit), and fitting settings one by one solves it once
per setting and class: seven times with the default config's five MASC thresholds and two VeLPIC
signs, twice with the papers' MASC 0.99 + VeLPIC. :func:`fit_spectral` solves it once per class for
a list of such probes fitted on the same ``(X, y)``; ``MASC.fit`` and ``VeLPIC.fit`` are this
function with a list of one, so the per-class algorithm exists here only.

What is shared and what is not:

* every probe's per-class work (MASC's energy cut and ``X_c^T W[:, :k] / sqrt(lambda)`` basis,
  VeLPIC's top vector and sign) is the same code on the same arrays as a lone fit, so MASC's
  fitted arrays are identical to ``MASC(...).fit(X, y)``;
* VeLPIC alone asks LAPACK for the top eigenpair only (``scipy.linalg.eigh(subset_by_index=...)``,
  cheaper than a full decomposition); beside a MASC it takes the top column of MASC's full
  decomposition instead: the same vector to float64 rounding (stored float32), the same predictions
  on the probe tests' cases (``tests/probes/test_probes_spectral.py``);
* the numpy route (``device=None``) and the torch route (``"cpu"``/``"cuda"``) are both here; the
  probes of one call share a device (the probe stage sets one ``probes.device`` for all).

``benchmarks/bench_spectral.py`` times the default config's settings one by one against shared.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from pipeline.probes._common import (
    _check_Xy,
    _components_for,
    _second_moment_eigh,
    _top_basis,
    _top_eigenvector,
)

__all__ = ["SPECTRAL_PROBES", "fit_spectral", "fit_spectral_moments", "is_spectral"]

#: registry names of the probes :func:`fit_spectral` fits (``_name`` of MASC and VeLPIC)
SPECTRAL_PROBES = ("masc", "velpic")


def is_spectral(probe: Any) -> bool:
    """Whether ``probe`` is fitted from per-class eigenpairs (MASC or VeLPIC)."""
    return getattr(probe, "_name", None) in SPECTRAL_PROBES


def fit_spectral(probes: list, X: Any, y: Any) -> list:
    """Fit every probe of ``probes`` (MASC / VeLPIC, any settings, one device) on ``(X, y)`` with
    one eigendecomposition per class; returns ``probes``, each fitted as by its own ``fit``."""
    probes = list(probes)
    if not probes:
        return probes
    bad = [type(p).__name__ for p in probes if not is_spectral(p)]
    if bad:
        raise ValueError(f"fit_spectral fits MASC and VeLPIC only; got {', '.join(bad)}")
    devices = {p.device for p in probes}
    if len(devices) > 1:
        raise ValueError(f"fit_spectral: the probes must share one device; got {sorted(map(str, devices))}")
    for p in probes:
        p._validate_params()
    masc = [p for p in probes if p._name == "masc"]
    velpic = [p for p in probes if p._name == "velpic"]
    device = devices.pop()
    if device is None:
        _fit_numpy(masc, velpic, X, y)
    else:
        _fit_torch(masc, velpic, X, y, device)
    return probes


def fit_spectral_moments(probes: list, moments) -> list:
    """The same probes fitted from per-class statistics (a :class:`pipeline.probes.ClassMoments`):
    each class's cached d x d eigenpairs (``moments.eig``), the same per-class code as
    :func:`fit_spectral`; VeLPIC's sign from the stored sums. Numpy only."""
    probes = list(probes)
    for p in probes:
        p._validate_params()
    m = moments
    classes = np.asarray(m.classes)
    parts = [_MascParts(p) for p in probes if p._name == "masc"]
    velpic = [p for p in probes if p._name == "velpic"]
    V = np.zeros((len(velpic), classes.size, m.dim))
    global_mean = m.sums.sum(axis=0) / max(int(m.counts.sum()), 1)
    for c in range(classes.size):
        lam, W = m.eig(c)
        for part in parts:
            part.add(lam, lambda k, W=W: W[:, :k].astype(np.float32))
        if not lam.size:
            continue  # a numerically-zero class: zero vectors
        for i, p in enumerate(velpic):
            ref = m.sums[c] / max(int(m.counts[c]), 1) if p.sign == "class_mean" else global_mean
            V[i, c] = -W[:, 0] if ref @ W[:, 0] < 0 else W[:, 0]
    for part in parts:
        part.finish(classes, m.dim)
    for i, p in enumerate(velpic):
        _set_velpic(p, classes, V[i])
    return probes


class _MascParts:
    """One MASC's per-class pieces: float32 basis, component count, captured energy."""

    def __init__(self, probe):
        self.probe, self.bases, self.ks, self.energy = probe, [], [], []

    def add(self, lam: np.ndarray, basis) -> None:
        """``lam``: the class's kept eigenvalues, descending; ``basis(k)``: its top-k basis as a
        float32 numpy array (d x k)."""
        k = _components_for(lam, self.probe.variance)
        self.bases.append(basis(k))
        self.ks.append(k)
        self.energy.append(float(lam[:k].sum() / lam.sum()) if lam.size else 0.0)

    def finish(self, classes: np.ndarray, d: int) -> None:
        stacked = np.concatenate(self.bases, axis=1) if self.bases else np.zeros((d, 0), np.float32)
        self.probe._set_state(classes, stacked, np.asarray(self.ks, dtype=np.int64),
                              np.asarray(self.energy, dtype=np.float64))


def _set_velpic(probe, classes: np.ndarray, V: np.ndarray) -> None:
    probe.classes_ = classes
    probe.class_vectors_ = V.astype(np.float32)
    probe.n_features_in_ = int(V.shape[1])


def _numpy_basis(Xc, lam, W, gram: bool, k: int) -> np.ndarray:
    return _top_basis(Xc, lam, W, gram, k).astype(np.float32)


def _torch_basis(torch, Xc, lam, W, gram: bool, k: int) -> np.ndarray:
    B = (Xc.T @ W[:, :k]) / torch.from_numpy(np.sqrt(lam[:k])).to(W.device) if gram else W[:, :k]
    return B.to(torch.float32).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# numpy route (device=None): the reference
# ----------------------------------------------------------------------------------------------
def _fit_numpy(masc: list, velpic: list, X: Any, y: Any) -> None:
    X, _, classes, y_index = _check_Xy(X, y)
    d = X.shape[1]
    parts = [_MascParts(p) for p in masc]
    V = np.zeros((len(velpic), classes.size, d), dtype=np.float64)
    global_mean = X.mean(axis=0, dtype=np.float64) if any(p.sign == "global_mean" for p in velpic) else None
    for c in range(classes.size):
        Xc = np.asarray(X[y_index == c], dtype=np.float64)
        if parts:
            lam, W, gram = _second_moment_eigh(Xc)
            for part in parts:
                part.add(lam, partial(_numpy_basis, Xc, lam, W, gram))
            if not velpic:
                continue
            if lam.size:  # the top column of the shared decomposition, normalised as alone
                v = Xc.T @ W[:, 0] if gram else W[:, 0]
                v = v / np.linalg.norm(v)
            else:
                v = np.zeros(d)
        elif velpic:
            v = _top_eigenvector(Xc)  # alone: LAPACK's single-eigenvector solver
        for i, p in enumerate(velpic):
            ref = Xc.mean(axis=0) if p.sign == "class_mean" else global_mean
            V[i, c] = -v if ref @ v < 0 else v
    for part in parts:
        part.finish(classes, d)
    for i, p in enumerate(velpic):
        _set_velpic(p, classes, V[i])


# ----------------------------------------------------------------------------------------------
# torch route (device="cpu" / "cuda[:i]"): the same float64 eigenproblems on the device
# ----------------------------------------------------------------------------------------------
def _fit_torch(masc: list, velpic: list, X: Any, y: Any, device: str) -> None:
    import torch

    from pipeline.probes.accel import (
        DeviceRows,
        class_order,
        descending_eigh,
        full_precision,
        second_moment,
        top_eigenpair,
    )

    rows = DeviceRows(X, device)
    classes, index = class_order(y, rows.n)
    d = rows.d
    parts = [_MascParts(p) for p in masc]
    V = np.zeros((len(velpic), classes.size, d), dtype=np.float64)
    with torch.no_grad(), full_precision(torch):
        global_mean = None
        if any(p.sign == "global_mean" for p in velpic):
            total = torch.zeros(d, dtype=torch.float64, device=rows.device)
            for sl in rows.row_chunks(d):
                total += rows.rows(sl, torch.float64).sum(0)
            global_mean = total / rows.n
        for c, idx in enumerate(index):
            gram = idx.size < d
            Xc, M, s = second_moment(rows, idx, want_gram=gram)
            if parts:
                lam, W = descending_eigh(torch, M, n_rows=idx.size, dim=d)
                del M
                for part in parts:
                    part.add(lam, partial(_torch_basis, torch, Xc, lam, W, gram))
                top = (float(lam[0]), W[:, 0].clone()) if lam.size else (0.0, None)
                del W  # one class's eigenvectors on the device at a time
            else:
                top = top_eigenpair(torch, M)
                del M
            if velpic and top[0] > 0.0:  # else a numerically-zero class: zero vectors, as numpy
                w = top[1]
                v = Xc.T @ w if gram else w
                v = v / torch.linalg.vector_norm(v)
                for i, p in enumerate(velpic):
                    ref = s / idx.size if p.sign == "class_mean" else global_mean
                    V[i, c] = (-v if float(ref @ v) < 0 else v).cpu().numpy()
            del Xc
    for part in parts:
        part.finish(classes, d)
    for i, p in enumerate(velpic):
        _set_velpic(p, classes, V[i])
