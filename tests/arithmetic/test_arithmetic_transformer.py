"""The transformer on noisy modular arithmetic and FF of its unembedding (issue 16): the filter keeps
exactly the chosen frequencies, bad settings are refused before training, and on a tiny problem
FF on the unembedding's top frequencies changes the noisy-train accuracy; the stage writes the
before/after table with its settings. Tiny sizes: seconds on one core."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.arithmetic import TRANSFORMER, TransformerSettings, keep_frequencies, top_frequencies, transformer_table
from pipeline.arithmetic.transformer import NETWORKS, before_after, frequency_power, random_frequencies
from pipeline.core.tables import RUN_KEY_COLUMNS, read_parquet_metadata

P = 23
#: a tiny transformer that memorizes its noisy labels in 40 full-batch steps
TINY = {"P": P, "train_fraction": 0.5, "alpha": 0.3, "d_model": 32, "n_heads": 2, "d_mlp": 64,
        "lr": 0.02, "weight_decay": 0.0, "epochs": 40, "top_k": 3, "log_every": 1000, "seed": 0}


def _synthetic_unembedding(rng):
    """(16, P) rows = a DC offset + cosines at frequencies 2, 5, 7, 9 with amplitudes 4, 3, 2, 1
    (random phases per row) + small components at every other frequency."""
    c = np.arange(P)
    amplitudes = {2: 4.0, 5: 3.0, 7: 2.0, 9: 1.0}
    parts = {k: np.stack([a * np.cos(2 * np.pi * k * c / P + rng.uniform(0, 2 * np.pi)) for _ in range(16)])
             for k, a in amplitudes.items()}
    small = sum(0.05 * np.cos(2 * np.pi * k * c / P + rng.uniform(0, 2 * np.pi)) * np.ones((16, 1))
                for k in range(1, (P - 1) // 2 + 1) if k not in amplitudes)
    dc = rng.normal(size=(16, 1)) * np.ones((1, P))
    return dc + sum(parts.values()) + small, parts


def test_filter_keeps_exactly_the_chosen_frequencies():
    W_U, parts = _synthetic_unembedding(np.random.default_rng(0))
    # the ranking reads the power per frequency, cosine and sine together, whatever the phases
    assert top_frequencies(W_U, 3).tolist() == [2, 5, 7]
    assert top_frequencies(W_U, 4).tolist() == [2, 5, 7, 9]
    kept = keep_frequencies(W_U, top_frequencies(W_U, 3))
    # exactly the three planted components: no DC, nothing of frequency 9 or the small ones
    np.testing.assert_allclose(kept, parts[2] + parts[5] + parts[7], atol=1e-10)
    spectrum = np.abs(np.fft.rfft(kept, axis=1))
    outside = np.setdiff1d(np.arange(spectrum.shape[1]), [2, 5, 7])
    assert np.abs(spectrum[:, outside]).max() < 1e-9
    np.testing.assert_allclose(frequency_power(kept)[[2, 5, 7]], frequency_power(W_U)[[2, 5, 7]])
    # a projection: filtering twice changes nothing
    np.testing.assert_allclose(keep_frequencies(kept, [2, 5, 7]), kept, atol=1e-12)
    rand = random_frequencies(P, 5, seed=1)
    assert len(set(rand.tolist())) == 5 and rand.min() >= 1 and rand.max() <= (P - 1) // 2


@pytest.mark.parametrize("bad, culprit", [({"top_k": 12}, "top_k"), ({"P": 24}, "P"),
                                          ({"d_model": 30, "n_heads": 4}, "d_model"),
                                          ({"width": 5}, "width")])
def test_bad_settings_are_refused_before_training(bad, culprit):
    with pytest.raises(Exception, match=culprit):
        TransformerSettings.from_config({**TINY, **bad})


def test_ff_on_the_unembedding_changes_noisy_train_accuracy_and_the_table_has_its_columns(one_torch_thread):
    lines = []
    table = transformer_table(TINY, echo=lines.append)
    assert list(table.columns) == list(TRANSFORMER.columns)
    assert list(table.columns[:5]) == list(RUN_KEY_COLUMNS)
    assert set(table["network"]) == set(NETWORKS) and len(table) == 4 * len(NETWORKS)
    acc = table.set_index(["network", "split"])["accuracy"]
    # the trained transformer fits its noisy labels; keeping 3 of its 11 unembedding frequencies
    # takes most of that fit away
    assert acc["raw", "train_noisy_given"] > 0.9 and acc["raw", "train_clean"] > 0.9
    assert acc["ff", "train_noisy_given"] < acc["raw", "train_noisy_given"] - 0.3
    kept = table[table["network"] == "ff"]["frequencies"].iloc[0].split()
    assert len(kept) == TINY["top_k"]
    wide = before_after(table)
    assert list(wide.index) == ["raw", "ff"] and list(wide.columns) == ["train_clean", "train_noisy_given", "test"]
    assert lines and lines[-1].startswith(f"epoch {TINY['epochs']}/{TINY['epochs']}")


def test_stage_writes_the_table_with_its_settings(tmp_path, one_torch_thread):
    from pipeline.arithmetic.stages import arithmetic_transformer

    out = tmp_path / "tables/arithmetic_transformer.parquet"
    arithmetic_transformer(out, {**TINY, "epochs": 5})
    table = pd.read_parquet(out)
    TRANSFORMER.check(table)
    assert (table["epochs"] == 5).all() and (table["top_k"] == 3).all()
    recorded = json.loads(read_parquet_metadata(out)["config"])["arithmetic"]["transformer"]
    assert recorded["epochs"] == 5 and recorded["d_model"] == 32 and recorded["optimizer"] == "adamw"
