"""Feature trajectories in their two principal directions and the perturbation "induction" test
(paper Appendix B, Figs. 11 and 14; section 4.5).

What the paper did (Appendix B, "Induction"): on CIFAR-10 the latent space is high-dimensional, so
"we applied PCA to identify the two principal directions", took the features of five randomly
selected training samples at epochs 250-300 ("extracted every five epochs", Fig. 11: 150-300), "added
uniform noise of approximately unit magnitude ... along the two principal components, and evaluated
their classification using the network at epoch 300"; Fig. 14 draws the projected trajectory points
(dark) and the perturbed points around each (light), every point coloured by the class the deep
part at epoch 300 assigns.

Here, for one run, one boundary ``d`` and a window ``[T1, T2]`` of saved epochs:

1. ``z_t(x) = f[1:d](theta_t, x)`` (flattened) for ``samples`` training inputs drawn with ``seed``, at
   every ``every``-th saved epoch of the window counted back from ``T2`` (``T2`` always included);
2. PCA of all those trajectory points (centred; the two leading right singular vectors ``v1, v2``);
   the paper does not say on which points its PCA was fitted -- we fit it on the drawn trajectories,
   the points the figure shows;
3. each point's projection ``(z - mean) . v_k`` and the class ``argmax f[d+1:n](theta_T2, z)``;
4. for the epochs ``>= perturb_from``: ``draws`` perturbations ``z + u1 v1 + u2 v2`` with
   ``u_k ~ Uniform[-noise, noise]`` (``noise = 1``: "approximately unit magnitude", in the feature
   units), whose projection moves by exactly ``(u1, u2)``, classified by the same deep part.

:func:`induction_rows` returns the rows of the trajectory table (kinds ``pca`` and ``perturbed``) and a
summary: ``stability`` (the fraction of perturbed points classified like their unperturbed point,
the paper's "stable along specific directions") and ``final_agreement`` (the fraction of trajectory
points the epoch-``T2`` deep part classifies like ``f(theta_T2)`` classifies the sample).
Row encoding (the trajectory table's columns): ``pca`` rows carry the sample's dataset index in
``sample_index``; ``perturbed`` rows carry ``sample_index = index * draws + draw`` (so ``index =
sample_index // draws``); ``label`` is the predicted class; ``changed`` whether the sample's training
label was corrupted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.core.device import numpy_rng

__all__ = ["trajectory_epochs", "principal_directions", "induction_rows"]


def trajectory_epochs(saved: Sequence[int], t1: int, t2: int, every: int = 1) -> list[int]:
    """Saved epochs of ``[t1, t2]`` (``t1 <= t2``) at every ``every``-th epoch counted back from
    ``t2``; ``t2`` must be saved."""
    if t1 > t2:
        raise ValueError(f"trajectory window [{t1}, {t2}] runs backwards; give [T1, T2] with T1 <= T2")
    if t2 not in saved:
        raise ValueError(f"trajectory window [{t1}, {t2}]: epoch {t2} (the deep part) was not saved")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    return [int(e) for e in sorted(saved) if t1 <= e <= t2 and (t2 - e) % every == 0]


def principal_directions(points: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, directions (k, D), explained variance ratios (k,))`` of ``points`` (n, D), by SVD of
    the centred points. Fewer than ``k`` non-degenerate directions give zero rows (and ratio 0)."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"PCA needs >= 2 points as an (n, D) array, got shape {x.shape}")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    total = float((s ** 2).sum())
    dirs = np.zeros((k, x.shape[1]))
    ratio = np.zeros(k)
    m = min(k, vt.shape[0])
    dirs[:m] = vt[:m]
    if total > 0:
        ratio[:m] = s[:m] ** 2 / total
    # a sign convention, so reruns draw the same picture: the largest |entry| of each direction is positive
    for i in range(m):
        j = int(np.argmax(np.abs(dirs[i])))
        if dirs[i, j] < 0:
            dirs[i] = -dirs[i]
    return mean, dirs, ratio


@torch.no_grad()
def induction_rows(models: Mapping[int, nn.Module], depth: str, x, changed, keys: Mapping, *,
                   epochs: Sequence[int], deep_epoch: int, perturb_from: int | None = None,
                   samples: int = 5, draws: int = 16, noise: float = 1.0, seed: int = 0,
                   transform: Callable | None = None, sample_index: np.ndarray | None = None
                   ) -> tuple[list[dict], dict]:
    """Rows (kinds ``pca``, ``perturbed``) and summary of the induction experiment (module doc).

    ``models[e]``: the network at epoch ``e`` (eval mode) for every ``e`` of ``epochs`` and
    ``deep_epoch``; ``x``: the candidate inputs (e.g. the training set), of which ``samples`` are
    drawn; ``changed``: their corruption mask; ``sample_index``: their dataset indices (default
    ``0..n-1``)."""
    epochs = sorted(int(e) for e in epochs)
    if not epochs:
        raise ValueError("no epochs for the feature trajectories")
    missing = [e for e in {*epochs, int(deep_epoch)} if e not in models]
    if missing:
        raise KeyError(f"no model for epochs {sorted(missing)}")
    n = int(x.shape[0])
    if samples < 1 or samples > n:
        raise ValueError(f"induction samples must be in 1..{n} (the input set), got {samples}")
    if draws < 1 or not noise > 0:
        raise ValueError(f"induction needs draws >= 1 and noise > 0, got {draws}, {noise}")
    index = np.arange(n) if sample_index is None else np.asarray(sample_index)
    rng = numpy_rng(seed)
    chosen = np.sort(rng.choice(n, size=samples, replace=False))
    xb = x[torch.as_tensor(chosen)]
    xb = transform(xb) if transform is not None else xb.float()
    changed = np.asarray(changed, dtype=bool)[chosen]
    deep = models[int(deep_epoch)]
    feats = {e: models[e].forward_to(depth, xb) for e in epochs}
    shape = tuple(feats[epochs[0]].shape[1:])
    flat = {e: f.flatten(1).double().cpu().numpy() for e, f in feats.items()}
    mean, dirs, ratio = principal_directions(np.concatenate([flat[e] for e in epochs]))
    final_pred = deep(xb).argmax(1).cpu().numpy()
    v = torch.as_tensor(dirs, dtype=feats[epochs[0]].dtype, device=xb.device)  # (2, D)
    start = epochs[0] if perturb_from is None else int(perturb_from)
    rows: list[dict] = []
    kept = total = agree = points = 0
    for e in epochs:
        coords = (flat[e] - mean) @ dirs.T                                 # (samples, 2)
        pred = deep.forward_from(depth, feats[e]).argmax(1).cpu().numpy()
        agree += int((pred == final_pred).sum())
        points += len(pred)
        for i in range(samples):
            rows.append({**keys, "depth": depth, "kind": "pca", "epoch": e,
                         "sample_index": int(index[chosen[i]]), "z1": float(coords[i, 0]),
                         "z2": float(coords[i, 1]), "label": int(pred[i]), "changed": bool(changed[i])})
        if e < start:
            continue
        u = rng.uniform(-noise, noise, size=(draws, samples, 2))
        shift = torch.as_tensor(u, dtype=v.dtype, device=v.device) @ v    # (draws, samples, D)
        z = (feats[e].flatten(1)[None] + shift).reshape(draws * samples, *shape)
        p = deep.forward_from(depth, z).argmax(1).cpu().numpy().reshape(draws, samples)
        kept += int((p == pred[None]).sum())
        total += p.size
        for k in range(draws):
            for i in range(samples):
                rows.append({**keys, "depth": depth, "kind": "perturbed", "epoch": e,
                             "sample_index": int(index[chosen[i]]) * draws + k,
                             "z1": float(coords[i, 0] + u[k, i, 0]), "z2": float(coords[i, 1] + u[k, i, 1]),
                             "label": int(p[k, i]), "changed": bool(changed[i])})
    summary = {"depth": depth, "epochs": epochs, "deep_epoch": int(deep_epoch), "perturb_from": start,
               "samples": [int(index[c]) for c in chosen], "draws": int(draws), "noise": float(noise),
               "explained_variance_ratio": [float(r) for r in ratio],
               "stability": kept / total if total else float("nan"),
               "final_agreement": agree / points if points else float("nan")}
    return rows, summary
