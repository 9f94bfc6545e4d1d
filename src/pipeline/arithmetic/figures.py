"""The arithmetic figures, drawn from the aggregated tables only (matplotlib, Agg).

Every ``fig_<name>`` takes the tables it needs and returns a Figure whose lines / bars hold the
table's values (the tests read them back); :func:`draw` saves the ones named. What a figure shows
(``grid.figure_names`` lists which the workflow draws):

``width``          test accuracy vs width M per (alpha, noise mode), raw (solid) and FF's G (dashed)
``vs_<key>``       test accuracy vs weight decay / activation / optimizer / task, at the largest width
``epochs``         accuracy over epochs on the four sets (clean vs noisy memorization order)
``ff_bars``        raw / G / R x the four sets at the last epoch
``controls``       test and noisy-given accuracy of raw, G, R and the controls (random frequency,
                   permuted inputs, initial weights) and the activation swaps
``ipr_hist``       per-neuron IPR (paper's, of w_m; the DC convention the partition used) at the last epoch, per alpha
``str_hist``       per-neuron strength Str_m at the last epoch, per alpha
``pruning``        accuracy on the four sets vs fraction of neurons kept, per score (columns) and alpha (rows)
``phase_scatter``  phi_a + phi_b (phi_a - phi_b for sub) vs phi_c of each neuron's dominant frequency
``tied``           tied U = V: raw and G on noisy-given and test labels, asymmetric vs symmetric noise
``memorization_order``  the digits 3-layer MLP: accuracy on the four sets per epoch

"Reference cells": where a figure shows one cell per alpha, it takes the untied cells (if any) of
the largest width with the first value (sorted) of every other grid key; accuracies are means over
seeds where a figure pools cells.

Set-up, layout (constrained) and saving are the pipeline's (:mod:`pipeline.core.figures`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.arithmetic.data import SPLITS
from pipeline.arithmetic.grid import SWEPT
from pipeline.arithmetic.tables import KEY_COLUMNS
from pipeline.core.figures import save_figure, subplots

CELL = list(KEY_COLUMNS)
OTHER = ["task", "P", "train_fraction", "activation", "optimizer", "weight_decay"]
COLORS = {"train_clean": "tab:blue", "train_noisy_given": "tab:red", "train_noisy_true": "tab:orange",
          "test": "tab:green"}
SPLIT_LABEL = {"train_clean": "clean train", "train_noisy_given": "noisy train (given labels)",
               "train_noisy_true": "noisy train (true labels)", "test": "test"}


def last_epoch(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each cell's last epoch."""
    last = df.groupby(CELL, observed=True)["epoch"].transform("max")
    return df[df["epoch"] == last]


def cells(df: pd.DataFrame) -> pd.DataFrame:
    return df[CELL].drop_duplicates().sort_values(CELL).reset_index(drop=True)


def _untied(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["tied"]] if (~df["tied"]).any() else df


def reference(df: pd.DataFrame, *, vary: tuple[str, ...] = ("alpha", "noise_mode")) -> pd.DataFrame:
    """Rows of the reference cells: untied, largest width unless varied, the first value of every
    other key (seeds kept)."""
    df = _untied(df)
    if "width" not in vary:
        df = df[df["width"] == df["width"].max()]
    for key in OTHER:
        if key not in vary and len(df):
            df = df[df[key] == sorted(df[key].unique())[0]]
    return df


def reference_cells(df: pd.DataFrame) -> list[dict]:
    """One cell (first seed) per (alpha, noise mode) of :func:`reference`."""
    ref = cells(reference(df))
    ref = ref.drop_duplicates(["alpha", "noise_mode"])
    return ref.to_dict("records")


def _select(df: pd.DataFrame, cell: dict) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k in CELL:
        mask &= (df[k] == cell[k]).to_numpy()
    return df[mask]


def _cell_title(cell: dict) -> str:
    return (f"{cell['task']} P={cell['P']} M={cell['width']} {cell['activation']}"
            f"{' tied' if cell['tied'] else ''}\nalpha={cell['alpha']:g} {cell['noise_mode']}")


def _whole(results: pd.DataFrame, network: str) -> pd.DataFrame:
    return results[(results["network"] == network) & (results["score"] == "none")]


def _grid(n: int, *, width: float = 3.6, height: float = 3.0, ncols: int | None = None):
    ncols = ncols or min(n, 4)
    nrows = max(1, -(-n // ncols))
    fig, axes = subplots(nrows, ncols, panel_width=width, panel_height=height)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _legend(axes, **kw) -> None:
    """One legend (on the first axes) with every label drawn on any of them."""
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        axes[0].legend(list(handles.values()), list(handles), **kw)


def _empty(message: str):
    fig, (ax,) = _grid(1)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


# ----------------------------------------------------------------------------- sweeps

def sweep_values(results: pd.DataFrame, key: str) -> pd.DataFrame:
    """Test accuracy of raw and G at the last epoch vs ``key``, per (alpha, noise mode), mean over
    seeds, on the reference values of the other keys: columns key, alpha, noise_mode, network, accuracy."""
    df = last_epoch(results)
    df = df[(df["split"] == "test") & (df["score"] == "none") & df["network"].isin(["raw", "G"])]
    if key == "optimizer":
        # each optimizer at its own (lowest) weight decay: the paper grid runs Adam at 0 beside
        # AdamW's 0.1, and one common decay would leave a single optimizer
        df = reference(df, vary=("alpha", "noise_mode", key, "weight_decay"))
        df = df[df["weight_decay"] == df.groupby("optimizer", observed=True)["weight_decay"].transform("min")]
    else:
        df = reference(df, vary=("alpha", "noise_mode", key))
    return (df.groupby([key, "alpha", "noise_mode", "network"], observed=True)["accuracy"].mean()
            .reset_index().sort_values([key, "alpha", "noise_mode", "network"]))


def fig_sweep(results: pd.DataFrame, key: str):
    data = sweep_values(results, key)
    fig, (ax,) = _grid(1, width=5.5, height=4.0)
    numeric = pd.api.types.is_numeric_dtype(data[key])
    values = sorted(data[key].unique())
    pos = {v: (v if numeric else i) for i, v in enumerate(values)}
    for i, ((alpha, mode), group) in enumerate(data.groupby(["alpha", "noise_mode"], observed=True)):
        color = f"C{i}"
        for network, style in (("raw", "-o"), ("G", "--s")):
            g = group[group["network"] == network].sort_values(key)
            ax.plot([pos[v] for v in g[key]], g["accuracy"].to_numpy(), style, color=color,
                    label=f"alpha={alpha:g} {mode} {network}")
    if key == "width":
        ax.set_xscale("log", base=2)
    if not numeric:
        ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_xlabel({"width": "width M", "weight_decay": "weight decay"}.get(key, key))
    ax.set_ylabel("test accuracy (last epoch)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"test accuracy vs {key}: raw (solid), FF G (dashed)")
    ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- per reference cell

def fig_epochs(log: pd.DataFrame):
    cs = reference_cells(log)
    fig, axes = _grid(len(cs))
    for ax, cell in zip(axes, cs, strict=True):
        g = _select(log, cell).sort_values("epoch")
        for split in SPLITS:
            y = g[f"acc_{split}"].to_numpy()
            if np.isfinite(y).any():
                ax.plot(g["epoch"].to_numpy(), y, color=COLORS[split], label=SPLIT_LABEL[split])
        ax.set_xscale("symlog", linthresh=10)
        ax.set_title(_cell_title(cell), fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
    _legend(axes, fontsize=7)
    return fig


def bar_values(results: pd.DataFrame, cell: dict, networks: list[str], splits=SPLITS) -> pd.DataFrame:
    """Accuracy per (network, split) of ``cell`` at its last epoch (whole networks only)."""
    df = last_epoch(_select(results, cell))
    df = df[(df["score"] == "none") & df["network"].isin(networks) & df["split"].isin(splits)]
    return df.set_index(["network", "split"])["accuracy"]


def _bars(ax, values: pd.Series, networks: list[str], splits) -> None:
    splits = [s for s in splits if any((n, s) in values.index for n in networks)]
    width = 0.8 / max(len(splits), 1)
    for j, split in enumerate(splits):
        heights = [float(values.get((n, split), np.nan)) for n in networks]
        ax.bar(np.arange(len(networks)) + (j - (len(splits) - 1) / 2) * width, heights, width,
               color=COLORS[split], label=SPLIT_LABEL[split])
    ax.set_xticks(range(len(networks)), networks, rotation=45 if len(networks) > 3 else 0, fontsize=7)
    ax.set_ylim(0, 1.02)


def fig_ff_bars(results: pd.DataFrame):
    cs = reference_cells(results)
    fig, axes = _grid(len(cs))
    nets = ["raw", "G", "R"]
    for ax, cell in zip(axes, cs, strict=True):
        _bars(ax, bar_values(results, cell, nets), nets, SPLITS)
        ax.set_title(_cell_title(cell), fontsize=8)
        ax.set_ylabel("accuracy (last epoch)")
    _legend(axes, fontsize=6)
    return fig


CONTROL_NETWORKS = ["raw", "G", "R", "G_randfreq", "perm_raw", "perm_G", "init_raw", "init_G"]


def fig_controls(results: pd.DataFrame):
    cs = reference_cells(results)
    fig, axes = _grid(len(cs), width=5.0)
    present = set(results["network"])
    nets = [n for n in CONTROL_NETWORKS if n in present] + sorted(n for n in present if n.startswith("swap_"))
    for ax, cell in zip(axes, cs, strict=True):
        _bars(ax, bar_values(results, cell, nets, ("train_noisy_given", "test")), nets,
              ("train_noisy_given", "test"))
        ax.set_title(_cell_title(cell), fontsize=8)
        ax.set_ylabel("accuracy (last epoch)")
    axes[0].legend(fontsize=6)
    return fig


def neuron_values(neurons: pd.DataFrame, column: str) -> dict[tuple, np.ndarray]:
    """``column`` at the last epoch of each reference cell, keyed by (alpha, noise mode)."""
    last = last_epoch(neurons)
    return {(c["alpha"], c["noise_mode"]): _select(last, c)[column].to_numpy() for c in reference_cells(neurons)}


def fig_hist(neurons: pd.DataFrame, column: str, label: str, *, log: bool = False):
    values = neuron_values(neurons, column)
    fig, (ax,) = _grid(1, width=5.5, height=4.0)
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()]) if values else np.array([])
    if log:
        finite = finite[finite > 0]
        bins = np.geomspace(finite.min(), finite.max(), 30) if finite.size else 10
        ax.set_xscale("log")
    else:
        bins = np.linspace(0, 1, 31) if column.startswith("ipr") else 30
    for (alpha, mode), v in values.items():
        ax.hist(v, bins=bins, histtype="step", linewidth=1.5, label=f"alpha={alpha:g} {mode}")
    ax.set_xlabel(label)
    ax.set_ylabel("neurons")
    ax.set_title(f"{label}\nat the last epoch (largest width)", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def ipr_column(results: pd.DataFrame) -> tuple[str, str]:
    """(neuron-table column, label) of the IPR convention the partition and pruning used: the DC bin
    left out when their scores are named ``*_nodc`` (config ``ipr_dc: false``), counted otherwise."""
    scores = set(results.loc[results["network"] == "prune", "score"])
    if "ipr_nodc" in scores or "ipr" not in scores:
        return "ipr_paper_nodc", "IPR of w_m (paper), DC bin left out"
    return "ipr_paper", "IPR of w_m (paper), DC bin counted"


def pruning_values(results: pd.DataFrame, cell: dict, score: str) -> pd.DataFrame:
    df = last_epoch(_select(results, cell))
    df = df[(df["network"] == "prune") & (df["score"] == score)]
    return df.sort_values("fraction")


def fig_pruning(results: pd.DataFrame):
    cs = reference_cells(results)
    scores = sorted(results.loc[results["network"] == "prune", "score"].unique())
    if not cs or not scores:
        return _empty("no pruning rows")
    fig, axes = _grid(len(cs) * len(scores), ncols=len(scores), width=3.2)
    for i, cell in enumerate(cs):
        for j, score in enumerate(scores):
            ax = axes[i * len(scores) + j]
            df = pruning_values(results, cell, score)
            for split in SPLITS:
                g = df[df["split"] == split]
                if len(g):
                    ax.plot(g["fraction"].to_numpy(), g["accuracy"].to_numpy(), "-o", ms=3,
                            color=COLORS[split], label=SPLIT_LABEL[split])
            ax.set_title(f"kept by {score}; alpha={cell['alpha']:g} {cell['noise_mode']}", fontsize=8)
            ax.set_xlabel("fraction of neurons kept")
            ax.set_ylim(-0.02, 1.02)
    _legend(axes, fontsize=6)
    return fig


def phase_values(neurons: pd.DataFrame, cell: dict) -> tuple[np.ndarray, np.ndarray]:
    """(phi_a +/- phi_b wrapped to (-pi, pi], phi_c) of each neuron of ``cell`` at its last epoch."""
    from pipeline.arithmetic.fourier import wrap

    df = last_epoch(_select(neurons, cell))
    sign = -1.0 if cell["task"] == "sub" else 1.0
    return wrap(df["phase_a"].to_numpy() + sign * df["phase_b"].to_numpy()), df["phase_c"].to_numpy()


def fig_phase_scatter(neurons: pd.DataFrame):
    cs = [c for c in reference_cells(neurons) if c["task"] in ("add", "sub")]
    if not cs:
        return _empty("phase check: add and sub only")
    fig, axes = _grid(len(cs), width=3.4, height=3.4)
    for ax, cell in zip(axes, cs, strict=True):
        x, y = phase_values(neurons, cell)
        ax.plot(x, y, ".", ms=3, alpha=0.6)
        ax.plot([-np.pi, np.pi], [-np.pi, np.pi], "k:", lw=0.8)
        ax.set_xlabel("phi_a - phi_b" if cell["task"] == "sub" else "phi_a + phi_b")
        ax.set_ylabel("phi_c")
        ax.set_title(_cell_title(cell), fontsize=8)
    return fig


def tied_values(results: pd.DataFrame) -> pd.DataFrame:
    """Tied cells with alpha > 0 at the last epoch: accuracy of raw and G on noisy-given and test,
    mean over seeds, per (alpha, noise mode)."""
    df = last_epoch(results)
    df = df[df["tied"] & (df["alpha"] > 0) & (df["score"] == "none") & df["network"].isin(["raw", "G"])
            & df["split"].isin(["train_noisy_given", "test"])]
    df = reference(df, vary=("alpha", "noise_mode", "tied"))
    return (df.groupby(["alpha", "noise_mode", "network", "split"], observed=True)["accuracy"].mean()
            .reset_index())


def fig_tied(results: pd.DataFrame):
    data = tied_values(results)
    if data.empty:
        return _empty("no tied cells with label noise")
    fig, axes = _grid(2, width=5.0, height=3.8)
    groups = data[["alpha", "noise_mode"]].drop_duplicates().sort_values(["alpha", "noise_mode"])
    names = [f"a={a:g}\n{m}" for a, m in groups.itertuples(index=False)]
    for ax, split in zip(axes, ["train_noisy_given", "test"], strict=True):
        for k, network in enumerate(["raw", "G"]):
            d = data[(data["split"] == split) & (data["network"] == network)].set_index(["alpha", "noise_mode"])
            heights = [float(d["accuracy"].get((a, m), np.nan)) for a, m in groups.itertuples(index=False)]
            ax.bar(np.arange(len(names)) + (k - 0.5) * 0.4, heights, 0.4, label=network)
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"tied U = V: {SPLIT_LABEL[split]}", fontsize=9)
    axes[0].legend(fontsize=7)
    return fig


def fig_memorization(memo: pd.DataFrame):
    alphas = sorted(memo["corruption"].unique())
    fig, axes = _grid(len(alphas), width=4.2)
    for ax, alpha in zip(axes, alphas, strict=True):
        g = memo[memo["corruption"] == alpha].sort_values("epoch")
        for split in SPLITS:
            ax.plot(g["epoch"].to_numpy(), g[f"acc_{split}"].to_numpy(), "-", color=COLORS[split],
                    label=SPLIT_LABEL[split])
        ax.set_title(f"{g['dataset'].iloc[0]} {g['model'].iloc[0]}, alpha={alpha:g}", fontsize=8)
        ax.set_xlabel("epoch (full batch)")
        ax.set_ylabel("accuracy")
    axes[0].legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- drawing

#: Every arithmetic figure: name -> how it is drawn from the tables (keys results, neurons, log,
#: memorization). ``vs_<key>`` exists for every key that can be swept (:data:`pipeline.arithmetic.grid.SWEPT`;
#: the workflow draws those whose key varies in the grid).
FIGURES: dict[str, Callable[[dict[str, pd.DataFrame]], Any]] = {
    "width": lambda t: fig_sweep(t["results"], "width"),
    **{f"vs_{key}": (lambda t, key=key: fig_sweep(t["results"], key)) for key in SWEPT},
    "epochs": lambda t: fig_epochs(t["log"]),
    "ff_bars": lambda t: fig_ff_bars(t["results"]),
    "controls": lambda t: fig_controls(t["results"]),
    "ipr_hist": lambda t: fig_hist(t["neurons"], *ipr_column(t["results"])),
    "str_hist": lambda t: fig_hist(t["neurons"], "strength", "strength Str_m", log=True),
    "pruning": lambda t: fig_pruning(t["results"]),
    "phase_scatter": lambda t: fig_phase_scatter(t["neurons"]),
    "tied": lambda t: fig_tied(t["results"]),
    "memorization_order": lambda t: fig_memorization(t["memorization"]),
}


def figure(name: str, tables: dict[str, pd.DataFrame]):
    """The Figure ``name`` (:data:`FIGURES`) from ``tables`` (keys results, neurons, log, memorization)."""
    if name not in FIGURES:
        fixed = sorted(n for n in FIGURES if not n.startswith("vs_"))
        raise ValueError(f"unknown arithmetic figure {name!r}; allowed: {fixed}, vs_<key> for key in {list(SWEPT)}")
    return FIGURES[name](tables)


def read_tables(results=None, neurons=None, log=None, memorization=None) -> dict[str, pd.DataFrame]:
    """The aggregated tables given, each checked against its schema: a damaged or foreign table is
    refused with its name and the remedy (:func:`pipeline.core.tables.read_table`)."""
    from pipeline.arithmetic.tables import LOG, MEMORIZATION, NEURONS, RESULTS
    from pipeline.core.tables import read_table

    paths = {"results": (results, RESULTS), "neurons": (neurons, NEURONS), "log": (log, LOG),
             "memorization": (memorization, MEMORIZATION)}
    return {k: read_table(p, schema) for k, (p, schema) in paths.items() if p is not None}


def draw(names: list[str], outs: list[str | Path], tables: dict[str, pd.DataFrame], *, dpi: int = 120) -> list[Path]:
    """Save figure ``names[i]`` to ``outs[i]`` (atomically); returns the paths."""
    if len(names) != len(outs):
        raise ValueError(f"{len(names)} figures but {len(outs)} output paths")
    return [save_figure(figure(name, tables), out, dpi=dpi) for name, out in zip(names, outs, strict=True)]
