"""Whether two score arrays make the same predictions, up to near-ties.

The promise the probes keep (docs/reliability.md):

* **same code path, same library, same machine** (a rerun, a job killed and resumed, another
  thread count): scores and predictions are bitwise identical;
* **arithmetic in another order** (row chunking, numpy vs torch, CPU vs GPU, another BLAS): scores
  agree to the float32 resolution, and predictions agree on every *decided* sample -- one whose
  two best scores are further apart than that resolution in both score arrays.  Only near-ties
  may go either way; they are counted, and a test bounds their number.

:func:`prediction_agreement` measures this for two ``(n_samples, n_classes)`` score arrays whose
prediction is ``argmax`` along the classes (every probe's ``decision_function``);
:func:`assert_agree` raises :class:`AssertionError` when a decided prediction differs or there
are more near-ties than allowed.

The resolution
--------------
By default a row's resolution is :data:`DEFAULT_EPS_MULTIPLE` (16) float32 machine epsilons
(``2**-23``) times its *score magnitude*, the largest absolute score of that row in either array
(:func:`float32_resolution`).  Float32 because the fitted artifacts (bases, class vectors, class
means) are float32 and scoring runs in float32 for float32 activations: float32 is the precision
of what the pipeline computes, even from float64 inputs.  Sixteen because the float32 dot products
and sums behind the scores, summed in another order, differ by a few epsilons of the magnitude:
measured up to 3 eps (chunked vs unchunked MASC, 40 features) and 8.5 eps (numpy vs torch on CPU,
MASC / VeLPIC / NCM on a 250-wide layer, AMD EPYC), so 16 leaves a factor of about two.  A
prediction can flip between two arrays that are both decided only if some score moved by more
than the resolution.  Longer sums (much wider layers) or scores that cancel (VeLPIC or NCM rows
nearly orthogonal to every class, whose largest score is small next to ``||x||``) may need a
larger one: pass ``resolution`` (absolute, a scalar or one value per row).

numpy only: nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Agreement", "DEFAULT_EPS_MULTIPLE", "assert_agree", "float32_resolution", "prediction_agreement"]

#: default resolution, in float32 epsilons of a row's largest absolute score
DEFAULT_EPS_MULTIPLE = 16
_EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Agreement:
    """How far the argmax predictions of two score arrays agree.

    ``n`` samples; ``n_decided`` of them have a top-two score gap above the resolution in *both*
    arrays, and ``n_decided_disagree`` of those are predicted differently (0 when the promise
    holds); the other ``n_near_ties`` are near-ties (``n_decided + n_near_ties == n``), of which
    ``n_near_tie_disagree`` are predicted differently.  ``decided_disagreements`` holds the row
    indices of the decided disagreements (empty when the promise holds).
    """

    n: int
    n_decided: int
    n_decided_disagree: int
    n_near_ties: int
    n_near_tie_disagree: int
    decided_disagreements: tuple[int, ...] = ()

    @property
    def n_disagree(self) -> int:
        """Samples predicted differently, decided or not."""
        return self.n_decided_disagree + self.n_near_tie_disagree

    @property
    def decided_fraction(self) -> float:
        """The fraction of samples that are decided (1.0 for no samples)."""
        return self.n_decided / self.n if self.n else 1.0

    def check(self, *, max_near_ties: int | None = None, what: str = "scores") -> Agreement:
        """``self`` if no decided prediction differs and there are at most ``max_near_ties``
        near-ties (None: any number); AssertionError saying which otherwise."""
        problems = []
        if self.n_decided_disagree:
            rows = list(self.decided_disagreements[:10])
            more = " ..." if self.n_decided_disagree > len(rows) else ""
            problems.append(f"{self.n_decided_disagree} of {self.n_decided} decided predictions differ "
                            f"(rows {rows}{more})")
        if max_near_ties is not None and self.n_near_ties > max_near_ties:
            problems.append(f"{self.n_near_ties} near-ties of {self.n} samples, more than the "
                            f"{max_near_ties} allowed")
        if problems:
            raise AssertionError(f"{what}: " + "; ".join(problems) + f" ({self})")
        return self


def _scores(scores: Any, name: str) -> np.ndarray:
    a = np.asarray(scores)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D (n_samples, n_classes) array with at least one class; "
                         f"got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric; got dtype {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return a.astype(np.float64)  # exact for float16/32/64 scores; gaps below are not rounded again


def float32_resolution(scores_a: Any, scores_b: Any, multiple: float = DEFAULT_EPS_MULTIPLE) -> np.ndarray:
    """The default per-row resolution: ``multiple`` float32 epsilons times the row's largest
    absolute score in either array (0 for a row of zeros, where only an exact tie is a tie)."""
    a, b = _scores(scores_a, "scores_a"), _scores(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b have different shapes: {a.shape} != {b.shape}")
    scale = np.maximum(np.abs(a).max(axis=1), np.abs(b).max(axis=1))
    return float(multiple) * _EPS32 * scale


def _top_two_gap(s: np.ndarray) -> np.ndarray:
    if s.shape[1] == 1:
        return np.full(s.shape[0], np.inf)  # one class: every prediction is decided
    top2 = np.partition(s, s.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def prediction_agreement(scores_a: Any, scores_b: Any, *, resolution: Any = None) -> Agreement:
    """Compare the argmax predictions of two ``(n_samples, n_classes)`` score arrays.

    A sample is *decided* when the gap between its two best scores exceeds the resolution in both
    arrays, and a *near-tie* otherwise (an exact tie included).  ``resolution``: None for
    :func:`float32_resolution` (16 float32 epsilons of the row's largest absolute score; see the
    module docstring), else an absolute resolution, a scalar or one value per sample (>= 0).
    Predictions are ``np.argmax`` (the first of exactly tied classes), as in every probe's
    ``predict``.
    """
    a, b = _scores(scores_a, "scores_a"), _scores(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b have different shapes: {a.shape} != {b.shape}")
    n = a.shape[0]
    if resolution is None:
        res = float32_resolution(a, b)
    else:
        res = np.asarray(resolution, dtype=np.float64)
        if res.ndim > 1 or (res.ndim == 1 and res.shape[0] != n) or not np.all(np.isfinite(res)) or np.any(res < 0):
            raise ValueError(f"resolution must be a finite number >= 0 or one per sample ({n}); got {resolution!r}")
        res = np.broadcast_to(res, (n,))
    decided = (_top_two_gap(a) > res) & (_top_two_gap(b) > res)
    differ = np.argmax(a, axis=1) != np.argmax(b, axis=1)
    decided_differ = decided & differ
    return Agreement(n=int(n), n_decided=int(decided.sum()), n_decided_disagree=int(decided_differ.sum()),
                     n_near_ties=int(n - decided.sum()), n_near_tie_disagree=int((differ & ~decided).sum()),
                     decided_disagreements=tuple(int(i) for i in np.flatnonzero(decided_differ)))


def assert_agree(scores_a: Any, scores_b: Any, *, resolution: Any = None, max_near_ties: int | None = None,
                 what: str = "scores") -> Agreement:
    """:func:`prediction_agreement`, then :meth:`Agreement.check`: the :class:`Agreement` if every
    decided prediction agrees and there are at most ``max_near_ties`` near-ties (None: any
    number); otherwise AssertionError naming ``what``, the counts and the rows, with their scores."""
    agreement = prediction_agreement(scores_a, scores_b, resolution=resolution)
    try:
        return agreement.check(max_near_ties=max_near_ties, what=what)
    except AssertionError as exc:
        rows = list(agreement.decided_disagreements[:3])
        if not rows:
            raise
        a, b = np.asarray(scores_a), np.asarray(scores_b)
        detail = "; ".join(f"row {i}: a={a[i].tolist()} b={b[i].tolist()}" for i in rows)
        raise AssertionError(f"{exc}; {detail}") from None
