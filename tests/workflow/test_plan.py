"""`python -m pipeline plan`: its numbers on a small config against a hand count, and against the
DAG Snakemake builds once training is done (so the plan and the workflow cannot drift apart)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import validate_config
from pipeline.core.schedule import probe_blocks, probed_epochs
from pipeline.images.plots import figures_for
from pipeline.plan import make_plan

REPO = Path(__file__).resolve().parents[2]

SMALL = {
    "datasets": ["digits"],
    "models": ["mlp", "cnn"],
    "corruptions": [0.0, 0.5],
    "seeds": [0, 1],
    "train": {"max_epochs": 30, "checkpoints": {"early_every": 2, "early_until": 20, "late_every": 5}},
    "activations": {"dtype": "float16"},
    "storage": {"every": 2},
    "cluster": {"probe_block_epochs": 10},
    "probes": {"settings": [{"name": "masc", "params": {"variance": 0.99}}]},
}


def test_epoch_selection():
    saved = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30]
    base = validate_config({})
    assert probed_epochs(saved, base) == saved
    assert probed_epochs(saved, {**base, "storage": {"every": 2}}) == [0, 4, 8, 12, 16, 20, 30]
    # the last checkpoint is always kept
    assert probed_epochs(saved, {**base, "storage": {"every": 5}}) == [0, 10, 20, 30]
    assert probed_epochs(saved, {**base, "storage": {"epochs": [0, 20, 25, 99]}}) == [0, 20, 25]
    assert probe_blocks([0, 4, 8, 12, 16, 20, 30], {"cluster": {"probe_block_epochs": 10}}) == {
        0: [0, 4, 8], 1: [12, 16], 2: [20], 3: [30]}


def test_plan_numbers_against_a_hand_count():
    plan = make_plan(validate_config(SMALL))
    # 1 dataset x 2 models x 2 corruptions x 2 seeds
    assert plan.runs == 8
    by_model = {p.model: p for p in plan.pairs}
    for p in plan.pairs:
        assert p.runs == 4
        # saved: 0, 2, ..., 20 (11) + 25, 30; every 2nd: 0, 4, 8, 12, 16, 20, 30
        assert p.checkpoints == 13 and p.probed == 7
        # blocks of 10 epochs: {0,4,8} {12,16} {20} {30}
        assert p.blocks == 4
        assert (p.n_train, p.n_test) == (1257, 540)  # scikit-learn digits, 70/30
    assert sum(by_model["mlp"].layers.values()) == 128 + 512 + 2048 + 2048
    # CNN on 8x8: 16*4*4, 32*2*2, flat 64 (= block3, probed once), three FC of 250
    assert by_model["cnn"].layers == {"block1": 256, "block2": 128, "flat": 64,
                                      "fc1": 250, "fc2": 250, "fc3": 250}

    assert plan.jobs["corrupt_labels"] == plan.jobs["train"] == 8
    assert plan.jobs["extract_activations"] == plan.jobs["probe_checkpoint"] == 8 * 7
    assert plan.jobs["probe_block"] == 8 * 4
    assert plan.jobs["run_probe_table"] == 8
    assert plan.jobs["plots"] == 2  # one job draws every figure of a (dataset, model) pair
    assert figures_for({"masc"})
    # SLURM: one allocation per training run, per run's extractions, per probe block
    assert plan.allocations == {"train": 8, "extract (group per run, GPU)": 8,
                                "probe (group per block, CPU)": 32}
    assert plan.total_allocations == 48

    # float16 activations + int64 labels (train: corrupted, true, prediction; test: label,
    # prediction) per checkpoint
    labels = (1257 * 3 + 540 * 2) * 8
    mlp_act = 4736 * 1797 * 2 + labels
    cnn_act = 1198 * 1797 * 2 + labels
    assert by_model["mlp"].activation_bytes == mlp_act == 17_059_992
    assert by_model["cnn"].activation_bytes == cnn_act == 4_344_420
    assert plan.disk["activations"] == 4 * 7 * (mlp_act + cnn_act) == 599_323_536
    # checkpoints: float32 parameters. MLP 64-128-512-2048-2048-10 with biases; CNN: six 3x3
    # convs (1-16-16-32-32-64-64), FC 64-250-250-250, bias-free output 250-10
    mlp_params = (64 * 128 + 128) + (128 * 512 + 512) + (512 * 2048 + 2048) + (2048 * 2048 + 2048) \
        + (2048 * 10 + 10)
    cnn_params = (9 * 1 * 16 + 16) + (9 * 16 * 16 + 16) + (9 * 16 * 32 + 32) + (9 * 32 * 32 + 32) \
        + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64) + (64 * 250 + 250) + 2 * (250 * 250 + 250) + 250 * 10
    assert by_model["mlp"].checkpoint_bytes == 4 * mlp_params == 21_367_336
    assert by_model["cnn"].checkpoint_bytes == 4 * cnn_params == 864_168
    assert plan.disk["checkpoints"] == 4 * 13 * 4 * (mlp_params + cnn_params)

    lean = make_plan(validate_config({**SMALL, "storage": {"every": 2, "keep_activations": False}}))
    assert lean.disk["activations"] == 0
    assert lean.disk["activations_peak_per_run_in_flight"] == 7 * mlp_act

    # storage.persist: moments swaps each layer's float16 training activations (1,257 rows) for
    # float64 per-class statistics: 10 classes x 2 label sources x (upper triangle + sum + count)
    stats = make_plan(validate_config({**SMALL, "storage": {"every": 2, "persist": "moments"}}))
    moments = {d: 2 * 10 * (d * (d + 1) // 2 + d + 1) * 8 for d in (64, 128, 250, 256, 512, 2048)}
    assert moments[250] == 5_060_160
    stats_by_model = {p.model: p for p in stats.pairs}
    cnn_reduced = cnn_act - 1198 * 1257 * 2 + sum(moments[d] for d in by_model["cnn"].layers.values())
    mlp_reduced = mlp_act - 4736 * 1257 * 2 + sum(moments[d] for d in (128, 512, 2048, 2048))
    assert stats_by_model["cnn"].reduced_bytes == cnn_reduced
    assert stats_by_model["mlp"].reduced_bytes == mlp_reduced
    assert stats.jobs["reduce_activations"] == 8 * 7 and "reduce_activations" not in plan.jobs
    assert stats.disk["activations"] == 0
    assert stats.disk["reduced (statistics + test activations)"] == 4 * 7 * (cnn_reduced + mlp_reduced)
    # ... which on 1,257 training images is larger for every layer: statistics pay off only for
    # d < n * itemsize / (4 * 10 * 2) = 31.4 here, so auto keeps every layer's activations
    assert all(p.smaller_as_moments == [] for p in stats.pairs)
    auto = make_plan(validate_config({**SMALL, "storage": {"every": 2, "persist": "auto"}}))
    assert [p.reduced_bytes for p in auto.pairs] == [p.activation_bytes for p in auto.pairs]


def test_profile_groups_as_the_plan_counts():
    """plan.py counts allocations for slurm/config.yaml's grouping; check the profile still does it."""
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    groups = profile["groups"]
    per_run = groups["extract_activations"]
    for wildcard in ("{dataset}", "{model}", "{corruption}", "{seed}", "{variant}"):
        assert wildcard in per_run
    assert profile["group-components"][per_run] >= 10_000  # a whole run in one allocation
    # storage.persist: moments|auto reduces each activation file in the allocation that wrote it
    assert groups["reduce_activations"] == per_run
    assert groups["probe_checkpoint"] == groups["probe_block"] == groups["probe_fused"] == "probe"
    assert "probe" not in profile.get("group-components", {})  # blocks are joined by probe_block
    assert "train" not in groups


def _fake_trained(workdir: Path, run_dir: str, epochs: list[int]) -> None:
    run = workdir / run_dir
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "labels.npz").write_bytes(b"")
    time.sleep(0.01)
    (run / "train_log.parquet").write_bytes(b"")
    (run / "checkpoints" / "index.json").write_text(json.dumps({"epochs": epochs, "final_epoch": max(epochs)}))


@pytest.mark.parametrize("persist", ["activations", "moments"])
def test_plan_matches_the_dag_after_training(tmp_path, persist):
    """With every run trained to max_epochs, the DAG has exactly the plan's jobs and groups."""
    from pipeline.core.schedule import schedule_for

    config = validate_config({"datasets": ["digits"], "models": ["mlp"], "corruptions": [0.0, 0.8],
                              "seeds": [0], "train": {"max_epochs": 30},
                              "cluster": {"probe_block_epochs": 10}, "storage": {"persist": persist},
                              "probes": {"settings": [{"name": "masc", "params": {}}]}})
    plan = make_plan(config)
    for corruption in ("0", "0.8"):
        _fake_trained(tmp_path, f"results/runs/digits/mlp/c{corruption}/s0/standard",
                      schedule_for(config, "mlp"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "slurm",
                           "--configfile", str(tmp_path / "config.yaml"), "--directory", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    for rule in ("extract_activations", "probe_checkpoint", "probe_block", "run_probe_table",
                 "reduce_activations", "plots", "aggregate_benchmarks"):
        assert int(counts.get(rule, 0)) == plan.jobs.get(rule, 0), (rule, counts)
    groups = re.findall(r"Group job (\S+) \(jobs", out)
    assert sum(g.startswith("extract_") for g in groups) == plan.allocations[
        "extract (group per run, GPU)"]
    assert groups.count("probe") == plan.allocations["probe (group per block, CPU)"]


def _dag_jobs(workdir: Path) -> dict[str, int]:
    """Rule -> jobs of a dry run of the embedded default in ``workdir``; the rules the workflow makes
    per (dataset, model) pair counted under their family's name, as the plan counts them."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--directory", str(workdir)],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    table = out[out.index("Job stats:"):]
    counts: dict[str, int] = {}
    for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table[:table.index("\ntotal")], re.M):
        rule = re.sub(r"^(dynamics_(?:corruption_)?figures)_\w+$", r"\1", rule)
        counts[rule] = counts.get(rule, 0) + int(n)
    return counts


def test_every_familys_jobs_match_the_dag_of_the_default_run(tmp_path):
    """`plan`'s jobs of every family (the probe grid with the intervened runs and the runs only the
    feature dynamics train, arithmetic, dynamics, transfer, labels) against the DAG of the embedded
    default: before training for the training rules, then with every run trained to max_epochs
    (faked) for everything after it."""
    from pipeline.core.config import iter_runs
    from pipeline.core.schedule import schedule_for
    from pipeline.images.variants import intervention_schedule
    from pipeline.plan import workflow_config, workflow_jobs
    from pipeline.workflow import dynamics_runs, intervention_runs

    config = workflow_config([])
    planned = workflow_jobs(make_plan(config))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    before = _dag_jobs(tmp_path)
    training = ("corrupt_labels", "train", "intervene")
    assert {rule: before.get(rule) for rule in training} == {rule: planned[rule] for rule in training}
    for run in dict.fromkeys([*iter_runs(config), *dynamics_runs(config)]):
        _fake_trained(tmp_path, f"results/{run.path}", schedule_for(config, run.model))
    for run in intervention_runs(config):
        _fake_trained(tmp_path, f"results/{run.path}", intervention_schedule(config, run.model))
    after = _dag_jobs(tmp_path)
    assert set(after) - set(planned) == set(), "rules the plan does not count"
    assert {rule: after.get(rule, 0) for rule in planned if rule not in training} == {
        rule: n for rule, n in planned.items() if rule not in training}


def test_plan_command_on_the_paper_grid():
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "plan", "--configfile",
                           str(REPO / "config" / "paper.yaml"), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["runs"] == 126
    assert plan["jobs"]["train"] == 126
    assert plan["total_slurm_allocations"] < plan["total_jobs"] / 10
    assert plan["disk_bytes"]["activations"] > 10 * 2**40  # several TiB: why the levers exist
    text = subprocess.run([sys.executable, "-m", "pipeline", "plan", "--configfile",
                           str(REPO / "config" / "paper.yaml")], capture_output=True, text=True,
                          env=env, timeout=300).stdout
    assert "SLURM allocations" in text and "cifar10/resnet18" in text


# ----------------------------------------------------------------------------- measured costs

# Snakemake's benchmark TSV, as it writes it (header and one record; "NA" when no sample was taken)
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _write_bench(root: Path, rule: str, wildcards: dict, wall: float, cpu, rss) -> Path:
    from pipeline.costs import benchmark_path

    rel = benchmark_path(rule, list(wildcards)).format(**wildcards)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + f"{wall}\t0:00:{int(wall):02d}\t{rss}\t900.1\t{rss}\t{rss}\t0.01\t0.02\t"
                    f"55.3\t{cpu}\n")
    return path


RUN_KEYS = {"dataset": "digits", "model": "mlp", "corruption": "0.8", "seed": "0", "variant": "standard"}


def _write_train_log(root: Path, keys: dict, config: dict) -> None:
    """A run's train log with the provenance training records (the config's data and train sections),
    where the benchmark table looks for the scale of the run's jobs."""
    import pandas as pd

    from pipeline.core.config import RUN_PATH
    from pipeline.core.tables import provenance, write_parquet

    path = root / "results" / RUN_PATH.format(**keys) / "train_log.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(pd.DataFrame({"epoch": [0, 1]}), path, provenance(config, sections=("data", "train"), run=keys))


def _bench_tree(root: Path, config: dict | None = None) -> None:
    """Benchmark files of two digits/mlp runs (and of rules without run keys), and the train logs of
    those runs, trained under ``config`` (default: :data:`SMALL`)."""
    config = config if config is not None else validate_config(SMALL)
    _write_bench(root, "train", RUN_KEYS, 12.5, 11.75, 310.2)
    _write_bench(root, "train", {**RUN_KEYS, "corruption": "0.0"}, 7.5, 6.25, 300.0)
    for epoch, cpu in ((0, 3.0), (4, 5.0)):
        _write_bench(root, "probe_checkpoint", {**RUN_KEYS, "epoch": epoch}, cpu + 1, cpu, 420.0)
    _write_bench(root, "probe_block", {**RUN_KEYS, "block": 0}, 0.6, "NA", "NA")
    _write_bench(root, "relabel_retrain", {**RUN_KEYS, "protocol": "heldout_true"}, 20.0, 19.0, 500.0)
    _write_bench(root, "plots", {"dataset": "digits", "model": "mlp"}, 4.0, 3.5, 150.0)
    _write_bench(root, "aggregate_probes", {}, 1.0, 0.75, 120.0)
    for corruption in ("0.8", "0.0"):
        _write_train_log(root, {**RUN_KEYS, "corruption": corruption}, config)


def test_benchmark_table_from_snakemakes_tsv_files(tmp_path):
    import pandas as pd

    from pipeline.__main__ import main
    from pipeline.core.tables import RUN_KEY_COLUMNS
    from pipeline.costs import BENCHMARK_DIR

    root = tmp_path / BENCHMARK_DIR
    _bench_tree(tmp_path)
    out = tmp_path / "benchmarks.parquet"
    assert main(["aggregate", "--benchmarks", "--out", str(out), str(root)]) == 0
    table = pd.read_parquet(out)
    assert list(table.columns) == ["rule", *RUN_KEY_COLUMNS, "epoch", "other", "wall_s", "cpu_s",
                                   "max_rss_mib", "n_train", "n_test", "max_epochs"]
    assert len(table) == 8
    assert str(table.corruption.dtype) == "Float64" and str(table.epoch.dtype) == "Int64"
    train = table[table.rule == "train"].set_index("corruption")
    assert train.loc[0.8, "wall_s"] == 12.5 and train.loc[0.8, "cpu_s"] == 11.75
    assert train.loc[0.8, "max_rss_mib"] == pytest.approx(310.2)
    assert (train.dataset == "digits").all() and (train.variant == "standard").all()
    assert (train.seed == 0).all() and train.epoch.isna().all() and train.other.isna().all()
    probe = table[table.rule == "probe_checkpoint"]
    assert probe.epoch.tolist() == [0, 4] and probe.cpu_s.tolist() == [3.0, 5.0]
    block = table[table.rule == "probe_block"].iloc[0]
    assert block.other == "block=0" and pd.isna(block.cpu_s) and block.wall_s == 0.6
    relabel = table[table.rule == "relabel_retrain"].iloc[0]
    assert relabel.other == "protocol=heldout_true"
    plots = table[table.rule == "plots"].iloc[0]
    assert plots.dataset == "digits" and pd.isna(plots.corruption) and pd.isna(plots.seed)
    agg = table[table.rule == "aggregate_probes"].iloc[0]
    assert pd.isna(agg.dataset) and agg.cpu_s == 0.75
    # the scale of each job's run, from the config its train log recorded (SMALL: digits, 30 epochs)
    runs = table[table.seed.notna()]
    assert (runs.n_train == 1257).all() and (runs.n_test == 540).all() and (runs.max_epochs == 30).all()
    assert pd.isna(plots.n_train) and pd.isna(agg.n_train) and pd.isna(agg.max_epochs)  # no run key


def test_plan_uses_measured_figures_when_there_are_any(tmp_path, monkeypatch):
    from pipeline.costs import BENCHMARK_DIR
    from pipeline.plan import format_plan

    config = validate_config(SMALL)
    monkeypatch.chdir(tmp_path)  # no results/ here: the plan has no measurements
    plain = make_plan(config)
    assert plain.costs == {} and plain.costs_source is None
    assert "no measured figures" in format_plan(plain)

    _bench_tree(tmp_path)
    measured = make_plan(config)  # finds results/benchmarks/ on its own
    assert measured.costs_source == BENCHMARK_DIR
    totals = measured.cost_totals()
    # only digits/mlp was measured: its 4 runs take the measured figures, digits/cnn's the model
    assert totals["train"]["cpu_s_per_job"] == pytest.approx((11.75 + 6.25) / 2)
    assert totals["train"]["jobs"] == 4 and totals["train"]["planned_jobs"] == 8
    assert totals["train"]["cpu_s_total"] == pytest.approx(4 * 9.0)
    assert totals["train"]["pairs"] == ["digits/mlp"]
    assert totals["probe_checkpoint"]["jobs"] == 28
    assert totals["probe_checkpoint"]["cpu_s_total"] == pytest.approx(28 * 4.0)
    assert totals["probe_checkpoint"]["max_rss_mib"] == pytest.approx(420.0)
    assert totals["probe_block"]["cpu_s_per_job"] == 0.0  # NA: the job was shorter than a sample
    assert "plots" not in totals and "aggregate_probes" not in totals  # no run, so no recorded scale
    text = format_plan(measured)
    assert f"measured per-job figures from {BENCHMARK_DIR}" in text and "no measured figures" not in text
    assert "not measured at this plan's dataset/model/scale" in text
    assert "extract_activations" in text.split("not measured at this plan")[1]

    # the aggregated table takes precedence over the files, and --benchmarks names any other
    from pipeline.__main__ import main

    assert main(["aggregate", "--benchmarks", "--out", "results/tables/benchmarks.parquet",
                 BENCHMARK_DIR]) == 0
    assert make_plan(config).costs_source == "results/tables/benchmarks.parquet"
    assert make_plan(config, benchmarks=BENCHMARK_DIR).costs == measured.costs


# ----------------------------------------------------------------------------- hours (issue 11)

def test_calibration_loads_with_provenance():
    from pipeline.costs import CALIBRATION_CONSTANTS, load_calibration

    entries = load_calibration()
    assert set(entries) == {"cpu", "cuda"}
    for entry in entries.values():
        prov = entry["provenance"]
        assert prov["machine"] and prov["date"] and "benchmarks/" in prov["script"], entry["name"]
        assert all(entry["constants"][k] >= 0 for k in CALIBRATION_CONSTANTS)
        assert entry["checks"]  # predicted vs measured at the calibration's sizes
    assert "H100" in entries["cuda"]["provenance"]["machine"]


def _hours(config: dict, **kw) -> dict:
    # planned for a cluster's GPUs: the devices need not exist on this machine
    return make_plan(validate_config(config, devices=False), **kw).hours


def test_hours_scale_with_the_grid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no measured benchmarks here: the cost model only
    one = _hours(SMALL)
    two = _hours({**SMALL, "seeds": [0, 1, 2, 3]})  # twice the seeds
    for rule in ("train", "extract_activations", "probe_checkpoint", "corrupt_labels"):
        assert two[rule]["jobs"] == 2 * one[rule]["jobs"]
        total = "gpu_h" if one[rule]["where"] == "GPU" else "cpu_h"
        assert two[rule][total] == pytest.approx(2 * one[rule][total]), rule
    assert one["train"]["where"] == "GPU" and one["train"]["source"] == "cost model cuda-h100"
    assert one["train"]["model"] == "cuda-h100" and one["train"]["measured_jobs"] == 0
    assert one["probe_checkpoint"]["where"] == "CPU" and one["probe_checkpoint"]["model"].startswith("cpu")
    # twice the epochs: twice the training compute (the per-job start-up is fixed)
    from pipeline.costs import load_calibration

    start = load_calibration()["cuda"]["constants"]["job_overhead_s"]
    longer = _hours({**SMALL, "train": {**SMALL["train"], "max_epochs": 60}})
    assert longer["train"]["s_per_job"] - start == pytest.approx(2 * (one["train"]["s_per_job"] - start))
    # probes on the GPU: GPU-hours, from the cuda entry; fused: no extraction, one job per checkpoint
    gpu = _hours({**SMALL, "probes": {**SMALL["probes"], "device": "cuda"}, "storage": {"every": 2, "fused": True}})
    assert "extract_activations" not in gpu and gpu["probe_fused"]["jobs"] == one["probe_checkpoint"]["jobs"]
    assert gpu["probe_fused"]["where"] == "GPU" and gpu["probe_fused"]["cpu_h"] == 0
    assert gpu["probe_fused"]["model"] == "cuda-h100"


def test_measured_benchmarks_override_the_calibration(tmp_path, monkeypatch):
    from pipeline.plan import format_plan

    monkeypatch.chdir(tmp_path)
    _bench_tree(tmp_path)
    mlp_only = {**SMALL, "models": ["mlp"]}
    cnn_only = _hours({**SMALL, "models": ["cnn"]})  # nothing measured of digits/cnn
    plan = make_plan(validate_config(mlp_only))
    hours = plan.hours
    assert hours["train"]["source"] == "measured (2 jobs, same dataset/model/scale)"
    assert hours["train"]["gpu_h"] == pytest.approx(4 * 10.0 / 3600)  # mean wall 10 s x 4 runs
    assert hours["probe_checkpoint"]["s_per_job"] == pytest.approx(5.0)
    assert not hours["extract_activations"]["source"].startswith("measured")
    text = format_plan(plan)
    assert "GPU-h" in text and "CPU-h" in text and "calibration cuda-h100" in text
    assert "measured (2 jobs, same dataset/model/scale)" in text

    # both pairs: digits/mlp's jobs measured, digits/cnn's from the model, and the report says so
    both = make_plan(validate_config(SMALL)).hours["train"]
    assert both["pairs"] == {"digits/mlp": "measured", "digits/cnn": "model"} and both["measured_jobs"] == 4
    assert both["gpu_h"] == pytest.approx(4 * 10.0 / 3600 + cnn_only["train"]["gpu_h"])
    assert both["source"] == ("measured for digits/mlp (2 jobs, same dataset/model/scale); cost model "
                              "cuda-h100 for the other 4 jobs (no measured job of their dataset/model/scale)")


def _paper_config() -> dict:
    from pipeline.plan import workflow_config

    return workflow_config([str(REPO / "config" / "paper.yaml")])


def test_measured_digits_jobs_do_not_cost_the_paper_grid(tmp_path, monkeypatch, capsys):
    """The issue: a benchmark table of the default digits/MLP run must not replace the cost model of
    the paper grid's jobs (other datasets, models and scales): the paper's hours with it equal those
    without any measurement, and the report names the source."""
    from pipeline.__main__ import main
    from pipeline.costs import BENCHMARK_DIR
    from pipeline.plan import format_plan, workflow_config

    monkeypatch.chdir(tmp_path)  # no results/ here
    paper = str(REPO / "config" / "paper.yaml")
    assert main(["plan", "--configfile", paper, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)

    bench = tmp_path / "digits"
    _bench_tree(bench, workflow_config())  # jobs of the default run: digits/mlp, max_epochs 100
    table = tmp_path / "benchmarks.parquet"
    assert main(["aggregate", "--benchmarks", "--out", str(table), str(bench / BENCHMARK_DIR)]) == 0
    capsys.readouterr()
    assert main(["plan", "--configfile", paper, "--json", "--benchmarks", str(table)]) == 0
    with_table = json.loads(capsys.readouterr().out)

    assert with_table["measured_costs_source"] == str(table)
    assert with_table["gpu_hours"] == pytest.approx(plain["gpu_hours"])
    assert with_table["cpu_hours"] == pytest.approx(plain["cpu_hours"])
    assert with_table["hours"]["train"]["gpu_h"] == pytest.approx(plain["hours"]["train"]["gpu_h"])
    assert with_table["measured_costs"] == {}
    for rule, h in with_table["hours"].items():
        assert h["measured_jobs"] == 0 and h["source"] == (
            f"cost model {h['model']} (no measured job of this dataset/model/scale)"), rule
    assert with_table["hours"]["train"]["pairs"]["cifar10/resnet18"] == "model"

    text = format_plan(make_plan(_paper_config(), benchmarks=str(table)))
    hours_table = text.split("hours per rule")[1].splitlines()
    train_line = next(line for line in hours_table if line.strip().startswith("train "))
    assert train_line.endswith("cost model cuda-h100 (no measured job of this dataset/model/scale)")
    assert "measured there: digits/mlp at n_train 1257, n_test 540, max_epochs 100 (6 jobs); 2 jobs " \
           "without a recorded scale" in text
    assert "cifar10/resnet18 at n_train 50000, n_test 10000, max_epochs 500" in text


def test_a_measured_job_stands_in_only_at_the_same_dataset_model_and_scale(tmp_path, monkeypatch):
    """Jobs of the same dataset, model, n_train, n_test and max_epochs take the measured seconds;
    another max_epochs or training subset, a run without a train log, or a table without the scale
    columns leaves the job to the cost model."""
    import pandas as pd

    from pipeline.__main__ import main
    from pipeline.costs import BENCHMARK_DIR, SCALE_COLUMNS
    from pipeline.plan import workflow_config

    monkeypatch.chdir(tmp_path)
    # config/config.yaml: digits/mlp, 3 corruptions x 1 seed, max_epochs 100 (its feature dynamics also
    # train digits/bottleneck_mlp, which nothing here measured: off, so that every train job is digits/mlp's)
    alone = {"dynamics": {"enabled": False}}
    default = workflow_config(overrides=alone)
    others = [workflow_config(overrides={**alone, "train": {"max_epochs": 60}}),
              workflow_config(overrides={**alone, "data": {"train_subset": 500}})]
    model_only = make_plan(default).hours["train"]  # no results/ yet: the cost model
    assert model_only["source"] == "cost model cuda-h100"
    others_model_only = [make_plan(other).hours["train"]["gpu_h"] for other in others]
    _bench_tree(tmp_path, default)
    table = tmp_path / "benchmarks.parquet"
    assert main(["aggregate", "--benchmarks", "--out", str(table), BENCHMARK_DIR]) == 0

    same = make_plan(default, benchmarks=str(table)).hours["train"]
    assert same["source"] == "measured (2 jobs, same dataset/model/scale)"
    assert same["gpu_h"] == pytest.approx(3 * 10.0 / 3600) and same["measured_jobs"] == 3

    for other, gpu_h in zip(others, others_model_only, strict=True):
        h = make_plan(other, benchmarks=str(table)).hours["train"]
        assert h["source"] == "cost model cuda-h100 (no measured job of this dataset/model/scale)"
        assert h["measured_jobs"] == 0 and h["gpu_h"] == pytest.approx(gpu_h)

    # a table from before the scale columns: nothing of it has a known scale
    old = tmp_path / "old.parquet"
    pd.read_parquet(table).drop(columns=list(SCALE_COLUMNS)).to_parquet(old)
    assert make_plan(default, benchmarks=str(old)).hours["train"]["measured_jobs"] == 0
    # runs whose train log is gone: their jobs' scale is unknown
    for log in (tmp_path / "results" / "runs").rglob("train_log.parquet"):
        log.unlink()
    assert make_plan(default, benchmarks=BENCHMARK_DIR).hours["train"]["gpu_h"] == pytest.approx(
        model_only["gpu_h"])


def test_probe_cost_counts_one_eigendecomposition_for_all_masc_and_velpic_settings():
    """The fit stage decomposes each class once for every MASC / VeLPIC setting (fit_spectral):
    more such settings add their bases and scoring to the plan, not another eigh."""
    from pipeline.costs import probe_flops

    def work(*names):
        return probe_flops({"L0": 4096, "fc": 256}, [{"name": n} for n in names], n_train=5000, n_test=1000,
                           num_classes=10, sources=2)

    one, three = work("masc"), work("masc", "masc", "velpic")
    assert three["eigh"] == one["eigh"] == 2 * 10 * (500 ** 3 + 256 ** 3)  # m = min(n_c, d) per class
    assert three["score32"] > one["score32"] and three["gemm64"] > one["gemm64"]
    assert work("ncm")["eigh"] == 0 and work("ncm", "velpic")["eigh"] == one["eigh"]


@pytest.mark.parametrize("kind", ["missing", "not_parquet"])
def test_plan_with_a_bad_benchmarks_path_is_one_clear_error(tmp_path, capsys, kind):
    from pipeline.__main__ import main

    path = tmp_path / "benchmarks.parquet"
    if kind == "not_parquet":
        path.write_text("not a table")
    assert main(["plan", "--benchmarks", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: benchmarks ") and str(path) in err and "\n" not in err
    assert ("no such file" in err) == (kind == "missing")
