"""Run a step whose result depends on ITK's thread count in a fresh process with one thread.

ITK reads its thread count once per process, and some of its sums are split between threads:
N4's B-spline fit and the mutual-information metric of the rigid and affine registration
stages give slightly different results with 1 and 2 threads, which SyN then amplifies into
regional differences of up to 2 %. Those steps take seconds, so they always run here, in a
spawned process with one thread; SyN, Atropos and resampling give identical results at any
thread count and keep ``--omp-nthreads``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

THREAD_VARIABLES = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

T = TypeVar("T")


def call_in_one_thread(function: Callable[..., T], /, *args, **kwargs) -> T:
    """``function(*args, **kwargs)`` in a spawned process whose ITK, OpenMP and MKL use one thread.

    ``function`` must be importable (module level) and its arguments and result picklable.
    """
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))  # the child inherits this environment
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(function, *args, **kwargs).result()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
