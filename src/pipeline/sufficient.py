"""Per-class sufficient statistics of a layer: refit MASC, VeLPIC and NCM without the activations.

MASC, VeLPIC and nearest class mean depend on a class's training activations ``X_c`` only through

* ``n_c``                       the class size,
* ``s_c = sum_i x_i``           (d,) the sum, hence the class mean ``s_c / n_c`` (and the global
                                mean ``sum_c s_c / n``, VeLPIC's ``sign="global_mean"``),
* ``M_c = X_c^T X_c``           (d, d) the **uncentred** second moment,

per label source (the corrupted and the true training labels give different classes). MASC's
subspace at *any* energy threshold is the top eigenvectors of ``M_c``; VeLPIC's vector is the top
one, signed by the mean; NCM needs the means. :class:`ClassMoments` accumulates these in float64
(batch by batch, so an activation file never has to fit in memory) and the ``fit_*`` functions
build probes identical to fitting on the raw activations (:mod:`pipeline.probes`; same
eigenvalue cut-off, float64 eigensolver) that round-trip through the same fitted-probe format.

Size: ``K * (d(d+1)/2 + d + 1)`` float64 numbers per label source (the upper triangle of ``M_c``)
against ``n * d`` numbers of activations, so the statistics are smaller only where
``d < ~ 2n / (K * sources)``: the narrow layers (CNN fc layers, MLP fc1/fc2, ResNet-18 avg_pool),
never the 16,384-dimensional L0/L1 of ResNet-18. :func:`moment_bytes` and
:func:`pays_off` say which; ``pipeline plan`` reports them per layer.

The logistic-regression, kNN and LDA probes need the raw activations (:func:`fit_from_moments`
says so). Scoring any probe needs the activations of the split being scored.

Command line (one activation file -> one statistics file; probe fitting from it writes the same
``subspaces`` HDF5 the ``score`` stage reads)::

    python -m pipeline moments --activations A.h5 --out M.h5
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from pipeline.io import atomic_path
from pipeline.probes import _EPS64, _components_for, probe_from_arrays

#: probes that can be fitted from the statistics alone
FROM_MOMENTS = ("masc", "velpic", "ncm")
_ROW_BLOCK = 4096


@dataclass
class ClassMoments:
    """n_c, sum and uncentred second moment per class (float64), for one layer and label source."""

    classes: np.ndarray   # (K,) int64 labels
    counts: np.ndarray    # (K,) int64
    sums: np.ndarray      # (K, d) float64
    second: np.ndarray    # (K, d, d) float64, symmetric

    @classmethod
    def empty(cls, classes: Iterable[int], dim: int) -> "ClassMoments":
        classes = np.asarray(sorted(int(c) for c in classes), dtype=np.int64)
        k = classes.size
        return cls(classes, np.zeros(k, np.int64), np.zeros((k, dim)), np.zeros((k, dim, dim)))

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    def update(self, X: np.ndarray, y: np.ndarray) -> "ClassMoments":
        """Add the rows ``X`` with labels ``y`` (labels must be among :attr:`classes`)."""
        X = np.asarray(X)
        y = np.asarray(y, dtype=np.int64)
        index = np.searchsorted(self.classes, y)
        if np.any(index >= self.classes.size) or np.any(self.classes[np.minimum(index, self.classes.size - 1)] != y):
            raise ValueError(f"labels {sorted(set(y.tolist()) - set(self.classes.tolist()))} are not "
                             f"among the classes {self.classes.tolist()}")
        for c in np.unique(index):
            Xc = X[index == c].astype(np.float64)
            self.counts[c] += Xc.shape[0]
            self.sums[c] += Xc.sum(axis=0)
            self.second[c] += Xc.T @ Xc
        return self

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray, classes: Iterable[int] | None = None) -> "ClassMoments":
        y = np.asarray(y, dtype=np.int64)
        moments = cls.empty(np.unique(y) if classes is None else classes, np.asarray(X).shape[1])
        for start in range(0, len(y), _ROW_BLOCK):
            moments.update(X[start:start + _ROW_BLOCK], y[start:start + _ROW_BLOCK])
        return moments

    # persistence: the upper triangle of each M_c
    def to_arrays(self) -> dict[str, np.ndarray]:
        iu = np.triu_indices(self.dim)
        return {"classes": self.classes, "counts": self.counts, "sums": self.sums,
                "second_upper": self.second[:, iu[0], iu[1]]}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ClassMoments":
        sums = np.asarray(arrays["sums"], dtype=np.float64)
        k, d = sums.shape
        iu = np.triu_indices(d)
        second = np.zeros((k, d, d))
        second[:, iu[0], iu[1]] = arrays["second_upper"]
        second[:, iu[1], iu[0]] = arrays["second_upper"]
        return cls(np.asarray(arrays["classes"], dtype=np.int64),
                   np.asarray(arrays["counts"], dtype=np.int64), sums, second)


# ----------------------------------------------------------------------------- sizes

def moment_bytes(dim: int, num_classes: int, sources: int = 2) -> int:
    """Bytes of the stored statistics of one layer (float64, upper triangles)."""
    return int(sources * num_classes * (dim * (dim + 1) // 2 + dim + 1) * 8)


def pays_off(dim: int, num_classes: int, n_train: int, itemsize: int, sources: int = 2) -> bool:
    """Whether the statistics are smaller than the layer's training activations."""
    return moment_bytes(dim, num_classes, sources) < n_train * dim * itemsize


# ----------------------------------------------------------------------------- probes

def _eig_desc(M: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negligible eigenpairs of a second moment, descending (the cut-off of pipeline.probes)."""
    lam, W = np.linalg.eigh(M)
    lam, W = lam[::-1], W[:, ::-1]
    if lam.size == 0 or lam[0] <= 0.0:
        return lam[:0], W[:, :0]
    tol = lam[0] * max(n, M.shape[0]) * _EPS64
    r = int(np.count_nonzero(lam > tol))
    return lam[:r], W[:, :r]


def fit_masc(m: ClassMoments, variance: float | int = 0.99):
    bases, ks, energy = [], [], []
    for c in range(m.classes.size):
        lam, W = _eig_desc(m.second[c], int(m.counts[c]))
        k = _components_for(lam, variance)
        bases.append(W[:, :k].astype(np.float32))
        ks.append(k)
        energy.append(float(lam[:k].sum() / lam.sum()) if lam.size else 0.0)
    arrays = {"bases": np.concatenate(bases, axis=1), "n_components": np.asarray(ks, np.int64),
              "explained_energy": np.asarray(energy), "classes": m.classes}
    return probe_from_arrays("masc", {"variance": variance}, arrays)


def fit_velpic(m: ClassMoments, sign: str = "class_mean"):
    V = np.zeros((m.classes.size, m.dim))
    global_mean = m.sums.sum(axis=0) / max(int(m.counts.sum()), 1)
    for c in range(m.classes.size):
        lam, W = _eig_desc(m.second[c], int(m.counts[c]))
        if lam.size == 0:
            continue
        v = W[:, 0]
        ref = m.sums[c] / max(int(m.counts[c]), 1) if sign == "class_mean" else global_mean
        V[c] = -v if ref @ v < 0 else v
    return probe_from_arrays("velpic", {"sign": sign},
                             {"class_vectors": V.astype(np.float32), "classes": m.classes})


def fit_ncm(m: ClassMoments):
    means = m.sums / np.maximum(m.counts, 1)[:, None]
    return probe_from_arrays("ncm", {}, {"means": means.astype(np.float32), "classes": m.classes})


def fit_from_moments(name: str, params: dict, moments: ClassMoments):
    """A fitted probe from the statistics; only MASC, VeLPIC and NCM can be."""
    params = dict(params or {})
    if name == "masc":
        return fit_masc(moments, **params)
    if name == "velpic":
        return fit_velpic(moments, **params)
    if name == "ncm":
        return fit_ncm(moments, **params)
    raise ValueError(f"probe {name!r} needs the raw activations; from class statistics only "
                     f"{list(FROM_MOMENTS)} can be fitted")


# ----------------------------------------------------------------------------- files

def compute_moments(activation_path: str | Path, out_path: str | Path, *,
                    layers: Iterable[str] | None = None,
                    fit_labels: Iterable[str] = ("corrupted", "true"),
                    attrs: dict | None = None) -> Path:
    """Statistics of every (persisted) layer and label source of one activation file.

    Layout: ``{layer}/{source}/{classes,counts,sums,second_upper}``; attributes as the source
    file's plus ``layers``, ``fit_labels``, ``num_classes``.
    """
    from pipeline.activations import ActivationFile

    out_path = Path(out_path)
    with ActivationFile(activation_path) as acts, atomic_path(out_path) as tmp, \
            h5py.File(tmp, "w") as out:
        for key, value in {**acts.attrs(), **(attrs or {})}.items():
            if key != "complete":
                out.attrs[key] = value if isinstance(value, (str, int, float, np.generic)) else json.dumps(value)
        chosen = list(layers) if layers is not None else acts.layers
        classes = np.arange(acts.num_classes)
        for layer in chosen:
            ds = acts.h5[f"layers/{layer}/train"]
            for source in fit_labels:
                y = acts.labels("train", source)
                m = ClassMoments.empty(classes, ds.shape[1])
                for start in range(0, ds.shape[0], _ROW_BLOCK):
                    m.update(ds[start:start + _ROW_BLOCK], y[start:start + _ROW_BLOCK])
                group = out.create_group(f"{layer}/{source}")
                for name, array in m.to_arrays().items():
                    group.create_dataset(name, data=array)
        out.attrs["layers"] = json.dumps(chosen)
        out.attrs["fit_labels"] = json.dumps(list(fit_labels))
        out.attrs["num_classes"] = int(acts.num_classes)
        out.attrs["complete"] = True
    return out_path


def load_moments(path: str | Path, layer: str, source: str) -> ClassMoments:
    with h5py.File(path, "r") as h5:
        if not h5.attrs.get("complete", False):
            raise RuntimeError(f"statistics file {path} is incomplete; delete it and rerun")
        group = h5[f"{layer}/{source}"]
        return ClassMoments.from_arrays({k: group[k][()] for k in group})


def fit_subspaces_from_moments(moments_path: str | Path, out_path: str | Path, *,
                               settings: list[dict], fit_labels: Iterable[str] = ("corrupted", "true"),
                               layers: Iterable[str] | None = None, attrs: dict | None = None) -> Path:
    """Like :func:`pipeline.probing.fit_subspaces`, from statistics: the same output format, so
    the ``score`` stage reads it unchanged."""
    from pipeline.probes import probe_to_arrays, setting_id
    from pipeline.probing import _group_name, probe_layers

    out_path = Path(out_path)
    fit_labels = list(fit_labels)
    with h5py.File(moments_path, "r") as src:
        stored = json.loads(src.attrs["layers"])
        sources = json.loads(src.attrs["fit_labels"])
    missing = [s for s in fit_labels if s not in sources]
    if missing:
        raise ValueError(f"statistics in {moments_path} hold label sources {sources}, not {missing}")
    chosen = probe_layers(stored, layers)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        for key, value in (attrs or {}).items():
            out.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        out.attrs["layers"] = json.dumps(chosen)
        out.attrs["settings"] = json.dumps(settings)
        out.attrs["fit_labels"] = json.dumps(fit_labels)
        for layer in chosen:
            for source in fit_labels:
                m = load_moments(moments_path, layer, source)
                for entry in settings:
                    name, params = entry["name"], entry.get("params", {})
                    probe = fit_from_moments(name, params, m)
                    group = out.create_group(_group_name(layer, name, setting_id(name, params), source))
                    group.attrs["probe"] = name
                    group.attrs["params"] = json.dumps(params, sort_keys=True)
                    for array_name, array in probe_to_arrays(probe).items():
                        group.create_dataset(array_name, data=array)
        out.attrs["complete"] = True
    return out_path
