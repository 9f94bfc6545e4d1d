"""The analytic network (Gromov 2023; Morwani et al. 2024) and isotropic weight noise, for tests and
as a reference: per neuron u_i = l cos(2 pi w i / P + phi_a), v_j = l cos(2 pi w j / P + phi_b),
w_k = l cos(2 pi w k / P + phi_c) with phi_c = phi_a + phi_b (addition) or phi_a - phi_b
(subtraction). Per planted frequency ``grid**2`` neurons whose phases (phi_a, phi_b) lie on a
``grid x grid`` lattice of step 2 pi / grid (shifted by a random offset per frequency): for x^2 and
grid >= 4 every term of (u_a + v_b)^2 w_k but cos(w (a + b - k)) then cancels exactly over the
neurons, so the network computes sum_w (grid^2 / 2) l^3 cos(w (a + b - k)) and is exact.
"""

from __future__ import annotations

import numpy as np

from pipeline.arithmetic.model import Weights
from pipeline.core.device import numpy_rng


def planted_weights(P: int, freqs, grid: int = 4, *, amplitude: float = 1.0,
                    activation: str = "square", task: str = "add", seed: int = 0) -> Weights:
    rng = numpy_rng(seed, P, 11)
    freqs = np.asarray(freqs, dtype=np.int64)
    freq = planted_frequencies(freqs, grid)
    step = 2 * np.pi * np.arange(grid) / grid
    offsets = rng.uniform(0, 2 * np.pi, (freqs.shape[0], 2))
    pa = (offsets[:, :1, None] + step[None, :, None] + 0 * step[None, None, :]).reshape(-1)
    pb = (offsets[:, 1:, None] + 0 * step[None, :, None] + step[None, None, :]).reshape(-1)
    pc = pa + pb if task == "add" else pa - pb
    i = np.arange(P)
    arg = 2 * np.pi * freq[:, None] * i[None, :] / P
    U = amplitude * np.cos(arg + pa[:, None])
    V = amplitude * np.cos(arg + pb[:, None])
    Wt = amplitude * np.cos(arg + pc[:, None])
    return Weights(U=U, V=V, W=Wt.T.copy(), mu=np.zeros(P), activation=activation)


def planted_frequencies(freqs, grid: int = 4) -> np.ndarray:
    """The planted frequency of each neuron of :func:`planted_weights`."""
    return np.repeat(np.asarray(freqs, dtype=np.int64), grid * grid)


def add_isotropic_noise(w: Weights, ratio: float, seed: int = 0) -> Weights:
    """Add i.i.d. Gaussian noise to U, V and W, each with Frobenius norm ``ratio`` times the matrix's."""
    rng = numpy_rng(seed, 13)

    def noisy(X: np.ndarray) -> np.ndarray:
        sigma = ratio * np.linalg.norm(X) / np.sqrt(X.size)
        return X + rng.normal(0.0, sigma, X.shape)

    return Weights(U=noisy(w.U), V=noisy(w.V), W=noisy(w.W), mu=w.mu.copy(), activation=w.activation)
