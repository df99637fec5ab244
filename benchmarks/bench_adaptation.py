"""Site adaptation (--adapt-site): BAC, Brier score and AUC before and after, with and without a scanner shift.

Per seed: a model is trained on a simulated discovery cohort (99 participants, site A) and
applied with ``--model`` to an external ketamine cohort from site B (``--n-site`` participants)
whose tables are either as simulated (site B differs from A only by the simulator's 1 %
per-region offsets) or rewritten as by another scanner (``shift_scanner``: +8 % GM fraction,
per-region gains with SD 5 %, 30 % wider spread around the median; another scanner per seed), once without and once with
``--adapt-site``. Prints each condition's mean and SD over the seeds.

Then the minimum number of participants: the shifted site's effect is estimated from random
subsets of n of its participants (the ComBat step of --adapt-site, which itself refuses fewer than 20) and
removed from all of them; prints BAC and Brier score per n.

    python benchmarks/bench_adaptation.py [--seeds 5] [--n-site 100]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

from ketabids.group import run_group_level
from ketabids.learning.inputs import load_inputs
from ketabids.learning.metrics import balanced_accuracy
from ketabids.learning.modelfile import load_model
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import shift_scanner, write_tables

PROTOCOL = {"cv_repeats": 2, "outer_folds": 5, "inner_folds": 3, "c_grid": (0.001, 0.01, 0.1, 1.0)}
SUBSET_SIZES = (5, 10, 20, 40)
SUBSET_DRAWS = 10


def _scores(y: np.ndarray, probability: np.ndarray, decision: np.ndarray) -> dict[str, float]:
    return {
        "BAC": float(balanced_accuracy(y, decision > 0)),
        "Brier": float(brier_score_loss(y, probability)),
        "AUC": float(roc_auc_score(y, decision)),
    }


def _applied(settings: GroupSettings) -> dict[str, float]:
    run_group_level(settings)
    table = pd.read_csv(settings.output_dir / "group" / "predictions.tsv", sep="\t")
    return _scores(table["y_true"].to_numpy(), table["probability"].to_numpy(), table["decision"].to_numpy())


def _site_copy(
    trained: GroupSettings, root: Path, participants: pd.DataFrame, shift: int | None
) -> GroupSettings:
    (root / "bids").mkdir(parents=True)
    shutil.copy(trained.bids_dir / "dataset_description.json", root / "bids")
    participants.to_csv(root / "bids" / "participants.tsv", sep="\t", index=False)
    for participant in participants["participant_id"]:
        shutil.copytree(trained.output_dir / participant, root / "out" / participant)
    if shift is not None:  # a different scanner per seed
        shift_scanner(root / "out", list(participants["participant_id"]), seed=shift)
    return replace(trained, bids_dir=root / "bids", output_dir=root / "out")


def _subset_sizes(settings: GroupSettings, seed: int) -> dict[int, dict[str, float]]:
    """BAC/Brier over the whole shifted site when its effect is estimated from n participants."""
    model, card = load_model(settings.model_file)
    inputs = load_inputs(
        settings, feature_kind=card["features"], atlas=card["atlas"], covariates=tuple(card["covariates"]),
        apply=True,
    )  # fmt: skip
    matrix = inputs.matrix().to_numpy(dtype=float)
    y = inputs.table["y_true"].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    out = {}
    for n in SUBSET_SIZES:
        draws = []
        for _ in range(SUBSET_DRAWS):
            fit_rows = np.zeros(len(matrix), dtype=bool)
            fit_rows[rng.choice(len(matrix), n, replace=False)] = True
            adapted, _ = model.adapt_site(matrix, fit_rows)
            draws.append(_scores(y, model.predict_proba(adapted)[:, 1], model.decision_function(adapted)))
        out[n] = pd.DataFrame(draws).mean().to_dict()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-site", type=int, default=100)
    args = parser.parse_args()
    rows, sizes = [], []
    start = time.perf_counter()
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            design = simulate_cohort(n_discovery=99, n_external=(args.n_site,), n_saline=0, seed=seed)
            write_tables(design, root / "bids", root / "out", seed=seed)
            trained = GroupSettings(
                bids_dir=root / "bids",
                output_dir=root / "out",
                random_seed=seed,
                n_permutations=0,
                **PROTOCOL,
            )
            run_group_level(trained)
            (root / "model").mkdir()
            for name in ("model.skops", "model.json"):
                shutil.copy(trained.output_dir / "group" / name, root / "model" / name)
            trained = replace(trained, model_file=root / "model" / "model.skops")
            site = design.participants[design.participants["site"] == "siteB"]
            for shift in (False, True):
                settings = _site_copy(trained, root / f"shift-{shift}", site, seed if shift else None)
                for adapt in (False, True):
                    scores = _applied(replace(settings, adapt_site=adapt))
                    rows.append({"seed": seed, "shift": shift, "adapt": adapt, **scores})
                if shift:
                    for n, scores in _subset_sizes(settings, seed).items():
                        sizes.append({"seed": seed, "n": n, **scores})
            print(pd.DataFrame(rows[-4:]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    print(f"{args.seeds} seeds, site B n = {args.n_site}, {time.perf_counter() - start:.0f} s")
    print("scanner shift  --adapt-site   BAC            Brier          AUC")
    for (shift, adapt), group in table.groupby(["shift", "adapt"]):
        cells = "  ".join(f"{group[m].mean():.3f} ± {group[m].std():.3f}" for m in ("BAC", "Brier", "AUC"))
        print(f"{'yes' if shift else 'no':<14} {'yes' if adapt else 'no':<12}  {cells}")
    print(f"shifted site, its effect estimated from n participants ({SUBSET_DRAWS} draws per seed):")
    for n, group in pd.DataFrame(sizes).groupby("n"):
        print(f"  n = {n:<3}  BAC {group['BAC'].mean():.3f}  Brier {group['Brier'].mean():.3f}")


if __name__ == "__main__":
    main()
