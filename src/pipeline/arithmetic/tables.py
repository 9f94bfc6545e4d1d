"""The arithmetic tables' schemas (defined once here) and their validation.

Every table starts with the run keys :data:`KEY_COLUMNS`: the pipeline's shared ones
(:data:`pipeline.core.tables.RUN_KEY_COLUMNS`, mapped by :func:`shared_run_keys`) and the arithmetic's own.

``arithmetic.parquet``: one row per (run keys, epoch, network, score, fraction, split) with the
accuracy and its counts. ``network``: ``raw`` / ``G`` / ``R`` (frequency filtration),
``swap_<phi>``, ``part_G`` / ``part_G_ff`` / ``part_R`` (Algorithm 1, ``score`` ranks the neurons,
``fraction`` = gamma), ``prune`` (``fraction`` of neurons kept by ``score``), and the controls
``G_randfreq``, ``perm_raw`` / ``perm_G``, ``init_raw`` / ``init_G``. Whole-network variants have
score ``none`` and fraction 1. ``split`` in :data:`pipeline.arithmetic.data.SPLITS`; a set with no
pairs (the noisy sets at alpha = 0) has no row.

``weight_decay_kind`` (a run key derived from optimizer and weight_decay) says how the decay acted:
``decoupled`` (AdamW, Muon), ``coupled_l2`` (Adam, SGD: an L2 term in the gradient) or ``none``.

``arithmetic_neurons.parquet``: one row per (run keys, epoch, neuron) of
:func:`pipeline.arithmetic.fourier.neuron_statistics`.

The training log (``train_log.parquet``) is the run keys plus :data:`pipeline.arithmetic.train.LOG_COLUMNS`.

Each table is a :class:`pipeline.core.tables.TableSchema` (:data:`RESULTS`, :data:`NEURONS`,
:data:`LOG`) whose run keys are :data:`KEY_COLUMNS`: built, written and read through the pipeline's
one table builder.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from pipeline.core.tables import RUN_KEY_COLUMNS, TableSchema

#: the arithmetic's own keys of a cell (after the shared run keys), with their dtypes
ARITH_KEY_COLUMNS: dict[str, str] = {
    "task": "string",
    "P": "int64",
    "train_fraction": "float64",
    "alpha": "float64",
    "noise_mode": "string",
    "width": "int64",
    "activation": "string",
    "tied": "bool",
    "optimizer": "string",
    "weight_decay": "float64",
    "weight_decay_kind": "string",
}
#: how each optimizer applies ``weight_decay`` (torch's): AdamW and Muon decay the weights directly
#: (decoupled, Loshchilov & Hutter), Adam and SGD add weight_decay * w to the gradient (coupled L2,
#: which Adam then rescales per coordinate); ``weight_decay_kind`` is ``none`` at weight decay 0
WEIGHT_DECAY_KIND = {"adamw": "decoupled", "muon": "decoupled", "adam": "coupled_l2", "sgd": "coupled_l2"}
#: the run keys of a cell, in order, with their dtypes: the shared run keys
#: (:data:`pipeline.core.tables.RUN_KEY_COLUMNS`, see :func:`shared_run_keys`), then the arithmetic's own
KEY_COLUMNS: dict[str, str] = {**RUN_KEY_COLUMNS, **ARITH_KEY_COLUMNS}
RESULT_COLUMNS: dict[str, str] = {
    **KEY_COLUMNS,
    "epoch": "int64",
    "network": "string",
    "score": "string",
    "fraction": "float64",
    "split": "string",
    "accuracy": "float64",
    "n_correct": "int64",
    "n_samples": "int64",
}
RESULT_KEYS = [c for c in RESULT_COLUMNS if c not in ("accuracy", "n_correct", "n_samples")]
NEURON_COLUMNS: dict[str, str] = {
    **KEY_COLUMNS,
    "epoch": "int64",
    "neuron": "int64",
    "dominant_freq": "int64",
    "power_frac_u": "float64",
    "power_frac_v": "float64",
    "power_frac_w": "float64",
    "ipr_paper": "float64",
    "ipr_doshi": "float64",
    "ipr_paper_nodc": "float64",
    "ipr_doshi_nodc": "float64",
    "strength": "float64",
    "phase_a": "float64",
    "phase_b": "float64",
    "phase_c": "float64",
    "phase_residual": "float64",   # NaN for mul
    "norm_u": "float64",
    "norm_v": "float64",
    "norm_w": "float64",
}
NEURON_KEYS = [*KEY_COLUMNS, "epoch", "neuron"]
NULLABLE = {"phase_residual"}
#: the training log: run keys, then pipeline.arithmetic.train.LOG_COLUMNS (loss NaN at epoch 0,
#: accuracies NaN on an empty set)
LOG_TABLE_COLUMNS: dict[str, str] = {
    **KEY_COLUMNS,
    "epoch": "int64",
    "loss": "float64",
    "acc_train_clean": "float64",
    "acc_train_noisy_given": "float64",
    "acc_train_noisy_true": "float64",
    "acc_test": "float64",
    "seconds": "float64",
}
LOG_KEYS = [*KEY_COLUMNS, "epoch"]
LOG_NULLABLE = {"loss", "acc_train_clean", "acc_train_noisy_given", "acc_train_noisy_true", "acc_test"}


def shared_run_keys(settings: Mapping) -> dict:
    """The shared run keys (dataset, model, corruption, seed, variant) of a cell, so that every
    table of the pipeline joins on them: ``dataset = arith_{task}_p{P}_f{train_fraction}``,
    ``model = arith_w{width}_{activation}[_tied]_{optimizer}_wd{weight_decay}``,
    ``corruption = alpha``, ``seed``, ``variant = noise_mode``."""
    tied = "_tied" if settings.get("tied") else ""
    return {
        "dataset": f"arith_{settings['task']}_p{int(settings['P'])}_f{float(settings['train_fraction']):g}",
        "model": (f"arith_w{int(settings['width'])}_{settings['activation']}{tied}_{settings['optimizer']}"
                  f"_wd{float(settings['weight_decay']):g}"),
        "corruption": float(settings["alpha"]),
        "seed": int(settings["seed"]),
        "variant": str(settings["noise_mode"]),
    }


def run_keys(settings: Mapping) -> dict:
    """The run keys of a cell's settings, typed: :func:`shared_run_keys`, then the arithmetic's."""
    derived = ("tied", "weight_decay_kind")  # tied defaults to False; the kind follows the optimizer
    missing = [k for k in ("seed", *ARITH_KEY_COLUMNS) if k not in settings and k not in derived]
    if missing:
        raise ValueError(f"cell settings lack the run keys {missing}")
    cast = {"string": str, "int64": int, "float64": float, "bool": bool}
    kind = weight_decay_kind(settings["optimizer"], float(settings["weight_decay"]))
    own = {k: kind if k == "weight_decay_kind" else cast[t](settings.get(k, False))
           for k, t in ARITH_KEY_COLUMNS.items()}
    return {**shared_run_keys(settings), **own}


def weight_decay_kind(optimizer: str, weight_decay: float) -> str:
    """``decoupled`` / ``coupled_l2`` (:data:`WEIGHT_DECAY_KIND`), ``none`` at weight decay 0."""
    if optimizer not in WEIGHT_DECAY_KIND:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: {list(WEIGHT_DECAY_KIND)}")
    return "none" if weight_decay == 0 else WEIGHT_DECAY_KIND[optimizer]


def accuracy_rows(keys: Mapping, *, epoch: int, network: str, score: str, fraction: float,
                  counts: Mapping[str, tuple[int, int]]) -> list[dict]:
    """Rows for one network from ``{split: (n_correct, n_samples)}``; empty sets are skipped."""
    return [{**keys, "epoch": int(epoch), "network": network, "score": score, "fraction": float(fraction),
             "split": split, "accuracy": c / n, "n_correct": int(c), "n_samples": int(n)}
            for split, (c, n) in counts.items() if n > 0]


def _check_results(df: pd.DataFrame) -> None:
    from pipeline.arithmetic.data import SPLITS

    unknown = sorted(set(df["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; allowed: {list(SPLITS)}")
    acc = df["n_correct"] / df["n_samples"]
    if (df["n_samples"] <= 0).any() or not np.allclose(acc, df["accuracy"]):
        raise ValueError("accuracy must equal n_correct / n_samples with n_samples > 0")


RESULTS = TableSchema("arithmetic result", RESULT_COLUMNS, tuple(RESULT_KEYS), run_keys=KEY_COLUMNS,
                      check_values=_check_results)
NEURONS = TableSchema("neuron statistics", NEURON_COLUMNS, tuple(NEURON_KEYS), run_keys=KEY_COLUMNS,
                      nullable=frozenset(NULLABLE))
LOG = TableSchema("arithmetic training log", LOG_TABLE_COLUMNS, tuple(LOG_KEYS), run_keys=KEY_COLUMNS,
                  nullable=frozenset(LOG_NULLABLE))


def _memorization_columns() -> dict[str, str]:
    from pipeline.arithmetic.data import SPLITS

    return {**RUN_KEY_COLUMNS, "epoch": "int64", "loss": "float64", **{f"acc_{s}": "float64" for s in SPLITS}}


#: the memorization-order check on an image set (:mod:`pipeline.arithmetic.memorization`): one row
#: per (run keys, epoch); loss NaN at epoch 0, accuracies NaN on an empty set
MEMORIZATION_COLUMNS: dict[str, str] = _memorization_columns()
MEMORIZATION = TableSchema("memorization order", MEMORIZATION_COLUMNS, (*RUN_KEY_COLUMNS, "epoch"),
                           nullable=frozenset(c for c in MEMORIZATION_COLUMNS if c == "loss" or c.startswith("acc_")))


def result_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """The accuracy table in :data:`RESULT_COLUMNS` order and dtypes; raises on a bad or duplicate row."""
    return RESULTS.frame(rows)


def neuron_frame(stats: pd.DataFrame | list[dict]) -> pd.DataFrame:
    return NEURONS.frame(stats)


def log_frame(log: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """The training log in :data:`LOG_TABLE_COLUMNS` order and dtypes; raises on a bad or duplicate row."""
    return LOG.frame(log)


def neuron_rows(keys: Mapping, epoch: int, stats: pd.DataFrame) -> pd.DataFrame:
    """Prefix the per-neuron statistics with the run keys and the epoch."""
    df = stats.copy()
    for i, (k, v) in enumerate({**keys, "epoch": int(epoch)}.items()):
        df.insert(i, k, v)
    return df


def check_result_schema(df: pd.DataFrame) -> None:
    result_frame(df)


def check_neuron_schema(df: pd.DataFrame) -> None:
    neuron_frame(df)
