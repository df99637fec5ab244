"""Site adaptation (--adapt-site): the ComBat estimator against neuroCombat and known truth, and
the group level on a simulated scanner shift; bad input."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from neuroCombat import neuroCombat
from sklearn.metrics import brier_score_loss

from ketabids.cli import main
from ketabids.group import run_group_level
from ketabids.learning.harmonize import MIN_PARTICIPANTS
from ketabids.learning.metrics import balanced_accuracy
from ketabids.learning.model import CalibratedModel, build_pipeline
from ketabids.learning.modelfile import load_model, save_model
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import shift_scanner, write_tables

SMALL = {"cv_repeats": 1, "outer_folds": 4, "inner_folds": 3, "c_grid": (0.01, 0.1, 1.0), "n_permutations": 0}


def _orthogonal_noise(rng: np.random.Generator, covariates: np.ndarray, n_features: int) -> np.ndarray:
    """Unit-variance noise exactly orthogonal to an intercept and ``covariates``."""
    design = np.column_stack([np.ones(len(covariates)), covariates])
    noise = rng.normal(size=(len(covariates), n_features))
    noise -= design @ np.linalg.lstsq(design, noise, rcond=None)[0]
    return noise / noise.std(axis=0)


def _fitted_model(features: np.ndarray, covariates: np.ndarray) -> CalibratedModel:
    """A linear SVM on ``features`` + ``covariates`` (arbitrary labels) with its site reference."""
    matrix = np.column_stack([features, covariates])
    labels = np.arange(len(matrix)) % 2
    model = CalibratedModel(build_pipeline("svm-linear", 1.0, covariates.shape[1])).fit(matrix, labels)
    return model.fit_site_reference(matrix)


@pytest.mark.parametrize("n_covariates", [0, 2])
def test_adaptation_matches_neurocombat_with_the_training_site_as_reference(n_covariates, monkeypatch):
    """Where the cases coincide (the new site's residuals orthogonal to its covariates, so that
    neuroCombat's pooled covariate fit equals the training cohort's) the adapted features are
    neuroCombat's ``ref_batch`` output for the new site."""
    # neuroCombat 0.2.12 (its last release) calls np.int in its ref_batch code, removed in NumPy 1.24
    monkeypatch.setattr(np, "int", int, raising=False)
    rng = np.random.default_rng(3)
    n_ref, n_new, n_features = 80, 30, 40
    beta = rng.normal(0, 0.5, (n_covariates, n_features))
    cov_ref = rng.normal(0, 1, (n_ref, n_covariates))
    cov_new = rng.normal(0.5, 1.2, (n_new, n_covariates))  # another age/TIV mix at the new site
    alpha, sigma = rng.normal(5, 1, n_features), rng.uniform(0.5, 2, n_features)
    ref = alpha + cov_ref @ beta + sigma * _orthogonal_noise(rng, cov_ref, n_features)
    gamma, delta = rng.normal(0.8, 0.3, n_features), rng.uniform(1.2, 1.8, n_features)
    new = alpha + cov_new @ beta + sigma * (gamma + delta * _orthogonal_noise(rng, cov_new, n_features))

    model = _fitted_model(ref, cov_ref)
    adapted, _ = model.adapt_site(np.column_stack([new, cov_new]))

    names = [f"c{i}" for i in range(n_covariates)]
    covars = pd.DataFrame(np.vstack([cov_ref, cov_new]), columns=names)
    covars["batch"] = ["train"] * n_ref + ["new"] * n_new
    expected = neuroCombat(
        dat=np.vstack([ref, new]).T,
        covars=covars,
        batch_col="batch",
        continuous_cols=names,
        ref_batch="train",
    )["data"].T[n_ref:]
    np.testing.assert_allclose(adapted[:, :n_features], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(adapted[:, n_features:], cov_new)  # covariates are never changed


def test_adaptation_removes_a_known_scanner_effect_and_keeps_covariate_effects():
    """Known truth: the same participants measured without the scanner effect."""
    rng = np.random.default_rng(7)
    n_ref, n_new, n_features = 150, 40, 60
    alpha, beta = rng.normal(0.01, 0.002, n_features), rng.normal(-4e-5, 1e-5, n_features)
    sigma = 0.1 * np.abs(alpha)
    age_ref, age_new = rng.normal(45, 12, n_ref), rng.normal(58, 8, n_new)  # an older site
    ref = alpha + age_ref[:, None] * beta + sigma * rng.normal(size=(n_ref, n_features))
    truth = alpha + age_new[:, None] * beta + sigma * rng.normal(size=(n_new, n_features))
    centre = alpha + age_new.mean() * beta
    scanner = 1.08 * (centre + 1.4 * (truth - centre))  # +8 % GM, 40 % more spread
    adapted, effect = _fitted_model(ref, age_ref[:, None]).adapt_site(np.column_stack([scanner, age_new]))

    error_before = np.sqrt((((scanner - truth) / sigma) ** 2).mean())
    error_after = np.sqrt((((adapted[:, :n_features] - truth) / sigma) ** 2).mean())
    assert error_before > 0.7 and error_after < 0.3, (error_before, error_after)
    assert np.median(np.sqrt(effect.delta2)) == pytest.approx(1.4, rel=0.15)
    # the older site keeps its age-related GM loss: its mean differs from the reference by beta x 13 years
    age_effect = (age_new.mean() - age_ref.mean()) * beta / sigma
    kept = (adapted[:, :n_features].mean(axis=0) - ref.mean(axis=0)) / sigma
    assert np.corrcoef(kept, age_effect)[0, 1] > 0.8 and np.abs(kept - age_effect).mean() < 0.15


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[GroupSettings, Path, pd.DataFrame]:
    """A model with a site covariate trained on 60 site-A participants; 160 site-B ketamine
    participants to apply it to (unadapted, their predictions do not apply)."""
    root = tmp_path_factory.mktemp("adaptation")
    design = simulate_cohort(n_discovery=60, n_external=(160,), n_saline=0, effect_size=2.5, seed=11)
    write_tables(design, root / "bids", root / "out", seed=11)
    settings = GroupSettings(
        bids_dir=root / "bids", output_dir=root / "out", covariates=("tiv", "site"), random_seed=11, **SMALL
    )
    run_group_level(settings)
    model = root / "model"
    model.mkdir()
    for name in ("model.skops", "model.json"):
        shutil.copy(settings.output_dir / "group" / name, model / name)
    return settings, model / "model.skops", design.participants


def _site_dataset(trained, root: Path, n: int, shift: bool) -> GroupSettings:
    """``n`` site-B participants (BIDS participants.tsv + their tables), scanner-shifted or not."""
    settings, model, participants = trained
    chosen = participants[participants["site"] == "siteB"].head(n)
    (root / "bids").mkdir(parents=True)
    shutil.copy(settings.bids_dir / "dataset_description.json", root / "bids")
    chosen.to_csv(root / "bids" / "participants.tsv", sep="\t", index=False)
    for participant in chosen["participant_id"]:
        shutil.copytree(settings.output_dir / participant, root / "out" / participant)
    if shift:
        shift_scanner(root / "out", list(chosen["participant_id"]), seed=2)
    return replace(settings, bids_dir=root / "bids", output_dir=root / "out", model_file=model)


def _scores(settings: GroupSettings) -> dict[str, float]:
    run_group_level(settings)
    group = settings.output_dir / "group"
    predictions = pd.read_csv(group / "predictions.tsv", sep="\t", dtype={"applicable": str})
    applicable = predictions["applicable"].str.lower().eq("true")
    if not settings.adapt_site:  # an unseen site, and site is a covariate: not applicable
        assert not applicable.any()
    else:  # applicable; predictions, card and per-patient pages say the site was adapted
        assert applicable.mean() > 0.9
        assert predictions["site_adapted"].astype(str).str.lower().eq("true").all()
        card = json.loads((group / "model.json").read_text())
        assert card["site_adaptation"]["siteB"]["n"] == len(predictions)
        page = (group / f"{predictions['participant_id'].iloc[0]}_prediction.html").read_text()
        assert "adapted to the training cohort" in page
    return {
        "bac": balanced_accuracy(predictions["y_true"], predictions["decision"] > 0),
        "brier": brier_score_loss(predictions["y_true"], predictions["probability"]),
    }


def test_adaptation_restores_accuracy_and_calibration_after_a_scanner_shift(trained, tmp_path):
    clean = _scores(_site_dataset(trained, tmp_path / "clean", 160, shift=False))
    clean_adapted = _scores(replace(_site_dataset(trained, tmp_path / "clean2", 160, False), adapt_site=True))
    shifted = _site_dataset(trained, tmp_path / "shifted", 160, shift=True)
    broken = _scores(shifted)
    restored = _scores(replace(shifted, adapt_site=True))
    # +8 % GM, per-region gains (SD 5 %), 30 % wider spread: measured 0.82 -> 0.72 BAC, 0.12 -> 0.18 Brier
    assert clean["bac"] > 0.75 and broken["bac"] < clean["bac"] - 0.08, (clean, broken)
    assert broken["brier"] > clean["brier"] + 0.04, (clean, broken)
    assert restored["bac"] > clean["bac"] - 0.03 and restored["brier"] < clean["brier"] + 0.01, restored
    # no shift: adapting changes nothing material
    assert (
        abs(clean_adapted["bac"] - clean["bac"]) < 0.05
        and abs(clean_adapted["brier"] - clean["brier"]) < 0.02
    )


def _run(settings: GroupSettings, *options: str) -> int:
    return main([str(settings.bids_dir), str(settings.output_dir), "group", *options])


def test_adapt_site_bad_input(trained, tmp_path, caplog):
    few = _site_dataset(trained, tmp_path / "few", MIN_PARTICIPANTS - 1, shift=False)
    with caplog.at_level(logging.ERROR, logger="ketabids"):
        assert _run(few, "--adapt-site") == 64
        assert "--model" in caplog.text
        assert _run(few, "--model", str(few.model_file), "--adapt-site") == 65
        assert f"at least {MIN_PARTICIPANTS}" in caplog.text
    # a model file written before site adaptation (no stored reference)
    model, card = load_model(few.model_file)
    del model.site_reference_
    (tmp_path / "old").mkdir()
    save_model(model, tmp_path / "old" / "model.skops", {k: v for k, v in card.items() if k != "sha256"})
    enough = _site_dataset(trained, tmp_path / "enough", MIN_PARTICIPANTS, shift=False)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="ketabids"):
        assert _run(enough, "--model", str(tmp_path / "old" / "model.skops"), "--adapt-site") == 65
    assert "no site reference" in caplog.text
