"""The group report: one self-contained HTML file (figures embedded as PNG data URIs)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import jinja2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from ketabids.derivatives import write_text_atomic
from ketabids.learning.inputs import GroupInputs
from ketabids.reports.figures import (
    closed_on_error,
    figure_to_data_uri,
    null_distribution_figure,
    reliability_axes,
    roc_figure,
    stat_mosaic,
    weight_bars,
)
from ketabids.reports.methods import REFERENCES, software_versions
from ketabids.reports.recalibration import recalibration_context
from ketabids.settings import GroupSettings

_TEMPLATE = Path(__file__).with_name("group.html")
_METRIC_COLUMNS = (
    "n", "balanced_accuracy", "sensitivity", "specificity", "auc", "ppv", "npv", "p_value", "auc_p_value",
)  # fmt: skip
_CLASSIFIER_TEXT = {
    "svm-linear": "linear support vector classifier",
    "svm-rbf": "support vector classifier with a radial basis function kernel",
    "logistic": "L2-regularised logistic regression",
}
_SET_LABELS = {
    "cv": "discovery, nested CV",
    "external": "external validation (pooled)",
    "control": "saline control",
    "apply": "no treatment arm",
    "specificity": "ketamine minus saline (difference)",
}


def _label(name: str) -> str:
    if ":" in name:
        kind, cohort = name.split(":", 1)
        return f"{_SET_LABELS.get(kind, kind).replace(' (pooled)', '')}: {cohort}"
    return _SET_LABELS.get(name, name)


def _format(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def _metrics_rows(metrics: pd.DataFrame) -> list[dict]:
    rows = []
    for record in metrics.to_dict("records"):
        row = {"name": _label(record["evaluation"])}
        for column in _METRIC_COLUMNS:
            value = record.get(column)
            text = escape(_format(value))
            low, high = record.get(f"{column}_ci_low"), record.get(f"{column}_ci_high")
            if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
                text += Markup(" <span class='ci'>[{:.2f}, {:.2f}]</span>").format(low, high)
            row[column] = text
        rows.append(row)
    return rows


def _cohort_rows(inputs: GroupInputs, excluded: pd.DataFrame) -> list[dict]:
    table = inputs.table
    rows = []
    for (cohort, treatment), part in table.groupby(["cohort", "treatment"], dropna=False, sort=True):
        rows.append(
            {
                "cohort": _format(cohort),
                "treatment": _format(treatment),
                "evaluation": _format(_label(str(part["evaluation"].iloc[0]))),
                "n": len(part),
                "responders": int((part["y_true"] == 1).sum()),
                "nonresponders": int((part["y_true"] == 0).sum()),
                "unknown": int(part["y_true"].isna().sum()),
            }
        )
    rows.append({"cohort": "excluded", "treatment": "", "evaluation": "", "n": len(excluded), "responders": "",
                 "nonresponders": "", "unknown": ""})  # fmt: skip
    return rows


def _curves(predictions: pd.DataFrame, metrics: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Predictions with an outcome per evaluation set of the metrics table (cohorts included)."""
    known = predictions[predictions["y_true"].notna()]
    sets = {}
    for name in metrics["evaluation"]:
        kind, _, cohort = name.partition(":")
        part = known[known["evaluation"] == kind]
        if cohort:
            part = part[part["cohort"] == cohort]
        if len(part):
            sets[name] = part
    return sets


def _confusion_figure(sets: dict[str, pd.DataFrame]) -> str:
    fig, axes = plt.subplots(1, len(sets), figsize=(2.6 * len(sets), 2.8), squeeze=False)
    with closed_on_error(fig):
        for ax, (name, part) in zip(axes[0], sets.items(), strict=True):
            y, pred = part["y_true"].astype(int).to_numpy(), part["y_pred"].astype(int).to_numpy()
            counts = np.array([[np.sum((y == t) & (pred == p)) for p in (0, 1)] for t in (0, 1)])
            ax.imshow(counts, cmap="Blues", vmin=0)
            for (t, p), value in np.ndenumerate(counts):
                ax.text(p, t, str(value), ha="center", va="center", fontsize=12,
                        color="white" if value > counts.max() / 2 else "black")  # fmt: skip
            ax.set(
                xticks=[0, 1],
                yticks=[0, 1],
                xticklabels=["non-resp.", "resp."],
                yticklabels=["non-resp.", "resp."],
            )
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("observed", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_title(_label(name), fontsize=8)
        fig.tight_layout()
    return figure_to_data_uri(fig)


def _calibration_figure(sets: dict[str, pd.DataFrame], n_bins: int = 5) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    with closed_on_error(fig):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
        for name, part in sets.items():
            if ":" in name or len(part) < 2 * n_bins:
                continue
            p = part["probability"].to_numpy(dtype=float)
            y = part["y_true"].to_numpy(dtype=float)
            edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
            bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
            mean_p = [p[bins == b].mean() for b in range(len(edges) - 1) if np.any(bins == b)]
            mean_y = [y[bins == b].mean() for b in range(len(edges) - 1) if np.any(bins == b)]
            ax.plot(mean_p, mean_y, marker="o", linewidth=1.5, label=f"{_label(name)} (n={len(part)})")
        reliability_axes(ax)
        fig.tight_layout()
    return figure_to_data_uri(fig)


def _null_figures(null: pd.DataFrame, metrics: pd.DataFrame) -> list[dict]:
    """Histograms of the retrained nulls: CV (its p-values) and external/control (``*_retrained``)."""
    figures = []
    if null.empty:
        return figures
    for record in metrics.to_dict("records"):
        name = record["evaluation"]
        suffix = "" if name == "cv" else "_retrained"
        for stat, label, p_column in (
            ("balanced_accuracy", "balanced accuracy", "p_value"),
            ("auc", "AUC", "auc_p_value"),
        ):
            key = f"{name}_{stat}"
            observed = record.get(stat)
            if key not in null or observed is None or not np.isfinite(observed):
                continue
            p_value = record.get(p_column + suffix)
            uri = null_distribution_figure(
                null[key].dropna().to_numpy(), float(observed), label=label,
                p_value=float(p_value) if p_value is not None and np.isfinite(p_value) else None,
            )  # fmt: skip
            title = f"{_label(name)}: {label}" + (
                " (null: model retrained on permuted discovery labels)" if suffix else ""
            )
            figures.append({"title": title, "uri": uri})
    return figures


def _specificity_figure(metrics: pd.DataFrame) -> str | None:
    """BAC and AUC of the ketamine external and saline control sets with intervals, and the test."""
    table = metrics.set_index("evaluation")
    if not {"external", "control", "specificity"} <= set(table.index):
        return None
    test = table.loc["specificity"]
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    with closed_on_error(fig):
        for ax, (stat, label, p_column) in zip(
            axes,
            (("balanced_accuracy", "balanced accuracy", "p_value"), ("auc", "AUC", "auc_p_value")),
            strict=True,
        ):
            values = [table.loc[n, stat] for n in ("external", "control")]
            low = [table.loc[n, f"{stat}_ci_low"] for n in ("external", "control")]
            high = [table.loc[n, f"{stat}_ci_high"] for n in ("external", "control")]
            errors = np.abs(np.array([np.subtract(values, low), np.subtract(high, values)]))
            ax.bar([0, 1], values, yerr=errors, color=["#d32f2f", "#90a4ae"], capsize=4)
            ax.axhline(0.5, color="0.4", linestyle="--", linewidth=1)
            ax.set(xticks=[0, 1], xticklabels=["ketamine\n(external)", "saline\n(control)"], ylim=(0, 1))
            ax.set_ylabel(label)
            ax.set_title(
                f"difference {test[stat]:+.3f} [{test[f'{stat}_ci_low']:+.2f}, {test[f'{stat}_ci_high']:+.2f}]"
                f"\npermutation p = {test[p_column]:.3g}",
                fontsize=8,
            )
        fig.tight_layout()
    return figure_to_data_uri(fig)


_INFERENCE_TEXT = (
    "External and control sets were tested against the usual null for a frozen model: the final "
    "model's predictions were kept and each set's outcome labels were permuted ({n} permutations, "
    "balanced accuracy); the AUC, computed from the decision values, was tested with the one-sided "
    "Mann-Whitney U test. Treatment specificity was tested as the difference in balanced accuracy and "
    "AUC between the ketamine external set and the saline control set, with 95 % intervals from a "
    "bootstrap resampling each set and a permutation p-value from shuffling the treatment labels "
    "across the two sets ({n} permutations). Probabilities are Platt-scaled decision values (slope "
    "constrained to be non-negative); predictions are decision > 0."
)


def _methods(settings: GroupSettings, result: dict) -> tuple[str, list]:
    bryant = REFERENCES["bryant2026"]
    card = result["card"]
    protocol = card.get("protocol", {})
    inference = _INFERENCE_TEXT.format(n=settings.n_permutations)
    if result["mode"] == "apply":
        text = (
            f"A model trained elsewhere ({card.get('classifier')}, {card.get('features')} features on the "
            f"{card.get('atlas')} atlas, trained on {card.get('training', {}).get('n')} participants) was "
            "applied to this dataset after checking that its features and covariates match; its file was "
            "verified against the SHA-256 recorded in its model card and loaded with an allowlist of object "
            f"types. Response was defined with the model's threshold ({result.get('response_threshold')}). "
            "Ketamine-treated participants form the external sets (pooled and per cohort), saline-treated "
            f"ones the control set. {inference} The approach follows Bryant et al. [1]."
        )
        return text, [bryant]
    covariates = ", ".join(c.upper() if c == "tiv" else c for c in card.get("covariates", [])) or "none"
    features = (
        f"regional grey-matter (GM) volumes of the {card.get('atlas')} atlas divided by total intracranial "
        "volume (TIV)"
        if card.get("features") == "roi"
        else "Jacobian-modulated GM maps in template space averaged over 4 mm blocks inside a GM mask"
    )
    within_site = str(result["metrics"].set_index("evaluation").get("null", pd.Series()).get("cv", ""))
    blocks = " within each discovery site (exchangeability blocks)" if "within site" in within_site else ""
    text = (
        f"Following Bryant et al. [1], ketamine response (a MADRS reduction of at least "
        f"{100 * settings.threshold:.0f} % 24 h after infusion) was predicted from {features}. "
        f"Covariates ({covariates}) were regressed out of every feature and the features were standardised "
        "with coefficients estimated on the training rows of every inner and outer fold only (in ketabids' "
        "numpy cross-validation engine, which computes each fold's kernel once; the saved model is a "
        "scikit-learn pipeline doing the same), before a "
        f"{_CLASSIFIER_TEXT.get(card.get('classifier'), card.get('classifier'))} with class-balanced weights. The discovery cohort was "
        f"evaluated by {protocol.get('cv_repeats')} repeats of {protocol.get('outer_folds')}-fold stratified "
        f"nested cross-validation; C was chosen from {list(protocol.get('c_grid', []))} by "
        f"{protocol.get('inner_folds')}-fold inner cross-validation maximising balanced accuracy, and "
        "out-of-fold decision values were averaged over repeats (metrics and AUC are computed from them). "
        "Cross-validation intervals use the corrected resampled t of Nadeau and Bengio over the outer "
        "folds of all repeats (out-of-fold predictions are not independent), centred at the estimate. "
        "The final model, tuned the same way on the whole discovery cohort, was applied to the "
        "external ketamine cohorts and to the saline-treated control cohort. Cross-validation "
        f"significance was assessed with {settings.n_permutations} permutations in which the discovery "
        f"labels were shuffled{blocks} and the whole procedure was rerun; the permuted final models also give "
        "a second, 'retrained' null for the external and control sets (columns *_retrained). "
        f"{inference} Intervals of the external and control sets are 95 % percentile bootstrap "
        "intervals over participants."
    )
    return text, [bryant]


def write_group_report(
    path: Path, *, settings: GroupSettings, inputs: GroupInputs, result: dict, weight_map: Path | None
) -> Path:
    """Render the group report into ``path``."""
    predictions, metrics, weights = result["predictions"], result["metrics"], result["weights"]
    sets = _curves(predictions, metrics)
    roc = roc_figure(
        {_label(n): (p["y_true"].astype(int).to_numpy(), p["decision"].to_numpy()) for n, p in sets.items()}
    )
    column = "weight" if weights["weight"].notna().any() else "pattern"
    top = weights.dropna(subset=[column]).head(20)
    methods_text, references = _methods(settings, result)
    settings_rows = {k: _format(v) for k, v in asdict(settings).items() if k != "columns"}
    settings_rows.update({f"column: {k}": v for k, v in asdict(settings.columns).items()})
    context = {
        "mode": result["mode"],
        "cohorts": _cohort_rows(inputs, result["excluded"]),
        "metrics": _metrics_rows(metrics),
        "metric_columns": _METRIC_COLUMNS,
        "roc": roc,
        "confusion": _confusion_figure(sets) if sets else None,
        "calibration": _calibration_figure(sets) if sets else None,
        "nulls": _null_figures(result["null"], metrics),
        "specificity": _specificity_figure(metrics),
        "notes": result.get("notes", []),
        "null_rows": [
            {"name": _label(r["evaluation"]), "null": r["null"]}
            for r in metrics.to_dict("records")
            if isinstance(r.get("null"), str)
        ],
        "weight_bars": weight_bars(dict(zip(top["feature"], top[column], strict=True)), xlabel=column),
        "weight_map": stat_mosaic(weight_map, colorbar_label=f"{column} (red: response)")
        if weight_map
        else None,
        "weights": [{k: _format(v) for k, v in row.items()} for row in top.to_dict("records")],
        "weight_columns": list(top.columns),
        "excluded": [
            {k: _format(v) for k, v in row.items()} for row in result["excluded"].to_dict("records")
        ],
        "settings": settings_rows,
        "software": software_versions(),
        "methods": methods_text,
        "references": references,
        "card": result["card"],
        "recalibration": recalibration_context(result.get("recalibration")),
    }
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = environment.from_string(_TEMPLATE.read_text()).render(**context)
    return write_text_atomic(page, path)
