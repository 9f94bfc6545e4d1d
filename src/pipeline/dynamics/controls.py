"""Magnitude-matched random control for composites (issue 9, "Ablations and controls").

A composite ``C(T, t1)`` feeds the deep part the shallow features ``z_t1 = f[1:d](theta_t1, x)``
instead of ``z_t2``.  To tell *structured* variability (the actual drift ``z_t1 - z_t2``) from *any*
variability of the same size, the control feeds ``z_t2 + r`` with ``r`` a uniformly random direction
scaled, per sample, to ``||r|| = ||z_t1 - z_t2||`` (flattened Euclidean norm).  Everything else is
unchanged (same deep part, eval mode).  If the network tolerates its own drift but not random
perturbations of the same norm, the drift is structured.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.core.device import torch_generator
from pipeline.core.models import ProbedModel

__all__ = ["matched_random_features", "matched_control_logits"]


def matched_random_features(z_t1: Tensor, z_t2: Tensor, *, seed: int = 0) -> Tensor:
    """``z_t2 + r`` with ``r`` uniform in direction and ``||r_i|| = ||z_t1_i - z_t2_i||`` per sample."""
    if z_t1.shape != z_t2.shape:
        raise ValueError(f"feature shapes differ: {tuple(z_t1.shape)} vs {tuple(z_t2.shape)}")
    n = z_t1.shape[0]
    target = (z_t1 - z_t2).reshape(n, -1).double().norm(dim=1)
    gen = torch_generator(seed)
    r = torch.randn(z_t2.reshape(n, -1).shape, generator=gen, dtype=torch.float64)
    r = r / r.norm(dim=1, keepdim=True).clamp_min(1e-300) * target[:, None]
    return (z_t2.double() + r.reshape(z_t2.shape).to(z_t2.device)).to(z_t2.dtype)


@torch.no_grad()
def matched_control_logits(shallow_t1: ProbedModel, shallow_t2: ProbedModel, deep: ProbedModel,
                           boundary: str, x: Tensor, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(logits of deep o f[1:d](t1), logits of deep on z_t2 + matched random r)``, eval mode."""
    for m in (shallow_t1, shallow_t2, deep):
        m.eval()
    z1 = shallow_t1.forward_to(boundary, x)
    z2 = shallow_t2.forward_to(boundary, x)
    zc = matched_random_features(z1, z2, seed=seed)
    return deep.forward_from(boundary, z1), deep.forward_from(boundary, zc)
