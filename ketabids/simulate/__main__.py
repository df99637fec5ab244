"""``python -m ketabids.simulate OUT_DIR``: write a simulated cohort as BIDS images or derivative tables."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ketabids.simulate",
        description=(
            "Simulate a ketamine cohort with known truth. 'images' writes a BIDS raw dataset of "
            "whole-head T1w phantoms (truth in OUT_DIR/sourcedata/truth); 'tables' writes "
            "participants.tsv and the participant-level derivative tables directly, without images."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out_dir", type=Path, help="BIDS dataset folder to create")
    parser.add_argument("--mode", choices=("images", "tables"), default="images", help="what to write")
    parser.add_argument("--n-discovery", type=int, default=99, help="discovery (training) cohort size")
    parser.add_argument(
        "--n-external", type=int, nargs="*", default=[26, 25], help="sizes of the external ketamine cohorts"
    )
    parser.add_argument("--n-saline", type=int, default=49, help="saline (control) cohort size")
    parser.add_argument("--atlas", default="neuromorphometrics", help="atlas of the regional GM changes")
    parser.add_argument("--effect-size", type=float, default=1.0, help="anatomy -> ketamine response effect")
    parser.add_argument(
        "--voxel-size", type=float, nargs="+", default=[1.0], help="voxel size in mm (1 or 3)"
    )
    parser.add_argument("--noise", type=float, default=0.03, help="Rician noise sd relative to WM")
    parser.add_argument("--bias", type=float, default=0.2, help="bias field amplitude (0.2 = +-20 %%)")
    parser.add_argument("--no-neck", action="store_true", help="heads without neck and shoulders")
    parser.add_argument("--sessions", nargs="*", default=[], help="session labels, e.g. pre post (rescans)")
    parser.add_argument("--runs", type=int, default=1, help="T1w runs (rescans) per session")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the cohort and the scans")
    parser.add_argument("--n-jobs", type=int, default=1, help="participants simulated in parallel")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="tables mode: derivative folder for the tables (default OUT_DIR-derivatives, beside OUT_DIR)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; returns the exit code."""
    args = build_parser().parse_args(argv)
    if len(args.voxel_size) not in (1, 3) or min(args.voxel_size) <= 0:
        print("error: --voxel-size takes one or three positive numbers", file=sys.stderr)
        return 64
    from ketabids.simulate.cohort import simulate_cohort

    start = time.monotonic()
    design = simulate_cohort(
        n_discovery=args.n_discovery,
        n_external=tuple(args.n_external),
        n_saline=args.n_saline,
        atlas=args.atlas,
        effect_size=args.effect_size,
        seed=args.seed,
    )
    if args.mode == "tables":
        from ketabids.simulate.tables import write_tables

        # beside the dataset, not inside it: the app never writes into its input dataset
        output_dir = args.output_dir or args.out_dir.parent / f"{args.out_dir.name}-derivatives"
        write_tables(design, args.out_dir, output_dir, seed=args.seed)
        where = f"{args.out_dir} (participants.tsv) and {output_dir} (tables)"
    else:
        from ketabids.simulate.dataset import write_bids_dataset

        voxel = args.voxel_size[0] if len(args.voxel_size) == 1 else tuple(args.voxel_size)
        try:
            write_bids_dataset(
                args.out_dir,
                design,
                voxel_size=voxel,
                noise=args.noise,
                bias=args.bias,
                neck=not args.no_neck,
                sessions=tuple(args.sessions),
                runs=args.runs,
                seed=args.seed,
                n_jobs=args.n_jobs,
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 64
        where = f"{args.out_dir} (truth in {args.out_dir / 'sourcedata' / 'truth'})"
    n = len(design.participants)
    print(f"simulated {n} participants in {time.monotonic() - start:.1f} s: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
