#!/usr/bin/env python
"""Benchmark the probe routes at the papers' largest shapes: numpy (CPU), torch CPU, torch CUDA.

For each shape -- CIFAR-10 / ResNet-18 L0: 10 classes x 5,000 samples x 16,384 dims; Tiny ImageNet:
200 classes x 500 x 4,096 -- it times, side by side, fitting MASC (variance 0.99) and VeLPIC on the
training activations and scoring them on the training and test activations (what the ``fit`` and
``score`` stages do for one layer), with

* ``numpy``          the numpy reference route (``device=None``), CPU;
* ``torch-cpu``      ``device="cpu"``;
* ``cuda``           ``device="cuda"`` from host (numpy) activations, host -> device copies included
                     (the staged pipeline: activations read from disk);
* ``cuda-resident``  ``device="cuda"`` with the activations already on the GPU (the fused
                     extraction path); the upload is timed and printed separately;

and, for the "faster than the authors" comparison, the authors' per-class approach (the d x d
covariance of ``[X_c; -X_c]`` in float64 and its full ``np.linalg.eigh``, on the CPU) **timed on
one class and extrapolated to all classes** (x K), optionally at a reduced dimension
(``--authors-dim``) and extrapolated by d^3 (eigh) and d^2 (covariance) -- the output says which.

It prints the achieved FLOP/s of each timed step (dominant flops only: the float64 Gram /
second-moment products, eigendecompositions counted as 4 m^3 for a full eigh with vectors and
4/3 m^3 for the numpy VeLPIC's single-eigenvector solver, and the float32 scoring products) against
the hardware's measured peak (a large float32 and float64 matmul on each device; for CUDA also
``torch.cuda.get_device_properties``), and the fraction of test predictions on which each route
agrees with the numpy route.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_probes_device.py --scale 0.1   # this CPU machine
    PYTHONPATH=src python benchmarks/bench_probes_device.py --full --authors-dim 4096  # a GPU machine

``--scale s`` multiplies samples per class and dimensions by ``s`` (classes are kept); ``--full``
is ``--scale 1``.  ``--json PATH`` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "src"))
sys.path.insert(0, str(HERE))
from bench_probes import hardware_header, synthetic_activations  # noqa: E402

from pipeline.probes import MASC, VeLPIC  # noqa: E402

SHAPES = {"cifar10": (10, 5000, 16384, 10000), "tiny_imagenet": (200, 500, 4096, 10000)}
ROUTES = ("numpy", "torch-cpu", "cuda", "cuda-resident")


# ----------------------------------------------------------------------------------------------
# hardware peaks
# ----------------------------------------------------------------------------------------------
def matmul_peak(device: str, dtype_name: str, size: int, repeat: int = 3) -> float:
    """Best FLOP/s of a ``size``^3 matmul on ``device`` (float32 at full precision, no TF32)."""
    import torch

    from pipeline.probes.accel import full_precision

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = np.inf
    with full_precision(torch):
        a @ b  # warm-up
        for _ in range(repeat):
            sync()
            t0 = time.perf_counter()
            a @ b
            sync()
            best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def peaks(routes, cpu_size: int) -> dict:
    import torch

    out = {"cpu": {"float32": matmul_peak("cpu", "float32", cpu_size),
                   "float64": matmul_peak("cpu", "float64", cpu_size)}}
    print(f"CPU measured matmul peak ({cpu_size}^3, {torch.get_num_threads()} torch threads): "
          f"float32 {out['cpu']['float32'] / 1e9:.1f} GFLOP/s, float64 {out['cpu']['float64'] / 1e9:.1f} GFLOP/s")
    if any(r.startswith("cuda") for r in routes):
        p = torch.cuda.get_device_properties(0)
        out["cuda"] = {"float32": matmul_peak("cuda", "float32", 8192),
                       "float64": matmul_peak("cuda", "float64", 8192)}
        print(f"CUDA: {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, "
              f"compute capability {p.major}.{p.minor}; measured matmul peak (8192^3): float32 (no TF32) "
              f"{out['cuda']['float32'] / 1e12:.1f} TFLOP/s, float64 {out['cuda']['float64'] / 1e12:.1f} TFLOP/s")
    return out


# ----------------------------------------------------------------------------------------------
# flop counts (dominant terms)
# ----------------------------------------------------------------------------------------------
def eigh_flops(m: int, full: bool = True) -> float:
    return (4.0 if full else 4.0 / 3.0) * m**3


def masc_fit_flops(counts, d, ks) -> float:
    total = 0.0
    for n_c, k in zip(counts, ks, strict=True):
        if n_c < d:
            total += 2.0 * n_c * n_c * d + eigh_flops(n_c) + 2.0 * d * n_c * k
        else:
            total += 2.0 * n_c * d * d + eigh_flops(d)
    return total


def velpic_fit_flops(counts, d, full_eigh: bool) -> float:
    return sum(2.0 * n_c * n_c * d + eigh_flops(n_c, full_eigh) if n_c < d
               else 2.0 * n_c * d * d + eigh_flops(d, full_eigh) for n_c in counts)


# ----------------------------------------------------------------------------------------------
# the authors' approach, one class
# ----------------------------------------------------------------------------------------------
def authors_one_class(Xc: np.ndarray, dim: int | None):
    """Per class: d x d covariance of [X_c; -X_c] (float64), full eigh.  Returns (cov s, eigh s, d)."""
    if dim is not None and dim < Xc.shape[1]:
        Xc = Xc[:, :dim]
    A = np.vstack([Xc, -Xc]).astype(np.float64)
    best_cov = best_eig = np.inf
    for _ in range(2):  # best of two when one run is short (the first call pays thread start-up)
        t0 = time.perf_counter()
        A0 = A - A.mean(axis=0)
        C = A0.T @ A0 / (A0.shape[0] - 1)
        t1 = time.perf_counter()
        np.linalg.eigh(C)
        t2 = time.perf_counter()
        best_cov, best_eig = min(best_cov, t1 - t0), min(best_eig, t2 - t1)
        if t2 - t0 > 5.0:
            break
    return best_cov, best_eig, Xc.shape[1]


# ----------------------------------------------------------------------------------------------
def timed(fn, sync=None):
    if sync:
        sync()
    t0 = time.perf_counter()
    out = fn()
    if sync:
        sync()
    return time.perf_counter() - t0, out


def run_route(route, X, y, Xt, variance):
    """Fit and score MASC and VeLPIC on one route; returns timings, predictions and components."""
    import torch

    device = {"numpy": None, "torch-cpu": "cpu"}.get(route, "cuda")
    sync = torch.cuda.synchronize if device == "cuda" else None
    res = {"route": route}
    if route == "cuda-resident":
        t, (Xd, yd, Xtd) = timed(lambda: (torch.from_numpy(X).to("cuda"), torch.from_numpy(y).to("cuda"),
                                          torch.from_numpy(Xt).to("cuda")), sync)
        res["upload_s"] = t
        X, y, Xt = Xd, yd, Xtd
    if device == "cuda":  # warm-up: CUDA context, cuBLAS / cuSOLVER handles (not timed)
        small = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
        MASC(device="cuda").fit(small, np.arange(64) % 2).predict(small)
        VeLPIC(device="cuda").fit(small, np.arange(64) % 2)
    t, masc = timed(lambda: MASC(variance=variance, device=device).fit(X, y), sync)
    res["masc_fit_s"] = t
    res["masc_score_train_s"], _ = timed(lambda: masc.predict(X), sync)
    res["masc_score_test_s"], res["masc_pred"] = timed(lambda: masc.predict(Xt), sync)
    t, vel = timed(lambda: VeLPIC(device=device).fit(X, y), sync)
    res["velpic_fit_s"] = t
    res["velpic_score_train_s"], _ = timed(lambda: vel.predict(X), sync)
    res["velpic_score_test_s"], res["velpic_pred"] = timed(lambda: vel.predict(Xt), sync)
    res["ks"] = masc.n_components_.tolist()
    if device == "cuda":
        res["cuda_max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return res


def run_shape(name, K, n, d, n_test, args, routes, peak):
    scale = args.scale
    n_s, d_s, t_s = max(2, round(n * scale)), max(8, round(d * scale)), max(K, round(n_test * scale))
    print(f"\n=== {name}: {K} classes x {n_s} samples x {d_s} dims (scale {scale:g} of {K} x {n} x {d}); "
          f"test {t_s} rows; float32; {'Gram n_c x n_c' if n_s < d_s else 'd x d'} route ===", flush=True)
    t0 = time.perf_counter()
    X, y, Xt, _ = synthetic_activations(K, n_s, d_s, seed=args.seed, n_test=t_s)
    print(f"(synthetic data: {X.nbytes / 2**30:.2f} GiB train + {Xt.nbytes / 2**30:.2f} GiB test, "
          f"made in {time.perf_counter() - t0:.1f} s)", flush=True)
    counts = np.bincount(y)
    results = []
    for route in routes:
        res = run_route(route, X, y, Xt, args.variance)
        results.append(res)
        print(f"  {route:14s} MASC fit {res['masc_fit_s']:8.2f} s, score train+test "
              f"{res['masc_score_train_s'] + res['masc_score_test_s']:7.2f} s | "
              f"VeLPIC fit {res['velpic_fit_s']:8.2f} s, "
              f"score {res['velpic_score_train_s'] + res['velpic_score_test_s']:6.2f} s"
              + (f" | upload {res['upload_s']:.2f} s" if "upload_s" in res else ""), flush=True)
    ks = results[0]["ks"]
    n_score = X.shape[0] + Xt.shape[0]
    print(f"MASC components per class (variance {args.variance}): min {min(ks)}, median "
          f"{int(np.median(ks))}, max {max(ks)}, total {sum(ks)}")

    # the authors' approach: one class, extrapolated
    authors = None
    if not args.no_authors:
        Xc = X[y == 0]
        cov_s, eig_s, d_a = authors_one_class(Xc, args.authors_dim)
        f_cov, f_eig = (d_s / d_a) ** 2, (d_s / d_a) ** 3
        per_class = cov_s * f_cov + eig_s * f_eig
        authors = {"one_class_cov_s": cov_s, "one_class_eigh_s": eig_s, "timed_dim": d_a,
                   "extrapolated_fit_s": per_class * K}
        how = (f"timed on one class at d={d_a}" + (f", extrapolated to d={d_s} (cov x{f_cov:.0f}, eigh "
                                                     f"x{f_eig:.0f})" if d_a != d_s else "")
               + f", then x {K} classes")
        print(f"authors' per-class d x d approach (numpy, CPU): covariance {cov_s:.2f} s + eigh "
              f"{eig_s:.2f} s {how}: {per_class * K:.1f} s to fit one layer (EXTRAPOLATED; serves both probes)")
        authors["how"] = how

    # table
    masc_ff = masc_fit_flops(counts, d_s, ks)
    hdr = (f"{'route':14s} {'step':18s} {'seconds':>9s} {'GFLOP':>10s} {'GFLOP/s':>9s} {'% peak':>7s} "
           f"{'vs authors':>11s} {'agree':>7s}")
    print(hdr)
    print("-" * len(hdr))
    ref = results[0]
    for res in results:
        dev = "cuda" if res["route"].startswith("cuda") else "cpu"
        steps = [
            ("MASC fit", res["masc_fit_s"], masc_ff, "float64"),
            ("MASC score", res["masc_score_train_s"] + res["masc_score_test_s"], 2.0 * n_score * d_s * sum(ks),
             "float32"),
            ("VeLPIC fit", res["velpic_fit_s"], velpic_fit_flops(counts, d_s, res["route"] != "numpy"), "float64"),
            ("VeLPIC score", res["velpic_score_train_s"] + res["velpic_score_test_s"], 2.0 * n_score * d_s * K,
             "float32"),
        ]
        fit_total = res["masc_fit_s"] + res["masc_score_train_s"] + res["masc_score_test_s"]
        for step, secs, flops, kind in steps:
            rate = flops / secs
            pct = 100 * rate / peak[dev][kind]
            vs = ""
            if authors and step == "MASC fit":
                vs = f"{authors['extrapolated_fit_s'] / secs:10.0f}x"
            agree = ""
            if step.endswith("score") and res is not ref:
                key = "masc_pred" if step.startswith("MASC") else "velpic_pred"
                agree = f"{np.mean(res[key] == ref[key]):7.4f}"
            print(f"{res['route']:14s} {step:18s} {secs:9.3f} {flops / 1e9:10.1f} {rate / 1e9:9.1f} "
                  f"{pct:6.1f}% {vs:>11s} {agree:>7s}")
        res["masc_fit_and_score_s"] = fit_total
        if authors:
            res["masc_fit_and_score_vs_authors_fit"] = authors["extrapolated_fit_s"] / fit_total
        if "cuda_max_memory_gib" in res:
            print(f"{'':14s} peak CUDA memory {res['cuda_max_memory_gib']:.2f} GiB")
    if authors:
        for res in results:
            print(f"{res['route']:14s} MASC fit + score (train+test) {res['masc_fit_and_score_s']:.2f} s = "
                  f"{res['masc_fit_and_score_vs_authors_fit']:.0f}x faster than the authors' fit alone (extrapolated)")
    print("(% peak: of the measured float64 matmul peak for fits, float32 for scoring, on the route's "
          f"device; agree: fraction of identical test predictions with the {ref['route']} route)", flush=True)
    for res in results:  # agreement with the first route, then drop the predictions
        for key in ("masc", "velpic"):
            res[f"{key}_agreement"] = float(np.mean(res[f"{key}_pred"] == ref[f"{key}_pred"]))
    for res in results:
        res.pop("masc_pred")
        res.pop("velpic_pred")
    return {"shape": name, "K": K, "n": n_s, "d": d_s, "n_test": t_s, "scale": scale, "routes": results,
            "authors": authors}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1,
                        help="fraction of samples per class and dims (classes kept; default 0.1)")
    parser.add_argument("--full", action="store_true", help="the papers' shapes (--scale 1)")
    parser.add_argument("--routes", default=None,
                        help=f"comma-separated subset of {','.join(ROUTES)} (default: all available)")
    parser.add_argument("--shapes", default="cifar10,tiny_imagenet", help="comma-separated: cifar10, tiny_imagenet")
    parser.add_argument("--variance", type=float, default=0.99)
    parser.add_argument("--authors-dim", type=int, default=None,
                        help="time the authors' class at this many dims and extrapolate (default: the full d)")
    parser.add_argument("--no-authors", action="store_true", help="skip the authors' approach")
    parser.add_argument("--peak-size", type=int, default=None,
                        help="CPU peak matmul size (default 4096, 2048 if scaled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.full:
        args.scale = 1.0

    import torch

    available = ["numpy", "torch-cpu"] + (["cuda", "cuda-resident"] if torch.cuda.is_available() else [])
    routes = available if args.routes is None else [r.strip() for r in args.routes.split(",")]
    unknown = [r for r in routes if r not in ROUTES]
    if unknown:
        parser.error(f"unknown routes {unknown}; choose from {list(ROUTES)}")
    if any(r.startswith("cuda") for r in routes) and not torch.cuda.is_available():
        parser.error("a cuda route was asked for but torch.cuda.is_available() is False")
    print("bench_probes_device: MASC / VeLPIC fit + score, numpy vs torch CPU vs torch CUDA")
    print(hardware_header())
    peak = peaks(routes, args.peak_size or (4096 if args.scale >= 0.5 else 2048))
    out = {"args": vars(args), "peak_flops": peak, "cases": []}
    for name in args.shapes.split(","):
        K, n, d, n_test = SHAPES[name.strip()]
        out["cases"].append(run_shape(name.strip(), K, n, d, n_test, args, routes, peak))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
