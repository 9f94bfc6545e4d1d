#!/usr/bin/env python
"""What the storage levers cost: float16 activations and lzf compression, on real activations.

Trains the papers' MLP and CNN on the bundled digits (offline; 80 % label corruption, so the
models memorize), extracts the activations of a few checkpoints three ways -- float32, float16,
float16 + lzf -- through the pipeline's own extraction, and reports

* bytes per activation file and extraction time (what float16 and lzf save and cost);
* for MASC (99 % energy), VeLPIC and nearest class mean (and the logistic-regression probe with
  ``--linear``), fitted on the corrupted and on the true training labels: the largest change of
  accuracy between float32 and float16 activations, and the fraction of test/train predictions
  that are identical.

    .venv/bin/python benchmarks/bench_storage.py [--epochs 40] [--linear] [--dataset digits]

``--dataset mnist`` (or cifar10, ...) uses a real dataset from ``--data-root`` if it is on disk
(with ``--train-subset`` to keep it short). Everything runs on the CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.config import validate_config  # noqa: E402
from pipeline.core.activations import ActivationFile, extract_activations  # noqa: E402
from pipeline.core.config import Run  # noqa: E402
from pipeline.core.labels import load_run_dataset, make_run_labels  # noqa: E402
from pipeline.core.runtime import RunRuntime, build_run_model, input_transform, load_checkpoint
from pipeline.images.train import train_run  # noqa: E402
from pipeline.probes import make_probe  # noqa: E402

VARIANTS = [("float32", None), ("float16", None), ("float16", "lzf")]


def probe_settings(linear: bool) -> list[tuple[str, dict]]:
    settings = [("masc", {"variance": 0.99}), ("velpic", {}), ("ncm", {})]
    if linear:
        settings.append(("linear", {"epochs": 20}))
    return settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    ap.add_argument("--corruption", type=float, default=0.8)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--linear", action="store_true", help="also the logistic-regression probe")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    worst = {"acc": 0.0, "agree": 1.0}
    for model_name in args.models:
        config = validate_config({
            "data": {"root": args.data_root, "train_subset": args.train_subset},
            "datasets": [args.dataset], "models": [model_name],
            "train": {"max_epochs": args.epochs, "target_train_accuracy": 1.0,
                      "checkpoints": {"early_every": 10, "early_until": 10, "late_every": 10},
                      "overrides": {"mlp": {"optimizer": "adam", "lr": 0.001}}},
        })
        run = Run(args.dataset, model_name, args.corruption, 0)
        arrays = load_run_dataset(config, args.dataset)
        labels = make_run_labels(arrays, dataset=args.dataset, corruption=args.corruption, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            rt = RunRuntime(config, run, arrays=arrays, labels=labels, run_dir=tmp / "run")
            result = train_run(rt, progress=False)
            print(f"\n== {args.dataset}/{model_name}, corruption {args.corruption}: trained "
                  f"{result.final_epoch} epochs in {time.perf_counter() - t0:.0f} s "
                  f"(train acc on corrupted labels {result.log.train_acc_corrupted.iloc[-1]:.3f}, "
                  f"test acc {result.log.test_acc.iloc[-1]:.3f}); n_train={len(labels.true)}")
            epochs = sorted({0, result.epochs[len(result.epochs) // 2], result.final_epoch})
            transform = input_transform(arrays, model_name)
            print(f"{'epoch':>5} {'variant':<14} {'MiB':>8} {'extract s':>9}")
            files: dict[tuple[int, str], Path] = {}
            for epoch in epochs:
                model = build_run_model(run, arrays)
                load_checkpoint(tmp / "run" / "checkpoints" / f"epoch_{epoch}.pt", model)
                for dtype, comp in VARIANTS:
                    name = f"{dtype}{'+' + comp if comp else ''}"
                    path = tmp / f"e{epoch}_{name}.h5"
                    t0 = time.perf_counter()
                    extract_activations(model, arrays.x_train, arrays.x_test, labels, transform, path,
                                        dtype=dtype, compression=comp)
                    seconds = time.perf_counter() - t0
                    files[(epoch, name)] = path
                    print(f"{epoch:>5} {name:<14} {path.stat().st_size / 2**20:>8.2f} {seconds:>9.2f}")

            print(f"\n{'epoch':>5} {'layer':<9} {'probe':<7} {'fit on':<10} {'test acc f32':>12} "
                  f"{'f16':>7} {'|d|':>7} {'agree test':>10} {'agree train':>11}")
            for epoch in epochs:
                with ActivationFile(files[(epoch, "float32")]) as a32, \
                        ActivationFile(files[(epoch, "float16")]) as a16:
                    for layer in a32.layers:
                        data = {prec: {split: acts.read(layer, split) for split in ("train", "test")}
                                for prec, acts in (("32", a32), ("16", a16))}
                        y_test = a32.labels("test")
                        for source in ("corrupted", "true"):
                            y_fit = a32.labels("train", source)
                            for name, params in probe_settings(args.linear):
                                p32 = make_probe(name, **params).fit(data["32"]["train"], y_fit)
                                p16 = make_probe(name, **params).fit(data["16"]["train"], y_fit)
                                t32 = p32.predict(data["32"]["test"])
                                t16 = p16.predict(data["16"]["test"])
                                r32 = p32.predict(data["32"]["train"])
                                r16 = p16.predict(data["16"]["train"])
                                acc32 = float((t32 == y_test).mean())
                                acc16 = float((t16 == y_test).mean())
                                d = abs(acc32 - acc16)
                                agree_test = float((t32 == t16).mean())
                                agree_train = float((r32 == r16).mean())
                                if name != "linear":
                                    worst["acc"] = max(worst["acc"], d)
                                    worst["agree"] = min(worst["agree"], agree_test, agree_train)
                                print(f"{epoch:>5} {layer:<9} {name:<7} {source:<10} {acc32:>12.4f} "
                                      f"{acc16:>7.4f} {d:>7.4f} {agree_test:>10.4f} {agree_train:>11.4f}")
    print(f"\nMASC/VeLPIC/NCM, float16 vs float32 activations: largest test-accuracy change "
          f"{worst['acc']:.4f}, lowest prediction agreement {worst['agree']:.4f}")


if __name__ == "__main__":
    main()
