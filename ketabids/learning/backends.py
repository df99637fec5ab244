"""Where the group level's parallel tasks run: joblib's loky processes or a Dask cluster.

``parallel_workers`` sets joblib's backend for the duration of a ``with`` block and yields the
number of parallel workers, which the callers use to cut the CV repeats and the permutations
into chunks. With ``dask`` it connects a ``distributed.Client`` to an existing scheduler, or
starts a ``distributed.LocalCluster`` of single-threaded worker processes and closes it at the
end. Results never depend on the backend or the worker count: every task's randomness derives
from the seed and the task's index (DESIGN.md section 8).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from ketabids.errors import KetabidsError, UsageError

if TYPE_CHECKING:
    from distributed import Client, Future

T = TypeVar("T")

LOGGER = logging.getLogger("ketabids.group")
BACKENDS = ("loky", "dask")
PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")
DEFAULT_TIMEOUT = 30.0  # seconds to connect to a scheduler or to wait for its first worker


class EngineError(KetabidsError):
    """The parallel engine could not start or be reached (exit 1)."""


def check_scheduler_address(address: str) -> str:
    """``[protocol://]host:port`` with a known protocol, normalised with ``tcp://``; else exit 64."""
    text = address.strip()
    full = text if "://" in text else f"tcp://{text}"
    try:
        parts = urlsplit(full)
        port = parts.port
    except ValueError as err:
        raise UsageError(f"--dask-scheduler {address!r}: not a scheduler address ({err})") from None
    if parts.scheme not in PROTOCOLS or not parts.hostname or not port or parts.path or parts.query:
        raise UsageError(
            f"--dask-scheduler {address!r}: expected [protocol://]host:port with protocol one of "
            f"{', '.join(PROTOCOLS)}, e.g. tcp://10.0.0.5:8786"
        )
    return full


def _versions() -> dict[str, str]:
    """Versions that decide the numbers (checked on every Dask worker)."""
    import numpy
    import sklearn

    from ketabids import __version__

    return {"ketabids": __version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__}


def _check_workers(client: Client, address: str) -> None:
    """Refuse workers that cannot import ketabids or run other versions of what decides the numbers."""
    try:
        remote = client.run(_versions)
    except Exception as err:  # a worker without ketabids fails here, not deep inside a task
        raise EngineError(f"the Dask workers of {address} cannot run ketabids: {err}") from None
    mine = _versions()
    for worker, versions in remote.items():
        if versions != mine:
            raise EngineError(
                f"Dask worker {worker} runs {versions}, this process {mine}: results would not be "
                "reproducible; run the same ketabids installation (e.g. the same container) everywhere"
            )


def _connect(stack: ExitStack, n_jobs: int, scheduler: str | None, timeout: float) -> tuple[Client, str]:
    """A client of the scheduler at ``scheduler`` or of a new local cluster, with workers checked."""
    from distributed import Client, LocalCluster

    # Dask's configuration, read at import, sets its loggers to INFO: keep other libraries' level
    dask_logger = logging.getLogger("distributed")
    stack.callback(dask_logger.setLevel, dask_logger.level)
    dask_logger.setLevel(max(dask_logger.getEffectiveLevel(), logging.getLogger().level))

    if scheduler is None:
        LOGGER.info("starting a local Dask cluster of %d worker process(es)", n_jobs)
        try:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=n_jobs,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",  # its HTTP server on a free port, no dashboard
                    scheduler_kwargs={"dashboard": False},
                    timeout=timeout,
                )
            )
        except Exception as err:
            raise EngineError(f"could not start a local Dask cluster of {n_jobs} workers: {err}") from None
        address = cluster.scheduler_address
        target = cluster
    else:
        address = target = scheduler
    try:
        client = stack.enter_context(Client(target, timeout=timeout, set_as_default=False))
    except (OSError, TimeoutError) as err:
        raise EngineError(
            f"no Dask scheduler answered at {address} within {timeout:g} s (--dask-timeout): {err}"
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise EngineError(
            f"the Dask scheduler at {address} has no worker after {timeout:g} s (--dask-timeout)"
        ) from None
    _check_workers(client, address)
    return client, address


@contextmanager
def parallel_workers(
    backend: str, n_jobs: int, scheduler: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[int]:
    """Run the block with joblib's ``backend``; yield its number of parallel workers.

    ``loky``: ``n_jobs`` local processes. ``dask``: the threads of the scheduler's workers at
    ``scheduler``, or of a local cluster of ``n_jobs`` single-threaded processes when None.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown parallel backend '{backend}'; choose from {', '.join(BACKENDS)}")
    if backend == "loky":
        yield n_jobs
        return
    from joblib import parallel_config

    with ExitStack() as stack:
        client, address = _connect(stack, n_jobs, scheduler, timeout)
        workers = sum(client.nthreads().values())
        LOGGER.info("Dask scheduler %s: %d worker thread(s)", address, workers)
        with parallel_config(backend="dask", client=client, wait_for_workers_timeout=timeout):
            yield workers


@contextmanager
def shared(obj: T) -> Iterator[T | Future]:
    """``obj`` as the block's joblib calls should receive it: itself with loky; with Dask, a future
    of it sent once to every worker.

    Otherwise joblib sends each large argument to one worker, and Dask, which prefers the worker
    holding a task's data, can queue every chunk on that one worker while others idle. The copy
    goes under a fresh key (``hash=False``): joblib's own ``scatter=`` names it by its content, so
    the CV and then the permutations of one analysis reused one key while the first copy was being
    released, and the permutations' tasks failed with "lost dependencies" on a loaded machine.
    """
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    client = getattr(backend, "client", None)
    if client is None:
        yield obj
        return
    [future] = client.scatter([obj], broadcast=True, hash=False)
    try:
        yield future
    finally:
        future.release()
