#!/usr/bin/env python
"""Benchmark MASC and VeLPIC: the authors' straightforward approach vs ``pipeline.probes``.

(a) "authors" -- what the published code does: per class, the d x d covariance of the
    negative-augmented data ``[X_c; -X_c]`` in float64 and its full eigendecomposition
    (``np.linalg.eigh``), then the 99 % energy cut (MASC) or the top eigenvector (VeLPIC); scoring
    loops over the classes (one projection and one angle per class).  One eigendecomposition per
    class serves both probes, so (a)'s fit time is the same for MASC and VeLPIC.
(b) "ours" -- ``pipeline.probes.MASC`` / ``VeLPIC``: the n_c x n_c Gram problem when n_c < d,
    float64 eigensolver, one matrix product against the stacked bases for scoring.

Prints fit time, scoring time, their ratios (a)/(b) and the prediction agreement for
(10 classes x 2,000 samples x 2,048 dims) and (10 classes x 500 samples x 8,192 dims); ``--quick``
uses small sizes.  If a CUDA device is present (or ``--torch-device cpu`` is given) the same
algorithm is also timed with torch (float64 eigensolver, float32 scoring).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_probes.py [--quick]

The 8192 x 8192 float64 eigendecompositions of (a) take minutes on a few cores: run the full
benchmark in the background, e.g. ``nohup ... > /tmp/bench_probes.txt &``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from pipeline.probes import MASC, VeLPIC  # noqa: E402

FULL_CASES = [(10, 2000, 2048), (10, 500, 8192)]
QUICK_CASES = [(10, 300, 512), (10, 100, 2048)]


# ----------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------
def hardware_header() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count()
    lines = [f"CPU: {cpu}; logical cores: {os.cpu_count()} (usable by this process: {usable})",
             f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}; numpy {np.__version__}"]
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i['internal_api']} ({i['num_threads']} threads)" for i in threadpool_info()
                if i.get("user_api") == "blas"]
        lines.append(f"numpy BLAS: {', '.join(blas) or 'unknown'}")
    except ImportError:
        pass
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}")
    else:
        lines.append("GPU: none (torch.cuda.is_available() is False)")
    try:
        lines.append(f"load average: {os.getloadavg()}")
    except OSError:
        pass
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# synthetic activations
# ----------------------------------------------------------------------------------------------
def synthetic_activations(K: int, n: int, d: int, seed: int = 0, n_test: int = 2000):
    """Post-ReLU-like activations: shared low-rank factors + class factors + noise, rectified.

    Returns training data (K*n x d), labels, and ``n_test`` test rows drawn the same way.
    """
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((32, d), dtype=np.float32) / np.float32(np.sqrt(32))
    own = [rng.standard_normal((16, d), dtype=np.float32) / np.float32(4.0) for _ in range(K)]

    def draw(counts):
        parts, labels = [], []
        for c, m in enumerate(counts):
            Z = rng.standard_normal((m, 32), dtype=np.float32) @ shared
            Z += 1.5 * (rng.standard_normal((m, 16), dtype=np.float32) @ own[c])
            Z += 0.5 * rng.standard_normal((m, d), dtype=np.float32)
            parts.append(np.maximum(Z, 0.0, out=Z))
            labels.append(np.full(m, c))
        return np.concatenate(parts).astype(np.float32, copy=False), np.concatenate(labels)

    X, y = draw([n] * K)
    Xt, yt = draw(np.bincount(np.arange(n_test) % K, minlength=K))
    return X, y, Xt, yt


# ----------------------------------------------------------------------------------------------
# (a) the authors' straightforward approach
# ----------------------------------------------------------------------------------------------
def authors_fit(X, y, variance=0.99):
    """Per class: d x d covariance of [X_c; -X_c] (float64), full eigh, energy cut, top vector."""
    classes = np.unique(y)
    bases, vectors = [], []
    for c in classes:
        Xc = X[y == c].astype(np.float64)
        A = np.vstack([Xc, -Xc])
        A -= A.mean(axis=0)  # PCA centring (a no-op up to rounding: the augmented mean is 0)
        C = A.T @ A / (A.shape[0] - 1)
        lam, V = np.linalg.eigh(C)
        lam, V = lam[::-1], V[:, ::-1]
        ratio = np.cumsum(lam) / lam.sum()
        k = int(np.searchsorted(ratio, variance, side="left")) + 1
        bases.append(np.ascontiguousarray(V[:, :k]))
        v = V[:, 0].copy()
        if Xc.mean(axis=0) @ v < 0:  # VeLPIC sign: class's own mean (the papers' rule)
            v = -v
        vectors.append(v)
    return classes, bases, np.array(vectors)


def authors_masc_predict(classes, bases, X):
    X = X.astype(np.float64)
    xnorm = np.linalg.norm(X, axis=1)
    angles = np.empty((X.shape[0], len(bases)))
    for c, B in enumerate(bases):  # one class at a time
        proj = X @ B
        angles[:, c] = np.arccos(np.clip(np.linalg.norm(proj, axis=1) / xnorm, -1.0, 1.0))
    return classes[np.argmin(angles, axis=1)]


def authors_velpic_predict(classes, vectors, X):
    X = X.astype(np.float64)
    scores = np.empty((X.shape[0], len(vectors)))
    for c, v in enumerate(vectors):
        scores[:, c] = X @ v
    return classes[np.argmax(scores, axis=1)]


# ----------------------------------------------------------------------------------------------
# (b') ours, with torch (optional GPU path)
# ----------------------------------------------------------------------------------------------
def torch_masc_fit(X, y, variance, device):
    """Same algorithm as pipeline.probes.MASC in torch: float64 Gram/eigh, float32 stacked bases."""
    import torch

    Xd = torch.from_numpy(X).to(device)
    yd = torch.from_numpy(y).to(device)
    classes = torch.unique(yd)
    eps = torch.finfo(torch.float64).eps
    bases, owner = [], []
    for i, c in enumerate(classes):
        Xc = Xd[yd == c].double()
        n, d = Xc.shape
        gram = n < d
        lam, W = torch.linalg.eigh(Xc @ Xc.T if gram else Xc.T @ Xc)
        lam, W = lam.flip(0), W.flip(1)
        r = int((lam > lam[0] * max(n, d) * eps).sum())
        lam, W = lam[:r], W[:, :r]
        cum = torch.cumsum(lam, 0) / lam.sum()
        k = min(int(torch.searchsorted(cum, torch.tensor([variance], dtype=cum.dtype, device=device))) + 1, r)
        B = (Xc.T @ W[:, :k]) / lam[:k].sqrt() if gram else W[:, :k]
        bases.append(B.float())
        owner.append(torch.full((k,), i, device=device))
    return classes, torch.cat(bases, 1), torch.cat(owner)


def torch_masc_predict(classes, B, owner, X, device):
    import torch

    Xd = torch.from_numpy(X).to(device)
    P = (Xd @ B).square_()
    S = torch.zeros(Xd.shape[0], classes.numel(), device=device).index_add_(1, owner, P)
    S /= (Xd * Xd).sum(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return classes[S.argmax(1)].cpu().numpy()


def torch_velpic_fit(X, y, device):
    import torch

    Xd = torch.from_numpy(X).to(device)
    yd = torch.from_numpy(y).to(device)
    classes = torch.unique(yd)
    V = []
    for c in classes:
        Xc = Xd[yd == c].double()
        gram = Xc.shape[0] < Xc.shape[1]
        _, W = torch.linalg.eigh(Xc @ Xc.T if gram else Xc.T @ Xc)
        v = Xc.T @ W[:, -1] if gram else W[:, -1]
        v = v / v.norm()
        if Xc.mean(0) @ v < 0:
            v = -v
        V.append(v.float())
    return classes, torch.stack(V)


def torch_velpic_predict(classes, V, X, device):
    import torch

    return classes[(torch.from_numpy(X).to(device) @ V.T).argmax(1)].cpu().numpy()


# ----------------------------------------------------------------------------------------------
def timed(fn, *args, repeat=1, sync=None):
    """Best wall time over ``repeat`` runs and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn(*args)
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_case(K, n, d, args, torch_device):
    X, y, Xt, _ = synthetic_activations(K, n, d, seed=args.seed, n_test=args.n_test)
    print(f"\n=== {K} classes x {n} samples x {d} dims  (train {X.shape}, test {Xt.shape}, float32; "
          f"{'Gram n_c x n_c' if n < d else 'd x d'} route for ours) ===", flush=True)

    t_a_fit, (classes, a_bases, a_vectors) = timed(authors_fit, X, y, args.variance)
    t_a_masc, a_masc_pred = timed(authors_masc_predict, classes, a_bases, Xt, repeat=args.repeat)
    t_a_vel, a_vel_pred = timed(authors_velpic_predict, classes, a_vectors, Xt, repeat=args.repeat)

    t_b_masc_fit, masc = timed(lambda: MASC(variance=args.variance).fit(X, y), repeat=args.repeat)
    t_b_masc, b_masc_pred = timed(masc.predict, Xt, repeat=args.repeat)
    t_mm, _ = timed(lambda: Xt @ masc.stacked_bases_, repeat=args.repeat)
    t_b_vel_fit, vel = timed(lambda: VeLPIC(sign="class_mean").fit(X, y), repeat=args.repeat)
    t_b_vel, b_vel_pred = timed(vel.predict, Xt, repeat=args.repeat)

    k_a = np.array([B.shape[1] for B in a_bases])
    print(f"MASC components per class (variance={args.variance}): authors {k_a.tolist()}, "
          f"ours {masc.n_components_.tolist()}")
    cos_v = np.abs(np.sum(a_vectors * vel.class_vectors_, axis=1))
    print(f"VeLPIC |cos(authors v_c, ours v_c)| min = {cos_v.min():.8f}")
    hdr = f"{'probe':7s} {'method':24s} {'fit s':>9s} {'score s':>9s} {'fit x':>8s} {'score x':>8s} {'agree':>8s}"
    print(hdr)
    print("-" * len(hdr))
    rows = [
        ("MASC", "(a) authors, d x d eigh", t_a_fit, t_a_masc, None, None, None),
        ("MASC", "(b) ours", t_b_masc_fit, t_b_masc, t_a_fit / t_b_masc_fit, t_a_masc / t_b_masc,
         np.mean(a_masc_pred == b_masc_pred)),
        ("VeLPIC", "(a) authors, d x d eigh", t_a_fit, t_a_vel, None, None, None),
        ("VeLPIC", "(b) ours", t_b_vel_fit, t_b_vel, t_a_fit / t_b_vel_fit, t_a_vel / t_b_vel,
         np.mean(a_vel_pred == b_vel_pred)),
    ]
    if torch_device is not None:
        import torch

        sync = torch.cuda.synchronize if torch_device.startswith("cuda") else None
        masc_fit_t = lambda: torch_masc_fit(X, y, args.variance, torch_device)  # noqa: E731
        masc_fit_t()  # warm-up (CUDA context, cuSOLVER handles)
        t_g_fit, (gcl, gB, gown) = timed(masc_fit_t, repeat=args.repeat, sync=sync)
        t_g_score, g_pred = timed(torch_masc_predict, gcl, gB, gown, Xt, torch_device, repeat=args.repeat,
                                  sync=sync)
        t_gv_fit, (gvcl, gV) = timed(torch_velpic_fit, X, y, torch_device, repeat=args.repeat, sync=sync)
        t_gv_score, gv_pred = timed(torch_velpic_predict, gvcl, gV, Xt, torch_device, repeat=args.repeat,
                                    sync=sync)
        rows.insert(2, ("MASC", f"(b') ours, torch {torch_device}", t_g_fit, t_g_score, t_a_fit / t_g_fit,
                        t_a_masc / t_g_score, np.mean(a_masc_pred == g_pred)))
        rows.append(("VeLPIC", f"(b') ours, torch {torch_device}", t_gv_fit, t_gv_score, t_a_fit / t_gv_fit,
                     t_a_vel / t_gv_score, np.mean(a_vel_pred == gv_pred)))
    for probe, method, fit_s, score_s, fx, sx, agree in rows:
        f = lambda v, fmt: format(v, fmt) if v is not None else "-"  # noqa: E731
        print(f"{probe:7s} {method:24s} {fit_s:9.3f} {score_s:9.4f} {f(fx, '8.1f'):>8s} {f(sx, '8.1f'):>8s} "
              f"{f(agree, '8.4f'):>8s}")
    print(f"(scoring includes input checks; one bare matmul X_test @ stacked MASC bases "
          f"({Xt.shape[1]} x {masc.stacked_bases_.shape[1]}): {t_mm:.4f} s)")
    print("(a)'s fit time is one d x d covariance + eigh per class, shared by both probes; "
          "fit x / score x = (a) time / ours; agree = fraction of identical test predictions")
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--n-test", type=int, default=2000, help="test rows to score (default 2000)")
    parser.add_argument("--variance", type=float, default=0.99, help="MASC energy fraction (default 0.99)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repeats for ours and for scoring, best time reported (default 3; (a)'s fit runs once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-device", default=None,
                        help="also time the torch path on this device (default: 'cuda' if available)")
    args = parser.parse_args(argv)

    from pipeline.probes.accel import probe_device

    torch_device = args.torch_device or probe_device("auto")  # "cuda" if visible, else None
    print("bench_probes: MASC / VeLPIC, (a) authors' approach vs (b) pipeline.probes")
    print(hardware_header())
    for K, n, d in (QUICK_CASES if args.quick else FULL_CASES):
        run_case(K, n, d, args, torch_device)


if __name__ == "__main__":
    main()
