"""Welch's t-test with effect sizes (paper Appendix E), meant across *seeds*, not samples.

The paper compares consistency distributions of clean and 40 %-noisy training by Welch's t-test over
samples; per-sample consistencies of one network are not independent draws, so the unit of
replication here is the run: pass one summary value per seed (e.g. mean consistency) for each group.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ecdf", "welch_test"]


def welch_test(a, b) -> dict[str, float]:
    """Welch's two-sample t-test of ``mean(a) - mean(b)`` with effect sizes.

    Returns ``t``, ``df`` (Welch-Satterthwaite), ``p_value`` (two-sided), ``mean_a``, ``mean_b``,
    ``diff``, ``cohen_d`` (difference over ``sqrt((s_a^2 + s_b^2) / 2)``, the average-variance
    standardiser that suits unequal variances), ``hedges_g`` (``cohen_d`` times the small-sample
    correction ``1 - 3 / (4 (n_a + n_b) - 9)``), ``n_a``, ``n_b``.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or b.size < 2:
        raise ValueError(f"Welch's test needs >= 2 values per group, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1), b.var(ddof=1)
    se2 = va / a.size + vb / b.size
    diff = float(a.mean() - b.mean())
    if se2 == 0:
        t = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
        df = float(a.size + b.size - 2)
        p = 1.0 if diff == 0 else 0.0
    else:
        t = diff / np.sqrt(se2)
        df = se2 ** 2 / ((va / a.size) ** 2 / (a.size - 1) + (vb / b.size) ** 2 / (b.size - 1))
        from scipy import stats  # local: the figures import this module for ecdf only

        p = float(2 * stats.t.sf(abs(t), df))
    sd = np.sqrt((va + vb) / 2)
    d = diff / sd if sd > 0 else (0.0 if diff == 0 else float(np.sign(diff) * np.inf))
    g = d * (1 - 3 / (4 * (a.size + b.size) - 9))
    return {"t": float(t), "df": float(df), "p_value": p, "mean_a": float(a.mean()),
            "mean_b": float(b.mean()), "diff": diff, "cohen_d": float(d), "hedges_g": float(g),
            "n_a": int(a.size), "n_b": int(b.size)}


def ecdf(values) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF: sorted distinct values ``x`` and ``F(x) = P[V <= x]``.

    Here (torch-free) rather than in :mod:`pipeline.dynamics.consistency` so that the figures job
    does not import torch; a tensor (from the consistency measures) is read through ``.detach()``."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    v = np.sort(np.asarray(values).astype(np.float64).ravel())
    if v.size == 0:
        return v, v
    x, counts = np.unique(v, return_counts=True)
    return x, np.cumsum(counts) / v.size
