"""Measures on composite networks (paper section 4.1): accuracy, cross-entropy, consistency, drift.

Notation: ``C(T, t) = f[d+1:n](theta_T) o f[1:d](theta_t)`` has its deep part from epoch ``T``
(``deep_epoch``) and its shallow part from epoch ``t`` (``shallow_epoch``); ``C(t, t) = f(theta_t)``.

* :func:`accuracy_and_cross_entropy` -- of a composite's logits against a label set.
* :func:`dataset_consistency` -- ``P_x[argmax C(T, t)(x) = argmax f(theta_ref)(x)]``.  The paper's text
  (section 4.1) takes the reference at the *deep* epoch (``f(theta_{t2})`` with ``t2`` the deep
  epoch), its Fig. 3 caption at the *shallow* epoch (``f(theta_{t1})``); the tables carry both
  (``consistency_vs_deep``, ``consistency_vs_shallow``).
* :func:`pointwise_consistency` -- per sample, over a window of shallow epochs::

      Cons(x; T1, T2) = 1/(|T2 - T1| + 1) * sum_{t = T1 ^ T2}^{T1 v T2} 1[argmax C(T2, t)(x) = argmax f(theta_ref)(x)]

  with the deep part fixed at ``T2``.  The paper's formula takes ``theta_ref = theta_{t v T2}``
  (``reference="paper"``: the deep epoch for memory windows ``T1 < T2``, the shallow epoch for
  transferability windows ``T1 > T2``); ``"deep"`` (``T2``) and ``"shallow"`` (``t``) are the two
  fixed readings.  The sum runs over *every* integer epoch of the window, so it needs a checkpoint at
  every epoch; a sparser grid is refused unless ``allow_sparse=True``, and then the average is over
  the epochs present (and :class:`WindowConsistency` records which).
* :func:`consistency_summary` / :func:`ecdf` -- mean, fraction equal to 1, and the empirical CDF.
  The paper plots kernel density estimates; on values confined to ``[0, 1]`` with an atom at 1 a KDE
  leaks mass outside the support and smears the atom, so we report ECDFs (and histograms).
* :func:`baseline_agreement` -- ``P[argmax f(theta_t1) = argmax f(theta_t2)]`` of full networks.
* :func:`drift_ratio` -- ``||theta_t2 - theta_t1|| / ||theta_t2||`` over the parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.dynamics.stats import ecdf  # noqa: F401 (torch-free, for the figures; re-exported)

__all__ = [
    "accuracy_and_cross_entropy", "per_sample_nll", "dataset_consistency", "baseline_agreement",
    "pointwise_consistency", "window_epochs", "window_consistency", "WindowConsistency",
    "consistency_summary", "ecdf", "drift_ratio", "REFERENCES",
]

REFERENCES = ("paper", "deep", "shallow")


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def per_sample_nll(logits, labels) -> np.ndarray:
    """Per-sample cross-entropy ``-log softmax(logits)[label]`` (float64)."""
    logits = torch.as_tensor(_as_numpy(logits), dtype=torch.float64)
    labels = torch.as_tensor(_as_numpy(labels), dtype=torch.int64)
    return F.cross_entropy(logits, labels, reduction="none").numpy()


def accuracy_and_cross_entropy(logits, labels) -> tuple[float, float]:
    """Accuracy of ``argmax logits`` and mean cross-entropy against ``labels``."""
    logits_np = _as_numpy(logits)
    labels_np = _as_numpy(labels).astype(np.int64)
    if logits_np.shape[0] != labels_np.shape[0]:
        raise ValueError(f"{logits_np.shape[0]} logits rows but {labels_np.shape[0]} labels")
    if labels_np.shape[0] == 0:
        return float("nan"), float("nan")
    acc = float((logits_np.argmax(1) == labels_np).mean())
    return acc, float(per_sample_nll(logits_np, labels_np).mean())


def dataset_consistency(composite_pred, reference_pred) -> float:
    """Fraction of inputs where the composite predicts what the reference network predicts."""
    a, b = _as_numpy(composite_pred), _as_numpy(reference_pred)
    if a.shape != b.shape:
        raise ValueError(f"prediction shapes differ: {a.shape} vs {b.shape}")
    return float((a == b).mean()) if a.size else float("nan")


def baseline_agreement(pred_t1, pred_t2) -> float:
    """``P[f(theta_t1)(x) = f(theta_t2)(x)]`` of two full networks' predicted classes."""
    return dataset_consistency(pred_t1, pred_t2)


def pointwise_consistency(composite_preds, reference_preds) -> np.ndarray:
    """Per-sample mean over the window of ``1[composite = reference]``.

    ``composite_preds``: ``(n_epochs, n_samples)`` predicted classes of ``C(T2, t)`` for each ``t`` of
    the window; ``reference_preds``: ``(n_samples,)`` (one reference) or ``(n_epochs, n_samples)``
    (a reference per ``t``).  A window of one epoch is allowed (``|T2 - T1| = 0``).
    """
    comp = _as_numpy(composite_preds)
    if comp.ndim != 2 or comp.shape[0] == 0:
        raise ValueError(f"composite_preds must be (n_epochs >= 1, n_samples), got {comp.shape}")
    ref = _as_numpy(reference_preds)
    if ref.ndim == 1:
        ref = ref[None, :]
    if ref.shape[1] != comp.shape[1] or ref.shape[0] not in (1, comp.shape[0]):
        raise ValueError(f"reference shape {ref.shape} does not match composite shape {comp.shape}")
    return (comp == ref).mean(axis=0)


def window_epochs(t1: int, t2: int) -> list[int]:
    """Every integer epoch from ``min(t1, t2)`` to ``max(t1, t2)`` (the paper's summation range)."""
    lo, hi = sorted((int(t1), int(t2)))
    return list(range(lo, hi + 1))


@dataclass
class WindowConsistency:
    """Point-wise consistency over one window: per-sample values and the epochs actually used."""

    deep_epoch: int          # T2
    window_start: int        # T1
    reference: str
    epochs: list[int]        # shallow epochs summed over (the grid actually used)
    values: np.ndarray       # (n_samples,)

    @property
    def dense(self) -> bool:
        return self.epochs == window_epochs(self.window_start, self.deep_epoch)


def window_consistency(composite_pred: Mapping[tuple[int, int], np.ndarray],
                       full_pred: Mapping[int, np.ndarray], *, deep_epoch: int, window_start: int,
                       reference: str = "paper", allow_sparse: bool = False) -> WindowConsistency:
    """``Cons(x; T1=window_start, T2=deep_epoch)`` for every sample.

    ``composite_pred[(T, t)]``: predicted classes of ``C(T, t)`` (deep epoch ``T``, shallow ``t``);
    ``full_pred[t]``: predicted classes of ``f(theta_t)``.  ``C(T, T)`` defaults to ``full_pred[T]``
    when absent (the composite of a checkpoint with itself is the network).
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    T2 = int(deep_epoch)
    wanted = window_epochs(window_start, T2)

    def comp(t):
        if (T2, t) in composite_pred:
            return composite_pred[(T2, t)]
        if t == T2 and T2 in full_pred:
            return full_pred[T2]
        return None

    used = [t for t in wanted if comp(t) is not None]
    if used != wanted:
        missing = sorted(set(wanted) - set(used))
        if not allow_sparse:
            raise ValueError(f"window [{min(wanted)}, {max(wanted)}] with deep epoch {T2} lacks "
                             f"composites at shallow epochs {missing[:10]}; save every epoch of the "
                             f"window or pass allow_sparse=True")
        if not used:
            raise ValueError("no composite of the window is available")
    comps = np.stack([_as_numpy(comp(t)) for t in used])
    if reference == "deep":
        refs = _as_numpy(full_pred[T2])
    else:
        ref_epochs = [t if reference == "shallow" else max(t, T2) for t in used]
        refs = np.stack([_as_numpy(full_pred[t]) for t in ref_epochs])
    return WindowConsistency(T2, int(window_start), reference, used, pointwise_consistency(comps, refs))


def consistency_summary(values, *, atol: float = 1e-12) -> dict[str, float]:
    """Mean, fraction equal to 1 (within ``atol``), median and count of point-wise consistencies."""
    v = _as_numpy(values).astype(np.float64).ravel()
    if v.size == 0:
        return {"mean": float("nan"), "frac_one": float("nan"), "median": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "frac_one": float((np.abs(v - 1.0) <= atol).mean()),
            "median": float(np.median(v)), "n": int(v.size)}


def _parameter_names(model_or_names) -> list[str] | None:
    if model_or_names is None:
        return None
    if isinstance(model_or_names, nn.Module):
        return [name for name, _ in model_or_names.named_parameters()]
    return list(model_or_names)


def drift_ratio(theta_t1: Mapping[str, Tensor], theta_t2: Mapping[str, Tensor],
                parameters: nn.Module | Iterable[str] | None = None) -> float:
    """``||theta_t2 - theta_t1||_2 / ||theta_t2||_2`` over all parameters jointly.

    ``parameters``: a model (its ``named_parameters``) or the names to use; by default every
    floating-point entry whose name does not mark a BatchNorm buffer (``running_mean``,
    ``running_var``, ``num_batches_tracked``).  Buffers are statistics, not parameters.
    """
    names = _parameter_names(parameters)
    if names is None:
        names = [k for k, v in theta_t2.items() if torch.is_floating_point(torch.as_tensor(v))
                 and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    diff = sq = 0.0
    for k in names:
        a = torch.as_tensor(theta_t1[k], dtype=torch.float64)
        b = torch.as_tensor(theta_t2[k], dtype=torch.float64)
        diff += float(((b - a) ** 2).sum())
        sq += float((b ** 2).sum())
    return float(np.sqrt(diff) / np.sqrt(sq)) if sq > 0 else float("nan")
