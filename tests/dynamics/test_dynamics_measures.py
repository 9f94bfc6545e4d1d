"""Composite measures (issue 9): consistency, the composite grid, blur, tables, Welch, controls."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from scipy.ndimage import gaussian_filter

from pipeline.core.models import build_model
from pipeline.dynamics import (
    BLUR_SIGMAS,
    CHOICE_METADATA,
    COMPOSITE_COLUMNS,
    POINTWISE_COLUMNS,
    blur_uint8,
    composite_frame,
    composite_grid,
    consistency_summary,
    dataset_consistency,
    drift_ratio,
    ecdf,
    gaussian_blur,
    matched_random_features,
    pointwise_consistency,
    pointwise_frame,
    welch_test,
    window_consistency,
)

KEYS = {"dataset": "digits", "model": "bottleneck_mlp", "corruption": 0.0, "seed": 0, "variant": "standard"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bottleneck():
    torch.manual_seed(0)
    return build_model("bottleneck_mlp", in_channels=1, image_size=4, num_classes=3)


def _flip_states(flipped):
    """Epoch -> state of a bottleneck MLP whose deep part (output) never changes and whose 2-D
    feature is negated at the ``flipped`` epochs; the output layer predicts class 0 iff z_0 > 0,
    so a negated feature flips every prediction between classes 0 and 1."""
    base = _bottleneck().state_dict()
    base["output.weight"] = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    base["output.bias"] = torch.tensor([0.0, 0.0, -100.0])
    states = {}
    for t in range(11):
        s = {k: v.clone() for k, v in base.items()}
        if t in flipped:
            s["bottleneck.weight"] = -s["bottleneck.weight"]
            s["bottleneck.bias"] = -s["bottleneck.bias"]
        states[t] = s
    return states


def test_shallow_part_flipping_3_of_11_epochs_gives_8_over_11():
    states = _flip_states({2, 5, 7})
    x = torch.randn(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = np.zeros(20, dtype=np.int64)
    rows, point, preds = composite_grid(_bottleneck, states, x, {"true": y}, depths=["bottleneck"],
                                        pairs=[(10, 0)], keys=KEYS, split="train",
                                        windows=[(10, 0)], references=("paper", "deep", "shallow"))
    df = pointwise_frame(point)
    for ref in ("paper", "deep"):
        vals = df[df.reference == ref].consistency.to_numpy()
        assert len(vals) == 20 and np.all(vals == 8 / 11)
    assert df[df.reference == "shallow"].consistency.eq(1.0).all()  # each t agrees with f(theta_t)
    assert df.n_epochs.eq(11).all() and df.dense.all()
    # dataset-level consistency of C(10, 0) (epoch 0 not flipped) and of a flipped pair
    comp = composite_frame(rows)
    assert comp.set_index(["deep_epoch", "shallow_epoch"]).loc[(10, 0), "consistency_vs_deep"] == 1.0
    flipped = comp[(comp.deep_epoch == 10) & (comp.shallow_epoch == 2)].iloc[0]
    # the deep parts of epochs 2 and 10 are identical, so C(10, 2) is f(theta_2)
    assert flipped.consistency_vs_deep == 0.0 and flipped.consistency_vs_shallow == 1.0
    assert flipped.baseline_agreement == 0.0  # f(theta_2) = -f(theta_10) everywhere


def test_zero_length_window_gives_one():
    torch.manual_seed(3)
    states = {5: build_model("mlp", in_channels=1, image_size=8, num_classes=4).state_dict()}
    x = torch.randn(16, 1, 8, 8)
    build = lambda: build_model("mlp", in_channels=1, image_size=8, num_classes=4)  # noqa: E731
    _, point, _ = composite_grid(build, states, x, np.zeros(16, dtype=np.int64), depths=["fc2"],
                                 pairs=[], keys=KEYS, split="test", windows=[(5, 5)])
    assert [r["consistency"] for r in point] == [1.0] * 16
    assert all(r["n_epochs"] == 1 for r in point)


def test_pointwise_consistency_arrays_and_references():
    comp = np.array([[0, 1, 2], [0, 1, 1], [1, 1, 2]])
    assert np.allclose(pointwise_consistency(comp, np.array([0, 1, 2])), [2 / 3, 1, 2 / 3])
    assert np.allclose(pointwise_consistency(comp[:1], comp[0]), [1, 1, 1])
    # transferability window (T1 > T2): the paper's reference is f(theta_t) for t >= T2
    full = {0: np.array([0, 0]), 1: np.array([1, 1]), 2: np.array([2, 2])}
    composite = {(0, 0): np.array([0, 0]), (0, 1): np.array([1, 0]), (0, 2): np.array([2, 2])}
    res = window_consistency(composite, full, deep_epoch=0, window_start=2, reference="paper")
    assert res.epochs == [0, 1, 2] and np.allclose(res.values, [1, 2 / 3])
    res = window_consistency(composite, full, deep_epoch=0, window_start=2, reference="deep")
    assert np.allclose(res.values, [1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="lacks"):
        window_consistency({(0, 0): full[0], (0, 2): full[2]}, full, deep_epoch=0, window_start=2)
    sparse = window_consistency({(0, 2): full[2]}, full, deep_epoch=0, window_start=2,
                                allow_sparse=True)
    assert sparse.epochs == [0, 2] and not sparse.dense


def test_grid_rows_match_direct_computation():
    torch.manual_seed(1)
    build = lambda: build_model("cnn", in_channels=1, image_size=8, num_classes=3)  # noqa: E731
    states = {}
    for t in (0, 1, 2):
        states[t] = build().state_dict()
    x = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y_true = np.arange(10) % 3
    y_corr = y_true.copy()
    y_corr[:3] = (y_corr[:3] + 1) % 3
    subsets = {"clean": y_true == y_corr, "corrupted": y_true != y_corr}
    rows, _, preds = composite_grid(build, states, x, {"corrupted": y_corr, "true": y_true},
                                    depths=["block2", "flat"], pairs=[(2, 0), (0, 2), (1, 1)],
                                    keys=KEYS, split="train", subsets=subsets, batch_size=4)
    df = composite_frame(rows)
    assert len(df) == 2 * 3 * 3 * 2  # depths x pairs x subsets x label sources
    m = {t: build() for t in states}
    for t, s in states.items():
        m[t].load_state_dict(s)
        m[t].eval()
    with torch.no_grad():
        logits = m[2].forward_from("flat", m[0].forward_to("flat", x))
        full = {t: m[t](x).argmax(1).numpy() for t in states}
    row = df[(df.depth == "flat") & (df.deep_epoch == 2) & (df.shallow_epoch == 0)
             & (df.subset == "all") & (df.label_source == "corrupted")].iloc[0]
    assert row.accuracy == pytest.approx(float((logits.argmax(1).numpy() == y_corr).mean()))
    ce = F.cross_entropy(logits.double(), torch.as_tensor(y_corr))
    assert row.cross_entropy == pytest.approx(float(ce), rel=1e-6)
    assert row.consistency_vs_deep == dataset_consistency(logits.argmax(1), full[2])
    assert row.consistency_vs_shallow == dataset_consistency(logits.argmax(1), full[0])
    assert row.baseline_agreement == float((full[0] == full[2]).mean())
    assert row.drift_ratio == pytest.approx(drift_ratio(states[0], states[2], m[0]))
    diag = df[(df.deep_epoch == 1) & (df.shallow_epoch == 1)]
    assert diag.consistency_vs_deep.eq(1).all() and diag.consistency_vs_shallow.eq(1).all()
    assert diag.drift_ratio.eq(0).all()
    cor = df[(df.subset == "corrupted") & (df.label_source == "true")]
    assert cor.n_samples.eq(3).all()
    assert list(df.columns) == list(COMPOSITE_COLUMNS)


def test_drift_ratio_and_summaries():
    a = {"w": torch.tensor([3.0, 0.0]), "bn.running_mean": torch.tensor([100.0])}
    b = {"w": torch.tensor([3.0, 4.0]), "bn.running_mean": torch.tensor([0.0])}
    assert drift_ratio(a, b) == pytest.approx(4 / 5)  # buffers excluded by default
    x, f = ecdf([1.0, 0.5, 1.0, 0.25])
    assert np.allclose(x, [0.25, 0.5, 1.0]) and np.allclose(f, [0.25, 0.5, 1.0])
    s = consistency_summary([1.0, 0.5, 1.0, 0.25])
    assert s["mean"] == pytest.approx(0.6875) and s["frac_one"] == 0.5 and s["n"] == 4


def test_welch_matches_scipy_and_effect_size():
    a, b = [0.91, 0.93, 0.95, 0.94], [0.71, 0.80, 0.65]
    res = welch_test(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert res["t"] == pytest.approx(ref.statistic) and res["p_value"] == pytest.approx(ref.pvalue)
    sd = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    assert res["cohen_d"] == pytest.approx((np.mean(a) - np.mean(b)) / sd)
    with pytest.raises(ValueError):
        welch_test([1.0], [1.0, 2.0])


def test_matched_random_features_norms():
    z1, z2 = torch.randn(6, 4, 3, 3), torch.randn(6, 4, 3, 3)
    zc = matched_random_features(z1, z2, seed=1)
    assert zc.shape == z2.shape
    torch.testing.assert_close((zc - z2).flatten(1).norm(dim=1), (z1 - z2).flatten(1).norm(dim=1))
    assert not torch.allclose(zc, z1)


# ----------------------------------------------------------------------------- blur

def test_blur_small_sigma_is_identity():
    img = np.random.default_rng(0).integers(0, 256, size=(2, 3, 8, 8), dtype=np.uint8)
    assert np.array_equal(blur_uint8(img, 0.0), img)
    assert np.array_equal(blur_uint8(img, 1e-3), img)
    assert BLUR_SIGMAS == {1: 0.4, 2: 0.6, 3: 0.7, 4: 0.8, 5: 1.0}


def test_blur_against_hand_computed_image():
    img = np.zeros((1, 3, 3), dtype=np.uint8)
    img[0, 1, 1] = 255
    sigma = 0.4  # severity 1; truncate 4 -> radius int(4 * 0.4 + 0.5) = 2
    k = np.exp(-np.arange(-2, 3) ** 2 / (2 * sigma ** 2))
    w = k / k.sum()
    w0, w1 = w[2], w[3]
    expected = np.rint(255 * np.array([[w1 * w1, w1 * w0, w1 * w1],
                                       [w0 * w1, w0 * w0, w0 * w1],
                                       [w1 * w1, w1 * w0, w1 * w1]])).astype(np.uint8)
    out = gaussian_blur(img, severity=1)
    assert out.dtype == np.uint8 and np.array_equal(out[0], expected)
    # channels blur independently, only over the spatial axes; channels_last agrees
    rgb = np.random.default_rng(1).integers(0, 256, size=(4, 3, 6, 6), dtype=np.uint8)
    out = gaussian_blur(rgb, severity=5)
    ref = np.rint(np.clip(gaussian_filter(rgb[2, 1] / 255.0, 1.0, mode="nearest"), 0, 1) * 255)
    assert np.array_equal(out[2, 1], ref.astype(np.uint8))
    last = gaussian_blur(np.moveaxis(rgb, 1, -1), severity=5, channels_last=True)
    assert np.array_equal(np.moveaxis(last, -1, 1), out)
    assert (gaussian_blur(rgb, 5, rounding="floor") <= out).all()
    with pytest.raises(ValueError):
        gaussian_blur(rgb, severity=6)


# ----------------------------------------------------------------------------- tables

def _row(**over):
    row = {**KEYS, "depth": "fc1", "deep_epoch": 2, "shallow_epoch": 1, "split": "train",
           "subset": "all", "label_source": "true", "accuracy": 0.5, "cross_entropy": 1.0,
           "consistency_vs_deep": 0.9, "consistency_vs_shallow": 0.8, "n_samples": 10,
           "baseline_agreement": 0.7, "drift_ratio": 0.1}
    row.update(over)
    return row


def test_composite_table_schema():
    df = composite_frame([_row(), _row(shallow_epoch=0)])
    assert list(df.columns) == list(COMPOSITE_COLUMNS)
    assert [str(t) for t in df.dtypes] == list(COMPOSITE_COLUMNS.values())
    with pytest.raises(ValueError, match="duplicate"):
        composite_frame([_row(), _row()])
    with pytest.raises(ValueError, match="outside"):
        composite_frame([_row(accuracy=1.5)])
    with pytest.raises(ValueError, match="schema"):
        composite_frame([_row(extra=1)])
    with pytest.raises(ValueError, match="missing"):
        composite_frame([_row(depth=None)])
    assert composite_frame([]).empty
    from pipeline.core.tables import provenance

    meta = provenance({}, decay_epochs=[100, 150], **CHOICE_METADATA)
    assert meta["decay_epochs"] == "[100, 150]" and "choice.resnet20_second_basic_block" in meta


def test_pointwise_table_schema(tmp_path):
    rows = [{**KEYS, "depth": "fc1", "deep_epoch": 3, "window_start": 0, "reference": "paper",
             "split": "test", "subset": "all", "sample_index": i, "consistency": 0.75,
             "n_epochs": 4, "dense": True} for i in range(3)]
    df = pointwise_frame(rows)
    assert list(df.columns) == list(POINTWISE_COLUMNS)
    df.to_parquet(tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "p.parquet"), df)
