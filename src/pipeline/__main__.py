"""Command line: ``python -m pipeline <stage> ...`` runs one stage without Snakemake.

The Snakemake rules call these same commands. Every stage is ONE function, found by :func:`discover_stages`
and imported only when its command runs; its signature declares the command's options
(:func:`add_stage_options`: ``out_dir`` is ``--out-dir``, a ``list`` takes several values, a ``bool``
is a flag, a positional-only parameter is a positional argument) and its docstring's first line is
the command's help. A stage's configuration (its ``config`` parameter) comes from ``--configfile``
(a YAML file) and/or ``--config-json`` (a JSON string, as the rules pass their ``params``), checked
whole once (:func:`pipeline.config.validate_config`; in a job of the workflow, which validated the
whole config when it built the DAG, :func:`pipeline.config.check_job_config`); its run (``run``) is
named by ``--dataset --model --corruption --seed [--variant]``. ``validate`` and ``plan`` are the two commands that are
not stages.

A failure the user can fix (a bad config, a missing or corrupt dataset or artifact, a full disk,
a file that cannot be written) ends in one line on stderr naming the file or key and what to do,
with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import errno
import importlib
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

from pipeline.config import CHECKED_BY_WORKFLOW, check_job_config, read_config_file, validate_config
from pipeline.core.config import BASE_VARIANT, ConfigError, Run, deep_merge


def discover_stages() -> dict[str, str]:
    """command -> "module:function": every public top-level function of ``pipeline/stages.py`` (the
    outer layer's) and of each family's ``pipeline/<family>/stages.py`` is a stage, its command the
    function's name with dashes (``probe_fused`` -> ``probe-fused``). Read from the source, without
    importing the modules, so a new family is a folder with a ``stages.py`` (and a rule file), and
    ``python -m pipeline labels`` imports the labels stage's module only."""
    root = Path(__file__).resolve().parent
    stages: dict[str, str] = {}
    for path in [root / "stages.py", *sorted(root.glob("*/stages.py"))]:
        module = ".".join(("pipeline", *path.relative_to(root).with_suffix("").parts))
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                command = node.name.replace("_", "-")
                if command in stages:  # two families may not claim one command
                    raise RuntimeError(f"stage command {command!r} is defined twice: {stages[command]} "
                                       f"and {module}:{node.name}; rename one")
                stages[command] = f"{module}:{node.name}"
    return stages


#: command -> "module:function", the one function the command runs (a workflow rule calls one of these)
STAGES: dict[str, str] = discover_stages()

#: parameters the command line fills in itself rather than as one option of the same name
RUN_OPTIONS = ("dataset", "model", "corruption", "seed", "variant")


def stage_function(command: str) -> Callable:
    """The function behind ``command`` (imports its module, and only that)."""
    module, name = STAGES[command].split(":")
    return getattr(importlib.import_module(module), name)


def _config(args) -> dict:
    """The config as given, validated once, here (each stage fills in the defaults and records
    only the sections it was given as provenance)."""
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
        if os.environ.get(CHECKED_BY_WORKFLOW) == "1":
            # a job of the workflow: the Snakefile validated the whole config when it built the
            # DAG, and the job's --config-json is sections of that config
            check_job_config(config)
        else:
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


# ----------------------------------------------------------------------------- options from signatures

def option_name(parameter: str, annotation=None) -> str:
    """The command-line option of a parameter: ``out_dir`` -> ``--out-dir``; a ``dict`` parameter
    is given as JSON (``settings`` -> ``--settings-json``)."""
    name = "--" + parameter.replace("_", "-")
    return name + "-json" if _plain(annotation)[0] is dict else name


def _plain(annotation) -> tuple[object, bool]:
    """``(type, optional)``: ``X | None`` -> ``(X, True)``; ``str | Path`` -> ``str`` (a path is
    given as text)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if all(m in (str, Path) for m in members):
            return str, optional
        if len(members) == 1:
            return members[0], optional
        raise TypeError(f"no command-line type for {annotation}")
    return annotation, False


def _element_type(annotation) -> Callable:
    """What argparse converts one value with: ``int``, ``float`` or ``str``."""
    plain, _ = _plain(annotation)
    if plain in (int, float):
        return plain
    if plain in (str, Path):
        return str
    raise TypeError(f"no command-line type for {annotation}")


def add_stage_options(parser: argparse.ArgumentParser, function: Callable) -> None:
    """The options of ``function``'s command, from its signature (see the module docstring)."""
    hints = typing.get_type_hints(function)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and BLAS")
    for p in inspect.signature(function).parameters.values():
        required = p.default is inspect.Parameter.empty
        annotation = hints[p.name]
        if p.name == "threads":
            continue  # every stage's --threads
        if p.name == "config":
            parser.add_argument("--configfile", help="YAML config (default: schema defaults)")
            parser.add_argument("--config-json", help="JSON config sections merged over --configfile")
            continue
        if p.name == "run":
            parser.add_argument("--dataset", required=True)
            parser.add_argument("--model", required=True)
            parser.add_argument("--corruption", required=True, type=float)
            parser.add_argument("--seed", required=True, type=int)
            parser.add_argument("--variant", default=BASE_VARIANT)
            continue
        plain, _ = _plain(annotation)
        many = typing.get_origin(plain) is list
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            parser.add_argument(p.name, nargs="+" if many else None,
                                type=_element_type(typing.get_args(plain)[0] if many else plain))
            continue
        flag = option_name(p.name, annotation)
        default = None if required else p.default
        if plain is bool:
            if default:  # on unless switched off
                parser.add_argument("--no-" + p.name.replace("_", "-"), dest=p.name, action="store_false")
            else:
                parser.add_argument(flag, dest=p.name, action="store_true")
        elif plain is dict:
            parser.add_argument(flag, dest=p.name, required=required, metavar="JSON",
                                help="a JSON object")
        elif typing.get_origin(plain) is typing.Literal:
            parser.add_argument(flag, dest=p.name, required=required, default=default,
                                choices=typing.get_args(plain))
        elif many:
            parser.add_argument(flag, dest=p.name, required=required, default=default, nargs="+",
                                type=_element_type(typing.get_args(plain)[0]))
        else:
            parser.add_argument(flag, dest=p.name, required=required, default=default,
                                type=_element_type(plain))


def run_stage(command: str, args: argparse.Namespace):
    """Call ``command``'s function with the parsed options (the config validated once, here)."""
    function = stage_function(command)
    hints = typing.get_type_hints(function)
    positional, keywords = [], {}
    for p in inspect.signature(function).parameters.values():
        if p.name == "config":
            value = _config(args)
        elif p.name == "run":
            value = _run(args)
        elif _plain(hints[p.name])[0] is dict:
            text = getattr(args, p.name)
            value = None if text is None else _json_object(text, option_name(p.name, hints[p.name]))
            if value is None and p.default is not inspect.Parameter.empty:
                value = p.default
        else:
            value = getattr(args, p.name)
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append(value)
        else:
            keywords[p.name] = value
    return function(*positional, **keywords)


def _summary(function: Callable) -> tuple[str, str]:
    """(the docstring's first line, the whole docstring): the command's help in the list of
    commands, and its description under ``--help`` (where the parameters are explained)."""
    doc = inspect.getdoc(function) or ""
    return (doc.splitlines() or [""])[0], doc


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. With ``command`` (a stage), only that stage's function is imported; the
    other stages are listed by name."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate a config file and print it with defaults filled in")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and BLAS")
    p.add_argument("--configfile", help="YAML config (default: schema defaults)")
    p.add_argument("--config-json", help="JSON config sections merged over --configfile")

    for name in STAGES:
        if command is not None and name != command:
            sub.add_parser(name)
            continue
        function = stage_function(name)
        help_line, description = _summary(function)
        p = sub.add_parser(name, help=help_line, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_stage_options(p, function)

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
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in STAGES else None).parse_args(argv)
    _prepare(args)
    try:
        if args.command == "validate":
            import yaml
            print(yaml.safe_dump(validate_config(_config(args)), sort_keys=False))
        elif args.command == "plan":
            from pipeline.plan import format_plan, make_plan, workflow_config
            overrides = _json_object(args.config_json, "--config-json") if args.config_json else None
            plan = make_plan(workflow_config(args.configfile or [], overrides=overrides),
                             benchmarks=args.benchmarks)
            print(json.dumps(plan.as_dict(), indent=1) if args.json else format_plan(plan))
        else:
            run_stage(args.command, args)
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
