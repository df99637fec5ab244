"""GM/WM/CSF segmentation: Atropos initialised and guided by template tissue priors warped to the T1w."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

TISSUES = ("GM", "WM", "CSF")
PRIOR_WEIGHT = 0.25
MRF = "[0.1,1x1x1]"
ITERATIONS = "[5,0]"


@dataclass(frozen=True)
class Segmentation:
    """Paths of the tissue probability maps (GM, WM, CSF) and of the hard segmentation."""

    probabilities: tuple[Path, Path, Path]
    dseg: Path


def hard_segmentation(probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Labels 1 GM, 2 WM, 3 CSF: the most probable tissue inside the mask, 0 outside.

    ``probabilities`` has the tissues (GM, WM, CSF) on its last axis.
    """
    labels = probabilities.argmax(axis=-1).astype(np.uint8) + 1
    return np.where(mask, labels, 0).astype(np.uint8)


def segment_tissues(
    t1w_file: str | os.PathLike,
    mask_file: str | os.PathLike,
    prior_files: tuple[str | os.PathLike, str | os.PathLike, str | os.PathLike],
    out_dir: str | os.PathLike,
    prior_weight: float = PRIOR_WEIGHT,
) -> Segmentation:
    """Atropos (priors GM, WM, CSF in T1w space) -> probability maps that sum to 1 in the mask + dseg."""
    import ants

    out_dir = Path(out_dir)
    t1w = ants.image_read(str(t1w_file))
    mask = ants.image_read(str(mask_file))
    mask = mask.new_image_like((mask.numpy() > 0).astype(np.float32))
    priors = [ants.image_read(str(p)) for p in prior_files]
    inside = mask.numpy() > 0
    stacked = np.stack([p.numpy() for p in priors], axis=-1).clip(0, None)
    stacked[inside] += 1e-3  # every tissue stays possible inside the mask
    stacked /= np.maximum(stacked.sum(axis=-1, keepdims=True), 1e-6)
    priors = [mask.new_image_like((stacked[..., k] * inside).astype(np.float32)) for k in range(3)]
    result = ants.atropos(a=t1w, x=mask, i=priors, m=MRF, c=ITERATIONS, priorweight=prior_weight, verbose=0)
    posteriors = np.stack([p.numpy() for p in result["probabilityimages"]], axis=-1)
    posteriors = np.where(inside[..., None], posteriors, 0)
    total = posteriors.sum(axis=-1, keepdims=True)
    posteriors = np.where(total > 0, posteriors / np.maximum(total, 1e-6), 0).astype(np.float32)
    affine = nib.load(str(t1w_file)).affine
    paths = []
    for k, tissue in enumerate(TISSUES):
        path = out_dir / f"probseg_{tissue}.nii.gz"
        nib.Nifti1Image(posteriors[..., k], affine).to_filename(str(path))
        paths.append(path)
    dseg_path = out_dir / "dseg.nii.gz"
    dseg = nib.Nifti1Image(hard_segmentation(posteriors, inside), affine)
    dseg.set_data_dtype(np.uint8)
    dseg.to_filename(str(dseg_path))
    return Segmentation(probabilities=(paths[0], paths[1], paths[2]), dseg=dseg_path)
