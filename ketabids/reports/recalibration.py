"""The group report's recalibration section: reliability diagram, decision curve and their numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ketabids.reports.figures import closed_on_error, figure_to_data_uri, reliability_axes

TABLE_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6)  # net benefit rows shown in the report
_STYLE = {"before": ("#90a4ae", "shared model"), "after": ("#d32f2f", "recalibrated (out-of-fold)")}


def reliability_figure(summary: dict) -> str:
    """Observed response rate against mean predicted probability per quantile bin, before and after."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    with closed_on_error(fig):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
        for name, (color, label) in _STYLE.items():
            part = summary[name]
            ax.plot(
                part["predicted"],
                part["observed"],
                marker="o",
                color=color,
                label=f"{label}, Brier {part['brier']:.3f}",
            )
        reliability_axes(ax)
        fig.tight_layout()
    return figure_to_data_uri(fig)


def decision_curve_figure(curve: pd.DataFrame) -> str:
    """Net benefit against threshold probability: model before and after, treat all, treat none."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    with closed_on_error(fig):
        t = curve["threshold"].to_numpy()
        for name, (color, label) in _STYLE.items():
            ax.plot(t, curve[f"net_benefit_{name}"], color=color, linewidth=1.8, label=label)
        ax.plot(t, curve["net_benefit_treat_all"], color="0.3", linewidth=1, label="treat all")
        ax.plot(
            t, curve["net_benefit_treat_none"], color="0.3", linestyle=":", linewidth=1, label="treat none"
        )
        top = float(curve["net_benefit_treat_all"].max())
        ax.set(
            xlabel="threshold probability",
            ylabel="net benefit",
            xlim=(0, 1),
            ylim=(-0.05, max(top, 0.05) * 1.1),
        )
        ax.legend(fontsize=7, frameon=False, loc="upper right")
        fig.tight_layout()
    return figure_to_data_uri(fig)


def recalibration_context(recalibration: dict | None) -> dict | None:
    """Figures and tables of ``write_recalibration``'s result for the template (None without one)."""
    if recalibration is None:
        return None
    summary, curve = recalibration["summary"], recalibration["decision_curve"]
    rows = curve.set_index(curve["threshold"].round(2)).loc[list(TABLE_THRESHOLDS)]
    metrics = []
    for key, label in (
        ("brier", "Brier score (lower is better)"),
        ("calibration_intercept", "calibration intercept (ideal 0)"),
        ("calibration_slope", "calibration slope (ideal 1)"),
        ("auc", "AUC"),
    ):
        values = [summary[name][key] for name in ("before", "after")]
        metrics.append({"name": label, "values": ["n/a" if v is None else f"{v:.3f}" for v in values]})
    return {
        "summary": summary,
        "metrics": metrics,
        "net_benefit": [
            {
                "threshold": f"{t:.2f}",
                **{k: f"{rows.loc[t, f'net_benefit_{k}']:.3f}" for k in ("before", "after", "treat_all")},
            }
            for t in np.round(TABLE_THRESHOLDS, 2)
        ],
        "reliability": reliability_figure(summary),
        "decision_curve": decision_curve_figure(curve),
    }
