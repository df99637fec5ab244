"""Learning engine: equivalence with scikit-learn, no leakage, accuracy against the simulated truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from ketabids.learning import engine, permutation, preprocessing
from ketabids.learning.gather import qc_failure
from ketabids.learning.inputs import load_inputs
from ketabids.learning.metrics import auc, balanced_accuracy, binary_metrics, permutation_p_value
from ketabids.learning.model import CovariateResidualizer, build_pipeline, platt_apply, platt_fit
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import region_lobes, simulate_cohort
from ketabids.simulate.tables import write_tables


def _random_problem(seed: int, n: int = 48, p: int = 12) -> tuple[engine.Data, np.ndarray]:
    rng = np.random.default_rng(seed)
    covariates = rng.normal(1.5, 0.2, (n, 1))
    y = (rng.random(n) < 0.5).astype(float)
    features = rng.normal(size=(n, p)) + 0.8 * y[:, None] * (np.arange(p) < 3) + 2 * covariates
    return engine.Data(features, covariates), y


@pytest.mark.parametrize("classifier", ["svm-linear", "svm-rbf", "logistic"])
def test_engine_matches_gridsearch_pipeline(classifier):
    data, y = _random_problem(1)
    protocol = engine.Protocol(classifier=classifier, c_grid=(0.01, 0.1, 1.0), inner_folds=3)
    train, test = np.arange(36), np.arange(36, 48)
    split = engine.make_split(train, y[train].astype(int), [test], protocol.inner_folds, seed=7)
    result = engine.evaluate(engine.prepare(data, split, classifier), y, protocol)

    matrix = np.column_stack([data.features, data.covariates])
    search = GridSearchCV(
        build_pipeline(classifier, 1.0, n_covariates=1),
        {"classifier__C": list(protocol.c_grid)},
        cv=StratifiedKFold(3, shuffle=True, random_state=7),
        scoring="balanced_accuracy",
    ).fit(matrix[train], y[train].astype(int))
    assert protocol.c_grid[result.c_index] == search.best_params_["classifier__C"]
    np.testing.assert_allclose(result.decisions[0], search.decision_function(matrix[test]), atol=1e-6)


def test_preprocessing_is_fitted_on_training_rows_only():
    data, _ = _random_problem(2)
    train, test = np.arange(30), np.arange(30, 48)
    z_train, (z_test,) = preprocessing.transform_split(data.features, data.covariates, train, [test])
    # wildly change the test rows: nothing learnt on the training rows may move
    changed = engine.Data(data.features.copy(), data.covariates.copy())
    changed.features[test] *= 50
    changed.covariates[test] += 10
    z_train2, (z_test2,) = preprocessing.transform_split(changed.features, changed.covariates, train, [test])
    np.testing.assert_array_equal(z_train, z_train2)
    assert not np.allclose(z_test, z_test2)
    np.testing.assert_allclose(z_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z_train.std(axis=0), 1, atol=1e-12)
    # the residualiser of the saved pipeline learns the same coefficients from the training rows alone
    matrix = np.column_stack([data.features, data.covariates])
    fitted = CovariateResidualizer(n_covariates=1).fit(matrix[train])
    refit = CovariateResidualizer(n_covariates=1).fit(
        np.column_stack([changed.features, changed.covariates])[train]
    )
    np.testing.assert_allclose(fitted.coef_, refit.coef_)
    residual = fitted.transform(matrix[train])
    assert abs(np.corrcoef(residual[:, 0], data.covariates[train, 0])[0, 1]) < 1e-8


def test_metrics_and_platt():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    score = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.6, 0.4, 0.7])
    m = binary_metrics(y, score > 0.5, score, n_bootstrap=200)
    assert m["sensitivity"] == 0.75 and m["specificity"] == 0.75 and m["balanced_accuracy"] == 0.75
    assert m["auc"] == pytest.approx(0.875) and m["ppv"] == 0.75 and m["npv"] == 0.75
    assert m["balanced_accuracy_ci_low"] <= 0.75 <= m["balanced_accuracy_ci_high"]
    assert auc(y, score) == pytest.approx(0.875)
    assert balanced_accuracy(y, np.ones_like(y)) == 0.5
    assert permutation_p_value(0.8, np.array([0.5, 0.9, 0.6, 0.7])) == pytest.approx(2 / 5)
    rng = np.random.default_rng(0)
    decision = rng.normal(size=4000)
    truth = rng.random(4000) < platt_apply(decision, 2.0, 0.5)
    a, b = platt_fit(decision, truth)
    assert a == pytest.approx(2.0, abs=0.25) and b == pytest.approx(0.5, abs=0.15)


def _simulated(tmp_path, n: int, effect: float, seed: int):
    design = simulate_cohort(n_discovery=n, n_external=(), n_saline=0, effect_size=effect, seed=seed)
    write_tables(design, tmp_path / "bids", tmp_path / "out", seed=seed)
    inputs = load_inputs(GroupSettings(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out"))
    data = engine.Data(inputs.features.to_numpy(), inputs.covariates.to_numpy())
    return design, inputs, data, inputs.table["y_true"].to_numpy(dtype=float)


def test_nested_cv_reaches_best_achievable_accuracy(tmp_path):
    """Averaged over three 400-participant cohorts, nested-CV BAC is within 0.05 of the Bayes optimum."""
    protocol = engine.Protocol(c_grid=(0.001, 0.01, 0.1), cv_repeats=1, outer_folds=5, inner_folds=3)
    accuracies, best = [], []
    for seed in range(3):
        design, inputs, data, y = _simulated(tmp_path / str(seed), 400, 1.0, seed)
        rows = np.arange(len(y))
        analysis = permutation.prepare_analysis(data, rows, y, {}, protocol, seed)
        cv = engine.run_cv(data, analysis.cv, y, rows, protocol, want_weights=True)
        accuracies.append(balanced_accuracy(y, cv.mean_decision > 0))
        best.append(design.best_achievable_bac())
        # the pattern: cerebellar regions push to non-response, frontal regions to response
        weights = np.mean(cv.weights, axis=0)
        lobes = region_lobes(inputs.features.columns).to_numpy()
        assert weights[lobes == "frontal"].mean() > 0 > weights[lobes == "cerebellar"].mean()
    assert np.mean(best) - np.mean(accuracies) < 0.05
    assert min(accuracies) > 0.6


def test_pure_noise_is_at_chance_with_uniform_permutation_p(tmp_path):
    protocol = engine.Protocol(c_grid=(0.01, 0.1, 1.0), cv_repeats=2, outer_folds=5, inner_folds=3)
    accuracies, p_values = [], []
    for seed in range(6):
        _, _, data, y = _simulated(tmp_path / str(seed), 80, 0.0, 100 + seed)
        rows = np.arange(len(y))
        analysis = permutation.prepare_analysis(data, rows, y, {}, protocol, seed)
        cv = engine.run_cv(data, analysis.cv, y, rows, protocol)
        observed = permutation.cv_statistics(cv, y)["cv_balanced_accuracy"]
        null = permutation.null_distribution(analysis, y, protocol, 19, seed)
        accuracies.append(observed)
        p_values.append(permutation_p_value(observed, null["cv_balanced_accuracy"].to_numpy()))
    assert abs(np.mean(accuracies) - 0.5) < 0.05
    assert min(p_values) > 0.05 and 0.25 < np.mean(p_values) < 0.75


def test_permutations_are_reproducible_and_parallel_safe(tmp_path):
    _, _, data, y = _simulated(tmp_path, 60, 1.0, 3)
    rows = np.arange(40)
    protocol = engine.Protocol(c_grid=(0.01, 1.0), cv_repeats=1, outer_folds=3, inner_folds=3)
    analysis = permutation.prepare_analysis(data, rows, y, {"held": np.arange(40, 60)}, protocol, 0, n_jobs=2)
    serial = permutation.null_distribution(analysis, y, protocol, 6, seed=5, n_jobs=1)
    parallel = permutation.null_distribution(analysis, y, protocol, 6, seed=5, n_jobs=2)
    assert serial.equals(parallel)
    assert list(serial.columns) == [
        "permutation", "cv_balanced_accuracy", "cv_auc", "held_balanced_accuracy", "held_auc"
    ]  # fmt: skip
    assert serial["cv_balanced_accuracy"].nunique() > 1


def test_qc_flag_excludes():
    assert qc_failure(pd.Series({"tiv_mm3": 1.5e6, "qc_flag": 0, "qc_reasons": float("nan")})) is None
    assert qc_failure(pd.Series({"tiv_mm3": 1.5e6})) is None
    reason = qc_failure(pd.Series({"qc_flag": 1, "qc_reasons": "tiv_mm3;gm_fraction"}))
    assert "qc_flag" in reason and "tiv_mm3;gm_fraction" in reason
