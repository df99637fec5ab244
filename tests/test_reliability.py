"""Failure modes BIDS-App users hit: each ends in a one-line error and the right exit code."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import tree_fingerprint
from ketabids.cli import _check_paths, build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


# --- inputs refused per participant, before any workflow ---------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_gzip_is_bad_data_naming_participant_and_file(tiny_bids, tmp_path, caplog):
    bids_dir = tiny_bids()
    path = bids_dir / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    _truncate(path)
    args = ("participant", "--participant-label", "01", "--skip-bids-validation")
    assert run_cli(bids_dir, tmp_path / "out", *args) == 65
    line = next(r.getMessage() for r in caplog.records if "is truncated" in r.getMessage())
    assert "sub-01" in line and str(path) in line and "\n" not in line
    assert not (tmp_path / "out" / "sub-01").exists()


def test_corrupt_gzip_crc_is_found(tmp_path):
    from ketabids.bids import image_problem

    source = tmp_path / "ok.nii.gz"
    from conftest import write_tiny_t1w

    write_tiny_t1w(source)
    raw = bytearray(gzip.decompress(source.read_bytes()))
    raw[-1] ^= 0xFF  # last voxel changed, CRC of the stream no longer matches
    broken = gzip.compress(bytes(raw))
    crc_of_original = source.read_bytes()[-8:]
    (tmp_path / "bad.nii.gz").write_bytes(broken[:-8] + crc_of_original)
    assert image_problem(source) is None
    assert "corrupt" in image_problem(tmp_path / "bad.nii.gz")


def test_only_missing_t1w_exits_66(tiny_bids, tmp_path, caplog):
    bids_dir = tiny_bids(subjects=("01", "02"))
    t1w = bids_dir / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    t1w.rename(t1w.with_name("sub-02_T2w.nii.gz"))
    args = ("participant", "--participant-label", "02", "--skip-bids-validation")
    assert run_cli(bids_dir, tmp_path / "out", *args) == 66
    assert "sub-02: no T1w image found in" in caplog.text


def test_missing_t1w_is_returned_not_raised(tiny_bids):
    from ketabids.bids import load_layout, select_t1w

    bids_dir = tiny_bids(subjects=("01", "02"))
    (bids_dir / "sub-02" / "anat" / "sub-02_T1w.nii.gz").unlink()
    inputs, missing = select_t1w(load_layout(bids_dir))
    assert [i.subject for i in inputs] == ["01"]
    assert [(m.subject, m.session) for m in missing] == [("02", None)]


def test_exit_code_rule():
    from ketabids.cli import participant_exit_code
    from ketabids.participant import ParticipantFailure

    bad = ParticipantFailure("01", None, "", "f", "not 3D", 65)
    missing = ParticipantFailure("02", None, "", "d", "no T1w", 66)
    crashed = ParticipantFailure("03", None, "registration_wf.register", "f", "boom")
    out = Path("out")
    assert participant_exit_code([], 3, out) == 0
    assert participant_exit_code([bad], 1, out) == 65
    assert participant_exit_code([missing], 1, out) == 66
    assert participant_exit_code([bad, missing], 2, out) == 65
    assert participant_exit_code([bad], 2, out) == 1  # the other one ran: partial failure
    assert participant_exit_code([crashed], 1, out) == 1


def test_label_with_trailing_newline_is_refused():
    from ketabids.bids import clean_labels
    from ketabids.errors import UsageError

    with pytest.raises(UsageError):
        clean_labels(["01\n"], "sub-")


# --- paths the user gives ----------------------------------------------------------------------


@pytest.mark.parametrize("level", ["participant", "group"])
def test_impossible_output_dir_exits_64_in_one_line(tiny_bids, tmp_path, caplog, level):
    bids_dir = tiny_bids()
    assert run_cli(bids_dir, "/proc/ketabids-x", level, "--skip-bids-validation") == 64
    assert "cannot use /proc/ketabids-x as the output directory" in caplog.text


def test_output_dir_that_is_a_file_exits_64(tiny_bids, tmp_path):
    bids_dir = tiny_bids()
    (tmp_path / "file").write_text("x")
    assert run_cli(bids_dir, tmp_path / "file", "participant", "--skip-bids-validation") == 64
    out = tmp_path / "out"
    assert (
        run_cli(bids_dir, out, "participant", "-w", tmp_path / "file" / "w", "--skip-bids-validation") == 64
    )


def test_read_only_output_dir_exits_64(tiny_bids, tmp_path):
    if os.geteuid() == 0:
        out = Path("/proc/self")  # root ignores permission bits; /proc refuses everyone
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    assert run_cli(tiny_bids(), out, "group") == 64


def test_unwritable_home_gets_a_private_temporary_folder(monkeypatch, tmp_path):
    from ketabids import cli

    monkeypatch.setenv("HOME", "/proc/no-home")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for name in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "DENO_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config").mkdir(mode=0o500)  # the old fixed path, as if owned by someone else
    cli._prepare_environment()
    first = Path(os.environ["HOME"])
    monkeypatch.setenv("HOME", "/proc/no-home")
    cli._prepare_environment()
    second = Path(os.environ["HOME"])
    assert first != second and first.parent == tmp_path == second.parent
    assert first.name.startswith("ketabids-home-") and stat.S_IMODE(first.stat().st_mode) == 0o700
    assert os.environ["PYTHONNOUSERSITE"] == "1"


def test_output_dir_of_another_app_is_refused(tiny_bids, tmp_path, caplog):
    bids_dir, out = tiny_bids(), tmp_path / "fmriprep"
    out.mkdir()
    other = {"Name": "fMRIPrep", "DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]}
    (out / "dataset_description.json").write_text(json.dumps(other))
    before = tree_fingerprint(out)
    assert run_cli(bids_dir, out, "participant", "--skip-bids-validation") == 64
    assert "fMRIPrep" in caplog.text
    assert tree_fingerprint(out) == before


def test_output_dir_of_ketabids_is_accepted(tmp_path):
    from ketabids.derivatives import check_output_owner, write_dataset_description

    write_dataset_description(tmp_path, tmp_path)
    check_output_owner(tmp_path)


# --- the BIDS validator as a tool --------------------------------------------------------------


def _fake_validator(folder: Path, body: str, monkeypatch) -> None:
    folder.mkdir()
    script = folder / "bids-validator-deno"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("echo 'panic: deno ran out of memory' >&2; exit 2", "panic: deno ran out of memory"),
        ("kill -SEGV $$", "killed by signal 11"),
        ("echo '{\"issues\": ' ; exit 0", "crashed"),
    ],
)
def test_crashing_validator_is_a_tool_failure(tiny_bids, tmp_path, monkeypatch, caplog, body, expected):
    _fake_validator(tmp_path / "bin", body, monkeypatch)
    assert run_cli(tiny_bids(), tmp_path / "out", "participant") == 1
    assert expected in caplog.text and "--skip-bids-validation" in caplog.text


def test_validator_report_with_errors_is_still_invalid_bids(tiny_bids, tmp_path, monkeypatch):
    report = {"issues": {"issues": [{"severity": "error", "code": "X", "location": "/sub-01"}]}}
    _fake_validator(tmp_path / "bin", f"echo '{json.dumps(report)}'; exit 16", monkeypatch)
    assert run_cli(tiny_bids(), tmp_path / "out", "participant") == 16


# --- CPUs and memory ---------------------------------------------------------------------------


def test_cpus_are_the_minimum_of_scheduler_affinity_and_quota(monkeypatch, tmp_path):
    from ketabids.resources import available_cpus

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert available_cpus(tmp_path) == 1  # taskset -c 0 wins over Slurm's 64
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert available_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == 8
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert available_cpus(tmp_path) == 3


def test_cgroup_v1_cpu_quota(monkeypatch, tmp_path):
    from ketabids.resources import cgroup_cpu_limit

    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_period_us").write_text("100000")
    (cpu / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_limit(tmp_path) is None
    (cpu / "cpu.cfs_quota_us").write_text("300000")
    assert cgroup_cpu_limit(tmp_path) == 3


def test_memory_is_the_minimum_of_slurm_and_cgroup(monkeypatch, tmp_path):
    from ketabids.resources import available_memory_gb

    (tmp_path / "memory.max").write_text(str(2 * 1024**3))
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "8192")
    assert available_memory_gb(tmp_path) == 2.0
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "1024")
    assert available_memory_gb(tmp_path) == 1.0


# --- host packages -----------------------------------------------------------------------------


def test_host_packages_do_not_leak_into_the_console_script(tmp_path):
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["ketabids"].split(":")
    fake = tmp_path / "e" / "pandas"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("LEAKED")\n')
    user_site = tmp_path / "user" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (user_site / "site-packages" / "nipype").mkdir(parents=True)
    (user_site / "site-packages" / "nipype" / "__init__.py").write_text('raise ImportError("LEAKED")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "e"), "PYTHONUSERBASE": str(tmp_path / "user")}
    env.pop("PYTHONNOUSERSITE", None)
    code = f"import sys; sys.argv[0] = 'ketabids'; from {module} import {function} as f; sys.exit(f())"
    probe = "import pandas, nipype; print(pandas.__file__, nipype.__file__)"
    for command in (
        [sys.executable, "-c", code, "--version"],
        [sys.executable, str(ROOT / "run.py"), "--version"],
    ):
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert "LEAKED" not in result.stderr and "ketabids" in result.stdout
    # the same interpreter without the shim does pick them up: the test can fail
    leaked = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert "LEAKED" in leaked.stderr


# --- group-level inputs ------------------------------------------------------------------------


@pytest.fixture
def tables(tmp_path):
    from ketabids.simulate.cohort import simulate_cohort
    from ketabids.simulate.tables import write_tables

    bids_dir, out = tmp_path / "bids", tmp_path / "out"
    design = simulate_cohort(n_discovery=12, n_external=(), n_saline=0, seed=3)
    write_tables(design, bids_dir, out, seed=3)
    (bids_dir / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    return bids_dir, out


def test_empty_participants_tsv_exits_65(tables, caplog):
    bids_dir, out = tables
    (bids_dir / "participants.tsv").write_bytes(b"")
    assert run_cli(bids_dir, out, "group") == 65
    assert "participants.tsv is empty" in caplog.text


def test_empty_participant_id_exits_65(tables, caplog):
    bids_dir, out = tables
    path = bids_dir / "participants.tsv"
    lines = path.read_text().splitlines()
    fields = lines[2].split("\t")
    lines[2] = "\t".join(["", *fields[1:]])
    path.write_text("\n".join(lines) + "\n")
    assert run_cli(bids_dir, out, "group") == 65
    assert "row 3 has an empty participant_id" in caplog.text


@pytest.mark.parametrize("content", [b"", b"index\tname\tgm_volume_mm3\n"])
def test_empty_region_table_exits_65_naming_it(tables, caplog, content):
    bids_dir, out = tables
    table = sorted(out.glob("sub-*/anat/*_seg-neuromorphometrics_morph.tsv"))[0]
    table.write_bytes(content)
    assert run_cli(bids_dir, out, "group") == 65
    assert table.name in caplog.text


@pytest.mark.parametrize("card", ["[]", '"model"', "3"])
def test_model_card_that_is_not_an_object_exits_65(tmp_path, card):
    from ketabids.errors import BadDataError
    from ketabids.learning.modelfile import load_model

    (tmp_path / "model.skops").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "model.json").write_text(card)
    with pytest.raises(BadDataError, match="not an object"):
        load_model(tmp_path / "model.skops")


def _stamp(out: Path, participant: str, version: str) -> None:
    for table in out.glob(f"{participant}/anat/*_morph.tsv"):
        sidecar = table.with_name(table.name.replace(".tsv", ".json"))
        sidecar.write_text(json.dumps({"GeneratedBy": [{"Name": "ketabids", "Version": version}]}))


def test_group_refuses_mixed_versions_unless_allowed(tables, caplog):
    from ketabids.learning.inputs import load_inputs
    from ketabids.settings import GroupSettings

    bids_dir, out = tables
    participants = sorted(p.name for p in out.glob("sub-*"))
    for participant in participants:
        _stamp(out, participant, "0.1.0")
    load_inputs(GroupSettings(bids_dir=bids_dir, output_dir=out))  # one version: fine
    _stamp(out, participants[0], "0.0.9")
    assert run_cli(bids_dir, out, "group") == 65
    assert (
        "0.0.9" in caplog.text and participants[0] in caplog.text and "--allow-mixed-versions" in caplog.text
    )
    loaded = load_inputs(GroupSettings(bids_dir=bids_dir, output_dir=out, allow_mixed_versions=True))
    assert participants[0] in loaded.table.index


def test_simulated_tables_default_path_is_accepted_by_the_app(tmp_path):
    from ketabids.simulate.__main__ import main as simulate

    bids_dir = tmp_path / "cohort"
    assert (
        simulate(
            [str(bids_dir), "--mode", "tables", "--n-discovery", "24", "--n-external", "--n-saline", "0"]
        )
        == 0
    )
    out = tmp_path / "cohort-derivatives"
    assert any(out.glob("sub-*/anat/*_morph.tsv"))
    (bids_dir / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    args = build_parser().parse_args([str(bids_dir), str(out), "group"])
    assert _check_paths(args)[1] == out.resolve()  # not refused as "inside the input dataset"


def test_dependency_floors_exclude_vulnerable_and_untested_versions():
    import tomllib
    from packaging.requirements import Requirement

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    specs = {r.name: r.specifier for r in map(Requirement, dependencies)}
    assert "0.11.0" not in specs["skops"] and "0.12.0" in specs["skops"]  # CVE-2025-54412/54413
    for name, untested in (("scikit-learn", "99.0"), ("antspyx", "99.0")):
        assert untested not in specs[name], f"{name} needs an upper bound"
    pinned = dict(
        line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line
    )
    for name, spec in specs.items():
        if name in pinned:
            assert pinned[name] in spec, f"requirements.txt pins {name} outside pyproject's range"
