"""Participant level: check the inputs, run one Nipype workflow per T1w, report failures per participant."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ketabids.bids import T1wInput, check_image
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

    def __str__(self) -> str:
        where = f"sub-{self.subject}" + (f" ses-{self.session}" if self.session else "")
        return f"{where}: step '{self.node}' failed on {self.file}: {self.reason}"


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
            brain_extraction=settings.brain_extraction,
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


def run_participant_level(
    settings: ParticipantSettings, inputs: Sequence[T1wInput]
) -> list[ParticipantFailure]:
    """Run every selected T1w; return the failures (empty = all succeeded).

    Inputs are checked first (``BadDataError`` naming the participant and file, exit 65).
    """
    from ketabids.derivatives import write_bidsignore, write_dataset_description, write_dseg_tsv
    from ketabids.outputs import write_subject_reports

    for item in inputs:
        check_image(item)
    work_dir = Path(settings.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
    write_dataset_description(settings.output_dir, settings.bids_dir)
    write_bidsignore(settings.output_dir)
    write_dseg_tsv(settings.output_dir)
    configure_nipype(work_dir)
    workflow = build_workflow(settings, inputs)
    plugin, plugin_args = plugin_settings(settings)
    LOGGER.info(
        "running %d workflow(s) with %s (%d processes, %d threads each); work dir %s",
        len(inputs),
        plugin,
        settings.nprocs,
        settings.omp_nthreads,
        work_dir,
    )
    started = time.time() - 1
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as exc:
        LOGGER.debug("workflow did not finish cleanly: %s", exc)
    failures = collect_failures(work_dir / "crash", started, inputs)
    for failure in failures:
        LOGGER.error("%s", failure)
    failed = {(f.subject, f.session) for f in failures}
    for item in inputs:
        if (item.subject, item.session) not in failed:
            LOGGER.info("%s: finished", item.name)
    errors: dict[tuple[str, str | None], list[str]] = {}
    for failure in failures:
        errors.setdefault((failure.subject, failure.session), []).append(str(failure))
    write_subject_reports(settings.output_dir, inputs, settings.atlas, errors)
    return failures
