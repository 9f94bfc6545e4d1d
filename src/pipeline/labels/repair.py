"""Repair: retrain from scratch after relabeling or removing the examples a detector flagged.

For one run, from its detection tables (every probed epoch and layer, and cleanlab's network route
when it ran), two detectors are chosen (:func:`choose_detectors`):

* the best **probe** detector (MASC, VeLPIC, NCM, logistic regression, ... with its epoch and
  layer), and
* the best **cleanlab** detection (its layer route over every epoch and layer, and its network
  route, out-of-fold probabilities of the network trained per fold),

each by ``labels.repair.select``:

``heldout`` (default) -- the highest held-out accuracy against the *given* labels, at the detected
    epoch nearest the peak of the run's test accuracy (its training log; every epoch without one).
    It needs no truth about the training labels: before the network memorizes, a cross-fitted
    detector cannot predict the wrong labels of examples it was not fitted on (they are random), so
    the more of the given labels it agrees with, the more of the true classes it recovers. After
    memorization that fails: the layers of the network, which was trained on every example, carry
    the memorized given labels, and a probe fitted on the other folds reads them off (on digits at
    50 % the held-out accuracy of logistic regression on fc2 rises from 0.35 to 0.85 while its
    recall falls), so the held-out accuracy would pick the detectors that memorized most; hence the
    early peak, where the suspects list (pipeline.labels.suspects) reads too. Cleanlab's network
    route (trained per fold, no epoch of the run) is always a candidate. Ties go to the earliest
    epoch, then the table's order.
``oracle`` -- the highest AUROC of the scores against the truth: an upper bound on what selection
    can do. It needs the truth; a run without it is refused before any training.

Then, for each chosen detector and each mode of ``labels.repair.modes``, the network is trained
from scratch (:func:`pipeline.labels.retrain.train_from_scratch`: the run's own training):

``relabel`` -- the flagged examples get the detector's suggested label;
``remove``  -- the flagged examples are left out (cleanlab's prune-and-retrain).

Beside them: ``mode="given"`` (the given labels: the like-for-like baseline; a retraining on them
reproduces the run's own training epoch for epoch, so when the run's training log is given its rows
are read from it instead of training again) and, where the truth is known, ``mode="true"`` (the
true labels, trained with the same function: an upper bound).

Each retraining can be made alone (``only``: ``given``, ``true``, ``probe_relabel``, ...,
:func:`pipeline.labels.paths.retrain_ids`), as the workflow does, one job each, in parallel;
:func:`gather_repair` joins the parts into the run's table.

The ``repair`` table (:data:`REPAIR`) has one row per retraining; a JSON file beside it says what
was chosen among which candidates and why, and each retraining's test accuracy per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.core.tables import RUN_KEY_COLUMNS, TableSchema
from pipeline.labels.paths import REPAIR_BASELINES, REPAIR_KINDS, REPAIR_MODES, retrain_ids

if TYPE_CHECKING:
    from pipeline.core.runtime import RunRuntime

MODES = REPAIR_MODES
SELECTIONS = ("heldout", "oracle")
#: the detector name of cleanlab's rows in the detection tables (pipeline.labels.detect.CLEANLAB)
CLEANLAB = "cleanlab"
#: ``detector`` / ``setting`` / ``layer`` of the baseline rows (given and true labels)
NONE = "none"
#: the layer of cleanlab's network-route rows (pipeline.labels.retrain)
NETWORK_LAYER = "network"

REPAIR_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS,
    "detector": "string",          # the chosen detector ("masc", ..., "cleanlab"), "none" for a baseline
    "setting": "string",           # its setting ("variance=0.99", "layer", "network", ...)
    "epoch": "Int64",              # the epoch it read (missing for a baseline)
    "layer": "string",             # the layer it read
    "mode": "string",              # relabel | remove | given | true
    "chosen_as": "string",         # probe | cleanlab | baseline
    "select": "string",            # heldout | oracle: how the detector was chosen
    "heldout_accuracy": "float64",  # the chosen detector's held-out accuracy on the given labels
    "auroc": "float64",            # its AUROC against the truth (missing without the truth)
    "n_train": "int64",            # training examples used
    "n_flagged": "int64",          # examples the detector flagged
    "n_changed": "int64",          # training labels that differ from the given ones
    "label_accuracy_after": "float64",  # training labels used that are correct (missing without the truth)
    "test_accuracy": "float64",    # the retrained network at its final epoch
    "best_test_accuracy": "float64",  # its best epoch on the test set (an oracle stopping point)
    "epochs_trained": "int64",
    "stop_reason": "string",
    "cpu_seconds": "float64",
    "wall_seconds": "float64",
}

REPAIR = TableSchema("repair", REPAIR_COLUMNS, (*RUN_KEY_COLUMNS, "detector", "setting", "epoch", "layer", "mode"),
                     # cpu_seconds: missing for the given-label row read from the run's own log
                     nullable=frozenset({"epoch", "heldout_accuracy", "auroc", "label_accuracy_after",
                                         "cpu_seconds"}))


@dataclass(frozen=True)
class Choice:
    """One chosen detection: where it read, how it scored, and why it was chosen."""

    chosen_as: str      # "probe" or "cleanlab"
    detector: str
    setting: str
    epoch: int
    layer: str
    heldout_accuracy: float
    auroc: float
    reason: str

    def key(self) -> dict:
        return {"detector": self.detector, "setting": self.setting, "epoch": self.epoch, "layer": self.layer}


def _truth_known(detection: pd.DataFrame) -> bool:
    return bool(len(detection)) and bool(detection["truth_known"].all())


def check_select(select: str, detection: pd.DataFrame, where: str) -> None:
    """Refuse a selection that cannot be made on ``detection`` (before any training)."""
    if select not in SELECTIONS:
        raise ValueError(f"labels.repair.select must be one of {list(SELECTIONS)}; got {select!r}")
    if select == "oracle":
        if not _truth_known(detection):
            raise ValueError(f"labels.repair.select: oracle ranks detectors by their AUROC against the true "
                             f"labels, and {where} has none (the data gave no true labels); use "
                             f"select: heldout, which needs no truth")
        if detection["auroc"].isna().all():
            raise ValueError(f"labels.repair.select: oracle needs an AUROC, and every AUROC of {where} is "
                             f"undefined (no given label is wrong, or all are); use select: heldout")


def _best(candidates: pd.DataFrame, select: str) -> pd.Series:
    """The best row: highest ``heldout_accuracy`` or ``auroc``; ties to the earliest epoch, then the
    table's order (a stable sort)."""
    column = "heldout_accuracy" if select == "heldout" else "auroc"
    ranked = candidates.assign(_order=np.arange(len(candidates)))
    ranked = ranked[ranked[column].notna()]
    ranked = ranked.sort_values([column, "epoch", "_order"], ascending=[False, True, True], kind="stable")
    return ranked.iloc[0]


def near_epoch(rows: pd.DataFrame, epoch: int | None) -> pd.DataFrame:
    """``rows`` at their detected epoch nearest ``epoch`` (the earlier one on a tie); the network
    route's rows (layer ``network``: no epoch of the run) are kept; all rows when ``epoch`` is None."""
    if epoch is None or not len(rows):
        return rows
    network = rows["layer"] == NETWORK_LAYER
    epochs = np.sort(rows.loc[~network, "epoch"].astype(int).unique())
    if not epochs.size:
        return rows
    nearest = int(epochs[np.argmin(np.abs(epochs - int(epoch)))])
    return rows[network | (rows["epoch"].astype("Int64") == nearest)]


def choose_detectors(detection: pd.DataFrame, *, select: str, where: str = "the run",
                     peak_epoch: int | None = None) -> dict[str, Choice]:
    """``{"probe": Choice, "cleanlab": Choice}`` from a run's detection rows (either is absent when
    the table has no row of its kind); see the module docstring for ``select`` (``heldout`` reads
    near ``peak_epoch``, the run's test-accuracy peak, when given)."""
    check_select(select, detection, where)
    column = "heldout_accuracy" if select == "heldout" else "auroc"
    chosen = {}
    for kind, rows in (("probe", detection[detection["detector"] != CLEANLAB]),
                       ("cleanlab", detection[detection["detector"] == CLEANLAB])):
        if select == "heldout":
            rows = near_epoch(rows, peak_epoch)
        if not len(rows):
            continue
        best = _best(rows, select)
        reason = (f"highest {column} ({best[column]:.4f}) of {len(rows)} {kind} detections "
                  f"(detector x setting x epoch x layer)")
        chosen[kind] = Choice(kind, str(best["detector"]), str(best["setting"]), int(best["epoch"]),
                              str(best["layer"]), float(best["heldout_accuracy"]),
                              float(best["auroc"]) if pd.notna(best["auroc"]) else float("nan"), reason)
    if not chosen:
        raise ValueError(f"{where}: the detection tables hold no detection to repair with")
    return chosen


def read_detections(paths: Sequence[str | Path], run_keys: dict) -> pd.DataFrame:
    """The run's detection rows from its detection tables (every epoch, and the network route's),
    checked to belong to the run."""
    from pipeline.core.tables import read_table
    from pipeline.labels.tables import DETECTION

    if not paths:
        raise ValueError("repair needs the run's detection tables; none were given")
    frames = []
    for path in paths:
        df = read_table(path, DETECTION)
        _check_run(df, run_keys, path)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _check_run(df: pd.DataFrame, run_keys: dict, path) -> None:
    for key, value in run_keys.items():
        if len(df) and not (df[key] == value).all():
            raise ValueError(f"{path} holds rows of another run ({key} != {value!r}); give this run's tables")


def read_choice_scores(paths: Sequence[str | Path], choices: dict[str, Choice], run_keys: dict,
                       given: np.ndarray) -> dict[str, pd.DataFrame]:
    """The label_scores rows of each chosen detection (one per training example, by index), from
    whichever of ``paths`` holds them (each table is read once); checked against the run's given
    labels."""
    from pipeline.core.tables import read_table
    from pipeline.labels.tables import LABEL_SCORES

    found: dict[str, list] = {kind: [] for kind in choices}
    for path in paths:
        df = read_table(path, LABEL_SCORES)
        _check_run(df, run_keys, path)
        for kind, choice in choices.items():
            rows = df[(df["detector"] == choice.detector) & (df["setting"] == choice.setting)
                      & (df["epoch"] == choice.epoch) & (df["layer"] == choice.layer)]
            if len(rows):
                found[kind].append((path, rows))
    out = {}
    n = len(given)
    for kind, choice in choices.items():
        where = f"{choice.detector}/{choice.setting} at epoch {choice.epoch}, layer {choice.layer}"
        if len(found[kind]) != 1:
            raise ValueError(f"the label_scores tables {[str(p) for p in paths]} hold the rows of {where} in "
                             f"{len(found[kind])} files; exactly one is needed (give the tables of the "
                             f"detection run)")
        path, rows = found[kind][0]
        rows = rows.sort_values("index")
        if len(rows) != n or not np.array_equal(rows["index"].to_numpy(), np.arange(n)):
            raise ValueError(f"{path}: {where} scores {len(rows)} examples, the run has {n} training labels")
        if not np.array_equal(rows["given"].to_numpy(), given):
            raise ValueError(f"{path}: the given labels of {where} differ from the run's training labels; "
                             f"the tables were made from another label file")
        out[kind] = rows.reset_index(drop=True)
    return out


def repaired_labels(given: np.ndarray, flagged: np.ndarray, suggested: np.ndarray, mode: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(training labels, kept)`` after a repair: ``relabel`` gives the flagged examples their
    suggested label and keeps all; ``remove`` keeps the given labels of the examples not flagged."""
    given = np.asarray(given, dtype=np.int64)
    flagged = np.asarray(flagged, dtype=bool)
    if mode == "relabel":
        return np.where(flagged, np.asarray(suggested, dtype=np.int64), given), np.ones(given.size, dtype=bool)
    if mode == "remove":
        return given.copy(), ~flagged
    raise ValueError(f"labels.repair.modes: unknown mode {mode!r}; allowed: {list(MODES)}")


def _label_accuracy(labels: np.ndarray, kept: np.ndarray, true: np.ndarray | None) -> float:
    return float("nan") if true is None else float(np.mean(labels[kept] == true[kept]))


def _row(run_keys: dict, *, chosen_as: str, detector: str, setting: str, epoch, layer: str, mode: str,
         select: str, heldout_accuracy, auroc, labels: np.ndarray, kept: np.ndarray, given: np.ndarray,
         n_flagged: int, true: np.ndarray | None, fit) -> dict:
    return {**run_keys, "detector": detector, "setting": setting, "epoch": epoch, "layer": layer, "mode": mode,
            "chosen_as": chosen_as, "select": select, "heldout_accuracy": heldout_accuracy, "auroc": auroc,
            "n_train": fit.n_train, "n_flagged": int(n_flagged),
            "n_changed": int(np.sum(labels[kept] != given[kept])),
            "label_accuracy_after": _label_accuracy(labels, kept, true),
            "test_accuracy": fit.test_accuracy, "best_test_accuracy": fit.best_test_accuracy,
            "epochs_trained": fit.final_epoch, "stop_reason": fit.stop_reason,
            "cpu_seconds": fit.cpu_seconds, "wall_seconds": fit.wall_seconds}


def _curve(fit) -> list[dict]:
    log = fit.log
    return [{"epoch": int(e), "train_acc": float(a), "test_acc": float(t)}
            for e, a, t in zip(log["epoch"], log["train_acc_corrupted"], log["test_acc"], strict=True)]


@dataclass(frozen=True)
class RunTraining:
    """The run's own training, read from its log (``train_log.parquet``): what a retraining on the
    given labels would reproduce epoch for epoch."""

    n_train: int
    log: pd.DataFrame
    stop_reason: str = "the run (train_log)"

    @property
    def final_epoch(self) -> int:
        return int(self.log["epoch"].iloc[-1])

    @property
    def test_accuracy(self) -> float:
        return float(self.log["test_acc"].iloc[-1])

    @property
    def best_test_accuracy(self) -> float:
        return float(self.log["test_acc"].max())

    @property
    def cpu_seconds(self) -> float:
        return float("nan")

    @property
    def wall_seconds(self) -> float:
        return float(self.log["seconds"].sum()) if "seconds" in self.log else float("nan")

    def summary(self) -> dict:
        return {"n_train": self.n_train, "final_epoch": self.final_epoch, "stop_reason": self.stop_reason,
                "test_accuracy": self.test_accuracy, "best_test_accuracy": self.best_test_accuracy}


def test_peak_epoch(train_log: pd.DataFrame | None) -> int | None:
    """The epoch of the run's highest test accuracy (the earliest on a tie); None without a log."""
    if train_log is None or not len(train_log):
        return None
    return int(train_log.loc[train_log["test_acc"].idxmax(), "epoch"])


def repair_run(rt: RunRuntime, detection: pd.DataFrame, scores_paths: Sequence[str | Path], *,
               select: str, modes: Sequence[str], work_dir: str | Path | None = None,
               train_log: pd.DataFrame | None = None, only: str | None = None,
               log=print) -> tuple[pd.DataFrame, dict]:
    """Choose, retrain, and return the ``repair`` table's rows of the run of ``rt`` and the details.

    ``detection``: the run's detection rows (:func:`read_detections`); ``scores_paths``: its
    label_scores tables; ``train_log``: the run's training log (its test-accuracy peak guides the
    ``heldout`` selection, and it is the given-label baseline, which is then not trained again).
    ``only``: one retraining of :func:`pipeline.labels.paths.retrain_ids` (``given``, ``true``,
    ``probe_relabel``, ...), the rest skipped: the workflow runs each as its own job, in parallel,
    and :func:`gather_repair` joins them (every job makes the same choice: it is a function of the
    tables). A retraining that cannot be made (``true`` without the truth, a detector kind the
    tables do not hold) gives no row and says why in ``details["skipped"]``.
    Everything that can be refused is refused before the first training.
    """
    from pipeline.labels.retrain import train_from_scratch, truth_of

    run_keys = rt.run.keys()
    where = f"run {rt.run.path}"
    modes = list(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"labels.repair.modes must be a non-empty list of {list(MODES)}; got {modes}")
    known = retrain_ids(REPAIR_KINDS, modes)
    if only is not None and only not in known:
        raise ValueError(f"repair --only {only!r}: not a retraining of this repair; choose from {known}")
    peak = test_peak_epoch(train_log)
    chosen = choose_detectors(detection, select=select, where=where, peak_epoch=peak)
    given = np.asarray(rt.labels.corrupted, dtype=np.int64)
    true = truth_of(rt.labels) if _truth_known(detection) else None
    truth_known = true is not None
    scores = read_choice_scores(scores_paths, chosen, run_keys, given)
    for kind, rows in scores.items():  # the tables' truth must be this label file's truth
        if true is not None and not np.array_equal(rows["wrong"].to_numpy(dtype=bool), given != true):
            raise ValueError(f"{where}: the label_scores rows of the chosen {kind} detector mark other "
                             f"labels wrong than the run's label file; the tables were made from another one")

    rows, details = [], {"run": run_keys, "select": select, "modes": modes, "truth_known": truth_known,
                         "test_peak_epoch": peak, "chosen": {}, "retrains": [], "skipped": {}}
    if only is not None:
        details["only"] = only
    for kind, choice in chosen.items():
        column = "heldout_accuracy" if select == "heldout" else "auroc"
        group = detection[(detection["detector"] == CLEANLAB) == (kind == "cleanlab")]
        details["chosen"][kind] = {**choice.__dict__, "candidates": group.sort_values(column, ascending=False)[
            ["detector", "setting", "epoch", "layer", "heldout_accuracy", "auroc", "n_flagged"]].to_dict("records")}
    everything = np.ones(given.size, dtype=bool)
    wanted = [only] if only is not None else known

    def retrain(labels: np.ndarray, kept: np.ndarray, label: str):
        fit = train_from_scratch(rt, labels, keep=kept, true=true, work_dir=work_dir)
        log(f"{rt.run.path} {label}: {fit.n_train} examples, {fit.final_epoch} epochs ({fit.stop_reason}), "
            f"test acc {fit.test_accuracy:.3f} (best {fit.best_test_accuracy:.3f})")
        details["retrains"].append({"what": label, "retrain": name, **fit.summary(), "curve": _curve(fit)})
        return fit

    for name in wanted:
        if name in REPAIR_BASELINES:
            mode = name
            if mode == "true" and true is None:
                details["skipped"][name] = "the truth about the training labels is unknown"
                continue
            labels = given if mode == "given" else true
            if mode == "given" and train_log is not None:
                fit = RunTraining(int(given.size), train_log.sort_values("epoch").reset_index(drop=True))
                details["retrains"].append({"what": mode, "retrain": name, **fit.summary()})
            else:
                fit = retrain(labels, everything, mode)
            rows.append(_row(run_keys, chosen_as="baseline", detector=NONE, setting=NONE, epoch=None, layer=NONE,
                             mode=mode, select=select, heldout_accuracy=None, auroc=None, labels=labels,
                             kept=everything, given=given, n_flagged=0, true=true, fit=fit))
            continue
        kind, mode = name.split("_", 1)
        if kind not in chosen:
            details["skipped"][name] = f"the detection tables hold no {kind} detection"
            continue
        choice = chosen[kind]
        flagged = scores[kind]["flagged"].to_numpy(dtype=bool)
        suggested = scores[kind]["suggested"].to_numpy(dtype=np.int64)
        labels, kept = repaired_labels(given, flagged, suggested, mode)
        fit = retrain(labels, kept, f"{mode} by {kind} {choice.detector}/{choice.setting} "
                                    f"(epoch {choice.epoch}, {choice.layer})")
        auroc = None if np.isnan(choice.auroc) else choice.auroc
        rows.append(_row(run_keys, chosen_as=kind, **choice.key(), mode=mode, select=select,
                         heldout_accuracy=choice.heldout_accuracy, auroc=auroc, labels=labels, kept=kept,
                         given=given, n_flagged=int(flagged.sum()), true=true, fit=fit))
    return REPAIR.frame(rows), details


#: what every retraining of one run records alike (the choice it was made from), checked by the gather
_SHARED_DETAILS = ("run", "select", "modes", "truth_known", "test_peak_epoch", "chosen")


def gather_repair(parts: Sequence[tuple[pd.DataFrame, dict]]) -> tuple[pd.DataFrame, dict]:
    """One run's repair table and details from its retrainings (:func:`repair_run` with ``only``),
    in the order of :func:`~pipeline.labels.paths.retrain_ids`. The parts must be of one run and
    agree on what was chosen (they do when made from the same tables); each retraining once."""
    if not parts:
        raise ValueError("repair-gather: no retrainings given")
    needed = (*_SHARED_DETAILS, "retrains")
    for i, (_, details) in enumerate(parts):
        missing = [k for k in needed if k not in details]
        if missing:
            raise ValueError(f"repair-gather: the details of part {i} lack {missing}; they were not written "
                             "by `python -m pipeline repair`: rerun that retraining")
    first = parts[0][1]
    order = retrain_ids(REPAIR_KINDS, first["modes"])
    seen: dict[str, int] = {}
    for i, (_, details) in enumerate(parts):
        name = details.get("only")
        if name is not None and name not in order:
            raise ValueError(f"repair-gather: part {i} is the retraining {name!r}, not one of {order}")
        if name is None:
            raise ValueError(f"repair-gather: part {i} holds every retraining (made without --only); "
                             "gather the parts made with --only, or use that table as it is")
        if name in seen:
            raise ValueError(f"repair-gather: the retraining {name!r} is given twice (parts {seen[name]} and {i})")
        seen[name] = i
        for key in _SHARED_DETAILS:
            if details[key] != first[key]:
                raise ValueError(f"repair-gather: part {name!r} differs from part {first['only']!r} in "
                                 f"{key!r}; the parts were made from different tables or settings: rerun them")
    ranked = sorted(parts, key=lambda part: order.index(part[1]["only"]))
    filled = [t for t, _ in ranked if len(t)]  # a skipped retraining's part has no row
    table = REPAIR.frame(pd.concat(filled, ignore_index=True) if filled else [])
    details = {key: first[key] for key in _SHARED_DETAILS}
    details["retrains"] = [r for _, d in ranked for r in d["retrains"]]
    details["skipped"] = {k: v for _, d in ranked for k, v in d.get("skipped", {}).items()}
    return table, details
