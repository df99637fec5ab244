"""Assemble the group level's inputs: participants, outcome, roles, feature and covariate matrices.

Participants without tables, without a usable role, or flagged by QC are excluded with a
reason; the caller decides what to do with those lacking an outcome. When a shared model is
applied, participants flagged by QC are kept (with their reason in ``qc_failed``): they get a
prediction row that says the prediction does not apply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ketabids.errors import InputMissingError
from ketabids.learning import cohorts, features, gather
from ketabids.settings import GroupSettings

LOGGER = logging.getLogger("ketabids.group")


@dataclass
class GroupInputs:
    """Included participants (``table``: cohort, treatment, evaluation, y_true), matrices, exclusions."""

    table: pd.DataFrame
    features: pd.DataFrame
    covariates: pd.DataFrame
    excluded: pd.DataFrame
    voxel_grid: features.VoxelGrid | None = None
    qc_failed: dict[str, str] = field(default_factory=dict)  # apply mode: kept, flagged by QC

    def matrix(self) -> pd.DataFrame:
        """Features then covariates: the input of the saved pipeline."""
        return pd.concat([self.features, self.covariates], axis=1)


def _select(table: pd.DataFrame, labels: tuple[str, ...], source: Path) -> pd.DataFrame:
    if not labels:
        return table
    wanted = [label if label.startswith("sub-") else f"sub-{label}" for label in labels]
    unknown = [w for w in wanted if w not in table.index]
    if unknown:
        raise InputMissingError(f"{source}: participant {unknown[0]} is not listed")
    return table.loc[wanted]


def load_inputs(
    settings: GroupSettings,
    *,
    feature_kind: str | None = None,
    atlas: str | None = None,
    covariates: tuple[str, ...] | None = None,
    site_levels: list[str] | None = None,
    apply: bool = False,
) -> GroupInputs:
    """Read participants and their tables; the keyword overrides come from a model card.

    With ``apply`` (a shared model is applied) every participant is predicted: treatment,
    cohort and MADRS columns are optional and only used to report metrics where they exist, and
    participants flagged by QC are kept with their reason in ``qc_failed``.
    """
    feature_kind = feature_kind or settings.features
    atlas = atlas or settings.atlas
    covariates = settings.covariates if covariates is None else covariates
    columns = settings.columns
    source = Path(settings.bids_dir) / "participants.tsv"
    participants = _select(
        cohorts.read_participants(settings.bids_dir, columns), settings.participant_labels, source
    )
    if apply:
        for column in (columns.treatment, columns.cohort):
            if column not in participants.columns:
                participants[column] = pd.NA
        # a shared model is evaluated per treatment arm: ketamine -> external, saline -> control
        treatment = participants[columns.treatment].astype("string").str.strip().str.lower()
        roles = pd.Series("apply", index=participants.index, name="evaluation")
        roles[(treatment == cohorts.KETAMINE).fillna(False)] = cohorts.ROLE_EXTERNAL
        roles[(treatment == cohorts.SALINE).fillna(False)] = cohorts.ROLE_CONTROL
        has_outcome = {columns.madrs_pre, columns.madrs_post} <= set(participants.columns)
        outcome = (
            cohorts.response(participants, columns, settings.threshold, source)
            if has_outcome
            else pd.Series(float("nan"), index=participants.index, name="y_true")
        )
    else:
        roles = cohorts.roles(participants, columns, settings.discovery_cohort, source)
        outcome = cohorts.response(participants, columns, settings.threshold, source)

    excluded: list[tuple[str, str]] = []
    qc_failed: dict[str, str] = {}
    regions, tissue, maps, versions = {}, {}, {}, {}
    for participant in participants.index:
        if pd.isna(roles[participant]):
            treatment = participants.loc[participant, columns.treatment]
            excluded.append((participant, f"treatment '{treatment}' / cohort is neither ketamine nor saline"))
            continue
        found = gather.find_files(Path(settings.output_dir), participant, atlas, settings.session_label)
        if isinstance(found, str):
            excluded.append((participant, found))
            continue
        tissue_row = gather.read_tissue_table(found.tissue, participant)
        failure = gather.qc_failure(tissue_row)
        if failure and apply:
            qc_failed[participant] = failure
            LOGGER.warning("%s %s: its prediction is marked not applicable", participant, failure)
        elif failure:
            excluded.append((participant, failure))
            continue
        if feature_kind == "voxel" and not found.modulated_gm.is_file():
            excluded.append((participant, f"{found.modulated_gm.name} is missing"))
            continue
        regions[participant] = gather.read_region_table(found.regions, participant)
        versions[participant] = gather.output_version(found.regions)
        tissue[participant] = tissue_row
        maps[participant] = found.modulated_gm
    for participant, reason in excluded:
        LOGGER.warning("excluded %s: %s", participant, reason)
    gather.check_versions(versions, Path(settings.output_dir), settings.allow_mixed_versions)

    grid = None
    if feature_kind == "voxel":
        grid = features.voxel_grid()
        matrix = features.voxel_matrix(maps, grid)
    else:
        matrix = features.roi_matrix(regions, tissue, atlas)
    included = list(tissue)
    table = pd.DataFrame(
        {
            "cohort": participants.loc[included, columns.cohort],
            "treatment": participants.loc[included, columns.treatment].str.strip().str.lower(),
            "evaluation": roles[included],
            "y_true": outcome[included],
            "site": participants[columns.site].reindex(included)
            if columns.site in participants.columns
            else pd.NA,
        },
        index=pd.Index(included, name="participant_id"),
    )
    if site_levels is None and "site" in covariates and columns.site in participants.columns:
        training = table.index[table["evaluation"] == cohorts.ROLE_TRAIN]
        site_levels = sorted(participants.loc[training, columns.site].dropna().unique())
    covariate_table = features.covariate_matrix(participants, tissue, covariates, columns, site_levels)
    return GroupInputs(
        table=table,
        features=matrix.loc[included],
        covariates=covariate_table.loc[included],
        excluded=pd.DataFrame(excluded, columns=["participant_id", "reason"]),
        voxel_grid=grid,
        qc_failed=qc_failed,
    )
