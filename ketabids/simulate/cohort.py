"""Synthetic cohorts with a known anatomy -> ketamine response model.

Every participant gets a fractional grey-matter change per atlas region (relative to the
template anatomy, so relative to TIV), built from a global factor, one factor per lobe and a
regional part, plus a small age effect. For ketamine-treated participants the response
follows a probit model on the standardised anatomical score
``mean(frontal change) - mean(cerebellar change)``::

    responder = effect_size * score + e > k,      e ~ N(0, 1)

so more frontal GM pushes towards response and more cerebellar GM towards non-response.
Saline participants respond with the same base rate, independently of anatomy. MADRS
scores are drawn so that the 50 % drop rule reproduces the simulated response.

Because everything is Gaussian, the best balanced accuracy any classifier can reach from the
regional volumes (with or without the measurement noise of the derivative tables) is computed
exactly by ``CohortDesign.best_achievable_bac``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ketabids.data.atlases import load_atlas

FRONTAL = re.compile(r"frontal|orbital|rectus|OFC", re.IGNORECASE)
CEREBELLAR = re.compile(r"cerebel|vermis|vermal", re.IGNORECASE)
_LOBES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("frontal", FRONTAL),
    ("cerebellar", CEREBELLAR),
    ("temporal", re.compile(r"tempor|fusiform|hippocamp|amygdala|entorhinal|planum|heschl|TTG", re.I)),
    ("parietal", re.compile(r"pariet|angular|supramarginal|precuneus|precuneous|postcentral", re.I)),
    ("occipital", re.compile(r"occipital|calcarine|cuneus|cuneal|lingual", re.I)),
)

GLOBAL_SD = 0.03  # shared GM variation (all regions)
LOBE_SD = 0.04  # shared variation within a lobe
REGION_SD = 0.03  # region-specific variation
AGE_SLOPE = -0.002  # fractional GM change per year of age (centred at 45)
SITE_SD = 0.01  # scanner/site offset per region in the derivative tables
REGION_NOISE = 0.02  # measurement noise of a median-sized region (fraction)
TIV_NOISE = 0.01  # measurement noise of TIV (fraction)
KETAMINE_RESPONSE_RATE = 0.525  # paper's discovery cohort
SALINE_RESPONSE_RATE = 0.35
# The MNI152 template's intracranial volume is ~1.9 L, larger than an average adult's (~1.45 L):
# heads are scaled down around 0.92 (TIV ~1.5 L, range ~1.1-1.9 L).
HEAD_SCALE_MEAN = 0.92
HEAD_SCALE_RANGE = (0.84, 1.0)


@dataclass
class CohortDesign:
    """A simulated cohort: participants, their regional GM change and head size, and the truth model."""

    participants: pd.DataFrame
    regional_change: pd.DataFrame
    head_scale: pd.Series
    atlas: str
    effect_size: float = 1.0
    score_weights: pd.Series = field(default_factory=pd.Series)
    measurement_sd: pd.Series = field(default_factory=pd.Series)
    tiv_sd: float = TIV_NOISE

    def anatomy_covariance(self) -> np.ndarray:
        """Covariance of the regional changes within one cohort (regions x regions)."""
        return _anatomy_covariance(self.regional_change.columns)

    def best_achievable_bac(self, *, measured: bool = True) -> float:
        """Bayes-optimal balanced accuracy of the ketamine response from the regional volumes.

        With ``measured`` the regional volumes carry the measurement noise of the derivative
        tables (``write_tables``) and are divided by a noisy TIV; otherwise they are exact.
        """
        cov_z = self.anatomy_covariance()
        c = self.score_weights.reindex(self.regional_change.columns).to_numpy()
        cov_x = cov_z.copy()
        if measured:
            sd = self.measurement_sd.reindex(self.regional_change.columns).to_numpy()
            cov_x += np.diag(sd**2) + self.tiv_sd**2
        w = np.linalg.solve(cov_x, cov_z @ c)  # best linear predictor of the score from x
        var_s, var_u, cov_su = c @ cov_z @ c, w @ cov_x @ w, w @ cov_z @ c
        a = self.effect_size
        # v = (a * s / sd(s) + e) / sqrt(1 + a^2) ~ N(0, 1); responder iff v > k
        rho = a * cov_su / np.sqrt(var_s) / np.sqrt(var_u) / np.sqrt(1 + a**2)
        k = stats.norm.ppf(1 - KETAMINE_RESPONSE_RATE)
        return _bivariate_bac(rho, k)


def _bivariate_bac(rho: float, k: float) -> float:
    """Best BAC of thresholding u for y = [v > k], (u, v) standard bivariate normal with correlation rho."""
    p1 = 1 - stats.norm.cdf(k)
    joint = stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]])

    def negative_bac(t: float) -> float:
        both_high = 1 - stats.norm.cdf(t) - stats.norm.cdf(k) + joint.cdf([t, k])  # P(u > t, v > k)
        low_low = joint.cdf([t, k])  # P(u <= t, v <= k)
        return -0.5 * (both_high / p1 + low_low / (1 - p1))

    best = optimize.minimize_scalar(negative_bac, bounds=(-3, 3), method="bounded")
    return float(-best.fun)


def region_lobes(names: pd.Index | list[str]) -> pd.Series:
    """Lobe of each region name (``frontal``, ``cerebellar``, ..., ``other``)."""
    lobes = []
    for name in names:
        lobes.append(next((lobe for lobe, pattern in _LOBES if pattern.search(name)), "other"))
    return pd.Series(lobes, index=pd.Index(names), name="lobe")


def score_weights(names: pd.Index | list[str]) -> pd.Series:
    """Weights c of the anatomical score c . change: +1/n_frontal on frontal, -1/n_cerebellar on cerebellar."""
    lobes = region_lobes(names)
    weights = pd.Series(0.0, index=lobes.index, name="score_weight")
    for lobe, sign in (("frontal", 1.0), ("cerebellar", -1.0)):
        members = lobes == lobe
        if members.any():
            weights[members] = sign / members.sum()
    return weights


def _anatomy_covariance(names: pd.Index) -> np.ndarray:
    lobes = region_lobes(names).to_numpy()
    same_lobe = (lobes[:, None] == lobes[None, :]).astype(float)
    age_var = (AGE_SLOPE * 12.0) ** 2
    return GLOBAL_SD**2 + age_var + LOBE_SD**2 * same_lobe + REGION_SD**2 * np.eye(len(names))


def _measurement_sd(atlas_name: str, names: pd.Index) -> pd.Series:
    """Per-region measurement noise: larger for small regions (sd ~ 1/sqrt(size))."""
    atlas = load_atlas(atlas_name)
    data = np.asarray(atlas.image.dataobj)
    gm = atlas.gm_labels
    counts = pd.Series(np.bincount(data.ravel().clip(0), minlength=int(gm["index"].max()) + 1))
    sizes = pd.Series(counts.reindex(gm["index"]).to_numpy(dtype=float), index=gm["name"]).reindex(names)
    sd = REGION_NOISE * np.sqrt(sizes.median() / sizes.clip(lower=1))
    return sd.clip(0.01, 0.06).rename("measurement_sd")


def _cohort_table(
    n_discovery: int, n_external: tuple[int, ...], n_saline: int
) -> list[tuple[str, str, str, int]]:
    rows = [("discovery", "ketamine", "siteA", n_discovery)]
    rows += [
        (f"external{i + 1}", "ketamine", f"site{chr(ord('B') + i)}", n) for i, n in enumerate(n_external)
    ]
    rows.append(("saline", "saline", "siteA", n_saline))
    return [row for row in rows if row[3] > 0]


def _madrs(responder: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pre/24 h MADRS totals whose relative drop is >= 0.5 exactly for responders."""
    pre = np.clip(np.round(rng.normal(33, 5, responder.size)), 22, 50).astype(int)
    drop = np.where(
        responder, rng.uniform(0.5, 0.95, responder.size), rng.uniform(-0.1, 0.45, responder.size)
    )
    post = np.round(pre * (1 - drop)).astype(int)
    half = pre // 2
    post = np.where(responder, np.minimum(post, half), np.maximum(post, half + 1))
    return pre, np.clip(post, 0, 60)


def simulate_cohort(
    *,
    n_discovery: int = 99,
    n_external: tuple[int, ...] = (26, 25),
    n_saline: int = 49,
    atlas: str = "neuromorphometrics",
    effect_size: float = 1.0,
    seed: int = 0,
) -> CohortDesign:
    """Draw participants, regional GM changes, head sizes and ketamine/saline responses."""
    rng = np.random.default_rng(seed)
    names = pd.Index(load_atlas(atlas).gm_labels["name"], name="region")
    lobes = region_lobes(names)
    weights = score_weights(names)
    cohorts = _cohort_table(n_discovery, tuple(n_external), n_saline)
    n = sum(row[3] for row in cohorts)
    ids = pd.Index([f"sub-{i + 1:03d}" for i in range(n)], name="participant_id")
    cohort = np.concatenate([[c] * k for c, _, _, k in cohorts])
    treatment = np.concatenate([[t] * k for _, t, _, k in cohorts])
    site = np.concatenate([[s] * k for _, _, s, k in cohorts])
    age = np.clip(np.round(rng.normal(45, 12, n)), 18, 75).astype(int)
    sex = rng.choice(np.array(["F", "M"]), n)

    lobe_names = sorted(set(lobes))
    lobe_factor = rng.normal(0, LOBE_SD, (n, len(lobe_names)))
    lobe_index = np.array([lobe_names.index(lobe) for lobe in lobes])
    change = (
        rng.normal(0, GLOBAL_SD, (n, 1))
        + AGE_SLOPE * (age[:, None] - 45)
        + lobe_factor[:, lobe_index]
        + rng.normal(0, REGION_SD, (n, len(names)))
    )
    regional_change = pd.DataFrame(change, index=ids, columns=names)

    c = weights.to_numpy()
    score = change @ c / np.sqrt(c @ _anatomy_covariance(names) @ c)
    latent = np.where(treatment == "ketamine", effect_size * score, 0.0) + rng.normal(0, 1, n)
    scale = np.where(treatment == "ketamine", np.sqrt(1 + effect_size**2), 1.0)
    rate = np.where(treatment == "ketamine", KETAMINE_RESPONSE_RATE, SALINE_RESPONSE_RATE)
    responder = latent / scale > stats.norm.ppf(1 - rate)
    madrs_pre, madrs_24h = _madrs(responder, rng)

    head_scale = pd.Series(
        np.clip(rng.normal(HEAD_SCALE_MEAN, 0.035, n) + np.where(sex == "M", 0.02, -0.02), *HEAD_SCALE_RANGE),
        index=ids,
        name="head_scale",
    )
    participants = pd.DataFrame(
        {
            "participant_id": ids,
            "treatment": treatment,
            "cohort": cohort,
            "site": site,
            "age": age,
            "sex": sex,
            "madrs_pre": madrs_pre,
            "madrs_24h": madrs_24h,
        }
    )
    return CohortDesign(
        participants=participants,
        regional_change=regional_change,
        head_scale=head_scale,
        atlas=atlas,
        effect_size=effect_size,
        score_weights=weights,
        measurement_sd=_measurement_sd(atlas, names),
    )
