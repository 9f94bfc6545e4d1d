"""The image runs' stages: one function per ``python -m pipeline <stage>`` command (and workflow rule).

Each function's signature is where its command line is declared (:mod:`pipeline.__main__` builds the
options from it: ``out_dir`` is ``--out-dir``, ``config`` is ``--configfile``/``--config-json``,
``run`` is ``--dataset --model --corruption --seed --variant``); its docstring's first line is the
command's help. ``config`` is the configuration as given (the rules pass only their ``params``
sections, the ones whose change must rerun the stage): the command line has checked it whole
(:func:`pipeline.config.validate_config`); here the schema fills in the defaults
(:func:`pipeline.core.config.apply_schema`) and the given sections are recorded as provenance.

Every import of a heavy library (torch, h5py, the probes) is inside the function that needs it, so
``python -m pipeline labels`` imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.config import Run, apply_schema
from pipeline.core.tables import provenance


def _record(config: dict, given: dict, **extra) -> dict[str, str]:
    """Provenance of an artifact: the config sections the stage was given (defaults filled in)."""
    return provenance(config, sections=list(given) or None, **extra)


def _stored_config(attrs) -> dict:
    return json.loads(attrs.get("config", "{}"))


def _runtime(config: dict, run: Run, **paths):
    from pipeline.core.runtime import RunRuntime

    return RunRuntime(config, run, **paths)


def labels(config: dict, run: Run, out: str) -> None:
    """Corrupt the training labels of one run (labels.npz)."""
    from pipeline.core.labels import load_run_dataset, make_run_labels, save_labels

    given, config = config, apply_schema(config)
    arrays = load_run_dataset(config, run.dataset)
    run_labels = make_run_labels(arrays, dataset=run.dataset, corruption=run.corruption, seed=run.seed)
    save_labels(run_labels, out, **_record(config, given, run=run.keys()))
    changed = run_labels.changed.mean()
    print(f"{run.path}: {len(run_labels.true)} training labels, {run_labels.resampled.mean():.3f} "
          f"resampled, {changed:.3f} changed")


def train(config: dict, run: Run, labels: str | Path, out_dir: str | Path) -> None:
    """Train one run (resumes from its latest state)."""
    from pipeline.images.train import train_run

    config = apply_schema(config)
    result = train_run(_runtime(config, run, run_dir=out_dir, labels_path=labels), out_dir)
    last = result.log.iloc[-1]
    print(f"{run.path}: stopped at epoch {result.final_epoch} ({result.stop_reason}); train acc "
          f"(corrupted) {last.train_acc_corrupted:.3f}, test acc {last.test_acc:.3f}; "
          f"checkpoints {result.epochs}")


def extract(config: dict, run: Run, epoch: int, labels: str | Path, checkpoint: str | Path,
            out: str | Path) -> None:
    """Extract the layer activations of one checkpoint to HDF5."""
    from pipeline.core.activations import extract_activations, persisted_layers

    given, config = config, apply_schema(config)
    rt = _runtime(config, run, labels_path=labels)
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
    """Replace an activation file's training activations by per-class statistics.

    ``storage.persist: moments|auto``: the reduced copy of one activation file that is kept; ``fit``
    and ``score`` read it."""
    from pipeline.probes import reduce_activations

    given, config = config, apply_schema(config)
    reduce_activations(activations, out, mode=config["storage"]["persist"],
                       attrs=_carried_forward(config, given, run, epoch, activations))


def fit(config: dict, run: Run, epoch: int, activations: str | Path, out: str | Path) -> None:
    """Fit the probes (class subspaces) on one activation (or reduced) file."""
    from pipeline.probes import fit_subspaces

    given, config = config, apply_schema(config)
    pcfg = config["probes"]
    fit_subspaces(activations, out, settings=pcfg["settings"], fit_labels=pcfg["fit_labels"],
                  layers=pcfg["layers"], device=pcfg["device"],
                  attrs=_carried_forward(config, given, run, epoch, activations))


def score(config: dict, run: Run, epoch: int, activations: str | Path, subspaces: str | Path,
          out: str | Path) -> None:
    """Score the fitted probes and the model on one activation (or reduced) file."""
    import h5py

    from pipeline.probes import score_probes

    with h5py.File(subspaces, "r") as h5:  # activations' and probes' config, as recorded upstream
        recorded = _stored_config(h5.attrs)
    score_probes(activations, subspaces, out, run_keys=run.keys(), epoch=epoch,
                 device=recorded.get("probes", {}).get("device"),
                 metadata=provenance(recorded, run=run.keys(), epoch=epoch))


def probe(config: dict, run: Run, epoch: int, activations: str | Path, subspaces: str | Path,
          out: str | Path) -> None:
    """Fit (--subspaces, written) and score (--out, written) the probes of one checkpoint in one process.

    ``fit``, then ``score``: what the workflow runs."""
    fit(config, run, epoch, activations, subspaces)
    score(config, run, epoch, activations, subspaces, out)


def probe_fused(config: dict, run: Run, epoch: int, labels: str | Path, checkpoint: str | Path,
                subspaces: str | Path, out: str | Path, *, layers: list[str] | None = None,
                model_rows: bool = True, max_bytes: float | None = None) -> dict:
    """storage.fused: forward pass, fit and score the probes of one checkpoint in memory (no activation file).

    The forward pass (:class:`pipeline.core.runtime.RunRuntime`, :func:`pipeline.core.runtime.forward`, as
    :func:`extract`) keeps each layer's activations in memory, cast to ``activations.dtype`` as
    the activation file would hold them: torch tensors on the GPU when ``probes.device`` is a CUDA
    device (or ``auto`` with a GPU), numpy arrays otherwise. They go to the same
    :func:`~pipeline.probes.fit_subspaces` / :func:`~pipeline.probes.score_probes` as the staged
    path (:class:`~pipeline.probes.stage.ActivationArrays`), which write ``subspaces`` (the fitted
    probes) and the probe table ``out``. ``layers``: the fused probe layers (default: those of the
    config, :func:`pipeline.images.layers.probe_layer_split`; every probe layer when it fuses none).
    ``model_rows=False`` (``--no-model-rows``) leaves the model's own rows out (the staged table of
    this checkpoint has them). ``max_bytes``: the most activation bytes held at once (default: half
    the GPU's free memory, or 16 GiB on the host); more layers than that are done in groups, one
    forward pass each. Returns timings (seconds) and the forward-pass count."""
    import time

    import numpy as np
    import torch

    from pipeline.core.models import layer_dims
    from pipeline.core.runtime import forward
    from pipeline.images.layers import check_fused, probe_layer_split
    from pipeline.probes import fit_subspaces, score_probes
    from pipeline.probes.accel import probe_device
    from pipeline.probes.stage import ActivationArrays

    given, config = config, apply_schema(config)
    check_fused(config)
    t0 = time.perf_counter()
    acfg, pcfg = config["activations"], config["probes"]
    if layers is None:  # the config's fused probe layers; all probe layers if it fuses none
        staged, fused = probe_layer_split(config, run.model)
        layers = fused or staged
    if not layers:
        raise ValueError(f"{run.path}: no fused probe layers (storage.fused, probes.layers)")
    rt = _runtime(config, run, labels_path=labels)
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

    run_labels = rt.labels
    source = ActivationArrays(layers, {"train_corrupted": run_labels.corrupted, "train_true": run_labels.true,
                                       "test": run_labels.test}, compute, sizes=sizes, max_bytes=max_bytes,
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


# Transfer experiments (issue 3): pipeline.images.transfer.{editing,intervention,relabel}.

def edit(config: dict, run: Run, index: str | Path, labels: str | Path, out: str | Path) -> None:
    """Weight editing: a run's probed checkpoints with VeLPIC pre-softmax weights (section 8).

    ``index`` is the run's checkpoints/index.json; rows probe="edited_model"."""
    from pipeline.images.transfer.editing import edit_run

    given, config = config, apply_schema(config)
    rt = _runtime(config, run, run_dir=Path(index).parent.parent, labels_path=labels)
    edit_run(rt, out, metadata=_record(config, given, run=run.keys()))


def intervene(config: dict, run: Run, labels: str | Path, out_dir: str | Path,
              standard_dir: str | Path | None = None) -> None:
    """Train an intervened run: E epochs, VeLPIC edit, N more (section 9; resumes from its latest state).

    The run (variant intervene-e{E}) is trained into ``out_dir``, branching at epoch E from the
    standard run in ``standard_dir`` if it has that checkpoint."""
    from pipeline.images.transfer.intervention import intervene_run

    config = apply_schema(config)
    rt = _runtime(config, run, run_dir=out_dir, labels_path=labels)
    result = intervene_run(rt, out_dir, standard_dir=standard_dir)
    last = result.log.iloc[-1]
    print(f"{run.path}: trained to epoch {result.final_epoch}; train acc (corrupted) "
          f"{last.train_acc_corrupted:.3f}, test acc {last.test_acc:.3f}; checkpoints {result.epochs}")


def relabel(config: dict, run: Run, protocol: str, index: str | Path, labels: str | Path,
            activations: str | Path, out: str | Path, details: str | Path) -> None:
    """Relabel the training set with MASC and retrain the final checkpoint (the MASC paper).

    ``index``: the run's checkpoints/index.json; ``activations``: those of the final checkpoint;
    ``out``: the rows probe="relabel_retrain"; ``details``: JSON with the selection scores and the
    retraining."""
    from pipeline.images.transfer.relabel import relabel_run

    given, config = config, apply_schema(config)
    rt = _runtime(config, run, run_dir=Path(index).parent.parent, labels_path=labels)
    relabel_run(rt, protocol, activations, out, details,
                metadata=_record(config, given, run=run.keys(), protocol=protocol))


def plot(figure: list[str], table: str | Path, train_log: str | Path, dataset: str, model: str,
         out: list[str | Path], *, dpi: int = 120) -> list[Path]:
    """Draw figures from the aggregated tables (one --out per --figure).

    Several figures come from one read of the tables: the workflow draws every figure of a
    (dataset, model) pair in one job. ``figure`` and ``out`` may also be one name and one path."""
    from pipeline.images.plots import draw_figures

    figures = [figure] if isinstance(figure, str) else list(figure)
    outs = [out] if isinstance(out, (str, Path)) else list(out)
    if len(figures) != len(outs):
        raise ValueError(f"{len(figures)} figures but {len(outs)} output paths; give one --out per --figure")
    return draw_figures(dict(zip(figures, outs, strict=True)), table, train_log, dataset, model, dpi=dpi)
