"""The participant's visual report: one self-contained HTML file per subject (``sub-<label>.html``).

Each session gets a section with the brain mask, the tissue segmentation and the registration to
the template drawn on slice mosaics, the regional GM volumes and the QC metrics; the report ends
with the software versions and a methods paragraph to cite. Images are inline base64 PNGs; the
file loads nothing from elsewhere and is written atomically (nothing is written if a figure fails).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from scipy import ndimage

from ketabids import __version__
from ketabids.data import TEMPLATE_NAME, load_template
from ketabids.derivatives import write_text_atomic
from ketabids.morphometry import PLAUSIBLE
from ketabids.reports.figures import (
    Contour,
    as_ras,
    binary_image,
    contour_mosaic,
    crop_box,
    cut_coords,
    load_image,
    robust_max,
)
from ketabids.reports.methods import BRAIN_EXTRACTION, participant_methods, software_versions

_HERE = Path(__file__).parent
TISSUE_VOLUMES: dict[str, str] = {
    "tiv_mm3": "Total intracranial volume (TIV)",
    "gm_volume_mm3": "Grey matter (GM)",
    "wm_volume_mm3": "White matter (WM)",
    "csf_volume_mm3": "Cerebrospinal fluid (CSF)",
}


@dataclass(frozen=True)
class QcMetric:
    """How to explain a QC metric whose key matches ``pattern``, and its plausible range."""

    pattern: str
    label: str
    explanation: str
    low: float | None = None
    high: float | None = None

    def plausible(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


def _bounds(name: str) -> tuple[float | None, float | None]:
    """The participant pipeline's plausible range of a metric (``morphometry.PLAUSIBLE``)."""
    low, high = PLAUSIBLE[name]
    return (low if math.isfinite(low) else None), (high if math.isfinite(high) else None)


# Matched in order against each QC key; ranges are the participant pipeline's plausibility checks
# (``ketabids.morphometry.PLAUSIBLE``, where their origins are documented), so the report flags
# exactly what the pipeline flagged.
QC_METRICS: tuple[QcMetric, ...] = (
    QcMetric(
        r"cjv",
        "Coefficient of joint variation (GM/WM)",
        "(SD of GM + SD of WM intensities) / |mean WM - mean GM| (Ganzetti et al. 2016, as in MRIQC). "
        "Lower is better; above 1 GM and WM overlap in intensity because of noise, residual bias or "
        "motion.",
        *_bounds("cjv"),
    ),
    QcMetric(
        r"cnr",
        "Contrast-to-noise ratio (GM/WM)",
        "|mean WM - mean GM| / sqrt(SD of GM² + SD of WM²) (as in MRIQC). Higher is better; below 1 the "
        "two tissues can hardly be told apart and the segmentation is unreliable.",
        *_bounds("cnr"),
    ),
    QcMetric(
        r"snr",
        "Signal-to-noise ratio (WM)",
        "Mean WM intensity / its standard deviation. Higher is better; below 5 the image is very noisy "
        "(simulated scans at 3 % noise give about 18-24).",
        *_bounds("snr"),
    ),
    QcMetric(
        r"ncc|similar|registration|^reg_|corr|mutual_info",
        "Similarity to the template after registration",
        "Pearson correlation between the bias-corrected, brain-extracted T1w warped to the template and "
        "the template, inside the template brain mask (1 = identical). Good scans give 0.8-0.9 (a real "
        "adult scan 0.80, simulated scans 0.86-0.89); a registration 5 mm or 10 degrees off gives "
        "0.5-0.67, so values below 0.70 point to a failed or partial registration.",
        *_bounds("registration_correlation"),
    ),
    QcMetric(
        r"brain.*mm3",
        "Brain volume (mm³)",
        "Volume inside the brain mask. Adult intracranial contents are about 1.0-1.8 L; values far "
        "outside point to a mask that leaks into the skull or neck, or that misses brain.",
        *_bounds("brain_volume_mm3"),
    ),
    QcMetric(
        r"tiv",
        "Total intracranial volume (mm³)",
        "GM + WM + CSF volume. Adults are about 1.1-1.9 L (Malone et al. 2015).",
        *_bounds("tiv_mm3"),
    ),
    QcMetric(
        r"gm_frac", "GM fraction of TIV", "GM volume / TIV; adults about 0.35-0.55.", *_bounds("gm_fraction")
    ),
    QcMetric(
        r"wm_frac", "WM fraction of TIV", "WM volume / TIV; adults about 0.25-0.45.", *_bounds("wm_fraction")
    ),
    QcMetric(r"gm.*mm3", "Grey-matter volume (mm³)", "Sum of the GM fraction times the voxel volume."),
    QcMetric(r"wm.*mm3", "White-matter volume (mm³)", "Sum of the WM fraction times the voxel volume."),
    QcMetric(r"csf.*mm3", "CSF volume (mm³)", "Sum of the CSF fraction times the voxel volume."),
)
_FLAG_KEY = re.compile(r"flag", re.IGNORECASE)
_PASS_KEY = re.compile(r"(^|_)pass(ed)?$", re.IGNORECASE)


@dataclass(frozen=True)
class SessionInputs:
    """What the report shows for one participant/session (see ``write_participant_report``)."""

    session: str | None
    t1w: Path
    mask: Path | None
    dseg: Path | None
    t1w_in_template: Path | None
    regional: pd.DataFrame
    tissue: Mapping[str, float]
    qc: Mapping[str, float | bool | str]
    errors: Sequence[str] = field(default_factory=tuple)
    brain_extraction: str | None = None  # the method that ran (``deepbet`` or ``template``), if known
    atlas_dseg: Path | None = None  # the atlas labels on the T1w grid (``*_seg-<atlas>_dseg.nii.gz``)


def write_participant_report(
    out_html: Path,
    *,
    subject: str,
    session: str | None,
    t1w: Path,
    mask: Path | None,
    dseg: Path | None,
    t1w_in_template: Path | None,
    regional: pd.DataFrame,
    tissue: Mapping[str, float],
    qc: Mapping[str, float | bool | str],
    atlas: str,
    software: Mapping[str, str] | None = None,
    errors: Sequence[str] = (),
    atlas_dseg: Path | None = None,
) -> Path:
    """Write the HTML report of one participant with one session (or none) and return its path.

    Arguments:
        out_html: the report path, normally ``output_dir/sub-<label>.html``.
        subject, session: labels without the ``sub-``/``ses-`` prefix (``session`` None when the
            dataset has no sessions).
        t1w: the bias-corrected T1w in native space (any orientation, any voxel size).
        mask: the native-space brain mask; dseg: the native-space hard segmentation
            (1 GM, 2 WM, 3 CSF); t1w_in_template: the T1w resampled to MNI152NLin2009aSym. Any of
            these three may be None (a failed step); its figure is then replaced by a note.
        regional: the ``*_seg-<atlas>_morph.tsv`` table (``index``, ``name``, ``gm_volume_mm3``, ...).
        tissue: ``tiv_mm3``, ``gm_volume_mm3``, ``wm_volume_mm3``, ``csf_volume_mm3`` (other keys ignored).
        qc: QC metrics by name; a boolean ``*flag*`` key (True = flagged) or ``*pass*`` key
            (False = flagged) sets the QC flag; otherwise any value outside its plausible range does.
        atlas: the atlas name (a key of ``ketabids.data.ATLASES``).
        software: package versions; None lists the installed ones (``software_versions()``).
        errors: messages of steps that failed, shown at the top of the session.
        atlas_dseg: the atlas labels brought into native space (their region borders are drawn).

    For several sessions of one subject, call ``write_subject_report`` to get one file.
    """
    inputs = SessionInputs(
        session, t1w, mask, dseg, t1w_in_template, regional, tissue, qc, tuple(errors), atlas_dseg=atlas_dseg
    )
    return write_subject_report(out_html, subject=subject, sessions=[inputs], atlas=atlas, software=software)


def write_subject_report(
    out_html: Path,
    *,
    subject: str,
    sessions: Sequence[SessionInputs],
    atlas: str,
    software: Mapping[str, str] | None = None,
) -> Path:
    """Write one HTML report for a subject with a section per session; return its path.

    Figures are made before anything is written, and the file is replaced atomically, so a failure
    leaves any earlier report untouched and no partial file.
    """
    if not sessions:
        raise ValueError(f"no sessions to report for sub-{subject}")
    for inputs in sessions:
        missing = {"index", "name", "gm_volume_mm3"} - set(inputs.regional.columns)
        if missing:
            raise ValueError(f"regional table of sub-{subject} lacks columns {sorted(missing)}")
    versions = dict(software) if software is not None else software_versions()
    ran = tuple(dict.fromkeys(s.brain_extraction for s in sessions if s.brain_extraction))
    methods = participant_methods(atlas, versions, brain_extraction=ran or BRAIN_EXTRACTION)
    context = {
        "subject": subject,
        "atlas": atlas,
        "template": TEMPLATE_NAME,
        "version": __version__,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sessions": [_session_context(inputs) for inputs in sessions],
        "software": versions,
        "methods": methods,
        "css": (_HERE / "participant.css").read_text(),
    }
    environment = Environment(
        loader=FileSystemLoader(_HERE), autoescape=True, undefined=StrictUndefined, trim_blocks=True
    )
    html = environment.get_template("participant.html").render(**context)
    return write_text_atomic(html, out_html)


def _session_context(inputs: SessionInputs) -> dict[str, object]:
    """Figures, tables and flags of one session, ready for the template."""
    qc_rows = qc_table(inputs.qc)
    flag = qc_flag(inputs.qc)
    if flag is None:
        flag = any(row["implausible"] for row in qc_rows)
    reasons = [
        f"{key}: {value}"
        for key, value in inputs.qc.items()
        if isinstance(value, str) and re.search("reason|flag", key, re.IGNORECASE) and _truthy(value)
    ]
    anchor = f"ses-{inputs.session}" if inputs.session else "session"
    return {
        "label": inputs.session,
        "anchor": anchor,
        "input": _describe_image(inputs.t1w),
        "brain_extraction": inputs.brain_extraction,
        "errors": list(inputs.errors),
        "flag": flag,
        "reasons": reasons,
        "qc": qc_rows,
        "tissue": tissue_table(inputs.tissue),
        "regional": regional_table(inputs.regional, inputs.tissue.get("tiv_mm3")),
        "figures": _figures(inputs),
    }


def _describe_image(path: Path) -> dict[str, str]:
    img = nib.load(os.fspath(path))
    zooms = img.header.get_zooms()[:3]
    return {
        "name": Path(path).name,
        "shape": " x ".join(str(n) for n in img.shape),
        "voxel": " x ".join(f"{z:.2f}" for z in zooms) + " mm",
        "orientation": "".join(nib.aff2axcodes(img.affine)),
    }


def _figures(inputs: SessionInputs) -> dict[str, str | None]:
    """PNG data URIs of the four checks (None where the input image is missing)."""
    figures: dict[str, str | None] = {"mask": None, "dseg": None, "atlas": None, "registration": None}
    if inputs.mask is not None or inputs.dseg is not None:
        t1w, reference = load_image(inputs.t1w), _slice_reference(inputs)
        box = crop_box(reference)
        coords = cut_coords(reference)

        def native(path: Path, interpolation: str = "linear", labels: bool = False) -> nib.Nifti1Image:
            img = load_image(path)
            img = img.slicer[box] if img.shape[:3] == reference.shape[:3] else img
            return as_ras(img if labels else binary_image(img), interpolation)

        background = as_ras(t1w.slicer[box] if t1w.shape[:3] == reference.shape[:3] else t1w)
        if inputs.mask is not None:
            contours = [Contour(native(inputs.mask), "#ff3030", "brain mask")]
            figures["mask"] = contour_mosaic(background, contours, coords)
        if inputs.dseg is not None:
            dseg = native(inputs.dseg, "nearest", labels=True)
            contours = [
                Contour(binary_image(dseg, [2]), "#3c9cff", "GM/WM boundary (WM, label 2)"),
                Contour(binary_image(dseg, [1, 2]), "#ff3030", "GM/CSF boundary (GM, label 1)"),
                Contour(binary_image(dseg, [1, 2, 3]), "#ffd400", "outer CSF boundary (CSF, label 3)"),
            ]
            figures["dseg"] = contour_mosaic(background, contours, coords)
        if inputs.atlas_dseg is not None:
            contours = atlas_contours(native(inputs.atlas_dseg, "nearest", labels=True))
            figures["atlas"] = contour_mosaic(background, contours, coords)
    if inputs.t1w_in_template is not None:
        box, contours = _template_contours()
        warped = load_image(inputs.t1w_in_template)
        warped = warped.slicer[box] if warped.shape[:3] == load_template().t1w.shape else warped
        figures["registration"] = contour_mosaic(warped, contours, cut_coords(contours[-1].image))
    return figures


def atlas_contours(labels: nib.Nifti1Image) -> list[Contour]:
    """Borders between atlas regions (cyan) and the atlas's outline (yellow), from a label image."""
    data = np.rint(np.asanyarray(labels.dataobj)).astype(np.int32)
    borders = (ndimage.grey_dilation(data, size=3) != ndimage.grey_erosion(data, size=3)) & (data > 0)
    return [
        Contour(nib.Nifti1Image(borders.astype(np.float32), labels.affine), "#00e5ff", "region borders"),
        Contour(nib.Nifti1Image((data > 0).astype(np.float32), labels.affine), "#ffd400", "atlas outline"),
    ]


def _slice_reference(inputs: SessionInputs) -> nib.Nifti1Image:
    """The image that places and crops the slices: the mask, else the segmentation, else the head."""
    for path in (inputs.mask, inputs.dseg):
        if path is not None:
            img = binary_image(path)
            if np.asanyarray(img.dataobj).any():
                return img
    t1w = load_image(inputs.t1w)
    head = np.asanyarray(t1w.dataobj) > 0.1 * robust_max(t1w)
    return nib.Nifti1Image(head.astype(np.float32), t1w.affine)


@lru_cache(maxsize=1)
def _template_contours() -> tuple[tuple[slice, slice, slice], list[Contour]]:
    """The template's tissue boundaries and brain outline, cropped around the brain (computed once)."""
    template = load_template()
    box = crop_box(template.mask, margin_mm=5)
    contours = [
        Contour(as_ras(template.wm.slicer[box]), "#3c9cff", "template GM/WM boundary"),
        Contour(as_ras(template.mask.slicer[box]), "#ffd400", "template brain mask"),
    ]
    return box, contours


def qc_flag(qc: Mapping[str, float | bool | str]) -> bool | None:
    """The QC flag the pipeline set (``*flag*`` True or ``*pass*`` False), or None if it set none."""
    flags = [_truthy(value) for key, value in qc.items() if _FLAG_KEY.search(key)]
    passes = [_truthy(value) for key, value in qc.items() if _PASS_KEY.search(key)]
    if not flags and not passes:
        return None
    return any(flags) or not all(passes)


def _truthy(value: object) -> bool:
    """True for True, non-zero numbers and strings that are not empty/false (e.g. a list of reasons)."""
    if isinstance(value, str):
        return value.strip().lower() not in {"", "0", "false", "no", "n", "none", "n/a", "nan"}
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return False
    return bool(value)


def qc_table(qc: Mapping[str, float | bool | str]) -> list[dict[str, object]]:
    """Rows (key, label, value, explanation, implausible) for the numeric QC metrics."""
    rows = []
    for key, value in qc.items():
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
            continue
        if _FLAG_KEY.search(key) or _PASS_KEY.search(key) or re.search("reason", key, re.IGNORECASE):
            continue  # the verdict and its reasons, not metrics
        number = float(value)
        metric = next((m for m in QC_METRICS if re.search(m.pattern, key, re.IGNORECASE)), None)
        rows.append(
            {
                "key": key,
                "label": metric.label if metric else key,
                "value": _format_number(number),
                "explanation": metric.explanation if metric else "",
                "range": _format_range(metric) if metric else "",
                "implausible": not (metric.plausible(number) if metric else math.isfinite(number)),
            }
        )
    return rows


def tissue_table(tissue: Mapping[str, float]) -> list[dict[str, str]]:
    """Rows (label, mm3, mL, percent of TIV) for the tissue totals that ``tissue`` has."""
    tiv = tissue.get("tiv_mm3")
    rows = []
    for key, label in TISSUE_VOLUMES.items():
        if key in tissue:
            volume = float(tissue[key])
            rows.append(
                {
                    "label": label,
                    "mm3": f"{volume:.1f}",
                    "ml": f"{volume / 1000:.1f}",
                    "percent": f"{100 * volume / tiv:.1f}" if tiv else "n/a",
                }
            )
    return rows


def regional_table(regional: pd.DataFrame, tiv: float | None) -> dict[str, object]:
    """Rows of the regional GM volumes in atlas order, the optional tissue column and their sum."""
    table = regional.sort_values("index") if "index" in regional else regional
    has_tissue = "tissue" in table
    rows = [
        {
            "index": int(row["index"]),
            "name": str(row["name"]),
            "tissue": str(row["tissue"]) if has_tissue else "",
            "mm3": f"{float(row['gm_volume_mm3']):.2f}",
            "percent": f"{100 * float(row['gm_volume_mm3']) / tiv:.3f}" if tiv else "n/a",
        }
        for _, row in table.iterrows()
    ]
    total = float(table["gm_volume_mm3"].sum()) if len(table) else 0.0
    return {"rows": rows, "has_tissue": has_tissue, "total": f"{total:.2f}"}


def _format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _format_range(metric: QcMetric) -> str:
    if metric.low is None and metric.high is None:
        return ""
    if metric.high is None:
        return f">= {_format_number(metric.low)}"
    if metric.low is None:
        return f"<= {_format_number(metric.high)}"
    return f"{_format_number(metric.low)} - {_format_number(metric.high)}"
