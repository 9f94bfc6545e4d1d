"""Relabel and retrain (the MASC paper): layer choice, relabelling, early stopping, rows."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.activations import ActivationFile, extract_activations
from pipeline.core.labels import load_labels, save_labels
from pipeline.core.runtime import RunRuntime, build_run_model, input_transform, load_checkpoint, predict
from pipeline.core.tables import RESULT_COLUMNS, check_result_schema
from pipeline.images.transfer.relabel import (
    PROTOCOLS,
    choose,
    relabel_and_retrain,
    relabel_run,
    relabel_set,
    relabel_setting,
    retrain,
    split_indices,
)

CONFIG = {
    "data": {"train_subset": 250, "test_subset": 100},
    "train": {"max_epochs": 4, "target_train_accuracy": 1.0, "num_threads": 1,
              "overrides": {"mlp": {"optimizer": "adam", "lr": 0.001}}},
    "transfer": {"relabel_retrain": {"enabled": True, "max_epochs": 4, "patience": 2}},
}


@pytest.fixture(scope="module")
def run_dir(trained_run, tmp_path_factory):
    """A run trained 4 epochs on 50 %-corrupted digits, its labels and final activations; plus a
    copy of labels and activations whose test labels are permuted (garbage)."""
    r = trained_run(CONFIG, corruption=0.5)
    config, run, arrays, labels = r.config, r.run, r.arrays, r.labels
    out = tmp_path_factory.mktemp("relabel")
    shutil.copytree(r.run_dir, out, dirs_exist_ok=True)
    model = build_run_model(run, arrays)
    load_checkpoint(out / "checkpoints/epoch_4.pt", model)
    transform = input_transform(arrays, "mlp")
    extract_activations(model, arrays.x_train, arrays.x_test, labels, transform, out / "acts.h5")
    garbage = replace(labels, test=np.random.default_rng(1).permutation(labels.test))
    save_labels(garbage, out / "garbage_labels.npz")
    extract_activations(model, arrays.x_train, arrays.x_test, garbage, transform, out / "garbage_acts.h5")
    return config, run, arrays, labels, garbage, model, out


def run_protocol(run_dir, tmp_path, protocol, which="labels"):
    config, run, *_, out = run_dir
    config = {**config, "transfer": {**config["transfer"], "relabel_retrain": {
        **config["transfer"]["relabel_retrain"], "protocols": [protocol]}}}
    prefix = "" if which == "labels" else "garbage_"
    acts = out / ("acts.h5" if which == "labels" else "garbage_acts.h5")
    # given directly: the garbage copy's permuted test labels would (rightly) fail the label check
    rt = RunRuntime(config, run, run_dir=out, labels=load_labels(out / f"{prefix}labels.npz"))
    rows = relabel_run(rt, protocol, acts, tmp_path / f"{which}.parquet", tmp_path / f"{which}.json")
    return pd.DataFrame(rows), json.loads((tmp_path / f"{which}.json").read_text())


@pytest.mark.parametrize("protocol", ["heldout_true", "heldout_corrupted"])
def test_heldout_layer_choice_never_reads_test_labels(run_dir, tmp_path, protocol):
    """Garbage (permuted) test labels in both the label file and the activation file change
    nothing but the reported test accuracy: not the layer, the scores, the relabelling, the
    validation curve or the stopping epoch."""
    real, real_details = run_protocol(run_dir, tmp_path, protocol, "labels")
    fake, fake_details = run_protocol(run_dir, tmp_path, protocol, "garbage")
    assert real_details["results"] == fake_details["results"]
    key = ["probe", "fit_labels", "split", "target"]
    real, fake = real.set_index(key).sort_index(), fake.set_index(key).sort_index()
    assert (real.layer == fake.layer).all()
    not_test = real.index.get_level_values("split") != "test"
    pd.testing.assert_frame_equal(real[not_test], fake[not_test])
    test = real[~not_test]
    assert (test.n_samples == 100).all()  # heldout protocols report on the whole test set
    assert not np.allclose(test.accuracy, fake[~not_test].accuracy)  # the labels did differ


def test_heldout_protocol_touches_no_test_labels(run_dir):
    """Instrumented: the selection and retraining get a labels object whose test labels raise."""
    config, run, arrays, labels, _, model, out = run_dir

    class NoTestLabels:
        corrupted, true, num_classes = labels.corrupted, labels.true, labels.num_classes

        @property
        def test(self):
            raise AssertionError("test labels were read")

    with ActivationFile(out / "acts.h5") as acts:
        train_acts = {layer: acts.read(layer, "train") for layer in acts.layers}
    rcfg = config["transfer"]["relabel_retrain"]
    for protocol in ("heldout_true", "heldout_corrupted"):
        result = relabel_and_retrain(model, torch.from_numpy(arrays.x_train), torch.from_numpy(arrays.x_test),
                                     NoTestLabels(), train_acts, None, input_transform(arrays, "mlp"),
                                     protocol=protocol, fit_labels="corrupted", rcfg=rcfg,
                                     hp={"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "batch_size": 32,
                                         "weight_decay": 0.0},
                                     seed=0, start_epoch=4, device=torch.device("cpu"))
        assert result.layer in train_acts and result.report_idx is None
        assert set(result.scores) == set(train_acts)
        # held-out images are never retrained on: 20 % of 250 held out, 200 relabelled
        assert result.retrain_idx.size == 200 and result.new_labels.shape == (200,)


def test_authors_protocol_reports_on_80_percent_of_the_test_set(run_dir, tmp_path):
    rows, details = run_protocol(run_dir, tmp_path, "authors_test_split")
    check_result_schema(rows[list(RESULT_COLUMNS)])
    test = rows[rows.split == "test"]
    assert (test.n_samples == 80).all() and len(test) == 2  # corrupted- and true-label subspaces
    assert set(rows.probe_setting) == {"protocol=authors_test_split,relabel=in_sample,variance=0.99"}
    assert all(r["n_report"] == 80 and r["n_retrain"] == 250 for r in details["results"])


def test_rows_and_details(run_dir, tmp_path):
    config, run, arrays, labels, _, model, out = run_dir
    rows, details = run_protocol(run_dir, tmp_path, "heldout_true")
    check_result_schema(rows[list(RESULT_COLUMNS)])
    assert set(rows.epoch) == {4}  # the memorized checkpoint retraining started from
    assert set(rows.probe) == {"relabel_retrain", "relabel_labels"}
    assert set(rows.fit_labels) == {"corrupted", "true"}
    retrained = rows[rows.probe == "relabel_retrain"]
    assert set(zip(retrained.split, retrained.target, strict=True)) == {("test", "true"), ("train", "corrupted"),
                                                          ("train", "true")}
    new = rows[rows.probe == "relabel_labels"]
    assert set(new.split) == {"train"} and (new.n_samples == 200).all()
    for result in details["results"]:
        assert result["layer"] == max(result["selection_scores"], key=result["selection_scores"].get)
        history = result["history"]
        assert history[0]["epoch"] == 0 and len(history) <= 1 + 4
        assert result["best_epoch"] == max(range(len(history)), key=lambda i: (history[i]["val_acc"], -i))
    # subspaces from the true labels relabel the retraining set with the true labels in sample
    true_labels = new[(new.fit_labels == "true") & (new.target == "true")]
    assert true_labels.accuracy.iloc[0] > 0.9


def test_split_choose_relabel_units():
    rest, part = split_indices(100, 0.2, seed=3, salt=1)
    assert len(part) == 20 and len(rest) == 80 and not set(rest) & set(part)
    again = split_indices(100, 0.2, seed=3, salt=1)
    assert np.array_equal(again[1], part)
    assert not np.array_equal(split_indices(100, 0.2, seed=4, salt=1)[1], part)
    with pytest.raises(ValueError):
        split_indices(3, 0.1, seed=0, salt=1)
    assert choose({"fc1": 0.5, "fc2": 0.7, "fc3": 0.7}) == "fc2"  # earliest best layer
    assert relabel_setting("heldout_true", "cross_fit", 0.99) == "protocol=heldout_true,relabel=cross_fit,variance=0.99"
    assert set(PROTOCOLS) == {"heldout_true", "heldout_corrupted", "authors_test_split"}

    # two well-separated classes, 30 % of the labels flipped: cross-fitting recovers the true
    # labels, in-sample MASC keeps more of the flipped ones
    rng = np.random.default_rng(0)
    centers = np.eye(20)[[0, 1]] * 5
    y_true = np.repeat([0, 1], 60)
    X = np.abs(centers[y_true] + rng.normal(scale=0.3, size=(120, 20)))
    y = y_true.copy()
    flip = rng.random(120) < 0.3
    y[flip] = 1 - y[flip]
    cross = relabel_set(X, y, variance=1, scheme="cross_fit", folds=5, seed=0)
    assert (cross == y_true).mean() > 0.95
    inside = relabel_set(X, y, variance=0.99, scheme="in_sample", folds=5, seed=0)
    assert inside.shape == (120,) and (inside == y).mean() >= (cross == y).mean()
    with pytest.raises(ValueError, match="relabel"):
        relabel_set(X, y, variance=1, scheme="loo", folds=5, seed=0)


def test_retrain_keeps_the_best_epoch(run_dir):
    """Validation labels the retraining cannot fit: the starting weights (epoch 0) stay best,
    training stops after `patience` epochs and the model is restored to them."""
    config, run, arrays, labels, _, model, _ = run_dir
    transform = input_transform(arrays, "mlp")
    x = torch.from_numpy(arrays.x_train)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    copy_model = build_run_model(run, arrays)
    copy_model.load_state_dict(start)
    val_y = predict(copy_model, x[:50], transform)  # the starting model is 100 % right on these
    hp = {"optimizer": "adam", "lr": 1e-2, "momentum": 0.0, "batch_size": 32, "weight_decay": 0.0}
    flipped = (labels.corrupted + 1) % 10
    result = retrain(copy_model, x, flipped, x[:50], val_y, transform, hp=hp, max_epochs=10, patience=2,
                     seed=0, epoch_offset=4, device=torch.device("cpu"))
    assert result.best_epoch == 0 and len(result.history) == 3
    for key, value in copy_model.state_dict().items():
        assert torch.equal(value, start[key]), key
