"""Morphometry on tiny arrays against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ketabids import morphometry


def test_voxel_volume_from_affine():
    affine = np.diag([2.0, 3.0, 0.5, 1.0])
    affine[:3, :3] = affine[:3, :3] @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])  # axis swap keeps volume
    assert morphometry.voxel_volume(affine) == pytest.approx(3.0)


def test_regional_gm_volumes_sum_probabilities_times_voxel_volume():
    gm = np.array([[[0.5, 1.0], [0.25, 0.0]], [[1.0, 1.0], [0.2, 0.8]]])
    labels = np.array([[[1, 1], [2, 0]], [[2, 2], [3, 3]]])
    table = pd.DataFrame({"index": [1, 2, 3, 7], "name": ["a", "b", "c", "absent"], "tissue": ["gm"] * 4})
    out = morphometry.regional_gm_volumes(gm, labels, table, voxel_mm3=2.0)
    assert list(out["index"]) == [1, 2, 3, 7]
    assert out["gm_volume_mm3"].tolist() == pytest.approx([3.0, 4.5, 2.0, 0.0])
    assert out["region_volume_mm3"].tolist() == pytest.approx([4.0, 6.0, 4.0, 0.0])


def test_regional_gm_volumes_rejects_mismatched_shapes():
    table = pd.DataFrame({"index": [1], "name": ["a"], "tissue": ["gm"]})
    with pytest.raises(ValueError, match="differ"):
        morphometry.regional_gm_volumes(np.zeros((2, 2, 2)), np.zeros((2, 2, 3), int), table, 1.0)


def test_tissue_volumes_and_tiv_inside_mask_only():
    gm = np.array([0.5, 0.2, 1.0, 0.0]).reshape(1, 2, 2)
    wm = np.array([0.5, 0.0, 0.0, 1.0]).reshape(1, 2, 2)
    csf = np.array([0.0, 0.8, 0.0, 0.0]).reshape(1, 2, 2)
    mask = np.array([1, 1, 0, 1]).reshape(1, 2, 2)
    out = morphometry.tissue_volumes(gm, wm, csf, mask, voxel_mm3=8.0)
    assert out == pytest.approx(
        {"tiv_mm3": 24.0, "gm_volume_mm3": 5.6, "wm_volume_mm3": 12.0, "csf_volume_mm3": 6.4}
    )


def test_contrast_metrics_match_formulas():
    t1w = np.array([10.0, 12.0, 20.0, 24.0])
    gm = np.array([1.0, 1.0, 0.0, 0.0])
    wm = 1 - gm
    out = morphometry.contrast_metrics(t1w, gm, wm)
    sd_gm, sd_wm = np.std([10, 12], ddof=1), np.std([20, 24], ddof=1)
    assert out["cnr"] == pytest.approx(11 / np.sqrt(sd_gm**2 + sd_wm**2))
    assert out["cjv"] == pytest.approx((sd_gm + sd_wm) / 11)
    assert out["snr"] == pytest.approx(22 / sd_wm)


def test_similarity_is_correlation_inside_mask():
    a = np.array([1.0, 2.0, 3.0, 100.0])
    mask = np.array([1, 1, 1, 0])
    assert morphometry.similarity(a, 2 * a + 1, mask) == pytest.approx(1.0)
    assert morphometry.similarity(a, -a, mask) == pytest.approx(-1.0)
    assert morphometry.similarity(a, np.ones(4), mask) == 0.0


def test_qc_flags_name_implausible_values():
    good = {"tiv_mm3": 1.5e6, "gm_volume_mm3": 0.7e6, "wm_volume_mm3": 0.5e6, "cjv": 0.4, "cnr": 3.0}
    assert morphometry.qc_flags({**good, "registration_correlation": 0.9}) == []
    bad = {**good, "tiv_mm3": 3.0e6, "registration_correlation": float("nan")}
    assert morphometry.qc_flags(bad) == ["tiv_mm3", "gm_fraction", "wm_fraction", "registration_correlation"]


def test_modulate_multiplies_by_non_negative_jacobian():
    out = morphometry.modulate(np.array([0.5, 1.0, 0.2]), np.array([2.0, 0.5, -1.0]))
    assert out.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert out.dtype == np.float32
