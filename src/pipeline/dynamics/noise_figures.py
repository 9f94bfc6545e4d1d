"""Figures of the SGD-noise analysis (torch-free; drawn by ``python -m pipeline dynamics-anisotropy``):

* :func:`sgd_noise_epochs` -- Figs. 8 and 15: the top-5 eigenvalues (over the trace) of the one-step
  SGD noise against the equal-trace isotropic Gaussian and the parameter-isotropic control, one
  column per SGD-noise epoch (``dynamics.sgd_noise.epoch``), one row per (corruption, depth); each
  panel names the step size, ``N``, the tested coordinates ``D'`` of ``D`` and the share of inputs
  whose sphericity test (the paper's ``T``) rejects at 0.05 -- on the moving coordinates and, for
  comparison, on all coordinates;
* :func:`anisotropy_consistency` -- the anisotropy-consistency relation across runs
  (:mod:`pipeline.dynamics.anisotropy`): ``pr_ratio`` against the mean point-wise consistency, one
  point per run and epoch, one panel per (dataset, model, depth), Spearman's rho per epoch in the
  panel.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.config import BASE_VARIANT
from pipeline.core.figures import subplots, suptitle

__all__ = ["sgd_noise_epochs", "anisotropy_consistency", "relation_slice", "COLORS"]

#: the paper's colours: SGD noise blue, isotropic Gaussian orange
COLORS = {"sgd": "tab:blue", "gaussian": "tab:orange", "param_isotropic": "tab:green"}
_ALPHA = 0.05


def _empty(message: str):
    fig, axes = subplots(1, 1, panel_width=5, panel_height=2)
    axes[0, 0].text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    axes[0, 0].set_axis_off()
    return fig


def _normalised_top(d: pd.DataFrame) -> np.ndarray:
    """``(inputs, k)`` eigenvalues over the trace of the rows ``d``."""
    cols = sorted((c for c in d.columns if c.startswith("eig_")), key=lambda c: int(c[4:]))
    eig = d[cols].to_numpy(dtype=float)
    return eig / d["trace"].to_numpy(dtype=float)[:, None]


def sgd_noise_epochs(sgd: pd.DataFrame, dataset: str, model: str):
    """Figs. 8 / 15 for one (dataset, model): see the module doc (smallest seed, standard runs)."""
    df = sgd[(sgd["dataset"] == dataset) & (sgd["model"] == model) & (sgd["variant"] == BASE_VARIANT)]
    if df.empty:
        return _empty(f"no sgd_noise rows for {dataset}/{model}")
    df = df[df["seed"] == df["seed"].min()]
    epochs = sorted(df["epoch"].unique())
    panels = [(c, d) for c in sorted(df["corruption"].unique()) for d in df["depth"].unique()
              if not df[(df["corruption"] == c) & (df["depth"] == d)].empty]
    fig, axes = subplots(len(panels), len(epochs), panel_width=max(3.4, 7.0 / len(epochs)),
                         panel_height=2.9)
    for i, (c, depth) in enumerate(panels):
        for j, epoch in enumerate(epochs):
            ax = axes[i, j]
            d = df[(df["corruption"] == c) & (df["depth"] == depth) & (df["epoch"] == epoch)]
            if d.empty:
                ax.set_axis_off()
                continue
            notes = []
            for source in ("sgd", "gaussian", "param_isotropic"):
                s = d[d["source"] == source]
                if s.empty:
                    continue
                top = _normalised_top(s)
                mean, sd = np.nanmean(top, axis=0), np.nanstd(top, axis=0)
                ranks = np.arange(1, mean.size + 1)
                ax.errorbar(ranks, mean, yerr=sd, marker="o", ms=3, capsize=2, color=COLORS[source],
                            ls="--" if source == "param_isotropic" else "-",
                            label=f"{source} (PR {s['participation_ratio'].mean():.1f})",
                            gid=f"spectrum|{c:g}|{depth}|{epoch}|{source}")
                notes.append(f"{source}: reject {(s['p_value'] < _ALPHA).mean():.2f} "
                             f"(all D {(s['p_value_all'] < _ALPHA).mean():.2f})")
            s = d[d["source"] == "sgd"]
            ax.set_yscale("log")
            ax.set_xlabel("eigenvalue rank")
            ax.set_ylabel("eigenvalue / trace")
            ax.set_title(f"corruption {c:g}, {depth}, epoch {epoch}\nlr {s['lr'].iloc[0]:.3g}, "
                         f"N={int(s['n_updates'].iloc[0])}, D'={s['dim_tested'].mean():.0f} of "
                         f"D={int(s['dim'].iloc[0])}", fontsize=8)
            ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize=5.5, va="bottom")
            ax.legend(fontsize=6, loc="upper right")
    suptitle(fig, f"{dataset} / {model}: top-5 eigenvalues of one-step SGD noise vs isotropic "
                  f"controls by epoch (Figs. 8, 15); reject = share of inputs with p < {_ALPHA} "
                  "for the paper's T on the moving coordinates")
    return fig


def relation_slice(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the relation figure draws: split ``test`` if present (else the first), reference
    ``paper`` if present (else the first), and each run's last window."""
    if table.empty:
        return table
    split = "test" if (table["split"] == "test").any() else sorted(table["split"].unique())[0]
    d = table[table["split"] == split]
    ref = "paper" if (d["reference"] == "paper").any() else sorted(d["reference"].unique())[0]
    d = d[d["reference"] == ref]
    last = d.groupby(["dataset", "model", "corruption", "seed", "variant"])["window"].transform("max")
    return d[d["window"] == last]


def anisotropy_consistency(table: pd.DataFrame, corr: pd.DataFrame):
    """The anisotropy-consistency relation across runs (module doc)."""
    from pipeline.core.figures import pyplot

    d = relation_slice(table)
    if d.empty:
        return _empty("no runs with both SGD noise and point-wise consistency at one depth")
    panels = list(d[["dataset", "model", "depth"]].drop_duplicates().itertuples(index=False))
    fig, axes = subplots(1, len(panels), panel_width=4.0, panel_height=3.4)
    cmap = pyplot().get_cmap("viridis")
    corruptions = sorted(d["corruption"].unique())
    # SGD-noise epochs by ordinal ("final" differs between runs)
    markers = dict(zip(sorted(d["epoch_index"].unique()), "osD^v<>p*", strict=False))
    for j, (ds, model, depth) in enumerate(panels):
        ax = axes[0, j]
        p = d[(d["dataset"] == ds) & (d["model"] == model) & (d["depth"] == depth)]
        for r in p.itertuples():
            color = cmap(corruptions.index(r.corruption) / max(len(corruptions) - 1, 1))
            ax.plot(r.pr_ratio, r.mean_consistency, markers.get(r.epoch_index, "o"), color=color, ms=6,
                    gid=f"run|{r.corruption:g}|{r.seed}|{r.epoch}")
        for c in corruptions:
            ax.plot([], [], "s", color=cmap(corruptions.index(c) / max(len(corruptions) - 1, 1)),
                    label=f"corruption {c:g}")
        lines = []
        for e, m in markers.items():
            epochs = ",".join(str(v) for v in sorted(p[p["epoch_index"] == e]["epoch"].unique()))
            ax.plot([], [], m, color="grey", label=f"epoch {epochs}")
            row = corr[(corr["dataset"] == ds) & (corr["model"] == model) & (corr["depth"] == depth)
                       & (corr["epoch_index"] == e) & (corr["measure"] == "pr_ratio")
                       & (corr["split"] == p["split"].iloc[0]) & (corr["reference"] == p["reference"].iloc[0])]
            if not row.empty:
                row = row.iloc[-1]
                lines.append(f"epoch {epochs}: Spearman rho {row['spearman_rho']:.2f} (n={int(row['n_runs'])})")
        ax.set_xscale("log")
        ax.set_xlabel("anisotropy: PR(isotropic Gaussian) / PR(SGD noise)")
        ax.set_ylabel(f"mean point-wise consistency ({p['split'].iloc[0]}, {p['reference'].iloc[0]})")
        ax.set_title(f"{ds} / {model}, {depth}\n" + "; ".join(lines), fontsize=7)
        ax.legend(fontsize=6)
    suptitle(fig, "Anisotropy of one-step SGD noise vs temporal consistency across runs "
                  "(each run's last window)")
    return fig
