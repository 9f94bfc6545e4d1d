"""Tests for pipeline.core.datasets: every loader reads a tiny copy of the real on-disk format.

The fixtures are written here (IDX files, CIFAR pickle batches, a Tiny ImageNet folder of
JPEGs) and read back through the same loaders the pipeline uses; nothing touches the network.
"""

from __future__ import annotations

import os
import pickle
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.datasets import (
    DATASETS,
    DatasetArrays,
    DatasetCorruptError,
    DatasetNotFoundError,
    channel_stats,
    load_dataset,
    normalize,
    subsample,
)

ALL_NAMES = ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "tiny_imagenet", "svhn", "stl10"]


# ----------------------------------------------------------------------------------------------
# Fixture writers (the real formats)
# ----------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """Uncompressed IDX: magic 0x0000_08_<ndim> (uint8), big-endian uint32 dims, raw bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = {1: 2049, 3: 2051}[array.ndim]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def write_mnist(root: Path, folder: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    data = {
        "x_train": rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=7).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=3, dtype=np.uint8).repeat(28 * 28).reshape(3, 28, 28),
        "y_test": np.array([9, 0, 4], dtype=np.uint8),
    }
    raw = root / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte", data["x_train"])
    write_idx(raw / "train-labels-idx1-ubyte", data["y_train"])
    write_idx(raw / "t10k-images-idx3-ubyte", data["x_test"])
    write_idx(raw / "t10k-labels-idx1-ubyte", data["y_test"])
    return data


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    xs, ys = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=2)
        _pickle(folder / f"data_batch_{b}",
                {"batch_label": f"batch {b}", "data": x.reshape(2, 3072), "labels": y.tolist()})
        xs.append(x)
        ys.append(y)
    x_test = rng.integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    y_test = np.array([1, 2, 3])
    _pickle(folder / "test_batch", {"data": x_test.reshape(3, 3072), "labels": y_test.tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072})
    return {"x_train": np.concatenate(xs), "y_train": np.concatenate(ys), "x_test": x_test, "y_test": y_test}


def write_cifar100(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    folder = root / "cifar-100-python"
    x_train = rng.integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)
    y_train = np.array([0, 99, 50, 7, 99])
    x_test = rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
    y_test = np.array([42, 0])
    for fname, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        _pickle(folder / fname, {"data": x.reshape(len(x), 3072), "fine_labels": y.tolist(),
                                 "coarse_labels": (y // 5).tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                              "coarse_label_names": [f"c{i}" for i in range(20)]})
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


TINY_WNIDS = ["n0300", "n0100", "n0200"]  # deliberately not sorted: labels follow wnids.txt order


def write_tiny_imagenet(root: Path, *, with_wnids: bool = True) -> dict:
    from PIL import Image

    base = root / "tiny-imagenet-200"
    colors = {}
    for k, wnid in enumerate(TINY_WNIDS):
        img_dir = base / "train" / wnid / "images"
        img_dir.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for j in range(2):
            color = (40 * k + 10, 100 + 50 * j, 200 - 30 * k)
            colors[f"{wnid}_{j}"] = color
            Image.new("RGB", (64, 64), color).save(img_dir / f"{wnid}_{j}.JPEG", quality=100)
    if with_wnids:
        (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    val_images = base / "val" / "images"
    val_images.mkdir(parents=True)
    val = {"val_1.JPEG": "n0200", "val_0.JPEG": "n0300", "val_2.JPEG": "n0100", "val_3.JPEG": "n0100"}
    for fname in val:
        Image.new("L", (64, 64), 128).save(val_images / fname, quality=100)  # grayscale -> RGB
    (base / "val" / "val_annotations.txt").write_text(
        "".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in val.items())
    )
    (base / "test" / "images").mkdir(parents=True)  # unlabelled test split: ignored
    return {"base": base, "colors": colors, "val": val}


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def test_registry_names_and_specs():
    assert list(DATASETS) == ALL_NAMES
    for name, spec in DATASETS.items():
        assert spec.name == name and callable(spec.loader)
    assert (DATASETS["cifar100"].num_classes, DATASETS["tiny_imagenet"].num_classes) == (100, 200)
    assert DATASETS["tiny_imagenet"].image_size == 64 and DATASETS["tiny_imagenet"].channels == 3
    assert (DATASETS["svhn"].image_size, DATASETS["svhn"].train_size, DATASETS["svhn"].test_size) == (32, 73257, 26032)
    assert (DATASETS["stl10"].image_size, DATASETS["stl10"].train_size, DATASETS["stl10"].test_size) == (96, 5000, 8000)


def test_unknown_name_lists_allowed_names(tmp_path):
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet", tmp_path)
    msg = str(err.value)
    assert "imagenet" in msg
    for name in ALL_NAMES:
        assert name in msg


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


def test_digits_shapes_split_and_determinism():
    a = load_dataset("digits")
    assert a.x_train.shape[1:] == (1, 8, 8) and a.x_train.dtype == np.uint8
    assert a.y_train.dtype == np.int64 and a.num_classes == 10
    assert (a.channels, a.image_size) == (1, 8)
    assert len(a.x_train) + len(a.x_test) == 1797
    assert (len(a.x_train), len(a.x_test)) == (DATASETS["digits"].train_size, DATASETS["digits"].test_size)
    assert a.x_train.max() == 255 and a.x_train.min() == 0
    # stratified: every class's share of the test set is close to 30%
    tr, te = np.bincount(a.y_train, minlength=10), np.bincount(a.y_test, minlength=10)
    assert np.all(np.abs(te / (tr + te) - 0.3) < 0.01)
    b = load_dataset("digits")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_digits_without_importing_scikit_learn_is_scikit_learns_split():
    """The stored split is train_test_split's, and the file read directly is load_digits' data: the
    arrays equal those of the reference route (scikit-learn imported); a job loading digits does not
    import scikit-learn."""
    import subprocess
    import sys

    from pipeline.core.datasets import _digits_arrays, _digits_arrays_sklearn, _digits_csv

    assert _digits_csv() is not None
    for got, expected in zip(_digits_arrays(), _digits_arrays_sklearn(), strict=True):
        np.testing.assert_array_equal(got, expected)
    script = ("import sys; from pipeline.core.datasets import load_dataset; a = load_dataset('digits'); "
              "print(len(a.y_train), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1257", "False"], out


def test_digits_values_and_original_order():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    a = load_dataset("digits")
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    # each split is a subsequence of the original order: locate each row in the original data
    flat = expected.reshape(len(expected), -1)
    lookup: dict[bytes, list[int]] = {}
    for i, row in enumerate(flat):
        lookup.setdefault(row.tobytes() + bytes([bunch.target[i]]), []).append(i)
    for x, y in ((a.x_train, a.y_train), (a.x_test, a.y_test)):
        rows = zip(x.reshape(len(x), -1), y, strict=True)
        positions = [lookup[row.tobytes() + bytes([label])][0] for row, label in rows]
        assert positions == sorted(positions)


# ----------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_round_trip(tmp_path, name, folder):
    data = write_mnist(tmp_path, folder, np.random.default_rng(1))
    a = load_dataset(name, tmp_path)
    assert a.name == name and a.num_classes == 10
    assert a.x_train.shape == (7, 1, 28, 28) and a.x_test.shape == (3, 1, 28, 28)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int64
    np.testing.assert_array_equal(a.x_train[:, 0], data["x_train"])
    np.testing.assert_array_equal(a.x_test[:, 0], data["x_test"])
    np.testing.assert_array_equal(a.y_train, data["y_train"])
    np.testing.assert_array_equal(a.y_test, [9, 0, 4])


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_read_in_place_from_a_flat_folder(tmp_path, gz):
    """Debian's dataset-fashion-mnist layout: the four IDX files (.gz) right in data.root."""
    import gzip

    data = write_mnist(tmp_path / "tv", "FashionMNIST", np.random.default_rng(3))
    flat = tmp_path / "fashion-mnist"
    flat.mkdir()
    for f in (tmp_path / "tv" / "FashionMNIST" / "raw").iterdir():
        if gz:
            (flat / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
        else:
            (flat / f.name).write_bytes(f.read_bytes())
    a = load_dataset("fashion_mnist", flat)
    assert a.x_train.shape == (7, 1, 28, 28) and a.y_train.dtype == np.int64
    np.testing.assert_array_equal(a.x_train[:, 0], data["x_train"])
    np.testing.assert_array_equal(a.y_train, data["y_train"])
    np.testing.assert_array_equal(a.x_test[:, 0], data["x_test"])
    # writable arrays: torch.from_numpy on a read-only IDX buffer warns (and could not own it)
    assert a.x_train.flags.writeable and a.y_train.flags.writeable and a.x_test.flags.writeable
    # a truncated archive names the file
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (flat / name).write_bytes((flat / name).read_bytes()[:-50])
    with pytest.raises(DatasetCorruptError, match=name):
        load_dataset("fashion_mnist", flat)


def test_mnist_missing_raises_not_found_with_path_and_hint(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", tmp_path / "nowhere")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "mnist" in msg and str(tmp_path / "nowhere" / "MNIST" / "raw") in msg and "download" in msg


def test_fashion_mnist_missing_names_both_layouts_and_the_debian_package(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "FashionMNIST" / "raw") in msg  # torchvision's layout
    assert f"right in {tmp_path / 'nowhere'}" in msg and "train-images-idx3-ubyte" in msg  # the flat one
    assert "dataset-fashion-mnist" in msg


def test_mnist_partially_missing_names_the_missing_file(tmp_path):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("name,tv_class", [("mnist", "MNIST"), ("cifar10", "CIFAR10")])
def test_failed_download_becomes_not_found(tmp_path, monkeypatch, name, tv_class):
    """download=True hands over to torchvision; a failed fetch (no network) is reported as missing."""
    import torchvision.datasets as tvd

    def no_network(self):
        raise RuntimeError("Error downloading: <urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(getattr(tvd, tv_class), "download", no_network)  # never touches the network
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, tmp_path, download=True)
    assert str(tmp_path) in str(err.value) and "name resolution" in str(err.value)


def test_truncated_idx_file_names_the_file(tmp_path):
    write_mnist(tmp_path, "FashionMNIST", np.random.default_rng(0))
    path = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetCorruptError) as err:
        load_dataset("fashion_mnist", tmp_path)
    assert str(path) in str(err.value)
    assert err.value.path == path


def test_idx_file_with_wrong_magic_names_the_file(tmp_path):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])
    with pytest.raises(DatasetCorruptError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ----------------------------------------------------------------------------------------------


def test_cifar10_round_trip(tmp_path):
    data = write_cifar10(tmp_path, np.random.default_rng(2))
    a = load_dataset("cifar10", tmp_path)
    assert a.x_train.shape == (10, 3, 32, 32) and a.x_test.shape == (3, 3, 32, 32)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int64 and a.x_train.flags.c_contiguous
    assert (a.channels, a.image_size, a.num_classes) == (3, 32, 10)
    np.testing.assert_array_equal(a.x_train, data["x_train"])  # batches 1..5 in order
    np.testing.assert_array_equal(a.y_train, data["y_train"])
    np.testing.assert_array_equal(a.x_test, data["x_test"])
    np.testing.assert_array_equal(a.y_test, data["y_test"])


def test_cifar100_round_trip_fine_labels(tmp_path):
    data = write_cifar100(tmp_path, np.random.default_rng(3))
    a = load_dataset("cifar100", tmp_path)
    assert a.num_classes == 100 and a.x_train.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(a.x_train, data["x_train"])
    np.testing.assert_array_equal(a.y_train, [0, 99, 50, 7, 99])
    np.testing.assert_array_equal(a.x_test, data["x_test"])
    np.testing.assert_array_equal(a.y_test, [42, 0])


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar100", tmp_path)
    assert str(tmp_path / "cifar-100-python") in str(err.value) and "download" in str(err.value)

    write_cifar10(tmp_path, np.random.default_rng(0))
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DatasetCorruptError) as err:
        load_dataset("cifar10", tmp_path)
    assert str(bad) in str(err.value)


def test_labels_outside_class_range_are_rejected(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(0))
    _pickle(tmp_path / "cifar-10-batches-py" / "test_batch",
            {"data": np.zeros((1, 3072), np.uint8), "labels": [10]})
    with pytest.raises(ValueError, match="outside"):
        load_dataset("cifar10", tmp_path)


# ----------------------------------------------------------------------------------------------
# CIFAR pickles are read with a restricted unpickler (no code execution)
# ----------------------------------------------------------------------------------------------


class _System:
    """Unpickling calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _BuiltinOpen:
    """Unpickling calls ``builtins.open(marker, "w")`` (creates the file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _Touch:
    """Unpickling calls ``pathlib.Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


_PAYLOADS = {"os.system": _System, "builtins.open": _BuiltinOpen, "pathlib.Path.touch": _Touch}

_CRAFTED = [  # (dataset, writer, file, key the payload hides under)
    ("cifar10", write_cifar10, "cifar-10-batches-py/data_batch_2", "filenames"),
    ("cifar10", write_cifar10, "cifar-10-batches-py/test_batch", "labels"),
    ("cifar10", write_cifar10, "cifar-10-batches-py/batches.meta", "num_vis"),
    ("cifar100", write_cifar100, "cifar-100-python/train", "coarse_labels"),
    ("cifar100", write_cifar100, "cifar-100-python/test", "data"),
    ("cifar100", write_cifar100, "cifar-100-python/meta", "coarse_label_names"),
]


@pytest.mark.parametrize("payload", sorted(_PAYLOADS))
@pytest.mark.parametrize("name,writer,relpath,key", _CRAFTED, ids=[c[2] for c in _CRAFTED])
def test_crafted_cifar_pickle_is_refused_without_running_code(tmp_path, payload, name, writer, relpath, key):
    root = tmp_path / "data"
    writer(root, np.random.default_rng(0))
    path = root / relpath
    with path.open("rb") as f:
        entry = pickle.load(f)
    marker = tmp_path / "pwned"
    entry[key] = _PAYLOADS[payload](marker)
    _pickle(path, entry)
    with pytest.raises(DatasetCorruptError) as err:
        load_dataset(name, root)
    assert not marker.exists(), "the crafted pickle ran code"
    assert str(path) in str(err.value) and "not a genuine" in str(err.value)
    assert "delete it" in str(err.value).lower() or "download" in str(err.value)
    assert err.value.path == path


def test_crafted_cifar_pickle_refused_even_with_download(tmp_path, monkeypatch):
    """download=True with all files present must not hand them to torchvision's unpickling loader."""
    write_cifar10(tmp_path, np.random.default_rng(0))
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    _pickle(path, {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _System(marker)})
    with pytest.raises(DatasetCorruptError, match="not a genuine"):
        load_dataset("cifar10", tmp_path, download=True)
    assert not marker.exists()


def test_cifar_download_uses_torchvision_only_to_fetch(tmp_path, monkeypatch):
    """download=True: torchvision's download() fetches the files; its unpickling constructor never runs."""
    import torchvision.datasets as tvd

    fetched = {}

    def fake_download(self):
        assert Path(self.root) == tmp_path
        fetched.update(write_cifar100(Path(self.root), np.random.default_rng(9)))

    def no_constructor(self, *args, **kwargs):
        raise AssertionError("torchvision's CIFAR loader must not read the files")

    monkeypatch.setattr(tvd.CIFAR100, "download", fake_download)
    monkeypatch.setattr(tvd.CIFAR100, "__init__", no_constructor)
    a = load_dataset("cifar100", tmp_path, download=True)
    np.testing.assert_array_equal(a.x_train, fetched["x_train"])
    np.testing.assert_array_equal(a.y_test, fetched["y_test"])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_pickle_protocols_load_identically(tmp_path, protocol):
    data = write_cifar10(tmp_path, np.random.default_rng(5))
    folder = tmp_path / "cifar-10-batches-py"
    for path in folder.iterdir():
        with path.open("rb") as f:
            entry = pickle.load(f)
        entry["filenames"] = [b"x.png"] * len(entry.get("labels", []))  # lists of bytes, as in the real files
        with path.open("wb") as f:
            pickle.dump(entry, f, protocol=protocol)
    a = load_dataset("cifar10", tmp_path)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), data[key])


def _py2_pickle_batch(x: np.ndarray, labels: list[int], filenames: list[bytes]) -> bytes:
    """A batch as the official archives hold it: written by Python 2's cPickle (protocol 2), keys
    and raw bytes as py2 ``str`` (BINSTRING), the array via ``numpy.core.multiarray._reconstruct``."""

    def s(b: bytes) -> bytes:
        return b"T" + struct.pack("<i", len(b)) + b

    n = x.shape[0]
    out = b"\x80\x02}(" + s(b"batch_label") + s(b"training batch 1 of 5")
    out += s(b"data") + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
    out += b"(K\x01M" + struct.pack("<H", n) + b"M" + struct.pack("<H", 3072) + b"\x86"
    out += b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"
    out += b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89" + s(x.reshape(n, 3072).tobytes()) + b"tb"
    out += s(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    out += s(b"filenames") + b"](" + b"".join(s(f) for f in filenames) + b"e"
    return out + b"u."


def test_cifar_python2_era_pickles_load(tmp_path):
    """The official files name numpy.core.multiarray (numpy >= 2 has numpy._core) and py2 strings."""
    data = write_cifar10(tmp_path, np.random.default_rng(6))
    folder = tmp_path / "cifar-10-batches-py"
    x_train, y_train = data["x_train"], data["y_train"]
    for b in range(5):
        x, y = x_train[2 * b : 2 * b + 2], y_train[2 * b : 2 * b + 2]
        (folder / f"data_batch_{b + 1}").write_bytes(_py2_pickle_batch(x, y.tolist(), [b"a.png", b"b.png"]))
    a = load_dataset("cifar10", tmp_path)
    np.testing.assert_array_equal(a.x_train, x_train)
    np.testing.assert_array_equal(a.y_train, y_train)
    np.testing.assert_array_equal(a.x_test, data["x_test"])


def test_cifar_meta_must_list_the_classes(tmp_path):
    write_cifar100(tmp_path, np.random.default_rng(0))
    meta = tmp_path / "cifar-100-python" / "meta"
    _pickle(meta, {"fine_label_names": ["a", "b"]})
    with pytest.raises(DatasetCorruptError, match="100 class names") as err:
        load_dataset("cifar100", tmp_path)
    assert err.value.path == meta


# ----------------------------------------------------------------------------------------------
# Tiny ImageNet
# ----------------------------------------------------------------------------------------------


def test_tiny_imagenet_layout_labels_and_cache(tmp_path):
    fx = write_tiny_imagenet(tmp_path)
    a = load_dataset("tiny_imagenet", tmp_path)
    assert a.x_train.shape == (6, 3, 64, 64) and a.x_test.shape == (4, 3, 64, 64)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int64
    assert a.num_classes == 200 and (a.channels, a.image_size) == (3, 64)
    # train: class by class in wnids.txt order, files sorted within a class
    np.testing.assert_array_equal(a.y_train, [0, 0, 1, 1, 2, 2])
    for i, key in enumerate(f"{w}_{j}" for w in TINY_WNIDS for j in range(2)):
        pixel = a.x_train[i, :, 32, 32].astype(int)
        assert np.all(np.abs(pixel - fx["colors"][key]) <= 3), (key, pixel)
    # test = val split, sorted file names, labels from val_annotations.txt via wnids order
    label = {w: i for i, w in enumerate(TINY_WNIDS)}
    expected = [label[fx["val"][f]] for f in sorted(fx["val"])]
    np.testing.assert_array_equal(a.y_test, expected)
    assert np.all(np.abs(a.x_test.astype(int) - 128) <= 2)  # grayscale converted to 3 channels

    cache = fx["base"] / "arrays_cache.npz"
    assert cache.is_file()
    b = load_dataset("tiny_imagenet", tmp_path)  # from the cache
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    # a changed listing invalidates the cache
    (fx["base"] / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn0100\t0\t0\t63\t63\n")
    c = load_dataset("tiny_imagenet", tmp_path)
    np.testing.assert_array_equal(c.y_test, [1])


def test_tiny_imagenet_without_wnids_uses_sorted_folders(tmp_path):
    write_tiny_imagenet(tmp_path, with_wnids=False)
    a = load_dataset("tiny_imagenet", tmp_path)
    # sorted: n0100 -> 0, n0200 -> 1, n0300 -> 2
    np.testing.assert_array_equal(a.y_train, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(a.y_test, [2, 1, 0, 0])  # val_0..val_3 -> n0300, n0200, n0100, n0100


@pytest.mark.parametrize("download", [False, True])
def test_tiny_imagenet_missing_explains_where(tmp_path, download):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("tiny_imagenet", tmp_path, download=download)
    msg = str(err.value)
    assert str(tmp_path / "tiny-imagenet-200") in msg and "download" in msg


def test_tiny_imagenet_corrupt_jpeg_names_the_file(tmp_path):
    fx = write_tiny_imagenet(tmp_path)
    bad = fx["base"] / "val" / "images" / "val_2.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetCorruptError) as err:
        load_dataset("tiny_imagenet", tmp_path)
    assert str(bad) in str(err.value)


# ----------------------------------------------------------------------------------------------
# SVHN (MATLAB v5) and STL-10 (raw binary)
# ----------------------------------------------------------------------------------------------


def write_svhn(root: Path, rng: np.random.Generator, *, y_dtype=np.uint8) -> dict[str, np.ndarray]:
    """train_32x32.mat / test_32x32.mat as the real ones: X (32, 32, 3, N) uint8, y (N, 1), 10 = digit 0."""
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, labels in (("train", [10, 1, 5, 10, 9]), ("test", [3, 10])):
        x = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)  # N, C, H, W
        scipy.io.savemat(root / f"{split}_32x32.mat",
                         {"X": np.transpose(x, (2, 3, 1, 0)),  # H, W, C, N
                          "y": np.asarray(labels, dtype=y_dtype).reshape(-1, 1)})
        data[f"x_{split}"], data[f"y_{split}"] = x, np.asarray(labels) % 10
    return data


def write_stl10(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """stl10_binary/{train,test}_{X,y}.bin: images column-major (C, W, H) uint8, labels 1..10."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, labels in (("train", [1, 10, 4]), ("test", [2, 7])):
        x = rng.integers(0, 256, size=(len(labels), 3, 96, 96), dtype=np.uint8)  # N, C, H, W
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(bytes(labels))
        data[f"x_{split}"], data[f"y_{split}"] = x, np.asarray(labels) - 1
    return data


@pytest.mark.parametrize("y_dtype", [np.uint8, np.float64])
def test_svhn_round_trip_label_10_is_0(tmp_path, y_dtype):
    data = write_svhn(tmp_path, np.random.default_rng(0), y_dtype=y_dtype)
    a = load_dataset("svhn", tmp_path)
    assert a.x_train.shape == (5, 3, 32, 32) and a.x_test.shape == (2, 3, 32, 32)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int64 and a.x_train.flags.c_contiguous
    np.testing.assert_array_equal(a.x_train, data["x_train"])
    np.testing.assert_array_equal(a.x_test, data["x_test"])
    np.testing.assert_array_equal(a.y_train, [0, 1, 5, 0, 9])
    np.testing.assert_array_equal(a.y_test, [3, 0])


def test_svhn_pixel_layout_matches_torchvision(tmp_path):
    """torchvision's SVHN: np.transpose(X, (3, 2, 0, 1)) of the loaded matrix."""
    import scipy.io

    write_svhn(tmp_path, np.random.default_rng(1))
    mat = scipy.io.loadmat(tmp_path / "train_32x32.mat")
    a = load_dataset("svhn", tmp_path)
    np.testing.assert_array_equal(a.x_train, np.transpose(mat["X"], (3, 2, 0, 1)))


def test_svhn_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("svhn", tmp_path)
    assert str(tmp_path / "train_32x32.mat") in str(err.value) and "download" in str(err.value)
    write_svhn(tmp_path, np.random.default_rng(0))
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match="test_32x32.mat"):
        load_dataset("svhn", tmp_path)

    write_svhn(tmp_path, np.random.default_rng(0))
    bad = tmp_path / "train_32x32.mat"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    with pytest.raises(DatasetCorruptError) as err:
        load_dataset("svhn", tmp_path)
    assert str(bad) in str(err.value) and err.value.path == bad
    bad.write_bytes(b"not a MATLAB file at all" * 10)
    with pytest.raises(DatasetCorruptError, match="train_32x32.mat"):
        load_dataset("svhn", tmp_path)


def test_svhn_wrong_contents_name_the_file(tmp_path):
    import scipy.io

    write_svhn(tmp_path, np.random.default_rng(0))
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]], np.uint8)})
    with pytest.raises(DatasetCorruptError, match="1..10") as err:
        load_dataset("svhn", tmp_path)
    assert err.value.path == path
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1]], np.uint8)})
    with pytest.raises(DatasetCorruptError, match="labels"):
        load_dataset("svhn", tmp_path)
    scipy.io.savemat(path, {"images": np.zeros((2, 2), np.uint8)})
    with pytest.raises(DatasetCorruptError, match="'X'"):
        load_dataset("svhn", tmp_path)


def test_stl10_round_trip_column_major(tmp_path):
    data = write_stl10(tmp_path, np.random.default_rng(2))
    a = load_dataset("stl10", tmp_path)
    assert a.x_train.shape == (3, 3, 96, 96) and a.x_test.shape == (2, 3, 96, 96)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int64 and a.x_train.flags.c_contiguous
    assert (a.channels, a.image_size, a.num_classes) == (3, 96, 10)
    np.testing.assert_array_equal(a.x_train, data["x_train"])
    np.testing.assert_array_equal(a.x_test, data["x_test"])
    np.testing.assert_array_equal(a.y_train, [0, 9, 3])
    np.testing.assert_array_equal(a.y_test, [1, 6])
    # torchvision's reading: reshape (-1, 3, 96, 96) then transpose (0, 1, 3, 2)
    raw = np.fromfile(tmp_path / "stl10_binary" / "train_X.bin", dtype=np.uint8)
    np.testing.assert_array_equal(a.x_train, raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2))


def test_stl10_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("stl10", tmp_path)
    assert str(tmp_path / "stl10_binary") in str(err.value) and "download" in str(err.value)
    write_stl10(tmp_path, np.random.default_rng(0))
    folder = tmp_path / "stl10_binary"
    (folder / "test_y.bin").unlink()
    with pytest.raises(DatasetNotFoundError, match="test_y.bin"):
        load_dataset("stl10", tmp_path)

    write_stl10(tmp_path, np.random.default_rng(0))
    bad = folder / "train_X.bin"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated mid-image
    with pytest.raises(DatasetCorruptError) as err:
        load_dataset("stl10", tmp_path)
    assert str(bad) in str(err.value) and err.value.path == bad
    bad.write_bytes(bad.read_bytes()[: 2 * 3 * 96 * 96])  # truncated at an image boundary
    with pytest.raises(DatasetCorruptError) as err:
        load_dataset("stl10", tmp_path)
    assert err.value.path == bad and "truncated" in str(err.value)

    write_stl10(tmp_path, np.random.default_rng(0))
    (folder / "test_y.bin").write_bytes(bytes([0, 3]))  # label 0 does not exist in STL-10
    with pytest.raises(DatasetCorruptError, match="1..10") as err:
        load_dataset("stl10", tmp_path)
    assert err.value.path == folder / "test_y.bin"


@pytest.mark.parametrize("name,tv_class,writer", [("svhn", "SVHN", write_svhn), ("stl10", "STL10", write_stl10)])
def test_svhn_stl10_download_uses_torchvision_only_to_fetch(tmp_path, monkeypatch, name, tv_class, writer):
    import torchvision.datasets as tvd

    fetched, calls = {}, []

    def fake_download(self):
        assert Path(self.root) == tmp_path
        calls.append(getattr(self, "filename", None))
        if not fetched:
            fetched.update(writer(Path(self.root), np.random.default_rng(9)))

    def no_constructor(self, *args, **kwargs):
        raise AssertionError("torchvision's loader must not read the files")

    monkeypatch.setattr(getattr(tvd, tv_class), "download", fake_download)
    monkeypatch.setattr(getattr(tvd, tv_class), "__init__", no_constructor)
    with pytest.raises(DatasetNotFoundError):
        load_dataset(name, tmp_path, download=False)
    assert not calls  # download=False never fetches
    a = load_dataset(name, tmp_path, download=True)
    np.testing.assert_array_equal(a.x_train, fetched["x_train"])
    np.testing.assert_array_equal(a.y_test, fetched["y_test"])
    if name == "svhn":
        assert calls == ["train_32x32.mat"]  # the test file came with the first fake fetch
    load_dataset(name, tmp_path, download=True)  # files present: nothing fetched again
    assert len(calls) == 1


@pytest.mark.parametrize("name,tv_class", [("svhn", "SVHN"), ("stl10", "STL10")])
def test_svhn_stl10_failed_download_becomes_not_found(tmp_path, monkeypatch, name, tv_class):
    import torchvision.datasets as tvd

    def no_network(self):
        raise RuntimeError("Error downloading: <urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(getattr(tvd, tv_class), "download", no_network)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, tmp_path, download=True)
    assert str(tmp_path) in str(err.value) and "name resolution" in str(err.value)


# ----------------------------------------------------------------------------------------------
# normalize / channel_stats
# ----------------------------------------------------------------------------------------------


def test_normalize_unit_and_standardize():
    x = np.array([0, 51, 255, 102, 0, 255, 255, 0], dtype=np.uint8).reshape(1, 2, 2, 2)
    unit = normalize(x, "unit")
    assert unit.dtype == torch.float32 and unit.shape == (1, 2, 2, 2)
    np.testing.assert_allclose(unit.numpy(), x / 255.0, rtol=1e-6)

    mean, std = np.array([0.2, 0.5]), np.array([0.5, 0.25])
    out = normalize(torch.from_numpy(x), "standardize", mean, std)
    expected = (x / 255.0 - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0, 0].item(), (0.0 - 0.2) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1, 1, 1].item(), (0.0 - 0.5) / 0.25, rtol=1e-6)
    assert x[0, 0, 0, 1] == 51  # input untouched


def test_normalize_rejects_bad_input():
    x = np.zeros((1, 1, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="mean and std"):
        normalize(x, "standardize")
    with pytest.raises(ValueError, match="unit"):
        normalize(x, "whiten")
    with pytest.raises(TypeError):
        normalize(x.astype(np.float32), "unit")
    with pytest.raises(ValueError, match="one entry per channel"):
        normalize(x, "standardize", [0.1, 0.2], [1.0, 1.0])


def test_channel_stats_matches_numpy_reference():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(37, 3, 5, 5), dtype=np.uint8)
    x[:, 2] //= 4  # give channels different statistics
    mean, std = channel_stats(x, chunk_size=8)
    ref = x / 255.0
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-10)
    assert mean.dtype == np.float64 and mean.shape == (3,)
    # standardizing with the stats gives zero mean / unit std per channel
    z = normalize(x, "standardize", mean, std).double()
    np.testing.assert_allclose(z.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# subsample
# ----------------------------------------------------------------------------------------------


def _toy_arrays(n_train: int = 100, n_test: int = 40) -> DatasetArrays:
    rng = np.random.default_rng(5)
    y_train = np.repeat(np.arange(4), n_train // 4)
    rng.shuffle(y_train)
    y_test = np.arange(n_test) % 4
    # encode the original index in the pixels so order can be checked
    x_train = (np.arange(n_train, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 2, 2), np.uint8))
    x_test = (np.arange(n_test, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 2, 2), np.uint8))
    return DatasetArrays("toy", x_train, y_train, x_test, y_test, num_classes=4)


def test_subsample_sizes_stratification_order_determinism():
    full = _toy_arrays()
    s = subsample(full, 30, 10, seed=7)
    assert (len(s.x_train), len(s.y_train), len(s.x_test), len(s.y_test)) == (30, 30, 10, 10)
    idx = s.x_train[:, 0, 0, 0].astype(int)
    assert list(idx) == sorted(idx) and len(set(idx)) == 30  # original relative order, no repeats
    np.testing.assert_array_equal(s.y_train, full.y_train[idx])  # labels stay with their images
    counts = np.bincount(s.y_train, minlength=4)
    assert counts.min() >= 7 and counts.max() <= 8  # 30 over 4 equal classes
    assert sorted(np.bincount(s.y_test, minlength=4)) == [2, 2, 3, 3]  # 10 over 4 equal classes

    again = subsample(full, 30, 10, seed=7)
    np.testing.assert_array_equal(s.x_train, again.x_train)
    np.testing.assert_array_equal(s.y_test, again.y_test)
    other = subsample(full, 30, 10, seed=8)
    assert not np.array_equal(s.x_train, other.x_train)


def test_subsample_none_keeps_all_and_rejects_bad_sizes():
    full = _toy_arrays()
    s = subsample(full, None, None, seed=0)
    assert s.x_train is full.x_train and s.y_test is full.y_test
    s = subsample(full, 100, 5, seed=0)
    assert len(s.x_train) == 100 and len(s.x_test) == 5
    with pytest.raises(ValueError, match="n_train"):
        subsample(full, 101, None, seed=0)
    with pytest.raises(ValueError, match="n_test"):
        subsample(full, None, -1, seed=0)


def test_dataset_arrays_validates():
    x = np.zeros((2, 1, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        DatasetArrays("bad", x.astype(np.float32), np.zeros(2, int), x, np.zeros(2, int), 2)
    with pytest.raises(ValueError, match="labels"):
        DatasetArrays("bad", x, np.zeros(3, int), x, np.zeros(2, int), 2)
    a = DatasetArrays("ok", x, np.zeros(2, np.int32), x, np.zeros(2, np.uint8), 2)
    assert a.y_train.dtype == np.int64 and a.y_test.dtype == np.int64
