"""Figures are drawn from tables alone; every registered figure renders from a synthetic table."""

import itertools

import numpy as np
import pandas as pd
import pytest

from pipeline.io import RESULT_COLUMNS, result_frame
from pipeline.plots import FIGURES, FIGURE_NEEDS, draw_figure, figures_for, seed_band

LAYERS = ["fc1", "fc2", "fc3", "fc4"]


def synthetic_tables():
    rng = np.random.default_rng(0)
    rows, log = [], []
    settings = {"masc": ["variance=0.99", "variance=0.5"], "velpic": ["sign=class_mean"],
                "linear": ["epochs=20"]}
    for corruption, seed, variant in itertools.product([0.0, 0.8], [0, 1], ["standard", "intervene-e4"]):
        epochs = [0, 2, 4, 6] if variant == "standard" else [4, 6, 8]
        keys = dict(dataset="digits", model="mlp", corruption=corruption, seed=seed, variant=variant)
        for epoch in range(epochs[0], epochs[-1] + 1):
            log.append({**keys, "epoch": epoch, "loss": 1.0, "train_acc_corrupted": 0.5,
                        "train_acc_true": 0.6, "test_acc": rng.uniform(0.2, 0.9), "lr": 1e-3, "seconds": 0.1})
        for epoch in epochs:
            def row(**kw):
                n = 100
                k = int(rng.integers(10, 100))
                base = dict(layer="output", probe_setting="", fit_labels="corrupted", split="test", target="true")
                rows.append({**keys, "epoch": epoch, **{**base, **kw}, "accuracy": k / n, "n_correct": k,
                             "n_samples": n})
            row(probe="model")
            row(probe="edited_model", probe_setting="bias=zero,sign=class_mean")
            row(probe="edited_model", probe_setting="bias=keep,sign=class_mean")
            for probe, ids in settings.items():
                for sid, layer, source in itertools.product(ids, LAYERS, ["corrupted", "true"]):
                    row(probe=probe, probe_setting=sid, layer=layer, fit_labels=source)
        if variant == "standard":
            for source in ("corrupted", "true"):
                rows.append({**keys, "epoch": 6, "layer": "fc1", "probe": "relabel_retrain",
                             "probe_setting": "protocol=heldout_true,variance=0.99", "fit_labels": source,
                             "split": "test", "target": "true", "accuracy": 0.7, "n_correct": 70,
                             "n_samples": 100})
    return result_frame(rows), pd.DataFrame(log)


def test_seed_band_is_mean_min_max():
    df = pd.DataFrame({"epoch": [0, 0, 1, 1], "seed": [0, 1, 0, 1], "accuracy": [0.2, 0.4, 0.5, 0.9]})
    band = seed_band(df)
    assert band["mean"].tolist() == pytest.approx([0.3, 0.7])
    assert band["min"].tolist() == [0.2, 0.5] and band["max"].tolist() == [0.4, 0.9]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_renders(tmp_path, name):
    table, log = synthetic_tables()
    assert list(table.columns) == list(RESULT_COLUMNS)
    table.to_parquet(tmp_path / "t.parquet")
    log.to_parquet(tmp_path / "l.parquet")
    out = draw_figure(name, tmp_path / "t.parquet", tmp_path / "l.parquet", "digits", "mlp",
                      tmp_path / f"{name}.png", dpi=60)
    assert out.stat().st_size > 5_000
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == [f"{name}.png"]


def test_figures_follow_what_the_table_holds():
    assert figures_for({"masc"}) == ["masc_dynamics", "masc_true_labels", "training"]
    assert "edited_model" not in figures_for({"masc", "velpic"})
    assert set(figures_for(set().union(*FIGURE_NEEDS.values()))) == set(FIGURES)


def test_unknown_figure_and_missing_rows(tmp_path):
    table, log = synthetic_tables()
    table.to_parquet(tmp_path / "t.parquet")
    log.to_parquet(tmp_path / "l.parquet")
    with pytest.raises(ValueError, match="unknown figure"):
        draw_figure("nope", tmp_path / "t.parquet", tmp_path / "l.parquet", "digits", "mlp", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows"):
        draw_figure("masc_dynamics", tmp_path / "t.parquet", tmp_path / "l.parquet", "mnist", "mlp",
                    tmp_path / "x.png")
