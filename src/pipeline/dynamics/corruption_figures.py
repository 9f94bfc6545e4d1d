"""Corrupted inputs: the paper's Figs. 16/17 and the mean corruption error (App. F), from the
aggregated tables only (torch-free).  The input sets are made by ``dynamics.splits: test_corrupted``
(:mod:`pipeline.dynamics.corruptions`); each is a ``split`` named ``test_<corruption><severity>``.

Tables (``results/tables/``):

* ``dynamics_corruption_error.parquet`` (:data:`CORRUPTION_ERROR`) -- per run and corrupted input
  set, the error ``1 - accuracy`` of the full network f(theta_T) at the run's last deep epoch T (the
  composite C(T, T) of the composite table, true labels, every sample), next to the error on the
  uncorrupted test set (``clean_error``, NaN unless ``test`` is among the splits).
* ``dynamics_mce.parquet`` (:data:`MCE`) -- per run, the **unnormalized** mean corruption error
  ``mce_unnormalized = mean over (corruption, severity) of (1 - acc)``: the paper's definition (App.
  F: "the unnormalized average error across all 15 corruption types and 5 severities", 0.316 for its
  ResNet-20), over the severities configured (``n_severities``).  Hendrycks & Dietterich's mCE
  normalises each corruption's summed error by AlexNet's; with no AlexNet here, ``mce_normalized`` is
  their formula ``mean_c [sum_s E(f) / sum_s E(baseline)]`` with the **label-noise-0 run of the same
  dataset, model, seed and variant** as the baseline (1 for that run itself; NaN without one) --
  named in ``normalizer``.

Figures (``results/plots/dynamics/<dataset>/<model>/``):

* ``corruption_consistency`` -- Figs. 16 (clean labels) and 17 (label noise) in one: ECDFs of the
  point-wise consistency Cons(x; T1, T2) on each corrupted test set at one severity (default the
  highest configured; the paper's 5), one panel per corruption plus the uncorrupted test set, one
  line per label-noise degree.  ECDFs rather than the paper's KDEs for the reason given in
  :mod:`pipeline.dynamics.figures` (values in [0, 1] with an atom at 1).
* ``corruption_error`` -- the error per corruption (mean over severities) per label-noise degree,
  with each degree's unnormalized mCE in the legend.

One seed is drawn (the smallest; the standard variant), as in :mod:`pipeline.dynamics.figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import BASE_VARIANT
from pipeline.core.figures import pyplot, save_figure, subplots, suptitle
from pipeline.core.tables import RUN_KEY_COLUMNS, TableSchema
from pipeline.dynamics.corruptions import CORRUPTIONS, parse_corruption_set
from pipeline.dynamics.stats import ecdf

__all__ = ["CORRUPTION_ERROR", "MCE", "CORRUPTION_FIGURES", "NORMALIZER", "corruption_error_rows",
           "mce_rows", "corruption_tables", "choose_window", "corruption_consistency",
           "corruption_error", "draw_corruption_figures"]

plt = pyplot()

#: what ``mce_normalized`` divides by
NORMALIZER = "label-noise-0 run of the same dataset, model, seed and variant (Hendrycks & Dietterich: AlexNet)"
CORRUPTION_FIGURES = ("corruption_consistency", "corruption_error")

_RUN = list(RUN_KEY_COLUMNS)

CORRUPTION_ERROR = TableSchema(
    "corruption_error",
    {**RUN_KEY_COLUMNS, "epoch": "int64", "input_corruption": "string", "severity": "int64",
     "split": "string", "accuracy": "float64", "error": "float64", "clean_error": "float64",
     "n_samples": "int64"},
    tuple(_RUN + ["epoch", "input_corruption", "severity"]), nullable=frozenset({"clean_error"}))

MCE = TableSchema(
    "mce",
    {**RUN_KEY_COLUMNS, "epoch": "int64", "n_corruptions": "int64", "n_severities": "int64",
     "mce_unnormalized": "float64", "mce_normalized": "float64", "normalizer": "string",
     "clean_error": "float64"},
    tuple(_RUN + ["epoch"]), nullable=frozenset({"mce_normalized", "clean_error"}))


# ----------------------------------------------------------------------------- tables

def _full_network(comp: pd.DataFrame) -> pd.DataFrame:
    """Rows of f(theta_T) = C(T, T) at each run's last deep epoch, true labels, every sample, one
    depth (every depth's C(T, T) is the same network)."""
    d = comp[(comp["deep_epoch"] == comp["shallow_epoch"]) & (comp["subset"] == "all")
             & (comp["label_source"] == "true")]
    if d.empty:
        return d
    last = d.groupby(_RUN, dropna=False)["deep_epoch"].transform("max")
    d = d[d["deep_epoch"] == last]
    first_depth = d.groupby(_RUN, dropna=False)["depth"].transform("min")
    return d[d["depth"] == first_depth]


def corruption_error_rows(comp: pd.DataFrame) -> pd.DataFrame:
    """The :data:`CORRUPTION_ERROR` table from the aggregated composite table."""
    d = _full_network(comp)
    parsed = d["split"].map(parse_corruption_set)
    c = d[parsed.notna()].copy()
    if c.empty:
        raise ValueError("the composite table has no corrupted test sets (split test_<corruption><severity>) "
                         "with the full network C(T, T): add test_corrupted to dynamics.splits, and the "
                         "runs' final epoch to both deep_epochs and shallow_epochs")
    c["input_corruption"] = [p[0] for p in parsed[parsed.notna()]]
    c["severity"] = [p[1] for p in parsed[parsed.notna()]]
    clean = d[d["split"] == "test"][_RUN + ["deep_epoch", "accuracy"]].rename(
        columns={"accuracy": "clean_accuracy"})
    c = c.merge(clean, on=_RUN + ["deep_epoch"], how="left")
    out = pd.DataFrame({**{k: c[k] for k in _RUN}, "epoch": c["deep_epoch"],
                        "input_corruption": c["input_corruption"], "severity": c["severity"],
                        "split": c["split"], "accuracy": c["accuracy"], "error": 1.0 - c["accuracy"],
                        "clean_error": 1.0 - c["clean_accuracy"], "n_samples": c["n_samples"]})
    order = {name: i for i, name in enumerate(CORRUPTIONS)}
    out = out.assign(_o=out["input_corruption"].map(order)).sort_values(_RUN + ["_o", "severity"])
    return CORRUPTION_ERROR.frame(out.drop(columns="_o"))


def mce_rows(err: pd.DataFrame) -> pd.DataFrame:
    """The :data:`MCE` table from :data:`CORRUPTION_ERROR` rows (see the module doc)."""
    rows = []
    sums = err.groupby(_RUN + ["epoch", "input_corruption"], dropna=False)["error"].sum()
    for key, g in err.groupby(_RUN + ["epoch"], dropna=False):
        run = dict(zip(_RUN + ["epoch"], key, strict=True))
        base_key = (run["dataset"], run["model"], 0.0, run["seed"], run["variant"])
        base = err[(err[_RUN].apply(tuple, axis=1) == base_key)]
        normalized = np.nan
        if not base.empty:
            b = base.groupby("input_corruption")["error"].sum()
            mine = sums.loc[key].reindex(b.index) if len(b) else b
            ratios = (mine / b).to_numpy(dtype=float)
            # a corruption the baseline never errs on has no ratio; the mean needs every corruption
            if len(ratios) and np.all(np.isfinite(ratios)) and set(b.index) == set(g["input_corruption"]):
                normalized = float(ratios.mean())
        rows.append({**run, "n_corruptions": int(g["input_corruption"].nunique()),
                     "n_severities": int(g["severity"].nunique()),
                     "mce_unnormalized": float(g["error"].mean()), "mce_normalized": normalized,
                     "normalizer": NORMALIZER, "clean_error": float(g["clean_error"].iloc[0])})
    return MCE.frame(rows)


def corruption_tables(comp: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    err = corruption_error_rows(comp)
    return err, mce_rows(err)


# ----------------------------------------------------------------------------- figures

def _select(df: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    df = df[(df["dataset"] == dataset) & (df["model"] == model) & (df["variant"] == BASE_VARIANT)]
    return df[df["seed"] == df["seed"].min()] if len(df) else df


def choose_window(point: pd.DataFrame, window: Sequence[int] | None = None) -> tuple[int, int]:
    """``(T1, T2)``: ``window`` when given (it must be among the table's windows), else the memory
    window (T1 <= T2) with the latest T2, the longest among those (the paper's Figs. 16/17: [200, 300])."""
    wins = point[["window_start", "deep_epoch"]].drop_duplicates()
    have = {(int(a), int(b)) for a, b in wins.itertuples(index=False)}
    if window is not None:
        w = (int(window[0]), int(window[1]))
        if w not in have:
            raise ValueError(f"window {list(w)} is not among the point-wise windows {sorted(have)}")
        return w
    memory = [w for w in have if w[0] <= w[1]] or sorted(have)
    if not memory:
        raise ValueError("the point-wise table has no windows")
    return max(memory, key=lambda w: (w[1], -w[0]))


def corruption_consistency(point: pd.DataFrame, dataset: str, model: str, *, depth: str | None = None,
                           severity: int | None = None, window: Sequence[int] | None = None,
                           reference: str = "paper"):
    """Figs. 16/17: ECDFs of Cons(x; T1, T2) per corrupted test set, one line per label-noise degree."""
    df = _select(point, dataset, model)
    df = df[df["reference"] == reference]
    parsed = df["split"].map(parse_corruption_set)
    if df.empty or not parsed.notna().any():
        raise ValueError(f"no point-wise consistency on corrupted test sets for {dataset}/{model} "
                         "(dynamics.splits needs test_corrupted, and dynamics.windows a window)")
    depth = depth if depth is not None else sorted(df["depth"].unique())[0]
    df, parsed = df[df["depth"] == depth], parsed[df["depth"] == depth]
    sev = severity if severity is not None else max(p[1] for p in parsed.dropna())
    T1, T2 = choose_window(df, window)
    df = df[(df["window_start"] == T1) & (df["deep_epoch"] == T2)]
    names = [c for c in CORRUPTIONS if f"test_{c}{sev}" in set(df["split"])]
    panels = (["test"] if "test" in set(df["split"]) else []) + [f"test_{c}{sev}" for c in names]
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = subplots(rows, cols, panel_width=2.6, panel_height=2.2, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    degrees = sorted(df["corruption"].unique())
    for i, split in enumerate(panels):
        ax = axes[i // cols, i % cols]
        d = df[(df["split"] == split) & (df["subset"] == "all")]
        for k, c in enumerate(degrees):
            g = d[d["corruption"] == c]["consistency"].to_numpy()
            if len(g) == 0:
                continue
            x, F = ecdf(g)
            ax.step(x, F, where="post", color=colors[k % len(colors)],
                    label=f"label noise {c:g} (mean {g.mean():.2f})", gid=f"ecdf|{split}|{c:g}")
        p = parse_corruption_set(split)
        ax.set_title("test (no corruption)" if p is None else f"{p[0]} (severity {p[1]})", fontsize=8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("ECDF", fontsize=8)
        if i // cols == rows - 1:
            ax.set_xlabel("point-wise consistency", fontsize=8)
        ax.legend(fontsize=5.5, loc="upper left")
    for j in range(len(panels), rows * cols):
        axes[j // cols, j % cols].set_axis_off()
    suptitle(fig, f"{dataset} / {model}, depth {depth}: point-wise consistency Cons(x; {T1}, {T2}) on "
                  f"corrupted test sets, severity {sev} (paper Figs. 16 clean labels, 17 label noise; "
                  f"reference {reference})")
    return fig


def corruption_error(err: pd.DataFrame, mce: pd.DataFrame, dataset: str, model: str):
    """Error of f(theta_T) per corruption (mean over severities), one bar group per label-noise degree."""
    e = _select(err, dataset, model)
    if e.empty:
        raise ValueError(f"no corruption errors for {dataset}/{model}")
    m = _select(mce, dataset, model)
    names = [c for c in CORRUPTIONS if c in set(e["input_corruption"])]
    degrees = sorted(e["corruption"].unique())
    fig, axes = subplots(1, 1, panel_width=max(6.0, 0.55 * len(names) + 2), panel_height=3.4)
    ax = axes[0, 0]
    width = 0.8 / len(degrees)
    for k, c in enumerate(degrees):
        per = e[e["corruption"] == c].groupby("input_corruption")["error"].mean().reindex(names)
        mrow = m[m["corruption"] == c]
        label = f"label noise {c:g}: mCE (unnormalized) {mrow['mce_unnormalized'].iloc[0]:.3f}" if len(mrow) \
            else f"label noise {c:g}"
        ax.bar(np.arange(len(names)) + (k - (len(degrees) - 1) / 2) * width, per.to_numpy(), width,
               label=label, gid=f"error|{c:g}")
        clean = e[e["corruption"] == c]["clean_error"].dropna()
        if len(clean):
            ax.axhline(float(clean.iloc[0]), ls="--", lw=0.8, color=f"C{k}", gid=f"clean|{c:g}")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("error 1 - accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    sev = sorted(int(s) for s in e["severity"].unique())
    suptitle(fig, f"{dataset} / {model}: error of f(theta_T), T = {int(e['epoch'].iloc[0])}, per corruption "
                  f"(mean over severities {sev}; dashed: uncorrupted test)")
    return fig


def draw_corruption_figures(figures: Sequence[str], outs: Sequence[str | Path], *, pointwise: pd.DataFrame,
                            corruption_error_table: pd.DataFrame, mce_table: pd.DataFrame, dataset: str,
                            model: str, depth: str | None = None, window: Sequence[int] | None = None,
                            dpi: int = 120) -> list[Path]:
    unknown = [f for f in figures if f not in CORRUPTION_FIGURES]
    if unknown or len(figures) != len(outs):
        raise ValueError(f"figures {list(figures)} / outputs {list(outs)}: one output per figure, "
                         f"figures among {list(CORRUPTION_FIGURES)}")
    made = []
    for name, out in zip(figures, outs, strict=True):
        if name == "corruption_consistency":
            fig = corruption_consistency(pointwise, dataset, model, depth=depth, window=window)
        else:
            fig = corruption_error(corruption_error_table, mce_table, dataset, model)
        made.append(save_figure(fig, out, dpi=dpi))
    return made
