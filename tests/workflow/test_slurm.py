"""The SLURM profile: how `--profile slurm` resolves, what the jobs ask for, and a real SLURM run.

* ``--profile slurm`` from the repository root finds ``slurm/config.yaml`` (and no workflow
  profile ``profiles/default/`` is picked up behind the users' backs);
* GPU rules ask for a GPU through the SLURM plugin's ``gpu`` resource, CPU rules do not, and the
  per-checkpoint jobs are grouped (one GPU allocation per run for extraction, one CPU allocation
  per probe block), read from a dry run's job resources;
* end to end on a real single-node SLURM cluster (``.ci/slurm/start.sh`` brings one up: munge,
  slurmctld, slurmd, one fake GPU as a gres on /dev/null): the embedded default workflow on a tiny
  config goes through a copy of the profile whose SITE values are swapped for this cluster's, the
  GPU rules' SLURM jobs carry the GPU request, and the probe table equals a local run's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "slurm" / "config.yaml"
GPU_RULES = {"train", "extract_activations"}
CPU_RULES = {"probe_checkpoint", "probe_block", "corrupt_labels", "run_probe_table", "aggregate_probes",
             "aggregate_train_logs", "aggregate_benchmarks", "plots", "report_tables", "all"}
RUN_DIR = "results/runs/digits/mlp/c{c}/s0/standard"


def dry_run_jobs(output: str) -> list[dict]:
    """Jobs of a dry run's listing: rule, group (None if ungrouped), resources as a dict."""
    jobs, rule, group = [], None, None
    for line in output.splitlines():
        m = re.search(r"Group job (\S+) \(jobs", line)
        if m:
            group = m.group(1)
            continue
        m = re.match(r"^(\s*)(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if m:
            if not m.group(1):  # an unindented job is not part of the group above
                group = None
            rule = m.group(2)
            continue
        m = re.match(r"^\s*resources: (.*)$", line)
        if m and rule:
            resources = dict(item.split("=", 1) for item in m.group(1).split(", "))
            jobs.append({"rule": rule, "group": group, "resources": resources})
            rule = None
    return jobs


def fake_trained_run(workdir: Path, corruption: str, epochs=(0, 2, 4)) -> None:
    """The outputs of a finished training run (enough for the DAG beyond the checkpoint)."""
    run = workdir / RUN_DIR.format(c=corruption)
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "labels.npz").write_bytes(b"")
    time.sleep(0.01)
    (run / "train_log.parquet").write_bytes(b"")
    (run / "checkpoints" / "index.json").write_text(f'{{"epochs": {list(epochs)}}}')


# ----------------------------------------------------------------------------- profile, no SLURM

def test_profile_resolves_from_repo_root(tmp_path, snakemake):
    assert PROFILE.is_file()
    # The workflow profile (profiles/default) applies to every run, local or not: it may only tune
    # how Snakemake schedules, never what runs or where (no executor, config, resources).
    import yaml

    workflow_profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert set(workflow_profile) <= {"scheduler", "max-jobs-per-timespan"}, workflow_profile
    proc = snakemake("-n", "--profile", "slurm", "--directory", str(tmp_path), cwd=REPO)
    out = proc.output
    assert "Using profiles slurm and workflow specific profile profiles/default" in out, out[-2000:]
    assert str(REPO / "config" / "paper.yaml") in out  # the profile's configfile: the paper grid
    assert proc.job_counts()["train"] == 126, out[-3000:]
    assert not (REPO / "slurm" / ".snakemake").exists()


def test_profile_keys_are_valid_for_the_plugin():
    """Every `slurm-*` key of the profile is an option of the installed plugin."""
    from snakemake_executor_plugin_slurm import ExecutorSettings

    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    fields = {f.replace("_", "-") for f in ExecutorSettings.__dataclass_fields__}
    for key in profile:
        if key.startswith("slurm-"):
            assert key[len("slurm-"):] in fields, key
    # the account is set explicitly (the plugin's guessing fails on some clusters)
    assert "slurm_account" in profile["default-resources"]


def test_gpu_rules_request_a_gpu_and_cpu_rules_do_not(tmp_path, snakemake, tiny_config):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**tiny_config, "cluster": {"probe_block_epochs": 2}}))
    fake_trained_run(tmp_path, "0.8")  # c0 still has to train, c0.8 has trained
    proc = snakemake("-n", "--profile", "slurm", "--configfile", str(config),
                     "--directory", str(tmp_path), cwd=REPO)
    jobs = dry_run_jobs(proc.output)
    # every job of the table was read (so every job's resources are checked below): c0 trains,
    # c0.8's three checkpoints are extracted and probed, in three blocks
    assert Counter(job["rule"] for job in jobs) == proc.job_counts() == {
        "corrupt_labels": 1, "train": 1, "extract_activations": 3, "probe_checkpoint": 3, "probe_block": 3,
        "run_probe_table": 2, "aggregate_train_logs": 1, "aggregate_probes": 1, "aggregate_benchmarks": 1,
        "plots": 1, "report_tables": 1, "all": 1}
    for job in jobs:
        res = job["resources"]
        if job["rule"] in GPU_RULES:
            assert res.get("gpu") == "1", job
            assert res.get("slurm_partition") == "gpu", job
        else:
            assert job["rule"] in CPU_RULES, job
            assert "gpu" not in res and "gpu_model" not in res and "gres" not in res, job
            assert res.get("slurm_partition") == "cpu", job
        assert res.get("slurm_account") == "my_account", job
        assert int(res["runtime"]) > 0 and int(res["mem_mb"]) > 0, job
    # grouping: one GPU group for all extractions of the trained run, one CPU group per probe
    # block (epochs 0, 2, 4 in blocks of 2 epochs -> 3 blocks)
    extract_groups = {j["group"] for j in jobs if j["rule"] == "extract_activations"}
    assert extract_groups == {"extract_digits_mlp_c0.8_s0_standard"}
    probe_jobs = [j for j in jobs if j["rule"] in ("probe_checkpoint", "probe_block")]
    assert {j["group"] for j in probe_jobs} == {"probe"}
    assert proc.output.count("Group job probe ") == 3
    assert all(j["group"] is None for j in jobs if j["rule"] in ("train", "corrupt_labels"))


def test_resources_scale_with_the_model(tmp_path, snakemake):
    """ResNet-18 and AlexNet get more time and memory than the MLP (dry run of the paper grid)."""
    proc = snakemake("-n", "--profile", "slurm", "--directory", str(tmp_path), cwd=REPO)
    out = proc.output
    by_model = {}
    for block in re.split(r"\n(?=\S)", out):
        if block.startswith("checkpoint train:"):
            model = re.search(r"model=(\w+)", block).group(1)
            res = dict(i.split("=", 1) for i in re.search(r"resources: (.*)", block).group(1).split(", "))
            by_model[model] = (int(res["runtime"]), int(res["mem_mb"]))
    assert set(by_model) == {"mlp", "cnn", "alexnet", "resnet18"}
    for big in ("alexnet", "resnet18"):
        assert by_model[big][0] > by_model["mlp"][0] and by_model[big][1] > by_model["mlp"][1]


def test_retries_scale_the_runtime():
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["retries"] >= 1
    assert "attempt" in profile["set-resources"]["train"]["runtime"]


def _cwd(pid: str) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).resolve()
    except OSError:  # ended meanwhile
        return None


@pytest.mark.slow
def test_failed_training_job_resumes_on_retry(tmp_path, snakemake, tiny_config):
    """A training job killed mid-run (preempted, out of time) is retried (the profile's
    `retries`) and resumes from its resume.pt: Snakemake deletes only a failed job's declared
    outputs (index.json, train_log.parquet), not the resume state or the checkpoints."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        **tiny_config, "corruptions": [0.8],
        "train": {"max_epochs": 14, "target_train_accuracy": 1.0, "num_threads": 1}}))
    run = tmp_path / RUN_DIR.format(c="0.8")
    target = RUN_DIR.format(c="0.8") + "/train_log.parquet"
    proc = subprocess.Popen(snakemake.command(target, "--cores", "1", "--retries", "1", "--configfile", config,
                                              workdir=tmp_path),
                            cwd=REPO, env=snakemake.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        # wait until a few epochs are safely on disk, then kill the training process (only it)
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "epoch_4.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.05)
        # the out-dir is relative to the workdir, the same in every test of the tiny config: only the
        # process working in this test's folder is ours (another test's training may run beside it)
        pattern = f"pipeline train .*--out-dir {run.relative_to(tmp_path)}"
        pids = [pid for pid in subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
                if _cwd(pid) == tmp_path.resolve()]
        assert pids, "the training process was not found"
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert "Trying to restart job" in out, out[-3000:]
    log = (tmp_path / "logs/digits/mlp/c0.8/s0/standard/train.log").read_text()
    resumed = re.search(r"resuming \S+ from epoch (\d+)", log)
    assert resumed and int(resumed.group(1)) >= 3, log[-2000:]
    assert not (run / "resume.pt").exists()  # removed once training completed
    assert (run / "checkpoints" / "index.json").exists()


# ----------------------------------------------------------------------------- a real SLURM

def slurm_unavailable() -> str | None:
    """Why the real-SLURM test cannot run here, or None."""
    for tool in ("sinfo", "sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            return (f"SLURM is not installed ({tool} not found); `.ci/run` installs and starts a "
                    "single-node cluster with .ci/slurm/install.sh and .ci/slurm/start.sh (needs "
                    "root and apt-get)")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T %G"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld not responding (start it with .ci/slurm/start.sh)"
    if proc.returncode != 0:
        return (f"SLURM is installed but not running (sinfo: {proc.stderr.strip()}); start it with "
                ".ci/slurm/start.sh")
    states = proc.stdout.split()
    if not any(s.startswith(("idle", "mixed", "alloc")) for s in states):
        return f"no SLURM node is up (sinfo: {proc.stdout.strip()!r}); see .ci/slurm/start.sh"
    if "gpu" not in proc.stdout:
        return "the SLURM node declares no gpu gres (see .ci/slurm/start.sh)"
    return None


def cluster_test_profile(tmp_path: Path) -> Path:
    """slurm/config.yaml with its SITE values swapped for the single-node test cluster's."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile.pop("configfile")  # the test's tiny config is given on the command line
    profile.update({
        "cores": 2,
        "resources": {"gpu": 1, "mem_mb": 4000},
        "default-resources": {"slurm_partition": "'main'", "runtime": 10, "mem_mb": 1000},
        # no accounting database here: no accounts, and job states come from squeue
        "slurm-no-account": True,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
        # one thread per job, as in the local run, so that both compute bit for bit the same
        "set-threads": {rule: 1 for rule in profile["set-threads"]},
        "latency-wait": 10,
        "retries": 0,
    })
    for res in profile["set-resources"].values():
        res.update({"runtime": 10, "mem_mb": 1500})
        if "slurm_partition" in res:
            res["slurm_partition"] = "'main'"
    folder = tmp_path / "profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def run_with_sigint_timeout(cmd: list[str], cwd: Path, env: dict, limit: int) -> subprocess.CompletedProcess:
    """Run ``cmd``; past ``limit`` seconds send SIGINT (the plugin ignores SIGTERM while it waits
    for its jobs, and cancels them on SIGINT), then SIGKILL after a grace period."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"snakemake on SLURM took longer than {limit} s:\n{out[-6000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def slurm_jobs(job_ids: list[str]) -> dict[str, dict]:
    """scontrol's record of each job id: {id: {key: value}} (jobs stay visible MinJobAge s)."""
    jobs = {}
    for job_id in job_ids:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                             text=True).stdout
        fields = dict(re.findall(r"(\w+)=(\S*)", out))
        jobs[job_id] = fields
    return jobs


@pytest.mark.slurm
@pytest.mark.slow
def test_end_to_end_on_a_real_slurm(tmp_path, snakemake, tiny_config):
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    profile = cluster_test_profile(tmp_path)
    cluster_dir, local_dir = tmp_path / "cluster", tmp_path / "local"
    cluster_dir.mkdir()
    local_dir.mkdir()

    cmd = snakemake.command("all", "--profile", profile, "--configfile", config, workdir=cluster_dir)
    proc = run_with_sigint_timeout(cmd, cwd=REPO, env=snakemake.env, limit=480)
    out = proc.stdout
    assert proc.returncode == 0, out[-8000:]
    cluster_seconds = time.monotonic() - t0

    # Which rules went to SLURM, with which request: the plugin logs every submission.
    submitted = re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", out)
    assert submitted, out[-4000:]
    records = slurm_jobs([slurm_id for _, slurm_id in submitted])
    kinds: dict[str, list[dict]] = {}
    for rec in records.values():
        comment = rec.get("Comment", "")
        kind = ("train" if comment.startswith("rule_train") else
                "extract" if comment.startswith("rule_extract_") else
                "probe" if comment.startswith("rule_probe") else comment)
        kinds.setdefault(kind, []).append(rec)
    assert set(kinds) == {"train", "extract", "probe"}, {k: len(v) for k, v in kinds.items()}
    assert len(kinds["train"]) == 2 and len(kinds["extract"]) == 2, kinds.keys()
    assert len(kinds["probe"]) == 2  # epochs 0, 2, 4: one probe block per run
    for kind, recs in kinds.items():
        for rec in recs:
            gpu_request = "gpu" in (rec.get("TresPerJob", "") + rec.get("TresPerNode", "")
                                    + rec.get("TRES", ""))
            assert gpu_request == (kind in ("train", "extract")), (kind, rec)
            assert rec.get("JobState") == "COMPLETED", (kind, rec)
    # local rules ran on this host, not through sbatch
    assert not re.search(r"rule_(corrupt_labels|aggregate|plot|run_probe_table)",
                         " ".join(r.get("Comment", "") for r in records.values()))

    # The same workflow, locally: the same numbers.
    snakemake("--cores", "2", "--configfile", config, workdir=local_dir, cwd=REPO, timeout=600)
    keys = ["dataset", "model", "corruption", "seed", "variant", "epoch", "layer", "probe",
            "probe_setting", "fit_labels", "split", "target"]
    on_slurm = pd.read_parquet(cluster_dir / "results/tables/probes.parquet").sort_values(keys)
    local = pd.read_parquet(local_dir / "results/tables/probes.parquet").sort_values(keys)
    assert len(on_slurm) == len(local) > 0
    pd.testing.assert_frame_equal(on_slurm.reset_index(drop=True), local.reset_index(drop=True))
    print(f"\nSLURM run: {cluster_seconds:.0f} s, {len(submitted)} SLURM jobs "
          f"({ {k: len(v) for k, v in kinds.items()} }); whole test {time.monotonic() - t0:.0f} s")
    assert time.monotonic() - t0 < 600


@pytest.mark.parametrize("device, on_gpu", [(None, False), ("cpu", False), ("cuda", True), ("auto", True)])
def test_probe_jobs_go_to_the_gpu_partition_with_the_accelerator_route(tmp_path, snakemake, tiny_config,
                                                                      device, on_gpu):
    """probes.device cuda/auto: probe_checkpoint, probe_fused and probe_block ask for a GPU on the
    GPU partition (their own resources, from the config), grouped per probe block as before."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        **tiny_config, "cluster": {"probe_block_epochs": 2}, "storage": {"fused": ["fc1"]},
        "probes": {**tiny_config["probes"], "device": device}}))
    fake_trained_run(tmp_path, "0.8")
    proc = snakemake("-n", "--profile", "slurm", "--configfile", str(config),
                     "--directory", str(tmp_path), cwd=REPO)
    jobs = dry_run_jobs(proc.output)
    probe_jobs = [j for j in jobs if j["rule"] in ("probe_checkpoint", "probe_fused", "probe_block")]
    assert Counter(j["rule"] for j in probe_jobs) == {"probe_checkpoint": 3, "probe_fused": 3, "probe_block": 3}
    for job in probe_jobs:
        res = job["resources"]
        assert job["group"] == "probe", job
        assert res.get("slurm_partition") == ("gpu" if on_gpu else "cpu"), job
        assert (res.get("gpu") == "1") == on_gpu, job
    assert proc.output.count("Group job probe ") == 3
