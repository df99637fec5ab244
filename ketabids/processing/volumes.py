"""Regional and tissue tables of one participant, from the files of the workflow."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.processing import resample_from_to

from ketabids import morphometry
from ketabids.data.atlases import load_atlas
from ketabids.data.templates import load_template


def _load(path: str | os.PathLike) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj, dtype=np.float32)


def measure(
    *,
    t1w: str | os.PathLike,
    mask: str | os.PathLike,
    gm: str | os.PathLike,
    wm: str | os.PathLike,
    csf: str | os.PathLike,
    atlas_labels: str | os.PathLike,
    atlas: str,
    t1w_in_template: str | os.PathLike,
    brain_extraction: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Regional GM table (one row per atlas label) and the one-row tissue + QC table
    (which names the ``brain_extraction`` method that ran)."""
    voxel = morphometry.voxel_volume(nib.load(str(gm)).affine)
    gm_data, wm_data, csf_data, mask_data = _load(gm), _load(wm), _load(csf), _load(mask) > 0
    labels = np.rint(_load(atlas_labels)).astype(np.int64)
    regional = morphometry.regional_gm_volumes(gm_data, labels, load_atlas(atlas).labels, voxel)
    tissue = morphometry.tissue_volumes(gm_data, wm_data, csf_data, voxel)
    warped = nib.load(str(t1w_in_template))
    template = load_template()
    template_t1w = resample_from_to(template.t1w, warped, order=1).get_fdata(dtype=np.float32)
    template_mask = resample_from_to(template.mask, warped, order=0).get_fdata() > 0
    qc = {
        "brain_volume_mm3": float(mask_data.sum() * voxel),
        **morphometry.tissue_fractions(tissue),
        **morphometry.contrast_metrics(_load(t1w), gm_data, wm_data),
        "registration_correlation": morphometry.similarity(
            warped.get_fdata(dtype=np.float32), template_t1w, template_mask
        ),
    }
    flagged = morphometry.qc_flags({**tissue, **qc})
    row = {**tissue, **qc, "qc_flag": int(bool(flagged)), "qc_reasons": ";".join(flagged) or None}
    row["brain_extraction"] = brain_extraction
    return regional, pd.DataFrame([row])
