"""A user's own datasets (``data.custom``): an image folder or an ``.npz`` array file.

Configured as ``data.custom: {<name>: {...}}`` (the ``data`` section reaches every stage that loads
data) and registered into the one dataset registry (:data:`pipeline.core.datasets.DATASETS`) by
:func:`register_user_datasets`, which :func:`pipeline.config.validate_config` calls, so a user
dataset is a run key like any other (``results/runs/<name>/...``).

Formats (``format``):

``imagefolder``
    torchvision's ``ImageFolder`` layout: ``<train>/<class>/**/<image>``, one sub-folder per class;
    the class index is the position of the folder name in the sorted folder names (as
    ``torchvision.datasets.ImageFolder`` does), images with its extensions (``.png``, ``.jpg``, ...)
    are read in sorted order, other files are ignored. Each image is decoded with PIL, converted to
    ``L`` (``channels: 1``) or ``RGB`` (``channels: 3``, the default) and resized to a square of
    ``image_size`` (default 32) pixels (bilinear). :attr:`DatasetArrays.train_files` names the file
    of every training example, in dataset order.
``npz``
    ``numpy.savez`` arrays: ``x`` uint8 images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``
    with ``C`` 1 or 3 and ``H == W``; ``y`` integer labels; optionally ``y_true``, the true labels
    (for evaluation: the run's ``true`` labels are ``y_true``, the model trains on ``y``). Read with
    ``allow_pickle=False``: a file cannot run code.

The test part is ``test`` (same format; an image folder's class folders must be among the training
ones), or else a stratified hold-out of ``test_fraction`` of the training part (fixed seed 0, each
split kept in the original order). Without ``y_true`` the given labels are the truth the run knows
(:attr:`DatasetArrays.truth_known` is false: at corruption 0 there is nothing to score against).

Every check runs up front, with one :class:`~pipeline.core.datasets.DatasetCorruptError` (or
:class:`~pipeline.core.datasets.DatasetNotFoundError`) naming the file or folder: a missing path,
no class folder or one class only, an empty class folder, an unreadable image (named), an ``.npz``
without ``x``/``y``, with object arrays, non-integer labels, labels out of range, ``x``/``y`` (or
``y_true``) of different lengths, non-square images. The folder layout and the ``.npz`` labels and
shapes are checked when the config is validated (:func:`register_user_datasets`, no image is
decoded); images are decoded when the dataset is loaded (the run's ``labels`` job, before training).
"""

from __future__ import annotations

import functools
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.datasets import (
    DATASETS,
    DatasetArrays,
    DatasetCorruptError,
    DatasetNotFoundError,
    DatasetSpec,
)

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "NAME_PATTERN",
    "load_user_dataset",
    "register_user_datasets",
    "user_dataset_entries",
]

#: The run-key wildcard a user dataset's (and model's) name must match.
NAME_PATTERN = re.compile(r"[a-z0-9_]+")
#: The datasets the package ships (a user dataset must not shadow one).
BUILTIN_DATASETS: frozenset[str] = frozenset(DATASETS)
#: torchvision's ``IMG_EXTENSIONS``: other files in a class folder are ignored, as ImageFolder does.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Defaults of an image folder (an ``.npz`` file has its own shape).
DEFAULT_IMAGE_SIZE = 32
DEFAULT_CHANNELS = 3
#: Seed of the stratified hold-out (``test_fraction``): the same split for every run and job.
SPLIT_SEED = 0


def user_dataset_entries(config: Mapping) -> dict[str, dict]:
    """``data.custom`` of ``config`` (a full config or just its ``data`` section's owner)."""
    return dict((config.get("data") or {}).get("custom") or {})


# ----------------------------------------------------------------------------------------------
# Scanning (cheap: no image is decoded) -> a plan of what to load
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """One split as found on disk: image files with labels, or an .npz file's label arrays."""

    path: Path
    labels: np.ndarray                  # the labels as given (class indices)
    files: tuple[str, ...] | None = None  # image folder: the image of each example
    true_labels: np.ndarray | None = None  # npz: y_true
    x_shape: tuple[int, ...] | None = None  # npz: shape of x


def _name_error(name: str, message: str, path: Path | str | None = None) -> DatasetCorruptError:
    return DatasetCorruptError(f"Dataset {name!r} (data.custom.{name}): {message}", path)


def _scan_folder(name: str, root: Path, classes: list[str] | None) -> tuple[list[str], _Part]:
    """The class folders (sorted) and image files (sorted per class) of an ImageFolder root.

    ``classes``: the training part's classes (a test folder's names must be among them).
    """
    if not root.exists():
        raise DatasetNotFoundError(f"Dataset {name!r} (data.custom.{name}): image folder {root} does not exist")
    if not root.is_dir():
        raise _name_error(name, f"{root} is not a folder (format imagefolder expects a folder with one "
                                f"sub-folder per class)", root)
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if classes is None:
        if not found:
            raise _name_error(name, f"{root} has no class sub-folders (expected <root>/<class>/<image>)", root)
        if len(found) < 2:
            raise _name_error(name, f"{root} has one class only ({found[0]!r}); a classifier needs at "
                                    f"least two class folders", root)
        classes = found
    else:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise _name_error(name, f"test folder {root} has class folders {unknown} that the training "
                                    f"folder does not have (its classes: {classes})", root / unknown[0])
    files: list[str] = []
    labels: list[int] = []
    for cls in found:
        folder = root / cls
        images = sorted(
            str(Path(dirpath) / fname)
            for dirpath, _, fnames in os.walk(folder, followlinks=True)
            for fname in fnames
            if fname.lower().endswith(IMAGE_EXTENSIONS) and not fname.startswith(".")
        )
        if not images:
            raise _name_error(name, f"class folder {folder} holds no image (extensions: "
                                    f"{', '.join(IMAGE_EXTENSIONS)})", folder)
        files += images
        labels += [classes.index(cls)] * len(images)
    return classes, _Part(root, np.asarray(labels, dtype=np.int64), files=tuple(files))


def _npy_header(name: str, path: Path, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``member`` of an .npz file, from its header alone."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{member}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        raise _name_error(name, f"cannot read array {member!r} of {path} ({type(exc).__name__}: {exc}); "
                                f"write it with numpy.savez(path, x=..., y=...)", path) from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _integer_labels(name: str, path: Path, key: str, values: np.ndarray) -> np.ndarray:
    if values.ndim != 1:
        raise _name_error(name, f"{key!r} in {path} has shape {values.shape}; labels must be a 1-D array", path)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        raise _name_error(name, f"{key!r} in {path} has dtype {values.dtype}; labels must be integers "
                                f"(class indices 0..K-1)", path)
    return values.astype(np.int64)


def _scan_npz(name: str, path: Path) -> _Part:
    """The label arrays and the image shape of an .npz file (``x`` is not read)."""
    if not path.exists():
        raise DatasetNotFoundError(f"Dataset {name!r} (data.custom.{name}): array file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise _name_error(name, f"{path} has no array {missing[0]!r} (it has {sorted(keys)}); an "
                                        f"npz dataset needs 'x' (images), 'y' (labels), optionally 'y_true'",
                                  path)
            y = np.asarray(z["y"])
            y_true = np.asarray(z["y_true"]) if "y_true" in keys else None
    except DatasetCorruptError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        # ValueError includes object arrays, refused by allow_pickle=False (they could run code)
        raise _name_error(name, f"cannot read {path} as an .npz file of plain arrays "
                                f"({type(exc).__name__}: {exc})", path) from None
    y = _integer_labels(name, path, "y", y)
    if y_true is not None:
        y_true = _integer_labels(name, path, "y_true", y_true)
        if len(y_true) != len(y):
            raise _name_error(name, f"{path}: 'y_true' has {len(y_true)} labels but 'y' has {len(y)}", path)
    shape, dtype = _npy_header(name, path, "x")
    if dtype != np.uint8:
        raise _name_error(name, f"'x' in {path} has dtype {dtype}; images must be uint8 (0..255)", path)
    if not shape or shape[0] != len(y):
        raise _name_error(name, f"{path}: 'x' holds {shape[0] if shape else 0} images but 'y' holds "
                                f"{len(y)} labels", path)
    _layout(name, path, shape)  # refuses a non-square or channel-less shape now, before any job
    return _Part(path, y, true_labels=y_true, x_shape=shape)


def _layout(name: str, path: Path, shape: tuple[int, ...]) -> str:
    """``"NHW"``, ``"NCHW"`` or ``"NHWC"`` for an ``x`` of ``shape``: square images, 1 or 3 channels."""
    expected = "expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3 and square images (H == W)"
    if len(shape) == 3:
        if shape[1] != shape[2]:
            raise _name_error(name, f"'x' in {path} has shape {shape}: images are not square; {expected}", path)
        return "NHW"
    if len(shape) == 4:
        if shape[1] in (1, 3) and shape[2] == shape[3]:
            return "NCHW"
        if shape[3] in (1, 3) and shape[1] == shape[2]:
            return "NHWC"
    raise _name_error(name, f"'x' in {path} has shape {shape}; {expected}", path)


@dataclass(frozen=True)
class _Plan:
    """What a user dataset is, from the scan: enough for the registry and for loading."""

    name: str
    format: str
    train: _Part
    test: _Part | None
    classes: list[str] | None      # image folder: the class folder names
    num_classes: int
    channels: int
    image_size: int
    train_index: np.ndarray | None  # hold-out split: indices of the train part kept for training
    test_index: np.ndarray | None   # ... and held out as the test set

    @property
    def sizes(self) -> tuple[int, int]:
        n = len(self.train.labels)
        if self.test is not None:
            return n, len(self.test.labels)
        return len(self.train_index), len(self.test_index)


def _plan(name: str, entry: Mapping) -> _Plan:
    """Scan a ``data.custom`` entry and check everything but the image contents."""
    fmt = entry.get("format")
    if fmt not in ("imagefolder", "npz"):
        raise _name_error(name, f"format {fmt!r} is not one of imagefolder, npz")
    test_path, fraction = entry.get("test"), entry.get("test_fraction")
    if test_path is None and fraction is None:
        raise _name_error(name, "no test part: give 'test' (a held-out folder or file) or 'test_fraction' "
                                "(a stratified hold-out of the training part)")
    if test_path is not None and fraction is not None:
        raise _name_error(name, "both 'test' and 'test_fraction' are given; give one of them")
    train_path = Path(entry["train"])
    if fmt == "imagefolder":
        classes, train = _scan_folder(name, train_path, None)
        test = _scan_folder(name, Path(test_path), classes)[1] if test_path is not None else None
        num_classes = len(classes)
        channels = int(entry.get("channels") or DEFAULT_CHANNELS)
        image_size = int(entry.get("image_size") or DEFAULT_IMAGE_SIZE)
        if entry.get("num_classes") not in (None, num_classes):
            raise _name_error(name, f"num_classes {entry['num_classes']} but {train_path} has {num_classes} "
                                    f"class folders {classes}; drop num_classes for an image folder", train_path)
    else:
        classes = None
        train = _scan_npz(name, train_path)
        test = _scan_npz(name, Path(test_path)) if test_path is not None else None
        parts = [p for p in (train, test) if p is not None]
        shape = _image_shape(name, train)
        if test is not None and _image_shape(name, test) != shape:
            raise _name_error(name, f"test images of {test.path} are {_image_shape(name, test)} (C, H, W) but "
                                    f"training images of {train.path} are {shape}", test.path)
        channels, image_size = shape[0], shape[1]
        for key, value in (("channels", channels), ("image_size", image_size)):
            if entry.get(key) is not None and int(entry[key]) != value:
                raise _name_error(name, f"{key} is {entry[key]} but the images of {train.path} have "
                                        f"{key} {value} (an npz dataset is not resized; drop the key or "
                                        f"make it match)", train.path)
        highest = max(int(a.max()) for p in parts for a in (p.labels, p.true_labels) if a is not None and a.size)
        num_classes = int(entry.get("num_classes") or highest + 1)
        for part in parts:
            for key, values in (("y", part.labels), ("y_true", part.true_labels)):
                if values is not None and values.size and (values.min() < 0 or values.max() >= num_classes):
                    raise _name_error(name, f"{key!r} in {part.path} spans [{values.min()}, {values.max()}], "
                                            f"outside [0, {num_classes}) (num_classes {num_classes})", part.path)
        if test is not None and (train.true_labels is None) != (test.true_labels is None):
            raise _name_error(name, f"'y_true' is in one of {train.path} and {test.path} only; give it in "
                                    f"both or in neither", test.path)
    if len(np.unique(train.labels)) < 2:
        raise _name_error(name, f"{train_path} has one class only (label {int(train.labels[0])}); a "
                                f"classifier needs at least two classes", train_path)
    train_index = test_index = None
    if test is None:
        train_index, test_index = _hold_out(name, train, float(fraction))
    return _Plan(name, fmt, train, test, classes, num_classes, channels, image_size, train_index, test_index)


def _image_shape(name: str, part: _Part) -> tuple[int, int, int]:
    shape = part.x_shape
    layout = _layout(name, part.path, shape)
    if layout == "NHW":
        return 1, shape[1], shape[2]
    if layout == "NCHW":
        return shape[1], shape[2], shape[3]
    return shape[3], shape[1], shape[2]


def _hold_out(name: str, part: _Part, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices of a stratified hold-out of ``fraction`` (seed :data:`SPLIT_SEED`)."""
    from sklearn.model_selection import train_test_split

    try:
        idx_train, idx_test = train_test_split(np.arange(len(part.labels)), test_size=fraction,
                                               stratify=part.labels, random_state=SPLIT_SEED)
    except ValueError as exc:
        raise _name_error(name, f"cannot hold out test_fraction {fraction} of {part.path} stratified by "
                                f"class ({exc}); give a separate 'test' part or another fraction",
                          part.path) from None
    return np.sort(idx_train), np.sort(idx_test)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _read_images(name: str, files: tuple[str, ...], channels: int, image_size: int) -> np.ndarray:
    """Decode, convert and resize every image; the first unreadable one is named."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as img:
                img.load()
                pixels = img.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            raise _name_error(name, f"cannot read image {file} ({type(exc).__name__}: {exc}); fix or "
                                    f"remove the file", file) from None
        array = np.asarray(pixels, dtype=np.uint8)
        out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return out


def _read_npz_images(name: str, part: _Part) -> np.ndarray:
    try:
        with np.load(part.path, allow_pickle=False) as z:
            x = np.asarray(z["x"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _name_error(name, f"cannot read 'x' of {part.path} ({type(exc).__name__}: {exc})",
                          part.path) from None
    layout = _layout(name, part.path, x.shape)
    if layout == "NHW":
        x = x[:, None]
    elif layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def load_user_dataset(name: str, entry: Mapping) -> DatasetArrays:
    """A ``data.custom`` entry as :class:`DatasetArrays` (checked first; see the module docstring).

    ``y_train``/``y_test`` are the true labels (``y_true`` where the file gives it, else the labels
    as given); ``y_train_given`` the labels as given where they differ in meaning (``y_true`` given);
    ``train_files``/``test_files`` the image file of each example (image folders).
    """
    plan = _plan(name, entry)
    if plan.format == "imagefolder":
        read = functools.partial(_read_images, name, channels=plan.channels, image_size=plan.image_size)
        x_train = read(plan.train.files)
        x_test = read(plan.test.files) if plan.test is not None else None
    else:
        x_train = _read_npz_images(name, plan.train)
        x_test = _read_npz_images(name, plan.test) if plan.test is not None else None
    given, truth = plan.train.labels, plan.train.true_labels
    files = list(plan.train.files) if plan.train.files is not None else None
    if plan.test is not None:
        test = plan.test
        y_test = test.true_labels if test.true_labels is not None else test.labels
        test_files = list(test.files) if test.files is not None else None
    else:
        held = plan.test_index
        x_test = x_train[held]
        y_test = (truth if truth is not None else given)[held]
        test_files = [files[i] for i in held] if files is not None else None
        keep = plan.train_index
        x_train, given = x_train[keep], given[keep]
        truth = truth[keep] if truth is not None else None
        files = [files[i] for i in keep] if files is not None else None
    return DatasetArrays(
        name=name,
        x_train=np.ascontiguousarray(x_train),
        y_train=truth if truth is not None else given,
        x_test=np.ascontiguousarray(x_test),
        y_test=y_test,
        num_classes=plan.num_classes,
        train_files=files,
        test_files=test_files,
        y_train_given=given if truth is not None else None,
        truth_known=truth is not None,
    )


def _loader(name: str, entry: Mapping, root: Path, download: bool) -> DatasetArrays:
    """The registry's ``loader(root, download)``: a user dataset's paths are its own."""
    return load_user_dataset(name, entry)


def register_user_datasets(config: Mapping) -> list[str]:
    """Register every ``data.custom`` entry of ``config`` into :data:`DATASETS` (idempotent: an
    entry registered before is replaced by the config's current one); return their names.

    Scans each entry (folders, label arrays, shapes; no image is decoded), so a bad input stops
    here with one error naming the file, before any job. Raises ``ValueError`` for a name that does
    not match :data:`NAME_PATTERN` or shadows a built-in dataset.
    """
    names = []
    for name, entry in user_dataset_entries(config).items():
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"data.custom: dataset name {name!r} must match [a-z0-9_]+ (it is a run key "
                             f"and a folder name)")
        if name in BUILTIN_DATASETS:
            raise ValueError(f"data.custom: dataset name {name!r} is a built-in dataset; choose another name "
                             f"(built-in: {sorted(BUILTIN_DATASETS)})")
        plan = _plan(name, entry)
        train_size, test_size = plan.sizes
        DATASETS[name] = DatasetSpec(name, num_classes=plan.num_classes, channels=plan.channels,
                                     image_size=plan.image_size, train_size=train_size, test_size=test_size,
                                     loader=functools.partial(_loader, name, dict(entry)))
        names.append(name)
    return names
