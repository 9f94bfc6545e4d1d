"""The Appendix F ablations (pipeline.dynamics.ablation) on real tiny runs: a ResNet-20 (it has
BatchNorm) trained 4 epochs on 300 digits images, then the freeze, restart-only and reinit variants
branched from it by the workflow's own stage; their table (with the standard run as the baseline)
and the Fig. 18 / App. F figure drawn from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import validate_config
from pipeline.core.config import ConfigError, Run

BASE = {
    "data": {"train_subset": 300, "test_subset": 150},
    "datasets": ["digits"], "models": ["resnet20"], "corruptions": [0.0], "seeds": [0],
    # decay after epoch 3: the reinit retraining must start again at the base lr
    "train": {"max_epochs": 4, "target_train_accuracy": 1.0, "num_threads": 1,
              "checkpoints": {"early_every": 2, "early_until": 20},
              "overrides": {"resnet20": {"lr_decay_epochs": [3], "batch_size": 64}}},
    "arithmetic": {"enabled": False},
}
ABLATIONS = {"enabled": True, "epoch": 2, "extra_epochs": 2,
             "depths": {"resnet20": ["stage1.block1"]},
             "reinit": {"epoch": "final", "extra_epochs": 2, "depths": {"resnet20": ["stage1.block2"]}}}
VARIANTS = ("freeze-stage1_block1-e2", "restart-e2", "reinit-stage1_block2-final")


@pytest.fixture(scope="module")
def ablated(trained_run, tmp_path_factory):
    """The standard run and its three ablation runs: ``(standard, {variant: run folder}, config)``."""
    from pipeline.dynamics.ablation import ablation_run

    torch.set_num_threads(1)
    standard = trained_run(BASE, corruption=0.0, model="resnet20")
    config = validate_config({**BASE, "dynamics": {"enabled": True, "ablations": ABLATIONS}})
    out = {}
    for variant in VARIANTS:
        run = Run("digits", "resnet20", 0.0, 0, variant)
        out[variant] = tmp_path_factory.mktemp(variant)
        ablation_run(config, run, labels_path=standard.run_dir / "labels.npz",
                     standard_dir=standard.run_dir, out_dir=out[variant])
    return standard, out, config


def _state(folder, epoch):
    return torch.load(folder / "checkpoints" / f"epoch_{epoch}.pt", weights_only=True)


def _shallow_keys(depth):
    from pipeline.core.models import build_model

    return set(build_model("resnet20", in_channels=1, image_size=8, num_classes=10).shallow_state_keys(depth))


def test_workflow_variants_paper_depths_and_corruption_filter():
    from pipeline.workflow import ablation_runs, ablation_variants

    cfg = validate_config({**BASE, "corruptions": [0.0, 0.4], "seeds": [0, 1], "dynamics": {
        "enabled": True, "ablations": {
            "enabled": True, "epoch": 2, "corruptions": [0.0],
            "depths": {"resnet20": ["stage1.block1", "stage1.block2", "stage1.block3"]},
            "reinit": {"depths": {"resnet20": ["stage1.block1", "stage1.block2"]}}}}})
    assert ablation_variants(cfg, "resnet20") == [
        "freeze-stage1_block1-e2", "freeze-stage1_block2-e2", "freeze-stage1_block3-e2", "restart-e2",
        "reinit-stage1_block1-final", "reinit-stage1_block2-final"]
    runs = ablation_runs(cfg)
    assert len(runs) == 2 * 6 and {r.corruption for r in runs} == {0.0}


@pytest.mark.parametrize("change, key", [
    ({"corruptions": [0.3]}, "dynamics.ablations.corruptions"),
    ({"reinit": {"epoch": 3}}, "dynamics.ablations.reinit.epoch"),
    ({"reinit": {"depths": {"resnet20": ["stage9"]}}}, "dynamics.ablations.reinit.depths.resnet20"),
])
def test_bad_ablation_settings_are_refused_before_any_job(change, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config({**BASE, "dynamics": {"enabled": True, "ablations": {**ABLATIONS, **change}}})


def test_frozen_batchnorm_stays_in_eval_mode_through_model_train():
    """The training loop calls model.train() every epoch; a frozen BatchNorm must not follow."""
    from pipeline.core.models import build_model
    from pipeline.dynamics.ablation import freeze_shallow

    model = build_model("resnet20", in_channels=1, image_size=8, num_classes=10)
    parts = freeze_shallow(model, "stage1.block1")
    assert parts["eval_batchnorm"] == ["bn1", "stage1.0.bn1", "stage1.0.bn2"]
    model.train()
    assert not model.bn1.training and not model.stage1[0].bn2.training
    assert model.stage1[1].bn1.training and model.training
    assert not model.conv1.weight.requires_grad and model.stage1[1].conv1.weight.requires_grad


def test_freeze_keeps_the_shallow_part_and_its_batchnorm_statistics(ablated):
    standard, runs, _ = ablated
    branch, end = _state(standard.run_dir, 2), _state(runs["freeze-stage1_block1-e2"], 4)
    shallow = _shallow_keys("stage1.block1")
    assert "stage1.0.bn2.running_mean" in shallow and "bn1.num_batches_tracked" in shallow
    for k in branch:
        assert torch.equal(branch[k], end[k]) == (k in shallow), k   # running stats and counters too
    # the frozen BN really had batches to update on: the standard run's own stats moved
    assert not torch.equal(branch["bn1.running_mean"], _state(standard.run_dir, 4)["bn1.running_mean"])


def test_restart_control_freezes_nothing_and_shares_the_branch(ablated):
    standard, runs, _ = ablated
    branch, end = _state(standard.run_dir, 2), _state(runs["restart-e2"], 4)
    moved = [k for k in branch if k.endswith("weight") and not torch.equal(branch[k], end[k])]
    assert len(moved) == len([k for k in branch if k.endswith("weight")])
    log = pd.read_parquet(runs["restart-e2"] / "train_log.parquet")
    std = pd.read_parquet(standard.run_dir / "train_log.parquet")
    cols = ["epoch", "loss", "test_acc", "lr"]
    pd.testing.assert_frame_equal(log[log["epoch"] <= 2][cols].reset_index(drop=True),
                                  std[std["epoch"] <= 2][cols].reset_index(drop=True))
    # the same lr schedule as the standard run (decay after epoch 3): only the optimizer state differs
    np.testing.assert_allclose(log[log["epoch"] > 2]["lr"], std[std["epoch"] > 2]["lr"])


def test_reinit_retains_and_freezes_shallow_reinitialises_deep_and_restarts_the_schedule(ablated):
    standard, runs, config = ablated
    folder = runs["reinit-stage1_block2-final"]
    final = _state(standard.run_dir, 4)      # "final": the standard run's last epoch, 4
    end = _state(folder, 6)                  # retrained 2 epochs
    shallow = _shallow_keys("stage1.block2")
    for k in final:
        if k in shallow:
            assert torch.equal(final[k], end[k]), k   # retained and frozen (the old hook trained it on)
        elif k.endswith("running_var"):
            assert not torch.equal(final[k], end[k]), k
    # the deep part starts from a fresh initialisation, not from the trained weights
    fresh = _state(folder, 4)
    assert not torch.equal(fresh["fc.weight"], final["fc.weight"])
    assert all(torch.equal(fresh[k], final[k]) for k in shallow)
    log = pd.read_parquet(folder / "train_log.parquet")
    base_lr = config["train"]["overrides"]["resnet20"].get("lr", 0.1)
    assert log[log["epoch"] == 4]["lr"].item() == pytest.approx(base_lr * 0.1)  # the standard run's
    np.testing.assert_allclose(log[log["epoch"] > 4]["lr"], [base_lr, base_lr])  # restarted


def test_ablation_table_and_figure_draw_the_logs(ablated, tmp_path):
    from pipeline.core.tables import read_table
    from pipeline.dynamics.ablation_figures import ablation_figure, seed_curves
    from pipeline.dynamics.aggregate import aggregate_ablations

    standard, runs, _ = ablated
    logs = [runs[v] / "train_log.parquet" for v in VARIANTS] + [standard.run_dir / "train_log.parquet"]
    aggregate_ablations(logs, tmp_path / "ablations.parquet")
    table = read_table(tmp_path / "ablations.parquet")
    assert sorted(table["ablation"].unique()) == ["freeze", "reinit", "restart", "standard"]
    fig = ablation_figure(table, "digits", "resnet20")
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    assert set(lines) == {"freeze|0|standard", "freeze|0|restart", "freeze|0|stage1.block1",
                          "reinit|0|stage1.block2", "reinit|0|standard"}
    frozen = table[table["ablation"] == "freeze"]
    want = seed_curves(frozen[frozen["epoch"] >= 2])
    np.testing.assert_allclose(lines["freeze|0|stage1.block1"].get_xdata(), want["epoch"])
    np.testing.assert_allclose(lines["freeze|0|stage1.block1"].get_ydata(), want["mean"])
    reinit = table[(table["ablation"] == "reinit") & (table["epoch"] > 4)]  # retrained epochs only
    np.testing.assert_allclose(lines["reinit|0|stage1.block2"].get_ydata(), seed_curves(reinit)["mean"])
    std = table[table["ablation"] == "standard"]
    assert lines["reinit|0|standard"].get_ydata()[0] == pytest.approx(std[std["epoch"] == 4]["test_acc"].item())
