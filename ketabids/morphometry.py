"""Pure numpy morphometry: regional GM volumes, tissue totals, TIV and image-quality metrics."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

CORE_PROBABILITY = 0.9  # voxels above this tissue probability define the tissue for QC statistics
# Plausible ranges (low, high) for adult T1w scans at 1.5-3 T; a value outside sets ``qc_flag`` = 1
# with the reason, and the group level leaves the scan out. Origins:
PLAUSIBLE: dict[str, tuple[float, float]] = {
    # Adult TIV is about 1.1-1.9 L (Malone et al. 2015, NeuroImage 104:366); 20 % margin either side.
    "tiv_mm3": (900_000.0, 2_300_000.0),
    # Brain-mask volume: adult intracranial contents 1.0-1.8 L; outside, the mask leaks into skull or
    # neck or misses brain (a head-to-brain-template affine reached 2.7 L, DESIGN.md section 3).
    "brain_volume_mm3": (700_000.0, 2_200_000.0),
    # GM/TIV falls from about 0.50 in young adults to 0.35 in old age and WM/TIV stays near 0.30-0.40
    # (CAT12's GM/TIV and WM/TIV reports); bounds leave about 0.05-0.15 of margin.
    "gm_fraction": (0.30, 0.65),
    "wm_fraction": (0.20, 0.55),
    # CJV (Ganzetti et al. 2016, MRIQC's cjv): above 1 the GM and WM intensity spreads exceed their
    # contrast. CNR (MRIQC's cnr) below 1: GM/WM contrast no larger than the noise.
    "cjv": (0.0, 1.0),
    "cnr": (1.0, np.inf),
    # WM SNR (mean / SD of WM): below 5 the WM varies by more than 20 %; phantoms at 3 % noise give 18-24.
    "snr": (5.0, np.inf),
    # Pearson r of the warped bias-corrected brain with the template in the template brain mask.
    # Measured (benchmarks/bench_qc.py): 4 phantom registrations (2 anatomies) 0.86-0.89; a good
    # real adult scan 0.798 and a rotated copy of it 0.816 (issue 7); the same phantom registrations
    # shifted by 5 mm 0.63-0.67, rotated by 10 degrees 0.51-0.56.
    # 0.70 passes good scans with margin and flags misregistrations of about 5 mm / 10 degrees.
    # MRIQC and CAT12 give no absolute bound (CAT12 flags sample outliers below mean - 2 SD).
    "registration_correlation": (0.70, 1.0),
}


def voxel_volume(affine: np.ndarray) -> float:
    """Volume of one voxel (mm³) from a 4x4 affine."""
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))


def regional_gm_volumes(
    gm: np.ndarray, labels: np.ndarray, table: pd.DataFrame, voxel_mm3: float
) -> pd.DataFrame:
    """One row per atlas label of ``table``: GM volume = sum of GM probability x voxel volume.

    Returns ``index``, ``name``, ``tissue``, ``gm_volume_mm3`` and ``region_volume_mm3`` (the
    label's volume in the same space); labels absent from ``labels`` get zero volumes.
    """
    if gm.shape != labels.shape:
        raise ValueError(f"GM map {gm.shape} and label image {labels.shape} differ in shape")
    flat = labels.ravel().astype(np.int64)
    if flat.min(initial=0) < 0:
        raise ValueError("label image has negative labels")
    size = max(int(flat.max(initial=0)), int(table["index"].max())) + 1
    gm_sum = np.bincount(flat, weights=gm.ravel().astype(np.float64), minlength=size)
    counts = np.bincount(flat, minlength=size)
    index = table["index"].to_numpy(dtype=int)
    out = table[["index", "name", "tissue"]].copy().reset_index(drop=True)
    out["gm_volume_mm3"] = gm_sum[index] * voxel_mm3
    out["region_volume_mm3"] = counts[index] * voxel_mm3
    return out


def tissue_volumes(gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    """GM, WM, CSF volumes and TIV (their sum), in mm³, from partial-volume fraction maps.

    The maps are zero outside the intracranial cavity and sum to its fraction inside, so TIV is
    the cavity's volume (CSF outside the brain included), whatever the brain mask.
    """
    volumes = {
        "gm_volume_mm3": float(gm.sum(dtype=np.float64) * voxel_mm3),
        "wm_volume_mm3": float(wm.sum(dtype=np.float64) * voxel_mm3),
        "csf_volume_mm3": float(csf.sum(dtype=np.float64) * voxel_mm3),
    }
    return {"tiv_mm3": sum(volumes.values()), **volumes}


def _tissue_stats(t1w: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    values = t1w[probability > CORE_PROBABILITY]
    if values.size < 2:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1))


def contrast_metrics(t1w: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> dict[str, float]:
    """CNR = |μWM − μGM| / sqrt(σGM² + σWM²), CJV = (σGM + σWM) / |μWM − μGM|, SNR = μWM / σWM.

    Tissue statistics use voxels whose probability exceeds ``CORE_PROBABILITY``.
    """
    mu_gm, sd_gm = _tissue_stats(t1w, gm)
    mu_wm, sd_wm = _tissue_stats(t1w, wm)
    contrast = abs(mu_wm - mu_gm)
    return {
        "cnr": contrast / np.sqrt(sd_gm**2 + sd_wm**2) if contrast > 0 else 0.0,
        "cjv": (sd_gm + sd_wm) / contrast if contrast > 0 else float("inf"),
        "snr": mu_wm / sd_wm if sd_wm > 0 else float("inf"),
    }


def similarity(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two images inside ``mask`` (e.g. warped T1w vs template)."""
    x, y = a[mask > 0].astype(np.float64), b[mask > 0].astype(np.float64)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def tissue_fractions(metrics: Mapping[str, float]) -> dict[str, float]:
    """``gm_fraction`` and ``wm_fraction``: GM and WM volumes over TIV (NaN without a positive TIV)."""
    tiv = metrics.get("tiv_mm3", np.nan)
    if not tiv > 0:
        return {"gm_fraction": np.nan, "wm_fraction": np.nan}
    return {
        "gm_fraction": metrics.get("gm_volume_mm3", np.nan) / tiv,
        "wm_fraction": metrics.get("wm_volume_mm3", np.nan) / tiv,
    }


def qc_flags(metrics: Mapping[str, float]) -> list[str]:
    """One reason per metric outside its plausible range (``PLAUSIBLE``), e.g.
    ``registration_correlation 0.412 < 0.7``; NaN counts as implausible, absent metrics are skipped.
    GM and WM fractions are derived from the volumes when not given."""
    values = {**tissue_fractions(metrics), **metrics} if "tiv_mm3" in metrics else dict(metrics)
    reasons = []
    for name, (low, high) in PLAUSIBLE.items():
        if name not in values:
            continue
        value = float(values[name])
        if np.isnan(value):
            reasons.append(f"{name} is not a number")
        elif value < low:
            reasons.append(f"{name} {value:.3g} < {low:g}")
        elif value > high:
            reasons.append(f"{name} {value:.3g} > {high:g}")
    return reasons


def modulate(gm_in_template: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
    """Jacobian-modulated GM: template-space GM probability x native/template volume ratio."""
    return (gm_in_template * np.clip(jacobian, 0, None)).astype(np.float32)
