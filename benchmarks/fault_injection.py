"""Fault injection on the participant level (not a timed test; needs root for mounts and unshare).

Builds small low-resolution phantoms, then:

1. a reference run in a hostile environment: read-only input, read-only HOME, no network
   (``unshare -n``);
2. SIGKILL of a run at several points (after given steps), each followed by a rerun with the same
   ``-w``; the final outputs are compared byte by byte with the reference (``--omp-nthreads 1``);
3. 4 concurrent participant runs into one output dir: every contract complete, shared files valid;
4. a full disk (a small tmpfs as output dir): a clear one-line error, no traceback, and no file
   with a final name that is partial.

Prints ``N faults injected, M outputs lost or corrupted``. Usage::

    python benchmarks/fault_injection.py [--voxel-size 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
KILL_AFTER = ("brain_extraction", "register", "atropos")  # steps after which the run is killed
COMMON = ["--skip-bids-validation", "--nprocs", "1", "--omp-nthreads", "1"]


def make_dataset(bids: Path, labels: list[str], voxel: float) -> None:
    """One whole-head phantom per label (different anatomies), low resolution."""
    from ketabids.simulate.phantom import make_phantom

    (bids).mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "faults", "BIDSVersion": "1.10.0"}))
    for i, label in enumerate(labels):
        anat = bids / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        phantom = make_phantom(anatomy_seed=10 + i, acquisition_seed=20 + i, voxel_size=(voxel,) * 3)
        phantom.t1w.to_filename(anat / f"sub-{label}_T1w.nii.gz")


def command(bids: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), str(bids), str(out), "participant", *COMMON, *extra]


def run(cmd: list[str], log: Path, env: dict | None = None, wrap: list[str] = ()) -> int:
    with open(log, "w") as stream:
        return subprocess.run([*wrap, *cmd], stdout=stream, stderr=subprocess.STDOUT, env=env).returncode


def run_and_kill(cmd: list[str], log: Path, step: str, label: str) -> bool:
    """Start ``cmd``; SIGKILL its whole process group once ``step`` is logged; True if killed."""
    with open(log, "w") as stream:
        proc = subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
        marker = f"sub-{label}: {step} done"
        while proc.poll() is None:
            if marker in log.read_text(errors="replace"):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.2)
    return False


def contract(out: Path, label: str) -> dict[str, Path]:
    from ketabids.outputs import output_names

    source = Path("/bids") / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
    with tempfile.TemporaryDirectory() as scratch:  # output_names creates folders: keep out clean
        names = output_names(source, scratch, "neuromorphometrics")
        return {key: out / path.relative_to(scratch) for key, path in names.items()}


def fingerprint(out: Path, label: str) -> dict[str, str]:
    folder = out / f"sub-{label}"
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def broken(path: Path) -> str | None:
    """Why a file with a final name is partial or invalid, or None."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path) as stream:
                while stream.read(1 << 22):
                    pass
        elif path.suffix == ".tsv":
            pd.read_csv(path, sep="\t")
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".h5":
            with h5py.File(path, "r") as transform:  # every dataset read back
                transform.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
        else:
            path.read_bytes()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def corrupted_files(out: Path) -> list[str]:
    """Every non-temporary output file (outside work dir and logs) that fails to parse."""
    bad = []
    for path in sorted(out.rglob("*")):
        parts = path.relative_to(out).parts
        if not path.is_file() or parts[0] in (".ketabids-work", "logs") or path.name.startswith("."):
            continue
        reason = broken(path)
        if reason:
            bad.append(f"{path.relative_to(out)}: {reason}")
    return bad


def missing_outputs(out: Path, label: str) -> list[str]:
    return [path.name for path in contract(out, label).values() if not path.is_file()]


def shared_files_ok(out: Path) -> list[str]:
    problems = []
    description = json.loads((out / "dataset_description.json").read_text())
    if description.get("GeneratedBy", [{}])[0].get("Name") != "ketabids":
        problems.append("dataset_description.json lacks GeneratedBy ketabids")
    lines = (out / ".bidsignore").read_text().splitlines()
    if len(lines) != len(set(lines)):
        problems.append(".bidsignore has duplicated lines")
    if list(pd.read_csv(out / "dseg.tsv", sep="\t")["name"]) != ["GM", "WM", "CSF"]:
        problems.append("dseg.tsv is wrong")
    return problems


def compare(out_a: Path, out_b: Path, a: dict[str, str], b: dict[str, str]) -> str:
    """'byte-identical', or each differing file with its number of differing bytes."""
    if a.keys() != b.keys():
        return f"different file sets: {sorted(a.keys() ^ b.keys())}"
    differing = []
    for name in sorted(k for k in a if a[k] != b[k]):
        x, y = (out_a / name).read_bytes(), (out_b / name).read_bytes()
        count = sum(p != q for p, q in zip(x, y, strict=False)) + abs(len(x) - len(y))
        differing.append(f"{Path(name).name} ({count} of {len(x)} bytes)")
    return "byte-identical" if not differing else "differ: " + ", ".join(differing)


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxel-size", type=float, default=4.0, help="phantom voxel size in mm")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (tmpfs mounts, unshare -n)", file=sys.stderr)
        return 2
    top = args.keep or Path(tempfile.mkdtemp(prefix="ketabids-faults-"))
    top.mkdir(parents=True, exist_ok=True)
    labels = ["01", "02", "03", "04"]
    start = time.monotonic()
    make_dataset(top / "bids", labels, args.voxel_size)
    faults, lost, notes = 0, [], []

    def report(name: str, problems: list[str]) -> None:
        lost.extend(f"{name}: {p}" for p in problems)
        print(f"[{(time.monotonic() - start) / 60:4.1f} min] {name}: {problems or 'ok'}")

    # 1. hostile environment: read-only input, read-only HOME, no network -> the reference
    with tmpfs(top / "ro", "256m") as ro:
        shutil.copytree(top / "bids", ro / "bids")
        (ro / "home").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        env = {**os.environ, "HOME": str(ro / "home")}
        ref = top / "reference"
        code = run(
            command(ro / "bids", ref, "--participant-label", "01"),
            top / "reference.log",
            env,
            ["unshare", "-n"],
        )
        faults += 3
        problems = [f"exit {code}"] if code else []
        report("read-only input + read-only HOME + no network", problems + missing_outputs(ref, "01"))
    reference = fingerprint(ref, "01")
    terminal = (top / "reference.log").read_text(errors="replace")
    chatter = sum(line.count("NIftI") + line.count("file NULL") for line in terminal.splitlines())
    notes.append(f"ANTs/ITK warnings on the terminal of the reference run: {chatter}")

    # 2. SIGKILL after several steps, rerun with the same -w each time
    out, work = top / "killed", top / "killed-work"
    cmd = command(top / "bids", out, "--participant-label", "01", "-w", str(work))
    for step in KILL_AFTER:
        if run_and_kill(cmd, top / f"kill-{step}.log", step, "01"):
            faults += 1
            print(f"[{(time.monotonic() - start) / 60:4.1f} min] SIGKILL after {step}")
    code = run(cmd, top / "rerun.log")
    problems = [f"rerun exit {code}"] if code else []
    problems += missing_outputs(out, "01") + corrupted_files(out)
    report("rerun after SIGKILLs", problems)
    resumed = fingerprint(out, "01")
    notes.append("killed+resumed vs uninterrupted: " + compare(ref, out, reference, resumed))

    # 3. four concurrent participant runs into one output dir (default work dir, shared)
    shared = top / "shared"
    logs = [open(top / f"concurrent-{label}.log", "w") for label in labels]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            command(top / "bids", shared, "--participant-label", label), stdout=log, stderr=subprocess.STDOUT
        )
        for label, log in zip(labels, logs, strict=True)
    ]
    codes = [p.wait() for p in procs]
    for log in logs:
        log.close()
    faults += 1
    problems = [f"sub-{lab} exit {c}" for lab, c in zip(labels, codes, strict=True) if c]
    problems += [m for lab in labels for m in missing_outputs(shared, lab)]
    problems += shared_files_ok(shared) + corrupted_files(shared)
    report("4 concurrent runs into one output dir", problems)
    notes.append("concurrent vs uninterrupted: " + compare(ref, shared, reference, fingerprint(shared, "01")))

    # 4. full disk: the output dir is a tiny tmpfs (the work dir of step 2 makes the rerun fast)
    with tmpfs(top / "full", "96k") as full:
        log = top / "full-disk.log"
        code = run(command(top / "bids", full / "out", "--participant-label", "01", "-w", str(work)), log)
        faults += 1
        text = log.read_text(errors="replace")
        problems = [] if code in (1, 64) else [f"exit {code}"]
        problems += ["traceback on the terminal"] if "Traceback" in text else []
        problems += [] if "No space left on device" in text else ["no 'No space left on device' line"]
        problems += corrupted_files(full / "out") if (full / "out").exists() else []
        report("full disk", problems)
        notes.append("full-disk error: " + next((ln for ln in text.splitlines() if "space" in ln), "?"))

    for note in notes:
        print("note:", note)
    print(
        f"{faults} faults injected, {len(lost)} outputs lost or corrupted ({(time.monotonic() - start) / 60:.1f} min)"
    )
    if not args.keep:
        shutil.rmtree(top, ignore_errors=True)
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
