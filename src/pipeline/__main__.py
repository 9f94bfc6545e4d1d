"""Command line: ``python -m pipeline <stage> ...`` runs one stage without Snakemake.

The Snakemake rules call these same commands. A stage's configuration comes from ``--configfile``
(a YAML file, validated against the schema) and/or ``--config-json`` (a JSON string, as the rules
pass their ``params``); the run is named by ``--dataset --model --corruption --seed [--variant]``.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.config import BASE_VARIANT, ConfigError, Run, deep_merge, load_config, validate_config


def _config(args) -> dict:
    """The config as given (validated; defaults are filled in by each stage, which records only
    the sections it was given as provenance)."""
    config: dict = {}
    if args.configfile:
        load_config(args.configfile)  # validates the file, naming its path on error
        import yaml
        with open(args.configfile) as fh:
            config = yaml.safe_load(fh) or {}
    if args.config_json:
        config = deep_merge(config, json.loads(args.config_json))
    validate_config(config)
    return config


def _run(args) -> Run:
    return Run(args.dataset, args.model, float(args.corruption), int(args.seed), args.variant)


def _limit_threads(threads: int | None) -> None:
    """Cap torch and BLAS threads (Snakemake's ``threads``), so parallel jobs don't oversubscribe."""
    if not threads:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


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
    p.add_argument("inputs", nargs="+")

    p = sub.add_parser("plot", help="draw one figure from the aggregated tables")
    p.add_argument("--figure", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--train-log", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dpi", type=int, default=120)

    p = sub.add_parser("plan", help="runs, jobs, SLURM allocations and disk a config costs "
                                    "(upper bounds; nothing is run)")
    p.add_argument("--configfile", action="extend", nargs="+",
                   help="YAML config(s) merged over config/config.yaml, as snakemake does")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _limit_threads(getattr(args, "threads", None))
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
        elif args.command == "aggregate":
            stages.aggregate(args.inputs, args.out, check_schema=not args.no_schema_check)
        elif args.command == "plot":
            stages.plot(args.figure, args.table, args.train_log, args.dataset, args.model, args.out,
                        dpi=args.dpi)
        elif args.command == "plan":
            from pipeline.plan import format_plan, make_plan, workflow_config
            plan = make_plan(workflow_config(args.configfile or []))
            print(json.dumps(plan.as_dict(), indent=1) if args.json else format_plan(plan))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
