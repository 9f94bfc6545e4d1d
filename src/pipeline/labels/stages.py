"""The labels family's stages (issue 17): one function per command, ``python -m pipeline <name>``.

Each is called by one rule of workflow/rules/labels.smk and hands over to one module of this
package; the logic lives there.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.config import ConfigError, Run, apply_schema

# ----------------------------------------------------------------------------- detection (section 2)

def detect(config: dict, run: Run, epoch: int, activations: str | Path, labels: str | Path,
           out: str | Path, scores: str | Path, threads: int | None = None) -> None:
    """Score every training label of one run at one epoch: cross-fitted probes and cleanlab per layer.

    ``activations``: the run's activations/epoch_{E}.h5; ``labels``: its labels.npz. Runs every
    detector of ``labels.detectors`` and, if ``labels.cleanlab.layer``, cleanlab on each layer of
    ``labels.layers`` (null: the model's paper layers); written: the detection table (``out``) and
    the per-example label_scores table (``scores``) (:func:`pipeline.labels.detect_stage.detect_run`)."""
    from pipeline.labels.detect_stage import detect_run

    detect_run(apply_schema(config), run, epoch, activations, labels, out, scores)


def detect_activations(config: dict, activations: str | Path, out_dir: str | Path,
                       labels: str | Path | None = None, layers: list[str] | None = None,
                       seed: int = 0, threads: int | None = None) -> None:
    """Detect wrong labels from a saved activation file alone (no training, no run folder).

    ``activations``: an HDF5 file in the pipeline's format (``python -m pipeline extract``);
    ``labels``: the labels to judge, else the file's own (given = labels/train_corrupted, truth =
    labels/train_true): a pipeline labels.npz, an .npz with ``y`` (and optional ``y_true``) or an
    .npy of given labels (truth unknown). ``layers``: those to read (default: ``labels.layers``,
    else the model's paper layers, else all). ``seed`` splits the folds. Writes detection.parquet,
    label_scores.parquet and suspects.csv into ``out_dir``; the detectors are the config's
    ``labels`` section (--configfile / --config-json)."""
    from pipeline.labels.detect_stage import detect_file

    detect_file(apply_schema(config), activations, out_dir, labels, layers, seed)


def detection_tables(inputs: list[str | Path], /, out: str | Path) -> None:
    """Gather per-run detection (or label_scores) tables into one, checked against its schema."""
    from pipeline.core.tables import gather_tables, provenance, read_parquet_metadata, write_table
    from pipeline.labels.tables import DETECTION, LABEL_SCORES

    schemas = {DETECTION.name: DETECTION, LABEL_SCORES.name: LABEL_SCORES}
    name = read_parquet_metadata(inputs[0]).get("table_schema")
    if name not in schemas:
        raise ConfigError(f"{inputs[0]} is not a detection or label_scores table (its schema: {name!r})")
    schema = schemas[name]
    table = gather_tables(inputs, schema)
    meta = read_parquet_metadata(inputs[0])
    write_table(table, out, schema, {**provenance({}), "config": meta.get("config", "{}"),
                                     "sources": json.dumps([str(p) for p in inputs])})
    print(f"{len(inputs)} {name} tables -> {out} ({len(table)} rows)")


def detection_figures(detection: list[str | Path], scores: list[str | Path], dataset: str, model: str,
                      pr_curves: str | Path, epochs: str | Path, logs: list[str | Path] | None = None,
                      dpi: int = 120) -> None:
    """Draw the detection figures of one (dataset, model) pair: PR curves, and AUROC over epochs.

    ``detection``: detection tables (per run and epoch, or gathered); ``scores``: the label_scores
    tables (only those of each detector's best reading are read); ``logs``: the runs'
    train_log.parquet (test accuracy beside the AUROC). Written: ``pr_curves`` (one panel per
    corruption: every detector at its epoch and layer of highest AUROC) and ``epochs`` (AUROC per
    epoch on each detector's best layer beside the test accuracy) (:mod:`pipeline.labels.figures`)."""
    import pandas as pd

    from pipeline.core.tables import read_table, read_tables
    from pipeline.labels.figures import draw_detection_epochs, draw_pr_curves
    from pipeline.labels.tables import DETECTION

    table = pd.concat([read_table(p, DETECTION) for p in detection], ignore_index=True)
    train_logs = read_tables(list(logs)) if logs else None
    draw_pr_curves(table, list(scores), pr_curves, dataset=dataset, model=model, dpi=dpi)
    draw_detection_epochs(table, train_logs, epochs, dataset=dataset, model=model, dpi=dpi)
    print(f"{dataset}/{model}: -> {pr_curves}, {epochs}")


def suspects(config: dict, run: Run, detection: list[str | Path], scores: list[str | Path],
             out: str | Path, figure: str | Path, log: str | Path | None = None, dpi: int = 120) -> None:
    """Rank one run's suspected training labels (suspects.csv) and draw the most suspicious images.

    ``detection`` / ``scores``: the run's detection and label_scores tables (one per detected
    epoch); ``log``: its train_log.parquet. Each detector is read without the truth: at its
    detected epoch nearest the peak of the test accuracy in ``log`` (every epoch without it), on
    its layer of highest held-out accuracy on the given labels; its flagged examples, by
    decreasing score, at most
    ``labels.suspects.top`` (index, file path where the dataset has one, given and suggested label,
    score, detector, rank). ``figure``: the best detector's ``labels.suspects.images_per_class``
    most suspicious images of each given class (:mod:`pipeline.labels.suspects`)."""
    import pandas as pd

    from pipeline.core.labels import load_run_dataset
    from pipeline.core.tables import read_table
    from pipeline.labels.suspects import draw_suspects, suspects_frame, write_suspects
    from pipeline.labels.tables import DETECTION, LABEL_SCORES

    config = apply_schema(config)
    section = config["labels"]["suspects"]
    table = pd.concat([read_table(p, DETECTION) for p in detection], ignore_index=True)
    score_rows = pd.concat([read_table(p, LABEL_SCORES) for p in scores], ignore_index=True)
    keys = run.keys()
    mine = (table["dataset"] == keys["dataset"]) & (table["model"] == keys["model"]) \
        & (table["corruption"] == keys["corruption"]) & (table["seed"] == keys["seed"]) \
        & (table["variant"] == keys["variant"])
    arrays = load_run_dataset(config, run.dataset)
    files = getattr(arrays, "train_files", None)
    peak = None
    if log is not None:
        train_log = read_table(log)
        peak = int(train_log.loc[train_log["test_acc"].idxmax(), "epoch"])
    ranked = suspects_frame(table[mine], score_rows, top=section["top"], files=files, epoch=peak)
    write_suspects(ranked, out)
    draw_suspects(ranked, arrays.x_train, figure, per_class=section["images_per_class"],
                  class_names=getattr(arrays, "class_names", None), title=run.path, dpi=dpi)
    near = f" (near epoch {peak}, the test accuracy's peak)" if peak is not None else ""
    print(f"{run.path}: {len(ranked)} suspects{near} -> {out}, {figure}")


# ------------------------------------------------------------ cleanlab's network route (2), repair (3)

def cleanlab_network(config: dict, run: Run, labels: str | Path, out: str | Path, scores_out: str | Path,
                     details_out: str | Path) -> None:
    """cleanlab on out-of-fold probabilities of the network itself, trained from scratch per fold.

    ``labels.folds`` trainings of the run's network (its settings, the given labels of the other
    folds); writes the detection table (``--out``), the label_scores table (``--scores-out``) and the
    fold trainings (``--details-out``, JSON), rows with ``layer = "network"``."""
    from pipeline.core.runtime import RunRuntime
    from pipeline.core.tables import provenance
    from pipeline.labels.retrain import cleanlab_network_run

    given, config = config, apply_schema(config)
    rt = RunRuntime(config, run, labels_path=labels)
    detection = cleanlab_network_run(rt, folds=int(config["labels"]["folds"]), detection_out=out,
                                     scores_out=scores_out, details_out=details_out,
                                     metadata=provenance(config, sections=list(given) or None, run=run.keys()))
    row = detection.iloc[0]
    print(f"{run.path}: cleanlab (network, {config['labels']['folds']} folds) flagged {row.n_flagged} of "
          f"{row.n_train}; held-out accuracy {row.heldout_accuracy:.3f}, AUROC {row.auroc:.3f}")


def repair(config: dict, run: Run, labels: str | Path, detection: list[str | Path], scores: list[str | Path],
           out: str | Path, details_out: str | Path, log: str | Path | None = None,
           only: str | None = None) -> None:
    """Retrain from scratch after relabeling or removing the flagged examples (best probe detector, cleanlab).

    ``--detection`` / ``--scores``: the run's detection and label_scores tables (every probed epoch,
    and cleanlab's network route when it ran); ``--log``: the run's train_log.parquet (its test
    accuracy's peak guides ``select: heldout``; it is the given-label baseline, not trained again);
    ``labels.repair.select`` chooses the detectors,
    ``labels.repair.modes`` what is done with the flagged examples. Writes the repair table
    (``--out``, with the given-label and true-label baselines) and what was chosen and why
    (``--details-out``, JSON). ``--only``: one retraining (given, true, probe_relabel,
    probe_remove, cleanlab_relabel, cleanlab_remove), as the workflow runs them, one job each,
    joined by ``repair-gather``; without it, all of them one after the other."""
    from pipeline.core.artifacts import write_json
    from pipeline.core.runtime import RunRuntime
    from pipeline.core.tables import provenance, read_table, write_table
    from pipeline.labels.repair import REPAIR, read_detections, repair_run

    given, config = config, apply_schema(config)
    rcfg = config["labels"]["repair"]
    rt = RunRuntime(config, run, labels_path=labels)
    train_log = read_table(log) if log is not None else None
    table, details = repair_run(rt, read_detections(detection, run.keys()), scores, select=rcfg["select"],
                                modes=rcfg["modes"], train_log=train_log, only=only)
    # the table last: its presence marks the job done (both are written atomically)
    write_json(details_out, details)
    write_table(table, out, REPAIR, provenance(config, sections=list(given) or None, run=run.keys()))


def repair_gather(parts: list[str | Path], /, details: list[str | Path], out: str | Path,
                  details_out: str | Path) -> None:
    """Join one run's retrainings (``repair --only``, one job each) into its repair table and details.

    ``parts[i]`` and ``details[i]``: the table and JSON of one retraining; checked to be of one run,
    to agree on the chosen detectors, and to hold each retraining once
    (:func:`pipeline.labels.repair.gather_repair`)."""
    from pipeline.core.artifacts import UNLOCK_ADVICE, read_json, write_json
    from pipeline.core.tables import read_parquet_metadata, read_table, write_table
    from pipeline.labels.repair import REPAIR, gather_repair

    if len(parts) != len(details):
        raise ConfigError(f"repair-gather: {len(parts)} tables but {len(details)} details files; give one of "
                          "each per retraining, in the same order")
    redo = f"rerun its retraining: snakemake --forcerun <the part's .parquet> (your usual options); {UNLOCK_ADVICE}"
    loaded = []
    for table_path, details_path in zip(parts, details, strict=True):
        part = read_json(details_path, "repair details", redo)
        if not isinstance(part, dict):
            raise ConfigError(f"repair details {details_path} hold a JSON {type(part).__name__}, not the "
                              f"object `python -m pipeline repair --only` writes; {redo}")
        loaded.append((read_table(table_path, REPAIR), part))
    table, joined = gather_repair(loaded)
    meta = read_parquet_metadata(parts[0])
    write_json(details_out, joined)
    write_table(table, out, REPAIR, {k: v for k, v in meta.items() if k != "table_schema"})
    print(f"{joined['run']}: {len(parts)} retrainings -> {out} ({len(table)} rows)")


def repair_figure(repair: list[str | Path], /, out: str | Path, dataset: str, model: str,
                  relabel: list[str | Path] | None = None, dpi: int = 120) -> None:
    """Draw one (dataset, model) pair's repair figure: test accuracy after each repair beside the baselines.

    ``repair``: the runs' repair tables (``labels/repair.parquet``); ``relabel``: their images-family
    relabel-and-retrain tables (``relabel/<protocol>.parquet``), where ``transfer.relabel_retrain``
    ran (:mod:`pipeline.labels.repair_figures`)."""
    import pandas as pd

    from pipeline.core.tables import read_table
    from pipeline.labels.repair import REPAIR
    from pipeline.labels.repair_figures import draw_repair, relabel_retrain_rows

    table = pd.concat([read_table(p, REPAIR) for p in repair], ignore_index=True)
    relabel_rows = relabel_retrain_rows([pd.read_parquet(p) for p in relabel or []])
    draw_repair(table, out, dataset=dataset, model=model, relabel=relabel_rows, dpi=dpi)
    print(f"{dataset}/{model}: {len(table)} repair rows -> {out}")
