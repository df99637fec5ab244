"""Group level: train and validate the ketamine-response classifier, or apply a shared model.

Reads participant tables from ``output_dir`` and ``participants.tsv``/``phenotype/`` from
``bids_dir``; writes ``output_dir/group/`` (DESIGN.md section 5).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ketabids import __version__
from ketabids.data.templates import TEMPLATE_NAME
from ketabids.derivatives import (
    atomic_copy,
    atomic_write,
    parse_entities,
    write_text_atomic,
    write_tsv_atomic,
)
from ketabids.errors import BadDataError, InputMissingError, UsageError
from ketabids.learning import cohorts, compat, harmonize
from ketabids.learning.applicability import LIMIT_PERCENTILE, Domain
from ketabids.learning.backends import parallel_workers
from ketabids.learning.conformal import prediction_sets, set_label
from ketabids.learning.engine import CVResult, Data, Protocol, evaluate
from ketabids.learning.inference import corrected_resampled_interval, frozen_model_p_values, specificity_test
from ketabids.learning.inputs import GroupInputs, load_inputs
from ketabids.learning.metrics import METRICS, balanced_accuracy, binary_metrics, permutation_p_value
from ketabids.learning.model import CalibratedModel, build_pipeline
from ketabids.learning.modelfile import load_model, save_model
from ketabids.learning.permutation import cross_validate, null_distribution, prepare_analysis
from ketabids.learning.recalibration import write_recalibration
from ketabids.learning.weights import haufe_pattern, region_map, weight_table
from ketabids.reports.methods import software_versions
from ketabids.settings import GroupSettings

LOGGER = logging.getLogger("ketabids.group")
WEIGHT_MAP = f"weights_space-{TEMPLATE_NAME}_stat.nii.gz"
ROLE_APPLY = "apply"  # apply mode: participants without a ketamine/saline arm
# the null hypothesis behind each row's p-values (metrics.tsv column ``null``)
NULL_CV = "discovery labels permuted, whole nested CV rerun"
NULL_CV_SITE = "discovery labels permuted within site, whole nested CV rerun"
NULL_FROZEN = "frozen model, this set's labels permuted; AUC: Mann-Whitney U test"
NULL_SPECIFICITY = "treatment labels permuted across the ketamine external and saline sets"


def _protocol(settings: GroupSettings) -> Protocol:
    try:
        return Protocol(
            classifier=settings.classifier,
            c_grid=tuple(settings.c_grid),
            cv_repeats=settings.cv_repeats,
            outer_folds=settings.outer_folds,
            inner_folds=settings.inner_folds,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def _check_training_labels(y: np.ndarray, protocol: Protocol, discovery: str) -> None:
    if y.size == 0:
        raise InputMissingError(
            f"no discovery participants: none with cohort '{discovery}', treatment ketamine, tables and MADRS"
        )
    counts = np.bincount(y.astype(int), minlength=2)
    if counts.min() == 0:
        which = "responders" if counts[1] == 0 else "non-responders"
        raise BadDataError(f"the discovery cohort has no {which} (one class only): nothing to learn")
    inner_min = counts.min() * (protocol.outer_folds - 1) // protocol.outer_folds
    if counts.min() < protocol.outer_folds or inner_min < protocol.inner_folds:
        raise BadDataError(
            f"too few participants per class for the folds: {counts[1]} responders and {counts[0]} "
            f"non-responders for {protocol.outer_folds} outer x {protocol.inner_folds} inner folds"
        )


def _apply_sets(table: pd.DataFrame, left_out: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Row positions of the external cohorts (pooled and each), of the control set, and (apply
    mode) of participants without a treatment arm; rows where ``left_out`` is true are in none."""
    sets: dict[str, np.ndarray] = {}
    evaluation = table["evaluation"].to_numpy()
    if left_out is not None:
        evaluation = np.where(left_out, None, evaluation)
    external = evaluation == cohorts.ROLE_EXTERNAL
    if external.any():
        sets["external"] = np.flatnonzero(external)
        for cohort in sorted(table.loc[external, "cohort"].dropna().unique()):
            sets[f"external:{cohort}"] = np.flatnonzero(external & (table["cohort"].to_numpy() == cohort))
    for name in (cohorts.ROLE_CONTROL, ROLE_APPLY):
        if (evaluation == name).any():
            sets[name] = np.flatnonzero(evaluation == name)
    return sets


def _frozen_row(name: str, y: np.ndarray, decision: np.ndarray, settings: GroupSettings) -> dict:
    """Metrics of a fixed model on one set, bootstrap intervals and frozen-model p-values."""
    known = np.isfinite(y)
    row: dict = {"evaluation": name, "null": NULL_FROZEN}
    if known.sum() == 0:
        return {**row, "n": 0}
    row.update(binary_metrics(y[known], decision[known] > 0, decision[known], seed=settings.random_seed))
    row.update(
        frozen_model_p_values(y[known], decision[known], settings.n_permutations, settings.random_seed)
    )
    return row


def _specificity_row(
    y: np.ndarray, decision: np.ndarray, sets: dict[str, np.ndarray], settings: GroupSettings
) -> dict | None:
    """Ketamine (external, pooled) minus saline (control) BAC and AUC, when both sets have outcomes."""
    if "external" not in sets or cohorts.ROLE_CONTROL not in sets:
        return None
    arms = []
    for name in ("external", cohorts.ROLE_CONTROL):
        rows = sets[name][np.isfinite(y[sets[name]])]
        if np.unique(y[rows]).size < 2:
            return None
        arms.append((y[rows], decision[rows]))
    test = specificity_test(
        arms[0], arms[1], n_permutations=settings.n_permutations, seed=settings.random_seed
    )
    return {"evaluation": "specificity", "null": NULL_SPECIFICITY, **test}


def _order_columns(metrics: pd.DataFrame) -> pd.DataFrame:
    first = ["evaluation", "n", "n_responders", "n_nonresponders", *METRICS, "p_value", "auc_p_value"]
    columns = [c for c in first if c in metrics.columns]
    return metrics[columns + [c for c in metrics.columns if c not in columns]]


def _cv_row(y: np.ndarray, cv: CVResult, protocol: Protocol, null: pd.DataFrame, within_site: bool) -> dict:
    """Metrics of the repeat-averaged CV decision; Nadeau-Bengio intervals over the outer folds."""
    decision = cv.mean_decision
    row: dict = {"evaluation": "cv"}
    row.update(binary_metrics(y, decision > 0, decision, n_bootstrap=0))
    test_fraction = 1 / (protocol.outer_folds - 1)
    folds = pd.DataFrame(cv.fold_metrics(y))
    for name in METRICS:
        values = folds[name].to_numpy(dtype=float)
        low, high = corrected_resampled_interval(values, test_fraction)
        centre = np.nanmean(values) if np.isfinite(values).any() else np.nan
        # the corrected resampled t half-width, centred at the reported (pooled) estimate
        row[f"{name}_ci_low"] = row[name] - (centre - low)
        row[f"{name}_ci_high"] = row[name] + (high - centre)
    per_repeat = balanced_accuracy(y, cv.decision > 0)
    row["balanced_accuracy_repeat_mean"] = float(per_repeat.mean())
    row["balanced_accuracy_repeat_sd"] = float(per_repeat.std())
    if not null.empty:
        row["p_value"] = permutation_p_value(
            row["balanced_accuracy"], null["cv_balanced_accuracy"].to_numpy()
        )
        row["auc_p_value"] = permutation_p_value(row["auc"], null["cv_auc"].to_numpy())
        row["null"] = NULL_CV_SITE if within_site else NULL_CV
    return row


def _prediction_rows(
    table: pd.DataFrame,
    rows: np.ndarray,
    decision: np.ndarray,
    probability: np.ndarray,
    sets: np.ndarray | None = None,
    applicability: tuple[np.ndarray, np.ndarray] | None = None,
    reasons: pd.Series | None = None,
) -> pd.DataFrame:
    """Rows of ``predictions.tsv``; ``sets`` (boolean (n, 2) conformal sets) adds ``prediction_set``,
    ``applicability`` (percentile, within the limit) adds ``applicability_percentile``/``applicable``;
    a non-empty ``reasons`` entry (QC, unseen site) makes a row not applicable whatever its distance."""
    part = table.iloc[rows]
    blocked = np.zeros(len(part), bool) if reasons is None else reasons.reindex(part.index).fillna("").ne("")
    if applicability is None and np.any(blocked):  # a model file without the distance check
        applicability = (np.full(len(part), np.nan), np.ones(len(part), bool))
    out = pd.DataFrame(
        {
            "participant_id": part.index,
            "cohort": part["cohort"].to_numpy(),
            "treatment": part["treatment"].to_numpy(),
            "evaluation": part["evaluation"].to_numpy(),
            "y_true": part["y_true"].astype("Int64").to_numpy(),
            "probability": np.round(probability, 6),
            "y_pred": (decision > 0).astype(int),
            "decision": decision,  # unrounded, so that y_pred = decision > 0 holds in the file
        }
    )
    if sets is not None:
        out["prediction_set"] = [set_label(members) for members in sets]
    if applicability is not None:
        out["applicability_percentile"] = np.round(applicability[0], 1)
        out["applicable"] = np.where(applicability[1] & ~np.asarray(blocked), "true", "false")
    return out


def _model_card(settings: GroupSettings, inputs: GroupInputs, protocol: Protocol, extra: dict) -> dict:
    y = inputs.table.loc[inputs.table["evaluation"] == cohorts.ROLE_TRAIN, "y_true"]
    return {
        "ketabids_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "features": settings.features,
        "atlas": settings.atlas,
        "template": TEMPLATE_NAME,
        "feature_names": list(inputs.features.columns),
        "covariates": list(settings.covariates),
        "covariate_columns": list(inputs.covariates.columns),
        "response_threshold": settings.threshold,
        "classifier": protocol.classifier,
        "protocol": asdict(protocol),
        "training": {
            "cohort": settings.discovery_cohort,
            "n": int(y.size),
            "n_responders": int((y == 1).sum()),
            "n_nonresponders": int((y == 0).sum()),
        },
        "random_seed": settings.random_seed,
        "software": software_versions(),
        **extra,
    }


def _write_json(data: dict, path: Path) -> None:
    write_text_atomic(json.dumps(data, indent=2, default=_json_default) + "\n", path)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _metrics_json(metrics: pd.DataFrame) -> dict:
    clean = metrics.astype(object).where(metrics.notna(), None)
    return {
        row["evaluation"]: {k: v for k, v in row.items() if k != "evaluation"}
        for row in clean.to_dict("records")
    }


def _write_weights(inputs: GroupInputs, weights: pd.DataFrame, atlas: str, group_dir: Path) -> Path:
    column = "weight" if weights["weight"].notna().any() else "pattern"
    values = weights.set_index("feature")[column]
    if inputs.voxel_grid is not None:
        image = inputs.voxel_grid.to_image(values.reindex(inputs.features.columns).to_numpy())
    else:
        image = region_map(values, atlas)
    path = group_dir / WEIGHT_MAP
    with atomic_write(path) as tmp:
        image.to_filename(tmp)
    return path


def _final_weights(model: CalibratedModel, matrix: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Linear weights (None for the RBF kernel) and the activation pattern on ``matrix``."""
    pipeline = model.pipeline
    z = pipeline[:-1].transform(matrix)
    classifier = pipeline[-1]
    linear = getattr(classifier, "kernel", "linear") == "linear"
    final = np.asarray(classifier.coef_[0], dtype=float) if linear else None
    return final, haufe_pattern(z, model.decision_function(matrix))


def _contributions(model: CalibratedModel, matrix: np.ndarray, inputs: GroupInputs) -> pd.DataFrame | None:
    """Weight x standardised feature of every participant (rows) and feature; None if not linear."""
    classifier = model.pipeline[-1]
    if getattr(classifier, "kernel", "linear") != "linear":
        return None
    z = model.pipeline[:-1].transform(matrix)
    weights = np.asarray(classifier.coef_[0], dtype=float)
    return pd.DataFrame(z * weights, index=inputs.table.index, columns=inputs.features.columns)


def _discovery_blocks(table: pd.DataFrame, rows: np.ndarray) -> np.ndarray | None:
    """Site codes for within-site permutations, or None when the discovery rows share one site."""
    sites = table["site"].astype("string").fillna("<no site>")
    if sites.iloc[rows].nunique() < 2:
        return None
    return pd.factorize(sites)[0]


def _train(settings: GroupSettings, inputs: GroupInputs, group_dir: Path) -> dict:
    protocol = _protocol(settings)
    table = inputs.table
    rows = np.flatnonzero(
        (table["evaluation"] == cohorts.ROLE_TRAIN).to_numpy() & table["y_true"].notna().to_numpy()
    )
    no_outcome = table.index[(table["evaluation"] == cohorts.ROLE_TRAIN) & table["y_true"].isna()]
    excluded = [*inputs.excluded.itertuples(index=False, name=None)]
    excluded += [(p, "no MADRS outcome (not used for training)") for p in no_outcome]
    y = table["y_true"].to_numpy(dtype=float)
    _check_training_labels(y[rows], protocol, settings.discovery_cohort)

    matrix = inputs.matrix().to_numpy(dtype=float)
    data = Data(
        features=inputs.features.to_numpy(dtype=float), covariates=inputs.covariates.to_numpy(dtype=float)
    )
    apply_sets = _apply_sets(table)
    blocks = _discovery_blocks(table, rows)
    LOGGER.info(
        "training on %d discovery participants; apply sets: %s", rows.size, ", ".join(apply_sets) or "none"
    )
    backend = settings.parallel_backend, settings.n_jobs, settings.dask_scheduler, settings.dask_timeout
    with parallel_workers(*backend) as n_workers:
        analysis = prepare_analysis(
            data, rows, y, apply_sets, protocol, settings.random_seed, n_workers, blocks=blocks
        )
        cv = cross_validate(analysis, y, protocol, n_workers, want_weights=True)
        LOGGER.info("permutation test: %d permutations", settings.n_permutations)
        null = null_distribution(
            analysis, y, protocol, settings.n_permutations, settings.random_seed, n_workers
        )

    fast = evaluate(analysis.final, y, protocol)
    best_c = protocol.c_grid[fast.c_index]
    pipeline = build_pipeline(
        protocol.classifier, best_c, inputs.covariates.shape[1], seed=settings.random_seed
    )
    model = CalibratedModel(pipeline, *fast.platt).fit(matrix[rows], y[rows].astype(int))
    # conformal scores: the outer CV's out-of-fold probabilities of every repeat. Each comes from a
    # model built like the final one (C tuned in its own inner CV, its own Platt sigmoid) that never
    # saw the participant, so they are exchangeable with the final model's scores on new patients.
    # (The final model's inner-CV probabilities were not: C is chosen on them, which makes them
    # optimistic, and their models see 1 - 1/inner_folds of the cohort: sets were too small.)
    model.calibrate_conformal(cv.probability, y[rows])
    model.fit_domain(matrix[rows], settings.random_seed)
    model.fit_site_reference(matrix[rows])
    alpha = settings.conformal_alpha

    metrics = [_cv_row(y[rows], cv, protocol, null, within_site=blocks is not None)]
    # training rows: sets of their repeat-averaged out-of-fold probabilities (those reported)
    oof_sets = prediction_sets(model.conformal_scores_, model.conformal_labels_, cv.mean_probability, alpha)
    own = Domain(**model.domain_).training_cohort()
    training_sites = sorted(table["site"].iloc[rows].dropna().astype(str).unique())
    reasons = compat.unseen_site_reasons(
        {"covariates": list(settings.covariates), "training_sites": training_sites}, table["site"]
    )
    predictions = [_prediction_rows(table, rows, cv.mean_decision, cv.mean_probability, oof_sets, own)]
    decision = np.full(len(table), np.nan)
    for name, set_rows in apply_sets.items():
        decision[set_rows] = model.decision_function(matrix[set_rows])
        row = _frozen_row(name, y[set_rows], decision[set_rows], settings)
        for stat, column in (("balanced_accuracy", "p_value"), ("auc", "auc_p_value")):
            if f"{name}_{stat}" in null and stat in row:
                row[f"{column}_retrained"] = permutation_p_value(row[stat], null[f"{name}_{stat}"].to_numpy())
        metrics.append(row)
        if ":" not in name:
            probability = model.predict_proba(matrix[set_rows])[:, 1]
            sets = model.prediction_sets(matrix[set_rows], alpha)
            applicability = model.applicability(matrix[set_rows])
            predictions.append(
                _prediction_rows(
                    table, set_rows, decision[set_rows], probability, sets, applicability, reasons
                )
            )
    specificity = _specificity_row(y, decision, apply_sets, settings)
    if specificity is not None:
        metrics.append(specificity)
    metrics_table = _order_columns(pd.DataFrame(metrics))

    final_w, pattern = _final_weights(model, matrix[rows])
    weights = weight_table(list(inputs.features.columns), final_w, cv.weights, pattern)
    card = _model_card(
        settings,
        inputs,
        protocol,
        {
            "c": best_c,
            "platt": {"a": model.platt_a, "b": model.platt_b},
            "training_sites": training_sites,
            "cv_metrics": _metrics_json(metrics_table.iloc[:1])["cv"],
            "c_chosen_in_cv": {str(c): int((cv.c_chosen == c).sum()) for c in protocol.c_grid},
            "conformal": {
                "method": "Mondrian (label-conditional) split conformal, crepes, hinge score",
                "calibration": "outer cross-validation's out-of-fold probabilities on the training cohort, "
                "every repeat (models built like the final one that never saw the participant)",
                "n_calibration": int(rows.size),
                "n_scores": int(model.conformal_scores_.size),
                "alpha_at_training": alpha,
            },
            "applicability": {
                "method": "Mahalanobis distance, Ledoit-Wolf covariance, residualised scaled features",
                "reference": "training cohort's out-of-fold distances",
                "limit_percentile": LIMIT_PERCENTILE,
            },
            "site_reference": {
                "method": "ComBat with the training cohort as frozen reference (--adapt-site)",
                "scale": "features after the model's covariate regression, training cohort",
                "min_participants": harmonize.MIN_PARTICIPANTS,
            },
        },
    )
    card = save_model(model, group_dir / "model.skops", card)
    return {
        "mode": "train",
        "predictions": pd.concat(predictions, ignore_index=True),
        "metrics": metrics_table,
        "weights": weights,
        "null": null,
        "card": card,
        "excluded": pd.DataFrame(excluded, columns=["participant_id", "reason"]),
        "cv_repeats": cv.decision,
        "notes": [],
        "contributions": _contributions(model, matrix, inputs),
        "not_applicable": reasons,
    }


def _check_atlas(settings: GroupSettings, atlas: str | None) -> None:
    """Refuse a model whose atlas has no tables here while tables of other atlases exist."""
    found = {
        parse_entities(path).get("seg")
        for path in Path(settings.output_dir).glob("sub-*/**/anat/*_seg-*_morph.tsv")
    }
    if found and atlas not in found:
        raise BadDataError(
            f"{settings.model_file}: the model was trained on atlas '{atlas}' but {settings.output_dir} "
            f"has tables for {', '.join(sorted(str(a) for a in found))}; rerun the participant level with --atlas {atlas}"
        )


def _not_applicable(inputs: GroupInputs, card: dict, adapted: Collection[str] = ()) -> pd.Series:
    """Why each participant's prediction does not apply whatever its distance to the training
    cohort (empty when none): a failed participant-level QC, an unseen site not ``adapted``."""
    reasons = compat.unseen_site_reasons(card, inputs.table["site"], adapted)
    for participant, failure in inputs.qc_failed.items():
        reasons[participant] = f"the scan was {failure}, so its measurements cannot be trusted"
    return reasons


def _adaptation_note(adaptation: dict[str, dict]) -> str:
    """One line on what ``--adapt-site`` did."""
    if not adaptation:
        return "--adapt-site: every participant's site was seen in training, nothing was adapted"
    sites = "; ".join(
        f"{site} ({info['n']} participants; median location shift {info['median_location_shift_sd']:+.2f} "
        f"SD, median scale ratio {info['median_scale_ratio']:.2f})"
        for site, info in adaptation.items()
    )
    return f"--adapt-site: features mapped onto the training cohort (ComBat, no outcomes used) for {sites}"


def _apply(settings: GroupSettings, group_dir: Path) -> tuple[GroupInputs, dict]:
    model, card = load_model(Path(settings.model_file))
    _check_atlas(settings, card.get("atlas"))
    threshold = compat.response_threshold(card, settings)
    notes = compat.version_notes(card, software_versions(), settings.force_model, settings.model_file)
    covariates = tuple(card.get("covariates", ()))
    settings = replace(settings, response_threshold=threshold)
    inputs = load_inputs(
        settings,
        feature_kind=card.get("features"),
        atlas=card.get("atlas"),
        covariates=covariates,
        site_levels=card.get("training_sites") if "site" in covariates else None,
        apply=True,
    )
    sites = inputs.table["site"]
    usable = pd.Series(~sites.index.isin(list(inputs.qc_failed)), index=sites.index)  # may estimate a site
    adapted_sites = (
        harmonize.sites_to_adapt(model, sites, usable, card.get("training_sites"), settings.model_file)
        if settings.adapt_site
        else []
    )
    notes += compat.site_notes(card, sites, settings.model_file, adapted_sites)
    reasons = _not_applicable(inputs, card, adapted_sites)
    if inputs.qc_failed:
        notes.append(
            f"{len(inputs.qc_failed)} participant(s) flagged by participant-level QC "
            f"({', '.join(inputs.qc_failed)}): predictions marked not applicable, left out of the metrics"
        )
    if list(inputs.features.columns) != card.get("feature_names"):
        raise BadDataError(
            f"{settings.model_file}: the model expects {len(card.get('feature_names', []))} "
            f"{card.get('features')} features on atlas '{card.get('atlas')}', these tables give "
            f"{inputs.features.shape[1]} different ones"
        )
    if list(inputs.covariates.columns) != card.get("covariate_columns"):
        raise BadDataError(
            f"{settings.model_file}: covariates {card.get('covariate_columns')} expected, got {list(inputs.covariates.columns)}"
        )
    if inputs.table.empty:
        raise InputMissingError("no participant with tables to apply the model to")
    matrix = inputs.matrix().to_numpy(dtype=float)
    adapted_rows, adaptation = np.zeros(len(matrix), dtype=bool), {}
    if settings.adapt_site:
        matrix, adapted_rows, adaptation = harmonize.adapt_sites(model, matrix, sites, usable, adapted_sites)
        features = inputs.features.copy()
        features.loc[:, :] = matrix[:, : features.shape[1]]
        inputs = replace(inputs, features=features)
        notes.append(_adaptation_note(adaptation))
    decision = model.decision_function(matrix)
    probability = model.predict_proba(matrix)[:, 1]
    conformal_sets = model.prediction_sets(matrix, settings.conformal_alpha)
    if conformal_sets is None:
        notes.append(
            f"{settings.model_file} has no conformal calibration (written by an older ketabids): "
            "no prediction sets are available"
        )
    applicability = model.applicability(matrix)
    if applicability is None:
        notes.append(f"{settings.model_file} has no applicability check (written by an older ketabids)")
    table = inputs.table
    y = table["y_true"].to_numpy(dtype=float)
    sets = _apply_sets(table, reasons.ne("").to_numpy())
    metrics = [_frozen_row(name, y[rows], decision[rows], settings) for name, rows in sets.items()]
    specificity = _specificity_row(y, decision, sets, settings)
    if specificity is not None:
        metrics.append(specificity)
    # every participant may be not applicable (QC, unseen sites): then no set has metrics
    metrics_table = _order_columns(
        pd.DataFrame(metrics) if metrics else pd.DataFrame(columns=["evaluation", "n"])
    )
    final_w, pattern = _final_weights(model, matrix)
    weights = weight_table(list(inputs.features.columns), final_w, [], pattern)
    recalibration = None
    if settings.recalibrate:
        recalibration = write_recalibration(
            model, Path(settings.model_file), card, table, decision, probability, group_dir,
            columns=settings.columns, seed=settings.random_seed, left_out=reasons.ne("").to_numpy(),
            site_adapted=settings.adapt_site,
        )  # fmt: skip
    atomic_copy(settings.model_file, group_dir / "model.skops")
    card = {**card, "site_adaptation": adaptation} if settings.adapt_site else card
    _write_json({**card, "applied_to": str(settings.bids_dir)}, group_dir / "model.json")
    predictions = _prediction_rows(
        table, np.arange(len(table)), decision, probability, conformal_sets, applicability, reasons
    )
    if settings.adapt_site:
        predictions["site_adapted"] = np.where(adapted_rows, "true", "false")
    return inputs, {
        "mode": "apply",
        "predictions": predictions,
        "metrics": metrics_table,
        "weights": weights,
        "null": pd.DataFrame(),
        "card": card,
        "excluded": inputs.excluded,
        "cv_repeats": None,
        "notes": notes,
        "contributions": _contributions(model, matrix, inputs),
        "response_threshold": threshold,
        "not_applicable": reasons,
        "recalibration": recalibration,
    }


def run_group_level(settings: GroupSettings) -> None:
    """Run the group level and write every file of ``output_dir/group/``."""
    group_dir = Path(settings.output_dir) / "group"
    group_dir.mkdir(parents=True, exist_ok=True)
    if settings.model_file is not None:
        inputs, result = _apply(settings, group_dir)
        atlas = result["card"].get("atlas", settings.atlas)
    else:
        if settings.recalibrate:
            raise UsageError("--recalibrate refits a shared model: give it with --model FILE")
        if settings.features not in ("roi", "voxel"):
            raise UsageError(f"unknown feature kind '{settings.features}'; choose roi or voxel")
        settings = replace(settings, response_threshold=settings.threshold)
        inputs = load_inputs(settings)
        result = _train(settings, inputs, group_dir)
        atlas = settings.atlas
    write_tsv_atomic(result["predictions"], group_dir / "predictions.tsv")
    write_tsv_atomic(result["metrics"], group_dir / "metrics.tsv")
    _write_json(_metrics_json(result["metrics"]), group_dir / "metrics.json")
    write_tsv_atomic(result["weights"], group_dir / "weights.tsv")
    if not result["null"].empty:
        write_tsv_atomic(result["null"], group_dir / "permutations.tsv")
    weight_map = _write_weights(inputs, result["weights"], atlas, group_dir)

    from ketabids.reports.group import write_group_report
    from ketabids.reports.patient import write_patient_reports

    write_patient_reports(
        group_dir,
        result["predictions"],
        result["contributions"],
        inputs.table["site"],
        result["card"],
        settings.conformal_alpha,
        result.get("not_applicable"),
    )
    write_group_report(
        group_dir / "report.html", settings=settings, inputs=inputs, result=result, weight_map=weight_map
    )
    LOGGER.info("group outputs written to %s", group_dir)
