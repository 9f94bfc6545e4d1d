"""benchmarks/default_run_claims.py, the numbers the README quotes from the default run, on tables
whose answers are known: the final epoch of each run, the best layer of each probe (fitted on the
corrupted labels, scored on the test set against the true labels), the edited model and the
relabel-and-retrain rows, the composites at the final deep epoch and the point-wise consistency."""

import importlib.util
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
KEYS = {"dataset": "digits", "model": "mlp", "seed": 0}


def _claims():
    spec = importlib.util.spec_from_file_location("default_run_claims", REPO / "benchmarks/default_run_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _probe_rows():
    rows = []

    def add(corruption, epoch, layer, probe, setting, accuracy, fit="corrupted", split="test", variant="standard"):
        rows.append({**KEYS, "corruption": corruption, "variant": variant, "epoch": epoch, "layer": layer,
                     "probe": probe, "probe_setting": setting, "fit_labels": fit, "split": split,
                     "target": "true", "accuracy": accuracy})

    for corruption, final in ((0.0, 5), (0.8, 33)):
        for layer, acc in (("fc1", 0.6), ("fc2", 0.7)):
            for probe, setting in (("masc", "variance=0.99"), ("masc", "variance=1"), ("velpic", "sign=class_mean"),
                                   ("linear", "epochs=20"), ("logreg", "C=1.0")):
                add(corruption, final, layer, probe, setting, acc + corruption / 10)
                add(corruption, 0, layer, probe, setting, 0.99)                       # not the final epoch
                add(corruption, final, layer, probe, setting, 0.98, fit="true")        # not corrupted labels
                add(corruption, final, layer, probe, setting, 0.97, split="train")     # not the test set
                add(corruption, final, layer, probe, setting, 0.96, variant="intervene-e12")
        add(corruption, final, "output", "edited_model", "bias=keep,sign=class_mean", 0.5)
        add(corruption, final, "output", "edited_model", "bias=zero,sign=class_mean", 0.1)
        add(corruption, final, "fc2", "relabel_retrain", "protocol=heldout_true", 0.4)
        add(corruption, final, "fc1", "relabel_retrain", "protocol=heldout_true", 0.9, fit="true")
    return pd.DataFrame(rows)


def _train_log():
    rows = []
    for corruption, accs in ((0.0, [0.1, 0.9, 0.95]), (0.8, [0.1, 0.6, 0.3])):
        final = 5 if corruption == 0 else 33
        for epoch, acc in zip([0, 4, final], accs, strict=True):
            rows.append({**KEYS, "corruption": corruption, "variant": "standard", "epoch": epoch, "test_acc": acc})
    return pd.DataFrame(rows)


def test_readme_table_reads_the_final_epoch_best_layer_on_the_corrupted_fit(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    _probe_rows().to_parquet(tables / "probes.parquet")
    _train_log().to_parquet(tables / "train_log.parquet")
    table = _claims().readme_table(tables)
    assert list(table.columns) == ["0%", "80%"]
    assert table.loc["model (its peak during training)", "80%"] == "0.30 (0.60); epoch 33"
    assert table.loc["MASC 0.99, best layer (corrupted-label subspaces)", "80%"] == "0.78 (fc2)"
    assert table.loc["VeLPIC, best layer", "0%"] == "0.70 (fc2)"
    assert table.loc["edited model (VeLPIC vectors as output weights)", "0%"] == "0.50"
    assert table.loc["relabel with corrupted-label MASC subspaces and retrain", "80%"] == "0.40"
    assert table.loc["relabel with true-label MASC subspaces and retrain", "80%"] == "0.90"


def test_dynamics_lines_read_the_final_deep_epoch_and_the_window(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    _train_log().to_parquet(tables / "train_log.parquet")
    comp = [{**KEYS, "corruption": 0.8, "variant": "standard", "depth": "fc2", "deep_epoch": deep,
             "shallow_epoch": shallow, "split": "test", "subset": "all", "label_source": "true",
             "accuracy": acc}
            for deep, shallow, acc in ((33, 0, 0.3), (33, 4, 0.54), (12, 4, 0.99))]
    pd.DataFrame(comp).to_parquet(tables / "composite.parquet")
    point = [{**KEYS, "corruption": 0.8, "variant": "standard", "depth": "fc1", "window_start": 0, "split": "test",
              "consistency": c, "n_epochs": 2} for c in (1.0, 0.5)]
    pd.DataFrame(point).to_parquet(tables / "composite_pointwise.parquet")
    lines = _claims().dynamics(tables)
    assert lines[0] == ("composites at fc2, deep part epoch 33, corruption 0.8 (final network 0.30): "
                        "shallow 0: 0.30, shallow 4: 0.54")
    assert lines[1] == "point-wise test consistency [0, 4] fc1, corruption 0.8: 0.75 (n_epochs [2])"
