"""Planning before spending: how many runs, jobs, cluster allocations and bytes a config costs.

``python -m pipeline plan --configfile config/paper.yaml`` prints, for a config:

* the runs (dataset, model, corruption, seed) and, per (dataset, model) pair, the checkpoints a
  run saves and how many of them are extracted and probed (``storage.epochs``/``storage.every``);
* the jobs per workflow rule and the SLURM allocations they become under the profile's grouping
  (``slurm/config.yaml``: one allocation per training run, one GPU allocation for all
  extractions of a run, one CPU allocation per probe block of ``cluster.probe_block_epochs``
  epochs; rules in :data:`LOCAL_RULES` run on the submitting host and cost no allocation);
* the disk the checkpoints, activations and other artifacts take, and per layer whether per-class
  sufficient statistics would be smaller than its training activations (``storage.persist``:
  with ``moments``/``auto`` the kept artifact is the reduced file, :mod:`pipeline.sufficient`).

Time: every rule's hours come from the cost model (:func:`estimate_hours`, calibrated constants times
each job's sizes), except where Snakemake benchmark files of an earlier run
(``results/tables/benchmarks.parquet`` or ``results/benchmarks/``, :mod:`pipeline.costs`) measured
jobs **of the same rule, dataset, model and scale**: then the measured mean wall seconds per job
stand in for those planned jobs, and only those. Same scale means the measured job's run was
configured with the same ``n_train``, ``n_test`` (training and test images after
``data.train_subset``/``test_subset``) and ``train.max_epochs`` as the planned job's
(:func:`pipeline.costs.run_scale`; the measured run's scale is read from the config it recorded in
its train log). Measured rows without a recorded scale (jobs without a whole run key, such as
aggregation and plots, or runs without a train log) never stand in. The report says per rule which
source it used, and for which (dataset, model) pairs. (A measured training job ran until its target
accuracy, so at the same scale it can be shorter than this plan's ``max_epochs`` upper bound.)

All numbers are **upper bounds**: training is a Snakemake checkpoint that stops at the target
training accuracy, so how many epochs (and checkpoints) a run really has is known only after it
trained. The plan assumes every run trains to ``train.max_epochs``. Sizes come from the models
themselves (:func:`pipeline.core.models.layer_dims`, parameter counts) and the dataset registry
(:data:`pipeline.core.datasets.DATASETS`), so nothing here loads data or needs a GPU.

The epoch selection (:func:`pipeline.core.schedule.probed_epochs`, :func:`~pipeline.core.schedule.probe_blocks`)
is the one the workflow uses, so the plan and the DAG agree by construction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pipeline.core.datasets import dataset_sizes
from pipeline.core.schedule import probe_blocks, probed_epochs, schedule_for  # noqa: F401
from pipeline.workflow import GPU_RULES, LOCAL_RULES  # noqa: F401

_ITEMSIZE = {"float32": 4, "float16": 2}


# ----------------------------------------------------------------------------- sizes

@functools.cache
def _model_facts(model: str, channels: int, image_size: int, num_classes: int) -> tuple:
    """(probe layer dims, checkpoint bytes, parameter bytes) of a model on images of this shape."""
    import torch

    from pipeline.core.models import build_model, layer_dims

    dims = layer_dims(model, in_channels=channels, image_size=image_size, num_classes=num_classes)
    net = build_model(model, in_channels=channels, image_size=image_size, num_classes=num_classes)
    state = net.state_dict()
    state_bytes = sum(t.numel() * t.element_size() for t in state.values())
    param_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    del torch
    return tuple(dims.items()), int(state_bytes), int(param_bytes)


@functools.cache
def forward_macs(model: str, channels: int, image_size: int, num_classes: int) -> int:
    """Multiply-accumulates of one image's forward pass (convolutions and linear layers, counted
    with forward hooks on one image): the unit the cost model scales training and extraction by."""
    import torch

    from pipeline.core.models import build_model

    net = build_model(model, in_channels=channels, image_size=image_size, num_classes=num_classes).eval()
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net(torch.zeros(1, channels, image_size, image_size))
    for h in handles:
        h.remove()
    return int(total[0])



@dataclass
class PairPlan:
    """Per (dataset, model) pair and kind of run: what one run of it costs (upper bounds). A pair has
    one entry for its standard runs (trained by ``train``), one for its intervened runs when
    ``transfer.intervention`` is on (``variant`` ``intervene-e{E}``, trained by ``intervene`` from the
    edit epoch on, extracted and probed like the others) and one for the runs only another family
    trains (``probed`` 0: the feature-dynamics pairs outside the probe grid)."""

    dataset: str
    model: str
    runs: int
    checkpoints: int             # saved per run if it trains to max_epochs
    probed: int                  # of those, extracted and probed
    blocks: int                  # probe blocks per run
    layers: dict[str, int]       # stored (persisted, not fused) layers -> flattened dim
    n_train: int
    n_test: int
    checkpoint_bytes: int        # one state_dict
    resume_bytes: int            # resume.pt (model + optimizer state), while training
    activation_bytes: int        # one activation file (uncompressed)
    probe_bytes: int             # fitted probes (subspaces) + probe table, per checkpoint (estimate)
    smaller_as_moments: list[str] = field(default_factory=list)  # layers whose statistics pay off
    moment_layers: list[str] = field(default_factory=list)       # kept as statistics (persist)
    reduced_bytes: int = 0       # one reduced file (persist: moments|auto), else 0
    fused_layers: dict[str, int] = field(default_factory=dict)   # storage.fused: in memory only
    staged_probe_layers: dict[str, int] = field(default_factory=dict)
    fused_probe_layers: dict[str, int] = field(default_factory=dict)
    num_classes: int = 10
    macs: int = 0                # forward multiply-accumulates per image
    variant: str = "standard"    # run variant: standard, or the intervention's (intervene-e{E})
    epochs: int = 0              # epochs one run trains (upper bound): max_epochs, or the extra epochs
    trained_only: bool = False   # runs another family trains and the probe grid does not probe

    @property
    def trained_by(self) -> str:
        """The rule that trains these runs."""
        return "train" if self.variant == "standard" else "intervene"

    @property
    def label(self) -> str:
        name = f"{self.dataset}/{self.model}"
        if self.variant != "standard":
            return f"{name} ({self.variant})"
        return f"{name} (trained only)" if self.trained_only else name

    @property
    def reduced_total(self) -> int:
        return self.runs * self.probed * self.reduced_bytes

    @property
    def checkpoint_total(self) -> int:
        return self.runs * self.checkpoints * self.checkpoint_bytes

    @property
    def activation_total(self) -> int:
        return self.runs * self.probed * self.activation_bytes


@dataclass
class Plan:
    config: dict
    runs: int
    pairs: list[PairPlan]
    jobs: dict[str, int] = field(default_factory=dict)
    allocations: dict[str, int] = field(default_factory=dict)
    local_jobs: int = 0
    disk: dict[str, int] = field(default_factory=dict)
    #: measured per-job costs that stand in for this plan's jobs: rule -> "dataset/model" -> figures
    #: (:func:`pipeline.costs.measured_costs` of the jobs of that pair's dataset, model and scale), and
    #: where the measurements came from; empty / None when nothing (that fits) was measured
    costs: dict[str, dict[str, dict]] = field(default_factory=dict)
    costs_source: str | None = None
    #: what the measurements cover (:func:`pipeline.costs.measured_scales`), matching or not
    measured_scales: list[dict] = field(default_factory=list)
    #: hours per rule from the cost model (:func:`estimate_hours`)
    hours: dict[str, dict] = field(default_factory=dict)

    def cost_totals(self) -> dict[str, dict]:
        """Per rule with measurements that stand in for some of its jobs (same dataset, model and
        scale, :attr:`costs`): those jobs (``jobs``, of the rule's ``planned_jobs``) times the
        measured per-job figures of their pair; per job: the mean over those jobs."""
        totals = {}
        for rule, n in self.jobs.items():
            by_pair = self.costs.get(rule) or {}
            jobs = wall = cpu = rows = 0
            rss, used = 0.0, []
            for p in self.pairs:
                measured, n_p = by_pair.get(f"{p.dataset}/{p.model}"), pair_jobs(self, rule, p)
                if measured and n_p:
                    jobs, rows = jobs + n_p, rows + measured["jobs"]
                    wall += n_p * measured["wall_s"]
                    cpu += n_p * measured["cpu_s"]
                    rss = max(rss, measured["max_rss_mib"])
                    used.append(f"{p.dataset}/{p.model}")
            if jobs:
                totals[rule] = {"jobs": jobs, "planned_jobs": n, "measured_jobs": rows,
                                "pairs": used, "wall_s_per_job": wall / jobs,
                                "cpu_s_per_job": cpu / jobs, "max_rss_mib": rss,
                                "cpu_s_total": cpu, "wall_s_total": wall}
        return totals

    @property
    def total_jobs(self) -> int:
        return sum(self.jobs.values())

    @property
    def total_allocations(self) -> int:
        return sum(self.allocations.values())

    def as_dict(self) -> dict:
        return {
            "runs": self.runs,
            "pairs": [{"dataset": p.dataset, "model": p.model, "variant": p.variant,
                       "trained_by": p.trained_by, "probed_by_the_grid": not p.trained_only, "runs": p.runs,
                       "checkpoints_per_run": p.checkpoints, "probed_per_run": p.probed,
                       "blocks_per_run": p.blocks, "layers": p.layers,
                       "n_train": p.n_train, "n_test": p.n_test,
                       "checkpoint_bytes": p.checkpoint_bytes,
                       "activation_bytes_per_checkpoint": p.activation_bytes,
                       "checkpoints_total_bytes": p.checkpoint_total,
                       "activations_total_bytes": p.activation_total,
                       "layers_smaller_as_moments": p.smaller_as_moments,
                       "moment_layers": p.moment_layers,
                       "reduced_bytes_per_checkpoint": p.reduced_bytes,
                       "reduced_total_bytes": p.reduced_total} for p in self.pairs],
            "jobs": dict(self.jobs), "total_jobs": self.total_jobs,
            "slurm_allocations": dict(self.allocations),
            "total_slurm_allocations": self.total_allocations,
            "local_jobs": self.local_jobs,
            "disk_bytes": dict(self.disk),
            "measured_costs_source": self.costs_source,
            "measured_costs": self.cost_totals(),
            "measured_scales": self.measured_scales,
            "hours": self.hours,
            "gpu_hours": sum(h["gpu_h"] for h in self.hours.values()),
            "cpu_hours": sum(h["cpu_h"] for h in self.hours.values()),
        }


def _persisted_layers(config: dict, dims: dict[str, int], model: str) -> dict[str, int]:
    from pipeline.core.activations import persisted_layers
    from pipeline.workflow import stored_layers

    wanted = persisted_layers(config["activations"].get("layers"), model)
    if wanted is None:
        wanted = list(dims)
    fused = set(wanted) - set(stored_layers(config, model)) if config["storage"].get("fused") else set()
    wanted = [name for name in wanted if name not in fused]
    unknown = [name for name in wanted if name not in dims]
    if unknown:
        from pipeline.core.config import ConfigError
        raise ConfigError(f"config key 'activations.layers': {unknown} are not probe layers of "
                          f"this model; its probe layers are {list(dims)}")
    return {name: dims[name] for name in wanted}


def _probe_bytes(config: dict, layers: dict[str, int], num_classes: int) -> int:
    """Rough size of the fitted-probe file of one checkpoint (upper-bound style estimate).

    MASC stores a d x k_c basis per class (k_c <= min(n_c, d); we count k_c = min(d, 64) as a
    typical 99 %-energy rank), VeLPIC/NCM one d-vector per class, the linear probe K x d.
    """
    n_sources = len(config["probes"]["fit_labels"])
    per_layer = 0
    for d in layers.values():
        for entry in config["probes"]["settings"]:
            name = entry["name"]
            if name == "masc":
                per_layer += 4 * d * num_classes * min(d, 64)
            elif name in ("velpic", "ncm", "linear", "lda"):
                per_layer += 4 * d * num_classes
            elif name == "knn":
                per_layer += 0  # keeps the training set by reference; not stored separately
    return per_layer * n_sources + 64 * 1024


def make_plan(config: dict, benchmarks: str | None = None, calibration: str | None = None) -> Plan:
    """The plan of a validated config (see the module docstring).

    ``benchmarks``: measured per-job costs (a benchmark table or folder of Snakemake benchmark
    files, :mod:`pipeline.costs`); by default ``results/tables/benchmarks.parquet`` or
    ``results/benchmarks/`` when present. Rules without measurements are costed by the cost model
    with the built-in calibration (``calibration``: another calibration JSON), :func:`estimate_hours`."""
    from pipeline.core.config import iter_runs, pairs
    from pipeline.core.datasets import DATASETS
    from pipeline.images.plots import FIGURES, figures_for
    from pipeline.images.variants import intervention_schedule, intervention_variant
    from pipeline.probes import moment_bytes, moment_layer_choice
    from pipeline.workflow import check_fused, dynamics_runs, intervention_runs, probe_layer_split

    check_fused(config)
    runs = list(iter_runs(config))
    per_pair_runs = len(config["corruptions"]) * len(config["seeds"])
    itemsize = _ITEMSIZE[config["activations"]["dtype"]]
    grid_pairs = list(pairs(config))
    # runs another family trains that the probe grid has not (feature dynamics on its own pairs or
    # corruption degrees; the labels family judges runs of the grid, the config checks that)
    trained_only: dict[tuple[str, str], int] = {}
    grid_runs = set(runs)
    for run in dict.fromkeys(dynamics_runs(config)):
        if run not in grid_runs:
            trained_only[(run.dataset, run.model)] = trained_only.get((run.dataset, run.model), 0) + 1
    icfg = config["transfer"]["intervention"]
    intervened_runs = intervention_runs(config)
    pair_plans = []
    for dataset, model in dict.fromkeys([*grid_pairs, *trained_only]):
        spec = DATASETS[dataset]
        dims_items, state_bytes, param_bytes = _model_facts(model, spec.channels, spec.image_size,
                                                            spec.num_classes)
        dims = dict(dims_items)
        layers = _persisted_layers(config, dims, model)
        saved = schedule_for(config, model)
        probed = probed_epochs(saved, config)
        blocks = probe_blocks(probed, config)
        n_train, n_test = dataset_sizes(config, dataset)
        staged_probe, fused_probe = probe_layer_split(config, model)
        act = sum(d for d in layers.values()) * (n_train + n_test) * itemsize
        act += (n_train * 3 + n_test * 2) * 8 if staged_probe else 0  # labels, predictions (int64)
        # storage.persist: the reduced file swaps a layer's training activations for statistics
        smaller = moment_layer_choice(layers, "auto", num_classes=spec.num_classes,
                                      n_train=n_train, itemsize=itemsize)
        persist = config["storage"]["persist"]
        as_moments = [] if persist == "activations" else moment_layer_choice(
            layers, persist, num_classes=spec.num_classes, n_train=n_train, itemsize=itemsize)
        reduced = 0 if persist == "activations" else act - sum(
            layers[name] * n_train * itemsize - moment_bytes(layers[name], spec.num_classes)
            for name in as_moments)
        # resume.pt: model + optimizer state (momentum: one buffer; Adam: two)
        from pipeline.core.training import hyperparameters
        hp = hyperparameters(config, model, dataset)
        opt_buffers = 2 if hp["optimizer"] == "adam" else (1 if hp.get("momentum") else 0)
        standard = PairPlan(
            dataset=dataset, model=model, runs=per_pair_runs, checkpoints=len(saved),
            probed=len(probed), blocks=len(blocks), layers=layers, n_train=n_train, n_test=n_test,
            checkpoint_bytes=state_bytes, resume_bytes=state_bytes + opt_buffers * param_bytes,
            activation_bytes=act,
            probe_bytes=_probe_bytes(config, layers, spec.num_classes),
            smaller_as_moments=smaller, moment_layers=as_moments, reduced_bytes=reduced,
            fused_layers={k: dims[k] for k in dims if k in fused_probe},
            staged_probe_layers={k: dims[k] for k in staged_probe},
            fused_probe_layers={k: dims[k] for k in fused_probe}, num_classes=spec.num_classes,
            macs=forward_macs(model, spec.channels, spec.image_size, spec.num_classes),
            epochs=int(config["train"]["max_epochs"]))
        if (dataset, model) in grid_pairs:
            pair_plans.append(standard)
            n_intervened = sum((r.dataset, r.model) == (dataset, model) for r in intervened_runs)
            if n_intervened:  # one per standard run of transfer.intervention.corruptions, from the edit on
                saved_iv = intervention_schedule(config, model)
                probed_iv = probed_epochs(saved_iv, config)
                pair_plans.append(replace(standard, variant=intervention_variant(icfg), runs=n_intervened,
                                          checkpoints=len(saved_iv), probed=len(probed_iv),
                                          blocks=len(probe_blocks(probed_iv, config)),
                                          epochs=int(icfg["extra_epochs"])))
        if trained_only.get((dataset, model)):
            pair_plans.append(replace(standard, runs=trained_only[(dataset, model)], probed=0, blocks=0,
                                      trained_only=True))

    plan = Plan(config=config, runs=len(runs), pairs=pair_plans)
    intervened = sum(p.runs for p in pair_plans if p.trained_by == "intervene")
    staged_total = sum(p.runs * p.probed for p in pair_plans if p.staged_probe_layers)
    fused_total = sum(p.runs * p.probed for p in pair_plans if p.fused_probe_layers)
    blocks_total = sum(p.runs * p.blocks for p in pair_plans)
    available = {entry["name"] for entry in config["probes"]["settings"]}
    n_figures = len(figures_for(available)) if FIGURES else 0
    reduced_storage = config["storage"]["persist"] != "activations"
    plan.jobs = {
        "corrupt_labels": sum(p.runs for p in pair_plans),
        "train": sum(p.runs for p in pair_plans if p.trained_by == "train"),
        **({"intervene": intervened} if intervened else {}),
        "extract_activations": staged_total,
        **({"reduce_activations": staged_total} if reduced_storage else {}),
        "probe_checkpoint": staged_total,
        **({"probe_fused": fused_total} if fused_total else {}),
        "probe_block": blocks_total,
        "run_probe_table": sum(p.runs for p in pair_plans if not p.trained_only),
        "aggregate_probes": 1,
        "aggregate_train_logs": 1,
        "plots": len(pairs(config)) if n_figures else 0,
        "aggregate_benchmarks": 1,
        "all": 1,
    }
    # Allocations under slurm/config.yaml's grouping (see tests/workflow/test_plan.py for the check that
    # the profile still groups this way).
    from pipeline.workflow import probe_on_gpu

    runs_with_probes = sum(p.runs for p in pair_plans if p.probed and p.staged_probe_layers)
    plan.allocations = {
        "train": plan.jobs["train"],
        **({"intervene": intervened} if intervened else {}),
        "extract (group per run, GPU)": runs_with_probes,
        f"probe (group per block, {'GPU' if probe_on_gpu(config) else 'CPU'})": blocks_total,
    }
    plan.local_jobs = sum(plan.jobs[r] for r in LOCAL_RULES if r in plan.jobs)

    from pipeline.costs import load_measurements, measured_costs, measured_scales, run_scale

    table, plan.costs_source = load_measurements(benchmarks)
    plan.measured_scales = measured_scales(table)
    plan.costs = {}
    for p in pair_plans:  # measured jobs stand in only for jobs of their dataset, model and scale
        same = measured_costs(table, p.dataset, p.model, scale=run_scale(config, p.dataset))
        for rule, figures in same.items():
            plan.costs.setdefault(rule, {})[f"{p.dataset}/{p.model}"] = figures
    plan.hours = estimate_hours(plan, calibration)

    ckpt = sum(p.checkpoint_total for p in pair_plans)
    acts = sum(p.activation_total for p in pair_plans)
    probes = sum(p.runs * p.probed * p.probe_bytes for p in pair_plans)
    labels = sum(p.runs * (p.n_train * 4 + p.n_test) * 8 for p in pair_plans)
    # with persist: moments|auto the activation files are temporary and the reduced files kept
    keep = config["storage"]["keep_activations"] and not reduced_storage
    plan.disk = {
        "checkpoints": ckpt,
        "activations": acts if keep else 0,
        **({"reduced (statistics + test activations)": sum(p.reduced_total for p in pair_plans)}
           if reduced_storage else {}),
        # with keep_activations: false, activation files live only until their probe block has
        # run; the extraction of a run finishes before its probe blocks, so the peak is one run's
        # activations per run in flight (here: the largest run, times one)
        "activations_peak_per_run_in_flight": max((p.probed * p.activation_bytes for p in pair_plans),
                                                  default=0),
        "resume_state_per_run_training": max((p.resume_bytes for p in pair_plans), default=0),
        "probes_and_tables": probes,
        "labels": labels,
    }
    plan.disk["total"] = (plan.disk["checkpoints"] + plan.disk["activations"]
                          + plan.disk.get("reduced (statistics + test activations)", 0)
                          + plan.disk["probes_and_tables"] + plan.disk["labels"])
    return plan


# ----------------------------------------------------------------------------- hours (issue 11)

#: rules that run on a GPU under the SLURM profile whatever the probes' device
_GPU_JOB_RULES = ("train", "extract_activations", "intervene", "edit_model", "relabel_retrain")
_PROBE_RULES = ("probe_checkpoint", "probe_fused", "probe_block")


def pair_jobs(plan: Plan, rule: str, p: PairPlan) -> int:
    """How many of ``rule``'s planned jobs belong to the (dataset, model) pair ``p``; 0 for rules
    whose jobs belong to no pair (aggregation)."""
    if rule == "corrupt_labels":
        return p.runs
    if rule in ("train", "intervene"):
        return p.runs if p.trained_by == rule else 0
    if rule == "run_probe_table":
        return 0 if p.trained_only else p.runs
    if rule in ("extract_activations", "reduce_activations", "probe_checkpoint"):
        return p.runs * p.probed if p.staged_probe_layers else 0
    if rule == "probe_fused":
        return p.runs * p.probed if p.fused_probe_layers else 0
    if rule == "probe_block":
        return p.runs * p.blocks
    if rule == "plots":
        return 1 if plan.jobs.get("plots") else 0
    return 0


def estimate_hours(plan: Plan, calibration: str | None = None) -> dict[str, dict]:
    """GPU-hours and CPU-hours per rule of the plan (upper bounds, like its job counts).

    The planned jobs of a rule and (dataset, model) pair for which ``plan.costs`` has measured
    benchmark rows of the same rule, dataset, model and scale (see the module docstring) take those
    rows' mean wall seconds per job; every other job the cost model (:mod:`pipeline.costs`: its
    per-unit constants times the rule's sizes per (dataset, model) pair) with the calibration entry
    of the device the rule runs on: the ``cuda`` entry for training and extraction when
    ``train.device`` is ``auto``/``cuda``, and for the probe rules when ``probes.device`` is
    ``cuda``/``auto``; the ``cpu`` entry otherwise. GPU rules count GPU-hours (wall time, one GPU per
    job); CPU rules count CPU (core-)hours: wall time x the calibration's threads.

    Each rule says which source it used (``source``, for the report), for how many jobs
    (``measured_jobs`` of ``jobs``; ``model``: the calibration entry's name where the cost model
    costed any job, else None) and per pair (``pairs``: "dataset/model" -> ``"measured"`` or
    ``"model"``)."""
    from pipeline.costs import load_calibration, probe_flops, seconds
    from pipeline.workflow import probe_on_gpu

    cfg = plan.config
    entries = load_calibration(calibration)
    gpu_train = str(cfg["train"]["device"]).startswith(("auto", "cuda")) and "cuda" in entries
    gpu_probe = probe_on_gpu(cfg) and "cuda" in entries
    itemsize = _ITEMSIZE[cfg["activations"]["dtype"]]
    settings = cfg["probes"]["settings"]
    sources = len(cfg["probes"]["fit_labels"])

    def on_gpu(rule: str) -> bool:
        if rule in _GPU_JOB_RULES:
            return gpu_train
        if rule in _PROBE_RULES:
            return gpu_probe
        return False

    def pair_seconds(rule: str, p: PairPlan, c: dict) -> float:
        """Seconds of ALL of this pair's jobs of ``rule``."""
        rows = p.n_train + p.n_test
        ckpts = p.runs * p.probed
        if rule in ("train", "intervene"):
            if p.trained_by != rule:
                return 0.0
            return p.runs * seconds(c, train_macs=p.epochs * p.n_train * p.macs,
                                    forward_macs=p.epochs * rows * p.macs)
        if rule == "extract_activations" and p.staged_probe_layers:
            return ckpts * seconds(c, forward_macs=rows * p.macs, io_bytes=p.activation_bytes)
        if rule == "reduce_activations" and p.staged_probe_layers:
            work = {"gemm64": sum(2.0 * p.n_train * d * d for d in p.layers.values()) * sources}
            return ckpts * seconds(c, io_bytes=p.activation_bytes + max(p.reduced_bytes, 0), work=work)
        if rule == "probe_checkpoint" and p.staged_probe_layers:
            work = probe_flops(p.staged_probe_layers, settings, n_train=p.n_train, n_test=p.n_test,
                               num_classes=p.num_classes, sources=sources)
            read = sum(p.staged_probe_layers.values()) * rows * itemsize
            return ckpts * seconds(c, io_bytes=read, work=work)
        if rule == "probe_fused" and p.fused_probe_layers:
            work = probe_flops(p.fused_probe_layers, settings, n_train=p.n_train, n_test=p.n_test,
                               num_classes=p.num_classes, sources=sources)
            return ckpts * seconds(c, forward_macs=rows * p.macs, work=work)
        if rule == "probe_block":
            return p.runs * p.blocks * seconds(c)
        if rule in ("corrupt_labels", "run_probe_table"):
            return pair_jobs(plan, rule, p) * seconds(c)
        return 0.0

    hours: dict[str, dict] = {}
    for rule, n in plan.jobs.items():
        if not n or rule == "all":
            continue
        gpu = on_gpu(rule)
        entry = entries["cuda" if gpu else "cpu"]
        c = entry["constants"]
        by_pair = plan.costs.get(rule) or {}
        measured_wall = model_wall = 0.0
        measured_jobs = measured_rows = 0
        by_source: dict[str, str] = {}
        for p in plan.pairs:
            key, n_p = f"{p.dataset}/{p.model}", pair_jobs(plan, rule, p)
            if by_pair.get(key) and n_p:  # measured jobs of this dataset, model and scale
                measured_wall += n_p * by_pair[key]["wall_s"]
                measured_jobs += n_p
                measured_rows += by_pair[key]["jobs"]
                by_source[key] = "measured"
            else:
                model_wall += pair_seconds(rule, p, c)
                if n_p:
                    by_source[key] = "model"
        if measured_jobs < n and model_wall == 0.0:  # aggregation, plots, ...: one start-up per job
            model_wall = (n - measured_jobs) * seconds(c)
        wall = measured_wall + model_wall
        if measured_jobs == n:
            source = f"measured ({measured_rows} jobs, same dataset/model/scale)"
        elif measured_jobs:
            measured_pairs = ", ".join(k for k, v in by_source.items() if v == "measured")
            source = (f"measured for {measured_pairs} ({measured_rows} jobs, same dataset/model/scale); "
                      f"cost model {entry['name']} for the other {n - measured_jobs} jobs (no measured "
                      "job of their dataset/model/scale)")
        elif plan.costs_source:
            source = f"cost model {entry['name']} (no measured job of this dataset/model/scale)"
        else:
            source = f"cost model {entry['name']}"
        threads = 1 if gpu else int(entry["provenance"].get("threads") or 1)
        hours[rule] = {"jobs": n, "where": "GPU" if gpu else "CPU", "source": source,
                       "model": entry["name"] if measured_jobs < n else None,
                       "measured_jobs": measured_jobs, "pairs": by_source,
                       "s_per_job": wall / n, "gpu_h": wall / 3600 if gpu else 0.0,
                       "cpu_h": 0.0 if gpu else wall * threads / 3600}
    return hours


# ----------------------------------------------------------------------------- report

def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def format_plan(plan: Plan) -> str:
    cfg = plan.config
    lines = []
    add = lines.append
    grid = [p for p in plan.pairs if p.variant == "standard" and not p.trained_only]
    add(f"runs: {plan.runs}  ({len(grid)} dataset-model pairs x {len(cfg['corruptions'])} "
        f"corruption degrees x {len(cfg['seeds'])} seeds)")
    intervened = sum(p.runs for p in plan.pairs if p.trained_by == "intervene")
    if intervened:
        icfg = cfg["transfer"]["intervention"]
        add(f"  + {intervened} intervened runs (transfer.intervention: the standard runs of its corruption "
            f"degrees edited at epoch {icfg['epoch']}, trained {icfg['extra_epochs']} more epochs, extracted "
            "and probed)")
    only = [p for p in plan.pairs if p.trained_only]
    if only:
        add(f"  + {sum(p.runs for p in only)} runs trained for feature dynamics only (not probed): "
            + ", ".join(f"{p.dataset}/{p.model} x {p.runs}" for p in only))
    target = cfg["train"]["target_train_accuracy"]
    add(f"upper bounds: every run trains to max_epochs={cfg['train']['max_epochs']} ("
        + ("target_train_accuracy null: no early stop)" if target is None else
           f"training stops earlier at train accuracy {target})"))
    add(f"activations: dtype {cfg['activations']['dtype']}, compression "
        f"{cfg['activations']['compression'] or 'none'}, keep_activations "
        f"{cfg['storage']['keep_activations']}, persist {cfg['storage']['persist']}")
    add("")
    add(f"{'pair':<38} {'runs':>4} {'ckpts/run':>9} {'probed':>6} {'blocks':>6} "
        f"{'ckpt size':>10} {'acts/ckpt':>10} {'ckpts total':>12} {'acts total':>12}  layers")
    for p in plan.pairs:
        add(f"{p.label:<38} {p.runs:>4} {p.checkpoints:>9} {p.probed:>6} "
            f"{p.blocks:>6} {human_bytes(p.checkpoint_bytes):>10} "
            f"{'-' if p.trained_only else human_bytes(p.activation_bytes):>10} "
            f"{human_bytes(p.checkpoint_total):>12} {human_bytes(p.activation_total):>12}  "
            + ("" if p.trained_only else ",".join(f"{k}:{v}" for k, v in p.layers.items())))
    add("")
    add("per-class statistics (storage.persist) are smaller than the training activations for:")
    for p in grid:
        kept = (f"; kept as statistics: {','.join(p.moment_layers) or 'none'} (reduced file "
                f"{human_bytes(p.reduced_bytes)}/ckpt)") if cfg["storage"]["persist"] != "activations" else ""
        add(f"  {p.dataset + '/' + p.model:<24} {','.join(p.smaller_as_moments) or 'no layer'}{kept}")
    add("")
    add("jobs per rule (upper bounds):")
    for rule, n in plan.jobs.items():
        where = "local" if rule in LOCAL_RULES else ("GPU" if rule in GPU_RULES else "CPU")
        add(f"  {rule:<22} {n:>8}  ({where})")
    add(f"  {'total':<22} {plan.total_jobs:>8}")
    add("")
    add("SLURM allocations with slurm/config.yaml's grouping:")
    for what, n in plan.allocations.items():
        add(f"  {what:<32} {n:>6}")
    add(f"  {'total':<32} {plan.total_allocations:>6}   (+{plan.local_jobs} jobs on the "
        "submitting host)")
    add("")
    add("hours per rule (upper bounds: every run to max_epochs; GPU rules in GPU-hours, CPU rules in "
        "CPU core-hours):")
    from pipeline.costs import load_calibration

    add(f"  {'rule':<22} {'jobs':>8} {'where':>5} {'s/job':>9} {'GPU-h':>10} {'CPU-h':>10}  source")
    for rule, h in plan.hours.items():
        add(f"  {rule:<22} {h['jobs']:>8} {h['where']:>5} {h['s_per_job']:>9.1f} {h['gpu_h']:>10.1f} "
            f"{h['cpu_h']:>10.1f}  {h['source']}")
    gpu_h = sum(h["gpu_h"] for h in plan.hours.values())
    cpu_h = sum(h["cpu_h"] for h in plan.hours.values())
    add(f"  {'grid':<22} {plan.total_jobs:>8} {'':>5} {'':>9} {gpu_h:>10.1f} {cpu_h:>10.1f}")
    used = {h["model"] for h in plan.hours.values()}
    for entry in load_calibration().values():
        if entry["name"] in used:
            prov = entry["provenance"]
            add(f"  calibration {entry['name']}: {prov.get('machine')}, {prov.get('date')}, "
                f"{prov.get('script')} (see its provenance in pipeline/cost_calibration.json)")
    if plan.costs_source:
        add(f"  measured per-job figures from {plan.costs_source} (Snakemake benchmark files) stand in "
            "only for jobs of the same rule, dataset, model and scale (n_train, n_test, max_epochs of "
            "the run); every other job from the cost model")
        scaled = [f"{m['dataset']}/{m['model']} at n_train {m['n_train']}, n_test {m['n_test']}, "
                  f"max_epochs {m['max_epochs']} ({m['jobs']} jobs)"
                  for m in plan.measured_scales if m["n_train"] is not None]
        unscaled = sum(m["jobs"] for m in plan.measured_scales if m["n_train"] is None)
        if unscaled:
            scaled.append(f"{unscaled} jobs without a recorded scale (no run key, or no train log of their run)")
        add("  measured there: " + ("; ".join(scaled) or "no jobs"))
        add("  this plan: " + "; ".join(
            f"{p.dataset}/{p.model} at n_train {p.n_train}, n_test {p.n_test}, max_epochs "
            f"{cfg['train']['max_epochs']}" for p in plan.pairs))
        unmeasured = [r for r, h in plan.hours.items() if not h["measured_jobs"]]
        if unmeasured:
            add(f"  not measured at this plan's dataset/model/scale (cost model): {', '.join(unmeasured)}")
    else:
        add("  no measured figures (no results/tables/benchmarks.parquet or results/benchmarks/): every "
            "rule from the cost model; run the workflow once, then `plan` uses measured per-rule figures")
    add("")
    add("disk (uncompressed upper bounds):")
    for what, n in plan.disk.items():
        add(f"  {what:<38} {human_bytes(n):>12}")
    if not cfg["storage"]["keep_activations"] or cfg["storage"]["persist"] != "activations":
        add("  (activations are temporary: deleted once probed or reduced; the peak is per run "
            "in flight)")
    lines += format_arithmetic_plan(arithmetic_plan(cfg))
    lines += format_dynamics_plan(dynamics_plan(cfg))
    lines += format_transfer_plan(transfer_plan(cfg))
    lines += format_labels_plan(labels_plan(plan))
    every = workflow_jobs(plan)
    lines += ["", f"every family (upper bounds): {sum(every.values())} jobs (pipeline.plan.workflow_jobs; "
              "the same count as Snakemake's DAG once every run has trained to max_epochs); the hours "
              "above cost the probe grid's rules, the families' sections give their own compute"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- arithmetic (issue 10)

#: assumed sustained throughput for the time figure of the arithmetic plan (FLOP/s): small dense
#: matmuls (M x P with P ~ 100) run far below a GPU's peak
ARITHMETIC_FLOPS_PER_S = 1e13


def arithmetic_plan(config: dict) -> dict | None:
    """Cells, epochs, compute and checkpoint disk of the config's ``arithmetic`` grid (None if off).

    Compute assumption, per cell: one full-batch step costs 6 M P n_train FLOPs (forward 2 M P per
    pair for W phi(h), backward twice that; the embedding look-ups, phi and the optimizer's
    O(3 M P) update are smaller), plus the training log's evaluation of all P^2 pairs every
    ``log_every`` epochs (2 M P^3 / log_every per epoch). A mini-batch epoch costs the same as a
    full-batch one. The frequency analysis after training is negligible next to it.
    """
    from pipeline.arithmetic.grid import cells_by_path, figure_names
    from pipeline.arithmetic.train import checkpoint_epochs

    section = config.get("arithmetic", {})
    if not section.get("enabled"):
        return None
    cells = list(cells_by_path(section).values())
    flops, ckpt_bytes = 0.0, 0
    for c in cells:
        M, P = int(c["width"]), int(c["P"])
        n_train = round(c["train_fraction"] * P * P)
        per_epoch = 6.0 * M * P * n_train + 2.0 * M * P ** 3 / section["log_every"]
        flops += section["epochs"] * per_epoch
        params = 3 * M * P + P
        ckpt_bytes += 4 * params * len(checkpoint_epochs(section["epochs"], section["checkpoint_every"]))
    memo = section["memorization"]["enabled"]
    return {"cells": len(cells), "epochs": section["epochs"], "flops": flops,
            "hours_at_assumed_rate": flops / ARITHMETIC_FLOPS_PER_S / 3600,
            "checkpoint_bytes": ckpt_bytes, "device": section["device"],
            "widths": sorted({int(c["width"]) for c in cells}),
            "jobs": {"arithmetic_cell": len(cells), "arithmetic_tables": 1,
                     "arithmetic_memorization": int(memo), "arithmetic_figures": 1},
            "figures": figure_names(section)}


def format_arithmetic_plan(ap: dict | None) -> list[str]:
    if ap is None:
        return []
    return [
        "",
        f"arithmetic (issue 10): {ap['cells']} cells x {ap['epochs']} epochs, widths {ap['widths']}, "
        f"device {ap['device']}",
        f"  compute: {ap['flops']:.3g} FLOPs (6 M P n_train per full-batch step + the log's evaluation "
        f"of all P^2 pairs), about {ap['hours_at_assumed_rate']:.3g} h at an assumed sustained "
        f"{ARITHMETIC_FLOPS_PER_S:.0e} FLOP/s",
        f"  checkpoints: {human_bytes(ap['checkpoint_bytes'])} (float32 U, V, W, mu)",
        "  jobs: " + ", ".join(f"{k} {v}" for k, v in ap["jobs"].items()),
        f"  figures (results/plots/arithmetic/): {', '.join(ap['figures'])}",
    ]


# ----------------------------------------------------------------------------- transfer and labels

def transfer_plan(config: dict) -> dict | None:
    """Jobs of the transfer experiments on the standard runs (None if none is on): the edited model
    (one job per run) and relabel-and-retrain (one job and one trained network per run and protocol).
    The intervention's runs are in the probe grid's table (``intervene``, their extraction and probes)."""
    from pipeline.core.config import iter_runs

    transfer = config.get("transfer", {})
    standard = list(iter_runs(config))
    edit = bool(transfer.get("edited_model", {}).get("enabled"))
    relabel = transfer.get("relabel_retrain", {})
    protocols = list(relabel["protocols"]) if relabel.get("enabled") else []
    if not (edit or protocols):
        return None
    return {"runs": len(standard), "protocols": protocols, "networks_trained": len(standard) * len(protocols),
            "jobs": {"edit_model": len(standard) * edit, "relabel_retrain": len(standard) * len(protocols)}}


def _jobs_line(jobs: dict[str, int]) -> str:
    """A family section's jobs, the rules it has no job of left out."""
    return "  jobs: " + ", ".join(f"{rule} {n}" for rule, n in jobs.items() if n)


def format_transfer_plan(tp: dict | None) -> list[str]:
    if tp is None:
        return []
    return ["", f"transfer: {tp['runs']} standard runs; relabel-and-retrain protocols "
                f"{', '.join(tp['protocols']) or 'none'} ({tp['networks_trained']} networks trained, each "
                "like its run)",
            _jobs_line(tp["jobs"])]


def labels_plan(plan: Plan) -> dict | None:
    """Jobs of the labels family (None if off), upper bounds like the rest: one detection job per
    judged run and probed epoch (the run's pair in the probe grid has that many), per run cleanlab on
    the network's own out-of-fold probabilities (``labels.folds`` networks, each like the run's
    training), the run's tables and suspects; per repaired run one job per retraining (``given``
    reads the run's log, each other trains a network like the run's), gathered; per pair the figures."""
    from pipeline.labels.paths import labels_pairs, labels_runs, repair_retrains, repair_runs

    config = plan.config
    runs = labels_runs(config)
    if not runs:
        return None
    probed = {(p.dataset, p.model): p.probed for p in plan.pairs if p.variant == "standard" and not p.trained_only}
    section = config["labels"]
    network = bool(section["cleanlab"]["network"])
    repaired = repair_runs(config)
    retrains = repair_retrains(config) if repaired else []
    trained = [r for r in retrains if r != "given"]
    jobs = {"labels_detect": sum(probed.get((r.dataset, r.model), 0) for r in runs),
            "labels_cleanlab_network": len(runs) * network,
            "labels_run_detection": len(runs), "labels_suspects": len(runs),
            "labels_detection_table": 1, "labels_figures": len(labels_pairs(config)),
            "labels_repair_retrain": len(repaired) * len(retrains), "labels_repair": len(repaired),
            "labels_repair_table": int(bool(repaired)),
            "labels_repair_figure": len({(r.dataset, r.model) for r in repaired})}
    return {"runs": len(runs), "repaired": len(repaired), "retrains": retrains,
            "networks_trained": len(runs) * int(section["folds"]) * network + len(repaired) * len(trained),
            "jobs": jobs}


def format_labels_plan(lp: dict | None) -> list[str]:
    if lp is None:
        return []
    return ["", f"labels: {lp['runs']} runs judged, {lp['repaired']} repaired (retrainings "
                f"{', '.join(lp['retrains']) or 'none'}); {lp['networks_trained']} networks trained "
                "(cleanlab's folds and the repair's retrainings, each like its run)",
            _jobs_line(lp["jobs"])]


def workflow_jobs(plan: Plan) -> dict[str, int]:
    """Every rule's jobs under the plan's config, all families (upper bounds: every run trains to
    ``max_epochs``): the probe grid's table, then modular arithmetic, feature dynamics, transfer and
    labels. The rules the workflow makes per (dataset, model) pair (``dynamics_figures_<dataset>_<model>``,
    ``dynamics_corruption_figures_...``) are counted under the family's name; ``report_tables`` is the
    report's table views (one job)."""
    jobs = dict(plan.jobs)
    for section in (arithmetic_plan(plan.config), dynamics_plan(plan.config), transfer_plan(plan.config),
                    labels_plan(plan)):
        for rule, n in (section or {}).get("jobs", {}).items():
            if n:
                jobs[rule] = jobs.get(rule, 0) + n
    jobs["report_tables"] = 1
    return jobs


def workflow_config(configfiles: Iterable[str] = (), overrides: dict | None = None) -> dict:
    """The config the workflow sees: config/config.yaml, then each file merged over it.

    Snakemake loads the Snakefile's ``configfile:`` (the embedded default) and merges
    ``--configfile`` files over it key by key (nested mappings merge, everything else replaces);
    this does the same, then validates.
    """
    from pipeline.config import validate_config
    from pipeline.core.config import DEFAULT_CONFIG_PATH, read_config_file

    def merge(base: dict, update: dict) -> dict:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    config: dict = {}
    for path in [DEFAULT_CONFIG_PATH, *configfiles]:
        # the one reader: a missing file, a YAML error (with its line) or a file that holds no
        # mapping is a ConfigError naming the file, not a traceback
        merge(config, read_config_file(path))
    if overrides:  # `plan --config-json`: merged last, like snakemake's --config
        merge(config, overrides)
    # a plan is for the machines that will run the jobs (a cluster's GPUs), not for this one
    return validate_config(config, devices=False)


# ----------------------------------------------------------------------------- feature dynamics (issue 9)

#: assumed eval-mode throughput (images per second through one full forward pass, batch 512) for the
#: time figure of the dynamics plan: ResNet-20 on one H100 in float32; the MLPs are far cheaper
DYNAMICS_IMAGES_PER_S = {"resnet20": 25_000, "resnet18": 8_000, "alexnet": 20_000}
DYNAMICS_DEFAULT_IMAGES_PER_S = 200_000


def dynamics_plan(config: dict) -> dict | None:
    """Jobs and compute of the ``dynamics`` section (None if off).

    Per run (upper bounds: every run trains to ``max_epochs``, so every scheduled checkpoint exists):
    composites = |deep epochs| x |shallow epochs| (+ the (T2, t) pairs of the windows) per depth;
    forward passes = composites x samples of every input set (train, test, blurred test), plus one
    more per composite on the control's input sets, plus one per checkpoint and input (the full
    networks). Assumption: one composite evaluation costs at most one full forward pass (the deep part
    runs per composite, the shallow features once per shallow epoch). SGD noise: per depth,
    N one-step updates (a forward-backward of one mini-batch, ~3 forward passes per image) and
    2 N + 1 forward passes of the input set.
    """
    from pipeline.core.schedule import schedule_for
    from pipeline.workflow import (
        ablation_pairs,
        ablation_runs,
        dynamics_figures,
        dynamics_pairs,
        dynamics_runs,
    )

    section = config.get("dynamics", {})
    if not section.get("enabled"):
        return None
    runs = dynamics_runs(config)
    max_epochs = int(config["train"]["max_epochs"])
    per_pair = []
    total_passes, total_seconds = 0.0, 0.0
    for dataset, model in dynamics_pairs(config):
        n_runs = sum(1 for r in runs if (r.dataset, r.model) == (dataset, model))
        saved = sorted(set(schedule_for(config, model)) | {max_epochs})

        def epochs(spec, saved=saved):
            if spec == "all":
                return saved
            if spec == "final":
                return [max_epochs]
            return sorted({max_epochs if v == "final" else int(v) for v in spec} & set(saved))

        deep, shallow = epochs(section["deep_epochs"]), epochs(section["shallow_epochs"])
        pairs = {(T, t) for T in deep for t in shallow}
        windows = section.get("windows")
        if windows is None:
            windows = [[a, b] for a, b in config["train"]["checkpoints"].get("windows") or []]
        for t1, t2 in windows:
            T1 = max_epochs if t1 == "final" else int(t1)
            T2 = max_epochs if t2 == "final" else int(t2)
            pairs |= {(T2, t) for t in range(min(T1, T2), max(T1, T2) + 1) if t in saved}
        from pipeline.dynamics.stage import run_depths

        depths = run_depths(section, model)
        n_train, n_test = dataset_sizes(config, dataset)
        cap = section.get("max_samples") or 10 ** 12
        sizes = {"train": min(n_train, cap), "test": min(n_test, cap), "test_blur": min(n_test, cap)}
        ic = section.get("input_corruptions") or {}
        from pipeline.dynamics.corruptions import CORRUPTIONS

        n_types = len(CORRUPTIONS) if ic.get("types", "all") == "all" else len(ic["types"])
        sizes["test_corrupted"] = (min(n_test, cap, ic.get("max_samples") or cap) * n_types
                                   * len(ic.get("severities", [5])))
        samples = sum(sizes[s] for s in section["splits"])
        control = (sum(sizes[s] for s in section["control"]["splits"] if s in section["splits"])
                   if section["control"]["enabled"] else 0)
        composites = len(pairs) * len(depths)
        checkpoints = len({e for p in pairs for e in p})
        passes = composites * (samples + control) + checkpoints * samples
        sn = section["sgd_noise"]
        sgd_passes = 0
        if sn["enabled"]:
            from pipeline.core.training import hyperparameters

            batch = sn["batch_size"] or hyperparameters(config, model, dataset)["batch_size"]
            n_depths = len((sn.get("depths") or {}).get(model) or depths)
            n_epochs = len(sn["epoch"]) if isinstance(sn["epoch"], list) else 1
            sgd_passes = n_epochs * n_depths * (sn["n_updates"] * 3 * batch
                                                + (2 * sn["n_updates"] + 1) * sn["n_inputs"])
        rate = DYNAMICS_IMAGES_PER_S.get(model, DYNAMICS_DEFAULT_IMAGES_PER_S)
        seconds = n_runs * (passes + sgd_passes) / rate
        total_passes += n_runs * (passes + sgd_passes)
        total_seconds += seconds
        per_pair.append({"pair": f"{dataset}/{model}", "runs": n_runs, "depths": depths,
                         "deep_epochs": len(deep), "shallow_epochs": len(shallow),
                         "composites_per_run": composites, "samples": samples,
                         "forward_passes_per_run": passes, "sgd_forward_passes_per_run": sgd_passes,
                         "images_per_s": rate, "hours": seconds / 3600,
                         "figures": dynamics_figures(config, model)})
    n_abl = len(ablation_runs(config))
    jobs = {"dynamics_composite": len(runs),
            "dynamics_sgd_noise": len(runs) if section["sgd_noise"]["enabled"] else 0,
            "dynamics_ablation": n_abl, "dynamics_tables": 1,
            "dynamics_sgd_table": int(section["sgd_noise"]["enabled"]),
            "dynamics_ablation_table": int(n_abl > 0), "dynamics_figures": len(dynamics_pairs(config)),
            "dynamics_ablation_figure": len(ablation_pairs(config)),
            "dynamics_anisotropy": int(section["sgd_noise"]["enabled"])}
    if "test_corrupted" in section["splits"]:  # Figs. 16/17 and the mCE (pipeline.dynamics.corruption_figures)
        jobs.update({"dynamics_corruption_tables": 1, "dynamics_corruption_figures": len(dynamics_pairs(config))})
    return {"runs": len(runs), "pairs": per_pair, "jobs": jobs, "forward_passes": total_passes,
            "hours_at_assumed_rate": total_seconds / 3600}


def format_dynamics_plan(dp: dict | None) -> list[str]:
    if dp is None:
        return []
    lines = ["", f"feature dynamics (issue 9): {dp['runs']} runs analysed"]
    for p in dp["pairs"]:
        lines.append(
            f"  {p['pair']:<22} {p['runs']} runs x {p['composites_per_run']} composites "
            f"({p['deep_epochs']} deep x {p['shallow_epochs']} shallow epochs + windows, depths "
            f"{','.join(p['depths'])}) x {p['samples']} samples = {p['forward_passes_per_run']:.3g} "
            f"forward passes/run (+{p['sgd_forward_passes_per_run']:.3g} SGD noise); "
            f"~{p['hours']:.2f} h at {p['images_per_s']:,} images/s")
    lines.append(f"  compute: {dp['forward_passes']:.3g} forward passes in all, about "
                 f"{dp['hours_at_assumed_rate']:.2f} h (assumption: one composite evaluation <= one full "
                 "forward pass; the throughputs above, pipeline.plan.DYNAMICS_IMAGES_PER_S)")
    lines.append(_jobs_line(dp["jobs"]))
    return lines
