"""Schemas of the feature-dynamics tables and validated frame constructors.

* ``results/tables/composite.parquet`` (:data:`COMPOSITE_COLUMNS`): one row per run, depth (split
  boundary), deep_epoch, shallow_epoch, split, subset, label source.  ``split`` is the input set
  (``train``, ``test``, ``test_blur5``, ...); ``subset`` the samples of it (``all``; on the training set
  of a noisy run also ``clean`` and ``corrupted`` from the saved corruption mask); ``label_source`` the
  labels accuracy and cross-entropy are measured against (``corrupted`` = the labels trained on,
  ``true``; the test split only has ``true``).  ``consistency_vs_deep`` / ``_vs_shallow`` compare the
  composite's prediction with ``f(theta_deep)`` / ``f(theta_shallow)`` (they do not depend on the label
  source); ``baseline_agreement`` is ``P[f(theta_deep) = f(theta_shallow)]`` on the same samples, to
  read consistency against; ``drift_ratio`` is ``||theta_deep - theta_shallow|| / ||theta_deep||`` over
  all parameters.
* the point-wise table (:data:`POINTWISE_COLUMNS`): one row per run, depth, window
  ``(deep_epoch = T2, window_start = T1)``, reference, split, sample; ``n_epochs`` is the number of
  shallow epochs actually summed and ``dense`` whether that was every epoch of the window.
* ``results/tables/sgd_noise.parquet`` (:data:`SGD_NOISE_COLUMNS`): one row per run, epoch, depth,
  input, source (``sgd``, ``gaussian``, ``param_isotropic``), with the protocol (N, eta, batch size,
  momentum handling), the top-5 covariance eigenvalues, energy share, participation ratio and the
  sphericity statistics -- on the ``dim_tested`` coordinates that move (``n_dropped`` dead ones left
  out, ``drop_rule`` why); :data:`SGD_NOISE_COLUMN_DOCS` names each column's statistic and object.

:data:`DEFAULT_CHOICES` lists the readings of the paper's ambiguities; write it (plus run-specific
values) into the Parquet footer through :data:`CHOICE_METADATA`.

Each table is a :class:`pipeline.core.tables.TableSchema` (:data:`COMPOSITE`, :data:`POINTWISE`,
:data:`SGD_NOISE`, :data:`TRAJECTORIES`, :data:`WELCH`): built, written (with
:func:`pipeline.core.tables.provenance`) and read through the pipeline's one table builder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from pipeline.core.tables import RUN_KEY_COLUMNS, TableSchema, check_frame
from pipeline.dynamics.sphericity import TOP_K

__all__ = ["RUN_KEY_COLUMNS", "COMPOSITE_COLUMNS", "COMPOSITE_KEYS", "POINTWISE_COLUMNS",
           "POINTWISE_KEYS", "SGD_NOISE_COLUMNS", "SGD_NOISE_KEYS", "SGD_NOISE_COLUMN_DOCS",
           "SGD_NOISE_COLUMN_METADATA", "composite_frame",
           "pointwise_frame", "sgd_noise_frame", "check_frame", "TRAJECTORY_COLUMNS",
           "TRAJECTORY_KEYS", "trajectory_frame", "WELCH_COLUMNS", "WELCH_KEYS", "welch_frame",
           "DEFAULT_CHOICES", "CHOICE_METADATA", "COMPOSITE", "POINTWISE", "SGD_NOISE", "TRAJECTORIES",
           "WELCH", "SECTIONS"]

COMPOSITE_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS,
    "depth": "string", "deep_epoch": "int64", "shallow_epoch": "int64", "split": "string",
    "subset": "string", "label_source": "string",
    "accuracy": "float64", "cross_entropy": "float64",
    "consistency_vs_deep": "float64", "consistency_vs_shallow": "float64", "n_samples": "int64",
    "baseline_agreement": "float64", "drift_ratio": "float64",
    # magnitude-matched random control (pipeline.dynamics.controls): the deep part of C(T, t) fed
    # f[1:d](theta_T) + r, ||r|| = ||f[1:d](theta_t) - f[1:d](theta_T)|| per sample (NaN when off)
    "control_accuracy": "float64", "control_cross_entropy": "float64",
    "control_consistency_vs_deep": "float64",
}
COMPOSITE_KEYS = list(RUN_KEY_COLUMNS) + ["depth", "deep_epoch", "shallow_epoch", "split", "subset",
                                          "label_source"]

POINTWISE_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS,
    "depth": "string", "deep_epoch": "int64", "window_start": "int64", "reference": "string",
    "split": "string", "subset": "string", "sample_index": "int64", "consistency": "float64",
    "n_epochs": "int64", "dense": "bool",
}
POINTWISE_KEYS = list(RUN_KEY_COLUMNS) + ["depth", "deep_epoch", "window_start", "reference",
                                          "split", "sample_index"]

SGD_NOISE_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS,
    "epoch": "int64", "depth": "string", "input_index": "int64", "source": "string",
    "n_updates": "int64", "dim": "int64", "dim_tested": "int64", "n_dropped": "int64",
    "drop_rule": "string", "lr": "float64", "batch_size": "int64",
    "momentum": "float64", "momentum_mode": "string", "weight_decay": "float64",
    "trace": "float64", **{f"eig_{i}": "float64" for i in range(1, TOP_K + 1)},
    "topk_energy": "float64", "participation_ratio": "float64", "john_u": "float64",
    "p_value": "float64", "ledoit_wolf_z": "float64", "srivastava_z": "float64",
    "spatial_sign_u": "float64", "spatial_sign_p_value": "float64", "john_u_all": "float64",
    "p_value_all": "float64", "n_resamples": "int64",
}
#: what each statistic of ``sgd_noise.parquet`` is and on which object (issue 16); written into the
#: table's footer as ``column.<name>`` (:data:`SGD_NOISE_COLUMN_METADATA`)
SGD_NOISE_COLUMN_DOCS: dict[str, str] = {
    "dim": "D, all coordinates of the flattened feature f[1:d](x)",
    "dim_tested": "D', the coordinates the tests use: those whose change dz is not exactly 0 in every draw",
    "n_dropped": "D - D', coordinates left out of the tests (see drop_rule)",
    "drop_rule": "why a coordinate is dropped",
    "lr": "eta of the one-step updates (the scheduled lr of the epoch after the checkpoint unless "
          "dynamics.sgd_noise.lr is set; the footer's protocol says which)",
    "trace": "tr S, S the sample covariance of the N feature changes dz (N - 1 degrees of freedom)",
    "eig_1": "top eigenvalues eig_1..eig_5 of S (not normalised; divide by trace for Fig. 8's shape)",
    "topk_energy": "(eig_1 + ... + eig_k) / tr S",
    "participation_ratio": "tr(S)^2 / tr(S^2), the effective number of directions",
    "john_u": "the paper's statistic (Appendix E): T = ||S~ - I||_F^2 / D' with S~ = S / (tr S / D') "
              "the trace-normalised covariance on the D' tested coordinates (= John's U)",
    "p_value": "the paper's test: Monte-Carlo (parametric bootstrap) right-tail p of T against "
               "n_resamples Gaussian (N, D') samples",
    "ledoit_wolf_z": "asymptotic z of John's U (Ledoit & Wolf 2002) on the D' tested coordinates",
    "srivastava_z": "Srivastava's (2005) z on the D' tested coordinates",
    "spatial_sign_u": "John's U of the spatial-sign covariance (robust to heavy tails), D' coordinates",
    "spatial_sign_p_value": "its Monte-Carlo p",
    "john_u_all": "T over all D coordinates (the pre-issue-16 test: any dead coordinate makes it reject)",
    "p_value_all": "Monte-Carlo p of john_u_all against Gaussian (N, D) samples",
}
SGD_NOISE_COLUMN_METADATA: dict[str, str] = {f"column.{k}": v for k, v in SGD_NOISE_COLUMN_DOCS.items()}
SGD_NOISE_KEYS = list(RUN_KEY_COLUMNS) + ["epoch", "depth", "input_index", "source"]

#: 2-D feature trajectories (Fig. 6): ``kind="trajectory"`` rows are f[1:d](theta_epoch, x_i) of
#: training sample ``sample_index`` (``label`` its true label, ``changed`` whether its training label
#: was corrupted); ``kind="region"`` rows are the cells of a grid over the 2-D feature plane with
#: ``label`` the class the final deep part f[d+1:n](theta_final) predicts there (``sample_index`` the
#: cell number, ``epoch`` the final epoch). ``kind="pca"`` / ``"perturbed"``: the induction experiment
#: (Figs. 11, 14; :mod:`pipeline.dynamics.trajectories`): features projected on their two principal
#: directions, ``label`` the class the window's deep part assigns; perturbed rows encode
#: ``sample_index = index * draws + draw``.
TRAJECTORY_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS,
    "depth": "string", "kind": "string", "epoch": "int64", "sample_index": "int64",
    "z1": "float64", "z2": "float64", "label": "int64", "changed": "bool",
}
TRAJECTORY_KEYS = list(RUN_KEY_COLUMNS) + ["depth", "kind", "epoch", "sample_index"]

#: Welch tests across seeds (:func:`pipeline.dynamics.stats.welch_test`): per (pair, depth, split,
#: subset, reference, window), the per-run mean point-wise consistency of corruption ``corruption_b``
#: against the clean runs (``corruption_a``), one value per seed.
WELCH_COLUMNS: dict[str, str] = {
    "dataset": "string", "model": "string", "depth": "string", "split": "string",
    "subset": "string", "reference": "string", "window": "int64", "measure": "string",
    "corruption_a": "float64", "corruption_b": "float64",
    "t": "float64", "df": "float64", "p_value": "float64", "mean_a": "float64", "mean_b": "float64",
    "diff": "float64", "cohen_d": "float64", "hedges_g": "float64", "n_a": "int64", "n_b": "int64",
}
WELCH_KEYS = ["dataset", "model", "depth", "split", "subset", "reference", "window", "measure",
              "corruption_a", "corruption_b"]

#: columns that may hold NaN (empty subsets, missing states, degenerate spectra)
_NULLABLE = {"accuracy", "cross_entropy", "consistency_vs_deep", "consistency_vs_shallow",
             "baseline_agreement", "drift_ratio", "topk_energy", "participation_ratio", "john_u",
             "p_value", "ledoit_wolf_z", "srivastava_z", "spatial_sign_u", "spatial_sign_p_value",
             "john_u_all", "p_value_all",
             "consistency", "control_accuracy", "control_cross_entropy",
             "control_consistency_vs_deep", *(f"eig_{i}" for i in range(1, TOP_K + 1)),
             "trace", "t", "df", "mean_a", "mean_b", "diff", "cohen_d", "hedges_g"}


def _nullable(columns: Mapping[str, str]) -> frozenset[str]:
    return frozenset(c for c in columns if c in _NULLABLE)


def _in_unit_interval(table: str, columns: tuple[str, ...]):
    def check(df: pd.DataFrame) -> None:
        for c in columns:
            v = df[c].dropna()
            if ((v < 0) | (v > 1)).any():
                raise ValueError(f"{table} column {c} has values outside [0, 1]")
    return check


def _check_composite(df: pd.DataFrame) -> None:
    _in_unit_interval("composite", ("accuracy", "consistency_vs_deep", "consistency_vs_shallow",
                                    "baseline_agreement"))(df)
    if (df["cross_entropy"].dropna() < 0).any():
        raise ValueError("composite cross_entropy must be >= 0")


def _allowed(table: str, column: str, allowed: tuple[str, ...]):
    def check(df: pd.DataFrame) -> None:
        bad = set(df[column]) - set(allowed)
        if bad:
            raise ValueError(f"{table} {column}s outside {'/'.join(allowed)}: {sorted(bad)}")
    return check


COMPOSITE = TableSchema("composite", COMPOSITE_COLUMNS, tuple(COMPOSITE_KEYS),
                        nullable=_nullable(COMPOSITE_COLUMNS), check_values=_check_composite)
POINTWISE = TableSchema("pointwise", POINTWISE_COLUMNS, tuple(POINTWISE_KEYS),
                        nullable=_nullable(POINTWISE_COLUMNS),
                        check_values=_in_unit_interval("pointwise", ("consistency",)))
SGD_NOISE = TableSchema("sgd_noise", SGD_NOISE_COLUMNS, tuple(SGD_NOISE_KEYS),
                        nullable=_nullable(SGD_NOISE_COLUMNS),
                        check_values=_allowed("sgd_noise", "source", ("sgd", "gaussian", "param_isotropic")))
TRAJECTORIES = TableSchema("trajectories", TRAJECTORY_COLUMNS, tuple(TRAJECTORY_KEYS),
                           nullable=_nullable(TRAJECTORY_COLUMNS),
                           check_values=_allowed("trajectories", "kind",
                                                        ("trajectory", "region", "pca", "perturbed")))
#: the Welch tests summarise across seeds and corruptions: their run keys are (dataset, model)
WELCH = TableSchema("welch", WELCH_COLUMNS, tuple(WELCH_KEYS),
                    run_keys={k: RUN_KEY_COLUMNS[k] for k in ("dataset", "model")},
                    nullable=_nullable(WELCH_COLUMNS))

#: the config sections a dynamics table is made from (what ``dynamics_section`` in the rules passes)
SECTIONS = ("data", "train", "dynamics")


def composite_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Validated ``composite.parquet`` frame (accuracy, consistencies in [0, 1])."""
    return COMPOSITE.frame(rows)


def pointwise_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    return POINTWISE.frame(rows)


def sgd_noise_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    return SGD_NOISE.frame(rows)


#: How this implementation reads the paper where it is ambiguous (issue 9); record with the tables.
DEFAULT_CHOICES: dict[str, str] = {
    "resnet20_second_basic_block": "stage1.block2 (stem + first two of the nine basic blocks); "
                                   "alternative reading stage2 (end of the second stage)",
    "dataset_consistency_reference": "both: consistency_vs_deep (paper text, f(theta_t2)) and "
                                     "consistency_vs_shallow (Fig. 3 caption, f(theta_t1))",
    "pointwise_reference": "paper: f(theta_{t v T2}); deep and shallow available",
    "pointwise_window": "every integer epoch of [T1 ^ T2, T1 v T2]; sparse grids refused unless allowed",
    "consistency_distribution": "ECDF and histograms instead of KDE (values in [0, 1] with an atom at 1)",
    "composite_buffers": "each part keeps the BatchNorm running statistics of its own checkpoint",
    "blur": "CIFAR-10-C gaussian_blur: x/255, scipy gaussian_filter per channel on spatial axes, "
            "mode=nearest, truncate=4, clip [0,1], x255, rounded (original truncates)",
    "sgd_step": "theta - eta (g_B + wd theta) [+ eta mu buf when the momentum buffer is saved]; "
                "gradient in train mode on a copy; BN running stats of the checkpoint kept",
    "param_isotropic_sigma": "sigma = mean shallow-parameter step norm / sqrt(#shallow parameters)",
    "gaussian_control": "N(0, tr(S)/D' I) on the SGD sample's D' moving coordinates (0 elsewhere)",
    "sphericity": "the paper's T (= John's U) of the trace-normalised covariance on the coordinates "
                  "that move (exact-zero columns dropped, counted in n_dropped), from the N x N Gram; "
                  "Monte-Carlo p (Bartlett Wishart draws) at (N, D'); spatial sign on disjoint pair "
                  "differences; john_u_all / p_value_all: the same over all D coordinates",
    "sgd_precision": "updates and feature read-outs on a float64 copy of the model",
    "welch": "across seeds (one summary per run), Cohen's d with average variance, Hedges' g",
    "composite_control": "deep part of C(T, t) on f[1:d](theta_T) + r, r uniform in direction with "
                         "||r|| = ||f[1:d](theta_t) - f[1:d](theta_T)|| per sample (flattened)",
    "composite_grid": "(deep, shallow) epochs from dynamics.deep_epochs x dynamics.shallow_epochs "
                      "among the saved checkpoints, plus every (T2, t) of the windows; unsaved "
                      "epochs skipped and recorded",
    "label_noise_subsets": "training samples split by the run's saved corruption mask "
                           "(labels.npz changed = corrupted label differs from the true one)",
    "sgd_input_set": "the first n_inputs test images (fixed across updates and controls)",
    "sgd_defaults": "eta defaults to the scheduled lr of the epoch after the checkpoint (lr_at_epoch), "
                    "batch size and weight decay to the run's training values; momentum none "
                    "(checkpoints hold no optimizer buffer)",
}


#: :data:`DEFAULT_CHOICES` as footer entries (``choice.<name>``), recorded with every dynamics table
#: next to :func:`pipeline.core.tables.provenance`
CHOICE_METADATA: dict[str, str] = {f"choice.{k}": v for k, v in DEFAULT_CHOICES.items()}


def trajectory_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    return TRAJECTORIES.frame(rows)


def welch_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    return WELCH.frame(rows)
