"""Activation stage: one HDF5 file per (run, checkpoint) with every probe layer's activations.

Layout of ``activations/epoch_{E}.h5``::

    attrs                       run keys, epoch, layers, pipeline_version, config (JSON)
    labels/train_corrupted      int64 (N,)   labels the model was trained on
    labels/train_true           int64 (N,)
    labels/test                 int64 (M,)   always true labels
    predictions/train|test      int64        the model's own predictions (eval mode)
    layers/{layer}/train        (N, d_layer) float32 (or float16), dataset order
    layers/{layer}/test         (M, d_layer)

A *reduced* file (``storage.persist: moments|auto``, :func:`pipeline.sufficient.reduce_activations`)
has the same layout and is read by the same class, except that for the layers in its
``moment_layers`` attribute ``layers/{layer}/train`` is replaced by the per-class sufficient
statistics ``moments/{layer}/{corrupted,true}/...`` (:meth:`ActivationFile.moments`).

Each layer is its own dataset, so one layer reads without touching the others. Rows are chunked
in blocks of about 64 KiB (a single row for layers of 16k dims), so reading one class's rows
(:meth:`ActivationFile.read_class`) touches only the chunks that hold them. Compression is off by
default; ``lzf`` is offered because it is fast enough for the extraction loop (gzip is not).

Extraction runs in eval mode, batched, in the dataset's original order, and takes activations from
:meth:`pipeline.core.models.ProbedModel.forward_layers`, which computes them out of place, so a later
in-place ReLU or residual addition cannot overwrite what was recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

if TYPE_CHECKING:  # torch and pipeline.core.labels (the dataset registry, torch): not for reading files
    import torch

    from pipeline.core.labels import RunLabels
from pipeline.core.artifacts import atomic_path, write_h5_attrs

CHUNK_BYTES = 1 << 16


def rows_per_chunk(dim: int, itemsize: int, n_rows: int) -> int:
    return int(max(1, min(n_rows, CHUNK_BYTES // max(1, dim * itemsize))))


def persisted_layers(spec, model: str) -> list[str] | None:
    """The probe layers ``activations.layers`` persists for ``model`` (None = all of them).

    ``spec`` is null (all), ``"paper"`` (the layers the papers report, ``paper_layers``), a list
    of names, or a mapping model -> list (a model it does not name keeps all its layers).
    """
    from pipeline.core.models import MODELS

    if spec is None:
        return None
    if spec == "paper":
        return list(MODELS[model].build.paper_layers)
    if isinstance(spec, dict):
        chosen = spec.get(model)
        return None if chosen is None else list(chosen)
    return list(spec)


def _extract_split(model, x_uint8: torch.Tensor, transform, layers: list[str], datasets: dict,
                   predictions: h5py.Dataset, batch_size: int, device, dtype) -> None:
    from pipeline.core.runtime import forward

    for start, stop, logits, acts in forward(model, x_uint8, transform, layers=layers,
                                             batch_size=batch_size, device=device):
        predictions[start:stop] = logits.argmax(1).cpu().numpy()
        for layer in layers:
            datasets[layer][start:stop] = acts[layer].to(dtype).cpu().numpy()


def extract_activations(model: torch.nn.Module, x_train: np.ndarray | torch.Tensor,
                        x_test: np.ndarray | torch.Tensor,
                        labels: RunLabels, transform, out_path: str | Path, *,
                        layers: Iterable[str] | None = None, dtype: str = "float32",
                        compression: str | None = None, batch_size: int = 512,
                        attrs: dict | None = None) -> Path:
    """Write the activations of ``layers`` (default: all probe layers) for both splits to ``out_path``."""
    import torch  # here, not at the top: the probe stages read activation files without torch

    layers = list(layers) if layers is not None else list(model.probe_layers)
    unknown = [layer for layer in layers if layer not in model.probe_layers]
    if unknown:
        raise ValueError(f"unknown probe layer(s) {unknown}; this model's probe layers are "
                         f"{list(model.probe_layers)}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"activation dtype must be float32 or float16, got {dtype!r}")
    if compression not in (None, "lzf"):
        raise ValueError(f"activation compression must be null or 'lzf', got {compression!r}")
    device = next(model.parameters()).device
    model.eval()
    torch_dtype = getattr(torch, dtype)
    itemsize = np.dtype(dtype).itemsize
    with torch.no_grad():
        probe_x = transform(torch.as_tensor(x_train[:1]).to(device))
        _, probe_acts = model.forward_layers(probe_x, layers)
    dims = {layer: int(np.prod(probe_acts[layer].shape[1:])) for layer in layers}
    shapes = {layer: list(probe_acts[layer].shape[1:]) for layer in layers}

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w") as h5:
            write_h5_attrs(h5, attrs or {})
            h5.attrs["layers"] = json.dumps(layers)
            h5.attrs["layer_dims"] = json.dumps(dims)
            h5.attrs["layer_shapes"] = json.dumps(shapes)
            h5.attrs["dtype"] = dtype
            h5.attrs["num_classes"] = int(labels.num_classes)
            h5["labels/train_corrupted"] = labels.corrupted
            h5["labels/train_true"] = labels.true
            h5["labels/test"] = labels.test
            for split, x in (("train", x_train), ("test", x_test)):
                n = x.shape[0]
                datasets = {
                    layer: h5.create_dataset(f"layers/{layer}/{split}", shape=(n, dims[layer]), dtype=dtype,
                                             chunks=(rows_per_chunk(dims[layer], itemsize, n), dims[layer]),
                                             compression=compression)
                    for layer in layers}
                preds = h5.create_dataset(f"predictions/{split}", shape=(n,), dtype="int64")
                _extract_split(model, torch.as_tensor(x), transform, layers, datasets, preds,
                               batch_size, device, torch_dtype)
            h5.attrs["complete"] = True
    return out_path


class ActivationFile:
    """Read access to an activation file; fails with a clear message on a corrupt/partial file."""

    #: what to do with an unreadable activation (or reduced) file
    REMEDY = "delete it and rerun the workflow; it is regenerated from the checkpoint"

    def __init__(self, path: str | Path):
        from pipeline.core.errors import ArtifactError

        self.path = Path(path)
        if not self.path.exists():
            raise ArtifactError(f"activation file {self.path} does not exist; rerun the workflow, "
                                "which extracts it from the checkpoint")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as exc:  # truncated, not HDF5
            raise ArtifactError(f"activation file {self.path} cannot be opened as HDF5 "
                                f"({' '.join(str(exc).split())}); {self.REMEDY}") from None
        if not self.h5.attrs.get("complete", False):
            self.h5.close()
            raise ArtifactError(f"activation file {self.path} is incomplete; {self.REMEDY}")
        try:
            self.layers: list[str] = json.loads(self.h5.attrs["layers"])
            self.layer_dims: dict[str, int] = json.loads(self.h5.attrs["layer_dims"])
            self.num_classes = int(self.h5.attrs["num_classes"])
            # layers whose training split is stored as per-class statistics only (reduced files)
            self.moment_layers: list[str] = json.loads(self.h5.attrs.get("moment_layers", "[]"))
        except (KeyError, ValueError, TypeError) as exc:
            self.h5.close()
            raise ArtifactError(f"activation file {self.path} lacks or garbles an attribute "
                                f"({' '.join(str(exc).split())}); {self.REMEDY}") from None

    def _load(self, name: str, selection=()) -> np.ndarray:
        """``self.h5[name][selection]``; ArtifactError naming the file if it lacks ``name`` or
        its data cannot be read."""
        from pipeline.core.errors import ArtifactError

        try:
            node = self.h5[name]
        except KeyError:
            raise ArtifactError(f"activation file {self.path} lacks {name!r}; {self.REMEDY}") from None
        try:
            return node[selection]
        except OSError as exc:  # corrupt or truncated data
            raise ArtifactError(f"activation file {self.path} cannot read {name!r} "
                                f"({' '.join(str(exc).split())}); {self.REMEDY}") from None

    def __enter__(self) -> ActivationFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.h5.close()

    def labels(self, split: str, source: str = "true") -> np.ndarray:
        """Labels of ``split``: for train, ``source`` is "corrupted" or "true"; test is always true."""
        if split == "test":
            return self._load("labels/test")
        if source not in ("corrupted", "true"):
            raise ValueError(f"label source must be 'corrupted' or 'true', got {source!r}")
        return self._load(f"labels/train_{source}")

    def predictions(self, split: str) -> np.ndarray:
        return self._load(f"predictions/{split}")

    def has(self, layer: str, split: str) -> bool:
        """Whether the activations of ``layer`` on ``split`` are stored (not only statistics)."""
        return layer in self.layers and f"layers/{layer}/{split}" in self.h5

    def _dataset(self, layer: str, split: str) -> h5py.Dataset:
        if layer not in self.layers:
            raise KeyError(f"layer {layer!r} is not in {self.path}; stored layers: {self.layers}")
        if not self.has(layer, split):
            raise KeyError(f"{self.path} keeps only per-class statistics of layer {layer!r} on the "
                           f"{split} split, not its activations (storage.persist)")
        return self.h5[f"layers/{layer}/{split}"]

    def moment_arrays(self, layer: str, source: str) -> dict[str, np.ndarray]:
        """The stored per-class statistics of ``layer``'s training activations under label
        ``source``, as arrays (``pipeline.probes.ClassMoments.from_arrays`` reads them)."""
        if layer not in self.moment_layers:
            raise KeyError(f"{self.path} holds no per-class statistics of layer {layer!r}; layers "
                           f"with statistics: {self.moment_layers}")
        name = f"moments/{layer}/{source}"
        arrays = {k: self._load(f"{name}/{k}")
                  for k in ("classes", "counts", "sums", "second_upper")}
        return arrays

    def read(self, layer: str, split: str, rows: np.ndarray | None = None) -> np.ndarray:
        ds = self._dataset(layer, split)
        name = ds.name.lstrip("/")
        if rows is None:
            return self._load(name)
        rows = np.sort(np.asarray(rows))
        if len(rows) > ds.shape[0] // 4:
            # h5py's point selection is slow for many rows; one contiguous read is cheaper then.
            return self._load(name)[rows]
        return self._load(name, rows)

    def read_class(self, layer: str, split: str, source: str, label: int) -> np.ndarray:
        """Rows of one class (by the given label source) without reading the others' chunks."""
        rows = np.flatnonzero(self.labels(split, source) == label)
        return self.read(layer, split, rows)

    def attrs(self) -> dict:
        return dict(self.h5.attrs)
