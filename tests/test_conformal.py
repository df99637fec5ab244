"""Conformal prediction sets: coverage on simulated data against the nominal level, and where the
calibration scores of a trained model come from."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ketabids.group import run_group_level
from ketabids.learning.conformal import calibration_scores, prediction_sets, set_label
from ketabids.learning.engine import Data, Protocol, run_cv
from ketabids.learning.inputs import load_inputs
from ketabids.learning.modelfile import load_model
from ketabids.learning.permutation import prepare_analysis
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables


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


def test_calibration_scores_are_the_outer_cv_out_of_fold_probabilities(tmp_path):
    """The model file's conformal scores are those of the outer CV's out-of-fold probabilities of
    every repeat (models built like the final one that never saw the participant), rerun here from
    the same seed; not the final model's inner-CV probabilities, on which its C was chosen."""
    design = simulate_cohort(seed=5, n_discovery=60, n_external=(150,), n_saline=0, effect_size=2.0)
    write_tables(design, tmp_path / "bids", tmp_path / "out", seed=5)
    settings = GroupSettings(
        bids_dir=tmp_path / "bids", output_dir=tmp_path / "out", random_seed=5, n_permutations=0,
        cv_repeats=2, outer_folds=5, inner_folds=3, c_grid=(0.01, 1.0),
    )  # fmt: skip
    run_group_level(settings)
    model, card = load_model(tmp_path / "out" / "group" / "model.skops")

    inputs = load_inputs(replace(settings, response_threshold=settings.threshold))
    train = (inputs.table["evaluation"] == "cv").to_numpy()
    rows, y = np.flatnonzero(train), inputs.table["y_true"].to_numpy(dtype=float)
    data = Data(inputs.features.to_numpy(float), inputs.covariates.to_numpy(float))
    protocol = Protocol(
        classifier="svm-linear", c_grid=(0.01, 1.0), cv_repeats=2, outer_folds=5, inner_folds=3
    )
    cv = run_cv(data, prepare_analysis(data, rows, y, {}, protocol, 5).cv, y, rows, protocol)
    expected = calibration_scores(cv.probability.ravel(), np.tile(y[rows].astype(int), 2))
    np.testing.assert_allclose(np.sort(model.conformal_scores_), np.sort(expected), atol=1e-9)
    assert card["conformal"]["n_scores"] == 2 * rows.size and card["conformal"]["n_calibration"] == rows.size

    predictions = pd.read_csv(tmp_path / "out" / "group" / "predictions.tsv", sep="\t", na_values=["n/a"])
    held = predictions[predictions["evaluation"] == "external"]
    sets = held["prediction_set"].fillna("").astype(str).str.split(",")
    covered = np.mean([str(int(t)) in s for t, s in zip(held["y_true"], sets, strict=True)])
    assert covered >= 0.8  # nominal 0.9; 150 patients and 60 calibration participants: +- ~0.05
