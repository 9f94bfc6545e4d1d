"""Detection of wrong training labels (issue 17, section 2): cross-fitted probes and cleanlab.

Synthetic data whose noise is known (cleanlab's own testing style), and a real activation file of
the pipeline's extraction code for the stages and the documented command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import Run, apply_schema
from pipeline.core.tables import read_parquet_metadata, read_table, write_table
from pipeline.labels.detect import (
    Detection,
    cleanlab_detection,
    cleanlab_layer,
    crossfit_probe,
    detection_metrics,
)
from pipeline.labels.tables import DETECTION, LABEL_SCORES, detection_frame, scores_frame

REPO = Path(__file__).resolve().parents[2]
RUN = Run("digits", "mlp", 0.4, 0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One BLAS / torch thread: these fits are tiny, and thread pools of parallel test workers on a
    shared machine otherwise fight over the cores (a 0.5 s fit takes a minute)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def noisy_blobs(n=400, d=30, k=4, noise=0.3, seed=0):
    """Gaussian class blobs, labels flipped to another class with probability ``noise``."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(k), n // k)
    X = 3.0 * rng.normal(size=(k, d))[true] + rng.normal(size=(n, d))
    given = true.copy()
    flip = rng.random(n) < noise
    given[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    return X, given, true


def memorizing_layer(n=300, d=120, k=5, rank=4, noise=0.4, seed=0):
    """Each class on its own low-rank subspace (the structure MASC looks for); a mislabeled
    example also carries a private direction of its own, as a layer that has memorized it does:
    that direction is all that ties it to its given class."""
    rng = np.random.default_rng(seed)
    bases = [np.linalg.qr(rng.normal(size=(d, rank)))[0] for _ in range(k)]
    true = np.repeat(np.arange(k), n // k)
    X = np.stack([bases[c] @ (3 * rng.normal(size=rank)) for c in true]) + 0.05 * rng.normal(size=(n, d))
    given = true.copy()
    flip = rng.random(n) < noise
    given[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    wrong = given != true
    X[wrong] += rng.normal(size=(wrong.sum(), d))
    return X, given, true


def test_crossfit_finds_the_wrong_labels_an_in_sample_probe_blesses():
    """Fitted in-sample, MASC's subspace of a class contains the memorized wrong examples it was
    fitted on and confirms their labels; held out, they are judged by the others' subspaces."""
    from pipeline.probes import make_probe

    X, given, true = memorizing_layer()
    wrong = given != true
    in_sample = make_probe("masc", variance=0.99).fit(X, given).predict(X) != given
    crossfit = crossfit_probe(X, given, "masc", {"variance": 0.99}, folds=5, seed=0)
    m = detection_metrics(crossfit, wrong)
    in_sample_recall = (in_sample & wrong).sum() / wrong.sum()
    assert in_sample_recall < 0.1, in_sample_recall
    assert m["recall"] > 0.8 and m["auroc"] > 0.95, m
    # the suggested label of most found wrong examples is their true class
    found = crossfit.flagged & wrong
    assert np.mean(crossfit.suggested[found] == true[found]) > 0.6


@pytest.mark.parametrize("name,params", [("velpic", {"sign": "class_mean"}), ("ncm", {}), ("logreg", {}),
                                         ("knn", {})])
def test_probe_detectors_on_known_noise(name, params):
    X, given, true = noisy_blobs()
    wrong = given != true
    det = crossfit_probe(X, given, name, params, folds=5, seed=0)
    m = detection_metrics(det, wrong)
    assert m["auroc"] > 0.95 and m["recall"] > 0.8 and m["precision"] > 0.7, (name, m)
    assert det.setting == __import__("pipeline.probes", fromlist=["setting_id"]).setting_id(name, params)
    # a positive margin of another class over the given one flags, a negative one does not (a tie,
    # margin 0, is flagged when argmax picks the other class); held-out accuracy on the given
    # labels is the fraction not flagged
    assert det.flagged[det.score > 0].all() and not det.flagged[det.score < 0].any()
    assert det.heldout_accuracy == pytest.approx(1 - det.flagged.mean())
    assert det.score.dtype == np.float64 and det.suggested.dtype == np.int64


def test_cleanlab_layer_is_cleanlab_run_its_own_way():
    """The same flags and scores as cleanlab's CleanLearning given the same classifier, folds and
    seed: cleanlab's defaults, not a re-implementation."""
    from cleanlab.classification import CleanLearning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, given, true = noisy_blobs(seed=1)
    det = cleanlab_layer(X, given, folds=5, seed=3)
    issues = CleanLearning(make_pipeline(StandardScaler(), LogisticRegression()), seed=3,
                           cv_n_folds=5).find_label_issues(X, given)
    assert np.array_equal(det.flagged, issues["is_label_issue"].to_numpy())
    np.testing.assert_allclose(det.score, 1 - issues["label_quality"].to_numpy(), atol=1e-9)
    assert np.array_equal(det.suggested, issues["predicted_label"].to_numpy())
    assert (det.detector, det.setting) == ("cleanlab", "layer")
    assert detection_metrics(det, given != true)["auroc"] > 0.95


def test_cleanlab_detection_takes_any_out_of_fold_probabilities():
    rng = np.random.default_rng(0)
    given = np.repeat(np.arange(3), 20)
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), given] = 0.9
    bad = rng.choice(60, 6, replace=False)
    probs[bad] = 0.05
    probs[bad, (given[bad] + 1) % 3] = 0.9
    det = cleanlab_detection(given, probs, setting="network")
    assert set(np.flatnonzero(det.flagged)) == set(bad)
    assert np.array_equal(det.suggested[bad], (given[bad] + 1) % 3)
    with pytest.raises(ValueError, match="pred_probs"):
        cleanlab_detection(given, probs[:10], setting="network")


def test_detection_metrics_by_hand_and_undefined():
    det = Detection("ncm", "", score=[0.9, 0.8, 0.1, -0.2], suggested=[1, 1, 0, 0],
                    flagged=[True, True, False, False], heldout_accuracy=0.5, cpu_seconds=0, wall_seconds=0)
    m = detection_metrics(det, np.array([True, False, True, False]))
    assert (m["precision"], m["recall"], m["f1"], m["n_flagged"], m["n_wrong"]) == (0.5, 0.5, 0.5, 2, 2)
    assert m["auroc"] == pytest.approx(0.75)
    unknown = detection_metrics(det, None)
    assert unknown["n_flagged"] == 2 and all(np.isnan(unknown[k]) for k in ("precision", "auroc", "n_wrong"))
    nothing_wrong = detection_metrics(det, np.zeros(4, bool))
    assert np.isnan(nothing_wrong["recall"]) and np.isnan(nothing_wrong["auroc"])


def test_bad_labels_refused_before_any_fit():
    X, given, _ = noisy_blobs(n=40)
    with pytest.raises(ValueError, match="fewer given labels"):
        crossfit_probe(X, np.r_[given[:-2], 7, 7], "ncm", {}, folds=5, seed=0)
    with pytest.raises(ValueError, match="one class only"):
        crossfit_probe(X, np.zeros(40, int), "ncm", {}, folds=5, seed=0)
    with pytest.raises(ValueError, match="given labels for"):
        crossfit_probe(X, given[:-1], "ncm", {}, folds=5, seed=0)
    with pytest.raises(ValueError, match="unknown parameter"):
        crossfit_probe(X, given, "masc", {"energy": 0.9}, folds=5, seed=0)


def test_tables_round_trip_with_and_without_truth(tmp_path):
    X, given, true = noisy_blobs(n=80)
    dets = [crossfit_probe(X, given, "ncm", {}, folds=4, seed=0), cleanlab_layer(X, given, folds=4, seed=0)]
    known = detection_frame(RUN, 3, "fc2", dets, given != true)
    unknown = detection_frame(RUN, 3, "fc2", dets, None)
    assert known["truth_known"].all() and known["auroc"].notna().all()
    assert (~unknown["truth_known"]).all() and unknown["auroc"].isna().all() and unknown["n_wrong"].isna().all()
    scores = scores_frame(RUN, 3, "fc2", dets, given, None)
    assert len(scores) == 160 and scores["wrong"].isna().all()
    for df, schema in ((unknown, DETECTION), (scores, LABEL_SCORES)):
        path = tmp_path / f"{schema.name}.parquet"
        write_table(df, path, schema, {"run": json.dumps(RUN.keys())})
        back = read_table(path, schema)
        pd.testing.assert_frame_equal(back, df)
        assert read_parquet_metadata(path)["table_schema"] == schema.name


# ----------------------------------------------------------------------------- a real activation file

@pytest.fixture(scope="module")
def activation_file(tmp_path_factory):
    """A real activation file of the pipeline's extraction code: an MLP briefly trained on 150
    digits whose labels are 40 % corrupted, at its hidden layers."""
    import torch

    from pipeline.core.activations import extract_activations
    from pipeline.core.datasets import load_dataset, subsample
    from pipeline.core.labels import make_run_labels, save_labels
    from pipeline.core.models import build_model
    from pipeline.core.runtime import input_transform

    folder = tmp_path_factory.mktemp("acts")
    arrays = subsample(load_dataset("digits"), 150, 50, seed=0)
    labels = make_run_labels(arrays, dataset="digits", corruption=0.4, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, image_size=8, num_classes=10)
    transform = input_transform(arrays, "mlp")
    x = transform(torch.from_numpy(arrays.x_train))
    y = torch.from_numpy(labels.corrupted)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):  # a few full-batch steps: the hidden layers learn the classes
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path = folder / "epoch_3.h5"
    extract_activations(model.eval(), arrays.x_train, arrays.x_test, labels, transform, path,
                        batch_size=64, attrs={"epoch": 3, "run": json.dumps(RUN.keys())})
    save_labels(labels, folder / "labels.npz")
    return path, labels


def _config(**labels) -> dict:
    section = {"folds": 3, "detectors": [{"name": "masc", "params": {"variance": 0.9}}, {"name": "ncm"}],
               **labels}
    return {"labels": section}


@pytest.fixture(scope="module")
def detected(activation_file, tmp_path_factory):
    """The detect stage on the real activation file: (detection table, label_scores table)."""
    from pipeline.labels.stages import detect

    path, _ = activation_file
    folder = tmp_path_factory.mktemp("detected")
    out, scores = folder / "detection.parquet", folder / "scores.parquet"
    detect(_config(layers=["fc1", "fc2"]), RUN, 3, path, path.parent / "labels.npz", out, scores)
    return out, scores


def test_detect_stage_on_a_run(activation_file, detected):
    _, labels = activation_file
    out, scores = detected
    table = read_table(out, DETECTION)
    assert set(table["layer"]) == {"fc1", "fc2"} and set(table["detector"]) == {"masc", "ncm", "cleanlab"}
    assert table["truth_known"].all() and (table["n_wrong"] == int(labels.changed.sum())).all()
    assert table["auroc"].between(0, 1).all() and (table["n_train"] == 150).all()
    per_example = read_table(scores, LABEL_SCORES)
    assert len(per_example) == 6 * 150
    assert np.array_equal(per_example["wrong"].to_numpy(bool)[:150], labels.changed)
    meta = read_parquet_metadata(out)
    assert json.loads(meta["config"])["labels"]["folds"] == 3 and json.loads(meta["epoch"]) == 3


def test_suspects_stage_ranks_and_draws(activation_file, detected, tmp_path):
    """suspects.csv: each detector at its reading of highest held-out accuracy, its flagged
    examples by decreasing score; suspects.png drawn from the run's own images."""
    from pipeline.labels.stages import suspects

    out, scores = detected
    config = {**_config(suspects={"top": 10, "images_per_class": 3}),
              "data": {"train_subset": 150, "test_subset": 50}}
    csv, png = tmp_path / "suspects.csv", tmp_path / "suspects.png"
    log = tmp_path / "train_log.parquet"
    pd.DataFrame({**{k: [v] * 2 for k, v in RUN.keys().items()}, "epoch": [3, 9],
                  "test_acc": [0.8, 0.6]}).to_parquet(log)
    suspects(config, RUN, [out], [scores], csv, png, log=log)
    table = pd.read_csv(csv, keep_default_na=False)
    detection = read_table(out, DETECTION)
    per_example = read_table(scores, LABEL_SCORES)
    assert set(table["detector"]) == {"masc", "ncm", "cleanlab"}
    for (detector, _setting), rows in table.groupby(["detector", "setting"]):
        readings = detection[detection["detector"] == detector]
        best = readings.loc[readings["heldout_accuracy"].idxmax()]
        assert (rows["layer"] == best["layer"]).all()
        assert list(rows["rank"]) == list(range(1, len(rows) + 1)) and len(rows) <= 10
        assert rows["score"].is_monotonic_decreasing
        mine = per_example[(per_example["detector"] == detector) & (per_example["layer"] == best["layer"])]
        flagged = mine.set_index("index")["flagged"]
        assert flagged.loc[rows["index"]].all()
        assert len(rows) == min(10, int(flagged.sum()))
    assert (table["file"] == "").all()  # digits has no image files
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] > 200 and image.size[1] > 150


def test_detection_figures_from_tables(tmp_path):
    """PR curves (each detector at its reading of highest AUROC) and AUROC over epochs beside the
    test accuracy, from per-run, per-epoch tables of two corruption degrees."""
    from pipeline.core.tables import provenance, write_parquet
    from pipeline.labels.figures import best_by_auroc, read_scores_for
    from pipeline.labels.stages import detection_figures

    detections, score_paths, logs = [], [], []
    for corruption in (0.2, 0.4):
        run = Run("blobs", "toy", corruption, 0)
        for epoch in (1, 2, 3):
            X, given, true = noisy_blobs(n=120, noise=corruption, seed=epoch)
            X = X + (3 - epoch) * 4 * np.random.default_rng(epoch).normal(size=X.shape)  # later = cleaner
            dets = [crossfit_probe(X, given, "ncm", {}, folds=3, seed=0),
                    crossfit_probe(X, given, "velpic", {}, folds=3, seed=0)]
            meta = provenance({}, run=run.keys(), epoch=epoch)
            d, s = tmp_path / f"d{corruption}_{epoch}.parquet", tmp_path / f"s{corruption}_{epoch}.parquet"
            write_table(detection_frame(run, epoch, "hidden", dets, given != true), d, DETECTION, meta)
            write_table(scores_frame(run, epoch, "hidden", dets, given, given != true), s, LABEL_SCORES, meta)
            detections.append(d)
            score_paths.append(s)
        log = pd.DataFrame({**{k: [v] * 3 for k, v in run.keys().items()}, "epoch": [1, 2, 3],
                            "test_acc": [0.5, 0.7, 0.6]})
        logs.append(tmp_path / f"log{corruption}.parquet")
        write_parquet(log, logs[-1])
    table = pd.concat([read_table(p, DETECTION) for p in detections])
    best = best_by_auroc(table)
    assert (best["epoch"] == 3).all()  # the cleanest epoch wins here
    wanted = read_scores_for(score_paths, best)
    assert len(wanted) == 4 * 120 and set(wanted["epoch"]) == {3}
    pr, epochs = tmp_path / "pr.png", tmp_path / "epochs.png"
    detection_figures([str(p) for p in detections], [str(p) for p in score_paths], "blobs", "toy", pr, epochs,
                      logs=[str(p) for p in logs])
    from PIL import Image

    for path in (pr, epochs):
        with Image.open(path) as image:
            assert image.size[0] > 2 * image.size[1] * 0.8  # two panels side by side


def test_detect_stage_refuses_a_layer_not_stored(activation_file, tmp_path):
    from pipeline.core.config import ConfigError
    from pipeline.labels.stages import detect

    path, _ = activation_file
    with pytest.raises(ConfigError, match=r"'conv9'.*layers there: \['fc1'"):
        detect(_config(layers=["conv9"]), RUN, 3, path, path.parent / "labels.npz",
               tmp_path / "d.parquet", tmp_path / "s.parquet")
    assert not list(tmp_path.iterdir())


def test_documented_detect_activations_command_runs(activation_file, tmp_path):
    """The command docs/labels.md shows, run as typed on a real activation file: given labels
    from an .npy (truth unknown), the three outputs."""
    path, labels = activation_file
    text = (REPO / "docs" / "labels.md").read_text()
    lines = [line for line in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in line.replace("\\\n", " ").splitlines() if "detect-activations" in line]
    assert lines, "docs/labels.md shows no detect-activations command"
    (tmp_path / "epoch_3.h5").symlink_to(path)
    np.save(tmp_path / "given.npy", labels.corrupted)
    argv = shlex.split(lines[0])
    assert argv[:3] == ["python", "-m", "pipeline"]
    # one BLAS thread: on a shared CI machine, thread pools of parallel test workers fight
    env = {**os.environ, **{v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    out = tmp_path / argv[argv.index("--out-dir") + 1]
    table = read_table(out / "detection.parquet", DETECTION)
    assert not table["truth_known"].any() and table["auroc"].isna().all()
    suspects = pd.read_csv(out / "suspects.csv")
    assert list(suspects.columns[:7]) == ["detector", "rank", "index", "file", "given", "suggested", "score"]
    assert len(suspects) and (suspects["given"] != suspects["suggested"]).all()
    assert (suspects.groupby("detector")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_detect_activations_bad_labels_file_one_clear_error(activation_file, tmp_path):
    path, labels = activation_file
    np.save(tmp_path / "short.npy", labels.corrupted[:-5])
    done = subprocess.run([sys.executable, "-m", "pipeline", "detect-activations", "--activations", str(path),
                           "--labels", str(tmp_path / "short.npy"), "--out-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "short.npy has 145 given labels" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_file_labels_with_truth_score_against_it(activation_file, tmp_path):
    from pipeline.labels.detect_stage import detect_file

    path, labels = activation_file
    np.savez(tmp_path / "mine.npz", y=labels.corrupted, y_true=labels.true)
    paths = detect_file(apply_schema(_config()), path, tmp_path / "out", tmp_path / "mine.npz", ["fc2"], 0)
    table = read_table(paths["detection"], DETECTION)
    assert table["truth_known"].all() and (table["n_wrong"] == int(labels.changed.sum())).all()
    # a layer that learned the classes ranks the wrong labels well above chance
    assert table["auroc"].min() > 0.7, table[["detector", "auroc"]]


def test_detection_tables_gathers_per_run_tables(tmp_path):
    from pipeline.labels.stages import detection_tables

    X, given, true = noisy_blobs(n=60)
    det = [crossfit_probe(X, given, "ncm", {}, folds=3, seed=0)]
    paths = []
    for epoch in (1, 2):
        paths.append(tmp_path / f"d{epoch}.parquet")
        write_table(detection_frame(RUN, epoch, "fc2", det, given != true), paths[-1], DETECTION,
                    {"config": "{}"})
    detection_tables([str(p) for p in paths], out=tmp_path / "all.parquet")
    table = read_table(tmp_path / "all.parquet", DETECTION)
    assert list(table["epoch"]) == [1, 2]
    assert read_parquet_metadata(tmp_path / "all.parquet")["table_schema"] == "detection"
    # the same run, epoch, layer and detector twice is refused
    with pytest.raises(ValueError, match="duplicate"):
        detection_tables([str(paths[0]), str(paths[0])], out=tmp_path / "twice.parquet")
    assert not (tmp_path / "twice.parquet").exists()


def test_best_readings_near_the_test_accuracy_peak():
    """Once the network has memorized, a linear read-out agrees with the (wrong) given labels on
    held-out folds too: near the test-accuracy peak the early reading is taken, not that one."""
    from pipeline.labels.suspects import best_readings

    def det(name, heldout):
        return Detection(name, "", score=[0.0], suggested=[0], flagged=[False], heldout_accuracy=heldout,
                         cpu_seconds=0, wall_seconds=0)

    table = pd.concat([detection_frame(RUN, 5, "fc1", [det("logreg", 0.41), det("ncm", 0.50)], None),
                       detection_frame(RUN, 5, "fc2", [det("logreg", 0.35), det("ncm", 0.52)], None),
                       detection_frame(RUN, 100, "fc2", [det("logreg", 0.85), det("ncm", 0.56)], None)])
    anywhere = best_readings(table).set_index("detector")
    assert anywhere.loc["logreg", "epoch"] == 100
    early = best_readings(table, epoch=7).set_index("detector")
    assert (early.loc["logreg", "epoch"], early.loc["logreg", "layer"]) == (5, "fc1")
    assert (early.loc["ncm", "epoch"], early.loc["ncm", "layer"]) == (5, "fc2")
    assert list(best_readings(table, epoch=7)["detector"]) == ["ncm", "logreg"]  # best first


def test_suspects_name_the_image_files_where_the_dataset_has_them():
    from pipeline.labels.suspects import suspects_frame

    X, given, true = noisy_blobs(n=60, noise=0.3)
    dets = [crossfit_probe(X, given, "ncm", {}, folds=3, seed=0)]
    detection = detection_frame(RUN, 1, "fc1", dets, None)
    scores = scores_frame(RUN, 1, "fc1", dets, given, None)
    files = [f"train/class_{c}/img_{i}.png" for i, c in enumerate(given)]
    table = suspects_frame(detection, scores, top=5, files=files)
    assert len(table) == min(5, int(dets[0].flagged.sum())) > 0
    assert list(table["file"]) == [files[i] for i in table["index"]]
    assert (table["wrong"].isna()).all()  # truth unknown
    assert (suspects_frame(detection, scores, top=5, files=[None] * 60)["file"] == "").all()
