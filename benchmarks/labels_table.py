#!/usr/bin/env python
"""The labels family's summary table of a finished run: per judged run, each detector's AUROC and
what repairing gained (the README's and the issue note's table).

For every run of results/tables/labels_detection.parquet: the AUROC of the probe detector and of
cleanlab (layer route) that the repair chose without the truth (``select: heldout``, near the test
accuracy's peak), beside the best AUROC of any reading (detector x epoch x layer, an oracle); and,
from results/tables/labels_repair.parquet, the final test accuracy of the network trained on the
given labels, after each repair, on the true labels, and the images family's MASC relabel-and-
retrain where it ran (results/runs/<run>/relabel/*.parquet).

    python benchmarks/labels_table.py [--results results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results")
    args = p.parse_args(argv)
    root = Path(args.results)
    detection = pd.read_parquet(root / "tables/labels_detection.parquet")
    repair_path = root / "tables/labels_repair.parquet"
    repair = pd.read_parquet(repair_path) if repair_path.exists() else None
    print("| dataset / model | corruption | wrong labels | best probe AUROC (any reading) | cleanlab AUROC "
          "(any reading) | chosen probe (AUROC) | chosen cleanlab (AUROC) | test acc.: given | probe relabel "
          "| probe remove | cleanlab relabel | cleanlab remove | MASC relabel-retrain | true labels |")
    print("|" + "---|" * 14)
    for (dataset, model, corruption, seed), rows in detection.groupby(["dataset", "model", "corruption", "seed"]):
        probes, cleanlab = rows[rows.detector != "cleanlab"], rows[rows.detector == "cleanlab"]
        bp = probes.loc[probes.auroc.idxmax()]
        bc = cleanlab.loc[cleanlab.auroc.idxmax()] if len(cleanlab) else None
        wrong = f"{rows.n_wrong.iloc[0] / rows.n_train.iloc[0]:.2f}"
        cells = [f"{dataset} / {model} (seed {seed})", f"{corruption:g}", wrong,
                 f"{bp.auroc:.3f} ({bp.detector}, {bp.layer}, epoch {bp.epoch})",
                 f"{bc.auroc:.3f} ({bc.layer}, epoch {bc.epoch})" if bc is not None else "-"]
        fix = None if repair is None else repair[(repair.dataset == dataset) & (repair.model == model)
                                                 & (repair.corruption == corruption) & (repair.seed == seed)]
        if fix is None or not len(fix):
            cells += ["-"] * 9
        else:
            def acc(chosen_as, mode, fix=fix):
                hit = fix[(fix.chosen_as == chosen_as) & (fix["mode"] == mode)]
                return f"{hit.test_accuracy.iloc[0]:.3f}" if len(hit) else "-"

            def chosen(kind, fix=fix):
                hit = fix[fix.chosen_as == kind]
                if not len(hit):
                    return "-"
                r = hit.iloc[0]
                return f"{r.detector} {r.layer} @{r.epoch} ({r.auroc:.3f})"

            relabel = []
            for path in sorted((root / "runs" / dataset / model / f"c{corruption:g}" / f"s{seed}" / "standard"
                                / "relabel").glob("*.parquet")):
                t = pd.read_parquet(path)
                t = t[(t.probe == "relabel_retrain") & (t.split == "test") & (t.target == "true")
                      & (t.fit_labels == "corrupted")]
                relabel += [f"{a:.3f}" for a in t.accuracy]
            cells += [chosen("probe"), chosen("cleanlab"), acc("baseline", "given"), acc("probe", "relabel"),
                      acc("probe", "remove"), acc("cleanlab", "relabel"), acc("cleanlab", "remove"),
                      ", ".join(relabel) or "-", acc("baseline", "true")]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
