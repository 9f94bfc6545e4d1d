"""One cell of the arithmetic grid, end to end: data, training, analysis, tables.

:func:`run_cell` is what a workflow rule calls; ``settings`` is one cell of the config's
``arithmetic`` section: one value per grid key, the section's common settings; what it leaves out
takes the schema's default (:func:`cell_settings`; the schema is the one place defaults live). It
writes, under ``out_dir``::

    labels.npz                   noisy / true training labels, changed mask, clean test set
    checkpoints/epoch_{E}.pt     plain state_dicts (epoch 0, every ``checkpoint_every``, last)
    train_log.parquet            run keys + epoch, loss, accuracy on the four sets, seconds
    arithmetic.parquet           accuracies of every network variant (tables.RESULT_COLUMNS)
    arithmetic_neurons.parquet   per-neuron Fourier statistics at the analysed epochs
    probes.parquet               MASC / VeLPIC on the hidden layer at the last epoch, fit on the given
                                 and on the true training labels (pipeline.arithmetic.probing; the
                                 pipeline's probe-result schema, keyed by the shared run keys)
    index.json                   settings, run keys, epochs, timings; written last (done marker)

Full analysis (partition, pruning, swaps, controls) runs at the last epoch; raw / G / R at every
checkpoint, so FF can be followed over training. Training shows its progress line on stderr (the
rule's log), as the image runs do. Threads are the caller's (the command line's
``--threads``, the rule's ``threads``): they are not a cell setting.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from pipeline.arithmetic.data import make_data, save_data
from pipeline.arithmetic.filtration import analysis_predictions
from pipeline.arithmetic.fourier import neuron_statistics
from pipeline.arithmetic.grid import CELL_SETTINGS, GRID_KEYS
from pipeline.arithmetic.model import build, weights_of
from pipeline.arithmetic.paths import FILES  # noqa: F401 (the cell's files; re-exported)
from pipeline.arithmetic.probing import probe_rows
from pipeline.arithmetic.tables import (
    accuracy_rows,
    log_frame,
    neuron_frame,
    neuron_rows,
    result_frame,
    run_keys,
    shared_run_keys,
)
from pipeline.arithmetic.train import TrainSettings, set_accuracies, train
from pipeline.core.artifacts import CHECKPOINT_DIR, sweep_stale_tmp, write_json
from pipeline.core.config import ConfigError, apply_schema
from pipeline.core.device import resolve_device
from pipeline.core.tables import provenance, write_parquet
from pipeline.core.tables import result_frame as probe_result_frame

MODEL_KEYS = ("width", "activation", "tied", "bias", "init_std")


def cell_settings(settings: dict) -> dict:
    """The full settings of one cell: ``settings`` checked against the schema's ``arithmetic``
    section (a grid key holds one value, not a list), the schema's defaults for the keys it leaves
    out. A grid key whose default lists several values (``width``, ``alpha``) must be given."""
    allowed = (*GRID_KEYS, *CELL_SETTINGS)
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown arithmetic cell key(s) {unknown}; allowed: {sorted(allowed)}")
    section = {k: [v] if k in GRID_KEYS else v for k, v in settings.items()}
    full = apply_schema({"arithmetic": section})["arithmetic"]
    several = [k for k in GRID_KEYS if k not in settings and len(full[k]) != 1]
    if several:
        raise ConfigError(f"arithmetic cell key(s) {several} missing, and their schema defaults "
                          f"{[full[k] for k in several]} list several values; give one value each")
    return {**{k: full[k][0] for k in GRID_KEYS}, **{k: full[k] for k in CELL_SETTINGS}}


def cell_path(settings: dict) -> str:
    """The cell's folder from its grid values (the workflow's layout, :data:`grid.CELL_PATTERN`)."""
    from pipeline.arithmetic.grid import cell_path as path

    return path(cell_settings(settings))


def run_cell(settings: dict, out_dir: str | Path) -> dict[str, Path]:
    """Train one cell and write its artifacts (see the module docstring); returns their paths."""
    s = cell_settings(settings)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    # a killed earlier attempt may have left temporary files (the checkpoints are not declared
    # outputs, so Snakemake removes none of them); those of dead writers go now
    sweep_stale_tmp(out_dir)
    sweep_stale_tmp(out_dir / CHECKPOINT_DIR)
    keys = run_keys(s)
    meta = provenance({"arithmetic": s}, run=keys)
    paths = {name: out_dir / f for name, f in FILES.items()}

    data = make_data(s["task"], s["P"], s["train_fraction"], s["alpha"], s["noise_mode"], s["seed"])
    save_data(data, paths["labels"], **meta)
    model_settings = {k: s[k] for k in MODEL_KEYS}
    # "auto" becomes cuda or cpu here, by the one resolver (cuda without a GPU: refused, naming the key)
    ts = TrainSettings.from_dict({**s, "device": str(resolve_device(s["device"], key="arithmetic.device"))})
    result = train(data, model_settings, ts, out_dir, progress=True, desc=cell_path(s))
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
                w, data, w_init=w_init if full else None,
                partition_gammas=tuple(tuple(pair) for pair in s["partition"]),
                prune_fractions=tuple(s["prune_fractions"]), seed=s["seed"], ipr_dc=s["ipr_dc"], full=full):
            rows += accuracy_rows(keys, epoch=epoch, network=network, score=score, fraction=fraction,
                                  counts=set_accuracies(pred, data))
        neurons.append(neuron_rows(keys, epoch, neuron_statistics(w, data.task)))
    write_parquet(result_frame(rows), paths["results"], meta)
    write_parquet(neuron_frame(pd.concat(neurons, ignore_index=True)), paths["neurons"], meta)
    # the hidden layer of the last epoch's network (model holds it: the loop above ends there)
    probes = probe_rows(model, data, shared_run_keys(s), epoch=last)
    write_parquet(probe_result_frame(probes), paths["probes"], meta)
    seconds = time.perf_counter() - t0
    write_json(paths["index"], {"settings": s, "run": keys, "epochs": epochs,
                                "checkpoints": {str(e): str(p) for e, p in result.checkpoints.items()},
                                "seconds_train": t_train, "seconds_total": seconds,
                                # bit-equal reruns need the same torch and the same CPU kernel path:
                                # AVX2 and AVX-512 kernels round sums differently, and 2000 chaotic
                                # steps turn that into other weights (docs/arithmetic.md)
                                "torch": torch.__version__,
                                "cpu_capability": torch.backends.cpu.get_cpu_capability()})
    return paths
