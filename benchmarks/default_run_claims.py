#!/usr/bin/env python
"""The numbers the README quotes from the default run, printed from a finished run's tables.

After ``snakemake --cores 2`` (config/config.yaml), this prints, from ``results/tables/``:

* the README's table: test accuracy (true labels) at each digits-MLP run's final epoch of the model
  (and its peak over training), of each probe at its best layer (fitted on the corrupted labels),
  of the edited model (VeLPIC class vectors as output weights, bias kept), and of relabel-and-retrain
  with corrupted-label and true-label MASC subspaces;
* the feature-dynamics sentences: composites of the clean run at fc2 with the initialization as
  shallow part, point-wise test consistency over the window [0, 4], and at 80 % the early shallow part
  under the final deep part against the final network;
* the labels family's digits cell: ``benchmarks/labels_table.py``'s table.

So every number the README gives for the default run can be checked against a rerun.

    .venv/bin/python benchmarks/default_run_claims.py [--results results]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

PROBES = [  # (README row, probe, probe_setting prefix)
    ("MASC 0.99, best layer (corrupted-label subspaces)", "masc", "variance=0.99"),
    ("MASC, 1 component per class, best layer", "masc", "variance=1"),
    ("VeLPIC, best layer", "velpic", "sign=class_mean"),
    ("the authors' logistic-regression probe (`linear`), best layer", "linear", ""),
    ("logistic regression to convergence (`logreg`), best layer", "logreg", ""),
]


def readme_table(tables: Path) -> pd.DataFrame:
    probes = pd.read_parquet(tables / "probes.parquet")
    log = pd.read_parquet(tables / "train_log.parquet")
    mine = probes[(probes["dataset"] == "digits") & (probes["model"] == "mlp") & (probes["variant"] == "standard")
                  & (probes["split"] == "test") & (probes["target"] == "true")]
    runs = log[(log["dataset"] == "digits") & (log["model"] == "mlp") & (log["variant"] == "standard")]
    rows: dict[str, dict] = {}
    for corruption, run_log in runs.groupby("corruption"):
        col = f"{corruption:.0%}"
        final = int(run_log["epoch"].max())
        last = run_log[run_log["epoch"] == final].iloc[0]
        rows.setdefault("model (its peak during training)", {})[col] = (
            f"{last['test_acc']:.2f} ({run_log['test_acc'].max():.2f}); epoch {final}")
        at = mine[(mine["corruption"] == corruption) & (mine["epoch"] == final)]
        for label, probe, setting in PROBES:
            cand = at[(at["probe"] == probe) & at["probe_setting"].str.startswith(setting)
                      & (at["fit_labels"] == "corrupted")]
            best = cand.loc[cand["accuracy"].idxmax()]
            rows.setdefault(label, {})[col] = f"{best['accuracy']:.2f} ({best['layer']})"
        edited = at[(at["probe"] == "edited_model") & (at["probe_setting"] == "bias=keep,sign=class_mean")
                    & (at["fit_labels"] == "corrupted")]
        rows.setdefault("edited model (VeLPIC vectors as output weights)", {})[col] = \
            f"{edited['accuracy'].iloc[0]:.2f}"
        relabel = mine[(mine["corruption"] == corruption) & (mine["probe"] == "relabel_retrain")]
        for fit, label in (("corrupted", "relabel with corrupted-label MASC subspaces and retrain"),
                           ("true", "relabel with true-label MASC subspaces and retrain")):
            value = relabel[relabel["fit_labels"] == fit]["accuracy"]
            rows.setdefault(label, {})[col] = f"{value.iloc[0]:.2f}" if len(value) else "-"
    return pd.DataFrame(rows).T


def dynamics(tables: Path) -> list[str]:
    comp = pd.read_parquet(tables / "composite.parquet")
    comp = comp[(comp["model"] == "mlp") & (comp["split"] == "test") & (comp["subset"] == "all")
                & (comp["label_source"] == "true")]
    lines = []
    log = pd.read_parquet(tables / "train_log.parquet")
    log = log[(log["model"] == "mlp") & (log["variant"] == "standard")]
    for corruption in sorted(comp["corruption"].unique()):
        rows = comp[(comp["corruption"] == corruption) & (comp["depth"] == "fc2")]
        final_deep = rows[rows["deep_epoch"] == rows["deep_epoch"].max()]
        network = log[log["corruption"] == corruption].sort_values("epoch")["test_acc"].iloc[-1]
        parts = ", ".join(f"shallow {int(r.shallow_epoch)}: {r.accuracy:.2f}"
                          for r in final_deep.sort_values("shallow_epoch").itertuples())
        lines.append(f"composites at fc2, deep part epoch {int(final_deep['deep_epoch'].max())}, corruption "
                     f"{corruption:g} (final network {network:.2f}): {parts}")
    point = pd.read_parquet(tables / "composite_pointwise.parquet")
    point = point[(point["model"] == "mlp") & (point["split"] == "test") & (point["window_start"] == 0)]
    for (depth, corruption), rows in point.groupby(["depth", "corruption"]):
        lines.append(f"point-wise test consistency [0, 4] {depth}, corruption {corruption:g}: "
                     f"{rows['consistency'].mean():.2f} (n_epochs {sorted(int(n) for n in rows['n_epochs'].unique())})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    args = parser.parse_args()
    tables = Path(args.results) / "tables"
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(readme_table(tables).to_string())
    print()
    print("\n".join(dynamics(tables)))
    print()
    script = Path(__file__).resolve().parent / "labels_table.py"
    subprocess.run([sys.executable, str(script), "--results", args.results], check=True)


if __name__ == "__main__":
    main()
