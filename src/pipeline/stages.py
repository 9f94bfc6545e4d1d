"""One function per workflow rule: load what the stage needs, call its module, write its artifact.

Each Snakemake rule calls exactly one of these through the command line (``python -m pipeline
<stage> ...``), so every stage is also usable without Snakemake. ``config`` here is the (validated)
configuration, or the part of it the rule passes as ``params`` — the part whose change must rerun
the stage and nothing upstream of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.config import validate_config
from pipeline.core.config import Run
from pipeline.core.tables import check_result_schema, provenance, read_parquet_metadata, write_parquet


def _full(config: dict) -> dict:
    # Rules pass only their config sections; the schema fills in the rest with defaults.
    return validate_config(config)


def _record(config: dict, given: dict, **extra) -> dict[str, str]:
    """Provenance of an artifact: the config sections the stage was given (defaults filled in)."""
    return provenance(config, sections=list(given) or None, **extra)


def _stored_config(attrs) -> dict:
    return json.loads(attrs.get("config", "{}"))


def labels(config: dict, run: Run, out: str | Path) -> None:
    from pipeline.core.labels import load_run_dataset, make_run_labels, save_labels

    given, config = config, _full(config)
    arrays = load_run_dataset(config, run.dataset)
    run_labels = make_run_labels(arrays, dataset=run.dataset, corruption=run.corruption, seed=run.seed)
    save_labels(run_labels, out, **_record(config, given, run=run.keys()))
    changed = run_labels.changed.mean()
    print(f"{run.path}: {len(run_labels.true)} training labels, {run_labels.resampled.mean():.3f} "
          f"resampled, {changed:.3f} changed")


def _runtime(config: dict, run: Run, **paths):
    from pipeline.core.runtime import RunRuntime

    return RunRuntime(config, run, **paths)


def train(config: dict, run: Run, labels_path: str | Path, out_dir: str | Path) -> None:
    from pipeline.images.train import train_run

    config = _full(config)
    result = train_run(_runtime(config, run, run_dir=out_dir, labels_path=labels_path), out_dir)
    last = result.log.iloc[-1]
    print(f"{run.path}: stopped at epoch {result.final_epoch} ({result.stop_reason}); train acc "
          f"(corrupted) {last.train_acc_corrupted:.3f}, test acc {last.test_acc:.3f}; "
          f"checkpoints {result.epochs}")


def extract(config: dict, run: Run, epoch: int, labels_path: str | Path, checkpoint: str | Path,
            out: str | Path) -> None:
    from pipeline.core.activations import extract_activations, persisted_layers

    given, config = config, _full(config)
    rt = _runtime(config, run, labels_path=labels_path)
    acfg = config["activations"]
    extract_activations(rt.model_at(epoch, path=checkpoint), rt.x_train, rt.x_test, rt.labels,
                        rt.transform, out, layers=persisted_layers(acfg["layers"], run.model),
                        dtype=acfg["dtype"], compression=acfg["compression"],
                        batch_size=acfg["batch_size"],
                        attrs={**_record(config, given, run=run.keys()), "epoch": int(epoch)})


def _carried_forward(config: dict, given: dict, run: Run, epoch: int, upstream_h5: str | Path) -> dict:
    """Provenance of an artifact made from an HDF5 one: the upstream file's recorded config with
    this stage's sections over it."""
    import h5py

    with h5py.File(upstream_h5, "r") as h5:
        upstream = _stored_config(h5.attrs)
    recorded = {**upstream, **json.loads(_record(config, given)["config"])}
    return {**provenance(recorded, run=run.keys()), "epoch": int(epoch)}


def reduce(config: dict, run: Run, epoch: int, activations: str | Path, out: str | Path) -> None:
    """``storage.persist: moments|auto``: the reduced copy of one activation file that is kept."""
    from pipeline.probes import reduce_activations

    given, config = config, _full(config)
    reduce_activations(activations, out, mode=config["storage"]["persist"],
                       attrs=_carried_forward(config, given, run, epoch, activations))


def fit(config: dict, run: Run, epoch: int, activations: str | Path, out: str | Path) -> None:
    from pipeline.probes import fit_subspaces

    given, config = config, _full(config)
    pcfg = config["probes"]
    fit_subspaces(activations, out, settings=pcfg["settings"], fit_labels=pcfg["fit_labels"],
                  layers=pcfg["layers"], device=pcfg["device"],
                  attrs=_carried_forward(config, given, run, epoch, activations))


def score(config: dict, run: Run, epoch: int, activations: str | Path, subspaces: str | Path,
          out: str | Path) -> None:
    import h5py

    from pipeline.probes import score_probes

    with h5py.File(subspaces, "r") as h5:  # activations' and probes' config, as recorded upstream
        recorded = _stored_config(h5.attrs)
    score_probes(activations, subspaces, out, run_keys=run.keys(), epoch=epoch,
                 device=recorded.get("probes", {}).get("device"),
                 metadata=provenance(recorded, run=run.keys(), epoch=epoch))


# Transfer experiments (issue 3): pipeline.images.transfer.{editing,intervention,relabel}.

def edit(config: dict, run: Run, index: str | Path, labels_path: str | Path, out: str | Path) -> None:
    """Weight editing of every probed checkpoint of ``run`` (rows probe="edited_model")."""
    from pipeline.images.transfer.editing import edit_run

    given, config = config, _full(config)
    rt = _runtime(config, run, run_dir=Path(index).parent.parent, labels_path=labels_path)
    edit_run(rt, out, metadata=_record(config, given, run=run.keys()))


def intervene(config: dict, run: Run, labels_path: str | Path, out_dir: str | Path,
              standard_dir: str | Path | None = None) -> None:
    """Train an intervened run (variant intervene-e{E}) into ``out_dir``."""
    from pipeline.images.transfer.intervention import intervene_run

    config = _full(config)
    rt = _runtime(config, run, run_dir=out_dir, labels_path=labels_path)
    result = intervene_run(rt, out_dir, standard_dir=standard_dir)
    last = result.log.iloc[-1]
    print(f"{run.path}: trained to epoch {result.final_epoch}; train acc (corrupted) "
          f"{last.train_acc_corrupted:.3f}, test acc {last.test_acc:.3f}; checkpoints {result.epochs}")


def relabel(config: dict, run: Run, protocol: str, index: str | Path, labels_path: str | Path,
            activations: str | Path, out: str | Path, details: str | Path) -> None:
    """Relabel-and-retrain from the final checkpoint of ``run`` (rows probe="relabel_retrain")."""
    from pipeline.images.transfer.relabel import relabel_run

    given, config = config, _full(config)
    rt = _runtime(config, run, run_dir=Path(index).parent.parent, labels_path=labels_path)
    relabel_run(rt, protocol, activations, out, details,
                metadata=_record(config, given, run=run.keys(), protocol=protocol))


def aggregate(inputs: list[str | Path], out: str | Path, *, check_schema: bool = True) -> pd.DataFrame:
    """Concatenate per-(run, checkpoint) tables into one tidy table, sorted by its keys.

    Every input's schema is checked (:func:`pipeline.core.tables.read_tables`): result tables against the
    result schema, others (``check_schema=False``, e.g. training logs) against the first input.
    """
    from pipeline.core.tables import RESULT_KEYS, read_tables

    table = read_tables(inputs, result_schema=check_schema)
    if check_schema:
        check_result_schema(table)  # no duplicate rows across the inputs
        table = table.sort_values(RESULT_KEYS, kind="stable").reset_index(drop=True)
    meta = read_parquet_metadata(inputs[0])
    meta = {k: v for k, v in meta.items() if k in ("pipeline_version", "config")}
    meta["sources"] = json.dumps([str(p) for p in inputs])
    write_parquet(table, out, meta)
    return table


def plot(figure: str | list[str], table: str | Path, train_log: str | Path, dataset: str, model: str,
         out: str | Path | list[str | Path], *, dpi: int = 120) -> list[Path]:
    """Draw one figure, or several (``figure`` and ``out`` lists of the same length) from one read
    of the tables: the workflow draws every figure of a (dataset, model) pair in one job."""
    from pipeline.images.plots import draw_figures

    figures = [figure] if isinstance(figure, str) else list(figure)
    outs = [out] if isinstance(out, (str, Path)) else list(out)
    if len(figures) != len(outs):
        raise ValueError(f"{len(figures)} figures but {len(outs)} output paths; give one --out per --figure")
    return draw_figures(dict(zip(figures, outs, strict=True)), table, train_log, dataset, model, dpi=dpi)


def benchmarks(inputs: list[str | Path], out: str | Path):
    """Gather Snakemake benchmark files (or folders of them) into one table (:mod:`pipeline.costs`)."""
    from pipeline.costs import write_benchmark_table

    return write_benchmark_table(inputs, out)


def probe(config: dict, run: Run, epoch: int, activations: str | Path, subspaces: str | Path,
          out: str | Path) -> None:
    """Fit the probes of one checkpoint (``subspaces``) and score them (``out``) in one process."""
    fit(config, run, epoch, activations, subspaces)
    score(config, run, epoch, activations, subspaces, out)


def probe_fused(config: dict, run: Run, epoch: int, labels_path: str | Path, checkpoint: str | Path,
                subspaces: str | Path, out: str | Path, *, layers: list[str] | None = None,
                model_rows: bool = True, max_bytes: float | None = None) -> dict:
    """``storage.fused``: extraction and probing of one checkpoint without an activation file.

    The forward pass (:class:`pipeline.core.runtime.RunRuntime`, :func:`pipeline.core.runtime.forward`, as
    :func:`extract`) keeps each layer's activations in memory, cast to ``activations.dtype`` as
    the activation file would hold them: torch tensors on the GPU when ``probes.device`` is a CUDA
    device (or ``auto`` with a GPU), numpy arrays otherwise. They go to the same
    :func:`~pipeline.probes.fit_subspaces` / :func:`~pipeline.probes.score_probes` as the staged
    path (:class:`~pipeline.probes.stage.ActivationArrays`), which write ``subspaces`` and the
    probe table ``out``. ``layers``: the fused probe layers (default: those of the config,
    :func:`pipeline.workflow.probe_layer_split`; every probe layer when it fuses none).
    ``max_bytes``: the most activation bytes held at once (default: half the GPU's free memory, or
    16 GiB on the host); more layers than that are done in groups, one forward pass each. Returns
    timings (seconds) and the forward-pass count."""
    import time

    import numpy as np
    import torch

    from pipeline.core.models import layer_dims
    from pipeline.core.runtime import forward
    from pipeline.probes import fit_subspaces, score_probes
    from pipeline.probes.accel import resolve_device as probe_device
    from pipeline.probes.stage import ActivationArrays
    from pipeline.workflow import check_fused, probe_layer_split

    given, config = config, _full(config)
    check_fused(config)
    t0 = time.perf_counter()
    acfg, pcfg = config["activations"], config["probes"]
    if layers is None:  # the config's fused probe layers; all probe layers if it fuses none
        staged, fused = probe_layer_split(config, run.model)
        layers = fused or staged
    if not layers:
        raise ValueError(f"{run.path}: no fused probe layers (storage.fused, probes.layers)")
    rt = _runtime(config, run, labels_path=labels_path)
    model = rt.model_at(epoch, path=checkpoint)
    device = probe_device(pcfg["device"])
    keep_on = torch.device(device) if isinstance(device, str) and device.startswith("cuda") else None
    torch_dtype = getattr(torch, acfg["dtype"])
    arrays = rt.arrays
    dims = layer_dims(run.model, in_channels=arrays.channels, image_size=arrays.image_size,
                      num_classes=arrays.num_classes)
    n_rows = int(rt.x_train.shape[0] + rt.x_test.shape[0])
    itemsize = torch.tensor([], dtype=torch_dtype).element_size()
    sizes = {layer: dims[layer] * n_rows * itemsize for layer in layers}
    if max_bytes is None:
        max_bytes = (0.5 * torch.cuda.mem_get_info(keep_on)[0] if keep_on is not None else 16 * 2**30)

    def compute(group: list[str]):
        acts: dict = {layer: {} for layer in group}
        preds = {}
        for split, x in (("train", rt.x_train), ("test", rt.x_test)):
            n = int(x.shape[0])
            held: dict = {}
            chunks = []
            for start, stop, logits, batch in forward(model, x, rt.transform, layers=group,
                                                      batch_size=acfg["batch_size"], device=rt.device):
                chunks.append(logits.argmax(1).cpu())
                for layer in group:
                    values = batch[layer].to(torch_dtype)
                    if layer not in held:
                        held[layer] = torch.empty((n, values.shape[1]), dtype=torch_dtype,
                                                  device=keep_on or "cpu")
                    held[layer][start:stop] = values.to(held[layer].device)
            preds[split] = torch.cat(chunks).numpy().astype(np.int64)
            for layer in group:
                acts[layer][split] = held[layer] if keep_on is not None else held[layer].numpy()
        return acts, preds

    labels = rt.labels
    source = ActivationArrays(layers, {"train_corrupted": labels.corrupted, "train_true": labels.true,
                                       "test": labels.test}, compute, sizes=sizes, max_bytes=max_bytes,
                              name=f"fused activations of {run.path} epoch {epoch}")
    record = _record(config, given, run=run.keys())
    fit_subspaces(source, subspaces, settings=pcfg["settings"], fit_labels=pcfg["fit_labels"],
                  device=pcfg["device"], attrs={**record, "epoch": int(epoch), "fused": True})
    t_fit = time.perf_counter()
    score_probes(source, subspaces, out, run_keys=run.keys(), epoch=epoch, device=pcfg["device"],
                 model_rows=model_rows, metadata={**record, "epoch": str(int(epoch))})
    source.close()
    t_end = time.perf_counter()
    timings = {"fit_s": t_fit - t0, "score_s": t_end - t_fit, "total_s": t_end - t0,
               "forward_passes": source.forward_passes}
    print(f"{run.path} epoch {epoch}: fused {layers} ({source.forward_passes} forward pass(es)); "
          f"fit {timings['fit_s']:.2f} s, score {timings['score_s']:.2f} s")
    return timings


# ----------------------------------------------------------------------------- arithmetic (issue 10)

def arithmetic_cell(settings: dict, out_dir: str | Path) -> None:
    """Train and analyse one cell of the ``arithmetic`` grid (:func:`pipeline.arithmetic.run_cell`);
    ``settings`` is one cell (grid values and the section's common settings)."""
    from pipeline.arithmetic import cell_path, run_cell

    paths = run_cell(settings, out_dir)
    res = pd.read_parquet(paths["results"])
    last = res[(res["epoch"] == res["epoch"].max()) & (res["score"] == "none") & (res["split"] == "test")]
    acc = last.set_index("network")["accuracy"]
    print(f"{cell_path(settings)}: test accuracy raw {acc.get('raw', float('nan')):.3f}, "
          f"G {acc.get('G', float('nan')):.3f}, R {acc.get('R', float('nan')):.3f}")


def arithmetic_tables(indexes: list[str | Path], results: str | Path, neurons: str | Path,
                      log: str | Path) -> None:
    """Concatenate the cells' tables (each cell named by its index.json, the done marker) into the
    three arithmetic tables, validated against their schemas and sorted by their keys."""
    from pipeline.arithmetic.cell import FILES
    from pipeline.arithmetic.tables import (
        LOG_KEYS,
        NEURON_KEYS,
        RESULT_KEYS,
        log_frame,
        neuron_frame,
        result_frame,
    )

    folders = [Path(p).parent for p in indexes]
    meta = {"sources": json.dumps([str(f) for f in folders])}
    for name, out, frame, keys in (("results", results, result_frame, RESULT_KEYS),
                                   ("neurons", neurons, neuron_frame, NEURON_KEYS),
                                   ("train_log", log, log_frame, LOG_KEYS)):
        table = frame(pd.concat([pd.read_parquet(f / FILES[name]) for f in folders], ignore_index=True))
        table = table.sort_values(keys, kind="stable").reset_index(drop=True)
        write_parquet(table, out, {**read_parquet_metadata(folders[0] / FILES[name]), **meta})
    print(f"{len(folders)} arithmetic cells -> {results}, {neurons}, {log}")


def arithmetic_memorization(settings: dict, out: str | Path, *, root: str = "data") -> None:
    """The memorization-order check on a small image set (:mod:`pipeline.arithmetic.memorization`)."""
    from pipeline.arithmetic.memorization import memorization_table

    table = memorization_table(settings, root=root)
    write_parquet(table, out, provenance({"arithmetic": {"memorization": settings}}))
    print(f"memorization order: {len(table)} rows -> {out}")


def arithmetic_figures(figures: list[str], outs: list[str | Path], *, results: str | Path,
                       neurons: str | Path, log: str | Path, memorization: str | Path | None = None,
                       dpi: int = 120) -> list[Path]:
    """Draw the arithmetic figures (:mod:`pipeline.arithmetic.figures`) from the tables."""
    from pipeline.arithmetic.figures import draw, read_tables

    tables = read_tables(results=results, neurons=neurons, log=log, memorization=memorization)
    return draw(list(figures), list(outs), tables, dpi=dpi)


# ----------------------------------------------------------------------------- feature dynamics (issue 9)

def dynamics_composite(config: dict, run: Run, index: str | Path, labels_path: str | Path, out: str | Path,
                       pointwise: str | Path, trajectories: str | Path, threads: int | None = None) -> None:
    """Composite grid, controls, point-wise consistency and trajectories of one run
    (:func:`pipeline.dynamics.stage.composite_run`)."""
    from pipeline.dynamics.stage import composite_run

    composite_run(_full(config), run, index=index, labels_path=labels_path, out_composite=out,
                  out_pointwise=pointwise, out_trajectories=trajectories, threads=threads)


def dynamics_sgd_noise(config: dict, run: Run, index: str | Path, labels_path: str | Path, out: str | Path,
                       threads: int | None = None) -> None:
    from pipeline.dynamics.stage import sgd_noise_run

    sgd_noise_run(_full(config), run, index=index, labels_path=labels_path, out=out, threads=threads)


def dynamics_ablation(config: dict, run: Run, labels_path: str | Path, standard_dir: str | Path,
                      out_dir: str | Path, threads: int | None = None) -> None:
    from pipeline.dynamics.stage import ablation_run

    ablation_run(_full(config), run, labels_path=labels_path, standard_dir=standard_dir, out_dir=out_dir,
                 threads=threads)


def dynamics_tables(kind: str, inputs: list[str | Path], outs: dict) -> None:
    """Aggregate the dynamics family's per-run tables (``kind``: composite, sgd_noise, ablations)."""
    from pipeline.dynamics import stage

    if kind == "composite":
        stage.aggregate_tables(inputs, out_composite=outs["composite"], out_pointwise=outs["pointwise"],
                               out_trajectories=outs["trajectories"], out_welch=outs["welch"])
    elif kind == "sgd_noise":
        stage.aggregate_sgd_noise(inputs, outs["out"])
    elif kind == "ablations":
        stage.aggregate_ablations(inputs, outs["out"])
    else:
        raise ValueError(f"unknown dynamics table kind {kind!r}")


def dynamics_figures(figures: list[str], outs: list[str | Path], *, dataset: str, model: str,
                     composite: str | Path, pointwise: str | Path, trajectories: str | Path | None = None,
                     sgd_noise: str | Path | None = None, depth: str | None = None, dpi: int = 120) -> list[Path]:
    """Draw the dynamics figures of one (dataset, model) pair from the tables only."""
    from pipeline.dynamics.figures import draw, read_tables

    tables = read_tables(composite=composite, pointwise=pointwise, trajectories=trajectories,
                         sgd_noise=sgd_noise)
    return draw(list(figures), list(outs), tables, dataset=dataset, model=model, depth=depth, dpi=dpi)
