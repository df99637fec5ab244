"""Benchmark of the phantom simulator: speed and how exactly the truth follows the request.

Prints, per voxel size, the wall time of a new phantom (anatomy + scan) and of a rescan (cached
anatomy), the calibration accuracy of cohort-like regional changes (every GM region changed at
once, measured against the same anatomy without change), an injected 10 % regional loss, TIV
against head_scale**3 and the scan-rescan truth identity.

    python benchmarks/bench_simulate.py [--voxel-sizes 1 2 3] [--subjects 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.phantom import _head_model, _tissue_maps, make_phantom

LOSS_REGION = "Left_MFG_middle_frontal_gyrus"


def _volumes(phantom) -> pd.Series:
    return phantom.regional_gm.set_index("name")["gm_volume_mm3"]


def bench(voxel: float, n_subjects: int) -> None:
    design = simulate_cohort(n_discovery=n_subjects, n_external=(), n_saline=0, seed=11)
    size = (voxel,) * 3
    errors, new_times, rescan_times, large_errors = [], [], [], []
    for i, pid in enumerate(design.participants["participant_id"]):
        change = design.regional_change.loc[pid].to_dict()
        start = time.perf_counter()
        changed = make_phantom(voxel_size=size, anatomy_seed=100 + i, regional_change=change)
        new_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        rescan = make_phantom(
            voxel_size=size, anatomy_seed=100 + i, regional_change=change, acquisition_seed=9
        )
        rescan_times.append(time.perf_counter() - start)
        assert rescan.regional_gm.equals(changed.regional_gm)
        base = make_phantom(voxel_size=size, anatomy_seed=100 + i)
        achieved = _volumes(changed) / _volumes(base) - 1
        error = (achieved - design.regional_change.loc[pid]).abs()
        errors.append(error)
        large_errors.append(error[_volumes(base) > 5000])
    error, large = pd.concat(errors), pd.concat(large_errors)
    print(
        f"{voxel:g} mm (truth grid {min(voxel, 2.0):g} mm): new phantom {np.median(new_times):.2f} s, "
        f"rescan {np.median(rescan_times):.2f} s (median of {n_subjects})"
    )
    print(
        f"  cohort-like change (all {len(errors[0])} GM regions, sd ~6 %): |achieved - requested| "
        f"median {error.median():.4f}, 95th pct {error.quantile(0.95):.4f}, max {error.max():.4f}; "
        f"regions > 5 ml: 95th pct {large.quantile(0.95):.4f}, max {large.max():.4f}"
    )
    base = make_phantom(voxel_size=size, anatomy_seed=7)
    loss = make_phantom(voxel_size=size, anatomy_seed=7, regional_change={LOSS_REGION: -0.10})
    relative = _volumes(loss) / _volumes(base) - 1
    others = relative.drop(LOSS_REGION).abs()
    print(
        f"  injected -10 % in {LOSS_REGION}: {relative[LOSS_REGION]:+.4f}; other regions median "
        f"{others.median():.4f}, max {others.max():.4f} ({others.idxmax()})"
    )
    small = make_phantom(voxel_size=size, anatomy_seed=7, head_scale=0.9)
    large_head = make_phantom(voxel_size=size, anatomy_seed=7, head_scale=1.1)
    ratio = large_head.tiv_mm3 / small.tiv_mm3
    print(f"  TIV(1.1) / TIV(0.9) = {ratio:.4f} (head_scale**3 ratio {(1.1 / 0.9) ** 3:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voxel-sizes", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--subjects", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    _tissue_maps(1.0)
    _head_model()
    print(
        f"one-off set-up (source anatomy, tissue fractions, head model): {time.perf_counter() - start:.1f} s"
    )
    for voxel in args.voxel_sizes:
        bench(voxel, args.subjects)


if __name__ == "__main__":
    main()
