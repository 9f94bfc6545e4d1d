"""The one device resolution and the one seeding helper of the package.

Torch is imported inside the functions, so torch-free callers (configuration checks, the workflow,
``import pipeline.probes``) can import this module for nothing.

* :func:`resolve_device` turns a config's device name into a ``torch.device``: ``"auto"`` is CUDA
  when a GPU is visible and the CPU otherwise; ``"cuda"`` (or ``"cuda:<i>"``) without a GPU is an
  error naming the config key, never a silent fallback to the CPU (results on the two differ in the
  last bits, so a run must not change device behind the user's back).
* :func:`seed_torch`, :func:`torch_generator`, :func:`derived_seed` and :func:`numpy_rng` are how
  every module seeds: the initialization and dropout draw from torch's global generator seeded by
  :func:`seed_torch`; shuffling, augmentation and resampling draw from their own generators, whose
  seeds are functions of (seed, epoch/step) by :func:`derived_seed`, so a draw never depends on
  what ran before it in the process (resumed runs stay exact).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.core.config import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch


class DeviceUnavailable(ConfigError, RuntimeError):
    """A config asks for CUDA but no GPU is visible (a configuration error, exit status 2 on the
    command line; also a RuntimeError, what callers caught before it existed)."""


def cuda_available() -> bool:
    """Whether torch sees a GPU (the package's one ``torch.cuda.is_available()``)."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(name: str | None = "auto", *, key: str = "train.device") -> torch.device:
    """``torch.device`` for the config value ``name`` of config key ``key``.

    ``"auto"`` (or None): ``cuda`` when a GPU is visible, else ``cpu``; ``"cuda"``/``"cuda:<i>"``
    without a GPU raises :class:`DeviceUnavailable` naming ``key``; anything else is passed to
    ``torch.device`` (``"cpu"``, ``"mps"``).
    """
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if str(name).startswith("cuda") and not cuda_available():
        raise DeviceUnavailable(f"config {key} is {name!r} but no GPU is visible (torch.cuda.is_available() "
                                f"is False); set {key} to 'auto' or 'cpu'")
    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"config {key} is {name!r}, not a device torch knows ({exc}); "
                          "use 'auto', 'cpu' or 'cuda'") from None


# ----------------------------------------------------------------------------- seeding

#: the multiplier that separates one seed's derived streams from the next seed's
SEED_STRIDE = 1_000_003


def derived_seed(seed: int, step: int) -> int:
    """The seed of the stream ``step`` (an epoch, a batch, an epoch + offset) of run seed ``seed``:
    ``seed * 1_000_003 + step``, the formula every per-epoch generator has always used."""
    return int(seed) * SEED_STRIDE + int(step)


def seed_torch(seed: int) -> None:
    """Seed torch's global generator (CPU and every GPU): what a model's initialization and its
    dropout masks draw from."""
    import torch

    torch.manual_seed(int(seed))


def torch_generator(seed: int, device: str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed`` (shuffling, augmentation,
    resampling: draws that must not depend on the global generator's state)."""
    import torch

    return torch.Generator(device=device).manual_seed(int(seed))


def numpy_rng(*keys: int | Sequence[int]) -> np.random.Generator:
    """``np.random.default_rng([k1, k2, ...])``: a numpy generator seeded by the integer keys (a run
    seed and a salt naming what it draws), independent of numpy's global state."""
    import numpy as np

    flat: list[int] = []
    for k in keys:
        flat.extend(int(v) for v in (k if isinstance(k, (list, tuple)) else [k]))
    return np.random.default_rng(flat)


@contextlib.contextmanager
def numpy_global_seed(seed: int):
    """Seed numpy's legacy global generator for the ``with`` block and restore its state afterwards:
    for third-party code that draws from ``np.random.*`` and takes no generator (the image
    corruptions of ``imagecorruptions``); the caller's global stream is left as it was."""
    import numpy as np

    state = np.random.get_state()
    try:
        np.random.seed(int(seed))
        yield
    finally:
        np.random.set_state(state)
