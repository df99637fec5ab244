#!/usr/bin/env bash
# Build a stand-in for python:3.11-slim-bookworm from Debian packages, for machines that cannot pull
# from a registry: Debian bookworm's Python 3.11 with `python`/`pip` commands and no PEP 668 marker.
# Usage: build-base.sh ENGINE IMAGE   (the tarball is cached in $KETABIDS_BASE_CACHE)
set -euo pipefail
engine=$1 image=$2
cache=${KETABIDS_BASE_CACHE:-/var/cache/ketabids-base}
tarball=$cache/python-3.11-bookworm.tar
if [ ! -s "$tarball" ]; then
  command -v mmdebstrap >/dev/null || { echo "build-base.sh: needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
  mkdir -p "$cache"
  mmdebstrap --variant=minbase --format=tar --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tarball.part"
  mv "$tarball.part" "$tarball"
fi
"$engine" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$image" >/dev/null
echo "base image $image from $tarball"
