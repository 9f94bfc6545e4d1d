"""Where the feature-dynamics family writes: per-run tables, aggregated tables, figures."""

from __future__ import annotations

#: per-run outputs of the dynamics rules (``workflow/rules/dynamics.smk``), under the run folder
DYNAMICS_RUN_FILES = {"composite": "dynamics/composite.parquet",
                      "pointwise": "dynamics/composite_pointwise.parquet",
                      "trajectories": "dynamics/trajectories.parquet",
                      "sgd_noise": "dynamics/sgd_noise.parquet"}


#: the aggregated tables
DYNAMICS_TABLES = {"composite": "results/tables/composite.parquet",
                   "pointwise": "results/tables/composite_pointwise.parquet",
                   "trajectories": "results/tables/dynamics_trajectories.parquet",
                   "welch": "results/tables/dynamics_welch.parquet",
                   "sgd_noise": "results/tables/sgd_noise.parquet",
                   "ablations": "results/tables/dynamics_ablations.parquet",
                   # dynamics.splits test_corrupted (pipeline.dynamics.corruption_figures)
                   "corruption_error": "results/tables/dynamics_corruption_error.parquet",
                   "mce": "results/tables/dynamics_mce.parquet",
                   # sgd_noise.enabled: the anisotropy-consistency relation (pipeline.dynamics.anisotropy)
                   "anisotropy": "results/tables/dynamics_anisotropy.parquet",
                   "anisotropy_correlation": "results/tables/dynamics_anisotropy_correlation.parquet"}


DYNAMICS_PLOT_DIR = "results/plots/dynamics"


#: figures of every (dataset, model) pair; ``eigen_spectra`` needs sgd_noise, ``trajectories`` a 2-D
#: boundary (the bottleneck model)
DYNAMICS_FIGURES = ("memory", "transferability", "composite_curves", "consistency_heatmap",
                    "consistency_ecdf")

#: figures of every (dataset, model) pair when dynamics.splits has test_corrupted (paper Figs. 16/17)
DYNAMICS_CORRUPTION_FIGURES = ("corruption_consistency", "corruption_error")
