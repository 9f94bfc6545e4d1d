"""Feature dynamics across checkpoints (issue 9): composite networks, temporal consistency,
one-step SGD noise and sphericity tests.  This module only re-exports; see the submodules."""

from pipeline.dynamics.blur import BLUR_SIGMAS, blur_sigma, blur_uint8, gaussian_blur
from pipeline.dynamics.composite import CompositeNetwork, build_composite, composite_state_dict, load_state
from pipeline.dynamics.consistency import (
                                         REFERENCES,
                                         WindowConsistency,
                                         accuracy_and_cross_entropy,
                                         baseline_agreement,
                                         consistency_summary,
                                         dataset_consistency,
                                         drift_ratio,
                                         ecdf,
                                         per_sample_nll,
                                         pointwise_consistency,
                                         window_consistency,
                                         window_epochs,
)
from pipeline.dynamics.controls import matched_control_logits, matched_random_features
from pipeline.dynamics.grid import (
                                         CompositePredictions,
                                         composite_grid,
                                         composite_predictions,
                                         composite_rows,
                                         pointwise_rows,
)
from pipeline.dynamics.sgd_noise import (
                                         SOURCES,
                                         OneStepNoise,
                                         isotropic_gaussian_control,
                                         matched_sigma,
                                         noise_summary_rows,
                                         one_step_sgd_noise,
                                         parameter_noise_control,
                                         shallow_parameter_names,
)
from pipeline.dynamics.sphericity import (
                                         TOP_K,
                                         SphericityNull,
                                         covariance_spectrum,
                                         gram_matrix,
                                         sphericity_null,
                                         sphericity_statistics,
                                         sphericity_test,
)
from pipeline.dynamics.stats import welch_test
from pipeline.dynamics.tables import (
                                         COMPOSITE_COLUMNS,
                                         DEFAULT_CHOICES,
                                         POINTWISE_COLUMNS,
                                         SGD_NOISE_COLUMNS,
                                         check_frame,
                                         composite_frame,
                                         pointwise_frame,
                                         provenance,
                                         sgd_noise_frame,
)

__all__ = [
    "BLUR_SIGMAS", "blur_sigma", "blur_uint8", "gaussian_blur",
    "CompositeNetwork", "build_composite", "composite_state_dict", "load_state",
    "REFERENCES", "WindowConsistency", "accuracy_and_cross_entropy", "baseline_agreement",
    "consistency_summary", "dataset_consistency", "drift_ratio", "ecdf", "per_sample_nll",
    "pointwise_consistency", "window_consistency", "window_epochs",
    "matched_control_logits", "matched_random_features",
    "CompositePredictions", "composite_grid", "composite_predictions", "composite_rows",
    "pointwise_rows",
    "SOURCES", "OneStepNoise", "isotropic_gaussian_control", "matched_sigma", "noise_summary_rows",
    "one_step_sgd_noise", "parameter_noise_control", "shallow_parameter_names",
    "TOP_K", "SphericityNull", "covariance_spectrum", "gram_matrix", "sphericity_null",
    "sphericity_statistics", "sphericity_test",
    "welch_test",
    "COMPOSITE_COLUMNS", "DEFAULT_CHOICES", "POINTWISE_COLUMNS", "SGD_NOISE_COLUMNS", "check_frame",
    "composite_frame", "pointwise_frame", "provenance", "sgd_noise_frame",
]
