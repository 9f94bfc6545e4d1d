"""Feature dynamics across checkpoints (issue 9): composite networks, temporal consistency,
one-step SGD noise and sphericity tests.  This module only re-exports; see the submodules.

The names are re-exported lazily (PEP 562), so importing one light submodule, such as
:mod:`pipeline.dynamics.paths` from the Snakefile, does not import torch."""

from __future__ import annotations

from pipeline.core.exports import lazy_exports

#: public name -> the submodule that defines it
_EXPORTS = {
    "BLUR_SIGMAS": "pipeline.dynamics.blur",
    "blur_sigma": "pipeline.dynamics.blur",
    "blur_uint8": "pipeline.dynamics.blur",
    "gaussian_blur": "pipeline.dynamics.blur",
    "CompositeNetwork": "pipeline.dynamics.composite",
    "build_composite": "pipeline.dynamics.composite",
    "composite_state_dict": "pipeline.dynamics.composite",
    "load_state": "pipeline.dynamics.composite",
    "REFERENCES": "pipeline.dynamics.consistency",
    "WindowConsistency": "pipeline.dynamics.consistency",
    "accuracy_and_cross_entropy": "pipeline.dynamics.consistency",
    "baseline_agreement": "pipeline.dynamics.consistency",
    "consistency_summary": "pipeline.dynamics.consistency",
    "dataset_consistency": "pipeline.dynamics.consistency",
    "drift_ratio": "pipeline.dynamics.consistency",
    "ecdf": "pipeline.dynamics.consistency",
    "per_sample_nll": "pipeline.dynamics.consistency",
    "pointwise_consistency": "pipeline.dynamics.consistency",
    "window_consistency": "pipeline.dynamics.consistency",
    "window_epochs": "pipeline.dynamics.consistency",
    "matched_control_logits": "pipeline.dynamics.controls",
    "matched_random_features": "pipeline.dynamics.controls",
    "CompositePredictions": "pipeline.dynamics.grid",
    "composite_grid": "pipeline.dynamics.grid",
    "composite_predictions": "pipeline.dynamics.grid",
    "composite_rows": "pipeline.dynamics.grid",
    "pointwise_rows": "pipeline.dynamics.grid",
    "OneStepNoise": "pipeline.dynamics.sgd_noise",
    "SOURCES": "pipeline.dynamics.sgd_noise",
    "isotropic_gaussian_control": "pipeline.dynamics.sgd_noise",
    "matched_sigma": "pipeline.dynamics.sgd_noise",
    "noise_summary_rows": "pipeline.dynamics.sgd_noise",
    "one_step_sgd_noise": "pipeline.dynamics.sgd_noise",
    "parameter_noise_control": "pipeline.dynamics.sgd_noise",
    "shallow_parameter_names": "pipeline.dynamics.sgd_noise",
    "SphericityNull": "pipeline.dynamics.sphericity",
    "TOP_K": "pipeline.dynamics.sphericity",
    "covariance_spectrum": "pipeline.dynamics.sphericity",
    "gram_matrix": "pipeline.dynamics.sphericity",
    "sphericity_null": "pipeline.dynamics.sphericity",
    "sphericity_statistics": "pipeline.dynamics.sphericity",
    "sphericity_test": "pipeline.dynamics.sphericity",
    "welch_test": "pipeline.dynamics.stats",
    "COMPOSITE_COLUMNS": "pipeline.dynamics.tables",
    "DEFAULT_CHOICES": "pipeline.dynamics.tables",
    "POINTWISE_COLUMNS": "pipeline.dynamics.tables",
    "SGD_NOISE_COLUMNS": "pipeline.dynamics.tables",
    "check_frame": "pipeline.dynamics.tables",
    "composite_frame": "pipeline.dynamics.tables",
    "pointwise_frame": "pipeline.dynamics.tables",
    "CHOICE_METADATA": "pipeline.dynamics.tables",
    "sgd_noise_frame": "pipeline.dynamics.tables",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
