"""Corrupted inputs (issue 16; paper Figs. 16/17 and App. F's mean corruption error): the 15 common
corruptions made by the pinned package on 32-px RGB and 8-px gray images, deterministic per image;
the split test_corrupted through the composite stage of a trained digits MLP; the error and mCE
tables against the network evaluated directly; the figures drawing the tables; the workflow's jobs.

Every test here fails on the code before issue 16: there was no corruption module, the schema
refused the split test_corrupted and ``input_sets`` raised on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from pipeline.config import validate_config
from pipeline.dynamics import corruptions as C
from pipeline.dynamics.corruption_figures import (
    CORRUPTION_ERROR,
    MCE,
    choose_window,
    corruption_consistency,
    corruption_error,
    corruption_tables,
    mce_rows,
)
from pipeline.dynamics.stats import ecdf


@pytest.fixture(scope="module")
def images():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    digits = np.rint(load_digits().images[:2] * 255 / 16).astype(np.uint8)[:, None]
    return rgb, digits


def _package(image_hwc, corruption, severity, seed):
    """The package called directly, seeded as :func:`corrupt_images` documents."""
    from imagecorruptions import corrupt

    np.random.seed(seed)
    kw = {"seed": seed} if corruption in ("glass_blur", "impulse_noise") else {}
    return corrupt(image_hwc, severity=severity, corruption_name=corruption, **kw)


def test_the_15_corruptions_are_the_package_s_on_rgb_and_gray(images):
    from importlib.metadata import version

    rgb, digits = images
    assert version("imagecorruptions-imaug") == "1.1.5" == C.package_version()
    assert len(C.CORRUPTIONS) == 15
    for name in C.CORRUPTIONS:
        out = C.corrupt_images(rgb, name, 5, seed=3)
        assert out.shape == rgb.shape and out.dtype == np.uint8, name
        assert np.array_equal(out, C.corrupt_images(rgb, name, 5, seed=3)), name  # deterministic
        for i in range(2):  # 32-px RGB: exactly the package's output for that image's seed
            ref = _package(rgb[i].transpose(1, 2, 0), name, 5, C.corruption_seed(3, name, 5, i))
            assert np.array_equal(out[i], ref.transpose(2, 0, 1)), name
        assert not np.array_equal(out, rgb), name
        gray = C.corrupt_images(digits, name, 5, seed=3)
        assert gray.shape == digits.shape and gray.dtype == np.uint8, name
        if name == "pixelate":
            # severity 5 shrinks the 4x-enlarged digit to 25 % = its own 8 px: nothing is lost
            assert np.array_equal(gray, digits)
        else:
            assert not np.array_equal(gray, digits), name


def test_gray_keeps_the_first_channel_and_small_images_are_enlarged_then_block_averaged():
    gray32 = np.random.default_rng(1).integers(0, 256, (1, 1, 32, 32), dtype=np.uint8)
    out = C.corrupt_images(gray32, "gaussian_noise", 5, seed=0)
    ref = _package(gray32[0, 0], "gaussian_noise", 5, C.corruption_seed(0, "gaussian_noise", 5, 0))
    assert np.array_equal(out[0, 0], ref[..., 0])
    small = gray32[:, :, ::4, ::4].copy()  # 8 px: enlarged x4 to 32 px, corrupted, 4x4 block means
    assert C.upscale_factor(8) == 4 and C.upscale_factor(32) == 1
    big = np.repeat(np.repeat(small[0, 0], 4, 0), 4, 1)
    ref = _package(big, "contrast", 5, C.corruption_seed(0, "contrast", 5, 0))[..., 0]
    want = np.rint(ref.reshape(8, 4, 8, 4).astype(float).mean(axis=(1, 3))).astype(np.uint8)
    assert np.array_equal(C.corrupt_images(small, "contrast", 5, seed=0)[0, 0], want)


def test_seeds_are_per_image_and_the_global_generator_is_left_alone(images):
    rgb, _ = images
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    both = C.corrupt_images(rgb, "shot_noise", 5, seed=0)
    assert np.array_equal(np.random.get_state()[1], before)
    # an image's corruption does not depend on the others corrupted with it
    assert np.array_equal(C.corrupt_images(rgb[1:], "shot_noise", 5, seed=0, start_index=1)[0], both[1])
    assert not np.array_equal(C.corrupt_images(rgb, "shot_noise", 5, seed=1), both)


def test_bad_input_is_refused_with_the_culprit(images):
    rgb, _ = images
    with pytest.raises(ValueError, match="gaussian_nois'"):
        C.corrupt_images(rgb, "gaussian_nois", 5)
    with pytest.raises(ValueError, match=r"severities must be in 1..5, got \[6\]"):
        C.corrupt_images(rgb, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        C.corrupt_images(rgb.astype(np.float32), "fog", 5)
    with pytest.raises(ValueError, match="1 or 3 channels, got 2"):
        C.corrupt_images(rgb[:, :2], "fog", 5)
    assert C.parse_corruption_set("test_gaussian_noise5") == ("gaussian_noise", 5)
    assert C.parse_corruption_set("test_blur5") is None and C.parse_corruption_set("test") is None
    assert C.corruption_set_name("jpeg_compression", 3) == "test_jpeg_compression3"
    with pytest.raises(Exception, match="gaussian_nois"):
        validate_config({"dynamics": {"input_corruptions": {"types": ["gaussian_nois"]}}})


def test_workflow_asks_for_the_corruption_outputs_only_with_the_split():
    from pipeline.workflow import dynamics_targets

    base = {"datasets": ["digits"], "models": ["mlp"], "arithmetic": {"enabled": False}}
    default = validate_config({**base, "dynamics": {"enabled": True}})
    assert default["dynamics"]["input_corruptions"] == {"types": "all", "severities": [5], "seed": 0,
                                                        "max_samples": None}
    assert not any("mce" in t or "corruption_" in t for t in dynamics_targets(default))
    cfg = validate_config({**base, "dynamics": {"enabled": True, "splits": ["test", "test_corrupted"],
                                                "control": {"splits": ["test"]}}})
    targets = dynamics_targets(cfg)
    assert "results/tables/dynamics_mce.parquet" in targets
    assert "results/plots/dynamics/digits/mlp/corruption_consistency.png" in targets
    assert "results/plots/dynamics/digits/mlp/corruption_error.png" in targets


# ----------------------------------------------------------------------------- a trained run

# the same run as tests/dynamics/test_dynamics_windows_figures.py (trained once per session)
SMALL = {
    "data": {"train_subset": 300, "test_subset": 150}, "datasets": ["digits"], "models": ["mlp"],
    "corruptions": [0.0], "seeds": [0], "arithmetic": {"enabled": False},
    "train": {"max_epochs": 4, "target_train_accuracy": 1.0, "num_threads": 1,
              "checkpoints": {"early_every": 1, "early_until": 4}, "overrides": {"mlp": {"lr": 0.01}}},
}
TYPES = ["gaussian_noise", "contrast"]


@pytest.fixture(scope="module")
def corrupted_run(trained_run, tmp_path_factory):
    from pipeline.dynamics.stage import composite_run

    tr = trained_run(SMALL, corruption=0.0)
    config = validate_config({**SMALL, "dynamics": {
        "enabled": True, "depths": {"mlp": ["fc1"]}, "deep_epochs": ["final"], "windows": [[1, 4]],
        "max_samples": 60, "splits": ["test", "test_corrupted"], "control": {"enabled": False},
        "input_corruptions": {"types": TYPES, "severities": [3, 5], "seed": 7, "max_samples": 40}}})
    out = tmp_path_factory.mktemp("corrupted_run")
    composite_run(config, tr.run, index=tr.run_dir / "checkpoints/index.json",
                  labels_path=tr.run_dir / "labels.npz", out_composite=out / "c.parquet",
                  out_pointwise=out / "p.parquet", out_trajectories=out / "t.parquet")
    return tr, pd.read_parquet(out / "c.parquet"), pd.read_parquet(out / "p.parquet")


def test_corrupted_sets_errors_and_mce_are_the_network_s(corrupted_run):
    from pipeline.core.runtime import RunRuntime

    tr, comp, point = corrupted_run
    names = {f"test_{c}{s}" for c in TYPES for s in (3, 5)}
    assert set(comp["split"]) == {"test"} | names and set(point["split"]) == {"test"} | names
    err, mce = corruption_tables(comp)
    CORRUPTION_ERROR.check(err)
    MCE.check(mce)
    final = int(err["epoch"].iloc[0])
    assert final == 4 and len(err) == 4

    # the error of f(theta_T) on each corrupted set, evaluated here on images corrupted here
    rt = RunRuntime(tr.config, tr.run, arrays=tr.arrays, labels=tr.labels, run_dir=tr.run_dir)
    model, x = rt.model_at(final), rt.x_test[:60].cpu().numpy()
    y = np.asarray(tr.labels.test[:60])
    assert set(err["n_samples"]) == {40}  # input_corruptions.max_samples; the clean test set: 60
    with torch.no_grad():
        def error(images):
            pred = model(rt.transform(torch.from_numpy(images))).argmax(1).numpy()
            return float((pred != y[:len(images)]).mean())

        for r in err.itertuples():
            want = error(C.corrupt_images(x[:40], r.input_corruption, r.severity, seed=7))
            assert r.error == pytest.approx(want), r.split
        assert err["clean_error"].iloc[0] == pytest.approx(error(x))
    m = mce.iloc[0]
    assert m["mce_unnormalized"] == pytest.approx(err["error"].mean())
    assert (m["n_corruptions"], m["n_severities"]) == (2, 2)
    assert m["mce_normalized"] == pytest.approx(1.0)  # the label-noise-0 run is its own baseline


def test_normalized_mce_divides_each_corruption_by_the_clean_label_run(corrupted_run):
    _, comp, _ = corrupted_run
    err, _ = corruption_tables(comp)
    noisy = err.copy()
    noisy["corruption"] = 0.4
    noisy["error"] = np.where(noisy["input_corruption"] == "contrast", 1.0, noisy["error"] / 2)
    noisy["accuracy"] = 1 - noisy["error"]
    both = mce_rows(pd.concat([err, noisy], ignore_index=True))
    base = err.groupby("input_corruption")["error"].sum()
    want = np.mean([0.5, 2.0 / base["contrast"]])
    got = both[both["corruption"] == 0.4].iloc[0]
    assert got["mce_normalized"] == pytest.approx(want)
    assert got["mce_unnormalized"] == pytest.approx(noisy["error"].mean())


def test_figures_draw_the_tables(corrupted_run):
    _, comp, point = corrupted_run
    err, mce = corruption_tables(comp)
    assert choose_window(point) == (1, 4)
    with pytest.raises(ValueError, match=r"window \[0, 4\] is not among"):
        choose_window(point, [0, 4])
    fig = corruption_consistency(point, "digits", "mlp")
    lines = {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid()}
    assert set(lines) == {"ecdf|test|0", "ecdf|test_gaussian_noise5|0", "ecdf|test_contrast5|0"}
    d = point[(point["split"] == "test_contrast5") & (point["depth"] == "fc1")]
    xs, F = ecdf(d["consistency"].to_numpy())
    assert np.allclose(lines["ecdf|test_contrast5|0"].get_ydata(), F)
    assert np.allclose(lines["ecdf|test_contrast5|0"].get_xdata(), xs)
    fig = corruption_error(err, mce, "digits", "mlp")
    bars = [p.get_height() for ax in fig.axes for p in ax.patches if p.get_gid() == "error|0"]
    assert np.allclose(bars, err.groupby("input_corruption")["error"].mean()[["gaussian_noise", "contrast"]])


def test_workflow_runs_the_corruption_jobs(snakemake, tmp_path):
    config = {"datasets": ["digits"], "models": ["mlp"], "corruptions": [0.0], "seeds": [0],
              "arithmetic": {"enabled": False},
              "dynamics": {"enabled": True, "pairs": [["digits", "mlp"]], "splits": ["test", "test_corrupted"],
                           "control": {"splits": ["test"]}, "input_corruptions": {"types": TYPES}}}
    result = snakemake("-n", "dynamics", workdir=tmp_path, config=config)
    counts = result.job_counts()
    assert counts["dynamics_corruption_tables"] == 1
    assert counts["dynamics_corruption_figures_digits_mlp"] == 1
