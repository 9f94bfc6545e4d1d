"""Issue 17, section 1, end to end: a user's ImageFolder of real images and a torchvision model by
name run through the workflow like any other run (labels, training, extraction, probes, table), and
the labels family judges the labels as given (truth unknown): the ranked suspects with their files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits


def write_image_folder(root, per_class, offset):
    """``root/<class>/img_<i>.png|jpg``: real 8x8 digits 0, 1, 2 scaled to 12x12."""
    digits = load_digits()
    for label, cls in enumerate(("zero", "one", "two")):
        (root / cls).mkdir(parents=True)
        for i, image in enumerate(digits.images[digits.target == label][offset:offset + per_class]):
            pixels = Image.fromarray(np.rint(image * 255 / 16).astype(np.uint8)).resize((12, 12))
            pixels.save(root / cls / f"img_{i}.{'png' if i % 2 else 'jpg'}")


@pytest.mark.slow
def test_user_image_folder_and_torchvision_model_run_end_to_end(tmp_path, snakemake, tiny_config):
    write_image_folder(tmp_path / "images" / "train", per_class=8, offset=0)
    write_image_folder(tmp_path / "images" / "test", per_class=4, offset=8)
    config = {
        **tiny_config,
        "data": {"custom": {"pets": {"format": "imagefolder", "train": "images/train", "test": "images/test",
                                     "image_size": 16, "channels": 1}}},
        "datasets": ["pets"],
        "models": ["tv_resnet18"],
        "corruptions": [0.0, 0.5],   # 0: the labels as given (truth unknown); 0.5: corrupted on top
        "train": {"max_epochs": 2, "target_train_accuracy": 1.0, "num_threads": 1,
                  "custom_models": {"tv_resnet18": {"torchvision": "resnet18", "batch_size": 8,
                                                    "layers": ["layer3", "layer4", "avgpool"]}}},
        "storage": {"epochs": [2]},
        "labels": {"enabled": True, "pairs": [["pets", "tv_resnet18"]], "corruptions": [0.0],
                   "layers": ["avgpool"], "folds": 3},
    }
    snakemake("--cores", "2", "results/tables/probes.parquet", "labels", workdir=tmp_path, config=config)
    table = pd.read_parquet(tmp_path / "results/tables/probes.parquet")
    assert set(table.dataset) == {"pets"} and set(table.model) == {"tv_resnet18"}
    assert set(table.corruption) == {0.0, 0.5} and set(table.epoch) == {2}
    assert set(table[table.probe == "masc"].layer) == {"layer3", "layer4", "avgpool"}
    assert (table.n_samples[table.split == "test"] == 12).all()
    assert (table.n_samples[table.split == "train"] == 24).all()
    labels = np.load(tmp_path / "results/runs/pets/tv_resnet18/c0.5/s0/standard/labels.npz")
    assert bool(labels["truth_known"]) and labels["true"].tolist() == [0] * 8 + [1] * 8 + [2] * 8

    # the labels as given: nothing to score against, so metrics are empty and the suspects are ranked
    run = tmp_path / "results/runs/pets/tv_resnet18/c0/s0/standard"
    assert not bool(np.load(run / "labels.npz")["truth_known"])
    detection = pd.read_parquet(tmp_path / "results/tables/labels_detection.parquet")
    assert set(detection.layer) == {"avgpool"} and not detection.truth_known.any()
    assert detection.auroc.isna().all() and (detection.n_train == 24).all()
    suspects = pd.read_csv(run / "labels/suspects.csv")
    files = {str(p.relative_to(tmp_path)) for p in (tmp_path / "images/train").rglob("img_*")}
    assert {"detector", "rank", "file", "given", "suggested", "score"} <= set(suspects.columns)
    assert set(suspects.file) <= files and suspects.wrong.isna().all()
    assert (tmp_path / "results/plots/labels/pets/tv_resnet18/suspects_c0_s0_standard.png").stat().st_size > 0


def test_an_empty_class_folder_stops_the_workflow_before_any_job(tmp_path, snakemake, tiny_config):
    """An empty class folder: one error naming it, from the Snakefile's config check (the other bad
    inputs go through the same pipeline.config.validate_config: tests/core/test_user_*.py)."""
    write_image_folder(tmp_path / "images", per_class=4, offset=0)
    (tmp_path / "images" / "three").mkdir()
    config = {**tiny_config, "datasets": ["pets"], "models": ["tv_resnet18"],
              "data": {"custom": {"pets": {"format": "imagefolder", "train": "images", "test_fraction": 0.25}}},
              "train": {**tiny_config["train"],
                        "custom_models": {"tv_resnet18": {"torchvision": "resnet18", "layers": ["layer4"]}}}}
    proc = snakemake("-n", workdir=tmp_path, config=config, check=False)
    assert proc.returncode != 0
    assert "invalid configuration: config key 'data.custom': Dataset 'pets' (data.custom.pets): class folder " \
           "images/three holds no image" in proc.output, proc.output[-3000:]
    assert "Job stats" not in proc.output and not (tmp_path / "results").exists()

