"""Errors that end a run with a BIDS-Apps exit code and a one-line message."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BIDS_INVALID = 16
EXIT_USAGE = 64
EXIT_BAD_DATA = 65
EXIT_INPUT_MISSING = 66


class KetabidsError(Exception):
    """Base class: the message is shown as one line, the process exits with ``exit_code``."""

    exit_code = EXIT_FAILURE


class UsageError(KetabidsError):
    """Wrong options or labels (exit 64)."""

    exit_code = EXIT_USAGE


class BidsValidationError(KetabidsError):
    """The input dataset fails the BIDS validator (exit 16)."""

    exit_code = EXIT_BIDS_INVALID


class BadDataError(KetabidsError):
    """An input file or table exists but cannot be used (exit 65)."""

    exit_code = EXIT_BAD_DATA


class InputMissingError(KetabidsError):
    """A needed input file, participant or column is missing (exit 66)."""

    exit_code = EXIT_INPUT_MISSING
