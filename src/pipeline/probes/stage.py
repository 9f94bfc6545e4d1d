"""Probe stages: fit probes on saved activations ("fit class subspaces"), then score them.

The two stages are separate artifacts so that scoring (and anything reading the fitted bases, such
as weight editing) never refits:

``subspaces/epoch_{E}.h5``  fitted probe state, one group per
                           ``{layer}/{probe}/{setting}/{fit_labels}`` holding the arrays of
                           :func:`pipeline.probes.probe_to_arrays` (MASC bases, VeLPIC vectors,
                           class means, ...), with the probe name and params in attributes.
``probes/epoch_{E}.parquet`` rows of the tidy result schema (:mod:`pipeline.core.artifacts`): every probe
                           setting x layer x fit-label source, on the train split (against both
                           label sets) and the test split, plus the model's own accuracy rows.

Both stages only read activations, never checkpoints or data, so changing a probe setting reruns
only them (and aggregation and plots). They read a reduced file (``storage.persist: moments|auto``,
:mod:`pipeline.probes.moments`) the same way: a layer whose training activations were replaced by
per-class statistics is fitted from them (MASC, VeLPIC, NCM only) and scored on the test split only.

``device`` (the config's ``probes.device``) is where the probes run: None is the numpy reference
route, ``"cpu"``/``"cuda"`` the torch route there, ``"auto"`` CUDA when a GPU is visible and the
numpy route otherwise (:func:`pipeline.probes.accel.probe_device`).  It is passed to every probe
that has a ``device`` parameter (scikit-learn's ``get_params`` says which) and does not set it in
its own ``params``; it is an execution choice, so setting ids, group names and table rows do not
depend on it, and a file fitted on one device is scored on any.

A subspace file that cannot be read (truncated, not HDF5, incomplete, lacking a group) raises
:class:`pipeline.core.errors.ArtifactError` naming it; activation files do the same
(:class:`pipeline.core.activations.ActivationFile`).  h5py, pandas and the activation reader are
imported when a stage runs, so ``import pipeline.probes`` stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pipeline.core.errors import ArtifactError
from pipeline.probes.accel import probe_device
from pipeline.probes.moments import ClassMoments, fit_from_moments
from pipeline.probes.registry import make_probe, probe_from_arrays, probe_to_arrays, setting_id
from pipeline.probes.spectral import fit_spectral, is_spectral

__all__ = ["probe_layers", "fit_subspaces", "score_probes", "load_fitted", "open_subspaces",
           "ActivationArrays"]

_SUBSPACE_REMEDY = "delete it and rerun the workflow; it is refitted from the activations"


def probe_layers(available: list[str], requested: Iterable[str] | None) -> list[str]:
    if requested is None:
        return list(available)
    requested = list(requested)
    missing = [layer for layer in requested if layer not in available]
    if missing:
        raise ValueError(f"probes.layers {missing} were not persisted in the activations; persisted "
                         f"layers: {available} (see activations.layers in the config)")
    return requested


class ActivationArrays:
    """Activations in memory, read like an :class:`~pipeline.core.activations.ActivationFile`: what the
    fused path (``storage.fused``, :func:`pipeline.stages.probe_fused`) hands to
    :func:`fit_subspaces` and :func:`score_probes` instead of a file path, so fitting and scoring
    are the same code whichever way the activations arrive.

    ``compute(layers)`` returns ``({layer: {"train": X, "test": X}}, {"train": preds, "test":
    preds})`` for a list of layers (one forward pass); ``X`` may be a numpy array or a torch tensor
    on the probes' device. ``sizes`` (bytes of a layer's two splits) and ``max_bytes`` bound what is
    held at once: a read of a layer not held drops the others and computes it together with the
    next layers (in order) that fit, so a pass over the layers in order, as fitting and scoring
    make, costs one forward pass per group (one in all when everything fits)."""

    moment_layers: list[str] = []

    def __init__(self, layers: list[str], labels: dict, compute, *, sizes: dict | None = None,
                 max_bytes: float | None = None, name: str = "in-memory activations"):
        self.layers = list(layers)
        self._labels = labels  # {"train_corrupted", "train_true", "test"}
        self._compute = compute
        self._sizes = sizes or {}
        self._max_bytes = max_bytes
        self._held: dict = {}
        self._preds: dict | None = None
        self.name = name
        self.forward_passes = 0

    def __enter__(self) -> ActivationArrays:
        return self

    def __exit__(self, *exc) -> None:
        pass  # what is held stays for the next stage (scoring after fitting); close() frees it

    def close(self) -> None:
        self._held = {}

    def __str__(self) -> str:
        return self.name

    def _group(self, layer: str) -> list[str]:
        start = self.layers.index(layer)
        group, total = [], 0.0
        for name in self.layers[start:]:
            size = self._sizes.get(name, 0)
            if group and self._max_bytes is not None and total + size > self._max_bytes:
                break
            group.append(name)
            total += size
        return group

    def _load(self, layer: str) -> None:
        self._held = {}  # free the previous group before computing the next
        acts, preds = self._compute(self._group(layer))
        self.forward_passes += 1
        self._held = acts
        if self._preds is None:
            self._preds = preds

    def has(self, layer: str, split: str) -> bool:
        return layer in self.layers and split in ("train", "test")

    def read(self, layer: str, split: str):
        if layer not in self.layers:
            raise KeyError(f"layer {layer!r} is not among the fused layers {self.layers}")
        if layer not in self._held:
            self._load(layer)
        return self._held[layer][split]

    def labels(self, split: str, source: str = "true"):
        if split == "test":
            return self._labels["test"]
        if source not in ("corrupted", "true"):
            raise ValueError(f"label source must be 'corrupted' or 'true', got {source!r}")
        return self._labels[f"train_{source}"]

    def predictions(self, split: str):
        if self._preds is None:
            self._load(self.layers[0])
        return self._preds[split]


def _activations(source):
    """An :class:`ActivationArrays` as is; a path opened as an activation (or reduced) file."""
    if isinstance(source, ActivationArrays):
        return source
    from pipeline.core.activations import ActivationFile

    return ActivationFile(source)


def _group_name(layer: str, probe: str, setting: str, fit_labels: str) -> str:
    # HDF5 names cannot hold '/'; settings are short "k=v,k=v" strings.
    return f"{layer}/{probe}/{setting or 'default'}/{fit_labels}".replace(".", "_")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _on_device(probe, params: dict, device: str | None, *, scoring: bool = False):
    """``probe`` set to run on ``device`` when it has a ``device`` parameter.

    Fitting: only where the setting's ``params`` leave it unset (an explicit per-setting device,
    e.g. ``linear``'s, wins; None leaves the probe's own default).  Scoring: always (None = the
    numpy route), so a probe fitted on a GPU is scored wherever the score job runs.
    """
    if "device" not in probe.get_params():
        return probe
    if scoring or (device is not None and "device" not in params):
        probe.set_params(device=device)
    return probe


def open_subspaces(subspace_path: str | Path):
    """The subspace file opened read-only (an ``h5py.File``); ArtifactError if it is not a
    readable, complete one."""
    import h5py

    try:
        h5 = h5py.File(subspace_path, "r")
    except OSError as exc:  # truncated, not HDF5, missing
        raise ArtifactError(f"subspace file {subspace_path} cannot be opened ({_one_line(exc)}); "
                            f"{_SUBSPACE_REMEDY}") from None
    if not h5.attrs.get("complete", False):
        h5.close()
        raise ArtifactError(f"subspace file {subspace_path} is incomplete; {_SUBSPACE_REMEDY}")
    return h5


def fit_subspaces(activation_path: str | Path | ActivationArrays, out_path: str | Path, *, settings: list[dict],
                  fit_labels: Iterable[str] = ("corrupted", "true"), layers: Iterable[str] | None = None,
                  attrs: dict | None = None, device: str | None = None) -> Path:
    """Fit every probe setting on every layer and label source; save the fitted state to HDF5.

    ``device``: ``probes.device`` (None, "cpu", "cuda[:i]" or "auto"); see the module docstring.
    Layers kept as statistics are fitted from them with numpy whatever the device.
    ``activation_path`` may be an :class:`ActivationArrays` (the fused path: nothing on disk).
    """
    import h5py

    from pipeline.core.artifacts import atomic_path, write_h5_attrs

    out_path = Path(out_path)
    device = probe_device(device)
    with _activations(activation_path) as acts, atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        write_h5_attrs(out, attrs or {})
        chosen = probe_layers(acts.layers, layers)
        out.attrs["layers"] = json.dumps(chosen)
        out.attrs["settings"] = json.dumps(settings)
        out.attrs["fit_labels"] = json.dumps(list(fit_labels))
        for layer in chosen:
            from_moments = not acts.has(layer, "train")
            X = None if from_moments else acts.read(layer, "train")
            for source in fit_labels:
                y = None if from_moments else acts.labels("train", source)
                if from_moments:
                    fitted = _fit_from_moments(settings, ClassMoments.from_arrays(acts.moment_arrays(layer, source)),
                                                layer, activation_path)
                else:
                    fitted = _fit_on_activations(settings, X, y, device)
                for entry, probe in zip(settings, fitted, strict=True):
                    name, params = entry["name"], entry.get("params", {})
                    group = out.create_group(_group_name(layer, name, setting_id(name, params), source))
                    group.attrs["probe"] = name
                    group.attrs["params"] = json.dumps(params, sort_keys=True)
                    group.attrs["device"] = "numpy" if from_moments else str(probe.get_params().get("device"))
                    for array_name, array in probe_to_arrays(probe).items():
                        group.create_dataset(array_name, data=array)
        out.attrs["complete"] = True
    return out_path


def _fit_on_activations(settings: list[dict], X, y, device: str | None) -> list:
    """Every setting fitted on ``(X, y)``, in order. MASC and VeLPIC settings on one device share
    one eigendecomposition per class (:func:`pipeline.probes.spectral.fit_spectral`): seven
    decompositions become one with the default config's settings. Their fitted arrays are held
    together until written (the sum of their sizes)."""
    probes = [_on_device(make_probe(e["name"], **e.get("params", {})), e.get("params", {}), device)
              for e in settings]
    by_device: dict = {}
    for p in probes:
        if is_spectral(p):
            by_device.setdefault(p.device, []).append(p)
    for group in by_device.values():
        fit_spectral(group, X, y)
    for p in probes:
        if not is_spectral(p):
            p.fit(X, y)
    return probes


def _fit_from_moments(settings: list[dict], moments, layer: str, activation_path) -> list:
    fitted = []
    for entry in settings:
        try:
            fitted.append(fit_from_moments(entry["name"], entry.get("params", {}), moments))
        except ValueError as exc:
            raise ValueError(f"layer {layer!r} of {activation_path}: {exc} (its training activations "
                             "were not persisted; see storage.persist)") from None
    return fitted


def _read_fitted(h5, subspace_path, layer: str, name: str, params: dict, fit_labels: str):
    group_name = _group_name(layer, name, setting_id(name, params), fit_labels)
    try:
        group = h5[group_name]
        arrays = {k: group[k][()] for k in group}
        stored_params = json.loads(group.attrs["params"])
    except KeyError:
        raise ArtifactError(f"subspace file {subspace_path} lacks the fitted probe {group_name!r}; "
                            f"{_SUBSPACE_REMEDY}") from None
    except OSError as exc:  # truncated or corrupt data
        raise ArtifactError(f"subspace file {subspace_path} is unreadable at {group_name!r} "
                            f"({_one_line(exc)}); {_SUBSPACE_REMEDY}") from None
    return probe_from_arrays(name, stored_params, arrays)


def load_fitted(subspace_path: str | Path, layer: str, name: str, params: dict, fit_labels: str,
                device: str | None = None):
    """The fitted probe stored for (layer, probe setting, label source), set to score on
    ``device`` (None: the numpy route)."""
    import h5py

    try:
        h5 = h5py.File(subspace_path, "r")
    except OSError as exc:
        raise ArtifactError(f"subspace file {subspace_path} cannot be opened ({_one_line(exc)}); "
                            f"{_SUBSPACE_REMEDY}") from None
    with h5:
        probe = _read_fitted(h5, subspace_path, layer, name, params, fit_labels)
    return _on_device(probe, params, probe_device(device), scoring=True)


def score_probes(activation_path: str | Path | ActivationArrays, subspace_path: str | Path,
                 out_path: str | Path, *, run_keys: dict, epoch: int, metadata: dict | None = None,
                 device: str | None = None, model_rows: bool = True) -> Path:
    """Score the fitted probes and the model itself; write rows of the result schema to Parquet.

    ``device``: ``probes.device``, as for :func:`fit_subspaces` (any device scores any file).
    ``activation_path`` may be an :class:`ActivationArrays`; ``model_rows=False`` leaves out the
    model's own accuracy rows (a checkpoint whose layers are split between the staged and the fused
    path has them in the staged table only)."""
    from pipeline.core.tables import MODEL_LAYER, MODEL_PROBE, accuracy_row, result_frame, write_parquet

    rows: list[dict] = []
    device = probe_device(device)
    with _activations(activation_path) as acts, open_subspaces(subspace_path) as fitted:
        try:
            layers = json.loads(fitted.attrs["layers"])
            settings = json.loads(fitted.attrs["settings"])
            fit_sources = json.loads(fitted.attrs["fit_labels"])
        except KeyError as exc:
            raise ArtifactError(f"subspace file {subspace_path} lacks the attribute {exc}; "
                                f"{_SUBSPACE_REMEDY}") from None
        targets = {"train": {"corrupted": acts.labels("train", "corrupted"),
                             "true": acts.labels("train", "true")},
                   "test": {"true": acts.labels("test")}}
        for split, by_target in (targets.items() if model_rows else ()):
            preds = acts.predictions(split)
            for target, labels in by_target.items():
                rows.append(accuracy_row(run_keys, epoch=epoch, layer=MODEL_LAYER, probe=MODEL_PROBE,
                                         probe_setting="", fit_labels="corrupted", split=split,
                                         target=target, predictions=preds, labels=labels))
        for layer in layers:
            # a layer persisted as statistics has no training activations: test rows only
            data = {split: acts.read(layer, split) for split in targets if acts.has(layer, split)}
            for entry in settings:
                name, params = entry["name"], entry.get("params", {})
                sid = setting_id(name, params)
                for source in fit_sources:
                    probe = _on_device(_read_fitted(fitted, subspace_path, layer, name, params, source),
                                       params, device, scoring=True)
                    for split, by_target in targets.items():
                        if split not in data:
                            continue
                        preds = probe.predict(data[split])
                        for target, labels in by_target.items():
                            rows.append(accuracy_row(run_keys, epoch=epoch, layer=layer, probe=name,
                                                     probe_setting=sid, fit_labels=source, split=split,
                                                     target=target, predictions=preds, labels=labels))
    write_parquet(result_frame(rows), out_path, metadata)
    return Path(out_path)
