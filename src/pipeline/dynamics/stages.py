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
    """Train a freeze/reinit ablation run variant from the standard run's epoch-E checkpoint."""
    from pipeline.dynamics.stage import ablation_run

    ablation_run(apply_schema(config), run, labels_path=labels, standard_dir=standard_dir,
                 out_dir=out_dir, threads=threads)


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
                     dpi: int = 120) -> list[Path]:
    """Draw the dynamics figures of one (dataset, model) pair from the tables (one --outputs path per --figure).

    ``depth``: that of the heatmap (default: the first in the table)."""
    from pipeline.dynamics.figures import draw, read_tables

    tables = read_tables(composite=composite, pointwise=pointwise, trajectories=trajectories,
                         sgd_noise=sgd_noise)
    return draw(list(figure), list(outputs), tables, dataset=dataset, model=model, depth=depth, dpi=dpi)
