#!/usr/bin/env python
"""The arithmetic claims of README.md and docs/arithmetic.md, from the tables of a run, as mean +- sd
over the seeds the run holds.

Reads ``results/tables/arithmetic.parquet`` (written by ``snakemake arithmetic --cores 2``) or, with
``--cells``, every cell's own ``arithmetic.parquet`` under a folder (whatever cells have finished,
e.g. after ``snakemake arithmetic --cores 2 --configfile config/arithmetic-seeds.yaml``, the default
grid over seeds 0-2), and prints one markdown row per (alpha, noise mode, width) at the last
epoch: the raw network's accuracy on the noisy training pairs (their given labels) and on the test
pairs, the frequency-filtered G network on the test pairs and on the noisy pairs' true labels, R,
and the controls (G_randfreq, perm_G, init_G). Each entry is ``mean ± sd`` (sample sd, ddof 1)
over the row's seeds, whose number is the row's ``seeds`` column; one seed prints the value alone.

    python benchmarks/arithmetic_claims.py                                   # the default run's table
    python benchmarks/arithmetic_claims.py --cells results/arithmetic --check-headline 0.9

``--check-headline X`` exits 1 unless the widest network's G test accuracy at the largest
``wrong_only`` alpha is >= X for every seed (the README's headline).

A number here is reproducible bit for bit on the same kind of CPU (same torch, one thread or two:
measured equal), not across CPUs whose vector units differ (AVX2 vs
AVX-512: torch picks other kernels, float sums round differently and the chaotic AdamW steps carry
the difference into other weights); hence the spread over seeds, which is the claim's real error bar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

#: (column header, network, split) of the table, in order
COLUMNS = (
    ("raw train (noisy, given)", "raw", "train_noisy_given"),
    ("raw test", "raw", "test"),
    ("G test", "G", "test"),
    ("G noisy (true labels)", "G", "train_noisy_true"),
    ("R test", "R", "test"),
    ("G_randfreq test", "G_randfreq", "test"),
    ("perm_G test", "perm_G", "test"),
    ("init_G test", "init_G", "test"),
)


def last_epoch_whole_networks(results: pd.DataFrame) -> pd.DataFrame:
    """Rows of whole-network variants (score ``none``) at each cell's last epoch."""
    cell = ["task", "P", "train_fraction", "alpha", "noise_mode", "width", "activation", "tied",
            "optimizer", "weight_decay", "seed"]
    whole = results[results["score"] == "none"]
    last = whole.groupby(cell, dropna=False)["epoch"].transform("max")
    return whole[whole["epoch"] == last]


def fmt(values: pd.Series) -> str:
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def claims_table(results: pd.DataFrame) -> tuple[str, list[int]]:
    """The markdown table (mean +- sd over seeds) and the seeds it averages."""
    rows = last_epoch_whole_networks(results)
    seeds = sorted(int(s) for s in rows["seed"].unique())
    header = ["alpha", "M", "seeds", *[c[0] for c in COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (alpha, mode, width), group in rows.groupby(["alpha", "noise_mode", "width"], sort=True):
        label = f"{alpha:g}" if mode == "wrong_only" else f"{alpha:g} (`{mode}`)"
        cells = []
        for _, network, split in COLUMNS:
            sel = group[(group["network"] == network) & (group["split"] == split)]
            cells.append(fmt(sel.sort_values("seed")["accuracy"]))
        n_seeds = group["seed"].nunique()
        lines.append("| " + " | ".join([label, str(width), str(n_seeds), *cells]) + " |")
    return "\n".join(lines), seeds


def headline(results: pd.DataFrame) -> pd.Series:
    """G test accuracy per seed of the widest network at the largest ``wrong_only`` alpha."""
    rows = last_epoch_whole_networks(results)
    rows = rows[(rows["noise_mode"] == "wrong_only") & (rows["network"] == "G") & (rows["split"] == "test")]
    rows = rows[rows["alpha"] == rows["alpha"].max()]
    rows = rows[rows["width"] == rows["width"].max()]
    return rows.set_index("seed")["accuracy"].sort_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/tables/arithmetic.parquet")
    parser.add_argument("--cells", nargs="+", default=None,
                        help="folder(s) holding cells (read instead of --results)")
    parser.add_argument("--check-headline", type=float, default=None, metavar="X")
    args = parser.parse_args(argv)
    if args.cells:
        files = sorted(f for folder in args.cells for f in Path(folder).rglob("arithmetic.parquet"))
        if not files:
            parser.error(f"no cell's arithmetic.parquet under {args.cells}")
        # a cell's table is complete once its index.json (the done marker) exists
        files = [f for f in files if (f.parent / "index.json").exists()]
        results = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    else:
        results = pd.read_parquet(args.results)
    # a cell found twice (two result folders of one run) counts once
    results = results.drop_duplicates(subset=[c for c in results.columns
                                              if c not in ("accuracy", "n_correct", "n_samples")])
    table, seeds = claims_table(results)
    print(f"mean ± sd over {len(seeds)} seed(s) {seeds}, accuracy at each cell's last epoch")
    print(table)
    best = headline(results)
    print(f"headline: G test at the widest width, largest alpha, per seed: "
          f"{', '.join(f'{s}: {v:.3f}' for s, v in best.items())}")
    if args.check_headline is not None and not (best >= args.check_headline).all():
        print(f"headline below {args.check_headline} for some seed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
