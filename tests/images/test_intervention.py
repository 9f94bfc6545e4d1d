"""Intervention during training (section 9): E epochs, the VeLPIC edit, N more epochs."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import validate_config
from pipeline.core.config import Run
from pipeline.core.models import MODELS
from pipeline.core.runtime import RunRuntime, build_run_model, input_transform
from pipeline.core.runtime import layer_outputs as layer_activations
from pipeline.core.training import LOG_COLUMNS
from pipeline.images.transfer.editing import fit_class_vectors
from pipeline.images.transfer.intervention import intervene_run
from pipeline.images.variants import intervention_schedule, intervention_variant, is_intervention
from pipeline.workflow import intervention_runs

E, N = 2, 3


def make_config(**intervention):
    return validate_config({
        "data": {"train_subset": 200, "test_subset": 100},
        "corruptions": [0.0, 0.5],
        "seeds": [0, 1],
        "train": {"max_epochs": 3, "target_train_accuracy": 1.0, "num_threads": 1,
                  "overrides": {"mlp": {"optimizer": "adam", "lr": 0.001}}},
        "transfer": {"intervention": {"enabled": True, "epoch": E, "extra_epochs": N, **intervention}},
    })


@pytest.fixture(scope="module")
def setup(trained_run):
    """Data, labels, and the standard run (3 epochs, checkpoints 0, 2, 3)."""
    r = trained_run(make_config(), corruption=0.5)
    return r.config, r.arrays, r.labels, r.run_dir


@pytest.fixture(scope="module")
def scratch(setup, tmp_path_factory):
    """The intervened run trained from scratch (no standard run to branch from)."""
    config, arrays, labels, _ = setup
    out = tmp_path_factory.mktemp("scratch")
    run = Run("digits", "mlp", 0.5, 0, "intervene-e2")
    result = intervene_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=out))
    return result, out


def state(path):
    return torch.load(path, weights_only=True)


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_intervention_resumes_training_from_the_edit(setup, scratch):
    config, arrays, labels, standard = setup
    result, out = scratch
    log = pd.read_parquet(out / "train_log.parquet")
    # every epoch is logged, numbering continues E+1..E+N after the edit, no early stop
    assert list(log.epoch) == list(range(E + N + 1))
    assert list(log.columns[-len(LOG_COLUMNS):]) == LOG_COLUMNS
    assert set(log.variant) == {"intervene-e2"} and result.stop_reason == "fixed_epochs"
    assert result.final_epoch == E + N
    index = json.loads((out / "checkpoints/index.json").read_text())
    assert index["epochs"] == [2, 4, 5] == result.epochs  # E (edited), the schedule, E+N
    assert index["intervention"]["branched_from"] is None

    # before the edit: exactly the standard run (same weights at E, same log rows before E)
    pre = state(out / "checkpoints/epoch_2_pre_edit.pt")
    assert_same_state(pre, state(standard / "checkpoints/epoch_2.pt"))
    std_log = pd.read_parquet(standard / "train_log.parquet").set_index("epoch")
    for epoch in range(E):
        for col in ("loss", "train_acc_corrupted", "test_acc"):
            a, b = log.set_index("epoch").loc[epoch, col], std_log.loc[epoch, col]
            assert (np.isnan(a) and np.isnan(b)) or a == b
    assert index["intervention"]["pre_edit"]["test_acc"] == std_log.loc[E, "test_acc"]

    # right after the edit: classifier = VeLPIC vectors of the pre-edit model's last layer, bias 0
    run = Run("digits", "mlp", 0.5, 0, "intervene-e2")
    model = build_run_model(run, arrays)
    model.load_state_dict(pre)
    transform = input_transform(arrays, "mlp")
    feats = layer_activations(model, torch.from_numpy(arrays.x_train), transform, model.last_probe_layer)
    vectors = fit_class_vectors(feats, labels.corrupted).class_vectors_
    post = state(out / "checkpoints/epoch_2.pt")
    np.testing.assert_array_equal(post["output.weight"].numpy(), vectors)
    assert torch.count_nonzero(post["output.bias"]) == 0
    for key in pre:  # nothing but the classifier changed
        if not key.startswith("output."):
            assert torch.equal(pre[key], post[key]), key
    # the epoch-E row holds the edited model's accuracies; training went on afterwards
    assert log.set_index("epoch").loc[E, "test_acc"] == index["intervention"]["post_edit"]["test_acc"]
    assert not torch.equal(state(out / "checkpoints/epoch_4.pt")["output.weight"], post["output.weight"])


def test_branching_from_the_standard_run_equals_training_from_scratch(setup, scratch, tmp_path):
    config, arrays, labels, standard = setup
    result, out = scratch
    run = Run("digits", "mlp", 0.5, 0, "intervene-e2")
    branched = intervene_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path),
                             standard_dir=standard)
    index = json.loads((tmp_path / "checkpoints/index.json").read_text())
    assert index["intervention"]["branched_from"].endswith("epoch_2.pt")
    pd.testing.assert_frame_equal(branched.log.drop(columns="seconds"), result.log.drop(columns="seconds"))
    for epoch in result.epochs:
        assert_same_state(state(tmp_path / f"checkpoints/epoch_{epoch}.pt"),
                          state(out / f"checkpoints/epoch_{epoch}.pt"))


def test_optimizer_reset_or_kept(setup, scratch, tmp_path):
    config, arrays, labels, standard = setup
    _, out = scratch
    keep = make_config(reset_optimizer=False)
    assert intervention_variant(keep["transfer"]["intervention"]) == "intervene-e2-keepopt"
    run = Run("digits", "mlp", 0.5, 0, "intervene-e2-keepopt")
    # a kept optimizer state is not in any checkpoint: it never branches, it retrains epochs 1..E
    kept = intervene_run(RunRuntime(keep, run, arrays=arrays, labels=labels, run_dir=tmp_path), standard_dir=standard)
    assert json.loads((tmp_path / "checkpoints/index.json").read_text())["intervention"]["branched_from"] is None
    assert list(kept.log.epoch) == list(range(E + N + 1))
    # same edit ...
    assert_same_state(state(tmp_path / "checkpoints/epoch_2.pt"), state(out / "checkpoints/epoch_2.pt"))
    # ... different continuation (Adam moments of epochs 1..E kept vs reset)
    a, b = state(tmp_path / "checkpoints/epoch_4.pt"), state(out / "checkpoints/epoch_4.pt")
    assert not torch.equal(a["output.weight"], b["output.weight"])
    with pytest.raises(ValueError, match="does not match"):
        intervene_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path / "x"))


def test_killed_intervention_resumes_to_the_same_weights(setup, scratch, tmp_path):
    config, arrays, labels, _ = setup
    result, out = scratch
    run = Run("digits", "mlp", 0.5, 0, "intervene-e2")

    class Killed(Exception):
        pass

    for kill_at in (1, 3):  # before and after the edit
        def after_epoch(epoch, kill_at=kill_at):
            if epoch == kill_at:
                raise Killed

        target = tmp_path / f"k{kill_at}"
        with pytest.raises(Killed):
            intervene_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=target),
                          after_epoch=after_epoch)
        assert not (target / "checkpoints/index.json").exists()
        resumed = intervene_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=target))
        pd.testing.assert_frame_equal(resumed.log.drop(columns="seconds"), result.log.drop(columns="seconds"))
        assert_same_state(state(target / "checkpoints/epoch_5.pt"), state(out / "checkpoints/epoch_5.pt"))
        assert not (target / "resume.pt").exists()


def test_intervention_resume_state_made_with_other_settings_is_discarded(setup, tmp_path, capsys):
    """Killed after the edit, restarted with another sign convention: the edit is redone with it."""
    config, arrays, labels, _ = setup
    run = Run("digits", "mlp", 0.5, 0, "intervene-e2")

    class Killed(Exception):
        pass

    def after_epoch(epoch):
        if epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        intervene_run(RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp_path / "k"),
                      after_epoch=after_epoch)
    other = {**config, "transfer": {**config["transfer"], "intervention": {
        **config["transfer"]["intervention"], "sign": "global_mean"}}}
    resumed = intervene_run(RunRuntime(other, run, arrays=arrays, labels=labels, run_dir=tmp_path / "k"))
    assert "discarding resume state" in capsys.readouterr().out
    fresh = intervene_run(RunRuntime(other, run, arrays=arrays, labels=labels, run_dir=tmp_path / "f"))
    pd.testing.assert_frame_equal(resumed.log.drop(columns="seconds"), fresh.log.drop(columns="seconds"))
    index = json.loads((tmp_path / "k/checkpoints/index.json").read_text())
    assert index["intervention"]["sign"] == "global_mean"


def test_variants_runs_and_schedule():
    config = make_config()
    runs = intervention_runs(config)
    assert len(runs) == 4 and {r.variant for r in runs} == {"intervene-e2"}
    assert runs[0].path == "runs/digits/mlp/c0/s0/intervene-e2"
    assert intervention_runs(make_config(enabled=False)) == []
    # transfer.intervention.corruptions: only those degrees' runs (the default's: the noisy ones)
    chosen = make_config()
    chosen["transfer"]["intervention"]["corruptions"] = [0.5]
    assert [(r.corruption, r.seed) for r in intervention_runs(chosen)] == [
        (r.corruption, r.seed) for r in runs if r.corruption == 0.5] and len(intervention_runs(chosen)) == 2
    assert is_intervention("intervene-e40") and is_intervention("intervene-e40-keepopt")
    assert not is_intervention("standard") and not is_intervention("intervene-40")
    # the papers' E=40, N=60 on the default schedule (every 5 after epoch 20)
    paper = make_config(epoch=40, extra_epochs=60)
    assert intervention_schedule(paper, "mlp") == list(range(40, 101, 5))
    assert intervention_schedule(make_config(epoch=10, extra_epochs=10, checkpoint_every=5), "mlp") == [10, 15, 20]
    assert intervention_schedule(make_config(epoch=3, extra_epochs=4), "mlp") == [3, 4, 6, 7]
    assert MODELS["mlp"].late_checkpoint_interval == 5



def test_intervention_corruptions_outside_the_grid_are_ignored():
    """The default's [0.5, 0.8] under a grid narrowed to other degrees (a user's --configfile is
    merged over config/config.yaml) intervenes on none of its runs and is no error."""
    assert intervention_runs(make_config(corruptions=[0.8])) == []
    assert [r.corruption for r in intervention_runs(make_config(corruptions=[0.5, 0.8]))] == [0.5, 0.5]
