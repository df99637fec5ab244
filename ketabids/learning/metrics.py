"""Classification metrics with bootstrap intervals, and permutation p-values."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc", "ppv", "npv")


def balanced_accuracy(y: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """BAC of predictions (last axis = participants; leading axes of either are batched)."""
    y = np.asarray(y).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    sens = (y_pred & y).sum(axis=-1) / np.maximum(y.sum(axis=-1), 1)
    spec = (~y_pred & ~y).sum(axis=-1) / np.maximum((~y).sum(axis=-1), 1)
    return 0.5 * (sens + spec)


def auc(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Area under the ROC curve by the Mann-Whitney statistic (last axis = participants)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    if n_pos == 0 or n_neg == 0:
        return np.full(np.shape(score)[:-1], np.nan)
    ranks = rankdata(score, axis=-1)
    return (ranks[..., y].sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _batched_metrics(y: np.ndarray, y_pred: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics for rows of (y, y_pred, score) matrices (each row one resample)."""
    tp = (y & y_pred).sum(axis=-1)
    tn = (~y & ~y_pred).sum(axis=-1)
    fp = (~y & y_pred).sum(axis=-1)
    fn = (y & ~y_pred).sum(axis=-1)
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    n_pos, n_neg = y.sum(axis=-1), (~y).sum(axis=-1)
    ranks = rankdata(score, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_values = ((ranks * y).sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc_values = np.where((n_pos > 0) & (n_neg > 0), auc_values, np.nan)
    return {
        "balanced_accuracy": 0.5 * (sens + spec),
        "sensitivity": sens,
        "specificity": spec,
        "auc": auc_values,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def binary_metrics(
    y: np.ndarray, y_pred: np.ndarray, score: np.ndarray, *, n_bootstrap: int = 2000, seed: int = 0
) -> dict[str, float]:
    """``n``, class counts, the metrics of ``METRICS`` and 95 % percentile-bootstrap intervals."""
    y = np.asarray(y).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    score = np.asarray(score, dtype=float)
    point = _batched_metrics(y[None], y_pred[None], score[None])
    result: dict[str, float] = {
        "n": int(y.size),
        "n_responders": int(y.sum()),
        "n_nonresponders": int((~y).sum()),
    }
    for name in METRICS:
        result[name] = float(point[name][0])
    if n_bootstrap and y.size > 1:
        idx = np.random.default_rng(seed).integers(0, y.size, size=(n_bootstrap, y.size))
        boot = _batched_metrics(y[idx], y_pred[idx], score[idx])
        for name in METRICS:
            values = boot[name][np.isfinite(boot[name])]
            low, high = np.percentile(values, [2.5, 97.5]) if values.size else (np.nan, np.nan)
            result[f"{name}_ci_low"], result[f"{name}_ci_high"] = float(low), float(high)
    return result


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided p-value (1 + #null >= observed) / (1 + #null); NaN nulls are ignored."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or null.size == 0:
        return float("nan")
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))
