"""BIDS-derivative output helpers: names from input entities, atomic writes, dataset-level files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ketabids import __version__
from ketabids.errors import UsageError

DSEG_LABELS: dict[int, str] = {1: "GM", 2: "WM", 3: "CSF"}
# Entities kept from the source T1w name, then the ones derivatives add, in the BIDS order.
SOURCE_ENTITIES = ("sub", "ses", "acq", "ce", "rec", "run")
ENTITY_ORDER = (*SOURCE_ENTITIES, "from", "to", "mode", "space", "seg", "label", "desc")
BIDSIGNORE_LINES = ("*_morph.tsv", "*_morph.json", "*_xfm.h5", "*.html", "group/", "logs/", "figures/")


def parse_entities(path: str | os.PathLike) -> dict[str, str]:
    """Return the ``key-value`` entities of a BIDS file name (suffix and extension dropped)."""
    stem = Path(path).name.split(".", 1)[0]
    entities = {}
    for part in stem.split("_")[:-1]:
        key, sep, value = part.partition("-")
        if sep:
            entities[key] = value
    return entities


def derivative_name(
    source_file: str | os.PathLike, *, suffix: str, extension: str = ".nii.gz", **entities
) -> str:
    """BIDS file name for a derivative of ``source_file`` (keeps sub/ses/acq/ce/rec/run)."""
    source = parse_entities(source_file)
    if "sub" not in source:
        raise ValueError(f"{source_file} is not a BIDS file name (no sub- entity)")
    merged = {key: source[key] for key in SOURCE_ENTITIES if key in source}
    for key, value in entities.items():
        if value is not None:
            merged[key.rstrip("_")] = str(value)
    unknown = set(merged) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities for a derivative: {sorted(unknown)}")
    parts = [f"{key}-{merged[key]}" for key in ENTITY_ORDER if key in merged]
    return "_".join([*parts, suffix]) + extension


def derivative_path(
    source_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    suffix: str,
    extension: str = ".nii.gz",
    datatype: str = "anat",
    **entities,
) -> Path:
    """Full path ``output_dir/sub-X/[ses-Y/]anat/<name>`` of a derivative; creates the folder."""
    source = parse_entities(source_file)
    folder = Path(output_dir) / f"sub-{source['sub']}"
    if "ses" in source:
        folder = folder / f"ses-{source['ses']}"
    folder = folder / datatype
    folder.mkdir(parents=True, exist_ok=True)
    return folder / derivative_name(source_file, suffix=suffix, extension=extension, **entities)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the extension (so writers that look at it, like nibabel, work)
    and starts with a dot, so a half-written file never carries the final name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffixes}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write text to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_tsv_atomic(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as BIDS TSV (tab-separated, ``n/a`` for missing values) atomically."""
    with atomic_write(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    return Path(path)


def write_dataset_description(output_dir: str | os.PathLike, bids_dir: str | os.PathLike) -> Path:
    """Write the derivative ``dataset_description.json`` (DatasetType, GeneratedBy, SourceDatasets)."""
    generated_by: dict[str, object] = {
        "Name": "ketabids",
        "Version": __version__,
        "Description": "Regional grey-matter morphometry and ketamine-response prediction",
        "CodeURL": "https://github.com/ketabids/ketabids",
    }
    image = os.environ.get("KETABIDS_CONTAINER_IMAGE")
    if image:
        generated_by["Container"] = {
            "Type": os.environ.get("KETABIDS_CONTAINER_TYPE", "docker"),
            "Tag": image,
        }
    source: dict[str, str] = {"URL": Path(bids_dir).resolve().as_uri()}
    source_description = Path(bids_dir) / "dataset_description.json"
    if source_description.is_file():
        try:
            raw = json.loads(source_description.read_text())
            if raw.get("DatasetDOI"):
                source["DOI"] = raw["DatasetDOI"]
        except (OSError, json.JSONDecodeError):
            pass
    description = {
        "Name": "ketabids derivatives",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": source["URL"]},
    }
    return write_text_atomic(
        json.dumps(description, indent=2) + "\n", Path(output_dir) / "dataset_description.json"
    )


def generated_by(description: object) -> list[tuple[str, str]]:
    """``(Name, Version)`` of each ``GeneratedBy`` entry of a parsed ``dataset_description.json``."""
    entries = description.get("GeneratedBy") if isinstance(description, dict) else None
    if not isinstance(entries, list):
        return []
    return [(str(e.get("Name", "")), str(e.get("Version", ""))) for e in entries if isinstance(e, dict)]


def check_output_owner(output_dir: str | os.PathLike) -> None:
    """Refuse (exit 64) an output dir whose ``dataset_description.json`` names another app.

    ketabids rewrites that file, so another app's derivatives would lose their description.
    """
    path = Path(output_dir) / "dataset_description.json"
    if not path.exists():
        return
    try:
        names = [name for name, _ in generated_by(json.loads(path.read_text()))]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path} is not readable JSON ({err}); choose another output_dir") from None
    if "ketabids" not in names:
        app = ", ".join(n for n in names if n) or "no app"
        raise UsageError(
            f"{output_dir} holds derivatives of another app ({path} names {app}); choose another output_dir"
        )


def write_bidsignore(output_dir: str | os.PathLike) -> Path:
    """Write ``.bidsignore`` covering files the BIDS schema does not know, keeping lines already there."""
    path = Path(output_dir) / ".bidsignore"
    existing = path.read_text().splitlines() if path.is_file() else []
    lines = existing + [line for line in BIDSIGNORE_LINES if line not in existing]
    return write_text_atomic("\n".join(lines) + "\n", path)


def write_dseg_tsv(output_dir: str | os.PathLike) -> Path:
    """Write ``dseg.tsv``: the labels of the hard segmentation."""
    table = pd.DataFrame({"index": list(DSEG_LABELS), "name": list(DSEG_LABELS.values())})
    return write_tsv_atomic(table, Path(output_dir) / "dseg.tsv")


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a NIfTI/TSV derivative (same name, ``.json`` extension)."""
    path = Path(path)
    stem = path.name.split(".", 1)[0]
    return path.with_name(stem + ".json")


def write_sidecar(path: str | os.PathLike, metadata: dict[str, object]) -> Path:
    """Write the JSON sidecar of ``path`` atomically."""
    return write_text_atomic(json.dumps(metadata, indent=2, sort_keys=True) + "\n", sidecar_path(path))
