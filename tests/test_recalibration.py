"""Local recalibration (``--model FILE --recalibrate``): net benefit, known-truth recalibration, child model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import brier_score_loss, roc_auc_score

from ketabids.cli import main
from ketabids.errors import BadDataError
from ketabids.learning.decision_curve import decision_curve, net_benefit
from ketabids.learning.modelfile import load_model, sha256
from ketabids.learning.recalibration import (
    MIN_PER_CLASS,
    calibration_intercept,
    calibration_slope,
    check_outcomes,
    fit_recalibration,
    recalibrate,
)
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables

FAST = ["--cv-repeats", "1", "--outer-folds", "3", "--inner-folds", "3", "--c-grid", "0.01", "0.1", "1",
        "--n-permutations", "0", "--n-jobs", "1"]  # fmt: skip


def test_net_benefit_matches_a_hand_computed_example():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.25, 0.05, 0.4, 0.2])
    # pt = 0.25: treated (p >= 0.25) are 0, 1, 3, 4, 6, 8 -> TP 3, FP 3: 3/10 - 3/10 * (0.25/0.75)
    assert net_benefit(y, p, 0.25) == pytest.approx(0.2)
    # pt = 0.5: treated 0, 1, 3 -> TP 2, FP 1: 2/10 - 1/10 * 1
    assert net_benefit(y, p, 0.5) == pytest.approx(0.1)
    curve = decision_curve(y, {"model": p}, np.array([0.25, 0.5])).set_index("threshold")
    assert curve.loc[0.5, "net_benefit_model"] == pytest.approx(0.1)
    assert curve.loc[0.5, "net_benefit_treat_all"] == pytest.approx(0.4 - 0.6)  # prevalence 0.4
    assert curve.loc[0.25, "net_benefit_treat_all"] == pytest.approx(0.4 - 0.6 / 3)
    assert (curve["net_benefit_treat_none"] == 0).all()
    with pytest.raises(ValueError, match="threshold"):
        net_benefit(y, p, 1.0)


def _site(n: int, seed: int, truth: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Decision values and outcomes drawn from P(y = 1 | d) = expit(intercept + slope * d)."""
    rng = np.random.default_rng(seed)
    decision = rng.normal(0, 1.2, n)
    return decision, (rng.random(n) < expit(truth[0] + truth[1] * decision)).astype(int)


def test_recalibration_recovers_the_true_sigmoid_and_keeps_discrimination():
    # the shared model's sigmoid expit(3 d - 0.5) is too steep and too low for this site (truth:
    # expit(0.8 + 1.5 d)), so its calibration slope is 1.5 / 3 = 0.5 and its intercept positive
    decision, y = _site(1000, seed=1, truth=(0.8, 1.5))
    before = expit(3.0 * decision - 0.5)
    result = recalibrate(decision, y, before, seed=0)
    assert result.slope == pytest.approx(1.5, abs=0.35) and result.intercept == pytest.approx(0.8, abs=0.3)
    summary = result.summary()
    assert summary["discrimination_p_value"] < 1e-6
    assert summary["before"]["calibration_slope"] == pytest.approx(0.5, abs=0.12)
    assert abs(summary["after"]["calibration_slope"] - 1) < 0.2
    assert summary["before"]["calibration_intercept"] > 0.5 > abs(summary["after"]["calibration_intercept"])
    truth_brier = brier_score_loss(y, expit(0.8 + 1.5 * decision))
    assert summary["after"]["brier"] < summary["before"]["brier"] - 0.02
    assert summary["after"]["brier"] < truth_brier + 0.005
    # out of fold: five maps, nearly the same ranking; one monotone map: exactly the same
    assert summary["after"]["auc"] == pytest.approx(summary["before"]["auc"], abs=0.01)
    assert roc_auc_score(y, expit(result.slope * decision + result.intercept)) == roc_auc_score(y, before)


def test_a_calibrated_model_stays_calibrated():
    decision, y = _site(1000, seed=2, truth=(0.0, 1.0))
    before = expit(decision)
    result = recalibrate(decision, y, before, seed=0)
    summary = result.summary()
    assert summary["after"]["brier"] < summary["before"]["brier"] + 0.005
    assert result.slope == pytest.approx(1.0, abs=0.25) and abs(result.intercept) < 0.25
    assert abs(calibration_intercept(y, before)) < 0.25 and calibration_slope(y, before) == pytest.approx(
        1, abs=0.25
    )


def test_decision_against_the_outcomes_gives_a_flat_map():
    decision, y = _site(300, seed=3, truth=(0.0, -1.0))
    slope, intercept = fit_recalibration(decision, y)
    assert slope == 0 and expit(intercept) == pytest.approx(y.mean())
    assert recalibrate(decision, y, expit(decision), seed=0).summary()["discrimination_p_value"] > 0.99


@pytest.mark.parametrize("counts", [(MIN_PER_CLASS - 1, 40), (0, 40)])
def test_too_few_local_outcomes_are_refused(counts):
    y = np.repeat([1, 0], counts)
    with pytest.raises(BadDataError, match=f"at least {MIN_PER_CLASS} local responders"):
        check_outcomes(y)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """A model trained at site A, and site B's participants with more responders than the model expects."""
    root = tmp_path_factory.mktemp("recalibration")
    design = simulate_cohort(n_discovery=60, n_external=(80,), n_saline=0, effect_size=2.0, seed=3)
    flagged = design.participants["participant_id"].iloc[-1]  # a site-B participant failing QC
    write_tables(design, root / "train", root / "train-out", seed=3, qc_fail=(flagged,))
    assert main([str(root / "train"), str(root / "train-out"), "group", *FAST]) == 0
    table = design.participants.copy()
    local = table[table["cohort"] == "external1"].copy()
    # half of site B's non-responders respond (a MADRS drop of 100 %): the truth shifts upwards
    rng = np.random.default_rng(0)
    non = local.index[(local["madrs_24h"] > local["madrs_pre"] / 2).to_numpy()]
    local.loc[rng.choice(non, size=len(non) // 2, replace=False), "madrs_24h"] = 0
    model = root / "train-out" / "group" / "model.skops"
    return {"root": root, "model": model, "local": local, "flagged": flagged}


def _site_dataset(shared: dict, folder: Path, table: pd.DataFrame) -> tuple[Path, Path]:
    bids, out = folder / "bids", folder / "out"
    bids.mkdir(parents=True)
    shutil.copy(shared["root"] / "train" / "dataset_description.json", bids)
    table.to_csv(bids / "participants.tsv", sep="\t", index=False)
    for participant in table["participant_id"]:
        shutil.copytree(shared["root"] / "train-out" / participant, out / participant)
    return bids, out


def test_recalibration_improves_calibration_and_writes_a_child_model(shared, tmp_path):
    bids, out = _site_dataset(shared, tmp_path / "site", shared["local"])
    assert main([str(bids), str(out), "group", "--model", str(shared["model"]), "--recalibrate", *FAST]) == 0
    group = out / "group"
    summary = json.loads((group / "recalibration.json").read_text())
    before, after = summary["before"], summary["after"]
    assert summary["n"] == 79 and summary["n_responders"] > 50
    assert after["brier"] < before["brier"]
    assert (
        before["calibration_intercept"] > 0.5
        and abs(after["calibration_intercept"]) < before["calibration_intercept"] / 2
    )
    assert after["auc"] == pytest.approx(before["auc"], abs=0.03)
    per_participant = pd.read_csv(group / "recalibration.tsv", sep="\t")
    assert shared["flagged"] not in set(per_participant["participant_id"])
    assert len(per_participant) == 79 and set(per_participant["fold"]) == set(range(5))
    curve = pd.read_csv(group / "decision_curve.tsv", sep="\t").set_index("threshold")
    prevalence = summary["n_responders"] / summary["n"]
    assert curve.loc[0.5, "net_benefit_treat_all"] == pytest.approx(2 * prevalence - 1, abs=1e-6)
    report = (group / "report.html").read_text()
    assert "Local recalibration" in report and "decision curve" in report.lower()
    assert summary["discrimination_p_value"] < 0.05 and "does not discriminate significantly" not in report

    child, card = load_model(group / "model_recalibrated.skops")
    assert (child.platt_a, child.platt_b) == (summary["slope"], summary["intercept"])
    assert card["parent_sha256"] == sha256(shared["model"]) and card["sha256"] == summary["sha256"]
    assert card["recalibration"]["n_local"] == 79 and card["recalibration"]["date"]
    assert card["platt"] == {"a": summary["slope"], "b": summary["intercept"]}
    # the child applies like any model (here to 8 participants): same decisions, the local sigmoid
    again, few = tmp_path / "again", list(shared["local"]["participant_id"][:8])
    shutil.copytree(out, again, ignore=shutil.ignore_patterns("group"))
    child_file = str(group / "model_recalibrated.skops")
    assert (
        main([str(bids), str(again), "group", "--model", child_file, "--participant-label", *few, *FAST]) == 0
    )
    parent = pd.read_csv(group / "predictions.tsv", sep="\t").set_index("participant_id")
    applied = pd.read_csv(again / "group" / "predictions.tsv", sep="\t").set_index("participant_id")
    np.testing.assert_allclose(applied["decision"], parent.loc[applied.index, "decision"])
    np.testing.assert_allclose(
        applied["probability"],
        expit(summary["slope"] * applied["decision"] + summary["intercept"]),
        atol=1e-6,
    )
    assert applied["prediction_set"].notna().any()
    page = (again / "group" / f"{few[0]}_prediction.html").read_text()
    assert "recalibrated from" in page and sha256(shared["model"]) in page
    assert json.loads((again / "group" / "model.json").read_text())["parent_sha256"] == sha256(
        shared["model"]
    )


def test_bad_recalibration_inputs_exit_64_65_66(shared, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="ketabids")
    local = shared["local"]
    bids, out = _site_dataset(shared, tmp_path / "site", local)
    assert main([str(bids), str(out), "group", "--recalibrate", *FAST]) == 64
    assert "--model" in caplog.records[-1].getMessage()

    no_outcome = local.drop(columns=["madrs_pre", "madrs_24h"])
    bids, out = _site_dataset(shared, tmp_path / "no-outcome", no_outcome)
    assert main([str(bids), str(out), "group", "--model", str(shared["model"]), "--recalibrate", *FAST]) == 66
    message = caplog.records[-1].getMessage()
    assert "madrs_pre" in message and "madrs_24h" in message and "\n" not in message

    responders = local[(local["madrs_24h"] <= local["madrs_pre"] / 2).to_numpy()]
    few = pd.concat([responders.head(30), local.drop(responders.index).head(MIN_PER_CLASS - 1)])
    bids, out = _site_dataset(shared, tmp_path / "few", few)
    assert main([str(bids), str(out), "group", "--model", str(shared["model"]), "--recalibrate", *FAST]) == 65
    assert f"at least {MIN_PER_CLASS}" in caplog.records[-1].getMessage()
    assert not (out / "group" / "model_recalibrated.skops").exists()
