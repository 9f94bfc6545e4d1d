"""The anisotropy-consistency relation (paper section 1 / 6: "the strength of this anisotropy
correlates with temporal consistency"), across runs: ``python -m pipeline dynamics-anisotropy``.

Per run (dataset, model, corruption, seed), SGD-noise epoch and depth, from the aggregated tables:

* anisotropy of the one-step SGD noise (``sgd_noise.parquet``, means over the input set):
  ``pr_ratio`` = participation ratio of the equal-trace isotropic Gaussian control / that of the SGD
  noise at the same ``(N, D')`` -- how many times fewer effective directions the SGD noise has than
  isotropic noise of its shape (1 = isotropic; the Gaussian's own ratio is not 1 at ``N < D'``
  because of sampling, hence the ratio rather than the raw PR); ``topk_energy_sgd`` (top-5 share of
  the trace), ``john_u_sgd`` (the paper's ``T`` of Appendix E) and the share of inputs whose
  sphericity test rejects at 0.05 for the SGD noise and for the parameter-isotropic control;
* temporal consistency (``composite_pointwise.parquet``): the mean point-wise consistency of the
  run at the same depth, per split, reference and window (windows by ordinal, as the Welch tests).

:data:`ANISOTROPY` holds those rows; :data:`ANISOTROPY_CORRELATION` the Spearman and Pearson
correlations of each anisotropy measure with the mean consistency across runs, per (dataset, model,
SGD-noise epoch by ordinal, depth, split, reference, window).  Epochs and windows are matched by
their ordinal within each run, since ``final`` is a different epoch in each run.  Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.tables import RUN_KEY_COLUMNS, TableSchema

__all__ = ["ANISOTROPY_COLUMNS", "ANISOTROPY", "CORRELATION_COLUMNS", "ANISOTROPY_CORRELATION",
           "MEASURES", "REJECT_ALPHA", "anisotropy_rows", "correlation_rows", "anisotropy_tables"]

#: the anisotropy measures correlated with consistency (columns of :data:`ANISOTROPY`)
MEASURES = ("pr_ratio", "topk_energy_sgd", "john_u_sgd")
#: the level of the rejection rates
REJECT_ALPHA = 0.05

ANISOTROPY_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS,
    "epoch": "int64", "epoch_index": "int64", "depth": "string", "split": "string",
    "reference": "string", "window": "int64", "window_start": "int64", "deep_epoch": "int64",
    "n_inputs": "int64", "lr": "float64", "pr_sgd": "float64", "pr_gaussian": "float64",
    "pr_ratio": "float64", "topk_energy_sgd": "float64", "topk_energy_gaussian": "float64",
    "john_u_sgd": "float64", "reject_rate_sgd": "float64", "reject_rate_param_isotropic": "float64",
    "reject_rate_gaussian": "float64", "mean_consistency": "float64", "n_samples": "int64",
}
ANISOTROPY_KEYS = list(RUN_KEY_COLUMNS) + ["epoch", "depth", "split", "reference", "window"]

CORRELATION_COLUMNS: dict[str, str] = {
    "dataset": "string", "model": "string", "epoch_index": "int64", "epochs": "string",
    "depth": "string", "split": "string", "reference": "string", "window": "int64", "measure": "string",
    "n_runs": "int64",
    "spearman_rho": "float64", "spearman_p": "float64", "pearson_r": "float64", "pearson_p": "float64",
}
CORRELATION_KEYS = ["dataset", "model", "epoch_index", "depth", "split", "reference", "window", "measure"]

_NULLABLE = frozenset({"pr_sgd", "pr_gaussian", "pr_ratio", "topk_energy_sgd", "topk_energy_gaussian",
                       "john_u_sgd", "reject_rate_sgd", "reject_rate_param_isotropic",
                       "reject_rate_gaussian", "mean_consistency", "spearman_rho", "spearman_p",
                       "pearson_r", "pearson_p"})

ANISOTROPY = TableSchema("dynamics_anisotropy", ANISOTROPY_COLUMNS, tuple(ANISOTROPY_KEYS),
                         nullable=frozenset(c for c in ANISOTROPY_COLUMNS if c in _NULLABLE))
#: correlations summarise across runs: their run keys are (dataset, model)
ANISOTROPY_CORRELATION = TableSchema(
    "dynamics_anisotropy_correlation", CORRELATION_COLUMNS, tuple(CORRELATION_KEYS),
    run_keys={k: RUN_KEY_COLUMNS[k] for k in ("dataset", "model")},
    nullable=frozenset(c for c in CORRELATION_COLUMNS if c in _NULLABLE))


def _noise_summary(sgd: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, epoch, depth): the anisotropy measures, means over the input set."""
    run_cols = list(RUN_KEY_COLUMNS)
    by = run_cols + ["epoch", "depth"]
    wide = {}
    for source in ("sgd", "gaussian", "param_isotropic"):
        d = sgd[sgd["source"] == source].copy()
        d["reject"] = (d["p_value"] < REJECT_ALPHA).astype(float)
        wide[source] = d.groupby(by, dropna=False).agg(
            pr=("participation_ratio", "mean"), topk=("topk_energy", "mean"), john_u=("john_u", "mean"),
            reject=("reject", "mean"), n_inputs=("input_index", "nunique"), lr=("lr", "first"))
    s, g, p = wide["sgd"], wide["gaussian"], wide["param_isotropic"]
    out = pd.DataFrame({"n_inputs": s["n_inputs"], "lr": s["lr"], "pr_sgd": s["pr"],
                        "pr_gaussian": g["pr"].reindex(s.index), "topk_energy_sgd": s["topk"],
                        "topk_energy_gaussian": g["topk"].reindex(s.index), "john_u_sgd": s["john_u"],
                        "reject_rate_sgd": s["reject"],
                        "reject_rate_param_isotropic": p["reject"].reindex(s.index),
                        "reject_rate_gaussian": g["reject"].reindex(s.index)})
    out["pr_ratio"] = out["pr_gaussian"] / out["pr_sgd"]
    out = out.reset_index()
    # epochs by ordinal within each run (as the windows): "final" is another epoch in every run
    out["epoch_index"] = out.groupby(run_cols + ["depth"], dropna=False)["epoch"].rank(method="dense")
    out["epoch_index"] = out["epoch_index"].astype("int64") - 1
    return out


def _consistency_summary(pointwise: pd.DataFrame) -> pd.DataFrame:
    """Mean point-wise consistency per (run, depth, split, reference, window ordinal)."""
    run_cols = list(RUN_KEY_COLUMNS)
    wins = pointwise[run_cols + ["window_start", "deep_epoch"]].drop_duplicates()
    wins = wins.sort_values(run_cols + ["window_start", "deep_epoch"])
    wins["window"] = wins.groupby(run_cols, dropna=False).cumcount()
    df = pointwise.merge(wins, on=run_cols + ["window_start", "deep_epoch"])
    return (df.groupby(run_cols + ["depth", "split", "reference", "window", "window_start", "deep_epoch"],
                       dropna=False)
            .agg(mean_consistency=("consistency", "mean"), n_samples=("consistency", "size"))
            .reset_index())


def anisotropy_rows(sgd: pd.DataFrame, pointwise: pd.DataFrame) -> pd.DataFrame:
    """:data:`ANISOTROPY` rows: the SGD-noise summary of each (run, epoch, depth) joined with the
    run's consistency at that depth (a depth without point-wise rows gives no row)."""
    if sgd.empty or pointwise.empty:
        return ANISOTROPY.frame([])
    noise = _noise_summary(sgd)
    cons = _consistency_summary(pointwise)
    df = noise.merge(cons, on=list(RUN_KEY_COLUMNS) + ["depth"], how="inner")
    return ANISOTROPY.frame(df[list(ANISOTROPY_COLUMNS)].to_dict("records"))


def correlation_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman / Pearson correlation of each of :data:`MEASURES` with ``mean_consistency`` across
    the runs of one (dataset, model, epoch, depth, split, reference, window); NaN below 3 runs or
    when either side is constant."""
    from scipy import stats

    rows = []
    group = ["dataset", "model", "epoch_index", "depth", "split", "reference", "window"]
    for key, g in table.groupby(group, dropna=False):
        epochs = ",".join(str(e) for e in sorted(g["epoch"].unique()))
        for measure in MEASURES:
            d = g[[measure, "mean_consistency"]].dropna()
            x, y = d[measure].to_numpy(), d["mean_consistency"].to_numpy()
            rho = rp = r = pp = float("nan")
            if len(d) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                rho, rp = (float(v) for v in stats.spearmanr(x, y))
                r, pp = (float(v) for v in stats.pearsonr(x, y))
            rows.append({**dict(zip(group, key, strict=True)), "epochs": epochs, "measure": measure,
                         "n_runs": len(d),
                         "spearman_rho": rho, "spearman_p": rp, "pearson_r": r, "pearson_p": pp})
    return ANISOTROPY_CORRELATION.frame(rows)


def anisotropy_tables(sgd_noise: str | Path, pointwise: str | Path, *, out: str | Path,
                      out_correlation: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the aggregated SGD-noise and point-wise tables, write both anisotropy tables."""
    from pipeline.core.tables import read_parquet_metadata, read_table, write_table
    from pipeline.dynamics import tables as T

    sgd = read_table(sgd_noise, T.SGD_NOISE)
    point = read_table(pointwise, T.POINTWISE)
    table = anisotropy_rows(sgd, point)
    corr = correlation_rows(table)
    meta = {k: v for k, v in read_parquet_metadata(sgd_noise).items()
            if k.startswith("choice.") or k == "config"}
    meta.update({"sources": json.dumps([str(sgd_noise), str(pointwise)]),
                 "anisotropy": "pr_ratio = PR(gaussian) / PR(sgd) at the same (N, D'); means over "
                               f"the input set; reject rates at p < {REJECT_ALPHA} on the moving "
                               "coordinates; consistency = mean point-wise consistency of the run "
                               "(windows by ordinal within each run)"})
    write_table(table, out, ANISOTROPY, meta)
    write_table(corr, out_correlation, ANISOTROPY_CORRELATION, meta)
    print(f"{len(table)} anisotropy rows, {len(corr)} correlations -> {out}, {out_correlation}")
    return table, corr


def format_relation(corr: pd.DataFrame, measures: Sequence[str] = ("pr_ratio",)) -> list[str]:
    """One line per correlation row of ``measures`` (for logs and figure titles)."""
    lines = []
    for r in corr[corr["measure"].isin(measures)].itertuples():
        lines.append(f"{r.dataset}/{r.model} epochs {r.epochs} {r.depth} {r.split} {r.reference} "
                     f"window {r.window}: {r.measure} vs consistency, Spearman rho {r.spearman_rho:.2f} "
                     f"(n = {r.n_runs})")
    return lines
