"""The app as users run it: ``run.py`` on a synthetic dataset, read-only input, unwritable HOME."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import tree_fingerprint
from ketabids.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_SUFFIXES = (
    "desc-preproc_T1w.nii.gz",
    "desc-brain_mask.nii.gz",
    "label-GM_probseg.nii.gz",
    "label-WM_probseg.nii.gz",
    "label-CSF_probseg.nii.gz",
    "dseg.nii.gz",
    "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5",
    "from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.h5",
    "space-MNI152NLin2009aSym_label-GM_desc-modulated_probseg.nii.gz",
    "seg-neuromorphometrics_morph.tsv",
    "desc-tissue_morph.tsv",
)


def validator() -> str | None:
    return shutil.which("bids-validator-deno") or shutil.which(
        "bids-validator-deno", path=str(Path(sys.executable).parent)
    )


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory) -> Path:
    from ketabids.simulate.cohort import simulate_cohort
    from ketabids.simulate.dataset import write_bids_dataset

    bids_dir = tmp_path_factory.mktemp("e2e") / "bids"
    design = simulate_cohort(n_discovery=2, n_external=(), n_saline=0, seed=3)
    write_bids_dataset(bids_dir, design, voxel_size=(4.0, 4.0, 4.0), sessions=("pre", "post"), seed=3)
    return bids_dir


@pytest.mark.slow
def test_participant_level_writes_the_contract(phantom_dataset, tmp_path, monkeypatch):
    from bids import BIDSLayout

    bids_dir = phantom_dataset
    before = tree_fingerprint(bids_dir)
    not_a_folder = tmp_path / "home-is-a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("HOME", str(not_a_folder))  # nothing can be created below HOME
    out = tmp_path / "out"
    argv = [
        str(bids_dir),
        str(out),
        "participant",
        "--session-label",
        "pre",
        "--nprocs",
        "2",
        "--omp-nthreads",
        "1",
    ]
    assert main(argv) == 0
    assert tree_fingerprint(bids_dir) == before, "bids_dir must never be written"

    subjects = sorted(p.name for p in bids_dir.glob("sub-*"))
    for subject in subjects:
        anat = out / subject / "ses-pre" / "anat"
        names = {p.name for p in anat.iterdir()}
        for suffix in CONTRACT_SUFFIXES:
            assert f"{subject}_ses-pre_{suffix}" in names, (subject, suffix)
        assert not (out / subject / "ses-post").exists(), "only the selected session is processed"
        assert (out / f"{subject}.html").is_file()
        assert not [n for n in names if n.startswith(".")], "no temporary files left behind"
        tissue = pd.read_csv(anat / f"{subject}_ses-pre_desc-tissue_morph.tsv", sep="\t")
        truth = pd.read_csv(next((bids_dir / "sourcedata").rglob(f"{subject}_ses-pre*tissue*.tsv")), sep="\t")
        assert tissue["tiv_mm3"].iloc[0] == pytest.approx(truth["tiv_mm3"].iloc[0], rel=0.15)

    layout = BIDSLayout(out, validate=False, is_derivative=True)
    gm_maps = layout.get(suffix="probseg", label="GM", session="pre", extension=".nii.gz")
    assert len(gm_maps) == 2 * len(subjects), "native GM and modulated GM per subject"
    assert all(layout.get_metadata(f.path)["Sources"][0].startswith("bids:raw:sub-") for f in gm_maps)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    if validator():
        result = subprocess.run([validator(), "--format", "json", str(out)], capture_output=True, text=True)
        errors = [i for i in json.loads(result.stdout)["issues"]["issues"] if i["severity"] == "error"]
        assert not errors, errors[:3]
