"""The whole configuration check: the schema (:mod:`pipeline.core.config`), then what a schema cannot
express, across sections and families.

What is checked, before any job runs (the schema's descriptions say the same per key):

* every key and value against the schema (:func:`pipeline.core.config.apply_schema`);
* ``pairs`` name datasets and models of the grid; corruption degrees give distinct run folders
  (:func:`pipeline.core.config.format_corruption`); probe settings construct
  (:func:`pipeline.probes.make_probe`) and are distinct; ``storage.persist`` suits the probes;
* ``activations.layers``, ``probes.layers`` and ``transfer.relabel_retrain.layers`` name probe
  layers of the grid's models (:data:`pipeline.core.models.MODELS`), persisted where they must be;
* ``storage.epochs`` can select a checkpoint (:func:`pipeline.core.schedule.schedule_for`,
  :func:`pipeline.core.schedule.probed_epochs`);
* the arithmetic section (:func:`pipeline.arithmetic.checks.check_config`);
* the dynamics section (:func:`pipeline.dynamics.checks.check_config`: pairs, run folders, control
  splits, epochs the runs save, depth names);
* ``train.device``/``probes.device`` ``cuda`` need a GPU here (:func:`check_devices`).

Modules with torch are imported only when the config names layers, depths, epochs or cuda.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    apply_schema,
    deep_merge,
    format_corruption,
    pairs,
    read_config_file,
)


def validate_config(config: dict | None, *, devices: bool = True) -> dict:
    """Validate ``config`` against the schema and every family's checks; return a copy with defaults.

    ``devices``: also check that the devices it names exist here (:func:`check_devices`); false
    where the config is only planned for other machines (``python -m pipeline plan``).
    Raises :class:`ConfigError` naming the first offending key and the allowed keys or values.
    """
    config = apply_schema(config)
    _check_semantics(config)
    if devices:
        check_devices(config)
    return config


#: set to "1" in the environment of the workflow's jobs (workflow/rules/common.smk, shell.prefix)
#: once the Snakefile has validated the whole config: a job's command line (pipeline.__main__) then
#: checks it with :func:`check_job_config`
CHECKED_BY_WORKFLOW = "PIPELINE_CONFIG_VALIDATED"


def check_job_config(config: dict) -> dict:
    """What a job of the workflow checks of its config (the Snakefile validated the whole of it):
    the schema, not the cross-section checks again (their imports, scikit-learn for the probe
    settings, cost 1-2 s in each of a run's ~120 jobs); but where it names the user's own datasets
    or models, everything, since :func:`validate_config` registers them into the registries the
    job reads."""
    from pipeline.core.config import custom_names

    checked = apply_schema(config)
    if custom_names(checked, "datasets") or custom_names(checked, "models"):
        return validate_config(config)
    return checked


def _jobs_run_elsewhere() -> bool:
    """Whether this process is Snakemake submitting the jobs to other machines (``--profile``,
    ``--executor``/``-e`` other than local, ``--slurm``): the GPU the config asks for is then on the
    nodes, not here. Each job checks again where it runs (the command line validates its config)."""
    import os
    import sys

    if "snakemake" not in sys.modules:
        return False
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name in ("--executor", "-e"):
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            if value not in ("local", "dryrun", "touch"):
                return True
        if name in ("--profile", "--slurm", "--workflow-profile"):
            return True
    return bool(os.environ.get("SNAKEMAKE_PROFILE"))


def check_devices(config: dict) -> None:
    """``train.device`` and ``probes.device`` ``cuda``/``cuda:<i>`` need a GPU on this machine
    (:func:`pipeline.core.device.resolve_device`, the one resolver; it names the key): refused here,
    before any job, instead of a traceback in the first training or probe job. Torch is imported
    only when a key names cuda; skipped while Snakemake submits the jobs elsewhere."""
    arithmetic = config.get("arithmetic", {})
    wanted = [(key, value) for key, value in (("train.device", config["train"]["device"]),
                                              ("probes.device", config["probes"]["device"]),
                                              ("arithmetic.device", arithmetic.get("enabled") and arithmetic["device"]))
              if isinstance(value, str) and value.startswith("cuda")]
    if not wanted or _jobs_run_elsewhere():
        return
    from pipeline.core.device import resolve_device

    for key, value in wanted:
        resolve_device(value, key=key)  # DeviceUnavailable is a ConfigError naming the key


def _check_semantics(config: dict) -> None:
    """Checks a JSON schema cannot express: pairs, distinct run folders, probe params, layer names,
    epochs. Each raises :class:`ConfigError` naming the key and what to do."""
    _check_custom(config)
    datasets, models = config["datasets"], config["models"]
    if config.get("pairs") is not None:
        for pair in config["pairs"]:
            dataset, model = pair
            if dataset not in datasets:
                raise ConfigError(f"config key 'pairs': dataset {dataset!r} is not in 'datasets' {datasets}")
            if model not in models:
                raise ConfigError(f"config key 'pairs': model {model!r} is not in 'models' {models}")
    _check_corruptions(config)
    # Probe settings must construct: unknown probe parameters are caught here, before any job runs.
    _check_probe_entries(config["probes"]["settings"], "probes.settings", "probe setting")
    persist = config["storage"]["persist"]
    if persist != "activations":
        from pipeline.probes import FROM_MOMENTS

        raw_only = sorted({e["name"] for e in config["probes"]["settings"]} - set(FROM_MOMENTS))
        if raw_only:
            raise ConfigError(f"config key 'storage.persist': {persist!r} keeps per-class statistics "
                              f"instead of training activations, from which only {list(FROM_MOMENTS)} "
                              f"can be fitted; probes {raw_only} need the activations: remove them "
                              f"from probes.settings or set storage.persist: activations")
    _check_layers(config)
    _check_windows(config)
    _check_fused(config)
    _check_epochs(config)
    _check_arithmetic(config)
    from pipeline.dynamics.checks import check_config as check_dynamics  # torch only for depth names

    check_dynamics(config)
    _check_labels(config)

def _check_labels(config: dict) -> None:
    """``labels`` (issue 17): its pairs are pairs of the grid and its corruption degrees degrees of
    the grid (the detection reads those runs' activation files); each layer it reads is written to
    the activation files of each of its models (a probe layer, persisted, not fused); each detector
    constructs, none twice; the repaired degrees are detected ones."""
    section = config["labels"]
    if not section["enabled"]:
        return
    if not section["pairs"]:
        raise ConfigError("config key 'labels.pairs' is empty while labels.enabled: name the (dataset, "
                          f"model) pairs whose labels are judged, e.g. {[list(p) for p in pairs(config)][:1]}")
    grid = pairs(config)
    for i, pair in enumerate(section["pairs"]):
        if tuple(pair) not in grid:
            raise ConfigError(f"config key 'labels.pairs[{i}]': {list(pair)} is not a pair of the grid "
                              f"{[list(p) for p in grid]}; add it to datasets/models (or pairs), or set "
                              "labels.pairs for this grid (Snakemake merges config/config.yaml, whose "
                              "labels section judges the digits MLP, under every --configfile), or "
                              "labels.enabled: false")
    # labels.corruptions chooses among the grid's degrees (a `--config corruptions=[...]` narrowing
    # the grid narrows it too); choosing none of them would judge nothing
    degrees = [format_corruption(c) for c in config["corruptions"]]
    chosen = section["corruptions"]
    if chosen is not None and not {format_corruption(c) for c in chosen} & set(degrees):
        raise ConfigError(f"config key 'labels.corruptions': none of {chosen} is a degree of the grid "
                          f"(corruptions: {degrees}); choose among them, or null for all")
    from pipeline.images.layers import fused_layers, stored_layers  # the models' layers: torch

    for model in sorted({model for _, model in section["pairs"]}):
        stored, fused = stored_layers(config, model), fused_layers(config, model)
        for layer in section["layers"] or []:
            if layer in fused:
                raise ConfigError(f"config key 'labels.layers': {layer!r} of model {model!r} is fused "
                                  "(storage.fused: probed without an activation file), and detection reads "
                                  "the activation file; leave it out of storage.fused")
            if layer not in stored:
                raise ConfigError(f"config key 'labels.layers': {layer!r} is not a layer written to the "
                                  f"activation files of model {model!r}; choose from {stored}")
    _check_probe_entries(section["detectors"], "labels.detectors", "detector")


def _check_probe_entries(entries: list, where: str, what: str) -> None:
    """Each {name, params} entry of ``where`` constructs (pipeline.probes.make_probe), none twice:
    an unknown parameter or a bad value is caught here, before any job runs."""
    # local: probes import scikit-learn (and torch lazily)
    from pipeline.probes import make_probe, setting_id

    seen = set()
    for i, entry in enumerate(entries):
        try:
            make_probe(entry["name"], **entry.get("params", {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key '{where}[{i}]' ({entry['name']}): {exc}") from None
        key = (entry["name"], setting_id(entry["name"], entry.get("params", {})))
        if key in seen:
            raise ConfigError(f"config key '{where}[{i}]': duplicate {what} {key}")
        seen.add(key)


def _check_custom(config: dict) -> None:
    """``datasets`` and ``models`` name built-in ones or the user's own (``data.custom``,
    ``train.custom_models``), which are registered here into the one registries
    (:func:`pipeline.core.user_data.register_user_datasets`,
    :func:`pipeline.core.user_models.register_user_models`: every stage and the Snakefile validate
    their config, so every process sees them). A user's dataset is scanned (folders, labels,
    shapes) and a user's model built and run once on each paired dataset's image shape, so a bad
    file, layer name or architecture stops here, before any job."""
    from pipeline.core.config import builtin_names, custom_names, known_names

    for key, where in (("datasets", "data.custom"), ("models", "train.custom_models")):
        allowed = known_names(config, key)
        for i, name in enumerate(config[key]):
            if name not in allowed:
                raise ConfigError(f"config key '{key}.{i}' has value {name!r}; allowed values: {allowed} (the "
                                  f"built-in {key} {builtin_names(key)}, and your own in {where}: "
                                  f"{custom_names(config, key)})")
    augmentation = config["train"].get("augmentation")
    for name in augmentation if isinstance(augmentation, dict) else ():
        if name not in known_names(config, "datasets"):
            raise ConfigError(f"config key 'train.augmentation': {name!r} is not a dataset; allowed: "
                              f"{known_names(config, 'datasets')} (the built-in datasets and yours in "
                              f"data.custom)")
    if custom_names(config, "datasets"):
        from pipeline.core.datasets import DatasetCorruptError, DatasetNotFoundError
        from pipeline.core.user_data import register_user_datasets

        try:
            register_user_datasets(config)
        except (ValueError, DatasetCorruptError, DatasetNotFoundError) as exc:
            raise ConfigError(f"config key 'data.custom': {exc}") from None
    if not custom_names(config, "models"):
        return
    from pipeline.core.datasets import DATASETS
    from pipeline.core.user_models import check_user_model, register_user_models

    try:
        register_user_models(config)
    except ValueError as exc:
        raise ConfigError(f"config key 'train.custom_models': {exc}") from None
    checked = set()
    for dataset, model in pairs(config):
        if model not in custom_names(config, "models") or dataset not in DATASETS:
            continue
        if config["train"]["dropout"]:
            raise ConfigError(f"config key 'train.dropout': applies to the built-in models only, not to "
                              f"your model {model!r} (train.custom_models); set it to false")
        spec = DATASETS[dataset]
        shape = (spec.channels, spec.image_size, spec.num_classes)
        if (model, shape) in checked:
            continue
        try:
            check_user_model(model, in_channels=shape[0], image_size=shape[1], num_classes=shape[2])
        except ValueError as exc:
            raise ConfigError(f"config key 'train.custom_models.{model}' (with dataset {dataset!r}): "
                              f"{exc}") from None
        checked.add((model, shape))


def _check_arithmetic(config: dict) -> None:
    """The arithmetic section (issue 10; :func:`pipeline.arithmetic.checks.check_config`)."""
    from pipeline.arithmetic.checks import check_config

    check_config(config)


def _grid_models(config: dict) -> list[str]:
    return list(dict.fromkeys(model for _, model in pairs(config)))


def _check_corruptions(config: dict) -> None:
    """Two degrees that format to the same run folder (``c0.8`` for 0.8 and 0.8000001) would be one
    run: the second would overwrite the first's results, or aggregation would fail at the end."""
    seen: dict[str, Any] = {}
    for value in config["corruptions"]:
        name = format_corruption(value)
        if name in seen:
            raise ConfigError(
                f"config key 'corruptions': {seen[name]!r} and {value!r} both name the run folder "
                f"c{name} (degrees are written with 6 significant digits); remove one of them or "
                "make them differ within 6 significant digits")
        if float(name) != float(value):
            # the run is named (and its labels drawn, its rows keyed) by the folder's value
            raise ConfigError(
                f"config key 'corruptions': {value!r} would run as {name} (run folders and tables hold "
                f"degrees with 6 significant digits); write it as {name}")
        seen[name] = value


def _check_fused(config: dict) -> None:
    """``storage.fused`` against layers and the transfer experiments (:func:`pipeline.workflow.check_fused`)."""
    if config.get("storage", {}).get("fused"):
        from pipeline.images.layers import check_fused

        check_fused(config)


def _check_windows(config: dict) -> None:
    """``train.checkpoints.windows``: pairs ``[t_a, t_b]`` with ``0 <= t_a <= t_b``."""
    from pipeline.core.schedule import checkpoint_windows

    try:
        checkpoint_windows(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_layers(config: dict) -> None:
    """``activations.layers``, ``probes.layers`` and ``transfer.relabel_retrain.layers`` name probe
    layers of the models (``MODELS[model].build.probe_layers``).

    * ``activations.layers``: a list applies to every model of the grid, so each name must be a
      probe layer of each of them; a mapping's lists must name probe layers of the model they are
      given for; ``paper`` is always valid. An empty list would persist nothing.
    * ``probes.layers`` applies to every model of the grid: each name must be persisted for each
      model (probe layers not excluded by ``activations.layers``).
    * ``transfer.relabel_retrain.layers`` (when enabled) filters the persisted layers: at least one
      name must be persisted for each model of the grid.
    """
    spec = config["activations"]["layers"]
    probe_layers = config["probes"]["layers"]
    relabel = config["transfer"]["relabel_retrain"]
    relabel_layers = relabel["layers"] if relabel["enabled"] else None
    if spec is None and probe_layers is None and relabel_layers is None:
        return  # nothing named: no need to import the models (torch)
    from pipeline.core.models import MODELS

    def known(model: str) -> list[str]:
        return list(MODELS[model].build.probe_layers)

    grid = _grid_models(config)
    if isinstance(spec, list):
        if not spec:
            raise ConfigError("config key 'activations.layers' is an empty list, which persists no "
                              "layer; list layer names, or use null for all probe layers")
        for model in grid:
            unknown = [layer for layer in spec if layer not in known(model)]
            if unknown:
                raise ConfigError(
                    f"config key 'activations.layers': {unknown} are not probe layers of model "
                    f"{model!r} (its probe layers: {known(model)}); a list applies to every model "
                    "of the grid; use a mapping {model: [layers]} to choose per model")
    elif isinstance(spec, dict):
        for model, names in spec.items():
            if names is not None and not names:
                raise ConfigError(f"config key 'activations.layers.{model}' is an empty list, which "
                                  "persists no layer; list layer names, or drop the key for all layers")
            unknown = [layer for layer in names or [] if layer not in known(model)]
            if unknown:
                raise ConfigError(f"config key 'activations.layers.{model}': {unknown} are not probe "
                                  f"layers of model {model!r}; its probe layers are {known(model)}")

    def persisted(model: str) -> list[str]:
        if spec is None:
            return known(model)
        from pipeline.core.activations import persisted_layers

        chosen = persisted_layers(spec, model)
        return known(model) if chosen is None else chosen

    for model in grid if probe_layers is not None else []:
        missing = [layer for layer in probe_layers if layer not in persisted(model)]
        if missing:
            why = ("are not probe layers of" if all(layer not in known(model) for layer in missing)
                   else "are not persisted (activations.layers) for")
            raise ConfigError(
                f"config key 'probes.layers': {missing} {why} model {model!r}; its persisted layers "
                f"are {persisted(model)}; probes.layers applies to every model of the grid and must "
                "name layers persisted for each (or be null for all persisted layers)")
    for model in grid if relabel_layers is not None else []:
        if not any(layer in persisted(model) for layer in relabel_layers):
            raise ConfigError(
                f"config key 'transfer.relabel_retrain.layers': none of {relabel_layers} is persisted "
                f"for model {model!r} (its persisted layers: {persisted(model)}); name at least one of "
                "them, or use null for all persisted layers")


def _check_epochs(config: dict) -> None:
    """``storage.epochs`` must be able to select a checkpoint of every run.

    A standard run saves the epochs of its schedule (:func:`pipeline.core.schedule.schedule_for`) up to
    the epoch it stops at, and that final epoch, which may be any epoch up to ``train.max_epochs``
    when the target accuracy is reached early; ``storage.every`` always keeps the first and the
    last. So a listed epoch <= ``train.max_epochs`` may be selected (off the schedule only if the
    run stops there), and a list is rejected only when every epoch in it exceeds
    ``train.max_epochs``. An intervened run (``transfer.intervention``) has no stop criterion: it
    saves exactly :func:`pipeline.images.variants.intervention_schedule`, and
    :func:`pipeline.core.schedule.probed_epochs` of that must not be empty.
    """
    epochs = config["storage"]["epochs"]
    if epochs is None:
        return
    max_epochs = int(config["train"]["max_epochs"])
    if not any(int(e) <= max_epochs for e in epochs):
        raise ConfigError(
            f"config key 'storage.epochs': none of {sorted(epochs)} can be a saved checkpoint: runs "
            f"train at most train.max_epochs = {max_epochs} epochs; list epochs between 0 and "
            f"{max_epochs} (0 is always saved), or use null for every saved checkpoint")
    if config["transfer"]["intervention"]["enabled"]:
        from pipeline.core.schedule import probed_epochs
        from pipeline.images.variants import intervention_schedule

        for model in _grid_models(config):
            saved = intervention_schedule(config, model)
            if not probed_epochs(saved, config):
                raise ConfigError(
                    f"config key 'storage.epochs': none of {sorted(epochs)} is probed in the intervened "
                    f"runs of model {model!r}, which save epochs {saved} (transfer.intervention, "
                    "storage.every); add one of them, or use null for every saved checkpoint")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Read a YAML config (default: ``config/config.yaml``), merge ``overrides``, validate."""
    config = read_config_file(path if path is not None else DEFAULT_CONFIG_PATH)
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config)
