"""Feature-dynamics stages and figures (issue 9): epoch / window resolution, the new tables' schemas,
the Welch summary across seeds, the ablation hooks, and figures whose drawn data equal the tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import validate_config
from pipeline.core.config import BASE_VARIANT
from pipeline.dynamics import figures as FIG
from pipeline.dynamics import stage
from pipeline.dynamics import tables as T

KEYS = {"dataset": "digits", "model": "mlp", "corruption": 0.0, "seed": 0, "variant": BASE_VARIANT}


# ----------------------------------------------------------------------------- choices

def test_resolve_epochs_all_final_and_lists():
    saved = [0, 2, 4, 5, 6]
    assert stage.resolve_epochs("all", saved, 6) == ([0, 2, 4, 5, 6], [])
    assert stage.resolve_epochs("final", saved, 6) == ([6], [])
    assert stage.resolve_epochs([2, 3, "final", 6], saved, 6) == ([2, 6], [3])


def test_resolve_windows_from_dynamics_or_train_and_skips_unsaved():
    saved = list(range(0, 11))
    wins, skipped = stage.resolve_windows({"windows": [[3, "final"], [2, 20]]}, {}, saved, 10)
    assert wins == [(10, 3)] and skipped == [[2, 20]]
    wins, _ = stage.resolve_windows({"windows": None}, {"checkpoints": {"windows": [[4, 8]]}}, saved, 10)
    assert wins == [(8, 4)]


def test_default_depths():
    assert stage.default_depths("mlp") == ["fc1", "fc2", "fc3", "fc4"]
    assert stage.default_depths("resnet20") == ["stage1.block2"]
    assert stage.default_depths("bottleneck_mlp") == ["fc1", "bottleneck"]


def test_dynamics_config_defaults_and_ablation_variants():
    from pipeline.workflow import ablation_variants, dynamics_runs, dynamics_targets

    cfg = validate_config({"dynamics": {"enabled": True, "depths": {"resnet20": ["stage1.block2"]},
                                        "ablations": {"enabled": True, "epoch": 4}}})
    assert cfg["dynamics"]["sgd_noise"]["momentum"] == "none"
    assert ablation_variants(cfg, "mlp") == ["freeze-fc1-e4", "restart-e4", "reinit-fc1-final"]
    assert ablation_variants(cfg, "resnet20") == ["freeze-stage1_block2-e4", "restart-e4",
                                                  "reinit-stage1_block2-final"]
    assert stage.parse_ablation_variant("reinit-stage1_block2-e4", "resnet20") == ("reinit", "stage1.block2", 4)
    assert stage.parse_ablation_variant("reinit-stage1_block2-final", "resnet20") == ("reinit", "stage1.block2",
                                                                                      "final")
    assert stage.parse_ablation_variant("restart-e4", "resnet20") == ("restart", None, 4)
    assert len(dynamics_runs(cfg)) == 3
    assert "results/tables/composite.parquet" in dynamics_targets(cfg)
    assert dynamics_targets(validate_config({})) == []


# ----------------------------------------------------------------------------- table schemas

def test_new_table_schemas():
    traj = T.trajectory_frame([{**KEYS, "depth": "bottleneck", "kind": "trajectory", "epoch": 0,
                                "sample_index": 0, "z1": 0.1, "z2": -0.2, "label": 3, "changed": False}])
    assert list(traj.columns) == list(T.TRAJECTORY_COLUMNS)
    with pytest.raises(ValueError, match="kinds"):
        T.trajectory_frame([{**KEYS, "depth": "b", "kind": "other", "epoch": 0, "sample_index": 0,
                             "z1": 0.0, "z2": 0.0, "label": 0, "changed": False}])
    assert list(T.welch_frame([]).columns) == list(T.WELCH_COLUMNS)
    assert list(T.composite_frame([]).columns)[-3:] == ["control_accuracy", "control_cross_entropy",
                                                        "control_consistency_vs_deep"]
    assert list(T.COMPOSITE_COLUMNS)[:5] == list(T.RUN_KEY_COLUMNS)
    from pipeline.core.tables import RUN_KEY_COLUMNS
    assert dict(T.RUN_KEY_COLUMNS) == dict(RUN_KEY_COLUMNS)


def _pointwise(values: dict[tuple[float, int], float]) -> pd.DataFrame:
    rows = []
    for (c, seed), v in values.items():
        for i in range(4):
            rows.append({**KEYS, "corruption": c, "seed": seed, "depth": "fc1", "deep_epoch": 10,
                         "window_start": 5, "reference": "paper", "split": "test", "subset": "all",
                         "sample_index": i, "consistency": v, "n_epochs": 6, "dense": True})
    return T.pointwise_frame(rows)


def test_welch_rows_across_seeds():
    df = _pointwise({(0.0, 0): 0.9, (0.0, 1): 0.92, (0.0, 2): 0.91,
                     (0.8, 0): 0.5, (0.8, 1): 0.55, (0.8, 2): 0.52})
    w = T.welch_frame(stage.welch_rows(df))
    assert len(w) == 1
    row = w.iloc[0]
    assert row["n_a"] == 3 and row["n_b"] == 3 and row["mean_a"] == pytest.approx(0.91)
    assert row["diff"] > 0 and row["p_value"] < 0.01
    # one seed: no test
    assert stage.welch_rows(_pointwise({(0.0, 0): 0.9, (0.8, 0): 0.5})) == []


# ----------------------------------------------------------------------------- figures

def _composite_table() -> pd.DataFrame:
    """Train rows (labels corrupted and true) and test rows (true), each with its own values."""
    rows = []
    rng = np.random.default_rng(0)
    for c in (0.0, 0.8):
        for depth in ("fc1", "fc2"):
            for T_ in (4, 8):
                for t in (0, 4, 8):
                    for split, sources in (("train", ("corrupted", "true")), ("test", ("true",))):
                        for src in sources:
                            acc = float(rng.uniform(0, 1))
                            rows.append({**KEYS, "corruption": c, "depth": depth, "deep_epoch": T_,
                                         "shallow_epoch": t, "split": split, "subset": "all",
                                         "label_source": src, "accuracy": acc, "cross_entropy": 2 * acc,
                                         "consistency_vs_deep": float(rng.uniform(0, 1)),
                                         "consistency_vs_shallow": float(rng.uniform(0, 1)),
                                         "n_samples": 10, "baseline_agreement": 0.5, "drift_ratio": 0.1})
    return T.composite_frame(rows)


def _by_gid(fig, kind=None):
    out = {}
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_gid():
                out[line.get_gid()] = line
        for im in ax.images:
            if im.get_gid():
                out[im.get_gid()] = im
    return out


def test_composite_curves_draw_the_training_set_with_the_labels_trained_on():
    # the paper's Figs. 2-5 are on the training set; accuracy there is against the trained labels
    comp = _composite_table()
    fig = FIG.composite_curves(comp, "digits", "mlp")
    lines = _by_gid(fig)
    for c in (0.0, 0.8):
        for depth in ("fc1", "fc2"):
            want = comp[(comp.corruption == c) & (comp.depth == depth) & (comp.deep_epoch == 8)
                        & (comp.split == "train") & (comp.label_source == "corrupted")]
            want = want.sort_values("shallow_epoch")
            for measure in ("accuracy", "cross_entropy"):
                line = lines[f"{measure}|{c:g}|{depth}"]
                np.testing.assert_array_equal(line.get_xdata(), want["shallow_epoch"].to_numpy())
                np.testing.assert_allclose(line.get_ydata(), want[measure].to_numpy())


def test_consistency_heatmap_image_is_the_table():
    # Fig. 3's caption: consistency with f(theta_t1), the shallow epoch's network, on the training set
    comp = _composite_table()
    fig = FIG.consistency_heatmap(comp, "digits", "mlp", depth="fc2")
    images = _by_gid(fig)
    for c in (0.0, 0.8):
        want = comp[(comp.corruption == c) & (comp.depth == "fc2") & (comp.split == "train")
                    & (comp.label_source == "corrupted")]
        M = np.asarray(images[f"consistency|{c:g}|fc2"].get_array())
        for _, r in want.iterrows():
            i = [4, 8].index(r.deep_epoch)
            j = [0, 4, 8].index(r.shallow_epoch)
            assert M[i, j] == pytest.approx(r.consistency_vs_shallow)


def test_consistency_ecdf_lines_are_the_ecdf():
    rows = []
    vals = {0.0: [1.0, 1.0, 0.5, 1.0], 0.8: [0.2, 1.0, 0.4, 0.6]}
    for c, v in vals.items():
        for split in ("test", "train"):
            for i, x in enumerate(v):
                subset = "all" if split == "test" or c == 0 else ("corrupted" if i % 2 else "clean")
                rows.append({**KEYS, "corruption": c, "depth": "fc1", "deep_epoch": 10, "window_start": 5,
                             "reference": "paper", "split": split, "subset": subset, "sample_index": i,
                             "consistency": x, "n_epochs": 6, "dense": True})
    point = T.pointwise_frame(rows)
    lines = _by_gid(FIG.consistency_ecdf(point, "digits", "mlp", window=[5, 10]))
    line = lines["ecdf|test|0.8|all"]
    np.testing.assert_allclose(line.get_xdata(), [0.2, 0.4, 0.6, 1.0])
    np.testing.assert_allclose(line.get_ydata(), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(lines["ecdf|train|0.8|corrupted"].get_xdata(), [0.6, 1.0])
    np.testing.assert_allclose(lines["ecdf|test|0|all"].get_ydata(), [0.25, 1.0])


def test_eigen_spectra_and_trajectories_draw_the_tables():
    rows = []
    for source, eig in (("sgd", [5.0, 1.0, 0.5]), ("gaussian", [1.2, 1.1, 1.0])):
        for m in range(2):
            rows.append({**KEYS, "epoch": 3, "depth": "fc1", "input_index": m, "source": source,
                         "n_updates": 8, "dim": 16, "lr": 0.1, "batch_size": 4, "momentum": 0.0,
                         "momentum_mode": "none", "weight_decay": 0.0, "trace": 10.0,
                         "eig_1": eig[0] * (m + 1), "eig_2": eig[1], "eig_3": eig[2],
                         "topk_energy": 0.5, "participation_ratio": 2.0, "john_u": 1.0, "p_value": 0.1,
                         "ledoit_wolf_z": 0.0, "srivastava_z": 0.0, "spatial_sign_u": 0.0,
                         "spatial_sign_p_value": 0.5, "n_resamples": 9, "dim_tested": 16,
                         "n_dropped": 0, "drop_rule": "none dead", "john_u_all": 1.0,
                         "p_value_all": 0.1})
    sgd = T.sgd_noise_frame(rows)
    lines = _by_gid(FIG.eigen_spectra(sgd, "digits", "mlp"))
    np.testing.assert_allclose(lines["spectrum|0|fc1|sgd"].get_ydata(), [0.75, 0.1, 0.05])
    assert "spectrum|0|fc1|param_isotropic" not in lines

    traj_rows = []
    for e in (0, 5):
        for i in range(2):
            traj_rows.append({**KEYS, "model": "bottleneck_mlp", "depth": "bottleneck", "kind": "trajectory",
                              "epoch": e, "sample_index": i, "z1": float(e + i), "z2": float(-e),
                              "label": i, "changed": i == 1})
    for k, (a, b) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        traj_rows.append({**KEYS, "model": "bottleneck_mlp", "depth": "bottleneck", "kind": "region",
                          "epoch": 5, "sample_index": k, "z1": float(a), "z2": float(b), "label": k,
                          "changed": False})
    traj = T.trajectory_frame(traj_rows)
    drawn = _by_gid(FIG.trajectories(traj, "digits", "bottleneck_mlp"))
    np.testing.assert_allclose(drawn["trajectory|0|1"].get_xdata(), [1.0, 6.0])
    np.testing.assert_array_equal(np.asarray(drawn["regions|0"].get_array()), [[0, 1], [2, 3]])


# ----------------------------------------------------------------------------- ablation hooks

class _FakeTrainer:
    def __init__(self, model):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        self.new_optimizer_calls = 0
        self.rt = type("RT", (), {"empty_model": staticmethod(
            lambda: stage_model())})()

    def new_optimizer(self):
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.new_optimizer_calls += 1


def stage_model():
    from pipeline.core.models import build_model

    return build_model("mlp", in_channels=1, image_size=8, num_classes=10)


def test_freeze_hook_freezes_only_the_shallow_part():
    torch.manual_seed(0)
    model = stage_model()
    trainer = _FakeTrainer(model)
    hook = stage.FreezeShallow("fc2", 4)
    hook.on_start(trainer, resumed=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(16, 1, 8, 8)
    loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,)))
    loss.backward()
    trainer.optimizer.step()
    after = model.state_dict()
    for k in before:
        same = torch.equal(before[k], after[k])
        assert same == (k.startswith("fc1") or k.startswith("fc2")), k
    assert trainer.new_optimizer_calls == 1 and "fc1.weight" in hook.info["frozen"]


def test_reinit_hook_resets_only_the_deep_part():
    torch.manual_seed(0)
    model = stage_model()
    trainer = _FakeTrainer(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stage.ReinitDeep("fc1", 4, seed=0, lr_schedule="continue").on_start(trainer, resumed=False)
    after = model.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]) == k.startswith("fc1"), k
    assert trainer.new_optimizer_calls == 1
    # App. F: the retained shallow part is frozen while the deep part retrains
    assert not model.fc1.weight.requires_grad and model.fc2.weight.requires_grad
