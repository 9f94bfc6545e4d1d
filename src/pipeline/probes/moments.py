"""Per-class sufficient statistics of a layer: refit MASC, VeLPIC and NCM without the activations.

MASC, VeLPIC and nearest class mean depend on a class's training activations ``X_c`` only through

* ``n_c``                       the class size,
* ``s_c = sum_i x_i``           (d,) the sum, hence the class mean ``s_c / n_c`` (and the global
                                mean ``sum_c s_c / n``, VeLPIC's ``sign="global_mean"``),
* ``M_c = X_c^T X_c``           (d, d) the **uncentred** second moment,

per label source (the corrupted and the true training labels give different classes). MASC's
subspace at *any* energy threshold is the top eigenvectors of ``M_c``; VeLPIC's vector is the top
one, signed by the mean; NCM needs the means. :class:`ClassMoments` accumulates these in float64
(batch by batch, so an activation file never has to fit in memory); each of the three estimators
fits from them with its own ``fit_moments`` method (same eigenvalue cut-off, float64 eigensolver)
to a probe identical to one fitted on the raw activations, in the same fitted-probe format.
:func:`fit_from_moments` dispatches a registry name to it.

Size: ``K * (d(d+1)/2 + d + 1)`` float64 numbers per label source (the upper triangle of ``M_c``)
against ``n * d`` activations of ``itemsize`` bytes, so the statistics are smaller only where
``d < n * itemsize / (4 K sources)`` (n / 20 for float32, 10 classes, both label sources). On the
paper grid that is every MLP layer, the CNN's layers but block1, ResNet-18's L4 and avg_pool, and
no AlexNet layer on Tiny ImageNet (200 classes); never the 16,384-dimensional L0/L1 of ResNet-18.
:func:`moment_bytes` and :func:`pays_off` say which; ``pipeline plan`` lists them per pair.

Time: refitting costs one d x d eigendecomposition per class, computed once and shared by every
MASC threshold and VeLPIC. At the papers' sizes (n_c ~ 5,000 >= d) the activation route does the
same eigendecomposition after an n_c x d product per setting, so the statistics are faster:
``benchmarks/bench_statistics.py`` (n = 50,000, 10 classes, float16, one thread of this project's
2-core test machine) fits MASC 99 % + MASC 1 + VeLPIC + NCM in 0.05 / 0.36 / 15.9 s from the
statistics against 1.3 / 3.6 / 60.7 s from the activations at d = 250 / 512 / 2,048, with
identical test predictions. Only where a class has fewer rows than d (small subsets) is the
activation route's n_c x n_c Gram matrix cheaper.

The logistic-regression (``linear``, ``logreg``), kNN and LDA probes need the raw activations
(:func:`fit_from_moments` says so; :data:`FROM_MOMENTS` lists the others). Scoring any probe
needs the activations of the split being scored, so the statistics cannot give a probe's
*training-split* accuracy: a layer kept as statistics has test-split rows only (the model's own
rows keep both splits; its predictions are stored).

In the workflow (``storage.persist``), :func:`reduce_activations` turns each checkpoint's
activation file into a *reduced* file: the same layout, with the training activations of the
chosen layers replaced by their statistics. The activation file is then temporary; the ``fit``
and ``score`` stages read the reduced file (:func:`pipeline.probes.fit_subspaces` fits a layer
from its statistics when its training activations are absent), so a probe-only rerun works on it
with no extraction. By hand::

    python -m pipeline reduce --config-json '{"storage": {"persist": "auto"}}' \
        --dataset D --model M --corruption C --seed S --epoch E --activations A.h5 --out R.h5
    python -m pipeline fit ... --activations R.h5 --out S.h5   # then score, as usual
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.probes._common import _descending_eigh
from pipeline.probes.registry import make_probe

__all__ = ["ClassMoments", "FROM_MOMENTS", "REDUCED_MODES", "SOURCES", "fit_from_moments",
           "moment_bytes", "pays_off", "moment_layer_choice", "reduce_activations"]

#: probes that can be fitted from the statistics alone (each has a ``fit_moments`` method)
FROM_MOMENTS = ("masc", "velpic", "ncm")
_ROW_BLOCK = 4096


@dataclass
class ClassMoments:
    """n_c, sum and uncentred second moment per class (float64), for one layer and label source."""

    classes: np.ndarray   # (K,) int64 labels
    counts: np.ndarray    # (K,) int64
    sums: np.ndarray      # (K, d) float64
    second: np.ndarray    # (K, d, d) float64, symmetric
    # eigenpairs per class, computed once: every MASC threshold and VeLPIC share them
    _eig: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def eig(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Non-negligible eigenpairs of class index ``c``'s second moment, descending (cached)."""
        if c not in self._eig:
            self._eig[c] = _descending_eigh(self.second[c], n_rows=int(self.counts[c]), dim=self.dim)
        return self._eig[c]

    @classmethod
    def empty(cls, classes: Iterable[int], dim: int) -> ClassMoments:
        classes = np.asarray(sorted(int(c) for c in classes), dtype=np.int64)
        k = classes.size
        return cls(classes, np.zeros(k, np.int64), np.zeros((k, dim)), np.zeros((k, dim, dim)))

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    def update(self, X: np.ndarray, y: np.ndarray) -> ClassMoments:
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
        self._eig.clear()
        return self

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray, classes: Iterable[int] | None = None) -> ClassMoments:
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
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ClassMoments:
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

def fit_from_moments(name: str, params: dict | None, moments: ClassMoments):
    """A fitted probe from the statistics: ``make_probe(name, **params).fit_moments(moments)``;
    only the probes in :data:`FROM_MOMENTS` (MASC, VeLPIC, NCM) can be."""
    if name not in FROM_MOMENTS:
        raise ValueError(f"probe {name!r} needs the raw activations; from class statistics only "
                         f"{list(FROM_MOMENTS)} can be fitted")
    return make_probe(name, **dict(params or {})).fit_moments(moments)


# ----------------------------------------------------------------------------- files

#: ``storage.persist`` modes that keep statistics instead of (some) training activations
REDUCED_MODES = ("moments", "auto")
SOURCES = ("corrupted", "true")


def moment_layer_choice(dims: dict[str, int], mode: str, *, num_classes: int, n_train: int,
                        itemsize: int) -> list[str]:
    """Layers whose training split is kept as statistics: all (``moments``) or those where the
    statistics are smaller than the training activations (``auto``)."""
    if mode == "moments":
        return list(dims)
    if mode == "auto":
        return [layer for layer, d in dims.items()
                if pays_off(d, num_classes, n_train, itemsize, sources=len(SOURCES))]
    raise ValueError(f"storage.persist must be one of activations, {', '.join(REDUCED_MODES)}; "
                     f"got {mode!r}")


def reduce_activations(activation_path: str | Path, out_path: str | Path, *, mode: str = "moments",
                       attrs: dict | None = None) -> Path:
    """Write the reduced copy of one activation file that ``storage.persist: moments|auto`` keeps.

    Same layout as the activation file (so :class:`pipeline.core.activations.ActivationFile` reads it
    and the ``fit``/``score`` stages take it unchanged), with, for each layer chosen by
    :func:`moment_layer_choice`, the training activations replaced by the per-class statistics
    ``moments/{layer}/{corrupted,true}/{classes,counts,sums,second_upper}`` (both label sources,
    so changing ``probes.fit_labels`` never needs the activations). Labels, the model's
    predictions and the test split's activations are copied as they are: scoring needs them.
    """
    import h5py

    from pipeline.core.activations import ActivationFile
    from pipeline.core.artifacts import atomic_path, write_h5_attrs

    out_path = Path(out_path)
    with ActivationFile(activation_path) as acts, atomic_path(out_path) as tmp, \
            h5py.File(tmp, "w") as out:
        src = acts.h5
        write_h5_attrs(out, {k: v for k, v in {**acts.attrs(), **(attrs or {})}.items()
                             if k != "complete"})
        itemsize = np.dtype(str(src.attrs.get("dtype", "float32"))).itemsize
        n_train = int(src["labels/train_true"].shape[0])
        chosen = moment_layer_choice(acts.layer_dims, mode, num_classes=acts.num_classes,
                                     n_train=n_train, itemsize=itemsize)
        for name in ("labels", "predictions"):
            src.copy(src[name], out, name=name)
        classes = np.arange(acts.num_classes)
        labels = {source: acts.labels("train", source) for source in SOURCES}
        for layer in acts.layers:
            src.copy(src[f"layers/{layer}/test"], out.require_group(f"layers/{layer}"), name="test")
            if layer not in chosen:
                src.copy(src[f"layers/{layer}/train"], out[f"layers/{layer}"], name="train")
                continue
            ds = src[f"layers/{layer}/train"]
            moments = {source: ClassMoments.empty(classes, ds.shape[1]) for source in SOURCES}
            for start in range(0, ds.shape[0], _ROW_BLOCK):  # one pass over the rows, both sources
                block = ds[start:start + _ROW_BLOCK]
                for source in SOURCES:
                    moments[source].update(block, labels[source][start:start + _ROW_BLOCK])
            for source, m in moments.items():
                group = out.create_group(f"moments/{layer}/{source}")
                for array_name, array in m.to_arrays().items():
                    group.create_dataset(array_name, data=array)
        out.attrs["moment_layers"] = json.dumps(chosen)
        out.attrs["persist"] = mode
        out.attrs["complete"] = True
    return out_path
