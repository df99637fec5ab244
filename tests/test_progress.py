"""Progress lines from Nipype's status callback, and tool chatter kept out of the terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ketabids.bids import T1wInput
from ketabids.progress import Progress, tool_output_to


def _double(x):
    return 2 * x


def _fail(x):
    raise ValueError("boom")


def _participant_wf(subject: str, fail: bool):
    from nipype.interfaces.utility import Function, IdentityInterface
    from nipype.pipeline import engine as pe

    wf = pe.Workflow(name=f"sub_{subject}_wf")
    inputnode = pe.Node(IdentityInterface(fields=["x"]), name="inputnode")
    inputnode.inputs.x = 1
    first = pe.Node(Function(input_names=["x"], output_names=["y"], function=_double), name="first")
    second = pe.Node(
        Function(input_names=["x"], output_names=["y"], function=_fail if fail else _double), name="second"
    )
    third = pe.Node(Function(input_names=["x"], output_names=["y"], function=_double), name="third")
    wf.connect(
        [(inputnode, first, [("x", "x")]), (first, second, [("y", "x")]), (second, third, [("y", "x")])]
    )
    return wf


@pytest.mark.parametrize("plugin", ["Linear", "MultiProc"])
def test_progress_lines_and_finished_per_participant(tmp_path, caplog, plugin):
    from nipype.pipeline import engine as pe

    from ketabids.participant import configure_nipype

    configure_nipype(tmp_path)
    workflow = pe.Workflow(name="top", base_dir=str(tmp_path))
    workflow.add_nodes([_participant_wf("01", fail=False), _participant_wf("02", fail=True)])
    items = [T1wInput(s, None, Path(f"/d/sub-{s}_T1w.nii.gz"), ()) for s in ("01", "02")]
    finished = []
    progress = Progress(workflow, items, finished.append)
    caplog.set_level(logging.INFO, logger="ketabids")
    args = {"n_procs": 2} if plugin == "MultiProc" else {}
    with pytest.raises(RuntimeError):
        workflow.run(plugin=plugin, plugin_args={**args, "status_callback": progress})
    assert [item.subject for item in finished] == ["01"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("sub-01: third done (3/3), ") and line.endswith(" min") for line in lines)
    assert any(line.startswith("sub-02: second FAILED (2/3)") for line in lines)
    assert not any(line.startswith("sub-02: third") for line in lines)


def test_tool_chatter_goes_to_the_log_file_not_the_terminal(tmp_path, capfd):
    import nipype  # noqa: F401 - sets up Nipype's console handlers

    logger = logging.getLogger("ketabids")
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    logger.setLevel(logging.INFO)
    log_file = tmp_path / "logs" / "sub-01.log"
    try:
        with tool_output_to(log_file, quiet=True):
            os.write(1, b"Warning: NIftI spatial units are 'unknown'. Assuming mm\n")
            subprocess.run(
                [sys.executable, "-c", "import sys; sys.stderr.write('file NULL does not exist\\n')"]
            )
            logger.info("sub-01: register done (5/11), 2.4 min")
            logging.getLogger("nipype.workflow").error("Traceback (most recent call last): node crashed")
        logger.info("after the run")
    finally:
        logging.getLogger().removeHandler(handler)
    captured = capfd.readouterr()
    terminal = captured.err
    assert "register done" in terminal and "after the run" in terminal
    assert "file NULL" not in terminal
    assert "Traceback" not in terminal + captured.out and "NIftI" not in captured.out
    saved = log_file.read_text()
    assert "spatial units" in saved and "file NULL does not exist" in saved and "register done" in saved
    assert "node crashed" in saved
    assert "after the run" not in saved


def test_verbose_keeps_tool_chatter_on_the_terminal(tmp_path, capfd):
    with tool_output_to(tmp_path / "run.log", quiet=False):
        os.write(2, b"ITK says hello\n")
    assert "ITK says hello" in capfd.readouterr().err


@pytest.mark.parametrize(("verbosity", "others_info", "ketabids_debug"), [(0, False, False), (1, True, True)])
def test_other_libraries_info_lines_stay_off_the_terminal_unless_verbose(
    verbosity, others_info, ketabids_debug
):
    from ketabids.cli import _configure_logging

    root, ours = logging.getLogger(), logging.getLogger("ketabids")
    saved = root.level, ours.level
    try:
        _configure_logging(verbosity)
        assert logging.getLogger("bidsschematools").isEnabledFor(logging.INFO) is others_info
        assert ours.isEnabledFor(logging.INFO)
        assert logging.getLogger("ketabids.group").isEnabledFor(logging.DEBUG) is ketabids_debug
    finally:
        root.setLevel(saved[0])
        ours.setLevel(saved[1])
