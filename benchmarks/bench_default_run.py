#!/usr/bin/env python
"""The default workflow (`snakemake --cores 2`, config/config.yaml), old code against new, side by side.

Each side runs in a fresh temporary working copy (Snakefile, workflow/, config/, src/), with
``PYTHONPATH`` set to that copy's ``src`` so ``python -m pipeline`` resolves to that side's package
(the virtual environment is shared):

* old: ``git archive <rev>`` of the baseline (default 209ee90, before the workflow refactor);
  nothing in the repository is touched;
* new: a snapshot of this working tree, taken when the script starts. Experiment families the old
  code does not have (top-level config sections with ``enabled``, e.g. ``arithmetic``,
  ``dynamics``) are switched off and the old default's probe settings used for the new side
  (``bench_scope.yaml``, merged over the default; the new default adds e.g. ``logreg``), so both
  sides do the same science and the figures compare the workflow itself.

The sides run one after the other (``--parallel``: at once, when the machine has cores to spare).
For each it prints the total CPU seconds of snakemake and every job it ran (the rusage of the
snakemake process tree, from ``wait4``: exact, unlike Snakemake's once-a-second benchmark
sampling, and per side even when both run at once), the wall
time, and the jobs per rule; for a side with benchmark files (the new code) also the per-rule sums
of its ``results/tables/benchmarks.parquet``. Then it checks that every row of the old
``results/tables/probes.parquet`` is in the new one with identical accuracy, n_correct and
n_samples.

On a shared machine wall time is noisy (other processes take the cores); CPU seconds are the
primary figure.

    .venv/bin/python benchmarks/bench_default_run.py [--old-rev 209ee90] [--cores 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "workflow", "config", "src")


def old_copy(rev: str, dest: Path) -> None:
    """The files of ``rev`` (git archive: no worktree, no change to the repository)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev, *COPIED], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def new_copy(dest: Path) -> None:
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)


def scope_overlay(old_dir: Path, new_dir: Path) -> Path | None:
    """A config file switching off the new default's families that the old default lacks."""
    import yaml

    old = yaml.safe_load((old_dir / "config/config.yaml").read_text()) or {}
    new = yaml.safe_load((new_dir / "config/config.yaml").read_text()) or {}
    extra = {key: {"enabled": False} for key, value in new.items()
             if key not in old and isinstance(value, dict) and value.get("enabled")}
    # the old default's probe settings (the new default may add probes, e.g. logreg)
    old_settings = (old.get("probes") or {}).get("settings")
    if old_settings and old_settings != (new.get("probes") or {}).get("settings"):
        extra["probes"] = {"settings": old_settings}
    if not extra:
        return None
    path = new_dir / "bench_scope.yaml"
    path.write_text(yaml.safe_dump(extra))
    return path


def run_side(name: str, workdir: Path, cores: int, configfile: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(workdir / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores)] + (["--configfile", str(configfile)] if configfile else [])
    out_path = workdir / "snakemake.out"
    start = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        # rusage of snakemake and every job it waited for (RUSAGE_CHILDREN of this one child):
        # exact, and unaffected by the other side when both run at once (--parallel)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    text = out_path.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name}: snakemake failed (see {out_path}):\n{text[-3000:]}")
    jobs = Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", text))
    result = {"side": name, "workdir": str(workdir), "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
              "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
              "jobs": dict(sorted(jobs.items())), "total_jobs": sum(jobs.values())}
    table = workdir / "results/tables/benchmarks.parquet"
    if table.exists():
        import pandas as pd

        bench = pd.read_parquet(table)
        per_rule = bench.groupby("rule").agg(jobs=("wall_s", "size"), wall_s=("wall_s", "sum"),
                                             cpu_s=("cpu_s", "sum"), max_rss_mib=("max_rss_mib", "max"))
        result["benchmarks"] = {rule: {k: float(v) for k, v in row.items()}
                                for rule, row in per_rule.iterrows()}
        result["benchmark_cpu_s"] = float(bench.cpu_s.sum())
    return result


def compare_tables(old: Path, new: Path) -> dict:
    import pandas as pd

    keys = ["dataset", "model", "corruption", "seed", "variant", "epoch", "layer", "probe", "probe_setting",
            "fit_labels", "split", "target"]
    values = ["accuracy", "n_correct", "n_samples"]
    a, b = pd.read_parquet(old), pd.read_parquet(new)
    merged = a.merge(b, on=keys, how="left", suffixes=("_old", "_new"), indicator=True)
    missing = merged[merged["_merge"] != "both"]
    both = merged[merged["_merge"] == "both"]
    differ = both[sum((both[f"{v}_old"] != both[f"{v}_new"]) for v in values) > 0]
    return {"old_rows": len(a), "new_rows": len(b), "missing_in_new": len(missing),
            "different_values": len(differ),
            "examples": pd.concat([missing, differ]).head(10)[keys].to_dict("records")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-rev", default="209ee90")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", help="keep the working copies here (default: a temporary folder, removed)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--parallel", action="store_true",
                        help="run both sides at once (CPU seconds stay per side; wall times then "
                             "include the other side's load)")
    args = parser.parse_args()

    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_default_run_"))
    base.mkdir(parents=True, exist_ok=True)
    old_dir, new_dir = base / "old", base / "new"
    for d in (old_dir, new_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    old_copy(args.old_rev, old_dir)
    new_copy(new_dir)  # snapshot now: the tree may change while the old side runs
    scope = scope_overlay(old_dir, new_dir)
    if scope:
        print(f"new side: {scope.read_text().strip()!r} (families the old code does not have)")

    sides = ((f"old ({args.old_rev})", old_dir, None), ("new (working tree)", new_dir, scope))
    for name, workdir, _ in sides:
        print(f"running {name} in {workdir}{' (both at once)' if args.parallel else ''} ...", flush=True)
    if args.parallel:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda side: run_side(side[0], side[1], args.cores, side[2]), sides))
    else:
        results = [run_side(name, workdir, args.cores, extra) for name, workdir, extra in sides]
    for r in results:
        print(f"  {r['side']}: {r['cpu_s']:.0f} CPU s ({r['user_s']:.0f} user + {r['sys_s']:.0f} sys), "
              f"{r['wall_s']:.0f} s wall, {r['total_jobs']} jobs", flush=True)

    comparison = compare_tables(old_dir / "results/tables/probes.parquet",
                                new_dir / "results/tables/probes.parquet")
    old, new = results
    print()
    print(f"{'':<22} {'CPU s':>9} {'wall s':>9} {'jobs':>6}")
    for r in results:
        print(f"{r['side']:<22} {r['cpu_s']:>9.0f} {r['wall_s']:>9.0f} {r['total_jobs']:>6}")
    print(f"{'old / new':<22} {old['cpu_s'] / new['cpu_s']:>9.2f} {old['wall_s'] / new['wall_s']:>9.2f} "
          f"{old['total_jobs'] / max(new['total_jobs'], 1):>6.2f}")
    print("(CPU s: the snakemake process tree's rusage; wall time is noisy on a shared machine)")
    print()
    print("jobs per rule:")
    for rule in sorted(set(old["jobs"]) | set(new["jobs"])):
        print(f"  {rule:<22} old {old['jobs'].get(rule, 0):>4}   new {new['jobs'].get(rule, 0):>4}")
    if "benchmarks" in new:
        print()
        print("new, per rule (Snakemake benchmark files; CPU sampled once a second: lower bounds):")
        print(f"  {'rule':<22} {'jobs':>5} {'wall s':>8} {'CPU s':>8} {'max RSS MiB':>12}")
        for rule, b in sorted(new["benchmarks"].items(), key=lambda kv: -kv[1]["cpu_s"]):
            print(f"  {rule:<22} {b['jobs']:>5.0f} {b['wall_s']:>8.1f} {b['cpu_s']:>8.1f} {b['max_rss_mib']:>12.0f}")
        print(f"  sum of benchmark cpu_time: {new['benchmark_cpu_s']:.0f} s")
    print()
    ok = comparison["missing_in_new"] == 0 and comparison["different_values"] == 0
    print(f"probes.parquet: {comparison['old_rows']} old rows, {comparison['new_rows']} new rows; "
          f"{comparison['missing_in_new']} old rows missing in new, {comparison['different_values']} "
          f"with a different value -> {'IDENTICAL' if ok else 'DIFFERENT'}")
    for example in comparison["examples"]:
        print(f"  {example}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "comparison": comparison}, indent=1,
                                              default=str))
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
