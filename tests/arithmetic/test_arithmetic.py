"""Arithmetic case study (issue 10): data modes, model, training, Fourier statistics, frequency
filtration with its controls, tables. Small sizes only: the whole file runs in seconds on one core."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.arithmetic import (
    SPLITS,
    ArithmeticMLP,
    TrainSettings,
    Weights,
    add_noise,
    all_pairs,
    apply_task,
    cell_path,
    frequency_filtration,
    hidden_activations,
    load_data,
    make_data,
    neuron_statistics,
    phase_residual,
    phases,
    result_frame,
    run_cell,
    save_data,
    split_pairs,
    train,
    weights_logits,
    weights_of,
    weights_predict,
)
from pipeline.arithmetic.filtration import permute_inputs, random_other_frequency, top_neurons
from pipeline.arithmetic.fourier import dominant_frequency, ipr, ipr_paper, strength
from pipeline.arithmetic.planted import add_isotropic_noise, planted_frequencies, planted_weights
from pipeline.arithmetic.tables import NEURON_COLUMNS, RESULT_COLUMNS, neuron_frame
from pipeline.core.tables import RUN_KEY_COLUMNS

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- data

def test_tasks_and_pairs():
    a, b = all_pairs(7)
    assert a.shape == (49,) and a[8] == 1 and b[8] == 1
    assert apply_task("add", a, b, 7)[7 * 3 + 5] == 1
    assert apply_task("sub", a, b, 7)[7 * 3 + 5] == 5
    assert apply_task("mul", a, b, 7)[7 * 3 + 5] == 1
    with pytest.raises(ValueError, match="allowed"):
        apply_task("div", a, b, 7)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_wrong_only_changes_exactly_round_alpha_n(alpha):
    d = make_data("add", 23, 0.5, alpha, "wrong_only", 0)
    n = d.train_idx.shape[0]
    assert n == round(0.5 * 23 * 23)
    assert d.changed.sum() == round(alpha * n)
    assert np.array_equal(d.changed, d.resampled)  # every redrawn label is wrong
    assert set(d.train_idx) | set(d.test_idx) == set(range(23 * 23))
    assert not set(d.train_idx) & set(d.test_idx)


def test_uniform_changes_about_alpha_times_one_minus_one_over_p():
    P, alpha = 97, 0.5
    d = make_data("add", P, 0.9, alpha, "uniform", 0)
    n = d.train_idx.shape[0]
    assert d.resampled.sum() == round(alpha * n)
    assert abs(d.changed.mean() - alpha * (1 - 1 / P)) < 0.01
    assert 0 < (d.resampled & ~d.changed).sum()  # some redraws kept the true label
    # redrawn labels are uniform over all P classes
    counts = np.bincount(d.given[d.resampled], minlength=P) / d.resampled.sum()
    assert np.abs(counts - 1 / P).max() < 0.01


@pytest.mark.parametrize("task", ["add", "sub"])
def test_symmetric_noise_gives_both_orders_one_wrong_label(task):
    P, alpha = 23, 0.5
    d = make_data(task, P, 0.5, alpha, "symmetric", 3)
    n = d.train_idx.shape[0]
    assert abs(int(d.changed.sum()) - round(alpha * n)) <= 1
    label = {(int(d.a[i]), int(d.b[i])): int(y) for i, y in zip(d.train_idx, d.given, strict=True)}
    changed = {(int(d.a[i]), int(d.b[i])) for i in d.train_idx[d.changed]}
    test_pairs = {(int(d.a[i]), int(d.b[i])) for i in d.test_idx}
    both = 0
    for (x, y), lab in label.items():
        if (y, x) not in label:  # the mirror is a test pair (the split is over ordered pairs)
            assert (y, x) in test_pairs
            continue
        both += 1
        if (x, y) in changed or task == "add":
            assert label[(y, x)] == lab
        if (x, y) in changed:
            assert (y, x) in changed
    for x, y in changed:  # wrong for both orders
        assert label[(x, y)] != apply_task(task, x, y, P) and label[(x, y)] != apply_task(task, y, x, P)
    assert both > n / 3  # about half the training pairs have their mirror in training too


def test_the_split_does_not_depend_on_the_noise_mode_alpha_or_tying(tmp_path):
    """Tied vs untied, asymmetric vs symmetric noise: every cell of one (task, P, fraction, seed)
    trains on the same pairs and is tested on the same pairs (the comparison is like with like)."""
    ref = make_data("add", 23, 0.5, 0.0, "wrong_only", 2)
    for alpha, mode in ((0.3, "symmetric"), (0.8, "symmetric"), (0.3, "wrong_only"), (0.5, "uniform")):
        d = make_data("add", 23, 0.5, alpha, mode, 2)
        assert np.array_equal(d.train_idx, ref.train_idx) and np.array_equal(d.test_idx, ref.test_idx)
    common = {"P": 11, "train_fraction": 0.5, "width": 8, "epochs": 2, "checkpoint_every": 0, "alpha": 0.3,
              "partition": [[0.5, 0.5]], "prune_fractions": [1.0]}
    tied = run_cell({**common, "tied": True, "noise_mode": "symmetric"}, tmp_path / "tied")
    untied = run_cell({**common, "tied": False, "noise_mode": "wrong_only"}, tmp_path / "untied")
    a, b = load_data(tied["labels"]), load_data(untied["labels"])
    assert np.array_equal(a.train_idx, b.train_idx) and np.array_equal(a.test_idx, b.test_idx)


def test_data_is_deterministic_by_seed_and_split_shared_across_alpha(tmp_path):
    d1 = make_data("add", 23, 0.5, 0.5, "wrong_only", 1)
    d2 = make_data("add", 23, 0.5, 0.5, "wrong_only", 1)
    d3 = make_data("add", 23, 0.5, 0.5, "wrong_only", 2)
    d4 = make_data("add", 23, 0.5, 0.8, "uniform", 1)
    assert np.array_equal(d1.train_idx, d2.train_idx) and np.array_equal(d1.given, d2.given)
    assert not np.array_equal(d1.train_idx, d3.train_idx)
    assert np.array_equal(d1.train_idx, d4.train_idx)  # only the noise depends on alpha and mode
    save_data(d1, tmp_path / "labels.npz", config="{}")
    back = load_data(tmp_path / "labels.npz")
    for field in ("train_idx", "test_idx", "given", "resampled", "true"):
        assert np.array_equal(getattr(back, field), getattr(d1, field))
    with np.load(tmp_path / "labels.npz") as z:
        assert np.array_equal(z["changed"], d1.changed)
        assert np.array_equal(z["test"], d1.true[d1.test_idx])  # the test set stays clean
    assert not list(tmp_path.glob(".*.tmp"))


def test_noise_rejects_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        add_noise(np.zeros(4, int), 5, 1.5, "uniform", np.random.default_rng(0))
    with pytest.raises(ValueError, match="allowed"):
        make_data("add", 5, 0.5, 0.1, "flip", 0)
    with pytest.raises(ValueError, match="train_fraction"):
        split_pairs(5, 1.0, 0)


# ----------------------------------------------------------------------------- model

@pytest.mark.parametrize("activation", ["relu", "square", "gelu", "reverse_relu"])
def test_model_hidden_layer_and_weights_view_agree(activation):
    torch.manual_seed(0)
    m = ArithmeticMLP(11, 8, activation)
    a, b = all_pairs(11)
    x = torch.from_numpy(np.stack([a, b], 1))
    logits, acts = m.forward_layers(x)
    assert list(acts) == ["hidden"] and acts["hidden"].shape == (121, 8)
    w = weights_of(m)
    assert w.U.shape == (8, 11) and w.V.shape == (8, 11) and w.W.shape == (11, 8)
    pre = w.U[:, a].T + w.V[:, b].T
    phi = {"relu": lambda z: np.maximum(z, 0), "square": np.square,
           "reverse_relu": lambda z: np.maximum(-z, 0)}.get(activation)
    if phi is not None:
        assert np.allclose(hidden_activations(m, a, b), phi(pre), atol=1e-6)
    assert np.allclose(weights_logits(w, a, b), logits.detach().numpy(), atol=1e-5)
    # the activation swap at inference
    assert np.allclose(weights_logits(w, a, b, "square"), m(x, "square").detach().numpy(), atol=1e-5)


def test_tied_model_shares_embeddings_and_bias_is_optional():
    m = ArithmeticMLP(7, 4, tied=True, bias=False)
    assert m.embed_a.weight is m.embed_b.weight and m.out.bias is None
    w = weights_of(m)
    assert np.array_equal(w.U, w.V) and np.all(w.mu == 0)
    x = torch.tensor([[1, 2], [2, 1]])
    out = m(x)
    assert torch.equal(out[0], out[1])


# ----------------------------------------------------------------------------- Fourier / planted

P_PLANT, FREQS = 59, [4, 11, 17, 25]


@pytest.fixture(scope="module")
def planted():
    return planted_weights(P_PLANT, FREQS, grid=6)


@pytest.mark.parametrize("task", ["add", "sub"])
def test_planted_network_is_exact_and_its_phase_residual_is_zero(task):
    w = planted_weights(P_PLANT, FREQS, grid=6, task=task)
    a, b = all_pairs(P_PLANT)
    assert (weights_predict(w, a, b) == apply_task(task, a, b, P_PLANT)).mean() == 1.0
    assert np.array_equal(dominant_frequency(w), planted_frequencies(FREQS, 6))
    assert np.abs(phase_residual(task, *phases(w))).max() < 1e-9
    assert np.allclose(ipr_paper(w), 1.0)
    stats = neuron_statistics(w, task)
    assert np.allclose(stats["power_frac_u"], 1.0) and np.abs(stats["phase_residual"]).max() < 1e-9


def test_noisy_planted_network_fails_raw_and_ff_recovers_it(planted):
    a, b = all_pairs(P_PLANT)
    c = apply_task("add", a, b, P_PLANT)
    noisy = add_isotropic_noise(planted, 2.0, seed=0)  # noise norm twice the weights' norm
    assert np.isclose(np.linalg.norm(noisy.U - planted.U), 2 * np.linalg.norm(planted.U), rtol=0.05)
    assert (weights_predict(noisy, a, b) == c).mean() < 0.1
    G, R = frequency_filtration(noisy)
    assert (weights_predict(G, a, b) == c).mean() >= 0.99
    assert np.array_equal(dominant_frequency(noisy), planted_frequencies(FREQS, 6))
    # controls: another frequency per neuron, or FF on relabelled inputs, find nothing
    other = random_other_frequency(dominant_frequency(noisy), P_PLANT, np.random.default_rng(0))
    assert np.all(other != dominant_frequency(noisy)) and other.min() >= 1 and other.max() <= 29
    assert (weights_predict(frequency_filtration(noisy, other)[0], a, b) == c).mean() < 0.1
    perm = np.random.default_rng(1).permutation(P_PLANT)
    inv = np.argsort(perm)
    wp = permute_inputs(planted, perm)
    assert np.array_equal(inv[weights_predict(wp, perm[a], perm[b])], weights_predict(planted, a, b))
    Gp = frequency_filtration(wp)[0]
    assert (inv[weights_predict(Gp, perm[a], perm[b])] == c).mean() < 0.1


def test_ff_on_random_weights_is_near_chance_and_g_plus_r_is_exact():
    rng = np.random.default_rng(0)
    P, M = P_PLANT, 128
    w = Weights(U=rng.normal(size=(M, P)), V=rng.normal(size=(M, P)), W=rng.normal(size=(P, M)),
                mu=rng.normal(size=P), activation="relu")
    G, R = frequency_filtration(w)
    for name in ("U", "V", "W", "mu"):
        assert np.allclose(getattr(G, name) + getattr(R, name), getattr(w, name), rtol=0, atol=1e-12)
    a, b = all_pairs(P)
    assert (weights_predict(G, a, b) == apply_task("add", a, b, P)).mean() < 3 / P
    # G is one frequency per neuron: its IPR is 1
    assert np.allclose(ipr(G.U, axis=1), 1.0) and np.allclose(ipr_paper(G), 1.0)


def test_strength_and_partition():
    U = np.array([[1.0, -2.0], [0.5, 0.1]])
    V = np.array([[0.0, 1.0], [0.2, 0.0]])
    W = np.array([[3.0, 0.0], [-1.0, 0.4]])
    w = Weights(U, V, W, np.zeros(2), "relu")
    assert np.allclose(strength(w), [3.0 * 3.0, 0.4 * 0.7])
    assert np.allclose(strength(Weights(U, V, W, np.zeros(2), "square")), [3.0 * 9.0, 0.4 * 0.49])
    assert list(top_neurons(np.array([0.1, 0.9, 0.5, 0.3]), 0.5)) == [1, 2]


def test_ipr_counts_the_dc_bin_or_not_and_the_scores_name_which():
    from pipeline.arithmetic.filtration import neuron_scores, score_names

    P = 23
    i = np.arange(P)
    cosine = np.cos(2 * np.pi * 3 * i / P + 0.4)
    constant = np.full(P, 0.7)
    noise = np.random.default_rng(0).normal(size=(200, P))
    # with DC counted a constant scores 1, exactly like a pure cosine; without it 0
    assert np.isclose(ipr(constant), 1.0) and np.isclose(ipr(cosine), 1.0)
    assert np.isclose(ipr(constant, dc=False), 0.0) and np.isclose(ipr(cosine, dc=False), 1.0)
    assert np.isclose(ipr(cosine + 5.0, dc=False), 1.0) and ipr(cosine + 5.0) > 0.9  # DC dominates it
    # the paper's (||x_hat||_4 / ||x_hat||_2)^4 on the full P-bin DFT, DC left out: half of ours
    full = np.abs(np.fft.fft(noise, axis=1))[:, 1:]
    paper = (full ** 4).sum(1) / (full ** 2).sum(1) ** 2
    assert np.allclose(paper, ipr(noise, axis=1, dc=False) / 2)
    w = Weights(U=noise[:5], V=noise[5:10], W=np.vstack([constant, cosine, noise[10:13]]).T.copy(),
                mu=np.zeros(P))
    assert set(neuron_scores(w, ipr_dc=True)) == set(score_names(True)) == {"ipr", "ipr_doshi", "str"}
    by_nodc = neuron_scores(w, ipr_dc=False)
    assert set(by_nodc) == {"ipr_nodc", "ipr_doshi_nodc", "str"}
    assert by_nodc["ipr_nodc"][0] == 0.0 and np.isclose(neuron_scores(w, ipr_dc=True)["ipr"][0], 1.0)


def test_algorithm_1_takes_separate_gammas_for_the_generalizing_and_the_memorizing_part():
    """A planted adder (pure cosines, IPR 1) beside as many large random neurons: the top gamma_G by
    IPR is the adder, the bottom gamma_R the random part, with gamma_G + gamma_R <= 1 disjoint."""
    from pipeline.arithmetic.filtration import analysis_predictions, partition

    P = 23
    good = planted_weights(P, [2, 5, 9], grid=4)  # 48 neurons, exact for x^2
    rng = np.random.default_rng(1)
    M = good.width
    w = Weights(U=np.vstack([good.U, 3 * rng.normal(size=(M, P))]), V=np.vstack([good.V, 3 * rng.normal(size=(M, P))]),
                W=np.hstack([good.W, 3 * rng.normal(size=(P, M))]), mu=np.zeros(P), activation="square")
    score = ipr_paper(w, dc=False)
    top, bottom = partition(score, 0.5, 0.5)
    assert set(top) == set(range(M)) and set(bottom) == set(range(M, 2 * M))  # disjoint, covering
    top, bottom = partition(score, 0.25, 0.5)
    assert len(top) == M // 2 and len(bottom) == M and not set(top) & set(bottom)
    top, bottom = partition(score, 0.75, 0.5)  # gamma_G + gamma_R > 1: the middle neurons are shared
    assert len(set(top) & set(bottom)) == round(0.25 * 2 * M)
    with pytest.raises(ValueError, match="gamma_R"):
        partition(score, 0.5, 0.0)
    data = make_data("add", P, 0.5, 0.0, "wrong_only", 0)
    rows = {(net, score, frac): pred for net, score, frac, pred in analysis_predictions(
        w, data, partition_gammas=((0.5, 0.5), (0.5, 0.25), (0.25, 0.75)), prune_fractions=(1.0,),
        swap_activations=())}
    true = data.true
    assert (rows[("raw", "none", 1.0)] == true).mean() < 0.5  # the random neurons drown the adder
    assert (rows[("part_G", "ipr_nodc", 0.5)] == true).mean() == 1.0
    assert (rows[("part_R", "ipr_nodc", 0.5)] == true).mean() < 0.2
    # one row per distinct gamma: part_G / part_G_ff carry gamma_G, part_R gamma_R
    assert sorted(f for n, s, f in rows if n == "part_G" and s == "ipr_nodc") == [0.25, 0.5]
    assert sorted(f for n, s, f in rows if n == "part_R" and s == "str") == [0.25, 0.5, 0.75]


def test_the_tables_record_whether_the_weight_decay_was_coupled_or_decoupled():
    from pipeline.arithmetic.tables import run_keys

    base = {"task": "add", "P": 5, "train_fraction": 0.5, "alpha": 0.0, "noise_mode": "wrong_only", "width": 4,
            "activation": "relu", "seed": 0}
    kinds = {(opt, wd): run_keys({**base, "optimizer": opt, "weight_decay": wd})["weight_decay_kind"]
             for opt, wd in (("adamw", 0.1), ("muon", 0.1), ("adam", 0.1), ("sgd", 0.1), ("adam", 0.0))}
    assert kinds == {("adamw", 0.1): "decoupled", ("muon", 0.1): "decoupled", ("adam", 0.1): "coupled_l2",
                     ("sgd", 0.1): "coupled_l2", ("adam", 0.0): "none"}
    assert list(run_keys({**base, "optimizer": "adam", "weight_decay": 0.0}))[-1] == "weight_decay_kind"


# ----------------------------------------------------------------------------- training

def test_training_is_deterministic_and_logs_the_four_sets(tmp_path):
    d = make_data("add", 11, 0.6, 0.3, "wrong_only", 0)
    s = TrainSettings(epochs=20, log_every=5, checkpoint_every=10, seed=4)
    r1 = train(d, {"width": 16}, s, tmp_path)
    r2 = train(d, {"width": 16}, s)
    for k, v in r1.model.state_dict().items():
        assert torch.equal(v, r2.model.state_dict()[k])
    assert list(r1.log["epoch"]) == [0, 5, 10, 15, 20]
    assert {f"acc_{x}" for x in SPLITS} <= set(r1.log.columns)
    assert sorted(r1.checkpoints) == [0, 10, 20]
    assert torch.load(r1.checkpoints[20], weights_only=True).keys() == r1.model.state_dict().keys()
    # mini-batch, MSE, SGD and Adam run and stay deterministic
    for extra in ({"batch_size": 16, "loss": "mse"}, {"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam"}):
        s2 = TrainSettings(epochs=3, seed=1, **extra)
        logs = [train(d, {"width": 8}, s2).log.drop(columns="seconds") for _ in range(2)]
        assert logs[0].equals(logs[1])


def test_tiny_cell_end_to_end_and_tables_schema(tmp_path, capfd):
    from pipeline.core.tables import result_frame as io_result_frame

    settings = {"P": 23, "train_fraction": 0.5, "width": 64, "alpha": 0.5, "epochs": 300, "log_every": 5,
                "checkpoint_every": 150, "weight_decay": 1.0}
    paths = run_cell(settings, tmp_path)
    assert cell_path(settings).startswith("arithmetic/add/P23/")
    res = pd.read_parquet(paths["results"])
    assert list(res.columns) == list(RESULT_COLUMNS)
    result_frame(res)  # validates dtypes, duplicates, counts
    assert set(res["split"]) == set(SPLITS)
    nets = set(res["network"])
    assert {"raw", "G", "R", "swap_square", "swap_reverse_relu", "G_randfreq", "perm_raw", "perm_G",
            "init_raw", "init_G", "part_G", "part_G_ff", "part_R", "prune"} <= nets
    assert sorted(res.loc[res.network == "G", "epoch"].unique()) == [0, 150, 300]
    neurons = pd.read_parquet(paths["neurons"])
    assert list(neurons.columns) == list(NEURON_COLUMNS) and len(neurons) == 3 * 64
    log = pd.read_parquet(paths["train_log"])
    assert log["alpha"].iloc[0] == 0.5 and log["epoch"].iloc[-1] == 300
    index = json.loads(paths["index"].read_text())
    assert index["epochs"] == [0, 150, 300] and index["seconds_total"] > 0
    assert set(res["weight_decay_kind"]) == {"decoupled"}
    # Algorithm 1 and the pruning name their IPR convention (the default leaves the DC bin out)
    assert set(res.loc[res.network == "part_G", "score"]) == {"ipr_nodc", "ipr_doshi_nodc", "str"}
    assert sorted(res.loc[res.network == "part_R", "fraction"].unique()) == [0.5, 0.75, 0.9]
    # MASC / VeLPIC on the hidden layer at the last epoch, in the pipeline's probe-result schema
    probes = pd.read_parquet(paths["probes"])
    io_result_frame(probes)
    assert set(probes["probe"]) == {"masc", "velpic"} and set(probes["layer"]) == {"hidden"}
    assert set(probes["epoch"]) == {300} and set(probes["fit_labels"]) == {"corrupted", "true"}
    assert set(probes["model"]) == {"arith_w64_relu_adamw_wd1"}
    # the network fits the training labels, the noisy ones included, at the last epoch
    last = res[(res.epoch == 300) & (res.network == "raw")].set_index("split")["accuracy"]
    assert last["train_clean"] == 1.0 and last["train_noisy_given"] > 0.9
    # memorization order (the paper's finding, full batch): the noisy labels are fitted *first*;
    # at this size the network memorizes everything and the raw test accuracy stays near 0.
    # (Seeds 0-4: noisy reach 50% at epoch 25, clean at 30-35.)
    def first(col, level=0.5):
        return int(log.loc[log[col] >= level, "epoch"].min())
    assert first("acc_train_noisy_given") < first("acc_train_clean")
    early = log[(log.epoch > 0) & (log.epoch <= 60)]
    assert (early["acc_train_noisy_given"] - early["acc_train_clean"]).mean() > 0
    # the cell's progress line (the rule's log): the cell, the epochs done, the last logged accuracies
    progress = capfd.readouterr().err
    assert cell_path(settings) in progress and "300/300" in progress and "test=" in progress
    assert progress.count("\r") + progress.count("\n") < 50  # refreshed every few seconds, not per epoch


def test_tables_reject_bad_rows():
    from pipeline.arithmetic.tables import run_keys

    keys = run_keys({"task": "add", "P": 5, "train_fraction": 0.5, "alpha": 0.0, "noise_mode": "wrong_only",
                     "width": 4, "activation": "relu", "optimizer": "adamw", "weight_decay": 0.1, "seed": 0})
    # the shared run keys come first, so the tables join with every other table of the pipeline
    assert list(keys)[:5] == list(RUN_KEY_COLUMNS)
    assert {k: keys[k] for k in RUN_KEY_COLUMNS} == {
        "dataset": "arith_add_p5_f0.5", "model": "arith_w4_relu_adamw_wd0.1", "corruption": 0.0, "seed": 0,
        "variant": "wrong_only"}
    assert keys["tied"] is False
    row = {**keys, "epoch": 1, "network": "raw", "score": "none", "fraction": 1.0, "split": "test",
           "accuracy": 0.5, "n_correct": 1, "n_samples": 2}
    assert list(result_frame([row]).dtypes.astype(str)) == list(RESULT_COLUMNS.values())
    with pytest.raises(ValueError, match="duplicate"):
        result_frame([row, row])
    with pytest.raises(ValueError, match="split"):
        result_frame([{**row, "split": "train"}])
    with pytest.raises(ValueError, match="n_correct"):
        result_frame([{**row, "accuracy": 0.9}])
    with pytest.raises(ValueError, match="missing"):
        result_frame([{**row, "network": None}])
    with pytest.raises(ValueError, match="columns"):
        neuron_frame(pd.DataFrame({"neuron": [0]}))


def test_hidden_layer_is_a_probe_layer_for_masc_and_velpic():
    from pipeline.arithmetic import probe_rows
    from pipeline.core.tables import result_frame as io_result_frame

    d = make_data("add", 11, 0.6, 0.3, "wrong_only", 0)
    r = train(d, {"width": 16}, TrainSettings(epochs=30, log_every=30))
    keys = {"dataset": "add-P11", "model": "mlp2-w16-relu", "corruption": 0.3, "seed": 0,
            "variant": "standard"}
    rows = io_result_frame(probe_rows(r.model, d, keys, epoch=30))
    assert set(rows["probe"]) == {"masc", "velpic"} and set(rows["layer"]) == {"hidden"}
    assert len(rows) == 2 * 2 * 3 and rows["accuracy"].between(0, 1).all()


def test_muon_updates_the_matrices_adamw_the_bias_and_fits_the_training_set():
    """The paper's third optimizer: torch.optim.Muon on U, V, W (2-D), AdamW on the bias mu."""
    from pipeline.arithmetic.train import MuonWithAdamW, make_optimizer
    from pipeline.config import validate_config

    d = make_data("add", 11, 0.6, 0.0, "wrong_only", 0)
    s = TrainSettings(epochs=250, log_every=250, optimizer="muon", lr=1e-2, seed=0)
    opt = make_optimizer(train(d, {"width": 64}, TrainSettings(epochs=0)).model, s)
    assert isinstance(opt, MuonWithAdamW)
    assert all(p.ndim == 2 for g in opt.muon.param_groups for p in g["params"])
    assert [p.ndim for g in opt.adamw.param_groups for p in g["params"]] == [1]  # mu
    runs = [train(d, {"width": 64}, s) for _ in range(2)]
    assert runs[0].log.acc_train_clean.iloc[-1] == 1.0 and runs[0].log.acc_train_clean.iloc[0] < 0.3
    assert runs[0].log.drop(columns="seconds").equals(runs[1].log.drop(columns="seconds"))
    no_bias = make_optimizer(train(d, {"width": 8, "bias": False}, TrainSettings(epochs=0)).model, s)
    assert no_bias.adamw is None and set(no_bias.state_dict()) == {"muon", "adamw"}
    assert validate_config({"arithmetic": {"optimizer": ["muon", "adamw"]}})["arithmetic"]["optimizer"] == [
        "muon", "adamw"]
