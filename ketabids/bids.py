"""Input side of BIDS: validation, labels, and the T1w images chosen for each participant/session."""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import subprocess
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ketabids.errors import (
    BadDataError,
    BidsValidationError,
    InputMissingError,
    KetabidsError,
    UsageError,
)

LOGGER = logging.getLogger("ketabids")
LABEL_PATTERN = re.compile(r"[0-9a-zA-Z]+")  # used with fullmatch: no trailing newline slips through
VALIDATOR = "bids-validator-deno"
MAX_REPORTED_ERRORS = 3


@dataclass(frozen=True)
class T1wInput:
    """The T1w chosen for one participant/session, and all runs that were available."""

    subject: str
    session: str | None
    path: Path
    all_runs: tuple[Path, ...]

    @property
    def name(self) -> str:
        """``sub-X`` or ``sub-X_ses-Y``: how logs and errors name this input."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")


@dataclass(frozen=True)
class MissingT1w:
    """A selected participant/session without any T1w image."""

    subject: str
    session: str | None
    folder: Path

    def __str__(self) -> str:
        return f"no T1w image found in {self.folder}"


def clean_labels(labels: Sequence[str] | None, prefix: str) -> tuple[str, ...]:
    """Strip ``sub-``/``ses-`` prefixes and reject anything but letters and digits."""
    cleaned = []
    for raw in labels or ():
        label = raw[len(prefix) :] if raw.startswith(prefix) else raw
        if not LABEL_PATTERN.fullmatch(label):
            raise UsageError(f"invalid label '{raw}': {prefix}labels may only contain letters and digits")
        if label not in cleaned:
            cleaned.append(label)
    return tuple(cleaned)


def check_bids_dir(bids_dir: Path) -> Path:
    """Resolve ``bids_dir`` and make sure it looks like a BIDS dataset."""
    bids_dir = Path(bids_dir).expanduser().resolve()
    if not bids_dir.is_dir():
        raise InputMissingError(f"BIDS directory not found: {bids_dir}")
    if not (bids_dir / "dataset_description.json").is_file():
        raise InputMissingError(f"not a BIDS dataset (no dataset_description.json): {bids_dir}")
    return bids_dir


def validate_dataset(bids_dir: Path) -> None:
    """Run the official BIDS validator (offline); raise ``BidsValidationError`` with its first errors."""
    executable = shutil.which(VALIDATOR) or shutil.which(VALIDATOR, path=str(Path(sys.executable).parent))
    if executable is None:
        LOGGER.warning("%s is not installed: skipping BIDS validation", VALIDATOR)
        return
    try:
        result = subprocess.run(
            [executable, "--format", "json", "--ignoreWarnings", str(bids_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as err:
        raise KetabidsError(f"the BIDS validator ({executable}) could not be started: {err}") from None
    try:
        issues = json.loads(result.stdout)["issues"]["issues"]
    except (json.JSONDecodeError, KeyError, TypeError):
        issues = None
    if issues is None or result.returncode < 0:
        # No report (crash, signal, unparsable output): a tool failure, not an invalid dataset.
        how = f"was killed by signal {-result.returncode}" if result.returncode < 0 else "crashed"
        detail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1][:300]
        raise KetabidsError(
            f"the BIDS validator {how} (exit {result.returncode}) on {bids_dir}: {detail}; "
            "rerun with --skip-bids-validation to go on without it"
        )
    errors = [issue for issue in issues if issue.get("severity") == "error"]
    if errors:
        shown = "; ".join(
            f"{e.get('code')} at {e.get('location', '?')}" for e in errors[:MAX_REPORTED_ERRORS]
        )
        more = f" (+{len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise BidsValidationError(f"BIDS validation failed for {bids_dir}: {shown}{more}")
    LOGGER.info("BIDS validator: %s passed", bids_dir)


def load_layout(bids_dir: Path):
    """A read-only pybids layout of the raw dataset (nothing written into ``bids_dir``)."""
    from bids import BIDSLayout

    return BIDSLayout(str(bids_dir), validate=False, derivatives=False)


def _run_index(path: Path) -> int:
    match = re.search(r"_run-(\d+)_", path.name)
    return int(match.group(1)) if match else 0


def select_t1w(
    layout, participant_labels: Sequence[str] = (), session_labels: Sequence[str] = ()
) -> tuple[list[T1wInput], list[MissingT1w]]:
    """Choose one T1w per selected participant/session (the first by run index; logged).

    Unknown participant or session labels raise ``InputMissingError`` naming them (a typo on the
    command line stops the run). A participant/session without any T1w is returned as an error
    in the second list instead, so the other participants still run.
    """
    available = sorted(layout.get_subjects())
    subjects = list(participant_labels) or available
    unknown = [s for s in subjects if s not in available]
    if unknown:
        names = ", ".join(f"sub-{s}" for s in unknown)
        raise InputMissingError(f"participant(s) not found in {layout.root}: {names}")
    inputs: list[T1wInput] = []
    missing: list[MissingT1w] = []
    for subject in subjects:
        sessions = layout.get_sessions(subject=subject) or [None]
        if session_labels:
            absent = [s for s in session_labels if s not in sessions]
            if absent and len(session_labels) == len(absent):
                raise InputMissingError(
                    f"sub-{subject}: session(s) {', '.join('ses-' + s for s in absent)} not found"
                )
            sessions = [s for s in sessions if s in session_labels]
        for session in sessions:
            query = {"subject": subject, "suffix": "T1w", "extension": [".nii", ".nii.gz"]}
            if session is not None:
                query["session"] = session
            files = sorted((Path(f.path) for f in layout.get(**query)), key=lambda p: (_run_index(p), p.name))
            if not files:
                folder = Path(layout.root) / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
                missing.append(MissingT1w(subject, session, folder))
                continue
            if len(files) > 1:
                where = f"sub-{subject}" + (f" ses-{session}" if session else "")
                LOGGER.info("%s: %d T1w runs, using %s", where, len(files), files[0].name)
            inputs.append(T1wInput(subject, session, files[0], tuple(files)))
    return inputs, missing


def _stored_bytes(path: Path) -> int:
    """Bytes of the (decompressed) file; a ``.gz`` is decompressed to its end, checking its CRC."""
    if not path.name.endswith(".gz"):
        return path.stat().st_size
    total = 0
    with gzip.open(path, "rb") as stream:
        while block := stream.read(1 << 22):
            total += len(block)
    return total


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as a 3D T1w (unreadable, truncated, not 3D), or ``None``.

    The whole file is read (a ``.nii.gz`` fully decompressed), so a truncated download is found
    here, before any workflow, and not only its header.
    """
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(path)
        shape = img.shape
        offset = int(getattr(img.header, "get_data_offset", lambda: 0)())
        expected = offset + int(np.prod(shape)) * img.get_data_dtype().itemsize
    except Exception as exc:  # nibabel raises several types for broken files
        return f"cannot read {path}: {exc}"
    squeezed = [n for n in shape if n > 1] if len(shape) > 3 else list(shape)
    if len(shape) < 3 or len(squeezed) != 3 or min(shape[:3]) < 2:
        return f"{path} is not a 3D T1w volume (shape {shape})"
    try:
        stored = _stored_bytes(path)
    except (OSError, EOFError, zlib.error) as exc:
        return f"{path} is truncated or corrupt: {exc}"
    if stored < expected:
        return f"{path} is truncated: {stored} of {expected} bytes"
    return None


def check_image(item: T1wInput) -> None:
    """Raise ``BadDataError`` (exit 65) naming participant and file if the T1w cannot be used."""
    problem = image_problem(item.path)
    if problem:
        raise BadDataError(f"{item.name}: {problem}")
