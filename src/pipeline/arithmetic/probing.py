"""MASC / VeLPIC on the hidden layer, as rows of the image pipeline's probe table (pipeline.core.artifacts schema).

The probes are fit on the training pairs' hidden activations with the given (noisy) labels
(``fit_labels="corrupted"``) or the true ones (``"true"``), and scored on the training pairs against
both label sets and on the test pairs against the true labels -- the same rows
:func:`pipeline.core.tables.accuracy_row` builds for the image models. ``dataset`` / ``model`` / ``variant``
name the cell (e.g. ``add-P23-f0.5-wrong_only`` / ``mlp2-w64-relu`` / ``standard``); how cells map to
these keys is the workflow's choice.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.arithmetic.data import ArithmeticData
from pipeline.arithmetic.model import PROBE_LAYER, ArithmeticMLP, hidden_activations
from pipeline.core.tables import accuracy_row


def default_probes() -> dict[str, object]:
    from pipeline.probes import MASC, VeLPIC

    return {"masc": MASC(), "velpic": VeLPIC()}


def probe_rows(model: ArithmeticMLP, data: ArithmeticData, keys: Mapping, *, epoch: int,
               probes: Mapping[str, object] | None = None,
               fit_labels: tuple[str, ...] = ("corrupted", "true")) -> list[dict]:
    """Fit each probe on ``hidden`` and return pipeline.core.artifacts result rows (``keys``: dataset, model,
    corruption, seed, variant)."""
    from sklearn.base import clone

    probes = default_probes() if probes is None else probes
    X_train = hidden_activations(model, data.a[data.train_idx], data.b[data.train_idx])
    X_test = hidden_activations(model, data.a[data.test_idx], data.b[data.test_idx])
    labels = {"corrupted": data.given, "true": data.true_train}
    y_test = data.true[data.test_idx]
    rows = []
    for name, proto in probes.items():
        setting = "default"
        if hasattr(proto, "get_params"):
            params = proto.get_params()
            setting = ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "default"
        for fit in fit_labels:
            probe = clone(proto).fit(X_train, labels[fit])
            pred_train, pred_test = probe.predict(X_train), probe.predict(X_test)
            common = dict(epoch=epoch, layer=PROBE_LAYER, probe=name, probe_setting=setting, fit_labels=fit)
            for target, y in labels.items():
                rows.append(accuracy_row(keys, split="train", target=target, predictions=pred_train,
                                         labels=y, **common))
            rows.append(accuracy_row(keys, split="test", target="true", predictions=pred_test,
                                     labels=y_test, **common))
    return rows
