"""Command line: ``run.py bids_dir output_dir {participant,group} [options]`` (BIDS-Apps 1.0)."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ketabids import __version__
from ketabids.data.atlases import ATLASES
from ketabids.derivatives import check_output_owner
from ketabids.errors import (
    EXIT_BAD_DATA,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    KetabidsError,
    UsageError,
)
from ketabids.resources import available_cpus, available_memory_gb
from ketabids.settings import ColumnNames, GroupSettings, ParticipantSettings

LOGGER = logging.getLogger("ketabids")
DEFAULT_GROUP = GroupSettings(bids_dir=Path(), output_dir=Path())
DEFAULT_COLUMNS = ColumnNames()


class _HelpFormatter(argparse.HelpFormatter):
    """Show each option's default unless its help already explains it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors end with exit code 64 (EX_USAGE) instead of 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full parser; every option documents its default."""
    cpus = available_cpus()
    parser = _Parser(
        prog="ketabids",
        description="Predict ketamine response in treatment-resistant depression from a pre-treatment "
        "T1w MRI (Bryant et al., Transl Psychiatry 2026). The participant level measures regional grey "
        "matter; the group level trains, validates and applies the classifier.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the input BIDS dataset (never written to)")
    parser.add_argument("output_dir", type=Path, help="where derivatives are written")
    parser.add_argument("analysis_level", choices=["participant", "group"], help="processing stage")
    parser.add_argument("--version", action="version", version=f"ketabids {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output: -v adds other libraries' messages and ketabids' debug lines, -vv everything",
    )

    sel = parser.add_argument_group("selecting data")
    sel.add_argument(
        "--participant-label",
        "--participant_label",
        dest="participant_label",
        nargs="+",
        metavar="LABEL",
        help="participants to process ('sub-' prefix optional); default: all",
    )
    sel.add_argument(
        "--session-label",
        "--session_label",
        dest="session_label",
        nargs="+",
        metavar="LABEL",
        help="participant level: sessions to process (default: all); group level: the one "
        "(pre-treatment) session to use when participants have several",
    )
    sel.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validator",
        dest="skip_bids_validation",
        action="store_true",
        help="do not run the BIDS validator on the input dataset",
    )
    sel.add_argument(
        "--atlas",
        choices=sorted(ATLASES),
        default="neuromorphometrics",
        help="regional atlas, shipped in MNI152NLin2009aSym with its provenance: neuromorphometrics "
        "(SPM12's Neuromorphometrics labels), aal (AAL2, 120 regions), harvard_oxford (FSL's "
        "Harvard-Oxford cortical + subcortical)",
    )

    res = parser.add_argument_group("resources and reproducibility")
    res.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        help="working directory for resumable runs (default: OUTPUT_DIR/.ketabids-work)",
    )
    res.add_argument(
        "--nprocs",
        "--n_cpus",
        "--n-cpus",
        dest="nprocs",
        type=_positive_int,
        default=cpus,
        help="parallel processes (default: the CPUs available to this process, here %(default)s)",
    )
    res.add_argument(
        "--omp-nthreads",
        type=_positive_int,
        help="threads per ANTs/torch process (default: CPUs available / nprocs, at least 1)",
    )
    res.add_argument(
        "--mem-gb",
        type=_positive_float,
        default=available_memory_gb(),
        help="memory limit in GB for the scheduler (default: the memory available, here %(default)s)",
    )
    res.add_argument("--random-seed", type=_non_negative_int, default=0, help="seed of every random step")

    part = parser.add_argument_group("participant level")
    part.add_argument(
        "--slurm",
        action="store_true",
        help="submit a Slurm job array (one task per participant whose outputs are incomplete, "
        "--nprocs/--omp-nthreads CPUs and --mem-gb memory each) instead of running here",
    )
    part.add_argument(
        "--slurm-args",
        metavar="ARGS",
        help='with --slurm: more sbatch options, e.g. "--partition=short --account=lab --time=1:00:00"',
    )
    part.add_argument(
        "--no-wait",
        action="store_true",
        help="with --slurm: print the job id and exit after submitting",
    )
    part.add_argument(
        "--slurm-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="with --slurm: longest wait for the tasks (default: 86400, one day); tasks still running "
        "then keep running and are reported as failures",
    )

    grp = parser.add_argument_group("group level")
    grp.add_argument(
        "--features",
        choices=["roi", "voxel"],
        default=DEFAULT_GROUP.features,
        help="regional GM volumes or modulated GM maps",
    )
    grp.add_argument(
        "--classifier",
        choices=["svm-linear", "svm-rbf", "logistic"],
        default=DEFAULT_GROUP.classifier,
        help="classifier (the paper used svm-linear)",
    )
    grp.add_argument(
        "--covariates",
        nargs="*",
        choices=["tiv", "age", "sex", "site"],
        default=list(DEFAULT_GROUP.covariates),
        help="regressed out of the features inside the training folds",
    )
    grp.add_argument(
        "--cv-repeats",
        type=_positive_int,
        default=DEFAULT_GROUP.cv_repeats,
        help="repeats of the outer cross-validation",
    )
    grp.add_argument(
        "--outer-folds",
        type=_positive_int,
        default=DEFAULT_GROUP.outer_folds,
        help="outer (validation) folds",
    )
    grp.add_argument(
        "--inner-folds", type=_positive_int, default=DEFAULT_GROUP.inner_folds, help="inner (tuning) folds"
    )
    grp.add_argument(
        "--c-grid",
        nargs="+",
        type=_positive_float,
        default=list(DEFAULT_GROUP.c_grid),
        help="values of C tuned in the inner folds",
    )
    grp.add_argument(
        "--n-permutations",
        type=_non_negative_int,
        default=DEFAULT_GROUP.n_permutations,
        help="label permutations for p-values (0: none)",
    )
    grp.add_argument(
        "--response-threshold",
        type=_fraction,
        default=None,
        help="relative MADRS drop that defines response (default: 0.5 when training; with --model the "
        "model card's, and a different value is refused unless --force-model)",
    )
    grp.add_argument(
        "--conformal-alpha",
        type=_fraction,
        default=DEFAULT_GROUP.conformal_alpha,
        help="error level of the conformal prediction sets (label-conditional coverage 1 - alpha)",
    )
    grp.add_argument(
        "--discovery-cohort",
        default=DEFAULT_GROUP.discovery_cohort,
        help="value of the cohort column that marks the training cohort",
    )
    grp.add_argument(
        "--model",
        type=Path,
        metavar="FILE",
        help="apply this model.skops (trained elsewhere) instead of training",
    )
    grp.add_argument(
        "--recalibrate",
        action="store_true",
        help="with --model: refit the intercept and slope of the model's probabilities on this "
        "dataset's outcomes (cross-validated) and write group/model_recalibrated.skops",
    )
    grp.add_argument(
        "--force-model",
        action="store_true",
        help="apply a --model despite a --response-threshold other than its card's or a major "
        "scikit-learn/skops version difference",
    )
    grp.add_argument(
        "--adapt-site",
        action="store_true",
        help="with --model: map each site the model never saw onto its training cohort (ComBat "
        "location and scale, empirical Bayes, covariates kept; no outcomes used) before applying "
        "it; needs at least 20 participants per such site",
    )
    grp.add_argument(
        "--allow-mixed-versions",
        action="store_true",
        help="use participant outputs written by different ketabids versions (refused otherwise)",
    )
    grp.add_argument(
        "--n-jobs",
        type=_positive_int,
        default=cpus,
        help="parallel jobs for cross-validation and permutations: loky processes, or the worker "
        "processes of the local Dask cluster (default: the CPUs available, here %(default)s)",
    )
    grp.add_argument(
        "--parallel-backend",
        choices=["loky", "dask"],
        default=DEFAULT_GROUP.parallel_backend,
        help="where CV repeats and permutations run: loky (local processes) or dask (a Dask "
        "cluster: --dask-scheduler, or a local one); same seed, same results",
    )
    grp.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="with --parallel-backend dask: address of a running Dask scheduler "
        "([tcp://]host:port); default: start a local cluster of --n-jobs worker processes",
    )
    grp.add_argument(
        "--dask-timeout",
        type=_positive_float,
        default=DEFAULT_GROUP.dask_timeout,
        metavar="SECONDS",
        help="seconds to wait for the Dask scheduler and its first worker before failing (exit 1)",
    )

    cols = parser.add_argument_group("participants.tsv column names")
    for field in ("treatment", "cohort", "site", "age", "sex", "madrs_pre", "madrs_post"):
        flag = "--" + field.replace("_", "-") + "-column"
        cols.add_argument(flag, default=getattr(DEFAULT_COLUMNS, field), help=f"column holding {field}")
    return parser


def _configure_logging(verbosity: int) -> None:
    """ketabids' lines at INFO, other libraries' from WARNING; ``-v``: ketabids DEBUG and the
    others INFO; ``-vv``: everything DEBUG."""
    logging.basicConfig(
        format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    others = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.getLogger().setLevel(others)
    LOGGER.setLevel(logging.INFO if verbosity == 0 else logging.DEBUG)


def _prepare_environment() -> None:
    """Keep every tool offline, out of the user's site-packages and out of an unwritable HOME.

    An unwritable HOME is replaced by a private folder (``tempfile.mkdtemp``: per user and per
    run, never a fixed shared path another user could own), removed at exit.
    """
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    os.environ.setdefault("NO_ET", "1")
    os.environ["PYTHONNOUSERSITE"] = "1"
    home = Path(os.environ.get("HOME", "/"))
    if not (home.is_dir() and os.access(home, os.W_OK)):
        config = Path(tempfile.mkdtemp(prefix="ketabids-home-"))
        atexit.register(shutil.rmtree, config, ignore_errors=True)
        os.environ["HOME"] = str(config)
        os.environ.setdefault("MPLCONFIGDIR", str(config / "matplotlib"))
        os.environ.setdefault("XDG_CACHE_HOME", str(config / "cache"))
        os.environ.setdefault("DENO_DIR", str(config / "deno"))


def _writable_dir(path: Path, name: str) -> None:
    """Create ``path`` if needed and prove it is writable; else a one-line ``UsageError`` (exit 64)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ketabids-write-test-"):
            pass
    except OSError as err:
        raise UsageError(f"cannot use {path} as the {name}: {err.strerror or err}") from None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_atlas(name: str) -> None:
    """Refuse (exit 64) an atlas whose shipped label image, table or provenance is missing or invalid."""
    from ketabids.data.atlases import AtlasError, check_atlas

    try:
        check_atlas(name)
    except AtlasError as exc:
        raise UsageError(str(exc)) from None


def _check_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    from ketabids.bids import check_bids_dir

    bids_dir = check_bids_dir(args.bids_dir)
    output_dir = args.output_dir.expanduser().resolve()
    work_dir = (args.work_dir or output_dir / ".ketabids-work").expanduser().resolve()
    for name, path in (("output_dir", output_dir), ("work directory", work_dir)):
        if _inside(path, bids_dir):
            raise UsageError(
                f"{name} {path} lies inside the input dataset {bids_dir}; ketabids never writes there"
            )
    return bids_dir, output_dir, work_dir


def _run_participant(args: argparse.Namespace, bids_dir: Path, output_dir: Path, work_dir: Path) -> int:
    from ketabids import bids
    from ketabids.slurm import slurm_options

    slurm = slurm_options(args)  # None without --slurm; exit 64 when Slurm is unusable here
    labels = bids.clean_labels(args.participant_label, "sub-")
    sessions = bids.clean_labels(args.session_label, "ses-")
    if not args.skip_bids_validation:
        bids.validate_dataset(bids_dir)
    layout = bids.load_layout(bids_dir)
    inputs, missing = bids.select_t1w(layout, labels, sessions)
    check_output_owner(output_dir)
    _writable_dir(output_dir, "output directory")
    _writable_dir(work_dir, "work directory")
    settings = ParticipantSettings(
        bids_dir=bids_dir,
        output_dir=output_dir,
        work_dir=work_dir,
        participant_labels=labels,
        session_labels=sessions,
        atlas=args.atlas,
        nprocs=args.nprocs,
        omp_nthreads=args.omp_nthreads or max(1, available_cpus() // args.nprocs),
        mem_gb=args.mem_gb,
        random_seed=args.random_seed,
    )
    LOGGER.info("participant level: %d T1w image(s) -> %s", len(inputs), output_dir)
    if slurm is not None:
        from ketabids.slurm import run_on_slurm

        failures = run_on_slurm(settings, inputs, missing, slurm, args.verbose)
        if not slurm.wait and not failures:
            return EXIT_OK
    else:
        from ketabids.participant import run_participant_level

        failures = run_participant_level(settings, inputs, missing)
    return participant_exit_code(failures, len(inputs) + len(missing), output_dir)


def participant_exit_code(failures: Sequence, total: int, output_dir: Path) -> int:
    """0 if all succeeded; 65/66 if no participant could start; 1 if some failed (others kept)."""
    if not failures:
        LOGGER.info("participant level finished: reports in %s", output_dir)
        return EXIT_OK
    if len(failures) == total and all(f.before_workflow for f in failures):
        codes = {f.exit_code for f in failures}
        LOGGER.error("no participant could be processed")
        return codes.pop() if len(codes) == 1 else EXIT_BAD_DATA
    LOGGER.error(
        "%d of %d participant run(s) failed (listed above); the others' outputs are complete in %s",
        len(failures),
        total,
        output_dir,
    )
    return EXIT_FAILURE


def _dask_scheduler(args: argparse.Namespace) -> str | None:
    """The checked ``--dask-scheduler`` address; exit 64 if malformed or without the dask backend."""
    from ketabids.learning.backends import check_scheduler_address

    if args.dask_scheduler is None:
        return None
    if args.parallel_backend != "dask":
        raise UsageError("--dask-scheduler needs --parallel-backend dask")
    return check_scheduler_address(args.dask_scheduler)


def group_settings(args: argparse.Namespace, bids_dir: Path, output_dir: Path) -> GroupSettings:
    """Map the parsed options onto the group level's settings."""
    from ketabids.bids import clean_labels

    sessions = clean_labels(args.session_label, "ses-")
    if len(sessions) > 1:
        raise UsageError("the group level uses one pre-treatment session: give a single --session-label")
    columns = ColumnNames(
        treatment=args.treatment_column,
        cohort=args.cohort_column,
        site=args.site_column,
        age=args.age_column,
        sex=args.sex_column,
        madrs_pre=args.madrs_pre_column,
        madrs_post=args.madrs_post_column,
    )
    if args.model is not None and not args.model.is_file():
        from ketabids.errors import InputMissingError

        raise InputMissingError(f"model file not found: {args.model}")
    if args.adapt_site and args.model is None:
        raise UsageError("--adapt-site adapts a new site to a shared model: give the model with --model FILE")
    return GroupSettings(
        bids_dir=bids_dir,
        output_dir=output_dir,
        participant_labels=clean_labels(args.participant_label, "sub-"),
        session_label=sessions[0] if sessions else None,
        atlas=args.atlas,
        features=args.features,
        classifier=args.classifier,
        covariates=tuple(args.covariates),
        cv_repeats=args.cv_repeats,
        outer_folds=args.outer_folds,
        inner_folds=args.inner_folds,
        c_grid=tuple(args.c_grid),
        n_permutations=args.n_permutations,
        response_threshold=args.response_threshold,
        discovery_cohort=args.discovery_cohort,
        model_file=args.model.resolve() if args.model else None,
        force_model=args.force_model,
        conformal_alpha=args.conformal_alpha,
        adapt_site=args.adapt_site,
        recalibrate=args.recalibrate,
        n_jobs=args.n_jobs,
        parallel_backend=args.parallel_backend,
        dask_scheduler=_dask_scheduler(args),
        dask_timeout=args.dask_timeout,
        random_seed=args.random_seed,
        allow_mixed_versions=args.allow_mixed_versions,
        columns=columns,
    )


def _run_group(args: argparse.Namespace, bids_dir: Path, output_dir: Path) -> int:
    if args.slurm:
        raise UsageError("--slurm runs the participant level; run the group level where it is started")
    settings = group_settings(args, bids_dir, output_dir)
    _writable_dir(output_dir, "output directory")
    from ketabids.group import run_group_level

    run_group_level(settings)
    LOGGER.info("group level finished: report in %s", output_dir / "group" / "report.html")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ketabids; return the exit code (0 ok, 1 failure, 16 invalid BIDS, 64 usage, 65 bad data, 66 missing)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0)
    _configure_logging(args.verbose)
    try:
        _check_atlas(args.atlas)
        bids_dir, output_dir, work_dir = _check_paths(args)
        _prepare_environment()
        if args.analysis_level == "participant":
            return _run_participant(args, bids_dir, output_dir, work_dir)
        return _run_group(args, bids_dir, output_dir)
    except KetabidsError as exc:
        LOGGER.error("%s", exc)
        return exc.exit_code
    except OSError as exc:  # disk full, permissions, vanished files: one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        LOGGER.error("%s%s", exc.strerror or exc, where)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        LOGGER.error("interrupted")
        return 130
