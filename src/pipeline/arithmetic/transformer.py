"""The transformer on noisy modular arithmetic, and frequency filtration of its unembedding.

The paper's transformer experiment (Liu & Lu 2026; ``../shared/papers/arithmetic-details.md``): a
transformer trained on addition mod P with label noise, then frequency filtration (FF) that keeps
the top-20 frequencies of the unembedding; the paper reports, before / after FF, accuracy on the
clean training pairs 100 % / 98.1 %, on the noisy training pairs (their given labels) 100 % / 36.8 %
and on the test pairs 76.8 % / 87.8 %. The paper's summary gives no architecture or optimizer for
it, so the model and its training are those of Nanda et al. (2023), the setting the paper's P = 113
comes from (our choice, recorded with the table):

* Input: the tokens ``a, b, =`` (vocabulary P + 1; ``=`` is token P), learned token and position
  embeddings; one block of multi-head causal self-attention (``n_heads`` heads of width
  ``d_model / n_heads``, no biases) and a ReLU MLP (``d_mlp``, with biases), both added to the
  residual stream; no LayerNorm; the logits of the P residues are read at the ``=`` position through
  the unembedding ``W_U`` (``d_model x P``, no bias). Initialization: N(0, 1/d_model) for every
  matrix but ``W_U`` (N(0, 1/P)), zero biases (Nanda et al.'s). The ``=`` token attends to all three
  positions, so the last position's output is computed alone (the other positions' outputs never
  reach the logits of a one-layer model).
* Training: full batch, cross-entropy on the given (noisy) labels, AdamW (lr 1e-3, weight decay 1,
  betas (0.9, 0.98): Nanda et al.'s) through the core :class:`~pipeline.core.training.EpochLoop`
  and :func:`~pipeline.core.training.make_optimizer`; no learning-rate warm-up.
* Data and noise: :func:`pipeline.arithmetic.data.make_data` (the cells' split and noise draws).

FF on the unembedding (:func:`top_frequencies`, :func:`keep_frequencies`): the DFT of each row of
``W_U`` over the P output residues; frequency k in 1 .. (P-1)/2 scores the power
``sum_d |rfft(W_U[d])_k|^2`` (its cosine and sine together); the ``top_k`` highest are kept (ties:
the lower frequency) and every other bin is zeroed, the DC bin included: a constant row of ``W_U``
adds one value to every class's logit, so it never changes a prediction, and dropping it makes the
kept part exactly the chosen frequencies. The networks evaluated:

``raw``          the trained transformer (before FF)
``ff``           ``W_U`` replaced by its top-``top_k`` frequencies (after FF)
``ff_residual``  ``W_U`` minus the ``ff`` part (every other frequency and the DC bin), so raw = ff + residual
``ff_random``    a control: ``top_k`` frequencies drawn at random (seeded), to tell the learned
                 frequencies from any band-limited unembedding

Table (:data:`TRANSFORMER`, ``results/tables/arithmetic_transformer.parquet``): one row per
(network, split) with the accuracy and its counts on the four :data:`pipeline.arithmetic.data.SPLITS`
(the paper's "clean train" is ``train_clean``, "noisy train" ``train_noisy_given``, "test" ``test``),
the run's settings as columns and the kept frequencies; the settings and the whole config section
are also in the Parquet footer. Training progress (loss and the four accuracies every
``log_every`` epochs) goes to stdout, the rule's log.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.arithmetic.data import SPLITS, ArithmeticData, make_data
from pipeline.arithmetic.train import set_accuracies
from pipeline.core.device import numpy_rng, resolve_device, seed_torch
from pipeline.core.tables import RUN_KEY_COLUMNS, TableSchema
from pipeline.core.training import Batching, EpochEnd, EpochLoop, make_optimizer

#: the networks of the before/after table, in table order
NETWORKS = ("raw", "ff", "ff_residual", "ff_random")
#: the optimizers the transformer trains with (the core factory's Adam variants)
TRANSFORMER_OPTIMIZERS = ("adamw", "adam")

TRANSFORMER_COLUMNS: dict[str, str] = {
    **RUN_KEY_COLUMNS,
    "task": "string",
    "P": "int64",
    "train_fraction": "float64",
    "alpha": "float64",
    "noise_mode": "string",
    "d_model": "int64",
    "n_heads": "int64",
    "d_mlp": "int64",
    "optimizer": "string",
    "lr": "float64",
    "weight_decay": "float64",
    "epochs": "int64",
    "top_k": "int64",
    "network": "string",
    "frequencies": "string",   # the unembedding frequencies the network keeps, space-separated ("all": raw)
    "split": "string",
    "accuracy": "float64",
    "n_correct": "int64",
    "n_samples": "int64",
}


def _check_values(df: pd.DataFrame) -> None:
    unknown = sorted(set(df["network"]) - set(NETWORKS)) + sorted(set(df["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown network(s) / split(s) {unknown}; allowed: {list(NETWORKS)}, {list(SPLITS)}")
    if (df["n_samples"] <= 0).any() or not np.allclose(df["n_correct"] / df["n_samples"], df["accuracy"]):
        raise ValueError("accuracy must equal n_correct / n_samples with n_samples > 0")


TRANSFORMER = TableSchema("arithmetic transformer", TRANSFORMER_COLUMNS,
                          (*RUN_KEY_COLUMNS, "network", "split"), check_values=_check_values)


# ----------------------------------------------------------------------------- the model

class ModularTransformer(nn.Module):
    """One-layer transformer on ``a, b, =`` (see the module docstring); ``forward`` takes the
    (n, 3) token tensor and returns the (n, P) logits at the ``=`` position."""

    def __init__(self, P: int, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"arithmetic.transformer.d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.P, self.n_heads, self.d_head = P, n_heads, d_model // n_heads
        s = 1.0 / math.sqrt(d_model)
        self.W_E = nn.Parameter(torch.randn(P + 1, d_model) * s)
        self.W_pos = nn.Parameter(torch.randn(3, d_model) * s)
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_model, self.d_head) * s)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_model, self.d_head) * s)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_model, self.d_head) * s)
        self.W_O = nn.Parameter(torch.randn(n_heads, self.d_head, d_model) * s)
        self.W_in = nn.Parameter(torch.randn(d_model, d_mlp) * s)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d_model) * s)
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.W_U = nn.Parameter(torch.randn(d_model, P) / math.sqrt(P))

    def residual(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream at the ``=`` position after the block, (n, d_model)."""
        x = self.W_E[tokens] + self.W_pos                                     # (n, 3, d)
        q = torch.einsum("nd,hde->nhe", x[:, -1], self.W_Q)                   # the last query only
        k = torch.einsum("npd,hde->nhpe", x, self.W_K)
        v = torch.einsum("npd,hde->nhpe", x, self.W_V)
        attn = torch.softmax(torch.einsum("nhe,nhpe->nhp", q, k) / math.sqrt(self.d_head), dim=-1)
        z = torch.einsum("nhp,nhpe->nhe", attn, v)
        r = x[:, -1] + torch.einsum("nhe,hed->nd", z, self.W_O)
        return r + F.relu(r @ self.W_in + self.b_in) @ self.W_out + self.b_out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.residual(tokens) @ self.W_U


def pair_tokens(a: np.ndarray, b: np.ndarray, P: int) -> torch.Tensor:
    """(n, 3) tokens ``a, b, =`` (``=`` is token P)."""
    a = torch.as_tensor(np.asarray(a, dtype=np.int64))
    return torch.stack([a, torch.as_tensor(np.asarray(b, dtype=np.int64)), torch.full_like(a, P)], dim=1)


# ----------------------------------------------------------------------------- FF on the unembedding

def _check_top_k(top_k: int, P: int) -> None:
    n_freq = (P - 1) // 2
    if P < 5 or P % 2 == 0:
        raise ValueError(f"arithmetic.transformer.P = {P}: the Fourier analysis needs an odd P >= 5")
    if not 1 <= top_k <= n_freq:
        raise ValueError(f"arithmetic.transformer.top_k = {top_k}: must lie in 1 .. (P-1)/2 = {n_freq} "
                         f"(the non-constant frequencies of Z_{P})")


def frequency_power(W_U: np.ndarray) -> np.ndarray:
    """((P-1)/2 + 1,) power of each rfft bin of ``W_U``'s rows over the P residues, summed over
    the rows (bin 0 is the DC)."""
    return (np.abs(np.fft.rfft(np.asarray(W_U, dtype=np.float64), axis=1)) ** 2).sum(axis=0)


def top_frequencies(W_U: np.ndarray, top_k: int) -> np.ndarray:
    """The ``top_k`` frequencies in 1 .. (P-1)/2 with the most power in ``W_U`` (d_model, P), sorted
    ascending; ties go to the lower frequency."""
    _check_top_k(top_k, W_U.shape[1])
    power = frequency_power(W_U)[1:]
    order = np.argsort(-power, kind="stable")
    return np.sort(order[:top_k] + 1)


def keep_frequencies(W_U: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """``W_U`` (d_model, P) with only the rfft bins ``freqs`` (in 1 .. (P-1)/2) of each row kept:
    each row projected onto the cosines and sines of those frequencies."""
    W_U = np.asarray(W_U, dtype=np.float64)
    P = W_U.shape[1]
    freqs = np.asarray(freqs, dtype=np.int64)
    if freqs.size and (freqs.min() < 1 or freqs.max() > (P - 1) // 2):
        raise ValueError(f"frequencies {freqs.tolist()} outside 1 .. (P-1)/2 = {(P - 1) // 2}")
    spectrum = np.fft.rfft(W_U, axis=1)
    kept = np.zeros_like(spectrum)
    kept[:, freqs] = spectrum[:, freqs]
    return np.fft.irfft(kept, n=P, axis=1)


def random_frequencies(P: int, top_k: int, seed: int) -> np.ndarray:
    """``top_k`` frequencies of 1 .. (P-1)/2 drawn without replacement (the ``ff_random`` control)."""
    _check_top_k(top_k, P)
    rng = numpy_rng(seed, 20, P, top_k)
    return np.sort(rng.choice(np.arange(1, (P - 1) // 2 + 1), size=top_k, replace=False))


def unembedding_variants(W_U: np.ndarray, top_k: int, seed: int) -> dict[str, tuple[np.ndarray, str]]:
    """network -> (its unembedding, the frequencies it keeps as text) for :data:`NETWORKS`."""
    top = top_frequencies(W_U, top_k)
    ff = keep_frequencies(W_U, top)
    rand = random_frequencies(W_U.shape[1], top_k, seed)
    rest = [k for k in range(1, (W_U.shape[1] - 1) // 2 + 1) if k not in set(top.tolist())]
    text = lambda f: " ".join(str(int(k)) for k in f)  # noqa: E731
    return {"raw": (np.asarray(W_U, dtype=np.float64), "all"),
            "ff": (ff, text(top)),
            "ff_residual": (np.asarray(W_U, dtype=np.float64) - ff, "0 " + text(rest)),
            "ff_random": (keep_frequencies(W_U, rand), text(rand))}


# ----------------------------------------------------------------------------- training and the table

@dataclass
class TransformerSettings:
    """One transformer run (the config's ``arithmetic.transformer`` with the schema's defaults)."""

    task: str
    P: int
    train_fraction: float
    alpha: float
    noise_mode: str
    d_model: int
    n_heads: int
    d_mlp: int
    optimizer: str
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    epochs: int
    top_k: int
    log_every: int
    seed: int
    device: str

    @classmethod
    def from_config(cls, section: dict) -> TransformerSettings:
        """``section`` (the config's ``arithmetic.transformer``) checked against the schema, its
        defaults filled in, and the checks the schema cannot make (before any compute)."""
        from pipeline.core.config import apply_schema

        s = apply_schema({"arithmetic": {"transformer": dict(section)}})["arithmetic"]["transformer"]
        fields = {k: s[k] for k in cls.__dataclass_fields__}
        fields["betas"] = tuple(fields["betas"])
        out = cls(**fields)
        _check_top_k(out.top_k, out.P)
        if out.optimizer not in TRANSFORMER_OPTIMIZERS:
            raise ValueError(f"arithmetic.transformer.optimizer {out.optimizer!r}; allowed: "
                             f"{list(TRANSFORMER_OPTIMIZERS)}")
        if out.d_model % out.n_heads:
            raise ValueError(f"arithmetic.transformer.d_model ({out.d_model}) must be a multiple of "
                             f"n_heads ({out.n_heads})")
        return out

    def run_keys(self) -> dict:
        return {"dataset": f"arith_{self.task}_p{self.P}_f{self.train_fraction:g}",
                "model": (f"transformer_d{self.d_model}_h{self.n_heads}_m{self.d_mlp}_{self.optimizer}"
                          f"_wd{self.weight_decay:g}"),
                "corruption": float(self.alpha), "seed": int(self.seed), "variant": self.noise_mode}


@torch.no_grad()
def predict_all(model: ModularTransformer, tokens: torch.Tensor, W_U: np.ndarray | None = None) -> np.ndarray:
    """Predictions for ``tokens`` (every pair), with ``W_U`` in place of the model's unembedding if given."""
    was = model.training
    model.eval()
    unembed = model.W_U if W_U is None else torch.as_tensor(W_U, dtype=model.W_U.dtype, device=model.W_U.device)
    pred = (model.residual(tokens) @ unembed).argmax(1).cpu().numpy()
    model.train(was)
    return pred


def train_transformer(data: ArithmeticData, s: TransformerSettings, *, echo=print) -> ModularTransformer:
    """Train on ``data``'s given labels (full batch); ``echo`` gets a progress line every
    ``log_every`` epochs (and at the last)."""
    device = resolve_device(s.device, key="arithmetic.transformer.device")
    seed_torch(s.seed)
    model = ModularTransformer(data.P, s.d_model, s.n_heads, s.d_mlp).to(device)
    tokens_all = pair_tokens(data.a, data.b, data.P).to(device)
    x = tokens_all[torch.as_tensor(data.train_idx)]
    y = torch.as_tensor(data.given.astype(np.int64), device=device)
    opt = make_optimizer(model, {"optimizer": s.optimizer, "lr": s.lr, "weight_decay": s.weight_decay,
                                 "betas": s.betas})
    t0 = time.perf_counter()

    def progress(end: EpochEnd) -> None:
        if end.epoch % s.log_every == 0 or end.epoch == s.epochs:
            acc = set_accuracies(predict_all(model, tokens_all), data)
            line = " ".join(f"{k} {c / n:.3f}" for k, (c, n) in acc.items() if n)
            echo(f"epoch {end.epoch}/{s.epochs} loss {end.loss:.4f} {line} ({time.perf_counter() - t0:.0f} s)")

    EpochLoop(model, opt, x, y, loss_fn=F.cross_entropy, batching=Batching(size=None),
              on_epoch_end=[progress]).run(1, s.epochs)
    return model


def before_after_rows(model: ModularTransformer, data: ArithmeticData, s: TransformerSettings) -> list[dict]:
    """The rows of :data:`TRANSFORMER` for a trained model: every network of :data:`NETWORKS` on
    every non-empty split."""
    tokens_all = pair_tokens(data.a, data.b, data.P).to(model.W_U.device)
    keys = s.run_keys()
    settings = {k: getattr(s, k) for k in ("task", "P", "train_fraction", "alpha", "noise_mode", "d_model",
                                            "n_heads", "d_mlp", "optimizer", "lr", "weight_decay", "epochs",
                                            "top_k")}
    rows = []
    W_U = model.W_U.detach().cpu().double().numpy()
    for network, (unembed, freqs) in unembedding_variants(W_U, s.top_k, s.seed).items():
        counts = set_accuracies(predict_all(model, tokens_all, unembed), data)
        rows += [{**keys, **settings, "network": network, "frequencies": freqs, "split": split,
                  "accuracy": c / n, "n_correct": c, "n_samples": n}
                 for split, (c, n) in counts.items() if n > 0]
    return rows


def transformer_table(section: dict, *, echo=print) -> pd.DataFrame:
    """Train the transformer of ``section`` (the config's ``arithmetic.transformer``) and return its
    before/after FF table (:data:`TRANSFORMER`)."""
    s = TransformerSettings.from_config(section)
    data = make_data(s.task, s.P, s.train_fraction, s.alpha, s.noise_mode, s.seed)
    model = train_transformer(data, s, echo=echo)
    return TRANSFORMER.frame(before_after_rows(model, data, s))


def before_after(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: rows ``raw`` (before FF) and ``ff`` (after), columns clean train, noisy
    train (given labels), test."""
    wide = table[table["network"].isin(["raw", "ff"])].pivot(index="network", columns="split", values="accuracy")
    cols = [c for c in ("train_clean", "train_noisy_given", "test") if c in wide.columns]
    return wide.loc[["raw", "ff"], cols]
