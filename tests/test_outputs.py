"""Participant outputs record how they were made (JSON sidecars)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ketabids.derivatives import sidecar_path
from ketabids.outputs import output_names, write_participant_outputs


def test_sidecars_record_the_brain_extraction_that_ran(tmp_path: Path) -> None:
    method = "deepbet"
    source = tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    work = tmp_path / "work"
    work.mkdir()
    image = work / "image.nii.gz"
    nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).to_filename(str(image))
    tissue = work / "tissue.tsv"
    pd.DataFrame([{"tiv_mm3": 1.4e6, "qc_flag": 0, "brain_extraction": method}]).to_csv(
        tissue, sep="\t", index=False
    )
    regional = work / "regional.tsv"
    pd.DataFrame({"index": [1], "name": ["a"], "gm_volume_mm3": [1.0]}).to_csv(
        regional, sep="\t", index=False
    )
    keys = output_names(source, tmp_path / "out", "aal")
    atlas_labels = work / "atlas_labels.tsv"
    pd.DataFrame({"index": [1], "name": ["a"]}).to_csv(atlas_labels, sep="\t", index=False)
    tables = {"tissue": tissue, "regional": regional, "atlas_labels": atlas_labels}
    files = {key: image for key in keys} | tables
    written = write_participant_outputs(source, tmp_path / "out", "aal", files)
    for key in ("brain_mask", "t1w_preproc", "gm", "tissue", "regional"):
        assert json.loads(sidecar_path(written[key]).read_text())["BrainExtraction"] == method, key
