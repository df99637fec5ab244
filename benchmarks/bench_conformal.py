"""Coverage of the conformal prediction sets and flag rates of the applicability check.

Trains on a simulated discovery cohort (99 participants, site A) and applies the model to an
external ketamine cohort drawn like it (same site, ``--n-external`` participants): prints the
conformal coverage per outcome class and overall (nominal: 1 - alpha) and the fraction flagged
as not applicable (expected about 1 %). Then the external cohort's regional GM tables are
rewritten as by another scanner (+8 % GM and 5 % extra per-region measurement noise) and the
model is applied again: prints the fraction flagged (target: at least 95 %).

    python benchmarks/bench_conformal.py [--n-external 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ketabids.group import run_group_level
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables

PROTOCOL = {"cv_repeats": 2, "outer_folds": 5, "inner_folds": 3, "c_grid": (0.001, 0.01, 0.1, 1.0)}


def _predictions(settings: GroupSettings) -> pd.DataFrame:
    return pd.read_csv(settings.output_dir / "group" / "predictions.tsv", sep="\t", na_values=["n/a"])


def _coverage(table: pd.DataFrame) -> dict[str, float]:
    known = table[table["y_true"].notna()]
    sets = known["prediction_set"].fillna("").astype(str).str.split(",")
    hit = np.array([str(int(y)) in s for y, s in zip(known["y_true"], sets, strict=True)])
    y = known["y_true"].to_numpy()
    return {
        "overall": hit.mean(),
        "responders": hit[y == 1].mean(),
        "non-responders": hit[y == 0].mean(),
        "both labels": (known["prediction_set"] == "0,1").mean(),
    }


def _shift(output_dir: Path, participants: list[str], seed: int) -> None:
    """+8 % GM and 5 % extra per-region noise in the regional tables of ``participants``."""
    rng = np.random.default_rng(seed + 1)
    for participant in participants:
        for path in (output_dir / participant).glob("**/anat/*_seg-*_morph.tsv"):
            table = pd.read_csv(path, sep="\t")
            factor = 1.08 * (1 + rng.normal(0, 0.05, len(table)))
            table["gm_volume_mm3"] = np.round(table["gm_volume_mm3"] * factor, 1)
            table.to_csv(path, sep="\t", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-external", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        design = simulate_cohort(seed=args.seed, n_external=(args.n_external,), n_saline=0)
        external = design.participants["cohort"] != "discovery"
        design.participants.loc[external, "site"] = design.participants.loc[~external, "site"].iloc[0]
        write_tables(design, root / "bids", root / "out", seed=args.seed)
        settings = GroupSettings(
            bids_dir=root / "bids", output_dir=root / "out", random_seed=args.seed, n_permutations=0,
            conformal_alpha=args.alpha, **PROTOCOL,
        )  # fmt: skip
        start = time.perf_counter()
        run_group_level(settings)
        print(f"trained and applied in {time.perf_counter() - start:.0f} s")
        table = _predictions(settings)
        held = table[table["evaluation"] == "external"]
        print(
            f"nominal coverage {1 - args.alpha:.2f}; external cohort drawn like training (n = {len(held)}):"
        )
        for name, value in _coverage(held).items():
            print(f"  {name}: {value:.3f}")
        print(f"  flagged not applicable: {(~held['applicable'].astype(bool)).mean():.3f}")
        cv = table[table["evaluation"] == "cv"]
        print(f"training cohort (out-of-fold, n = {len(cv)}): coverage {_coverage(cv)['overall']:.3f}")

        model = root / "model"
        model.mkdir()
        for name in ("model.skops", "model.json"):
            (model / name).write_bytes((settings.output_dir / "group" / name).read_bytes())
        _shift(settings.output_dir, list(held["participant_id"]), args.seed)
        shifted = replace(settings, output_dir=settings.output_dir, model_file=model / "model.skops")
        run_group_level(shifted)
        applied = _predictions(shifted)
        moved = applied[applied["participant_id"].isin(held["participant_id"])]
        print(f"scanner shift (+8 % GM, 5 % extra noise; n = {len(moved)}):")
        print(f"  flagged not applicable: {(~moved['applicable'].astype(bool)).mean():.3f}")
        print(f"  coverage: {_coverage(moved)['overall']:.3f}")


if __name__ == "__main__":
    main()
