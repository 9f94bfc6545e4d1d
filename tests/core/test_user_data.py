"""A user's own datasets (data.custom): a real image folder and a real .npz, loaded as runs see them,
and every bad input of issue 17 stopped up front with one error naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from pipeline.config import validate_config
from pipeline.core.config import ConfigError
from pipeline.core.datasets import DATASETS, DatasetCorruptError, DatasetNotFoundError
from pipeline.core.labels import check_labels, load_labels, load_run_dataset, make_run_labels, save_labels
from pipeline.core.user_data import load_user_dataset

CLASSES = ("cat", "dog", "eel")  # sorted: class index 0, 1, 2


@pytest.fixture(autouse=True)
def _registry_restored():
    """A user dataset is registered into the process-wide registry: restore it after each test, so
    that tests listing the built-in datasets (tests/core/test_datasets.py) see only those."""
    before = dict(DATASETS)
    yield
    DATASETS.clear()
    DATASETS.update(before)


def write_image_folder(root, per_class=8, offset=0, size=12):
    """``root/<class>/img_<i>.png|jpg``: real 8x8 digits (0, 1, 2) scaled up, alternately PNG and JPEG."""
    digits = load_digits()
    for label, cls in enumerate(CLASSES):
        folder = root / cls
        folder.mkdir(parents=True)
        for i, image in enumerate(digits.images[digits.target == label][offset:offset + per_class]):
            pixels = Image.fromarray(np.rint(image * 255 / 16).astype(np.uint8)).resize((size, size))
            pixels.save(folder / f"img_{i}.{'png' if i % 2 else 'jpg'}")
    (root / "cat" / "notes.txt").write_text("not an image: ignored, as ImageFolder does")
    return root


def folder_entry(tmp_path, **extra):
    train = write_image_folder(tmp_path / "train")
    test = write_image_folder(tmp_path / "test", per_class=4, offset=8)
    return {"format": "imagefolder", "train": str(train), "test": str(test), "image_size": 16, "channels": 1,
            **extra}


def npz_file(path, n=30, **arrays):
    rng = np.random.default_rng(0)
    base = {"x": rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), "y": np.arange(n) % 3}
    np.savez(path, **{**base, **arrays})
    return path


def test_image_folder_loads_as_imagefolder_does(tmp_path):
    arrays = load_user_dataset("pets", folder_entry(tmp_path))
    assert arrays.x_train.shape == (24, 1, 16, 16) and arrays.x_test.shape == (12, 1, 16, 16)
    assert arrays.num_classes == 3
    # class index = position of the folder name in the sorted names; files sorted within a class
    assert arrays.y_train.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert arrays.train_files[0].endswith("train/cat/img_0.jpg")
    assert arrays.train_files[9].endswith("train/dog/img_1.png")
    assert all(f.endswith((".png", ".jpg")) for f in arrays.train_files + arrays.test_files)
    # the pixels are the image's, resized: a digit's ink is brighter than the background
    assert arrays.x_train.max() > 200 and arrays.x_train[:, 0, 0, 0].max() < 60
    assert not arrays.truth_known and arrays.y_train_given is None


def test_rgb_and_default_size(tmp_path):
    entry = folder_entry(tmp_path)
    del entry["image_size"], entry["channels"]
    arrays = load_user_dataset("pets", entry)
    assert arrays.x_train.shape == (24, 3, 32, 32)
    assert (arrays.x_train[:, 0] == arrays.x_train[:, 2]).all()  # grey images converted to RGB


def test_truth_unknown_only_at_corruption_zero(tmp_path):
    arrays = load_user_dataset("pets", folder_entry(tmp_path))
    given = make_run_labels(arrays, dataset="pets", corruption=0.0, seed=0)
    assert not given.truth_known and (given.corrupted == arrays.y_train).all()
    corrupted = make_run_labels(arrays, dataset="pets", corruption=0.5, seed=0)
    assert corrupted.truth_known and (corrupted.true == arrays.y_train).all() and corrupted.changed.any()
    save_labels(given, tmp_path / "labels.npz")
    assert load_labels(tmp_path / "labels.npz", arrays).truth_known is False


def test_label_file_without_truth_known_reads_as_known(tmp_path):
    arrays = load_user_dataset("pets", folder_entry(tmp_path))
    labels = make_run_labels(arrays, dataset="pets", corruption=0.5, seed=0)
    np.savez(tmp_path / "old.npz", corrupted=labels.corrupted, true=labels.true, resampled=labels.resampled,
             changed=labels.changed, test=labels.test, num_classes=labels.num_classes)
    assert load_labels(tmp_path / "old.npz", arrays).truth_known is True


def test_test_fraction_holds_out_a_stratified_part_with_its_files(tmp_path):
    entry = folder_entry(tmp_path, test=None, test_fraction=0.25)
    arrays = load_user_dataset("pets", entry)
    assert len(arrays.y_train) == 18 and np.bincount(arrays.y_test).tolist() == [2, 2, 2]
    assert not set(arrays.train_files) & set(arrays.test_files)
    assert arrays.train_files == sorted(arrays.train_files)  # the original order is kept
    assert load_user_dataset("pets", entry).train_files == arrays.train_files  # fixed seed


def test_npz_with_y_true_trains_on_y_and_scores_against_y_true(tmp_path):
    y = np.arange(30) % 3
    y_true = y.copy()
    y_true[:5] = (y[:5] + 1) % 3  # five given labels are wrong
    path = npz_file(tmp_path / "d.npz", y=y, y_true=y_true,
                    x=np.random.default_rng(1).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8))
    config = {"data": {"custom": {"mine": {"format": "npz", "train": str(path), "test_fraction": 0.2}}}}
    arrays = load_run_dataset(validate_config(config), "mine")
    assert arrays.x_train.shape == (24, 3, 8, 8)  # (N, H, W, C) -> (N, C, H, W)
    assert arrays.truth_known and arrays.train_files is None
    labels = make_run_labels(arrays, dataset="mine", corruption=0.0, seed=0)
    assert (labels.corrupted == arrays.y_train_given).all() and (labels.true == arrays.y_train).all()
    assert labels.truth_known and labels.changed.sum() == (arrays.y_train_given != arrays.y_train).sum() > 0
    check_labels(labels, arrays, "labels.npz")  # 'true' is y_true: nothing differs
    truth = make_run_labels(arrays, dataset="mine", corruption=0.0, seed=0)
    truth.true = arrays.y_train_given
    with pytest.raises(Exception, match="'true' differs from the dataset's training labels"):
        check_labels(truth, arrays, "labels.npz")


def test_config_registers_the_dataset_and_lists_it(tmp_path):
    entry = folder_entry(tmp_path)
    config = validate_config({"data": {"custom": {"pets": entry}}, "datasets": ["pets", "digits"]})
    assert DATASETS["pets"].num_classes == 3 and DATASETS["pets"].train_size == 24
    assert config["data"]["custom"]["pets"]["test_fraction"] is None  # schema defaults filled in
    with pytest.raises(ConfigError, match=r"'datasets.0' has value 'pest'.*'pets'.*tiny_imagenet"):
        validate_config({"data": {"custom": {"pets": entry}}, "datasets": ["pest"]})
    augmented = validate_config({"data": {"custom": {"pets": entry}}, "datasets": ["pets"],
                                 "train": {"augmentation": {"pets": "crop_flip"}}})
    assert augmented["train"]["augmentation"] == {"pets": "crop_flip"}
    with pytest.raises(ConfigError, match=r"'train.augmentation': 'pest' is not a dataset.*'pets'"):
        validate_config({"data": {"custom": {"pets": entry}}, "train": {"augmentation": {"pest": "crop_flip"}}})
    with pytest.raises(ConfigError, match="'mnist' is a built-in dataset"):
        validate_config({"data": {"custom": {"mnist": entry}}})
    with pytest.raises(ConfigError, match=r"data.custom.*Pets.*does not match"):
        validate_config({"data": {"custom": {"Pets": entry}}})


# ----------------------------------------------------------------------------- bad inputs


def _error(entry, name="bad"):
    """The one error a bad entry gives, when the config is validated or else when it is loaded."""
    with pytest.raises((ConfigError, DatasetCorruptError, DatasetNotFoundError)) as err:
        validate_config({"data": {"custom": {name: entry}}})
        load_user_dataset(name, entry)
    return str(err.value)


def test_empty_class_folder(tmp_path):
    entry = folder_entry(tmp_path)
    (tmp_path / "train" / "fox").mkdir()
    (tmp_path / "train" / "fox" / "readme.txt").write_text("no image")
    assert f"class folder {tmp_path / 'train' / 'fox'} holds no image" in _error(entry)


def test_unreadable_image_is_named(tmp_path):
    entry = folder_entry(tmp_path)
    broken = tmp_path / "train" / "dog" / "img_3.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    message = _error(entry)
    assert f"cannot read image {broken}" in message


def test_one_class_only(tmp_path):
    write_image_folder(tmp_path / "all")
    for cls in ("dog", "eel"):
        for f in (tmp_path / "all" / cls).iterdir():
            f.unlink()
        (tmp_path / "all" / cls).rmdir()
    message = _error({"format": "imagefolder", "train": str(tmp_path / "all"), "test_fraction": 0.2})
    assert f"{tmp_path / 'all'} has one class only ('cat')" in message
    path = npz_file(tmp_path / "one.npz", y=np.zeros(30, dtype=np.int64))
    assert f"{path} has one class only" in _error({"format": "npz", "train": str(path), "test_fraction": 0.2})


def test_missing_folder_and_missing_test_part(tmp_path):
    assert f"{tmp_path / 'nowhere'} does not exist" in _error(
        {"format": "imagefolder", "train": str(tmp_path / "nowhere"), "test_fraction": 0.2})
    entry = folder_entry(tmp_path, test=None)
    assert "no test part: give 'test'" in _error(entry)


def test_test_folder_with_a_class_the_training_folder_lacks(tmp_path):
    entry = folder_entry(tmp_path)
    (tmp_path / "test" / "cat").rename(tmp_path / "test" / "cow")
    assert f"test folder {tmp_path / 'test'} has class folders ['cow']" in _error(entry)


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.arange(29) % 3}, "'x' holds 30 images but 'y' holds 29 labels"),
    ({"y": (np.arange(30) % 3).astype(float)}, "'y' in {path} has dtype float64; labels must be integers"),
    ({"y_true": np.arange(29) % 3}, "'y_true' has 29 labels but 'y' has 30"),
    ({"y": np.arange(30) % 3 - 1}, "'y' in {path} spans [-1, 1], outside [0, 2)"),
    ({"x": np.zeros((30, 8, 6), dtype=np.uint8)}, "images are not square"),
    ({"x": np.zeros((30, 8, 8), dtype=np.float32)}, "has dtype float32; images must be uint8"),
    ({"y": np.array([object()] * 30)}, "cannot read {path} as an .npz file of plain arrays"),
])
def test_bad_npz_gives_one_error_naming_the_file(tmp_path, arrays, message):
    path = tmp_path / "data.npz"
    np.savez(path, **{"x": np.zeros((30, 8, 8), dtype=np.uint8), "y": np.arange(30) % 3, **arrays})
    assert message.format(path=path) in _error({"format": "npz", "train": str(path), "test_fraction": 0.2})


def test_npz_labels_beyond_num_classes_and_missing_arrays(tmp_path):
    path = npz_file(tmp_path / "d.npz")
    assert "'y' in " + str(path) + " spans [0, 2], outside [0, 2)" in _error(
        {"format": "npz", "train": str(path), "test_fraction": 0.2, "num_classes": 2})
    np.savez(tmp_path / "nox.npz", images=np.zeros((3, 8, 8), dtype=np.uint8), y=np.arange(3))
    assert f"{tmp_path / 'nox.npz'} has no array 'x'" in _error(
        {"format": "npz", "train": str(tmp_path / "nox.npz"), "test_fraction": 0.2})
