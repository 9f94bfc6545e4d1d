"""The papers' CNN on the full real Fashion-MNIST (60,000 / 10,000) under label corruption.

For each corruption degree: trains with the pipeline's own training loop
(:func:`pipeline.images.train.train_run`, checkpoints on the papers' schedule), then at epoch 0, the
checkpoint nearest the test-accuracy peak and the last one runs the pipeline's fused stage
(:func:`pipeline.images.stages.probe_fused`: the forward pass to every CNN probe layer, MASC (variance
0.99) and VeLPIC fitted on the corrupted labels and scored on the run's device, no activation file;
the probe table in the tidy schema in ``c<degree>/probes.parquet``). Prints the training curve's summary and, per
probed epoch, the model's and every layer's test accuracy; writes ``summary_c<degree>.json`` per
degree and ``summary.json`` for all of them.

    # a GPU machine, all five degrees at once (one process each, sharing the GPU), 5 min of training:
    python benchmarks/fashion_mnist_full.py --root data/fashion-mnist --corruptions 0 0.2 0.4 0.6 0.8 \\
        --epochs 60 --lr 1e-3 --time-budget-s 300 --out $OUT/fashion_mnist
    # this CPU machine, one degree (43 s per epoch on 2 threads, 57 s on one):
    python benchmarks/fashion_mnist_full.py --corruptions 0.8 --epochs 40 --lr 1e-3

The four IDX files (``*.gz``) are read in place from ``--root`` (Debian's
``/usr/share/datasets/fashion-mnist`` on a machine with ``dataset-fashion-mnist``). The papers'
setting is Adam lr 2e-4, batch 32, up to 500 epochs; ``--lr 1e-3 --batch-size 128`` (the CI
subset's setting) shows the rise and fall in far fewer epochs. ``--time-budget-s`` ends training at
the first epoch boundary past the budget (recorded as ``stop_reason: deadline``), so the run fits a
machine's lease; the probes still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import validate_config
from pipeline.core.config import Run
from pipeline.core.labels import make_run_labels
from pipeline.core.runtime import RunRuntime
from pipeline.images.train import train_run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--corruptions", type=float, nargs="+", default=[0.8],
                   help="degrees; more than one runs one process per degree, in parallel")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=2e-4, help="Adam lr (the authors': 2e-4)")
    p.add_argument("--batch-size", type=int, default=128, help="the authors': 32")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="stop training at the first epoch boundary after this many seconds")
    p.add_argument("--probe-epochs", type=int, nargs="*", default=None,
                   help="checkpoints to probe (default: 0, the checkpoint nearest the test peak, the last)")
    p.add_argument("--train-subset", type=int, default=None, help="a stratified subset (smoke tests)")
    p.add_argument("--out", default="results/fashion_mnist_full")
    return p.parse_args(argv)


PROBE_SETTINGS = [{"name": "masc", "params": {"variance": 0.99}}, {"name": "velpic", "params": {"sign": "class_mean"}}]


def run_config(args: argparse.Namespace, corruption: float) -> dict:
    return validate_config({
        "datasets": ["fashion_mnist"], "models": ["cnn"], "corruptions": [corruption],
        "data": {"root": args.root, "train_subset": args.train_subset, "test_subset": args.train_subset},
        "train": {"max_epochs": args.epochs, "target_train_accuracy": 1.0, "device": "auto",
                  "num_threads": None, "checkpoints": {"early_every": 2, "early_until": 20, "late_every": 5},
                  "overrides": {"cnn": {"optimizer": "adam", "lr": args.lr, "batch_size": args.batch_size}}},
        "probes": {"settings": PROBE_SETTINGS, "fit_labels": ["corrupted"], "device": "auto"},
        "storage": {"fused": True}})


def run_one(args: argparse.Namespace, corruption: float) -> dict:
    """Train one degree, then the pipeline's fused stage (:func:`pipeline.images.stages.probe_fused`) at
    the probed epochs: its probe tables (the tidy schema) land in ``c<degree>/probes/``."""
    import pandas as pd

    from pipeline.core.labels import save_labels
    from pipeline.core.tables import MODEL_PROBE
    from pipeline.images.stages import probe_fused

    deadline = time.monotonic() + args.time_budget_s if args.time_budget_s else None
    config = run_config(args, corruption)
    run = Run("fashion_mnist", "cnn", corruption, 0)
    out = Path(args.out) / f"c{run.corruption_str}"
    arrays = RunRuntime(config, run).arrays  # the data set as the config selects it (subset, root)
    labels = make_run_labels(arrays, dataset=run.dataset, corruption=run.corruption, seed=run.seed)
    labels_path = out / "labels.npz"
    out.mkdir(parents=True, exist_ok=True)
    save_labels(labels, labels_path)
    rt = RunRuntime(config, run, run_dir=out, arrays=arrays, labels=labels)
    t0 = time.perf_counter()
    result = train_run(rt, progress=False, deadline=deadline)
    train_s = time.perf_counter() - t0
    log = result.log
    best_epoch = int(log.epoch[log.test_acc.idxmax()])
    saved = result.epochs
    epochs = args.probe_epochs or sorted({0, min(saved, key=lambda e: abs(e - best_epoch)), saved[-1]})

    rows, tables = [], []
    for epoch in epochs:
        t = time.perf_counter()
        table = out / "probes" / f"epoch_{epoch}.parquet"
        probe_fused(config, run, epoch, labels_path, rt.checkpoint(epoch),
                    out / "subspaces" / f"epoch_{epoch}.h5", table)
        df = pd.read_parquet(table)
        tables.append(df)
        test = df[(df.split == "test") & (df.probe != MODEL_PROBE)]
        row = {"epoch": epoch, "model_test_acc": float(log.loc[log.epoch == epoch, "test_acc"].item())}
        row.update({f"{r.probe}_{r.layer}": float(r.accuracy) for r in test.itertuples()})
        row["probe_s"] = time.perf_counter() - t
        row["best_masc"] = float(test[test.probe == "masc"].accuracy.max())
        row["best_velpic"] = float(test[test.probe == "velpic"].accuracy.max())
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    pd.concat(tables, ignore_index=True).to_parquet(out / "probes.parquet")

    summary = {"corruption": corruption, "epochs": int(log.epoch.iloc[-1]), "stop_reason": result.stop_reason,
               "lr": args.lr, "batch_size": args.batch_size, "n_train": len(labels.corrupted),
               "device": str(rt.device), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "train_s": round(train_s, 1), "s_per_epoch": round(train_s / max(1, int(log.epoch.iloc[-1])), 2),
               "peak_test_acc": float(log.test_acc.max()), "peak_epoch": best_epoch,
               "final_test_acc": float(log.test_acc.iloc[-1]),
               "final_train_acc_corrupted": float(log.train_acc_corrupted.iloc[-1]),
               "curve": log[["epoch", "train_acc_corrupted", "train_acc_true", "test_acc"]].round(4).to_dict("list"),
               "probes": rows}
    print(json.dumps({k: v for k, v in summary.items() if k not in ("curve", "probes")}), flush=True)
    (Path(args.out) / f"summary_c{run.corruption_str}.json").write_text(json.dumps(summary, indent=1))
    return summary


def run_parallel(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """One child process per degree (same arguments, one degree each), sharing the device; each
    child's output goes to ``log_c<degree>.txt``. A failed child is reported, not hidden."""
    out = Path(args.out)
    # the data set and the settings checked once, here, before five processes start
    first = Run("fashion_mnist", "cnn", args.corruptions[0], 0)
    n_train = len(RunRuntime(run_config(args, first.corruption), first).arrays.y_train)
    print(f"fashion_mnist_full: {n_train} training images from {args.root}; {len(args.corruptions)} processes",
          flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rest, skip = [], False
    for a in argv:  # the same arguments without --corruptions and its values
        if a == "--corruptions":
            skip = True
            continue
        if skip and not a.startswith("--"):
            continue
        skip = False
        rest.append(a)
    threads = max(1, (os.cpu_count() or 1) // len(args.corruptions))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    children = []
    for c in args.corruptions:
        log = open(out / f"log_c{c:g}.txt", "w")
        children.append((c, log, subprocess.Popen([sys.executable, __file__, "--corruptions", str(c), *rest],
                                                  stdout=log, stderr=subprocess.STDOUT, env=env)))
    summaries, failed = [], []
    for c, log, child in children:
        child.wait()
        log.close()
        path = out / f"summary_c{Run('fashion_mnist', 'cnn', c, 0).corruption_str}.json"
        if child.returncode != 0 or not path.exists():
            failed.append(f"{c:g} (exit {child.returncode}; see {out / f'log_c{c:g}.txt'})")
        else:
            summaries.append(json.loads(path.read_text()))
    print_table(summaries)
    (out / "summary.json").write_text(json.dumps(summaries, indent=1))
    if failed:
        sys.exit(f"fashion_mnist_full: degree(s) failed: {', '.join(failed)}")
    return summaries


def print_table(summaries: list[dict]) -> None:
    print("corruption  epochs  s/epoch  peak test (epoch)  final test  final train(corr)  "
          "best MASC / VeLPIC at the last epoch  (layer)")
    for s in summaries:
        last = s["probes"][-1]
        masc = max((k for k in last if k.startswith("masc_")), key=last.get)
        velpic = max((k for k in last if k.startswith("velpic_")), key=last.get)
        print(f"{s['corruption']:>10.1f}  {s['epochs']:>6}  {s['s_per_epoch']:>7.2f}  {s['peak_test_acc']:>10.3f} "
              f"({s['peak_epoch']:>3})  {s['final_test_acc']:>10.3f}  {s['final_train_acc_corrupted']:>17.3f}  "
              f"{last[masc]:.3f} ({masc[5:]}) / {last[velpic]:.3f} ({velpic[7:]})", flush=True)


def main(argv=None):
    from pipeline.core.datasets import DatasetCorruptError, DatasetNotFoundError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        if len(args.corruptions) > 1:
            return run_parallel(args, argv)
        summary = run_one(args, args.corruptions[0])
    except (DatasetNotFoundError, DatasetCorruptError) as exc:
        sys.exit(f"fashion_mnist_full: {exc}")
    print_table([summary])
    return [summary]


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
