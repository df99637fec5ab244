"""Truth checks of the whole-head phantom (4 mm voxels to stay fast)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ketabids.simulate.phantom import make_phantom

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
    gm = changed.gm.get_fdata()
    labels = np.asarray(changed.labels.dataobj)
    for _, row in changed.regional_gm.sample(10, random_state=0).iterrows():
        assert row["gm_volume_mm3"] == pytest.approx(gm[labels == row["index"]].sum() * voxel, rel=1e-5)
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


def test_same_seeds_same_phantom(base):
    again = make_phantom(voxel_size=VOXEL, anatomy_seed=3, acquisition_seed=3)
    np.testing.assert_array_equal(np.asarray(again.t1w.dataobj), np.asarray(base.t1w.dataobj))
    np.testing.assert_array_equal(again.t1w.affine, base.t1w.affine)
    pd.testing.assert_frame_equal(again.regional_gm, base.regional_gm)


def test_tiv_follows_head_scale_cubed():
    small = make_phantom(voxel_size=VOXEL, head_scale=0.9, anatomy_seed=5, acquisition_seed=5)
    large = make_phantom(voxel_size=VOXEL, head_scale=1.1, anatomy_seed=5, acquisition_seed=5)
    assert large.tiv_mm3 / small.tiv_mm3 == pytest.approx((1.1 / 0.9) ** 3, rel=0.01)
    assert 1.3e6 < small.tiv_mm3 < 1.5e6  # MNI152 ICV (1.88 L) x 0.9^3


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
