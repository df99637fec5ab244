"""Class-conditional (Mondrian) conformal prediction sets for the response probability.

The conformal maths is crepes' ``ConformalClassifier`` (Boström 2022), Mondrian by label as its
``WrapClassifier(class_cond=True)`` does it: the calibration scores are split by true label, and
the p-value of a candidate label is computed only against the scores of that label. The
non-conformity score is crepes' hinge, 1 - the calibrated probability of the label.

Calibration uses the outer cross-validation's out-of-fold probabilities on the training cohort,
every repeat pooled: each comes from a model built like the final one (C tuned in its own inner
CV, its own Platt sigmoid) that never saw the participant, so its score is distributed like the
final model's score of a new patient, up to the final model seeing the whole cohort rather than
1 - 1/outer_folds of it. (The final model's own inner-CV probabilities are further off: C is
chosen on them, which makes them optimistic, and their models see less of the cohort; the sets
were too small.) Only these numbers are stored in the model file (numpy arrays, no crepes
object); crepes is refitted on them when a model is applied. P-values are not smoothed, so sets
are deterministic. Coverage holds on average over training cohorts; for one cohort it varies
with the calibration set's size (sd about sqrt(alpha (1 - alpha) / n_class) per class).
"""

from __future__ import annotations

import numpy as np
from crepes import ConformalClassifier
from crepes.extras import hinge

DEFAULT_ALPHA = 0.10
LABELS = np.array([0, 1])


def calibration_scores(probability: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-conformity (1 - probability of the true label) of calibration participants."""
    probability = np.asarray(probability, dtype=float)
    return hinge(np.column_stack([1 - probability, probability]), LABELS, np.asarray(y).astype(int))


def p_values(scores: np.ndarray, labels: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Label-conditional conformal p-values of labels 0 and 1 (shape (n, 2))."""
    probability = np.asarray(probability, dtype=float)
    classifier = ConformalClassifier().fit(np.asarray(scores, float), bins=np.asarray(labels).astype(int))
    alphas = hinge(np.column_stack([1 - probability, probability]))
    return np.column_stack(
        [
            classifier.predict_p(alphas, np.full(len(probability), label), smoothing=False)[:, label]
            for label in LABELS
        ]
    )


def prediction_sets(
    scores: np.ndarray, labels: np.ndarray, probability: np.ndarray, alpha: float
) -> np.ndarray:
    """Boolean (n, 2): label 0 / label 1 in the set at error level ``alpha``."""
    return p_values(scores, labels, probability) > alpha


def set_label(members: np.ndarray) -> str:
    """``0``, ``1``, ``0,1`` or empty for a row of ``prediction_sets``."""
    return ",".join(str(label) for label in LABELS[np.asarray(members, bool)])
