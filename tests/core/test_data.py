"""Label corruption: the papers' definition, its statistics, determinism and the artifact."""

import dataclasses

import numpy as np
import pytest

from pipeline.core.datasets import load_dataset, subsample
from pipeline.core.errors import ArtifactError
from pipeline.core.labels import (
    check_labels,
    corrupt_labels,
    corruption_rng,
    load_labels,
    make_run_labels,
    save_labels,
)


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


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04truncated"], ids=["garbage", "truncated-zip"])
def test_corrupt_label_artifact_gives_clear_error(tmp_path, content):
    path = tmp_path / "labels.npz"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="labels.npz") as err:
        load_labels(path)
    assert "delete it" in str(err.value)


def test_label_artifact_missing_a_field(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, corrupted=np.zeros(3, np.int64), true=np.zeros(3, np.int64))
    with pytest.raises(ArtifactError, match="labels.npz.*unreadable or incomplete"):
        load_labels(path)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _saved(tmp_path, labels):
    path = tmp_path / "labels.npz"
    save_labels(labels, path)
    return path


def test_labels_matching_the_dataset_load(tmp_path, digits):
    labels = make_run_labels(digits, dataset="digits", corruption=0.5, seed=0)
    back = load_labels(_saved(tmp_path, labels), digits)
    assert np.array_equal(back.corrupted, labels.corrupted)
    check_labels(back, digits, "labels.npz")


def test_labels_of_another_length_are_rejected(tmp_path, digits):
    """labels.npz made for the full dataset, read by a run on a train/test subset (or vice versa)."""
    path = _saved(tmp_path, make_run_labels(digits, dataset="digits", corruption=0.5, seed=0))
    subset = subsample(digits, 100, 50, seed=0)
    with pytest.raises(ArtifactError) as err:
        load_labels(path, subset)
    msg = str(err.value)
    assert str(path) in msg and "'corrupted' has 1257 entries but the dataset has 100 training images" in msg
    assert "'test' has 540 labels but the dataset has 50 test images" in msg
    assert "delete it and rerun" in msg


@pytest.mark.parametrize("field,value", [("corrupted", 10), ("corrupted", -1), ("true", 12), ("test", 10)])
def test_out_of_range_labels_are_rejected(tmp_path, digits, field, value):
    labels = make_run_labels(digits, dataset="digits", corruption=0.5, seed=0)
    getattr(labels, field)[3] = value
    path = _saved(tmp_path, labels)
    for arrays in (None, digits):  # caught with or without the dataset at hand
        with pytest.raises(ArtifactError, match=rf"labels.npz.*'{field}' labels span .*outside \[0, 10\)"):
            load_labels(path, arrays)


def test_num_classes_mismatch_is_rejected(tmp_path, digits):
    labels = dataclasses.replace(make_run_labels(digits, dataset="digits", corruption=0.5, seed=0), num_classes=100)
    path = _saved(tmp_path, labels)
    load_labels(path)  # consistent in itself
    with pytest.raises(ArtifactError, match="num_classes is 100 but dataset 'digits' has 10"):
        load_labels(path, digits)


@pytest.mark.parametrize("field,split", [("test", "test"), ("true", "training")])
def test_labels_differing_from_the_dataset_are_rejected(tmp_path, digits, field, split):
    labels = make_run_labels(digits, dataset="digits", corruption=0.0, seed=0)
    setattr(labels, field, np.roll(getattr(labels, field), 1))
    path = _saved(tmp_path, labels)
    with pytest.raises(ArtifactError, match=rf"'{field}' differs from the dataset's {split} labels") as err:
        load_labels(path, digits)
    assert str(path) in str(err.value)


def test_inconsistent_label_lengths_are_rejected(tmp_path, digits):
    labels = make_run_labels(digits, dataset="digits", corruption=0.5, seed=0)
    labels.resampled = labels.resampled[:-1]
    with pytest.raises(ArtifactError, match="'resampled' has 1256 entries but 'true' has 1257"):
        load_labels(_saved(tmp_path, labels))
