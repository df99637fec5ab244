"""Shared fixtures: tiny hand-made BIDS datasets for fast command-line and I/O tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def write_tiny_t1w(path: Path, shape: Sequence[int] = (12, 14, 10), seed: int = 0) -> Path:
    """A small random volume with a 2 mm affine, good enough for BIDS and I/O tests."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 1000, size=tuple(shape)).astype(np.int16)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps({"RepetitionTime": 2.3}))
    return path


def make_tiny_bids(
    root: Path,
    subjects: Sequence[str] = ("01", "02"),
    sessions: Sequence[str] = (),
    runs: int = 1,
) -> Path:
    """Write a minimal valid raw BIDS dataset with one T1w per subject/session/run."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0", "Authors": ["Test A", "Test B"]})
    )
    (root / "README").write_text("Tiny synthetic dataset for ketabids tests.\n")
    rows = ["participant_id\tage"] + [f"sub-{s}\t{30 + i}" for i, s in enumerate(subjects)]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    for i, subject in enumerate(subjects):
        for session in sessions or (None,):
            folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
            for run in range(1, runs + 1):
                parts = [f"sub-{subject}"] + ([f"ses-{session}"] if session else [])
                parts += [f"run-{run}"] if runs > 1 else []
                write_tiny_t1w(folder / ("_".join([*parts, "T1w"]) + ".nii.gz"), seed=i * 10 + run)
    return root


def tree_fingerprint(root: Path) -> dict[str, str]:
    """Relative path -> content hash of every file below ``root`` (to prove nothing was written)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node Slurm (slurm-wlm + munge) in a temporary folder; its ``env`` has SLURM_CONF.

    Fails, never skips, when the cluster cannot start: the reason is the failure message."""
    from slurm_cluster import ClusterError, SlurmCluster

    cluster = SlurmCluster()
    try:
        cluster.start()
    except ClusterError as exc:
        pytest.fail(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def tiny_bids(tmp_path: Path) -> Callable[..., Path]:
    """Factory fixture: ``tiny_bids(subjects=..., sessions=..., runs=...)`` -> dataset path."""

    def factory(**kwargs) -> Path:
        return make_tiny_bids(tmp_path / "bids", **kwargs)

    return factory
