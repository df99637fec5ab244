"""A participant flagged by participant-level QC is left out of the group level with its reason
in the log and in the group report."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ketabids.derivatives import write_tsv_atomic
from ketabids.group import run_group_level
from ketabids.morphometry import qc_flags
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables


def test_qc_flagged_participant_is_dropped_with_its_reason(tmp_path: Path, caplog) -> None:
    design = simulate_cohort(seed=3, n_discovery=30, n_external=(), n_saline=0)
    write_tables(design, tmp_path / "bids", tmp_path / "out", seed=3)
    table = tmp_path / "out" / "sub-004" / "anat" / "sub-004_desc-tissue_morph.tsv"
    tissue = pd.read_csv(table, sep="\t")
    reasons = qc_flags({**tissue.iloc[0].to_dict(), "registration_correlation": 0.412})
    assert reasons == ["registration_correlation 0.412 < 0.7"]  # a failed registration
    write_tsv_atomic(tissue.assign(qc_flag=1, qc_reasons=";".join(reasons)), table)
    settings = GroupSettings(
        bids_dir=tmp_path / "bids", output_dir=tmp_path / "out", random_seed=3, cv_repeats=1,
        outer_folds=5, inner_folds=3, c_grid=(0.01, 1.0), n_permutations=0,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="ketabids"):
        run_group_level(settings)
    logged = [r.getMessage() for r in caplog.records if "sub-004" in r.getMessage()]
    assert any("registration_correlation 0.412 < 0.7" in line for line in logged), logged
    report = (tmp_path / "out" / "group" / "report.html").read_text()
    assert "sub-004" in report and "registration_correlation 0.412 &lt; 0.7" in report
    predictions = pd.read_csv(tmp_path / "out" / "group" / "predictions.tsv", sep="\t")
    assert "sub-004" not in set(predictions["participant_id"])
