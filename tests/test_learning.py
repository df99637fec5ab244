"""Learning engine: equivalence with scikit-learn, no leakage, accuracy against the simulated truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict

from ketabids.learning import engine, inference, permutation, preprocessing
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


class _Decision(ClassifierMixin, BaseEstimator):
    """A fitted 'classifier' whose decision values are the first column: to calibrate given decisions."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X):
        return np.asarray(X)[:, 0]

    def predict(self, X):
        return (self.decision_function(X) > 0).astype(int)


def _sklearn_sigmoid(decision: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Probabilities of scikit-learn's public sigmoid calibration fitted on these decisions."""
    X = decision[:, None]
    frozen = FrozenEstimator(_Decision().fit(X, y))
    return CalibratedClassifierCV(frozen, method="sigmoid").fit(X, y).predict_proba(X)[:, 1]


@pytest.mark.parametrize("classifier", ["svm-linear", "logistic"])
@pytest.mark.parametrize(("C", "scale"), [(1e-3, 1e-4), (1.0, 1.0), (1e3, 1e4)])
def test_platt_matches_scikit_learn_sigmoid_calibration(classifier, C, scale):
    """Out-of-fold decisions of both classifiers (C changes their spread 0.05-4.5), rescaled by
    ``scale`` to cover decision scales over eight orders of magnitude."""
    data, y = _random_problem(4, n=120)
    matrix = np.column_stack([data.features, data.covariates])
    decision = scale * cross_val_predict(
        build_pipeline(classifier, C, n_covariates=1), matrix, y.astype(int), cv=5, method="decision_function"
    )
    expected = _sklearn_sigmoid(decision, y.astype(int))
    assert np.corrcoef(expected, decision)[0, 1] > 0  # an informative problem: scikit-learn's slope > 0
    a, b = platt_fit(decision, y)
    np.testing.assert_allclose(platt_apply(decision, a, b), expected, atol=1e-5)


def test_platt_never_inverts_and_survives_extreme_scales():
    rng = np.random.default_rng(3)
    y = rng.random(50) < 0.5
    base = np.where(y, 1.0, -1.0) + rng.normal(0, 1.0, 50)
    reference = platt_apply(base, *platt_fit(base, y))
    target = np.where(y, (y.sum() + 1) / (y.sum() + 2), 1 / ((~y).sum() + 2))
    for scale in (1e-9, 1e9):
        a, b = platt_fit(-scale * base, y)  # anti-correlated: the constrained optimum is a flat line
        assert a == 0 and b == pytest.approx(np.log(target.mean() / (1 - target.mean())))
        a, b = platt_fit(scale * base, y)  # the same probabilities at any decision scale
        np.testing.assert_allclose(platt_apply(scale * base, a, b), reference, atol=1e-8)
    assert platt_fit(np.zeros(10), np.arange(10) % 2) == (0.0, 0.0)


def test_permutations_stay_within_blocks():
    y = np.array([1, 1, 0, 0, 0, 1, 0, 0, 1, 1], dtype=float)
    blocks = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    rows = np.arange(10)
    changed = False
    for index in range(20):
        permuted = permutation.permuted_labels(y, rows, 0, index, blocks)
        for block in (0, 1):
            assert sorted(permuted[blocks == block]) == sorted(y[blocks == block])
        changed |= not np.array_equal(permuted, y)
    assert changed


def test_frozen_model_p_values_and_specificity_against_known_truth():
    rng = np.random.default_rng(8)
    y = rng.random(60) < 0.5
    informative = y + rng.normal(0, 0.6, 60) - 0.5
    noise = rng.normal(size=60)
    p = inference.frozen_model_p_values(y, informative, 999, seed=1)
    assert p["auc_p_value"] == pytest.approx(
        stats.mannwhitneyu(informative[y], informative[~y], alternative="greater").pvalue
    )
    assert p["p_value"] == pytest.approx(1 / 1000)  # no relabelling beats these predictions
    assert inference.frozen_model_p_values(y, noise, 999, seed=1)["p_value"] > 0.05
    assert np.isnan(inference.frozen_model_p_values(np.ones(5), noise[:5], 99, seed=1)["p_value"])
    specific = inference.specificity_test((y, informative), (y, noise), n_permutations=499, seed=2)
    assert (
        specific["balanced_accuracy"] > 0.2 and specific["p_value"] < 0.01 and specific["auc_p_value"] < 0.01
    )
    assert specific["auc_ci_low"] > 0
    reversed_arms = inference.specificity_test((y, noise), (y, informative), n_permutations=499, seed=2)
    assert reversed_arms["p_value"] > 0.9 and reversed_arms["auc"] == pytest.approx(-specific["auc"])


def test_corrected_resampled_interval_is_wider_than_the_naive_one():
    values = np.random.default_rng(0).normal(0.7, 0.1, 100)
    low, high = inference.corrected_resampled_interval(values, test_fraction=1 / 9)
    half = stats.t.ppf(0.975, 99) * np.sqrt((1 / 100 + 1 / 9) * values.var(ddof=1))
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half))
    naive = stats.t.ppf(0.975, 99) * values.std(ddof=1) / 10
    assert high - low > 3 * 2 * naive


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


# Null calibration, fixed before looking at any result: one simulated draw (seed NOISE_SEED) of
# NOISE_COHORTS x NOISE_SIZE ketamine participants without any anatomy -> response effect, split
# into independent cohorts; cohort k uses seed k for its folds and its NOISE_PERMUTATIONS
# permutations. With 19 permutations a p-value is <= 0.05 only when the observed BAC beats all 19
# permuted ones, which under exchangeability happens with probability <= 1/20 (ties lower it).
NOISE_SEED, NOISE_COHORTS, NOISE_SIZE, NOISE_PERMUTATIONS = 20261201, 60, 40, 19


def test_pure_noise_is_at_chance_and_the_permutation_test_holds_its_level():
    design = simulate_cohort(
        n_discovery=NOISE_COHORTS * NOISE_SIZE, n_external=(), n_saline=0, effect_size=0.0, seed=NOISE_SEED
    )
    table = design.participants.set_index("participant_id")
    y_all = ((table["madrs_pre"] - table["madrs_24h"]) / table["madrs_pre"] >= 0.5).to_numpy(dtype=float)
    features = design.regional_change.to_numpy()
    covariates = design.head_scale.to_numpy()[:, None] ** 3
    protocol = engine.Protocol(c_grid=(0.01, 1.0), cv_repeats=1, outer_folds=4, inner_folds=3)
    accuracies, p_values = [], []
    for k in range(NOISE_COHORTS):
        rows = slice(k * NOISE_SIZE, (k + 1) * NOISE_SIZE)
        data, y = engine.Data(features[rows], covariates[rows]), y_all[rows]
        everyone = np.arange(NOISE_SIZE)
        analysis = permutation.prepare_analysis(data, everyone, y, {}, protocol, k)
        cv = engine.run_cv(data, analysis.cv, y, everyone, protocol)
        observed = permutation.cv_statistics(cv, y)["cv_balanced_accuracy"]
        null = permutation.null_distribution(analysis, y, protocol, NOISE_PERMUTATIONS, k)
        accuracies.append(observed)
        p_values.append(permutation_p_value(observed, null["cv_balanced_accuracy"].to_numpy()))
    # leakage shows as too many small p-values: their count must lie in the binomial 99.9 % interval
    low, high = stats.binom.ppf([0.0005, 0.9995], NOISE_COHORTS, 1 / (NOISE_PERMUTATIONS + 1))
    assert low <= np.sum(np.array(p_values) <= 0.05) <= high
    # mean BAC at chance: within 3.29 standard errors (two-sided 99.9 %)
    accuracies = np.array(accuracies)
    assert abs(accuracies.mean() - 0.5) <= 3.29 * accuracies.std(ddof=1) / np.sqrt(NOISE_COHORTS)


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
