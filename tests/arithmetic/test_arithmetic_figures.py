"""Arithmetic grid helpers, tables gathering, figures (what is drawn equals the tables), the
memorization-order check and the plan. Tiny cells only: seconds on one core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.arithmetic.data import SPLITS
from pipeline.arithmetic.grid import CELL_PATTERN, cell_path, cells_by_path, check_cells, figure_names, iter_cells
from pipeline.arithmetic.tables import KEY_COLUMNS, LOG_TABLE_COLUMNS, NEURON_COLUMNS, RESULT_COLUMNS
from pipeline.config import validate_config
from pipeline.core.config import ConfigError
from pipeline.core.tables import RUN_KEY_COLUMNS

torch.set_num_threads(1)

GRID = {"enabled": True, "task": ["add"], "P": [11], "train_fraction": [0.6], "alpha": [0.0, 0.5],
        "noise_mode": ["wrong_only"], "width": [16, 32], "activation": ["relu"], "tied": [False],
        "optimizer": ["adamw"], "weight_decay": [1.0], "seed": [0],
        "extra_grids": [{"alpha": [0.5], "noise_mode": ["symmetric"], "tied": [True], "width": [32]},
                        {"alpha": [0.5], "tied": [True], "width": [32]}],
        "epochs": 60, "log_every": 5, "checkpoint_every": 30, "memorization": {"enabled": True, "epochs": 3}}


def section(**changes) -> dict:
    return validate_config({"arithmetic": {**GRID, **changes}})["arithmetic"]


# ----------------------------------------------------------------------------- grid

def test_grid_cells_paths_and_figures():
    s = section()
    cells = iter_cells(s)
    assert len(cells) == 2 * 2 + 2
    paths = cells_by_path(s)
    assert len(paths) == len(cells)  # one folder per cell
    assert cell_path(cells[0]) == "arithmetic/add/P11/f0.6/a0-wrong_only/w16-relu-untied/adamw-wd1/s0"
    assert all(c["epochs"] == 60 and c["betas"] == [0.9, 0.98] for c in cells)  # common settings
    assert figure_names(s)[-2:] == ["tied", "memorization_order"]
    assert "vs_weight_decay" not in figure_names(s)
    assert "vs_weight_decay" in figure_names(section(weight_decay=[0.0, 1.0]))
    assert figure_names(section(enabled=False)) == []
    # the pattern names every grid key: two cells differing in any grid value have two folders
    for key, other in (("seed", [1]), ("tied", [True]), ("optimizer", ["adam"]), ("train_fraction", [0.5])):
        c = {**cells[0], key: other[0]}
        assert cell_path(c) != cell_path(cells[0]), key
    assert CELL_PATTERN.format(**{k: "x" for k in CELL_PATTERN.split("{")[1:] and
                                  [f.split("}")[0] for f in CELL_PATTERN.split("{")[1:]]}).count("x") == 11


def test_config_refuses_even_p_and_colliding_folders():
    assert check_cells(section()) == []
    with pytest.raises(ConfigError, match="odd P"):
        section(P=[12])
    with pytest.raises(ConfigError, match="share the folder|cell folder named"):
        section(alpha=[0.5, 0.50000001])
    with pytest.raises(ConfigError, match="arithmetic"):
        validate_config({"arithmetic": {"widht": [3]}})
    # the paper grid and the embedded default's schema defaults leave it off
    assert validate_config({})["arithmetic"]["enabled"] is False


def test_paper_and_doshi_configs_plan():
    from pipeline.plan import arithmetic_plan, format_arithmetic_plan, workflow_config

    paper = workflow_config(["config/arithmetic-paper.yaml"])
    ap = arithmetic_plan(paper)
    assert paper["arithmetic"]["P"] == [113] and paper["arithmetic"]["epochs"] == 200_000
    assert ap["widths"] == [2 ** k + 1 for k in range(4, 13)]
    assert ap["cells"] == len(iter_cells(paper["arithmetic"]))
    # compute: cells x epochs x (6 M P n_train + evaluation of all P^2 pairs every log_every)
    expected = sum(200_000 * (6 * c["width"] * 113 * round(c["train_fraction"] * 113 ** 2)
                              + 2 * c["width"] * 113 ** 3 / 10)
                   for c in iter_cells(paper["arithmetic"]))
    assert ap["flops"] == pytest.approx(expected)
    # what the paper ran: Muon and Adam (no decay: torch's default) beside AdamW, each over every
    # width; the training-ratio sweep; a log fine enough for the first 200 epochs
    cells = iter_cells(paper["arithmetic"])
    for optimizer, decay in (("adamw", 0.1), ("adam", 0.0), ("muon", 0.1)):
        assert {c["width"] for c in cells if c["optimizer"] == optimizer} == set(ap["widths"]), optimizer
        assert {c["weight_decay"] for c in cells if c["optimizer"] == optimizer} == {decay}
    assert {c["train_fraction"] for c in cells} == {0.3, 0.5, 0.7}
    assert paper["arithmetic"]["log_every"] <= 20
    header = Path("config/arithmetic-paper.yaml").read_text().split("\narithmetic:")[0]
    assert "not implemented" not in header
    # Adam at decay 0 beside AdamW's 0.1 is the optimizer comparison, drawn with each at its decay
    from pipeline.arithmetic.figures import sweep_values

    assert "vs_weight_decay" not in figure_names(paper["arithmetic"]) and "vs_optimizer" in figure_names(
        paper["arithmetic"])
    row = {**{k: v for k, v in cells[0].items() if k in KEY_COLUMNS}, "dataset": "d", "corruption": 0.3,
           "variant": "v", "weight_decay_kind": "decoupled", "epoch": 1, "score": "none", "fraction": 1.0,
           "split": "test", "accuracy": 0.5}
    rows = pd.DataFrame([{**row, "optimizer": o, "weight_decay": wd, "model": o, "network": n}
                         for o, wd in (("adamw", 0.1), ("adam", 0.0), ("muon", 0.1)) for n in ("raw", "G")])
    assert set(sweep_values(rows, "optimizer")["optimizer"]) == {"adamw", "adam", "muon"}
    text = "\n".join(format_arithmetic_plan(ap))
    assert f"{ap['cells']} cells x 200000 epochs" in text and "FLOPs" in text
    doshi = workflow_config(["config/arithmetic-doshi.yaml"])["arithmetic"]
    assert (doshi["P"], doshi["train_fraction"], doshi["alpha"], doshi["noise_mode"], doshi["width"]) == (
        [97], [0.5], [0.35], ["uniform"], [500])
    assert (doshi["activation"], doshi["loss"], doshi["lr"], doshi["betas"], doshi["weight_decay"]) == (
        ["square"], "mse", 0.01, [0.9, 0.98], [0.0, 5.0, 15.0, 20.0])
    assert doshi["bias"] is False and doshi["init_std"] == pytest.approx(0.5 / 1000 ** (1 / 3))


# ----------------------------------------------------------------------------- tables and figures

@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from pipeline.arithmetic.stages import arithmetic_tables

    root = tmp_path_factory.mktemp("arith")
    s = section()
    from pipeline.arithmetic import run_cell

    indexes = []
    for cell in iter_cells(s):
        paths = run_cell(cell, root / cell_path(cell))
        indexes.append(paths["index"])
    out = {k: root / f"{k}.parquet" for k in ("results", "neurons", "log")}
    arithmetic_tables(indexes, out["results"], out["neurons"], out["log"])
    return {k: pd.read_parquet(p) for k, p in out.items()}


def test_gathered_tables_start_with_the_shared_run_keys(tables):
    for name, columns in (("results", RESULT_COLUMNS), ("neurons", NEURON_COLUMNS), ("log", LOG_TABLE_COLUMNS)):
        df = tables[name]
        assert list(df.columns) == list(columns), name
        assert list(df.columns[:5]) == list(RUN_KEY_COLUMNS)
        assert list(df.dtypes.astype(str)[: len(KEY_COLUMNS)]) == list(KEY_COLUMNS.values())
        assert len(df[list(KEY_COLUMNS)].drop_duplicates()) == 6
    r = tables["results"]
    assert set(r["dataset"]) == {"arith_add_p11_f0.6"}
    assert set(r["model"]) == {"arith_w16_relu_adamw_wd1", "arith_w32_relu_adamw_wd1",
                               "arith_w32_relu_tied_adamw_wd1"}
    assert (r["corruption"] == r["alpha"]).all() and (r["variant"] == r["noise_mode"]).all()


def _line_data(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
            for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_width_figure_draws_the_tables_test_accuracy(tables):
    from pipeline.arithmetic.figures import figure

    r = tables["results"]
    fig = figure("width", tables)
    lines = _line_data(fig.axes[0])
    last = r[(r.epoch == 60) & (r.split == "test") & (r.score == "none") & ~r.tied & (r.noise_mode == "wrong_only")]
    assert set(lines) == {f"alpha={a:g} wrong_only {n}" for a in (0, 0.5) for n in ("raw", "G")}
    for alpha in (0.0, 0.5):
        for network in ("raw", "G"):
            x, y = lines[f"alpha={alpha:g} wrong_only {network}"]
            want = last[(last.alpha == alpha) & (last.network == network)].sort_values("width")
            assert list(x) == [16, 32]
            assert np.allclose(y, want["accuracy"].to_numpy())


def test_epochs_ff_pruning_and_tied_figures_hold_the_tables_values(tables):
    from pipeline.arithmetic.figures import figure

    log, r = tables["log"], tables["results"]
    fig = figure("epochs", tables)
    assert len(fig.axes) == 2  # alpha 0 and 0.5 at the largest width (untied)
    lines = _line_data(fig.axes[1])
    cell = log[(log.alpha == 0.5) & (log.width == 32) & ~log.tied & (log.noise_mode == "wrong_only")]
    cell = cell.sort_values("epoch")
    x, y = lines["noisy train (given labels)"]
    assert np.array_equal(x, cell["epoch"].to_numpy()) and np.allclose(y, cell["acc_train_noisy_given"])
    assert set(lines) == {"clean train", "noisy train (given labels)", "noisy train (true labels)", "test"}

    fig = figure("ff_bars", tables)
    ax = fig.axes[1]
    heights = [p.get_height() for p in ax.patches]
    want = r[(r.epoch == 60) & (r.alpha == 0.5) & (r.width == 32) & ~r.tied & (r.noise_mode == "wrong_only")
             & (r.score == "none")].set_index(["network", "split"])["accuracy"]
    expected = [want[(n, s)] for s in SPLITS for n in ("raw", "G", "R")]
    assert np.allclose(heights, expected)

    fig = figure("pruning", tables)
    scores = sorted(r.loc[r.network == "prune", "score"].unique())
    assert len(fig.axes) == 2 * len(scores)
    x, y = _line_data(fig.axes[len(scores)])["test"]  # alpha 0.5, first score
    want = r[(r.network == "prune") & (r.score == scores[0]) & (r.alpha == 0.5) & (r.width == 32) & ~r.tied
             & (r.noise_mode == "wrong_only") & (r.split == "test")].sort_values("fraction")
    assert np.allclose(x, want["fraction"]) and np.allclose(y, want["accuracy"])

    fig = figure("tied", tables)
    noisy = [p.get_height() for p in fig.axes[0].patches]
    tied = r[(r.epoch == 60) & r.tied & (r.split == "train_noisy_given") & (r.score == "none")]
    want = [tied[(tied.network == n) & (tied.noise_mode == m)]["accuracy"].item()
            for n in ("raw", "G") for m in ("symmetric", "wrong_only")]
    assert np.allclose(noisy, want)


def test_histograms_phase_scatter_and_controls_hold_the_tables_values(tables):
    from pipeline.arithmetic.figures import figure
    from pipeline.arithmetic.fourier import wrap

    n = tables["neurons"]
    last = n[(n.epoch == 60) & (n.width == 32) & ~n.tied & (n.noise_mode == "wrong_only")]
    fig = figure("ipr_hist", tables)
    counts = [p for p in fig.axes[0].patches]
    assert len(counts) == 2  # one step histogram per alpha
    fig = figure("phase_scatter", tables)
    points = fig.axes[0].get_lines()[0]
    x, y = points.get_xdata(), points.get_ydata()
    cell = last[last.alpha == 0.0]
    assert np.allclose(x, wrap(cell["phase_a"] + cell["phase_b"])) and np.allclose(y, cell["phase_c"])
    fig = figure("controls", tables)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[:8] == ["raw", "G", "R", "G_randfreq", "perm_raw", "perm_G", "init_raw", "init_G"]
    with pytest.raises(ValueError, match="unknown arithmetic figure"):
        figure("nope", tables)


def test_draw_writes_the_named_files(tables, tmp_path):
    from pipeline.arithmetic.figures import draw

    outs = draw(["width", "str_hist"], [tmp_path / "a.png", tmp_path / "b.png"], tables, dpi=50)
    assert [p.name for p in outs] == ["a.png", "b.png"] and all(p.exists() for p in outs)
    assert not list(tmp_path.glob(".*tmp*"))


# ----------------------------------------------------------------------------- memorization order

def test_memorization_order_check_on_digits():
    from pipeline.arithmetic.figures import fig_memorization
    from pipeline.arithmetic.memorization import COLUMNS, memorization_order, noisy_labels

    y = np.arange(100) % 10
    given = noisy_labels(y, 10, 0.2, 0)
    assert (given != y).sum() == 20
    df = memorization_order(0.2, epochs=4, hidden=32)
    assert list(df.columns) == list(COLUMNS) and list(df["epoch"]) == [0, 1, 2, 3, 4]
    assert df[[f"acc_{s}" for s in SPLITS]].stack().between(0, 1).all()
    assert set(df["variant"]) == {"memorization_order"} and set(df["corruption"]) == {0.2}
    fig = fig_memorization(df)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert np.allclose(lines["noisy train (given labels)"].get_ydata(), df["acc_train_noisy_given"])
    assert np.allclose(lines["clean train"].get_ydata(), df["acc_train_clean"])
