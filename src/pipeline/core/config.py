"""Configuration: the one JSON schema, its defaults, and the run grid.

The schema lives in ``workflow/schemas/config.schema.yaml`` and is the single source of truth for
keys, allowed values and defaults: no family keeps a defaults dict of its own. :func:`apply_schema`
checks a config against it (a string from ``snakemake --config`` where the schema expects a number,
integer, boolean, null, list or mapping is read as YAML first, and kept only if the result has the
expected type; every number must be finite) and fills in the defaults; a wrong key or value raises
:class:`ConfigError` with one message naming the key and what is allowed. The checks a schema
cannot express are in :mod:`pipeline.config`, which the command line and the Snakefile run once.

A run is (dataset, model, corruption, seed, variant): :class:`Run`, :data:`RUN_PATH`,
:func:`iter_runs`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
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
    # a string branch that allows only its enum/const words (``final`` in integer|"final") does not
    # make every string valid: "4" there is the integer the user meant
    free_string = any("string" in _types(b) and "enum" not in b and "const" not in b for b in branches)
    if free_string or value in literals:
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
    if isinstance(parsed, bool) and value.lower() not in ("true", "false"):
        # YAML 1.1 also reads yes/no/on/off/y/n as booleans; a boolean key takes true or false
        # only, so such a word is left for the schema to refuse rather than silently flipped
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


#: Where a user's own datasets and models are configured (pipeline.core.user_data, user_models).
_CUSTOM_KEYS = {"datasets": ("data", "custom"), "models": ("train", "custom_models")}


def builtin_names(key: str) -> list[str]:
    """The package's own datasets or models (``key``: ``"datasets"``/``"models"``), as the schema
    lists them (torch-free; tests/core/test_config.py keeps the list equal to the registry)."""
    return list(load_schema()["properties"][key]["items"]["anyOf"][0]["enum"])


def custom_names(config: dict, key: str) -> list[str]:
    """The names of the user's own datasets (``data.custom``) or models (``train.custom_models``)."""
    section, entry = _CUSTOM_KEYS[key]
    return list((config.get(section) or {}).get(entry) or {})


def known_names(config: dict, key: str) -> list[str]:
    """Every dataset or model name ``config`` may use: the built-in ones and its own."""
    return builtin_names(key) + [name for name in custom_names(config, key) if name not in builtin_names(key)]


def corruption_chosen(corruption: float, chosen: Iterable | None) -> bool:
    """Whether ``corruption`` is one of the degrees a section chose (``labels.corruptions``,
    ``transfer.intervention.corruptions``, ...; None: every degree of the grid)."""
    return chosen is None or any(abs(float(corruption) - float(c)) < 1e-12 for c in chosen)


def iter_runs(config: dict, variant: str = BASE_VARIANT) -> Iterator[Run]:
    for dataset, model in pairs(config):
        for corruption in config["corruptions"]:
            for seed in config["seeds"]:
                yield Run(dataset, model, float(corruption), int(seed), variant)


def apply_schema(config: dict | None) -> dict:
    """``config`` checked against the schema, with every default filled in (a copy).

    The schema half of validation: strings from ``--config`` read as YAML where the schema wants
    another type, every number finite, every key and value allowed. The checks a schema cannot
    express (names across sections, layer names, epochs) are the families'; the outer layer's
    :func:`pipeline.config.validate_config` runs both. Raises :class:`ConfigError` naming the first
    offending key and the allowed keys or values.
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
    return _fill_defaults(config, schema)
