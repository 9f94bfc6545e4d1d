"""Weight editing (section 8): the edited model predicts exactly what VeLPIC predicts."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.activations import ActivationFile, extract_activations
from pipeline.core.config import Run
from pipeline.core.models import build_model
from pipeline.core.runtime import RunRuntime, build_run_model, input_transform, predict
from pipeline.core.runtime import layer_outputs as layer_activations
from pipeline.core.tables import RESULT_COLUMNS, check_result_schema, read_parquet_metadata
from pipeline.images.transfer.editing import (
    EDIT_PROBE,
    edit_checkpoint_rows,
    edit_classifier,
    edit_run,
    edit_setting,
    edited_model,
    fit_class_vectors,
    label_sources,
)
from pipeline.probes import VeLPIC

CONFIG = {
    "data": {"train_subset": 200, "test_subset": 100},
    "corruptions": [0.5],
    "train": {"max_epochs": 2, "target_train_accuracy": 1.0, "num_threads": 1,
              "overrides": {"mlp": {"optimizer": "adam", "lr": 0.001}}},
    "transfer": {"edited_model": {"enabled": True}},
}


@pytest.fixture(scope="module")
def trained(trained_run):
    """A standard run of the MLP trained 2 epochs on 50 %-corrupted digits (checkpoints 0 and 2)."""
    r = trained_run(CONFIG, corruption=0.5)
    return r.config, r.run, r.arrays, r.labels, r.run_dir


def load_model(run, arrays, path):
    model = build_run_model(run, arrays)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


@pytest.mark.parametrize("epoch", [0, 2], ids=["initialized", "trained"])
@pytest.mark.parametrize("source", ["corrupted", "true"])
def test_edited_model_predicts_what_velpic_predicts(trained, tmp_path, epoch, source):
    """On real activations (the activation stage's file) of all inputs, train and test."""
    config, run, arrays, labels, out = trained
    model = load_model(run, arrays, out / f"checkpoints/epoch_{epoch}.pt")
    transform = input_transform(arrays, run.model)
    h5 = extract_activations(model, arrays.x_train, arrays.x_test, labels, transform, tmp_path / "acts.h5")
    with ActivationFile(h5) as acts:
        layer = model.last_probe_layer
        probe = VeLPIC().fit(acts.read(layer, "train"), acts.labels("train", source))
        velpic = {split: probe.predict(acts.read(layer, split)) for split in ("train", "test")}
    edited = edited_model(model, probe, bias="zero")
    for split, x in (("train", arrays.x_train), ("test", arrays.x_test)):
        np.testing.assert_array_equal(predict(edited, torch.from_numpy(x), transform), velpic[split])
    # the unedited model predicts differently (the edit did something) and is untouched
    assert not np.array_equal(predict(model, torch.from_numpy(arrays.x_test), transform), velpic["test"])


def test_edited_cnn_without_classifier_bias(trained):
    """The CNN's classifier has no bias: both bias settings are VeLPIC's decision function.

    At initialization the CNN's fc3 class vectors are nearly parallel (cosines ~1 - 1e-6), so the
    class scores differ by ~1e-7 and numpy and torch may break such near-ties differently: the
    logits are compared to float precision, the predictions where the margin exceeds rounding."""
    _, _, arrays, labels, _ = trained
    torch.manual_seed(0)
    model = build_run_model(Run("digits", "cnn", 0.5, 0), arrays).eval()
    assert model.classifier.bias is None
    transform = input_transform(arrays, "cnn")
    x = torch.from_numpy(arrays.x_train)
    features = layer_activations(model, x, transform, model.last_probe_layer)
    probe = fit_class_vectors(features, labels.corrupted)
    scores = probe.decision_function(features)
    top2 = np.sort(scores, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5 * np.abs(top2[:, 1])
    for bias in ("zero", "keep"):
        edited = edited_model(model, probe, bias=bias)
        with torch.no_grad():
            logits = edited(transform(x)).numpy()
        np.testing.assert_allclose(logits, scores, rtol=1e-5, atol=1e-6 * np.abs(scores).max())
        preds = predict(edited, x, transform)
        np.testing.assert_array_equal(preds[clear], probe.predict(features)[clear])


def test_edit_classifier_weights_and_biases():
    torch.manual_seed(0)
    layer_model = build_model("mlp", in_channels=1, image_size=8, num_classes=4)
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(40, 2048))).astype(np.float32)
    y = np.repeat([0, 1, 3], [10, 15, 15])  # class 2 absent
    probe = VeLPIC().fit(X, y)
    bias_before = layer_model.classifier.bias.detach().clone()
    weight_before = layer_model.classifier.weight.detach().clone()

    zero = edited_model(layer_model, probe, bias="zero")
    W = zero.classifier.weight.detach().numpy()
    np.testing.assert_array_equal(W[[0, 1, 3]], probe.class_vectors_)
    np.testing.assert_array_equal(W[2], 0.0)  # a class VeLPIC never saw gets a zero row
    assert torch.count_nonzero(zero.classifier.bias) == 0
    keep = edited_model(layer_model, probe, bias="keep")
    assert torch.equal(keep.classifier.bias, bias_before)
    # edited_model copies; edit_classifier edits in place
    assert torch.equal(layer_model.classifier.weight, weight_before)
    assert edit_classifier(layer_model, probe) is layer_model
    assert torch.equal(layer_model.classifier.weight, zero.classifier.weight)

    with pytest.raises(ValueError, match="fitted on 5 features"):
        edit_classifier(layer_model, VeLPIC().fit(X[:, :5], y))
    with pytest.raises(ValueError, match="bias"):
        edit_classifier(layer_model, probe, bias="none")


def test_setting_ids_and_label_sources():
    assert edit_setting("zero", "class_mean") == "bias=zero,sign=class_mean"
    assert edit_setting("keep", "global_mean") == "bias=keep,sign=global_mean"
    assert label_sources(["corrupted", True, "true"]) == ["corrupted", "true", "true"]


def test_checkpoint_rows_match_velpic_accuracy(trained):
    config, run, arrays, labels, out = trained
    model = load_model(run, arrays, out / "checkpoints/epoch_2.pt")
    transform = input_transform(arrays, run.model)
    x_train, x_test = torch.from_numpy(arrays.x_train), torch.from_numpy(arrays.x_test)
    rows = pd.DataFrame(edit_checkpoint_rows(model, x_train, x_test, labels, transform, run_keys=run.keys(),
                                             epoch=2, biases=["zero", "keep"],
                                             fit_labels=["corrupted", "true"], sign="class_mean"))
    assert len(rows) == 2 * 2 * 3  # sources x biases x (train/corrupted, train/true, test/true)
    feats = {s: layer_activations(model, x, transform, "fc4") for s, x in (("train", x_train), ("test", x_test))}
    probe = fit_class_vectors(feats["train"], labels.true)
    row = rows[(rows.fit_labels == "true") & (rows.probe_setting == "bias=zero,sign=class_mean")
               & (rows.split == "test")].iloc[0]
    assert row.accuracy == pytest.approx(probe.score(feats["test"], labels.test))
    assert row.n_samples == 100 and row.layer == "output" and row.probe == EDIT_PROBE


def test_edit_run_writes_rows_for_every_probed_checkpoint(trained, tmp_path):
    config, run, arrays, labels, out = trained
    path = edit_run(RunRuntime(config, run, run_dir=out, labels_path=out / "labels.npz"), tmp_path / "e.parquet",
                    metadata={"config": json.dumps({"transfer": config["transfer"]})})
    table = pd.read_parquet(path)
    assert list(table.columns) == list(RESULT_COLUMNS)
    check_result_schema(table)
    assert set(table.epoch) == {0, 2}
    assert set(table.probe) == {"edited_model"} and set(table.layer) == {"output"}
    assert set(table.probe_setting) == {"bias=zero,sign=class_mean", "bias=keep,sign=class_mean"}
    assert set(table.fit_labels) == {"corrupted", "true"}
    pairs = set(zip(table.split, table.target, strict=True))
    assert pairs == {("train", "corrupted"), ("train", "true"), ("test", "true")}
    meta = read_parquet_metadata(path)
    assert json.loads(meta["epochs"]) == [0, 2] and "transfer" in meta["config"]
    # storage.epochs selects the probed checkpoints; the edit follows it
    only = edit_run(RunRuntime({**config, "storage": {**config["storage"], "epochs": [2]}}, run, run_dir=out),
                    tmp_path / "f.parquet")
    assert set(pd.read_parquet(only).epoch) == {2}
