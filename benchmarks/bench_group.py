"""Benchmark of the group level with the paper's protocol on simulated participant tables.

Prints the wall time of ``run_group_level`` (10 x 10-fold nested CV with 5-fold inner tuning of
C, 1000 permutations of the whole procedure, external and saline validation, report) on 200
participants x 121 neuromorphometrics GM regions, and the accuracies against the simulated
truth (the Bayes-optimal balanced accuracy of the simulated effect).

    python benchmarks/bench_group.py [--n-permutations 1000] [--n-jobs 2] [--seeds 0]

With ``--null-check K`` it instead draws K pure-noise cohorts (no anatomy -> response effect)
and prints the nested-CV balanced accuracies and the distribution of their permutation
p-values, which must be close to uniform when nothing leaks.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from joblib.externals.loky import get_reusable_executor
from scipy import stats

from ketabids.group import run_group_level
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its terminated children (the joblib workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(seed: int, n_permutations: int, n_jobs: int, workdir: Path) -> dict:
    design = simulate_cohort(n_discovery=100, n_external=(26, 25), n_saline=49, effect_size=1.0, seed=seed)
    root = workdir / f"seed{seed}"
    write_tables(design, root / "bids", root / "out", seed=seed)
    settings = GroupSettings(
        bids_dir=root / "bids",
        output_dir=root / "out",
        n_permutations=n_permutations,
        n_jobs=n_jobs,
        random_seed=seed,
    )
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    run_group_level(settings)
    wall = time.perf_counter() - start
    get_reusable_executor().shutdown(wait=True)  # reap the workers so that their CPU time is counted
    cpu = _cpu_seconds() - cpu_start
    metrics = pd.read_csv(root / "out" / "group" / "metrics.tsv", sep="\t", na_values=["n/a"]).set_index(
        "evaluation"
    )
    return {
        "seed": seed,
        "wall_s": wall,
        "cpu_s": cpu,
        "best_bac": design.best_achievable_bac(),
        "metrics": metrics,
    }


def null_check(n_cohorts: int, n_permutations: int, n_jobs: int, workdir: Path) -> None:
    """Nested-CV BAC and permutation p-values on pure-noise cohorts (2 x 5-fold, 3 inner folds)."""
    accuracies, p_values = [], []
    start = time.perf_counter()
    for seed in range(n_cohorts):
        design = simulate_cohort(n_discovery=99, n_external=(), n_saline=0, effect_size=0.0, seed=1000 + seed)
        root = workdir / f"noise{seed}"
        write_tables(design, root / "bids", root / "out", seed=seed)
        settings = GroupSettings(
            bids_dir=root / "bids",
            output_dir=root / "out",
            cv_repeats=2,
            outer_folds=5,
            inner_folds=3,
            n_permutations=n_permutations,
            n_jobs=n_jobs,
            random_seed=seed,
        )
        run_group_level(settings)
        cv = pd.read_csv(root / "out" / "group" / "metrics.tsv", sep="\t", na_values=["n/a"]).iloc[0]
        accuracies.append(cv["balanced_accuracy"])
        p_values.append(cv["p_value"])
    print(f"{n_cohorts} pure-noise cohorts (n = 99), {n_permutations} permutations each: "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    print(f"  nested-CV BAC: mean {np.mean(accuracies):.3f}, sd {np.std(accuracies):.3f}")
    small = int(np.sum(np.array(p_values) <= 0.05))
    low, high = stats.binom.ppf([0.0005, 0.9995], n_cohorts, 0.05)
    print(f"  permutation p: mean {np.mean(p_values):.3f}, quartiles {np.round(np.quantile(p_values, [0.25, 0.5, 0.75]), 3)}, "
          f"p <= 0.05 in {small}/{n_cohorts} = {small / n_cohorts:.3f} (binomial 99.9 % interval at level 0.05: "
          f"{low:.0f}-{high:.0f}), KS test against uniform p = {stats.kstest(p_values, 'uniform').pvalue:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-permutations", type=int, default=1000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--null-check", type=int, default=0, metavar="K", help="run K pure-noise cohorts instead"
    )
    args = parser.parse_args()
    print(f"cpus available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.null_check:
            null_check(args.null_check, args.n_permutations, args.n_jobs, Path(tmp))
            return
        for seed in args.seeds:
            result = run(seed, args.n_permutations, args.n_jobs, Path(tmp))
            metrics = result["metrics"]
            print(
                f"seed {seed}: 200 participants x 121 ROIs, 10 x 10-fold nested CV, "
                f"{args.n_permutations} permutations, n_jobs={args.n_jobs}: wall {result['wall_s']:.1f} s, "
                f"CPU {result['cpu_s']:.1f} s (wall on {args.n_jobs} idle cores ~ {result['cpu_s'] / args.n_jobs:.1f} s)"
            )
            print(f"  best achievable BAC (simulated effect, measured tables): {result['best_bac']:.3f}")
            columns = [
                "n",
                "balanced_accuracy",
                "auc",
                "sensitivity",
                "specificity",
                "p_value",
                "auc_p_value",
                "p_value_retrained",
                "auc_p_value_retrained",
            ]
            print(metrics[[c for c in columns if c in metrics.columns]].round(3).to_string())
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
