"""Console-script entry point that runs ketabids in an isolated interpreter.

Host Python settings must not change what ketabids imports: a ``PYTHONPATH`` (or, under
Apptainer, the host's ``~/.local`` user site) holding another pandas or nipype would silently
replace the pinned ones. Cleaning ``sys.path`` after start-up is not enough: ``site`` has
already run ``.pth`` files from those folders, and worker processes inherit the environment.
So, unless it already is, the interpreter re-executes itself with ``-I`` (no ``PYTHON*``
variables, no user site, no current folder on the path) and ``PYTHONNOUSERSITE=1`` for every
child. Only the folder holding this ``ketabids`` package is appended to the clean path (the
app's own code, e.g. a source checkout). This module imports nothing outside the standard
library before that.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BOOTSTRAP = "import sys; sys.path.append({root!r}); from ketabids.entry import main; sys.exit(main())"


def isolated_command(argv: list[str]) -> list[str]:
    """The command that reruns ketabids with ``argv`` in an isolated interpreter."""
    root = str(Path(__file__).resolve().parent.parent)
    return [sys.executable, "-I", "-c", BOOTSTRAP.format(root=root), *argv]


def main() -> int:
    """Re-execute isolated if needed, then run the command line."""
    os.environ["PYTHONNOUSERSITE"] = "1"
    if not sys.flags.isolated:
        os.environ.pop("PYTHONPATH", None)
        command = isolated_command(sys.argv[1:])
        os.execv(command[0], command)
    from ketabids.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
