"""ketabids: predict ketamine response in treatment-resistant depression from a T1w MRI."""

from pathlib import Path


def _read_version() -> str:
    """Return the version from the single ``version`` file (repo checkout or installed copy)."""
    repo_file = Path(__file__).parent.parent / "version"
    if repo_file.is_file():
        return repo_file.read_text().strip()
    try:
        from importlib.metadata import version

        return version("ketabids")
    except Exception:  # pragma: no cover - not installed and no file
        return "0+unknown"


__version__ = _read_version()
