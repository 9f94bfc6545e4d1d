"""Configuration: load, validate against the one JSON schema, fill defaults, enumerate runs.

The schema lives in ``workflow/schemas/config.schema.yaml`` and is the single source of truth for
keys, allowed values and defaults; the Snakefile validates with it before any job is scheduled and
the package's command line does the same. A wrong key or value raises :class:`ConfigError` with one
message naming the key and what is allowed.

What is checked, before any job runs (the schema's descriptions say the same per key):

* every key and value against the schema; a string where the schema expects a number, integer,
  boolean, null, list or mapping is read as YAML first (``snakemake --config`` passes nested
  values such as ``corruptions=[0.5]`` or ``train={max_epochs: 3}`` as strings), and kept only
  if the result has the expected type;
* every number is finite (no ``.nan``/``.inf``);
* ``pairs`` name datasets and models of the grid; corruption degrees give distinct run folders
  (:func:`format_corruption`); probe settings construct (:func:`pipeline.probes.make_probe`) and
  are distinct; ``storage.persist`` suits the probes;
* ``activations.layers``, ``probes.layers`` and ``transfer.relabel_retrain.layers`` name probe
  layers of the grid's models (:data:`pipeline.models.MODELS`), persisted where they must be;
* ``storage.epochs`` can select a checkpoint (:func:`pipeline.workflow.schedule_for`,
  :func:`pipeline.workflow.probed_epochs`).

Modules with torch are imported only when the config names layers or epochs.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"

#: The variant of a plain training run; other variants (e.g. interventions) name themselves.
BASE_VARIANT = "standard"
#: The one spelling of a run's folder (under ``results/``); the workflow's wildcards are these keys.
RUN_PATH = "runs/{dataset}/{model}/c{corruption}/s{seed}/{variant}"


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and what is allowed."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _fill_defaults(instance: Any, schema: dict) -> Any:
    """Recursively insert schema defaults for missing object properties."""
    if not isinstance(instance, dict) or schema.get("type") not in ("object", None):
        return instance
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            if isinstance(instance[key], dict):
                _fill_defaults(instance[key], sub)
            elif isinstance(instance[key], list) and isinstance(sub.get("items"), dict):
                for item in instance[key]:
                    _fill_defaults(item, sub["items"])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)
    return instance


def _format_error(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return (f"unknown config key(s) {unknown} in '{where}'; allowed keys: {allowed}")
    if error.validator == "enum":
        return (f"config key '{where}' has value {error.instance!r}; allowed values: "
                f"{error.validator_value}")
    if error.validator == "propertyNames":
        return f"config key '{where}': {error.message}"
    return f"config key '{where}': {error.message}"


def _coerce_yaml_booleans(config: dict) -> None:
    # YAML reads a bare `true` as a boolean; in `probes.fit_labels` the user means the label source.
    probes = config.get("probes")
    if isinstance(probes, dict) and isinstance(probes.get("fit_labels"), list):
        probes["fit_labels"] = ["true" if v is True else v for v in probes["fit_labels"]]


# ----------------------------------------------------------------------------- string coercion

_JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _branches(schema: dict) -> list[dict]:
    """``schema`` and the alternatives of its ``anyOf``/``oneOf``."""
    alternatives = [b for key in ("anyOf", "oneOf") for b in schema.get(key, []) if isinstance(b, dict)]
    return [schema, *alternatives]


def _types(schema: dict) -> list[str]:
    t = schema.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _allows(schema: dict, json_type: str) -> bool:
    return "type" not in schema or json_type in _types(schema)


def _coerce_scalar(value: str, schema: dict) -> Any:
    """``value`` read as YAML when ``schema`` wants another type and the YAML has that type."""
    branches = _branches(schema)
    types = {t for b in branches for t in _types(b)}
    literals = [v for b in branches for v in ([b["const"]] if "const" in b else []) + list(b.get("enum", []))]
    if "string" in types or value in literals:
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(parsed, str) and (not types or "number" in types):
        try:  # YAML 1.1 reads 1e-3 as a string; it is the number the user meant
            parsed = float(value)
        except ValueError:
            pass
    if not types and not literals:
        # free-form (probe params): numbers, and the booleans spelt true/false
        if _JSON_TYPES["number"](parsed) or (isinstance(parsed, bool) and value.lower() in ("true", "false")):
            return parsed
        return value
    if any(_JSON_TYPES[t](parsed) for t in types if t in _JSON_TYPES) or any(
            parsed == v and type(parsed) is type(v) for v in literals):
        return parsed
    return value


def _property_schema(schema: dict, key: str) -> dict | None:
    for b in _branches(schema):
        if not _allows(b, "object"):
            continue
        if key in b.get("properties", {}):
            return b["properties"][key]
        if isinstance(b.get("additionalProperties"), dict):
            return b["additionalProperties"]
        if b.get("type") == "object" and "properties" not in b and "additionalProperties" not in b:
            return {}  # a free-form mapping (probe params)
    return None


def coerce_strings(value: Any, schema: dict | None) -> Any:
    """Read strings as YAML where ``schema`` expects a number, integer, boolean, null, list or mapping.

    ``snakemake --config key=value`` parses a nested value with YAML's base loader, so every scalar
    in it is a string (``corruptions=[0.5]`` gives ``['0.5']``). Such a string becomes the value
    ``yaml.safe_load`` reads from it, but only if that has a type the schema allows there (or, in a
    free-form mapping such as probe ``params``, if it is a number or true/false); anything else is
    left for the schema to reject. Works in place on mappings and lists; returns the value.
    """
    if not isinstance(schema, dict):
        return value
    if isinstance(value, str):
        value = _coerce_scalar(value, schema)
    if isinstance(value, dict):
        for key in list(value):
            value[key] = coerce_strings(value[key], _property_schema(schema, key))
    elif isinstance(value, list):
        items = next((b["items"] for b in _branches(schema)
                      if _allows(b, "array") and isinstance(b.get("items"), dict)), None)
        if items is not None:
            value[:] = [coerce_strings(v, items) for v in value]
    return value


def _check_finite(value: Any, where: str = "") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{where or '<top level>'}' is {value!r}; every number in the "
                          "config must be finite (no .nan or .inf)")
    if isinstance(value, dict):
        for key, sub in value.items():
            _check_finite(sub, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _check_finite(sub, f"{where}.{i}" if where else str(i))


# ----------------------------------------------------------------------------- validation

def validate_config(config: dict | None) -> dict:
    """Validate ``config`` against the schema and the registries; return a copy with defaults.

    Raises :class:`ConfigError` naming the first offending key and the allowed keys or values.
    """
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(config).__name__}")
    config = copy.deepcopy(dict(config or {}))
    _coerce_yaml_booleans(config)
    schema = load_schema()
    coerce_strings(config, schema)
    _check_finite(config)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(_format_error(errors[0]))
    config = _fill_defaults(config, schema)
    _check_semantics(config)
    return config


def _check_semantics(config: dict) -> None:
    """Checks a JSON schema cannot express: pairs, distinct run folders, probe params, layer names,
    epochs. Each raises :class:`ConfigError` naming the key and what to do."""
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
    # local: probes import scikit-learn (and torch lazily)
    from pipeline.probes import make_probe, setting_id

    seen = set()
    for i, entry in enumerate(config["probes"]["settings"]):
        try:
            make_probe(entry["name"], **entry.get("params", {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key 'probes.settings[{i}]' ({entry['name']}): {exc}") from None
        key = (entry["name"], setting_id(entry["name"], entry.get("params", {})))
        if key in seen:
            raise ConfigError(f"config key 'probes.settings[{i}]': duplicate probe setting {key}")
        seen.add(key)
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


def _check_arithmetic(config: dict) -> None:
    """The arithmetic grid (issue 10): odd P, one folder per cell (pipeline.arithmetic.grid)."""
    section = config.get("arithmetic", {})
    if not section.get("enabled"):
        return
    from pipeline.arithmetic.grid import check_cells

    problems = check_cells(section)
    if problems:
        raise ConfigError(f"config key 'arithmetic': {problems[0]}")


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
        from pipeline.workflow import check_fused

        check_fused(config)


def _check_windows(config: dict) -> None:
    """``train.checkpoints.windows``: pairs ``[t_a, t_b]`` with ``0 <= t_a <= t_b``."""
    from pipeline.workflow import checkpoint_windows

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
    from pipeline.models import MODELS

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
        from pipeline.activations import persisted_layers

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

    A standard run saves the epochs of its schedule (:func:`pipeline.workflow.schedule_for`) up to
    the epoch it stops at, and that final epoch, which may be any epoch up to ``train.max_epochs``
    when the target accuracy is reached early; ``storage.every`` always keeps the first and the
    last. So a listed epoch <= ``train.max_epochs`` may be selected (off the schedule only if the
    run stops there), and a list is rejected only when every epoch in it exceeds
    ``train.max_epochs``. An intervened run (``transfer.intervention``) has no stop criterion: it
    saves exactly :func:`pipeline.workflow.intervention_schedule`, and
    :func:`pipeline.workflow.probed_epochs` of that must not be empty.
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
        from pipeline.workflow import intervention_schedule, probed_epochs

        for model in _grid_models(config):
            saved = intervention_schedule(config, model)
            if not probed_epochs(saved, config):
                raise ConfigError(
                    f"config key 'storage.epochs': none of {sorted(epochs)} is probed in the intervened "
                    f"runs of model {model!r}, which save epochs {saved} (transfer.intervention, "
                    "storage.every); add one of them, or use null for every saved checkpoint")


# ----------------------------------------------------------------------------- files

def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def read_config_file(path: str | Path) -> dict:
    """The mapping in one YAML config file (not validated; empty file = ``{}``).

    A file that does not exist or cannot be read, is not valid YAML or holds no mapping raises
    :class:`ConfigError` naming the file (with the line of a YAML error) and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pass --configfile with the path of an "
                          "existing YAML file")
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({_yaml_problem(exc)}); fix that "
                          "line and rerun") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file; pass a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror or exc}); check its "
                          "permissions, or pass another file") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values (such as "
                          f"'models: [mlp]'), not a {type(config).__name__}")
    return config


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Read a YAML config (default: ``config/config.yaml``), merge ``overrides``, validate."""
    config = read_config_file(path if path is not None else DEFAULT_CONFIG_PATH)
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config)


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def format_corruption(corruption: float) -> str:
    """Corruption degree as it appears in paths and tables: 0.8 -> '0.8', 0 -> '0'."""
    return f"{float(corruption):g}"


@dataclass(frozen=True)
class Run:
    """One training run: the wildcards every artifact path is derived from."""

    dataset: str
    model: str
    corruption: float
    seed: int
    variant: str = BASE_VARIANT

    @property
    def corruption_str(self) -> str:
        return format_corruption(self.corruption)

    @property
    def path(self) -> str:
        return RUN_PATH.format(dataset=self.dataset, model=self.model, corruption=self.corruption_str,
                               seed=self.seed, variant=self.variant)

    def keys(self) -> dict:
        return {"dataset": self.dataset, "model": self.model, "corruption": float(self.corruption),
                "seed": int(self.seed), "variant": self.variant}

    @classmethod
    def from_wildcards(cls, wildcards: Any) -> Run:
        get = (wildcards.get if isinstance(wildcards, dict) else lambda k: getattr(wildcards, k))
        return cls(dataset=get("dataset"), model=get("model"), corruption=float(get("corruption")),
                   seed=int(get("seed")), variant=get("variant"))


def pairs(config: dict) -> list[tuple[str, str]]:
    if config.get("pairs") is not None:
        return [tuple(p) for p in config["pairs"]]
    return [(d, m) for d in config["datasets"] for m in config["models"]]


def iter_runs(config: dict, variant: str = BASE_VARIANT) -> Iterator[Run]:
    for dataset, model in pairs(config):
        for corruption in config["corruptions"]:
            for seed in config["seeds"]:
                yield Run(dataset, model, float(corruption), int(seed), variant)


def provenance(config: dict, sections: Any = None, **extra: Any) -> dict[str, str]:
    """Flat string metadata stored with every artifact (HDF5 attributes, Parquet metadata).

    ``sections`` limits the recorded config to the sections that produced the artifact (the ones a
    rule passes), so defaults of unrelated sections are not mistaken for what was used.
    """
    from pipeline import __version__

    if sections is not None:
        config = {k: config[k] for k in sections if k in config}
    meta = {"pipeline_version": __version__, "config": json.dumps(config, sort_keys=True, default=str)}
    meta.update({k: json.dumps(v, default=str) if not isinstance(v, str) else v for k, v in extra.items()})
    return meta
