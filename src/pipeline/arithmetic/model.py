"""The two-layer network of the case study: f(a, b) = W phi(U e_a + V e_b) + mu.

U e_a and V e_b are embedding look-ups (the columns of U, V in R^{M x P}); W in R^{P x M} is a
Linear layer's weight and mu its optional bias. ``tied=True`` shares one embedding (U = V).

The hidden layer phi(U e_a + V e_b) is the probe layer ``hidden`` (:meth:`forward_layers`, as for the
image models), so MASC/VeLPIC fit on it unchanged; :func:`hidden_activations` returns it for pairs.

:class:`Weights` is the same network as plain arrays (U, V as M x P, W as P x M, mu); the frequency
filtration edits these and :func:`weights_logits` evaluates any (U, V, W, mu, phi), so an edited
network never needs a module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.models import ProbedModel

ACTIVATIONS = ("relu", "square", "gelu", "reverse_relu")
PROBE_LAYER = "hidden"


def activation_fn(name: str):
    """phi by name; ``reverse_relu(x) = relu(-x)`` (the mirror image of ReLU)."""
    if name == "relu":
        return torch.relu
    if name == "square":
        return torch.square
    if name == "gelu":
        return F.gelu
    if name == "reverse_relu":
        return lambda x: torch.relu(-x)
    raise ValueError(f"unknown activation {name!r}; allowed: {list(ACTIVATIONS)}")


class ArithmeticMLP(ProbedModel):
    """Input: a long tensor of pairs, shape (N, 2); output: (N, P) logits."""

    probe_layers = (PROBE_LAYER,)
    paper_layers = (PROBE_LAYER,)
    last_probe_layer = PROBE_LAYER
    _classifier_attr = "out"

    def __init__(self, P: int, width: int, activation: str = "relu", *, tied: bool = False,
                 bias: bool = True, init_std: float | None = None):
        super().__init__()
        activation_fn(activation)  # validate
        self.P, self.width, self.activation, self.tied = int(P), int(width), activation, bool(tied)
        self.embed_a = nn.Embedding(P, width)
        self.embed_b = self.embed_a if tied else nn.Embedding(P, width)
        self.out = nn.Linear(width, P, bias=bias)
        # Default: as nn.Linear(2P, M) on the concatenated one-hots, U(-1/sqrt(2P), 1/sqrt(2P));
        # ``init_std``: N(0, init_std^2) for U, V and W (e.g. d-doshi's 0.5 / (2N)^(1/3)).
        with torch.no_grad():
            bound = 1.0 / math.sqrt(2 * P)
            for emb in {id(self.embed_a): self.embed_a, id(self.embed_b): self.embed_b}.values():
                if init_std is None:
                    emb.weight.uniform_(-bound, bound)
                else:
                    emb.weight.normal_(0.0, init_std)
            if init_std is not None:
                self.out.weight.normal_(0.0, init_std)
            if bias:
                self.out.bias.zero_()

    def _forward_all(self, x: Tensor, activation: str | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        pre = self.embed_a(x[:, 0]) + self.embed_b(x[:, 1])
        hidden = activation_fn(activation or self.activation)(pre)
        return self.out(hidden), {PROBE_LAYER: hidden}

    def forward(self, x: Tensor, activation: str | None = None) -> Tensor:
        """Logits; ``activation`` overrides phi at inference (the activation swap)."""
        return self._forward_all(x, activation)[0]


def build(settings: dict) -> ArithmeticMLP:
    return ArithmeticMLP(settings["P"], settings["width"], settings.get("activation", "relu"),
                         tied=settings.get("tied", False), bias=settings.get("bias", True),
                         init_std=settings.get("init_std"))


def pair_tensor(a: np.ndarray, b: np.ndarray) -> Tensor:
    return torch.from_numpy(np.stack([np.asarray(a, np.int64), np.asarray(b, np.int64)], axis=1))


@torch.no_grad()
def hidden_activations(model: ArithmeticMLP, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) float32 activations of the probe layer ``hidden`` for the pairs (a, b)."""
    was = model.training
    model.eval()
    _, acts = model.forward_layers(pair_tensor(a, b), [PROBE_LAYER])
    model.train(was)
    return acts[PROBE_LAYER].numpy().astype(np.float32)


# ----------------------------------------------------------------------------- weights as arrays

@dataclass
class Weights:
    """U, V: (M, P); W: (P, M); mu: (P,); the network f = W phi(U e_a + V e_b) + mu."""

    U: np.ndarray
    V: np.ndarray
    W: np.ndarray
    mu: np.ndarray
    activation: str = "relu"

    @property
    def P(self) -> int:
        return self.U.shape[1]

    @property
    def width(self) -> int:
        return self.U.shape[0]

    def subset(self, neurons: np.ndarray) -> Weights:
        """The sub-network of the given neurons (same output bias)."""
        neurons = np.asarray(neurons)
        return replace(self, U=self.U[neurons], V=self.V[neurons], W=self.W[:, neurons])

    def copy(self) -> Weights:
        return replace(self, U=self.U.copy(), V=self.V.copy(), W=self.W.copy(), mu=self.mu.copy())


def weights_of(model: ArithmeticMLP) -> Weights:
    def to(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float64)

    mu = to(model.out.bias) if model.out.bias is not None else np.zeros(model.P)
    return Weights(U=to(model.embed_a.weight).T.copy(), V=to(model.embed_b.weight).T.copy(),
                   W=to(model.out.weight), mu=mu, activation=model.activation)


@torch.no_grad()
def weights_logits(w: Weights, a: np.ndarray, b: np.ndarray, activation: str | None = None,
                   chunk_elements: int = 1 << 22) -> np.ndarray:
    """(N, P) float64 logits of the network ``w`` (with ``activation`` overriding its phi)."""
    phi = activation_fn(activation or w.activation)
    Ut, Vt = torch.from_numpy(w.U.T.copy()), torch.from_numpy(w.V.T.copy())  # (P, M)
    Wt, mu = torch.from_numpy(w.W.T.copy()), torch.from_numpy(w.mu)
    a = torch.from_numpy(np.asarray(a, np.int64))
    b = torch.from_numpy(np.asarray(b, np.int64))
    step = max(1, chunk_elements // max(w.width, 1))
    out = [phi(Ut[a[s:s + step]] + Vt[b[s:s + step]]) @ Wt + mu for s in range(0, a.shape[0], step)]
    return torch.cat(out).numpy() if out else np.zeros((0, w.P))


def weights_predict(w: Weights, a: np.ndarray, b: np.ndarray, activation: str | None = None) -> np.ndarray:
    return weights_logits(w, a, b, activation).argmax(1)
