"""Participant level: check the inputs, run one Nipype workflow per T1w, report failures per participant."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ketabids.bids import MissingT1w, T1wInput, image_problem
from ketabids.errors import EXIT_BAD_DATA, EXIT_FAILURE, EXIT_INPUT_MISSING
from ketabids.progress import Progress, tool_output_to
from ketabids.settings import ParticipantSettings

LOGGER = logging.getLogger("ketabids")
os.environ.setdefault("NIPYPE_NO_ET", "1")


@dataclass(frozen=True)
class ParticipantFailure:
    """One participant/session whose workflow failed: where and why."""

    subject: str
    session: str | None
    node: str
    file: str
    reason: str
    exit_code: int = EXIT_FAILURE

    def __str__(self) -> str:
        where = f"sub-{self.subject}" + (f" ses-{self.session}" if self.session else "")
        if not self.node:  # refused before any workflow ran: the reason names the file
            return f"{where}: {self.reason}"
        return f"{where}: step '{self.node}' failed on {self.file}: {self.reason}"

    @property
    def before_workflow(self) -> bool:
        """The input was refused before any workflow ran (bad or missing data)."""
        return not self.node


def configure_nipype(work_dir: Path) -> None:
    """No version check or telemetry, crash files in the work dir, keep going after a failure."""
    from nipype import config
    from nipype import logging as nipype_logging

    config.set("execution", "check_version", "false")
    config.set("execution", "crashdump_dir", str(work_dir / "crash"))
    config.set("execution", "crashfile_format", "txt")
    config.set("execution", "stop_on_first_crash", "false")
    config.set("execution", "remove_unnecessary_outputs", "false")
    config.set("execution", "hash_method", "content")
    config.set("monitoring", "enabled", "false")
    # Nipype's node-by-node log only with -v; its own handler prints it (no duplicate via the root logger).
    level = "INFO" if LOGGER.getEffectiveLevel() <= logging.DEBUG else "WARNING"
    config.set("logging", "workflow_level", level)
    config.set("logging", "interface_level", level)
    nipype_logging.update_logging(config)
    logging.getLogger("nipype").propagate = False


def plugin_settings(settings: ParticipantSettings) -> tuple[str, dict]:
    """Linear for one process, else MultiProc with the CPU and memory limits."""
    if settings.nprocs <= 1:
        return "Linear", {}
    return "MultiProc", {
        "n_procs": settings.nprocs,
        "memory_gb": settings.mem_gb,
        "raise_insufficient": False,
    }


def build_workflow(settings: ParticipantSettings, inputs: Sequence[T1wInput]):
    """One workflow holding a sub-workflow per input, run in ``settings.work_dir``."""
    from nipype.pipeline import engine as pe

    from ketabids.workflows.participant import init_participant_wf

    wf = pe.Workflow(name="ketabids_participant_wf", base_dir=str(settings.work_dir))
    threads = max(1, settings.omp_nthreads)
    wf.add_nodes([
        init_participant_wf(
            t1w_file=item.path,
            subject=item.subject,
            session=item.session,
            output_dir=settings.output_dir,
            atlas=settings.atlas,
            omp_nthreads=threads,
            seed=settings.random_seed,
        )
        for item in inputs
    ])  # fmt: skip
    return wf


def _reason(traceback_lines: Sequence[str]) -> str:
    lines = [line.strip() for line in traceback_lines if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return (errors or lines or ["unknown error"])[-1][:300]


def collect_failures(crash_dir: Path, since: float, inputs: Sequence[T1wInput]) -> list[ParticipantFailure]:
    """Read the crash files written since ``since`` and map them to participants."""
    from ketabids.workflows.participant import participant_wf_name

    by_name = {participant_wf_name(item.subject, item.session): item for item in inputs}
    failures = []
    for crash in sorted(crash_dir.glob("crash-*")) if crash_dir.is_dir() else []:
        if crash.stat().st_mtime < since:
            continue
        text = crash.read_text(errors="replace")
        node = next(
            (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Node:")), "?"
        )
        item = next((v for k, v in by_name.items() if f".{k}." in f".{node}."), None)
        if item is None:
            continue
        traceback = text.split("Traceback:", 1)[-1].splitlines()
        step = node.split(f"{participant_wf_name(item.subject, item.session)}.", 1)[-1]
        failures.append(
            ParticipantFailure(item.subject, item.session, step, str(item.path), _reason(traceback))
        )
    return failures


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return bool(handle.read(1))
    except OSError:
        return False


def contract_failure(item: T1wInput, settings: ParticipantSettings) -> ParticipantFailure | None:
    """A failure unless every file of the participant's output contract exists and is readable.

    The contract is ``ketabids.outputs.output_names``; a worker killed by the OOM killer or a
    crash file that could not be written leaves no crash record, but it does leave files missing.
    """
    from ketabids.outputs import output_names

    names = output_names(item.path, settings.output_dir, settings.atlas)
    missing = [path.name for path in names.values() if not _readable(path)]
    if not missing:
        return None
    more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
    return ParticipantFailure(
        item.subject,
        item.session,
        "outputs",
        str(item.path),
        f"output {missing[0]}{more} missing or unreadable after the run (worker killed? disk full?)",
    )


def input_failures(
    inputs: Sequence[T1wInput], missing: Sequence[MissingT1w] = ()
) -> list[ParticipantFailure]:
    """Inputs refused before any workflow: T1w absent (exit 66) or unusable (exit 65)."""
    failures = [
        ParticipantFailure(m.subject, m.session, "", str(m.folder), str(m), EXIT_INPUT_MISSING)
        for m in missing
    ]
    for item in inputs:
        problem = image_problem(item.path)
        if problem:
            failures.append(
                ParticipantFailure(item.subject, item.session, "", str(item.path), problem, EXIT_BAD_DATA)
            )
    return failures


def run_log_path(output_dir: Path, inputs: Sequence[T1wInput]) -> Path:
    """``output_dir/logs/<sub-X or participants>_<time>_<pid>.log``: one per run, never shared."""
    name = inputs[0].name if len(inputs) == 1 else "participants"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(output_dir) / "logs" / f"{name}_{stamp}_{os.getpid()}.log"


def run_participant_level(
    settings: ParticipantSettings,
    inputs: Sequence[T1wInput],
    missing: Sequence[MissingT1w] = (),
) -> list[ParticipantFailure]:
    """Run every usable T1w; return the failures (empty = every output contract is complete).

    Inputs are checked first (whole file read); a missing or unusable T1w fails only its own
    participant, with a one-line reason. The others always run.
    """
    from ketabids.derivatives import write_bidsignore, write_dataset_description, write_dseg_tsv
    from ketabids.outputs import write_subject_reports

    failures = input_failures(inputs, missing)
    for failure in failures:
        LOGGER.error("%s", failure)
    refused = {(f.subject, f.session) for f in failures}
    runnable = [item for item in inputs if (item.subject, item.session) not in refused]
    if not runnable:
        return failures
    work_dir = Path(settings.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
    write_dataset_description(settings.output_dir, settings.bids_dir)
    write_bidsignore(settings.output_dir)
    write_dseg_tsv(settings.output_dir)
    configure_nipype(work_dir)
    workflow = build_workflow(settings, runnable)
    plugin, plugin_args = plugin_settings(settings)
    LOGGER.info(
        "running %d workflow(s) with %s (%d processes, %d threads each); work dir %s",
        len(runnable),
        plugin,
        settings.nprocs,
        settings.omp_nthreads,
        work_dir,
    )
    started = time.time() - 1
    checked: dict[tuple[str, str | None], ParticipantFailure | None] = {}

    def finished(item: T1wInput) -> None:
        checked[item.subject, item.session] = failure = contract_failure(item, settings)
        if failure:
            LOGGER.error("%s", failure)
        else:
            LOGGER.info("%s: finished", item.name)

    log_file = run_log_path(settings.output_dir, runnable)
    quiet = LOGGER.getEffectiveLevel() > logging.DEBUG
    LOGGER.info("tool messages (ANTs/ITK) go to %s%s", log_file, "" if quiet else " and the terminal")
    with tool_output_to(log_file, quiet) as terminal:
        progress = Progress(workflow, runnable, finished, terminal)
        try:
            workflow.run(plugin=plugin, plugin_args={**plugin_args, "status_callback": progress})
        except Exception as exc:  # node failures are read from crash files and the output contract below
            LOGGER.debug("workflow did not finish cleanly: %s", exc)
        finally:
            progress.close()
    crashed = collect_failures(work_dir / "crash", started, runnable)
    for failure in crashed:
        LOGGER.error("%s", failure)
    failed = {(f.subject, f.session) for f in crashed}
    for item in runnable:
        key = (item.subject, item.session)
        if key in failed:
            continue
        if key not in checked:
            finished(item)
        if checked[key]:
            crashed.append(checked[key])
    errors: dict[tuple[str, str | None], list[str]] = {}
    for failure in crashed:
        errors.setdefault((failure.subject, failure.session), []).append(str(failure))
    write_subject_reports(settings.output_dir, runnable, settings.atlas, errors)
    return failures + crashed
