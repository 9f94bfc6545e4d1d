"""Per-neuron Fourier statistics over Z_P of the input weights u_m, v_m and the output weights w_m.

Conventions (P odd):

* ``x_hat = rfft(x)``: bins k = 0 .. (P-1)/2; for u_i = l cos(2 pi k i / P + phi) the bin k holds
  (l P / 2) e^{i phi}, so the phase is ``angle(x_hat[k])`` and one cosine occupies one bin.
* Dominant frequency of neuron m: argmax over k >= 1 of the summed *normalised* spectra of u_m, v_m
  and w_m (each |x_hat_k|^2 divided by its non-DC total, so the three vectors weigh equally whatever
  their scale). The DC bin is excluded: the analytic solution has none and a constant w_m does not
  change the argmax of the output.
* IPR of a vector: sum_k (|x_hat_k| / ||x_hat||_2)^4 over the rfft bins, the DC bin k = 0 counted
  (``dc=True``, d-doshi/Grokking's convention) or not (``dc=False``). With DC counted a constant
  vector scores 1, exactly like a pure cosine, although a constant w_m adds the same number to every
  logit and so changes no prediction; without DC a constant scores 0 and a pure cosine still 1.
  White noise scores about 2/(P+1) x 3 either way. The paper's (||w_hat||_4 / ||w_hat||_2)^4 on the
  full P-bin DFT is, without DC, exactly half of ours (every k >= 1 appears as k and P - k), so the
  two rank neurons identically; with DC the full DFT weighs the DC bin twice as much as ours does.
  ``ipr_paper`` = IPR(w_m) (the paper's score); ``ipr_doshi`` = the mean of IPR(u_m), IPR(v_m),
  IPR(w_m); both take ``dc``. The neuron table holds both conventions.
* Strength Str_m = ||w_m||_inf * phi(||u_m||_inf + ||v_m||_inf), phi the training activation; for
  ``reverse_relu`` (relu(-x)) its mirror relu is used, since phi of a positive number would be 0.
* Phase residual: wrap(phi_a + phi_b - phi_c) for ``add``, wrap(phi_a - phi_b - phi_c) for ``sub``,
  into (-pi, pi]; NaN for ``mul`` (its structure lives in the discrete-log basis).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.arithmetic.model import Weights


def spectra(w: Weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complex rfft of u_m, v_m, w_m for every neuron, each (M, (P-1)/2 + 1)."""
    return np.fft.rfft(w.U, axis=1), np.fft.rfft(w.V, axis=1), np.fft.rfft(w.W.T, axis=1)


def _normalised_power(x_hat: np.ndarray) -> np.ndarray:
    p = np.abs(x_hat[:, 1:]) ** 2
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.zeros_like(p), where=total > 0)


def dominant_frequency(w: Weights) -> np.ndarray:
    """(M,) dominant frequency in 1 .. (P-1)/2 per neuron (joint over u, v, w)."""
    score = sum(_normalised_power(x) for x in spectra(w))
    return score.argmax(axis=1) + 1


def ipr(x: np.ndarray, axis: int = -1, *, dc: bool = True) -> np.ndarray:
    """IPR of real vectors along ``axis``: sum over rfft bins of (|x_hat| / ||x_hat||_2)^4, the DC
    bin included (``dc``) or left out of both norms; 0 for a vector with no power in the bins."""
    mag = np.moveaxis(np.abs(np.fft.rfft(x, axis=axis)), axis, -1)
    scale = np.sqrt((mag ** 2).sum(axis=-1, keepdims=True))
    if not dc:
        mag = mag[..., 1:]
    norm = np.sqrt((mag ** 2).sum(axis=-1, keepdims=True))
    # power below float64 round-off of the whole vector's (a constant's FFT leakage) counts as none
    r = np.divide(mag, norm, out=np.zeros_like(mag), where=norm > 1e-12 * scale)
    return (r ** 4).sum(axis=-1)


def ipr_paper(w: Weights, *, dc: bool = True) -> np.ndarray:
    return ipr(w.W.T, axis=1, dc=dc)


def ipr_doshi(w: Weights, *, dc: bool = True) -> np.ndarray:
    return (ipr(w.U, axis=1, dc=dc) + ipr(w.V, axis=1, dc=dc) + ipr(w.W.T, axis=1, dc=dc)) / 3.0


def _phi_scalar(activation: str, s: np.ndarray) -> np.ndarray:
    if activation in ("relu", "reverse_relu"):
        return np.maximum(s, 0.0)
    if activation == "square":
        return s ** 2
    if activation == "gelu":
        return 0.5 * s * (1.0 + np.vectorize(math.erf)(s / math.sqrt(2.0)))
    raise ValueError(f"unknown activation {activation!r}")


def strength(w: Weights) -> np.ndarray:
    """Str_m = ||w_m||_inf * phi(||u_m||_inf + ||v_m||_inf)."""
    s = np.abs(w.U).max(axis=1) + np.abs(w.V).max(axis=1)
    return np.abs(w.W).max(axis=0) * _phi_scalar(w.activation, s)


def wrap(x: np.ndarray) -> np.ndarray:
    """Angles into (-pi, pi]."""
    y = np.mod(np.asarray(x) + np.pi, 2 * np.pi) - np.pi
    return np.where(y == -np.pi, np.pi, y)


def phases(w: Weights, freq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phases of u_m, v_m, w_m at frequency ``freq`` (default: the dominant one), each (M,)."""
    freq = dominant_frequency(w) if freq is None else np.asarray(freq)
    rows = np.arange(w.width)
    return tuple(np.angle(x[rows, freq]) for x in spectra(w))


def phase_residual(task: str, phase_a: np.ndarray, phase_b: np.ndarray, phase_c: np.ndarray) -> np.ndarray:
    if task == "add":
        return wrap(phase_a + phase_b - phase_c)
    if task == "sub":
        return wrap(phase_a - phase_b - phase_c)
    return np.full(np.shape(phase_a), np.nan)


def neuron_statistics(w: Weights, task: str) -> pd.DataFrame:
    """One row per neuron: dominant frequency, its power fractions, IPRs (DC counted: ``ipr_*``;
    not: ``ipr_*_nodc``), strength, phases."""
    su, sv, sw = spectra(w)
    freq = dominant_frequency(w)
    rows = np.arange(w.width)
    frac = {name: _normalised_power(x)[rows, freq - 1] for name, x in (("u", su), ("v", sv), ("w", sw))}
    pa, pb, pc = (np.angle(x[rows, freq]) for x in (su, sv, sw))
    return pd.DataFrame({
        "neuron": rows.astype(np.int64),
        "dominant_freq": freq.astype(np.int64),
        "power_frac_u": frac["u"], "power_frac_v": frac["v"], "power_frac_w": frac["w"],
        "ipr_paper": ipr_paper(w), "ipr_doshi": ipr_doshi(w),
        "ipr_paper_nodc": ipr_paper(w, dc=False), "ipr_doshi_nodc": ipr_doshi(w, dc=False),
        "strength": strength(w),
        "phase_a": pa, "phase_b": pb, "phase_c": pc,
        "phase_residual": phase_residual(task, pa, pb, pc),
        "norm_u": np.linalg.norm(w.U, axis=1), "norm_v": np.linalg.norm(w.V, axis=1),
        "norm_w": np.linalg.norm(w.W, axis=0),
    })
