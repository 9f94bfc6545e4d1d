"""The labels family through Snakemake (workflow/rules/labels.smk) on the tiny config: per probed
epoch a detection job on the run's activation file, the run's table, the ranked suspects and their
figure, the repair, the tables across runs and the pair's figures; and bad `labels` settings
stopped before any job."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest

TINY_LABELS = {"enabled": True, "pairs": [["digits", "mlp"]], "corruptions": [0.8], "layers": ["fc2"],
               "folds": 3, "repair": {"enabled": True}}


def _config(tiny_config: dict) -> dict:
    return {**tiny_config, "labels": TINY_LABELS,
            "transfer": {"edited_model": {"enabled": False}, "intervention": {"enabled": False},
                         "relabel_retrain": {"enabled": False}}}


@pytest.mark.slow
def test_labels_target_end_to_end(tmp_path, snakemake, tiny_config):
    config = _config(tiny_config)
    snakemake("labels", "--cores", "2", workdir=tmp_path, config=config)
    results = tmp_path / "results"
    detection = pd.read_parquet(results / "tables/labels_detection.parquet")
    epochs = sorted(detection.epoch.unique())
    run = results / "runs/digits/mlp/c0.8/s0/standard"
    # one detection job per probed (saved, here every) epoch of the 0.8 run, none for the clean run
    assert len(epochs) >= 2 and set(detection.corruption) == {0.8}
    assert {f.name for f in (run / "labels").glob("detect_epoch_*.parquet")} == {
        f"detect_epoch_{e}.parquet" for e in epochs}
    # every detector of the default list and cleanlab, at every epoch, on the one layer asked for
    assert set(detection.detector) == {"masc", "velpic", "ncm", "logreg", "cleanlab"}
    assert set(detection.layer) == {"fc2"} and len(detection) == 5 * len(epochs)
    # the truth is known (the pipeline's own corruption): 80 % resampled, 72 % of labels wrong
    assert detection.truth_known.all() and (detection.n_wrong / detection.n_train).between(0.6, 0.85).all()
    # a real signal: the cross-fitted probes rank wrong labels above right ones
    assert detection[detection.detector != "cleanlab"].auroc.max() > 0.7

    suspects = pd.read_csv(run / "labels/suspects.csv")
    # per detector (each at its own epoch and layer), the flagged examples by decreasing score
    assert set(suspects.detector) == set(detection.detector)
    for _, ranked in suspects.groupby("detector"):
        assert list(ranked["rank"]) == list(range(1, len(ranked) + 1)) and ranked.score.is_monotonic_decreasing
    assert (tmp_path / "results/plots/labels/digits/mlp/suspects_c0.8_s0_standard.png").stat().st_size > 0
    for figure in ("pr_curves", "detection_epochs", "repair"):
        assert (tmp_path / f"results/plots/labels/digits/mlp/{figure}.png").stat().st_size > 0

    repair = pd.read_parquet(results / "tables/labels_repair.parquet")
    assert {"given", "true", "relabel", "remove"} <= set(repair["mode"])
    assert set(repair[repair["mode"] == "relabel"].detector) >= {"cleanlab"}
    assert (repair[repair["mode"] == "true"].label_accuracy_after == 1.0).all()

    # Snakemake's report of this target embeds every figure the family drew (workflow/report/labels/)
    snakemake("labels", "--report", str(tmp_path / "report.html"), workdir=tmp_path, config=config)
    html = (tmp_path / "report.html").read_text()
    figures = sorted((results / "plots/labels").rglob("*.png"))
    assert len(figures) == 4
    for png in figures:
        assert base64.b64encode(png.read_bytes()).decode() in html, png


@pytest.mark.parametrize("bad, message", [
    ({"pairs": [["digits", "cnn"]]}, r"config key 'labels\.pairs\[0\]': \['digits', 'cnn'\] is not a pair of the grid"),
    ({"corruptions": [0.3]}, r"config key 'labels\.corruptions': none of \[0\.3\] is a degree of the grid"),
    ({"layers": ["fc9"]}, r"config key 'labels\.layers': 'fc9' is not a layer written to the activation files"),
    ({"detectors": [{"name": "masc", "params": {"variance": 2.5}}]}, r"config key 'labels\.detectors\[0\]' \(masc\)"),
    ({"folds": 1}, r"config key 'labels\.folds'"),
    ({"cleanlab": {"layers": True}}, r"unknown config key\(s\) \['layers'\] in 'labels\.cleanlab'"),
])
def test_bad_labels_config_stops_before_any_job(tmp_path, snakemake, tiny_config, bad, message):
    config = _config(tiny_config)
    config["labels"] = {**TINY_LABELS, **bad}
    proc = snakemake("-n", "labels", workdir=tmp_path, config=config, check=False)
    assert proc.returncode != 0
    assert re.search(r"^invalid configuration: " + message, proc.output, re.M), proc.output[-3000:]
    assert "Job stats" not in proc.output
