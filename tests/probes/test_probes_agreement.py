"""prediction_agreement / assert_agree: predictions agree on decided samples; near-ties counted."""

import numpy as np
import pytest

from pipeline.probes import Agreement, assert_agree, prediction_agreement
from pipeline.probes.agreement import DEFAULT_EPS_MULTIPLE, float32_resolution

EPS32 = float(np.finfo(np.float32).eps)


def test_identical_decided_scores_agree_everywhere():
    s = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.0, 0.3, 0.6]], np.float32)
    a = prediction_agreement(s, s.copy())
    assert a == Agreement(n=3, n_decided=3, n_decided_disagree=0, n_near_ties=0, n_near_tie_disagree=0)
    assert a.n_disagree == 0 and a.decided_fraction == 1.0
    assert assert_agree(s, s, max_near_ties=0) == a


def test_exact_and_near_ties_are_counted_not_failed():
    s = np.array([[0.5, 0.5, 0.0],              # exact tie: argmax takes class 0 in both
                  [0.8, 0.8 - 2 * EPS32, 0.1],  # near tie (2 eps < 16 eps of 0.8) ...
                  [0.1, 0.2, 0.9]], np.float64)
    t = s.copy()
    t[1] = [0.8 - 2 * EPS32, 0.8, 0.1]          # ... broken the other way, as another BLAS might
    a = prediction_agreement(s, t)
    assert (a.n, a.n_decided, a.n_decided_disagree, a.n_near_ties, a.n_near_tie_disagree) == (3, 1, 0, 2, 1)
    assert a.n_disagree == 1 and a.decided_fraction == pytest.approx(1 / 3)
    assert_agree(s, t, max_near_ties=2)
    with pytest.raises(AssertionError, match=r"2 near-ties of 3 samples, more than the 1 allowed"):
        assert_agree(s, t, max_near_ties=1)


def test_a_near_tie_in_one_array_only_is_a_near_tie():
    a = np.array([[1.0, 1.0 - 3 * EPS32]])          # tie within the resolution here
    b = np.array([[1.0 - 3 * EPS32, 1.0 + 20 * EPS32]])  # decided (23 eps) here, the other way
    agreement = prediction_agreement(a, b)
    assert (agreement.n_decided, agreement.n_near_ties, agreement.n_near_tie_disagree) == (0, 1, 1)


def test_a_flipped_decided_row_fails_with_its_row_and_scores():
    rng = np.random.default_rng(0)
    s = rng.random((50, 4)).astype(np.float32)
    s[np.arange(50), rng.integers(0, 4, 50)] += 1.0  # every row decided
    t = s.copy()
    t[7] = t[7, ::-1]  # the winner moves to another class, far above the resolution
    assert np.argmax(s[7]) != np.argmax(t[7])
    a = prediction_agreement(s, t)
    assert (a.n_decided, a.n_decided_disagree, a.n_near_ties, a.decided_disagreements) == (50, 1, 0, (7,))
    with pytest.raises(AssertionError, match=r"route x: 1 of 50 decided predictions differ \(rows \[7\]\).*row 7: a="):
        assert_agree(s, t, what="route x")
    with pytest.raises(AssertionError, match="decided predictions differ"):
        a.check()


def test_the_default_resolution_is_16_float32_eps_of_the_row_magnitude():
    assert DEFAULT_EPS_MULTIPLE == 16
    a = np.array([[2.0, -4.0], [0.0, 0.0], [1e-3, 0.0]])
    b = np.array([[2.0, -3.0], [0.0, 0.0], [0.0, 1e-3]])
    np.testing.assert_array_equal(float32_resolution(a, b), 16 * EPS32 * np.array([4.0, 0.0, 1e-3]))
    # the resolution scales with the scores: a gap of 10 eps of the magnitude is a near-tie at
    # any scale, 20 eps is decided
    for scale in (1e-6, 1.0, 1e6):
        near = np.array([[1.0, 1.0 - 10 * EPS32]]) * scale
        decided = np.array([[1.0, 1.0 - 20 * EPS32]]) * scale
        assert prediction_agreement(near, near).n_near_ties == 1
        assert prediction_agreement(decided, decided).n_decided == 1
    # a row of zeros is an exact tie: resolution 0, gap 0, a near-tie (predicted alike)
    z = prediction_agreement(np.zeros((2, 3)), np.zeros((2, 3)))
    assert (z.n_near_ties, z.n_near_tie_disagree) == (2, 0)


def test_an_explicit_resolution_scalar_or_per_row():
    s = np.array([[1.0, 0.9], [1.0, 0.99]])
    assert prediction_agreement(s, s, resolution=0.05).n_near_ties == 1
    assert prediction_agreement(s, s, resolution=[0.2, 0.0]).n_near_ties == 1  # row 0 tied, row 1 not
    assert prediction_agreement(s, s, resolution=0).n_decided == 2
    for bad in (-1.0, np.nan, [0.1, 0.1, 0.1], [[0.1]]):
        with pytest.raises(ValueError, match="resolution"):
            prediction_agreement(s, s, resolution=bad)


def test_one_class_is_always_decided_and_inputs_are_checked():
    one = np.array([[0.3], [0.0]])
    assert prediction_agreement(one, one).n_decided == 2
    assert prediction_agreement(np.zeros((0, 3)), np.zeros((0, 3))) == Agreement(0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="different shapes"):
        prediction_agreement(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        prediction_agreement(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        prediction_agreement(np.array([[np.nan, 1.0]]), np.array([[0.0, 1.0]]))


def test_the_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, pipeline.probes.agreement; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
