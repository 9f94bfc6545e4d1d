"""The 15 common corruptions of Hendrycks & Dietterich (2019), generated locally from the benchmark's
own corruption code as packaged on PyPI (paper App. Figs. 16/17; ``dynamics.splits: test_corrupted``).

Source. ``imagecorruptions`` is the ImageNet-C corruption code packaged for arbitrary image sizes.
Its release 1.1.2 no longer imports with this environment (``pkg_resources`` is gone from
setuptools >= 81, ``np.float_`` from numpy 2, ``multichannel=`` from scikit-image >= 0.19), so the
pinned package is its maintained fork ``imagecorruptions-imaug`` 1.1.5 (same module name, same
corruption functions and constants; it fixes those imports and lets glass_blur / impulse_noise take a
seed).  Nothing here re-implements a corruption.

What the severities mean.  The package's constants are **ImageNet-C's** (made for 224-px images),
not CIFAR-10-C's (``make_cifar_c.py`` has milder constants for 32-px images): at severity 5, e.g.,
Gaussian noise sigma 0.38 (CIFAR-10-C: 0.10), defocus radius 10 px (1.5), pixelate to 25 % (65 %),
JPEG quality 7 (40), contrast x0.05 (x0.15).  So "severity 5" here is ImageNet-C severity 5 on the
dataset's images: harsher than the paper's CIFAR-10-C at the same severity.  The CIFAR-10-C Gaussian
blur of the paper's Fig. 7 stays in :mod:`pipeline.dynamics.blur` (split ``test_blur``).

Determinism.  Every image gets its own seed, ``SeedSequence([seed, corruption index, severity,
image index])`` (so an image's corruption does not depend on which other images are corrupted with
it, nor on ``max_samples``); it seeds numpy's legacy global generator, which most corruption functions
draw from (its previous state is restored afterwards), and is passed as ``seed=`` to the two
functions that take one (glass_blur's numba shuffle and impulse_noise's scikit-image noise, which
ignore the global generator).

Image shapes.  Images are ``uint8 (N, C, H, W)`` as in :class:`pipeline.core.datasets.DatasetArrays`.

* ``C == 1`` (digits, MNIST-like): the package corrupts the gray image as three identical RGB channels;
  the **first channel** is kept.  Every corruption treats the three channels alike except the
  independent per-channel noise and the tinted frost texture; one channel keeps the noise's per-pixel
  scale (averaging the three would divide its variance by 3).
* ``H < 32`` (the package refuses smaller images; digits are 8x8): the image is enlarged by the integer
  factor ``k = ceil(32 / H)`` (pixel repetition), corrupted at ``kH x kW``, and shrunk back by
  averaging each ``k x k`` block (``rint``).  The corruption is then the one of a ``kH``-px image seen
  at the dataset's resolution: the block average divides the variance of pixel-independent noise by
  ``k**2`` and shrinks blur radii by ``k``; recorded with the tables (:func:`protocol`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from pipeline.core.device import numpy_global_seed

__all__ = ["CORRUPTIONS", "SEVERITIES", "MIN_SIZE", "PACKAGE", "package_version",
           "corruption_set_name", "parse_corruption_set", "check_corruptions", "corruption_seed",
           "upscale_factor", "corrupt_images", "protocol"]

#: the 15 corruptions of the benchmark, in its order (noise, blur, weather, digital)
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: the package refuses images below this height / width
MIN_SIZE = 32
#: the PyPI distribution that provides the module ``imagecorruptions`` (pinned in requirements.txt)
PACKAGE = "imagecorruptions-imaug"
#: the corruption functions that take an explicit seed (they ignore numpy's global generator)
_SEEDED = frozenset({"glass_blur", "impulse_noise"})
_SET = re.compile(r"test_(?P<corruption>[a-z_]+?)(?P<severity>[1-5])")


def package_version() -> str:
    from importlib.metadata import version

    return version(PACKAGE)


def corruption_set_name(corruption: str, severity: int) -> str:
    """The input-set (``split``) name of the test set under one corruption: ``test_<corruption><s>``,
    e.g. ``test_gaussian_noise5`` (as ``test_blur5`` for the CIFAR-10-C blur)."""
    check_corruptions([corruption], [severity])
    return f"test_{corruption}{int(severity)}"


def parse_corruption_set(name: str) -> tuple[str, int] | None:
    """``(corruption, severity)`` of a :func:`corruption_set_name`; ``None`` for any other split."""
    m = _SET.fullmatch(str(name))
    if m is None or m["corruption"] not in CORRUPTIONS:
        return None
    return m["corruption"], int(m["severity"])


def check_corruptions(types: Sequence[str], severities: Sequence[int]) -> None:
    """One clear error naming the culprit for an unknown corruption or a severity outside 1..5."""
    unknown = [t for t in types if t not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {unknown}; allowed: {', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise ValueError(f"corruption severities must be in 1..5, got {bad}")


def corruption_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """The seed of image ``index`` under ``corruption`` at ``severity`` (< 2**32, numpy's legacy
    generator's range)."""
    ss = np.random.SeedSequence([int(seed), CORRUPTIONS.index(corruption), int(severity), int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def upscale_factor(size: int) -> int:
    """``k`` by which an image of ``size`` px is enlarged before corrupting (1 from 32 px on)."""
    return max(1, math.ceil(MIN_SIZE / int(size)))


def _corrupt_one(image_hwc: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    from imagecorruptions import corrupt

    kwargs = {"seed": seed} if corruption in _SEEDED else {}
    with numpy_global_seed(seed):  # the caller's global generator is left as it was
        return corrupt(image_hwc, severity=int(severity), corruption_name=corruption, **kwargs)


def corrupt_images(images: np.ndarray, corruption: str, severity: int = 5, *, seed: int = 0,
                   start_index: int = 0) -> np.ndarray:
    """``images`` (``uint8 (N, C, H, W)``, C = 1 or 3) under ``corruption`` at ``severity``; the
    image at position i is seeded as image ``start_index + i`` (see the module doc)."""
    check_corruptions([corruption], [severity])
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"images must be uint8 of shape (N, C, H, W), got {x.dtype} {x.shape}")
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"corruptions need 1 or 3 channels, got {c} (shape {x.shape})")
    k = upscale_factor(min(h, w))
    out = np.empty_like(x)
    for i in range(n):
        img = x[i].transpose(1, 2, 0)  # HWC
        if k > 1:
            img = np.repeat(np.repeat(img, k, axis=0), k, axis=1)
        if c == 1:
            img = img[..., 0]  # the package takes (H, W) gray and corrupts it as RGB
        y = _corrupt_one(np.ascontiguousarray(img), corruption, severity,
                         corruption_seed(seed, corruption, severity, start_index + i))
        y = np.asarray(y, dtype=np.uint8).reshape(k * h, k * w, -1)
        y = y[..., :1] if c == 1 else y
        if k > 1:
            y = np.rint(y.reshape(h, k, w, k, c).astype(np.float64).mean(axis=(1, 3)))
        out[i] = np.clip(y, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return out


def protocol(image_size: int, channels: int, seed: int) -> dict:
    """What the tables' footer records about how the corrupted sets were made."""
    k = upscale_factor(image_size)
    return {"package": f"{PACKAGE}=={package_version()}", "constants": "ImageNet-C (the package's)",
            "seed": int(seed), "per_image_seed": "SeedSequence([seed, corruption index, severity, index])",
            "upscale_factor": k,
            "resampling": ("none" if k == 1 else
                           f"pixel repetition x{k} to {k * image_size} px, corrupted, {k}x{k} block mean back"),
            "gray": "first channel of the RGB result" if channels == 1 else "n/a"}
