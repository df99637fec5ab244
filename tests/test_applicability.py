"""Applicability check: flag rates on simulated in-distribution and shifted participants; patients
whose prediction does not apply (QC, unseen site) are kept with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ketabids.demo import summary
from ketabids.group import run_group_level
from ketabids.learning.applicability import fit_domain
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables


def _cohort(rng: np.random.Generator, n: int, mixing: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return scale * rng.normal(size=(n, mixing.shape[0])) @ mixing


def test_flags_about_one_percent_in_distribution_and_most_shifted():
    rng = np.random.default_rng(3)
    mixing = np.eye(60) + 0.2 * rng.normal(size=(60, 60))
    rates = []
    for _ in range(5):  # 5 training cohorts of 100, 1000 new participants each
        domain = fit_domain(_cohort(rng, 100, mixing), seed=0)
        rates.append(1 - domain.within(_cohort(rng, 1000, mixing)).mean())
        shifted = _cohort(rng, 1000, mixing, scale=2.0)  # another scanner: twice the spread
        assert 1 - domain.within(shifted).mean() >= 0.95
    assert 0.0 < np.mean(rates) < 0.03, rates
    percentile, within = domain.training_cohort()
    assert percentile.max() == 100 and 0.97 <= within.mean() < 1


def test_many_features_are_projected_and_percentiles_rank_distances():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(80, 1200))
    domain = fit_domain(z, seed=1)
    assert domain.projection.shape == (50, 1200)
    new = rng.normal(size=(200, 1200))
    order = np.argsort(domain.distance(new))
    assert np.all(np.diff(domain.percentile(new)[order]) >= 0)
    assert 1 - domain.within(new).mean() < 0.1  # projected: rougher than the 1 % of few features
    assert not domain.within(new * 2).any()


def _train_with_site_covariate(root: Path) -> GroupSettings:
    """A small model with a site covariate trained on site A; its external cohort is at site B."""
    design = simulate_cohort(n_discovery=40, n_external=(12,), n_saline=0, effect_size=2.0, seed=4)
    write_tables(design, root / "bids", root / "out", seed=4)
    settings = GroupSettings(
        bids_dir=root / "bids", output_dir=root / "out", covariates=("tiv", "site"), n_permutations=0,
        cv_repeats=1, outer_folds=5, inner_folds=3, c_grid=(0.01, 1.0),
    )  # fmt: skip
    run_group_level(settings)
    return settings


def _predictions(settings: GroupSettings) -> pd.DataFrame:
    path = settings.output_dir / "group" / "predictions.tsv"
    return pd.read_csv(path, sep="\t", na_values=["n/a"]).set_index("participant_id")


def test_qc_flagged_and_unseen_site_patients_are_kept_as_not_applicable(tmp_path):
    """Apply mode: a QC-flagged scan and patients from a site the model never saw (site is a
    covariate) get rows and reports saying why the prediction does not apply; the run goes on."""
    source = _train_with_site_covariate(tmp_path / "train")
    trained = _predictions(source)
    external = trained.index[trained["evaluation"] == "external"]
    assert not trained.loc[external, "applicable"].any()  # site B is unseen: none applies
    page = (source.output_dir / "group" / f"{external[0]}_prediction.html").read_text()
    assert "The prediction does not apply: the patient&#39;s site (siteB) was not seen" in page

    site = tmp_path / "site"
    (site / "bids").mkdir(parents=True)
    table = pd.read_csv(source.bids_dir / "participants.tsv", sep="\t")
    table = table[table["participant_id"].isin(external)].copy()
    table["site"] = np.where(np.arange(len(table)) < 4, "siteZ", "siteA")  # 4 unseen, 8 seen
    table.to_csv(site / "bids" / "participants.tsv", sep="\t", index=False)
    for participant in external:
        shutil.copytree(source.output_dir / participant, site / "out" / participant)
    flagged = str(table["participant_id"].iloc[-1])
    tissue = next((site / "out" / flagged).glob("**/*_desc-tissue_morph.tsv"))
    pd.read_csv(tissue, sep="\t").assign(qc_flag=1, qc_reasons="registration_correlation 0.41 < 0.7").to_csv(
        tissue, sep="\t", index=False
    )
    applied = GroupSettings(
        bids_dir=site / "bids", output_dir=site / "out", n_permutations=0,
        model_file=source.output_dir / "group" / "model.skops",
    )  # fmt: skip
    run_group_level(applied)
    predictions = _predictions(applied)
    assert list(predictions.index) == list(table["participant_id"])  # nobody dropped
    unseen = list(table["participant_id"].iloc[:4])
    blocked = [*unseen, flagged]
    assert predictions["applicable"].dtype == bool and not predictions.loc[blocked, "applicable"].any()
    assert predictions.loc[blocked, "probability"].between(0, 1).all()
    metrics = pd.read_csv(applied.output_dir / "group" / "metrics.tsv", sep="\t").set_index("evaluation")
    assert metrics.loc["external", "n"] == 7  # the 8 site-A patients but the QC-flagged one
    group = applied.output_dir / "group"
    qc_page = (group / f"{flagged}_prediction.html").read_text()
    assert "The prediction does not apply: the scan was flagged by participant-level QC" in qc_page
    assert (
        "registration_correlation 0.41 &lt; 0.7" in qc_page and "(siteA) was part of the training" in qc_page
    )
    site_page = (group / f"{unseen[0]}_prediction.html").read_text()
    assert "(siteZ) was not seen in training and site is one of the model" in site_page
    assert "flagged by participant-level QC" in (group / "report.html").read_text()
    # the demo's closing message lists every per-patient report of the applying site
    message = summary(source.output_dir, applied.output_dir, 1.0)
    assert all(str(group / f"{p}_prediction.html") in message for p in predictions.index)
