#!/usr/bin/env python
"""What `storage.persist: moments|auto` costs and saves, at the papers' training-set size.

For synthetic ReLU activations of one layer (``--n`` training rows in 10 classes, 80 % of them
relabelled at random as in a corrupted run; test rows drawn the same way), at several widths d:

* bytes: the training activations (``--dtype``) against the per-class statistics of both label
  sources (what the reduced file keeps instead), and whether they pay off;
* time: accumulating the statistics (the ``reduce_activations`` pass), and fitting MASC (99 %),
  MASC (1 component), VeLPIC and NCM from the statistics against fitting them on the activations;
* agreement: the fraction of test predictions that are identical between the two routes (the
  statistics route is exact up to floating point, so this should be 1.0).

    .venv/bin/python benchmarks/bench_statistics.py [--n 50000] [--dims 250 512 2048] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.probes import ClassMoments, fit_from_moments, make_probe, moment_bytes, pays_off  # noqa: E402

SETTINGS = [("masc", {"variance": 0.99}), ("masc", {"variance": 1}), ("velpic", {}), ("ncm", {})]


def relu_layer(n: int, d: int, k: int, rng, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Class-structured, sparse, non-negative rows: a low-rank class signal plus noise."""
    y = rng.integers(0, k, size=n)
    centers = rng.normal(size=(k, d))
    basis = rng.normal(size=(k, 8, d)) / np.sqrt(d)
    coeff = rng.normal(size=(n, 8))
    X = centers[y] + np.einsum("nr,nrd->nd", coeff, basis[y]) * 4 + rng.normal(scale=1.0, size=(n, d))
    return np.maximum(X, 0).astype(dtype), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="training rows (CIFAR-10: 50,000)")
    ap.add_argument("--n-test", type=int, default=2_000)
    ap.add_argument("--dims", type=int, nargs="+", default=[250, 512, 2048])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--corruption", type=float, default=0.8)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (the fit rule uses 1)")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    itemsize = np.dtype(args.dtype).itemsize
    print(f"n={args.n} train rows, {args.classes} classes, {args.dtype}, corruption "
          f"{args.corruption}, {args.threads} BLAS thread(s)")
    print(f"{'d':>5} {'train acts':>11} {'statistics':>11} {'pays off':>8} {'reduce s':>9} "
          f"{'fit from acts s':>15} {'fit from stats s':>16} {'same test preds':>15}")
    for d in args.dims:
        rng = np.random.default_rng(d)
        X, y_true = relu_layer(args.n + args.n_test, d, args.classes, rng, args.dtype)
        X, X_test = X[:args.n], X[args.n:]
        y_true = y_true[:args.n]
        y = y_true.copy()
        flip = rng.random(args.n) < args.corruption
        y[flip] = rng.integers(0, args.classes, size=int(flip.sum()))

        start = time.perf_counter()
        moments = {source: ClassMoments.of(X, labels, classes=range(args.classes))
                   for source, labels in (("corrupted", y), ("true", y_true))}
        reduce_s = time.perf_counter() - start

        fit_acts = fit_stats = 0.0
        same = []
        for name, params in SETTINGS:
            start = time.perf_counter()
            raw = make_probe(name, **params).fit(X, y)
            fit_acts += time.perf_counter() - start
            start = time.perf_counter()
            refit = fit_from_moments(name, params, moments["corrupted"])
            fit_stats += time.perf_counter() - start
            same.append(float(np.mean(raw.predict(X_test) == refit.predict(X_test))))
        acts_bytes = args.n * d * itemsize
        stats_bytes = moment_bytes(d, args.classes)
        print(f"{d:>5} {acts_bytes / 2**20:>8.1f} MiB {stats_bytes / 2**20:>7.1f} MiB "
              f"{str(pays_off(d, args.classes, args.n, itemsize)):>8} {reduce_s:>9.2f} "
              f"{fit_acts:>15.2f} {fit_stats:>16.2f} {min(same):>15.4f}")


if __name__ == "__main__":
    main()
