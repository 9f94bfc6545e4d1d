"""The composite grid: every (depth, deep_epoch, shallow_epoch) composite of one run on one input set.

:func:`composite_predictions` runs the grid once (eval mode, batched): per input batch, each needed
checkpoint's full logits, then per depth the shallow features ``f[1:d](theta_t, x)`` of every shallow
epoch once, then ``f[d+1:n](theta_T, z_t)`` for every requested pair.  It keeps per-sample predicted
classes and per-sample cross-entropies (one per label source), never the features, so memory is
``O(#pairs x #samples)``.  :func:`composite_rows` turns that into rows of ``composite.parquet``
(:mod:`pipeline.dynamics.tables`), :func:`pointwise_rows` into rows of the point-wise table, and
:func:`composite_grid` does both the pass and the rows -- the entry point of the workflow rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.models import ProbedModel
from pipeline.dynamics.composite import load_state
from pipeline.dynamics.consistency import WindowConsistency, drift_ratio, window_consistency

__all__ = ["CompositePredictions", "composite_predictions", "composite_rows", "pointwise_rows",
           "composite_grid"]

Pair = tuple[int, int]  # (deep_epoch, shallow_epoch)


@dataclass
class CompositePredictions:
    """Per-sample results of a composite grid on one input set."""

    depths: list[str]
    pairs: list[Pair]
    label_sources: list[str]
    #: ``pred[(depth, deep, shallow)]``: predicted classes, ``(n,)`` int64
    pred: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)
    #: ``nll[(depth, deep, shallow)][source]``: per-sample cross-entropy, ``(n,)`` float64
    nll: dict[tuple[str, int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    #: ``full_pred[epoch]``: predicted classes of the full network ``f(theta_epoch)``
    full_pred: dict[int, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def for_depth(self, depth: str) -> dict[Pair, np.ndarray]:
        """``{(deep, shallow): predicted classes}`` at one depth (for window consistency)."""
        return {(T, t): p for (d, T, t), p in self.pred.items() if d == depth}

    @property
    def n_samples(self) -> int:
        return int(next(iter(self.labels.values())).shape[0]) if self.labels else 0


def _labels_dict(labels) -> dict[str, np.ndarray]:
    if isinstance(labels, Mapping):
        return {str(k): np.asarray(v, dtype=np.int64) for k, v in labels.items()}
    return {"true": np.asarray(labels, dtype=np.int64)}


@torch.no_grad()
def composite_predictions(build: Callable[[], ProbedModel], states: Mapping[int, Mapping[str, Tensor]],
                          x: Tensor | np.ndarray, labels: Mapping[str, np.ndarray] | np.ndarray, *,
                          depths: Sequence[str], pairs: Iterable[Pair],
                          transform: Callable[[Tensor], Tensor] | None = None,
                          batch_size: int = 256, device: str | torch.device | None = None
                          ) -> CompositePredictions:
    """Run every composite ``C(deep, shallow)`` of ``pairs`` at every boundary of ``depths``.

    ``build()`` returns a fresh model of the run's architecture; ``states[epoch]`` is its state dict at
    that epoch; ``x`` the inputs (raw, e.g. uint8, if ``transform`` normalises them); ``labels`` one
    label array or ``{label_source: labels}`` (e.g. ``{"corrupted": ..., "true": ...}``).
    """
    pairs = [(int(T), int(t)) for T, t in pairs]
    depths = list(depths)
    labels = _labels_dict(labels)
    x = torch.as_tensor(x)
    n = int(x.shape[0])
    for source, y in labels.items():
        if y.shape != (n,):
            raise ValueError(f"labels {source!r} have shape {y.shape}, expected ({n},)")
    epochs = sorted({e for pair in pairs for e in pair})
    missing = [e for e in epochs if e not in states]
    if missing:
        raise KeyError(f"no checkpoint state for epochs {missing}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    models = {e: load_state(build, states[e]).to(device) for e in epochs}
    probe = models[epochs[0]]
    for d in depths:
        probe.canonical_boundary(d)  # unknown boundaries fail before any work

    out = CompositePredictions(depths, pairs, list(labels), labels=labels)
    chunks_pred: dict = {(d, T, t): [] for d in depths for T, t in pairs}
    chunks_nll: dict = {(d, T, t): {s: [] for s in labels} for d in depths for T, t in pairs}
    chunks_full: dict = {e: [] for e in epochs}
    ys = {s: torch.as_tensor(y) for s, y in labels.items()}
    for start in range(0, n, batch_size):
        xb = x[start:start + batch_size].to(device)
        xb = transform(xb) if transform is not None else xb.float()
        for e in epochs:
            chunks_full[e].append(models[e](xb).argmax(1).cpu())
        for d in depths:
            feats = {t: models[t].forward_to(d, xb) for t in sorted({t for _, t in pairs})}
            for T, t in pairs:
                logits = models[T].forward_from(d, feats[t]).double().cpu()
                chunks_pred[(d, T, t)].append(logits.argmax(1))
                for s, y in ys.items():
                    chunks_nll[(d, T, t)][s].append(
                        F.cross_entropy(logits, y[start:start + batch_size], reduction="none"))
    out.full_pred = {e: torch.cat(c).numpy().astype(np.int64) for e, c in chunks_full.items()}
    out.pred = {k: torch.cat(c).numpy().astype(np.int64) for k, c in chunks_pred.items()}
    out.nll = {k: {s: torch.cat(c).numpy() for s, c in v.items()} for k, v in chunks_nll.items()}
    return out


def composite_rows(preds: CompositePredictions, keys: Mapping, *, split: str,
                   subsets: Mapping[str, np.ndarray] | None = None,
                   states: Mapping[int, Mapping[str, Tensor]] | None = None,
                   parameter_names: Iterable[str] | None = None,
                   drift_cache: dict | None = None) -> list[dict]:
    """Rows of ``composite.parquet``: one per (depth, deep, shallow, subset, label source).

    ``subsets``: ``{name: boolean mask}`` over the samples (e.g. ``{"clean": ~changed,
    "corrupted": changed}`` on the training set); ``"all"`` is always included.  ``states`` (optional)
    gives the drift ratio ``||theta_deep - theta_shallow|| / ||theta_deep||`` of each pair;
    ``drift_cache`` (a dict kept across calls, e.g. across input sets) avoids recomputing it.
    """
    n = preds.n_samples
    masks = {"all": np.ones(n, dtype=bool)}
    for name, mask in (subsets or {}).items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"subset {name!r} has shape {mask.shape}, expected ({n},)")
        masks[str(name)] = mask
    names = list(parameter_names) if parameter_names is not None else None
    drift = drift_cache if drift_cache is not None else {}
    if states is not None:
        for T, t in preds.pairs:
            if (T, t) not in drift:
                drift[(T, t)] = drift_ratio(states[t], states[T], names)
    rows = []
    for d in preds.depths:
        for T, t in preds.pairs:
            pred = preds.pred[(d, T, t)]
            for subset, mask in masks.items():
                m = int(mask.sum())
                vs_deep = float((pred[mask] == preds.full_pred[T][mask]).mean()) if m else float("nan")
                vs_shallow = float((pred[mask] == preds.full_pred[t][mask]).mean()) if m else float("nan")
                base = float((preds.full_pred[T][mask] == preds.full_pred[t][mask]).mean()) if m else float("nan")
                for source in preds.label_sources:
                    y = preds.labels[source][mask]
                    rows.append({
                        **keys, "depth": d, "deep_epoch": T, "shallow_epoch": t, "split": split,
                        "subset": subset, "label_source": source,
                        "accuracy": float((pred[mask] == y).mean()) if m else float("nan"),
                        "cross_entropy": float(preds.nll[(d, T, t)][source][mask].mean()) if m else float("nan"),
                        "consistency_vs_deep": vs_deep, "consistency_vs_shallow": vs_shallow,
                        "n_samples": m, "baseline_agreement": base,
                        "drift_ratio": drift.get((T, t), float("nan")),
                    })
    return rows


def pointwise_rows(result: WindowConsistency, keys: Mapping, *, depth: str, split: str,
                   sample_index: np.ndarray | None = None,
                   subset_of_sample: np.ndarray | None = None) -> list[dict]:
    """Rows of the point-wise consistency table for one window (one row per sample)."""
    n = result.values.shape[0]
    idx = np.arange(n) if sample_index is None else np.asarray(sample_index)
    sub = np.full(n, "all", dtype=object) if subset_of_sample is None else np.asarray(subset_of_sample)
    dense = result.dense
    return [{**keys, "depth": depth, "deep_epoch": result.deep_epoch,
             "window_start": result.window_start, "reference": result.reference, "split": split,
             "subset": str(sub[i]), "sample_index": int(idx[i]), "consistency": float(result.values[i]),
             "n_epochs": len(result.epochs), "dense": dense} for i in range(n)]


def composite_grid(build: Callable[[], ProbedModel], states: Mapping[int, Mapping[str, Tensor]],
                   x, labels, *, depths: Sequence[str], pairs: Iterable[Pair], keys: Mapping,
                   split: str, subsets: Mapping[str, np.ndarray] | None = None,
                   windows: Iterable[tuple[int, int]] = (), references: Sequence[str] = ("paper",),
                   allow_sparse: bool = False, transform=None, batch_size: int = 256, device=None,
                   drift_cache: dict | None = None,
                   ) -> tuple[list[dict], list[dict], CompositePredictions]:
    """The composite grid of one run on one input set: ``(composite rows, point-wise rows, preds)``.

    ``windows``: ``(deep_epoch T2, window_start T1)`` pairs for point-wise consistency; every
    ``(T2, t)`` with ``t`` in the window is added to ``pairs`` automatically.
    """
    pairs = list(dict.fromkeys((int(T), int(t)) for T, t in pairs))
    windows = [(int(T2), int(T1)) for T2, T1 in windows]
    for T2, T1 in windows:
        lo, hi = sorted((T1, T2))
        for t in range(lo, hi + 1):
            if t in states and (T2, t) not in pairs:
                pairs.append((T2, t))
    preds = composite_predictions(build, states, x, labels, depths=depths, pairs=pairs,
                                  transform=transform, batch_size=batch_size, device=device)
    model = build()
    rows = composite_rows(preds, keys, split=split, subsets=subsets, states=states,
                          parameter_names=[name for name, _ in model.named_parameters()],
                          drift_cache=drift_cache)
    sub = None
    if subsets:
        sub = np.full(preds.n_samples, "all", dtype=object)
        for name, mask in subsets.items():
            sub[np.asarray(mask, dtype=bool)] = name
    point = []
    for d in depths:
        comp = preds.for_depth(d)
        for T2, T1 in windows:
            for ref in references:
                res = window_consistency(comp, preds.full_pred, deep_epoch=T2, window_start=T1,
                                         reference=ref, allow_sparse=allow_sparse)
                point += pointwise_rows(res, keys, depth=d, split=split, subset_of_sample=sub)
    return rows, point, preds
