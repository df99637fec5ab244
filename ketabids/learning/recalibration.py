"""Local recalibration of a shared model: refit the intercept and slope of its decision on a site's outcomes.

Logistic recalibration (Cox 1958; Van Calster et al. 2019) keeps the shared pipeline and its
decision values ``d`` and refits the sigmoid ``p = 1 / (1 + exp(-(a d + b)))`` on the local
participants' outcomes. The map is monotone, so discrimination (AUC, and ``y_pred = d > 0``)
is unchanged; only the probabilities move. To compare before and after honestly, the local
probabilities "after" are out-of-fold: each participant's comes from a sigmoid fitted on the
other folds. The child model (fitted on all local participants) keeps its parent's pipeline and
applicability check, gets conformal scores from the local out-of-fold probabilities (the parent's
were computed on the training site's probabilities, which the new sigmoid no longer matches),
and its card points to the parent file's sha256.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import expit, logit
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from ketabids.derivatives import write_text_atomic, write_tsv_atomic
from ketabids.errors import BadDataError, InputMissingError
from ketabids.learning.cohorts import ROLE_CONTROL
from ketabids.learning.decision_curve import decision_curve
from ketabids.learning.model import CalibratedModel
from ketabids.learning.modelfile import save_model, sha256
from ketabids.settings import ColumnNames

CHILD_MODEL = "model_recalibrated.skops"  # its card: model_recalibrated.json
MIN_PER_CLASS = 10  # local responders and non-responders each needed to refit two parameters in CV
FOLDS = 5
N_BINS = 5  # quantile bins of the reliability diagram
REGULARISATION_C = 1e4  # essentially unpenalised; keeps perfectly separated outcomes finite
METHOD = (
    "logistic recalibration: intercept and slope of the shared model's decision refitted on local "
    f"outcomes (scikit-learn LogisticRegression, C={REGULARISATION_C:g}), slope constrained to >= 0"
)
_EPS = 1e-6


def check_outcomes(y: np.ndarray) -> None:
    """Refuse (exit 65) fewer than ``MIN_PER_CLASS`` local responders or non-responders."""
    counts = np.bincount(np.asarray(y).astype(int), minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise BadDataError(
            f"--recalibrate needs at least {MIN_PER_CLASS} local responders and {MIN_PER_CLASS} "
            f"non-responders with outcomes; this dataset has {counts[1]} and {counts[0]}"
        )


def fit_recalibration(decision: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope ``a`` and intercept ``b`` of ``p = expit(a d + b)``; a slope below 0 (the decision runs
    against the outcomes) is replaced by 0 and the outcome's log-odds, so probabilities never
    run against the decision."""
    decision, y = np.asarray(decision, float).reshape(-1, 1), np.asarray(y).astype(int)
    fitted = LogisticRegression(C=REGULARISATION_C, max_iter=1000).fit(decision, y)
    slope, intercept = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
    if slope < 0:
        return 0.0, float(logit(np.clip(y.mean(), _EPS, 1 - _EPS)))
    return slope, intercept


def cross_validated(decision: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold recalibrated probabilities and each participant's fold (stratified ``FOLDS``-fold)."""
    decision, y = np.asarray(decision, float), np.asarray(y).astype(int)
    probability, fold = np.empty(y.size), np.empty(y.size, dtype=int)
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for index, (train, test) in enumerate(splitter.split(decision.reshape(-1, 1), y)):
        a, b = fit_recalibration(decision[train], y[train])
        probability[test], fold[test] = expit(a * decision[test] + b), index
    return probability, fold


def calibration_intercept(y: np.ndarray, probability: np.ndarray) -> float:
    """Calibration-in-the-large: the intercept of a logistic model of ``y`` with ``logit(p)`` as an
    offset (slope fixed at 1); 0 when the mean prediction matches the outcome rate."""
    y, offset = np.asarray(y, float), logit(np.clip(probability, _EPS, 1 - _EPS))
    if y.min() == y.max():
        return float("nan")
    return float(optimize.brentq(lambda alpha: np.sum(y - expit(alpha + offset)), -50, 50))


def calibration_slope(y: np.ndarray, probability: np.ndarray) -> float:
    """Slope of a logistic model of ``y`` on ``logit(p)``: 1 is ideal, below 1 too extreme, above
    1 too modest; NaN when the probabilities are constant."""
    score = logit(np.clip(np.asarray(probability, float), _EPS, 1 - _EPS)).reshape(-1, 1)
    if np.ptp(score) == 0 or np.unique(y).size < 2:
        return float("nan")
    fitted = LogisticRegression(C=np.inf, max_iter=1000).fit(score, np.asarray(y).astype(int))
    return float(fitted.coef_[0, 0])


def calibration_metrics(y: np.ndarray, probability: np.ndarray) -> dict[str, float | None]:
    """Brier score, calibration intercept and slope, and AUC of probabilities against outcomes
    (None where undefined, e.g. the slope of constant probabilities)."""
    y = np.asarray(y).astype(int)
    values = {
        "brier": float(brier_score_loss(y, probability)),
        "calibration_intercept": calibration_intercept(y, probability),
        "calibration_slope": calibration_slope(y, probability),
        "auc": float(roc_auc_score(y, probability)),
    }
    return {name: value if np.isfinite(value) else None for name, value in values.items()}


def reliability(y: np.ndarray, probability: np.ndarray, n_bins: int = N_BINS) -> dict[str, list[float]]:
    """Reliability diagram (quantile bins): mean predicted probability and observed rate per bin."""
    observed, predicted = calibration_curve(
        np.asarray(y).astype(int), probability, n_bins=n_bins, strategy="quantile"
    )
    return {"predicted": predicted.tolist(), "observed": observed.tolist()}


@dataclass
class Recalibration:
    """Local outcomes, the parent's probabilities, the out-of-fold recalibrated ones and the child's map."""

    y: np.ndarray
    decision: np.ndarray
    before: np.ndarray
    after: np.ndarray
    fold: np.ndarray
    slope: float
    intercept: float

    def summary(self) -> dict:
        """Metrics and reliability bins before and after, the fitted map, and the one-sided
        Mann-Whitney p-value of the local decisions (does the model discriminate here at all?)."""
        return {
            "method": METHOD,
            "n": int(self.y.size),
            "n_responders": int(self.y.sum()),
            "n_nonresponders": int((self.y == 0).sum()),
            "folds": FOLDS,
            "slope": self.slope,
            "intercept": self.intercept,
            "discrimination_p_value": float(
                stats.mannwhitneyu(
                    self.decision[self.y == 1], self.decision[self.y == 0], alternative="greater"
                ).pvalue
            ),
            "before": {**calibration_metrics(self.y, self.before), **reliability(self.y, self.before)},
            "after": {**calibration_metrics(self.y, self.after), **reliability(self.y, self.after)},
        }

    def decision_curve(self) -> pd.DataFrame:
        """Net benefit per threshold probability: model before, after, treat-all, treat-none."""
        return decision_curve(self.y, {"before": self.before, "after": self.after})


def recalibrate(decision: np.ndarray, y: np.ndarray, before: np.ndarray, seed: int) -> Recalibration:
    """Cross-validated recalibration of ``decision`` on outcomes ``y`` (``before``: parent's probabilities)."""
    y = np.asarray(y).astype(int)
    check_outcomes(y)
    after, fold = cross_validated(decision, y, seed)
    slope, intercept = fit_recalibration(decision, y)
    return Recalibration(
        y, np.asarray(decision, float), np.asarray(before, float), after, fold, slope, intercept
    )


def child_model(parent: CalibratedModel, recalibration: Recalibration) -> CalibratedModel:
    """The parent with the local sigmoid, and conformal scores of the local out-of-fold probabilities."""
    child = copy.deepcopy(parent)
    child.platt_a, child.platt_b = recalibration.slope, recalibration.intercept
    return child.calibrate_conformal(recalibration.after, recalibration.y)


def child_card(parent_card: dict, parent_sha256: str, recalibration: Recalibration, sites: list[str]) -> dict:
    """The parent's card with the new sigmoid, the local conformal calibration and the provenance."""
    card = {k: v for k, v in parent_card.items() if k not in ("sha256", "model_file", "format", "applied_to")}
    summary = recalibration.summary()
    card["platt"] = {"a": recalibration.slope, "b": recalibration.intercept}
    card["parent_sha256"] = parent_sha256
    card["recalibration"] = {
        "method": METHOD,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_local": summary["n"],
        "n_responders": summary["n_responders"],
        "n_nonresponders": summary["n_nonresponders"],
        "sites": sites,
        "parent_platt": parent_card.get("platt"),
        "brier_before": summary["before"]["brier"],
        "brier_after_out_of_fold": summary["after"]["brier"],
    }
    card["conformal"] = {
        **card.get("conformal", {}),
        "calibration": "local out-of-fold recalibrated probabilities (--recalibrate)",
        "n_calibration": summary["n"],
    }
    return card


def local_outcomes(table: pd.DataFrame, columns: ColumnNames, left_out: np.ndarray) -> np.ndarray:
    """Row positions of the participants whose outcomes recalibrate the model: every participant
    with an outcome except saline controls (their response is not to ketamine) and those whose
    prediction does not apply (``left_out``: flagged by QC, unadapted unseen sites)."""
    rows = np.flatnonzero(
        (table["evaluation"] != ROLE_CONTROL).to_numpy() & table["y_true"].notna().to_numpy() & ~left_out
    )
    if rows.size == 0:
        raise InputMissingError(
            f"--recalibrate needs local outcomes: no ketamine-treated participant with an applicable "
            f"prediction has both '{columns.madrs_pre}' and '{columns.madrs_post}' in participants.tsv "
            "or phenotype/"
        )
    return rows


def write_recalibration(
    parent: CalibratedModel,
    parent_file: Path,
    parent_card: dict,
    table: pd.DataFrame,
    decision: np.ndarray,
    probability: np.ndarray,
    group_dir: Path,
    *,
    columns: ColumnNames,
    seed: int,
    left_out: np.ndarray,
    site_adapted: bool,
) -> dict:
    """Recalibrate on the local outcomes of ``table``; write the child model, ``recalibration.tsv``,
    ``recalibration.json`` and ``decision_curve.tsv`` into ``group_dir``; return them for the report.

    ``decision``/``probability`` are the parent's on every row of ``table`` (after ``--adapt-site``
    when ``site_adapted``); ``left_out`` marks rows whose prediction does not apply."""
    rows = local_outcomes(table, columns, left_out)
    y = table["y_true"].to_numpy(dtype=float)[rows]
    result = recalibrate(decision[rows], y, probability[rows], seed)
    sites = sorted(table["site"].iloc[rows].dropna().astype(str).unique())
    card = child_card(parent_card, sha256(parent_file), result, sites)
    card["recalibration"]["decisions_after_site_adaptation"] = site_adapted
    card = save_model(child_model(parent, result), group_dir / CHILD_MODEL, card)
    participants = pd.DataFrame(
        {
            "participant_id": table.index[rows],
            "cohort": table["cohort"].iloc[rows].to_numpy(),
            "site": table["site"].iloc[rows].to_numpy(),
            "y_true": result.y,
            "decision": result.decision,
            "probability_before": np.round(result.before, 6),
            "probability_after": np.round(result.after, 6),
            "fold": result.fold,
        }
    )
    curve = result.decision_curve()
    summary = {
        **result.summary(),
        "parent_sha256": card["parent_sha256"],
        "model_file": CHILD_MODEL,
        "sha256": card["sha256"],
    }
    write_tsv_atomic(participants, group_dir / "recalibration.tsv")
    write_tsv_atomic(curve.round(6), group_dir / "decision_curve.tsv")
    write_text_atomic(json.dumps(summary, indent=2) + "\n", group_dir / "recalibration.json")
    return {"summary": summary, "decision_curve": curve}
