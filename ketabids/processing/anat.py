"""Anatomical preprocessing: RAS reorientation and N4 bias-field correction."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

N4_SPACING_MM = 4.0  # resolution of the bias-field fit
N4_SPLINE_DISTANCE_MM = 100.0


def reorient_to_ras(in_file: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """Write ``in_file`` as float32 in RAS+ voxel order.

    Only axes are permuted or flipped (no resampling), so the original grid is recovered
    exactly by :func:`restore_orientation` with the input's orientation. Trailing singleton
    dimensions are dropped; anything that is not a 3D volume raises ``ValueError``.
    """
    img = nib.load(str(in_file))
    data = np.asanyarray(img.dataobj)
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3 or min(data.shape) < 2:
        raise ValueError(f"{in_file} is not a 3D volume (shape {img.shape})")
    img3d = nib.Nifti1Image(np.asarray(data, dtype=np.float32), img.affine)
    ras = nib.as_closest_canonical(img3d)
    out = nib.Nifti1Image(np.asarray(ras.dataobj, dtype=np.float32), ras.affine)
    out.set_qform(ras.affine, code=1)
    out.set_sform(ras.affine, code=1)
    out.to_filename(str(out_file))
    return Path(out_file)


def restore_orientation(img: nib.Nifti1Image, original: nib.Nifti1Image) -> nib.Nifti1Image:
    """Bring an image on the RAS grid of :func:`reorient_to_ras` back onto ``original``'s voxel grid."""
    start = nib.orientations.io_orientation(img.affine)
    target = nib.orientations.io_orientation(original.affine)
    transform = nib.orientations.ornt_transform(start, target)
    return img.as_reoriented(transform)


def head_mask(data: np.ndarray) -> np.ndarray:
    """Rough foreground (head) mask: above the 30th percentile of non-zero intensities, holes filled."""
    from scipy import ndimage

    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, bool)
    return ndimage.binary_fill_holes(data > np.percentile(positive, 30))


def n4_correct(
    in_file: str | os.PathLike,
    out_file: str | os.PathLike,
    mask_file: str | os.PathLike | None = None,
    fit_spacing_mm: float = N4_SPACING_MM,
) -> Path:
    """N4 bias-field correction, output scaled so that its 99.5th percentile is 1000.

    The field is fitted by N4 on a copy resampled to ``fit_spacing_mm`` (within ``mask_file`` or
    a rough head mask), then resampled to the image grid and divided out: a smooth field needs
    no more resolution, and this keeps N4 to seconds on any input. It runs with one ITK thread
    (:mod:`ketabids.processing.one_thread`), so the result does not depend on the thread count.
    """
    from ketabids.processing.one_thread import call_in_one_thread

    return call_in_one_thread(_n4_correct, in_file, out_file, mask_file, fit_spacing_mm)


def _n4_correct(
    in_file: str | os.PathLike,
    out_file: str | os.PathLike,
    mask_file: str | os.PathLike | None,
    fit_spacing_mm: float,
) -> Path:
    import ants

    img = ants.image_read(str(in_file))
    data = img.numpy()
    mask_data = nib.load(str(mask_file)).get_fdata() > 0 if mask_file else head_mask(data)
    mask = img.new_image_like(mask_data.astype(np.float32))
    spacing = [max(fit_spacing_mm, s) for s in img.spacing]
    small = ants.resample_image(img, spacing, False, 0)
    small_mask = ants.resample_image(mask, spacing, False, 1)
    small_mask = small_mask.new_image_like((small_mask.numpy() > 0.5).astype(np.float32))
    log_field = ants.n4_bias_field_correction(
        small,
        mask=small_mask,
        shrink_factor=1,
        spline_param=N4_SPLINE_DISTANCE_MM,
        convergence={"iters": [40, 30], "tol": 1e-5},
        return_bias_field=True,
    )
    field = ants.resample_image_to_target(log_field, img, interp_type="linear").numpy()
    field = np.where(field > 0, field, 1.0)
    corrected = np.clip(data, 0, None) / field
    inside = corrected[mask_data] if mask_data.any() else corrected
    scale = np.percentile(inside, 99.5) if inside.size else 1.0
    out = nib.Nifti1Image(
        (corrected / max(scale, 1e-6) * 1000).astype(np.float32), nib.load(str(in_file)).affine
    )
    out.to_filename(str(out_file))
    return Path(out_file)


def bounding_box(mask: np.ndarray, margin: int = 2) -> tuple[slice, slice, slice]:
    """Slices of the smallest box holding ``mask``, grown by ``margin`` voxels (whole image if empty)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def crop(img: nib.Nifti1Image, box: tuple[slice, slice, slice]) -> nib.Nifti1Image:
    """Sub-volume of ``img`` with its affine moved so every voxel keeps its world position."""
    return img.slicer[box]
