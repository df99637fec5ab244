"""Screenshot an HTML report with headless Chromium (for checking that a report renders)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES: tuple[str, ...] = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
)


class ChromiumNotFoundError(RuntimeError):
    """Raised when no Chromium executable is installed."""


def find_chromium() -> str:
    """Path of a Chromium executable, or ``ChromiumNotFoundError``."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise ChromiumNotFoundError(
        "headless Chromium is needed for screenshots but was not found "
        f"(looked for {', '.join(CHROMIUM_CANDIDATES)}); install it, e.g. 'apt-get install chromium'"
    )


def has_chromium() -> bool:
    """Whether :func:`find_chromium` finds an executable."""
    try:
        find_chromium()
    except ChromiumNotFoundError:
        return False
    return True


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 8000, timeout: float = 120) -> Path:
    """Render ``html`` in headless Chromium at ``width`` x ``height`` pixels into ``png``; return ``png``."""
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"no HTML file at {html}")
    chromium = find_chromium()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ketabids-chromium-") as profile:
        command = [
            chromium,
            *_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            html.as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0 or not png.is_file():
        raise RuntimeError(f"Chromium could not screenshot {html}: {result.stderr.strip()[-500:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    """``python -m ketabids.reports.screenshot report.html shot.png [--width W] [--height H]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=8000)
    args = parser.parse_args(argv)
    print(screenshot(args.html, args.png, width=args.width, height=args.height))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
