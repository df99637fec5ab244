"""Site adaptation (``--adapt-site``): map a site the model never saw onto its training cohort.

ComBat (Johnson, Li & Rabinovic 2007; Fortin et al. 2017, 2018) models feature ``g`` of
participant ``j`` at site ``i`` as ``y = alpha_g + x_j beta_g + gamma_ig + delta_ig * eps``: the
covariates ``x`` (TIV, age, sex) act through ``beta`` and are preserved, the site shifts the
location (``gamma``) and scales the spread (``delta``) of what they leave. Here the reference is
frozen: the training cohort, which is not at hand at the new site, only the model file is.

* ``alpha``, ``beta``: the model's own covariate residualisation, fitted on the training cohort;
  ``r = y - alpha - x beta`` is the residual the classifier works on.
* ``m_g``, ``s_g^2``: mean and variance of the training cohort's residuals, stored in the model
  file (``site_reference``) when it is trained.
* The new site's ``z = (r - m) / s`` gives ``gamma_hat`` (mean) and ``delta_hat^2`` (variance)
  per feature; the parametric empirical Bayes step of ComBat shrinks them towards priors fitted
  across features (normal for ``gamma``, inverse gamma for ``delta^2``, by moments) and
  iterates the posterior means to a fixed point.
* The adapted residual ``m + s (z - gamma*) / delta*`` replaces ``r``; the covariate part
  ``alpha + x beta`` stays as it was, so a site with older patients keeps its age effect.
* With a site covariate the training residuals are within-site (each training site's mean is
  zero), and the unseen site, coded with all site columns zero, is scored like participants of
  the first training site after the mapping, consistently.

Outcomes are never used. This is neuroCombat's ``ref_batch`` mode with the new site as the only
other batch, except that neuroCombat refits ``beta`` on both batches pooled: the two coincide
when the new site's residuals are orthogonal to its covariates (tested), and with no covariates.
Neither neuroCombat nor neuroHarmonize can adapt a site they did not see at fitting time
against a frozen reference (neuroCombatFromTraining refuses new batches; neuroHarmonize
returns NaN for them).

``MIN_PARTICIPANTS``: each feature's location and scale at the new site come from its
participants alone. With ``n`` of them the location's standard error is ``delta / sqrt(n)``
reference SDs and the SD's relative error about ``1 / sqrt(2 (n - 1))``: at 20, 0.22 SD and
16 % before shrinkage. In ``benchmarks/bench_adaptation.py`` (4 simulated scanners, the effect
estimated from n of a site's 100 participants) BAC/Brier were 0.707/0.196 at n = 5,
0.716/0.188 at 10, 0.724/0.185 at 20 and 0.723/0.183 at 40: from 20 on, as good as from more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ketabids.errors import BadDataError

if TYPE_CHECKING:
    from ketabids.learning.model import CalibratedModel

MIN_PARTICIPANTS = 20
_TINY = 1e-12


def site_reference(residuals: np.ndarray) -> dict[str, np.ndarray]:
    """The training cohort's per-feature residual mean and variance (``ddof = 0``)."""
    residuals = np.asarray(residuals, dtype=float)
    return {"mean": residuals.mean(axis=0), "var": residuals.var(axis=0)}


@dataclass(frozen=True)
class SiteEffect:
    """A site's empirical Bayes location (reference SDs) and variance ratio, per feature."""

    gamma: np.ndarray
    delta2: np.ndarray


def _inverse_gamma_prior(delta2: np.ndarray) -> tuple[float, float]:
    """Shape and scale of the inverse gamma prior by moments, as ComBat's ``aprior``/``bprior``."""
    mean, var = delta2.mean(), max(delta2.var(ddof=1), _TINY)
    return (2 * var + mean**2) / var, (mean * var + mean**3) / var


def estimate_site(z: np.ndarray, tolerance: float = 1e-8, max_iter: int = 1000) -> SiteEffect:
    """Parametric empirical Bayes location and scale of one site from its standardised rows ``z``."""
    n = len(z)
    gamma_hat = z.mean(axis=0)
    delta_hat = z.var(axis=0, ddof=1)
    delta_hat[delta_hat == 0] = 1.0  # a constant feature: no scale information (as neuroCombat)
    gamma_bar, tau2 = gamma_hat.mean(), max(gamma_hat.var(ddof=1), _TINY)
    a, b = _inverse_gamma_prior(delta_hat)
    gamma, delta2 = gamma_hat, delta_hat
    for _ in range(max_iter):
        new_gamma = (tau2 * n * gamma_hat + delta2 * gamma_bar) / (tau2 * n + delta2)
        sum2 = ((z - new_gamma) ** 2).sum(axis=0)
        new_delta2 = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
        change = max(
            np.max(np.abs(new_gamma - gamma) / np.maximum(np.abs(gamma), _TINY)),
            np.max(np.abs(new_delta2 - delta2) / delta2),
        )
        gamma, delta2 = new_gamma, new_delta2
        if change < tolerance:
            break
    return SiteEffect(gamma=gamma, delta2=delta2)


def adapt_residuals(
    residuals: np.ndarray, reference: dict[str, np.ndarray], fit_rows: np.ndarray | None = None
) -> tuple[np.ndarray, SiteEffect]:
    """One site's residuals mapped onto the reference, with the site effect estimated on
    ``fit_rows`` (boolean; default all rows; ``sites_to_adapt`` checks there are enough) and
    removed from every row."""
    residuals = np.asarray(residuals, dtype=float)
    fit_rows = np.ones(len(residuals), dtype=bool) if fit_rows is None else np.asarray(fit_rows, dtype=bool)
    mean = np.asarray(reference["mean"], dtype=float)
    sd = np.sqrt(np.asarray(reference["var"], dtype=float))
    sd = np.where(sd < _TINY, 1.0, sd)
    z = (residuals - mean) / sd
    effect = estimate_site(z[fit_rows])
    return mean + sd * (z - effect.gamma) / np.sqrt(effect.delta2), effect


def sites_to_adapt(
    model: CalibratedModel,
    sites: pd.Series,
    usable: pd.Series,
    training_sites: list[str] | None,
    source: object,
) -> list[str]:
    """The sites outside ``training_sites``, after checking that they can be adapted.

    ``sites`` and ``usable`` (participants whose measurements may estimate their site's effect,
    i.e. not flagged by QC) are indexed by participant. ``BadDataError`` (exit 65) for a model
    file without the reference, a participant without a site, or an unseen site with fewer than
    ``MIN_PARTICIPANTS`` usable participants.
    """
    if getattr(model, "site_reference_", None) is None:
        raise BadDataError(
            f"{source} stores no site reference (written by an older ketabids): --adapt-site needs a "
            "model trained by this version; retrain it or omit --adapt-site"
        )
    if sites.isna().any():
        raise BadDataError(
            f"participants.tsv: {sites.index[sites.isna()][0]} has no site; --adapt-site needs every "
            "participant's site"
        )
    labels = sites.astype(str)
    unseen = sorted(set(labels) - set(map(str, training_sites or [])))
    for site in unseen:
        members = labels.index[(labels == site).to_numpy()]
        n = int(usable[members].sum())
        if n < MIN_PARTICIPANTS:
            raise BadDataError(
                f"site {site} ({members[0]} and {len(members) - 1} more): {n} participant(s) usable; "
                f"--adapt-site needs at least {MIN_PARTICIPANTS} from each site the model never saw"
            )
    return unseen


def adapt_sites(
    model: CalibratedModel, matrix: np.ndarray, sites: pd.Series, usable: pd.Series, names: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, dict]]:
    """Adapt the sites ``names`` (checked by ``sites_to_adapt``), each from its own usable rows of
    ``matrix`` (features then covariates, rows in the order of ``sites``).

    Returns the matrix, which rows were adapted, and per site its size and the median location
    shift (reference SDs) and scale (SD ratio) that were removed.
    """
    labels = sites.astype(str).to_numpy()
    out = np.array(matrix, dtype=float)
    adapted = np.isin(labels, names)
    summary: dict[str, dict] = {}
    for site in names:
        rows = np.flatnonzero(labels == site)
        out[rows], effect = model.adapt_site(out[rows], usable.to_numpy()[rows])
        summary[site] = {
            "n": int(usable.to_numpy()[rows].sum()),
            "median_location_shift_sd": round(float(np.median(effect.gamma)), 4),
            "median_scale_ratio": round(float(np.median(np.sqrt(effect.delta2))), 4),
        }
    return out, adapted, summary
