"""The feature-dynamics stages the workflow runs (``workflow/rules/dynamics.smk``), one function per
rule, each reading a run's checkpoints through :class:`pipeline.core.runtime.RunRuntime`:

* :func:`composite_run` -- the composite grid of one run on every input set of ``dynamics.splits``
  (train with its clean / corrupted subsets from the saved corruption mask, test, blurred test), the
  magnitude-matched random control, point-wise consistency over the windows, and (for a model with a
  2-D boundary) the feature trajectories with the final deep part's decision regions;
* :func:`sgd_noise_run` -- one-step SGD noise at one checkpoint with both isotropic controls;
* :func:`ablation_run` -- a freeze / reinit ablation as a run variant (training plus one hook);
* :func:`aggregate_tables` -- the per-run tables gathered into ``results/tables/`` (plus the Welch
  tests across seeds).

Every table's Parquet footer holds :data:`pipeline.dynamics.tables.DEFAULT_CHOICES` and the
run-specific choices (grid, windows, depths, protocol), with the config sections and the code version
(:func:`pipeline.core.tables.provenance`), written through the one table builder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.core.config import Run
from pipeline.core.device import derived_seed, seed_torch
from pipeline.core.tables import provenance, write_table
from pipeline.dynamics import tables as T
from pipeline.dynamics.blur import blur_sigma, blur_uint8
from pipeline.dynamics.controls import matched_random_features
from pipeline.dynamics.grid import composite_grid

__all__ = ["default_depths", "run_depths", "resolve_epochs", "resolve_windows", "input_sets",
           "composite_run", "sgd_noise_run", "ablation_run", "FreezeShallow", "ReinitDeep",
           "parse_ablation_variant", "aggregate_tables", "welch_rows"]


# ----------------------------------------------------------------------------- choices

def default_depths(model: str) -> list[str]:
    """ResNet-20: the paper's split (``stage1.block2``, "the second basic block"); every other model:
    its probe layers (all of them are split boundaries)."""
    from pipeline.core.models import MODELS, ResNet20

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    spec = MODELS[model]
    if spec.build is ResNet20:
        return [ResNet20.PAPER_SPLIT]
    return list(spec.build.probe_layers)


def run_depths(section: Mapping, model: str) -> list[str]:
    """``dynamics.depths[model]``, else :func:`default_depths`."""
    return list((section.get("depths") or {}).get(model) or default_depths(model))


def _epoch(value, final: int) -> int:
    return int(final) if value == "final" else int(value)


def resolve_epochs(spec, saved: Sequence[int], final: int) -> tuple[list[int], list[int]]:
    """``(epochs used, epochs asked for but not saved)`` for ``all`` / ``final`` / a list."""
    saved = sorted(int(e) for e in saved)
    if spec == "all":
        return saved, []
    wanted = [final] if spec == "final" else [_epoch(v, final) for v in spec]
    wanted = list(dict.fromkeys(wanted))
    return [e for e in wanted if e in saved], [e for e in wanted if e not in saved]


def resolve_windows(section: Mapping, train: Mapping, saved: Sequence[int], final: int
                    ) -> tuple[list[tuple[int, int]], list]:
    """``([(T2, T1), ...], skipped)``: ``dynamics.windows`` ([T1, T2], T2 the deep epoch), else the
    runs' dense windows ``train.checkpoints.windows`` ([t_a, t_b] -> T1 = t_a, T2 = t_b). A window
    whose deep epoch was not saved (training stopped earlier) is skipped."""
    spec = section.get("windows")
    if spec is None:
        spec = train.get("checkpoints", {}).get("windows") or []
    out, skipped = [], []
    for t1, t2 in spec:
        T1, T2 = _epoch(t1, final), _epoch(t2, final)
        if T2 not in saved or T1 > final:
            skipped.append([t1, t2])
        else:
            out.append((T2, T1))
    return list(dict.fromkeys(out)), skipped


# ----------------------------------------------------------------------------- input sets

def input_sets(rt, splits: Sequence[str], *, severity: int = 5, max_samples: int | None = None) -> dict:
    """``{split name: (x uint8, {label source: labels}, {subset: mask} | None)}``.

    ``train``: labels ``corrupted`` (trained on) and ``true``; subsets ``clean`` / ``corrupted`` from
    the run's saved corruption mask (``labels.changed``) when some label was changed.
    ``test_blur`` is named ``test_blur<severity>``.
    """
    n = max_samples
    out = {}
    for split in splits:
        if split == "train":
            changed = np.asarray(rt.labels.changed)[:n]
            subsets = {"clean": ~changed, "corrupted": changed} if changed.any() else None
            out["train"] = (rt.x_train[:n], {"corrupted": rt.labels.corrupted[:n],
                                             "true": rt.labels.true[:n]}, subsets)
        elif split == "test":
            out["test"] = (rt.x_test[:n], {"true": rt.labels.test[:n]}, None)
        elif split == "test_blur":
            x = rt.x_test[:n].cpu().numpy()
            blurred = torch.from_numpy(blur_uint8(x, blur_sigma(severity))).to(rt.x_test.device)
            out[f"test_blur{severity}"] = (blurred, {"true": rt.labels.test[:n]}, None)
        else:
            raise ValueError(f"unknown split {split!r}; allowed: train, test, test_blur")
    return out


# ----------------------------------------------------------------------------- composites

def _load_states(rt, epochs) -> dict[int, dict]:
    return {int(e): rt.state_at(e) for e in epochs}


@torch.no_grad()
def control_rows(models: Mapping[int, torch.nn.Module], x, labels: Mapping[str, np.ndarray],
                 subsets: Mapping[str, np.ndarray] | None, *, depths: Sequence[str], pairs, transform,
                 seed: int = 0, batch_size: int = 512, device=None) -> dict[tuple, dict]:
    """The magnitude-matched random control of every composite: ``{(depth, Td, t, subset, source):
    {control_accuracy, control_cross_entropy, control_consistency_vs_deep}}``."""
    n = int(x.shape[0])
    pred, nll, full = {}, {}, {}
    for d in depths:
        for Td, t in pairs:
            pred[(d, Td, t)] = []
            nll[(d, Td, t)] = {s: [] for s in labels}
    ys = {s: torch.as_tensor(np.asarray(y), dtype=torch.int64) for s, y in labels.items()}
    for start in range(0, n, batch_size):
        xb = transform(x[start:start + batch_size].to(device))
        for Td in {Td for Td, _ in pairs}:
            full.setdefault(Td, []).append(models[Td](xb).argmax(1).cpu())
        for di, d in enumerate(depths):
            feats = {e: models[e].forward_to(d, xb) for e in {e for p in pairs for e in p}}
            for Td, t in pairs:
                zc = matched_random_features(feats[t], feats[Td],
                                             seed=seed * 1_000_003 + di * 100_003 + Td * 1009 + t * 7 + start)
                logits = models[Td].forward_from(d, zc).double().cpu()
                pred[(d, Td, t)].append(logits.argmax(1))
                for s, y in ys.items():
                    nll[(d, Td, t)][s].append(F.cross_entropy(logits, y[start:start + batch_size],
                                                             reduction="none"))
    full = {Td: torch.cat(v).numpy() for Td, v in full.items()}
    masks = {"all": np.ones(n, dtype=bool), **{k: np.asarray(v, bool) for k, v in (subsets or {}).items()}}
    out = {}
    for (d, Td, t), chunks in pred.items():
        p = torch.cat(chunks).numpy()
        for subset, m in masks.items():
            for s in labels:
                if not m.any():
                    continue
                e = torch.cat(nll[(d, Td, t)][s]).numpy()
                out[(d, Td, t, subset, s)] = {
                    "control_accuracy": float((p[m] == np.asarray(labels[s])[m]).mean()),
                    "control_cross_entropy": float(e[m].mean()),
                    "control_consistency_vs_deep": float((p[m] == full[Td][m]).mean())}
    return out


@torch.no_grad()
def trajectory_rows(models: Mapping[int, torch.nn.Module], depth: str, x, y_true, changed, keys: Mapping,
                    *, transform, final: int, grid: int = 60) -> list[dict]:
    """2-D features of the first samples at every saved epoch, and the final deep part's decision
    regions on a ``grid x grid`` lattice spanning every trajectory point (5 % margin)."""
    rows, points = [], []
    xb = transform(x)
    for e in sorted(models):
        z = models[e].forward_to(depth, xb).flatten(1).double().cpu().numpy()
        points.append(z)
        for i in range(z.shape[0]):
            rows.append({**keys, "depth": depth, "kind": "trajectory", "epoch": int(e), "sample_index": i,
                         "z1": float(z[i, 0]), "z2": float(z[i, 1]), "label": int(y_true[i]),
                         "changed": bool(changed[i])})
    allz = np.concatenate(points)
    lo, hi = allz.min(0), allz.max(0)
    pad = 0.05 * np.maximum(hi - lo, 1e-6)
    g1 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], grid)
    g2 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], grid)
    Z1, Z2 = np.meshgrid(g1, g2)  # row = z2, column = z1
    cells = torch.tensor(np.stack([Z1.ravel(), Z2.ravel()], 1), dtype=torch.float32, device=xb.device)
    deep = models[final]
    pred = deep.forward_from(depth, cells).argmax(1).cpu().numpy()
    for i in range(cells.shape[0]):
        rows.append({**keys, "depth": depth, "kind": "region", "epoch": int(final), "sample_index": i,
                     "z1": float(Z1.ravel()[i]), "z2": float(Z2.ravel()[i]), "label": int(pred[i]),
                     "changed": False})
    return rows


def _two_d_depths(model, x, transform) -> list[str]:
    with torch.no_grad():
        xb = transform(x[:1])
        return [d for d in model.split_boundaries
                if model.forward_to(d, xb).flatten(1).shape[1] == 2]


def composite_run(config: dict, run: Run, *, index: str | Path, labels_path: str | Path,
                  out_composite: str | Path, out_pointwise: str | Path, out_trajectories: str | Path,
                  threads: int | None = None) -> dict:
    """The composite grid of one run (see the module doc); writes the three per-run tables."""
    from pipeline.core.artifacts import read_index
    from pipeline.core.runtime import RunRuntime

    section = config["dynamics"]
    run_dir = Path(index).parent.parent
    rt = RunRuntime(config, run, run_dir=run_dir, labels_path=labels_path, threads=threads)
    idx = read_index(index)
    saved, final = sorted(int(e) for e in idx["epochs"]), int(idx["final_epoch"])
    deep, deep_missing = resolve_epochs(section["deep_epochs"], saved, final)
    shallow, shallow_missing = resolve_epochs(section["shallow_epochs"], saved, final)
    windows, skipped_windows = resolve_windows(section, config["train"], saved, final)
    for what, missing in (("deep_epochs", deep_missing), ("shallow_epochs", shallow_missing)):
        if missing:
            print(f"dynamics.{what}: epochs {missing} not saved by {run.path}; skipped", flush=True)
    if skipped_windows:
        # say which end is missing: a window reaching past the run's last epoch is not a missing deep part
        print(f"dynamics.windows {skipped_windows}: {run.path} saved epochs up to {final} ({saved}); "
              "a window whose deep epoch T2 was not saved or that reaches past the final epoch is "
              "skipped", flush=True)
    pairs = [(Tt, t) for Tt in deep for t in shallow]
    needed = sorted({e for p in pairs for e in p} | {e for T2, T1 in windows for e in
                                                     range(min(T1, T2), max(T1, T2) + 1) if e in saved}
                    | {T2 for T2, _ in windows})
    states = _load_states(rt, needed)
    depths = run_depths(section, run.model)
    keys = run.keys()
    build = rt.empty_model
    composite, pointwise = [], []
    sets = input_sets(rt, section["splits"], severity=section["blur_severity"],
                      max_samples=section["max_samples"])
    models = None
    drift_cache: dict = {}
    control_splits = {s if s != "test_blur" else f"test_blur{section['blur_severity']}"
                      for s in section["control"]["splits"]}
    for split, (x, labels, subsets) in sets.items():
        try:
            rows, point, preds = composite_grid(
                build, states, x, labels, depths=depths, pairs=pairs, keys=keys, split=split,
                subsets=subsets, windows=windows, references=section["references"],
                allow_sparse=section["allow_sparse"], transform=rt.transform,
                batch_size=section["batch_size"], device=rt.device, drift_cache=drift_cache)
        except ValueError as exc:
            if "save every epoch" in str(exc):
                from pipeline.core.config import ConfigError
                raise ConfigError(f"dynamics.windows: {exc} (train.checkpoints.windows saves dense "
                                  "windows; or set dynamics.allow_sparse: true)") from None
            raise
        if section["control"]["enabled"] and split in control_splits:
            if models is None:
                from pipeline.dynamics.composite import load_state
                models = {e: load_state(build, s).to(rt.device) for e, s in states.items()}
            ctrl = control_rows(models, x, labels, subsets, depths=depths, pairs=preds.pairs,
                                transform=rt.transform, seed=section["control"]["seed"],
                                batch_size=section["batch_size"], device=rt.device)
            for r in rows:
                r.update(ctrl.get((r["depth"], r["deep_epoch"], r["shallow_epoch"], r["subset"],
                                   r["label_source"]), {}))
        composite += rows
        pointwise += point
    comp = T.composite_frame(composite)
    point = T.pointwise_frame(pointwise)
    traj_rows: list[dict] = []
    probe = rt.empty_model().eval()
    two_d = _two_d_depths(probe, rt.x_train, rt.transform)
    if two_d:
        from pipeline.dynamics.composite import load_state
        traj_states = states if set(saved) <= set(states) else {**states, **_load_states(
            rt, [e for e in saved if e not in states])}
        traj_models = {e: load_state(build, s).to(rt.device) for e, s in traj_states.items()}
        n = section["trajectory_samples"]
        for d in two_d:
            traj_rows += trajectory_rows(traj_models, d, rt.x_train[:n], rt.labels.true[:n],
                                         np.asarray(rt.labels.changed)[:n], keys,
                                         transform=rt.transform, final=final)
    traj = T.trajectory_frame(traj_rows)
    meta = provenance(config, sections=T.SECTIONS, **T.CHOICE_METADATA, run=keys, deep_epochs=deep,
                      shallow_epochs=shallow, saved_epochs=saved,
                      final_epoch=final, windows=[[T1, T2] for T2, T1 in windows],
                      skipped_windows=skipped_windows, depths=depths, splits=list(sets),
                      dynamics={k: v for k, v in section.items() if k not in ("sgd_noise", "ablations")},
                      checkpoint_windows=config["train"]["checkpoints"].get("windows"))
    write_table(comp, out_composite, T.COMPOSITE, meta)
    write_table(point, out_pointwise, T.POINTWISE, meta)
    write_table(traj, out_trajectories, T.TRAJECTORIES, meta)
    summary = {"composites": len(pairs) * len(depths), "rows": len(comp), "pointwise_rows": len(point),
               "trajectory_rows": len(traj), "windows": windows}
    print(f"{run.path}: {summary}", flush=True)
    return summary


# ----------------------------------------------------------------------------- one-step SGD noise

def sgd_noise_run(config: dict, run: Run, *, index: str | Path, labels_path: str | Path,
                  out: str | Path, threads: int | None = None) -> pd.DataFrame:
    """One-step SGD noise of one run at ``dynamics.sgd_noise.epoch`` for every configured depth,
    with the equal-trace isotropic Gaussian and the step-matched parameter-space control."""
    from pipeline.core.artifacts import read_index
    from pipeline.core.runtime import RunRuntime
    from pipeline.core.training import hyperparameters
    from pipeline.dynamics.sgd_noise import (
        isotropic_gaussian_control,
        matched_sigma,
        noise_summary_rows,
        one_step_sgd_noise,
        parameter_noise_control,
    )

    section = config["dynamics"]
    sn = section["sgd_noise"]
    rt = RunRuntime(config, run, run_dir=Path(index).parent.parent, labels_path=labels_path,
                    threads=threads)
    idx = read_index(index)
    final = int(idx["final_epoch"])
    epoch = _epoch(sn["epoch"], final)
    if epoch not in idx["epochs"]:
        from pipeline.core.errors import ArtifactError
        raise ArtifactError(f"dynamics.sgd_noise.epoch {sn['epoch']} = {epoch} is not a checkpoint of "
                            f"{run.path} (saved: {idx['epochs']}); choose a saved epoch or final")
    model = rt.model_at(epoch)
    hp = hyperparameters(config, run.model, run.dataset)
    lr = sn["lr"] if sn["lr"] is not None else hp["lr"]
    batch = sn["batch_size"] if sn["batch_size"] is not None else hp["batch_size"]
    wd = sn["weight_decay"] if sn["weight_decay"] is not None else hp.get("weight_decay", 0.0)
    inputs = rt.x_test[:sn["n_inputs"]]
    depths = list((sn.get("depths") or {}).get(run.model) or run_depths(section, run.model))
    rows, protocols = [], {}
    for d in depths:
        noise = one_step_sgd_noise(model, d, inputs, rt.x_train, rt.labels.corrupted,
                                   n_updates=sn["n_updates"], lr=lr, batch_size=min(batch, len(rt.labels.corrupted)),
                                   momentum=0.0, weight_decay=wd, seed=sn["seed"],
                                   grad_mode=sn["grad_mode"], transform=rt.transform, device=rt.device)
        N, M, D = noise.delta.shape
        gauss = np.stack([isotropic_gaussian_control(noise.delta[:, m, :], seed=sn["seed"] + m)
                          for m in range(M)], axis=1)
        sigma = matched_sigma(noise)
        param = parameter_noise_control(model, d, inputs, n_draws=N, sigma=sigma, seed=sn["seed"],
                                        transform=rt.transform, device=rt.device)
        protocol = {**noise.protocol, "momentum_handling": sn["momentum"],
                    "param_isotropic_sigma": sigma,
                    "mean_step_norm": float(noise.step_norms.mean()),
                    "mean_shallow_step_norm": float(noise.shallow_step_norms.mean())}
        protocols[d] = protocol
        rows += noise_summary_rows({"sgd": noise.delta, "gaussian": gauss, "param_isotropic": param},
                                   run.keys(), epoch=epoch, boundary=d, protocol=protocol,
                                   n_resamples=sn["n_resamples"], seed=sn["seed"], k=sn["top_k"])
    df = T.sgd_noise_frame(rows)
    write_table(df, out, T.SGD_NOISE, provenance(
        config, sections=T.SECTIONS, **T.CHOICE_METADATA, run=run.keys(), epoch=epoch, depths=depths,
        protocol=protocols, sgd_noise=sn, input_set=f"first {len(inputs)} test images"))
    sgd = df[df["source"] == "sgd"]
    print(f"{run.path}: epoch {epoch}, {len(depths)} depths, {len(df)} rows; mean participation ratio "
          f"sgd {sgd['participation_ratio'].mean():.2f}, gaussian "
          f"{df[df['source'] == 'gaussian']['participation_ratio'].mean():.2f}", flush=True)
    return df


# ----------------------------------------------------------------------------- ablations

_ABLATION = re.compile(r"(?P<kind>freeze|reinit)-(?P<depth>[A-Za-z0-9_]+)-e(?P<epoch>[0-9]+)")


def parse_ablation_variant(variant: str, model: str) -> tuple[str, str, int]:
    """``(kind, depth, epoch)`` of ``freeze-<depth>-e<E>`` / ``reinit-<depth>-e<E>`` (the depth's dots
    were written as underscores; matched back against the model's boundaries)."""
    from pipeline.core.models import MODELS

    m = _ABLATION.fullmatch(variant)
    if m is None:
        raise ValueError(f"{variant!r} is not an ablation variant (freeze|reinit)-<depth>-e<E>")
    names = MODELS[model].build(3, 32, 10).split_boundaries
    depth = next((b for b in names if b.replace(".", "_") == m["depth"]), None)
    if depth is None:
        raise ValueError(f"ablation variant {variant!r}: no boundary of {model} is named {m['depth']!r} "
                         f"(boundaries: {list(names)})")
    return m["kind"], depth, int(m["epoch"])


class FreezeShallow:
    """Hook: the shallow layers up to ``depth`` stop training from the branch epoch on (no gradient,
    BatchNorm running statistics frozen with momentum 0)."""

    name = "freeze"

    def __init__(self, depth: str, epoch: int):
        self.depth, self.epoch, self.info = depth, int(epoch), {}

    def fingerprint(self) -> dict:
        return {"depth": self.depth, "epoch": self.epoch}

    def on_start(self, trainer, resumed: bool) -> None:
        model = trainer.model
        owned = set(model.shallow_state_keys(self.depth))
        frozen = []
        for name, p in model.named_parameters():
            if name in owned:
                p.requires_grad_(False)
                frozen.append(name)
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and f"{name}.weight" in owned:
                module.momentum = 0.0
        if not resumed:
            trainer.new_optimizer()
        self.info = {"depth": self.depth, "epoch": self.epoch, "frozen": frozen}

    def on_epoch_end(self, trainer, epoch: int) -> None:
        pass


class ReinitDeep:
    """Hook: at the branch epoch, every layer deeper than ``depth`` (and the head) is reinitialised
    (a fresh model seeded by (seed, epoch)) and the optimizer restarted; training continues."""

    name = "reinit"

    def __init__(self, depth: str, epoch: int, seed: int):
        self.depth, self.epoch, self.seed, self.info = depth, int(epoch), int(seed), {}

    def fingerprint(self) -> dict:
        return {"depth": self.depth, "epoch": self.epoch}

    def on_start(self, trainer, resumed: bool) -> None:
        if resumed:
            return
        model = trainer.model
        owned = set(model.shallow_state_keys(self.depth))
        seed_torch(derived_seed(self.seed, 7919 * (self.epoch + 1)))  # the fresh layers: (seed, epoch) only
        fresh = trainer.rt.empty_model().state_dict()
        state = model.state_dict()
        reset = [k for k in state if k not in owned]
        with torch.no_grad():
            for k in reset:
                state[k].copy_(fresh[k])
        trainer.new_optimizer()
        self.info = {"depth": self.depth, "epoch": self.epoch, "reinitialised": reset}

    def on_epoch_end(self, trainer, epoch: int) -> None:
        pass


def ablation_run(config: dict, run: Run, *, labels_path: str | Path, standard_dir: str | Path,
                 out_dir: str | Path, threads: int | None = None):
    """Train the ablation run variant ``run.variant`` into ``out_dir``: branch from the standard run's
    epoch-E checkpoint, apply the hook, train ``dynamics.ablations.extra_epochs`` more epochs."""
    from pipeline.core.artifacts import checkpoint_file
    from pipeline.core.errors import ArtifactError
    from pipeline.core.runtime import RunRuntime
    from pipeline.core.schedule import schedule_for
    from pipeline.core.training import LOG_COLUMNS, Plan, Trainer

    kind, depth, epoch = parse_ablation_variant(run.variant, run.model)
    abl = config["dynamics"]["ablations"]
    rt = RunRuntime(config, run, run_dir=out_dir, labels_path=labels_path, threads=threads)
    ckpt = checkpoint_file(standard_dir, epoch)
    if not ckpt.exists():
        raise ArtifactError(f"the standard run {standard_dir} has no checkpoint at epoch {epoch} "
                            f"(dynamics.ablations.epoch); choose an epoch of its checkpoint schedule "
                            f"before it stopped")
    log = pd.read_parquet(Path(standard_dir) / "train_log.parquet")
    rows = log[log["epoch"] <= epoch][LOG_COLUMNS].to_dict("records")
    last = epoch + int(abl["extra_epochs"])
    schedule = {e for e in schedule_for(config, run.model) if epoch <= e <= last} | {epoch, last}
    hook = FreezeShallow(depth, epoch) if kind == "freeze" else ReinitDeep(depth, epoch, run.seed)
    trainer = Trainer(rt, out_dir, Plan(last_epoch=last, schedule=schedule, stop_at_target=None),
                      hooks=[hook], progress=False,
                      provenance_extra={"ablation": {"kind": kind, "depth": depth, "epoch": epoch,
                                                     "extra_epochs": int(abl["extra_epochs"])}})
    trainer.start_from(ckpt, rows)
    result = trainer.run()
    end = result.log.iloc[-1]
    print(f"{run.path}: {kind} {depth} at epoch {epoch}, trained to {result.final_epoch}; test acc "
          f"{end.test_acc:.3f}, train acc (corrupted) {end.train_acc_corrupted:.3f}", flush=True)
    return result


# ----------------------------------------------------------------------------- aggregation
# Torch-free, in pipeline.dynamics.aggregate (the dynamics-tables job imports no torch).
from pipeline.dynamics.aggregate import (  # noqa: E402, F401 (re-exported)
    aggregate_ablations,
    aggregate_sgd_noise,
    aggregate_tables,
    welch_rows,
)
