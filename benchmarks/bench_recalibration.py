"""Local recalibration (``--model FILE --recalibrate``): calibration and net benefit before and after.

Per seed, a model is trained on a simulated discovery cohort (99 participants, site A) and
shared with site B, whose outcomes differ from the training site's in one of three ways:

* ``none``: drawn like the training cohort (recalibration should change little);
* ``fewer-responders``: each responder is a non-responder with probability 0.5 (true
  probabilities halved: the shared model is too high);
* ``label-noise``: 30 % of outcomes flipped (a weaker relation: the shared model is too extreme).

Site B recalibrates on ``--n-local`` participants with outcomes; the script prints what the
group report shows (out-of-fold, on those participants) and, on ``--n-test`` further site-B
patients, the shared and the recalibrated model files loaded and applied (as ``--model`` does,
without writing reports): Brier score, calibration
intercept (ideal 0) and slope (ideal 1), AUC and net benefit at a few thresholds (treat-all for
reference), then the mean over seeds.

    python benchmarks/bench_recalibration.py [--seeds 0 1 2 3 4] [--n-local 100] [--n-test 500]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ketabids.group import run_group_level
from ketabids.learning.decision_curve import net_benefit
from ketabids.learning.inputs import load_inputs
from ketabids.learning.modelfile import load_model
from ketabids.learning.recalibration import CHILD_MODEL, calibration_metrics
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables

PROTOCOL = {"cv_repeats": 2, "outer_folds": 5, "inner_folds": 3, "c_grid": (0.001, 0.01, 0.1, 1.0)}
SCENARIOS = ("none", "fewer-responders", "label-noise")
THRESHOLDS = (0.3, 0.4, 0.5)
METRICS = ("brier", "calibration_intercept", "calibration_slope", "auc")


def _shifted(participants: pd.DataFrame, site_rows: pd.Index, scenario: str, seed: int) -> pd.DataFrame:
    """Participants with site B's outcomes changed by ``scenario`` (through MADRS at 24 h)."""
    rng = np.random.default_rng([seed, SCENARIOS.index(scenario)])
    table = participants.copy()
    responder = (table["madrs_24h"] <= table["madrs_pre"] / 2).to_numpy()
    flip = np.zeros(len(table), dtype=bool)
    site = table.index.isin(site_rows)
    if scenario == "fewer-responders":
        flip = site & responder & (rng.random(len(table)) < 0.5)
    elif scenario == "label-noise":
        flip = site & (rng.random(len(table)) < 0.3)
    table.loc[flip & responder, "madrs_24h"] = table.loc[flip & responder, "madrs_pre"]
    table.loc[flip & ~responder, "madrs_24h"] = 0
    return table


def _scores(model_file: Path, settings: GroupSettings) -> dict[str, float]:
    """Load a model file and score the participants of ``settings`` (as ``--model`` does, no reports)."""
    model, card = load_model(model_file)
    covariates = tuple(card["covariates"])
    inputs = load_inputs(
        settings,
        feature_kind=card["features"],
        atlas=card["atlas"],
        covariates=covariates,
        site_levels=card["training_sites"] if "site" in covariates else None,
        apply=True,
    )
    y = inputs.table["y_true"].to_numpy(dtype=int)
    p = model.predict_proba(inputs.matrix().to_numpy(dtype=float))[:, 1]
    scores = {k: np.nan if v is None else v for k, v in calibration_metrics(y, p).items()}
    scores.update({f"nb@{t}": net_benefit(y, p, t) for t in THRESHOLDS})
    scores.update({f"all@{t}": net_benefit(y, np.ones(y.size), t) for t in THRESHOLDS})
    return scores


def _run_seed(seed: int, n_local: int, n_test: int, root: Path) -> list[dict]:
    design = simulate_cohort(seed=seed, n_external=(n_local + n_test,), n_saline=0)
    bids, out = root / "bids", root / "out"
    write_tables(design, bids, out, seed=seed)
    participants = design.participants.set_index("participant_id")
    discovery = tuple(participants.index[participants["cohort"] == "discovery"])
    site = participants.index[participants["cohort"] != "discovery"]
    local, test = tuple(site[:n_local]), tuple(site[n_local:])
    base = GroupSettings(bids_dir=bids, output_dir=out, random_seed=seed, n_permutations=0, **PROTOCOL)
    run_group_level(replace(base, participant_labels=discovery))
    models = root / "models"
    models.mkdir(exist_ok=True)
    for name in ("model.skops", "model.json"):
        shutil.copy(out / "group" / name, models / name)
    rows = []
    for scenario in SCENARIOS:
        _shifted(participants, site, scenario, seed).reset_index().to_csv(
            bids / "participants.tsv", sep="\t", index=False
        )
        shared = replace(base, model_file=models / "model.skops")
        run_group_level(replace(shared, participant_labels=local, recalibrate=True))
        summary = json.loads((out / "group" / "recalibration.json").read_text())
        for name in (CHILD_MODEL, Path(CHILD_MODEL).with_suffix(".json").name):
            shutil.copy(out / "group" / name, models / name)
        row = {"seed": seed, "scenario": scenario}
        for stage in ("before", "after"):
            row.update(
                {
                    f"oof {stage} {m}": np.nan if summary[stage][m] is None else summary[stage][m]
                    for m in METRICS
                }
            )
        held_out = replace(base, participant_labels=test)
        row.update({f"test before {k}": v for k, v in _scores(models / "model.skops", held_out).items()})
        row.update({f"test after {k}": v for k, v in _scores(models / CHILD_MODEL, held_out).items()})
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    parts = [f"seed {row['seed']} {row['scenario']:>16}:"]
    for where in ("oof", "test"):
        for metric, short in zip(METRICS, ("Brier", "int", "slope", "AUC"), strict=True):
            parts.append(
                f"{where} {short} {row[f'{where} before {metric}']:.3f}->{row[f'{where} after {metric}']:.3f}"
            )
    for t in THRESHOLDS:
        parts.append(
            f"NB@{t} {row[f'test before nb@{t}']:+.3f}->{row[f'test after nb@{t}']:+.3f} (all {row[f'test before all@{t}']:+.3f})"
        )
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-local", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=500)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            rows += _run_seed(seed, args.n_local, args.n_test, Path(tmp))
    table = pd.DataFrame(rows)
    print(f"\nmean over seeds {args.seeds} (n local {args.n_local}, n test {args.n_test}):")
    means = table.drop(columns="seed").groupby("scenario", sort=False).mean()
    for scenario, mean in means.iterrows():
        print(_line({"seed": "all", "scenario": scenario, **mean.to_dict()}))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
