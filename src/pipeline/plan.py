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

All numbers are **upper bounds**: training is a Snakemake checkpoint that stops at the target
training accuracy, so how many epochs (and checkpoints) a run really has is known only after it
trained. The plan assumes every run trains to ``train.max_epochs``. Sizes come from the models
themselves (:func:`pipeline.models.layer_dims`, parameter counts) and the dataset registry
(:data:`pipeline.datasets.DATASETS`), so nothing here loads data or needs a GPU.

The epoch selection (:func:`pipeline.workflow.probed_epochs`, :func:`~pipeline.workflow.probe_blocks`)
is the one the workflow uses, so the plan and the DAG agree by construction.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Iterable

from pipeline.workflow import GPU_RULES, LOCAL_RULES, probe_blocks, probed_epochs, schedule_for  # noqa: F401

_ITEMSIZE = {"float32": 4, "float16": 2}


# ----------------------------------------------------------------------------- sizes

@functools.lru_cache(maxsize=None)
def _model_facts(model: str, channels: int, image_size: int, num_classes: int) -> tuple:
    """(probe layer dims, checkpoint bytes, parameter bytes) of a model on images of this shape."""
    import torch

    from pipeline.models import build_model, layer_dims

    dims = layer_dims(model, in_channels=channels, image_size=image_size, num_classes=num_classes)
    net = build_model(model, in_channels=channels, image_size=image_size, num_classes=num_classes)
    state = net.state_dict()
    state_bytes = sum(t.numel() * t.element_size() for t in state.values())
    param_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    del torch
    return tuple(dims.items()), int(state_bytes), int(param_bytes)


def dataset_sizes(config: dict, dataset: str) -> tuple[int, int]:
    """(train, test) images a run of ``dataset`` uses, after ``data.train_subset/test_subset``."""
    from pipeline.datasets import DATASETS

    spec = DATASETS[dataset]
    n_train, n_test = spec.train_size, spec.test_size
    data = config.get("data", {})
    if data.get("train_subset"):
        n_train = min(n_train, int(data["train_subset"]))
    if data.get("test_subset"):
        n_test = min(n_test, int(data["test_subset"]))
    return n_train, n_test


@dataclass
class PairPlan:
    """Per (dataset, model) pair: what one run of it costs (upper bounds)."""

    dataset: str
    model: str
    runs: int
    checkpoints: int             # saved per run if it trains to max_epochs
    probed: int                  # of those, extracted and probed
    blocks: int                  # probe blocks per run
    layers: dict[str, int]       # persisted layers -> flattened dim
    n_train: int
    n_test: int
    checkpoint_bytes: int        # one state_dict
    resume_bytes: int            # resume.pt (model + optimizer state), while training
    activation_bytes: int        # one activation file (uncompressed)
    probe_bytes: int             # fitted probes (subspaces) + probe table, per checkpoint (estimate)
    smaller_as_moments: list[str] = field(default_factory=list)  # layers whose statistics pay off
    moment_layers: list[str] = field(default_factory=list)       # kept as statistics (persist)
    reduced_bytes: int = 0       # one reduced file (persist: moments|auto), else 0

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

    @property
    def total_jobs(self) -> int:
        return sum(self.jobs.values())

    @property
    def total_allocations(self) -> int:
        return sum(self.allocations.values())

    def as_dict(self) -> dict:
        return {
            "runs": self.runs,
            "pairs": [{"dataset": p.dataset, "model": p.model, "runs": p.runs,
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
        }


def _persisted_layers(config: dict, dims: dict[str, int], model: str) -> dict[str, int]:
    from pipeline.activations import persisted_layers

    wanted = persisted_layers(config["activations"].get("layers"), model)
    if wanted is None:
        return dict(dims)
    unknown = [l for l in wanted if l not in dims]
    if unknown:
        from pipeline.config import ConfigError
        raise ConfigError(f"config key 'activations.layers': {unknown} are not probe layers of "
                          f"this model; its probe layers are {list(dims)}")
    return {l: dims[l] for l in wanted}


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


def make_plan(config: dict) -> Plan:
    """The plan of a validated config (see the module docstring)."""
    from pipeline.config import iter_runs, pairs
    from pipeline.datasets import DATASETS
    from pipeline.plots import FIGURES, figures_for
    from pipeline.sufficient import moment_bytes, moment_layer_choice

    runs = list(iter_runs(config))
    per_pair_runs = len(config["corruptions"]) * len(config["seeds"])
    itemsize = _ITEMSIZE[config["activations"]["dtype"]]
    pair_plans = []
    for dataset, model in pairs(config):
        spec = DATASETS[dataset]
        dims_items, state_bytes, param_bytes = _model_facts(model, spec.channels, spec.image_size,
                                                            spec.num_classes)
        dims = dict(dims_items)
        layers = _persisted_layers(config, dims, model)
        saved = schedule_for(config, model)
        probed = probed_epochs(saved, config)
        blocks = probe_blocks(probed, config)
        n_train, n_test = dataset_sizes(config, dataset)
        act = sum(d for d in layers.values()) * (n_train + n_test) * itemsize
        act += (n_train * 3 + n_test * 2) * 8  # labels and predictions (int64)
        # storage.persist: the reduced file swaps a layer's training activations for statistics
        smaller = moment_layer_choice(layers, "auto", num_classes=spec.num_classes,
                                      n_train=n_train, itemsize=itemsize)
        persist = config["storage"]["persist"]
        as_moments = [] if persist == "activations" else moment_layer_choice(
            layers, persist, num_classes=spec.num_classes, n_train=n_train, itemsize=itemsize)
        reduced = 0 if persist == "activations" else act - sum(
            layers[l] * n_train * itemsize - moment_bytes(layers[l], spec.num_classes)
            for l in as_moments)
        # resume.pt: model + optimizer state (momentum: one buffer; Adam: two)
        from pipeline.train import hyperparameters
        hp = hyperparameters(config, model, dataset)
        opt_buffers = 2 if hp["optimizer"] == "adam" else (1 if hp.get("momentum") else 0)
        pair_plans.append(PairPlan(
            dataset=dataset, model=model, runs=per_pair_runs, checkpoints=len(saved),
            probed=len(probed), blocks=len(blocks), layers=layers, n_train=n_train, n_test=n_test,
            checkpoint_bytes=state_bytes, resume_bytes=state_bytes + opt_buffers * param_bytes,
            activation_bytes=act,
            probe_bytes=_probe_bytes(config, layers, spec.num_classes),
            smaller_as_moments=smaller, moment_layers=as_moments, reduced_bytes=reduced))

    plan = Plan(config=config, runs=len(runs), pairs=pair_plans)
    n_runs = len(runs)
    probed_total = sum(p.runs * p.probed for p in pair_plans)
    blocks_total = sum(p.runs * p.blocks for p in pair_plans)
    available = {entry["name"] for entry in config["probes"]["settings"]}
    n_figures = len(figures_for(available)) if FIGURES else 0
    reduced_storage = config["storage"]["persist"] != "activations"
    plan.jobs = {
        "corrupt_labels": n_runs,
        "train": n_runs,
        "extract_activations": probed_total,
        **({"reduce_activations": probed_total} if reduced_storage else {}),
        "fit_subspaces": probed_total,
        "score_probes": probed_total,
        "probe_block": blocks_total,
        "run_probe_table": n_runs,
        "aggregate_probes": 1,
        "aggregate_train_logs": 1,
        "plot": len(pairs(config)) * n_figures,
        "all": 1,
    }
    # Allocations under slurm/config.yaml's grouping (see tests/test_plan.py for the check that
    # the profile still groups this way).
    runs_with_probes = sum(p.runs for p in pair_plans if p.probed)
    plan.allocations = {
        "train": n_runs,
        "extract (group per run, GPU)": runs_with_probes,
        "probe (group per block, CPU)": blocks_total,
    }
    plan.local_jobs = sum(plan.jobs[r] for r in LOCAL_RULES if r in plan.jobs)

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
    add(f"runs: {plan.runs}  ({len(plan.pairs)} dataset-model pairs x {len(cfg['corruptions'])} "
        f"corruption degrees x {len(cfg['seeds'])} seeds)")
    add(f"upper bounds: every run trains to max_epochs={cfg['train']['max_epochs']} (training "
        f"stops earlier at train accuracy {cfg['train']['target_train_accuracy']})")
    add(f"activations: dtype {cfg['activations']['dtype']}, compression "
        f"{cfg['activations']['compression'] or 'none'}, keep_activations "
        f"{cfg['storage']['keep_activations']}, persist {cfg['storage']['persist']}")
    add("")
    add(f"{'pair':<24} {'runs':>4} {'ckpts/run':>9} {'probed':>6} {'blocks':>6} "
        f"{'ckpt size':>10} {'acts/ckpt':>10} {'ckpts total':>12} {'acts total':>12}  layers")
    for p in plan.pairs:
        add(f"{p.dataset + '/' + p.model:<24} {p.runs:>4} {p.checkpoints:>9} {p.probed:>6} "
            f"{p.blocks:>6} {human_bytes(p.checkpoint_bytes):>10} "
            f"{human_bytes(p.activation_bytes):>10} {human_bytes(p.checkpoint_total):>12} "
            f"{human_bytes(p.activation_total):>12}  "
            + ",".join(f"{k}:{v}" for k, v in p.layers.items()))
    add("")
    add("per-class statistics (storage.persist) are smaller than the training activations for:")
    for p in plan.pairs:
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
    add("disk (uncompressed upper bounds):")
    for what, n in plan.disk.items():
        add(f"  {what:<38} {human_bytes(n):>12}")
    if not cfg["storage"]["keep_activations"] or cfg["storage"]["persist"] != "activations":
        add("  (activations are temporary: deleted once probed or reduced; the peak is per run "
            "in flight)")
    return "\n".join(lines)


def workflow_config(configfiles: Iterable[str] = ()) -> dict:
    """The config the workflow sees: config/config.yaml, then each file merged over it.

    Snakemake loads the Snakefile's ``configfile:`` (the embedded default) and merges
    ``--configfile`` files over it key by key (nested mappings merge, everything else replaces);
    this does the same, then validates.
    """
    import yaml

    from pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, validate_config

    def merge(base: dict, update: dict) -> dict:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    config: dict = {}
    for path in [DEFAULT_CONFIG_PATH, *configfiles]:
        try:
            with open(path) as fh:
                merge(config, yaml.safe_load(fh) or {})
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
    return validate_config(config)
