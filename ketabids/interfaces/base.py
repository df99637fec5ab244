"""Shared helpers of the interfaces: thread limits for ANTs/ITK and torch."""

from __future__ import annotations

import os

from ketabids.processing.one_thread import THREAD_VARIABLES


def limit_threads(num_threads: int) -> None:
    """Cap the threads that ANTs/ITK, OpenMP and torch use in this process."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(max(1, int(num_threads)))
