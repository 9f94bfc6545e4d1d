"""Label corruption: the papers' definition, its statistics, determinism and the artifact."""

import numpy as np
import pytest

from pipeline.data import corrupt_labels, corruption_rng, load_labels, make_run_labels, save_labels
from pipeline.datasets import load_dataset


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_corruption_statistics(p):
    n, k = 200_000, 10
    true = np.random.default_rng(0).integers(0, k, n)
    corrupted, resampled = corrupt_labels(true, k, p, corruption_rng("x", p, 0))
    # resampled ~ Binomial(n, p); changed = resampled and drew another class: p (K-1)/K
    assert abs(resampled.mean() - p) < 0.005
    assert abs((corrupted != true).mean() - p * (k - 1) / k) < 0.005
    assert np.all(corrupted[~resampled] == true[~resampled])
    # resampled labels are uniform over all K classes, including the true one
    if p > 0:
        counts = np.bincount(corrupted[resampled], minlength=k) / resampled.sum()
        assert np.allclose(counts, 1 / k, atol=0.01)
        assert abs((corrupted[resampled] == true[resampled]).mean() - 1 / k) < 0.01


def test_corruption_is_deterministic_per_run_and_independent_across_runs():
    true = np.arange(1000) % 10
    a = corrupt_labels(true, 10, 0.5, corruption_rng("digits", 0.5, 0))[0]
    b = corrupt_labels(true, 10, 0.5, corruption_rng("digits", 0.5, 0))[0]
    c = corrupt_labels(true, 10, 0.5, corruption_rng("digits", 0.5, 1))[0]
    d = corrupt_labels(true, 10, 0.5, corruption_rng("mnist", 0.5, 0))[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_corruption_rejects_bad_degree():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt_labels(np.zeros(3, int), 2, 1.2, np.random.default_rng(0))


def test_label_artifact_round_trip(tmp_path):
    arrays = load_dataset("digits")
    labels = make_run_labels(arrays, dataset="digits", corruption=0.8, seed=3)
    save_labels(labels, tmp_path / "labels.npz", config="{}")
    back = load_labels(tmp_path / "labels.npz")
    assert np.array_equal(back.corrupted, labels.corrupted)
    assert np.array_equal(back.true, arrays.y_train)
    assert np.array_equal(back.test, arrays.y_test)  # the test set keeps its true labels
    assert np.array_equal(back.resampled, labels.resampled)
    assert back.num_classes == 10
    assert list(tmp_path.iterdir()) == [tmp_path / "labels.npz"]  # no temporary left behind


def test_corrupt_label_artifact_gives_clear_error(tmp_path):
    path = tmp_path / "labels.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="labels.npz"):
        load_labels(path)
