"""Reproducibility of the participant level: the same phantom run with several ``--omp-nthreads``.

Prints, for each run after the first, which outputs (images and ``*_morph.tsv``) are byte-identical
to the first run's, and the relative difference of the regional GM volumes and of TIV
(bar: byte-identical with one thread; regional volumes within 0.1 % with more threads).

    python benchmarks/bench_reproducibility.py --work /tmp/repro [--voxel 4.0] [--threads 1 1 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RUN_ONE = """
import sys, time
from pathlib import Path
from ketabids.bids import T1wInput
from ketabids.participant import run_participant_level
from ketabids.settings import ParticipantSettings
bids, root, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
path = bids / "sub-a" / "anat" / "sub-a_T1w.nii.gz"
settings = ParticipantSettings(bids_dir=bids, output_dir=root / "out", work_dir=root / "work",
    participant_labels=("a",), nprocs=1, omp_nthreads=threads)
sys.exit(1 if run_participant_level(settings, [T1wInput("a", None, path, (path,))]) else 0)
"""


def run(bids: Path, root: Path, threads: int) -> float:
    """One participant run in a fresh process (ITK reads its thread count once per process)."""
    start = time.time()
    args = [sys.executable, "-c", RUN_ONE, str(bids), str(root), str(threads)]
    if subprocess.run(args, check=False).returncode != 0:
        raise SystemExit(f"run with {threads} thread(s) failed; see {root / 'work'}")
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--voxel", type=float, default=4.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 1, 2])
    args = parser.parse_args()
    from ketabids.simulate.phantom import make_phantom

    bids = args.work / "bids"
    t1w = bids / "sub-a" / "anat" / "sub-a_T1w.nii.gz"
    t1w.parent.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "repro", "BIDSVersion": "1.10.0"}))
    make_phantom(anatomy_seed=4, acquisition_seed=5, voxel_size=(args.voxel,) * 3).t1w.to_filename(t1w)
    anats = []
    for i, threads in enumerate(args.threads):
        root = args.work / f"run{i}_threads{threads}"
        print(
            f"run {i}: {threads} thread(s), {run(bids, root, threads):.0f} s",
            flush=True,
        )
        anats.append(root / "out" / "sub-a" / "anat")
    first = anats[0]
    names = sorted(p.name for p in first.iterdir() if p.name.endswith((".nii.gz", "_morph.tsv")))
    regional0 = pd.read_csv(next(first.glob("*_seg-*_morph.tsv")), sep="\t")
    tiv0 = pd.read_csv(next(first.glob("*_desc-tissue_morph.tsv")), sep="\t")["tiv_mm3"].iloc[0]
    for i, anat in enumerate(anats[1:], start=1):
        digest = {n: hashlib.sha256((anat / n).read_bytes()).digest() for n in names}
        same = [n for n in names if digest[n] == hashlib.sha256((first / n).read_bytes()).digest()]
        regional = pd.read_csv(next(anat.glob("*_seg-*_morph.tsv")), sep="\t")
        gm = regional["tissue"] == "gm"
        ratio = regional.loc[gm, "gm_volume_mm3"].to_numpy() / regional0.loc[gm, "gm_volume_mm3"].to_numpy()
        diff = 100 * np.abs(ratio[np.isfinite(ratio)] - 1)
        tiv = pd.read_csv(next(anat.glob("*_desc-tissue_morph.tsv")), sep="\t")["tiv_mm3"].iloc[0]
        print(
            f"run {i} vs run 0: {len(same)}/{len(names)} outputs byte-identical; regional GM |diff| "
            f"median {np.median(diff):.4f} %, max {diff.max():.4f} %; TIV diff {100 * (tiv / tiv0 - 1):.4f} %"
        )
        for name in sorted(set(names) - set(same)):
            print(f"  differs: {name}")


if __name__ == "__main__":
    main()
