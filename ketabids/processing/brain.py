"""Brain extraction: deepbet (CNN weights shipped in its wheel) or a classical template-based fallback."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

DEEPBET_SPACING_MM = 1.0  # deepbet was trained on ~1 mm images: coarser inputs are resampled first
FOV_HEIGHT_MM = 180.0  # head height kept below the vertex by the robust-FOV crop


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


def deepbet_mask(in_file: str | os.PathLike, out_file: str | os.PathLike, threshold: float = 0.5) -> Path:
    """Brain mask from deepbet on the CPU; images coarser than 1 mm are resampled to 1 mm for the CNN."""
    import ants
    import torch
    from deepbet.bet import BrainExtraction

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
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


def template_mask(in_file: str | os.PathLike, out_file: str | os.PathLike, *, seed: int = 0) -> Path:
    """Classical brain mask for whole-head images (no CNN): robust-FOV crop, affine to the template
    brain, the template mask brought back, and voxels as dark as air or bone removed."""
    from ketabids.processing.registration import affine_to_template

    img = nib.load(str(in_file))
    data = img.get_fdata(dtype=np.float32)
    keep = robust_fov(data, img.header.get_zooms()[:3])
    cropped = np.zeros_like(data)
    cropped[:, :, keep] = data[:, :, keep]
    crop_path = Path(out_file).with_name("fov_cropped.nii.gz")
    nib.Nifti1Image(cropped, img.affine).to_filename(str(crop_path))
    prior = affine_to_template(crop_path, Path(out_file).parent, seed=seed) >= 0.5
    core = ndimage.binary_erosion(prior, iterations=max(1, round(6 / min(img.header.get_zooms()[:3]))))
    inside = cropped[core]
    threshold = 0.1 * np.median(inside) if inside.size else 0.0  # drops only air and bone
    mask = (prior & (cropped > threshold)) | core
    mask = ndimage.binary_fill_holes(largest_component(mask))
    return _save_mask(mask, img.affine, out_file)
