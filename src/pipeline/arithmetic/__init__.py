"""Memorization-generalization coexistence on modular arithmetic with label noise (issue 10).

One module per concern: :mod:`.data` (pairs, split, noise), :mod:`.model` (f = W phi(U e_a + V e_b) + mu),
:mod:`.train`, :mod:`.fourier` (per-neuron DFT, IPR, strength, phases), :mod:`.filtration`
(frequency filtration, partition, pruning, swaps, controls), :mod:`.tables` (schemas),
:mod:`.planted` (the analytic network), :mod:`.probing` (MASC/VeLPIC on the hidden layer) and
:mod:`.cell` (:func:`run_cell`, one grid cell end to end), :mod:`.grid` (the config section as cells,
paths and figure names, for the workflow), :mod:`.figures` (drawn from the tables) and
:mod:`.memorization` (the memorization-order check on digits), :mod:`.transformer` (the transformer
on noisy addition, FF of its unembedding). This file only re-exports.
"""

from __future__ import annotations

from pipeline.core.exports import lazy_exports

# name -> submodule; imported on first use, so that the workflow (which imports
# pipeline.arithmetic.grid on every invocation) does not load torch and pandas
_EXPORTS = {
    "ACTIVATIONS": "pipeline.arithmetic.model",
    "ArithmeticData": "pipeline.arithmetic.data",
    "ArithmeticMLP": "pipeline.arithmetic.model",
    "KEY_COLUMNS": "pipeline.arithmetic.tables",
    "ModularTransformer": "pipeline.arithmetic.transformer",
    "NEURON_COLUMNS": "pipeline.arithmetic.tables",
    "NOISE_MODES": "pipeline.arithmetic.data",
    "PROBE_LAYER": "pipeline.arithmetic.model",
    "RESULT_COLUMNS": "pipeline.arithmetic.tables",
    "SCORES": "pipeline.arithmetic.filtration",
    "SPLITS": "pipeline.arithmetic.data",
    "TASKS": "pipeline.arithmetic.data",
    "TRANSFORMER": "pipeline.arithmetic.transformer",
    "TrainSettings": "pipeline.arithmetic.train",
    "TransformerSettings": "pipeline.arithmetic.transformer",
    "Weights": "pipeline.arithmetic.model",
    "add_noise": "pipeline.arithmetic.data",
    "all_pairs": "pipeline.arithmetic.data",
    "analysis_predictions": "pipeline.arithmetic.filtration",
    "apply_task": "pipeline.arithmetic.data",
    "cell_path": "pipeline.arithmetic.cell",
    "cell_settings": "pipeline.arithmetic.cell",
    "cells_by_path": "pipeline.arithmetic.grid",
    "dominant_frequency": "pipeline.arithmetic.fourier",
    "figure_names": "pipeline.arithmetic.grid",
    "frequency_component": "pipeline.arithmetic.filtration",
    "frequency_filtration": "pipeline.arithmetic.filtration",
    "hidden_activations": "pipeline.arithmetic.model",
    "ipr": "pipeline.arithmetic.fourier",
    "ipr_doshi": "pipeline.arithmetic.fourier",
    "ipr_paper": "pipeline.arithmetic.fourier",
    "iter_cells": "pipeline.arithmetic.grid",
    "keep_frequencies": "pipeline.arithmetic.transformer",
    "load_data": "pipeline.arithmetic.data",
    "make_data": "pipeline.arithmetic.data",
    "neuron_frame": "pipeline.arithmetic.tables",
    "neuron_statistics": "pipeline.arithmetic.fourier",
    "permute_inputs": "pipeline.arithmetic.filtration",
    "phase_residual": "pipeline.arithmetic.fourier",
    "phases": "pipeline.arithmetic.fourier",
    "planted_weights": "pipeline.arithmetic.planted",
    "probe_rows": "pipeline.arithmetic.probing",
    "random_other_frequency": "pipeline.arithmetic.filtration",
    "result_frame": "pipeline.arithmetic.tables",
    "run_cell": "pipeline.arithmetic.cell",
    "save_data": "pipeline.arithmetic.data",
    "set_accuracies": "pipeline.arithmetic.train",
    "split_pairs": "pipeline.arithmetic.data",
    "strength": "pipeline.arithmetic.fourier",
    "top_frequencies": "pipeline.arithmetic.transformer",
    "train": "pipeline.arithmetic.train",
    "transformer_table": "pipeline.arithmetic.transformer",
    "weights_logits": "pipeline.arithmetic.model",
    "weights_of": "pipeline.arithmetic.model",
    "weights_predict": "pipeline.arithmetic.model",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
