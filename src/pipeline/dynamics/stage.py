"""The feature-dynamics stages the workflow runs (``workflow/rules/dynamics.smk``), one function per
rule, each reading a run's checkpoints through :class:`pipeline.core.runtime.RunRuntime`:

* :func:`composite_run` -- the composite grid of one run on every input set of ``dynamics.splits``
  (train with its clean / corrupted subsets from the saved corruption mask, test, blurred test), the
  magnitude-matched random control, point-wise consistency over the windows, and (for a model with a
  2-D boundary) the feature trajectories with the final deep part's decision regions;
* :func:`sgd_noise_run` -- one-step SGD noise at the checkpoints of ``dynamics.sgd_noise.epoch`` (at
  each one's scheduled learning rate) with both isotropic controls;
* :func:`ablation_run` -- a freeze / restart / reinit ablation as a run variant (training plus one
  hook; in :mod:`pipeline.dynamics.ablation`, re-exported);
* :func:`aggregate_tables` -- the per-run tables gathered into ``results/tables/`` (plus the Welch
  tests across seeds).

Every table's Parquet footer holds :data:`pipeline.dynamics.tables.DEFAULT_CHOICES` and the
run-specific choices (grid, windows, depths, protocol), with the config sections and the code version
(:func:`pipeline.core.tables.provenance`), written through the one table builder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.core.config import Run
from pipeline.core.tables import provenance, write_table
from pipeline.dynamics import tables as T
from pipeline.dynamics.blur import blur_sigma, blur_uint8
from pipeline.dynamics.controls import matched_random_features
from pipeline.dynamics.grid import composite_grid

__all__ = ["default_depths", "run_depths", "resolve_epochs", "resolve_windows", "input_sets",
           "composite_run", "sgd_noise_run", "sgd_noise_epochs", "sgd_noise_lr", "ablation_run",
           "FreezeShallow", "ReinitDeep",
           "RestartOptimizer", "parse_ablation_variant", "aggregate_tables", "welch_rows"]


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

def input_sets(rt, splits: Sequence[str], *, severity: int = 5, max_samples: int | None = None,
               input_corruptions: Mapping | None = None) -> dict:
    """``{split name: (x uint8, {label source: labels}, {subset: mask} | None)}``.

    ``train``: labels ``corrupted`` (trained on) and ``true``; subsets ``clean`` / ``corrupted`` from
    the run's saved corruption mask (``labels.changed``) when some label was changed.
    ``test_blur`` is named ``test_blur<severity>``.  ``test_corrupted``: one set per corruption and
    severity of ``input_corruptions`` (``dynamics.input_corruptions``: types, severities, seed,
    max_samples), named ``test_<corruption><severity>`` (:mod:`pipeline.dynamics.corruptions`).
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
        elif split == "test_corrupted":
            from pipeline.dynamics.corruptions import CORRUPTIONS, corrupt_images, corruption_set_name

            spec = dict(input_corruptions or {})
            types = spec.get("types", "all")
            types = list(CORRUPTIONS) if types == "all" else list(types)
            # the first images of the test set, at most max_samples of this split and of the others
            nc = min(k for k in (n, spec.get("max_samples"), len(rt.labels.test)) if k is not None)
            x = rt.x_test[:nc].cpu().numpy()
            for corruption in types:
                for s in spec.get("severities", [5]):
                    name = corruption_set_name(corruption, s)
                    xc = corrupt_images(x, corruption, s, seed=int(spec.get("seed", 0)))
                    out[name] = (torch.from_numpy(xc).to(rt.x_test.device), {"true": rt.labels.test[:nc]}, None)
        else:
            raise ValueError(f"unknown split {split!r}; allowed: train, test, test_blur, test_corrupted")
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


def _induction_line(summary: Mapping) -> str:
    if "skipped" in summary:
        return summary["skipped"]
    return (f"depth {summary['depth']}, epochs {summary['epochs'][0]}..{summary['epochs'][-1]} "
            f"({len(summary['epochs'])}), deep part at {summary['deep_epoch']}: stability "
            f"{summary['stability']:.3f}, agreement with f(theta_{summary['deep_epoch']}) "
            f"{summary['final_agreement']:.3f}")


def induction_for_run(rt, section: Mapping, *, saved: Sequence[int], final: int, depths: Sequence[str],
                      keys: Mapping, build) -> tuple[list[dict], dict] | None:
    """The feature-trajectory PCA and perturbation experiment (Figs. 11, 14;
    :mod:`pipeline.dynamics.trajectories`) of one run on its training inputs, per
    ``dynamics.induction``: ``(rows, summary)``, ``([], {"skipped": why})`` when the window's deep
    epoch was not saved, or None when off."""
    from pipeline.dynamics.composite import load_state
    from pipeline.dynamics.trajectories import induction_rows, trajectory_epochs
    from pipeline.dynamics.windows import resolve_window

    ind = section["induction"]
    if not ind["enabled"]:
        return None
    t1, t2 = resolve_window(ind["window"] or [0, "final"], final)
    if t2 not in saved or t1 > t2:
        why = (f"window {ind['window']} = [{t1}, {t2}] skipped: epoch {t2} not saved by this run "
               f"(saved up to {final})" if t2 not in saved else f"window [{t1}, {t2}] runs backwards")
        return [], {"skipped": why}
    epochs = trajectory_epochs(saved, t1, t2, ind["every"])
    figure_depth = section.get("figure_depth")
    depth = figure_depth if figure_depth in depths else depths[0]
    perturb_from = None if ind["perturb_from"] is None else max(t1, _epoch(ind["perturb_from"], final))
    n = section["max_samples"]
    x = rt.x_train[:n]
    models = {e: load_state(build, rt.state_at(e)).to(rt.device) for e in epochs}
    rows, summary = induction_rows(models, depth, x, np.asarray(rt.labels.changed)[:n], keys,
                                   epochs=epochs, deep_epoch=t2, perturb_from=perturb_from,
                                   samples=min(ind["samples"], int(x.shape[0])), draws=ind["draws"],
                                   noise=ind["noise"], seed=ind["seed"], transform=rt.transform)
    return rows, summary


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
                      max_samples=section["max_samples"], input_corruptions=section.get("input_corruptions"))
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
    induction = induction_for_run(rt, section, saved=saved, final=final, depths=depths, keys=keys,
                                  build=build)
    if induction is not None:
        traj_rows += induction[0]
        print(f"{run.path}: induction {_induction_line(induction[1])}", flush=True)
    traj = T.trajectory_frame(traj_rows)
    meta = provenance(config, sections=T.SECTIONS, **T.CHOICE_METADATA, run=keys, deep_epochs=deep,
                      shallow_epochs=shallow, saved_epochs=saved,
                      final_epoch=final, windows=[[T1, T2] for T2, T1 in windows],
                      skipped_windows=skipped_windows, depths=depths, splits=list(sets),
                      dynamics={k: v for k, v in section.items() if k not in ("sgd_noise", "ablations")},
                      checkpoint_windows=config["train"]["checkpoints"].get("windows"),
                      induction=induction[1] if induction is not None else None)
    write_table(comp, out_composite, T.COMPOSITE, meta)
    write_table(point, out_pointwise, T.POINTWISE, meta)
    write_table(traj, out_trajectories, T.TRAJECTORIES, meta)
    summary = {"composites": len(pairs) * len(depths), "rows": len(comp), "pointwise_rows": len(point),
               "trajectory_rows": len(traj), "windows": windows}
    print(f"{run.path}: {summary}", flush=True)
    return summary


# ----------------------------------------------------------------------------- one-step SGD noise

def sgd_noise_epochs(spec) -> list:
    """``dynamics.sgd_noise.epoch`` as a list (a single epoch or ``final`` is accepted as before)."""
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def sgd_noise_lr(sn: Mapping, hp: Mapping, epoch: int) -> tuple[float, str]:
    """``(eta, where it comes from)`` for the one-step update from the checkpoint saved after ``epoch``
    epochs: ``dynamics.sgd_noise.lr`` when set, else the scheduled learning rate of the step that
    would follow, i.e. of epoch ``epoch + 1`` (:func:`pipeline.core.training.lr_at_epoch`; ResNet-20
    decays at 80 and 120, so the paper's epochs 50 / 100 / 150 step at 0.1 / 0.01 / 0.001)."""
    from pipeline.core.training import lr_at_epoch

    if sn["lr"] is not None:
        return float(sn["lr"]), "dynamics.sgd_noise.lr"
    return float(lr_at_epoch(dict(hp), int(epoch) + 1)), f"scheduled lr of epoch {int(epoch) + 1}"


def sgd_noise_run(config: dict, run: Run, *, index: str | Path, labels_path: str | Path,
                  out: str | Path, threads: int | None = None) -> pd.DataFrame:
    """One-step SGD noise of one run at every epoch of ``dynamics.sgd_noise.epoch`` for every
    configured depth, with the equal-trace isotropic Gaussian and the step-matched parameter-space
    control; the step size is the scheduled learning rate at that epoch (:func:`sgd_noise_lr`)."""
    from pipeline.core.artifacts import read_index
    from pipeline.core.runtime import RunRuntime
    from pipeline.core.training import hyperparameters
    from pipeline.dynamics.sgd_noise import (
        DROP_RULE,
        isotropic_gaussian_control,
        matched_sigma,
        noise_summary_rows,
        one_step_sgd_noise,
        parameter_noise_control,
    )

    section = config["dynamics"]
    sn = section["sgd_noise"]
    idx = read_index(index)
    final = int(idx["final_epoch"])
    epochs = list(dict.fromkeys(_epoch(e, final) for e in sgd_noise_epochs(sn["epoch"])))
    missing = [e for e in epochs if e not in idx["epochs"]]
    if missing:  # before any compute
        from pipeline.core.errors import ArtifactError
        raise ArtifactError(f"dynamics.sgd_noise.epoch {sn['epoch']}: epochs {missing} are not "
                            f"checkpoints of {run.path} (saved: {idx['epochs']}, final {final}); "
                            "choose saved epochs or final")
    rt = RunRuntime(config, run, run_dir=Path(index).parent.parent, labels_path=labels_path,
                    threads=threads)
    hp = hyperparameters(config, run.model, run.dataset)
    batch = sn["batch_size"] if sn["batch_size"] is not None else hp["batch_size"]
    wd = sn["weight_decay"] if sn["weight_decay"] is not None else hp.get("weight_decay", 0.0)
    inputs = rt.x_test[:sn["n_inputs"]]
    depths = list((sn.get("depths") or {}).get(run.model) or run_depths(section, run.model))
    rows, protocols = [], {}
    for epoch in epochs:
        model = rt.model_at(epoch)
        lr, lr_source = sgd_noise_lr(sn, hp, epoch)
        for d in depths:
            noise = one_step_sgd_noise(model, d, inputs, rt.x_train, rt.labels.corrupted,
                                       n_updates=sn["n_updates"], lr=lr,
                                       batch_size=min(batch, len(rt.labels.corrupted)),
                                       momentum=0.0, weight_decay=wd, seed=sn["seed"],
                                       grad_mode=sn["grad_mode"], transform=rt.transform,
                                       device=rt.device)
            N, M, D = noise.delta.shape
            gauss = np.stack([isotropic_gaussian_control(noise.delta[:, m, :], seed=sn["seed"] + m)
                              for m in range(M)], axis=1)
            sigma = matched_sigma(noise)
            param = parameter_noise_control(model, d, inputs, n_draws=N, sigma=sigma,
                                            seed=sn["seed"], transform=rt.transform, device=rt.device)
            protocol = {**noise.protocol, "lr_source": lr_source, "momentum_handling": sn["momentum"],
                        "param_isotropic_sigma": sigma,
                        "mean_step_norm": float(noise.step_norms.mean()),
                        "mean_shallow_step_norm": float(noise.shallow_step_norms.mean())}
            protocols[f"{epoch}/{d}"] = protocol
            rows += noise_summary_rows({"sgd": noise.delta, "gaussian": gauss, "param_isotropic": param},
                                       run.keys(), epoch=epoch, boundary=d, protocol=protocol,
                                       n_resamples=sn["n_resamples"], seed=sn["seed"], k=sn["top_k"])
    df = T.sgd_noise_frame(rows)
    write_table(df, out, T.SGD_NOISE, provenance(
        config, sections=T.SECTIONS, **T.CHOICE_METADATA, **T.SGD_NOISE_COLUMN_METADATA,
        run=run.keys(), epochs=epochs, depths=depths, protocol=protocols, sgd_noise=sn,
        drop_rule=DROP_RULE, input_set=f"first {len(inputs)} test images"))
    for (epoch, source), g in df.groupby(["epoch", "source"]):
        print(f"{run.path}: epoch {epoch} lr {g['lr'].iloc[0]:.3g} {source}: mean participation ratio "
              f"{g['participation_ratio'].mean():.2f}, dropped {g['n_dropped'].mean():.0f}/"
              f"{g['dim'].iloc[0]} dead coordinates, rejected at 0.05 on the moving coordinates "
              f"{(g['p_value'] < 0.05).mean():.2f} (all coordinates {(g['p_value_all'] < 0.05).mean():.2f})",
              flush=True)
    return df


# ----------------------------------------------------------------------------- ablations
# In pipeline.dynamics.ablation (freeze / restart / reinit run variants, App. F); re-exported here.
from pipeline.dynamics.ablation import (  # noqa: E402, F401 (re-exported)
    FreezeShallow,
    ReinitDeep,
    RestartOptimizer,
    ablation_run,
    parse_ablation_variant,
)

# ----------------------------------------------------------------------------- aggregation
# Torch-free, in pipeline.dynamics.aggregate (the dynamics-tables job imports no torch).
from pipeline.dynamics.aggregate import (  # noqa: E402, F401 (re-exported)
    aggregate_ablations,
    aggregate_sgd_noise,
    aggregate_tables,
    welch_rows,
)
