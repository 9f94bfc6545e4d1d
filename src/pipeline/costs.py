"""What each workflow stage costs: Snakemake's per-job benchmark files, gathered into one table.

Every rule writes a Snakemake ``benchmark:`` file (:func:`benchmark_path`):
``results/benchmarks/{rule}/dataset={dataset}/model={model}/.../epoch={epoch}.tsv``, one folder
level per wildcard of the rule, so the file's path alone names the job. :func:`benchmark_table`
reads them into ``results/tables/benchmarks.parquet``: one row per job with

* ``rule``, then the run-key columns (:data:`pipeline.core.tables.RUN_KEY_COLUMNS`; NA for rules without
  them, e.g. aggregation), then ``epoch`` and ``other`` (the job's remaining wildcards, e.g.
  ``block=0`` or ``protocol=heldout_true``);
* ``wall_s`` (Snakemake's ``s``), ``cpu_s`` (its ``cpu_time``: user + system seconds of the
  job's process tree) and ``max_rss_mib`` (its ``max_rss``, MiB);
* the **scale** of the run the job belongs to (:data:`SCALE_COLUMNS`: ``n_train``, ``n_test``,
  ``max_epochs``, :func:`run_scale`), read from the config that run recorded in its
  ``train_log.parquet`` (``results/runs/...``, next to the benchmark folder ``results/benchmarks``);
  NA for jobs without a whole run key (aggregation, plots) and for runs without a train log.

Snakemake samples a job's processes about once a second, so ``cpu_s`` and ``max_rss_mib`` of a
job under a second are 0 (or NA) and those of longer jobs miss their last second: lower bounds.
``wall_s`` is exact.

:func:`measured_costs` turns the table into per-rule figures per job for ``python -m pipeline
plan``, which lets them stand in only for planned jobs of the same rule, dataset, model and scale
(:func:`pipeline.plan.make_plan`). Nothing here imports pandas until a table is read, so the
Snakefile can import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.core.errors import ArtifactError

#: Where the per-job benchmark files go (under the working directory).
BENCHMARK_DIR = "results/benchmarks"
#: The aggregated table.
BENCHMARK_TABLE = "results/tables/benchmarks.parquet"
#: Columns of the table after the rule and run keys.
COST_COLUMNS = {"epoch": "Int64", "other": "string", "wall_s": "float64", "cpu_s": "float64",
                "max_rss_mib": "float64"}
#: Columns of the table after the cost columns: the scale of the job's run (:func:`run_scale`).
SCALE_COLUMNS = {"n_train": "Int64", "n_test": "Int64", "max_epochs": "Int64"}


def run_scale(config: dict, dataset: str) -> dict[str, int]:
    """The scale of a run of ``dataset`` under ``config``, the one thing besides the rule, dataset
    and model that a measured job must share with a planned job to stand in for it:
    ``n_train``/``n_test``, the training and test images after ``data.train_subset``/``test_subset``
    (:func:`pipeline.core.datasets.dataset_sizes`), and ``max_epochs``, ``train.max_epochs``."""
    from pipeline.core.datasets import dataset_sizes

    n_train, n_test = dataset_sizes(config, dataset)
    return {"n_train": int(n_train), "n_test": int(n_test), "max_epochs": int(config["train"]["max_epochs"])}


def _recorded_scale(train_log: Path, dataset: str) -> tuple | None:
    """:func:`run_scale` of the config a run recorded in its train log; None if unreadable."""
    import json

    from pipeline.core.tables import read_parquet_metadata

    try:
        config = json.loads(read_parquet_metadata(train_log)["config"])
        scale = run_scale(config, dataset)
    except Exception:  # no/odd metadata, a dataset not in the registry: scale unknown
        return None
    return tuple(scale[c] for c in SCALE_COLUMNS)


#: recorded scales by (train log, its mtime, dataset): a table of many jobs per run reads each log once
_SCALE_CACHE: dict[tuple, tuple | None] = {}


def _row_scale(row: dict, results: Path) -> tuple | None:
    """The scale of the run of a benchmark row (raw wildcard strings) whose run folders are under
    ``results``/runs; None if the row has no whole run key or its run has no train log."""
    from pipeline.core.config import RUN_PATH
    from pipeline.core.tables import RUN_KEY_COLUMNS

    if any(row.get(key) is None for key in RUN_KEY_COLUMNS):
        return None
    log = results / RUN_PATH.format(**{key: row[key] for key in RUN_KEY_COLUMNS}) / "train_log.parquet"
    try:
        mtime = log.stat().st_mtime_ns
    except OSError:
        return None
    key = (str(log), mtime, row["dataset"])
    if key not in _SCALE_CACHE:
        _SCALE_CACHE[key] = _recorded_scale(log, row["dataset"])
    return _SCALE_CACHE[key]


def benchmark_path(rule: str, wildcards: Iterable[str] = ()) -> str:
    """The benchmark file of ``rule``, one ``name={name}`` folder level per wildcard (the last is
    the file name): ``benchmark_path("x", ["dataset", "epoch"])`` is
    ``results/benchmarks/x/dataset={dataset}/epoch={epoch}.tsv``."""
    parts = [f"{w}={{{w}}}" for w in wildcards]
    return "/".join([BENCHMARK_DIR, rule, *parts]) + ".tsv" if parts else f"{BENCHMARK_DIR}/{rule}.tsv"


def parse_benchmark_path(path: str | os.PathLike, root: str | os.PathLike = BENCHMARK_DIR) -> tuple[str, dict]:
    """``(rule, {wildcard: value})`` of a file made by :func:`benchmark_path` under ``root``."""
    rel = Path(path).relative_to(root) if Path(path).is_relative_to(root) else Path(path)
    parts = list(rel.with_suffix("").parts)
    if len(parts) == 1:
        return parts[0], {}
    rule, wildcards = parts[0], {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"benchmark file {path}: folder {part!r} is not name=value")
        wildcards[key] = value
    return rule, wildcards


def benchmark_files(root: str | os.PathLike = BENCHMARK_DIR) -> list[Path]:
    return sorted(Path(root).rglob("*.tsv")) if Path(root).is_dir() else []


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # "NA" (Snakemake writes it when no sample was taken)
        return float("nan")


def read_benchmark(path: str | os.PathLike, root: str | os.PathLike = BENCHMARK_DIR) -> list[dict]:
    """Rows (one per repeat; Snakemake writes one unless ``repeat()``) of one benchmark TSV."""
    from pipeline.core.tables import RUN_KEY_COLUMNS

    rule, wildcards = parse_benchmark_path(path, root)
    lines = [line.rstrip("\n").split("\t") for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        return []
    header, records = lines[0], lines[1:]
    for needed in ("s", "max_rss", "cpu_time"):
        if needed not in header:
            raise ValueError(f"benchmark file {path} has no column {needed!r} (columns: {header})")
    rows = []
    for record in records:
        values = dict(zip(header, record, strict=False))
        row: dict = {"rule": rule}
        for key in RUN_KEY_COLUMNS:
            row[key] = wildcards.get(key)
        row["epoch"] = int(wildcards["epoch"]) if "epoch" in wildcards else None
        other = {k: v for k, v in wildcards.items() if k not in RUN_KEY_COLUMNS and k != "epoch"}
        row["other"] = ",".join(f"{k}={v}" for k, v in sorted(other.items())) or None
        row["wall_s"] = _number(values["s"])
        row["cpu_s"] = _number(values["cpu_time"])
        row["max_rss_mib"] = _number(values["max_rss"])
        rows.append(row)
    return rows


def benchmark_table(paths: Iterable[str | os.PathLike], root: str | os.PathLike = BENCHMARK_DIR):
    """One DataFrame of the benchmark files ``paths`` (see the module docstring), sorted by rule
    and wildcards."""
    import pandas as pd

    from pipeline.core.tables import RUN_KEY_COLUMNS

    rows = [row for path in paths for row in read_benchmark(path, root)]
    results = Path(root).parent  # results/benchmarks -> results (whose runs/ hold the train logs)
    for row in rows:
        row.update(zip(SCALE_COLUMNS, _row_scale(row, results) or (None,) * len(SCALE_COLUMNS), strict=True))
    columns = {"rule": "string", **RUN_KEY_COLUMNS, **COST_COLUMNS, **SCALE_COLUMNS}
    frame = pd.DataFrame(rows, columns=list(columns))
    # run-key dtypes with NA where a rule has no such wildcard
    dtypes = {k: {"int64": "Int64", "float64": "Float64"}.get(v, v) for k, v in columns.items()}
    dtypes.update({c: "float64" for c in ("wall_s", "cpu_s", "max_rss_mib")})
    frame = frame.astype(dtypes)
    order = ["rule", *RUN_KEY_COLUMNS, "epoch", "other"]
    return frame.sort_values(order, kind="stable", na_position="first").reset_index(drop=True)


def write_benchmark_table(inputs: Iterable[str | os.PathLike], out: str | os.PathLike):
    """Gather benchmark files (``inputs``: files, or folders searched for ``*.tsv``) into ``out``."""
    from pipeline.core.tables import write_parquet

    files: list[Path] = []
    roots: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files += benchmark_files(item)
            roots += [item] * len(benchmark_files(item))
        else:
            files.append(item)
            roots.append(Path(BENCHMARK_DIR))
    import pandas as pd

    frames = [benchmark_table([f], r) for f, r in zip(files, roots, strict=True)]
    table = (pd.concat(frames, ignore_index=True) if frames else benchmark_table([]))
    order = ["rule", "dataset", "model", "corruption", "seed", "variant", "epoch", "other"]
    table = table.sort_values(order, kind="stable", na_position="first").reset_index(drop=True)
    write_parquet(table, out, {"sources": str(len(files))})
    return table


# ----------------------------------------------------------------------------- for the plan

def load_measurements(path: str | os.PathLike | None = None):
    """The benchmark table at ``path``, else ``results/tables/benchmarks.parquet``, else the
    benchmark files under ``results/benchmarks``; ``(table, source)`` or ``(None, None)``."""
    import pandas as pd

    if path is not None:
        path = Path(path)
        if path.is_dir():
            files = benchmark_files(path)
            return (benchmark_table(files, path), str(path)) if files else (None, None)
        if not path.is_file():
            raise ArtifactError(f"benchmarks {path}: no such file or folder; give a benchmark table "
                                f"({BENCHMARK_TABLE}) or a folder of Snakemake benchmark files "
                                f"({BENCHMARK_DIR}), or leave --benchmarks out")
        try:
            return pd.read_parquet(path), str(path)
        except Exception as exc:  # not Parquet, truncated: pyarrow raises several types
            raise ArtifactError(f"benchmarks {path}: not a readable benchmark table ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}); rebuild it with "
                                f"snakemake {BENCHMARK_TABLE} or point --benchmarks at {BENCHMARK_DIR}") from None
    if Path(BENCHMARK_TABLE).exists():
        return pd.read_parquet(BENCHMARK_TABLE), BENCHMARK_TABLE
    files = benchmark_files(BENCHMARK_DIR)
    if files:
        return benchmark_table(files), BENCHMARK_DIR
    return None, None


def measured_costs(table, dataset: str | None = None, model: str | None = None,
                   scale: dict | None = None) -> dict[str, dict]:
    """Per rule: jobs measured, mean wall and CPU seconds per job, largest max RSS (MiB); a job
    too short for Snakemake to sample counts 0 CPU s and 0 MiB.

    With ``dataset``/``model``, only that pair's jobs count where the rule has them (rules
    without run keys, e.g. aggregation, always count). With ``scale`` (:func:`run_scale`), only
    jobs of exactly that dataset, model and scale count: rows without a recorded scale (a table
    from before the scale columns, jobs without a whole run key) never do."""
    if table is None or len(table) == 0:
        return {}
    rows = table
    if scale is not None:
        rows = _with_scale(rows)
        same = (rows["dataset"] == dataset) & (rows["model"] == model)
        for column in SCALE_COLUMNS:
            same &= rows[column] == int(scale[column])
        rows = rows[same.fillna(False).astype(bool)]  # NA (not recorded) is not the same
    if dataset is not None:
        rows = rows[rows["dataset"].isna() | (rows["dataset"] == dataset)]
    if model is not None:
        rows = rows[rows["model"].isna() | (rows["model"] == model)]
    costs = {}
    for rule, group in rows.groupby("rule", sort=True):
        costs[str(rule)] = {"jobs": int(len(group)),
                            "wall_s": float(group["wall_s"].mean()),
                            "cpu_s": float(group["cpu_s"].fillna(0).mean()),
                            "max_rss_mib": float(group["max_rss_mib"].fillna(0).max())}
    return costs


def _with_scale(table):
    """``table`` with the :data:`SCALE_COLUMNS` (all NA when a table predates them)."""
    missing = [c for c in SCALE_COLUMNS if c not in table.columns]
    if missing:
        table = table.assign(**{c: None for c in missing}).astype({c: SCALE_COLUMNS[c] for c in missing})
    return table


def measured_scales(table) -> list[dict]:
    """What a benchmark table measured, for the plan's report: one entry per (dataset, model,
    scale) with its jobs (NA dataset/model/scale: ``None``), in the table's order."""
    if table is None or len(table) == 0:
        return []
    table = _with_scale(table)
    keys = ["dataset", "model", *SCALE_COLUMNS]
    out = []
    for values, group in table.groupby(keys, sort=False, dropna=False):
        entry = {k: (None if _isna(v) else (int(v) if k in SCALE_COLUMNS else str(v)))
                 for k, v in zip(keys, values, strict=True)}
        entry["jobs"] = int(len(group))
        out.append(entry)
    return out


def _isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


# ----------------------------------------------------------------------------- the cost model (issue 11)
#
# Hours before launch. Each rule's seconds per job are a sum of per-unit constants times the sizes of
# that job in the grid (samples, forward multiply-accumulates, layer dims, classes, epochs, bytes):
#
#   train          E * (n_train * macs * train_s_per_mac + (n_train + n_test) * macs * forward_s_per_mac)
#                  (a training epoch; the log's accuracies on both splits every epoch) + overhead
#   extract        (n_train + n_test) * macs * forward_s_per_mac + activation bytes * io_s_per_byte
#   reduce         activation bytes * io + per layer and label source 2 n d^2 * gemm64
#   probe          per layer, label source and setting, per class (n_c = n_train / K, m = min(n_c, d),
#                  M = max(n_c, d)):  MASC / VeLPIC  2 m^2 M * gemm64 + m^3 * eigh ONCE per layer and
#                  source however many such settings (one shared eigendecomposition per class,
#                  pipeline.probes.fit_spectral), + 2 m d k per MASC setting (its basis);  NCM 2 n d;
#                  linear 6 epochs n d K, logreg 400 n d K, lda d^3 + 2 n d^2, knn 2 n_test n d
#                  (* score32); scoring 2 (n_train + n_test) d k * score32 (k: MASC's basis columns,
#                  <= 64 per class, or K vectors); per class and setting probe_class_s +
#                  d^2 probe_class_d2_s (what the primitives miss: fitted to real MASC/VeLPIC fits);
#                  + reading the activation file (staged only)
#   probe_fused    the forward pass + probe, no file
#   the rest       overhead (starting Python)
#
# The constants come from a calibration entry (cost_calibration.json, made by
# benchmarks/calibrate_costs.py on the machine named in its provenance); a rule with Snakemake
# benchmark files of an earlier run uses those measured seconds instead (measured_costs).

#: the built-in calibration shipped with the package
CALIBRATION_PATH = Path(__file__).with_name("cost_calibration.json")
#: constants every calibration entry has
CALIBRATION_CONSTANTS = ("forward_s_per_mac", "train_s_per_mac", "io_s_per_byte", "gemm64_s_per_flop",
                         "eigh_s_per_n3", "score32_s_per_flop", "job_overhead_s", "probe_class_s",
                         "probe_class_d2_s")


def load_calibration(path: str | os.PathLike | None = None) -> dict:
    """The calibration entries by device (``"cpu"``, ``"cuda"``): ``{device: entry}``, each entry
    with ``name``, ``device``, ``provenance`` (machine, date, script, ...) and ``constants``."""
    import json

    path = Path(path) if path is not None else CALIBRATION_PATH
    data = json.loads(path.read_text())
    entries = {}
    for entry in data["entries"]:
        missing = [k for k in CALIBRATION_CONSTANTS if k not in entry["constants"]]
        if missing or not entry.get("provenance"):
            raise ValueError(f"calibration {path}: entry {entry.get('name')!r} lacks "
                             f"{missing or 'provenance'}; regenerate it with benchmarks/calibrate_costs.py")
        entries[entry["device"]] = entry
    return entries


def probe_flops(layers: dict[str, int], settings: list[dict], *, n_train: int, n_test: int,
                num_classes: int, sources: int) -> dict[str, float]:
    """Work of fitting and scoring every probe setting on ``layers`` (name -> dim) for ``sources``
    label sources: ``{"gemm64": flops, "eigh": n^3 units, "score32": flops}`` (see above)."""
    K = max(1, num_classes)
    n_c = max(1, n_train // K)
    gemm = eigh = score = classes = class_d2 = 0.0
    rows = n_train + n_test
    spectral = any(entry["name"] in ("masc", "velpic") for entry in settings)
    for d in layers.values():
        m, M = min(n_c, d), max(n_c, d)
        if spectral:  # the second moment (or Gram matrix) and its eigh: once for all such settings
            gemm += K * 2.0 * m * m * M
            eigh += K * float(m) ** 3
        for entry in settings:
            name = entry["name"]
            params = entry.get("params") or {}
            classes += K
            class_d2 += K * float(d) * d
            if name in ("masc", "velpic"):
                k = K * min(m, 64) if name == "masc" else K
                if name == "masc" and n_c < d:
                    gemm += 2.0 * m * d * k  # the basis X_c^T W[:, :k] of the Gram route
                score += 2.0 * rows * d * k
            elif name == "ncm":
                score += 2.0 * n_train * d + 2.0 * rows * d * K
            elif name == "linear":
                score += 6.0 * int(params.get("epochs", 20)) * n_train * d * K + 2.0 * rows * d * K
            elif name == "logreg":
                score += 400.0 * n_train * d * K + 2.0 * rows * d * K
            elif name == "lda":
                gemm += 2.0 * n_train * d * d
                eigh += float(d) ** 3
                score += 2.0 * rows * d * K
            elif name == "knn":
                score += 2.0 * rows * n_train * d
    return {"gemm64": gemm * sources, "eigh": eigh * sources, "score32": score * sources,
            "classes": classes * sources, "class_d2": class_d2 * sources}


def seconds(constants: dict, *, forward_macs: float = 0.0, train_macs: float = 0.0, io_bytes: float = 0.0,
            work: dict | None = None, jobs_overhead: float = 1.0) -> float:
    """Seconds of one job from its sizes and a calibration entry's ``constants``."""
    work = work or {}
    return (forward_macs * constants["forward_s_per_mac"] + train_macs * constants["train_s_per_mac"]
            + io_bytes * constants["io_s_per_byte"]
            + work.get("gemm64", 0.0) * constants["gemm64_s_per_flop"]
            + work.get("eigh", 0.0) * constants["eigh_s_per_n3"]
            + work.get("score32", 0.0) * constants["score32_s_per_flop"]
            + work.get("classes", 0.0) * constants.get("probe_class_s", 0.0)
            + work.get("class_d2", 0.0) * constants.get("probe_class_d2_s", 0.0)
            + jobs_overhead * constants["job_overhead_s"])
