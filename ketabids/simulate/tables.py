"""Participant derivative tables written straight from a ``CohortDesign`` (no images).

The group level reads only these tables for ROI features, so it can be exercised at scale.
Baseline regional GM volumes are the template GM probability map summed over each atlas GM
region; each participant's volumes follow its regional change and head size, with a per-site
scanner offset and measurement noise (``CohortDesign.measurement_sd``, TIV noise ``tiv_sd``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from nilearn.image import resample_to_img

from ketabids.data.atlases import load_atlas
from ketabids.data.templates import load_template
from ketabids.derivatives import derivative_path, write_text_atomic, write_tsv_atomic
from ketabids.simulate.cohort import SITE_SD, CohortDesign


@dataclass(frozen=True)
class TemplateVolumes:
    """Template anatomy in mm3: GM per atlas GM region (indexed by name) and tissue totals."""

    regions: pd.DataFrame  # index, name, gm_volume_mm3
    tiv: float
    gm: float
    wm: float
    csf: float


@lru_cache(maxsize=4)
def template_volumes(atlas_name: str) -> TemplateVolumes:
    """GM volume of each atlas GM region and tissue totals of the 1 mm template."""
    template = load_template()
    atlas = load_atlas(atlas_name)
    labels = resample_to_img(
        atlas.image, template.gm, interpolation="nearest", force_resample=True, copy_header=True
    )
    label_data = np.asarray(labels.dataobj).astype(np.int64).ravel()
    voxel_mm3 = float(abs(np.linalg.det(template.affine[:3, :3])))
    gm = template.gm.get_fdata(dtype=np.float32).ravel()
    sums = np.bincount(label_data.clip(0), weights=gm, minlength=int(label_data.max()) + 1) * voxel_mm3
    gm_labels = atlas.gm_labels
    regions = pd.DataFrame(
        {
            "index": gm_labels["index"].to_numpy(),
            "name": gm_labels["name"].to_numpy(),
            "gm_volume_mm3": sums[gm_labels["index"].to_numpy()],
        }
    )
    totals = {
        key: float(img.get_fdata(dtype=np.float32).sum() * voxel_mm3)
        for key, img in (
            ("tiv", template.mask),
            ("gm", template.gm),
            ("wm", template.wm),
            ("csf", template.csf),
        )
    }
    return TemplateVolumes(regions=regions, **totals)


def _site_offsets(sites: pd.Series, n_regions: int, seed: int) -> dict[str, np.ndarray]:
    """A fixed fractional scanner bias per site and region."""
    rng = np.random.default_rng([seed, 7919])
    return {site: rng.normal(0, SITE_SD, n_regions) for site in sorted(sites.unique())}


def write_tables(
    design: CohortDesign,
    bids_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    qc_fail: tuple[str, ...] = (),
) -> None:
    """Write ``participants.tsv`` into ``bids_dir`` and the morphometry tables into ``output_dir``.

    ``qc_fail`` names participants whose tissue table is flagged by QC (``qc_flag = 1``).
    """
    bids_dir, output_dir = Path(bids_dir), Path(output_dir)
    bids_dir.mkdir(parents=True, exist_ok=True)
    write_tsv_atomic(design.participants, bids_dir / "participants.tsv")
    description = {"Name": "ketabids simulated cohort", "BIDSVersion": "1.10.0", "DatasetType": "raw"}
    write_text_atomic(json.dumps(description, indent=2) + "\n", bids_dir / "dataset_description.json")

    base = template_volumes(design.atlas)
    names = base.regions["name"]
    change = design.regional_change.reindex(columns=names).to_numpy()
    noise_sd = design.measurement_sd.reindex(names).to_numpy()
    sites = design.participants.set_index("participant_id")["site"]
    offsets = _site_offsets(sites, len(names), seed)
    rng = np.random.default_rng(seed)
    for row, participant in enumerate(design.regional_change.index):
        volume_scale = design.head_scale[participant] ** 3
        true_gm = base.regions["gm_volume_mm3"].to_numpy() * (1 + change[row]) * volume_scale
        measured = true_gm * (1 + offsets[sites[participant]]) * (1 + rng.normal(0, noise_sd))
        regions = base.regions.assign(gm_volume_mm3=np.round(measured, 1))
        tiv = base.tiv * volume_scale * (1 + rng.normal(0, design.tiv_sd))
        gm_change = base.regions["gm_volume_mm3"].to_numpy() @ change[row]
        gm_total = (base.gm + gm_change) * volume_scale * (1 + rng.normal(0, 0.01))
        wm_total = base.wm * volume_scale * (1 + rng.normal(0, 0.02))
        tissue = pd.DataFrame(
            {
                "tiv_mm3": [round(tiv, 1)],
                "gm_volume_mm3": [round(gm_total, 1)],
                "wm_volume_mm3": [round(wm_total, 1)],
                "csf_volume_mm3": [round(tiv - gm_total - wm_total, 1)],
                "qc_gm_wm_cnr": [round(float(rng.normal(3.0, 0.3)), 3)],
                "qc_flag": [int(participant in qc_fail)],
                "qc_reasons": ["gm_wm_cnr" if participant in qc_fail else None],
            }
        )
        source = f"{participant}_T1w.nii.gz"
        write_tsv_atomic(
            regions, derivative_path(source, output_dir, suffix="morph", extension=".tsv", seg=design.atlas)
        )
        write_tsv_atomic(
            tissue, derivative_path(source, output_dir, suffix="morph", extension=".tsv", desc="tissue")
        )


def shift_scanner(
    output_dir: str | os.PathLike,
    participants: list[str],
    *,
    gain: float = 1.08,
    region_sd: float = 0.05,
    spread: float = 1.3,
    seed: int = 0,
) -> None:
    """Rewrite the regional GM tables of ``participants`` as measured by another scanner.

    Each region's GM fraction of TIV is scaled by ``gain`` times a per-region factor (SD
    ``region_sd``: scanners differ region by region) and its spread around the participants'
    median widened by ``spread``: a per-region affine map, the scanner effect ComBat models.
    TIV and the tissue tables are left as they were.
    """
    output_dir = Path(output_dir)
    paths = [next((output_dir / p).glob("**/anat/*_seg-*_morph.tsv")) for p in participants]
    tissue = [next((output_dir / p).glob("**/anat/*_desc-tissue_morph.tsv")) for p in participants]
    tables = [pd.read_csv(path, sep="\t") for path in paths]
    tiv = np.array([float(pd.read_csv(path, sep="\t")["tiv_mm3"].iloc[0]) for path in tissue])
    fraction = np.array([table["gm_volume_mm3"].to_numpy(dtype=float) for table in tables]) / tiv[:, None]
    rng = np.random.default_rng([seed, 104729])
    region_gain = gain * (1 + rng.normal(0, region_sd, fraction.shape[1]))
    centre = np.median(fraction, axis=0)
    shifted = region_gain * (centre + spread * (fraction - centre)) * tiv[:, None]
    for table, path, volumes in zip(tables, paths, shifted, strict=True):
        write_tsv_atomic(table.assign(gm_volume_mm3=np.round(volumes, 1)), path)
