"""Command line: options, exit codes on real bad inputs, and never writing into bids_dir."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from conftest import tree_fingerprint, write_tiny_t1w
from ketabids import __version__
from ketabids.cli import build_parser, main


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


def test_version_and_help_exit_zero(capsys):
    assert run_cli("--version") == 0
    assert __version__ in capsys.readouterr().out
    assert run_cli("--help") == 0
    assert "--participant-label" in capsys.readouterr().out


def test_help_documents_every_option_default():
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        if (
            action.option_strings
            and action.default not in (None, False)
            and action.dest not in ("help", "version")
        ):
            assert action.help and ("default" in parser._get_formatter()._get_help_string(action)), (
                action.dest
            )
    assert "neuromorphometrics" in text


@pytest.mark.parametrize(
    "extra",
    [
        ["--nprocs", "0"],
        ["--response-threshold", "1.5"],
        ["--features", "pixels"],
        ["--no-such-option"],
    ],
)
def test_bad_options_exit_64(tiny_bids, tmp_path, extra):
    bids_dir = tiny_bids()
    assert run_cli(bids_dir, tmp_path / "out", "participant", *extra) == 64


def test_missing_bids_dir_exits_66(tmp_path):
    assert run_cli(tmp_path / "nowhere", tmp_path / "out", "participant") == 66


@pytest.mark.parametrize("label", ["../01", "sub-0*", "01/..", "sub-"])
def test_malicious_labels_exit_64_and_create_nothing(tiny_bids, tmp_path, label, caplog):
    bids_dir = tiny_bids()
    before = tree_fingerprint(bids_dir)
    out = tmp_path / "out"
    assert run_cli(bids_dir, out, "participant", "--participant-label", label, "--skip-bids-validation") == 64
    assert not out.exists()
    assert tree_fingerprint(bids_dir) == before
    assert "invalid label" in caplog.text


def test_unknown_participant_exits_66_naming_it(tiny_bids, tmp_path, caplog):
    bids_dir = tiny_bids()
    out = tmp_path / "out"
    code = run_cli(
        bids_dir, out, "participant", "--participant-label", "sub-01", "99", "--skip-bids-validation"
    )
    assert code == 66
    assert "sub-99" in caplog.text and "sub-01" not in caplog.text.split("not found")[-1]
    assert not out.exists()


def test_missing_t1w_exits_66_naming_participant(tiny_bids, tmp_path, caplog):
    bids_dir = tiny_bids(subjects=("01", "02"))
    t1w = bids_dir / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    t1w.rename(t1w.with_name("sub-02_T2w.nii.gz"))
    t1w.with_name("sub-02_T1w.json").rename(t1w.with_name("sub-02_T2w.json"))
    assert run_cli(bids_dir, tmp_path / "out", "participant", "--participant-label", "02") == 66
    assert "sub-02" in caplog.text and "no T1w" in caplog.text


def test_unknown_session_exits_66(tiny_bids, tmp_path):
    bids_dir = tiny_bids(sessions=("pre",))
    args = ("--session-label", "post", "--skip-bids-validation")
    assert run_cli(bids_dir, tmp_path / "out", "participant", *args) == 66


def test_invalid_dataset_exits_16_with_validator_errors(tiny_bids, tmp_path, caplog):
    bids_dir = tiny_bids()
    (bids_dir / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"not a nifti")
    assert run_cli(bids_dir, tmp_path / "out", "participant") == 16
    assert "BIDS validation failed" in caplog.text
    assert (
        run_cli(
            bids_dir, tmp_path / "out", "participant", "--participant-label", "99", "--skip-bids-validation"
        )
        == 66
    )


@pytest.mark.parametrize("shape", [(12, 14, 10, 3), (12, 14)])
def test_non_3d_t1w_exits_65_naming_file(tiny_bids, tmp_path, caplog, shape):
    bids_dir = tiny_bids()
    path = bids_dir / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.int16), np.eye(4)), path)
    args = ("participant", "--skip-bids-validation", "--participant-label", "02")
    assert run_cli(bids_dir, tmp_path / "out", *args) == 65
    assert "sub-02" in caplog.text and str(path) in caplog.text


def test_unreadable_t1w_exits_65(tiny_bids, tmp_path, caplog):
    bids_dir = tiny_bids()
    (bids_dir / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"\x1f\x8bbroken")
    args = ("participant", "--skip-bids-validation", "--participant-label", "01")
    assert run_cli(bids_dir, tmp_path / "out", *args) == 65
    assert "cannot read" in caplog.text


def test_output_inside_bids_dir_is_refused(tiny_bids):
    bids_dir = tiny_bids()
    before = tree_fingerprint(bids_dir)
    assert run_cli(bids_dir, bids_dir / "derivatives" / "ketabids", "participant") == 64
    assert tree_fingerprint(bids_dir) == before


def test_group_level_needs_a_single_session(tiny_bids, tmp_path):
    bids_dir = tiny_bids()
    assert run_cli(bids_dir, tmp_path / "out", "group", "--session-label", "pre", "post") == 64


def test_group_level_missing_model_file_exits_66(tiny_bids, tmp_path):
    bids_dir = tiny_bids()
    assert run_cli(bids_dir, tmp_path / "out", "group", "--model", tmp_path / "none.skops") == 66


def test_sub_prefix_is_stripped_and_duplicates_dropped():
    from ketabids.bids import clean_labels

    assert clean_labels(["sub-01", "01", "02"], "sub-") == ("01", "02")


def test_first_run_is_chosen_and_all_runs_listed(tiny_bids):
    from ketabids.bids import load_layout, select_t1w

    bids_dir = tiny_bids(subjects=("01",), sessions=("pre", "post"), runs=3)
    inputs, missing = select_t1w(load_layout(bids_dir), ("01",), ("pre",))
    assert missing == []
    assert len(inputs) == 1
    assert inputs[0].path.name == "sub-01_ses-pre_run-1_T1w.nii.gz"
    assert [p.name for p in inputs[0].all_runs] == [f"sub-01_ses-pre_run-{r}_T1w.nii.gz" for r in (1, 2, 3)]
    assert inputs[0].name == "sub-01_ses-pre"


def test_run_index_orders_numerically(tmp_path):
    from conftest import make_tiny_bids
    from ketabids.bids import load_layout, select_t1w

    bids_dir = make_tiny_bids(tmp_path / "b", subjects=("01",))
    anat = bids_dir / "sub-01" / "anat"
    (anat / "sub-01_T1w.nii.gz").unlink()
    (anat / "sub-01_T1w.json").unlink()
    for run in (10, 2):
        write_tiny_t1w(anat / f"sub-01_run-{run}_T1w.nii.gz")
    inputs, _ = select_t1w(load_layout(bids_dir))
    assert inputs[0].path.name == "sub-01_run-2_T1w.nii.gz"


def test_resources_follow_scheduler_variables(monkeypatch):
    from ketabids.resources import available_cpus, available_memory_gb

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "8192")
    assert available_cpus() == 3
    assert available_memory_gb() == 8.0
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.delenv("SLURM_MEM_PER_NODE")
    monkeypatch.undo()
    assert 1 <= available_cpus() <= len(__import__("os").sched_getaffinity(0))
    assert available_memory_gb() > 0.1


def test_bids_dir_untouched_by_failed_runs(tiny_bids, tmp_path):
    bids_dir = tiny_bids(sessions=("pre",))
    before = tree_fingerprint(bids_dir)
    run_cli(bids_dir, tmp_path / "o1", "participant", "--session-label", "post")
    run_cli(bids_dir, tmp_path / "o2", "participant", "--participant-label", "../x")
    assert tree_fingerprint(bids_dir) == before
    assert not (tmp_path / "o2").exists()
