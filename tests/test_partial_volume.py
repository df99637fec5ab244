"""Partial-volume GM against known truth: fractions follow the image, not the template priors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from ketabids.processing import partial_volume as pv
from ketabids.processing import segmentation

MEANS = {pv.GM: 600.0, pv.WM: 1000.0, pv.CSF: 200.0}


def _shells(n: int, radii: tuple[float, float, float], sub: int) -> np.ndarray:
    """GM, WM, CSF fractions (last axis) of a WM ball, a GM shell and a CSF shell on a 1 mm grid,
    by supersampling each voxel ``sub`` times per axis."""
    centre = (n - 1) / 2
    axis = (np.arange(n * sub) + 0.5) / sub - 0.5 - centre
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    fine = np.select([r < radii[0], r < radii[1], r < radii[2]], [pv.WM, pv.GM, pv.CSF], 0)
    blocks = [
        (fine == k).reshape(n, sub, n, sub, n, sub).mean(axis=(1, 3, 5)) for k in (pv.GM, pv.WM, pv.CSF)
    ]
    return np.stack(blocks, axis=-1).astype(np.float32)


def test_border_voxels_mix_adjacent_classes_and_interior_voxels_are_pure():
    labels = np.array([[[3, 3, 1, 1, 1, 2, 2, 2]]], np.uint8).repeat(3, 0).repeat(3, 1)
    t1w = (
        np.array([200, 300, 500, 600, 600, 900, 1000, 1000], np.float32)[None, None].repeat(3, 0).repeat(3, 1)
    )
    out = pv.pv_fractions(t1w, labels, MEANS)[1, 1]
    np.testing.assert_allclose(out.sum(-1), 1.0)
    np.testing.assert_allclose(out[:, 0], [0, 0.25, 0.75, 1, 1, 0.25, 0, 0], atol=1e-6)  # GM
    np.testing.assert_allclose(out[:, 1], [0, 0, 0, 0, 0, 0.75, 1, 1], atol=1e-6)  # WM
    np.testing.assert_allclose(out[:, 2], [1, 0.75, 0.25, 0, 0, 0, 0, 0], atol=1e-6)  # CSF


def test_wm_csf_border_is_not_read_as_gm_and_deep_nuclei_count_as_gm():
    labels = np.array([[[2, 2, 3, 3]]], np.uint8).repeat(3, 0).repeat(3, 1)
    t1w = np.full(labels.shape, 600.0, np.float32)  # intermediate intensity at a ventricle wall
    out = pv.pv_fractions(t1w, labels, MEANS)
    assert out[..., 0].max() == 0
    deep = np.zeros(labels.shape, bool)
    deep[..., :2] = True
    out = pv.pv_fractions(t1w, labels, MEANS, deep)
    np.testing.assert_allclose(out[1, 1, 1], [0.5, 0, 0.5])  # WM-labelled nucleus: non-CSF is GM


def test_pure_means_use_interior_voxels_and_refuse_unordered_classes():
    truth = _shells(24, (5.0, 8.0, 11.0), sub=2)
    labels = np.where(truth.sum(-1) >= 0.5, truth.argmax(-1) + 1, 0).astype(np.uint8)
    t1w = truth @ np.array([MEANS[pv.GM], MEANS[pv.WM], MEANS[pv.CSF]], np.float32)
    means = pv.pure_means(t1w, labels)
    assert means[pv.WM] == pytest.approx(1000.0, rel=1e-3)
    assert means[pv.GM] == pytest.approx(600.0, rel=0.02)
    with pytest.raises(ValueError, match="not ordered"):
        pv.pure_means(-t1w, labels)


@pytest.fixture(scope="module")
def sphere(tmp_path_factory):
    """A noisy 1 mm WM ball / GM shell / CSF shell with exact PV fractions at the borders."""
    root = tmp_path_factory.mktemp("sphere")
    truth = _shells(44, (8.0, 12.0, 16.0), sub=4)
    rng = np.random.default_rng(0)
    cavity = truth.sum(-1)
    t1w = truth @ np.array([620.0, 1000.0, 250.0], np.float32) + rng.normal(0, 25, cavity.shape) * (
        cavity > 0
    )
    files = {}
    for name, data in {"t1w": t1w, "mask": cavity >= 0.5, "cavity": cavity}.items():
        files[name] = root / f"{name}.nii.gz"
        nib.Nifti1Image(data.astype(np.float32), np.eye(4)).to_filename(files[name])
    return root, truth, files


def _priors(root, shift_mm: float) -> tuple:
    """Blurred tissue priors whose WM/GM border lies ``shift_mm`` further out than the truth's."""
    prior = _shells(44, (8.0 + shift_mm, 12.0 + shift_mm, 16.0), sub=2)
    paths = []
    for k in range(3):
        path = root / f"prior{k}_{shift_mm:g}.nii.gz"
        nib.Nifti1Image(ndimage.gaussian_filter(prior[..., k], 1.0), np.eye(4)).to_filename(path)
        paths.append(path)
    return tuple(paths)


def _old_posterior_gm(files, priors) -> float:
    """What the previous model summed: Atropos GM posteriors with prior weight 0.25."""
    import ants

    with segmentation.scratch_tempdir(Path(priors[0]).parent):  # atropos leaves its images behind
        result = ants.atropos(
            a=ants.image_read(str(files["t1w"])),
            x=ants.image_read(str(files["mask"])),
            i=[ants.image_read(str(p)) for p in priors],
            m=segmentation.MRF,
            c=segmentation.ITERATIONS,
            priorweight=0.25,
            r=0,
            verbose=0,
        )
        return float(result["probabilityimages"][0].numpy().sum())


def test_pv_gm_recovers_truth_and_ignores_a_shifted_prior(sphere, tmp_path):
    root, truth, files = sphere
    true_gm = truth[..., 0].sum()
    measured, old = {}, {}
    for shift in (0.0, 3.0):
        priors = _priors(root, shift)
        out = tmp_path / f"shift{shift:g}"
        out.mkdir()
        result = segmentation.segment_tissues(files["t1w"], files["mask"], priors, files["cavity"], None, out)
        maps = [nib.load(p).get_fdata() for p in result.probabilities]
        measured[shift] = maps[0].sum()
        old[shift] = _old_posterior_gm(files, priors)
        np.testing.assert_allclose(sum(maps), truth.sum(-1), atol=1e-5)  # TIV = the cavity
    assert measured[0.0] == pytest.approx(true_gm, rel=0.02)
    assert measured[3.0] == pytest.approx(measured[0.0], rel=0.01)
    assert abs(old[3.0] - old[0.0]) > 0.10 * true_gm  # the posterior sum followed the prior


def test_cavity_outside_the_brain_mask_is_csf_and_tiv_ignores_the_mask_edge(sphere, tmp_path):
    root, truth, files = sphere
    priors = _priors(root, 0.0)
    tight = tmp_path / "tight_mask.nii.gz"  # brain mask cut 2 voxels inside the GM/CSF border
    eroded = ndimage.binary_erosion(nib.load(files["mask"]).get_fdata() > 0, iterations=5)
    nib.Nifti1Image(eroded.astype(np.float32), np.eye(4)).to_filename(tight)
    result = segmentation.segment_tissues(files["t1w"], tight, priors, files["cavity"], None, tmp_path)
    maps = np.stack([nib.load(p).get_fdata() for p in result.probabilities], axis=-1)
    assert maps.sum() == pytest.approx(truth.sum(), rel=1e-5)
    outside = ~eroded & (truth.sum(-1) > 0)
    np.testing.assert_allclose(maps[outside, 2], truth.sum(-1)[outside], atol=1e-5)
    dseg = np.asarray(nib.load(result.dseg).dataobj)
    assert set(np.unique(dseg)) == {0, 1, 2, 3}
