"""Cohort simulator: sizes, MADRS rule, the response model's truth and the derivative tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ketabids.simulate.cohort import region_lobes, simulate_cohort
from ketabids.simulate.tables import template_volumes, write_tables


def _responder(participants: pd.DataFrame) -> np.ndarray:
    drop = (participants["madrs_pre"] - participants["madrs_24h"]) / participants["madrs_pre"]
    return (drop >= 0.5).to_numpy()


def test_default_sizes_and_columns():
    design = simulate_cohort(seed=1)
    counts = design.participants["cohort"].value_counts()
    assert counts.to_dict() == {"discovery": 99, "external1": 26, "external2": 25, "saline": 49}
    assert design.participants["participant_id"].is_unique
    assert list(design.regional_change.index) == list(design.participants["participant_id"])
    assert design.head_scale.between(0.84, 1.0).all()
    assert set(design.participants["treatment"]) == {"ketamine", "saline"}


def test_response_follows_frontal_minus_cerebellar_for_ketamine_only():
    design = simulate_cohort(n_discovery=3000, n_external=(), n_saline=3000, effect_size=1.0, seed=2)
    participants = design.participants
    responder = _responder(participants)
    lobes = region_lobes(design.regional_change.columns)
    frontal = design.regional_change.loc[:, (lobes == "frontal").to_numpy()].mean(axis=1).to_numpy()
    cerebellar = design.regional_change.loc[:, (lobes == "cerebellar").to_numpy()].mean(axis=1).to_numpy()
    ketamine = (participants["treatment"] == "ketamine").to_numpy()
    r_frontal = stats.pointbiserialr(responder[ketamine], frontal[ketamine]).statistic
    r_cerebellar = stats.pointbiserialr(responder[ketamine], cerebellar[ketamine]).statistic
    assert r_frontal > 0.2 and r_cerebellar < -0.2
    score = frontal - cerebellar
    assert abs(stats.pointbiserialr(responder[~ketamine], score[~ketamine]).statistic) < 0.06
    assert responder[ketamine].mean() == pytest.approx(0.525, abs=0.03)


def test_best_achievable_bac_matches_monte_carlo():
    design = simulate_cohort(n_discovery=20000, n_external=(), n_saline=0, effect_size=1.0, seed=3)
    responder = _responder(design.participants)
    score = design.regional_change.to_numpy() @ design.score_weights.to_numpy()
    # the exact anatomy reveals the score itself: the best rule thresholds it
    best = max(
        0.5 * ((score[responder] > t).mean() + (score[~responder] <= t).mean())
        for t in np.quantile(score, np.linspace(0.2, 0.8, 61))
    )
    assert design.best_achievable_bac(measured=False) == pytest.approx(best, abs=0.01)
    assert 0.7 < design.best_achievable_bac(measured=True) < design.best_achievable_bac(measured=False)
    assert simulate_cohort(n_discovery=50, effect_size=0.0).best_achievable_bac() == pytest.approx(
        0.5, abs=1e-6
    )


def test_madrs_rule_and_seed_reproducibility():
    a, b = simulate_cohort(seed=5), simulate_cohort(seed=5)
    pd.testing.assert_frame_equal(a.participants, b.participants)
    assert not simulate_cohort(seed=6).participants.equals(a.participants)
    assert (a.participants["madrs_24h"] >= 0).all()


def test_write_tables_recovers_regional_change(tmp_path):
    design = simulate_cohort(n_discovery=6, n_external=(2,), n_saline=2, seed=4)
    write_tables(design, tmp_path / "bids", tmp_path / "out", qc_fail=("sub-002",))
    participants = pd.read_csv(tmp_path / "bids" / "participants.tsv", sep="\t")
    assert list(participants["participant_id"]) == list(design.participants["participant_id"])
    base = template_volumes(design.atlas).regions.set_index("name")["gm_volume_mm3"]
    anat = tmp_path / "out" / "sub-003" / "anat"
    regions = pd.read_csv(anat / "sub-003_seg-neuromorphometrics_morph.tsv", sep="\t")
    assert list(regions.columns) == ["index", "name", "gm_volume_mm3"]
    tissue = pd.read_csv(anat / "sub-003_desc-tissue_morph.tsv", sep="\t")
    scale = design.head_scale["sub-003"] ** 3
    measured = regions.set_index("name")["gm_volume_mm3"] / base / scale - 1
    truth = design.regional_change.loc["sub-003", measured.index]
    assert np.corrcoef(measured, truth)[0, 1] > 0.8
    assert np.median(np.abs(measured - truth)) < 0.03
    assert tissue.loc[0, "tiv_mm3"] == pytest.approx(template_volumes(design.atlas).tiv * scale, rel=0.04)
    flagged = pd.read_csv(tmp_path / "out" / "sub-002" / "anat" / "sub-002_desc-tissue_morph.tsv", sep="\t")
    assert flagged.loc[0, "qc_flag"] == 1 and tissue.loc[0, "qc_flag"] == 0
