"""Configuration: load, validate against the one JSON schema, fill defaults, enumerate runs.

The schema lives in ``workflow/schemas/config.schema.yaml`` and is the single source of truth for
keys, allowed values and defaults; the Snakefile validates with it before any job is scheduled and
the package's command line does the same. A wrong key or value raises :class:`ConfigError` with one
message naming the key and what is allowed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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


def validate_config(config: dict | None) -> dict:
    """Validate ``config`` against the schema and the registries; return a copy with defaults.

    Raises :class:`ConfigError` naming the first offending key and the allowed keys or values.
    """
    config = copy.deepcopy(config or {})
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(config).__name__}")
    _coerce_yaml_booleans(config)
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(_format_error(errors[0]))
    config = _fill_defaults(config, schema)
    _check_semantics(config)
    return config


def _check_semantics(config: dict) -> None:
    """Checks a JSON schema cannot express: pairs, probe params, layer names."""
    datasets, models = config["datasets"], config["models"]
    if config.get("pairs") is not None:
        for pair in config["pairs"]:
            dataset, model = pair
            if dataset not in datasets:
                raise ConfigError(f"config key 'pairs': dataset {dataset!r} is not in 'datasets' {datasets}")
            if model not in models:
                raise ConfigError(f"config key 'pairs': model {model!r} is not in 'models' {models}")
    # Probe settings must construct: unknown probe parameters are caught here, before any job runs.
    from pipeline.probes import make_probe, setting_id  # local: probes import torch lazily

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
        from pipeline.sufficient import FROM_MOMENTS

        raw_only = sorted({e["name"] for e in config["probes"]["settings"]} - set(FROM_MOMENTS))
        if raw_only:
            raise ConfigError(f"config key 'storage.persist': {persist!r} keeps per-class statistics "
                              f"instead of training activations, from which only {list(FROM_MOMENTS)} "
                              f"can be fitted; probes {raw_only} need the activations: remove them "
                              f"from probes.settings or set storage.persist: activations")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Read a YAML config (default: ``config/config.yaml``), merge ``overrides``, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pass --configfile with a valid path")
    with open(path) as fh:
        try:
            config = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
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
    def from_wildcards(cls, wildcards: Any) -> "Run":
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
