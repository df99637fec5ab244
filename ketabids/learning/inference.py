"""Inference for a frozen model and for cross-validation: permutation tests and honest intervals.

* A fixed model applied to a held-out set is tested against the usual null for a frozen model:
  its predictions are kept and the set's labels are permuted (nothing is refitted, so thousands
  of permutations cost milliseconds). The AUC of fixed scores is the Mann-Whitney statistic, so
  its p-value is the one-sided Mann-Whitney U test.
* Treatment specificity (the paper's key claim): the difference in BAC and AUC between the
  ketamine external set and the saline control set, with a stratified bootstrap interval and a
  permutation p-value obtained by shuffling the treatment labels across the two sets.
* Cross-validated metrics: out-of-fold predictions are not independent (every fold's model
  shares most of its training rows with the others), so their intervals use the corrected
  resampled t of Nadeau & Bengio (2003) over the per-fold metrics of every repeat.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ketabids.learning.metrics import auc, balanced_accuracy, permutation_p_value


def frozen_model_p_values(
    y: np.ndarray, decision: np.ndarray, n_permutations: int, seed: int
) -> dict[str, float]:
    """``p_value`` (BAC, labels permuted) and ``auc_p_value`` (Mann-Whitney) of fixed predictions."""
    y = np.asarray(y).astype(bool)
    decision = np.asarray(decision, dtype=float)
    out = {"p_value": float("nan"), "auc_p_value": float("nan")}
    if y.all() or not y.any():
        return out
    out["auc_p_value"] = float(stats.mannwhitneyu(decision[y], decision[~y], alternative="greater").pvalue)
    if n_permutations > 0:
        rng = np.random.default_rng(seed)
        permuted = np.array([rng.permutation(y) for _ in range(n_permutations)])
        null = balanced_accuracy(permuted, decision > 0)
        out["p_value"] = permutation_p_value(float(balanced_accuracy(y, decision > 0)), null)
    return out


def _bac_auc(y: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """BAC and AUC of each row of (y, decision) matrices: shape (rows, 2)."""
    bac = np.array([balanced_accuracy(t, d > 0) for t, d in zip(y, decision, strict=True)])
    area = np.array([auc(t, d) for t, d in zip(y, decision, strict=True)])
    return np.column_stack([bac, area])


def specificity_test(
    ketamine: tuple[np.ndarray, np.ndarray],
    saline: tuple[np.ndarray, np.ndarray],
    *,
    n_permutations: int,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Ketamine-minus-saline difference in BAC and AUC of one model's predictions.

    ``ketamine`` and ``saline`` are ``(y, decision)`` of the two sets (participants with an
    outcome). Returns the differences, their 95 % percentile intervals from a bootstrap that
    resamples each set separately, and one-sided permutation p-values (ketamine better than
    saline) from shuffling the treatment labels across the pooled participants.
    """
    y_k, d_k = np.asarray(ketamine[0]).astype(bool), np.asarray(ketamine[1], float)
    y_s, d_s = np.asarray(saline[0]).astype(bool), np.asarray(saline[1], float)
    observed = _bac_auc(y_k[None], d_k[None])[0] - _bac_auc(y_s[None], d_s[None])[0]
    out: dict[str, float] = {
        "n": int(y_k.size + y_s.size),
        "n_ketamine": int(y_k.size),
        "n_saline": int(y_s.size),
        "balanced_accuracy": float(observed[0]),
        "auc": float(observed[1]),
    }
    rng = np.random.default_rng(seed)
    if n_bootstrap:
        ik = rng.integers(0, y_k.size, size=(n_bootstrap, y_k.size))
        is_ = rng.integers(0, y_s.size, size=(n_bootstrap, y_s.size))
        boot = _bac_auc(y_k[ik], d_k[ik]) - _bac_auc(y_s[is_], d_s[is_])
        for column, name in enumerate(("balanced_accuracy", "auc")):
            values = boot[:, column][np.isfinite(boot[:, column])]
            low, high = np.percentile(values, [2.5, 97.5]) if values.size else (np.nan, np.nan)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low), float(high)
    if n_permutations > 0:
        y_all, d_all = np.concatenate([y_k, y_s]), np.concatenate([d_k, d_s])
        orders = np.array([rng.permutation(y_all.size) for _ in range(n_permutations)])
        first, second = orders[:, : y_k.size], orders[:, y_k.size :]
        null = _bac_auc(y_all[first], d_all[first]) - _bac_auc(y_all[second], d_all[second])
        out["p_value"] = permutation_p_value(out["balanced_accuracy"], null[:, 0])
        out["auc_p_value"] = permutation_p_value(out["auc"], null[:, 1])
    return out


def corrected_resampled_interval(
    fold_values: np.ndarray, test_fraction: float, level: float = 0.95
) -> tuple[float, float]:
    """Nadeau-Bengio interval: mean +- t * sqrt((1/J + n_test/n_train) * variance) over J folds.

    ``fold_values`` holds a metric of every outer fold of every repeat (NaN where undefined);
    ``test_fraction`` is n_test / n_train of one outer split (1 / (k - 1) for k folds).
    """
    values = np.asarray(fold_values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * np.sqrt(
        (1 / values.size + test_fraction) * values.var(ddof=1)
    )
    return float(values.mean() - half), float(values.mean() + half)
