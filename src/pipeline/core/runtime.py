"""A run at run time: the one place that turns (config, run keys) into data, labels and models.

Every stage that touches a model starts from one line, ``rt = RunRuntime(config, run, ...)``, and
then asks it for what it needs:

* ``rt.arrays`` (the dataset as the run sees it: ``data.root``, subsets), ``rt.labels`` (the run's
  ``labels.npz``, checked against the dataset), ``rt.transform`` (uint8 images -> the model's
  normalized input), ``rt.device``, ``rt.x_train`` / ``rt.x_test`` (uint8 tensors);
* ``rt.new_model()`` (the seeded initialization), ``rt.model_at(epoch)`` (a saved checkpoint, on
  the device, in eval mode), ``rt.checkpoint(epoch)``, ``rt.index`` and ``rt.probed_epochs``;
* :func:`forward` -- the one batched eval-mode forward pass, returning logits and named layers;
  :func:`predict` and :func:`layer_outputs` are built on it.

A runtime applies the one thread policy (:func:`pipeline.core.threads.limit_threads`, torch and BLAS)
when it is created, so training, extraction and the transfer experiments all run with the
``threads`` Snakemake gives them (or ``train.num_threads``).

The feature-dynamics family needs "model at epoch t, forward to layer L" for two checkpoints at
once: two ``rt.model_at`` calls, nothing copied.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from pipeline.core.artifacts import INDEX_NAME, UNLOCK_ADVICE, checkpoint_file, index_file, read_index
from pipeline.core.config import Run
from pipeline.core.datasets import DatasetArrays, channel_stats, normalize
from pipeline.core.device import resolve_device, seed_torch
from pipeline.core.errors import ArtifactError
from pipeline.core.labels import RunLabels
from pipeline.core.models import MODELS, ProbedModel, build_model
from pipeline.core.schedule import probed_epochs
from pipeline.core.threads import limit_threads

# ----------------------------------------------------------------------------- inputs

@dataclass
class InputTransform:
    """uint8 images -> normalized float tensors, as the model's training used them."""

    mode: str
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return normalize(x_uint8, self.mode, self.mean, self.std)


def input_transform(arrays: DatasetArrays, model: str) -> InputTransform:
    mode = MODELS[model].normalization
    if mode == "standardize":
        mean, std = channel_stats(arrays.x_train)
        return InputTransform(mode, mean, std)
    return InputTransform(mode)


# ----------------------------------------------------------------------------- models & checkpoints

def build_run_model(run: Run, arrays: DatasetArrays, *, dropout: bool = False) -> ProbedModel:
    return build_model(run.model, in_channels=arrays.channels, image_size=arrays.image_size,
                       num_classes=arrays.num_classes, dropout=dropout)


def save_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """A plain state_dict, written atomically; identical weights give identical bytes."""
    from pipeline.core.artifacts import save_torch

    save_torch(model.state_dict(), path)


def _load_cause(exc: BaseException) -> str:
    """What ``torch.load`` found wrong, without its advice: torch's message for a refused pickle
    begins by suggesting ``weights_only=False``, which would run whatever code the file holds, so its
    paragraphs that mention ``weights_only`` or point at the documentation are dropped."""
    paragraphs = [" ".join(p.split()) for p in str(exc).split("\n\n") if p.strip()]
    cause = [p for p in paragraphs
             if not any(word in p for word in ("weights_only", "Weights only", "documentation"))]
    return (cause or [type(exc).__name__])[0].split(". ")[0][:300].rstrip(".")  # its first sentence


def read_state(path: str | Path, redo: str = f"delete it and rerun the job that wrote it; {UNLOCK_ADVICE}"
               ) -> dict:
    """A plain state_dict from ``path`` (``weights_only=True``: the file cannot run code); an
    unreadable, truncated or foreign file raises :class:`~pipeline.core.errors.ArtifactError` naming it,
    with ``redo`` as the advice."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"checkpoint {path} does not exist; {redo}") from None
    except Exception as exc:  # truncated, corrupt, not a plain state_dict, or a pickle of objects
        cause = _load_cause(exc)
        if isinstance(exc, pickle.UnpicklingError) and "global" in cause.lower():
            # it names code to import (a class or function): loading it any other way could run code
            raise ArtifactError(f"checkpoint {path} was refused unread: it holds objects a plain "
                                f"state_dict has not ({cause}), and loading it could run code; do not "
                                f"load it by other means; {redo}") from None
        raise ArtifactError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {cause}); "
                            f"{redo}") from None
    if not isinstance(state, dict):
        raise ArtifactError(f"checkpoint {path} is not a state_dict; {redo}")
    return state


def retrain_advice(checkpoint: str | Path) -> str:
    """What to do about a bad checkpoint of a run (see :func:`load_checkpoint`)."""
    index = Path(checkpoint).parent / INDEX_NAME
    return (f"retrain the run: snakemake --forcerun {index} (with your usual options); it rewrites "
            f"every checkpoint and reruns what depends on them; {UNLOCK_ADVICE}")


def load_checkpoint(path: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """Load a plain state_dict checkpoint (``weights_only=True``: it cannot run code) into ``model``.

    A checkpoint that cannot be read, or that holds another model's weights, raises
    :class:`~pipeline.core.errors.ArtifactError` with advice that works: the checkpoints are not
    declared outputs, the run's ``checkpoints/index.json`` is (the training job's "done" marker),
    so forcing that file retrains the run, rewrites every checkpoint, and reruns everything
    downstream of it (deleting it alone would not: Snakemake sees the finished tables and does
    nothing). ``tests/workflow/test_recovery.py`` follows the advice literally.
    """
    path = Path(path)
    redo = retrain_advice(path)
    state = read_state(path, redo)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"checkpoint {path} does not fit a {type(model).__name__} of this run "
                            f"({str(exc).splitlines()[0][:200]}...); it belongs to another model or "
                            f"dataset; {redo}") from None
    return model


# ----------------------------------------------------------------------------- the forward pass

@torch.no_grad()
def forward(model: ProbedModel, x_uint8: torch.Tensor, transform, *, layers: Iterable[str] = (),
            batch_size: int = 512, device: torch.device | None = None
            ) -> Iterator[tuple[int, int, torch.Tensor, dict[str, torch.Tensor]]]:
    """Yield ``(start, stop, logits, {layer: flattened activations})`` over ``x_uint8`` in order.

    Eval mode (restored afterwards), no gradients, ``batch_size`` images at a time; the tensors are
    on the model's device. The one batched forward pass of every stage.
    """
    device = device or next(model.parameters()).device
    layers = list(layers)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, x_uint8.shape[0], batch_size):
            xb = transform(x_uint8[start:start + batch_size].to(device))
            if layers:
                logits, acts = model.forward_layers(xb, layers)
                acts = {name: acts[name].flatten(1) for name in layers}
            else:
                logits, acts = model(xb), {}
            yield start, start + xb.shape[0], logits, acts
    finally:
        model.train(was_training)


def predict(model: ProbedModel, x_uint8: torch.Tensor, transform, *, batch_size: int = 1024,
            device: torch.device | None = None) -> np.ndarray:
    """Model predictions for all of ``x_uint8`` (eval mode, batched, original order)."""
    out = [logits.argmax(1).cpu() for _, _, logits, _ in
           forward(model, x_uint8, transform, batch_size=batch_size, device=device)]
    return torch.cat(out).numpy()


def layer_outputs(model: ProbedModel, x_uint8: torch.Tensor, transform, layer: str, *,
                  batch_size: int = 512, device: torch.device | None = None) -> np.ndarray:
    """Flattened float32 activations of ``layer`` for all of ``x_uint8`` (eval mode, original order)."""
    out = [acts[layer].float().cpu() for _, _, _, acts in
           forward(model, x_uint8, transform, layers=[layer], batch_size=batch_size, device=device)]
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- the runtime

class RunRuntime:
    """One run at run time (see the module docstring). Everything is loaded on first use.

    ``run_dir`` is the run's folder (default ``results/<run.path>``); ``labels_path`` its label
    artifact (default ``<run_dir>/labels.npz``); ``config`` is the full, validated configuration.
    ``arrays`` / ``labels`` may be given when the caller has them already (tests, notebooks);
    ``transform`` too (a retrain on a subset of the training set keeps the full run's normalization).
    """

    def __init__(self, config: dict, run: Run, *, run_dir: str | Path | None = None,
                 labels_path: str | Path | None = None, threads: int | None = None,
                 arrays: DatasetArrays | None = None, labels: RunLabels | None = None,
                 transform: InputTransform | None = None):
        self.config = config
        self.run = run
        self.run_dir = Path(run_dir) if run_dir is not None else Path("results") / run.path
        self.labels_path = Path(labels_path) if labels_path is not None else self.run_dir / "labels.npz"
        if arrays is not None:
            self.__dict__["arrays"] = arrays  # fills the cached property
        if labels is not None:
            self.__dict__["labels"] = labels
        if transform is not None:  # e.g. a retrain on a subset keeps the run's normalization
            self.__dict__["transform"] = transform
        limit_threads(threads or config["train"].get("num_threads"))

    # data ---------------------------------------------------------------------------------
    @cached_property
    def arrays(self) -> DatasetArrays:
        from pipeline.core.labels import load_run_dataset

        return load_run_dataset(self.config, self.run.dataset)

    @cached_property
    def labels(self) -> RunLabels:
        from pipeline.core.labels import check_labels, load_labels

        labels = load_labels(self.labels_path)
        check_labels(labels, self.arrays, self.labels_path)
        return labels

    @cached_property
    def transform(self) -> InputTransform:
        return input_transform(self.arrays, self.run.model)

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.config["train"]["device"])

    @cached_property
    def x_train(self) -> torch.Tensor:
        return self._on_device(torch.from_numpy(self.arrays.x_train))

    @cached_property
    def x_test(self) -> torch.Tensor:
        return self._on_device(torch.from_numpy(self.arrays.x_test))

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        # uint8 images are small: on a GPU keep them there and save a host->device copy per batch
        return x.to(self.device) if self.device.type == "cuda" else x

    # models -------------------------------------------------------------------------------
    def new_model(self) -> ProbedModel:
        """The run's initialization (a function of the seed only), on the device."""
        seed_torch(self.run.seed)
        return self.empty_model()

    def empty_model(self) -> ProbedModel:
        return build_run_model(self.run, self.arrays, dropout=self.config["train"]["dropout"]).to(self.device)

    def checkpoint(self, epoch: int | str) -> Path:
        return checkpoint_file(self.run_dir, epoch)

    def state_at(self, epoch: int | str) -> dict:
        """The state_dict saved at ``epoch`` (on the CPU), checked like :func:`load_checkpoint`."""
        path = self.checkpoint(epoch)
        return read_state(path, retrain_advice(path))

    def model_at(self, epoch: int | str, *, path: str | Path | None = None) -> ProbedModel:
        """The model with the weights saved at ``epoch`` (or in ``path``), on the device, eval mode."""
        model = self.empty_model()
        load_checkpoint(path if path is not None else self.checkpoint(epoch), model)
        return model.to(self.device).eval()

    @cached_property
    def index(self) -> dict:
        return read_index(index_file(self.run_dir))

    @property
    def probed_epochs(self) -> list[int]:
        return probed_epochs(self.index["epochs"], self.config)

    # forward ------------------------------------------------------------------------------
    def split(self, name: str) -> torch.Tensor:
        return {"train": self.x_train, "test": self.x_test}[name]

    def predict(self, model: ProbedModel, split: str) -> np.ndarray:
        return predict(model, self.split(split), self.transform, device=self.device)

    def layer(self, model: ProbedModel, split: str, layer: str, *, batch_size: int | None = None) -> np.ndarray:
        batch_size = batch_size or self.config["activations"]["batch_size"]
        return layer_outputs(model, self.split(split), self.transform, layer, batch_size=batch_size,
                             device=self.device)

    def accuracies(self, model: ProbedModel) -> dict[str, float]:
        """The training log's accuracies: train (corrupted and true labels) and test."""
        train_pred, test_pred = self.predict(model, "train"), self.predict(model, "test")
        return {"train_acc_corrupted": float((train_pred == self.labels.corrupted).mean()),
                "train_acc_true": float((train_pred == self.labels.true).mean()),
                "test_acc": float((test_pred == self.labels.test).mean())}
