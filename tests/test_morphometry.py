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


def test_tissue_volumes_and_tiv_sum_the_fraction_maps():
    gm = np.array([0.5, 0.2, 1.0, 0.0]).reshape(1, 2, 2)
    wm = np.array([0.5, 0.0, 0.0, 0.5]).reshape(1, 2, 2)
    csf = np.array([0.0, 0.8, 0.0, 0.0]).reshape(1, 2, 2)  # last voxel: half inside the cavity
    out = morphometry.tissue_volumes(gm, wm, csf, voxel_mm3=8.0)
    assert out == pytest.approx(
        {"tiv_mm3": 28.0, "gm_volume_mm3": 13.6, "wm_volume_mm3": 8.0, "csf_volume_mm3": 6.4}
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


def test_qc_flags_give_a_reason_per_implausible_value():
    good = {"tiv_mm3": 1.5e6, "gm_volume_mm3": 0.7e6, "wm_volume_mm3": 0.5e6, "cjv": 0.4, "cnr": 3.0}
    assert morphometry.qc_flags({**good, "registration_correlation": 0.9}) == []
    bad = {**good, "tiv_mm3": 3.0e6, "registration_correlation": float("nan")}
    assert morphometry.qc_flags(bad) == [
        "tiv_mm3 3e+06 > 2.3e+06",
        "gm_fraction 0.233 < 0.3",
        "wm_fraction 0.167 < 0.2",
        "registration_correlation is not a number",
    ]
    assert morphometry.tissue_fractions(good) == pytest.approx(
        {"gm_fraction": 0.7 / 1.5, "wm_fraction": 0.5 / 1.5}
    )


@pytest.fixture(scope="module")
def template_3mm():
    """The template T1w and brain mask at 3 mm (a stand-in for a T1w registered to it)."""
    from nibabel.processing import resample_to_output

    from ketabids.data.templates import load_template

    template = load_template()
    t1w = resample_to_output(template.t1w, 3.0, order=1)
    mask = resample_to_output(template.mask, 3.0, order=0)
    return t1w.get_fdata(), mask.get_fdata() > 0


def test_registration_qc_passes_other_contrast_and_flags_misregistration(template_3mm):
    from scipy import ndimage

    template, mask = template_3mm
    rng = np.random.default_rng(0)
    # another scanner: non-linear contrast, gain, noise, but in register -> passes
    good = 1.3 * template**0.8 + rng.normal(0, 0.05 * template[mask].mean() ** 0.8, template.shape)
    r_good = morphometry.similarity(good, template, mask)
    assert r_good > 0.8
    # the same image 6 mm (2 voxels) off, 12 degrees rotated, or scrambled -> flagged with a reason
    shifted = ndimage.shift(good, (0, 2, 0), order=1)
    rotated = ndimage.rotate(good, 12, axes=(1, 2), reshape=False, order=1)
    scrambled = rng.permutation(good.ravel()).reshape(good.shape)
    for bad in (shifted, rotated, scrambled):
        r = morphometry.similarity(bad, template, mask)
        (reason,) = morphometry.qc_flags({"registration_correlation": r})
        assert reason.startswith("registration_correlation ") and reason.endswith("< 0.7")


def test_implausible_segmentation_is_flagged():
    # a scrambled segmentation calls most of the head GM, or a leaking mask doubles the brain
    scrambled = {"tiv_mm3": 1.5e6, "gm_volume_mm3": 1.2e6, "wm_volume_mm3": 0.1e6, "brain_volume_mm3": 1.5e6}
    assert morphometry.qc_flags(scrambled) == ["gm_fraction 0.8 > 0.65", "wm_fraction 0.0667 < 0.2"]
    leaking = {"tiv_mm3": 1.5e6, "gm_volume_mm3": 0.7e6, "wm_volume_mm3": 0.5e6, "brain_volume_mm3": 2.7e6}
    assert morphometry.qc_flags(leaking) == ["brain_volume_mm3 2.7e+06 > 2.2e+06"]


def test_modulate_multiplies_by_non_negative_jacobian():
    out = morphometry.modulate(np.array([0.5, 1.0, 0.2]), np.array([2.0, 0.5, -1.0]))
    assert out.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert out.dtype == np.float32
