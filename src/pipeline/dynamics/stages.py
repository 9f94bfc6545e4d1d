"""The feature-dynamics stages (issue 9): one function per ``python -m pipeline dynamics-*`` command
(and workflow rule, ``workflow/rules/dynamics.smk``).

Each function's signature is where its command line is declared (:mod:`pipeline.__main__` builds the
options from it); its docstring's first line is the command's help. The work is in
:mod:`pipeline.dynamics.stage` (with torch, imported inside the functions that train or probe),
:mod:`pipeline.dynamics.aggregate` and :mod:`pipeline.dynamics.figures` (both torch-free): the tables
and figures jobs import no torch. ``config`` is the configuration as given, already checked whole by
the command line (:func:`pipeline.config.validate_config`); the schema fills in its defaults here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pipeline.core.config import ConfigError, Run, apply_schema


def dynamics_composite(config: dict, run: Run, index: str | Path, labels: str | Path, out: str | Path,
                       pointwise: str | Path, trajectories: str | Path, threads: int | None = None) -> None:
    """Composite grid, controls, point-wise consistency and 2-D trajectories of one run.

    ``index``: the run's checkpoints/index.json; written: the composite table (``out``), the
    point-wise consistency table and the 2-D trajectory table
    (:func:`pipeline.dynamics.stage.composite_run`)."""
    from pipeline.dynamics.stage import composite_run

    composite_run(apply_schema(config), run, index=index, labels_path=labels, out_composite=out,
                  out_pointwise=pointwise, out_trajectories=trajectories, threads=threads)


def dynamics_sgd_noise(config: dict, run: Run, index: str | Path, labels: str | Path, out: str | Path,
                       threads: int | None = None) -> None:
    """One-step SGD noise and its isotropic controls at one checkpoint of one run."""
    from pipeline.dynamics.stage import sgd_noise_run

    sgd_noise_run(apply_schema(config), run, index=index, labels_path=labels, out=out, threads=threads)


def dynamics_ablation(config: dict, run: Run, labels: str | Path, standard_dir: str | Path,
                      out_dir: str | Path, threads: int | None = None) -> None:
    """Train a freeze/restart/reinit ablation run variant from a checkpoint of the standard run."""
    from pipeline.dynamics.stage import ablation_run

    ablation_run(apply_schema(config), run, labels_path=labels, standard_dir=standard_dir,
                 out_dir=out_dir, threads=threads)


def dynamics_ablation_figure(ablations: str | Path, out: str | Path, dataset: str, model: str,
                             dpi: int = 120) -> Path:
    """Draw the ablation figure (Fig. 18 freezing, App. F reinitialisation) of one (dataset, model) pair.

    ``ablations``: results/tables/dynamics_ablations.parquet
    (:func:`pipeline.dynamics.ablation_figures.ablation_figure`)."""
    from pipeline.dynamics.ablation_figures import draw_ablation_figure

    return draw_ablation_figure(ablations, out, dataset=dataset, model=model, dpi=dpi)


#: the outputs each kind of dynamics table needs (command-line options)
TABLE_OUTPUTS = {"composite": ("composite", "pointwise", "trajectories", "welch"),
                 "sgd_noise": ("out",), "ablations": ("out",)}


def dynamics_tables(inputs: list[str | Path], /, kind: Literal["composite", "sgd_noise", "ablations"],
                    out: str | Path | None = None, composite: str | Path | None = None,
                    pointwise: str | Path | None = None, trajectories: str | Path | None = None,
                    welch: str | Path | None = None) -> None:
    """Gather the dynamics per-run tables into results/tables (--kind composite|sgd_noise|ablations).

    ``composite`` reads the runs' composite tables (their point-wise and trajectory siblings are
    found next to them) and writes ``composite``, ``pointwise``, ``trajectories`` and ``welch``;
    ``sgd_noise`` and ``ablations`` (the ablation runs' training logs) write ``out``."""
    from pipeline.dynamics import aggregate

    given = {"out": out, "composite": composite, "pointwise": pointwise, "trajectories": trajectories,
             "welch": welch}
    missing = [name for name in TABLE_OUTPUTS[kind] if given[name] is None]
    if missing:
        raise ConfigError(f"dynamics-tables --kind {kind} writes {list(TABLE_OUTPUTS[kind])}: give "
                          + " ".join(f"--{name} PATH" for name in missing))
    if kind == "composite":
        aggregate.aggregate_tables(inputs, out_composite=composite, out_pointwise=pointwise,
                                   out_trajectories=trajectories, out_welch=welch)
    elif kind == "sgd_noise":
        aggregate.aggregate_sgd_noise(inputs, out)
    else:
        aggregate.aggregate_ablations(inputs, out)


def dynamics_figures(figure: list[str], outputs: list[str | Path], dataset: str, model: str,
                     composite: str | Path, pointwise: str | Path, trajectories: str | Path | None = None,
                     sgd_noise: str | Path | None = None, depth: str | None = None,
                     dpi: int = 120, options: dict | None = None) -> list[Path]:
    """Draw the dynamics figures of one (dataset, model) pair from the tables (one --outputs path per --figure).

    ``depth``: that of the heatmap (default: the first in the table); ``options``: the config's
    ``dynamics.figures`` with its windows resolved (:func:`pipeline.dynamics.windows.figure_options`)."""
    from pipeline.dynamics.figures import draw, read_tables

    tables = read_tables(composite=composite, pointwise=pointwise, trajectories=trajectories,
                         sgd_noise=sgd_noise)
    return draw(list(figure), list(outputs), tables, dataset=dataset, model=model, depth=depth, dpi=dpi,
                options=options)


def dynamics_corruption_tables(composite: str | Path, corruption_error: str | Path, mce: str | Path) -> None:
    """Error per corrupted test set and the mean corruption error of every run (paper App. F).

    ``composite``: results/tables/composite.parquet (with the test_corrupted input sets); written: the
    error table and the mCE table (:mod:`pipeline.dynamics.corruption_figures`)."""
    from pipeline.core.tables import provenance, read_table, write_table
    from pipeline.dynamics import tables as T
    from pipeline.dynamics.corruption_figures import CORRUPTION_ERROR, MCE, NORMALIZER, corruption_tables
    from pipeline.dynamics.corruptions import PACKAGE, package_version

    err, mce_table = corruption_tables(read_table(composite, T.COMPOSITE))
    meta = provenance({}, network="f(theta_T) = C(T, T) at each run's last deep epoch, true labels",
                      mce="unnormalized: mean over (corruption, severity) of 1 - accuracy (paper App. F)",
                      mce_normalized=NORMALIZER, corruption_package=f"{PACKAGE}=={package_version()}")
    write_table(err, corruption_error, CORRUPTION_ERROR, meta)
    write_table(mce_table, mce, MCE, meta)
    for r in mce_table.itertuples():
        print(f"{r.dataset}/{r.model} label noise {r.corruption:g} seed {r.seed} {r.variant}: epoch {r.epoch}, "
              f"mCE (unnormalized) {r.mce_unnormalized:.3f} over {r.n_corruptions} corruptions x "
              f"{r.n_severities} severities; clean test error {r.clean_error:.3f}", flush=True)


def dynamics_corruption_figures(figure: list[str], outputs: list[str | Path], dataset: str, model: str,
                                pointwise: str | Path, corruption_error: str | Path, mce: str | Path,
                                depth: str | None = None, window: list[int] | None = None,
                                dpi: int = 120) -> list[Path]:
    """Draw the corrupted-input figures (paper Figs. 16/17, error per corruption) of one (dataset, model) pair.

    ``window``: T1 T2 of the consistency (default: the memory window with the latest T2, the longest)."""
    from pipeline.core.tables import read_table
    from pipeline.dynamics import tables as T
    from pipeline.dynamics.corruption_figures import CORRUPTION_ERROR, MCE, draw_corruption_figures

    return draw_corruption_figures(
        list(figure), list(outputs), pointwise=read_table(pointwise, T.POINTWISE),
        corruption_error_table=read_table(corruption_error, CORRUPTION_ERROR), mce_table=read_table(mce, MCE),
        dataset=dataset, model=model, depth=depth, window=window, dpi=dpi)


def dynamics_anisotropy(sgd_noise: str | Path, pointwise: str | Path, out: str | Path,
                        correlation: str | Path, figure: str | Path, pairs: list[str] | None = None,
                        epoch_figures: list[str | Path] | None = None, dpi: int = 120) -> None:
    """Anisotropy-consistency table, correlations and figure; the SGD-noise-by-epoch figures (Figs. 8, 15).

    ``pairs`` (``dataset/model``) and ``epoch_figures`` are aligned: one Fig. 8/15 figure per pair
    (:mod:`pipeline.dynamics.anisotropy`, :mod:`pipeline.dynamics.noise_figures`)."""
    from pipeline.core.figures import save_figure
    from pipeline.core.tables import read_table
    from pipeline.dynamics import noise_figures
    from pipeline.dynamics import tables as T
    from pipeline.dynamics.anisotropy import anisotropy_tables

    pairs, epoch_figures = list(pairs or []), list(epoch_figures or [])
    if len(pairs) != len(epoch_figures):
        raise ConfigError(f"--pairs has {len(pairs)} entries but --epoch-figures {len(epoch_figures)}")
    bad = [p for p in pairs if p.count("/") != 1]
    if bad:
        raise ConfigError(f"--pairs entries must be dataset/model, got {bad}")
    table, corr = anisotropy_tables(sgd_noise, pointwise, out=out, out_correlation=correlation)
    save_figure(noise_figures.anisotropy_consistency(table, corr), figure, dpi=dpi)
    sgd = read_table(sgd_noise, T.SGD_NOISE)
    for pair, path in zip(pairs, epoch_figures, strict=True):
        dataset, model = pair.split("/")
        save_figure(noise_figures.sgd_noise_epochs(sgd, dataset, model), path, dpi=dpi)
