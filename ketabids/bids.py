"""Input side of BIDS: validation, labels, and the T1w images chosen for each participant/session."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ketabids.errors import BadDataError, BidsValidationError, InputMissingError, UsageError

LOGGER = logging.getLogger("ketabids")
LABEL_PATTERN = re.compile(r"^[0-9a-zA-Z]+$")
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


def clean_labels(labels: Sequence[str] | None, prefix: str) -> tuple[str, ...]:
    """Strip ``sub-``/``ses-`` prefixes and reject anything but letters and digits."""
    cleaned = []
    for raw in labels or ():
        label = raw[len(prefix) :] if raw.startswith(prefix) else raw
        if not LABEL_PATTERN.match(label):
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
    result = subprocess.run(
        [executable, "--format", "json", "--ignoreWarnings", str(bids_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        issues = json.loads(result.stdout)["issues"]["issues"]
    except (json.JSONDecodeError, KeyError, TypeError):
        if result.returncode == 0:
            return
        raise BidsValidationError(
            f"BIDS validator failed on {bids_dir}: {result.stderr.strip()[:300]}"
        ) from None
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
) -> list[T1wInput]:
    """Choose one T1w per selected participant/session (the first by run index; logged).

    Unknown participant or session labels raise ``InputMissingError`` naming them; a selected
    participant without any T1w raises it too, so nothing runs on a half-selected dataset.
    """
    available = sorted(layout.get_subjects())
    subjects = list(participant_labels) or available
    unknown = [s for s in subjects if s not in available]
    if unknown:
        names = ", ".join(f"sub-{s}" for s in unknown)
        raise InputMissingError(f"participant(s) not found in {layout.root}: {names}")
    inputs: list[T1wInput] = []
    for subject in subjects:
        sessions = layout.get_sessions(subject=subject) or [None]
        if session_labels:
            missing = [s for s in session_labels if s not in sessions]
            if missing and len(session_labels) == len(missing):
                raise InputMissingError(
                    f"sub-{subject}: session(s) {', '.join('ses-' + s for s in missing)} not found"
                )
            sessions = [s for s in sessions if s in session_labels]
        for session in sessions:
            query = {"subject": subject, "suffix": "T1w", "extension": [".nii", ".nii.gz"]}
            if session is not None:
                query["session"] = session
            files = sorted((Path(f.path) for f in layout.get(**query)), key=lambda p: (_run_index(p), p.name))
            where = f"sub-{subject}" + (f" ses-{session}" if session else "")
            if not files:
                raise InputMissingError(f"{where}: no T1w image found in {layout.root}")
            if len(files) > 1:
                LOGGER.info("%s: %d T1w runs, using %s", where, len(files), files[0].name)
            inputs.append(T1wInput(subject, session, files[0], tuple(files)))
    return inputs


def check_image(item: T1wInput) -> None:
    """Fail early (exit 65) on a T1w that is unreadable or not a 3D volume."""
    import nibabel as nib

    try:
        img = nib.load(item.path)
        shape = img.shape
    except Exception as exc:  # nibabel raises several types for broken files
        raise BadDataError(f"{item.name}: cannot read {item.path}: {exc}") from None
    squeezed = [n for n in shape if n > 1] if len(shape) > 3 else list(shape)
    if len(shape) < 3 or len(squeezed) != 3 or min(shape[:3]) < 2:
        raise BadDataError(f"{item.name}: {item.path} is not a 3D T1w volume (shape {shape})")
