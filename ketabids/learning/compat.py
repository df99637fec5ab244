"""Checks before a shared model is applied: response threshold, library versions, unseen sites.

Rules (README, "Applying a shared model"):

* The response threshold is the model card's. A different ``--response-threshold`` is refused
  (exit 64) unless ``--force-model``, in which case the given one defines the outcome.
* scikit-learn and skops versions: any difference from the card is a warning; a major-version
  difference is refused (exit 65) unless ``--force-model``. For 0.x versions (skops) the minor
  number counts as the major one, as semantic versioning allows breaking changes there.
* Sites: participants from sites the model never saw are reported. When ``site`` is one of the
  model's covariates and their site was not adapted, their predictions do not apply (rows kept,
  ``applicable`` false, left out of the metrics): the residualisation has no coefficient for an
  unseen site, and coding it as the reference site would be silently wrong. Without a site
  covariate the site plays no role in the prediction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection

import pandas as pd

from ketabids.errors import BadDataError, UsageError
from ketabids.settings import DEFAULT_RESPONSE_THRESHOLD, GroupSettings

LOGGER = logging.getLogger("ketabids.group")
CHECKED_PACKAGES = ("scikit-learn", "skops")


def response_threshold(card: dict, settings: GroupSettings) -> float:
    """The threshold to apply: the card's, or a different one given with ``force_model``."""
    trained = float(card.get("response_threshold", DEFAULT_RESPONSE_THRESHOLD))
    given = settings.response_threshold
    if given is None or abs(given - trained) < 1e-9:
        return trained
    if not settings.force_model:
        raise UsageError(
            f"{settings.model_file}: the model was trained with response threshold {trained:g}, "
            f"not {given:g}; omit --response-threshold or add --force-model"
        )
    LOGGER.warning("response threshold %g instead of the model's %g (--force-model)", given, trained)
    return float(given)


def _major(version: str) -> tuple[int, ...]:
    """The part of a version whose change may break saved models: (major,), or (0, minor) for 0.x."""
    major, minor = (int(n) for n in [*re.findall(r"\d+", version), "0", "0"][:2])
    return (major,) if major else (0, minor)


def version_notes(card: dict, installed: dict[str, str], force: bool, source: object) -> list[str]:
    """Warnings for version differences; ``BadDataError`` for a major one unless ``force``."""
    trained = card.get("software", {}) if isinstance(card.get("software"), dict) else {}
    notes = []
    for package in CHECKED_PACKAGES:
        then, now = trained.get(package), installed.get(package)
        if then is None or now is None or then == now:
            continue
        note = f"the model was saved with {package} {then}, {now} is installed"
        if _major(then) != _major(now):
            if not force:
                raise BadDataError(
                    f"{source}: {note} (a major version change); add --force-model to apply it"
                )
            note += " (major version change, --force-model)"
        LOGGER.warning("%s", note)
        notes.append(note)
    return notes


def unseen_site_reasons(card: dict, sites: pd.Series, adapted: Collection[str] = ()) -> pd.Series:
    """Why each participant's prediction does not apply because of its site (empty when it does):
    a site outside the card's ``training_sites``, not in ``adapted``, when site is a covariate."""
    reasons = pd.Series("", index=sites.index, dtype=object)
    known = card.get("training_sites")
    if "site" not in card.get("covariates", []) or known is None:
        return reasons
    values = sites.astype("string")
    unseen = (values.notna() & ~values.isin(known) & ~values.isin(list(adapted))).to_numpy(bool)
    reasons[unseen] = [
        f"the patient's site ({site}) was not seen in training and site is one of the model's "
        "covariates, so the model has no correction for this site's scanner (the site was not adapted)"
        for site in values[unseen]
    ]
    return reasons


def site_notes(card: dict, sites: pd.Series, source: object, adapted: Collection[str] = ()) -> list[str]:
    """Notes on participants from sites outside the card's ``training_sites``."""
    known = card.get("training_sites")
    uses_site = "site" in card.get("covariates", [])
    if known is None:
        if uses_site:
            raise BadDataError(
                f"{source}: the model uses a site covariate but its card lists no training sites"
            )
        return []
    unseen = sites[sites.notna() & ~sites.isin(known)]
    if unseen.empty:
        return []
    names = ", ".join(sorted(map(str, unseen.unique())))
    note = f"{len(unseen)} participant(s) from site(s) the model never saw ({names}); "
    blocked = unseen[~unseen.isin(list(adapted))]
    if blocked.empty and adapted:
        note += "their sites were adapted to the training cohort (--adapt-site)"
    elif not uses_site:
        note += "the model has no site covariate, so the site plays no role in their predictions"
    else:
        note += (
            f"site is one of the model's covariates, so the predictions of {len(blocked)} participant(s) "
            "from unadapted sites are marked not applicable and left out of the metrics"
        )
    LOGGER.warning("%s", note)
    return [note]
