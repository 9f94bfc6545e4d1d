"""Separating generalization from memorization in a trained network's weights.

* Frequency filtration (FF): per neuron keep one Fourier component (default the dominant frequency,
  :func:`pipeline.arithmetic.fourier.dominant_frequency`) of u_m, v_m and w_m -- the G network, whose
  output bias is the original mu -- and the rest, R = original - G (bias 0), so G + R = original.
* Neuron partition (the paper's Algorithm 1): rank neurons by a score (``ipr`` = IPR(w_m), the
  paper's; ``ipr_doshi``; ``str`` = strength), the top gamma_G of them form f^G, the bottom gamma_R
  f^R; FF is applied to f^G (``part_G_ff``) to compare with FF on the whole network (``G``).
* Pruning curves: keep the top ``fraction`` of neurons by each score (lowest removed first), plus a
  random order as the baseline.
* Activation swap: the network evaluated with another phi.
* Controls: a random non-dominant frequency per neuron (``G_randfreq``); FF on the initial weights
  (``init_raw``/``init_G``); the network of inputs relabelled by a random permutation pi of Z_P
  (``perm_raw``/``perm_G``). The last is exact without retraining: training on tokens pi(a), pi(b)
  with labels pi(c) from the correspondingly permuted initialization gives exactly the permuted
  weights (one-hot inputs and elementwise optimizers are permutation-equivariant), so FF in the
  standard basis is applied to those weights and the predictions mapped back by pi^-1. Training with
  all labels random is a cell setting (alpha = 1, noise_mode ``uniform``), not a network variant.

Every function here returns predictions for all P^2 pairs in the original label space, so one scorer
(:func:`pipeline.arithmetic.train.set_accuracies`) gives the four sets for every network.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from pipeline.arithmetic.data import ArithmeticData
from pipeline.arithmetic.fourier import dominant_frequency, ipr_doshi, ipr_paper, strength
from pipeline.arithmetic.model import ACTIVATIONS, Weights, weights_predict
from pipeline.core.device import numpy_rng

SCORES = ("ipr", "ipr_doshi", "str")
#: the neuron fraction of a network that is not a partition or pruning variant
WHOLE = 1.0


def frequency_component(X: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Row m of the result is the frequency-``freq[m]`` component of row m of ``X`` (M, P)."""
    P = X.shape[1]
    X_hat = np.fft.rfft(X, axis=1)
    keep = np.zeros_like(X_hat)
    rows = np.arange(X.shape[0])
    freq = np.asarray(freq, dtype=np.int64)
    keep[rows, freq] = X_hat[rows, freq]
    return np.fft.irfft(keep, n=P, axis=1)


def frequency_filtration(w: Weights, freq: np.ndarray | None = None) -> tuple[Weights, Weights]:
    """(G, R): G keeps frequency ``freq[m]`` (default: dominant) of u_m, v_m, w_m; R = w - G."""
    freq = dominant_frequency(w) if freq is None else np.asarray(freq)
    G = replace(w, U=frequency_component(w.U, freq), V=frequency_component(w.V, freq),
                W=frequency_component(w.W.T, freq).T.copy(), mu=w.mu.copy())
    R = replace(w, U=w.U - G.U, V=w.V - G.V, W=w.W - G.W, mu=np.zeros_like(w.mu))
    return G, R


def random_other_frequency(dominant: np.ndarray, P: int, rng: np.random.Generator) -> np.ndarray:
    """Per neuron a frequency drawn uniformly from 1 .. (P-1)/2 other than its dominant one."""
    K = (P - 1) // 2
    draw = rng.integers(1, K, size=np.shape(dominant))  # 1 .. K-1
    return np.where(draw >= dominant, draw + 1, draw)


def permute_inputs(w: Weights, perm: np.ndarray) -> Weights:
    """The network on relabelled tokens: f'(pi(a), pi(b))[pi(k)] = f(a, b)[k]."""
    inv = np.argsort(perm)
    return replace(w, U=w.U[:, inv], V=w.V[:, inv], W=w.W[inv], mu=w.mu[inv])


def neuron_scores(w: Weights) -> dict[str, np.ndarray]:
    return {"ipr": ipr_paper(w), "ipr_doshi": ipr_doshi(w), "str": strength(w)}


def top_neurons(score: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``round(fraction * M)`` highest-scoring neurons (at least one)."""
    k = max(1, int(round(fraction * score.shape[0])))
    return np.argsort(-score, kind="stable")[:k]


def bottom_neurons(score: np.ndarray, fraction: float) -> np.ndarray:
    k = max(1, int(round(fraction * score.shape[0])))
    return np.argsort(score, kind="stable")[:k]


def ff_predict(w: Weights, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return weights_predict(frequency_filtration(w)[0], a, b)


def analysis_predictions(w: Weights, data: ArithmeticData, *, w_init: Weights | None = None,
                         gammas: tuple[float, ...] = (0.1, 0.25, 0.5),
                         prune_fractions: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
                         swap_activations: tuple[str, ...] = ACTIVATIONS, seed: int = 0,
                         full: bool = True) -> Iterator[tuple[str, str, float, np.ndarray]]:
    """Yield ``(network, score, fraction, predictions for all pairs)`` for every variant.

    ``full=False`` yields only raw, G and R (for intermediate checkpoints).
    """
    a, b = data.a, data.b
    G, R = frequency_filtration(w)
    yield "raw", "none", WHOLE, weights_predict(w, a, b)
    yield "G", "none", WHOLE, weights_predict(G, a, b)
    yield "R", "none", WHOLE, weights_predict(R, a, b)
    if not full:
        return
    for act in swap_activations:
        if act != w.activation:
            yield f"swap_{act}", "none", WHOLE, weights_predict(w, a, b, act)
    rng = numpy_rng(seed, data.P, 7)
    other = random_other_frequency(dominant_frequency(w), data.P, rng)
    yield "G_randfreq", "none", WHOLE, weights_predict(frequency_filtration(w, other)[0], a, b)
    perm = rng.permutation(data.P)
    inv = np.argsort(perm)
    wp = permute_inputs(w, perm)
    yield "perm_raw", "none", WHOLE, inv[weights_predict(wp, perm[a], perm[b])]
    yield "perm_G", "none", WHOLE, inv[ff_predict(wp, perm[a], perm[b])]
    if w_init is not None:
        yield "init_raw", "none", WHOLE, weights_predict(w_init, a, b)
        yield "init_G", "none", WHOLE, ff_predict(w_init, a, b)
    scores = neuron_scores(w)
    for name, s in scores.items():
        for g in gammas:
            top, bottom = w.subset(top_neurons(s, g)), w.subset(bottom_neurons(s, g))
            yield "part_G", name, float(g), weights_predict(top, a, b)
            yield "part_G_ff", name, float(g), ff_predict(top, a, b)
            yield "part_R", name, float(g), weights_predict(bottom, a, b)
    scores["random"] = rng.random(w.width)
    for name, s in scores.items():
        for f in prune_fractions:
            yield "prune", name, float(f), weights_predict(w.subset(top_neurons(s, f)), a, b)
