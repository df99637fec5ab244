"""GM/WM/CSF partial-volume segmentation inside the intracranial cavity.

1. Atropos (three Gaussian classes, light MRF) labels the brain-mask voxels. The template tissue
   priors, warped to the T1w, only initialise it (prior weight 0): the labels follow the image.
   Should the classes come out in the wrong intensity order (priors far from this anatomy),
   Atropos reruns from a k-means initialisation.
2. Partial-volume fractions come from the intensities between the pure class means
   (:mod:`ketabids.processing.partial_volume`); Atropos posteriors are not used as fractions.
   Inside the deep grey nuclei (Harvard-Oxford thalamus, caudate, putamen, pallidum, accumbens,
   brought from the template) non-CSF tissue is GM.
3. The intracranial cavity is the template's brain mask grown by ``CAVITY_MARGIN_MM`` of external
   CSF (its edge runs through the cortical surface), brought to the T1w through the inverse of
   the nonlinear registration (a fraction in [0, 1] at its edge). Outside the brain
   mask it holds CSF; every fraction is weighted by it, so GM + WM + CSF sums to the cavity and
   total intracranial volume (TIV) does not depend on where the brain mask's outer edge lies.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ketabids.data.atlases import DEEP_GM
from ketabids.processing import partial_volume as pv
from ketabids.processing.anat import bounding_box, crop
from ketabids.processing.registration import ants_seed

TISSUES = ("GM", "WM", "CSF")
PRIOR_WEIGHT = 0.0  # priors initialise Atropos only
MRF = "[0.1,1x1x1]"
ITERATIONS = "[5,0]"
CAVITY_MARGIN_MM = 2.0  # external CSF layer added around the template brain mask


@dataclass(frozen=True)
class Segmentation:
    """Paths of the tissue fraction maps (GM, WM, CSF) and of the hard segmentation."""

    probabilities: tuple[Path, Path, Path]
    dseg: Path


@contextmanager
def scratch_tempdir(folder: str | os.PathLike) -> Iterator[Path]:
    """Point Python's temporary folder at a fresh folder below ``folder``, deleted on exit.

    antspyx's ``atropos`` writes its prior and posterior images to ``tempfile.mktemp`` names and
    never deletes them; this keeps them out of the host's /tmp.
    """
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="scratch_", dir=folder) as scratch:
        tempfile.tempdir = scratch
        try:
            yield Path(scratch)
        finally:
            tempfile.tempdir = previous


def atropos_labels(
    t1w_file: str | os.PathLike,
    mask: np.ndarray,
    priors: np.ndarray | None,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Atropos labels (1 GM, 2 WM, 3 CSF) in ``mask``; ``t1w_file`` and the arrays share one grid.

    ``priors`` (GM, WM, CSF on the last axis) initialise the classes; ``priors=None`` initialises
    them by k-means on the intensities instead (classes ordered CSF < GM < WM).
    """
    import ants

    t1w = ants.image_read(str(t1w_file))  # read from a file, so the priors share its geometry
    ants_mask = t1w.new_image_like(mask.astype(np.float32))
    if priors is None:
        initial, order = "KMeans[3]", [1, 2, 0]  # k-means classes: CSF, GM, WM
    else:
        stacked = priors.clip(0, None).astype(np.float32)
        stacked[mask] += 1e-3  # every tissue stays possible inside the mask
        stacked /= np.maximum(stacked.sum(axis=-1, keepdims=True), 1e-6)
        initial = [t1w.new_image_like((stacked[..., k] * mask).astype(np.float32)) for k in range(3)]
        order = [0, 1, 2]
    os.environ["ANTS_RANDOM_SEED"] = str(ants_seed(seed))
    with scratch_tempdir(Path(t1w_file).parent):
        result = ants.atropos(
            a=t1w, x=ants_mask, i=initial, m=MRF, c=ITERATIONS, priorweight=PRIOR_WEIGHT, r=0, verbose=0
        )
        posteriors = np.stack([result["probabilityimages"][k].numpy() for k in order], axis=-1)
    return np.where(mask, posteriors.argmax(axis=-1) + 1, 0).astype(np.uint8)


def segment_tissues(
    t1w_file: str | os.PathLike,
    mask_file: str | os.PathLike,
    prior_files: tuple[str | os.PathLike, str | os.PathLike, str | os.PathLike],
    cavity_file: str | os.PathLike,
    deep_gm_file: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
) -> Segmentation:
    """Atropos labels -> PV fractions weighted by the cavity -> GM, WM, CSF maps + dseg.

    Atropos runs with ANTs' constant random seed (``use-random-seed 0``; ``seed`` also goes to
    ``ANTS_RANDOM_SEED`` for ANTs builds that read it), so reruns give identical maps.
    """
    out_dir = Path(out_dir)
    t1w_img = nib.load(str(t1w_file))
    affine = t1w_img.affine
    brain = np.asanyarray(nib.load(str(mask_file)).dataobj) > 0
    cavity = np.clip(nib.load(str(cavity_file)).get_fdata(dtype=np.float32), 0, 1)
    box = bounding_box(brain | (cavity > 0), margin=2)  # work on the head's box only
    box_file = out_dir / "t1w_box.nii.gz"
    crop(nib.Nifti1Image(t1w_img.get_fdata(dtype=np.float32), affine), box).to_filename(str(box_file))
    t1w = nib.load(str(box_file)).get_fdata(dtype=np.float32)
    inside = brain[box]
    priors = np.stack([nib.load(str(p)).get_fdata(dtype=np.float32)[box] for p in prior_files], axis=-1)
    deep = None
    if deep_gm_file is not None:
        deep = (nib.load(str(deep_gm_file)).get_fdata(dtype=np.float32)[box] >= 0.5) & inside
    labels = atropos_labels(box_file, inside, priors, seed=seed)
    try:
        means = pv.pure_means(t1w, labels, exclude=deep)
    except ValueError:  # priors far from this anatomy led Atropos astray: start from k-means
        labels = atropos_labels(box_file, inside, None, seed=seed)
        means = pv.pure_means(t1w, labels, exclude=deep)
    labels[~inside] = pv.CSF  # the cavity outside the brain mask is CSF
    fractions = pv.pv_fractions(t1w, labels, means, deep)
    fractions[~inside] = (0, 0, 1)
    fractions *= cavity[box][..., None]
    full = np.zeros((*brain.shape, 3), np.float32)
    full[box] = fractions
    paths = []
    for k, tissue in enumerate(TISSUES):
        path = out_dir / f"probseg_{tissue}.nii.gz"
        nib.Nifti1Image(full[..., k], affine).to_filename(str(path))
        paths.append(path)
    dseg_path = out_dir / "dseg.nii.gz"
    dseg = nib.Nifti1Image(pv.hard_segmentation(full, cavity >= 0.5), affine)
    dseg.set_data_dtype(np.uint8)
    dseg.to_filename(str(dseg_path))
    return Segmentation(probabilities=(paths[0], paths[1], paths[2]), dseg=dseg_path)


@lru_cache(maxsize=1)
def cavity_template(margin_mm: float = CAVITY_MARGIN_MM) -> nib.Nifti1Image:
    """Intracranial cavity in template space: the template brain mask, whose edge runs through the
    cortical surface, with holes filled and grown by ``margin_mm`` of external CSF."""
    from ketabids.data.templates import load_template

    mask = load_template().mask
    brain = ndimage.binary_fill_holes(mask.get_fdata() > 0)
    spacing = np.sqrt((mask.affine[:3, :3] ** 2).sum(axis=0))
    cavity = ndimage.distance_transform_edt(~brain, sampling=spacing) <= margin_mm
    return nib.Nifti1Image(cavity.astype(np.float32), mask.affine)


@lru_cache(maxsize=1)
def deep_gm_template() -> nib.Nifti1Image:
    """Mask of the deep grey nuclei (Harvard-Oxford subcortical labels) in template space."""
    from ketabids.data.atlases import load_atlas

    atlas = load_atlas("harvard_oxford")
    index = atlas.labels.loc[atlas.labels["name"].str.contains(DEEP_GM), "index"].to_numpy()
    if index.size == 0:
        raise ValueError("the Harvard-Oxford atlas has no deep grey-nucleus labels")
    data = np.isin(np.asanyarray(atlas.image.dataobj), index).astype(np.float32)
    return nib.Nifti1Image(data, atlas.image.affine)


def warp_cavity_and_deep_gm(
    inverse: str | os.PathLike, reference_file: str | os.PathLike, out_dir: str | os.PathLike
) -> tuple[Path, Path]:
    """The template's intracranial cavity and deep-GM masks on the T1w grid (linear, [0, 1])."""
    import ants

    reference = ants.image_read(str(reference_file))
    paths = []
    for name, img in (("cavity", cavity_template()), ("deep_gm", deep_gm_template())):
        moving = ants.from_nibabel_nifti(nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine))
        warped = ants.apply_transforms(reference, moving, [str(inverse)], interpolator="linear")
        path = Path(out_dir) / f"{name}.nii.gz"
        ants.image_write(warped, str(path))
        paths.append(path)
    return paths[0], paths[1]
