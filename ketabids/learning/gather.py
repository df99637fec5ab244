"""Find each participant's derivative tables (and modulated GM maps) in ``output_dir``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ketabids.derivatives import parse_entities
from ketabids.errors import BadDataError, UsageError

LOGGER = logging.getLogger("ketabids.group")
MODULATED_GM = "space-MNI152NLin2009aSym_label-GM_desc-modulated_probseg.nii.gz"


@dataclass(frozen=True)
class ParticipantFiles:
    """The derivative files of one participant's chosen T1w."""

    regions: Path
    tissue: Path
    modulated_gm: Path


def _candidates(output_dir: Path, participant: str, atlas: str) -> list[Path]:
    folder = output_dir / participant
    pattern = f"{participant}_*seg-{atlas}_morph.tsv"
    return sorted([*folder.glob(f"anat/{pattern}"), *folder.glob(f"ses-*/anat/{pattern}")])


def find_files(output_dir: Path, participant: str, atlas: str, session: str | None) -> ParticipantFiles | str:
    """The participant's files, or the reason why there are none (a string).

    Several sessions without ``session`` (or several runs of one session) are refused: the
    prediction must use the pre-treatment scan and the group level does not guess which it is.
    """
    found = _candidates(Path(output_dir), participant, atlas)
    if session is not None:
        found = [path for path in found if parse_entities(path).get("ses") == session]
    if not found:
        where = f" for session '{session}'" if session else ""
        return f"no seg-{atlas}_morph.tsv table{where} (participant level not run?)"
    sessions = sorted({parse_entities(path).get("ses", "") for path in found})
    if len(sessions) > 1:
        raise UsageError(
            f"{participant} has tables for sessions {', '.join(sessions)} in {output_dir}; "
            "choose the pre-treatment one with --session-label"
        )
    if len(found) > 1:
        raise BadDataError(
            f"{participant} has {len(found)} seg-{atlas}_morph.tsv tables ({', '.join(p.name for p in found)}); "
            "keep one T1w run per participant"
        )
    regions = found[0]
    stem = regions.name.replace(f"_seg-{atlas}_morph.tsv", "")
    tissue = regions.with_name(f"{stem}_desc-tissue_morph.tsv")
    if not tissue.is_file():
        return f"{tissue.name} is missing"
    return ParticipantFiles(
        regions=regions, tissue=tissue, modulated_gm=regions.with_name(f"{stem}_{MODULATED_GM}")
    )


def read_region_table(path: Path, participant: str) -> pd.Series:
    """GM volume per region name from a ``*_seg-<atlas>_morph.tsv`` table."""
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except pd.errors.EmptyDataError:
        raise BadDataError(f"{participant}: {path} is empty") from None
    except (OSError, pd.errors.ParserError) as err:
        raise BadDataError(f"{participant}: cannot read {path}: {err}") from err
    if table.empty:
        raise BadDataError(f"{participant}: {path} has no regions (header only)")
    for column in ("name", "gm_volume_mm3"):
        if column not in table.columns:
            raise BadDataError(f"{participant}: {path} has no '{column}' column")
    values = pd.to_numeric(table["gm_volume_mm3"], errors="coerce")
    if values.isna().any() or table["name"].duplicated().any():
        raise BadDataError(f"{participant}: {path} has missing, non-numeric or duplicated region volumes")
    return pd.Series(values.to_numpy(dtype=float), index=table["name"].astype(str), name=participant)


def read_tissue_table(path: Path, participant: str) -> pd.Series:
    """The one row of a ``*_desc-tissue_morph.tsv`` table."""
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except pd.errors.EmptyDataError:
        raise BadDataError(f"{participant}: {path} is empty") from None
    except (OSError, pd.errors.ParserError) as err:
        raise BadDataError(f"{participant}: cannot read {path}: {err}") from err
    if len(table) != 1 or "tiv_mm3" not in table.columns:
        raise BadDataError(f"{participant}: {path} must have one row with a 'tiv_mm3' column")
    row = table.iloc[0]
    tiv = pd.to_numeric(pd.Series([row["tiv_mm3"]]), errors="coerce").iloc[0]
    if not tiv > 0:
        raise BadDataError(f"{participant}: {path} has an invalid tiv_mm3 '{row['tiv_mm3']}'")
    return row.rename(participant)


def output_version(table: Path) -> str | None:
    """The ketabids version that wrote a participant table (from its JSON sidecar), if recorded."""
    sidecar = table.with_name(table.name.split(".", 1)[0] + ".json")
    try:
        entries = json.loads(sidecar.read_text()).get("GeneratedBy", [])
        return next(str(e["Version"]) for e in entries if e.get("Name") == "ketabids")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError, KeyError, StopIteration):
        return None  # tables shared without sidecars (or written by hand): version unknown


def check_versions(versions: dict[str, str | None], output_dir: Path, allow_mixed: bool) -> None:
    """Refuse (exit 65) participant outputs written by different ketabids versions, unless allowed."""
    by_version: dict[str, list[str]] = {}
    for participant, version in versions.items():
        if version is not None:
            by_version.setdefault(version, []).append(participant)
    if len(by_version) <= 1:
        return
    listing = "; ".join(
        f"{version}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
        for version, names in sorted(by_version.items())
    )
    if allow_mixed:
        LOGGER.warning("participant outputs in %s mix ketabids versions (%s)", output_dir, listing)
        return
    raise BadDataError(
        f"participant outputs in {output_dir} come from different ketabids versions ({listing}); "
        "rerun the participant level with one version or pass --allow-mixed-versions"
    )


def qc_failure(tissue: pd.Series) -> str | None:
    """Reason for exclusion when the participant level flagged the scan (``qc_flag`` = 1).

    ``qc_reasons`` (names of the implausible metrics, ``;``-separated) is quoted in the reason.
    """
    flag = pd.to_numeric(pd.Series([tissue.get("qc_flag", 0)]), errors="coerce").iloc[0]
    if not flag or pd.isna(flag):
        return None
    reasons = tissue.get("qc_reasons")
    detail = f": {reasons}" if isinstance(reasons, str) and reasons.strip() else ""
    return f"flagged by participant-level QC (qc_flag = 1){detail}"
