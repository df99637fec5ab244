"""The MNI152NLin2009aSym template and tissue priors shipped inside nilearn (no download)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np

TEMPLATE_NAME = "MNI152NLin2009aSym"


@dataclass(frozen=True)
class Template:
    """Template T1w (skull-stripped), brain mask and GM/WM/CSF probability maps on one 1 mm grid."""

    t1w: nib.Nifti1Image
    mask: nib.Nifti1Image
    gm: nib.Nifti1Image
    wm: nib.Nifti1Image
    csf: nib.Nifti1Image

    @property
    def affine(self) -> np.ndarray:
        return self.t1w.affine


def _as_float(img: nib.spatialimages.SpatialImage, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    data = np.clip(np.asarray(img.get_fdata(), dtype=np.float32), 0, None)
    return nib.Nifti1Image(data, reference.affine)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Load the 1 mm MNI152NLin2009aSym T1w, mask and tissue priors (CSF = mask - GM - WM)."""
    from nilearn import datasets

    t1w = datasets.load_mni152_template(resolution=1)
    t1w = nib.Nifti1Image(np.asarray(t1w.get_fdata(), dtype=np.float32), t1w.affine)
    gm = _as_float(datasets.load_mni152_gm_template(resolution=1), t1w)
    wm = _as_float(datasets.load_mni152_wm_template(resolution=1), t1w)
    mask_data = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0, np.float32)
    gm_data, wm_data = gm.get_fdata(dtype=np.float32), wm.get_fdata(dtype=np.float32)
    total = gm_data + wm_data
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-6), 1).astype(np.float32)
    gm_data, wm_data = gm_data * scale, wm_data * scale
    csf_data = np.clip(mask_data - gm_data - wm_data, 0, 1) * mask_data
    return Template(
        t1w=t1w,
        mask=nib.Nifti1Image(mask_data, t1w.affine),
        gm=nib.Nifti1Image(gm_data, t1w.affine),
        wm=nib.Nifti1Image(wm_data, t1w.affine),
        csf=nib.Nifti1Image(csf_data.astype(np.float32), t1w.affine),
    )
