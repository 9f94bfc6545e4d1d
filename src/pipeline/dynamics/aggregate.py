"""The dynamics family's aggregation: per-run tables into the tables under results/tables, and the
Welch tests across seeds (``python -m pipeline dynamics-tables``).

Torch-free (unlike :mod:`pipeline.dynamics.stage`, which trains and probes), so the aggregation
job starts without importing torch; :mod:`pipeline.dynamics.stage` re-exports these names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.core.tables import gather_tables, read_parquet_metadata, read_table, write_parquet, write_table
from pipeline.dynamics import tables as T

#: footer entries of the first per-run table that hold for the gathered table (the config sections
#: and choices every run shares; not the run's own keys or grid)
_SHARED_META = ("config", "sources", "dynamics", "depths", "splits")


def welch_rows(pointwise: pd.DataFrame) -> list[dict]:
    """Welch tests across seeds of the per-run mean point-wise consistency, each noisy corruption
    against the clean runs (the lowest corruption), per (pair, depth, split, subset, reference,
    window ordinal). Needs >= 2 seeds per group; fewer give no row. Runs compared over windows of
    different span or checkpoint count are refused (:func:`pipeline.dynamics.windows.check_equal_windows`):
    the ordinal then names the same window ``[T1, T2]`` in every run."""
    from pipeline.dynamics.stats import welch_test
    from pipeline.dynamics.windows import check_equal_windows

    if pointwise.empty:
        return []
    check_equal_windows(pointwise)
    df = pointwise.copy()
    run_cols = list(T.RUN_KEY_COLUMNS)
    # window ordinal within each run: windows in (T1, T2) order, so runs of one config agree
    wins = df[run_cols + ["window_start", "deep_epoch"]].drop_duplicates()
    wins = wins.sort_values(run_cols + ["window_start", "deep_epoch"])
    wins["window"] = wins.groupby(run_cols, dropna=False).cumcount()
    df = df.merge(wins, on=run_cols + ["window_start", "deep_epoch"])
    means = (df.groupby(run_cols + ["depth", "split", "subset", "reference", "window"], dropna=False)
             ["consistency"].mean().reset_index())
    rows = []
    group = ["dataset", "model", "depth", "split", "subset", "reference", "window"]
    for key, g in means.groupby(group, dropna=False):
        levels = sorted(g["corruption"].unique())
        if len(levels) < 2:
            continue
        a = g[g["corruption"] == levels[0]]["consistency"].to_numpy()
        for c in levels[1:]:
            b = g[g["corruption"] == c]["consistency"].to_numpy()
            if a.size < 2 or b.size < 2:
                continue
            res = welch_test(a, b)
            rows.append({**dict(zip(group, key, strict=True)), "measure": "mean_pointwise_consistency",
                         "corruption_a": float(levels[0]), "corruption_b": float(c), **res})
    return rows


def aggregate_tables(composites: Sequence[str | Path], *, out_composite, out_pointwise,
                     out_trajectories, out_welch) -> None:
    """Gather per-run composite tables (their point-wise and trajectory siblings are found next to
    them) into the aggregated tables, sorted by their keys, plus the Welch tests across seeds."""
    from pipeline.dynamics.paths import DYNAMICS_RUN_FILES

    dirs = [Path(p).parent for p in composites]
    names = {k: Path(v).name for k, v in DYNAMICS_RUN_FILES.items()}
    meta = {**read_parquet_metadata(composites[0]), "sources": json.dumps([str(d) for d in dirs])}
    meta = {k: v for k, v in meta.items() if k.startswith("choice.") or k in _SHARED_META}
    kinds = (("composite", out_composite, T.COMPOSITE), ("pointwise", out_pointwise, T.POINTWISE),
             ("trajectories", out_trajectories, T.TRAJECTORIES))
    tables = {kind: gather_tables([d / names[kind] for d in dirs], schema) for kind, _, schema in kinds}
    # unequal windows are refused here, before any table is written (no half-written outputs)
    welch = T.welch_frame(welch_rows(tables["pointwise"]))
    for kind, out, schema in kinds:
        write_table(tables[kind], out, schema, meta)
    write_table(welch, out_welch, T.WELCH, {**meta, "welch": "across seeds; per-run mean point-wise "
                                                             "consistency; needs >= 2 seeds per group; "
                                                             "equal windows in every run compared"})
    print(f"{len(dirs)} runs -> {out_composite}, {out_pointwise}, {out_trajectories}, {out_welch}")


def aggregate_sgd_noise(inputs: Sequence[str | Path], out: str | Path) -> None:
    table = gather_tables(inputs, T.SGD_NOISE)
    meta = {**read_parquet_metadata(inputs[0]), "sources": json.dumps([str(p) for p in inputs])}
    meta.pop("run", None)
    write_table(table, out, T.SGD_NOISE, meta)
    print(f"{len(inputs)} runs -> {out}")


def aggregate_ablations(logs: Sequence[str | Path], out: str | Path) -> None:
    """The ablation runs' training logs in one table, with their kind, depth and branch epoch; a
    standard run's log (no ``ablation`` record) is the baseline, kind ``standard``."""
    parts = []
    for path in logs:
        df = read_table(path)
        meta = read_parquet_metadata(path)
        info = json.loads(meta.get("ablation", "{}")) or {"kind": "standard"}
        for k in ("kind", "depth", "epoch"):
            df.insert(len(T.RUN_KEY_COLUMNS) + len([c for c in ("ablation", "ablation_depth",
                                                                "ablation_epoch") if c in df]),
                      {"kind": "ablation", "depth": "ablation_depth", "epoch": "ablation_epoch"}[k],
                      info.get(k))
        parts.append(df)
    table = pd.concat(parts, ignore_index=True)
    config = {k: v for k, v in read_parquet_metadata(logs[0]).items() if k == "config"}
    write_parquet(table, out, {**config, **T.CHOICE_METADATA, "sources": json.dumps([str(p) for p in logs])})
    print(f"{len(logs)} ablation runs -> {out}")
