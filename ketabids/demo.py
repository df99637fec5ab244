"""End-to-end demo on synthetic data: both levels, and a model shared between two "sites".

``python -m ketabids.demo OUT_DIR`` plays two sites:

1. a *training site* that shares participant tables, not images (a paper-sized simulated
   cohort: discovery, two external ketamine cohorts, saline controls): the group level trains
   and validates the classifier and writes ``model.skops``;
2. an *imaging site* with a few whole-head T1w scans (synthetic phantoms with known truth):
   the participant level measures them, and the group level applies the training site's
   model to them with ``--model`` and writes one prediction report per patient
   (``group/sub-<label>_prediction.html``).

It prints where the reports are. Cross-validation and permutation settings are reduced so
that everything finishes in about 5 minutes on 2 cores; the reports state the settings used.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ketabids.cli import main as ketabids_main
from ketabids.resources import available_cpus

LOGGER = logging.getLogger("ketabids.demo")
# Reduced so that the whole demo stays within about 5 min on 2 cores (the paper: 10 x 10-fold, 1000).
GROUP_DEMO_OPTIONS = [
    "--cv-repeats",
    "2",
    "--outer-folds",
    "5",
    "--inner-folds",
    "3",
    "--n-permutations",
    "50",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ketabids.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="where the demo datasets and outputs are written")
    parser.add_argument("--n-images", type=int, default=2, help="scans at the imaging site (default: 2)")
    parser.add_argument(
        "--voxel-size", type=float, default=3.0, help="voxel size of the scans in mm (default: 3)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def simulate_sites(out_dir: Path, args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    """Write the training site's tables and the imaging site's BIDS dataset (once)."""
    from ketabids.simulate.cohort import simulate_cohort
    from ketabids.simulate.dataset import write_bids_dataset
    from ketabids.simulate.tables import write_tables

    train_bids, train_out = out_dir / "training-site" / "bids", out_dir / "training-site" / "derivatives"
    image_bids, image_out = out_dir / "imaging-site" / "bids", out_dir / "imaging-site" / "derivatives"
    if not (train_bids / "participants.tsv").is_file():
        LOGGER.info("simulating the training site's participant tables (paper-sized cohort)")
        write_tables(simulate_cohort(effect_size=2.0, seed=args.seed), train_bids, train_out, seed=args.seed)
    if not (image_bids / "participants.tsv").is_file():
        LOGGER.info("simulating %d whole-head T1w scans at the imaging site", args.n_images)
        design = simulate_cohort(n_discovery=args.n_images, n_external=(), n_saline=0, seed=args.seed + 1)
        write_bids_dataset(
            image_bids, design, voxel_size=args.voxel_size, seed=args.seed + 1, n_jobs=available_cpus()
        )
    return train_bids, train_out, image_bids, image_out


def summary(train_out: Path, image_out: Path, minutes: float) -> str:
    """The closing message: where the group, participant and per-patient reports are."""
    reports = sorted(image_out.glob("sub-*.html"))
    patients = sorted((image_out / "group").glob("sub-*_prediction.html"))
    lines = [
        f"\nketabids demo finished in {minutes:.1f} min. Open in a browser:",
        f"  training-site group report:   {train_out / 'group' / 'report.html'}",
        f"  imaging-site participant reports ({len(reports)}): {reports[0] if reports else 'none'} ...",
        f"  imaging-site predictions:     {image_out / 'group' / 'report.html'}",
        f"  imaging-site per-patient prediction reports ({len(patients)}):",
        *(f"    {path}" for path in patients),
    ]
    return "\n".join(lines)


def run_demo(argv: Sequence[str] | None = None) -> int:
    """Simulate both sites and run ketabids on them; return the first non-zero exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    start = time.monotonic()
    out_dir = args.out_dir.resolve()
    train_bids, train_out, image_bids, image_out = simulate_sites(out_dir, args)
    seed = ["--random-seed", str(args.seed)]
    model = train_out / "group" / "model.skops"
    steps = [
        ("training site: group level", [train_bids, train_out, "group", *GROUP_DEMO_OPTIONS, *seed]),
        ("imaging site: participant level", [image_bids, image_out, "participant", *seed]),
        ("imaging site: group level with --model", [image_bids, image_out, "group", "--model", model, *seed]),
    ]
    for title, argv_step in steps:
        argv_step = [str(a) for a in argv_step]
        LOGGER.info("%s: ketabids %s", title, " ".join(argv_step))
        code = ketabids_main(argv_step)
        if code != 0:
            LOGGER.error("%s exited with code %d", title, code)
            return code
    print(summary(train_out, image_out, (time.monotonic() - start) / 60))
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
