"""Every figure of every family keeps its titles, axis labels and legends inside the canvas.

Parametrized over the three families' figure registries (images ``plots.FIGURES``, dynamics
``figures.FIGURES``, arithmetic ``figures.FIGURES``), each drawn from small tables: the image family's
synthetic result table (tests/images/test_plots.py), dynamics tables built by the family's validated
frames with the pipeline's longest names (``fashion_mnist`` / ``resnet20`` / ``stage1.block2``), and
arithmetic tables made by training and gathering tiny cells with the family's own code. Each is drawn
wide (several corruptions / depths) and narrow (one panel: the title is longer than the figure is
wide), and saved through :func:`pipeline.core.figures.save_figure`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from canvas_checks import off_canvas, titled_texts

from pipeline.arithmetic import figures as arithmetic_figures
from pipeline.core.config import BASE_VARIANT
from pipeline.dynamics import figures as dynamics_figures
from pipeline.dynamics import tables as T
from pipeline.images import plots as image_plots

DATASET, MODEL, DEPTHS = "fashion_mnist", "resnet20", ("stage1.block2", "stage2")
KEYS = {"dataset": DATASET, "model": MODEL, "corruption": 0.0, "seed": 0, "variant": BASE_VARIANT}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# ----------------------------------------------------------------------------- dynamics tables

def _dynamics_tables(corruptions, depths) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    comp, point, sgd, traj = [], [], [], []
    for c in corruptions:
        keys = {**KEYS, "corruption": c}
        for depth in depths:
            for deep, shallow, (split, source) in itertools.product(
                    (4, 8), (0, 4, 8), (("test", "true"), ("train", "corrupted"))):
                # the composite figures draw the training set (the paper's Figs. 2-5)
                acc = float(rng.uniform(0, 1))
                comp.append({**keys, "depth": depth, "deep_epoch": deep, "shallow_epoch": shallow,
                             "split": split, "subset": "all", "label_source": source, "accuracy": acc,
                             "cross_entropy": 2 * acc, "consistency_vs_deep": float(rng.uniform(0, 1)),
                             "consistency_vs_shallow": 0.5, "n_samples": 10, "baseline_agreement": 0.5,
                             "drift_ratio": 0.1})
            for split, (t1, t2) in itertools.product(("test", "train"), ((4, 8), (8, 4))):
                for i in range(6):
                    subset = "all" if split == "test" or c == 0 else ("corrupted" if i % 2 else "clean")
                    point.append({**keys, "depth": depth, "deep_epoch": t2, "window_start": t1, "reference": "paper",
                                  "split": split, "subset": subset, "sample_index": i,
                                  "consistency": float(rng.uniform(0, 1)), "n_epochs": 5, "dense": True})
            for source in ("sgd", "gaussian", "param_isotropic"):
                for m in range(2):
                    eig = np.sort(rng.uniform(0.1, 5.0, 5))[::-1]
                    sgd.append({**keys, "epoch": 3, "depth": depth, "input_index": m, "source": source,
                                "n_updates": 64, "dim": 16384, "dim_tested": 9000, "n_dropped": 7384,
                                "drop_rule": "dz exactly 0 in every draw", "lr": 0.1, "batch_size": 128,
                                "momentum": 0.0,
                                "momentum_mode": "none", "weight_decay": 5e-4, "trace": 20.0,
                                **{f"eig_{i + 1}": float(e) for i, e in enumerate(eig)},
                                "topk_energy": 0.5, "participation_ratio": 2.0, "john_u": 1.0, "p_value": 0.1,
                                "ledoit_wolf_z": 0.0, "srivastava_z": 0.0, "spatial_sign_u": 0.0,
                                "spatial_sign_p_value": 0.5, "n_resamples": 9})
        for e in (0, 5):
            for i in range(3):
                traj.append({**keys, "depth": "bottleneck", "kind": "trajectory", "epoch": e, "sample_index": i,
                             "z1": float(e + i), "z2": float(-e), "label": i, "changed": i == 1})
        for k, (a, b) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
            traj.append({**keys, "depth": "bottleneck", "kind": "region", "epoch": 5, "sample_index": k,
                         "z1": float(a), "z2": float(b), "label": k, "changed": False})
        for e, i in itertools.product((4, 8), range(3)):  # the induction experiment (Figs. 11, 14)
            traj.append({**keys, "depth": depths[0], "kind": "pca", "epoch": e, "sample_index": i,
                         "z1": float(e - i), "z2": float(i), "label": i, "changed": False})
            for k in range(2):
                traj.append({**keys, "depth": depths[0], "kind": "perturbed", "epoch": e, "sample_index": 2 * i + k,
                             "z1": float(e - i) + 0.5, "z2": float(i) - 0.5, "label": (i + k) % 3, "changed": False})
    return {"composite": T.composite_frame(comp), "pointwise": T.pointwise_frame(point),
            "sgd_noise": T.sgd_noise_frame(sgd), "trajectories": T.trajectory_frame(traj)}


#: dynamics.figures with its windows resolved (pipeline.dynamics.windows.figure_options)
DYNAMICS_OPTIONS = {"split": "train", "memory_window": [4, 8], "transfer_window": [8, 4]}
DYNAMICS_CASES = {"wide": ((0.0, 0.8), DEPTHS), "narrow": ((0.0,), DEPTHS[:1])}


# ----------------------------------------------------------------------------- arithmetic tables

@pytest.fixture(scope="module")
def arithmetic_tables(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Three tiny cells (two noise levels, one tied) trained and gathered by the family's stages,
    and the memorization-order check on digits: seconds on one core."""
    import torch

    from pipeline.arithmetic import run_cell
    from pipeline.arithmetic.grid import cell_path, iter_cells
    from pipeline.arithmetic.memorization import memorization_order
    from pipeline.arithmetic.stages import arithmetic_tables as gather
    from pipeline.config import validate_config

    torch.set_num_threads(1)
    grid = {"enabled": True, "task": ["add"], "P": [11], "train_fraction": [0.6], "alpha": [0.0, 0.5],
            "noise_mode": ["wrong_only"], "width": [16], "activation": ["relu"], "tied": [False],
            "optimizer": ["adamw"], "weight_decay": [1.0], "seed": [0],
            "extra_grids": [{"alpha": [0.5], "tied": [True]}], "epochs": 20, "log_every": 5,
            "checkpoint_every": 20}
    section = validate_config({"arithmetic": grid})["arithmetic"]
    root = tmp_path_factory.mktemp("arith_canvas")
    indexes = [run_cell(cell, root / cell_path(cell))["index"] for cell in iter_cells(section)]
    out = {k: root / f"{k}.parquet" for k in ("results", "neurons", "log")}
    gather(indexes, out["results"], out["neurons"], out["log"])
    tables = arithmetic_figures.read_tables(**out)
    tables["memorization"] = pd.concat([memorization_order(a, epochs=2, hidden=16) for a in (0.0, 0.2)],
                                       ignore_index=True)
    return tables


# ----------------------------------------------------------------------------- the check

def _check(fig, tmp_path, name):
    assert titled_texts(fig), f"{name}: no title or label to check"
    bad = off_canvas(fig)
    assert not bad, f"{name}: drawn outside the canvas: {bad}"
    from pipeline.core.figures import save_figure

    out = save_figure(fig, tmp_path / f"{name}.png", dpi=40)
    assert out.stat().st_size > 1_000 and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("case", ["wide", "narrow"])
@pytest.mark.parametrize("name", sorted(image_plots.FIGURES))
def test_image_figures_stay_on_the_canvas(name, case, tmp_path):
    from test_plots import _one_corruption_with_a_long_setting, synthetic_tables

    table, log = synthetic_tables() if case == "wide" else _one_corruption_with_a_long_setting()
    _check(image_plots.render(name, table, log, "digits", "mlp"), tmp_path, name)


@pytest.mark.parametrize("case", sorted(DYNAMICS_CASES))
@pytest.mark.parametrize("name", sorted(dynamics_figures.FIGURES))
def test_dynamics_figures_stay_on_the_canvas(name, case, tmp_path):
    corruptions, depths = DYNAMICS_CASES[case]
    tables = _dynamics_tables(corruptions, depths)
    fig = dynamics_figures.FIGURES[name](tables, DATASET, MODEL, None, DYNAMICS_OPTIONS)
    assert not any("no " in t.get_text() for ax in fig.axes for t in ax.texts), "drew the empty figure"
    _check(fig, tmp_path, name)


@pytest.mark.parametrize("name", sorted(dynamics_figures.FIGURES))
def test_dynamics_empty_figures_stay_on_the_canvas(name, tmp_path):
    tables = {k: df.iloc[0:0] for k, df in _dynamics_tables((0.0,), DEPTHS[:1]).items()}
    fig = dynamics_figures.FIGURES[name](tables, DATASET, MODEL, None)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from canvas_checks import inside

    for ax in fig.axes:
        for text in ax.texts:
            assert inside(text.get_window_extent(renderer), fig.bbox), (name, text.get_text())


@pytest.mark.parametrize("name", sorted(arithmetic_figures.FIGURES))
def test_arithmetic_figures_stay_on_the_canvas(name, arithmetic_tables, tmp_path):
    _check(arithmetic_figures.figure(name, arithmetic_tables), tmp_path, name)


def test_the_narrow_eigen_spectra_title_was_cut_off_before_wrapping():
    """The regression this file guards: one (corruption, depth) panel is narrower than the
    suptitle; unwrapped it sticks out at both edges, wrapped it fits."""
    from pipeline.core.figures import suptitle, wrap_title

    tables = _dynamics_tables((0.0,), DEPTHS[:1])
    fig = dynamics_figures.eigen_spectra(tables["sgd_noise"], DATASET, MODEL)
    title = fig._suptitle.get_text().replace("\n", " ")
    fig.suptitle(title, fontsize=11)
    bad = off_canvas(fig)
    assert any(b.startswith("suptitle") for b in bad), bad
    assert "\n" in wrap_title(fig, title)
    suptitle(fig, title)
    assert not off_canvas(fig)


def test_the_registries_hold_every_figure_the_workflow_draws():
    from pipeline.arithmetic.grid import ALWAYS, SWEPT

    assert set(arithmetic_figures.FIGURES) == {*ALWAYS, *(f"vs_{k}" for k in SWEPT), "tied", "memorization_order"}
    assert {"composite_curves", "consistency_heatmap", "consistency_ecdf", "eigen_spectra",
            "trajectories", "memory", "transferability", "feature_pca", "induction"} == set(dynamics_figures.FIGURES)
