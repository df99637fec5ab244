"""Group level on a real Dask cluster: a ``dask scheduler`` and ``dask worker`` processes on localhost.

The cluster is started here, never skipped: if it cannot start, the tests fail with its log.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from ketabids.cli import main
from ketabids.learning.backends import EngineError, parallel_workers, shared
from ketabids.learning.cohorts import ROLE_EXTERNAL, ROLE_TRAIN
from ketabids.learning.engine import Data, Protocol
from ketabids.learning.inputs import load_inputs
from ketabids.learning.permutation import cross_validate, null_distribution, prepare_analysis
from ketabids.settings import GroupSettings
from ketabids.simulate.cohort import simulate_cohort
from ketabids.simulate.tables import write_tables

DASK = Path(sys.executable).with_name("dask")  # the dask command of this environment
START_TIMEOUT = 120  # seconds for the scheduler and workers to come up on a loaded machine
PROTOCOL = ["--cv-repeats", "2", "--outer-folds", "4", "--inner-folds", "3", "--c-grid", "0.01", "1"]
OUTPUTS = ("predictions.tsv", "metrics.tsv", "permutations.tsv", "weights.tsv")


def _fail(reason: str, logs: list[Path]) -> None:
    tails = "\n".join(f"--- {log.name}:\n{log.read_text()[-1500:]}" for log in logs if log.exists())
    pytest.fail(f"the Dask cluster did not start: {reason}\n{tails}", pytrace=False)


@contextmanager
def _cluster(folder: Path, n_workers: int) -> Iterator[str]:
    """Address of a ``dask scheduler`` on localhost with ``n_workers`` single-threaded worker
    processes (``dask worker``, one nanny each), stopped at the end."""
    scheduler_file = folder / "scheduler.json"
    processes: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(*args: str) -> None:
        log = folder / f"{args[0]}.log"
        logs.append(log)
        with log.open("w") as stream:
            processes.append(subprocess.Popen([str(DASK), *args], stdout=stream, stderr=subprocess.STDOUT))

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(scheduler_file))  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not scheduler_file.exists():
            if processes[0].poll() is not None or time.monotonic() > deadline:
                _fail("no scheduler file", logs)
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        if n_workers:
            start("worker", "--scheduler-file", str(scheduler_file), "--nworkers", str(n_workers),
                  "--nthreads", "1", "--no-dashboard", "--local-directory", str(folder))  # fmt: skip
            try:
                with Client(address, timeout=START_TIMEOUT) as client:
                    client.wait_for_workers(n_workers, timeout=START_TIMEOUT)
            except (OSError, TimeoutError) as err:
                _fail(str(err), logs)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> Iterator[str]:
    """Address of a scheduler with 2 single-threaded worker processes."""
    with _cluster(tmp_path_factory.mktemp("dask"), 2) as address:
        yield address


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    """A small simulated cohort: 24 discovery, 8 external and 8 saline participants' tables."""
    root = tmp_path_factory.mktemp("cohort")
    design = simulate_cohort(n_discovery=24, n_external=(8,), n_saline=8, effect_size=1.5, seed=3)
    write_tables(design, root / "bids", root / "tables", seed=3)
    return root


def _run(root: Path, name: str, *options: str) -> tuple[int, Path]:
    out = root / name
    shutil.copytree(root / "tables", out)
    code = main([str(root / "bids"), str(out), "group", *PROTOCOL, "--n-permutations", "8",
                 "--random-seed", "7", *options])  # fmt: skip
    return code, out / "group"


def _executed(address: str) -> dict[str, int]:
    with Client(address, timeout=30) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def test_group_level_on_a_dask_scheduler_gives_the_loky_outputs(tables, scheduler):
    code, loky = _run(tables, "loky", "--n-jobs", "1")
    assert code == 0
    before = _executed(scheduler)
    code, dask = _run(tables, "dask", "--parallel-backend", "dask", "--dask-scheduler", scheduler)
    assert code == 0
    after = _executed(scheduler)
    # the workers ran the chunks of the folds, of the CV repeats and of the permutations
    assert len(after) == 2 and sum(after.values()) - sum(before.values()) >= 3, (before, after)
    permutations = (loky / "permutations.tsv").read_text().splitlines()
    assert len(permutations) == 1 + 8 and len(set(permutations[1:])) == 8
    for output in OUTPUTS:
        assert (dask / output).read_bytes() == (loky / output).read_bytes(), output


def test_same_seed_same_results_whatever_the_backend_and_workers(tables, scheduler):
    inputs = load_inputs(GroupSettings(bids_dir=tables / "bids", output_dir=tables / "tables"))
    table = inputs.table
    rows = np.flatnonzero((table["evaluation"] == ROLE_TRAIN).to_numpy())
    y = table["y_true"].to_numpy(float)
    external = {"external": np.flatnonzero((table["evaluation"] == ROLE_EXTERNAL).to_numpy())}
    data = Data(inputs.features.to_numpy(float), inputs.covariates.to_numpy(float))
    protocol = Protocol(c_grid=(0.01, 1.0), cv_repeats=3, outer_folds=4, inner_folds=3)
    results = {}
    for backend, n_jobs, address in [("loky", 1, None), ("loky", 2, None), ("dask", 2, None),
                                     ("dask", 1, scheduler)]:  # fmt: skip
        with parallel_workers(backend, n_jobs, address) as workers:
            assert workers == n_jobs or address
            analysis = prepare_analysis(data, rows, y, external, protocol, seed=11, n_jobs=workers)
            cv = cross_validate(analysis, y, protocol, workers, want_weights=True)
            null = null_distribution(analysis, y, protocol, n_permutations=5, seed=11, n_jobs=workers)
        results[backend, n_jobs, address] = cv, null
    (reference_cv, reference_null), *others = results.values()
    assert np.isfinite(reference_cv.decision).all() and reference_null["cv_auc"].nunique() > 1
    for cv, null in others:
        for name in ("decision", "probability", "fold", "c_chosen"):
            assert np.array_equal(getattr(cv, name), getattr(reference_cv, name)), name
        assert all(np.array_equal(a, b) for a, b in zip(cv.weights, reference_cv.weights, strict=True))
        pd.testing.assert_frame_equal(null, reference_null, check_exact=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_scheduler_fails_quickly_naming_it(tables, caplog):
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    code, group = _run(tables, "unreachable", "--parallel-backend", "dask", "--dask-scheduler", address,
                       "--dask-timeout", "2")  # fmt: skip
    assert code == 1
    assert time.monotonic() - start < 60
    assert address in caplog.text and "2 s (--dask-timeout)" in caplog.text
    assert not (group / "metrics.tsv").exists()


@pytest.mark.parametrize(
    "options",
    [
        ["--dask-scheduler", "tcp://127.0.0.1:8786"],  # no --parallel-backend dask
        ["--parallel-backend", "dask", "--dask-scheduler", "tcp://127.0.0.1"],  # no port
        ["--parallel-backend", "dask", "--dask-scheduler", "127.0.0.1:99999"],
        ["--parallel-backend", "dask", "--dask-scheduler", "http://127.0.0.1:8786"],
        ["--parallel-backend", "dask", "--dask-timeout", "0"],
    ],
)
def test_bad_dask_options_exit_64(tables, options, tmp_path):
    code = main([str(tables / "bids"), str(tmp_path / "out"), "group", *options])
    assert code == 64


def test_scheduler_without_workers_fails_after_the_timeout(tmp_path):
    with _cluster(tmp_path, 0) as address:
        start = time.monotonic()
        message = r"has no worker after 2 s \(--dask-timeout\)"
        with pytest.raises(EngineError, match=message), parallel_workers("dask", 1, address, timeout=2):
            pass
        assert time.monotonic() - start < 30


def test_each_block_sends_its_own_copy_of_shared_data(scheduler):
    """joblib's ``scatter=`` names data by its content, so the CV and then the permutations of one
    analysis reused one key while the first copy was being released, and the permutations failed
    with "lost dependencies" on a loaded machine (2 of 30 CV + permutation runs under load; 0 of 60
    with a copy per block)."""
    data = np.arange(1000.0)
    with parallel_workers("dask", 1, scheduler):
        with shared(data) as first:
            assert np.array_equal(first.result(), data)
            key = first.key
        with shared(data) as second:
            assert second.key != key and np.array_equal(second.result(), data)
    with parallel_workers("loky", 1), shared(data) as local:
        assert local is data
