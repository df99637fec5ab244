"""Participant throughput through Slurm against local MultiProc, on the same phantoms and CPUs.

Runs the participant level twice on N simulated phantoms, each time as a user would (a fresh
``ketabids`` process): locally with ``--nprocs CPUS`` (Nipype MultiProc) and with ``--slurm``
(a job array of one-CPU tasks, at most CPUS at once on the node). Prints the wall time and
participants per hour of each. Without ``SLURM_CONF`` in the environment it starts the private
single-node Slurm of the tests (``tests/slurm_cluster.py``, root only) with CPUS CPUs.

    python benchmarks/bench_slurm.py --work /tmp/bench_slurm [--n-phantoms 4] [--voxel 4.0] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CLI = "import sys; from ketabids.cli import main; sys.exit(main(sys.argv[1:]))"


def timed_run(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one ketabids command; exits if it fails."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"ketabids {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--n-phantoms", type=int, default=4)
    parser.add_argument("--voxel", type=float, default=4.0)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local run = concurrent Slurm tasks")
    parser.add_argument("--mem-gb", type=float, default=3.0, help="memory per Slurm task")
    args = parser.parse_args()
    from ketabids.simulate.cohort import simulate_cohort
    from ketabids.simulate.dataset import write_bids_dataset

    bids = args.work / "bids"
    design = simulate_cohort(n_discovery=args.n_phantoms, n_external=(), n_saline=0, seed=7)
    write_bids_dataset(bids, design, voxel_size=(args.voxel,) * 3, seed=7)
    cluster = None
    env = dict(os.environ)
    if "SLURM_CONF" not in env:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from slurm_cluster import SlurmCluster

        cluster = SlurmCluster(cpus=args.cpus, memory_mb=int(args.cpus * args.mem_gb * 1024) + 512).start()
        env = cluster.env
    common = [str(bids), "participant", "--skip-bids-validation", "--omp-nthreads", "1"]
    try:
        local = timed_run([common[0], str(args.work / "local"), *common[1:], "--nprocs", str(args.cpus)], env)
        slurm_args = ["--slurm", "--nprocs", "1", "--mem-gb", str(args.mem_gb), "--slurm-timeout", "7200"]
        slurm = timed_run([common[0], str(args.work / "slurm"), *common[1:], *slurm_args], env)
    finally:
        if cluster is not None:
            cluster.stop()
    n = args.n_phantoms
    print(f"{n} phantoms at {args.voxel} mm, {args.cpus} CPUs, --omp-nthreads 1")
    print(
        f"local MultiProc (--nprocs {args.cpus}): {local:.0f} s wall, {3600 * n / local:.1f} participants/hour"
    )
    print(
        f"Slurm job array ({args.cpus} one-CPU tasks at once): {slurm:.0f} s wall, {3600 * n / slurm:.1f} participants/hour"
    )


if __name__ == "__main__":
    main()
