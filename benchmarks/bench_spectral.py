#!/usr/bin/env python
"""MASC and VeLPIC settings fitted one by one (before) against one shared eigendecomposition per
class (:func:`pipeline.probes.fit_spectral`, what the ``fit`` stage does now), side by side.

Two setting lists: the papers' (``config/paper.yaml``: MASC 0.99 + VeLPIC, 2 settings) and the
embedded default's (five MASC thresholds / counts + both VeLPIC signs, 7 settings), fitted on
synthetic post-ReLU class data at a Gram-route shape (n_c < d) and a d x d-route shape (n_c > d).
Prints the fit time of each way, the speed-up and whether the test predictions agree (they must:
MASC's arrays are identical; VeLPIC's vectors equal to float64 rounding).

    PYTHONPATH=src python benchmarks/bench_spectral.py                         # CPU, numpy route
    PYTHONPATH=src python benchmarks/bench_spectral.py --device cuda --full    # a GPU, 10 x 5,000 x 16,384

Measured on this project's 2-core Xeon VM (numpy route): see docs/probes.md, "Probes on a device".
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from pipeline.probes import MASC, VeLPIC, fit_spectral

PAPER = [("masc", 0.99), ("velpic", "class_mean")]
DEFAULT = [("masc", 0.99), ("masc", 0.75), ("masc", 0.5), ("masc", 0.25), ("masc", 1),
           ("velpic", "class_mean"), ("velpic", "global_mean")]


def make(settings, device):
    return [MASC(v, device=device) if n == "masc" else VeLPIC(v, device=device) for n, v in settings]


def post_relu_classes(K, n_c, d, rank, seed=0):
    """K classes, each a rank-``rank`` Gaussian in its own subspace plus a shared mean, ReLU'd."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(d).astype(np.float32)
    X = np.empty((K * n_c, d), dtype=np.float32)
    for c in range(K):
        Q = rng.standard_normal((rank, d)).astype(np.float32) / np.sqrt(rank)
        X[c * n_c:(c + 1) * n_c] = rng.standard_normal((n_c, rank)).astype(np.float32) @ Q + shared
    np.maximum(X, 0, out=X)
    return X, np.repeat(np.arange(K), n_c)


def sync(device):
    if device and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="None: the numpy route; cpu / cuda: the torch route")
    p.add_argument("--full", action="store_true", help="the papers' largest shape, 10 x 5,000 x 16,384")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    shapes = ([(10, 5000, 16384, 400)] if args.full else [(10, 300, 2048, 200), (10, 1200, 512, 200)])
    print(f"bench_spectral: device {args.device or 'numpy'}; cpus {os.cpu_count()}; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'shape (K x n_c x d)':>22}  {'settings':>8}  {'one by one':>10}  {'shared':>8}  {'speed-up':>8}  agree")
    for K, n_c, d, rank in shapes:
        X, y = post_relu_classes(K, n_c, d, rank)
        Xt, yt = post_relu_classes(K, 200, d, rank, seed=0)
        if args.device and args.device.startswith("cuda"):
            import torch

            X, Xt = torch.from_numpy(X).to(args.device), torch.from_numpy(Xt).to(args.device)
        for label, settings in (("paper", PAPER), ("default", DEFAULT)):
            before, after = [], []
            for _ in range(args.repeat):
                sync(args.device)
                t = time.perf_counter()
                alone = [probe.fit(X, y) for probe in make(settings, args.device)]
                sync(args.device)
                before.append(time.perf_counter() - t)
                t = time.perf_counter()
                shared = fit_spectral(make(settings, args.device), X, y)
                sync(args.device)
                after.append(time.perf_counter() - t)
            agree = all(np.array_equal(a.predict(Xt), s.predict(Xt)) for a, s in zip(alone, shared, strict=True))
            b, a = min(before), min(after)
            print(f"{f'{K} x {n_c} x {d}':>22}  {label:>3} ({len(settings)})  {b:>9.2f}s  {a:>7.2f}s  "
                  f"{b / a:>7.1f}x  {agree}", flush=True)


if __name__ == "__main__":
    main()
