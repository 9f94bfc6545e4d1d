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
    ``torchvision.datasets.CIFAR10`` / ``CIFAR100``: the python pickle batches in
    ``<root>/cifar-10-batches-py/`` or ``<root>/cifar-100-python/``.
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
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

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


def _labels_int64(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.numpy()
    return np.asarray(values, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# digits (scikit-learn, bundled)
# ----------------------------------------------------------------------------------------------

_DIGITS_TEST_FRACTION = 0.3
_DIGITS_SPLIT_SEED = 0


def _load_digits(root: Path, download: bool) -> DatasetArrays:
    """scikit-learn's bundled 8x8 digits; ``root`` and ``download`` are ignored (nothing on disk).

    Pixel values 0..16 are mapped to ``round(v * 255 / 16)`` in uint8. The split is
    ``train_test_split(test_size=0.3, stratify=y, random_state=0)`` with each split's indices
    sorted so both keep the original order.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=_DIGITS_TEST_FRACTION, stratify=y, random_state=_DIGITS_SPLIT_SEED
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    return DatasetArrays(
        name="digits",
        x_train=np.ascontiguousarray(x[idx_train]),
        y_train=y[idx_train],
        x_test=np.ascontiguousarray(x[idx_test]),
        y_test=y[idx_test],
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


def _load_mnist_like(name: str, class_name: str, root: Path, download: bool) -> DatasetArrays:
    import torchvision.datasets as tvd

    cls = getattr(tvd, class_name)
    raw = Path(root) / class_name / "raw"
    files = {fname: raw / fname for fname in _IDX_FILES}
    missing = [p for p in files.values() if not p.is_file()]
    if missing and not download:
        raise _not_found(name, missing if len(missing) < len(files) else raw, fetchable=True)

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
    """Fashion-MNIST through ``torchvision.datasets.FashionMNIST`` (``<root>/FashionMNIST/raw/``)."""
    return _load_mnist_like("fashion_mnist", "FashionMNIST", root, download)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (torchvision, python pickle batches)
# ----------------------------------------------------------------------------------------------


@functools.cache
def _cifar_class(base_name: str) -> type:
    """A subclass of ``torchvision.datasets.<base_name>`` that checks file presence, not md5 sums.

    torchvision compares every batch file (and the meta file) against the md5 sum of the
    official archive before parsing. We keep torchvision's parsing code unchanged but replace
    those checks with existence checks because (a) small on-disk fixtures written by the tests can
    never match the official sums and (b) a damaged file is still caught: it fails to unpickle or
    yields the wrong shape, and :func:`_load_cifar` then names it. ``download=True`` still fetches
    the official archive and verifies *its* md5 (``download_and_extract_archive``) when any batch
    file is absent. Created lazily so importing this module does not import torchvision.
    """
    import torchvision.datasets as tvd

    base = getattr(tvd, base_name)

    def _check_integrity(self) -> bool:
        folder = os.path.join(self.root, self.base_folder)
        return all(os.path.isfile(os.path.join(folder, f)) for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        if not os.path.isfile(path):
            raise RuntimeError(f"Dataset metadata file not found: {path}")
        with open(path, "rb") as infile:
            data = pickle.load(infile, encoding="latin1")
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return type(
        f"_{base_name}PresenceChecked",
        (base,),
        {"_check_integrity": _check_integrity, "_load_meta": _load_meta, "__module__": __name__},
    )


def _find_bad_pickle(paths: Sequence[Path], label_keys: Sequence[str]) -> tuple[Path, str] | None:
    """Return the first CIFAR pickle that does not parse as a batch/meta dict, with the reason."""
    for path in paths:
        try:
            with path.open("rb") as f:
                entry = pickle.load(f, encoding="latin1")
        except Exception as exc:
            return path, f"{type(exc).__name__}: {exc}"
        if not isinstance(entry, dict):
            return path, f"unpickled a {type(entry).__name__}, expected a dict"
        keys = [k for k in label_keys if k in entry]
        if label_keys and (not keys or "data" not in entry):
            return path, f"missing keys: needs 'data' and one of {list(label_keys)}, has {sorted(map(str, entry))}"
        if "data" in entry:
            data = np.asarray(entry["data"])
            if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(entry[keys[0]]):
                return path, (
                    f"'data' has shape {data.shape} for {len(entry[keys[0]])} labels, "
                    f"expected (N, 3072) uint8 rows"
                )
    return None


def _load_cifar(name: str, class_name: str, num_classes: int, root: Path, download: bool) -> DatasetArrays:
    cls = _cifar_class(class_name)
    folder = Path(root) / cls.base_folder
    batch_files = [folder / f for f, _ in cls.train_list + cls.test_list]
    meta_file = folder / cls.meta["filename"]
    required = batch_files + [meta_file]
    missing = [p for p in required if not p.is_file()]
    if missing and not download:
        raise _not_found(name, missing if len(missing) < len(required) else folder, fetchable=True)

    def build(train: bool, dl: bool):
        try:
            return cls(str(root), train=train, download=dl)
        except Exception as exc:
            still_missing = [p for p in required if not p.is_file()]
            if still_missing:
                raise _not_found(
                    name, still_missing, fetchable=True,
                    hint=f"(torchvision: {type(exc).__name__}: {exc})",
                ) from exc
            bad = _find_bad_pickle(batch_files, ("labels", "fine_labels")) or _find_bad_pickle(
                [meta_file], ()
            )
            if bad is not None:
                raise DatasetCorruptError(f"Corrupt {name} file {bad[0]}: {bad[1]}", bad[0]) from exc
            raise DatasetCorruptError(
                f"Could not read dataset '{name}' from {folder}: {type(exc).__name__}: {exc}", folder
            ) from exc

    train = build(True, download and bool(missing))
    test = build(False, False)

    def to_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        return x, _labels_int64(ds.targets)

    x_train, y_train = to_arrays(train)
    x_test, y_test = to_arrays(test)
    return DatasetArrays(name, x_train, y_train, x_test, y_test, num_classes=num_classes)


def _load_cifar10(root: Path, download: bool) -> DatasetArrays:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` (``<root>/cifar-10-batches-py/``)."""
    return _load_cifar("cifar10", "CIFAR10", 10, root, download)


def _load_cifar100(root: Path, download: bool) -> DatasetArrays:
    """CIFAR-100 (fine labels) through ``torchvision.datasets.CIFAR100`` (``<root>/cifar-100-python/``)."""
    return _load_cifar("cifar100", "CIFAR100", 100, root, download)


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
            raise DatasetCorruptError(f"Corrupt {ann_file}, line {lineno}: expected tab-separated 'file<TAB>wnid...'", ann_file)
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
                f"Image {path} is {arr.shape[1]}x{arr.shape[0]}, Tiny ImageNet images are {_TINY_SIZE}x{_TINY_SIZE}", path
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
        except Exception as exc:  # unreadable cache: rebuild it
            warnings.warn(f"Ignoring unreadable Tiny ImageNet cache {cache}: {exc}", stacklevel=2)

    x_train, y_train = _read_images(train_items)
    x_test, y_test = _read_images(test_items)
    arrays = DatasetArrays(name, x_train, y_train, x_test, y_test, num_classes=_TINY_NUM_CLASSES)

    if use_cache:
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                         fingerprint=np.array(fingerprint))
            os.replace(tmp, cache)
        except OSError as exc:
            warnings.warn(f"Could not write Tiny ImageNet cache {cache}: {exc}", stacklevel=2)
            tmp.unlink(missing_ok=True)
    return arrays


def _load_tiny_imagenet(root: Path, download: bool) -> DatasetArrays:
    return load_tiny_imagenet(root, download)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("digits", num_classes=10, channels=1, image_size=8, train_size=1257, test_size=540, loader=_load_digits),
        DatasetSpec("mnist", num_classes=10, channels=1, image_size=28, train_size=60000, test_size=10000, loader=_load_mnist),
        DatasetSpec("fashion_mnist", num_classes=10, channels=1, image_size=28, train_size=60000, test_size=10000, loader=_load_fashion_mnist),
        DatasetSpec("cifar10", num_classes=10, channels=3, image_size=32, train_size=50000, test_size=10000, loader=_load_cifar10),
        DatasetSpec("cifar100", num_classes=100, channels=3, image_size=32, train_size=50000, test_size=10000, loader=_load_cifar100),
        DatasetSpec("tiny_imagenet", num_classes=200, channels=3, image_size=64, train_size=100000, test_size=10000, loader=_load_tiny_imagenet),
    )
}
"""Every dataset the pipeline knows, by registry name."""


def load_dataset(name: str, root: str | Path = "data", download: bool = False) -> DatasetArrays:
    """Load a registered dataset's train and test splits as uint8 NCHW arrays.

    Args:
        name: a key of :data:`DATASETS`.
        root: data root folder the on-disk formats live under (ignored by ``digits``).
        download: let torchvision fetch MNIST / Fashion-MNIST / CIFAR files that are missing.
            With ``False`` (the default) nothing touches the network.

    Raises:
        ValueError: unknown ``name``, or loaded arrays that contradict the registry (image
            shape, labels outside ``[0, num_classes)``).
        DatasetNotFoundError: the files are missing (message: dataset, path, what to do).
        DatasetCorruptError: a file exists but cannot be parsed (message names the file).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; allowed names: {', '.join(sorted(DATASETS))}")
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
    x = x_train_uint8.numpy() if isinstance(x_train_uint8, torch.Tensor) else np.asarray(x_train_uint8)
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
        for cls, k in zip(classes, take)
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
    idx_train = _stratified_indices(arrays.y_train, n_train, np.random.default_rng([seed, 0]), "train")
    idx_test = _stratified_indices(arrays.y_test, n_test, np.random.default_rng([seed, 1]), "test")

    def pick(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return (x, y) if idx is None else (x[idx], y[idx])

    x_train, y_train = pick(arrays.x_train, arrays.y_train, idx_train)
    x_test, y_test = pick(arrays.x_test, arrays.y_test, idx_test)
    return DatasetArrays(arrays.name, x_train, y_train, x_test, y_test, arrays.num_classes)
