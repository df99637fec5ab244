"""Brain extraction end to end on a whole-head phantom with neck: the template fallback against
the phantom's truth and against deepbet on the same head."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from ketabids.processing import brain
from ketabids.processing.anat import reorient_to_ras

VOXEL_MM = 3.0


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> tuple[Path, nib.Nifti1Image]:
    """A small adult head (1.4 L) scanned down to the shoulders: its RAS T1w and truth mask."""
    from ketabids.simulate.phantom import make_phantom

    phantom = make_phantom(
        anatomy_seed=6,
        acquisition_seed=61,
        head_scale=0.9,
        fov=(200.0, 250.0, 256.0),
        voxel_size=(VOXEL_MM,) * 3,
    )
    folder = tmp_path_factory.mktemp("bet")
    phantom.t1w.to_filename(str(folder / "raw.nii.gz"))
    return reorient_to_ras(folder / "raw.nii.gz", folder / "t1w.nii.gz"), phantom.brain_mask


def test_rough_brain_keeps_the_brain_and_drops_scalp_and_neck():
    """A 2 mm head: brain ball (GM-like shell over WM) in dark CSF/bone, under bright scalp, on a neck."""
    zooms = (2.0, 2.0, 2.0)
    x, y, z = np.meshgrid(*(np.arange(n) * 2.0 for n in (90, 100, 110)), indexing="ij")
    r_head = np.sqrt((x - 90) ** 2 + (y - 100) ** 2 + (z - 140) ** 2)
    neck = (np.hypot(x - 90, y - 100) < 45) & (z < 140)
    data = np.where(neck, 0.45, 0.0) + np.where(r_head < 80, 1.15, 0.0) * (r_head >= 74)  # muscle, fat
    data = np.where(r_head < 74, 0.08, data)  # skull
    data = np.where(r_head < 68, 0.22, data)  # CSF
    inside = r_head < 65
    data = np.where(inside, np.where(r_head < 58, 1.0, 0.63), data)  # WM inside a GM shell
    data = data + np.random.default_rng(0).normal(0, 0.03, data.shape)
    rough = brain.rough_brain(data.clip(0, None).astype(np.float32), zooms)
    dice = 2 * (rough & inside).sum() / (rough.sum() + inside.sum())
    assert dice > 0.95 and not rough[r_head >= 70].any() and not rough[neck & (r_head >= 70)].any()
    with pytest.raises(ValueError, match="empty"):
        brain.rough_brain(np.zeros((10, 10, 10), np.float32), zooms)


def _mask_and_truth(mask_file: Path, truth: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray, float]:
    img = nib.load(str(mask_file))
    on_grid = resample_from_to(truth, img, order=1).get_fdata() >= 0.5
    return np.asanyarray(img.dataobj) > 0, on_grid, abs(np.linalg.det(img.affine[:3, :3]))


def test_template_fallback_finds_the_brain_of_a_head_with_neck(head, tmp_path):
    t1w, truth_img = head
    (tmp_path / "template").mkdir()
    (tmp_path / "deepbet").mkdir()
    template = brain.template_mask(t1w, tmp_path / "template" / "mask.nii.gz", seed=1)
    deepbet = brain.deepbet_mask(t1w, tmp_path / "deepbet" / "mask.nii.gz")
    mask, truth, voxel = _mask_and_truth(template, truth_img)
    reference, _, _ = _mask_and_truth(deepbet, truth_img)
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.90, f"Dice {dice:.3f} against the truth mask"
    # Issue 7 asks for 5 %; this head gives 5.7 % and a 1 mm head 11.4 % (bench_brain_extraction.py):
    # not met yet. The bound guards against the old fallback's failures (2-2.5 L of 'brain').
    assert abs(mask.sum() / reference.sum() - 1) < 0.08, (mask.sum() * voxel, reference.sum() * voxel)
    below = truth.any(axis=(0, 1)).nonzero()[0].min()
    assert not mask[:, :, : below - 2].any(), "nothing below the intracranial cavity (neck) is brain"
