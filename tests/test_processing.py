"""Pure image functions of ketabids.processing on small hand-made images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from ketabids.processing import anat, brain, partial_volume, registration, segmentation


def _img(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.Nifti1Image(data, affine)


def test_reorient_to_ras_flips_axes_and_keeps_world_space(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])  # LAS storage
    affine[:3, 3] = [10, -20, 5]
    src = tmp_path / "in.nii.gz"
    _img(data, affine).to_filename(src)
    out = nib.load(anat.reorient_to_ras(src, tmp_path / "ras.nii.gz"))
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    assert out.get_data_dtype() == np.float32
    np.testing.assert_array_equal(out.get_fdata(), data[::-1].astype(np.float32))
    # the same voxel sits at the same world position
    world = affine @ [0, 1, 2, 1]
    ijk = np.linalg.inv(out.affine) @ world
    assert out.get_fdata()[tuple(np.rint(ijk[:3]).astype(int))] == data[0, 1, 2]
    back = anat.restore_orientation(out, nib.load(src))
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(back.get_fdata(), data)


def test_reorient_drops_singleton_4th_dim_and_rejects_4d_and_2d(tmp_path):
    good = tmp_path / "single.nii.gz"
    _img(np.ones((4, 4, 4, 1), np.float32), np.eye(4)).to_filename(good)
    assert nib.load(anat.reorient_to_ras(good, tmp_path / "o.nii.gz")).shape == (4, 4, 4)
    for shape in [(4, 4, 4, 2), (4, 4, 1)]:
        bad = tmp_path / "bad.nii.gz"
        _img(np.ones(shape, np.float32), np.eye(4)).to_filename(bad)
        with pytest.raises(ValueError, match="not a 3D volume"):
            anat.reorient_to_ras(bad, tmp_path / "o.nii.gz")


def test_n4_removes_a_smooth_multiplicative_field(tmp_path):
    shape = (40, 40, 40)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    ball = (x**2 + y**2 + z**2) < 0.8
    truth = np.where(ball, np.where(x > 0, 100.0, 60.0), 0.0)  # two "tissues"
    field = 1 + 0.3 * (y + 0.5 * z)
    src, mask = tmp_path / "biased.nii.gz", tmp_path / "mask.nii.gz"
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    _img((truth * field).astype(np.float32), affine).to_filename(src)
    _img(ball.astype(np.uint8), affine).to_filename(mask)
    out = nib.load(anat.n4_correct(src, tmp_path / "n4.nii.gz", mask)).get_fdata()
    bright = ball & (x > 0.1)
    cv_before = (truth * field)[bright].std() / (truth * field)[bright].mean()
    cv_after = out[bright].std() / out[bright].mean()
    assert cv_after < 0.5 * cv_before
    assert np.percentile(out[ball], 99.5) == pytest.approx(1000, rel=0.01)


def test_largest_component_and_apply_mask(tmp_path):
    mask = np.zeros((6, 6, 6), bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[3:6, 3:6, 3:6] = True  # 27 voxels
    kept = brain.largest_component(mask)
    assert kept.sum() == 27 and kept[4, 4, 4] and not kept[0, 0, 0]
    img, m = tmp_path / "i.nii.gz", tmp_path / "m.nii.gz"
    _img(np.full((6, 6, 6), 5.0, np.float32), np.eye(4)).to_filename(img)
    _img(kept.astype(np.uint8), np.eye(4)).to_filename(m)
    out = nib.load(brain.apply_mask(img, m, tmp_path / "o.nii.gz")).get_fdata()
    assert out.sum() == 27 * 5.0


def test_hard_segmentation_takes_most_probable_tissue_inside_mask():
    probs = np.array([[[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3], [0.9, 0.1, 0.0]]])
    mask = np.array([[1, 1, 1, 0]])
    assert partial_volume.hard_segmentation(probs, mask > 0).tolist() == [[1, 3, 2, 0]]


def test_registration_args_seed_composite_and_levels(tmp_path):
    fixed, moving, mask = (tmp_path / f"{n}.nii.gz" for n in ("f", "m", "fm"))
    linear = registration.linear_args(fixed, moving, mask, "p_affine_", seed=7, spacing=2.0)
    assert linear[linear.index("--random-seed") + 1] == "8"  # ANTs reads 0 as "use the clock"
    syn = registration.syn_args(fixed, moving, mask, tmp_path / "a.mat", "p_", syn_iterations="50x20")
    assert syn[syn.index("-r") + 1] == str(tmp_path / "a.mat")
    assert syn[syn.index("--write-composite-transform") + 1] == "1"
    transforms = [args[i + 1] for args in (linear, syn) for i, a in enumerate(args) if a == "-t"]
    assert transforms == ["Rigid[0.1]", "Affine[0.1]", "SyN[0.2,3,0]"]
    shrinks = [args[i + 1] for args in (linear, syn) for i, a in enumerate(args) if a == "-f"]
    assert shrinks == ["6x3x2", "6x3x2", "2x1"]  # linear stages at ~12, 6, 3 mm on a 2 mm grid
    assert registration.shrink_factors((12.0, 6.0, 3.0), 4.0) == "3x2x1"


def test_template_fixed_image_is_cropped_and_resampled(tmp_path):
    image, mask = registration.template_fixed_image(4.0, tmp_path)
    img, m = nib.load(image), nib.load(mask)
    assert np.allclose(img.header.get_zooms()[:3], 4.0)
    assert img.shape == m.shape and max(img.shape) < 60  # cropped to the brain (~190 mm / 4 mm + margin)
    volume = (m.get_fdata() > 0.5).sum() * 64
    assert 1.5e6 < volume < 2.3e6  # the template's intracranial volume, about 1.9 L


def test_bounding_box_and_crop_keep_world_positions():
    mask = np.zeros((10, 12, 14), bool)
    mask[3:5, 4:9, 6] = True
    box = anat.bounding_box(mask, margin=2)
    assert box == (slice(1, 7), slice(2, 11), slice(4, 9))
    assert anat.bounding_box(np.zeros((3, 4, 5), bool)) == (slice(0, 3), slice(0, 4), slice(0, 5))
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [-10, 5, 7]
    data = np.arange(mask.size, dtype=np.float32).reshape(mask.shape)
    cropped = anat.crop(nib.Nifti1Image(data, affine), box)
    assert cropped.shape == (6, 9, 5)
    np.testing.assert_allclose(cropped.affine @ [0, 0, 0, 1], affine @ [1, 2, 4, 1])
    assert cropped.get_fdata()[0, 0, 0] == data[1, 2, 4]


def test_segment_tissues_on_an_oblique_grid_recovers_three_classes(tmp_path, monkeypatch):
    import tempfile

    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    shape = (24, 24, 24)
    x, y, z = np.meshgrid(*[np.arange(n) - 11.5 for n in shape], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    truth = np.select([r < 5, r < 8, r < 10], [2, 1, 3], 0)  # WM core, GM shell, CSF shell
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [7, -5, 11], degrees=True).as_matrix() * 2.0
    affine[:3, 3] = [-23.3, -21.7, -19.9]
    rng = np.random.default_rng(0)
    t1w = np.choose(truth, [0.0, 630.0, 1000.0, 220.0]) + rng.normal(0, 20, shape) * (truth > 0)
    files = {}
    for name, data in {"t1w": t1w, "mask": truth > 0}.items():
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.Nifti1Image(data.astype(np.float32), affine).to_filename(files[name])
    priors = []
    for label in (1, 2, 3):  # blurred truth as priors: GM, WM, CSF
        path = tmp_path / f"prior{label}.nii.gz"
        nib.Nifti1Image(ndimage.gaussian_filter((truth == label) * 1.0, 1.0), affine).to_filename(path)
        priors.append(path)
    host_tmp = tmp_path / "host_tmp"  # antspyx's atropos leaves its images in tempfile's folder
    host_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(host_tmp))
    out = tmp_path / "out"
    out.mkdir()
    result = segmentation.segment_tissues(
        files["t1w"], files["mask"], tuple(priors), files["mask"], None, out
    )
    assert not list(host_tmp.iterdir()), "nothing left in the host's temporary folder"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("scratch_")) == []
    dseg = np.asarray(nib.load(result.dseg).dataobj)
    assert (dseg == truth).mean() > 0.97
    gm = nib.load(result.probabilities[0]).get_fdata()
    assert gm[truth == 1].mean() > 0.9 and gm[truth == 0].max() == 0
