"""CIFAR-10-C Gaussian blur, generated locally (Hendrycks & Dietterich, 2019).

The benchmark's ``gaussian_blur(x, severity)`` is ``skimage.filters.gaussian(x / 255, sigma=c,
multichannel=True)`` clipped to ``[0, 1]`` and scaled by 255, with ``c = [0.4, 0.6, 0.7, 0.8, 1.0]``
for severities 1..5.  Here:

* the image is taken to ``[0, 1]`` (``x / 255``), each channel is blurred over the two *spatial* axes
  only with ``scipy.ndimage.gaussian_filter(sigma=c, mode="nearest", truncate=4.0)`` -- the boundary
  mode and truncation of ``skimage.filters.gaussian`` -- then clipped to ``[0, 1]``;
* back to ``uint8`` by **rounding** (``rint(255 * y)``).  The original script stores ``np.uint8(...)``,
  which truncates; ``rounding="floor"`` reproduces that.

Images are ``uint8`` with the spatial axes last: ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` as in
:class:`pipeline.core.datasets.DatasetArrays` (pass ``channels_last=True`` for ``(..., H, W, C)``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["BLUR_SIGMAS", "BLUR_MODE", "BLUR_TRUNCATE", "blur_sigma", "gaussian_blur", "blur_uint8"]

#: sigma per severity 1..5 (CIFAR-10-C ``gaussian_blur``)
BLUR_SIGMAS: dict[int, float] = {1: 0.4, 2: 0.6, 3: 0.7, 4: 0.8, 5: 1.0}
BLUR_MODE = "nearest"
BLUR_TRUNCATE = 4.0


def blur_sigma(severity: int) -> float:
    if int(severity) not in BLUR_SIGMAS:
        raise ValueError(f"severity must be one of {sorted(BLUR_SIGMAS)}, got {severity!r}")
    return BLUR_SIGMAS[int(severity)]


def blur_uint8(images: np.ndarray, sigma: float, *, channels_last: bool = False,
               rounding: str = "round") -> np.ndarray:
    """Blur ``uint8`` images with a spatial Gaussian of ``sigma`` pixels (see module doc)."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"images need two spatial axes, got shape {x.shape}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if rounding not in ("round", "floor"):
        raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")
    y = x.astype(np.float64) / 255.0
    sig = [0.0] * x.ndim
    spatial = (-3, -2) if channels_last else (-2, -1)
    if channels_last and x.ndim < 3:
        raise ValueError("channels_last needs shape (..., H, W, C)")
    for axis in spatial:
        sig[axis] = float(sigma)
    if sigma > 0:
        y = gaussian_filter(y, sigma=sig, mode=BLUR_MODE, truncate=BLUR_TRUNCATE)
    y = np.clip(y, 0.0, 1.0) * 255.0
    y = np.rint(y) if rounding == "round" else np.floor(y)
    return np.clip(y, 0, 255).astype(np.uint8)


def gaussian_blur(images: np.ndarray, severity: int = 5, **kwargs) -> np.ndarray:
    """CIFAR-10-C Gaussian blur at ``severity`` 1..5 (default 5, the paper's Fig. 7)."""
    return blur_uint8(images, blur_sigma(severity), **kwargs)
