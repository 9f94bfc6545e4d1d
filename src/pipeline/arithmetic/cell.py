"""One cell of the arithmetic grid, end to end: data, training, analysis, tables.

:func:`run_cell` is what a workflow rule calls; ``settings`` is one cell of the config's
``arithmetic`` section (missing keys take :data:`DEFAULTS`). It writes, under ``out_dir``::

    labels.npz                   noisy / true training labels, changed mask, clean test set
    checkpoints/epoch_{E}.pt     plain state_dicts (epoch 0, every ``checkpoint_every``, last)
    train_log.parquet            run keys + epoch, loss, accuracy on the four sets, seconds
    arithmetic.parquet           accuracies of every network variant (tables.RESULT_COLUMNS)
    arithmetic_neurons.parquet   per-neuron Fourier statistics at the analysed epochs
    index.json                   settings, run keys, epochs, timings; written last (done marker)

Full analysis (partition, pruning, swaps, controls) runs at the last epoch; raw / G / R at every
checkpoint, so FF can be followed over training.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pipeline.arithmetic.data import make_data, save_data
from pipeline.arithmetic.filtration import analysis_predictions
from pipeline.arithmetic.fourier import neuron_statistics
from pipeline.arithmetic.model import build, weights_of
from pipeline.arithmetic.tables import accuracy_rows, log_frame, neuron_frame, neuron_rows, result_frame, run_keys
from pipeline.arithmetic.train import TrainSettings, set_accuracies, train
from pipeline.core.artifacts import write_json
from pipeline.core.tables import provenance, write_parquet
from pipeline.core.threads import limit_threads

DEFAULTS: dict = {
    # data
    "task": "add", "P": 23, "train_fraction": 0.5, "alpha": 0.0, "noise_mode": "wrong_only",
    # model
    "width": 64, "activation": "relu", "tied": False, "bias": True, "init_std": None,
    # training
    "optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.1, "betas": [0.9, 0.98], "momentum": 0.9,
    "loss": "ce", "epochs": 500, "batch_size": None, "log_every": 10, "checkpoint_every": 100,
    "seed": 0, "num_threads": 1, "device": "cpu",
    # analysis
    "gammas": [0.1, 0.25, 0.5], "prune_fractions": [0.05, 0.1, 0.25, 0.5, 0.75, 1.0],
}
MODEL_KEYS = ("width", "activation", "tied", "bias", "init_std")
FILES = {"labels": "labels.npz", "train_log": "train_log.parquet", "results": "arithmetic.parquet",
         "neurons": "arithmetic_neurons.parquet", "index": "index.json"}


def cell_settings(settings: dict) -> dict:
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown arithmetic cell key(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **settings}


def cell_path(settings: dict) -> str:
    """The cell's folder from its grid values (the workflow's layout, :data:`grid.CELL_PATTERN`)."""
    from pipeline.arithmetic.grid import cell_path as path

    return path(cell_settings(settings))


def run_cell(settings: dict, out_dir: str | Path) -> dict[str, Path]:
    """Train one cell and write its artifacts (see the module docstring); returns their paths."""
    s = cell_settings(settings)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    limit_threads(s["num_threads"])  # the one thread policy (torch and BLAS)
    keys = run_keys(s)
    meta = provenance({"arithmetic": s}, run=keys)
    paths = {name: out_dir / f for name, f in FILES.items()}

    data = make_data(s["task"], s["P"], s["train_fraction"], s["alpha"], s["noise_mode"], s["seed"])
    save_data(data, paths["labels"], **meta)
    model_settings = {k: s[k] for k in MODEL_KEYS}
    ts = TrainSettings.from_dict(s)
    result = train(data, model_settings, ts, out_dir)
    t_train = time.perf_counter() - t0

    log = result.log.copy()
    for i, (k, v) in enumerate(keys.items()):
        log.insert(i, k, v)
    write_parquet(log_frame(log), paths["train_log"], meta)

    rows, neurons = [], []
    epochs = sorted(result.states)
    last = epochs[-1]
    model = build({**model_settings, "P": data.P})
    model.load_state_dict(result.states[0])
    w_init = weights_of(model)
    for epoch in epochs:
        model.load_state_dict(result.states[epoch])
        w = weights_of(model)
        full = epoch == last
        for network, score, fraction, pred in analysis_predictions(
                w, data, w_init=w_init if full else None, gammas=tuple(s["gammas"]),
                prune_fractions=tuple(s["prune_fractions"]), seed=s["seed"], full=full):
            rows += accuracy_rows(keys, epoch=epoch, network=network, score=score, fraction=fraction,
                                  counts=set_accuracies(pred, data))
        neurons.append(neuron_rows(keys, epoch, neuron_statistics(w, data.task)))
    write_parquet(result_frame(rows), paths["results"], meta)
    write_parquet(neuron_frame(pd.concat(neurons, ignore_index=True)), paths["neurons"], meta)
    seconds = time.perf_counter() - t0
    write_json(paths["index"], {"settings": s, "run": keys, "epochs": epochs,
                                "checkpoints": {str(e): str(p) for e, p in result.checkpoints.items()},
                                "seconds_train": t_train, "seconds_total": seconds})
    return paths
