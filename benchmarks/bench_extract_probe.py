"""Extraction and probing at real size, without the disk in between: the cost of one checkpoint.

For one model checkpoint: the batched forward pass (:func:`pipeline.core.runtime.forward`) over n
training and m test images, every requested layer kept on the device, then MASC (0.99) and VeLPIC
fitted on the training activations and scored on both splits on the same device
(``probes.device``). Prints the time of each part and the throughput, so the ``plan`` command's
per-checkpoint figures can be checked against a real run.

The inputs are synthetic CIFAR-shaped images (uint8, 3x32x32) with labels, because no real CIFAR
is available offline; the model is a randomly initialized ResNet-18 (the papers' layer shapes:
L0 and L1 are 16,384-dim on 32x32 inputs). Times do not depend on the pixel values.

    python benchmarks/bench_extract_probe.py                       # small, CPU (seconds)
    python benchmarks/bench_extract_probe.py --n 50000 --m 10000 --device cuda --layers L0 L1 avg_pool

Measured (see docs/probes.md, "Probes on a device"): on one H100, ResNet-18 L0+L1 (16,384 dims
each) + avg_pool at n = 50,000, m = 10,000 -- the figures this script printed there.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pipeline.core.device import resolve_device
from pipeline.core.models import build_model
from pipeline.core.runtime import InputTransform, forward
from pipeline.probes import MASC, VeLPIC


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--n", type=int, default=2000, help="training images")
    p.add_argument("--m", type=int, default=500, help="test images")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--layers", nargs="+", default=["L0", "avg_pool"])
    p.add_argument("--device", default="auto", help="auto (CUDA if visible, else CPU), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    device = resolve_device(args.device, key="--device")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, size=(args.n + args.m, 3, 32, 32), dtype=np.uint8))
    y = rng.integers(0, args.classes, size=args.n + args.m)
    x = x.to(device)
    torch.manual_seed(0)
    model = build_model(args.model, in_channels=3, image_size=32, num_classes=args.classes).to(device).eval()
    transform = InputTransform("unit")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    figures: dict = {"model": args.model, "n": args.n, "m": args.m, "device": str(device),
                     "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    t0 = time.perf_counter()
    acts: dict[str, list] = {layer: [] for layer in args.layers}
    for _, _, _, batch in forward(model, x, transform, layers=args.layers, batch_size=args.batch_size,
                                  device=device):
        for layer in args.layers:
            acts[layer].append(batch[layer].float())
    layers = {layer: torch.cat(parts) for layer, parts in acts.items()}
    sync()
    figures["forward_s"] = time.perf_counter() - t0
    figures["images_per_s"] = (args.n + args.m) / figures["forward_s"]
    probe_device = str(device)
    for layer, X in layers.items():
        X_train, X_test = X[:args.n], X[args.n:]
        row = {"dim": int(X.shape[1])}
        for name, probe in (("masc", MASC(0.99, device=probe_device)), ("velpic", VeLPIC(device=probe_device))):
            t = time.perf_counter()
            probe.fit(X_train, y[:args.n])
            sync()
            row[f"{name}_fit_s"] = time.perf_counter() - t
            t = time.perf_counter()
            acc = float((probe.predict(X_test) == y[args.n:]).mean()) if args.m else float("nan")
            probe.predict(X_train)
            sync()
            row[f"{name}_score_s"] = time.perf_counter() - t
            row[f"{name}_test_acc"] = acc
        figures[layer] = row
        print(f"{layer:>9} d={row['dim']:>6}: MASC fit {row['masc_fit_s']:.2f} s, score {row['masc_score_s']:.2f} s; "
              f"VeLPIC fit {row['velpic_fit_s']:.2f} s, score {row['velpic_score_s']:.2f} s", flush=True)
    figures["total_s"] = time.perf_counter() - t0
    print(f"{args.model} on {figures['gpu'] or 'CPU'}: forward of {args.n + args.m:,} images to "
          f"{args.layers} in {figures['forward_s']:.2f} s ({figures['images_per_s']:,.0f} images/s); "
          f"checkpoint total {figures['total_s']:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=1)
    return figures


if __name__ == "__main__":
    main()
