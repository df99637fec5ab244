"""Coverage of the conformal prediction sets and flag rates of the applicability check.

For each seed: trains with the paper's protocol (10 x 10-fold nested CV) on a simulated
discovery cohort (``--n-discovery`` participants, site A) and applies the model to an external
ketamine cohort drawn like it (same site, ``--n-external`` participants): prints the conformal
coverage per outcome class and overall (nominal: 1 - alpha) and the fraction flagged as not
applicable (expected about 1 %). Then the external cohort's regional GM tables are rewritten as
by another scanner (+8 % GM and 5 % extra per-region measurement noise) and the model is applied
again: prints the fraction flagged (target: at least 95 %). Last, the mean and spread over seeds.

Coverage given one training cohort varies around its nominal level because the calibration set
is finite: with n_y calibration participants of a class, the class's coverage has a standard
deviation of about sqrt(alpha (1 - alpha) / n_y) (Vovk 2012, training-conditional validity); with
the binomial noise of the external cohort it gives the "expected spread" printed at the end.

    python benchmarks/bench_conformal.py [--seeds 0 1 2] [--n-discovery 99] [--n-external 1000]
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


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Train, apply in distribution, apply after a scanner shift; print and return the numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        design = simulate_cohort(
            seed=seed, n_discovery=args.n_discovery, n_external=(args.n_external,), n_saline=0
        )
        external = design.participants["cohort"] != "discovery"
        design.participants.loc[external, "site"] = design.participants.loc[~external, "site"].iloc[0]
        write_tables(design, root / "bids", root / "out", seed=seed)
        settings = GroupSettings(
            bids_dir=root / "bids", output_dir=root / "out", random_seed=seed, n_permutations=0,
            conformal_alpha=args.alpha, n_jobs=args.n_jobs,
        )  # fmt: skip
        start = time.perf_counter()
        run_group_level(settings)
        table = _predictions(settings)
        held = table[table["evaluation"] == "external"]
        cv = table[table["evaluation"] == "cv"]
        coverage = _coverage(held)
        result = {**coverage, "flagged": float((~held["applicable"].astype(bool)).mean())}
        result["n_calibration"] = np.bincount(cv["y_true"].astype(int), minlength=2).min()

        model = root / "model"
        model.mkdir()
        for name in ("model.skops", "model.json"):
            (model / name).write_bytes((settings.output_dir / "group" / name).read_bytes())
        _shift(settings.output_dir, list(held["participant_id"]), seed)
        run_group_level(replace(settings, model_file=model / "model.skops"))
        applied = _predictions(settings)
        moved = applied[applied["participant_id"].isin(held["participant_id"])]
        result["flagged_shifted"] = float((~moved["applicable"].astype(bool)).mean())
        elapsed = time.perf_counter() - start
    print(
        f"seed {seed}: coverage {coverage['overall']:.3f} (responders {coverage['responders']:.3f}, "
        f"non-responders {coverage['non-responders']:.3f}; set {{0,1}} for {coverage['both labels']:.3f}); "
        f"flagged {result['flagged']:.3f} in distribution, {result['flagged_shifted']:.3f} shifted "
        f"({elapsed:.0f} s)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-discovery", type=int, default=99)
    parser.add_argument("--n-external", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()
    print(
        f"nominal coverage {1 - args.alpha:.2f}; {args.n_discovery} discovery participants, "
        f"{args.n_external} external ones drawn like them (same site); paper protocol, no permutations"
    )
    results = pd.DataFrame([run_seed(seed, args) for seed in args.seeds])
    n_class = results["n_calibration"].mean()
    variance = args.alpha * (1 - args.alpha)
    expected = np.sqrt(variance / n_class / 2 + variance / args.n_external)  # calibration + test draws
    print(
        f"over {len(results)} seeds: coverage {results['overall'].mean():.3f} "
        f"(sd {results['overall'].std(ddof=1) if len(results) > 1 else float('nan'):.3f}; "
        f"expected spread from ~{n_class:.0f} calibration participants per class: {expected:.3f}), "
        f"flagged {results['flagged'].mean():.3f} in distribution, "
        f"{results['flagged_shifted'].mean():.3f} under the scanner shift"
    )


if __name__ == "__main__":
    main()
