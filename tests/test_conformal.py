"""Conformal prediction sets: coverage on simulated data against the nominal level."""

from __future__ import annotations

import numpy as np
import pytest

from ketabids.learning.conformal import calibration_scores, prediction_sets, set_label


def _draw(rng: np.random.Generator, n: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and calibrated-looking probabilities of a moderately informative classifier."""
    y = rng.integers(0, 2, n)
    decision = rng.normal(size=n) + shift * (2 * y - 1)
    return 1 / (1 + np.exp(-decision)), y


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_label_conditional_coverage_is_nominal(alpha):
    """Mean coverage over 40 calibration sets of 100 is in [1 - alpha, 1 - alpha + 1/51] per class."""
    rng = np.random.default_rng(1)
    covered = np.zeros((40, 2))
    for draw in range(40):
        p_cal, y_cal = _draw(rng, 100)
        p_new, y_new = _draw(rng, 1000)
        sets = prediction_sets(calibration_scores(p_cal, y_cal), y_cal, p_new, alpha)
        hit = sets[np.arange(y_new.size), y_new]
        covered[draw] = [hit[y_new == label].mean() for label in (0, 1)]
    mean = covered.mean(axis=0)
    assert np.all(mean > 1 - alpha - 0.01) and np.all(mean < 1 - alpha + 1 / 51 + 0.015), mean


def test_sets_shrink_as_the_error_level_grows_and_are_labelled():
    rng = np.random.default_rng(2)
    p_cal, y_cal = _draw(rng, 200, shift=0.5)
    p_new, _ = _draw(rng, 500, shift=0.5)
    scores = calibration_scores(p_cal, y_cal)
    sizes = [prediction_sets(scores, y_cal, p_new, a).sum(axis=1).mean() for a in (0.05, 0.2, 0.45)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert prediction_sets(scores, y_cal, p_new, 0.05).all(axis=1).mean() > 0.5  # weak model: often both
    assert [set_label(np.array(m)) for m in ([1, 0], [0, 1], [1, 1], [0, 0])] == ["0", "1", "0,1", ""]
