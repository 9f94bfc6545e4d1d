"""Relabel and retrain (the MASC paper): relabel the training set with MASC, keep training on it.

Starting point: the memorized model (a run's final checkpoint) and its saved activations. MASC
(:class:`pipeline.probes.MASC`) fitted on one layer with ``fit_labels`` training labels (corrupted,
or true for the papers' "true-label subspaces") predicts a new label for every image of the
retraining set (the whole training set, or its fit part under the heldout protocols); the model
then continues training from its memorized weights on those labels (fresh optimizer with the
run's hyperparameters, at most ``max_epochs`` epochs, early stopping with ``patience``; the weights
of the best validation epoch are kept, the starting model counting as epoch 0), and its test
accuracy is reported. The layer and the stopping epoch are chosen by a named *protocol*:

``heldout_true`` (default) -- never reads test labels. The training set is split (seeded by the run
    seed) into a fit part (``1 - heldout_fraction``) and a held-out part. MASC is fitted on the fit
    part of every layer; the layer whose MASC is most accurate on the held-out part against the
    held-out part's *true* labels is chosen. The fit part is relabelled and retrained on; early
    stopping uses the held-out part (true labels), which is never trained on. This assumes a small
    trusted (clean) subset of training labels, the usual assumption of noisy-label learning.
``heldout_corrupted`` -- the same with the held-out part's *corrupted* labels, so no true label is
    read at all. Caution: the held-out images were in the memorized model's training set with those
    labels, so late layers, which memorized them, score best; under uniform noise this ranks layers
    by memorization, not generalization. On the embedded default (digits, MLP, final checkpoints at
    50 % / 80 % corruption) it picks fc4 (held-out accuracy 0.98 against the corrupted labels, the
    worst layer on the test set) and early stopping keeps the memorized model (epoch 0), whereas
    ``heldout_true`` and ``authors_test_split`` both pick fc2 (or fc1).
``authors_test_split`` -- what the authors did: MASC is fitted on the whole training set, the
    layer and the stopping epoch are chosen on a random 20 % of the **test** set (true labels), and
    test accuracy is reported on the other 80 % only (``n_samples`` shows it). The whole training
    set is relabelled and retrained on. For comparison with their numbers; it reads test labels.

Relabelling (``relabel``): ``in_sample`` (the papers) -- MASC fitted on the retraining set predicts
the same images (so MASC's own fit points largely keep their corrupted labels: on the default at
50 % corruption, corrupted-label subspaces give labels 55 % correct and the retrained model does
not beat the memorized one); ``cross_fit`` -- each of ``folds`` folds is relabelled by MASC fitted
on the other folds (83 % correct labels there, test accuracy 0.65 -> 0.86).

Rows (tidy result schema; ``epoch`` = the memorized checkpoint retraining started from, ``layer`` =
the chosen layer, ``fit_labels`` = the labels MASC's subspaces were fitted on,
``probe_setting = "protocol=...,relabel=...,variance=..."``):

* ``probe="relabel_retrain"``: the retrained model, split ``test`` (target true; 80 % of the test
  set under ``authors_test_split``) and ``train`` (targets corrupted and true, all training images);
* ``probe="relabel_labels"``: the new labels themselves, split ``train``, against the true and the
  corrupted labels of the retraining set (how clean the relabelling was).

Everything else (per-layer selection scores, the validation curve, the stopping epoch) goes to a
JSON file next to the table.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.artifacts import write_json
from pipeline.core.device import numpy_rng
from pipeline.core.runtime import RunRuntime
from pipeline.core.tables import accuracy_row, result_frame, write_parquet
from pipeline.images.variants import RELABEL_PROTOCOLS
from pipeline.probes import MASC

if TYPE_CHECKING:
    import torch

PROTOCOLS = RELABEL_PROTOCOLS  # the one list, in pipeline.workflow (the rule files read it there)
RELABEL_SCHEMES = ("in_sample", "cross_fit")
RETRAIN_PROBE = "relabel_retrain"
LABELS_PROBE = "relabel_labels"
#: fraction of the test set the authors' protocol selects on (the rest is reported)
AUTHORS_SELECT_FRACTION = 0.2


def relabel_setting(protocol: str, relabel: str, variance) -> str:
    """``probe_setting`` of relabel rows, e.g. ``"protocol=heldout_true,relabel=in_sample,variance=0.99"``."""
    from pipeline.probes import format_value

    return f"protocol={protocol},relabel={relabel},variance={format_value(variance)}"


def split_indices(n: int, fraction: float, seed: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)``: (rest, part) with ``part`` ~ ``fraction * n`` (sorted)."""
    rng = numpy_rng(seed, salt)
    perm = rng.permutation(n)
    k = int(round(fraction * n))
    if not 0 < k < n:
        raise ValueError(f"a {fraction} split of {n} samples leaves an empty part")
    return np.sort(perm[k:]), np.sort(perm[:k])


def masc_scores(train_acts: Mapping[str, np.ndarray], fit_idx: np.ndarray | None, y_fit: np.ndarray,
                eval_acts: Mapping[str, np.ndarray], y_eval: np.ndarray, *, variance) -> dict[str, float]:
    """Accuracy of MASC per layer: fitted on ``train_acts[layer][fit_idx]``, scored on ``eval_acts``."""
    scores = {}
    for layer, X in train_acts.items():
        Xf = X if fit_idx is None else X[fit_idx]
        scores[layer] = float(MASC(variance).fit(Xf, y_fit).score(eval_acts[layer], y_eval))
    return scores


def choose(scores: Mapping[str, float]) -> str:
    """The best-scoring layer (the earliest one on ties; ``scores`` is in forward order)."""
    best = max(scores.values())
    return next(layer for layer, s in scores.items() if s == best)


def relabel_set(X: np.ndarray, y: np.ndarray, *, variance, scheme: str, folds: int, seed: int) -> np.ndarray:
    """New labels for the rows of ``X`` from MASC fitted on ``(X, y)`` (in sample or cross-fitted)."""
    if scheme == "in_sample":
        return MASC(variance).fit(X, y).predict(X)
    if scheme != "cross_fit":
        raise ValueError(f"relabel must be one of {list(RELABEL_SCHEMES)}; got {scheme!r}")
    fold = numpy_rng(seed, 7).permutation(X.shape[0]) % folds
    out = np.empty(X.shape[0], dtype=np.int64)
    for k in range(folds):
        held = fold == k
        out[held] = MASC(variance).fit(X[~held], y[~held]).predict(X[held])
    return out


@dataclass
class RetrainResult:
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def retrain(model: torch.nn.Module, x: torch.Tensor, y: np.ndarray, val_x: torch.Tensor, val_y: np.ndarray,
            transform, *, hp: dict, max_epochs: int, patience: int, seed: int, epoch_offset: int,
            device: torch.device) -> RetrainResult:
    """Continue training ``model`` (in place) on ``(x, y)``; keep the best epoch by accuracy on
    ``(val_x, val_y)`` (the starting weights are epoch 0); stop after ``patience`` epochs without
    improvement. Epoch ``i`` shuffles with the training seed of epoch ``epoch_offset + i``."""
    import torch

    from pipeline.core.runtime import predict
    from pipeline.core.training import make_optimizer, train_one_epoch

    optimizer = make_optimizer(model, hp)
    y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    if device.type == "cuda":
        x, y_t, val_x = x.to(device), y_t.to(device), val_x.to(device)

    def val_acc() -> float:
        return float((predict(model, val_x, transform, device=device) == val_y).mean())

    best = val_acc()
    history = [{"epoch": 0, "loss": None, "val_acc": best}]
    best_epoch, best_state, waited = 0, copy.deepcopy(model.state_dict()), 0
    for i in range(1, max_epochs + 1):
        loss = train_one_epoch(model, optimizer, x, y_t, transform, batch_size=hp["batch_size"],
                               seed=seed, epoch=epoch_offset + i, device=device)
        acc = val_acc()
        history.append({"epoch": i, "loss": loss, "val_acc": acc})
        if acc > best:
            best, best_epoch, best_state, waited = acc, i, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    return RetrainResult(best_epoch, history)


@dataclass
class RelabelResult:
    """What one (protocol, label source) produced; ``report_idx`` indexes the test set."""

    protocol: str
    fit_labels: str
    layer: str
    scores: dict
    retrain_idx: np.ndarray
    new_labels: np.ndarray
    retrain: RetrainResult
    report_idx: np.ndarray | None
    model: torch.nn.Module

    def details(self) -> dict:
        return {"protocol": self.protocol, "fit_labels": self.fit_labels, "layer": self.layer,
                "selection_scores": self.scores, "n_retrain": int(self.retrain_idx.size),
                "best_epoch": self.retrain.best_epoch, "history": self.retrain.history,
                "n_report": None if self.report_idx is None else int(self.report_idx.size)}


def relabel_and_retrain(model: torch.nn.Module, x_train: torch.Tensor, x_test: torch.Tensor, labels,
                        train_acts: Mapping[str, np.ndarray], test_acts: Mapping[str, np.ndarray] | None,
                        transform, *, protocol: str, fit_labels: str, rcfg: dict, hp: dict, seed: int,
                        start_epoch: int, device: torch.device) -> RelabelResult:
    """Choose the layer, relabel, retrain a copy of ``model``; no test accuracy is computed here.

    ``labels`` needs ``corrupted`` and ``true``; ``labels.test`` and ``test_acts`` are read only
    by the ``authors_test_split`` protocol (the heldout protocols never touch them).
    """
    import torch

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}; got {protocol!r}")
    variance = rcfg["variance"]
    y_source = labels.corrupted if fit_labels == "corrupted" else labels.true
    n = y_source.shape[0]
    if protocol.startswith("heldout_"):
        retrain_idx, held_idx = split_indices(n, rcfg["heldout_fraction"], seed, salt=1)
        y_select = (labels.true if protocol == "heldout_true" else labels.corrupted)[held_idx]
        held_acts = {layer: X[held_idx] for layer, X in train_acts.items()}
        scores = masc_scores(train_acts, retrain_idx, y_source[retrain_idx], held_acts, y_select,
                             variance=variance)
        val_x, val_y, report_idx = x_train[torch.from_numpy(held_idx)], y_select, None
    else:
        if test_acts is None:
            raise ValueError("the authors_test_split protocol needs the test activations")
        report_idx, select_idx = split_indices(len(x_test), AUTHORS_SELECT_FRACTION, seed, salt=2)
        y_select = np.asarray(labels.test)[select_idx]
        sel_acts = {layer: X[select_idx] for layer, X in test_acts.items()}
        retrain_idx = np.arange(n)
        scores = masc_scores(train_acts, None, y_source, sel_acts, y_select, variance=variance)
        val_x, val_y = x_test[torch.from_numpy(select_idx)], y_select
    layer = choose(scores)
    new_labels = relabel_set(train_acts[layer][retrain_idx], y_source[retrain_idx], variance=variance,
                             scheme=rcfg["relabel"], folds=rcfg["folds"], seed=seed)
    retrained = copy.deepcopy(model)
    result = retrain(retrained, x_train[torch.from_numpy(retrain_idx)], new_labels, val_x, val_y, transform,
                     hp=hp, max_epochs=rcfg["max_epochs"], patience=rcfg["patience"], seed=seed,
                     epoch_offset=start_epoch, device=device)
    return RelabelResult(protocol, fit_labels, layer, scores, retrain_idx, new_labels, result,
                         report_idx, retrained)


def relabel_rows(result: RelabelResult, x_train: torch.Tensor, x_test: torch.Tensor, labels, transform, *,
                 run_keys: dict, epoch: int, setting: str, device: torch.device) -> list[dict]:
    """Result rows of one :class:`RelabelResult` (this is where test labels are read)."""
    from pipeline.core.runtime import predict

    common = dict(epoch=epoch, layer=result.layer, probe_setting=setting, fit_labels=result.fit_labels)
    rows = []
    test_pred = predict(result.model, x_test, transform, device=device)
    test_y = np.asarray(labels.test)
    if result.report_idx is not None:
        test_pred, test_y = test_pred[result.report_idx], test_y[result.report_idx]
    rows.append(accuracy_row(run_keys, probe=RETRAIN_PROBE, split="test", target="true",
                             predictions=test_pred, labels=test_y, **common))
    train_pred = predict(result.model, x_train, transform, device=device)
    for target, y in (("corrupted", labels.corrupted), ("true", labels.true)):
        rows.append(accuracy_row(run_keys, probe=RETRAIN_PROBE, split="train", target=target,
                                 predictions=train_pred, labels=y, **common))
        rows.append(accuracy_row(run_keys, probe=LABELS_PROBE, split="train", target=target,
                                 predictions=result.new_labels, labels=y[result.retrain_idx], **common))
    return rows


def relabel_run(rt: RunRuntime, protocol: str, activations: str | Path, out: str | Path,
                details_out: str | Path, *, metadata: dict | None = None) -> list[dict]:
    """Relabel-and-retrain the final checkpoint of the run of ``rt`` under ``protocol``, every label source."""
    from pipeline.core.activations import ActivationFile
    from pipeline.core.training import hyperparameters
    from pipeline.images.transfer.editing import label_sources

    config, run, labels, device = rt.config, rt.run, rt.labels, rt.device
    rcfg = config["transfer"]["relabel_retrain"]
    epoch = int(rt.index["final_epoch"])
    model = rt.model_at(epoch).train()  # retraining starts from the memorized weights
    transform, x_train, x_test = rt.transform, rt.x_train, rt.x_test
    layers = rcfg["layers"]
    with ActivationFile(activations) as acts:
        layers = [layer for layer in acts.layers if layers is None or layer in layers]
        if not layers:
            raise ValueError(f"none of transfer.relabel_retrain.layers {rcfg['layers']} is in {activations} "
                             f"(persisted layers: {acts.layers})")
        train_acts = {layer: acts.read(layer, "train") for layer in layers}
        test_acts = ({layer: acts.read(layer, "test") for layer in layers}
                     if protocol == "authors_test_split" else None)
    hp = hyperparameters(config, run.model, run.dataset)
    setting = relabel_setting(protocol, rcfg["relabel"], rcfg["variance"])
    rows, details = [], []
    for source in label_sources(rcfg["fit_labels"]):
        result = relabel_and_retrain(model, x_train, x_test, labels, train_acts, test_acts, transform,
                                     protocol=protocol, fit_labels=source, rcfg=rcfg, hp=hp, seed=run.seed,
                                     start_epoch=epoch, device=device)
        new_rows = relabel_rows(result, x_train, x_test, labels, transform, run_keys=run.keys(),
                                epoch=epoch, setting=setting, device=device)
        rows += new_rows
        details.append(result.details())
        print(f"{run.path} {protocol} ({source} subspaces): layer {result.layer}, best retrain epoch "
              f"{result.retrain.best_epoch}, test acc {new_rows[0]['accuracy']:.3f}", flush=True)
    meta = {**(metadata or {}), "relabel": json.dumps(details, default=float)}
    write_parquet(result_frame(rows), out, meta)
    write_json(details_out, {"run": run.keys(), "epoch": epoch, "probe_setting": setting, "results": details})
    return rows
