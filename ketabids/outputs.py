"""Writing the participant output contract (DESIGN section 5) through ``ketabids.derivatives``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ketabids import __version__
from ketabids.data.templates import TEMPLATE_NAME
from ketabids.derivatives import atomic_copy, derivative_path, write_sidecar, write_tsv_atomic

LOGGER = logging.getLogger("ketabids")


def output_names(
    source_file: str | os.PathLike, output_dir: str | os.PathLike, atlas: str
) -> dict[str, Path]:
    """Derivative path of every participant output, by key."""

    def path(**kwargs) -> Path:
        return derivative_path(source_file, output_dir, **kwargs)

    names = {
        "t1w_preproc": path(suffix="T1w", desc="preproc"),
        "brain_mask": path(suffix="mask", desc="brain"),
        "dseg": path(suffix="dseg"),
        "forward": path(suffix="xfm", extension=".h5", from_="T1w", to=TEMPLATE_NAME, mode="image"),
        "inverse": path(suffix="xfm", extension=".h5", from_=TEMPLATE_NAME, to="T1w", mode="image"),
        "t1w_template": path(suffix="T1w", space=TEMPLATE_NAME, desc="preproc"),
        "modulated_gm": path(suffix="probseg", space=TEMPLATE_NAME, label="GM", desc="modulated"),
        "regional": path(suffix="morph", extension=".tsv", seg=atlas),
        "tissue": path(suffix="morph", extension=".tsv", desc="tissue"),
        "atlas_dseg": path(suffix="dseg", seg=atlas),
        "atlas_labels": path(suffix="dseg", extension=".tsv", seg=atlas),
    }
    for tissue in ("GM", "WM", "CSF"):
        names[tissue.lower()] = path(suffix="probseg", label=tissue)
    return names


def write_participant_outputs(
    source_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    atlas: str,
    files: Mapping[str, str | os.PathLike],
) -> dict[str, Path]:
    """Copy the workflow's files to their derivative names (atomically); TSVs are rewritten as BIDS TSV."""
    names = output_names(source_file, output_dir, atlas)
    missing = set(names) - set(files)
    if missing:
        raise ValueError(f"missing outputs: {sorted(missing)}")
    method = brain_extraction_method(pd.read_csv(files["tissue"], sep="\t", na_values=["n/a"]))
    written = {}
    for key, target in names.items():
        if target.suffix == ".tsv":
            write_tsv_atomic(
                pd.read_csv(files[key], sep="\t", keep_default_na=False, na_values=["n/a"]), target
            )
        else:
            atomic_copy(files[key], target)
        if target.name.endswith((".nii.gz", ".tsv")):
            write_sidecar(target, sidecar_metadata(key, source_file, method))
        written[key] = target
    return written


def brain_extraction_method(tissue: pd.DataFrame | None) -> str | None:
    """The brain-extraction method recorded in a tissue table (``brain_extraction``), if any."""
    if tissue is None or "brain_extraction" not in tissue or tissue["brain_extraction"].isna().all():
        return None
    return str(tissue["brain_extraction"].dropna().iloc[0])


def sidecar_metadata(
    key: str, source_file: str | os.PathLike, brain_extraction: str | None = None
) -> dict[str, object]:
    """JSON sidecar of an output: its raw source, its generator, the brain-extraction method that
    ran (``BrainExtraction``, when known) and, for T1w images, whether skull-stripped."""
    source = Path(source_file)
    parts = source.parts
    start = max(i for i, part in enumerate(parts) if part.startswith("sub-") and i < len(parts) - 1)
    metadata: dict[str, object] = {
        "Sources": ["bids:raw:" + "/".join(parts[start:])],
        "GeneratedBy": [{"Name": "ketabids", "Version": __version__}],
    }
    if brain_extraction:
        metadata["BrainExtraction"] = brain_extraction
    if key == "t1w_preproc":
        metadata["SkullStripped"] = False
    if key == "t1w_template":
        metadata["SkullStripped"] = True
    return metadata


def _read_tsv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, sep="\t", na_values=["n/a"]) if path.is_file() else None


def write_subject_reports(
    output_dir: str | os.PathLike,
    inputs: Sequence,
    atlas: str,
    errors: Mapping[tuple[str, str | None], Sequence[str]] | None = None,
) -> list[Path]:
    """One ``output_dir/sub-<label>.html`` per subject covering its sessions (failed steps noted)."""
    from ketabids.reports.participant import SessionInputs, write_subject_report

    errors = errors or {}
    by_subject: dict[str, list] = {}
    for item in inputs:
        by_subject.setdefault(item.subject, []).append(item)
    written = []
    for subject, items in by_subject.items():
        sessions = []
        for item in items:
            names = output_names(item.path, output_dir, atlas)
            regional = _read_tsv(names["regional"])
            tissue = _read_tsv(names["tissue"])
            row = tissue.iloc[0].to_dict() if tissue is not None else {}
            qc = {
                k: v
                for k, v in row.items()
                if (not k.endswith("_mm3") or k == "brain_volume_mm3") and k != "brain_extraction"
            }
            if "qc_flag" in qc:
                qc["qc_flag"] = bool(qc["qc_flag"])
            sessions.append(
                SessionInputs(
                    item.session,
                    names["t1w_preproc"] if names["t1w_preproc"].is_file() else item.path,
                    names["brain_mask"] if names["brain_mask"].is_file() else None,
                    names["dseg"] if names["dseg"].is_file() else None,
                    names["t1w_template"] if names["t1w_template"].is_file() else None,
                    regional
                    if regional is not None
                    else pd.DataFrame(columns=["index", "name", "gm_volume_mm3"]),
                    {
                        k: v
                        for k, v in row.items()
                        if k in ("tiv_mm3", "gm_volume_mm3", "wm_volume_mm3", "csf_volume_mm3")
                    },
                    qc,
                    tuple(errors.get((item.subject, item.session), ())),
                    brain_extraction_method(tissue),
                    atlas_dseg=names["atlas_dseg"] if names["atlas_dseg"].is_file() else None,
                )
            )
        out = Path(output_dir) / f"sub-{subject}.html"
        try:
            written.append(write_subject_report(out, subject=subject, sessions=sessions, atlas=atlas))
        except Exception as exc:  # a report must never lose the numbers already written
            LOGGER.error("sub-%s: the HTML report failed: %s", subject, exc)
    return written
