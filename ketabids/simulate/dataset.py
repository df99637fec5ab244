"""Write a simulated cohort as a valid BIDS raw dataset, with the truth under ``sourcedata/truth``."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ketabids.simulate.cohort import CohortDesign, simulate_cohort
from ketabids.simulate.phantom import Phantom, make_phantom

BIDS_VERSION = "1.10.0"
T1W_SIDECAR = {
    "Modality": "MR",
    "MagneticFieldStrength": 3,
    "Manufacturer": "ketabids-simulate",
    "ManufacturersModelName": "whole-head T1w phantom",
    "MRAcquisitionType": "3D",
    "PulseSequenceType": "MPRAGE (simulated)",
    "RepetitionTime": 2.3,
    "EchoTime": 0.00298,
    "InversionTime": 0.9,
    "FlipAngle": 9,
}
PARTICIPANT_COLUMNS = {
    "participant_id": {"Description": "participant label"},
    "treatment": {
        "Description": "treatment received",
        "Levels": {"ketamine": "IV ketamine 0.5 mg/kg", "saline": "IV saline"},
    },
    "cohort": {"Description": "cohort: 'discovery' trains the model, any other value is an external cohort"},
    "site": {"Description": "acquisition site"},
    "age": {"Description": "age", "Units": "year"},
    "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    "madrs_pre": {"Description": "MADRS total score before the infusion"},
    "madrs_24h": {"Description": "MADRS total score 24 h after the infusion"},
}
TRUTH_README = """Truth of the simulated dataset (ketabids.simulate), ignored by BIDS tools.

Per scan, next to the T1w's entities:
  *_seg-<atlas>_morph.tsv   true GM volume per atlas GM region (index, name, gm_volume_mm3)
  *_desc-tissue_morph.tsv   tiv_mm3, gm_volume_mm3, wm_volume_mm3, csf_volume_mm3
  *_label-GM_probseg.nii.gz true GM fraction, native space (anatomy grid, same world space as the T1w)
  *_desc-brain_mask.nii.gz  true intracranial mask (GM + WM + CSF >= 0.5), native space
  *_acquisition.json        pose, field of view, contrast and seeds of the scan
anatomy.tsv: per participant the anatomy seed, head scale and requested regional GM change.
Rescans (sessions, runs) share the anatomy, so their tables are identical.
"""


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _stem(participant: str, session: str | None, run: int | None) -> str:
    parts = [participant] + ([f"ses-{session}"] if session else []) + ([f"run-{run}"] if run else [])
    return "_".join(parts)


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def _write_truth(phantom: Phantom, folder: Path, stem: str, extra: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    phantom.regional_gm.to_csv(folder / f"{stem}_seg-{phantom.atlas}_morph.tsv", sep="\t", index=False)
    phantom.tissue_volumes.to_csv(folder / f"{stem}_desc-tissue_morph.tsv", sep="\t", index=False)
    nib.save(phantom.gm, folder / f"{stem}_label-GM_probseg.nii.gz")
    nib.save(phantom.brain_mask, folder / f"{stem}_desc-brain_mask.nii.gz")
    _write_json(folder / f"{stem}_acquisition.json", {**phantom.acquisition, **extra})


def _write_participant(
    bids_dir: Path,
    participant: str,
    number: int,
    change: dict[str, float],
    head_scale: float,
    atlas: str,
    sessions: Sequence[str | None],
    runs: int,
    seed: int,
    options: dict,
) -> None:
    anatomy_seed = _seed(seed, number)
    for s, session in enumerate(sessions):
        for run in range(1, runs + 1):
            acquisition_seed = _seed(seed, number, s + 1, run)
            phantom = make_phantom(
                regional_change=change,
                head_scale=head_scale,
                atlas=atlas,
                anatomy_seed=anatomy_seed,
                acquisition_seed=acquisition_seed,
                **options,
            )
            stem = _stem(participant, session, run if runs > 1 else None)
            rel = Path(participant, *([f"ses-{session}"] if session else []), "anat")
            anat = bids_dir / rel
            anat.mkdir(parents=True, exist_ok=True)
            nib.save(phantom.t1w, anat / f"{stem}_T1w.nii.gz")
            _write_json(anat / f"{stem}_T1w.json", T1W_SIDECAR)
            seeds = {"anatomy_seed": anatomy_seed, "acquisition_seed": acquisition_seed}
            _write_truth(phantom, bids_dir / "sourcedata" / "truth" / rel, stem, seeds)


def write_bids_dataset(
    bids_dir: str | Path,
    design: CohortDesign | None = None,
    *,
    n_subjects: int = 4,
    voxel_size: float | Sequence[float] = 1.0,
    noise: float = 0.03,
    bias: float = 0.2,
    neck: bool = True,
    sessions: Sequence[str] = (),
    runs: int = 1,
    seed: int = 0,
    n_jobs: int = 1,
) -> None:
    """Write a BIDS raw dataset of whole-head T1w phantoms and its truth.

    ``design`` (from ``simulate_cohort``) gives the participants, their regional GM change and head
    scale; without it a discovery-only cohort of ``n_subjects`` is drawn from ``seed``. Each
    participant gets ``runs`` T1w scans per session (``sessions``, e.g. ``("pre", "post")``, or none);
    every scan is a rescan of the same anatomy with a new pose, field of view, bias and noise.
    The truth (regional GM and tissue tables, GM fraction map, brain mask) goes to
    ``bids_dir/sourcedata/truth/`` with the same entities as each T1w. Participants run in
    ``n_jobs`` processes.
    """
    bids_dir = Path(bids_dir)
    if design is None:
        design = simulate_cohort(n_discovery=n_subjects, n_external=(), n_saline=0, seed=seed)
    for pid in design.participants["participant_id"]:
        if not re.fullmatch(r"sub-[0-9a-zA-Z]+", str(pid)):
            raise ValueError(f"participant_id '{pid}' is not 'sub-<alphanumeric label>'")
    for label in sessions:
        if not str(label).isalnum():
            raise ValueError(f"session label '{label}' must be alphanumeric")
    if runs < 1:
        raise ValueError("runs must be >= 1")
    voxel = (float(voxel_size),) * 3 if np.isscalar(voxel_size) else tuple(float(v) for v in voxel_size)
    options = {"voxel_size": voxel, "noise": noise, "bias": bias, "neck": neck}
    bids_dir.mkdir(parents=True, exist_ok=True)
    _write_json(
        bids_dir / "dataset_description.json",
        {
            "Name": "ketabids simulated whole-head T1w cohort",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["ketabids simulator"],
            "GeneratedBy": [{"Name": "ketabids.simulate", "Description": f"seed {seed}"}],
        },
    )
    (bids_dir / "README").write_text(
        "Synthetic whole-head T1w phantoms with known truth, written by ketabids.simulate.\n"
        "The true volumes are in sourcedata/truth (see its README).\n"
    )
    participants = design.participants.copy()
    participants.to_csv(bids_dir / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    _write_json(
        bids_dir / "participants.json",
        {c: PARTICIPANT_COLUMNS.get(c, {"Description": c}) for c in participants.columns},
    )
    truth = bids_dir / "sourcedata" / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    (truth / "README").write_text(TRUTH_README)
    ids = list(participants["participant_id"])
    anatomy = pd.DataFrame(
        {
            "participant_id": ids,
            "anatomy_seed": [_seed(seed, i + 1) for i in range(len(ids))],
            "head_scale": design.head_scale.reindex(ids).to_numpy(),
        }
    )
    anatomy = pd.concat([anatomy, design.regional_change.reindex(ids).reset_index(drop=True)], axis=1)
    anatomy.to_csv(truth / "anatomy.tsv", sep="\t", index=False)

    jobs = [
        (
            bids_dir,
            pid,
            i + 1,
            {k: float(v) for k, v in design.regional_change.loc[pid].items()},
            float(design.head_scale.loc[pid]),
            design.atlas,
            tuple(sessions) or (None,),
            runs,
            seed,
            options,
        )
        for i, pid in enumerate(ids)
    ]
    if n_jobs == 1:
        for job in jobs:
            _write_participant(*job)
    else:
        from joblib import Parallel, delayed

        Parallel(n_jobs=n_jobs)(delayed(_write_participant)(*job) for job in jobs)
