"""Probe stages: fit probes on saved activations ("fit class subspaces"), then score them.

The two stages are separate artifacts so that scoring (and anything reading the fitted bases, such
as weight editing) never refits:

``subspaces/epoch_{E}.h5``  fitted probe state, one group per
                           ``{layer}/{probe}/{setting}/{fit_labels}`` holding the arrays of
                           :func:`pipeline.probes.probe_to_arrays` (MASC bases, VeLPIC vectors,
                           class means, ...), with the probe name and params in attributes.
``probes/epoch_{E}.parquet`` rows of the tidy result schema (:mod:`pipeline.io`): every probe
                           setting x layer x fit-label source, on the train split (against both
                           label sets) and the test split, plus the model's own accuracy rows.

Both stages only read activations, never checkpoints or data, so changing a probe setting reruns
only them (and aggregation and plots). They read a reduced file (``storage.persist: moments|auto``,
:mod:`pipeline.sufficient`) the same way: a layer whose training activations were replaced by
per-class statistics is fitted from them (MASC, VeLPIC, NCM only) and scored on the test split only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from pipeline.activations import ActivationFile
from pipeline.io import (MODEL_LAYER, MODEL_PROBE, accuracy_row, atomic_path, result_frame,
                         write_h5_attrs, write_parquet)
from pipeline.probes import make_probe, probe_from_arrays, probe_to_arrays, setting_id
from pipeline.sufficient import fit_from_moments


def probe_layers(available: list[str], requested: Iterable[str] | None) -> list[str]:
    if requested is None:
        return list(available)
    requested = list(requested)
    missing = [l for l in requested if l not in available]
    if missing:
        raise ValueError(f"probes.layers {missing} were not persisted in the activations; persisted "
                         f"layers: {available} (see activations.layers in the config)")
    return requested


def _group_name(layer: str, probe: str, setting: str, fit_labels: str) -> str:
    # HDF5 names cannot hold '/'; settings are short "k=v,k=v" strings.
    return f"{layer}/{probe}/{setting or 'default'}/{fit_labels}".replace(".", "_")


def fit_subspaces(activation_path: str | Path, out_path: str | Path, *, settings: list[dict],
                  fit_labels: Iterable[str] = ("corrupted", "true"), layers: Iterable[str] | None = None,
                  attrs: dict | None = None) -> Path:
    """Fit every probe setting on every layer and label source; save the fitted state to HDF5."""
    out_path = Path(out_path)
    with ActivationFile(activation_path) as acts, atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
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
                moments = acts.moments(layer, source) if from_moments else None
                for entry in settings:
                    name, params = entry["name"], entry.get("params", {})
                    if from_moments:
                        try:
                            probe = fit_from_moments(name, params, moments)
                        except ValueError as exc:
                            raise ValueError(f"layer {layer!r} of {activation_path}: {exc} (its "
                                             "training activations were not persisted; see "
                                             "storage.persist)") from None
                    else:
                        probe = make_probe(name, **params).fit(X, y)
                    group = out.create_group(_group_name(layer, name, setting_id(name, params), source))
                    group.attrs["probe"] = name
                    group.attrs["params"] = json.dumps(params, sort_keys=True)
                    for array_name, array in probe_to_arrays(probe).items():
                        group.create_dataset(array_name, data=array)
        out.attrs["complete"] = True
    return out_path


def load_fitted(subspace_path: str | Path, layer: str, name: str, params: dict, fit_labels: str):
    """The fitted probe stored for (layer, probe setting, label source)."""
    with h5py.File(subspace_path, "r") as h5:
        group = h5[_group_name(layer, name, setting_id(name, params), fit_labels)]
        arrays = {k: group[k][()] for k in group}
        return probe_from_arrays(name, json.loads(group.attrs["params"]), arrays)


def score_probes(activation_path: str | Path, subspace_path: str | Path, out_path: str | Path, *,
                 run_keys: dict, epoch: int, metadata: dict | None = None) -> Path:
    """Score the fitted probes and the model itself; write rows of the result schema to Parquet."""
    rows: list[dict] = []
    with ActivationFile(activation_path) as acts, h5py.File(subspace_path, "r") as fitted:
        if not fitted.attrs.get("complete", False):
            raise RuntimeError(f"subspace file {subspace_path} is incomplete; delete it and rerun")
        layers = json.loads(fitted.attrs["layers"])
        settings = json.loads(fitted.attrs["settings"])
        fit_sources = json.loads(fitted.attrs["fit_labels"])
        targets = {"train": {"corrupted": acts.labels("train", "corrupted"),
                             "true": acts.labels("train", "true")},
                   "test": {"true": acts.labels("test")}}
        for split, by_target in targets.items():
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
                    probe = load_fitted(subspace_path, layer, name, params, source)
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
