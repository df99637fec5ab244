"""Fold-wise preprocessing as pure numpy: covariate residualisation and standardisation.

The scikit-learn transformers of ``ketabids.learning.model`` and the fast nested-CV engine
both call these functions, so the saved model and the cross-validation do the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


@dataclass(frozen=True)
class ResidualParams:
    """Covariate centring/scaling and the regression coefficients (intercept first)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray


def _safe_scale(values: np.ndarray) -> np.ndarray:
    scale = values.std(axis=0)
    return np.where(scale < _EPS, 1.0, scale)


def fit_residualizer(features: np.ndarray, covariates: np.ndarray) -> ResidualParams:
    """Least-squares fit of every feature on an intercept plus the (standardised) covariates."""
    mean = covariates.mean(axis=0)
    scale = _safe_scale(covariates)
    design = np.column_stack([np.ones(len(features)), (covariates - mean) / scale])
    coef = np.linalg.pinv(design.T @ design) @ (design.T @ features)
    return ResidualParams(mean=mean, scale=scale, coef=coef)


def apply_residualizer(params: ResidualParams, features: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """Features minus their covariate prediction (the intercept is removed too)."""
    design = np.column_stack([np.ones(len(features)), (covariates - params.mean) / params.scale])
    return features - design @ params.coef


def fit_standardizer(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (1 where constant), as ``StandardScaler`` computes them."""
    mean, var = values.mean(axis=0), values.var(axis=0)
    eps, n = np.finfo(np.float64).eps, len(values)
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    return mean, np.where(constant, 1.0, np.sqrt(var))


def transform_split(
    features: np.ndarray, covariates: np.ndarray, train: np.ndarray, others: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fit residualisation and scaling on ``train`` rows; return transformed train and ``others`` rows.

    ``others`` are row-index arrays into the same matrices.
    """
    params = fit_residualizer(features[train], covariates[train])
    resid_train = apply_residualizer(params, features[train], covariates[train])
    mean, scale = fit_standardizer(resid_train)
    out = [(apply_residualizer(params, features[rows], covariates[rows]) - mean) / scale for rows in others]
    return (resid_train - mean) / scale, out
