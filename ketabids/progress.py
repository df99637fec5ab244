"""What the user sees while the participant level runs: a line per finished step, a bar on a
terminal, and the tools' own chatter (ANTs/ITK warnings on the C-level stderr) in a log file."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ketabids.bids import T1wInput

LOGGER = logging.getLogger("ketabids")


def _workflow_name(item: T1wInput) -> str:
    from ketabids.workflows.participant import participant_wf_name

    return participant_wf_name(item.subject, item.session)


class Progress:
    """Nipype ``status_callback``: logs ``sub-01: register done (5/11), 2.4 min`` as steps end.

    ``on_finished(item)`` is called as soon as every step of a participant has ended (so its
    "finished" line appears when it finishes, not when the whole batch does).
    """

    def __init__(
        self,
        workflow,
        inputs: Sequence[T1wInput],
        on_finished: Callable[[T1wInput], None],
        stream: TextIO | None = None,
    ) -> None:
        from nipype.interfaces.utility import IdentityInterface

        self._start = time.monotonic()
        self._items = {_workflow_name(item): item for item in inputs}
        self._total = dict.fromkeys(self._items, 0)
        for name in workflow.list_node_names():  # identity nodes are dropped from the execution graph
            if not isinstance(workflow.get_node(name).interface, IdentityInterface):
                self._total[name.split(".", 1)[0]] += 1
        self._done = dict.fromkeys(self._items, 0)
        self._on_finished = on_finished
        self._failed: set[str] = set()
        self._bar = None
        if stream is not None and stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=sum(self._total.values()), file=stream, unit="step", leave=False)

    def _participant(self, node) -> str | None:
        return next((part for part in node.fullname.split(".") if part in self._items), None)

    def __call__(self, node, status: str) -> None:
        """Called by Nipype's plugin with ``status`` in {"start", "end", "exception"}."""
        key = self._participant(node)
        if key is None or status == "start" or key in self._failed:
            return  # after a failure, Nipype reports the skipped steps as ended: not news
        item = self._items[key]
        if status == "exception":
            self._failed.add(key)
        self._done[key] += 1
        minutes = (time.monotonic() - self._start) / 60
        word = "done" if status == "end" else "FAILED"
        LOGGER.info(
            "%s: %s %s (%d/%d), %.1f min",
            item.name,
            node.name,
            word,
            self._done[key],
            self._total[key],
            minutes,
        )
        if self._bar is not None:
            self._bar.update(1)
        if status == "end" and self._done[key] == self._total[key]:
            self._on_finished(item)

    def close(self) -> None:
        """Remove the progress bar."""
        if self._bar is not None:
            self._bar.close()


class _LogFile(logging.FileHandler):
    """A log file that never turns a failed write (disk full) into a traceback on the terminal."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@contextmanager
def tool_output_to(log_file: Path, quiet: bool) -> Iterator[TextIO]:
    """During the block, send file descriptors 1 and 2 to ``log_file`` (when ``quiet``); yield the
    terminal (the original stderr).

    ITK prints its warnings at C level ("NIfTI spatial units are 'unknown'" on stdout, "file NULL
    does not exist" on stderr), in the worker processes too (they inherit the descriptors), so
    redirecting the descriptors is what keeps them out of the terminal. Nipype's own messages (node errors
    with their tracebacks; the crash files keep them too) go to ``log_file`` as well. ketabids'
    lines keep going to the terminal (one line per failure) and are copied into ``log_file``.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = _LogFile(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    LOGGER.addHandler(file_handler)
    if not quiet:
        try:
            yield sys.stderr
        finally:
            LOGGER.removeHandler(file_handler)
            file_handler.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(saved, "w", buffering=1)
    chatter = open(log_file, "a", buffering=1)  # noqa: SIM115 - closed below
    os.dup2(chatter.fileno(), 1)
    os.dup2(chatter.fileno(), 2)
    swapped = [(h, h.stream) for h in _console_handlers()]
    nipype = _nipype_handlers()
    for handler, _ in swapped:
        # ketabids' own lines stay on the terminal; Nipype's node errors and tracebacks go to the file
        handler.setStream(chatter if handler in nipype else terminal)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.close(saved_out)
        os.dup2(saved, 2)
        for handler, stream in swapped:
            handler.setStream(stream)
        terminal.close()
        chatter.close()
        LOGGER.removeHandler(file_handler)
        file_handler.close()


def _nipype_handlers() -> list[logging.Handler]:
    names = [n for n in logging.root.manager.loggerDict if n == "nipype" or n.startswith("nipype.")]
    return [h for n in names for h in getattr(logging.getLogger(n), "handlers", [])]


def _console_handlers() -> list[logging.StreamHandler]:
    """Console handlers: the root logger's on stderr/stdout, and every one of Nipype's loggers."""
    root = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
    return [h for h in (*root, *_nipype_handlers()) if type(h) is logging.StreamHandler]
