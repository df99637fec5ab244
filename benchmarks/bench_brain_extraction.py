"""Brain extraction (deepbet) on whole-head phantoms with neck.

For each phantom (anatomy seed, head scale, field of view reaching the neck) prints the Dice of
deepbet's mask against the phantom's truth intracranial mask, its volume against the truth, its
Dice with the 1-thread mask when run with ``--threads``, and the wall time (each run in its own
process, so the thread count applies).

    python benchmarks/bench_brain_extraction.py --work /tmp/bench_bet [--voxel 1.0] [--n 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

PHANTOMS = [  # anatomy seed, acquisition seed, head scale, FOV (LR, AP, SI) mm
    (1, 11, 0.90, (200.0, 250.0, 256.0)),
    (2, 21, 1.00, (190.0, 240.0, 220.0)),
    (3, 31, 0.95, (210.0, 256.0, 240.0)),
    (4, 41, 0.85, (190.0, 230.0, 256.0)),
    (5, 51, 1.05, (200.0, 250.0, 200.0)),
]

RUN_ONE = """
import sys
from ketabids.processing import brain
brain.deepbet_mask(*sys.argv[1:3])
"""


def make_phantoms(work: Path, voxel: float, n: int) -> list[Path]:
    """Write each phantom's RAS T1w and truth mask once; return the T1w paths."""
    from ketabids.processing.anat import reorient_to_ras
    from ketabids.simulate.phantom import make_phantom

    paths = []
    for anatomy, acquisition, scale, fov in PHANTOMS[:n]:
        stem = work / f"phantom{anatomy}_{voxel:g}mm"
        t1w = stem.with_name(stem.name + "_T1w.nii.gz")
        if not t1w.is_file():
            phantom = make_phantom(
                anatomy_seed=anatomy, acquisition_seed=acquisition, head_scale=scale, fov=fov,
                voxel_size=(voxel,) * 3,
            )  # fmt: skip
            raw = stem.with_name(stem.name + "_raw.nii.gz")
            phantom.t1w.to_filename(str(raw))
            reorient_to_ras(raw, t1w)
            phantom.brain_mask.to_filename(str(stem.with_name(stem.name + "_truth.nii.gz")))
        paths.append(t1w)
    return paths


def run(t1w: Path, out: Path, threads: int) -> float:
    """Run one brain extraction in its own process; return its wall time (s)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for variable in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[variable] = str(threads)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN_ONE, str(t1w), str(out)], check=True, env=env)
    return time.perf_counter() - start


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--voxel", type=float, default=1.0)
    parser.add_argument("--n", type=int, default=3, help=f"phantoms (at most {len(PHANTOMS)})")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print("phantom\tthreads\tdice\tvolume_L\ttruth_L\tvs_truth_%\tdice_vs_1thread\ttime_s", flush=True)
    for t1w in make_phantoms(args.work, args.voxel, args.n):
        name = t1w.name.replace("_T1w.nii.gz", "")
        truth_img = nib.load(str(t1w.with_name(name + "_truth.nii.gz")))
        single = None
        for threads in sorted({1, args.threads}):
            out = args.work / name / f"deepbet_{threads}" / "brain_mask.nii.gz"
            seconds = run(t1w, out, threads)
            mask_img = nib.load(str(out))
            mask = np.asanyarray(mask_img.dataobj) > 0
            truth = resample_from_to(truth_img, mask_img, order=1).get_fdata() >= 0.5
            voxel_mm3 = abs(np.linalg.det(mask_img.affine[:3, :3]))
            volume, truth_volume = mask.sum() * voxel_mm3 / 1e6, truth.sum() * voxel_mm3 / 1e6
            single = mask if single is None else single  # the 1-thread mask, to compare with more threads
            print(
                f"{name}\t{threads}\t{dice(mask, truth):.4f}\t{volume:.4f}\t{truth_volume:.4f}\t"
                f"{100 * (volume / truth_volume - 1):+.1f}\t{dice(mask, single):.4f}\t{seconds:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
