"""A user's own models (``train.custom_models``): any torchvision classifier by name, or an
``nn.Module`` from the user's code, probed at named modules with forward hooks.

Configured as ``train.custom_models: {<name>: {...}}`` (the ``train`` section reaches the train,
extract, relabel and dynamics stages) and registered into the one model registry
(:data:`pipeline.core.models.MODELS`) by :func:`register_user_models`, which
:func:`pipeline.config.validate_config` calls; a user model is then a run key like any other.

An entry has exactly one of

* ``torchvision: <architecture>``: ``torchvision.models.get_model(name, weights=None,
  num_classes=K)``, randomly initialised (nothing is downloaded); 1-channel images are repeated
  to the 3 channels torchvision's models expect;
* ``factory: "package.module:function"``: imported with :mod:`importlib` and called as
  ``function(in_channels=C, image_size=S, num_classes=K, **kwargs)``; it must return an
  ``nn.Module`` mapping ``(N, C, S, S)`` images to ``(N, K)`` logits;

and ``layers``, the probe layers as module paths (``layer3``, ``features.8``, ``blocks.2.mlp``:
names of ``model.named_modules()``), read from the module's output with a forward hook (cloned:
no later in-place operation changes it). ``classifier`` is the module path of the final
``nn.Linear`` (default: the last ``nn.Linear`` in ``named_modules`` order); weight editing assumes
its input is the last probe layer, flattened. Training defaults: ``optimizer``, ``lr``,
``momentum``, ``batch_size``, ``weight_decay``, ``normalization`` (the schema's defaults).

The wrapper :class:`UserModel` is a :class:`~pipeline.core.models.ProbedModel`, so extraction,
probes and editing work unchanged; state-dict keys carry the prefix ``net.``. Split forward passes
(feature dynamics' composite networks) are not available for user models
(``NotImplementedError``). ``train.dropout`` does not apply to them.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from pipeline.core.models import MODELS, ModelSpec, ProbedModel
from pipeline.core.user_data import NAME_PATTERN

__all__ = ["BUILTIN_MODELS", "UserModel", "check_user_model", "register_user_models", "user_model_entries"]

#: The models the package ships (a user model must not shadow one).
BUILTIN_MODELS: frozenset[str] = frozenset(MODELS)


def user_model_entries(config: Mapping) -> dict[str, dict]:
    """``train.custom_models`` of ``config``."""
    return dict((config.get("train") or {}).get("custom_models") or {})


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_net(name: str, entry: Mapping, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """The user's network, freshly initialised (seed the global RNG beforehand)."""
    where = f"train.custom_models.{name}"
    given = [key for key in ("torchvision", "factory") if entry.get(key)]
    if len(given) != 1:
        raise ValueError(f"{where}: give exactly one of 'torchvision' (an architecture name) and 'factory' "
                         f"('package.module:function'), not {given or 'neither'}")
    if given[0] == "torchvision":
        import torchvision

        arch = entry["torchvision"]
        names = _torchvision_names()
        if arch not in names:
            close = difflib.get_close_matches(arch, names, n=5)
            raise ValueError(f"{where}: {arch!r} is not a torchvision classification model"
                             f"{f' (did you mean {close}?)' if close else ''}; allowed: {names}")
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    path = entry["factory"]
    module_name, _, function_name = path.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"{where}: factory {path!r} must be 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{where}: cannot import module {module_name!r} of factory {path!r} ({exc}); is "
                         f"it on PYTHONPATH (or installed)?") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ValueError(f"{where}: module {module_name!r} has no function {function_name!r} (factory {path!r})")
    net = factory(in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                  **dict(entry.get("kwargs") or {}))
    if not isinstance(net, nn.Module):
        raise ValueError(f"{where}: factory {path!r} returned {type(net).__name__}, not a torch.nn.Module")
    return net


class UserModel(ProbedModel):
    """A user's network (``self.net``) read at its ``layers`` with forward hooks.

    Subclassed once per ``train.custom_models`` entry by :func:`register_user_models` (class
    attributes ``model_name``, ``entry``, ``probe_layers``); build it as
    ``cls(in_channels, image_size, num_classes)``.
    """

    model_name: ClassVar[str] = ""
    entry: ClassVar[Mapping] = {}

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        if dropout:
            raise ValueError(f"train.dropout applies to the built-in models only; user model "
                             f"{self.model_name!r} has whatever dropout its own code has")
        self.net = _build_net(self.model_name, self.entry, in_channels, image_size, num_classes)
        # torchvision's classifiers take RGB: a grey image is repeated to 3 channels
        self._repeat_channels = 3 if self.entry.get("torchvision") and in_channels == 1 else 0
        modules = dict(self.net.named_modules())
        wrong = [layer for layer in self.probe_layers if layer not in modules or layer == ""]
        if wrong:
            raise ValueError(f"train.custom_models.{self.model_name}.layers: {wrong} are not modules of the "
                             f"model; its module paths are {[n for n in modules if n]}")
        self._classifier_path = self.entry.get("classifier") or _last_linear(self.model_name, self.net)
        head = modules.get(self._classifier_path)
        if not isinstance(head, nn.Linear):
            raise ValueError(f"train.custom_models.{self.model_name}.classifier: {self._classifier_path!r} is "
                             f"{'not a module' if head is None else type(head).__name__} of the model, not an "
                             f"nn.Linear; its nn.Linear modules are "
                             f"{[n for n, m in modules.items() if isinstance(m, nn.Linear)]}")

    def _input(self, x: Tensor) -> Tensor:
        return x.expand(-1, self._repeat_channels, -1, -1) if self._repeat_channels else x

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self._input(x))

    def forward_layers(self, x: Tensor, layers: Iterable[str] | None = None
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        names = self.probe_layers if layers is None else tuple(layers)
        unknown = [name for name in names if name not in self.probe_layers]
        if unknown:
            raise ValueError(f"unknown probe layer(s) {unknown} for user model {self.model_name!r}; "
                             f"probe layers are {list(self.probe_layers)}")
        captured: dict[str, Tensor] = {}

        def hook(name: str):
            def read(module: nn.Module, inputs, output) -> None:
                if not isinstance(output, Tensor):
                    raise TypeError(f"user model {self.model_name!r}: layer {name!r} outputs "
                                    f"{type(output).__name__}, not a tensor; probe another module")
                captured[name] = output.clone()  # a later in-place op must not change it
            return read

        handles = [self.net.get_submodule(name).register_forward_hook(hook(name)) for name in names]
        try:
            logits = self.net(self._input(x))
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in names if name not in captured]
        if missing:
            raise RuntimeError(f"user model {self.model_name!r}: layers {missing} were not called in the "
                               f"forward pass; probe modules the forward pass uses")
        return logits, {name: captured[name] for name in names}

    def _forward_all(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.forward_layers(x)

    @property
    def classifier(self) -> nn.Linear:
        return self.net.get_submodule(self._classifier_path)

    def _split_stages(self):
        raise NotImplementedError(f"user model {self.model_name!r} has no split forward pass (feature "
                                  f"dynamics' composite networks need one of the built-in models)")


def _last_linear(name: str, net: nn.Module) -> str:
    linears = [path for path, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"train.custom_models.{name}: the model has no nn.Linear for a classifier; set "
                         f"'classifier' to the module path of its final linear layer")
    return linears[-1]


def _model_class(name: str, entry: Mapping) -> type[UserModel]:
    layers = tuple(entry.get("layers") or ())
    if not layers:
        raise ValueError(f"train.custom_models.{name}.layers: name at least one probe layer (a module path)")
    return type(f"UserModel_{name}", (UserModel,), {
        "model_name": name, "entry": dict(entry), "probe_layers": layers, "paper_layers": layers,
        "last_probe_layer": layers[-1], "__module__": __name__,
    })


def check_user_model(name: str, *, in_channels: int, image_size: int, num_classes: int) -> None:
    """Build registered user model ``name`` for images ``(in_channels, image_size, image_size)`` and
    run one forward pass of two zero images: layer names, classifier, hook outputs and logits'
    shape are checked here (``ValueError`` naming the key), before any job."""
    spec = MODELS[name]
    model = spec.build(in_channels, image_size, num_classes).eval()
    try:
        with torch.no_grad():
            logits, _ = model.forward_layers(torch.zeros(2, in_channels, image_size, image_size))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"train.custom_models.{name}: the model fails on {in_channels}x{image_size}x"
                         f"{image_size} images: {exc}") from None
    if tuple(logits.shape) != (2, num_classes):
        raise ValueError(f"train.custom_models.{name}: the model gives outputs of shape {tuple(logits.shape)} "
                         f"for 2 images, expected (2, {num_classes}) logits")


def register_user_models(config: Mapping) -> list[str]:
    """Register every ``train.custom_models`` entry into :data:`MODELS` (idempotent: the config's
    current entry replaces one registered before); return their names. Nothing is built here
    (:func:`check_user_model` does, per dataset shape)."""
    names = []
    for name, entry in user_model_entries(config).items():
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"train.custom_models: model name {name!r} must match [a-z0-9_]+ (it is a run "
                             f"key and a folder name)")
        if name in BUILTIN_MODELS:
            raise ValueError(f"train.custom_models: model name {name!r} is a built-in model; choose another "
                             f"name (built-in: {sorted(BUILTIN_MODELS)})")
        # the entry has the schema's defaults filled in (pipeline.config.validate_config)
        MODELS[name] = ModelSpec(
            name, _model_class(name, entry), optimizer=entry["optimizer"], lr=float(entry["lr"]),
            momentum=float(entry["momentum"]), batch_size=int(entry["batch_size"]),
            normalization=entry["normalization"], weight_decay=float(entry["weight_decay"]))
        names.append(name)
    return names
