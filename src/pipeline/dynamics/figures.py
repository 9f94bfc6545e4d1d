"""Feature-dynamics figures, drawn from the aggregated tables only (``results/tables/``).

One figures job per (dataset, model) pair draws (``results/plots/dynamics/<dataset>/<model>/``),
the composites on ``dynamics.figures.split`` (default the training set, as the paper's Figs. 2-5;
accuracy there against the labels trained on, ``label_source="corrupted"``):

* ``memory`` -- paper Fig. 2 (and 10): cross-entropy and accuracy of C(T2, t1) against t1 <= T2 with
  the deep part at the memory window's T2, and the point-wise consistency over the window
  ``[T1, T2]`` (ECDF), one row per corruption, one line per depth.
* ``transferability`` -- Figs. 5 and 13: the same with the deep part at the transferability window's
  T2 and the shallow epochs t2 >= T2, and the consistency over ``[T2, T1]``.
* ``composite_curves`` -- forgetting, Figs. 4 and 12: C(T_final, t) against every shallow epoch t;
  the full network f(theta_final) as a dashed line.
* ``consistency_heatmap`` -- P[C(t2, t1) = f(theta_t1)] (the Fig. 3 caption's reference) over the
  (deep, shallow) grid at one depth with the 0.8 contour, one panel per corruption.
* ``consistency_ecdf`` -- ECDFs of the point-wise consistency over the memory window (the window the
  config names, labelled with its span and checkpoint count) per corruption: test set, blurred test
  set, and training samples clean vs corrupted (Fig. 7). ECDFs instead of the paper's KDE: the
  values lie in [0, 1] with an atom at 1, which a KDE smears across the boundary.
* ``eigen_spectra`` -- the top-k covariance eigenvalues over the trace (mean over inputs) of one-step
  SGD noise against the isotropic Gaussian and the parameter-space control (Figs. 8, 15).
* ``trajectories`` -- 2-D bottleneck features of training samples across epochs over the decision
  regions of the final deep part (Fig. 6).
* ``feature_pca`` -- Fig. 11: training samples' features across the induction window on their two
  principal directions, coloured by epoch.
* ``induction`` -- Fig. 14: the same points coloured by the class the window's final deep part
  assigns, with the perturbed points (light) around them and the share classified alike.

Windows of runs drawn side by side are the same ``[T1, T2]`` with the same number of checkpoints
(the tables job refuses others, :mod:`pipeline.dynamics.windows`). Every drawn line / image carries
``gid`` naming what it shows, so tests can compare it to the table. One seed is drawn (the smallest;
the standard variant). Set-up, layout (constrained, titles wrapped to the figure's width) and saving
are the pipeline's (:mod:`pipeline.core.figures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import BASE_VARIANT
from pipeline.core.figures import pyplot, save_figure, subplots, suptitle
from pipeline.dynamics.corruptions import parse_corruption_set  # torch-free, like the two below
from pipeline.dynamics.stats import ecdf  # torch-free: the figures job needs no torch
from pipeline.dynamics.windows import resolve_window, run_final_epochs, select_window, window_label

__all__ = ["FIGURES", "read_tables", "draw", "composite_curves", "consistency_heatmap",
           "consistency_ecdf", "eigen_spectra", "trajectories", "select", "memory", "transferability",
           "feature_pca", "induction"]

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


def _label_source(split: str) -> str:
    """Accuracy against the labels trained on for the training set, the true labels elsewhere."""
    return "corrupted" if split == "train" else "true"


def _composites_on(comp: pd.DataFrame, dataset: str, model: str, split: str) -> pd.DataFrame:
    df = select(comp, dataset, model)
    return df[(df["split"] == split) & (df["subset"] == "all")
              & (df["label_source"] == _label_source(split))]


def _curves(ax_ce, ax_acc, d: pd.DataFrame, deep_epoch: int, shallow_ok, c: float, tag: str) -> None:
    """Cross-entropy and accuracy of C(deep_epoch, t) against t (where ``shallow_ok(t)``), per depth."""
    d = d[d["deep_epoch"] == deep_epoch]
    for depth in d["depth"].unique():
        line = d[(d["depth"] == depth) & shallow_ok(d["shallow_epoch"])].sort_values("shallow_epoch")
        for ax, measure in ((ax_ce, "cross_entropy"), (ax_acc, "accuracy")):
            ax.plot(line["shallow_epoch"], line[measure], marker="o", ms=3, label=depth,
                    gid=f"{tag}|{measure}|{c:g}|{depth}")
    for ax, measure in ((ax_ce, "cross_entropy"), (ax_acc, "accuracy")):
        ax.set_ylabel(measure.replace("_", " "))


def composite_curves(comp: pd.DataFrame, dataset: str, model: str, split: str = "train"):
    """Forgetting (Figs. 4, 12): accuracy (top) and cross-entropy (bottom) of C(T_final, t) vs t, one
    line per depth."""
    df = _composites_on(comp, dataset, model, split)
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
    suptitle(fig, f"{dataset} / {model}: forgetting, composites with the final deep part "
                  f"({split} set, labels {_label_source(split)})")
    return fig


def heatmap_matrix(d: pd.DataFrame, measure: str = "consistency_vs_shallow"):
    """``(deep epochs, shallow epochs, matrix[deep, shallow])`` of one depth's rows."""
    pivot = d.pivot_table(index="deep_epoch", columns="shallow_epoch", values=measure, aggfunc="first")
    return pivot.index.to_numpy(), pivot.columns.to_numpy(), pivot.to_numpy(dtype=float)


def consistency_heatmap(comp: pd.DataFrame, dataset: str, model: str, depth: str | None = None,
                        split: str = "train", measure: str = "consistency_vs_shallow"):
    """Consistency over (deep, shallow) with the 0.8 contour, one panel per corruption. Default: the
    Fig. 3 caption's P[C(t2, t1) = f(theta_t1)] (``consistency_vs_shallow``)."""
    df = select(comp, dataset, model)
    df = df[(df["split"] == split) & (df["subset"] == "all")]
    if df.empty:
        return _empty(f"no composite rows for {dataset}/{model} on {split}")
    df = df[df["label_source"] == df["label_source"].iloc[0]]  # consistency does not depend on it
    depth = depth if depth is not None else df["depth"].iloc[0]
    df = df[df["depth"] == depth]
    cs = _corruptions(df)
    fig, axes = _axes(1, len(cs), w=4.0, h=3.6)
    for j, c in enumerate(cs):
        ax = axes[0, j]
        deep, shallow, M = heatmap_matrix(df[df["corruption"] == c], measure)
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
    ref = "f(theta_t1)" if measure == "consistency_vs_shallow" else "f(theta_t2)"
    suptitle(fig, f"{dataset} / {model}: P[C(t2, t1) = {ref}] on {split} "
                  f"(white: {CONTOUR_LEVEL} contour)")
    return fig


def _window_rows(point: pd.DataFrame, comp: pd.DataFrame, window) -> pd.DataFrame:
    """The point-wise rows of the configured ``window`` in each run (``final`` resolved per run)."""
    if window is None or point.empty:
        return point.iloc[0:0]
    return select_window(point, window, run_final_epochs(comp, point))


def _ecdf_panel(ax, rows: pd.DataFrame, c: float, gid: str, color=None) -> None:
    for depth in rows["depth"].unique():
        x, F = ecdf(rows[rows["depth"] == depth]["consistency"].to_numpy())
        ax.step(x, F, where="post", label=depth, color=color, gid=f"{gid}|{c:g}|{depth}")
    ax.set_xlabel("point-wise consistency")
    ax.set_ylabel("ECDF")
    ax.set_xlim(-0.02, 1.02)


def _window_figure(comp: pd.DataFrame, point: pd.DataFrame, dataset: str, model: str, *, window,
                   split: str, kind: str):
    """Memory (``kind="memory"``) or transferability figure: per corruption, (a) cross-entropy and
    (b) accuracy of C(T2, t) against t on the window's side of T2, (c) the consistency over the
    window."""
    df = _composites_on(comp, dataset, model, split)
    if df.empty:
        return _empty(f"no composite rows for {dataset}/{model} on {split}")
    pts = select(point, dataset, model)
    # every sample of the window (a noisy run's training samples are tagged clean / corrupted)
    pts = pts[(pts["split"] == split) & (pts["reference"] == "paper")] if not pts.empty else pts
    rows = _window_rows(pts, comp, window)
    finals = run_final_epochs(select(comp, dataset, model))
    cs = _corruptions(df)
    fig, axes = _axes(len(cs), 3, w=3.4, h=2.8)
    for i, c in enumerate(cs):
        d = df[df["corruption"] == c]
        run = tuple(d.iloc[0][["dataset", "model", "corruption", "seed", "variant"]])
        if window is not None:
            t1, t2 = resolve_window(window, finals[run])
        else:  # no window configured: the curves only, at the last (memory) or first (transfer) deep epoch
            deeps = sorted(d["deep_epoch"].unique())
            t1 = t2 = int(deeps[-1] if kind == "memory" or len(deeps) == 1 else deeps[0])
        if kind == "memory":
            ok, xlabel, name = (lambda s, T=t2: s <= T), "shallow epoch t1 (deep part at T2)", "t1"
        else:
            ok, xlabel, name = (lambda s, T=t2: s >= T), "shallow epoch t2 (deep part at T1)", "t2"
        _curves(axes[i, 0], axes[i, 1], d, t2, ok, c, kind)
        for ax in axes[i, :2]:
            ax.set_xlabel(xlabel, fontsize=8)
        axes[i, 0].set_title(f"corruption {c:g}: (a) C({t2}, {name})", fontsize=9)
        axes[i, 1].set_title(f"(b) accuracy, labels {_label_source(split)}", fontsize=9)
        axes[i, 0].legend(fontsize=7, title="depth d", title_fontsize=7)
        r = rows[rows["corruption"] == c] if not rows.empty else rows
        ax = axes[i, 2]
        if r.empty:
            ax.text(0.5, 0.5, "no consistency window\n" + ("configured" if window is None else
                    f"{list(window)} in this run"), ha="center", va="center", fontsize=8)
            ax.set_axis_off()
            continue
        r = r[r["seed"] == r["seed"].min()]
        _ecdf_panel(ax, r, c, f"{kind}_ecdf")
        n = int(r["n_epochs"].iloc[0])
        ax.set_title(f"(c) Cons(x) over {window_label(t1, t2, n)}", fontsize=9)
        ax.legend(fontsize=7, title="depth d", title_fontsize=7)
    what = "memory (Fig. 2)" if kind == "memory" else "transferability (Figs. 5, 13)"
    suptitle(fig, f"{dataset} / {model}: {what} on the {split} set")
    return fig


def memory(comp: pd.DataFrame, point: pd.DataFrame, dataset: str, model: str, window=None,
           split: str = "train"):
    """Paper Fig. 2: C(T2, t1) against t1 <= T2 and Cons(x) over the memory window [T1, T2]."""
    return _window_figure(comp, point, dataset, model, window=window, split=split, kind="memory")


def transferability(comp: pd.DataFrame, point: pd.DataFrame, dataset: str, model: str, window=None,
                    split: str = "train"):
    """Paper Figs. 5, 13: C(T2, t2) against t2 >= T2 (the earlier deep part fixed) and Cons(x) over
    the transferability window [T1, T2], T1 > T2."""
    return _window_figure(comp, point, dataset, model, window=window, split=split, kind="transfer")


def consistency_ecdf(point: pd.DataFrame, dataset: str, model: str, depth: str | None = None,
                     reference: str = "paper", *, window=None, composite: pd.DataFrame | None = None):
    """ECDFs of point-wise consistency over ``window`` (the configured [T1, T2]; ``final`` resolved per
    run from ``composite``): test (per corruption) and train clean vs corrupted (Fig. 7)."""
    df = select(point, dataset, model)
    df = df[df["reference"] == reference]
    if df.empty:
        return _empty(f"no point-wise consistency for {dataset}/{model} (no windows configured?)")
    if window is None:
        return _empty(f"{dataset}/{model}: no consistency window named (dynamics.figures.memory_window)")
    df = select_window(df, window, run_final_epochs(composite, df))
    if df.empty:
        return _empty(f"{dataset}/{model}: no run computed the window {list(window)}")
    depth = depth if depth is not None else df["depth"].iloc[0]
    df = df[df["depth"] == depth]
    # the corrupted test sets (test_corrupted: up to 15 x 5 of them) have their own figure
    # (corruption_figures.corruption_consistency, Figs. 16/17); one panel each here would be unreadable
    present = {s for s in set(df["split"]) if parse_corruption_set(s) is None}
    splits = [s for s in ("test", "train") if s in present] + sorted(present - {"test", "train"})
    fig, axes = _axes(1, len(splits))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, split in enumerate(splits):
        ax = axes[0, j]
        d = df[df["split"] == split]
        spans = []
        for k, c in enumerate(_corruptions(d)):
            dc = d[d["corruption"] == c]
            w = dc.iloc[0]
            spans.append(window_label(int(w["window_start"]), int(w["deep_epoch"]), int(w["n_epochs"])))
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
        ax.set_title(f"{split}: Cons(x) over " + " / ".join(dict.fromkeys(spans)), fontsize=9)
        ax.set_xlabel("point-wise consistency")
        ax.set_ylabel("ECDF")
        ax.set_xlim(-0.02, 1.02)
        ax.legend(fontsize=7, title="corruption", title_fontsize=7)
    suptitle(fig, f"{dataset} / {model}, depth {depth}: point-wise consistency over the window "
                  f"{list(window)} (reference {reference})")
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
            # one epoch per panel, the last measured (sgd_noise_epochs draws every epoch, Fig. 15):
            # averaging spectra of different epochs would draw a spectrum no network had
            epoch = int(d["epoch"].max()) if not d.empty else None
            d = d[d["epoch"] == epoch]
            for source in ("sgd", "gaussian", "param_isotropic"):
                m = spectrum_means(d[d["source"] == source])
                if m.size:
                    pr = d[d["source"] == source]["participation_ratio"].mean()
                    ax.plot(np.arange(1, m.size + 1), m, marker="o", ms=3,
                            label=f"{source} (PR {pr:.1f})", gid=f"spectrum|{c:g}|{depth}|{source}")
            ax.set_yscale("log")
            ax.set_xlabel("eigenvalue rank")
            ax.set_ylabel("eigenvalue / trace")
            ax.set_title(f"corruption {c:g}, {depth}, epoch {epoch}\n"
                         f"(D={int(d['dim'].iloc[0])}, N={int(d['n_updates'].iloc[0])})", fontsize=8)
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


def _induction_rows(traj: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    df = select(traj, dataset, model)
    return df[df["kind"].isin(("pca", "perturbed"))] if not df.empty else df


def induction_stability(d: pd.DataFrame) -> float:
    """Share of perturbed points classified like their unperturbed point (one run, one depth):
    perturbed ``sample_index // draws`` is the sample (:mod:`pipeline.dynamics.trajectories`)."""
    pca, pert = d[d["kind"] == "pca"], d[d["kind"] == "perturbed"]
    if pert.empty:
        return float("nan")
    per_epoch = pca[pca["epoch"].isin(pert["epoch"].unique())]
    draws = len(pert) // len(per_epoch)
    p = pert.assign(sample_index=pert["sample_index"] // draws)
    m = p.merge(pca[["epoch", "sample_index", "label"]], on=["epoch", "sample_index"],
                suffixes=("", "_unperturbed"))
    return float((m["label"] == m["label_unperturbed"]).mean())


def feature_pca(traj: pd.DataFrame, dataset: str, model: str):
    """Fig. 11: the sampled training features across epochs on their two principal directions,
    coloured by epoch, one panel per corruption."""
    df = _induction_rows(traj, dataset, model)
    df = df[df["kind"] == "pca"] if not df.empty else df
    if df.empty:
        return _empty(f"no feature trajectories for {dataset}/{model} (dynamics.induction)")
    cs = _corruptions(df)
    fig, axes = _axes(1, len(cs), w=4.2, h=3.8)
    for j, c in enumerate(cs):
        ax = axes[0, j]
        d = df[df["corruption"] == c]
        lo, hi = int(d["epoch"].min()), int(d["epoch"].max())
        for i, g in d.groupby("sample_index"):
            g = g.sort_values("epoch")
            ax.plot(g["z1"], g["z2"], lw=0.6, color="grey", gid=f"pca|{c:g}|{i}")
        sc = ax.scatter(d["z1"], d["z2"], c=d["epoch"], cmap="viridis", s=10, vmin=lo, vmax=max(hi, lo + 1))
        sc.set_gid(f"pca_points|{c:g}")
        fig.colorbar(sc, ax=ax, fraction=0.046, label="epoch")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_title(f"corruption {c:g}, {d['depth'].iloc[0]}: epochs {lo}-{hi}", fontsize=9)
    suptitle(fig, f"{dataset} / {model}: training features across epochs on their two principal "
                  "directions (Fig. 11)")
    return fig


def induction(traj: pd.DataFrame, dataset: str, model: str):
    """Fig. 14: trajectory points (dark) and their uniform perturbations along the two principal
    directions (light), coloured by the class the window's final deep part assigns."""
    df = _induction_rows(traj, dataset, model)
    if df.empty:
        return _empty(f"no induction rows for {dataset}/{model} (dynamics.induction)")
    cs = _corruptions(df)
    fig, axes = _axes(1, len(cs), w=4.2, h=3.8)
    cmap = plt.get_cmap("tab10")
    for j, c in enumerate(cs):
        ax = axes[0, j]
        d = df[df["corruption"] == c]
        pca, pert = d[d["kind"] == "pca"], d[d["kind"] == "perturbed"]
        if len(pert):
            ax.scatter(pert["z1"], pert["z2"], c=[cmap(int(v) % 10) for v in pert["label"]], s=4,
                       alpha=0.25, gid=f"perturbed|{c:g}")
        ax.scatter(pca["z1"], pca["z2"], c=[cmap(int(v) % 10) for v in pca["label"]], s=14,
                   edgecolors="black", linewidths=0.4, gid=f"trajectory_points|{c:g}")
        deep = int(pca["epoch"].max())
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_title(f"corruption {c:g}: deep part at {deep}; perturbed classified alike "
                     f"{induction_stability(d):.2f}", fontsize=8)
    suptitle(fig, f"{dataset} / {model}: feature trajectories and uniform perturbations along the "
                  "principal directions, coloured by predicted class (Fig. 14)")
    return fig


def _o(options: Mapping | None, key: str, default=None):
    """``options[key]``, or ``default`` where it is absent or null."""
    value = (options or {}).get(key)
    return default if value is None else value


FIGURES = {
    "memory": lambda t, ds, m, depth, o=None: memory(
        t["composite"], t["pointwise"], ds, m, _o(o, "memory_window"), _o(o, "split", "train")),
    "transferability": lambda t, ds, m, depth, o=None: transferability(
        t["composite"], t["pointwise"], ds, m, _o(o, "transfer_window"), _o(o, "split", "train")),
    "composite_curves": lambda t, ds, m, depth, o=None: composite_curves(
        t["composite"], ds, m, _o(o, "split", "train")),
    "consistency_heatmap": lambda t, ds, m, depth, o=None: consistency_heatmap(
        t["composite"], ds, m, depth, _o(o, "split", "train")),
    "consistency_ecdf": lambda t, ds, m, depth, o=None: consistency_ecdf(
        t["pointwise"], ds, m, depth, window=_o(o, "memory_window"), composite=t["composite"]),
    "eigen_spectra": lambda t, ds, m, depth, o=None: eigen_spectra(t["sgd_noise"], ds, m),
    "trajectories": lambda t, ds, m, depth, o=None: trajectories(t["trajectories"], ds, m),
    "feature_pca": lambda t, ds, m, depth, o=None: feature_pca(t["trajectories"], ds, m),
    "induction": lambda t, ds, m, depth, o=None: induction(t["trajectories"], ds, m),
}


def draw(figures: Sequence[str], outs: Sequence[str | Path], tables: Mapping[str, pd.DataFrame], *,
         dataset: str, model: str, depth: str | None = None, dpi: int = 120,
         options: Mapping | None = None) -> list[Path]:
    """Draw ``figures`` into ``outs``; ``options``: ``dynamics.figures`` with its windows resolved
    (:func:`pipeline.dynamics.windows.figure_options`)."""
    if len(figures) != len(outs):
        raise ValueError(f"{len(figures)} figures but {len(outs)} output paths")
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        raise ValueError(f"unknown dynamics figures {unknown}; allowed: {list(FIGURES)}")
    return [save_figure(FIGURES[name](tables, dataset, model, depth, options), out, dpi=dpi)
            for name, out in zip(figures, outs, strict=True)]
