"""Group level end to end on simulated tables: outputs, validation, model files, bad inputs."""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from ketabids.errors import BadDataError, InputMissingError, UsageError
from ketabids.group import WEIGHT_MAP, run_group_level
from ketabids.learning.modelfile import load_model, sha256
from ketabids.reports.screenshot import has_chromium, screenshot
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import region_lobes, simulate_cohort
from ketabids.simulate.tables import write_tables

SMALL = {"cv_repeats": 2, "outer_folds": 5, "inner_folds": 3, "c_grid": (0.001, 0.01, 0.1, 1.0)}


def _dataset(root: Path, seed: int = 0, **sizes) -> GroupSettings:
    design = simulate_cohort(seed=seed, **sizes)
    write_tables(design, root / "bids", root / "out", seed=seed, qc_fail=("sub-002",))
    return GroupSettings(bids_dir=root / "bids", output_dir=root / "out", random_seed=seed, **SMALL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> GroupSettings:
    """Paper-sized cohorts (99 discovery, 26 + 25 external, 49 saline) trained with 39 permutations."""
    settings = replace(_dataset(tmp_path_factory.mktemp("paper")), n_permutations=39, n_jobs=2)
    run_group_level(settings)
    return settings


def _read(settings: GroupSettings, name: str) -> pd.DataFrame:
    return pd.read_csv(settings.output_dir / "group" / name, sep="\t", na_values=["n/a"])


def test_group_writes_every_output(trained):
    group = trained.output_dir / "group"
    for name in ("predictions.tsv", "metrics.tsv", "metrics.json", "weights.tsv", "model.skops", "model.json",
                 "report.html", WEIGHT_MAP):  # fmt: skip
        assert (group / name).is_file(), name
    predictions = _read(trained, "predictions.tsv")
    assert list(predictions.columns[:7]) == [
        "participant_id", "cohort", "treatment", "evaluation", "y_true", "probability", "y_pred"
    ]  # fmt: skip
    assert predictions["participant_id"].is_unique and "sub-002" not in set(predictions["participant_id"])
    assert predictions.groupby("evaluation").size().to_dict() == {"control": 49, "cv": 98, "external": 51}
    assert predictions["probability"].between(0, 1).all()
    metrics = _read(trained, "metrics.tsv").set_index("evaluation")
    assert set(metrics.index) == {
        "cv", "external", "external:external1", "external:external2", "control", "specificity"
    }  # fmt: skip
    assert metrics["null"].notna().all() and metrics["p_value"].notna().all()
    assert metrics["auc_p_value"].notna().all()
    # y_pred is the sign of the decision, and probabilities increase with it (slope a >= 0)
    assert (predictions["y_pred"] == (predictions["decision"] > 0)).all()
    ordered = predictions[predictions["evaluation"] != "cv"].sort_values("decision")
    assert ordered["probability"].is_monotonic_increasing
    assert json.loads((group / "metrics.json").read_text())["cv"]["n"] == 98
    card = json.loads((group / "model.json").read_text())
    assert card["sha256"] == sha256(group / "model.skops")
    assert card["training"]["n"] == 98 and card["atlas"] == "neuromorphometrics"
    assert len(card["feature_names"]) == 121
    report = (group / "report.html").read_text()
    assert (
        "sub-002" in report and "10.1038/s41398-026-04085-4" in report and "data:image/png;base64" in report
    )
    assert "auc p value" in report and "Nadeau" in report and "ketamine minus saline" in report
    assert "inside a scikit-learn pipeline" not in report
    image = nib.load(group / WEIGHT_MAP)
    assert np.count_nonzero(image.get_fdata()) > 1000


def test_external_significant_control_at_chance_and_pattern(trained):
    metrics = _read(trained, "metrics.tsv").set_index("evaluation")
    assert metrics.loc["cv", "balanced_accuracy"] > 0.55
    assert metrics.loc["external", "p_value"] <= 0.05 and metrics.loc["external", "auc"] > 0.6
    assert (
        metrics.loc["control", "p_value"] > 0.05
        and abs(metrics.loc["control", "balanced_accuracy"] - 0.5) < 0.15
    )
    weights = _read(trained, "weights.tsv")
    lobes = region_lobes(weights["feature"]).to_numpy()
    top = weights.head(10)
    assert (top["weight"][lobes[:10] == "cerebellar"] < 0).any()
    assert (
        weights["cv_mean"][lobes == "frontal"].mean() > 0 > weights["cv_mean"][lobes == "cerebellar"].mean()
    )
    assert weights["sign_consistency"].between(0, 1).all()


def _subset_dataset(source: GroupSettings, root: Path, participants: list[str]) -> GroupSettings:
    (root / "bids").mkdir(parents=True)
    table = pd.read_csv(source.bids_dir / "participants.tsv", sep="\t")
    table[table["participant_id"].isin(participants)].to_csv(
        root / "bids" / "participants.tsv", sep="\t", index=False
    )
    for participant in participants:
        shutil.copytree(source.output_dir / participant, root / "out" / participant)
    return GroupSettings(bids_dir=root / "bids", output_dir=root / "out")


def test_external_and_control_use_the_frozen_model_null(trained):
    metrics = _read(trained, "metrics.tsv").set_index("evaluation")
    predictions = _read(trained, "predictions.tsv")
    for name, kind in (("external", "external"), ("control", "control")):
        part = predictions[predictions["evaluation"] == kind]
        y, d = part["y_true"].to_numpy(dtype=bool), part["decision"].to_numpy()
        expected = stats.mannwhitneyu(d[y], d[~y], alternative="greater").pvalue
        assert metrics.loc[name, "auc_p_value"] == pytest.approx(expected, rel=1e-4)
        assert metrics.loc[name, "auc"] == pytest.approx(roc_auc_score(y, d), abs=1e-6)
        assert np.isfinite(metrics.loc[name, "p_value_retrained"])
    cv = predictions[predictions["evaluation"] == "cv"]
    assert metrics.loc["cv", "auc"] == pytest.approx(roc_auc_score(cv["y_true"], cv["decision"]), abs=1e-5)
    # CV intervals come from the spread over folds: wider than a bootstrap over 98 participants would
    # be is not guaranteed, but they must bracket the estimate and stay inside [0, 1] +- rounding
    low, high = metrics.loc["cv", "balanced_accuracy_ci_low"], metrics.loc["cv", "balanced_accuracy_ci_high"]
    assert low < metrics.loc["cv", "balanced_accuracy"] < high
    assert "within site" not in metrics.loc["cv", "null"]  # one discovery site: plain permutations


def test_specificity_row_ketamine_beats_saline(trained):
    """Simulated truth: the anatomy predicts response to ketamine only, so the difference is positive."""
    metrics = _read(trained, "metrics.tsv").set_index("evaluation")
    row = metrics.loc["specificity"]
    difference = metrics.loc["external", "balanced_accuracy"] - metrics.loc["control", "balanced_accuracy"]
    assert row["balanced_accuracy"] == pytest.approx(difference, abs=1e-9)
    assert row["auc"] == pytest.approx(
        metrics.loc["external", "auc"] - metrics.loc["control", "auc"], abs=1e-9
    )
    assert row["n"] == 100 and row["auc"] > 0
    assert row["auc_ci_low"] < row["auc"] < row["auc_ci_high"]
    assert 0 < row["auc_p_value"] < 0.2


def test_model_applied_per_treatment_arm_matches_in_process_predictions(trained, tmp_path):
    predictions = _read(trained, "predictions.tsv")
    held = predictions[predictions["evaluation"] != "cv"]
    other = _subset_dataset(trained, tmp_path, list(held["participant_id"]))
    run_group_level(
        replace(other, model_file=trained.output_dir / "group" / "model.skops", n_permutations=39)
    )
    applied = _read(other, "predictions.tsv").set_index("participant_id").loc[held["participant_id"]]
    assert list(applied["evaluation"]) == list(held["evaluation"])  # ketamine external, saline control
    np.testing.assert_allclose(applied["probability"], held["probability"].to_numpy(), atol=1e-6)
    np.testing.assert_array_equal(applied["y_pred"], held["y_pred"])
    assert (applied["y_pred"] == (applied["decision"] > 0)).all()
    metrics = _read(other, "metrics.tsv").set_index("evaluation")
    in_process = _read(trained, "metrics.tsv").set_index("evaluation")
    assert set(metrics.index) == set(in_process.index) - {"cv"}
    for name in metrics.index:
        for column in ("n", "balanced_accuracy", "auc", "auc_p_value", "p_value"):
            assert metrics.loc[name, column] == pytest.approx(in_process.loc[name, column], abs=1e-6), (
                name,
                column,
            )


def _applied(trained: GroupSettings, root: Path, participants: list[str], **changes) -> GroupSettings:
    settings = _subset_dataset(trained, root, participants)
    return replace(
        settings, model_file=trained.output_dir / "group" / "model.skops", n_permutations=19, **changes
    )


def _held(trained: GroupSettings, evaluation: str) -> list[str]:
    predictions = _read(trained, "predictions.tsv")
    return list(predictions.loc[predictions["evaluation"] == evaluation, "participant_id"])


def test_apply_uses_the_cards_threshold_and_refuses_another(trained, tmp_path):
    settings = _applied(trained, tmp_path, _held(trained, "external"))
    with pytest.raises(UsageError, match=r"response threshold 0\.5, not 0\.3"):
        run_group_level(replace(settings, response_threshold=0.3))
    run_group_level(replace(settings, response_threshold=0.3, force_model=True))
    table = pd.read_csv(settings.bids_dir / "participants.tsv", sep="\t").set_index("participant_id")
    expected = ((table["madrs_pre"] - table["madrs_24h"]) / table["madrs_pre"] >= 0.3).astype(int)
    applied = _read(settings, "predictions.tsv").set_index("participant_id")
    assert (applied["y_true"] == expected.loc[applied.index]).all()
    assert (expected != ((table["madrs_pre"] - table["madrs_24h"]) / table["madrs_pre"] >= 0.5)).any()


def test_single_class_sets_give_no_auc_and_no_p_value(trained, tmp_path):
    predictions = _read(trained, "predictions.tsv")
    responders = predictions[(predictions["evaluation"] == "external") & (predictions["y_true"] == 1)]
    settings = _applied(trained, tmp_path, list(responders["participant_id"]))
    run_group_level(settings)
    metrics = _read(settings, "metrics.tsv").set_index("evaluation")
    assert metrics.loc["external", "n"] == len(responders) and metrics.loc["external", "n_nonresponders"] == 0
    assert np.isnan(metrics.loc["external", "auc"]) and np.isnan(metrics.loc["external", "p_value"])
    assert "specificity" not in metrics.index


def test_unseen_site_is_reported_or_not_applicable(trained, tmp_path):
    participants = _held(trained, "external")[:10]
    settings = _applied(trained, tmp_path / "a", participants)
    _edit_participants(settings, lambda t: t.assign(site="siteZ"))
    run_group_level(settings)  # the default model has no site covariate: predictions as usual
    assert "siteZ" in (settings.output_dir / "group" / "report.html").read_text()
    # a model with a site covariate: sites it never saw make the prediction not apply (the site is
    # never silently coded as the reference site)
    design = simulate_cohort(n_discovery=40, n_external=(10,), n_saline=0, effect_size=2.0, seed=4)
    write_tables(design, tmp_path / "b" / "bids", tmp_path / "b" / "out", seed=4)
    source = GroupSettings(bids_dir=tmp_path / "b" / "bids", output_dir=tmp_path / "b" / "out",
                           covariates=("tiv", "site"), n_permutations=9, **SMALL)  # fmt: skip
    run_group_level(source)
    card = json.loads((source.output_dir / "group" / "model.json").read_text())
    assert card["training_sites"] == ["siteA"] and card["covariate_columns"] == ["tiv"]
    table = design.participants
    external = list(table.loc[table["cohort"] == "external1", "participant_id"])
    target = replace(_subset_dataset(source, tmp_path / "c", external[:10]), n_permutations=9,
                     model_file=source.output_dir / "group" / "model.skops")  # fmt: skip
    run_group_level(target)
    assert not _read(target, "predictions.tsv")["applicable"].any()  # site B was never seen
    assert "never saw (siteB)" in (target.output_dir / "group" / "report.html").read_text()


def test_permutations_stay_within_discovery_sites(small):
    _edit_participants(small, lambda t: t.assign(site=np.where(np.arange(len(t)) % 2, "siteA", "siteB")))
    settings = replace(small, cv_repeats=1, n_permutations=9)
    run_group_level(settings)
    metrics = _read(settings, "metrics.tsv").set_index("evaluation")
    assert "within site" in metrics.loc["cv", "null"]


def test_model_card_versions_are_checked(trained, tmp_path, caplog):
    participants = _held(trained, "external")[:12]
    for name, version, outcome in (
        ("minor", "1.0.0", "warn"),  # scikit-learn 1.x -> installed 1.9: warning only
        ("major", "0.24.2", "refuse"),
    ):
        settings = _applied(trained, tmp_path / name, participants)
        model = _copy_model(trained, tmp_path / f"model-{name}")
        card = json.loads(model.with_suffix(".json").read_text())
        card["software"]["scikit-learn"] = version
        model.with_suffix(".json").write_text(json.dumps(card))
        settings = replace(settings, model_file=model)
        if outcome == "refuse":
            with pytest.raises(BadDataError, match="major version"):
                run_group_level(settings)
            run_group_level(replace(settings, force_model=True))
        else:
            with caplog.at_level("WARNING", logger="ketabids.group"):
                run_group_level(settings)
            assert f"scikit-learn {version}" in caplog.text


def _copy_model(trained: GroupSettings, folder: Path) -> Path:
    folder.mkdir()
    for name in ("model.skops", "model.json"):
        shutil.copy(trained.output_dir / "group" / name, folder / name)
    return folder / "model.skops"


def _reseal(path: Path) -> None:
    card = json.loads(path.with_suffix(".json").read_text())
    card["sha256"] = sha256(path)
    path.with_suffix(".json").write_text(json.dumps(card))


def test_tampered_pickled_and_foreign_models_are_refused(trained, tmp_path):
    path = _copy_model(trained, tmp_path / "ok")
    model, card = load_model(path)
    assert card["classifier"] == "svm-linear" and hasattr(model, "predict_proba")

    tampered = _copy_model(trained, tmp_path / "tampered")
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(BadDataError, match="sha256"):
        load_model(tampered)

    pickled = _copy_model(trained, tmp_path / "pickled")
    pickled.write_bytes(pickle.dumps(model))
    _reseal(pickled)
    with pytest.raises(BadDataError, match="pickle"):
        load_model(pickled)

    foreign = _copy_model(trained, tmp_path / "foreign")
    sio.dump(Pipeline([("f", FunctionTransformer(np.exp))]), foreign)
    _reseal(foreign)
    with pytest.raises(BadDataError, match="allowlist"):
        load_model(foreign)

    unsealed = _copy_model(trained, tmp_path / "unsealed")
    unsealed.with_suffix(".json").unlink()
    with pytest.raises(InputMissingError, match="model card"):
        load_model(unsealed)


def test_model_with_other_atlas_is_refused(trained, tmp_path):
    design = simulate_cohort(n_discovery=12, n_external=(), n_saline=0, atlas="aal", seed=1)
    write_tables(design, tmp_path / "bids", tmp_path / "out")
    settings = GroupSettings(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out")
    with pytest.raises(BadDataError, match="atlas 'neuromorphometrics'"):
        run_group_level(replace(settings, model_file=trained.output_dir / "group" / "model.skops"))


@pytest.fixture()
def small(tmp_path) -> GroupSettings:
    return _dataset(tmp_path, seed=3, n_discovery=30, n_external=(), n_saline=0)


def _edit_participants(settings: GroupSettings, edit) -> None:
    path = settings.bids_dir / "participants.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str)
    edit(table).to_csv(path, sep="\t", index=False)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda t: t.drop(columns="madrs_pre"), InputMissingError, "madrs_pre"),
        (lambda t: t.assign(madrs_24h=["ten", *t["madrs_24h"][1:]]), BadDataError, "sub-001 has non-numeric"),
        (lambda t: pd.concat([t, t.iloc[:1]]), BadDataError, "duplicate participant 'sub-001'"),
        (lambda t: t.assign(cohort="elsewhere"), InputMissingError, "no discovery participants"),
        (lambda t: t.assign(madrs_24h=t["madrs_pre"]), BadDataError, "one class only"),
        (lambda t: t.iloc[:8], BadDataError, "too few participants per class"),
    ],
)
def test_bad_participants_table(small, edit, error, message):
    _edit_participants(small, edit)
    with pytest.raises(error, match=message):
        run_group_level(small)


def test_missing_participants_file(small):
    (small.bids_dir / "participants.tsv").unlink()
    with pytest.raises(InputMissingError, match=r"participants\.tsv"):
        run_group_level(small)


def test_outcome_from_phenotype_and_sessions(small):
    participants = pd.read_csv(small.bids_dir / "participants.tsv", sep="\t")
    (small.bids_dir / "phenotype").mkdir()
    participants[["participant_id", "madrs_pre", "madrs_24h"]].to_csv(
        small.bids_dir / "phenotype" / "madrs.tsv", sep="\t", index=False
    )
    participants.drop(columns=["madrs_pre", "madrs_24h"]).to_csv(
        small.bids_dir / "participants.tsv", sep="\t", index=False
    )
    # give every participant a pre and a post session with the same tables
    for folder in sorted(small.output_dir.glob("sub-*")):
        for session in ("pre", "post"):
            target = folder / f"ses-{session}" / "anat"
            target.mkdir(parents=True)
            for table in (folder / "anat").glob("*.tsv"):
                name = table.name.replace(f"{folder.name}_", f"{folder.name}_ses-{session}_")
                shutil.copy(table, target / name)
        shutil.rmtree(folder / "anat")
    with pytest.raises(UsageError, match="--session-label"):
        run_group_level(small)
    settings = replace(small, session_label="pre", cv_repeats=1, n_permutations=0)
    run_group_level(settings)
    predictions = _read(settings, "predictions.tsv")
    assert len(predictions) == 29 and predictions["y_true"].notna().all()


def test_participants_without_tables_are_excluded(small):
    shutil.rmtree(small.output_dir / "sub-005")
    settings = replace(small, cv_repeats=1, n_permutations=0)
    run_group_level(settings)
    report = (settings.output_dir / "group" / "report.html").read_text()
    assert "sub-005" in report and "no seg-neuromorphometrics_morph.tsv" in report
    assert "sub-005" not in set(_read(settings, "predictions.tsv")["participant_id"])


def _write_modulated_maps(design, output_dir: Path, seed: int) -> None:
    """Modulated GM maps on the 4 mm feature grid: template GM scaled by each region's change and head size."""
    from nilearn.image import resample_to_img

    from ketabids.data.atlases import load_atlas
    from ketabids.learning.features import voxel_grid
    from ketabids.learning.gather import MODULATED_GM
    from ketabids.simulate.tables import template_volumes

    grid = voxel_grid()
    reference = nib.Nifti1Image(np.zeros(grid.mask.shape, np.float32), grid.affine)
    atlas = load_atlas(design.atlas)
    labels = np.asarray(resample_to_img(atlas.image, reference, interpolation="nearest").dataobj).astype(int)
    base = template_volumes(design.atlas).regions
    index_of = dict(zip(base["name"], base["index"], strict=True))
    rng = np.random.default_rng(seed)
    gm = np.where(grid.mask, 0.6, 0.0)
    for participant, change in design.regional_change.iterrows():
        factor = np.ones(labels.max() + 1)
        factor[[index_of[name] for name in change.index]] += change.to_numpy()
        data = gm * factor[labels] * design.head_scale[participant] ** 3 * (1 + rng.normal(0, 0.02, gm.shape))
        path = output_dir / participant / "anat" / f"{participant}_{MODULATED_GM}"
        nib.Nifti1Image(data.astype(np.float32), grid.affine).to_filename(path)


def test_voxel_features_learn_the_simulated_pattern(tmp_path):
    design = simulate_cohort(n_discovery=60, n_external=(), n_saline=0, effect_size=2.5, seed=7)
    write_tables(design, tmp_path / "bids", tmp_path / "out", seed=7)
    _write_modulated_maps(design, tmp_path / "out", seed=7)
    settings = GroupSettings(
        bids_dir=tmp_path / "bids", output_dir=tmp_path / "out", features="voxel", n_permutations=0,
        cv_repeats=1, outer_folds=5, inner_folds=3, c_grid=(0.001, 0.01, 0.1),
    )  # fmt: skip
    run_group_level(settings)
    metrics = _read(settings, "metrics.tsv").set_index("evaluation")
    assert metrics.loc["cv", "balanced_accuracy"] > 0.65
    weights = nib.load(settings.output_dir / "group" / WEIGHT_MAP)
    assert weights.shape == (50, 59, 48)
    card = json.loads((settings.output_dir / "group" / "model.json").read_text())
    assert card["features"] == "voxel" and len(card["feature_names"]) == int(
        np.count_nonzero(weights.get_fdata())
    )


def test_logistic_end_to_end_gives_graded_probabilities(tmp_path):
    """The logistic classifier once made Platt diverge (probabilities a 0/1 step); now they are graded."""
    settings = replace(
        _dataset(tmp_path, seed=6, n_discovery=60, n_external=(20,), n_saline=20, effect_size=2.5),
        classifier="logistic", cv_repeats=1, n_permutations=9,
    )  # fmt: skip
    run_group_level(settings)
    predictions = _read(settings, "predictions.tsv")
    assert (predictions["y_pred"] == (predictions["decision"] > 0)).all()
    held = predictions[predictions["evaluation"] != "cv"].sort_values("decision")
    assert held["probability"].is_monotonic_increasing
    assert held["probability"].between(0.02, 0.98).mean() > 0.8 and held["probability"].nunique() > 30
    card = json.loads((settings.output_dir / "group" / "model.json").read_text())
    assert 0 <= card["platt"]["a"] * held["decision"].std() < 20
    metrics = _read(settings, "metrics.tsv").set_index("evaluation")
    assert metrics.loc["cv", "auc"] > 0.6 and metrics.loc["external", "auc"] > 0.6


def test_apply_without_treatment_arms_evaluates_everyone_together(trained, tmp_path):
    settings = _applied(trained, tmp_path, _held(trained, "external")[:20])
    _edit_participants(settings, lambda t: t.drop(columns=["treatment", "cohort"]))
    run_group_level(settings)
    assert set(_read(settings, "predictions.tsv")["evaluation"]) == {"apply"}
    metrics = _read(settings, "metrics.tsv").set_index("evaluation")
    assert list(metrics.index) == ["apply"] and metrics.loc["apply", "n"] == 20


def test_prediction_sets_applicability_and_old_models_without_them(trained, tmp_path):
    predictions = _read(trained, "predictions.tsv").set_index("participant_id")
    known = predictions[predictions["y_true"].notna()]
    sets = known["prediction_set"].fillna("").astype(str)
    assert set(sets) <= {"0", "1", "0,1", ""}
    covered = [str(int(y)) in s.split(",") for y, s in zip(known["y_true"], sets, strict=True)]
    cv = known["evaluation"] == "cv"
    assert np.mean(np.array(covered)[cv.to_numpy()]) >= 0.9  # in-sample calibration: at least nominal
    assert 0.75 <= np.mean(np.array(covered)[~cv.to_numpy()]) <= 1.0  # ~100 external/control
    card = json.loads((trained.output_dir / "group" / "model.json").read_text())
    assert card["conformal"]["n_calibration"] == 98
    assert predictions["applicability_percentile"].between(0, 100).all()
    assert set(predictions["applicable"]) <= {True, False}
    assert 0.9 <= predictions["applicable"].mean() < 1  # everyone simulated alike: ~1 % beyond the limit
    beyond = predictions.loc[~predictions["applicable"], "applicability_percentile"]
    assert (beyond > 99).all()

    path = _copy_model(trained, tmp_path / "old")
    model = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    del model.conformal_scores_, model.conformal_labels_, model.domain_
    sio.dump(model, path)
    _reseal(path)
    held = _held(trained, "external")
    settings = replace(_subset_dataset(trained, tmp_path / "site", held), model_file=path, n_permutations=0)
    run_group_level(settings)
    applied = _read(settings, "predictions.tsv").set_index("participant_id")
    assert not {"prediction_set", "applicability_percentile", "applicable"} & set(applied.columns)
    np.testing.assert_allclose(applied["probability"], predictions.loc[held, "probability"], atol=1e-6)
    assert "no prediction sets are available" in (settings.output_dir / "group" / "report.html").read_text()
    page = (settings.output_dir / "group" / f"{held[0]}_prediction.html").read_text()
    assert "No prediction set is available" in page and "has no applicability check" in page
    assert "was not seen in training" in page and "plays no role" in page


def test_per_patient_reports_state_prediction_set_applicability_and_card(trained):
    group = trained.output_dir / "group"
    predictions = _read(trained, "predictions.tsv").set_index("participant_id")
    pages = sorted(group.glob("sub-*_prediction.html"))
    assert [p.name.removesuffix("_prediction.html") for p in pages] == sorted(predictions.index)
    for participant, row in predictions.iloc[[0, -1]].iterrows():
        page = (group / f"{participant}_prediction.html").read_text()
        assert f"{100 * row['probability']:.0f} %" in page
        members = "" if pd.isna(row["prediction_set"]) else str(row["prediction_set"])
        assert f"error level: {{{members}}}" in page
        assert ("The prediction applies" in page) == bool(row["applicable"])
        assert "was part of the training cohort" in page or "was not seen in training" in page
        assert page.count('class="bar"') == 10  # the top-10 regions
        assert "Research use only" in page and "98 participants" in page and '<img src="http' not in page
    beyond = predictions.index[~predictions["applicable"].astype(bool)]
    if len(beyond):
        assert "The prediction does not apply" in (group / f"{beyond[0]}_prediction.html").read_text()


@pytest.mark.skipif(not has_chromium(), reason="headless Chromium is not installed")
def test_per_patient_report_renders_in_headless_chromium(trained, tmp_path):
    page = next((trained.output_dir / "group").glob("sub-*_prediction.html"))
    pixels = plt.imread(screenshot(page, tmp_path / "shot.png", width=900, height=1400))
    assert pixels.shape[:2] == (1400, 900)
    rows = pixels[..., :3].std(axis=(1, 2))
    assert np.flatnonzero(rows > 0.01).max() > 700  # content fills more than half of the page
