"""Weight editing (section 8): the model's pre-softmax weights replaced by VeLPIC class vectors.

VeLPIC (:class:`pipeline.probes.VeLPIC`) fitted on the model's last probe layer
(:attr:`pipeline.core.models.ProbedModel.last_probe_layer`, the input of
:attr:`~pipeline.core.models.ProbedModel.classifier`) gives one unit vector ``v_c`` per class. The
edited model has ``classifier.weight[c] = v_c`` and, in the papers' setting, all classifier biases
set to zero (``bias="zero"``); its logits are then ``v_c . h(x)``, exactly VeLPIC's decision
function on that layer, so the edited model predicts what VeLPIC predicts. ``bias="keep"`` keeps
the trained biases (a second, labelled setting; for a bias-free classifier such as the CNN's the
two settings coincide). A class absent from the fitting labels gets a zero weight row.

Stage (one job per run, all of its checkpoints): :func:`edit_run` writes rows of the tidy result
schema with ``probe="edited_model"``, ``layer="output"``, ``probe_setting="bias=zero,sign=..."`` /
``"bias=keep,sign=..."`` (sorted ``key=value`` like :func:`pipeline.probes.setting_id`),
``fit_labels`` the training labels VeLPIC was fitted on (corrupted or true), on the train split
(against corrupted and true labels) and the test split (true labels).

The edited model's predictions are computed as ``edited.classifier(flatten(h(x)))`` with ``h(x)``
from one forward pass of the checkpoint (the classifier is the model's last operation and its input
does not depend on it, so this is the edited model's own forward pass without recomputing the body
once per setting); :func:`edit_run` checks that on the first batch against a full forward pass of
the edited model.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.runtime import RunRuntime, layer_outputs, predict
from pipeline.core.tables import MODEL_LAYER, accuracy_row, result_frame, write_parquet
from pipeline.probes import VeLPIC

EDIT_PROBE = "edited_model"
BIAS_SETTINGS = ("zero", "keep")


def label_sources(values: Iterable) -> list[str]:
    """Training-label sources as strings (YAML reads an unquoted ``true`` as a boolean)."""
    return ["true" if v is True else str(v) for v in values]


def edit_setting(bias: str, sign: str) -> str:
    """``probe_setting`` of an edited-model row, e.g. ``"bias=zero,sign=class_mean"``."""
    if bias not in BIAS_SETTINGS:
        raise ValueError(f"bias must be one of {list(BIAS_SETTINGS)}; got {bias!r}")
    return f"bias={bias},sign={sign}"


def fit_class_vectors(features: np.ndarray, labels: np.ndarray, *, sign: str = "class_mean") -> VeLPIC:
    """VeLPIC fitted on last-layer ``features`` with ``labels``."""
    return VeLPIC(sign=sign).fit(features, labels)


def edit_classifier(model: nn.Module, probe: VeLPIC, *, bias: str = "zero") -> nn.Module:
    """Replace ``model.classifier``'s weights with ``probe``'s class vectors, in place.

    Row ``c`` of the new weight matrix is the class vector of class ``c`` (zero for a class the
    probe never saw). ``bias="zero"`` zeroes the classifier's bias (the papers); ``"keep"`` leaves it.
    """
    if bias not in BIAS_SETTINGS:
        raise ValueError(f"bias must be one of {list(BIAS_SETTINGS)}; got {bias!r}")
    layer: nn.Linear = model.classifier
    num_classes, dim = layer.weight.shape
    vectors = np.asarray(probe.class_vectors_)
    if vectors.shape[1] != dim:
        raise ValueError(f"VeLPIC was fitted on {vectors.shape[1]} features but the classifier takes {dim}; "
                         f"fit it on the layer {getattr(model, 'last_probe_layer', '?')!r}")
    classes = np.asarray(probe.classes_, dtype=np.int64)
    if classes.min() < 0 or classes.max() >= num_classes:
        raise ValueError(f"VeLPIC classes {classes.tolist()} do not fit a {num_classes}-class classifier")
    weight = torch.zeros_like(layer.weight)
    weight[torch.from_numpy(classes).to(weight.device)] = torch.from_numpy(vectors).to(weight)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias == "zero" and layer.bias is not None:
            layer.bias.zero_()
    return model


def edited_model(model: nn.Module, probe: VeLPIC, *, bias: str = "zero") -> nn.Module:
    """A copy of ``model`` with its classifier edited (the original is untouched)."""
    return edit_classifier(copy.deepcopy(model), probe, bias=bias)


@torch.no_grad()
def classifier_predictions(classifier: nn.Module, features: np.ndarray, *, batch_size: int = 4096,
                           device: torch.device | None = None) -> np.ndarray:
    """argmax of ``classifier(features)`` (features: flattened last-layer activations)."""
    device = device or next(classifier.parameters()).device
    out = []
    for start in range(0, features.shape[0], batch_size):
        fb = torch.from_numpy(features[start:start + batch_size]).to(device)
        out.append(classifier(fb).argmax(1).cpu())
    return torch.cat(out).numpy()


def edit_checkpoint_rows(model: nn.Module, x_train: torch.Tensor, x_test: torch.Tensor, labels,
                         transform, *, run_keys: dict, epoch: int, biases: Iterable[str],
                         fit_labels: Iterable[str], sign: str, batch_size: int = 512,
                         check_rows: int = 256) -> list[dict]:
    """Result rows of the edited versions of ``model`` (one checkpoint), all settings."""
    layer = model.last_probe_layer
    features = {"train": layer_outputs(model, x_train, transform, layer, batch_size=batch_size),
                "test": layer_outputs(model, x_test, transform, layer, batch_size=batch_size)}
    targets = {"train": {"corrupted": labels.corrupted, "true": labels.true},
               "test": {"true": labels.test}}
    rows = []
    for source in fit_labels:
        y_fit = labels.corrupted if source == "corrupted" else labels.true
        probe = fit_class_vectors(features["train"], y_fit, sign=sign)
        for bias in biases:
            edited = edited_model(model, probe, bias=bias)
            if check_rows:
                _check_against_forward(edited, x_test[:check_rows], transform, features["test"][:check_rows],
                                       batch_size)
            for split, by_target in targets.items():
                preds = classifier_predictions(edited.classifier, features[split])
                for target, y in by_target.items():
                    rows.append(accuracy_row(run_keys, epoch=epoch, layer=MODEL_LAYER, probe=EDIT_PROBE,
                                             probe_setting=edit_setting(bias, sign), fit_labels=source,
                                             split=split, target=target, predictions=preds, labels=y))
    return rows


def _check_against_forward(edited: nn.Module, x: torch.Tensor, transform, features: np.ndarray,
                           batch_size: int) -> None:
    full = predict(edited, x, transform, batch_size=batch_size)
    short = classifier_predictions(edited.classifier, features)
    if not np.array_equal(full, short):
        raise RuntimeError("edited model: classifier(last probe layer) disagrees with the full forward "
                           "pass; the model's classifier is not its last operation")


def edit_run(rt: RunRuntime, out: str | Path, *, metadata: dict | None = None,
             epochs: Iterable[int] | None = None) -> Path:
    """Edit the checkpoints of the run of ``rt`` and write the rows.

    ``epochs`` defaults to the probed ones (:attr:`pipeline.core.runtime.RunRuntime.probed_epochs`), so
    the edited model has a row wherever the unedited model has one.
    """
    ecfg = rt.config["transfer"]["edited_model"]
    epochs = sorted(rt.probed_epochs if epochs is None else epochs)
    rows = []
    for epoch in epochs:
        rows += edit_checkpoint_rows(rt.model_at(epoch), rt.x_train, rt.x_test, rt.labels, rt.transform,
                                     run_keys=rt.run.keys(), epoch=epoch, biases=ecfg["bias"],
                                     fit_labels=label_sources(ecfg["fit_labels"]), sign=ecfg["sign"],
                                     batch_size=rt.config["activations"]["batch_size"])
    write_parquet(result_frame(rows), out, {**(metadata or {}), "epochs": json.dumps(epochs)})
    return Path(out)
