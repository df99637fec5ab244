"""Truth checks of the whole-head phantom (4 mm voxels to stay fast), and its independence from the
instrument's template and tissue priors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_to_output

from ketabids.data.atlases import DEEP_GM, atlas_data_dir
from ketabids.data.templates import load_template
from ketabids.simulate.phantom import _atlas_arrays, class_means, make_phantom, partial_volume_fractions

VOXEL = (4.0, 4.0, 4.0)
GROW, SHRINK = "Left_MFG_middle_frontal_gyrus", "Right_Cerebellum_Exterior"


@pytest.fixture(scope="module")
def base():
    return make_phantom(voxel_size=VOXEL, anatomy_seed=3, acquisition_seed=3)


@pytest.fixture(scope="module")
def changed():
    return make_phantom(
        voxel_size=VOXEL, anatomy_seed=3, acquisition_seed=3, regional_change={GROW: 0.10, SHRINK: -0.10}
    )


def _volumes(phantom) -> pd.Series:
    return phantom.regional_gm.set_index("name")["gm_volume_mm3"]


def test_requested_change_shows_up_and_other_regions_barely_move(base, changed):
    relative = _volumes(changed) / _volumes(base) - 1
    # large regions (thousands of voxels at 1 mm, hundreds at 4 mm) are calibrated to +-1 %
    assert relative[GROW] == pytest.approx(0.10, abs=0.01)
    assert relative[SHRINK] == pytest.approx(-0.10, abs=0.01)
    others = relative.drop([GROW, SHRINK])
    # at 4 mm a sub-voxel push flips nearest-neighbour labels of small regions: a few % at most
    assert others.abs().median() < 0.01
    big = _volumes(base).drop([GROW, SHRINK]) > 5000
    assert others[big].abs().max() < 0.03


def test_truth_tables_equal_sums_of_truth_images(changed):
    voxel = np.prod(changed.gm.header.get_zooms()[:3])
    gm, wm = changed.gm.get_fdata(), changed.wm.get_fdata()
    labels = np.asarray(changed.labels.dataobj)
    table = changed.regional_gm
    deep = table["name"].str.contains(DEEP_GM)
    assert set(table.loc[deep, "name"]) >= {"Left_Pallidum", "Right_Putamen", "Left_Thalamus_Proper"}
    for _, row in pd.concat([table[~deep].sample(8, random_state=0), table[deep]]).iterrows():
        inside = labels == row["index"]
        # deep grey nuclei: all non-CSF tissue in the label is GM (the instrument's measurand)
        tissue = gm[inside].sum() + (wm[inside].sum() if DEEP_GM.search(row["name"]) else 0)
        assert row["gm_volume_mm3"] == pytest.approx(tissue * voxel, rel=1e-5)
        assert row["gm_volume_mm3"] >= gm[inside].sum() * voxel * (1 - 1e-6)
    totals = changed.tissue_volumes.iloc[0]
    assert totals["gm_volume_mm3"] == pytest.approx(gm.sum() * voxel, rel=1e-5)
    assert totals["wm_volume_mm3"] == pytest.approx(changed.wm.get_fdata().sum() * voxel, rel=1e-5)
    assert totals["tiv_mm3"] == pytest.approx(
        totals[["gm_volume_mm3", "wm_volume_mm3", "csf_volume_mm3"]].sum(), rel=1e-9
    )
    mask = np.asarray(changed.brain_mask.dataobj) > 0
    assert mask.sum() * voxel == pytest.approx(totals["tiv_mm3"], rel=0.05)


def test_rescan_has_identical_truth_but_a_new_scan(base):
    rescan = make_phantom(voxel_size=VOXEL, anatomy_seed=3, acquisition_seed=4)
    pd.testing.assert_frame_equal(rescan.regional_gm, base.regional_gm)
    pd.testing.assert_frame_equal(rescan.tissue_volumes, base.tissue_volumes)
    np.testing.assert_array_equal(rescan.gm.get_fdata(), base.gm.get_fdata())
    assert not np.allclose(rescan.gm.affine, base.gm.affine)  # the pose moves the truth in world space
    assert not np.allclose(rescan.t1w.affine, base.t1w.affine)
    assert rescan.acquisition["rotation_deg"] != base.acquisition["rotation_deg"]
    assert rescan.acquisition["contrast_gm_csf"] == base.acquisition["contrast_gm_csf"]  # same subject


def test_same_seeds_same_phantom(base):
    again = make_phantom(voxel_size=VOXEL, anatomy_seed=3, acquisition_seed=3)
    np.testing.assert_array_equal(np.asarray(again.t1w.dataobj), np.asarray(base.t1w.dataobj))
    np.testing.assert_array_equal(again.t1w.affine, base.t1w.affine)
    pd.testing.assert_frame_equal(again.regional_gm, base.regional_gm)


def test_tiv_follows_head_scale_cubed():
    small = make_phantom(voxel_size=VOXEL, head_scale=0.9, anatomy_seed=5, acquisition_seed=5)
    large = make_phantom(voxel_size=VOXEL, head_scale=1.1, anatomy_seed=5, acquisition_seed=5)
    assert large.tiv_mm3 / small.tiv_mm3 == pytest.approx((1.1 / 0.9) ** 3, rel=0.01)
    assert 1.3e6 < small.tiv_mm3 < 1.5e6  # source ICV (1.95 L) x 0.9^3


def test_scan_looks_like_a_whole_head_t1w(base):
    t1w = base.t1w
    assert t1w.get_data_dtype() == np.int16
    data = t1w.get_fdata()
    on_scan = {name: base.on_scan_grid(getattr(base, name)).get_fdata() for name in ("gm", "wm", "csf")}
    mean = {name: data[fraction > 0.9].mean() for name, fraction in on_scan.items()}
    assert mean["wm"] > mean["gm"] > mean["csf"]
    brain = base.on_scan_grid(base.brain_mask, order=0).get_fdata() > 0
    head = data > 0.3 * mean["wm"]
    assert head.sum() > 1.5 * brain.sum()  # skull, scalp, face and neck around the brain
    # the neck: signal far below the brain along the scanner's superior axis
    world = nib.affines.apply_affine(t1w.affine, np.argwhere(head))
    brain_bottom = nib.affines.apply_affine(t1w.affine, np.argwhere(brain))[:, 2].min()
    assert world[:, 2].min() < brain_bottom - 30


def test_acquisitions_differ_in_field_of_view_and_orientation():
    scans = [make_phantom(voxel_size=VOXEL, anatomy_seed=0, acquisition_seed=s) for s in range(4)]
    assert len({s.t1w.shape for s in scans}) > 1
    assert len({nib.aff2axcodes(s.t1w.affine) for s in scans}) > 1


def test_unknown_region_is_refused():
    with pytest.raises(ValueError, match="not a grey-matter region"):
        make_phantom(voxel_size=VOXEL, regional_change={"Left_Lateral_Ventricle": 0.1})


def test_tissue_fractions_are_fractions(base):
    gm, wm, csf = (getattr(base, t).get_fdata() for t in ("gm", "wm", "csf"))
    assert min(gm.min(), wm.min(), csf.min()) >= 0
    assert (gm + wm + csf).max() <= 1 + 1e-5
    assert np.mean((gm > 0.05) & (gm < 0.95)) > 0.05  # partial volume at every tissue border


def test_partial_volume_model_recovers_known_mixtures():
    rng = np.random.default_rng(0)
    csf, gm, wm = 30.0, 60.0, 80.0
    pure = np.concatenate([rng.normal(gm, 2, 40000), rng.normal(wm, 2, 30000), rng.normal(csf, 1, 3000)])
    assert class_means(pure) == pytest.approx((csf, gm, wm), abs=2.5)
    fraction = np.linspace(0, 1, 11)
    gm_f, wm_f = partial_volume_fractions(fraction * gm + (1 - fraction) * wm, (csf, gm, wm))
    np.testing.assert_allclose(gm_f, fraction, atol=1e-6)
    np.testing.assert_allclose(wm_f, 1 - fraction, atol=1e-6)
    gm_f, wm_f = partial_volume_fractions(fraction * gm + (1 - fraction) * csf, (csf, gm, wm))
    np.testing.assert_allclose(gm_f, fraction, atol=1e-6)
    assert not wm_f.any()


def _to_ants(img: nib.Nifti1Image):
    import ants

    spacing = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    return ants.from_numpy(
        img.get_fdata().astype(np.float32),
        origin=tuple(ras_to_lps @ img.affine[:3, 3]),
        spacing=tuple(spacing),
        direction=ras_to_lps @ (img.affine[:3, :3] / spacing),
    )


def _r_after_affine(fixed, moving: nib.Nifti1Image) -> float:
    import ants

    reg = ants.registration(
        fixed,
        _to_ants(moving),
        "Affine",
        aff_iterations=(200, 100),
        aff_shrink_factors=(2, 1),
        aff_smoothing_sigmas=(1, 0),
        random_seed=1,
    )
    warped, target = reg["warpedmovout"].numpy(), fixed.numpy()
    inside = (target > 0.05) | (warped > 0.05)
    return float(np.corrcoef(warped[inside], target[inside])[0, 1])


def test_anatomy_is_not_a_warp_of_the_instrument_gm_prior(base):
    """After the best affine, the phantom's GM truth resembles the instrument's GM prior only as one
    brain resembles another; the prior itself, moved by the same pose, is found again (r ~ 1)."""
    prior = resample_to_output(load_template().gm, 3.0, order=1)
    fixed = _to_ants(prior)
    assert _r_after_affine(fixed, base.gm) < 0.8
    prior_2mm = resample_to_output(load_template().gm, 2.0, order=1)
    posed_prior = nib.Nifti1Image(prior_2mm.get_fdata(), base.gm.affine)  # the phantom's grid and pose
    assert _r_after_affine(fixed, posed_prior) > 0.95


def test_anatomies_and_contrasts_vary():
    phantoms = [make_phantom(voxel_size=VOXEL, anatomy_seed=s, acquisition_seed=s) for s in (11, 12)]
    ratios = [p.tissue_volumes.iloc[0] for p in phantoms]
    gm_wm = [r["gm_volume_mm3"] / r["wm_volume_mm3"] for r in ratios]  # cortical thickness differs
    assert abs(gm_wm[0] - gm_wm[1]) > 0.02
    assert phantoms[0].acquisition["contrast_gm_csf"] != phantoms[1].acquisition["contrast_gm_csf"]


def test_truth_labels_are_the_atlas_as_distributed():
    """The truth labels are the atlas file in its original space, not the template-space atlas."""
    source = nib.load(atlas_data_dir() / "atlas_harvard_oxford.nii.gz")
    labels, affine, _ = _atlas_arrays("harvard_oxford")
    np.testing.assert_allclose(affine, source.affine)
    assert labels.shape == source.shape[:3]


def test_harvard_oxford_truth_in_its_own_space():
    """Harvard-Oxford is natively in the source anatomy's space: a requested hippocampal loss is the
    true change of the deformed GM fraction summed over the deformed label."""
    region = "Left_Hippocampus"
    kwargs = {"voxel_size": VOXEL, "atlas": "harvard_oxford", "anatomy_seed": 4, "acquisition_seed": 4}
    before = make_phantom(**kwargs).regional_gm.set_index("name")["gm_volume_mm3"]
    after = make_phantom(regional_change={region: -0.10}, **kwargs).regional_gm.set_index("name")
    assert after.loc[region, "gm_volume_mm3"] / before[region] - 1 == pytest.approx(-0.10, abs=0.01)
