"""Decision-curve analysis (Vickers & Elkin 2006): net benefit against the threshold probability.

A patient is treated when the predicted probability reaches the threshold ``pt``. Net benefit
counts true positives and charges each false positive at the odds ``pt / (1 - pt)`` a clinician
accepts at that threshold: ``NB = TP/n - FP/n * pt/(1 - pt)``. Treating everyone gives
``prevalence - (1 - prevalence) * pt/(1 - pt)``; treating no one gives 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def net_benefit(y: np.ndarray, probability: np.ndarray, threshold: float) -> float:
    """Net benefit of treating the patients whose ``probability`` is at least ``threshold``."""
    if not 0 < threshold < 1:
        raise ValueError(f"the threshold probability must lie in (0, 1), got {threshold}")
    y = np.asarray(y).astype(bool)
    treated = np.asarray(probability, dtype=float) >= threshold
    n = y.size
    true_pos, false_pos = np.sum(treated & y), np.sum(treated & ~y)
    return float(true_pos / n - false_pos / n * threshold / (1 - threshold))


def decision_curve(
    y: np.ndarray, probabilities: dict[str, np.ndarray], thresholds: np.ndarray = THRESHOLDS
) -> pd.DataFrame:
    """One row per threshold: ``net_benefit_<name>`` per probability set, treat-all and treat-none."""
    y = np.asarray(y).astype(int)
    table = pd.DataFrame({"threshold": thresholds})
    for name, probability in probabilities.items():
        table[f"net_benefit_{name}"] = [net_benefit(y, probability, t) for t in thresholds]
    table["net_benefit_treat_all"] = [net_benefit(y, np.ones(y.size), t) for t in thresholds]
    table["net_benefit_treat_none"] = 0.0
    return table
