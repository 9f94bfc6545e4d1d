"""Calibrate the cost model of ``python -m pipeline plan`` on this machine (issue 11).

Times, on the current machine and device, the units the plan's cost model multiplies
(:mod:`pipeline.costs`): a forward pass and a training epoch of a CNN (seconds per forward
multiply-accumulate, per sample), writing and reading an HDF5 activation file (seconds per byte),
float64 Gram/second-moment products and ``eigh`` (the MASC/VeLPIC fit), float32 scoring products,
and the start-up of a job (``python -c "import pipeline.probes, torch"``). Then it checks the fitted
constants against real MASC + VeLPIC fits and scores at a few sizes (predicted vs measured) and
writes (or replaces) the entry for this device in the calibration file:

    python benchmarks/calibrate_costs.py                         # CPU entry, into src/pipeline/cost_calibration.json
    python benchmarks/calibrate_costs.py --device cuda --scale 4 # on a GPU machine: the cuda entry
    python benchmarks/calibrate_costs.py --out my.json --threads 2

``--scale`` multiplies the problem sizes (the default sizes take ~30 s on two CPU cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _best(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def calibrate(device: str = "cpu", scale: float = 1.0, threads: int | None = None) -> dict:
    import torch

    from pipeline.core.models import build_model
    from pipeline.costs import probe_flops, seconds
    from pipeline.plan import forward_macs
    from pipeline.probes import MASC, VeLPIC, fit_spectral

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    c: dict = {}
    # forward and training: the papers' CNN on CIFAR-shaped inputs
    n = int(2048 * scale)
    macs = forward_macs("cnn", 3, 32, 10)
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=3, image_size=32, num_classes=10).to(dev)
    x = torch.randn(n, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (n,), device=dev)

    def fwd():
        with torch.no_grad():
            model.eval()
            for i in range(0, n, 512):
                model(x[i:i + 512])
        sync()

    fwd()
    c["forward_s_per_mac"] = _best(fwd) / (n * macs)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def epoch():
        model.train()
        for i in range(0, n, 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
        sync()

    epoch()
    c["train_s_per_mac"] = _best(epoch, 2) / (n * macs)

    # activation file: write and read back (float32, one layer)
    import h5py

    rows, d = int(4096 * scale), 2048
    data = np.random.default_rng(0).random((rows, d), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.h5"

        def io():
            with h5py.File(path, "w") as h5:
                h5.create_dataset("x", data=data, chunks=(8, d))
            with h5py.File(path, "r") as h5:
                h5["x"][()]

        c["io_s_per_byte"] = _best(io) / (2 * data.nbytes)

    # float64 products and eigh (the fits), float32 products (scoring)
    rng = np.random.default_rng(1)
    m, dd = int(1000 * scale ** 0.5), int(2000 * scale ** 0.5)
    X64 = torch.from_numpy(rng.standard_normal((m, dd))).to(dev)
    t = _best(lambda: (X64 @ X64.T, sync()))
    c["gemm64_s_per_flop"] = t / (2.0 * m * m * dd)
    G = (X64 @ X64.T).cpu().numpy()
    if dev.type == "cuda":
        Gt = torch.from_numpy(G).to(dev)
        t = _best(lambda: (torch.linalg.eigh(Gt), sync()))
    else:
        t = _best(lambda: np.linalg.eigh(G))
    c["eigh_s_per_n3"] = t / float(m) ** 3
    A = torch.from_numpy(rng.standard_normal((int(4096 * scale), 1024)).astype(np.float32)).to(dev)
    B = torch.from_numpy(rng.standard_normal((1024, 640)).astype(np.float32)).to(dev)
    torch.backends.cuda.matmul.allow_tf32 = False
    t = _best(lambda: (A @ B, sync()))
    c["score32_s_per_flop"] = t / (2.0 * A.shape[0] * 1024 * 640)

    # start-up of one job
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pipeline.probes, torch, h5py, pandas"], check=True, env=env)
    c["job_overhead_s"] = time.perf_counter() - t0

    # MASC + VeLPIC fitted and scored at a few sizes: what the primitives do not explain (per-class
    # work, Python, chunking) is fitted as per class (probe_class_s) and per class x d^2
    # (probe_class_d2_s) by non-negative least squares; the checks print predicted vs measured
    from scipy.optimize import nnls

    route = None if dev.type == "cpu" else device
    sizes = [(10, int(200 * scale), 512), (10, int(100 * scale), 1024), (20, int(60 * scale), 256),
             (10, int(50 * scale), 128), (5, int(300 * scale), 768), (20, int(40 * scale), 64)]
    c.update(probe_class_s=0.0, probe_class_d2_s=0.0)
    measured, works = [], []
    for K, n_c, dim in sizes:
        Xtr = np.abs(rng.standard_normal((K * n_c, dim))).astype(np.float32)
        ytr = np.repeat(np.arange(K), n_c)
        Xte = Xtr[: n_c * 2]
        t0 = time.perf_counter()
        # as the fit stage does: one shared eigendecomposition per class, then each scored
        for probe in fit_spectral([MASC(variance=0.99, device=route), VeLPIC(device=route)], Xtr, ytr):
            probe.predict(Xtr)
            probe.predict(Xte)
        sync()
        measured.append(time.perf_counter() - t0)
        works.append(probe_flops({"x": dim}, [{"name": "masc"}, {"name": "velpic"}], n_train=K * n_c,
                                 n_test=len(Xte), num_classes=K, sources=1))
    base = np.array([seconds(c, work=w, jobs_overhead=0) for w in works])
    A = np.array([[w["classes"], w["class_d2"]] for w in works])
    coef, _ = nnls(A, np.maximum(np.array(measured) - base, 0.0))
    c["probe_class_s"], c["probe_class_d2_s"] = float(coef[0]), float(coef[1])
    checks = [{"classes": K, "n_per_class": n_c, "dim": dim, "measured_s": round(t, 4),
               "predicted_s": round(seconds(c, work=w, jobs_overhead=0), 4)}
              for (K, n_c, dim), t, w in zip(sizes, measured, works, strict=True)]
    return {"constants": c, "checks": checks}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=None, help="torch/BLAS threads (default: torch's)")
    p.add_argument("--name", help="entry name (default: <device>-<host>)")
    p.add_argument("--out", default=str(REPO / "src" / "pipeline" / "cost_calibration.json"))
    args = p.parse_args(argv)
    import torch

    result = calibrate(args.device, args.scale, args.threads)
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    cpu_model = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name")), cpu_model)
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    entry = {
        "name": args.name or f"{kind}-{platform.node()}",
        "device": kind,
        "provenance": {"machine": gpu or cpu_model, "host": platform.node(), "cpus": os.cpu_count(),
                       "threads": torch.get_num_threads(),
                       "date": datetime.date.today().isoformat(),
                       "script": "benchmarks/calibrate_costs.py " + " ".join(argv or sys.argv[1:]),
                       "torch": torch.__version__, "numpy": np.__version__,
                       "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "constants": {k: float(f"{v:.4g}") for k, v in result["constants"].items()},
        "checks": result["checks"],
    }
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"entries": []}
    data["entries"] = [e for e in data["entries"] if e["device"] != kind] + [entry]
    data["entries"].sort(key=lambda e: e["device"])
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(entry, indent=1))
    return entry


if __name__ == "__main__":
    main()
