"""Repair and cleanlab's network route (issue 17, sections 2 and 3) on the real digits, tiny MLP runs.

* a retrain on the given labels reproduces the run's own training epoch for epoch;
* with a perfect detector, relabeling makes every training label right and beats the given labels
  (and trains exactly the true-label model); removing drops exactly the flagged examples;
* one job per retraining (``--only``), gathered, gives the table of all of them in one job;
* ``select: oracle`` without the truth is refused before any training;
* the network route's probabilities are out of fold: no example is predicted by a network that
  trained on it.
"""

import json

import numpy as np
import pandas as pd
import pytest

import pipeline.labels.retrain as retrain_module
from pipeline.config import validate_config
from pipeline.core.config import Run
from pipeline.core.labels import load_run_dataset, make_run_labels, save_labels
from pipeline.core.runtime import RunRuntime
from pipeline.core.tables import read_table, write_table
from pipeline.labels.detect import Detection
from pipeline.labels.paths import repair_retrains
from pipeline.labels.repair import REPAIR, choose_detectors, repair_run, repaired_labels
from pipeline.labels.retrain import NETWORK_LAYER, cleanlab_network_run, out_of_fold_probabilities, train_from_scratch
from pipeline.labels.stages import repair as repair_stage
from pipeline.labels.stages import repair_gather
from pipeline.labels.tables import DETECTION, LABEL_SCORES, detection_frame, scores_frame

CONFIG = {
    "data": {"train_subset": 200, "test_subset": 100},
    "train": {"max_epochs": 2, "target_train_accuracy": 1.0, "num_threads": 1,
              "overrides": {"mlp": {"optimizer": "adam", "lr": 0.001}}},
}


@pytest.fixture(scope="module")
def noisy_run():
    """Digits (200 training images) with 80 % of the labels redrawn, and its runtime."""
    config = validate_config(CONFIG)
    run = Run("digits", "mlp", 0.8, 0)
    arrays = load_run_dataset(config, "digits")
    labels = make_run_labels(arrays, dataset="digits", corruption=0.8, seed=0)
    return config, run, arrays, labels


def _runtime(noisy_run, labels=None):
    config, run, arrays, run_labels = noisy_run
    return RunRuntime(config, run, arrays=arrays, labels=labels or run_labels)


def _detection(name, setting, given, suggested, score, flagged=None):
    flagged = suggested != given if flagged is None else flagged
    return Detection(name, setting, score=score, suggested=suggested, flagged=flagged,
                     heldout_accuracy=float(np.mean(suggested == given)), cpu_seconds=0.0, wall_seconds=0.0)


def _write_tables(tmp_path, run, epoch, layer, detections, given, wrong, stem):
    det, scores = tmp_path / f"detect_{stem}.parquet", tmp_path / f"scores_{stem}.parquet"
    write_table(detection_frame(run, epoch, layer, detections, wrong), det, DETECTION)
    write_table(scores_frame(run, epoch, layer, detections, given, wrong), scores, LABEL_SCORES)
    return det, scores


def test_retrain_on_the_given_labels_reproduces_the_run(trained_run, one_torch_thread):
    """Same seed, hyperparameters, stopping rule and normalization: the run's log, epoch for epoch."""
    r = trained_run(CONFIG, corruption=0.5)
    rt = RunRuntime(r.config, r.run, arrays=r.arrays, labels=r.labels, run_dir=r.run_dir)
    fit = train_from_scratch(rt, r.labels.corrupted, true=r.labels.true)
    run_log = pd.read_parquet(r.run_dir / "train_log.parquet")
    pd.testing.assert_frame_equal(fit.log.drop(columns="seconds"), run_log.drop(columns="seconds"))
    assert fit.final_epoch == 2 and fit.n_train == 200
    assert fit.test_accuracy == run_log["test_acc"].iloc[-1]


def test_perfect_detector_relabel_and_remove(noisy_run, tmp_path, one_torch_thread, monkeypatch):
    """Through the stage: a perfect probe detector (flags exactly the wrong labels, suggests the true
    ones) beside a random one. heldout selection picks the perfect one without reading the truth;
    relabeling makes every label right, trains exactly the true-label model and beats the given
    labels; removing trains on exactly the examples not flagged."""
    config, run, arrays, labels = noisy_run
    given, true = labels.corrupted, labels.true
    wrong = given != true
    rng = np.random.default_rng(0)
    perfect = _detection("masc", "variance=0.99", given, true, wrong.astype(float))
    random_labels = rng.integers(0, labels.num_classes, given.size)
    noise = _detection("ncm", "ncm", given, random_labels, rng.random(given.size))
    det1, sc1 = _write_tables(tmp_path, run, 3, "fc2", [noise], given, wrong, "e3")
    det2, sc2 = _write_tables(tmp_path, run, 6, "fc1", [perfect, noise], given, wrong, "e6")
    save_labels(labels, tmp_path / "labels.npz")

    calls = []
    real = retrain_module.train_from_scratch

    def spy(rt, labels, *, keep=None, **kwargs):
        calls.append((np.array(labels), np.array(keep)))
        return real(rt, labels, keep=keep, **kwargs)

    monkeypatch.setattr(retrain_module, "train_from_scratch", spy)
    out, details = tmp_path / "repair.parquet", tmp_path / "repair.json"
    repair_stage({**CONFIG, "labels": {"repair": {"select": "heldout", "modes": ["relabel", "remove"]}}}, run,
                 tmp_path / "labels.npz", [det1, det2], [sc1, sc2], out, details)

    table = read_table(out, REPAIR).set_index("mode")
    assert sorted(table.index) == ["given", "relabel", "remove", "true"]
    assert (table.drop(index=["given", "true"])["detector"] == "masc").all()
    assert (table.loc[["relabel", "remove"], "epoch"] == 6).all()
    assert table.loc["given", "label_accuracy_after"] == pytest.approx(1 - wrong.mean())
    relabel, remove = table.loc["relabel"], table.loc["remove"]
    assert relabel.label_accuracy_after == 1.0 and relabel.n_changed == wrong.sum() == relabel.n_flagged
    assert relabel.test_accuracy == table.loc["true", "test_accuracy"]  # the very same labels and training
    assert relabel.test_accuracy > table.loc["given", "test_accuracy"] + 0.1
    assert remove.n_train == (~wrong).sum() and remove.label_accuracy_after == 1.0 and remove.n_changed == 0
    # the remove retrain saw exactly the examples not flagged, with their given labels
    (remove_labels, remove_keep), = [(lab, keep) for lab, keep in calls if not keep.all()]
    np.testing.assert_array_equal(remove_keep, ~wrong)
    np.testing.assert_array_equal(remove_labels[remove_keep], given[~wrong])
    chosen = json.loads(details.read_text())["chosen"]["probe"]
    assert (chosen["detector"], chosen["epoch"], chosen["layer"]) == ("masc", 6, "fc1")
    assert "heldout_accuracy" in chosen["reason"] and len(chosen["candidates"]) == 3


def test_one_job_per_retraining_gathers_into_the_whole_repair(noisy_run, tmp_path, one_torch_thread):
    """The workflow's split: each retraining alone (``--only``), then ``repair-gather``, gives the rows
    and choices of the whole repair in one job, in its order; a retraining that cannot be made (no
    cleanlab row in these tables) gives an empty part saying why; bad parts are refused."""
    config, run, arrays, labels = noisy_run
    given, true = labels.corrupted, labels.true
    wrong = given != true
    rng = np.random.default_rng(1)
    perfect = _detection("masc", "variance=0.99", given, true, wrong.astype(float))
    noise = _detection("ncm", "ncm", given, rng.integers(0, labels.num_classes, given.size), rng.random(given.size))
    det, sc = _write_tables(tmp_path, run, 4, "fc2", [perfect, noise], given, wrong, "e4")
    save_labels(labels, tmp_path / "labels.npz")
    cfg = {**CONFIG, "labels": {"enabled": True, "pairs": [["digits", "mlp"]],
                                "repair": {"enabled": True, "modes": ["relabel", "remove"]}}}
    whole, whole_details = tmp_path / "whole.parquet", tmp_path / "whole.json"
    repair_stage(cfg, run, tmp_path / "labels.npz", [det], [sc], whole, whole_details)

    retrains = repair_retrains(validate_config({**cfg, "datasets": ["digits"], "models": ["mlp"],
                                                "corruptions": [0.8]}))
    assert retrains == ["given", "true", "probe_relabel", "probe_remove", "cleanlab_relabel", "cleanlab_remove"]
    parts, details = [], []
    for name in reversed(retrains):  # the gather puts them in order, whatever order they come in
        parts.append(tmp_path / f"{name}.parquet")
        details.append(tmp_path / f"{name}.json")
        repair_stage(cfg, run, tmp_path / "labels.npz", [det], [sc], parts[-1], details[-1], only=name)
    assert len(read_table(tmp_path / "cleanlab_remove.parquet", REPAIR)) == 0
    assert "no cleanlab detection" in json.loads((tmp_path / "cleanlab_remove.json").read_text())["skipped"][
        "cleanlab_remove"]

    out, out_details = tmp_path / "gathered.parquet", tmp_path / "gathered.json"
    repair_gather(parts, details=details, out=out, details_out=out_details)
    timing = ["cpu_seconds", "wall_seconds"]
    expected = read_table(whole, REPAIR).drop(columns=timing)
    gathered = read_table(out, REPAIR).drop(columns=timing)
    pd.testing.assert_frame_equal(gathered, expected)
    assert list(gathered["mode"]) == ["given", "true", "relabel", "remove"]
    joined, reference = json.loads(out_details.read_text()), json.loads(whole_details.read_text())
    assert joined["chosen"] == reference["chosen"]
    assert [r["what"] for r in joined["retrains"]] == [r["what"] for r in reference["retrains"]]

    true_part, true_details = tmp_path / "true.parquet", tmp_path / "true.json"
    with pytest.raises(ValueError, match="'true' is given twice"):
        repair_gather([true_part, true_part], details=[true_details, true_details], out=out,
                      details_out=out_details)
    with pytest.raises(ValueError, match="made without --only"):
        repair_gather([whole], details=[whole_details], out=out, details_out=out_details)
    bad = tmp_path / "bad.json"
    bad.write_text('{"only": "true", "run": ')
    with pytest.raises(Exception, match="bad.json is truncated or not JSON"):
        repair_gather([true_part], details=[bad], out=out, details_out=out_details)
    with pytest.raises(ValueError, match="not a retraining of this repair"):
        repair_stage(cfg, run, tmp_path / "labels.npz", [det], [sc], out, out_details, only="probe_shuffle")


def test_select_heldout_and_oracle_across_epochs_layers_and_routes():
    """heldout: highest held-out accuracy (ties: earliest epoch); oracle: highest AUROC; cleanlab's
    layer and network routes compete as one group, the probes as another."""
    run = Run("digits", "mlp", 0.5, 0)
    rows = []
    for epoch, layer, detector, setting, heldout, auroc in [
            (2, "fc1", "masc", "variance=0.99", 0.6, 0.70), (4, "fc1", "masc", "variance=0.99", 0.6, 0.90),
            (4, "fc2", "ncm", "ncm", 0.5, 0.95), (2, "fc1", "cleanlab", "layer", 0.55, 0.80),
            (7, NETWORK_LAYER, "cleanlab", "network", 0.58, 0.75)]:
        rows.append({**run.keys(), "epoch": epoch, "layer": layer, "detector": detector, "setting": setting,
                     "truth_known": True, "n_train": 10, "n_wrong": 5, "n_flagged": 4,
                     "heldout_accuracy": heldout, "precision": 0.5, "recall": 0.5, "f1": 0.5, "auroc": auroc,
                     "average_precision": 0.5, "cpu_seconds": 0.0, "wall_seconds": 0.0})
    table = DETECTION.frame(rows)
    heldout = choose_detectors(table, select="heldout")
    assert (heldout["probe"].detector, heldout["probe"].epoch) == ("masc", 2)
    assert (heldout["cleanlab"].setting, heldout["cleanlab"].epoch) == ("network", 7)
    oracle = choose_detectors(table, select="oracle")
    assert (oracle["probe"].detector, oracle["probe"].layer) == ("ncm", "fc2")
    assert oracle["cleanlab"].setting == "layer"


def test_oracle_without_truth_is_refused_before_training(noisy_run, tmp_path, monkeypatch):
    """A user's data without true labels: select=oracle names the key and the way out, trains nothing."""
    config, run, arrays, labels = noisy_run
    given = labels.corrupted
    det = _detection("masc", "variance=0.99", given, labels.true, np.zeros(given.size))
    det_path, scores_path = _write_tables(tmp_path, run, 3, "fc1", [det], given, None, "e3")
    monkeypatch.setattr(retrain_module, "train_from_scratch", lambda *a, **k: pytest.fail("trained"))
    detection = read_table(det_path, DETECTION)
    with pytest.raises(ValueError, match=r"labels\.repair\.select: oracle .*true labels.*select: heldout"):
        repair_run(_runtime(noisy_run), detection, [scores_path], select="oracle", modes=["relabel"])
    with pytest.raises(ValueError, match=r"labels\.repair\.modes"):
        repair_run(_runtime(noisy_run), detection, [scores_path], select="heldout", modes=["shuffle"])


def test_repaired_labels():
    given = np.array([0, 1, 2, 3])
    flagged = np.array([False, True, True, False])
    suggested = np.array([9, 8, 2, 7])
    labels, kept = repaired_labels(given, flagged, suggested, "relabel")
    np.testing.assert_array_equal(labels, [0, 8, 2, 3])
    assert kept.all()
    labels, kept = repaired_labels(given, flagged, suggested, "remove")
    np.testing.assert_array_equal(labels, given)
    np.testing.assert_array_equal(kept, ~flagged)


def test_network_probabilities_are_out_of_fold(noisy_run, monkeypatch, one_torch_thread):
    """By construction: each fold's network is trained on the other folds only, and predicts exactly
    its own fold; the folds are stratified by the given labels and cover every example once."""
    config, run, arrays, labels = noisy_run
    config = validate_config({**CONFIG, "train": {**CONFIG["train"], "max_epochs": 1}})
    rt = RunRuntime(config, run, arrays=arrays, labels=labels)
    trained_on, predicted = [], []
    real_fit, real_predict = retrain_module.train_from_scratch, retrain_module.predict_proba

    def fit_spy(rt, labels, *, keep=None, **kwargs):
        trained_on.append(np.flatnonzero(keep))
        return real_fit(rt, labels, keep=keep, **kwargs)

    def predict_spy(model, x, transform, **kwargs):
        # which training images these are: find each row of x among the training images
        flat = rt.x_train.reshape(len(rt.x_train), -1).numpy()
        index = {row.tobytes(): i for i, row in enumerate(flat)}
        predicted.append(np.array([index[row.tobytes()] for row in x.reshape(len(x), -1).numpy()]))
        return real_predict(model, x, transform, **kwargs)

    monkeypatch.setattr(retrain_module, "train_from_scratch", fit_spy)
    monkeypatch.setattr(retrain_module, "predict_proba", predict_spy)
    given = labels.corrupted
    oof = out_of_fold_probabilities(rt, given, folds=3)
    assert len(trained_on) == len(predicted) == 3
    for k, (seen, scored) in enumerate(zip(trained_on, predicted, strict=True)):
        np.testing.assert_array_equal(np.sort(scored), np.flatnonzero(oof.fold == k))
        assert not np.intersect1d(seen, scored).size                       # never saw what it scores
        assert np.union1d(seen, scored).size == given.size                 # and saw all the rest
    assert np.isfinite(oof.pred_probs).all() and np.allclose(oof.pred_probs.sum(1), 1)
    for c in np.unique(given):  # stratified: each class spread evenly over the folds
        counts = np.bincount(oof.fold[given == c], minlength=3)
        assert counts.max() - counts.min() <= 1


def test_cleanlab_network_tables(noisy_run, tmp_path, one_torch_thread):
    """The network route writes detection and label_scores rows in their schemas (layer "network",
    epoch = the epochs the fold networks trained) and the fold trainings."""
    config, run, arrays, labels = noisy_run
    config = validate_config({**CONFIG, "train": {**CONFIG["train"], "max_epochs": 1}})
    rt = RunRuntime(config, run, arrays=arrays, labels=labels)
    paths = [tmp_path / name for name in ("detect.parquet", "scores.parquet", "details.json")]
    cleanlab_network_run(rt, folds=2, detection_out=paths[0], scores_out=paths[1], details_out=paths[2])
    detection, scores = read_table(paths[0], DETECTION), read_table(paths[1], LABEL_SCORES)
    assert detection[["detector", "setting", "layer", "epoch"]].values.tolist() == [
        ["cleanlab", "network", NETWORK_LAYER, 1]]
    assert detection.truth_known.all() and 0 <= detection.auroc.iloc[0] <= 1
    assert len(scores) == 200 and (scores["given"].to_numpy() == labels.corrupted).all()
    folds = json.loads(paths[2].read_text())["fold_trainings"]
    assert [f["n_heldout"] + f["n_train"] for f in folds] == [200, 200]
