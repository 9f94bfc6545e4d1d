"""The anisotropy-consistency relation and the SGD-noise-by-epoch figure (issue 16, Figs. 8 / 15)."""

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import BASE_VARIANT
from pipeline.core.tables import read_parquet_metadata, read_table
from pipeline.dynamics import tables as T
from pipeline.dynamics.anisotropy import (
    ANISOTROPY,
    ANISOTROPY_CORRELATION,
    anisotropy_rows,
    correlation_rows,
)
from pipeline.dynamics.noise_figures import anisotropy_consistency, sgd_noise_epochs

CORRUPTIONS = (0.0, 0.5, 0.8)
EPOCHS = (50, 150)


def _keys(c):
    return {"dataset": "digits", "model": "mlp", "corruption": c, "seed": 0, "variant": BASE_VARIANT}


def _sgd_rows():
    """Three runs; the SGD noise gets less anisotropic with label noise (PR 2, 4, 8 against the
    Gaussian's 16); the parameter control is rejected for one input in four."""
    rows = []
    for c, pr in zip(CORRUPTIONS, (2.0, 4.0, 8.0), strict=True):
        for epoch in EPOCHS:
            for source, prs in (("sgd", pr), ("gaussian", 16.0), ("param_isotropic", 15.0)):
                for m in range(4):
                    p = {"sgd": 0.001, "gaussian": 0.5, "param_isotropic": 0.01 if m == 0 else 0.6}[source]
                    rows.append({**_keys(c), "epoch": epoch, "depth": "fc1", "input_index": m,
                                 "source": source, "n_updates": 8, "dim": 128, "dim_tested": 60 + m,
                                 "n_dropped": 68 - m, "drop_rule": "dead", "lr": 0.1 if epoch == 50 else 0.01,
                                 "batch_size": 4, "momentum": 0.0, "momentum_mode": "none",
                                 "weight_decay": 0.0, "trace": 10.0, "eig_1": 10.0 / prs, "eig_2": 1.0,
                                 "eig_3": 0.5, "eig_4": 0.25, "eig_5": 0.1, "topk_energy": 0.9 / prs,
                                 "participation_ratio": prs, "john_u": 16.0 / prs, "p_value": p,
                                 "ledoit_wolf_z": 0.0, "srivastava_z": 0.0, "spatial_sign_u": 0.0,
                                 "spatial_sign_p_value": 0.5, "john_u_all": 50.0, "p_value_all": 0.005,
                                 "n_resamples": 199})
    return T.sgd_noise_frame(rows)


def _pointwise_rows():
    """Consistency falls with label noise: 0.9, 0.7, 0.5 on average, two windows per run."""
    rows = []
    for c, mean in zip(CORRUPTIONS, (0.9, 0.7, 0.5), strict=True):
        for start, deep in ((0, 20), (10, 20)):
            for i, v in enumerate((mean - 0.1, mean + 0.1)):
                rows.append({**_keys(c), "depth": "fc1", "deep_epoch": deep, "window_start": start,
                             "reference": "paper", "split": "test", "subset": "all", "sample_index": i,
                             "consistency": v, "n_epochs": 5, "dense": False})
    return T.pointwise_frame(rows)


def test_anisotropy_rows_and_correlations():
    table = anisotropy_rows(_sgd_rows(), _pointwise_rows())
    assert list(table.columns) == list(ANISOTROPY.columns)
    assert len(table) == 3 * 2 * 2                                # runs x epochs x windows
    r = table[(table.corruption == 0.5) & (table.epoch == 50) & (table.window == 0)].iloc[0]
    assert r.pr_ratio == pytest.approx(16.0 / 4.0) and r.pr_sgd == 4.0 and r.pr_gaussian == 16.0
    assert r.mean_consistency == pytest.approx(0.7) and r.n_samples == 2 and r.n_inputs == 4
    assert r.reject_rate_sgd == 1.0 and r.reject_rate_gaussian == 0.0
    assert r.reject_rate_param_isotropic == 0.25 and r.lr == 0.1
    assert r.john_u_sgd == pytest.approx(4.0) and (r.window_start, r.deep_epoch) == (0, 20)
    corr = correlation_rows(table)
    assert list(corr.columns) == list(ANISOTROPY_CORRELATION.columns)
    pr = corr[corr.measure == "pr_ratio"]
    assert len(pr) == 2 * 2 and (pr.n_runs == 3).all()
    # more anisotropic SGD noise <-> more consistent runs, as built
    np.testing.assert_allclose(pr["spearman_rho"], 1.0)
    np.testing.assert_allclose(corr[corr.measure == "topk_energy_sgd"]["spearman_rho"], 1.0)
    assert set(pr["epochs"]) == {"50", "150"} and set(table["epoch_index"]) == {0, 1}
    # "final" differs between runs: epochs pair up by ordinal
    shifted = _sgd_rows()
    shifted.loc[shifted.corruption == 0.8, "epoch"] += 7
    corr2 = correlation_rows(anisotropy_rows(shifted, _pointwise_rows()))
    assert (corr2.n_runs == 3).all() and "150,157" in set(corr2["epochs"])
    # fewer than three runs: no correlation, not a spurious +-1
    two = correlation_rows(table[table.corruption < 0.8])
    assert two["spearman_rho"].isna().all() and (two.n_runs == 2).all()
    # a depth without point-wise rows gives no row; empty inputs give an empty table
    assert anisotropy_rows(_sgd_rows(), _pointwise_rows().assign(depth="fc2")).empty
    assert anisotropy_rows(_sgd_rows().iloc[:0], _pointwise_rows()).empty


def _by_gid(fig):
    return {line.get_gid(): line for ax in fig.axes for line in ax.lines if line.get_gid()}


def test_figures_draw_the_tables():
    sgd = _sgd_rows()
    fig = sgd_noise_epochs(sgd, "digits", "mlp")
    assert len([ax for ax in fig.axes if ax.has_data()]) == len(CORRUPTIONS) * len(EPOCHS)
    lines = _by_gid(fig)
    # eigenvalues over the trace, mean over the inputs: (10 / PR) / 10 for eig_1
    sgd_line = lines["spectrum|0.5|fc1|150|sgd"]
    np.testing.assert_allclose(sgd_line.get_ydata(), [0.25, 0.1, 0.05, 0.025, 0.01])
    assert "spectrum|0|fc1|50|gaussian" in lines and "spectrum|0|fc1|50|param_isotropic" in lines
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "epoch 150" in titles and "lr 0.01" in titles and "D'=62 of D=128" in titles
    assert "no sgd_noise rows" in sgd_noise_epochs(sgd, "digits", "cnn").axes[0].texts[0].get_text()

    table = anisotropy_rows(sgd, _pointwise_rows())
    fig = anisotropy_consistency(table, correlation_rows(table))
    pts = _by_gid(fig)
    # each run's last window: one point per run and epoch
    assert len([g for g in pts if g.startswith("run|")]) == 3 * 2
    np.testing.assert_allclose(pts["run|0.8|0|150"].get_xdata(), [16.0 / 8.0])
    np.testing.assert_allclose(pts["run|0.8|0|150"].get_ydata(), [0.5])
    assert "Spearman rho 1.00 (n=3)" in fig.axes[0].get_title()


def test_stage_writes_tables_and_figures(tmp_path):
    from pipeline.core.tables import write_table
    from pipeline.dynamics.stages import dynamics_anisotropy

    sgd, point = tmp_path / "sgd.parquet", tmp_path / "point.parquet"
    write_table(_sgd_rows(), sgd, T.SGD_NOISE, {"choice.x": "y"})
    write_table(_pointwise_rows(), point, T.POINTWISE, {})
    out, corr = tmp_path / "a.parquet", tmp_path / "c.parquet"
    fig, epochs_fig = tmp_path / "rel.png", tmp_path / "digits/mlp/sgd_noise_epochs.png"
    dynamics_anisotropy(sgd, point, out, corr, fig, pairs=["digits/mlp"], epoch_figures=[epochs_fig])
    assert len(read_table(out, ANISOTROPY)) == 12 and len(read_table(corr, ANISOTROPY_CORRELATION)) == 12
    assert "pr_ratio" in read_parquet_metadata(out)["anisotropy"]
    assert fig.stat().st_size > 0 and epochs_fig.stat().st_size > 0
    from pipeline.core.config import ConfigError
    with pytest.raises(ConfigError, match="--pairs has 1 entries but --epoch-figures 0"):
        dynamics_anisotropy(sgd, point, out, corr, fig, pairs=["digits/mlp"])


def test_workflow_targets_follow_sgd_noise():
    from pipeline.workflow import dynamics_targets, sgd_noise_outputs

    cfg = {"dynamics": {"enabled": True, "pairs": [["digits", "mlp"]], "sgd_noise": {"enabled": True}},
           "plots": {"format": "png"}}
    outs = sgd_noise_outputs(cfg)
    assert outs == ["results/tables/dynamics_anisotropy.parquet",
                    "results/tables/dynamics_anisotropy_correlation.parquet",
                    "results/plots/dynamics/anisotropy_consistency.png",
                    "results/plots/dynamics/digits/mlp/sgd_noise_epochs.png"]
    cfg["dynamics"]["sgd_noise"]["enabled"] = False
    assert sgd_noise_outputs(cfg) == []
    from pipeline.core.config import apply_schema

    full = apply_schema({"datasets": ["digits"], "models": ["mlp"],
                         "dynamics": {"enabled": True, "pairs": [["digits", "mlp"]],
                                      "sgd_noise": {"enabled": True, "epoch": [4, "final"]}}})
    assert set(sgd_noise_outputs(full)) <= set(dynamics_targets(full))
    assert full["dynamics"]["sgd_noise"]["epoch"] == [4, "final"]


def test_old_scalar_epoch_is_still_accepted_and_unsaved_epochs_are_refused():
    from pipeline.config import validate_config
    from pipeline.core.config import ConfigError, apply_schema

    cfg = apply_schema({"dynamics": {"sgd_noise": {"epoch": "final"}}})
    assert cfg["dynamics"]["sgd_noise"]["epoch"] == "final"
    assert apply_schema({})["dynamics"]["sgd_noise"]["epoch"] == ["final"]
    # runs saving epochs 0, 2, ..., 10: a list naming an unsaved epoch is refused before any job
    config = {"datasets": ["digits"], "models": ["mlp"], "corruptions": [0.0], "seeds": [0],
              "train": {"max_epochs": 10, "checkpoints": {"early_every": 2, "early_until": 10}},
              "arithmetic": {"enabled": False},
              "dynamics": {"enabled": True, "pairs": [["digits", "mlp"]],
                           "sgd_noise": {"enabled": True, "epoch": [4, "final"]}}}
    assert validate_config(config)["dynamics"]["sgd_noise"]["epoch"] == [4, "final"]
    config["dynamics"]["sgd_noise"]["epoch"] = [4, 5, "final"]
    with pytest.raises(ConfigError, match=r"'dynamics.sgd_noise.epoch': \[5\] never saved"):
        validate_config(config)


def test_frame_is_the_table_schema():
    df = _sgd_rows()
    assert isinstance(df, pd.DataFrame) and set(T.SGD_NOISE_COLUMN_DOCS) <= set(T.SGD_NOISE_COLUMNS) | {"eig_1"}
    assert "Appendix E" in T.SGD_NOISE_COLUMN_DOCS["john_u"]
