#!/usr/bin/env python
"""The optimizer step of the image models' training, torch's per-tensor loop (before
``train.fused_optimizer``) against its fused kernel (the default since 2026-12-07), side by side.

For each model of ``--models`` (the digits MLP of the default, 5.3 M parameters, by default), on
``--threads`` CPU threads: milliseconds per optimizer step (``--steps`` steps after a warm-up) and
per training epoch on scikit-learn's digits (1,257 images, batch 32, the default's Adam at 1e-3),
with ``make_optimizer`` exactly as the Trainer calls it, and the largest difference of the weights
after that epoch (float rounding only: the update is the same arithmetic).

Measured 2026-12-07 on the 2-core AMD EPYC CPU of the development machine, one thread: Adam step
37 ms per-tensor, 3.5 ms fused; one digits epoch 2.4 s -> 1.0 s, weights equal to 6e-6 after it
(this script); in the whole training loop, with its evaluation and checkpoints (the default's 80 % run:
41 epochs in 126 s before, 33 epochs in 60 s after; the epoch count differs because float
rounding changes the trajectory of a memorizing network).

    .venv/bin/python benchmarks/bench_optimizer.py [--models mlp] [--threads 1] [--steps 50]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def step_ms(model: nn.Module, hp: dict, steps: int) -> float:
    from pipeline.core.training import make_optimizer

    opt = make_optimizer(model, hp)
    x = torch.randn(32, *INPUT_SHAPE)
    nn.functional.cross_entropy(model(x), torch.randint(0, 10, (32,))).backward()
    for _ in range(3):
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps * 1e3


def epoch_seconds(model: nn.Module, hp: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    from pipeline.core.training import make_optimizer

    opt = make_optimizer(model, hp)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for i in range(0, len(x), hp["batch_size"]):
        idx = perm[i:i + hp["batch_size"]]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return time.perf_counter() - start


INPUT_SHAPE = (1, 8, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sklearn.datasets import load_digits

    from pipeline.core.models import build_model

    digits = load_digits()
    x = torch.tensor(digits.images[:1257] / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target[:1257])
    print(f"torch {torch.__version__}, {args.threads} thread(s); digits {tuple(x.shape)}")
    print(f"{'model':<8} {'parameters':>10} {'implementation':<15} {'ms/step':>8} {'s/epoch':>8}")
    for name in args.models:
        weights = {}
        for fused in (False, True):
            hp = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 32, "fused": fused}
            torch.manual_seed(0)
            model = build_model(name, num_classes=10, in_channels=1, image_size=8)
            n = sum(p.numel() for p in model.parameters())
            ms = step_ms(model, hp, args.steps)
            torch.manual_seed(0)
            model = build_model(name, num_classes=10, in_channels=1, image_size=8)
            seconds = epoch_seconds(model, hp, x, y)
            weights[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
            label = "fused" if fused else "per-tensor"
            print(f"{name:<8} {n / 1e6:>9.2f}M {label:<15} {ms:>8.2f} {seconds:>8.2f}")
        print(f"{name:<8} largest weight difference after one epoch: "
              f"{(weights[True] - weights[False]).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
