"""The papers' CNN on the full real Fashion-MNIST (60,000 / 10,000) at one corruption degree, on a GPU.

Trains with the pipeline's own training loop (:func:`pipeline.train.train_run`, checkpoints on the
schedule), then at the listed epochs runs the forward pass to every CNN probe layer on the device
and fits and scores MASC (0.99) and VeLPIC there (the fused path: no activation file). Prints the
training curve and, per epoch, the model's and the best layer's test accuracy.

    python benchmarks/gpu_fashion_mnist.py --root data/fashion-mnist --corruption 0.8 --epochs 60 --out $OUT

The four IDX files (``*.gz``) are read in place from ``--root`` (Debian's
``/usr/share/datasets/fashion-mnist`` on a machine with ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Run, validate_config
from pipeline.data import make_run_labels
from pipeline.probes import MASC, VeLPIC
from pipeline.runtime import RunRuntime, forward
from pipeline.train import train_run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--corruption", type=float, default=0.8)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=2e-4, help="the authors' Adam lr (2e-4)")
    p.add_argument("--probe-epochs", type=int, nargs="*", default=None,
                   help="checkpoints to probe (default: 0, the best test epoch's nearest checkpoint, last)")
    p.add_argument("--train-subset", type=int, default=None, help="a stratified subset (smoke tests)")
    p.add_argument("--out", default="results/gpu_fashion_mnist")
    args = p.parse_args(argv)

    config = validate_config({
        "datasets": ["fashion_mnist"], "models": ["cnn"], "corruptions": [args.corruption],
        "data": {"root": args.root, "train_subset": args.train_subset, "test_subset": args.train_subset},
        "train": {"max_epochs": args.epochs, "target_train_accuracy": 1.0, "device": "auto",
                  "num_threads": None, "checkpoints": {"early_every": 2, "early_until": 20, "late_every": 5},
                  "overrides": {"cnn": {"optimizer": "adam", "lr": args.lr, "batch_size": 128}}}})
    run = Run("fashion_mnist", "cnn", args.corruption, 0)
    out = Path(args.out) / f"c{run.corruption_str}"
    rt = RunRuntime(config, run, run_dir=out)
    rt.__dict__["labels"] = make_run_labels(rt.arrays, dataset=run.dataset, corruption=run.corruption, seed=0)
    t0 = time.perf_counter()
    result = train_run(rt, progress=False)
    train_s = time.perf_counter() - t0
    log = result.log
    best_epoch = int(log.epoch[log.test_acc.idxmax()])
    saved = result.epochs
    epochs = args.probe_epochs or sorted({0, min(saved, key=lambda e: abs(e - best_epoch)), saved[-1]})

    rows = []
    for epoch in epochs:
        model = rt.model_at(epoch)
        t = time.perf_counter()
        layers = list(model.probe_layers)
        parts = {split: {layer: [] for layer in layers} for split in ("train", "test")}
        for split in ("train", "test"):
            for _, _, _, acts in forward(model, rt.split(split), rt.transform, layers=layers, batch_size=1000):
                for layer in layers:
                    parts[split][layer].append(acts[layer].float())
        row = {"epoch": epoch, "model_test_acc": float(log.loc[log.epoch == epoch, "test_acc"].item())}
        device = str(rt.device) if rt.device.type == "cuda" else None
        for layer in layers:
            X_train, X_test = torch.cat(parts["train"][layer]), torch.cat(parts["test"][layer])
            for name, probe in (("masc", MASC(0.99, device=device)), ("velpic", VeLPIC(device=device))):
                X_fit = X_train if device else X_train.cpu().numpy()
                probe.fit(X_fit, rt.labels.corrupted)
                pred = probe.predict(X_test if device else X_test.cpu().numpy())
                row[f"{name}_{layer}"] = float((pred == rt.labels.test).mean())
        row["probe_s"] = time.perf_counter() - t
        row["best_masc"] = max(v for k, v in row.items() if k.startswith("masc_"))
        row["best_velpic"] = max(v for k, v in row.items() if k.startswith("velpic_"))
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    summary = {"corruption": args.corruption, "epochs": int(log.epoch.iloc[-1]), "lr": args.lr,
               "device": str(rt.device), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "train_s": train_s, "peak_test_acc": float(log.test_acc.max()), "peak_epoch": best_epoch,
               "final_test_acc": float(log.test_acc.iloc[-1]),
               "final_train_acc_corrupted": float(log.train_acc_corrupted.iloc[-1]),
               "curve": log[["epoch", "train_acc_corrupted", "train_acc_true", "test_acc"]].round(4).to_dict("list"),
               "probes": rows}
    print(json.dumps({k: v for k, v in summary.items() if k not in ("curve", "probes")}), flush=True)
    (Path(args.out) / f"summary_c{run.corruption_str}.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
