"""The classifier as a scikit-learn estimator: covariate residualisation, scaling, classifier, calibration.

The feature matrix handed to the pipeline has the features first and the ``n_covariates``
covariate columns last; the residualiser regresses the covariates out of every feature with
coefficients fitted on the training rows only, then drops them.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from ketabids.learning.applicability import Domain, fit_domain
from ketabids.learning.conformal import calibration_scores, prediction_sets
from ketabids.learning.harmonize import SiteEffect, adapt_residuals, site_reference
from ketabids.learning.preprocessing import ResidualParams, apply_residualizer, fit_residualizer

CLASSIFIERS = ("svm-linear", "svm-rbf", "logistic")


class CovariateResidualizer(TransformerMixin, BaseEstimator):
    """Regress the last ``n_covariates`` columns out of the other columns (fitted on training data)."""

    def __init__(self, n_covariates: int = 1):
        self.n_covariates = n_covariates

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        k = self.n_covariates
        if X.ndim != 2 or X.shape[1] <= k:
            raise ValueError(f"expected a 2D matrix with more than {k} columns, got shape {X.shape}")
        return X[:, : X.shape[1] - k], X[:, X.shape[1] - k :]

    def fit(self, X, y=None):
        features, covariates = self._split(X)
        params = fit_residualizer(features, covariates)
        self.cov_mean_, self.cov_scale_, self.coef_ = params.mean, params.scale, params.coef
        self.n_features_in_ = features.shape[1] + self.n_covariates
        return self

    def transform(self, X):
        check_is_fitted(self, "coef_")
        features, covariates = self._split(X)
        if features.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"expected {self.coef_.shape[1]} features, got {features.shape[1]}")
        params = ResidualParams(mean=self.cov_mean_, scale=self.cov_scale_, coef=self.coef_)
        return apply_residualizer(params, features, covariates)


def make_classifier(name: str, C: float, gamma: float | None = None, seed: int = 0):
    """The final estimator of the pipeline for a classifier name."""
    if name == "svm-linear":
        return SVC(kernel="linear", C=C, class_weight="balanced")
    if name == "svm-rbf":
        return SVC(kernel="rbf", C=C, gamma="scale" if gamma is None else gamma, class_weight="balanced")
    if name == "logistic":
        return LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=seed)
    raise ValueError(f"unknown classifier '{name}'; choose from {', '.join(CLASSIFIERS)}")


def build_pipeline(classifier: str, C: float, n_covariates: int, seed: int = 0) -> Pipeline:
    """Residualise covariates -> standardise -> classifier."""
    return Pipeline(
        [
            ("covariates", CovariateResidualizer(n_covariates=n_covariates)),
            ("scale", StandardScaler()),
            ("classifier", make_classifier(classifier, C, seed=seed)),
        ]
    )


def platt_fit(decision: np.ndarray, y: np.ndarray, max_iter: int = 100) -> tuple[float, float]:
    """Platt's sigmoid p = 1 / (1 + exp(-(a d + b))) with the safeguards of Lin, Lin & Weng (2007).

    Minimises the cross-entropy against Platt's smoothed targets by Newton's method with a
    backtracking line search, starting from a = 0 and the prior log-odds, on decision values
    scaled to unit spread (so any decision scale converges). The slope is constrained to a >= 0,
    so that probabilities never run against the decision values: when the unconstrained optimum
    has a < 0 (decisions anti-correlated with the outcome), the constrained optimum is a = 0 and
    b = the log-odds of the mean target. Only one class, or constant decisions, give a = 0.
    """
    decision, y = np.asarray(decision, float), np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    prior = float(np.log((n_pos + 1) / (n_neg + 1)))
    spread = float(decision.std()) if decision.size else 0.0
    if n_pos == 0 or n_neg == 0 or not np.isfinite(spread) or spread == 0:
        return 0.0, prior
    d = decision / spread

    def loss(a: float, b: float) -> float:
        z = a * d + b
        return float(np.sum(np.logaddexp(0, z) - target * z))

    a, b, value = 0.0, prior, loss(0.0, prior)
    for _ in range(max_iter):
        p = expit(a * d + b)
        gradient = np.array([np.sum((p - target) * d), np.sum(p - target)])
        if np.abs(gradient).max() < 1e-8:
            break
        w = p * (1 - p)
        hessian = np.array([[np.sum(w * d * d), np.sum(w * d)], [np.sum(w * d), np.sum(w)]])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        size = 1.0
        while size >= 1e-10:  # backtracking: Armijo condition
            new_a, new_b = a - size * step[0], b - size * step[1]
            new_value = loss(new_a, new_b)
            if new_value < value + 1e-4 * size * float(gradient @ -step):
                break
            size /= 2
        else:
            break  # no decrease along the Newton direction: converged to machine precision
        a, b, value = new_a, new_b, new_value
    if a < 0:
        mean = target.mean()
        return 0.0, float(np.log(mean / (1 - mean)))
    return float(a / spread), float(b)


def platt_apply(decision: np.ndarray, a: float, b: float) -> np.ndarray:
    """Probability of response from decision values."""
    return expit(a * np.asarray(decision, float) + b)


class CalibratedModel(ClassifierMixin, BaseEstimator):
    """A fitted pipeline whose decision values are mapped to probabilities by a Platt sigmoid.

    ``platt_a``/``platt_b`` come from the inner cross-validation's out-of-fold decision values,
    so the calibration never sees the rows it is applied to during validation. Conformal
    calibration (``calibrate_conformal``), the applicability check (``fit_domain``) and the
    reference of site adaptation (``fit_site_reference``) are optional: model files written
    before them have none.
    """

    def __init__(self, pipeline: Pipeline | None = None, platt_a: float = 1.0, platt_b: float = 0.0):
        self.pipeline = pipeline
        self.platt_a = platt_a
        self.platt_b = platt_b

    def fit(self, X, y):
        self.pipeline.fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(self.pipeline.decision_function(X), dtype=float)

    def predict_proba(self, X) -> np.ndarray:
        p = platt_apply(self.decision_function(X), self.platt_a, self.platt_b)
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)

    def calibrate_conformal(self, probability: np.ndarray, y: np.ndarray) -> CalibratedModel:
        """Store the conformal calibration scores of out-of-fold ``probability`` with labels ``y``.

        ``probability`` is (n,) or (repeats, n): the outer CV's out-of-fold probabilities of every
        repeat, whose scores are pooled (each repeat scores every participant once).
        """
        probability = np.atleast_2d(np.asarray(probability, dtype=float))
        labels = np.tile(np.asarray(y).astype(np.int64), probability.shape[0])
        self.conformal_scores_ = calibration_scores(probability.ravel(), labels)
        self.conformal_labels_ = labels
        return self

    def prediction_sets(self, X, alpha: float) -> np.ndarray | None:
        """Boolean (n, 2) Mondrian conformal sets at error level ``alpha``; None without calibration."""
        if getattr(self, "conformal_scores_", None) is None:
            return None
        probability = self.predict_proba(X)[:, 1]
        return prediction_sets(self.conformal_scores_, self.conformal_labels_, probability, alpha)

    def fit_domain(self, X, seed: int = 0) -> CalibratedModel:
        """Fit the applicability check on the training rows ``X`` (features and covariates)."""
        domain = fit_domain(X, lambda rows: clone(self.pipeline[:-1]).fit(rows).transform, seed)
        self.domain_ = {name: getattr(domain, name) for name in Domain.__dataclass_fields__}
        return self

    def applicability(self, X) -> tuple[np.ndarray, np.ndarray] | None:
        """Percentile (0-100) of each row's distance among the training cohort's, and whether it is
        within the 99th percentile; None for model files without the check."""
        if getattr(self, "domain_", None) is None:
            return None
        domain, z = Domain(**self.domain_), self.pipeline[:-1].transform(X)
        return domain.percentile(z), domain.within(z)

    def fit_site_reference(self, X) -> CalibratedModel:
        """Store the training rows' residual mean and variance, the reference of site adaptation."""
        self.site_reference_ = site_reference(self.pipeline[0].transform(X))
        return self

    def adapt_site(self, X, fit_rows: np.ndarray | None = None) -> tuple[np.ndarray, SiteEffect]:
        """Rows ``X`` of one unseen site with their features mapped onto the training reference by
        ComBat (``ketabids.learning.harmonize``), the site's effect estimated on ``fit_rows``
        (boolean, default all); the covariate columns are kept as they are."""
        if getattr(self, "site_reference_", None) is None:
            raise ValueError("the model file stores no site reference (written by an older ketabids)")
        X = np.array(X, dtype=float)
        residuals = self.pipeline[0].transform(X)
        adapted, effect = adapt_residuals(residuals, self.site_reference_, fit_rows)
        X[:, : residuals.shape[1]] += adapted - residuals
        return X, effect
