"""Composite networks: the shallow part f[1:d] of one checkpoint, the deep part f[d+1:n] of another.

The paper (section 3) writes ``C(t_deep, t_shallow) = f[d+1:n](theta_{t_deep}) o f[1:d](theta_{t_shallow})``.
A composite is built from two state dicts of the same architecture; every state-dict entry --
parameters *and* buffers (BatchNorm running mean / variance / ``num_batches_tracked``) -- comes from
the checkpoint of the part that owns it, so in eval mode each layer normalises with the running
statistics of its own checkpoint.  Ownership is the model's split plan
(:meth:`pipeline.core.models.ProbedModel.shallow_state_keys`).

Two equivalent forms:

* :func:`build_composite` -- one model of the architecture loaded with the merged state dict
  (:func:`composite_state_dict`); it runs like any model (``forward``, ``forward_layers``).
* :class:`CompositeNetwork` -- two models (shallow, deep) glued at the boundary:
  ``deep.forward_from(d, shallow.forward_to(d, x))``.  Used by the grid, which reuses one model per
  checkpoint for every pairing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from pipeline.core.models import ProbedModel

__all__ = ["composite_state_dict", "build_composite", "CompositeNetwork", "load_state"]

StateDict = Mapping[str, Tensor]


def composite_state_dict(model: ProbedModel, shallow_state: StateDict, deep_state: StateDict,
                         boundary: str) -> dict[str, Tensor]:
    """Merged state dict: the entries owned by ``f[1:boundary]`` from ``shallow_state``, every other
    entry (deep layers, head) from ``deep_state``.  ``model`` only supplies the architecture."""
    keys = list(model.state_dict())
    for name, state in (("shallow", shallow_state), ("deep", deep_state)):
        missing = [k for k in keys if k not in state]
        if missing:
            raise KeyError(f"{name} state dict lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    unowned = model.unowned_state_keys()
    if unowned:
        raise ValueError(f"{type(model).__name__}: state entries owned by no split stage: {list(unowned)}")
    shallow = set(model.shallow_state_keys(boundary))
    return {k: (shallow_state[k] if k in shallow else deep_state[k]).detach().clone() for k in keys}


def load_state(build: Callable[[], ProbedModel], state: StateDict) -> ProbedModel:
    """A fresh model from ``build()`` loaded with ``state`` (strict), in eval mode."""
    model = build()
    model.load_state_dict(state, strict=True)
    return model.eval()


def build_composite(build: Callable[[], ProbedModel], shallow_state: StateDict,
                    deep_state: StateDict, boundary: str) -> ProbedModel:
    """One model whose layers up to ``boundary`` come from ``shallow_state`` and the rest (with their
    buffers) from ``deep_state``; returned in eval mode."""
    model = build()
    model.load_state_dict(composite_state_dict(model, shallow_state, deep_state, boundary), strict=True)
    return model.eval()


class CompositeNetwork(nn.Module):
    """``deep.forward_from(boundary, shallow.forward_to(boundary, x))`` for two models of one
    architecture (each keeps its own parameters and buffers)."""

    def __init__(self, shallow: ProbedModel, deep: ProbedModel, boundary: str):
        super().__init__()
        if type(shallow) is not type(deep):
            raise TypeError(f"shallow and deep parts differ in architecture: "
                            f"{type(shallow).__name__} vs {type(deep).__name__}")
        shallow.canonical_boundary(boundary)  # validates the name
        self.shallow, self.deep, self.boundary = shallow, deep, boundary

    def features(self, x: Tensor) -> Tensor:
        """The shallow features f[1:d](theta_shallow, x)."""
        return self.shallow.forward_to(self.boundary, x)

    def forward(self, x: Tensor) -> Tensor:
        return self.deep.forward_from(self.boundary, self.features(x))

