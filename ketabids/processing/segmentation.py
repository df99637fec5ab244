"""GM/WM/CSF segmentation: Atropos initialised and guided by template tissue priors warped to the T1w."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ketabids.processing.anat import bounding_box, crop
from ketabids.processing.registration import ants_seed

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
    seed: int = 0,
) -> Segmentation:
    """Atropos (priors GM, WM, CSF in T1w space) -> probability maps that sum to 1 in the mask + dseg.

    Atropos runs with ANTs' constant random seed (``use-random-seed 0``; ``seed`` also goes to
    ``ANTS_RANDOM_SEED`` for ANTs builds that read it), so reruns give identical maps.
    """
    import ants

    out_dir = Path(out_dir)
    t1w_img = nib.load(str(t1w_file))
    inside_full = np.asanyarray(nib.load(str(mask_file)).dataobj) > 0
    box = bounding_box(inside_full, margin=2)  # Atropos on the brain's box only: same result, less work
    box_file = out_dir / "t1w_box.nii.gz"  # via a file, so priors written by Atropos share its geometry
    crop(nib.Nifti1Image(t1w_img.get_fdata(dtype=np.float32), t1w_img.affine), box).to_filename(str(box_file))
    t1w = ants.image_read(str(box_file))
    inside = inside_full[box]
    mask = t1w.new_image_like(inside.astype(np.float32))
    stacked = np.stack([nib.load(str(p)).get_fdata(dtype=np.float32)[box] for p in prior_files], axis=-1)
    stacked = stacked.clip(0, None)
    stacked[inside] += 1e-3  # every tissue stays possible inside the mask
    stacked /= np.maximum(stacked.sum(axis=-1, keepdims=True), 1e-6)
    priors = [mask.new_image_like((stacked[..., k] * inside).astype(np.float32)) for k in range(3)]
    os.environ["ANTS_RANDOM_SEED"] = str(ants_seed(seed))
    result = ants.atropos(
        a=t1w, x=mask, i=priors, m=MRF, c=ITERATIONS, priorweight=prior_weight, r=0, verbose=0
    )
    cropped = np.stack([p.numpy() for p in result["probabilityimages"]], axis=-1)
    cropped = np.where(inside[..., None], cropped, 0)
    total = cropped.sum(axis=-1, keepdims=True)
    posteriors = np.zeros((*inside_full.shape, 3), np.float32)
    posteriors[box] = np.where(total > 0, cropped / np.maximum(total, 1e-6), 0)
    inside = inside_full
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
