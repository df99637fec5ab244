"""The simulated BIDS dataset: valid BIDS, indexed by pybids, truth next to every scan, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids import BIDSLayout

from ketabids.simulate.__main__ import main
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.dataset import write_bids_dataset
from ketabids.simulate.phantom import make_phantom

SESSIONS = ("pre", "post")


@pytest.fixture(scope="module")
def design():
    return simulate_cohort(n_discovery=1, n_external=(1,), n_saline=0, seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, design):
    bids_dir = tmp_path_factory.mktemp("sim") / "bids"
    write_bids_dataset(bids_dir, design, voxel_size=4.0, sessions=SESSIONS, runs=2, seed=7)
    return bids_dir


@pytest.mark.skipif(shutil.which("bids-validator-deno") is None, reason="bids-validator-deno not installed")
def test_dataset_passes_the_bids_validator(dataset):
    result = subprocess.run(
        ["bids-validator-deno", "--format", "json", str(dataset)], capture_output=True, text=True, timeout=300
    )
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [issue for issue in issues if issue["severity"] == "error"]
    assert not errors, errors[:3]
    assert result.returncode == 0


def test_pybids_indexes_participants_sessions_and_runs(dataset, design):
    layout = BIDSLayout(dataset)
    assert layout.get_subjects() == [p.removeprefix("sub-") for p in design.participants["participant_id"]]
    assert sorted(layout.get_sessions()) == sorted(SESSIONS)
    assert layout.get_runs() == [1, 2]
    assert len(layout.get(suffix="T1w", extension=".nii.gz")) == 2 * 2 * 2
    participants = pd.read_csv(dataset / "participants.tsv", sep="\t")
    pd.testing.assert_frame_equal(participants, design.participants, check_dtype=False)
    described = json.loads((dataset / "participants.json").read_text())
    assert set(described) == set(participants.columns)


def test_every_scan_has_its_truth_and_rescans_share_it(dataset, design):
    layout = BIDSLayout(dataset)
    for subject in layout.get_subjects():
        tables = []
        for t1w in layout.get(subject=subject, suffix="T1w", extension=".nii.gz"):
            stem = t1w.filename.removesuffix("_T1w.nii.gz")
            truth = dataset / "sourcedata" / "truth" / Path(t1w.relpath).parent
            regional = pd.read_csv(truth / f"{stem}_seg-{design.atlas}_morph.tsv", sep="\t")
            tissue = pd.read_csv(truth / f"{stem}_desc-tissue_morph.tsv", sep="\t")
            assert list(regional.columns) == ["index", "name", "gm_volume_mm3"]
            assert list(tissue.columns) == ["tiv_mm3", "gm_volume_mm3", "wm_volume_mm3", "csf_volume_mm3"]
            gm = nib.load(truth / f"{stem}_label-GM_probseg.nii.gz")
            voxel = np.prod(gm.header.get_zooms()[:3])
            assert tissue.loc[0, "gm_volume_mm3"] == pytest.approx(gm.get_fdata().sum() * voxel, rel=1e-4)
            mask = nib.load(truth / f"{stem}_desc-brain_mask.nii.gz")
            assert mask.shape == gm.shape
            tables.append(regional)
        for other in tables[1:]:
            pd.testing.assert_frame_equal(other, tables[0])


def test_truth_follows_the_design(dataset, design):
    """Each participant's true regional GM differs from the same anatomy without change by the design."""
    truth = dataset / "sourcedata" / "truth"
    anatomy = pd.read_csv(truth / "anatomy.tsv", sep="\t").set_index("participant_id")
    assert list(anatomy.index) == list(design.participants["participant_id"])
    for pid in anatomy.index:
        volumes = pd.read_csv(
            truth / pid / "ses-pre" / "anat" / f"{pid}_ses-pre_run-1_seg-{design.atlas}_morph.tsv", sep="\t"
        ).set_index("name")["gm_volume_mm3"]
        unchanged = make_phantom(
            atlas=design.atlas,
            anatomy_seed=int(anatomy.loc[pid, "anatomy_seed"]),
            head_scale=float(anatomy.loc[pid, "head_scale"]),
            voxel_size=(4.0, 4.0, 4.0),
        ).regional_gm.set_index("name")["gm_volume_mm3"]
        observed = volumes / unchanged - 1
        expected = design.regional_change.loc[pid].reindex(observed.index)
        large = unchanged > 5000
        assert np.corrcoef(observed[large], expected[large])[0, 1] > 0.9
        assert (observed[large] - expected[large]).abs().median() < 0.01


def test_same_seed_same_dataset(tmp_path, design):
    one = design.participants.iloc[:1]
    single = type(design)(
        participants=one,
        regional_change=design.regional_change.loc[one["participant_id"]],
        head_scale=design.head_scale.loc[one["participant_id"]],
        atlas=design.atlas,
    )
    for name in ("a", "b"):
        write_bids_dataset(tmp_path / name, single, voxel_size=4.0, seed=3)
    pid = one["participant_id"].iloc[0]
    images = [nib.load(tmp_path / name / pid / "anat" / f"{pid}_T1w.nii.gz") for name in ("a", "b")]
    np.testing.assert_array_equal(np.asarray(images[0].dataobj), np.asarray(images[1].dataobj))
    np.testing.assert_array_equal(images[0].affine, images[1].affine)


def test_command_line_writes_tables_and_refuses_bad_sessions(tmp_path, capsys):
    out = tmp_path / "cohort"
    code = main([str(out), "--mode", "tables", "--n-discovery", "6", "--n-external", "3", "--n-saline", "2"])
    assert code == 0
    participants = pd.read_csv(out / "participants.tsv", sep="\t")
    assert len(participants) == 11
    tables = sorted((tmp_path / "cohort-derivatives").rglob("*_morph.tsv"))  # beside the dataset, not in it
    assert len(tables) == 2 * 11
    assert main([str(tmp_path / "bad"), "--n-discovery", "1", "--sessions", "../x"]) == 64
    assert "session label" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    assert help_exit.value.code == 0


def test_bad_participant_labels_are_refused_before_writing(tmp_path, design):
    bad = type(design)(
        participants=design.participants.assign(participant_id=["sub-1", "sub-../x"]),
        regional_change=design.regional_change,
        head_scale=design.head_scale,
        atlas=design.atlas,
    )
    with pytest.raises(ValueError, match="is not 'sub-<alphanumeric label>'"):
        write_bids_dataset(tmp_path / "bids", bad, voxel_size=4.0)
    assert not (tmp_path / "bids").exists()
