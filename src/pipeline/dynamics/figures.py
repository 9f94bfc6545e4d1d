"""Feature-dynamics figures, drawn from the aggregated tables only (``results/tables/``).

One figures job per (dataset, model) pair draws (``results/plots/dynamics/<dataset>/<model>/``):

* ``composite_curves`` -- accuracy and cross-entropy of C(T_final, t) on the test set against the
  shallow epoch t, one curve per depth, one column per corruption (paper Figs. 2, 4, 5, 10, 12, 13);
  the full network f(theta_final) as a dashed line.
* ``consistency_heatmap`` -- consistency_vs_deep over the (deep, shallow) grid at one depth with the
  0.8 contour (Fig. 3), one panel per corruption.
* ``consistency_ecdf`` -- ECDFs of the point-wise consistency (first window, the paper's reference)
  per corruption: test set, and training samples clean vs corrupted (Fig. 7). ECDFs instead of the
  paper's KDE: the values lie in [0, 1] with an atom at 1, which a KDE smears across the boundary.
* ``eigen_spectra`` -- the top-k covariance eigenvalues over the trace (mean over inputs) of one-step
  SGD noise against the isotropic Gaussian and the parameter-space control (Figs. 8, 15).
* ``trajectories`` -- 2-D bottleneck features of training samples across epochs over the decision
  regions of the final deep part (Fig. 6).

Every drawn line / image carries ``gid`` naming what it shows, so tests can compare it to the table.
One seed is drawn (the smallest; the standard variant). Set-up, layout (constrained, titles wrapped
to the figure's width) and saving are the pipeline's (:mod:`pipeline.core.figures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import BASE_VARIANT
from pipeline.core.figures import pyplot, save_figure, subplots, suptitle
from pipeline.dynamics.stats import ecdf  # torch-free: the figures job needs no torch

__all__ = ["FIGURES", "read_tables", "draw", "composite_curves", "consistency_heatmap",
           "consistency_ecdf", "eigen_spectra", "trajectories", "select"]

plt = pyplot()

CONTOUR_LEVEL = 0.8


def read_tables(*, composite, pointwise, trajectories=None, sgd_noise=None) -> dict[str, pd.DataFrame]:
    """The aggregated tables, each checked against its schema: a damaged or foreign table is refused
    with its name and the remedy (:func:`pipeline.core.tables.read_table`)."""
    from pipeline.core.tables import read_table
    from pipeline.dynamics import tables as T

    paths = {"composite": (composite, T.COMPOSITE), "pointwise": (pointwise, T.POINTWISE),
             "trajectories": (trajectories, T.TRAJECTORIES), "sgd_noise": (sgd_noise, T.SGD_NOISE)}
    return {name: read_table(path, schema) for name, (path, schema) in paths.items() if path}


def select(df: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    """Rows of one pair, the standard variant and the smallest seed."""
    df = df[(df["dataset"] == dataset) & (df["model"] == model) & (df["variant"] == BASE_VARIANT)]
    if df.empty:
        return df
    return df[df["seed"] == df["seed"].min()]


def _corruptions(df: pd.DataFrame) -> list[float]:
    return sorted(df["corruption"].unique())


def _axes(rows: int, cols: int, w: float = 3.6, h: float = 3.0):
    return subplots(rows, cols, panel_width=w, panel_height=h)


def _empty(message: str):
    fig, axes = subplots(1, 1, panel_width=5, panel_height=2)
    ax = axes[0, 0]
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def composite_curves(comp: pd.DataFrame, dataset: str, model: str, split: str = "test"):
    """Accuracy (top) and cross-entropy (bottom) of C(T_final, t) vs t, one line per depth."""
    df = select(comp, dataset, model)
    df = df[(df["split"] == split) & (df["subset"] == "all") & (df["label_source"] == "true")]
    if df.empty:
        return _empty(f"no composite rows for {dataset}/{model} on {split}")
    cs = _corruptions(df)
    fig, axes = _axes(2, len(cs))
    for j, c in enumerate(cs):
        d = df[df["corruption"] == c]
        T = int(d["deep_epoch"].max())
        d = d[d["deep_epoch"] == T]
        for i, measure in enumerate(("accuracy", "cross_entropy")):
            ax = axes[i, j]
            for depth in d["depth"].unique():
                line = d[d["depth"] == depth].sort_values("shallow_epoch")
                ax.plot(line["shallow_epoch"], line[measure], marker="o", ms=3, label=depth,
                        gid=f"{measure}|{c:g}|{depth}")
            full = d[d["shallow_epoch"] == T][measure]
            if len(full):
                ax.axhline(float(full.iloc[0]), ls="--", color="grey", lw=1, gid=f"{measure}|{c:g}|full")
            ax.set_xlabel("shallow epoch t")
            ax.set_ylabel(measure.replace("_", " "))
            if i == 0:
                ax.set_title(f"corruption {c:g}: C({T}, t) on {split}")
        axes[0, j].legend(fontsize=7, title="depth d", title_fontsize=7)
    suptitle(fig, f"{dataset} / {model}: composites with the final deep part")
    return fig


def heatmap_matrix(d: pd.DataFrame, measure: str = "consistency_vs_deep"):
    """``(deep epochs, shallow epochs, matrix[deep, shallow])`` of one depth's rows."""
    pivot = d.pivot_table(index="deep_epoch", columns="shallow_epoch", values=measure, aggfunc="first")
    return pivot.index.to_numpy(), pivot.columns.to_numpy(), pivot.to_numpy(dtype=float)


def consistency_heatmap(comp: pd.DataFrame, dataset: str, model: str, depth: str | None = None,
                        split: str = "test"):
    """consistency_vs_deep over (deep, shallow) with the 0.8 contour, one panel per corruption."""
    df = select(comp, dataset, model)
    df = df[(df["split"] == split) & (df["subset"] == "all") & (df["label_source"] == "true")]
    if df.empty:
        return _empty(f"no composite rows for {dataset}/{model} on {split}")
    depth = depth if depth is not None else df["depth"].iloc[0]
    df = df[df["depth"] == depth]
    cs = _corruptions(df)
    fig, axes = _axes(1, len(cs), w=4.0, h=3.6)
    for j, c in enumerate(cs):
        ax = axes[0, j]
        deep, shallow, M = heatmap_matrix(df[df["corruption"] == c])
        im = ax.imshow(M, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
                       extent=(-0.5, len(shallow) - 0.5, -0.5, len(deep) - 0.5))
        im.set_gid(f"consistency|{c:g}|{depth}")
        if len(deep) > 1 and len(shallow) > 1 and np.isfinite(M).any():
            cs_ = ax.contour(np.arange(len(shallow)), np.arange(len(deep)), np.nan_to_num(M, nan=0.0),
                             levels=[CONTOUR_LEVEL], colors="white", linewidths=1.2)
            cs_.set_gid(f"contour|{c:g}|{depth}")
        ax.set_xticks(range(len(shallow)), [str(int(e)) for e in shallow], rotation=90, fontsize=6)
        ax.set_yticks(range(len(deep)), [str(int(e)) for e in deep], fontsize=6)
        ax.set_xlabel("shallow epoch t1")
        ax.set_ylabel("deep epoch t2")
        ax.set_title(f"corruption {c:g}, depth {depth}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    suptitle(fig, f"{dataset} / {model}: P[C(t2, t1) = f(theta_t2)] on {split} "
                  f"(white: {CONTOUR_LEVEL} contour)")
    return fig


def _first_window(d: pd.DataFrame) -> pd.DataFrame:
    run = list(d.columns[:5])
    wins = d[run + ["window_start", "deep_epoch"]].drop_duplicates().sort_values(run + ["window_start", "deep_epoch"])
    first = wins.groupby(run, dropna=False).head(1)
    return d.merge(first, on=run + ["window_start", "deep_epoch"])


def consistency_ecdf(point: pd.DataFrame, dataset: str, model: str, depth: str | None = None,
                     reference: str = "paper"):
    """ECDFs of point-wise consistency: test (per corruption) and train clean vs corrupted."""
    df = select(point, dataset, model)
    df = df[df["reference"] == reference]
    if df.empty:
        return _empty(f"no point-wise consistency for {dataset}/{model} (no windows configured?)")
    depth = depth if depth is not None else df["depth"].iloc[0]
    df = _first_window(df[df["depth"] == depth])
    splits = [s for s in ("test", "train") if s in set(df["split"])] + sorted(
        s for s in set(df["split"]) if s not in ("test", "train"))
    fig, axes = _axes(1, len(splits))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, split in enumerate(splits):
        ax = axes[0, j]
        d = df[df["split"] == split]
        for k, c in enumerate(_corruptions(d)):
            dc = d[d["corruption"] == c]
            groups = [("all", dc)] if split != "train" or c == 0 else [
                (s, dc[dc["subset"] == s]) for s in ("clean", "corrupted")]
            for subset, g in groups:
                if g.empty:
                    continue
                x, F = ecdf(g["consistency"].to_numpy())
                ax.step(x, F, where="post", color=colors[k % len(colors)],
                        ls="-" if subset in ("all", "clean") else "--",
                        label=f"{c:g}" + ("" if subset == "all" else f" {subset}"),
                        gid=f"ecdf|{split}|{c:g}|{subset}")
        w = d.iloc[0]
        ax.set_title(f"{split}: Cons(x; {int(w['window_start'])}, {int(w['deep_epoch'])})", fontsize=9)
        ax.set_xlabel("point-wise consistency")
        ax.set_ylabel("ECDF")
        ax.set_xlim(-0.02, 1.02)
        ax.legend(fontsize=7, title="corruption", title_fontsize=7)
    suptitle(fig, f"{dataset} / {model}, depth {depth}: point-wise consistency (reference {reference})")
    return fig


def spectrum_means(d: pd.DataFrame) -> np.ndarray:
    """Mean over inputs of ``eig_i / trace`` for i = 1..k (NaN columns dropped)."""
    eig = d[[c for c in d.columns if c.startswith("eig_")]].to_numpy(dtype=float)
    eig = eig[:, np.isfinite(eig).any(axis=0)] if len(eig) else eig
    ratio = eig / d["trace"].to_numpy(dtype=float)[:, None]
    m = np.nanmean(ratio, axis=0) if len(ratio) else ratio
    return m[np.isfinite(m)]


def eigen_spectra(sgd: pd.DataFrame, dataset: str, model: str):
    """Normalized top-k eigen-spectra, one panel per (corruption, depth), one line per source."""
    df = select(sgd, dataset, model)
    if df.empty:
        return _empty(f"no sgd_noise rows for {dataset}/{model}")
    cs, depths = _corruptions(df), list(df["depth"].unique())
    fig, axes = _axes(len(cs), len(depths))
    for i, c in enumerate(cs):
        for j, depth in enumerate(depths):
            ax = axes[i, j]
            d = df[(df["corruption"] == c) & (df["depth"] == depth)]
            for source in ("sgd", "gaussian", "param_isotropic"):
                m = spectrum_means(d[d["source"] == source])
                if m.size:
                    pr = d[d["source"] == source]["participation_ratio"].mean()
                    ax.plot(np.arange(1, m.size + 1), m, marker="o", ms=3,
                            label=f"{source} (PR {pr:.1f})", gid=f"spectrum|{c:g}|{depth}|{source}")
            ax.set_yscale("log")
            ax.set_xlabel("eigenvalue rank")
            ax.set_ylabel("eigenvalue / trace")
            ax.set_title(f"corruption {c:g}, {depth} (D={int(d['dim'].iloc[0])}, N={int(d['n_updates'].iloc[0])})",
                         fontsize=8)
            ax.legend(fontsize=6)
    suptitle(fig, f"{dataset} / {model}: one-step SGD noise vs isotropic controls")
    return fig


def region_grid(d: pd.DataFrame):
    """``(z1 values, z2 values, labels[z2, z1])`` of one run's region rows."""
    d = d.sort_values("sample_index")
    z1, z2 = np.unique(d["z1"].to_numpy()), np.unique(d["z2"].to_numpy())
    return z1, z2, d["label"].to_numpy().reshape(len(z2), len(z1))


def trajectories(traj: pd.DataFrame, dataset: str, model: str):
    """2-D feature trajectories over the final deep part's decision regions, one panel per corruption."""
    df = select(traj, dataset, model)
    if df.empty:
        return _empty(f"no 2-D trajectories for {dataset}/{model}")
    cs = _corruptions(df)
    fig, axes = _axes(1, len(cs), w=4.2, h=4.0)
    cmap = plt.get_cmap("tab10")
    for j, c in enumerate(cs):
        ax = axes[0, j]
        d = df[df["corruption"] == c]
        depth = d["depth"].iloc[0]
        d = d[d["depth"] == depth]
        z1, z2, labels = region_grid(d[d["kind"] == "region"])
        im = ax.imshow(labels, origin="lower", cmap=cmap, vmin=-0.5, vmax=9.5, alpha=0.3, aspect="auto",
                       extent=(z1[0], z1[-1], z2[0], z2[-1]), interpolation="nearest")
        im.set_gid(f"regions|{c:g}")
        tr = d[d["kind"] == "trajectory"]
        for i, g in tr.groupby("sample_index"):
            g = g.sort_values("epoch")
            lab = int(g["label"].iloc[0])
            ax.plot(g["z1"], g["z2"], lw=0.8, color=cmap(lab % 10),
                    ls="--" if bool(g["changed"].iloc[0]) else "-", gid=f"trajectory|{c:g}|{i}")
            ax.plot(g["z1"].iloc[-1], g["z2"].iloc[-1], "o", ms=3, color=cmap(lab % 10))
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        ax.set_title(f"corruption {c:g}: regions at epoch {int(d[d['kind'] == 'region']['epoch'].iloc[0])}",
                     fontsize=9)
    suptitle(fig, f"{dataset} / {model}: 2-D feature trajectories (dashed: corrupted label)")
    return fig


FIGURES = {
    "composite_curves": lambda t, ds, m, depth: composite_curves(t["composite"], ds, m),
    "consistency_heatmap": lambda t, ds, m, depth: consistency_heatmap(t["composite"], ds, m, depth),
    "consistency_ecdf": lambda t, ds, m, depth: consistency_ecdf(t["pointwise"], ds, m, depth),
    "eigen_spectra": lambda t, ds, m, depth: eigen_spectra(t["sgd_noise"], ds, m),
    "trajectories": lambda t, ds, m, depth: trajectories(t["trajectories"], ds, m),
}


def draw(figures: Sequence[str], outs: Sequence[str | Path], tables: Mapping[str, pd.DataFrame], *,
         dataset: str, model: str, depth: str | None = None, dpi: int = 120) -> list[Path]:
    if len(figures) != len(outs):
        raise ValueError(f"{len(figures)} figures but {len(outs)} output paths")
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        raise ValueError(f"unknown dynamics figures {unknown}; allowed: {list(FIGURES)}")
    return [save_figure(FIGURES[name](tables, dataset, model, depth), out, dpi=dpi)
            for name, out in zip(figures, outs, strict=True)]
