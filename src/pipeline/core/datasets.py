"""One registry of the image datasets the pipeline trains on, loaded as uint8 arrays.

Every dataset is read from its real on-disk format under a data root and returned as a
:class:`DatasetArrays`: ``uint8`` images in ``(N, C, H, W)`` layout and ``int64`` labels, for a
train and a test split, in the dataset's original order. Label corruption, subsampling and
normalization all happen later, on these arrays.

Registered datasets (:data:`DATASETS`):

``digits``
    scikit-learn's bundled 8x8 handwritten digits (1,797 images). Needs no files and no
    network: the offline default. Split 70/30 deterministically and stratified by class.
``mnist``, ``fashion_mnist``
    ``torchvision.datasets.MNIST`` / ``FashionMNIST``: the raw IDX files in
    ``<root>/MNIST/raw/`` or ``<root>/FashionMNIST/raw/`` (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``).
``cifar10``, ``cifar100``
    The python pickle batches in ``<root>/cifar-10-batches-py/`` or ``<root>/cifar-100-python/``
    (the layout ``torchvision.datasets.CIFAR10`` / ``CIFAR100`` download to). torchvision only
    downloads; the pickles are read here with a restricted unpickler that allows nothing but
    numpy's array reconstruction, so a crafted file cannot run code (it raises
    :class:`DatasetCorruptError` naming the file).
``svhn``
    The Street View House Numbers, cropped digits: ``<root>/train_32x32.mat`` and
    ``<root>/test_32x32.mat`` (MATLAB v5 files, ``X`` of shape 32x32x3xN uint8 and ``y`` of shape
    Nx1; torchvision's ``SVHN`` layout), read with ``scipy.io.loadmat`` (plain data, no code).
    Label 10 is the digit 0 and becomes 0, as in torchvision. The ``extra`` split is not used.
``stl10``
    STL-10's binary files in ``<root>/stl10_binary/`` (torchvision's ``STL10`` layout):
    ``train_X.bin`` / ``test_X.bin`` (uint8, each image 3x96x96 stored column-major, i.e. channel
    by channel, each channel transposed) and ``train_y.bin`` / ``test_y.bin`` (one uint8 label per
    image, 1..10, shifted to 0..9). The 100,000 unlabelled images are not used.
``tiny_imagenet``
    The standard ``<root>/tiny-imagenet-200/`` folder (``wnids.txt``,
    ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``, ``val/val_annotations.txt``); its
    labelled validation set serves as the test set. There is no automatic download. The decoded
    arrays are cached in ``tiny-imagenet-200/arrays_cache.npz`` after the first load.

Errors: a dataset whose files are missing raises :class:`DatasetNotFoundError` (a
``FileNotFoundError``) saying where it looked and what to do; a file that exists but cannot be
parsed raises :class:`DatasetCorruptError` naming the file; an unknown name raises ``ValueError``.

The helpers :func:`normalize`, :func:`channel_stats` and :func:`subsample` turn the arrays into
model inputs.

Downloads (``download=True``, only for files that are missing) go through torchvision's own
``download`` methods, which verify the files' md5 sums (MNIST, CIFAR, SVHN, STL-10); reading is
always ours: torchvision's dataset constructors never read a file here for CIFAR, SVHN or STL-10.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.device import numpy_rng

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATASETS",
    "DatasetArrays",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "channel_stats",
    "load_dataset",
    "load_tiny_imagenet",
    "normalize",
    "subsample",
]

# ----------------------------------------------------------------------------------------------
# Errors and containers
# ----------------------------------------------------------------------------------------------


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the loader looked (and were not, or could not be, fetched)."""


class DatasetCorruptError(RuntimeError):
    """A dataset file exists but cannot be parsed (truncated, wrong format, undecodable image).

    Attributes:
        path: the offending file (or folder, when the file could not be singled out).
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


@dataclass
class DatasetArrays:
    """A dataset's train and test splits as in-memory arrays.

    Attributes:
        name: registry name of the dataset (a key of :data:`DATASETS`).
        x_train: ``uint8`` images, shape ``(N, C, H, W)`` with ``H == W``, original dataset order.
        y_train: ``int64`` labels, shape ``(N,)``.
        x_test: ``uint8`` images, shape ``(M, C, H, W)``.
        y_test: ``int64`` labels, shape ``(M,)``.
        num_classes: number of classes (labels lie in ``[0, num_classes)``).
        train_files, test_files: the image file of each example, in dataset order, where the
            dataset is a folder of image files (a user's ``imagefolder``,
            :mod:`pipeline.core.user_data`); ``None`` otherwise.
        y_train_given: the training labels as the user's file gives them, where they are not the
            truth (an ``.npz`` with ``y_true``: ``y_train`` is ``y_true``, the model trains on
            these); ``None`` when the given labels are ``y_train``.
        truth_known: whether ``y_train`` is known to be the truth; false for a user dataset
            without ``y_true`` (its labels as given, unverified).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    train_files: list[str] | None = None
    test_files: list[str] | None = None
    y_train_given: np.ndarray | None = None
    truth_known: bool = True

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
                raise ValueError(
                    f"{self.name}: x_{split} must be a uint8 array of shape (N, C, H, W), got "
                    f"{type(x).__name__} {getattr(x, 'dtype', '?')} {getattr(x, 'shape', '?')}"
                )
            if x.shape[2] != x.shape[3]:
                raise ValueError(f"{self.name}: images must be square, x_{split} has shape {x.shape}")
            y = np.asarray(y)
            if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
                raise ValueError(f"{self.name}: y_{split} must be a 1-D integer array, got {y.dtype} {y.shape}")
            y = y.astype(np.int64, copy=False)
            setattr(self, f"y_{split}", y)
            if len(x) != len(y):
                raise ValueError(f"{self.name}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"{self.name}: train images {self.x_train.shape[1:]} and test images "
                f"{self.x_test.shape[1:]} differ in shape"
            )
        for field, n in (("train_files", len(self.x_train)), ("test_files", len(self.x_test)),
                         ("y_train_given", len(self.x_train))):
            value = getattr(self, field)
            if value is not None and len(value) != n:
                raise ValueError(f"{self.name}: {field} has {len(value)} entries for {n} images")
        if self.y_train_given is not None:
            self.y_train_given = np.asarray(self.y_train_given, dtype=np.int64)

    @property
    def channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        """Image height ``H`` (= width ``W``; images are square)."""
        return int(self.x_train.shape[2])


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a registered dataset.

    Attributes:
        name: registry name.
        num_classes, channels, image_size: shape facts every loaded copy must match.
        train_size, test_size: sizes of the full, real dataset's splits (a smaller on-disk copy
            still loads; these are documentation and planning numbers, not enforced).
        loader: ``loader(root, download) -> DatasetArrays``; ``root`` is the data root folder.
    """

    name: str
    num_classes: int
    channels: int
    image_size: int
    train_size: int
    test_size: int
    loader: Callable[[Path, bool], DatasetArrays]


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _not_found(name: str, looked_at: Path | Sequence[Path], *, fetchable: bool, hint: str = "") -> DatasetNotFoundError:
    """Build the one uniform 'dataset missing' error."""
    paths = [looked_at] if isinstance(looked_at, Path) else list(looked_at)
    where = ", ".join(str(p) for p in paths)
    if fetchable:
        todo = (
            f"Set data.download: true in the config (download=True) to fetch it, "
            f"or place the files at {where}."
        )
    else:
        todo = (
            f"It cannot be downloaded automatically (download=True does not help); "
            f"place the files at {where}."
        )
    msg = f"Dataset '{name}' not found: missing {where}. {todo}"
    if hint:
        msg += f" {hint}"
    return DatasetNotFoundError(msg)


def _is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch: loading datasets and labels
    (the ``labels`` job) stays torch-free, and a tensor exists only once torch was imported."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _labels_int64(values: Any) -> np.ndarray:
    if _is_tensor(values):
        values = values.numpy()
    return np.asarray(values, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# digits (scikit-learn, bundled)
# ----------------------------------------------------------------------------------------------

_DIGITS_TEST_FRACTION = 0.3
_DIGITS_SPLIT_SEED = 0
#: which of the 1,797 digits are in the test split of ``train_test_split(test_size=0.3, stratify=y,
#: random_state=0)``, as ``base64(np.packbits(mask))``. Stored because importing scikit-learn takes
#: about 1 s, most of the start-up of a light job, and nearly every job of the default run loads
#: digits; tests/core/test_datasets.py checks it against train_test_split.
_DIGITS_TEST_MASK = (
    "ACAEyLUmMEAIFkEhk0IFDFoACBEiJAAoBiweCBEIlgoAkBkyBDD8oBKBlOBCKErasEQXJMlCyKJKIDCAYATYIUCLgCAAWI3F"
    "ABBADqCQAAVK6AEwEAAijswJAFImhACDuAU8I6acCgIkAA/JVCgEpJjNAhJAYeUAgCxgTpw3a4GSFgFUyEBIQqCkGApQALYL"
    "hWHmiROASxJsgMAiBQaOQgEJ8gLBQbmIE8gJGQABlI4hAoQQqPUgMyg5IMlEyMhoigECkyKSAwkipkAtJgYhCKhggZjIoBQS"
    "hhJKEoU8pBUg"
)


def _digits_csv() -> Path | None:
    """scikit-learn's bundled ``datasets/data/digits.csv.gz`` (what ``load_digits`` reads), found
    without importing scikit-learn; None where it is not there."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images 1797x8x8 in 0..16, targets, test mask)``: read as ``load_digits`` reads them, the
    split from :data:`_DIGITS_TEST_MASK`; through scikit-learn itself where its file is not found."""
    import base64

    path = _digits_csv()
    if path is not None:
        data = np.loadtxt(path, delimiter=",")  # gzip read transparently, as load_digits does
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
        mask = np.unpackbits(np.frombuffer(base64.b64decode(_DIGITS_TEST_MASK), dtype=np.uint8))
        mask = mask[:len(target)].astype(bool)
        if len(target) == 1797 and mask.sum() == 540:
            return images, target, mask
    return _digits_arrays_sklearn()


def _digits_arrays_sklearn() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: ``load_digits`` and ``train_test_split`` (stratified, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    target = bunch.target.astype(np.int64)
    _, idx_test = train_test_split(np.arange(len(target)), test_size=_DIGITS_TEST_FRACTION, stratify=target,
                                   random_state=_DIGITS_SPLIT_SEED)
    mask = np.zeros(len(target), dtype=bool)
    mask[idx_test] = True
    return bunch.images, target, mask


def _load_digits(root: Path, download: bool) -> DatasetArrays:
    """scikit-learn's bundled 8x8 digits; ``root`` and ``download`` are ignored (nothing on disk).

    Pixel values 0..16 are mapped to ``round(v * 255 / 16)`` in uint8. The split is
    ``train_test_split(test_size=0.3, stratify=y, random_state=0)`` with each split's indices
    sorted so both keep the original order (stored: :data:`_DIGITS_TEST_MASK`).
    """
    images, target, test = _digits_arrays()
    x = np.rint(images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None, :, :]
    return DatasetArrays(
        name="digits",
        x_train=np.ascontiguousarray(x[~test]),
        y_train=target[~test],
        x_test=np.ascontiguousarray(x[test]),
        y_test=target[test],
        num_classes=10,
    )


# ----------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (torchvision, raw IDX files)
# ----------------------------------------------------------------------------------------------

_IDX_FILES = {
    # file name -> (magic number, number of dimensions)
    "train-images-idx3-ubyte": (2051, 3),
    "train-labels-idx1-ubyte": (2049, 1),
    "t10k-images-idx3-ubyte": (2051, 3),
    "t10k-labels-idx1-ubyte": (2049, 1),
}


def _check_idx_file(path: Path, magic: int, ndim: int) -> None:
    """Validate an uncompressed uint8 IDX file's header and length; raise DatasetCorruptError naming it."""
    header_len = 4 + 4 * ndim
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(header_len)
    if len(header) < header_len:
        raise DatasetCorruptError(
            f"Corrupt IDX file {path}: {size} bytes, shorter than its {header_len}-byte header "
            f"(truncated download? delete it and fetch again)",
            path,
        )
    (found_magic,) = struct.unpack(">I", header[:4])
    if found_magic != magic:
        raise DatasetCorruptError(
            f"Corrupt IDX file {path}: magic number {found_magic}, expected {magic} "
            f"(uint8 with {ndim} dimension(s))",
            path,
        )
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if size != expected:
        raise DatasetCorruptError(
            f"Corrupt IDX file {path}: header declares dims {dims} ({expected} bytes) but the "
            f"file has {size} bytes (truncated download? delete it and fetch again)",
            path,
        )


def _flat_idx_files(root: Path) -> dict[str, Path] | None:
    """The four IDX files directly in ``root`` (``.gz`` or not), as Debian's ``dataset-fashion-mnist``
    ships them in ``/usr/share/datasets/fashion-mnist/``; ``None`` unless all four are there."""
    found = {}
    for fname in _IDX_FILES:
        for candidate in (root / f"{fname}.gz", root / fname):
            if candidate.is_file():
                found[fname] = candidate
                break
    return found if len(found) == len(_IDX_FILES) else None


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """A uint8 IDX file (gzipped or not) as an array, header and length checked."""
    import gzip

    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
        raise DatasetCorruptError(f"Corrupt IDX file {path}: {exc} (delete it and reinstall or fetch it again)",
                                  path) from None
    header_len = 4 + 4 * ndim
    if len(raw) < header_len or struct.unpack(">I", raw[:4])[0] != magic:
        raise DatasetCorruptError(f"Corrupt IDX file {path}: not a uint8 IDX file with {ndim} dimension(s) "
                                  f"(magic {magic})", path)
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    if len(raw) != header_len + int(np.prod(dims, dtype=np.int64)):
        raise DatasetCorruptError(f"Corrupt IDX file {path}: header declares dims {dims} but the data has "
                                  f"{len(raw) - header_len} bytes (truncated? reinstall or fetch it again)", path)
    # a writable copy: torch.from_numpy warns about (and must not alias) a read-only bytes buffer
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def _load_flat_idx(name: str, files: dict[str, Path]) -> DatasetArrays:
    arrays = {fname: _read_idx(path, *_IDX_FILES[fname]) for fname, path in files.items()}
    x_train, y_train = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    x_test, y_test = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for x, y, prefix in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if len(x) != len(y):
            raise DatasetCorruptError(f"Dataset '{name}': {files[f'{prefix}-images-idx3-ubyte']} holds {len(x)} "
                                      f"images but {files[f'{prefix}-labels-idx1-ubyte']} holds {len(y)} labels",
                                      files[f"{prefix}-labels-idx1-ubyte"])
    return DatasetArrays(name, np.ascontiguousarray(x_train[:, None]), _labels_int64(y_train),
                         np.ascontiguousarray(x_test[:, None]), _labels_int64(y_test), num_classes=10)


def _load_mnist_like(name: str, class_name: str, root: Path, download: bool) -> DatasetArrays:
    # The four files right in data.root (e.g. Debian's /usr/share/datasets/fashion-mnist): read in
    # place, no copy, no torchvision, no download path.
    flat = _flat_idx_files(Path(root))
    if flat is not None:
        return _load_flat_idx(name, flat)
    import torchvision.datasets as tvd

    cls = getattr(tvd, class_name)
    raw = Path(root) / class_name / "raw"
    files = {fname: raw / fname for fname in _IDX_FILES}
    missing = [p for p in files.values() if not p.is_file()]
    if missing and not download:
        flat_hint = f"Or put the four IDX files ({', '.join(_IDX_FILES)}, .gz or not) right in {root}"
        if name == "fashion_mnist":
            flat_hint += (" (Debian: apt-get install dataset-fashion-mnist, then data.root: "
                          "/usr/share/datasets/fashion-mnist)")
        raise _not_found(name, missing if len(missing) < len(files) else raw, fetchable=True, hint=flat_hint + ".")

    def build(train: bool, dl: bool):
        try:
            return cls(str(root), train=train, download=dl)
        except DatasetCorruptError:
            raise
        except Exception as exc:  # network failures, "Dataset not found", parse errors
            still_missing = [p for p in files.values() if not p.is_file()]
            if still_missing:
                raise _not_found(
                    name, still_missing, fetchable=True,
                    hint=f"(torchvision: {type(exc).__name__}: {exc})",
                ) from exc
            raise DatasetCorruptError(
                f"Could not read dataset '{name}' from {raw}: {type(exc).__name__}: {exc}", raw
            ) from exc

    if download and missing:
        build(True, True)  # fetches all four files; the validation below then runs on them
    for fname, (magic, ndim) in _IDX_FILES.items():
        _check_idx_file(files[fname], magic, ndim)
    train = build(True, False)
    test = build(False, False)

    def to_arrays(ds, split: str) -> tuple[np.ndarray, np.ndarray]:
        x = ds.data.numpy()[:, None, :, :]
        y = _labels_int64(ds.targets)
        if len(x) != len(y):
            prefix = "train" if split == "train" else "t10k"
            raise DatasetCorruptError(
                f"Dataset '{name}': {raw / f'{prefix}-images-idx3-ubyte'} holds {len(x)} images but "
                f"{raw / f'{prefix}-labels-idx1-ubyte'} holds {len(y)} labels",
                raw / f"{prefix}-labels-idx1-ubyte",
            )
        return np.ascontiguousarray(x), y

    x_train, y_train = to_arrays(train, "train")
    x_test, y_test = to_arrays(test, "test")
    return DatasetArrays(name, x_train, y_train, x_test, y_test, num_classes=10)


def _load_mnist(root: Path, download: bool) -> DatasetArrays:
    """MNIST through ``torchvision.datasets.MNIST`` (files in ``<root>/MNIST/raw/``)."""
    return _load_mnist_like("mnist", "MNIST", root, download)


def _load_fashion_mnist(root: Path, download: bool) -> DatasetArrays:
    """Fashion-MNIST: the four IDX files right in ``root`` (``.gz`` or not; Debian's
    ``dataset-fashion-mnist`` puts them in ``/usr/share/datasets/fashion-mnist``), else through
    ``torchvision.datasets.FashionMNIST`` (``<root>/FashionMNIST/raw/``)."""
    return _load_mnist_like("fashion_mnist", "FashionMNIST", root, download)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle batches, read with a restricted unpickler)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarLayout:
    """Where torchvision's ``CIFAR10`` / ``CIFAR100`` put the python-version files under the root."""

    title: str
    tv_class: str  # torchvision.datasets class, used for downloading only
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    meta_key: str  # class names in the meta file
    label_key: str  # labels in a batch file


_CIFAR_LAYOUTS = {
    "cifar10": _CifarLayout(
        "CIFAR-10", "CIFAR10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        "batches.meta", "label_names", "labels",
    ),
    "cifar100": _CifarLayout(
        "CIFAR-100", "CIFAR100", "cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels",
    ),
}


def _numpy_attr(modules: Sequence[str], attr: str) -> Any:
    """``attr`` of the first importable module among ``modules`` (numpy 2 renamed ``core`` to ``_core``)."""
    import importlib

    for module in modules:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"numpy provides none of {[f'{m}.{attr}' for m in modules]}")


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")

#: The only globals a CIFAR python pickle may name, and what each resolves to. The files hold
#: dicts of str/bytes keys, lists of ints, lists of bytes/str file names and uint8 numpy arrays.
#: A numpy array pickles as ``_reconstruct(ndarray, shape, dtype)`` plus its state (protocols
#: 0-4; the official archives are Python 2 pickles naming ``numpy.core.multiarray``, numpy >= 2
#: writes ``numpy._core.multiarray``) or as ``_frombuffer(buffer, dtype, shape, order)``
#: (protocol 5); its dtype as ``numpy.dtype(...)``. Protocol 2 written by Python 3 spells bytes
#: as ``_codecs.encode(str, "latin1")`` (a pure codec call). Nothing else is allowed: no
#: ``builtins``, ``os``, ``subprocess``, ``copyreg`` or any other callable.
_CIFAR_PICKLE_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr(_NUMERIC, "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr(_NUMERIC, "_frombuffer"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("_codecs").encode,
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle names a global outside :data:`_CIFAR_PICKLE_GLOBALS`."""


class _CifarUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`_CIFAR_PICKLE_GLOBALS` (no code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _CIFAR_PICKLE_GLOBALS.get((module, name))
        if resolve is None:
            raise _ForbiddenGlobal(f"{module}.{name}")
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a CIFAR file")


def _unpickle_cifar(path: Path, name: str) -> dict:
    """Read one CIFAR python pickle (batch or meta) safely; raise DatasetCorruptError naming it.

    Keys are returned as ``str`` whether the file stores them as bytes (the official archives,
    read with ``encoding="latin1"`` as torchvision does) or as str.
    """
    title = _CIFAR_LAYOUTS[name].title
    try:
        with path.open("rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except _ForbiddenGlobal as exc:
        raise DatasetCorruptError(
            f"{path} is not a genuine {title} file: its pickle references the forbidden global "
            f"{exc} (genuine CIFAR files contain only dicts, lists, strings and numpy uint8 arrays), "
            f"so it was not loaded. Delete it and download the dataset again (data.download: true).",
            path,
        ) from None
    except Exception as exc:  # truncated, not a pickle, bad numpy state, ...
        raise DatasetCorruptError(
            f"Corrupt {name} file {path}: {type(exc).__name__}: {exc} (truncated download? delete it "
            f"and download the dataset again)",
            path,
        ) from exc
    if not isinstance(entry, dict):
        raise DatasetCorruptError(
            f"Corrupt {name} file {path}: unpickled a {type(entry).__name__}, expected a dict", path
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_cifar_batch(path: Path, name: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as ``(uint8 (N, 3, 32, 32), int64 (N,))``, validated."""
    entry = _unpickle_cifar(path, name)
    if "data" not in entry or label_key not in entry:
        raise DatasetCorruptError(
            f"Corrupt {name} file {path}: missing keys: needs 'data' and {label_key!r}, "
            f"has {sorted(map(str, entry))}",
            path,
        )
    data, labels = entry["data"], entry[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetCorruptError(
            f"Corrupt {name} file {path}: 'data' is {type(data).__name__} "
            f"{getattr(data, 'dtype', '?')} {getattr(data, 'shape', '?')}, expected (N, 3072) uint8 rows",
            path,
        )
    if not isinstance(labels, (list, tuple, np.ndarray)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels
    ):
        raise DatasetCorruptError(f"Corrupt {name} file {path}: {label_key!r} is not a list of integers", path)
    if len(labels) != len(data):
        raise DatasetCorruptError(
            f"Corrupt {name} file {path}: 'data' has {len(data)} rows for {len(labels)} labels", path
        )
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64).reshape(-1)


def _check_cifar_meta(path: Path, name: str, key: str, num_classes: int) -> None:
    entry = _unpickle_cifar(path, name)
    names = entry.get(key)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        found = f"{len(names)}" if isinstance(names, (list, tuple)) else f"a {type(names).__name__}"
        raise DatasetCorruptError(
            f"Corrupt {name} meta file {path}: {key!r} should list {num_classes} class names, got {found}",
            path,
        )


def _download_cifar(layout: _CifarLayout, root: Path) -> None:
    """Fetch the official archive with torchvision (md5-verified archive, then extracted).

    Only torchvision's ``download`` runs (it checks the files' md5 sums and downloads the archive
    unless they all match); its dataset constructor, which unpickles the batches without any
    restriction, never does.
    """
    import torchvision.datasets as tvd

    downloader = object.__new__(getattr(tvd, layout.tv_class))
    downloader.root = str(root)
    downloader.download()


def _load_cifar(name: str, num_classes: int, root: Path, download: bool) -> DatasetArrays:
    """Read CIFAR-10/100 from torchvision's python-version layout under ``root``.

    Every pickle (batches and meta) is read with :class:`_CifarUnpickler`, which refuses any
    global but numpy's array reconstruction, so a crafted file cannot run code: it raises
    :class:`DatasetCorruptError` naming the file. torchvision is used for downloading only.
    """
    layout = _CIFAR_LAYOUTS[name]
    folder = Path(root) / layout.folder
    train_files = [folder / f for f in layout.train_files]
    test_files = [folder / f for f in layout.test_files]
    meta_file = folder / layout.meta_file
    required = train_files + test_files + [meta_file]
    missing = [p for p in required if not p.is_file()]
    if missing and not download:
        raise _not_found(name, missing if len(missing) < len(required) else folder, fetchable=True)
    if missing:
        try:
            _download_cifar(layout, root)
        except Exception as exc:  # network failures, md5 mismatch of the archive
            still_missing = [p for p in required if not p.is_file()]
            if still_missing:
                raise _not_found(
                    name, still_missing, fetchable=True, hint=f"(torchvision: {type(exc).__name__}: {exc})"
                ) from exc
            raise
        still_missing = [p for p in required if not p.is_file()]
        if still_missing:
            raise _not_found(name, still_missing, fetchable=True)

    def read_split(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_read_cifar_batch(p, name, layout.label_key) for p in paths]
        x = np.ascontiguousarray(np.concatenate([x for x, _ in parts]))
        return x, np.concatenate([y for _, y in parts])

    x_train, y_train = read_split(train_files)
    x_test, y_test = read_split(test_files)
    _check_cifar_meta(meta_file, name, layout.meta_key, num_classes)
    return DatasetArrays(name, x_train, y_train, x_test, y_test, num_classes=num_classes)


def _load_cifar10(root: Path, download: bool) -> DatasetArrays:
    """CIFAR-10 (``<root>/cifar-10-batches-py/``; downloaded by ``torchvision.datasets.CIFAR10``)."""
    return _load_cifar("cifar10", 10, root, download)


def _load_cifar100(root: Path, download: bool) -> DatasetArrays:
    """CIFAR-100, fine labels (``<root>/cifar-100-python/``; downloaded by ``torchvision.datasets.CIFAR100``)."""
    return _load_cifar("cifar100", 100, root, download)


# ----------------------------------------------------------------------------------------------
# SVHN (MATLAB v5 .mat files) and STL-10 (raw binary files)
# ----------------------------------------------------------------------------------------------

_SVHN_SPLITS = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _download_with_torchvision(tv_class: str, root: Path, **attrs: Any) -> None:
    """Run only ``torchvision.datasets.<tv_class>.download`` (md5-verified), never its constructor."""
    import torchvision.datasets as tvd

    downloader = object.__new__(getattr(tvd, tv_class))
    downloader.root = str(root)
    for key, value in attrs.items():
        setattr(downloader, key, value)
    downloader.download()


def _fetch_missing(name: str, required: list[Path], folder: Path | None, download: bool,
                   fetch: Callable[[], None]) -> None:
    """Raise DatasetNotFoundError for missing files unless ``download``; then ``fetch`` and re-check.

    The error names the missing files (or ``folder`` when every file of it is missing)."""
    missing = [p for p in required if not p.is_file()]
    if not missing:
        return
    if not download:
        whole = folder is not None and len(missing) == len(required)
        raise _not_found(name, folder if whole else missing, fetchable=True)
    try:
        fetch()
    except Exception as exc:  # network failures, md5 mismatch
        still_missing = [p for p in required if not p.is_file()]
        if still_missing:
            raise _not_found(name, still_missing, fetchable=True,
                             hint=f"(torchvision: {type(exc).__name__}: {exc})") from exc
        raise
    still_missing = [p for p in required if not p.is_file()]
    if still_missing:
        raise _not_found(name, still_missing, fetchable=True)


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN ``.mat`` file as ``(uint8 (N, 3, 32, 32), int64 (N,))`` with labels 10 -> 0."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as exc:  # truncated, not a MATLAB file, v7.3 (HDF5), ...
        raise DatasetCorruptError(
            f"Corrupt SVHN file {path}: {type(exc).__name__}: {exc} (truncated download? delete it "
            f"and download it again)", path) from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetCorruptError(
            f"Corrupt SVHN file {path}: 'X' is {type(x).__name__} {getattr(x, 'dtype', '')} "
            f"{getattr(x, 'shape', '')}, expected uint8 of shape (32, 32, 3, N)", path)
    n = x.shape[3]
    if (not isinstance(y, np.ndarray) or y.size != n or y.dtype.kind not in "uif"
            or (y.ndim == 2 and 1 not in y.shape) or y.ndim > 2):
        raise DatasetCorruptError(
            f"Corrupt SVHN file {path}: 'y' is {type(y).__name__} {getattr(y, 'dtype', '')} "
            f"{getattr(y, 'shape', '')}, expected {n} labels (N x 1)", path)
    labels = y.reshape(-1)
    if labels.size and (not np.all(labels == np.round(labels)) or labels.min() < 1 or labels.max() > 10):
        raise DatasetCorruptError(
            f"Corrupt SVHN file {path}: labels must be integers 1..10 (10 = digit 0), found "
            f"[{labels.min()}, {labels.max()}]", path)
    labels = labels.astype(np.int64)
    labels[labels == 10] = 0
    return np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))), labels


def _load_svhn(root: Path, download: bool) -> DatasetArrays:
    """SVHN from ``<root>/train_32x32.mat`` and ``<root>/test_32x32.mat`` (torchvision's layout)."""
    root = Path(root)
    files = {split: root / fname for split, fname in _SVHN_SPLITS.items()}

    def fetch() -> None:
        import torchvision.datasets as tvd

        for split, path in files.items():
            if not path.is_file():
                url, filename, md5 = tvd.SVHN.split_list[split]
                _download_with_torchvision("SVHN", root, split=split, url=url, filename=filename, file_md5=md5)

    _fetch_missing("svhn", list(files.values()), None, download, fetch)
    x_train, y_train = _read_svhn_mat(files["train"])
    x_test, y_test = _read_svhn_mat(files["test"])
    return DatasetArrays("svhn", x_train, y_train, x_test, y_test, num_classes=10)


STL10_FOLDER = "stl10_binary"
_STL10_SIZE = 96
_STL10_IMAGE_BYTES = 3 * _STL10_SIZE * _STL10_SIZE


def _read_stl10_split(x_path: Path, y_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One STL-10 split: images (column-major 3x96x96 each) and labels 1..10 -> 0..9."""
    x_size, y_size = x_path.stat().st_size, y_path.stat().st_size
    if x_size == 0 or x_size % _STL10_IMAGE_BYTES:
        raise DatasetCorruptError(
            f"Corrupt STL-10 file {x_path}: {x_size} bytes, not a positive multiple of one image "
            f"({_STL10_IMAGE_BYTES} bytes: 3x96x96 uint8) (truncated download? delete it and fetch again)",
            x_path)
    n = x_size // _STL10_IMAGE_BYTES
    if y_size != n:
        shorter = y_path if y_size < n else x_path
        raise DatasetCorruptError(
            f"Corrupt STL-10 files: {x_path} holds {n} images but {y_path} holds {y_size} labels; "
            f"{shorter} looks truncated (delete the files and fetch them again)", shorter)
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
    if labels.min() < 1 or labels.max() > 10:
        raise DatasetCorruptError(
            f"Corrupt STL-10 file {y_path}: labels must be 1..10, found [{labels.min()}, {labels.max()}]",
            y_path)
    images = np.fromfile(x_path, dtype=np.uint8).reshape(n, 3, _STL10_SIZE, _STL10_SIZE)
    return np.ascontiguousarray(images.transpose(0, 1, 3, 2)), labels - 1


def _load_stl10(root: Path, download: bool) -> DatasetArrays:
    """STL-10's labelled train/test splits from ``<root>/stl10_binary/`` (torchvision's layout)."""
    folder = Path(root) / STL10_FOLDER
    files = {f"{split}_{kind}": folder / f"{split}_{kind}.bin" for split in ("train", "test") for kind in ("X", "y")}
    _fetch_missing("stl10", list(files.values()), folder, download,
                   lambda: _download_with_torchvision("STL10", Path(root)))
    x_train, y_train = _read_stl10_split(files["train_X"], files["train_y"])
    x_test, y_test = _read_stl10_split(files["test_X"], files["test_y"])
    return DatasetArrays("stl10", x_train, y_train, x_test, y_test, num_classes=10)


# ----------------------------------------------------------------------------------------------
# Tiny ImageNet (folder of JPEGs, read with PIL)
# ----------------------------------------------------------------------------------------------

TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
TINY_IMAGENET_CACHE = "arrays_cache.npz"
_TINY_SIZE = 64
_TINY_NUM_CLASSES = 200
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _tiny_listing(name: str, base: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Resolve class order and the (path, label) lists of both splits, without decoding images."""
    train_dir, val_dir = base / "train", base / "val"
    ann_file, val_images = val_dir / "val_annotations.txt", val_dir / "images"
    required = [train_dir, val_images, ann_file]
    missing = [p for p in required if not p.exists()]
    if missing:
        hint = (
            f"Download {_TINY_URL} and unzip it into the data root so that {base}/train, "
            f"{base}/val/images and {ann_file} exist."
        )
        raise _not_found(name, missing, fetchable=False, hint=hint)

    wnids_file = base / "wnids.txt"
    if wnids_file.is_file():
        wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
        if len(set(wnids)) != len(wnids):
            raise DatasetCorruptError(f"Corrupt {wnids_file}: duplicate class ids", wnids_file)
    else:
        wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not wnids:
        raise DatasetCorruptError(f"Dataset '{name}': no classes found in {wnids_file} or {train_dir}", train_dir)
    if len(wnids) > _TINY_NUM_CLASSES:
        raise DatasetCorruptError(
            f"Dataset '{name}': {len(wnids)} classes listed (in {wnids_file} or {train_dir}), "
            f"Tiny ImageNet has {_TINY_NUM_CLASSES}",
            wnids_file,
        )
    label_of = {w: i for i, w in enumerate(wnids)}

    extra = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and p.name not in label_of)
    if extra:
        raise DatasetCorruptError(
            f"Dataset '{name}': class folders {extra[:5]} in {train_dir} are not listed in {wnids_file}", train_dir
        )

    train: list[tuple[Path, int]] = []
    for wnid in wnids:
        img_dir = train_dir / wnid / "images"
        if not img_dir.is_dir():
            raise DatasetCorruptError(f"Dataset '{name}': missing folder {img_dir} for class {wnid}", img_dir)
        files = sorted(f for f in os.listdir(img_dir) if f.lower().endswith(_IMAGE_SUFFIXES))
        train.extend((img_dir / f, label_of[wnid]) for f in files)

    val_label: dict[str, int] = {}
    for lineno, line in enumerate(ann_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetCorruptError(
                f"Corrupt {ann_file}, line {lineno}: expected tab-separated 'file<TAB>wnid...'", ann_file)
        fname, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in label_of:
            raise DatasetCorruptError(f"Corrupt {ann_file}, line {lineno}: unknown class id {wnid!r}", ann_file)
        val_label[fname] = label_of[wnid]
    test = [(val_images / f, val_label[f]) for f in sorted(val_label)]
    return wnids, train, test


def _tiny_fingerprint(wnids: list[str], train: list[tuple[Path, int]], test: list[tuple[Path, int]], base: Path) -> str:
    """Hash of class order, every file's relative path, label and size: invalidates a stale cache."""
    h = hashlib.sha256()
    h.update("\n".join(wnids).encode())
    for split, items in (("train", train), ("test", test)):
        h.update(split.encode())
        for path, label in items:
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            h.update(f"{path.relative_to(base)}\t{label}\t{size}\n".encode())
    return h.hexdigest()


def _read_images(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    x = np.empty((len(items), 3, _TINY_SIZE, _TINY_SIZE), dtype=np.uint8)
    y = np.empty(len(items), dtype=np.int64)
    for i, (path, label) in enumerate(items):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                arr = np.asarray(im)
        except FileNotFoundError as exc:
            raise DatasetCorruptError(f"Tiny ImageNet image {path} is listed but missing", path) from exc
        except Exception as exc:  # PIL.UnidentifiedImageError, truncated data (OSError), ...
            raise DatasetCorruptError(f"Corrupt image {path}: {type(exc).__name__}: {exc}", path) from exc
        if arr.shape != (_TINY_SIZE, _TINY_SIZE, 3):
            raise DatasetCorruptError(
                f"Image {path} is {arr.shape[1]}x{arr.shape[0]}, Tiny ImageNet images are "
                f"{_TINY_SIZE}x{_TINY_SIZE}", path
            )
        x[i] = arr.transpose(2, 0, 1)
        y[i] = label
    return x, y


def load_tiny_imagenet(root: str | Path, download: bool = False, *, use_cache: bool = True) -> DatasetArrays:
    """Load Tiny ImageNet from ``<root>/tiny-imagenet-200/`` (the registry's loader).

    Class ``k`` is the ``k``-th line of ``wnids.txt`` (sorted train folder names if absent).
    ``num_classes`` is always 200, so a partial copy with fewer classes keeps the model's
    output width; more than 200 listed classes is an error.
    Train order: class by class in that order, files sorted by name within a class. Test (the
    labelled ``val`` split) order: file names sorted; labels from ``val/val_annotations.txt``.

    Args:
        root: data root holding the ``tiny-imagenet-200`` folder.
        download: accepted for a uniform loader signature; no download exists, so missing files
            raise :class:`DatasetNotFoundError` whatever its value.
        use_cache: reuse / write ``tiny-imagenet-200/arrays_cache.npz`` (decoded arrays plus a
            fingerprint of the file listing; rebuilt when the listing changes). Written
            atomically; a failed write only warns.
    """
    name = "tiny_imagenet"
    base = Path(root) / TINY_IMAGENET_FOLDER
    wnids, train_items, test_items = _tiny_listing(name, base)
    cache = base / TINY_IMAGENET_CACHE
    fingerprint = _tiny_fingerprint(wnids, train_items, test_items, base) if use_cache else ""

    if use_cache and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return DatasetArrays(
                        name, z["x_train"], z["y_train"], z["x_test"], z["y_test"], num_classes=_TINY_NUM_CLASSES
                    )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # unreadable: rebuild it
            warnings.warn(f"Ignoring unreadable Tiny ImageNet cache {cache}: {exc}", stacklevel=2)

    x_train, y_train = _read_images(train_items)
    x_test, y_test = _read_images(test_items)
    arrays = DatasetArrays(name, x_train, y_train, x_test, y_test, num_classes=_TINY_NUM_CLASSES)

    if use_cache:
        from pipeline.core.artifacts import atomic_path

        try:
            with atomic_path(cache) as tmp, tmp.open("wb") as f:
                np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                         fingerprint=np.array(fingerprint))
        except OSError as exc:
            warnings.warn(f"Could not write Tiny ImageNet cache {cache}: {exc}", stacklevel=2)
    return arrays


def _load_tiny_imagenet(root: Path, download: bool) -> DatasetArrays:
    return load_tiny_imagenet(root, download)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("digits", num_classes=10, channels=1, image_size=8,
                    train_size=1257, test_size=540, loader=_load_digits),
        DatasetSpec("mnist", num_classes=10, channels=1, image_size=28,
                    train_size=60000, test_size=10000, loader=_load_mnist),
        DatasetSpec("fashion_mnist", num_classes=10, channels=1, image_size=28,
                    train_size=60000, test_size=10000, loader=_load_fashion_mnist),
        DatasetSpec("cifar10", num_classes=10, channels=3, image_size=32,
                    train_size=50000, test_size=10000, loader=_load_cifar10),
        DatasetSpec("cifar100", num_classes=100, channels=3, image_size=32,
                    train_size=50000, test_size=10000, loader=_load_cifar100),
        DatasetSpec("tiny_imagenet", num_classes=200, channels=3, image_size=64,
                    train_size=100000, test_size=10000, loader=_load_tiny_imagenet),
        DatasetSpec("svhn", num_classes=10, channels=3, image_size=32,
                    train_size=73257, test_size=26032, loader=_load_svhn),
        DatasetSpec("stl10", num_classes=10, channels=3, image_size=96,
                    train_size=5000, test_size=8000, loader=_load_stl10),
    )
}
"""Every dataset the pipeline knows, by registry name."""


def load_dataset(name: str, root: str | Path = "data", download: bool = False) -> DatasetArrays:
    """Load a registered dataset's train and test splits as uint8 NCHW arrays.

    Args:
        name: a key of :data:`DATASETS`.
        root: data root folder the on-disk formats live under (ignored by ``digits``).
        download: let torchvision fetch MNIST / Fashion-MNIST / CIFAR / SVHN / STL-10 files that
            are missing (md5-verified).
            With ``False`` (the default) nothing touches the network.

    Raises:
        ValueError: unknown ``name``, or loaded arrays that contradict the registry (image
            shape, labels outside ``[0, num_classes)``).
        DatasetNotFoundError: the files are missing (message: dataset, path, what to do).
        DatasetCorruptError: a file exists but cannot be parsed (message names the file).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; allowed names: {', '.join(sorted(DATASETS))} (a user's "
                         f"own dataset is configured under data.custom, pipeline.core.user_data)")
    spec = DATASETS[name]
    arrays = spec.loader(Path(root), bool(download))
    shape = (spec.channels, spec.image_size, spec.image_size)
    if arrays.x_train.shape[1:] != shape:
        raise ValueError(f"Dataset '{name}': images have shape {arrays.x_train.shape[1:]}, expected {shape}")
    for split, y in (("train", arrays.y_train), ("test", arrays.y_test)):
        if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
            raise ValueError(
                f"Dataset '{name}': {split} labels span [{y.min()}, {y.max()}], "
                f"outside [0, {spec.num_classes})"
            )
    if arrays.num_classes != spec.num_classes:
        raise ValueError(f"Dataset '{name}': loader reports {arrays.num_classes} classes, expected {spec.num_classes}")
    return arrays


# ----------------------------------------------------------------------------------------------
# Normalization and subsampling
# ----------------------------------------------------------------------------------------------

NORMALIZE_MODES = ("unit", "standardize")


def channel_stats(x_train_uint8: np.ndarray | torch.Tensor, chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population, ddof=0) std of ``x / 255`` over a uint8 NCHW array.

    Sums and sums of squares are accumulated exactly in integers, ``chunk_size`` images at a
    time, so the extra memory is one chunk (Tiny ImageNet's 100k x 3 x 64 x 64 is never
    converted to float as a whole).

    Args:
        x_train_uint8: uint8 images, shape ``(N, C, H, W)``, ``N > 0``.
        chunk_size: images per chunk.

    Returns:
        ``(mean, std)``, each a float64 array of shape ``(C,)``.
    """
    x = x_train_uint8.numpy() if _is_tensor(x_train_uint8) else np.asarray(x_train_uint8)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"channel_stats expects uint8 (N, C, H, W) images, got {x.dtype} {x.shape}")
    if len(x) == 0:
        raise ValueError("channel_stats needs at least one image")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n, c, h, w = x.shape
    total = np.zeros(c, dtype=np.int64)
    total_sq = np.zeros(c, dtype=np.int64)
    for start in range(0, n, chunk_size):
        chunk = x[start : start + chunk_size]
        total += chunk.sum(axis=(0, 2, 3), dtype=np.int64)
        wide = chunk.astype(np.int32)
        total_sq += np.einsum("nchw,nchw->c", wide, wide, dtype=np.int64)
    count = n * h * w
    mean = total / (count * 255.0)
    var = total_sq / (count * 255.0**2) - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def normalize(
    x: np.ndarray | torch.Tensor,
    mode: str,
    mean: np.ndarray | Sequence[float] | None = None,
    std: np.ndarray | Sequence[float] | None = None,
) -> torch.Tensor:
    """Turn uint8 NCHW images into a float32 tensor for a model.

    Args:
        x: uint8 images ``(N, C, H, W)`` (numpy array or tensor; not modified).
        mode: ``"unit"``: ``x / 255`` in [0, 1] (the papers' MLP); ``"standardize"``:
            ``(x / 255 - mean[c]) / std[c]`` per channel (CNN, AlexNet, ResNet).
        mean, std: per-channel statistics of ``x / 255``, shape ``(C,)``, as returned by
            :func:`channel_stats` on the *training* set; required for ``"standardize"``,
            ignored for ``"unit"``.

    Returns:
        float32 tensor of shape ``(N, C, H, W)`` on the CPU.
    """
    import torch  # local: the torch-free jobs (labels) import this module

    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.ndim != 4:
        raise TypeError(
            f"normalize expects uint8 images of shape (N, C, H, W), got "
            f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}"
        )
    out = t.to(torch.float32).div_(255.0)
    if mode == "unit":
        return out
    if mode != "standardize":
        raise ValueError(f"Unknown normalization mode {mode!r}; allowed: {', '.join(NORMALIZE_MODES)}")
    if mean is None or std is None:
        raise ValueError("normalize(mode='standardize') needs per-channel mean and std (see channel_stats)")
    c = t.shape[1]
    m = torch.as_tensor(np.asarray(mean, dtype=np.float64).reshape(-1), dtype=torch.float32)
    s = torch.as_tensor(np.asarray(std, dtype=np.float64).reshape(-1), dtype=torch.float32)
    if m.numel() != c or s.numel() != c:
        raise ValueError(f"mean/std must have one entry per channel ({c}), got {m.numel()} and {s.numel()}")
    if not bool((s > 0).all()):
        raise ValueError(f"std must be positive in every channel, got {s.tolist()}")
    return out.sub_(m.view(1, c, 1, 1)).div_(s.view(1, c, 1, 1))


def _stratified_indices(y: np.ndarray, n: int | None, rng: np.random.Generator, split: str) -> np.ndarray | None:
    """Sorted indices of ``n`` items drawn per class in proportion to class size; None = keep all."""
    total = len(y)
    if n is None or n == total:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= total:
        raise ValueError(f"n_{split} must be None or an integer in [0, {total}], got {n!r}")
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * (n / total)
    take = np.floor(quota).astype(np.int64)
    remainder = int(n - take.sum())
    if remainder:
        # largest fractional parts first; random tie-break so no class is systematically favoured
        order = np.lexsort((rng.random(len(classes)), -(quota - take)))
        take[order[:remainder]] += 1
    chosen = [
        rng.choice(np.flatnonzero(y == cls), size=int(k), replace=False)
        for cls, k in zip(classes, take, strict=True)
        if k > 0
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def subsample(arrays: DatasetArrays, n_train: int | None, n_test: int | None, seed: int) -> DatasetArrays:
    """A random, class-stratified subset of each split that keeps the original relative order.

    Each class contributes in proportion to its share of the split (largest-remainder rounding),
    items are drawn without replacement and the chosen indices are sorted. The train and test
    draws use independent streams derived from ``seed``, so the same arguments always give the
    same subset.

    Args:
        arrays: the full dataset.
        n_train, n_test: subset sizes; ``None`` (or the full size) keeps that split whole,
            sharing its arrays rather than copying them.
        seed: non-negative integer seed.

    Raises:
        ValueError: a size outside ``[0, split size]``.
    """
    idx_train = _stratified_indices(arrays.y_train, n_train, numpy_rng(seed, 0), "train")
    idx_test = _stratified_indices(arrays.y_test, n_test, numpy_rng(seed, 1), "test")

    def pick(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return (x, y) if idx is None else (x[idx], y[idx])

    def files(names: list[str] | None, idx: np.ndarray | None) -> list[str] | None:
        return names if names is None or idx is None else [names[i] for i in idx]

    x_train, y_train = pick(arrays.x_train, arrays.y_train, idx_train)
    x_test, y_test = pick(arrays.x_test, arrays.y_test, idx_test)
    given = arrays.y_train_given
    return DatasetArrays(arrays.name, x_train, y_train, x_test, y_test, arrays.num_classes,
                         train_files=files(arrays.train_files, idx_train),
                         test_files=files(arrays.test_files, idx_test),
                         y_train_given=given if given is None or idx_train is None else given[idx_train],
                         truth_known=arrays.truth_known)


def dataset_sizes(config: dict, dataset: str) -> tuple[int, int]:
    """(train, test) images a run of ``dataset`` uses, after ``data.train_subset/test_subset``."""
    spec = DATASETS[dataset]
    n_train, n_test = spec.train_size, spec.test_size
    data = config.get("data", {})
    if data.get("train_subset"):
        n_train = min(n_train, int(data["train_subset"]))
    if data.get("test_subset"):
        n_test = min(n_test, int(data["test_subset"]))
    return n_train, n_test
