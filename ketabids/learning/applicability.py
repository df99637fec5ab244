"""Does the model apply to a participant? Distance of the features to the training cohort.

The distance is the Mahalanobis distance under scikit-learn's Ledoit-Wolf shrinkage covariance,
on the features as the classifier sees them (covariates regressed out, standardised). With more
than ``MAX_FEATURES`` features (voxels) they are first projected on the training cohort's first
``N_COMPONENTS`` principal components, so the covariance stays small.

The reference distribution is the training participants' out-of-fold distances (10 folds: the
preprocessing, projection and covariance are refitted without the participant). In-sample
distances would be too small with ~100 participants and ~100 features, and a new participant
would then look atypical too often. A participant beyond the reference's 99th
percentile is outside the model's domain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.model_selection import KFold

Transform = Callable[[np.ndarray], np.ndarray]
MAX_FEATURES = 1000
N_COMPONENTS = 50
LIMIT_PERCENTILE = 99.0
N_FOLDS = 10


@dataclass
class Domain:
    """What the check needs: optional projection, centre, shrunk precision, reference distances."""

    projection: np.ndarray | None
    centre: np.ndarray
    location: np.ndarray
    precision: np.ndarray
    reference: np.ndarray

    def reduce(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float) - self.centre
        return z if self.projection is None else z @ self.projection.T

    def distance(self, z: np.ndarray) -> np.ndarray:
        """Mahalanobis distances of rows of transformed features ``z``."""
        return _distance(self.reduce(z), self.location, self.precision)

    def percentile(self, z: np.ndarray) -> np.ndarray:
        """Empirical percentile (0-100) of each row's distance among the training cohort's."""
        return self._percentile(self.distance(z))

    def within(self, z: np.ndarray) -> np.ndarray:
        """True where the distance is within the reference's 99th percentile."""
        return self._within(self.distance(z))

    def _percentile(self, distance: np.ndarray) -> np.ndarray:
        return 100.0 * np.searchsorted(np.sort(self.reference), distance, side="right") / self.reference.size

    def _within(self, distance: np.ndarray) -> np.ndarray:
        return distance <= np.percentile(self.reference, LIMIT_PERCENTILE)

    def training_cohort(self) -> tuple[np.ndarray, np.ndarray]:
        """Percentile and within-limit of the training participants' own out-of-fold distances."""
        return self._percentile(self.reference), self._within(self.reference)


def _distance(x: np.ndarray, location: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = x - location
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0))


def _fit(z: np.ndarray) -> Domain:
    """Centre, projection (many features only) and Ledoit-Wolf fit of ``z``, without a reference."""
    centre = z.mean(axis=0)
    projection = None
    if z.shape[1] > MAX_FEATURES:
        _, _, vt = np.linalg.svd(z - centre, full_matrices=False)
        projection = vt[: min(N_COMPONENTS, len(z) - 1)]
    domain = Domain(projection, centre, np.zeros(0), np.zeros((0, 0)), np.zeros(0))
    fit = LedoitWolf().fit(domain.reduce(z))
    domain.location, domain.precision = fit.location_, fit.precision_
    return domain


def identity(rows: np.ndarray) -> Transform:
    """No preprocessing: the rows are already the features the check looks at."""
    return lambda x: np.asarray(x, dtype=float)


def fit_domain(x: np.ndarray, prepare: Callable[[np.ndarray], Transform] = identity, seed: int = 0) -> Domain:
    """Fit the check on the training cohort's rows ``x``.

    ``prepare(rows)`` returns the preprocessing fitted on ``rows`` (covariate residualisation and
    scaling); it is refitted without each fold's participants for their reference distances.
    """
    x = np.asarray(x, dtype=float)
    reference = np.empty(len(x))
    for train, test in KFold(min(N_FOLDS, len(x)), shuffle=True, random_state=seed).split(x):
        transform = prepare(x[train])
        reference[test] = _fit(transform(x[train])).distance(transform(x[test]))
    domain = _fit(prepare(x)(x))
    domain.reference = reference
    return domain
