"""Start-up of the light stages, before and after the stage registry (issue 15): seconds from a fresh
interpreter to the stage's function and every module it imports when it runs, and whether torch
came with them.

The old tree is checked out of git (``--old-rev``, default 061b8c2: the pass-through
``pipeline.stages`` with its 24-branch ``__main__``) into a temporary folder and imported from there
(``PYTHONPATH``); the new one is this working tree. Each measurement is a fresh ``python -c`` (the
best of ``--repeat``), so the numbers are what a Snakemake job pays before its first line of work;
``labels`` is also timed whole, as the rule runs it (digits, 300 training images).

    .venv/bin/python benchmarks/bench_stage_startup.py [--repeat 3] [--old-rev 061b8c2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: what each version imports to run the stage: the command line, then the stage's own imports
OLD_IMPORTS = {
    "labels": ["pipeline.__main__", "pipeline.stages", "pipeline.core.labels"],
    "arithmetic-tables": ["pipeline.__main__", "pipeline.stages", "pipeline.arithmetic.cell",
                          "pipeline.arithmetic.tables"],
    "dynamics-tables": ["pipeline.__main__", "pipeline.stages", "pipeline.dynamics.stage"],
    "arithmetic-figures": ["pipeline.__main__", "pipeline.stages", "pipeline.arithmetic.figures"],
    "dynamics-figures": ["pipeline.__main__", "pipeline.stages", "pipeline.dynamics.figures"],
    "aggregate": ["pipeline.__main__", "pipeline.stages", "pipeline.core.tables"],
}

# The new version: the registry resolves the stage (importing its module only), then the imports
# in the function's body, read from its source (as tests/workflow/test_cli.py does).
NEW_SCRIPT = """
import ast, importlib, inspect, sys, textwrap, time
t0 = time.perf_counter()
from pipeline.__main__ import stage_function
function = stage_function({stage!r})
for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
    if isinstance(node, ast.Import):
        for alias in node.names:
            importlib.import_module(alias.name)
    elif isinstance(node, ast.ImportFrom):
        module = importlib.import_module(node.module)
        for alias in node.names:
            if not hasattr(module, alias.name):
                importlib.import_module(node.module + "." + alias.name)
print(time.perf_counter() - t0, "torch" in sys.modules)
"""

OLD_SCRIPT = """
import importlib, sys, time
t0 = time.perf_counter()
for name in {modules!r}:
    importlib.import_module(name)
print(time.perf_counter() - t0, "torch" in sys.modules)
"""


def _run(script: str, src: Path, cwd: Path) -> tuple[float, float, bool]:
    """(seconds inside the interpreter, seconds of the whole process, torch imported)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd,
                          check=True)
    wall = time.perf_counter() - t0
    seconds, torch = proc.stdout.split()
    return float(seconds), wall, torch == "True"


def _labels_job(src: Path, cwd: Path, out: Path) -> float:
    """Seconds of the whole `python -m pipeline labels` job on digits."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-m", "pipeline", "labels", "--config-json",
           json.dumps({"data": {"train_subset": 300, "test_subset": 150}}), "--dataset", "digits",
           "--model", "mlp", "--corruption", "0.8", "--seed", "0", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many fresh processes")
    ap.add_argument("--old-rev", default="061b8c2", help="the git revision of the old code")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.old_rev], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        print(f"best of {args.repeat} fresh processes; import = the command line, the stage and its imports; "
              f"process = the same, with the interpreter's start")
        print(f"{'stage':20s} {'old import':>10s} {'new import':>10s} {'old process':>11s} "
              f"{'new process':>11s}  torch old/new")
        for stage, modules in OLD_IMPORTS.items():
            runs = {"old": [_run(OLD_SCRIPT.format(modules=modules), old / "src", old)
                            for _ in range(args.repeat)],
                    "new": [_run(NEW_SCRIPT.format(stage=stage), REPO / "src", REPO)
                            for _ in range(args.repeat)]}
            best = {k: (min(r[0] for r in v), min(r[1] for r in v), v[0][2]) for k, v in runs.items()}
            print(f"{stage:20s} {best['old'][0]:10.2f} {best['new'][0]:10.2f} {best['old'][1]:11.2f} "
                  f"{best['new'][1]:11.2f}  {'yes' if best['old'][2] else 'no'}/{'yes' if best['new'][2] else 'no'}")
        jobs = {name: min(_labels_job(src, cwd, Path(tmp) / f"{name}.npz") for _ in range(args.repeat))
                for name, src, cwd in (("old", old / "src", old), ("new", REPO / "src", REPO))}
        print(f"{'labels job (digits)':20s} old {jobs['old']:.2f} s, new {jobs['new']:.2f} s (whole process)")


if __name__ == "__main__":
    main()
