"""Participant level end to end on a small phantom: accuracy against truth, resume, error paths."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_from_to

from ketabids import __version__
from ketabids.bids import MissingT1w, T1wInput
from ketabids.cli import participant_exit_code
from ketabids.participant import ParticipantFailure, run_participant_level
from ketabids.settings import ParticipantSettings

VOXEL_MM = 4.0


def _input(bids: Path, label: str) -> T1wInput:
    path = bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
    return T1wInput(label, None, path, (path,))


def _settings(root: Path, **kwargs) -> ParticipantSettings:
    values = dict(
        bids_dir=root / "bids",
        output_dir=root / "out",
        work_dir=root / "work",
        participant_labels=(),
        nprocs=2,
    )
    return ParticipantSettings(**{**values, **kwargs})


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run: a good phantom (sub-good), an empty image that fails in the workflow (sub-bad), and
    inputs refused before any workflow: a 4D image (sub-fourd), a truncated .nii.gz (sub-cut) and a
    participant without T1w (sub-none)."""
    from ketabids.simulate.phantom import make_phantom

    root = tmp_path_factory.mktemp("participant")
    bids = root / "bids"
    (bids / "sub-good" / "anat").mkdir(parents=True)
    (bids / "sub-bad" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    phantom = make_phantom(anatomy_seed=4, acquisition_seed=5, voxel_size=(VOXEL_MM,) * 3)
    phantom.t1w.to_filename(_input(bids, "good").path)
    nib.Nifti1Image(np.zeros((20, 20, 20), np.int16), np.diag([3.0, 3.0, 3.0, 1.0])).to_filename(
        _input(bids, "bad").path
    )
    for label in ("fourd", "cut"):
        (bids / f"sub-{label}" / "anat").mkdir(parents=True)
    nib.Nifti1Image(np.ones((8, 8, 8, 3), np.int16), np.eye(4)).to_filename(_input(bids, "fourd").path)
    phantom.t1w.to_filename(_input(bids, "cut").path)
    data = _input(bids, "cut").path.read_bytes()
    _input(bids, "cut").path.write_bytes(data[: len(data) // 2])
    inputs = [_input(bids, label) for label in ("good", "bad", "fourd", "cut")]
    missing = [MissingT1w("none", None, bids / "sub-none" / "anat")]
    start = time.time()
    failures = run_participant_level(_settings(root), inputs, missing)
    return root, phantom, inputs, failures, time.time() - start


@pytest.mark.slow
def test_failing_participant_is_reported_and_does_not_stop_the_other(run):
    root, _, _, failures, _ = run
    assert sorted(f.subject for f in failures) == ["bad", "cut", "fourd", "none"]
    assert participant_exit_code(failures, 5, root / "out") == 1  # partial failure
    refused = {f.subject: str(f) for f in failures if f.before_workflow}
    assert "sub-fourd_T1w.nii.gz is not a 3D T1w volume" in refused["fourd"]
    assert "sub-cut_T1w.nii.gz is truncated or corrupt" in refused["cut"]
    assert refused["none"].startswith("sub-none: no T1w image found in")
    assert all("\n" not in line for line in refused.values())
    assert {f.exit_code for f in failures if f.before_workflow} == {65, 66}
    failure = next(f for f in failures if f.subject == "bad")
    assert failure.file.endswith("sub-bad_T1w.nii.gz")
    assert failure.node.startswith("anat_preproc_wf.")
    assert failure.reason and "\n" not in str(failure)
    assert (root / "out" / "sub-good" / "anat" / "sub-good_seg-neuromorphometrics_morph.tsv").is_file()
    assert not (root / "out" / "sub-bad" / "anat").exists() or not any(
        (root / "out" / "sub-bad" / "anat").iterdir()
    )


@pytest.mark.slow
def test_outputs_follow_the_contract(run):
    root = run[0]
    out = root / "out"
    anat = out / "sub-good" / "anat"
    expected = [
        "sub-good_desc-preproc_T1w.nii.gz",
        "sub-good_desc-brain_mask.nii.gz",
        "sub-good_label-GM_probseg.nii.gz",
        "sub-good_label-WM_probseg.nii.gz",
        "sub-good_label-CSF_probseg.nii.gz",
        "sub-good_dseg.nii.gz",
        "sub-good_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5",
        "sub-good_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.h5",
        "sub-good_space-MNI152NLin2009aSym_label-GM_desc-modulated_probseg.nii.gz",
        "sub-good_seg-neuromorphometrics_morph.tsv",
        "sub-good_desc-tissue_morph.tsv",
    ]
    for name in expected:
        assert (anat / name).is_file(), name
    for name in ("dataset_description.json", ".bidsignore", "dseg.tsv", "sub-good.html"):
        assert (out / name).is_file(), name
    for name in ("sub-good_desc-tissue_morph.json", "sub-good_desc-preproc_T1w.json"):
        generated = json.loads((anat / name).read_text())["GeneratedBy"]
        assert generated == [{"Name": "ketabids", "Version": __version__}], name
    tissue = pd.read_csv(anat / "sub-good_desc-tissue_morph.tsv", sep="\t")
    assert len(tissue) == 1
    for column in (
        "tiv_mm3",
        "gm_volume_mm3",
        "wm_volume_mm3",
        "csf_volume_mm3",
        "cnr",
        "cjv",
        "snr",
        "qc_flag",
    ):
        assert column in tissue.columns
    row = tissue.iloc[0]
    assert row.tiv_mm3 == pytest.approx(row.gm_volume_mm3 + row.wm_volume_mm3 + row.csf_volume_mm3)
    regional = pd.read_csv(anat / "sub-good_seg-neuromorphometrics_morph.tsv", sep="\t")
    assert {"index", "name", "tissue", "gm_volume_mm3"} <= set(regional.columns)
    assert (regional["tissue"] == "gm").sum() > 100
    dseg = np.asarray(nib.load(anat / "sub-good_dseg.nii.gz").dataobj)
    assert set(np.unique(dseg)) == {0, 1, 2, 3}
    atlas = np.asarray(nib.load(anat / "sub-good_seg-neuromorphometrics_dseg.nii.gz").dataobj)
    assert atlas.shape == dseg.shape
    labels = pd.read_csv(anat / "sub-good_seg-neuromorphometrics_dseg.tsv", sep="\t")
    assert {"index", "name"} <= set(labels.columns)
    assert set(np.unique(atlas)) - {0} <= set(labels["index"]) and len(np.unique(atlas)) > 50


@pytest.mark.slow
def test_measurements_agree_with_phantom_truth(run):
    root, phantom = run[0], run[1]
    anat = root / "out" / "sub-good" / "anat"
    mask = nib.load(anat / "sub-good_desc-brain_mask.nii.gz")
    truth_mask = resample_from_to(phantom.brain_mask, mask, order=1).get_fdata() >= 0.5
    assert _dice(truth_mask, mask.get_fdata() > 0) > 0.93
    gm = nib.load(anat / "sub-good_label-GM_probseg.nii.gz")
    truth = np.stack(
        [resample_from_to(getattr(phantom, t), gm, order=1).get_fdata() for t in ("gm", "wm", "csf")]
    )
    truth_gm = (truth.argmax(0) == 0) & (truth.sum(0) >= 0.5)
    dseg = np.asarray(nib.load(anat / "sub-good_dseg.nii.gz").dataobj)
    assert _dice(truth_gm, dseg == 1) > 0.75  # 3 mm voxels: much partial volume
    regional = pd.read_csv(anat / "sub-good_seg-neuromorphometrics_morph.tsv", sep="\t")
    merged = phantom.regional_gm.merge(regional, on="index", suffixes=("_true", "_est"))
    assert np.corrcoef(merged["gm_volume_mm3_true"], merged["gm_volume_mm3_est"])[0, 1] > 0.95
    tissue = pd.read_csv(anat / "sub-good_desc-tissue_morph.tsv", sep="\t").iloc[0]
    assert tissue.tiv_mm3 == pytest.approx(phantom.tiv_mm3, rel=0.06)


@pytest.mark.slow
def test_rerun_reuses_finished_nodes(run):
    root, _, inputs, _, first_duration = run
    register_result = next((root / "work").rglob("sub_good_wf/registration_wf/register/result_register.pklz"))
    stamp = register_result.stat().st_mtime
    tsv = root / "out" / "sub-good" / "anat" / "sub-good_seg-neuromorphometrics_morph.tsv"
    tsv.unlink()
    start = time.time()
    failures = run_participant_level(_settings(root, nprocs=1), inputs[:1])
    assert failures == []
    assert register_result.stat().st_mtime == stamp
    assert tsv.is_file()  # the writer always runs, so a deleted output comes back
    assert time.time() - start < 0.5 * first_duration


@pytest.mark.slow
def test_same_input_and_options_give_byte_identical_outputs_at_any_thread_count(run):
    """Seeded ANTs/Atropos/deepbet: two command-line runs (new work dirs), with --omp-nthreads 1 and
    2, write the same bytes (gzip headers and the HDF5 transforms carry no time stamp; N4 and the
    affine stages, whose sums depend on the thread count, always run with one thread). Each run is
    a fresh process as for a user: ITK fixes its thread count at its first call in a process, so a
    run inside this test process (or in workers forked from it) would inherit whatever other tests
    set."""
    root = run[0]
    code = "import sys; from ketabids.cli import main; sys.exit(main(sys.argv[1:]))"
    outputs = []
    for name, threads in (("first", "1"), ("second", "2")):
        out, work = root / "identity" / name / "out", root / "identity" / name / "work"
        args = [str(root / "bids"), str(out), "participant", "--participant-label", "good"]
        args += ["--skip-bids-validation", "-w", str(work), "--nprocs", "1", "--omp-nthreads", threads]
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(out / "sub-good" / "anat")
    first, second = outputs
    names = sorted(p.name for p in first.iterdir() if p.name.endswith((".nii.gz", "_morph.tsv", "_xfm.h5")))
    assert len(names) >= 12 and sum(name.endswith("_xfm.h5") for name in names) == 2
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.slow
def test_participant_without_crash_file_but_missing_outputs_fails(run, monkeypatch):
    """A worker killed by the OOM killer, or a crash folder that cannot be written, leaves no crash
    file: the participant must still fail, because its output contract is incomplete."""
    import ketabids.participant as participant

    root, _, inputs, _, _ = run
    monkeypatch.setattr(participant, "collect_failures", lambda *args: [])
    failures = run_participant_level(_settings(root, nprocs=1), [inputs[1]])
    assert [(f.subject, f.node) for f in failures] == [("bad", "outputs")]
    assert "missing or unreadable" in str(failures[0]) and "\n" not in str(failures[0])


def test_4d_input_is_bad_data_before_any_workflow(tmp_path):
    bids = tmp_path / "bids"
    (bids / "sub-x" / "anat").mkdir(parents=True)
    item = _input(bids, "x")
    nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.int16), np.eye(4)).to_filename(item.path)
    [failure] = run_participant_level(_settings(tmp_path), [item])
    assert failure.exit_code == 65 and failure.before_workflow
    assert str(failure).startswith("sub-x: ") and "sub-x_T1w.nii.gz" in str(failure)
    assert not (tmp_path / "work").exists()


def test_unreadable_input_is_bad_data(tmp_path):
    bids = tmp_path / "bids"
    (bids / "sub-y" / "anat").mkdir(parents=True)
    item = _input(bids, "y")
    item.path.write_bytes(b"not a nifti")
    [failure] = run_participant_level(_settings(tmp_path), [item])
    assert failure.exit_code == 65 and "cannot read" in str(failure)


def test_failure_is_one_line():
    failure = ParticipantFailure("01", "pre", "registration_wf.register", "/d/sub-01_T1w.nii.gz", "boom")
    assert (
        str(failure) == "sub-01 ses-pre: step 'registration_wf.register' failed on /d/sub-01_T1w.nii.gz: boom"
    )
