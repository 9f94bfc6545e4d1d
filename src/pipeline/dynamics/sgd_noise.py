"""One-step SGD noise in feature space (paper section 6) and its isotropic controls.

Protocol (:func:`one_step_sgd_noise`), for one checkpoint ``theta`` and a fixed input set ``X``:

* ``N`` independent one-step updates ``theta'_b = theta - eta * v_b``, each from its own mini-batch
  ``B_b`` of ``batch_size`` training samples drawn without replacement (independently across updates,
  seeded), with ``v_b = g_B + wd * theta`` (``g_B`` the mean cross-entropy gradient on ``B_b``, with the
  run's training labels) -- PyTorch SGD semantics.  Momentum: without the optimizer's momentum buffer
  (``momentum_mode="none"``) a fresh SGD-with-momentum step equals this plain step; with it
  (``"buffer"``) ``v_b = mu * buf + g_B + wd * theta`` -- the common term shifts every update alike and
  cancels in the covariance.
* The gradient is taken in training mode (``grad_mode="train"``: BatchNorm batch statistics, dropout
  active and seeded) on a copy; the BatchNorm running statistics of the checkpoint are kept for the
  read-out (the step changes parameters only).
* ``dz_b(x) = f[1:d](theta'_b, x) - f[1:d](theta, x)`` in eval mode, flattened: an ``(N, |X|, D)``
  array.  Per input ``x`` the ``(N, D)`` matrix ``dz(x)`` is summarised by its covariance spectrum and
  tested for sphericity (:mod:`pipeline.dynamics.sphericity`).

Controls at the same ``(N, D)``:

* :func:`isotropic_gaussian_control` -- ``N(0, tau I)`` on the SGD sample's ``D'`` moving coordinates
  (zero on its dead ones) with ``tau = tr(S) / D'``, i.e. the same trace as the SGD sample covariance
  ``S`` (the paper's "isotropic Gaussian noise of the same scale") in the same tested subspace.
* :func:`parameter_noise_control` -- ``theta + sigma xi`` with ``xi ~ N(0, I)`` on the parameters of
  the shallow part (the only ones ``f[1:d]`` depends on), ``sigma`` matched so that ``E||sigma xi||``
  ~ the mean norm of the SGD step restricted to those parameters (:func:`matched_sigma`).  At the
  first layer of an MLP (``z = relu(W x + b)``) this is isotropic in feature space on the active
  units (``dz_k = sigma (xi_k . x + zeta_k)``, iid across ``k``), so a valid test keeps its nominal
  size on it there; deeper, its feature covariance ``sigma^2 J J^T`` is itself anisotropic, and a
  rejection there says nothing about the test.

Precision: the updates and the feature read-outs run on a float64 copy of the model.  A one-step
change is tiny (``||eta v_B||`` ~ 1e-6 of ``||theta||`` late in training); in float32 ``dz`` would be
dominated by rounding of the features (relative 6e-8), a discrete, non-Gaussian error that makes
even the isotropic parameter control look anisotropic.

Sphericity is tested on the coordinates that move (:func:`pipeline.dynamics.sphericity.moving_coordinates`):
an inactive ReLU unit has exactly zero change in every draw, which no isotropic law produces, so
testing all ``D`` coordinates rejects every source (issue 16: 62-72 % of the digits MLP's fc1 units).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.device import derived_seed, numpy_rng, seed_torch, torch_generator
from pipeline.core.models import ProbedModel
from pipeline.dynamics.sphericity import (
    TOP_K,
    moving_coordinates,
    sphericity_null,
    sphericity_statistics,
    sphericity_test,
)

__all__ = ["OneStepNoise", "one_step_sgd_noise", "shallow_parameter_names", "matched_sigma",
           "parameter_noise_control", "isotropic_gaussian_control", "noise_summary_rows",
           "SOURCES", "DROP_RULE"]

SOURCES = ("sgd", "gaussian", "param_isotropic")


@dataclass
class OneStepNoise:
    """Feature changes of ``N`` one-step SGD updates from one checkpoint."""

    boundary: str
    delta: np.ndarray                 # (N, M, D) float64: dz for each update and input
    step_norms: np.ndarray            # (N,): ||theta' - theta|| over all parameters
    shallow_step_norms: np.ndarray    # (N,): the same over the shallow part's parameters
    n_shallow_params: int
    protocol: dict = field(default_factory=dict)  # lr, batch_size, momentum, momentum_mode, ...
    batches: np.ndarray | None = None  # (N, batch_size): training indices of each update's batch

    @property
    def n_updates(self) -> int:
        return int(self.delta.shape[0])


def shallow_parameter_names(model: ProbedModel, boundary: str) -> list[str]:
    """Names of the parameters ``f[1:boundary]`` depends on."""
    owned = set(model.shallow_state_keys(boundary))
    return [n for n, _ in model.named_parameters() if n in owned]


def _features(model: ProbedModel, boundary: str, x: Tensor, batch_size: int = 512) -> Tensor:
    out = [model.forward_to(boundary, x[i:i + batch_size]).flatten(1) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).double()


def _prepare(x, transform, device) -> Tensor:
    x = torch.as_tensor(x).to(device)
    return (transform(x) if transform is not None else x.float()).double()


def one_step_sgd_noise(model: ProbedModel, boundary: str, inputs, train_x, train_y, *,
                       n_updates: int, lr: float, batch_size: int, momentum: float = 0.0,
                       momentum_buffer: Mapping[str, Tensor] | None = None,
                       weight_decay: float = 0.0, seed: int = 0, grad_mode: str = "train",
                       transform: Callable[[Tensor], Tensor] | None = None,
                       device: str | torch.device | None = None) -> OneStepNoise:
    """``N = n_updates`` one-step updates from ``model``'s parameters (see module doc)."""
    if grad_mode not in ("train", "eval"):
        raise ValueError(f"grad_mode must be 'train' or 'eval', got {grad_mode!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    work = copy.deepcopy(model).to(device).double()  # float64: see the module doc (rounding)
    params0 = {n: p.detach().clone() for n, p in work.named_parameters()}
    buffers0 = {n: b.detach().clone() for n, b in work.named_buffers()}
    shallow = set(shallow_parameter_names(work, boundary))
    use_buffer = momentum_buffer is not None and momentum > 0
    if use_buffer:
        missing = [n for n in params0 if n not in momentum_buffer]
        if missing:
            raise KeyError(f"momentum buffer lacks {missing[:5]}")
    xin = _prepare(inputs, transform, device)
    train_y = torch.as_tensor(np.asarray(train_y), dtype=torch.int64)
    n_train = int(train_y.shape[0])
    if batch_size > n_train:
        raise ValueError(f"batch_size {batch_size} exceeds the {n_train} training samples")
    rng = numpy_rng(seed, 0x56D)
    with torch.no_grad():
        z0 = _features(work.eval(), boundary, xin)
    deltas, norms, shallow_norms, batches = [], [], [], []
    for b in range(n_updates):
        idx = np.sort(rng.choice(n_train, size=batch_size, replace=False))
        batches.append(idx)
        with torch.no_grad():
            for n, p in work.named_parameters():
                p.copy_(params0[n])
            for n, buf in work.named_buffers():
                buf.copy_(buffers0[n])
        work.train(grad_mode == "train")
        work.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[]):
            seed_torch(derived_seed(seed, b))
            xb = _prepare(torch.as_tensor(train_x)[idx], transform, device)
            loss = F.cross_entropy(work(xb), train_y[idx].to(device))
            loss.backward()
        total = sq_shallow = 0.0
        with torch.no_grad():
            for n, p in work.named_parameters():
                if p.grad is None:
                    step = torch.zeros_like(p)
                else:  # in place on the gradient (zeroed before the next update): one pass each
                    step = p.grad
                if weight_decay:
                    step = step.add_(params0[n], alpha=weight_decay)
                if use_buffer:
                    step = step.add_(momentum_buffer[n].to(device, torch.float64), alpha=momentum)
                step = step.mul_(lr)
                sq = float(torch.dot(step.reshape(-1), step.reshape(-1)))
                total += sq
                if n in shallow:
                    sq_shallow += sq
                p.sub_(step)
            for n, buf in work.named_buffers():
                buf.copy_(buffers0[n])
            work.eval()
            deltas.append((_features(work, boundary, xin) - z0).cpu().numpy())
        norms.append(np.sqrt(total))
        shallow_norms.append(np.sqrt(sq_shallow))
    protocol = {"lr": float(lr), "batch_size": int(batch_size), "n_updates": int(n_updates),
                "momentum": float(momentum), "momentum_mode": "buffer" if use_buffer else "none",
                "weight_decay": float(weight_decay), "grad_mode": grad_mode, "seed": int(seed),
                "n_inputs": int(xin.shape[0]), "buffers": "checkpoint (not updated by the step)",
                "dtype": "float64"}
    n_shallow = int(sum(params0[n].numel() for n in shallow))
    return OneStepNoise(boundary, np.stack(deltas), np.asarray(norms), np.asarray(shallow_norms),
                        n_shallow, protocol, np.stack(batches))


def matched_sigma(noise: OneStepNoise) -> float:
    """``sigma`` with ``sigma * sqrt(P_shallow)`` = the mean shallow-parameter SGD step norm
    (so ``||sigma xi|| ~ ||eta v_B||`` on the parameters ``f[1:d]`` depends on)."""
    if noise.n_shallow_params == 0:
        return 0.0
    return float(noise.shallow_step_norms.mean() / np.sqrt(noise.n_shallow_params))


@torch.no_grad()
def parameter_noise_control(model: ProbedModel, boundary: str, inputs, *, n_draws: int,
                            sigma: float, seed: int = 0, transform=None, device=None) -> np.ndarray:
    """``dz = f[1:d](theta + sigma xi) - f[1:d](theta)`` for ``n_draws`` isotropic Gaussian ``xi`` on
    the shallow part's parameters (eval mode, buffers unchanged): ``(n_draws, M, D)``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    work = copy.deepcopy(model).to(device).double().eval()
    names = set(shallow_parameter_names(work, boundary))
    params0 = {n: p.detach().clone() for n, p in work.named_parameters()}
    xin = _prepare(inputs, transform, device)
    z0 = _features(work, boundary, xin)
    gen = torch_generator(int(seed) * 7919 + 17)
    out = []
    for _ in range(n_draws):
        for n, p in work.named_parameters():
            if n in names:
                xi = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(device)
                p.copy_(params0[n] + sigma * xi)
        out.append((_features(work, boundary, xin) - z0).cpu().numpy())
    return np.stack(out)


def isotropic_gaussian_control(Z: np.ndarray, seed: int = 0) -> np.ndarray:
    """Gaussian ``(N, D)`` sample, isotropic on the moving coordinates of ``Z`` and zero on its dead
    ones: covariance ``tau I`` on the ``D'`` coordinates of :func:`moving_coordinates`, with
    ``tau = tr(S_Z) / D'`` (equal trace, same tested subspace, so both are tested at one ``(N, D')``)."""
    Z = np.asarray(Z, dtype=np.float64)
    N, D = Z.shape
    mask = moving_coordinates(Z)
    d = int(mask.sum())
    out = np.zeros((N, D))
    if d == 0:
        return out
    tau = float(((Z - Z.mean(0)) ** 2).sum() / max(N - 1, 1) / d)
    rng = numpy_rng(seed, N, D, 0x150)
    out[:, mask] = rng.standard_normal((N, d)) * np.sqrt(tau)
    return out


#: why a coordinate is left out of the sphericity tests (the table's ``drop_rule``)
DROP_RULE = "dz exactly 0 in all N draws (inactive ReLU unit that no draw switches on)"


def noise_summary_rows(samples: Mapping[str, np.ndarray], keys: Mapping, *, epoch: int,
                       boundary: str, protocol: Mapping, input_index=None, n_resamples: int = 999,
                       seed: int = 0, k: int = TOP_K) -> list[dict]:
    """Rows of ``sgd_noise.parquet``: for each source (``"sgd"``, ``"gaussian"``,
    ``"param_isotropic"``) and input, the covariance spectrum and sphericity tests of its ``(N, D)``
    matrix.  ``samples[source]`` is ``(N, M, D)``.

    The tests (``john_u`` = the paper's ``T`` of Appendix E on the trace-normalised covariance,
    ``p_value``, the asymptotic z's, the spatial sign) are on the ``D'`` moving coordinates of each
    sample (``dim_tested``; ``n_dropped = D - D'`` coordinates whose change is exactly zero in every
    draw, :data:`DROP_RULE`), with the Monte-Carlo null of ``(N, D')``.  ``john_u_all`` /
    ``p_value_all`` are the same statistic over all ``D`` coordinates (the test before issue 16,
    which rejects every sample with a dead coordinate), kept for comparison.  The spectrum
    (trace, eigenvalues, participation ratio) is the same on either set (dead coordinates add 0)."""
    rows = []
    for source, arr in samples.items():
        arr = np.asarray(arr, dtype=np.float64)
        N, M, D = arr.shape
        null_all = sphericity_null(N, D, n_resamples, seed, spatial_sign=False)
        idx = np.arange(M) if input_index is None else np.asarray(input_index)
        for m in range(M):
            Z = arr[:, m, :]
            mask = moving_coordinates(Z)
            d = int(mask.sum())
            if d >= 1:
                res = sphericity_test(Z[:, mask], null=sphericity_null(N, d, n_resamples, seed), k=k)
            else:  # nothing moved: no spectrum, no test
                res = {key: float("nan") for key in ("trace", "topk_energy", "participation_ratio",
                                                     "john_u", "p_value", "ledoit_wolf_z",
                                                     "srivastava_z", "spatial_sign_u",
                                                     "spatial_sign_p_value")}
                res["eigenvalues"] = np.full(k, np.nan)
            u_all = sphericity_statistics(Z, spatial_sign=False)["john_u"]
            eig = {f"eig_{i + 1}": float(v) for i, v in enumerate(res["eigenvalues"])}
            rows.append({
                **keys, "epoch": int(epoch), "depth": boundary, "input_index": int(idx[m]),
                "source": source, "n_updates": N, "dim": D, "dim_tested": d, "n_dropped": D - d,
                "drop_rule": DROP_RULE, "lr": float(protocol["lr"]),
                "batch_size": int(protocol["batch_size"]), "momentum": float(protocol["momentum"]),
                "momentum_mode": str(protocol["momentum_mode"]),
                "weight_decay": float(protocol["weight_decay"]), "trace": res["trace"], **eig,
                "topk_energy": res["topk_energy"], "participation_ratio": res["participation_ratio"],
                "john_u": res["john_u"], "p_value": res["p_value"],
                "ledoit_wolf_z": res["ledoit_wolf_z"], "srivastava_z": res["srivastava_z"],
                "spatial_sign_u": res["spatial_sign_u"],
                "spatial_sign_p_value": res["spatial_sign_p_value"],
                "john_u_all": float(u_all), "p_value_all": float(null_all.p_value(u_all)),
                "n_resamples": null_all.n_resamples,
            })
    return rows
