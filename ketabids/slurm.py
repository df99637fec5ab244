"""Participant level on Slurm: a job array with one task per participant.

Each task runs the ordinary local participant level (same interpreter, same code, isolated as
``ketabids`` runs itself) for its participant's incomplete sessions, with the run's options. The
submitting process then polls ``squeue`` until every task has left the queue (or ``--slurm-timeout``
passes), reads each task's final state and exit code (``sacct``; ``scontrol`` where accounting is
off) and judges each participant by that state AND its output contract. A rerun submits only the
participants whose outputs are incomplete and waits for tasks of earlier runs still in the queue
instead of submitting them twice.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ketabids.bids import MissingT1w, T1wInput
from ketabids.derivatives import write_text_atomic
from ketabids.entry import isolated_command
from ketabids.errors import KetabidsError, UsageError
from ketabids.participant import contract_failure, input_failures
from ketabids.settings import ParticipantSettings

LOGGER = logging.getLogger("ketabids")
TOOLS = ("sbatch", "squeue")
CALL_TIMEOUT = 120  # seconds any single Slurm command may take
DEFAULT_TIMEOUT = 86400.0


class SlurmError(KetabidsError):
    """Slurm refused or failed a request (exit 1); the message carries its stderr."""


@dataclass(frozen=True)
class SlurmOptions:
    """How to submit and wait: extra ``sbatch`` arguments, wait or not, the wait's limit."""

    sbatch_args: tuple[str, ...] = ()
    wait: bool = True
    timeout: float = DEFAULT_TIMEOUT
    poll_seconds: float = 5.0


@dataclass(frozen=True)
class Task:
    """One array task: the participant, its sessions, its Slurm id and log file."""

    subject: str
    sessions: tuple[str, ...]
    task_id: str
    log: Path


@dataclass(frozen=True)
class SlurmFailure:
    """A participant whose task failed or whose outputs are incomplete, as one line."""

    subject: str
    task_id: str
    state: str
    detail: str
    log: Path
    exit_code: int = 1
    before_workflow: bool = False

    def __str__(self) -> str:
        return f"sub-{self.subject}: Slurm task {self.task_id} {self.state}: {self.detail} (log: {self.log})"


def check_tools() -> None:
    """Refuse ``--slurm`` (exit 64) where the Slurm commands are not on ``PATH``."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise UsageError(
            f"--slurm needs {' and '.join(missing)} on PATH, not found in {os.environ.get('PATH', '')!r}: "
            "run on a Slurm login node (or load its module)"
        )


def slurm_options(args: argparse.Namespace) -> SlurmOptions | None:
    """The Slurm options of a command line (``None`` without ``--slurm``); exit 64 when unusable."""
    if not args.slurm:
        given = {
            "--slurm-args": args.slurm_args,
            "--no-wait": args.no_wait,
            "--slurm-timeout": args.slurm_timeout,
        }
        for flag in (flag for flag, value in given.items() if value):
            raise UsageError(f"{flag} needs --slurm")
        return None
    check_tools()
    try:
        extra = tuple(shlex.split(args.slurm_args or ""))
    except ValueError as exc:
        raise UsageError(f"--slurm-args {args.slurm_args!r}: {exc}") from None
    return SlurmOptions(extra, not args.no_wait, args.slurm_timeout or DEFAULT_TIMEOUT)


def _call(command: Sequence[str]) -> str:
    """Run a Slurm command; its stdout, or a ``SlurmError`` naming the command and its stderr."""
    try:
        result = subprocess.run(
            list(command), capture_output=True, text=True, timeout=CALL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{command[0]} did not answer within {CALL_TIMEOUT} s") from None
    except OSError as exc:
        raise SlurmError(f"{command[0]} could not run: {exc}") from None
    if result.returncode != 0:
        stderr = " ".join(result.stderr.split()) or f"exit code {result.returncode}"
        raise SlurmError(f"{command[0]} failed: {stderr}")
    return result.stdout


def slurm_dir(settings: ParticipantSettings) -> Path:
    """``output_dir/logs/slurm``: batch scripts, task logs and the record of submitted tasks."""
    return Path(settings.output_dir) / "logs" / "slurm"


def task_argv(
    settings: ParticipantSettings, subject: str, sessions: Sequence[str], verbose: int
) -> list[str]:
    """The local participant level for one participant, with this run's options."""
    argv = [str(settings.bids_dir), str(settings.output_dir), "participant", "--participant-label", subject]
    argv += ["--session-label", *sessions] if sessions else []
    argv += ["--skip-bids-validation", "-w", str(Path(settings.work_dir) / f"sub-{subject}")]
    argv += ["--nprocs", str(settings.nprocs), "--omp-nthreads", str(settings.omp_nthreads)]
    argv += ["--mem-gb", str(settings.mem_gb), "--random-seed", str(settings.random_seed)]
    argv += ["--atlas", settings.atlas]
    return argv + ["-v"] * verbose


def batch_script(commands: Sequence[Sequence[str]]) -> str:
    """A bash array script: task ``i`` runs ``commands[i]``."""
    cases = "".join(f"  {i}) exec {shlex.join(command)} ;;\n" for i, command in enumerate(commands))
    return (
        "#!/bin/bash\n# ketabids participant level: one array task per participant\n"
        f'case "$SLURM_ARRAY_TASK_ID" in\n{cases}'
        '  *) echo "no participant for array task $SLURM_ARRAY_TASK_ID" >&2; exit 64 ;;\nesac\n'
    )


def sbatch_command(
    settings: ParticipantSettings, n_tasks: int, script: Path, extra: Sequence[str]
) -> list[str]:
    """``sbatch`` for the array: CPUs = max(nprocs, omp-nthreads), memory = --mem-gb; ``extra`` last."""
    cpus = max(settings.nprocs, settings.omp_nthreads)
    return [
        "sbatch",
        "--parsable",
        "--job-name=ketabids",
        f"--array=0-{n_tasks - 1}",
        f"--cpus-per-task={cpus}",
        f"--mem={math.ceil(settings.mem_gb * 1024)}M",
        f"--output={script.parent / 'slurm-%A_%a.log'}",
        *extra,
        str(script),
    ]


def pending_by_subject(
    settings: ParticipantSettings, inputs: Sequence[T1wInput]
) -> dict[str, list[T1wInput]]:
    """The inputs whose output contract is incomplete, grouped by participant."""
    pending: dict[str, list[T1wInput]] = {}
    for item in inputs:
        if contract_failure(item, settings) is not None:
            pending.setdefault(item.subject, []).append(item)
    return pending


def submit(
    settings: ParticipantSettings, pending: dict[str, list[T1wInput]], extra: Sequence[str], verbose: int
) -> list[Task]:
    """Submit one array (a task per participant); record the tasks in ``slurm_dir/jobs.tsv``."""
    folder = slurm_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    subjects = sorted(pending)
    sessions = {s: tuple(i.session for i in pending[s] if i.session) for s in subjects}
    commands = [isolated_command(task_argv(settings, s, sessions[s], verbose)) for s in subjects]
    script = folder / f"ketabids_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}.sh"
    write_text_atomic(batch_script(commands), script)
    job_id = _call(sbatch_command(settings, len(subjects), script, extra)).strip().split(";")[0]
    tasks = [
        Task(s, sessions[s], f"{job_id}_{i}", folder / f"slurm-{job_id}_{i}.log")
        for i, s in enumerate(subjects)
    ]
    _record(folder / "jobs.tsv", tasks)
    return tasks


def _record(path: Path, tasks: Sequence[Task]) -> None:
    rows = {task.subject: task for task in (*read_records(path), *tasks)}
    lines = ["participant\tsessions\ttask\tlog"]
    lines += [f"{t.subject}\t{','.join(t.sessions)}\t{t.task_id}\t{t.log}" for t in rows.values()]
    write_text_atomic("\n".join(lines) + "\n", path)


def read_records(path: Path) -> list[Task]:
    """The last task submitted for each participant (``jobs.tsv``), if any."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        Task(r["participant"], tuple(filter(None, r["sessions"].split(","))), r["task"], Path(r["log"]))
        for r in rows
    ]


def queue_states(task_ids: Sequence[str]) -> dict[str, str]:
    """State of every listed task still known to ``squeue`` (absent: it has left the queue).

    The user's whole queue is listed: ``squeue -j`` fails on a job the controller has forgotten."""
    if not task_ids:
        return {}
    text = _call(["squeue", "--me", "-h", "-r", "-t", "all", "-o", "%i|%T"])
    rows = (line.split("|") for line in text.splitlines() if "|" in line)
    return {task: state.strip() for task, state in rows if task in task_ids}


def final_states(task_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``task -> (state, exit code)`` from ``sacct``, or from ``scontrol`` where accounting is off."""
    jobs = sorted({task.split("_")[0] for task in task_ids})
    try:
        text = _call(["sacct", "-X", "-n", "-P", "-j", ",".join(jobs), "-o", "JobID,State,ExitCode"])
        rows = [line.split("|") for line in text.splitlines() if line.count("|") == 2]
        found = {task: (state.split()[0], code) for task, state, code in rows}
    except SlurmError:
        found = {}
    if not found:
        for job in jobs:
            try:
                text = _call(["scontrol", "-o", "show", "job", job])
            except SlurmError:  # the job has left the controller's memory
                continue
            for line in text.splitlines():
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                task = f"{fields.get('ArrayJobId')}_{fields.get('ArrayTaskId')}"
                found[task] = (fields.get("JobState", "UNKNOWN"), fields.get("ExitCode", "?"))
    return {task: found.get(task, ("UNKNOWN", "?")) for task in task_ids}


def wait(tasks: Sequence[Task], options: SlurmOptions) -> dict[str, str]:
    """Poll until no task is pending or running, or the timeout passes; the still-active tasks' states."""
    deadline = time.monotonic() + options.timeout
    ids = [task.task_id for task in tasks]
    while True:
        active = {t: s for t, s in queue_states(ids).items() if s not in _ENDED}
        if not active or time.monotonic() >= deadline:
            return active
        time.sleep(min(options.poll_seconds, max(0.0, deadline - time.monotonic())))


_ENDED = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
    "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT",
}  # fmt: skip


def _ketabids_error(log: Path, subject: str) -> str | None:
    """The first error line the task's ketabids wrote about this participant (names the step)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    marker = f"ERROR: sub-{subject}"
    hits = [line.split("ERROR: ", 1)[1] for line in lines if marker in line]
    errors = [line.strip() for line in lines if "error" in line.lower()]
    return hits[0] if hits else (errors[-1][:300] if errors else None)


def judge(
    task: Task, state: str, code: str, items: Sequence[T1wInput], settings: ParticipantSettings
) -> SlurmFailure | None:
    """A failure unless the task COMPLETED with exit 0 (or its record is gone) AND the outputs are complete."""
    missing = [f for f in (contract_failure(item, settings) for item in items) if f is not None]
    exited_ok = (state == "COMPLETED" and code.split(":")[0] == "0") or state == "UNKNOWN"
    if exited_ok and not missing:
        return None
    found = _ketabids_error(task.log, task.subject)
    detail = found or (missing[0].reason if missing else "no error message in the log")
    detail = detail.removeprefix(f"sub-{task.subject}: ")
    return SlurmFailure(task.subject, task.task_id, f"{state} (exit {code})", detail, task.log)


def _queued_earlier(settings: ParticipantSettings, pending: dict[str, list[T1wInput]]) -> list[Task]:
    """Tasks of earlier runs, for participants still incomplete, that are still pending or running."""
    queued = [t for t in read_records(slurm_dir(settings) / "jobs.tsv") if t.subject in pending]
    states = queue_states([t.task_id for t in queued])
    earlier = [t for t in queued if states.get(t.task_id, "COMPLETED") not in _ENDED]
    for task in earlier:
        state = states[task.task_id]
        LOGGER.info(
            "sub-%s: task %s of an earlier run is %s: not resubmitted", task.subject, task.task_id, state
        )
    return earlier


def collect(
    tasks: Sequence[Task],
    pending: dict[str, list[T1wInput]],
    settings: ParticipantSettings,
    options: SlurmOptions,
) -> list[SlurmFailure]:
    """Wait for the tasks; one failure per participant whose task or outputs are not right."""
    LOGGER.info("waiting for %d task(s) (at most %.0f s; --slurm-timeout)", len(tasks), options.timeout)
    active = wait(tasks, options)
    ended = final_states([t.task_id for t in tasks if t.task_id not in active])
    failures = []
    for task in tasks:
        if task.task_id in active:
            detail = (
                f"not ended within the {options.timeout:.0f} s --slurm-timeout; it stays queued: "
                "rerun the same command to wait for it again, or scancel it"
            )
            failure = SlurmFailure(task.subject, task.task_id, active[task.task_id], detail, task.log)
        else:
            failure = judge(task, *ended[task.task_id], pending.get(task.subject, []), settings)
        if failure is None:
            LOGGER.info("sub-%s: finished (Slurm task %s)", task.subject, task.task_id)
        else:
            failures.append(failure)
            LOGGER.error("%s", failure)
    return failures


def run_on_slurm(
    settings: ParticipantSettings,
    inputs: Sequence[T1wInput],
    missing: Sequence[MissingT1w],
    options: SlurmOptions,
    verbose: int = 0,
) -> list:
    """Submit the incomplete participants, wait, report; return the failures (as the local level does).

    With ``options.wait`` False it returns after submitting (only inputs refused up front fail).
    """
    failures: list = input_failures(inputs, missing)
    for failure in failures:
        LOGGER.error("%s", failure)
    refused = {(f.subject, f.session) for f in failures}
    runnable = [item for item in inputs if (item.subject, item.session) not in refused]
    pending = pending_by_subject(settings, runnable)
    complete = sorted({item.subject for item in runnable} - set(pending))
    if complete:
        LOGGER.info(
            "%d participant(s) already complete, not resubmitted: %s", len(complete), " ".join(complete)
        )
    earlier = _queued_earlier(settings, pending)
    to_submit = {s: items for s, items in pending.items() if s not in {t.subject for t in earlier}}
    tasks = submit(settings, to_submit, options.sbatch_args, verbose) if to_submit else []
    if tasks:
        job = tasks[0].task_id.split("_")[0]
        LOGGER.info(
            "submitted Slurm job %s: %d array task(s); logs in %s", job, len(tasks), tasks[0].log.parent
        )
        print(job, flush=True)
    if not options.wait:
        return failures
    if not earlier + tasks:
        LOGGER.info("nothing to run: every participant's outputs are complete")
        return failures
    return failures + collect(earlier + tasks, pending, settings, options)
