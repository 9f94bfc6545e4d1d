"""Issue 16, feature dynamics on the paper's objects: consistency windows of equal length across the
runs compared, figures on the window the config names (memory, Fig. 2; transferability, Figs. 5/13;
Fig. 7), on the training set (Figs. 2-5), and the feature-trajectory PCA / perturbation "induction"
experiment (Figs. 11, 14) on a trained digits MLP."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import validate_config
from pipeline.core.config import BASE_VARIANT, ConfigError
from pipeline.dynamics import figures as FIG
from pipeline.dynamics import tables as T
from pipeline.dynamics.aggregate import welch_rows
from pipeline.dynamics.windows import UnequalWindowsError, check_equal_windows, figure_options

KEYS = {"dataset": "digits", "model": "mlp", "corruption": 0.0, "seed": 0, "variant": BASE_VARIANT}


def _point(windows: dict[tuple[float, int], list[tuple[int, int, int, float]]], split="test") -> pd.DataFrame:
    """Point-wise rows: per (corruption, seed) a list of windows (T1, T2, n_epochs, value), 4 samples."""
    rows = []
    for (c, seed), wins in windows.items():
        for t1, t2, n, v in wins:
            for i in range(4):
                rows.append({**KEYS, "corruption": c, "seed": seed, "depth": "fc1", "deep_epoch": t2,
                             "window_start": t1, "reference": "paper", "split": split, "subset": "all",
                             "sample_index": i, "consistency": v if i else 1.0, "n_epochs": n,
                             "dense": n == abs(t2 - t1) + 1})
    return T.pointwise_frame(rows)


# ----------------------------------------------------------------------------- equal windows

def test_windows_ending_at_final_in_runs_of_different_length_are_refused():
    # the case: [0, final] is [0, 5] with 3 checkpoints in the clean run, [0, 37] with 9 in
    # the noisy ones; the Welch test across seeds used to compare them as "window 0"
    unequal = _point({(0.0, 0): [(0, 5, 3, 0.9)], (0.0, 1): [(0, 5, 3, 0.92)],
                      (0.8, 0): [(0, 37, 9, 0.5)], (0.8, 1): [(0, 37, 9, 0.55)]})
    with pytest.raises(UnequalWindowsError, match=r"\[0, 5\] \(3 checkpoints\).*\[0, 37\] \(9 checkpoints\)"):
        check_equal_windows(unequal)
    with pytest.raises(UnequalWindowsError, match="target_train_accuracy"):
        welch_rows(unequal)
    # same ends, different checkpoint counts (sparse grids): refused too
    with pytest.raises(UnequalWindowsError):
        check_equal_windows(_point({(0.0, 0): [(0, 8, 3, 0.9)], (0.8, 0): [(0, 8, 9, 0.5)]}))
    # a window one run lacks (skipped there) is not compared with another run's other window
    with pytest.raises(UnequalWindowsError):
        check_equal_windows(_point({(0.0, 0): [(0, 4, 2, 0.9)],
                                    (0.8, 0): [(0, 4, 2, 0.5), (8, 12, 5, 0.4)]}))
    equal = _point({(0.0, 0): [(0, 4, 2, 0.9)], (0.0, 1): [(0, 4, 2, 0.92)],
                    (0.8, 0): [(0, 4, 2, 0.5)], (0.8, 1): [(0, 4, 2, 0.55)]})
    check_equal_windows(equal)
    assert len(welch_rows(equal)) == 1


def test_figure_options_name_computed_windows():
    cfg = validate_config({"dynamics": {"enabled": True, "allow_sparse": True,
                                        "windows": [[0, 4], [200, 300], [500, 300]]}})
    assert figure_options(cfg)["memory_window"] == [0, 4]          # null: the first memory window
    assert figure_options(cfg)["transfer_window"] == [500, 300]    # null: the first T1 > T2 window
    cfg["dynamics"]["figures"]["memory_window"] = [200, 300]
    assert figure_options(cfg)["memory_window"] == [200, 300]
    assert figure_options(cfg)["split"] == "train"
    cfg["dynamics"]["figures"]["memory_window"] = [100, 300]
    with pytest.raises(ConfigError, match=r"\[100, 300\] is not a computed window"):
        figure_options(cfg)
    cfg["dynamics"]["figures"]["memory_window"] = [500, 300]
    with pytest.raises(ConfigError, match="memory window has T1 <= T2"):
        figure_options(cfg)
    dense = validate_config({"train": {"checkpoints": {"windows": [[8, 12]]}}, "dynamics": {"enabled": True}})
    assert figure_options(dense)["memory_window"] == [8, 12] and figure_options(dense)["transfer_window"] is None


# ----------------------------------------------------------------------------- figures

def _by_gid(fig):
    out = {}
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.collections, *ax.images]:
            if artist.get_gid():
                out[artist.get_gid()] = artist
    return out


def _titles(fig) -> str:
    return " ".join(ax.get_title() for ax in fig.axes) + " " + (fig._suptitle.get_text() if fig._suptitle else "")


def test_consistency_ecdf_draws_the_named_window_not_the_first():
    point = _point({(0.0, 0): [(0, 4, 2, 0.5), (4, 8, 5, 0.25)], (0.8, 0): [(0, 4, 2, 0.75), (4, 8, 5, 0.0)]})
    fig = FIG.consistency_ecdf(point, "digits", "mlp", window=[4, 8])
    line = _by_gid(fig)["ecdf|test|0.8|all"]
    np.testing.assert_allclose(line.get_xdata(), [0.0, 1.0])   # the [4, 8] values, not [0, 4]'s 0.75
    assert "[4, 8] (5 checkpoints)" in _titles(fig)
    # `final` resolves per run (here from the windows the runs computed)
    fig = FIG.consistency_ecdf(point, "digits", "mlp", window=[4, "final"])
    np.testing.assert_allclose(_by_gid(fig)["ecdf|test|0|all"].get_xdata(), [0.25, 1.0])


def _train_composites() -> pd.DataFrame:
    rows, rng = [], np.random.default_rng(1)
    for c in (0.0, 0.8):
        for T_ in (2, 6):
            for t in range(0, 9, 2):
                for split, sources in (("train", ("corrupted", "true")), ("test", ("true",))):
                    for src in sources:
                        acc = float(rng.uniform(0, 1))
                        rows.append({**KEYS, "corruption": c, "depth": "fc1", "deep_epoch": T_,
                                     "shallow_epoch": t, "split": split, "subset": "all", "label_source": src,
                                     "accuracy": acc, "cross_entropy": 3 * acc, "consistency_vs_deep": 0.5,
                                     "consistency_vs_shallow": 0.5, "n_samples": 10,
                                     "baseline_agreement": 0.5, "drift_ratio": 0.1})
    return T.composite_frame(rows)


def test_memory_and_transferability_figures_draw_the_training_set_and_their_windows():
    comp = _train_composites()
    point = _point({(0.0, 0): [(2, 6, 3, 0.5), (6, 2, 3, 0.25)], (0.8, 0): [(2, 6, 3, 0.75), (6, 2, 3, 0.0)]},
                   split="train")
    mem = FIG.memory(comp, point, "digits", "mlp", window=[2, 6])
    tr = FIG.transferability(comp, point, "digits", "mlp", window=[6, 2])
    for fig, tag, deep, keep in ((mem, "memory", 6, lambda s: s <= 6), (tr, "transfer", 2, lambda s: s >= 2)):
        lines = _by_gid(fig)
        for c in (0.0, 0.8):
            want = comp[(comp.corruption == c) & (comp.deep_epoch == deep) & (comp.split == "train")
                        & (comp.label_source == "corrupted") & keep(comp.shallow_epoch)].sort_values("shallow_epoch")
            for measure in ("accuracy", "cross_entropy"):
                line = lines[f"{tag}|{measure}|{c:g}|fc1"]
                np.testing.assert_array_equal(line.get_xdata(), want["shallow_epoch"].to_numpy())
                np.testing.assert_allclose(line.get_ydata(), want[measure].to_numpy())
        assert "[2, 6] (3 checkpoints)" in _titles(fig)
    np.testing.assert_allclose(_by_gid(mem)["memory_ecdf|0.8|fc1"].get_xdata(), [0.75, 1.0])
    np.testing.assert_allclose(_by_gid(tr)["transfer_ecdf|0.8|fc1"].get_xdata(), [0.0, 1.0])
    # no transferability window configured: the curves only, and the panel says why
    fig = FIG.transferability(comp, point, "digits", "mlp", window=None)
    assert "transfer|accuracy|0|fc1" in _by_gid(fig)
    assert not any(g.startswith("transfer_ecdf") for g in _by_gid(fig))


# ----------------------------------------------------------------------------- induction (Figs. 11, 14)

INDUCTION_CONFIG = {
    "data": {"train_subset": 300, "test_subset": 150}, "datasets": ["digits"], "models": ["mlp"],
    "corruptions": [0.0], "seeds": [0], "arithmetic": {"enabled": False},
    "train": {"max_epochs": 4, "target_train_accuracy": 1.0, "num_threads": 1,
              "checkpoints": {"early_every": 1, "early_until": 4}, "overrides": {"mlp": {"lr": 0.01}}},
}


@pytest.fixture(scope="module")
def digits_run(trained_run):
    torch.set_num_threads(1)
    return trained_run(INDUCTION_CONFIG, corruption=0.0)


def _models(run, epochs):
    from pipeline.core.runtime import RunRuntime
    from pipeline.dynamics.composite import load_state

    rt = RunRuntime(run.config, run.run, arrays=run.arrays, labels=run.labels, run_dir=run.run_dir)
    return rt, {e: load_state(rt.empty_model, rt.state_at(e)) for e in epochs}


def test_induction_projects_trajectories_and_classifies_perturbations_with_the_final_deep_part(digits_run):
    from pipeline.dynamics.composite import build_composite
    from pipeline.dynamics.trajectories import induction_rows, trajectory_epochs

    epochs = trajectory_epochs([0, 1, 2, 3, 4], 1, 4, every=1)
    assert epochs == [1, 2, 3, 4] and trajectory_epochs([0, 1, 2, 3, 4], 0, 4, every=2) == [0, 2, 4]
    rt, models = _models(digits_run, epochs)
    x, changed = rt.x_train, np.asarray(rt.labels.changed)
    kw = dict(epochs=epochs, deep_epoch=4, perturb_from=3, samples=5, draws=6, seed=0, transform=rt.transform)
    rows, summary = induction_rows(models, "fc2", x, changed, KEYS, noise=1.0, **kw)
    df = T.trajectory_frame(rows)
    pca, pert = df[df.kind == "pca"], df[df.kind == "perturbed"]
    assert len(pca) == 5 * 4 and len(pert) == 5 * 6 * 2                 # perturbed from epoch 3 on
    assert set(pert["epoch"]) == {3, 4}
    # each trajectory point is classified by the epoch-4 deep part on the epoch-t shallow features:
    # the composite C(4, t) built on its own gives the same classes
    chosen = np.array(summary["samples"])
    for t in epochs:
        net = build_composite(rt.empty_model, rt.state_at(t), rt.state_at(4), "fc2")
        with torch.no_grad():
            want = net(rt.transform(x[torch.as_tensor(chosen)])).argmax(1).numpy()
        got = pca[pca.epoch == t].sort_values("sample_index")["label"].to_numpy()
        np.testing.assert_array_equal(got, want)
    # a perturbation moves the projection by at most `noise` per principal coordinate
    p = pert.assign(sample=pert.sample_index // 6).merge(
        pca[["epoch", "sample_index", "z1", "z2"]].rename(columns={"sample_index": "sample"}),
        on=["epoch", "sample"], suffixes=("", "_0"))
    assert len(p) == len(pert)
    assert (np.abs(p.z1 - p.z1_0) <= 1.0 + 1e-9).all() and (np.abs(p.z2 - p.z2_0) <= 1.0 + 1e-9).all()
    assert (np.abs(p.z1 - p.z1_0) > 0.05).any()
    ratio = summary["explained_variance_ratio"]
    assert ratio[0] >= ratio[1] > 0 and sum(ratio) <= 1 + 1e-9
    assert pca.groupby("epoch")["z1"].var().mean() > 0
    # stability: a vanishing perturbation keeps every class, a huge one does not
    _, tiny = induction_rows(models, "fc2", x, changed, KEYS, noise=1e-6, **kw)
    _, huge = induction_rows(models, "fc2", x, changed, KEYS, noise=1e4, **kw)
    assert tiny["stability"] == 1.0 and huge["stability"] < 0.9
    assert FIG.induction_stability(df) == pytest.approx(summary["stability"])


def test_composite_run_writes_the_induction_rows_and_its_figures_draw_them(digits_run, tmp_path):
    from pipeline.core.tables import read_parquet_metadata
    from pipeline.dynamics.stage import composite_run

    cfg = validate_config({**INDUCTION_CONFIG, "dynamics": {
        "enabled": True, "depths": {"mlp": ["fc2"]}, "deep_epochs": ["final"], "shallow_epochs": [0, "final"],
        "windows": [[2, 4]], "splits": ["train"], "max_samples": 40, "control": {"enabled": False},
        "induction": {"window": [1, "final"], "every": 1, "perturb_from": 3, "samples": 4, "draws": 3}}})
    run_dir = digits_run.run_dir
    out = {k: tmp_path / f"{k}.parquet" for k in ("composite", "pointwise", "trajectories")}
    composite_run(cfg, digits_run.run, index=run_dir / "checkpoints/index.json",
                  labels_path=run_dir / "labels.npz", out_composite=out["composite"],
                  out_pointwise=out["pointwise"], out_trajectories=out["trajectories"], threads=1)
    traj = pd.read_parquet(out["trajectories"])
    assert set(traj["kind"]) == {"pca", "perturbed"} and set(traj["depth"]) == {"fc2"}
    assert sorted(traj[traj.kind == "pca"]["epoch"].unique()) == [1, 2, 3, 4]
    assert (traj[traj.kind == "pca"]["sample_index"] < 40).all()          # drawn from the capped train set
    meta = json.loads(read_parquet_metadata(out["trajectories"])["induction"])
    assert meta["deep_epoch"] == 4 and meta["draws"] == 3 and 0 <= meta["stability"] <= 1
    lines = _by_gid(FIG.feature_pca(traj, "digits", "mlp"))
    offsets = lines["pca_points|0"].get_offsets()
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(traj[traj.kind == "pca"]["z1"].to_numpy()))
    drawn = _by_gid(FIG.induction(traj, "digits", "mlp"))
    assert len(drawn["perturbed|0"].get_offsets()) == (traj.kind == "perturbed").sum()
