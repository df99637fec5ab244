"""Per-patient prediction reports: ``group/sub-<label>_prediction.html``, one self-contained page each.

Each page states the probability of response, the conformal prediction set in words, whether
the model applies to the scan (distance to the training cohort, site seen in training), the
regions that drive this patient's score (weight x standardised feature, linear models: bars and
a glass-brain map of the top regions) and the model card. Bars are HTML/CSS and the map is a
precomputed atlas projection (``brainmap``), so hundreds of pages cost milliseconds each.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pandas as pd

from ketabids.derivatives import write_text_atomic
from ketabids.reports.brainmap import CAPTION, region_map_png

_TEMPLATE = Path(__file__).with_name("patient.html")
TOP_REGIONS = 10
INTENDED_USE = (
    "Research on predictors of response to a single ketamine infusion in adults with "
    "treatment-resistant depression, on pre-treatment T1-weighted MRI processed by ketabids."
)
RESEARCH_NOTICE = (
    "Not a medical device; not validated for clinical decisions. "
    "Do not use it to choose or withhold a treatment."
)
_SET_TEXT = {
    "1": "responder: at this error level the model rules out non-response",
    "0": "non-responder: at this error level the model rules out response",
    "0,1": "both outcomes: at this error level the model cannot tell response from non-response",
    "": "no outcome: this patient is unlike both the responders and the non-responders the model was "
    "calibrated on",
}


def _set_sentence(row: pd.Series, alpha: float) -> str | None:
    if "prediction_set" not in row.index:
        return None
    members = "" if pd.isna(row["prediction_set"]) else str(row["prediction_set"])
    return (
        f"Prediction set at a {100 * alpha:g} % error level: {{{members}}} ({_SET_TEXT[members]}). "
        f"Among patients like the training cohort, a set holds the true outcome at least "
        f"{100 * (1 - alpha):g} % of the time within responders and within non-responders."
    )


def _applicability(row: pd.Series, site: object, card: dict, reason: str = "") -> dict:
    """Plain sentences on the distance to the training cohort and on the site; ``reason`` (a failed
    QC, an unadapted unseen site) makes the prediction not apply whatever the distance."""
    known = card.get("training_sites") or []
    seen = None if pd.isna(site) else str(site) in known
    if seen is None:
        site_text = "The patient's site is not recorded."
    elif seen:
        site_text = f"The patient's site ({site}) was part of the training cohort."
    else:
        site_text = (
            f"The patient's site ({site}) was not seen in training (training sites: {', '.join(known)})."
        )
        if str(row.get("site_adapted", "")) == "true":
            site_text += " Its features were adapted to the training cohort (--adapt-site) before scoring."
        elif "site" not in card.get("covariates", []):
            site_text += " The model has no site covariate, so the site plays no role in the score."
    if reason:
        return {"applies": False, "text": f"The prediction does not apply: {reason}.", "site": site_text}
    if "applicable" not in row.index or pd.isna(row["applicability_percentile"]):
        return {"applies": None, "text": "This model file has no applicability check.", "site": site_text}
    applies = (
        bool(row["applicable"]) if not isinstance(row["applicable"], str) else row["applicable"] == "true"
    )
    percentile = float(row["applicability_percentile"])
    if applies:
        text = (
            f"The prediction applies: this patient's distance to the training cohort is at the "
            f"{percentile:.0f}th percentile of the training participants' distances (limit: the 99th)."
        )
    else:
        text = (
            f"The prediction does not apply: this patient is farther from the training cohort than "
            f"{percentile:.0f} % of the training participants are from the others (beyond the 99th "
            "percentile), so the model was not validated on patients like this one."
        )
    return {"applies": applies, "text": text, "site": site_text}


def _top(contributions: pd.Series | None) -> pd.Series | None:
    """The ``TOP_REGIONS`` largest contributions (by absolute value), largest first."""
    if contributions is None:
        return None
    return contributions.reindex(contributions.abs().sort_values(ascending=False).index[:TOP_REGIONS])


def _regions(top: pd.Series | None) -> list[dict]:
    """Table rows of the top contributions, with bar widths in percent of the largest."""
    if top is None:
        return []
    largest = float(top.abs().max()) or 1.0
    return [
        {"name": name, "value": f"{value:+.3f}", "width": 50 * abs(value) / largest, "positive": value > 0}
        for name, value in top.items()
    ]


def write_patient_reports(
    group_dir: Path,
    predictions: pd.DataFrame,
    contributions: pd.DataFrame | None,
    sites: pd.Series,
    card: dict,
    alpha: float,
    reasons: pd.Series | None = None,
) -> list[Path]:
    """Write ``sub-<label>_prediction.html`` for every row of ``predictions``; return the paths.

    ``contributions`` (participants x features, weight x standardised feature) is None for
    models without linear weights; ``sites`` is indexed by participant; ``reasons`` (indexed by
    participant, empty when none) say why a prediction does not apply regardless of its distance.
    """
    reasons = pd.Series(dtype=str) if reasons is None else reasons.fillna("")
    atlas = card.get("atlas") if card.get("features") == "roi" else None
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
        _TEMPLATE.read_text()
    )
    cv = card.get("cv_metrics", {})
    model = {
        "created": card.get("created", "unknown"),
        "version": card.get("ketabids_version", "unknown"),
        "cohort": card.get("training", {}).get("cohort", "unknown"),
        "n": card.get("training", {}).get("n", "unknown"),
        "sites": ", ".join(card.get("training_sites") or []) or "not recorded",
        "classifier": card.get("classifier", "unknown"),
        "features": f"{card.get('features')} features on the {card.get('atlas')} atlas",
        "bac": cv.get("balanced_accuracy"),
        "auc": cv.get("auc"),
        "sha256": card.get("sha256", ""),
        "parent": card.get("parent_sha256"),
    }
    paths = []
    for _, row in predictions.iterrows():
        participant = str(row["participant_id"])
        path = Path(group_dir) / f"{participant}_prediction.html"
        oof = row["evaluation"] == "cv"
        top = _top(None if contributions is None else contributions.loc[participant])
        page = template.render(
            participant=participant,
            evaluation=row["evaluation"],
            probability=float(row["probability"]),
            y_pred="responder" if int(row["y_pred"]) == 1 else "non-responder",
            oof=oof,
            set_text=_set_sentence(row, alpha),
            applicability=_applicability(row, sites.get(participant), card, reasons.get(participant, "")),
            regions=_regions(top),
            brain_map=None if top is None or atlas is None else region_map_png(top, atlas),
            map_caption=CAPTION,
            model=model,
            intended_use=INTENDED_USE,
            notice=RESEARCH_NOTICE,
        )
        paths.append(write_text_atomic(page, path))
    return paths
