"""Accuracy and speed of the participant level on 1 mm whole-head phantoms with known truth.

Subjects: A (anatomy 1), A's rescan (new pose, FOV, noise, bias), A with a 10 % GM loss in one
region (``--region``), and B, C (other anatomies). Prints per subject: brain-mask Dice, GM Dice,
regional r with truth, wall time and peak memory; then the recovered loss and scan-rescan
agreement. Each subject runs in its own process (Linear plugin, ``--threads`` ITK threads).

    python benchmarks/bench_participant.py --work /tmp/bench [--voxel 1.0] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.processing import resample_from_to

SUBJECTS = {  # label: (anatomy_seed, acquisition_seed, regional loss?)
    "A": (1, 11, False),
    "Aloss": (1, 13, True),
    "Arescan": (1, 12, False),
    "B": (2, 21, False),
    "C": (3, 31, False),
}

RUN_ONE = """
import sys
from pathlib import Path
from ketabids.bids import T1wInput
from ketabids.participant import run_participant_level
from ketabids.settings import ParticipantSettings
bids, out, work, label, threads = sys.argv[1:6]
path = Path(bids) / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
settings = ParticipantSettings(bids_dir=Path(bids), output_dir=Path(out), work_dir=Path(work),
    participant_labels=(label,), nprocs=1, omp_nthreads=int(threads))
failures = run_participant_level(settings, [T1wInput(label, None, path, (path,))])
sys.exit(1 if failures else 0)
"""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def make_dataset(bids: Path, voxel: float, region: str, labels: list[str]) -> dict:
    from ketabids.simulate.phantom import make_phantom

    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.10.0"}))
    phantoms = {}
    for label in labels:
        anatomy, acquisition, loss = SUBJECTS[label]
        phantom = make_phantom(
            anatomy_seed=anatomy,
            acquisition_seed=acquisition,
            voxel_size=(voxel,) * 3,
            regional_change={region: -0.10} if loss else None,
        )
        folder = bids / f"sub-{label}" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        phantom.t1w.to_filename(folder / f"sub-{label}_T1w.nii.gz")
        phantoms[label] = phantom
    return phantoms


def evaluate(phantom, anat: Path) -> dict:
    def load(pattern: str) -> nib.Nifti1Image:
        return nib.load(next(anat.glob(pattern)))

    mask = load("*desc-brain_mask.nii.gz")
    gm = load("*label-GM_probseg.nii.gz")
    dseg = load("*_dseg.nii.gz").get_fdata()
    truth_mask = resample_from_to(phantom.brain_mask, mask, order=1).get_fdata() >= 0.5
    tissues = np.stack(
        [resample_from_to(getattr(phantom, t), gm, order=1).get_fdata() for t in ("gm", "wm", "csf")]
    )
    truth_gm = (tissues.argmax(0) == 0) & (tissues.sum(0) >= 0.5)
    regional = pd.read_csv(next(anat.glob("*_seg-*_morph.tsv")), sep="\t")
    merged = phantom.regional_gm.merge(regional, on="index", suffixes=("_true", "_est"))
    return {
        "mask_dice": dice(truth_mask, mask.get_fdata() > 0),
        "gm_dice": dice(truth_gm, dseg == 1),
        "regional_r": float(np.corrcoef(merged["gm_volume_mm3_true"], merged["gm_volume_mm3_est"])[0, 1]),
        "regional": merged.set_index("name_true")[["gm_volume_mm3_true", "gm_volume_mm3_est"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--voxel", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--region", default="Left_MFG_middle_frontal_gyrus")
    parser.add_argument("--subjects", nargs="+", choices=list(SUBJECTS), default=list(SUBJECTS))
    args = parser.parse_args()
    bids, out, work = args.work / "bids", args.work / "out", args.work / "work"
    phantoms = make_dataset(bids, args.voxel, args.region, args.subjects)
    results = {}
    for label in args.subjects:
        start = time.time()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cmd = [sys.executable, "-c", RUN_ONE, str(bids), str(out), str(work), label, str(args.threads)]
        status = subprocess.run(cmd, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.time() - start
        if status.returncode != 0:
            print(f"sub-{label}: FAILED\n{status.stderr[-2000:]}")
            continue
        result = evaluate(phantoms[label], out / f"sub-{label}" / "anat")
        result.update(
            wall_s=wall, cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        )
        result["peak_gb"] = after.ru_maxrss / 1024**2
        results[label] = result
        print(
            f"sub-{label}: mask Dice {result['mask_dice']:.3f}  GM Dice {result['gm_dice']:.3f}  "
            f"regional r {result['regional_r']:.3f}  wall {wall:.0f} s  CPU {result['cpu_s']:.0f} s  "
            f"peak RSS (max over runs so far) {result['peak_gb']:.2f} GB",
            flush=True,
        )
    if {"A", "Aloss"} <= set(results):
        base, loss = results["A"]["regional"], results["Aloss"]["regional"]
        true_change = (
            loss.loc[args.region, "gm_volume_mm3_true"] / base.loc[args.region, "gm_volume_mm3_true"] - 1
        )
        est_change = (
            loss.loc[args.region, "gm_volume_mm3_est"] / base.loc[args.region, "gm_volume_mm3_est"] - 1
        )
        print(
            f"injected loss in {args.region}: truth {100 * true_change:.1f} %, measured {100 * est_change:.1f} %"
        )
    if {"A", "Arescan"} <= set(results):
        a, b = (
            results["A"]["regional"]["gm_volume_mm3_est"],
            results["Arescan"]["regional"]["gm_volume_mm3_est"],
        )
        keep = (a + b) / 2 > 100
        diff = (200 * (a - b).abs() / (a + b))[keep]
        print(
            f"scan-rescan: median absolute regional GM difference {diff.median():.2f} % ({keep.sum()} regions)"
        )


if __name__ == "__main__":
    main()
