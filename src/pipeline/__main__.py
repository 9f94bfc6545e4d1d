"""Command line: ``python -m pipeline <stage> ...`` runs one stage without Snakemake.

The Snakemake rules call these same commands. A stage's configuration comes from ``--configfile``
(a YAML file, validated against the schema) and/or ``--config-json`` (a JSON string, as the rules
pass their ``params``); the run is named by ``--dataset --model --corruption --seed [--variant]``.

A failure the user can fix (a bad config, a missing or corrupt dataset or artifact, a full disk,
a file that cannot be written) ends in one line on stderr naming the file or key and what to do,
with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from pipeline.config import read_config_file, validate_config
from pipeline.core.config import BASE_VARIANT, ConfigError, Run, deep_merge


def _config(args) -> dict:
    """The config as given (validated; defaults are filled in by each stage, which records only
    the sections it was given as provenance)."""
    config: dict = {}
    if args.configfile:
        config = read_config_file(args.configfile)  # names the file if missing or not YAML
    if args.config_json:
        try:
            overrides = json.loads(args.config_json)
        except ValueError as exc:
            raise ConfigError(f"--config-json is not valid JSON ({exc}); pass a JSON object such as "
                              '{"train": {"max_epochs": 3}}') from None
        if not isinstance(overrides, dict):
            raise ConfigError(f"--config-json must be a JSON object of config sections, not "
                              f"{type(overrides).__name__}")
        config = deep_merge(config, overrides)
    try:
        validate_config(config)
    except ConfigError as exc:
        given = " and ".join(name for name, value in (
            (f"config file {args.configfile}", args.configfile), ("--config-json", args.config_json))
            if value)
        raise ConfigError(f"{exc} (in {given})" if given else str(exc)) from None
    return config


def _json_object(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{option} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object, not {type(value).__name__}")
    return value


def _run(args) -> Run:
    return Run(args.dataset, args.model, float(args.corruption), int(args.seed), args.variant)


def _prepare(args) -> None:
    """Before any stage: the one thread policy (Snakemake's ``threads``), and the temporary files a
    killed job left in the output folder swept away (``pipeline.core.artifacts.sweep_stale_tmp``)."""
    from pipeline.core.artifacts import sweep_stale_tmp
    from pipeline.core.threads import limit_threads

    limit_threads(getattr(args, "threads", None))
    out = getattr(args, "out", None) or getattr(args, "out_dir", None)
    outs = out if isinstance(out, list) else [out] if out else []  # `plot` takes several --out
    folders = {Path(o) if getattr(args, "out_dir", None) else Path(o).parent for o in outs}
    for folder in sorted(folders):
        if folder.is_dir():
            sweep_stale_tmp(folder)


def _add_common(p: argparse.ArgumentParser, *, run: bool = True, epoch: bool = False) -> None:
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and BLAS")
    p.add_argument("--configfile", help="YAML config (default: schema defaults)")
    p.add_argument("--config-json", help="JSON config sections merged over --configfile")
    if run:
        p.add_argument("--dataset", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--corruption", required=True, type=float)
        p.add_argument("--seed", required=True, type=int)
        p.add_argument("--variant", default=BASE_VARIANT)
    if epoch:
        p.add_argument("--epoch", required=True, type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate a config file and print it with defaults filled in")
    _add_common(p, run=False)

    p = sub.add_parser("labels", help="corrupt the training labels of one run")
    _add_common(p)
    p.add_argument("--out", required=True)

    p = sub.add_parser("train", help="train one run (resumes from its latest state)")
    _add_common(p)
    p.add_argument("--labels", required=True)
    p.add_argument("--out-dir", required=True)

    p = sub.add_parser("extract", help="extract layer activations of one checkpoint to HDF5")
    _add_common(p, epoch=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("fit", help="fit probes (class subspaces) on one activation (or reduced) file")
    _add_common(p, epoch=True)
    p.add_argument("--activations", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("score", help="score fitted probes and the model on one activation (or reduced) file")
    _add_common(p, epoch=True)
    p.add_argument("--activations", required=True)
    p.add_argument("--subspaces", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("probe", help="fit and score the probes of one checkpoint in one process "
                                     "(`fit`, then `score`; what the workflow runs)")
    _add_common(p, epoch=True)
    p.add_argument("--activations", required=True)
    p.add_argument("--subspaces", required=True, help="the fitted probes (written)")
    p.add_argument("--out", required=True, help="the probe table (written)")

    p = sub.add_parser("probe-fused", help="storage.fused: forward pass, fit and score the probes of one "
                                           "checkpoint in memory (no activation file)")
    _add_common(p, epoch=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--subspaces", required=True, help="the fitted probes (written)")
    p.add_argument("--out", required=True, help="the probe table (written)")
    p.add_argument("--no-model-rows", action="store_true",
                   help="leave the model's own rows out (the staged table of this checkpoint has them)")

    p = sub.add_parser("edit", help="weight editing: a run's probed checkpoints with VeLPIC "
                                    "pre-softmax weights (section 8)")
    _add_common(p)
    p.add_argument("--index", required=True, help="the run's checkpoints/index.json")
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("intervene", help="train an intervened run: E epochs, VeLPIC edit, N more "
                                         "(section 9; resumes from its latest state)")
    _add_common(p)
    p.add_argument("--labels", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--standard-dir", help="the standard run to branch from at epoch E, if it has it")

    p = sub.add_parser("relabel", help="relabel the training set with MASC and retrain the final "
                                       "checkpoint (the MASC paper)")
    _add_common(p)
    p.add_argument("--protocol", required=True)
    p.add_argument("--index", required=True, help="the run's checkpoints/index.json")
    p.add_argument("--labels", required=True)
    p.add_argument("--activations", required=True, help="activations of the final checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--details", required=True, help="JSON with the selection scores and the retraining")

    p = sub.add_parser("reduce", help="replace an activation file's training activations by "
                                      "per-class statistics (storage.persist: moments|auto); "
                                      "`fit` and `score` read the result")
    _add_common(p, epoch=True)
    p.add_argument("--activations", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("aggregate", help="concatenate tidy tables into one")
    p.add_argument("--out", required=True)
    p.add_argument("--no-schema-check", action="store_true", help="inputs are not result tables")
    p.add_argument("--benchmarks", action="store_true",
                   help="inputs are Snakemake benchmark files or folders of them (results/benchmarks): "
                        "write the per-job cost table (pipeline.costs)")
    p.add_argument("inputs", nargs="+")

    p = sub.add_parser("plot", help="draw figures from the aggregated tables (one --out per --figure)")
    p.add_argument("--figure", required=True, nargs="+")
    p.add_argument("--table", required=True)
    p.add_argument("--train-log", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, nargs="+")
    p.add_argument("--dpi", type=int, default=120)

    p = sub.add_parser("arithmetic-cell", help="train and analyse one cell of the arithmetic grid "
                                               "(issue 10; pipeline.arithmetic.run_cell)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and BLAS")
    p.add_argument("--settings-json", required=True,
                   help='the cell as JSON, e.g. {"P": 31, "width": 257, "alpha": 0.8}; missing keys '
                        "take pipeline.arithmetic.DEFAULTS")
    p.add_argument("--out-dir", required=True)

    p = sub.add_parser("arithmetic-tables", help="gather the arithmetic cells into their three tables")
    p.add_argument("--results", required=True)
    p.add_argument("--neurons", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("indexes", nargs="+", help="the cells' index.json files")

    p = sub.add_parser("arithmetic-memorization", help="the memorization-order check on digits "
                                                       "(3-layer MLP, full batch, label noise)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and BLAS")
    p.add_argument("--settings-json", default="{}", help="the config's arithmetic.memorization as JSON")
    p.add_argument("--data-root", default="data")
    p.add_argument("--out", required=True)

    p = sub.add_parser("arithmetic-figures", help="draw the arithmetic figures from the tables "
                                                  "(one --out per --figure)")
    p.add_argument("--figure", required=True, nargs="+")
    p.add_argument("--outputs", required=True, nargs="+", help="one path per --figure")
    p.add_argument("--results", required=True)
    p.add_argument("--neurons", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--memorization")
    p.add_argument("--dpi", type=int, default=120)

    p = sub.add_parser("dynamics-composite", help="feature dynamics (issue 9): the composite grid, "
                                                  "controls, point-wise consistency and 2-D trajectories "
                                                  "of one run")
    _add_common(p)
    p.add_argument("--index", required=True, help="the run's checkpoints/index.json")
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True, help="the run's composite table (written)")
    p.add_argument("--pointwise", required=True, help="the run's point-wise consistency table (written)")
    p.add_argument("--trajectories", required=True, help="the run's 2-D trajectory table (written)")

    p = sub.add_parser("dynamics-sgd-noise", help="feature dynamics: one-step SGD noise and its "
                                                  "isotropic controls at one checkpoint of one run")
    _add_common(p)
    p.add_argument("--index", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("dynamics-ablation", help="feature dynamics: train a freeze/reinit ablation run "
                                                 "variant from the standard run's epoch-E checkpoint")
    _add_common(p)
    p.add_argument("--labels", required=True)
    p.add_argument("--standard-dir", required=True)
    p.add_argument("--out-dir", required=True)

    p = sub.add_parser("dynamics-tables", help="gather the dynamics per-run tables into results/tables")
    p.add_argument("--kind", required=True, choices=["composite", "sgd_noise", "ablations"])
    p.add_argument("--out", help="the table (sgd_noise, ablations)")
    p.add_argument("--composite")
    p.add_argument("--pointwise")
    p.add_argument("--trajectories")
    p.add_argument("--welch")
    p.add_argument("inputs", nargs="+")

    p = sub.add_parser("dynamics-figures", help="draw the dynamics figures of one (dataset, model) pair "
                                                "from the tables (one --outputs path per --figure)")
    p.add_argument("--figure", required=True, nargs="+")
    p.add_argument("--outputs", required=True, nargs="+")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--composite", required=True)
    p.add_argument("--pointwise", required=True)
    p.add_argument("--trajectories")
    p.add_argument("--sgd-noise")
    p.add_argument("--depth", help="depth of the heatmap (default: the first in the table)")
    p.add_argument("--dpi", type=int, default=120)

    p = sub.add_parser("plan", help="runs, jobs, SLURM allocations and disk a config costs "
                                    "(upper bounds; nothing is run)")
    p.add_argument("--configfile", action="extend", nargs="+",
                   help="YAML config(s) merged over config/config.yaml, as snakemake does")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--config-json", help="JSON config merged over the files, e.g. "
                                         "'{\"storage\": {\"fused\": true}}'")
    p.add_argument("--benchmarks", help="measured per-job costs: a benchmark table or a folder of "
                                        "benchmark files (default: results/tables/benchmarks.parquet, "
                                        "else results/benchmarks/, when present)")
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that name a file and its remedy (imported only once something failed)."""
    from pipeline.core.datasets import DatasetCorruptError, DatasetNotFoundError
    from pipeline.core.errors import ArtifactError

    return (ArtifactError, DatasetNotFoundError, DatasetCorruptError)


DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _os_error_message(exc: OSError, args: argparse.Namespace) -> str | None:
    """One line for a full disk or a file that cannot be written; None for any other OSError."""
    if exc.errno not in DISK_FULL | NOT_WRITABLE:
        return None
    # Writes fail inside libraries (torch, h5py) that often drop the file name: name the output.
    out = getattr(args, "out", None) or getattr(args, "out_dir", None)
    path = exc.filename or out or "(unknown file)"
    if exc.errno in DISK_FULL:
        what = "no space left on the device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        folder = Path(str(path)).parent
        return (f"error: {what} writing {path}: free space on that file system (df -h {folder}) "
                "and rerun; outputs are written atomically, so nothing was left looking complete "
                "and the rerun redoes only what is missing")
    if exc.errno == errno.EROFS:
        return (f"error: {path} is on a read-only file system: run from a writable folder (or "
                "point the outputs there) and rerun")
    return (f"error: permission denied on {path}: make it and its folder writable by you (or run "
            "from a folder you own) and rerun")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _prepare(args)
    from pipeline import stages

    try:
        if args.command == "validate":
            import yaml
            print(yaml.safe_dump(validate_config(_config(args)), sort_keys=False))
        elif args.command == "labels":
            stages.labels(_config(args), _run(args), args.out)
        elif args.command == "train":
            stages.train(_config(args), _run(args), args.labels, args.out_dir)
        elif args.command == "extract":
            stages.extract(_config(args), _run(args), args.epoch, args.labels, args.checkpoint, args.out)
        elif args.command == "fit":
            stages.fit(_config(args), _run(args), args.epoch, args.activations, args.out)
        elif args.command == "score":
            stages.score(_config(args), _run(args), args.epoch, args.activations, args.subspaces, args.out)
        elif args.command == "edit":
            stages.edit(_config(args), _run(args), args.index, args.labels, args.out)
        elif args.command == "intervene":
            stages.intervene(_config(args), _run(args), args.labels, args.out_dir, args.standard_dir)
        elif args.command == "relabel":
            stages.relabel(_config(args), _run(args), args.protocol, args.index, args.labels,
                           args.activations, args.out, args.details)
        elif args.command == "reduce":
            stages.reduce(_config(args), _run(args), args.epoch, args.activations, args.out)
        elif args.command == "probe":
            stages.probe(_config(args), _run(args), args.epoch, args.activations, args.subspaces, args.out)
        elif args.command == "probe-fused":
            stages.probe_fused(_config(args), _run(args), args.epoch, args.labels, args.checkpoint,
                               args.subspaces, args.out, model_rows=not args.no_model_rows)
        elif args.command == "aggregate" and args.benchmarks:
            stages.benchmarks(args.inputs, args.out)
        elif args.command == "aggregate":
            stages.aggregate(args.inputs, args.out, check_schema=not args.no_schema_check)
        elif args.command == "plot":
            stages.plot(args.figure, args.table, args.train_log, args.dataset, args.model, args.out,
                        dpi=args.dpi)
        elif args.command == "arithmetic-cell":
            stages.arithmetic_cell(_json_object(args.settings_json, "--settings-json"), args.out_dir)
        elif args.command == "arithmetic-tables":
            stages.arithmetic_tables(args.indexes, args.results, args.neurons, args.log)
        elif args.command == "arithmetic-memorization":
            stages.arithmetic_memorization(_json_object(args.settings_json, "--settings-json"), args.out,
                                           root=args.data_root)
        elif args.command == "arithmetic-figures":
            stages.arithmetic_figures(args.figure, args.outputs, results=args.results, neurons=args.neurons,
                                      log=args.log, memorization=args.memorization, dpi=args.dpi)
        elif args.command == "dynamics-composite":
            stages.dynamics_composite(_config(args), _run(args), args.index, args.labels, args.out,
                                      args.pointwise, args.trajectories, threads=args.threads)
        elif args.command == "dynamics-sgd-noise":
            stages.dynamics_sgd_noise(_config(args), _run(args), args.index, args.labels, args.out,
                                      threads=args.threads)
        elif args.command == "dynamics-ablation":
            stages.dynamics_ablation(_config(args), _run(args), args.labels, args.standard_dir,
                                     args.out_dir, threads=args.threads)
        elif args.command == "dynamics-tables":
            stages.dynamics_tables(args.kind, args.inputs,
                                   {"out": args.out, "composite": args.composite,
                                    "pointwise": args.pointwise, "trajectories": args.trajectories,
                                    "welch": args.welch})
        elif args.command == "dynamics-figures":
            stages.dynamics_figures(args.figure, args.outputs, dataset=args.dataset, model=args.model,
                                    composite=args.composite, pointwise=args.pointwise,
                                    trajectories=args.trajectories, sgd_noise=args.sgd_noise,
                                    depth=args.depth, dpi=args.dpi)
        elif args.command == "plan":
            from pipeline.plan import format_plan, make_plan, workflow_config
            overrides = _json_object(args.config_json, "--config-json") if args.config_json else None
            plan = make_plan(workflow_config(args.configfile or [], overrides=overrides),
                             benchmarks=args.benchmarks)
            print(json.dumps(plan.as_dict(), indent=1) if args.json else format_plan(plan))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except _user_errors() as exc:  # evaluated only when an exception propagates
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = _os_error_message(exc, args)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
