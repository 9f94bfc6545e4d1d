"""Detection on one activation file: every detector of ``labels.detectors`` (and cleanlab on the
layer) on every chosen layer, written as the detection and label_scores tables.

Two entries: :func:`detect_run` (a run of the workflow: its activation file at one epoch and its
``labels.npz``) and :func:`detect_file` (any activation file in the pipeline's format, with its own
labels or a labels file given: no training, no run folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import ConfigError, Run
from pipeline.labels.detect import Detection, check_detection_labels, cleanlab_layer, crossfit_probe

__all__ = ["GivenLabels", "detection_layers", "detect_layers", "read_given_labels", "detect_run",
           "detect_file", "file_run"]


@dataclass
class GivenLabels:
    """The labels detection judges: ``given`` (what training used) and ``true`` (None where the
    truth is not known)."""

    given: np.ndarray
    true: np.ndarray | None

    @property
    def wrong(self) -> np.ndarray | None:
        return None if self.true is None else self.given != self.true


def _paper_layers(model: str) -> list[str]:
    """The layers the papers report for a model of the registry (none for another model)."""
    from pipeline.core.models import MODELS

    spec = MODELS.get(model)
    return list(getattr(getattr(spec, "build", None), "paper_layers", ()) or ())


def detection_layers(acts, requested: list[str] | None, model: str | None) -> list[str]:
    """The layers detection reads: ``requested`` (each must be stored with its training
    activations), else the model's paper layers that the file holds, else every layer it holds."""
    stored = [layer for layer in acts.layers if acts.has(layer, "train")]
    if requested is not None:
        missing = [layer for layer in requested if layer not in stored]
        if missing:
            raise ConfigError(f"labels.layers {missing} are not stored with their training activations in "
                              f"{acts.path}; layers there: {stored} (see activations.layers and "
                              "storage.persist in the config)")
        return list(requested)
    if not stored:
        raise ConfigError(f"{acts.path} holds no layer's training activations (only per-class statistics: "
                          "storage.persist); detection needs the activations")
    paper = _paper_layers(model) if model else []
    chosen = [layer for layer in paper if layer in stored]
    return chosen or stored


def detect_layers(acts, labels: GivenLabels, layers: list[str], section: dict, *, seed: int,
                  num_classes: int | None = None, echo=print) -> list[tuple[str, list[Detection]]]:
    """``[(layer, detections)]``: every probe detector of ``section["detectors"]`` and, if
    ``section["cleanlab"]["layer"]``, cleanlab on the layer, each cross-fitted over
    ``section["folds"]`` folds split by ``seed``."""
    from pipeline.probes import setting_id

    folds = int(section["folds"])
    detectors = [(d["name"], dict(d.get("params") or {})) for d in section["detectors"]]
    for name, params in detectors:  # an unknown probe or parameter stops here, before any fit
        try:
            setting_id(name, params)
        except ValueError as exc:
            raise ConfigError(f"labels.detectors: {exc}") from None
    try:  # labels that cannot be cross-fitted stop before any layer is read
        check_detection_labels(labels.given, folds, num_classes)
    except ValueError as exc:
        raise ConfigError(f"{acts.path}: {exc}") from None
    out = []
    for layer in layers:
        X = acts.read(layer, "train")
        if X.dtype == np.float16:
            X = X.astype(np.float32)
        if X.shape[0] != len(labels.given):
            raise ConfigError(f"{acts.path}: layer {layer!r} has {X.shape[0]} training rows but there are "
                              f"{len(labels.given)} given labels")
        X = X.reshape(X.shape[0], -1)
        found = [crossfit_probe(X, labels.given, name, params, folds=folds, seed=seed, num_classes=num_classes)
                 for name, params in detectors]
        if section["cleanlab"]["layer"]:
            found.append(cleanlab_layer(X, labels.given, folds=folds, seed=seed, num_classes=num_classes))
        for det in found:
            auroc = ""
            if labels.true is not None:
                from pipeline.labels.detect import detection_metrics

                auroc = f", AUROC {detection_metrics(det, labels.wrong)['auroc']:.3f}"
            echo(f"  {layer}: {det.detector} {det.setting or '-'}: {int(det.flagged.sum())} flagged, held-out "
                 f"accuracy {det.heldout_accuracy:.3f}{auroc} ({det.wall_seconds:.1f} s)")
        out.append((layer, found))
    return out


def _write(config: dict, run: Run, epoch: int, results, labels: GivenLabels, out, scores, **extra) -> None:
    import pandas as pd

    from pipeline.core.tables import provenance, write_table
    from pipeline.labels.tables import DETECTION, LABEL_SCORES, detection_frame, scores_frame

    detection = pd.concat([detection_frame(run, epoch, layer, dets, labels.wrong) for layer, dets in results],
                          ignore_index=True)
    label_scores = pd.concat([scores_frame(run, epoch, layer, dets, labels.given, labels.wrong)
                              for layer, dets in results], ignore_index=True)
    meta = provenance(config, sections=("labels",), run=run.keys(), epoch=int(epoch), **extra)
    write_table(DETECTION.frame(detection), out, DETECTION, meta)
    write_table(LABEL_SCORES.frame(label_scores), scores, LABEL_SCORES, meta)


def detect_run(config: dict, run: Run, epoch: int, activations: str | Path, labels_path: str | Path,
               out: str | Path, scores: str | Path) -> None:
    """Detection on one run's activation file at ``epoch`` (``config`` with the schema's defaults)."""
    from pipeline.core.activations import ActivationFile
    from pipeline.core.errors import ArtifactError
    from pipeline.core.labels import load_labels

    run_labels = load_labels(labels_path)
    truth_known = bool(getattr(run_labels, "truth_known", True))
    section = config["labels"]
    with ActivationFile(activations) as acts:
        given = acts.labels("train", "corrupted")
        if not np.array_equal(given, run_labels.corrupted):
            what = (f"{int((given != run_labels.corrupted).sum())} of {len(given)} differ"
                    if len(given) == len(run_labels.corrupted) else f"{len(given)} vs {len(run_labels.corrupted)}")
            raise ArtifactError(f"activation file {activations} holds other training labels than {labels_path} "
                                f"({what}): they belong to different runs; {ActivationFile.REMEDY}")
        labels = GivenLabels(run_labels.corrupted.astype(np.int64),
                             run_labels.true.astype(np.int64) if truth_known else None)
        layers = detection_layers(acts, section["layers"], run.model)
        print(f"{run.path} epoch {epoch}: detection on {len(labels.given)} training labels, layers {layers}")
        results = detect_layers(acts, labels, layers, section, seed=run.seed, num_classes=run_labels.num_classes)
    _write(config, run, epoch, results, labels, out, scores, activations=str(activations))
    print(f"-> {out}, {scores}")


# ----------------------------------------------------------------------------- a file alone

def read_given_labels(path: str | Path | None, acts) -> GivenLabels:
    """The labels of :func:`detect_file`: the activation file's own (``labels/train_corrupted``
    given, ``labels/train_true`` the truth, unless the file says ``truth_known`` is false), or
    ``path``: a pipeline ``labels.npz`` (``corrupted``, ``true``), an ``.npz`` with ``y`` (given)
    and optional ``y_true``, or an ``.npy`` of given labels (truth unknown)."""
    from pipeline.core.errors import ArtifactError

    if path is None:
        given = acts.labels("train", "corrupted").astype(np.int64)
        known = bool(json.loads(str(acts.attrs().get("truth_known", "true")).lower()))
        return GivenLabels(given, acts.labels("train", "true").astype(np.int64) if known else None)
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"labels file {path} does not exist")
    try:
        if path.suffix == ".npy":
            given, true = np.load(path, allow_pickle=False), None
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "corrupted" in z:  # the pipeline's labels.npz
                    known = bool(z["truth_known"]) if "truth_known" in z else True
                    given, true = z["corrupted"], (z["true"] if known else None)
                elif "y" in z:
                    given, true = z["y"], (z["y_true"] if "y_true" in z else None)
                else:
                    raise ArtifactError(f"labels file {path} holds {sorted(z.files)}; expected 'y' (given "
                                        "labels, with optional 'y_true') or a pipeline labels.npz "
                                        "('corrupted', 'true')")
        else:
            raise ArtifactError(f"labels file {path}: expected .npy (given labels) or .npz, got {path.suffix!r}")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"labels file {path} cannot be read ({exc})") from None
    for name, values in (("given", given), ("true", true)):
        if values is None:
            continue
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise ArtifactError(f"labels file {path}: the {name} labels must be a 1-D integer array, got "
                                f"{values.dtype} {values.shape}")
        if values.min() < 0 or values.max() >= acts.num_classes:
            raise ArtifactError(f"labels file {path}: the {name} labels span [{values.min()}, {values.max()}], "
                                f"outside the {acts.num_classes} classes of {acts.path}")
    n = int(acts.h5["labels/train_corrupted"].shape[0])
    if len(given) != n or (true is not None and len(true) != len(given)):
        raise ArtifactError(f"labels file {path} has {len(given)} given"
                            + ("" if true is None else f" and {len(true)} true") + f" labels but {acts.path} "
                            f"has {n} training rows")
    return GivenLabels(given.astype(np.int64), None if true is None else true.astype(np.int64))


def file_run(acts, seed: int) -> Run:
    """The run keys of an activation file's tables: those it records (an extracted file of the
    pipeline), else ``dataset`` = the file's stem and ``model`` = ``external``."""
    recorded = acts.attrs().get("run")
    if recorded:
        try:
            keys = json.loads(recorded)
            return Run(keys["dataset"], keys["model"], float(keys["corruption"]), int(keys["seed"]),
                       keys.get("variant", "base"))
        except (ValueError, KeyError, TypeError):
            pass
    return Run(Path(acts.path).stem, "external", 0.0, int(seed))


def detect_file(config: dict, activations: str | Path, out_dir: str | Path, labels_path: str | Path | None,
                layers: list[str] | None, seed: int) -> dict[str, Path]:
    """Detection on an activation file alone; writes ``detection.parquet``, ``label_scores.parquet``
    and ``suspects.csv`` into ``out_dir``. Returns their paths."""
    from pipeline.core.activations import ActivationFile
    from pipeline.core.tables import read_table
    from pipeline.labels.suspects import suspects_frame, write_suspects
    from pipeline.labels.tables import DETECTION, LABEL_SCORES

    section = config["labels"]
    out_dir = Path(out_dir)
    paths = {"detection": out_dir / "detection.parquet", "scores": out_dir / "label_scores.parquet",
             "suspects": out_dir / "suspects.csv"}
    with ActivationFile(activations) as acts:
        labels = read_given_labels(labels_path, acts)
        run = file_run(acts, seed)
        epoch = int(acts.attrs().get("epoch", 0))
        chosen = detection_layers(acts, layers if layers else section["layers"],
                                  run.model if run.model != "external" else None)
        print(f"{activations}: detection on {len(labels.given)} training labels "
              f"({'truth known' if labels.true is not None else 'truth unknown'}), layers {chosen}")
        results = detect_layers(acts, labels, chosen, section, seed=seed, num_classes=acts.num_classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(config, run, epoch, results, labels, paths["detection"], paths["scores"],
           activations=str(activations), labels_file=str(labels_path) if labels_path else "")
    table = suspects_frame(read_table(paths["detection"], DETECTION), read_table(paths["scores"], LABEL_SCORES),
                           top=section["suspects"]["top"])
    write_suspects(table, paths["suspects"])
    print(f"-> {paths['detection']}, {paths['scores']}, {paths['suspects']} ({len(table)} suspects)")
    return paths
