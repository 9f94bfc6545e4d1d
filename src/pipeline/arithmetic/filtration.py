"""Separating generalization from memorization in a trained network's weights.

* Frequency filtration (FF): per neuron keep one Fourier component (default the dominant frequency,
  :func:`pipeline.arithmetic.fourier.dominant_frequency`) of u_m, v_m and w_m -- the G network, whose
  output bias is the original mu -- and the rest, R = original - G (bias 0), so G + R = original.
* Neuron partition (the paper's Algorithm 1): rank the M neurons by a score (``ipr`` = IPR(w_m), the
  paper's; ``ipr_doshi``; ``str`` = strength Str_m); the top round(gamma_G M) of them form f^G, the
  bottom round(gamma_R M) f^R, each with the output bias mu. gamma_G and gamma_R are separate
  (:func:`partition`): with gamma_G + gamma_R <= 1 the two sets are disjoint (the paper's choice
  for large networks; gamma_G + gamma_R = 1 splits the network in two), above 1 they overlap. FF is
  applied to f^G (``part_G_ff``) to compare with FF on the whole network (``G``).
* IPR scores count the DC bin or not (``ipr_dc``; :mod:`pipeline.arithmetic.fourier`), and say
  which by name: ``ipr`` / ``ipr_doshi`` count it, ``ipr_nodc`` / ``ipr_doshi_nodc`` do not
  (:func:`score_names`). The partition and the pruning use the same scores.
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

#: the neuron scores of the partition and the pruning, DC bin counted in the IPRs / not
SCORES = ("ipr", "ipr_doshi", "str")
SCORES_NODC = ("ipr_nodc", "ipr_doshi_nodc", "str")
#: (gamma_G, gamma_R) pairs of Algorithm 1 when none are given: disjoint halves-and-rest splits
PARTITION = ((0.1, 0.9), (0.25, 0.75), (0.5, 0.5))
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


def score_names(ipr_dc: bool) -> tuple[str, ...]:
    """The score names of the partition and pruning rows (the IPRs name their DC convention)."""
    return SCORES if ipr_dc else SCORES_NODC


def neuron_scores(w: Weights, *, ipr_dc: bool = False) -> dict[str, np.ndarray]:
    names = score_names(ipr_dc)
    return dict(zip(names, (ipr_paper(w, dc=ipr_dc), ipr_doshi(w, dc=ipr_dc), strength(w)), strict=True))


def top_neurons(score: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``round(fraction * M)`` highest-scoring neurons (at least one)."""
    k = max(1, int(round(fraction * score.shape[0])))
    return np.argsort(-score, kind="stable")[:k]


def bottom_neurons(score: np.ndarray, fraction: float) -> np.ndarray:
    k = max(1, int(round(fraction * score.shape[0])))
    return np.argsort(score, kind="stable")[:k]


def partition(score: np.ndarray, gamma_G: float, gamma_R: float) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1's neuron sets: (the top round(gamma_G M) neurons by ``score`` -> f^G, the bottom
    round(gamma_R M) -> f^R). One ranking serves both, so with round(gamma_G M) + round(gamma_R M) <= M
    the sets are disjoint (ties included); otherwise they share the middle neurons."""
    for name, g in (("gamma_G", gamma_G), ("gamma_R", gamma_R)):
        if not 0.0 < g <= 1.0:
            raise ValueError(f"{name} must lie in (0, 1], got {g}")
    order = np.argsort(-score, kind="stable")
    M = score.shape[0]
    k_G, k_R = (max(1, int(round(g * M))) for g in (gamma_G, gamma_R))
    return order[:k_G], order[M - k_R:][::-1]


def ff_predict(w: Weights, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return weights_predict(frequency_filtration(w)[0], a, b)


def analysis_predictions(w: Weights, data: ArithmeticData, *, w_init: Weights | None = None,
                         partition_gammas: tuple[tuple[float, float], ...] = PARTITION,
                         prune_fractions: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
                         swap_activations: tuple[str, ...] = ACTIVATIONS, seed: int = 0,
                         ipr_dc: bool = False,
                         full: bool = True) -> Iterator[tuple[str, str, float, np.ndarray]]:
    """Yield ``(network, score, fraction, predictions for all pairs)`` for every variant.

    ``partition_gammas``: Algorithm 1's (gamma_G, gamma_R) pairs; ``part_G`` / ``part_G_ff`` rows
    carry fraction gamma_G, ``part_R`` rows gamma_R (f^G depends on gamma_G only and f^R on gamma_R
    only, so each distinct value is one network, yielded once). ``full=False`` yields only raw, G and
    R (for intermediate checkpoints).
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
    scores = neuron_scores(w, ipr_dc=ipr_dc)
    for name, s in scores.items():
        done_G, done_R = set(), set()
        for gamma_G, gamma_R in partition_gammas:
            top, bottom = partition(s, gamma_G, gamma_R)
            if float(gamma_G) not in done_G:
                done_G.add(float(gamma_G))
                yield "part_G", name, float(gamma_G), weights_predict(w.subset(top), a, b)
                yield "part_G_ff", name, float(gamma_G), ff_predict(w.subset(top), a, b)
            if float(gamma_R) not in done_R:
                done_R.add(float(gamma_R))
                yield "part_R", name, float(gamma_R), weights_predict(w.subset(bottom), a, b)
    scores["random"] = rng.random(w.width)
    for name, s in scores.items():
        for f in prune_fractions:
            yield "prune", name, float(f), weights_predict(w.subset(top_neurons(s, f)), a, b)
