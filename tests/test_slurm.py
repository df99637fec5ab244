"""The participant level through a real single-node Slurm (``slurm_cluster`` fixture, conftest.py).

One scenario test runs 3 phantom participants (4 mm; one made to fail inside the workflow) as a
job array, compares a participant's outputs byte for byte with a local run, then resubmits only
the incomplete participants; it is one test so that pytest-xdist never runs it twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ketabids.bids import T1wInput
from ketabids.cli import main
from ketabids.outputs import output_names

CLI = "import sys; from ketabids.cli import main; sys.exit(main(sys.argv[1:]))"
ONE_THREAD = ["--skip-bids-validation", "--nprocs", "1", "--omp-nthreads", "1"]
SLURM = ["--slurm", *ONE_THREAD, "--mem-gb", "2"]


def ketabids(*args: object, env: dict) -> subprocess.CompletedProcess:
    """ketabids as a user runs it: a fresh process (ITK fixes its thread count per process)."""
    command = [sys.executable, "-c", CLI, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)


def error_lines(stderr: str) -> list[str]:
    """The per-participant error lines of a run's log."""
    return [line.split("ERROR: ", 1)[1] for line in stderr.splitlines() if "ERROR: sub-" in line]


def contract(bids: Path, out: Path, label: str) -> list[Path]:
    """Every file of a participant's output contract."""
    t1w = bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
    return list(output_names(t1w, out, "neuromorphometrics").values())


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> tuple[Path, list[str], str]:
    """3 simulated 4 mm participants; the last one's image emptied (all zeros, header kept): it passes
    the input checks and fails in the workflow's first steps."""
    from ketabids.simulate.cohort import simulate_cohort
    from ketabids.simulate.dataset import write_bids_dataset

    bids = tmp_path_factory.mktemp("slurm") / "bids"
    design = simulate_cohort(n_discovery=3, n_external=(), n_saline=0, seed=11)
    write_bids_dataset(bids, design, voxel_size=(4.0, 4.0, 4.0), seed=11)
    *labels, bad = sorted(p.name.removeprefix("sub-") for p in bids.glob("sub-*"))
    image = nib.load(bids / f"sub-{bad}" / "anat" / f"sub-{bad}_T1w.nii.gz")
    empty = nib.Nifti1Image(np.zeros(image.shape, image.get_data_dtype()), image.affine, image.header)
    empty.to_filename(image.get_filename())
    return bids, labels, bad


def tasks(out: Path) -> dict[str, str]:
    """Participant -> its last Slurm task id, from the run's record."""
    from ketabids.slurm import read_records

    return {task.subject: task.task_id for task in read_records(out / "logs" / "slurm" / "jobs.tsv")}


def slurm_log(out: Path, task: str) -> Path:
    return out / "logs" / "slurm" / f"slurm-{task}.log"


@pytest.mark.slow
def test_participants_as_a_job_array_then_only_the_incomplete_resubmitted(slurm_cluster, phantoms, tmp_path):
    bids, labels, bad_label = phantoms
    env, out = slurm_cluster.env, tmp_path / "out"
    local = tmp_path / "local"
    local_run = subprocess.Popen(  # the same participant run here, alongside the array
        [sys.executable, "-c", CLI, bids, local, "participant", "--participant-label", labels[0],
         *ONE_THREAD, "-w", tmp_path / "local-work"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = ketabids(bids, out, "participant", *SLURM, "--slurm-timeout", 1500, env=env)
    assert first.returncode == 1, first.stderr[-3000:]
    job = first.stdout.split()[0]
    assert job.isdigit() and set(tasks(out)) == {*labels, bad_label}
    bad = tasks(out)[bad_label]
    [line] = error_lines(first.stderr)  # one line, for the failing participant only
    assert line.startswith(f"sub-{bad_label}: Slurm task {bad} FAILED (exit 1:0): step 'anat_preproc_wf.")
    assert line.endswith(f"(log: {slurm_log(out, bad)})") and bad_label in slurm_log(out, bad).read_text()
    assert "1 of 3 participant run(s) failed" in first.stderr
    for label in labels:
        assert all(path.is_file() for path in contract(bids, out, label)), label
        assert f"sub-{label}: finished (Slurm task {tasks(out)[label]})" in first.stderr

    # same seed, --omp-nthreads 1: the Slurm task wrote the very bytes of a local run
    assert local_run.wait(timeout=1800) == 0, local_run.stderr.read()[-3000:]
    compared = [p for p in contract(bids, out, labels[0]) if p.name.endswith((".nii.gz", "_morph.tsv"))]
    assert len(compared) >= 10
    for path in compared:
        assert path.read_bytes() == (local / path.relative_to(out)).read_bytes(), path.name

    # a lost output makes labels[1] incomplete: only it and the failed one are resubmitted (held here)
    done = {p: p.stat().st_mtime_ns for p in contract(bids, out, labels[0])}
    before = tasks(out)
    regional = next(p for p in contract(bids, out, labels[1]) if p.name.endswith("_morph.tsv"))
    regional.unlink()
    held = ketabids(bids, out, "participant", *SLURM, "--no-wait", "--slurm-args=--hold", env=env)
    assert held.returncode == 0, held.stderr[-3000:]
    second = held.stdout.split()[0]
    assert f"1 participant(s) already complete, not resubmitted: {labels[0]}" in held.stderr
    after = tasks(out)
    assert {label for label in after if after[label] != before[label]} == {labels[1], bad_label}
    assert [after[labels[1]], after[bad_label]] == [f"{second}_0", f"{second}_1"]

    # tasks still queued are waited for, not submitted twice; the wait ends at --slurm-timeout
    waiting = ketabids(bids, out, "participant", *SLURM, "--slurm-timeout", 3, env=env)
    assert waiting.returncode == 1 and waiting.stdout == "" and tasks(out) == after
    assert sorted(error_lines(waiting.stderr)) == [
        f"sub-{label}: Slurm task {after[label]} PENDING: not ended within the 3 s --slurm-timeout; it "
        f"stays queued: rerun the same command to wait for it again, or scancel it "
        f"(log: {slurm_log(out, after[label])})"
        for label in (labels[1], bad_label)
    ]
    subprocess.run(["scontrol", "release", second], env=env, check=True)
    last = ketabids(bids, out, "participant", *SLURM, "--slurm-timeout", 1500, env=env)
    assert last.returncode == 1, last.stderr[-3000:]
    [line] = error_lines(last.stderr)
    assert (
        line.startswith(f"sub-{bad_label}: Slurm task ")
        and "FAILED (exit 1:0): step 'anat_preproc_wf." in line
    )
    assert regional.is_file()
    assert {p: p.stat().st_mtime_ns for p in done} == done  # complete participants left alone


def test_sbatch_failure_exits_1_with_its_message(slurm_cluster, tiny_bids, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    args = [tiny_bids(), tmp_path / "out", "participant", *SLURM, "--slurm-args=--partition=nowhere"]
    assert main([str(a) for a in args]) == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("sbatch failed: ") and "invalid partition" in line.lower()


def test_no_sbatch_on_path_exits_64_naming_what_was_tried(tiny_bids, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main([str(tiny_bids()), str(tmp_path / "out"), "participant", "--slurm"]) == 64
    assert f"--slurm needs sbatch and squeue on PATH, not found in '{tmp_path / 'empty'}'" in caplog.text
    assert not (tmp_path / "out" / "logs").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["participant", "--no-wait"], "--no-wait needs --slurm"),
        (["participant", "--slurm-timeout", "5"], "--slurm-timeout needs --slurm"),
        (["group", "--slurm"], "--slurm runs the participant level"),
        (["participant", "--slurm", "--slurm-args=--partition='x"], "--slurm-args"),
    ],
)
def test_unusable_slurm_options_exit_64(tiny_bids, tmp_path, caplog, extra, message):
    assert main([str(tiny_bids()), str(tmp_path / "out"), *extra]) == 64
    assert message in caplog.text


def test_batch_script_runs_one_participant_per_task(tmp_path):
    from ketabids.settings import ParticipantSettings
    from ketabids.slurm import batch_script, sbatch_command, task_argv

    settings = ParticipantSettings(
        bids_dir=Path("/d/bids"), output_dir=Path("/d/out"), work_dir=Path("/d/work"),
        participant_labels=(), nprocs=2, omp_nthreads=4, mem_gb=3.5,
    )  # fmt: skip
    argv = task_argv(settings, "01", ("pre",), verbose=1)
    assert argv[:4] == ["/d/bids", "/d/out", "participant", "--participant-label"]
    assert argv[4:7] == ["01", "--session-label", "pre"]
    assert argv[argv.index("-w") + 1] == "/d/work/sub-01" and argv[-1] == "-v"
    script = tmp_path / "array.sh"
    script.write_text(batch_script([["echo", "first task"], ["echo", "it's the second"]]))
    for task, expected in ((0, "first task"), (1, "it's the second")):
        result = subprocess.run(["bash", script], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(task)},
                                capture_output=True, text=True, check=True)  # fmt: skip
        assert result.stdout == expected + "\n"
    command = sbatch_command(settings, 2, script, ["--partition=short"])
    assert "--array=0-1" in command and "--cpus-per-task=4" in command and "--mem=3584M" in command
    assert command[-2:] == ["--partition=short", str(script)]


def test_inputs_with_complete_outputs_are_not_pending(tmp_path):
    from ketabids.settings import ParticipantSettings
    from ketabids.slurm import pending_by_subject

    items = [
        T1wInput(s, None, tmp_path / f"sub-{s}" / "anat" / f"sub-{s}_T1w.nii.gz", ()) for s in ("a", "b")
    ]
    settings = ParticipantSettings(bids_dir=tmp_path, output_dir=tmp_path / "out", work_dir=tmp_path / "w",
                                   participant_labels=())  # fmt: skip
    for path in output_names(items[0].path, settings.output_dir, settings.atlas).values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert list(pending_by_subject(settings, items)) == ["b"]
    next(iter(output_names(items[0].path, settings.output_dir, settings.atlas).values())).write_bytes(b"")
    assert list(pending_by_subject(settings, items)) == ["a", "b"]  # an empty output is not complete
