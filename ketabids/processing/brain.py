"""Brain extraction: deepbet (CNN weights shipped in its wheel) or a classical template-based fallback."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

DEEPBET_SPACING_MM = 1.0  # deepbet was trained on ~1 mm images: coarser inputs are resampled first
FOV_HEIGHT_MM = 180.0  # head height kept below the vertex by the robust-FOV crop
# rough brain of the template fallback (mm, or fractions of the deep-tissue median intensity)
UPPER_HEAD_MM = 120.0  # the brain lies in this height below the vertex
CORE_DEPTH_MM = 25.0  # deeper than this inside the head's upper part: brain tissue
TISSUE_FRACTION = 0.5  # GM and WM above, CSF and bone below, for T1w contrast
BRIDGE_MM = 4.0  # erosion cutting thin bridges between brain and scalp
CLOSING_MM = 6.0  # closing that takes sulci and ventricles in
MOVING_MARGIN_MM = 5.0  # the rough brain grown by this (CSF rim, inner skull) is registered


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def _save_mask(mask: np.ndarray, affine: np.ndarray, out_file: str | os.PathLike) -> Path:
    img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    img.set_data_dtype(np.uint8)
    img.to_filename(str(out_file))
    return Path(out_file)


def deepbet_mask(
    in_file: str | os.PathLike, out_file: str | os.PathLike, threshold: float = 0.5, *, seed: int = 0
) -> Path:
    """Brain mask from deepbet on the CPU; images coarser than 1 mm are resampled to 1 mm for the CNN.

    torch runs seeded, with deterministic algorithms, on ``OMP_NUM_THREADS`` threads.
    """
    import ants
    import torch
    from deepbet.bet import BrainExtraction

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    native = ants.image_read(str(in_file))
    resample = max(native.spacing) > 1.5 * DEEPBET_SPACING_MM
    work = ants.resample_image(native, [DEEPBET_SPACING_MM] * 3, False, 0) if resample else native
    tmp = Path(out_file).with_name("deepbet_input.nii.gz")
    ants.image_write(work, str(tmp))
    _, mask_img, _ = BrainExtraction(no_gpu=True).run(nib.load(str(tmp)), threshold=threshold)
    tmp.unlink()
    mask = np.asarray(mask_img.dataobj) > 0
    if resample:
        soft = work.new_image_like(mask.astype(np.float32))
        mask = ants.resample_image_to_target(soft, native, interp_type="linear").numpy() >= 0.5
        mask = ndimage.binary_fill_holes(largest_component(mask))
    affine = nib.load(str(in_file)).affine
    return _save_mask(mask, affine, out_file)


def robust_fov(data: np.ndarray, zooms: tuple[float, ...], height_mm: float = FOV_HEIGHT_MM) -> slice:
    """Slice along the last (inferior-superior, RAS) axis keeping ``height_mm`` below the vertex."""
    profile = (data > 0.1 * np.percentile(data, 99)).sum(axis=(0, 1))
    rows = np.flatnonzero(profile > 0.02 * profile.max())
    top = int(rows.max()) + 1 if rows.size else data.shape[2]
    bottom = max(0, top - round(height_mm / zooms[2]))
    return slice(bottom, top)


def apply_mask(in_file: str | os.PathLike, mask_file: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """Zero ``in_file`` outside the mask."""
    img = nib.load(str(in_file))
    mask = np.asarray(nib.load(str(mask_file)).dataobj) > 0
    data = np.where(mask, img.get_fdata(dtype=np.float32), 0).astype(np.float32)
    nib.Nifti1Image(data, img.affine).to_filename(str(out_file))
    return Path(out_file)


def _ball(radius_mm: float, zooms: tuple[float, ...]) -> np.ndarray:
    """Ellipsoidal structuring element of ``radius_mm`` on a grid of ``zooms`` mm."""
    half = [max(1, int(radius_mm // z)) for z in zooms]
    axes = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((a * z / radius_mm) ** 2 for a, z in zip(axes, zooms, strict=True)) <= 1.0


def rough_brain(data: np.ndarray, zooms: tuple[float, ...]) -> np.ndarray:
    """Brain tissue found by intensity and morphology alone, to initialise the template registration.

    ``data`` is a bias-corrected head cropped below by :func:`robust_fov`. Deep voxels in its upper
    part (more than ``CORE_DEPTH_MM`` inside the head) set the brain-tissue intensity; voxels above
    ``TISSUE_FRACTION`` of it are eroded by ``BRIDGE_MM`` to cut bridges to scalp and neck, the
    component holding most of the core is grown back, closed and filled.
    """
    if not (data > 0).any():
        raise ValueError("the image is empty")
    head = ndimage.binary_fill_holes(data > 0.1 * np.percentile(data[data > 0], 99))
    depth = ndimage.distance_transform_edt(head, sampling=zooms)
    top = np.flatnonzero(head.any(axis=(0, 1))).max()
    upper = np.zeros_like(head)
    upper[:, :, max(0, top - round(UPPER_HEAD_MM / zooms[2])) :] = True
    core = (depth > CORE_DEPTH_MM) & upper
    if not core.any():
        raise ValueError("no head found in the image")
    tissue = data > TISSUE_FRACTION * np.median(data[core])
    eroded = ndimage.binary_erosion(tissue, _ball(BRIDGE_MM, zooms))
    labels, n = ndimage.label(eroded)
    if n == 0:
        raise ValueError("no brain tissue found in the image")
    best = np.bincount(labels[core], minlength=n + 1)
    best[0] = 0
    seed = labels == best.argmax()
    grown = ndimage.binary_dilation(seed, _ball(BRIDGE_MM + max(zooms), zooms)) & tissue
    closed = ndimage.binary_closing(grown, _ball(CLOSING_MM, zooms))
    return ndimage.binary_fill_holes(closed)


def template_mask(in_file: str | os.PathLike, out_file: str | os.PathLike, *, seed: int = 0) -> Path:
    """Classical brain mask for whole-head images (no CNN), after antsBrainExtraction.

    Robust-FOV crop from the vertex, N4, a rough brain by intensity and morphology
    (:func:`rough_brain`), the head masked by that brain grown by ``MOVING_MARGIN_MM`` registered
    to the template brain (rigid, affine, SyN within the dilated template mask), and the template
    brain mask brought back through the inverse transform.
    """
    from ketabids.processing.anat import n4_correct
    from ketabids.processing.registration import template_mask_to_image

    folder = Path(out_file).parent
    img = nib.load(str(in_file))
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    data = img.get_fdata(dtype=np.float32)
    keep = robust_fov(data, zooms)
    cropped = np.zeros_like(data)
    cropped[:, :, keep] = data[:, :, keep]
    crop_path = folder / "fov_cropped.nii.gz"
    nib.Nifti1Image(cropped, img.affine).to_filename(str(crop_path))
    corrected = nib.load(str(n4_correct(crop_path, folder / "fov_n4.nii.gz"))).get_fdata(dtype=np.float32)
    rough = rough_brain(corrected, zooms)
    moving = np.where(ndimage.binary_dilation(rough, _ball(MOVING_MARGIN_MM, zooms)), corrected, 0)
    moving_path = folder / "rough_brain.nii.gz"
    nib.Nifti1Image(moving.astype(np.float32), img.affine).to_filename(str(moving_path))
    prior = template_mask_to_image(moving_path, folder, seed=seed)
    mask = ndimage.binary_fill_holes(largest_component(prior >= 0.5))
    return _save_mask(mask, img.affine, out_file)
