"""Participants, outcome and evaluation roles from ``participants.tsv`` and ``phenotype/*.tsv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ketabids.errors import BadDataError, InputMissingError
from ketabids.settings import ColumnNames

ROLE_TRAIN, ROLE_EXTERNAL, ROLE_CONTROL = "cv", "external", "control"
KETAMINE, SALINE = "ketamine", "saline"


def _read_tsv(path: Path, id_column: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a", ""], keep_default_na=False, dtype=str)
    except pd.errors.EmptyDataError:
        raise BadDataError(f"{path} is empty (no header line)") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BadDataError(f"cannot read {path}: {err}") from err
    if id_column not in table.columns:
        raise InputMissingError(f"{path} has no '{id_column}' column")
    table[id_column] = table[id_column].str.strip()
    empty = table[id_column].isna() | (table[id_column] == "")
    if empty.any():
        raise BadDataError(f"{path}: row {int(empty.to_numpy().argmax()) + 2} has an empty {id_column}")
    duplicated = table[id_column][table[id_column].duplicated()]
    if not duplicated.empty:
        raise BadDataError(f"{path}: duplicate participant '{duplicated.iloc[0]}'")
    return table.set_index(id_column)


def read_participants(bids_dir: Path, columns: ColumnNames) -> pd.DataFrame:
    """``participants.tsv`` joined with every ``phenotype/*.tsv`` (index: participant id with ``sub-``)."""
    bids_dir = Path(bids_dir)
    tables = []
    participants_tsv = bids_dir / "participants.tsv"
    if participants_tsv.is_file():
        tables.append(_read_tsv(participants_tsv, columns.participant_id))
    tables += [
        _read_tsv(path, columns.participant_id) for path in sorted((bids_dir / "phenotype").glob("*.tsv"))
    ]
    if not tables:
        raise InputMissingError(f"{participants_tsv} is missing (and there is no phenotype/*.tsv)")
    merged = tables[0]
    for table in tables[1:]:
        new = [c for c in table.columns if c not in merged.columns]
        merged = merged.join(table[new], how="outer")
    merged.index = [pid if pid.startswith("sub-") else f"sub-{pid}" for pid in merged.index]
    merged.index.name = "participant_id"
    return merged


def require_columns(table: pd.DataFrame, names: list[str], source: Path) -> None:
    """Raise ``InputMissingError`` naming the first missing column."""
    for name in names:
        if name not in table.columns:
            raise InputMissingError(
                f"{source}: column '{name}' is missing (rename it or pass its name as an option)"
            )


def _numeric(table: pd.DataFrame, column: str, source: Path) -> pd.Series:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        participant = bad[bad].index[0]
        raise BadDataError(
            f"{source}: {participant} has non-numeric {column} '{table.loc[participant, column]}'"
        )
    return values


def response(table: pd.DataFrame, columns: ColumnNames, threshold: float, source: Path) -> pd.Series:
    """1 if the relative MADRS drop from pre to 24 h is at least ``threshold``, 0 if not, NaN if unknown."""
    require_columns(table, [columns.madrs_pre, columns.madrs_post], source)
    pre = _numeric(table, columns.madrs_pre, source)
    post = _numeric(table, columns.madrs_post, source)
    nonpositive = pre <= 0
    if nonpositive.any():
        participant = nonpositive[nonpositive].index[0]
        raise BadDataError(
            f"{source}: {participant} has {columns.madrs_pre} <= 0, the relative drop is undefined"
        )
    drop = (pre - post) / pre
    out = pd.Series(np.where(drop >= threshold - 1e-12, 1.0, 0.0), index=table.index, name="y_true")
    return out.where(pre.notna() & post.notna())


def roles(table: pd.DataFrame, columns: ColumnNames, discovery: str, source: Path) -> pd.Series:
    """``cv`` (discovery ketamine), ``external`` (other ketamine cohorts), ``control`` (saline), else NaN."""
    require_columns(table, [columns.treatment, columns.cohort], source)
    treatment = table[columns.treatment].str.strip().str.lower()
    cohort = table[columns.cohort].str.strip()
    role = pd.Series(np.nan, index=table.index, dtype=object, name="evaluation")
    role[(treatment == KETAMINE) & (cohort == discovery)] = ROLE_TRAIN
    role[(treatment == KETAMINE) & (cohort != discovery) & cohort.notna()] = ROLE_EXTERNAL
    role[treatment == SALINE] = ROLE_CONTROL
    return role
