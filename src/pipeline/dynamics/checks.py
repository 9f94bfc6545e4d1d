"""The feature-dynamics section's checks that a schema cannot express, run with the rest of the
configuration check (:func:`pipeline.config.validate_config`) before any job is scheduled.

Each of these was found only after compute before (a traceback in a job, or a job that wrote no
composite and exited 0), so each now raises :class:`~pipeline.core.config.ConfigError` naming the
key and what to do:

* ``dynamics.pairs`` name datasets and models the pipeline has (a pair outside the grid is fine: it
  is trained for this family only);
* ``dynamics.corruptions`` give distinct run folders (as the grid's ``corruptions``);
* ``dynamics.control.splits`` are among ``dynamics.splits`` (a control elsewhere has no rows);
* ``deep_epochs`` and ``shallow_epochs`` select at least one epoch the analysed runs save
  (:func:`pipeline.core.schedule.schedule_for`, up to ``train.max_epochs``, which is always saved;
  ``final`` always is); each window of ``windows`` ends at a saved epoch, starts at one the runs
  reach, and, unless ``allow_sparse``, has every epoch saved; ``sgd_noise.epoch``,
  ``ablations.epoch`` and ``ablations.reinit.epoch`` (unless final) are saved epochs;
  ``ablations.corruptions`` are analysed corruptions;
* the model names of ``depths``, ``sgd_noise.depths``, ``ablations.depths`` and
  ``ablations.reinit.depths`` are models, their
  values split boundaries of that model; ``figure_depth`` is a depth of every analysed model.

Torch is imported only for the boundary names (the model registry), and only when the section is on.

A window ``[T1, T2]`` with ``T1 > T2`` is valid: the paper's transferability window (deep part at the
earlier T2, shallow parts up to the later T1; ``config/dynamics-paper.yaml`` has ``[300, 280]``).
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.core.config import ConfigError, builtin_names, format_corruption, pairs

__all__ = ["check_config", "analysed_models"]


def _enum(key: str) -> list[str]:
    """The built-in names of the top-level list ``key`` (datasets, models): torch-free. A user's own
    model has no split forward pass (pipeline.core.user_models), so dynamics takes built-in ones."""
    return builtin_names(key)


def _analysed_pairs(config: dict) -> list[tuple[str, str]]:
    chosen = config["dynamics"].get("pairs")
    return [tuple(p) for p in chosen] if chosen is not None else pairs(config)


def analysed_models(config: dict) -> list[str]:
    """The models of the dynamics pairs, in order."""
    return list(dict.fromkeys(model for _, model in _analysed_pairs(config)))


def check_config(config: dict) -> None:
    """Check ``config["dynamics"]`` (schema already applied) against the rest of the config and the
    model registry; nothing to check when the section is off."""
    section = config.get("dynamics") or {}
    if not section.get("enabled"):
        return
    _check_pairs(config)
    _check_corruptions(section)
    _check_ablation_corruptions(config)
    _check_splits(section)
    _check_epochs(config)
    _check_depths(config)


def _check_pairs(config: dict) -> None:
    datasets, models = _enum("datasets"), _enum("models")
    for i, (dataset, model) in enumerate(config["dynamics"].get("pairs") or []):
        if dataset not in datasets:
            raise ConfigError(f"config key 'dynamics.pairs.{i}': dataset {dataset!r} is not a dataset of "
                              f"the pipeline; allowed: {datasets}")
        if model not in models:
            raise ConfigError(f"config key 'dynamics.pairs.{i}': model {model!r} is not a model of the "
                              f"pipeline; allowed: {models}")


def _check_corruptions(section: Mapping) -> None:
    """Two degrees naming one run folder would be one run analysed twice (the grid's rule,
    :func:`pipeline.core.config.format_corruption`)."""
    seen: dict[str, float] = {}
    for value in section.get("corruptions") or []:
        name = format_corruption(value)
        if name in seen:
            raise ConfigError(
                f"config key 'dynamics.corruptions': {seen[name]!r} and {value!r} both name the run folder "
                f"c{name} (degrees are written with 6 significant digits); remove one of them")
        if float(name) != float(value):
            raise ConfigError(f"config key 'dynamics.corruptions': {value!r} would run as {name} (run "
                              f"folders hold degrees with 6 significant digits); write it as {name}")
        seen[name] = value


def _check_ablation_corruptions(config: dict) -> None:
    """``ablations.corruptions`` must be analysed runs (an ablation branches from one)."""
    section = config["dynamics"]
    wanted = section["ablations"].get("corruptions")
    if not section["ablations"]["enabled"] or wanted is None:
        return
    analysed = [float(c) for c in (section.get("corruptions") or config["corruptions"])]
    missing = [c for c in wanted if not any(abs(float(c) - a) < 1e-12 for a in analysed)]
    if missing:
        raise ConfigError(f"config key 'dynamics.ablations.corruptions': {missing} are not analysed "
                          f"corruptions (the ablations branch from those runs: {analysed})")


def _check_splits(section: Mapping) -> None:
    control = section["control"]
    outside = [s for s in control["splits"] if s not in section["splits"]]
    if control["enabled"] and outside:
        raise ConfigError(
            f"config key 'dynamics.control.splits': {outside} are not in dynamics.splits "
            f"{section['splits']}, so the control would have no rows there; add them to dynamics.splits "
            "or remove them from dynamics.control.splits")


# ----------------------------------------------------------------------------- epochs

def _saved_epochs(config: dict, model: str) -> list[int]:
    """Epochs a standard run of ``model`` saves when it trains to ``train.max_epochs``: its schedule
    and that last epoch. (A run that stops early saves fewer: those are skipped and logged at run
    time; an epoch off this list is saved only if training happens to stop there.)"""
    from pipeline.core.schedule import schedule_for

    return sorted(set(schedule_for(config, model)) | {int(config["train"]["max_epochs"])})


def _schedule_text(config: dict, model: str, saved: list[int]) -> str:
    shown = saved if len(saved) <= 16 else [*saved[:8], "...", *saved[-4:]]
    return (f"the runs of model {model!r} save epochs {shown} (train.checkpoints, up to train.max_epochs "
            f"= {config['train']['max_epochs']})")


def _check_epochs(config: dict) -> None:
    section = config["dynamics"]
    max_epochs = int(config["train"]["max_epochs"])
    for model in analysed_models(config):
        saved = _saved_epochs(config, model)
        for key in ("deep_epochs", "shallow_epochs"):
            spec = section[key]
            # a list with some saved epochs is fine (the others are skipped and logged per run, as
            # when a shorter max_epochs is given on the command line); one with none is no composite
            if isinstance(spec, list) and "final" not in spec and not set(map(int, spec)) & set(saved):
                raise ConfigError(
                    f"config key 'dynamics.{key}': none of the epochs {sorted(map(int, spec))} is ever "
                    f"saved, so there would be no composite: {_schedule_text(config, model, saved)}; "
                    "list saved epochs, final or all, or add them to the schedule "
                    "(train.checkpoints.windows)")
        for i, window in enumerate(section.get("windows") or []):
            t1, t2 = window
            if t2 != "final" and int(t2) not in saved:
                raise ConfigError(
                    f"config key 'dynamics.windows.{i}': {list(window)} has its deep part at epoch {t2}, "
                    f"which is never saved: {_schedule_text(config, model, saved)}; end the window at a "
                    "saved epoch or final")
            if t1 != "final" and int(t1) > max_epochs:
                raise ConfigError(
                    f"config key 'dynamics.windows.{i}': {list(window)} starts at epoch {t1}, after "
                    f"train.max_epochs = {max_epochs}; every epoch of a window must be one the runs "
                    "can reach")
            if t1 != "final" and t2 != "final" and not section["allow_sparse"]:
                lo, hi = sorted((int(t1), int(t2)))
                gaps = [e for e in range(lo, hi + 1) if e not in saved]
                if gaps:
                    raise ConfigError(
                        f"config key 'dynamics.windows.{i}': {list(window)} sums over every epoch from "
                        f"{lo} to {hi}, but epochs {gaps[:8]}{' ...' if len(gaps) > 8 else ''} are not "
                        f"saved ({_schedule_text(config, model, saved)}); add the window to "
                        "train.checkpoints.windows, or set dynamics.allow_sparse: true")
        sgd = section["sgd_noise"]
        sgd_epochs = sgd["epoch"] if isinstance(sgd["epoch"], list) else [sgd["epoch"]]
        unsaved = [e for e in sgd_epochs if e != "final" and int(e) not in saved]
        if sgd["enabled"] and unsaved:
            raise ConfigError(
                f"config key 'dynamics.sgd_noise.epoch': {unsaved} never saved: "
                f"{_schedule_text(config, model, saved)}; choose saved epochs or final")
        abl = section["ablations"]
        reinit_epoch = abl["reinit"]["epoch"]
        if abl["enabled"] and "reinit" in abl["kinds"] and reinit_epoch != "final" \
                and int(reinit_epoch) not in saved:
            raise ConfigError(
                f"config key 'dynamics.ablations.reinit.epoch': the reinit ablation branches from the "
                f"standard run's checkpoint at epoch {reinit_epoch}, which is never saved: "
                f"{_schedule_text(config, model, saved)}; choose a saved epoch or final")
        if abl["enabled"] and {"freeze", "restart"} & set(abl["kinds"]) and int(abl["epoch"]) not in saved:
            raise ConfigError(
                f"config key 'dynamics.ablations.epoch': the ablations branch from the standard run's "
                f"checkpoint at epoch {abl['epoch']}, which is never saved: "
                f"{_schedule_text(config, model, saved)}; choose a saved epoch")


# ----------------------------------------------------------------------------- depths

def _boundaries(model: str) -> list[str]:
    """Every split boundary of ``model`` (names do not depend on the input size)."""
    from pipeline.core.models import MODELS

    return list(MODELS[model].build(3, 32, 10).split_boundaries)


def _check_depths(config: dict) -> None:
    section = config["dynamics"]
    models = _enum("models")
    known: dict[str, list[str]] = {}

    def boundaries(model: str) -> list[str]:
        if model not in known:
            known[model] = _boundaries(model)
        return known[model]

    for key, spec in (("dynamics.depths", section.get("depths")),
                      ("dynamics.sgd_noise.depths", section["sgd_noise"].get("depths")),
                      ("dynamics.ablations.depths", section["ablations"].get("depths")),
                      ("dynamics.ablations.reinit.depths", section["ablations"]["reinit"].get("depths"))):
        for model, names in (spec or {}).items():
            if model not in models:
                raise ConfigError(f"config key '{key}': {model!r} is not a model (allowed: {models}); "
                                  f"the models analysed are {analysed_models(config)}")
            unknown = [d for d in names if d not in boundaries(model)]
            if unknown:
                raise ConfigError(f"config key '{key}.{model}': {unknown} are not split boundaries of model "
                                  f"{model!r}; its boundaries are {boundaries(model)}")
    figure_depth = section.get("figure_depth")
    if figure_depth is not None:
        from pipeline.dynamics.stage import run_depths

        for model in analysed_models(config):
            depths = run_depths(section, model)
            if figure_depth not in depths:
                raise ConfigError(
                    f"config key 'dynamics.figure_depth': {figure_depth!r} is not a depth analysed for "
                    f"model {model!r} (its depths: {depths}, dynamics.depths); name one of them, or use "
                    "null for each model's first depth")
