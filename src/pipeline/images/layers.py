"""Which layers of an image run are stored, probed, or extracted and probed in one job
(``storage.fused``); torch-free until a config names the model registry's own layers.
"""

from __future__ import annotations

from pipeline.core.config import ConfigError, pairs


def _layer_spec(spec, model: str) -> list[str] | None:
    """``activations.layers``-style spec for ``model``: None = all probe layers (no torch for a list)."""
    if spec is None:
        return None
    if isinstance(spec, list):
        return list(spec)
    if isinstance(spec, dict):
        chosen = spec.get(model)
        return None if chosen is None else list(chosen)
    from pipeline.core.activations import persisted_layers  # "paper": the model registry (torch)

    return persisted_layers(spec, model)


def probed_layers(config: dict, model: str) -> list[str]:
    """The probe layers of ``model`` that ``activations.layers`` selects, in the model's order
    (stored on disk or, with ``storage.fused``, probed in memory)."""
    from pipeline.core.models import MODELS

    every = list(MODELS[model].build.probe_layers)
    chosen = _layer_spec(config["activations"].get("layers"), model)
    return every if chosen is None else [layer for layer in every if layer in chosen]


def fused_enabled(config: dict) -> bool:
    """Whether ``storage.fused`` names any layer (``false``/``[]``/``{}`` = off)."""
    spec = config.get("storage", {}).get("fused", False)
    return bool(spec)


def fused_layers(config: dict, model: str) -> list[str]:
    """Layers of ``model`` extracted and probed in one job per checkpoint, without an activation
    file (``storage.fused``: ``true`` = every probed layer, a list = those layers of every model,
    a mapping = per model; a model the mapping does not name has none)."""
    spec = config.get("storage", {}).get("fused", False)
    if not spec:
        return []
    probed = probed_layers(config, model)
    if spec is True:
        return probed
    chosen = (spec.get(model) or []) if isinstance(spec, dict) else list(spec)
    return [layer for layer in probed if layer in chosen]


def stored_layers(config: dict, model: str) -> list[str]:
    """Layers of ``model`` written to the activation files (today's path): the probed ones that
    are not fused."""
    fused = set(fused_layers(config, model))
    return [layer for layer in probed_layers(config, model) if layer not in fused]


def probe_layer_split(config: dict, model: str) -> tuple[list[str], list[str]]:
    """(staged, fused) probe layers of ``model``: ``probes.layers`` applied to the stored and to
    the fused layers. The staged ones go through extract + probe_checkpoint, the fused ones
    through probe_fused; a checkpoint has a job of each kind whose list is not empty."""
    wanted = config["probes"].get("layers")

    def keep(layers):
        return [layer for layer in layers if wanted is None or layer in wanted]

    return keep(stored_layers(config, model)), keep(fused_layers(config, model))


def check_fused(config: dict) -> None:
    """``storage.fused`` against the rest of the config; :class:`~pipeline.core.config.ConfigError`
    naming the key and what to do. Checked by the workflow and the plan before anything runs.

    * names must be probe layers selected by ``activations.layers`` for the models they apply to;
    * ``transfer.relabel_retrain`` reads the final checkpoint's activation file: its candidate
      layers (``transfer.relabel_retrain.layers``, else every probed layer) must all be stored,
      not fused, for each model of the grid (else relabelling would silently consider fewer layers,
      or find no file at all).
    ``storage.persist`` and ``storage.keep_activations`` apply to the stored layers only; fused
    layers are never written, so every probe setting works on them (even with ``persist: moments``).
    """
    spec = config.get("storage", {}).get("fused", False)
    if not spec:
        return

    models = sorted({m for _, m in pairs(config)})
    if isinstance(spec, list):
        for model in models:
            missing = [layer for layer in spec if layer not in probed_layers(config, model)]
            if missing:
                raise ConfigError(
                    f"config key 'storage.fused': {missing} are not probed layers of model {model!r} "
                    f"(its layers selected by activations.layers: {probed_layers(config, model)}); a "
                    "list applies to every model of the grid: use true, or a mapping model -> layers")
    elif isinstance(spec, dict):
        from pipeline.core.config import known_names

        every_model = known_names(config, "models")
        for model, names in spec.items():
            if model not in every_model:
                # a misspelt model would silently leave the model it meant without fused layers
                raise ConfigError(f"config key 'storage.fused': {model!r} is not a model (allowed: "
                                  f"{every_model}); the grid's models are {models}")
            if model not in models:
                continue
            missing = [layer for layer in names or [] if layer not in probed_layers(config, model)]
            if missing:
                raise ConfigError(
                    f"config key 'storage.fused.{model}': {missing} are not probed layers of model "
                    f"{model!r} (selected by activations.layers: {probed_layers(config, model)})")
    relabel = config.get("transfer", {}).get("relabel_retrain", {})
    if relabel.get("enabled"):
        for model in models:
            candidates = [layer for layer in probed_layers(config, model)
                          if relabel.get("layers") is None or layer in relabel["layers"]]
            fused = [layer for layer in candidates if layer in fused_layers(config, model)]
            if fused:
                raise ConfigError(
                    f"config key 'storage.fused': transfer.relabel_retrain reads the final checkpoint's "
                    f"activation file, which is not written for the fused layers {fused} of model "
                    f"{model!r}; set transfer.relabel_retrain.layers to stored layers "
                    f"({stored_layers(config, model) or 'none left'}), leave those layers out of "
                    "storage.fused, or disable transfer.relabel_retrain")
