"""The probe registry (name -> class) and what the workflow needs around it: building a probe
from a config entry (:func:`make_probe`), a stable id of a setting (:func:`setting_id`), and the
plain-array form of a fitted probe (:func:`probe_to_arrays` / :func:`probe_from_arrays`) that the
``fit`` stage writes to HDF5 and the ``score`` stage reads back.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from pipeline.probes._common import _Probe
from pipeline.probes.linear import LinearProbe, LogisticProbe
from pipeline.probes.masc import MASC
from pipeline.probes.ncm import NearestClassMean
from pipeline.probes.sklearn_probes import KNNProbe, LDAProbe
from pipeline.probes.velpic import VeLPIC

__all__ = ["PROBES", "make_probe", "probe_class", "probe_to_arrays", "probe_from_arrays",
           "probe_template_keys", "setting_id", "format_value"]

#: registry name -> probe class
PROBES: dict[str, type] = {
    "masc": MASC,
    "velpic": VeLPIC,
    "linear": LinearProbe,
    "logreg": LogisticProbe,
    "ncm": NearestClassMean,
    "knn": KNNProbe,
    "lda": LDAProbe,
}


def probe_class(name: str) -> type:
    """The class registered as ``name``; ValueError naming the allowed names otherwise."""
    try:
        return PROBES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown probe {name!r}; allowed: {sorted(PROBES)}") from None


def make_probe(name: str, **params: Any) -> _Probe:
    """Construct the probe ``name`` with ``params``; unknown names/parameters or bad values raise ValueError."""
    cls = probe_class(name)
    allowed = sorted(cls().get_params())
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for probe {name!r}; allowed: {allowed}")
    probe = cls(**params)
    probe._validate_params()
    return probe


def probe_to_arrays(probe: _Probe) -> dict[str, np.ndarray]:
    """The fitted state of ``probe`` as named numpy arrays (for HDF5 etc.).

    Keys (:func:`probe_template_keys`): masc ``bases`` (d x sum k_c float32, class blocks in
    ``classes`` order), ``n_components``, ``explained_energy``, ``classes``; velpic
    ``class_vectors``, ``classes``; linear and lda ``coef``, ``intercept``, ``classes``; logreg
    ``mean``, ``scale``, ``coef``, ``intercept``, ``classes``, ``n_iter``, ``converged``; ncm
    ``means``, ``classes``; knn ``fit_X`` (normalised for the cosine metric), ``fit_y``,
    ``classes``.
    """
    if not isinstance(probe, _Probe):
        raise ValueError(f"not a probe from this registry: {type(probe).__name__}")
    check_is_fitted(probe, "classes_")
    return {k: np.asarray(v) for k, v in probe._to_arrays().items()}


def probe_from_arrays(name: str, params: dict, arrays: dict[str, np.ndarray]) -> _Probe:
    """Rebuild a fitted probe from :func:`probe_to_arrays` output; predictions are identical."""
    probe = make_probe(name, **(params or {}))
    required = set(probe_template_keys(name)) - set(type(probe)._optional_keys)  # informational only
    missing = sorted(required - set(arrays))
    if missing:
        raise ValueError(f"probe {name!r}: arrays lack {missing}; got {sorted(arrays)}")
    probe._from_arrays({k: np.asarray(v) for k, v in arrays.items()})
    return probe


def probe_template_keys(name: str) -> tuple[str, ...]:
    """The array names :func:`probe_to_arrays` writes for probe ``name``."""
    return tuple(probe_class(name)._array_keys)


def format_value(value: Any) -> str:
    """A parameter value as :func:`setting_id` writes it (ints as ints, floats by ``repr``)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return str(bool(value)) if value is not None else "None"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def setting_id(name: str, params: dict | None = None) -> str:
    """Stable, human-readable id of a probe setting, e.g. ``"variance=0.99"`` or ``"sign=class_mean"``.

    Defaults are filled in (so ``{}`` and the explicit defaults give the same id), keys are sorted,
    ``key=value`` pairs are joined by commas, and execution-only parameters (``device``) are left
    out.  A probe without parameters (ncm) gives ``""``.  Invalid settings raise ValueError.
    """
    probe = make_probe(name, **(params or {}))
    values = probe.get_params()
    return ",".join(f"{k}={format_value(values[k])}" for k in sorted(values)
                    if k not in probe._execution_params)
