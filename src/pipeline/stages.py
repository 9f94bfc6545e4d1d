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

from pipeline.config import Run, provenance, validate_config
from pipeline.io import check_result_schema, read_parquet_metadata, write_parquet


def _full(config: dict) -> dict:
    # Rules pass only their config sections; the schema fills in the rest with defaults.
    return validate_config(config)


def _record(config: dict, given: dict, **extra) -> dict[str, str]:
    """Provenance of an artifact: the config sections the stage was given (defaults filled in)."""
    return provenance(config, sections=list(given) or None, **extra)


def _stored_config(attrs) -> dict:
    return json.loads(attrs.get("config", "{}"))


def labels(config: dict, run: Run, out: str | Path) -> None:
    from pipeline.data import load_run_dataset, make_run_labels, save_labels

    given, config = config, _full(config)
    arrays = load_run_dataset(config, run.dataset)
    run_labels = make_run_labels(arrays, dataset=run.dataset, corruption=run.corruption, seed=run.seed)
    save_labels(run_labels, out, **_record(config, given, run=run.keys()))
    changed = run_labels.changed.mean()
    print(f"{run.path}: {len(run_labels.true)} training labels, {run_labels.resampled.mean():.3f} "
          f"resampled, {changed:.3f} changed")


def _runtime(config: dict, run: Run, **paths):
    from pipeline.runtime import RunRuntime

    return RunRuntime(config, run, **paths)


def train(config: dict, run: Run, labels_path: str | Path, out_dir: str | Path) -> None:
    from pipeline.train import train_run

    config = _full(config)
    result = train_run(_runtime(config, run, run_dir=out_dir, labels_path=labels_path), out_dir)
    last = result.log.iloc[-1]
    print(f"{run.path}: stopped at epoch {result.final_epoch} ({result.stop_reason}); train acc "
          f"(corrupted) {last.train_acc_corrupted:.3f}, test acc {last.test_acc:.3f}; "
          f"checkpoints {result.epochs}")


def extract(config: dict, run: Run, epoch: int, labels_path: str | Path, checkpoint: str | Path,
            out: str | Path) -> None:
    from pipeline.activations import extract_activations, persisted_layers

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
                  layers=pcfg["layers"], attrs=_carried_forward(config, given, run, epoch, activations))


def score(config: dict, run: Run, epoch: int, activations: str | Path, subspaces: str | Path,
          out: str | Path) -> None:
    from pipeline.probes import score_probes

    import h5py

    with h5py.File(subspaces, "r") as h5:  # activations' and probes' config, as recorded upstream
        recorded = _stored_config(h5.attrs)
    score_probes(activations, subspaces, out, run_keys=run.keys(), epoch=epoch,
                 metadata=provenance(recorded, run=run.keys(), epoch=epoch))


# Transfer experiments (issue 3): pipeline.transfer.editing, pipeline.transfer.intervention, pipeline.transfer.relabel.

def edit(config: dict, run: Run, index: str | Path, labels_path: str | Path, out: str | Path) -> None:
    """Weight editing of every probed checkpoint of ``run`` (rows probe="edited_model")."""
    from pipeline.transfer.editing import edit_run

    given, config = config, _full(config)
    rt = _runtime(config, run, run_dir=Path(index).parent.parent, labels_path=labels_path)
    edit_run(rt, out, metadata=_record(config, given, run=run.keys()))


def intervene(config: dict, run: Run, labels_path: str | Path, out_dir: str | Path,
              standard_dir: str | Path | None = None) -> None:
    """Train an intervened run (variant intervene-e{E}) into ``out_dir``."""
    from pipeline.transfer.intervention import intervene_run

    config = _full(config)
    rt = _runtime(config, run, run_dir=out_dir, labels_path=labels_path)
    result = intervene_run(rt, out_dir, standard_dir=standard_dir)
    last = result.log.iloc[-1]
    print(f"{run.path}: trained to epoch {result.final_epoch}; train acc (corrupted) "
          f"{last.train_acc_corrupted:.3f}, test acc {last.test_acc:.3f}; checkpoints {result.epochs}")


def relabel(config: dict, run: Run, protocol: str, index: str | Path, labels_path: str | Path,
            activations: str | Path, out: str | Path, details: str | Path) -> None:
    """Relabel-and-retrain from the final checkpoint of ``run`` (rows probe="relabel_retrain")."""
    from pipeline.transfer.relabel import relabel_run

    given, config = config, _full(config)
    rt = _runtime(config, run, run_dir=Path(index).parent.parent, labels_path=labels_path)
    relabel_run(rt, protocol, activations, out, details,
                metadata=_record(config, given, run=run.keys(), protocol=protocol))


def aggregate(inputs: list[str | Path], out: str | Path, *, check_schema: bool = True) -> pd.DataFrame:
    """Concatenate per-(run, checkpoint) tables into one tidy table, sorted by its keys.

    Every input's schema is checked (:func:`pipeline.io.read_tables`): result tables against the
    result schema, others (``check_schema=False``, e.g. training logs) against the first input.
    """
    from pipeline.io import RESULT_KEYS, read_tables

    table = read_tables(inputs, result_schema=check_schema)
    if check_schema:
        check_result_schema(table)  # no duplicate rows across the inputs
        table = table.sort_values(RESULT_KEYS, kind="stable").reset_index(drop=True)
    meta = read_parquet_metadata(inputs[0])
    meta = {k: v for k, v in meta.items() if k in ("pipeline_version", "config")}
    meta["sources"] = json.dumps([str(p) for p in inputs])
    write_parquet(table, out, meta)
    return table


def plot(figure: str, table: str | Path, train_log: str | Path, dataset: str, model: str,
         out: str | Path, *, dpi: int = 120) -> Path:
    from pipeline.plots import draw_figure

    return draw_figure(figure, table, train_log, dataset, model, out, dpi=dpi)
