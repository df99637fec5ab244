"""Scaling of the group level's training: wall time against workers and against participants.

Runs the learning core of the group level (the code ``ketabids ... group`` runs between reading
the tables and writing the outputs) on simulated participant tables (table mode: half of the
participants form the discovery cohort, a quarter two external ketamine cohorts, a quarter the
saline controls, 121 neuromorphometrics GM regions), and prints the time of each phase:

* start: connecting to the backend (loky: nothing; dask: starting the local cluster, or
  connecting to ``--dask-scheduler``), plus stopping it at the end;
* prepare: the label-free kernels of every inner and outer split;
* cv: the observed repeated nested CV;
* permutations: the permutation null (each reruns the whole nested CV and the final model).

``workers`` mode: the paper's CV protocol (10 x 10-fold, 5 inner folds, 5 values of C) on 200
participants with ``--n-permutations`` permutations, for every backend and worker count;
extrapolated to the paper's 1000 permutations from the measured time per permutation.

``participants`` mode: one repeat (``--cv-repeats``) of the paper's 10-fold outer, 5-fold inner
CV and a few permutations at each cohort size on one worker (so that this process's CPU time is
the work done), extrapolated linearly to 10 repeats and 1000 permutations (a slight
overestimate: each permutation's final model does not grow with the repeats); the memory of
the precomputed kernels is printed too (it grows as n squared and is held for every split).
A Dask cluster with a single worker thread runs joblib's tasks in the calling process
(joblib's shortcut for one job), like loky with one worker.

    python benchmarks/bench_scale.py workers [--workers 1 2] [--backends loky dask] [--n-permutations 40]
    python benchmarks/bench_scale.py participants [--sizes 100 200 1000] [--n-permutations 4]
    # --sizes 5000: one permutation costs ~650 CPU-s per repeat there (README), so hours
    # an existing Dask cluster instead of a local one:
    python benchmarks/bench_scale.py workers --backends dask --dask-scheduler tcp://host:8786
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from joblib.externals.loky import get_reusable_executor

from ketabids.learning import cohorts
from ketabids.learning.backends import parallel_workers
from ketabids.learning.engine import Data, Protocol
from ketabids.learning.inputs import load_inputs
from ketabids.learning.permutation import Analysis, cross_validate, null_distribution, prepare_analysis
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables

PAPER = Protocol()  # 10 x 10-fold outer, 5-fold inner, 5 values of C
PAPER_PERMUTATIONS = 1000


@dataclass
class Cohort:
    data: Data
    rows: np.ndarray
    y: np.ndarray
    apply_sets: dict[str, np.ndarray]
    load_s: float


def make_cohort(n: int, seed: int, workdir: Path) -> Cohort:
    """Write the tables of ``n`` simulated participants and read them as the group level does."""
    quarter = n // 4
    design = simulate_cohort(
        n_discovery=n - 2 * quarter,
        n_external=(quarter - quarter // 2, quarter // 2),
        n_saline=quarter,
        effect_size=1.0,
        seed=seed,
    )
    root = workdir / f"n{n}"
    write_tables(design, root / "bids", root / "out", seed=seed)
    start = time.perf_counter()
    inputs = load_inputs(GroupSettings(bids_dir=root / "bids", output_dir=root / "out", random_seed=seed))
    load_s = time.perf_counter() - start
    table = inputs.table
    evaluation = table["evaluation"].to_numpy()
    rows = np.flatnonzero((evaluation == cohorts.ROLE_TRAIN) & table["y_true"].notna().to_numpy())
    apply_sets = {
        name: np.flatnonzero(evaluation == name) for name in (cohorts.ROLE_EXTERNAL, cohorts.ROLE_CONTROL)
    }
    data = Data(features=inputs.features.to_numpy(float), covariates=inputs.covariates.to_numpy(float))
    return Cohort(data, rows, table["y_true"].to_numpy(float), apply_sets, load_s)


def kernel_gb(analysis: Analysis) -> float:
    """Memory of the precomputed kernels held for every split."""
    blocks = [block for item in [*analysis.cv, analysis.final] for block in [*item.inner, item.outer]]
    return sum(b.train.nbytes + sum(o.nbytes for o in b.others) for b in blocks) / 1024**3


def cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children (loky or local Dask workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(cohort: Cohort, protocol: Protocol, n_permutations: int, backend: str, workers: int,
            scheduler: str | None, seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Wall (and this process's CPU) seconds of each phase."""
    get_reusable_executor().shutdown(wait=True)  # every run starts its loky workers, as a new command does
    cpu_start = cpu_seconds()
    marks = [(time.perf_counter(), time.process_time())]
    with parallel_workers(backend, workers, scheduler) as n_workers:
        marks.append((time.perf_counter(), time.process_time()))
        analysis = prepare_analysis(
            cohort.data, cohort.rows, cohort.y, cohort.apply_sets, protocol, seed, n_workers
        )
        marks.append((time.perf_counter(), time.process_time()))
        cross_validate(analysis, cohort.y, protocol, n_workers)
        marks.append((time.perf_counter(), time.process_time()))
        null_distribution(analysis, cohort.y, protocol, n_permutations, seed, n_workers)
        marks.append((time.perf_counter(), time.process_time()))
    marks.append((time.perf_counter(), time.process_time()))
    get_reusable_executor().shutdown(wait=True)  # reap the loky workers so that their CPU time counts
    total_cpu = cpu_seconds() - cpu_start
    wall = np.diff([m[0] for m in marks])
    cpu = np.diff([m[1] for m in marks])
    names = ["start", "prepare", "cv", "permutations"]
    out = {name: wall[i] for i, name in enumerate(names)}
    out["start"] += wall[4]  # closing the cluster
    out.update({f"{name}_cpu": cpu[i] for i, name in enumerate(names)})
    out["cpu"] = total_cpu
    out["workers"] = n_workers
    out["kernel_gb"] = kernel_gb(analysis)
    return out


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def workers_mode(args: argparse.Namespace, workdir: Path) -> None:
    cohort = make_cohort(200, args.seed, workdir)
    print(f"200 participants (discovery n = {cohort.rows.size}), 121 ROIs, 10 x 10-fold nested CV, "
          f"{args.n_permutations} permutations; extrapolated to {PAPER_PERMUTATIONS} permutations")  # fmt: skip
    print("backend  workers  start_s  prepare_s  cv_s  perm_s  s_per_perm  paper_est_s  cpu_s  load_before")
    for backend in args.backends:
        for workers in args.workers:
            before = load()
            t = measure(cohort, PAPER, args.n_permutations, backend, workers, args.dask_scheduler, args.seed)
            per = t["permutations"] / args.n_permutations
            paper = t["start"] + t["prepare"] + t["cv"] + per * PAPER_PERMUTATIONS
            print(f"{backend:7s}  {t['workers']:7d}  {t['start']:7.1f}  {t['prepare']:9.1f}  {t['cv']:4.1f}  "
                  f"{t['permutations']:6.1f}  {per:10.3f}  {paper:11.0f}  {t['cpu']:5.0f}  {before}", flush=True)  # fmt: skip


def participants_mode(args: argparse.Namespace, workdir: Path) -> None:
    protocol = replace(PAPER, cv_repeats=args.cv_repeats)
    scale = PAPER.cv_repeats / args.cv_repeats
    print(f"{args.cv_repeats} x 10-fold nested CV (5 inner folds, 5 C), {args.n_permutations} permutations, "
          f"loky, 1 worker; paper_est: x{scale:g} for 10 repeats, {PAPER_PERMUTATIONS} permutations")  # fmt: skip
    print("n  discovery  load_tables_s  prepare_s  cv_s  s_per_perm  cpu_per_perm  kernels_MB  "
          "paper_est_cpu_s  paper_kernels_GB  load_before")  # fmt: skip
    for n in args.sizes:
        cohort = make_cohort(n, args.seed, workdir)
        before = load()
        t = measure(cohort, protocol, args.n_permutations, "loky", 1, None, args.seed)
        per, per_cpu = t["permutations"] / args.n_permutations, t["permutations_cpu"] / args.n_permutations
        paper = scale * (t["prepare_cpu"] + t["cv_cpu"] + per_cpu * PAPER_PERMUTATIONS)
        print(f"{n:5d}  {cohort.rows.size:9d}  {cohort.load_s:13.1f}  {t['prepare']:9.1f}  {t['cv']:5.1f}  "
              f"{per:10.2f}  {per_cpu:12.2f}  {1024 * t['kernel_gb']:10.1f}  {paper:15.0f}  "
              f"{scale * t['kernel_gb']:16.2f}  {before}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["workers", "participants"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (workers mode)")
    parser.add_argument("--backends", nargs="+", choices=["loky", "dask"], default=["loky", "dask"])
    parser.add_argument("--dask-scheduler", help="an existing scheduler (default: a local cluster)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 1000])
    parser.add_argument("--cv-repeats", type=int, default=1, help="CV repeats (participants mode)")
    parser.add_argument("--n-permutations", type=int, help="default: 40 (workers), 4 (participants)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.n_permutations is None:
        args.n_permutations = 40 if args.mode == "workers" else 4
    print(f"cpus available: {len(os.sched_getaffinity(0))}, {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        (workers_mode if args.mode == "workers" else participants_mode)(args, Path(tmp))
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
