"""The brainlife.io wrapper (``main``): config.json -> ketabids command line, run on a local install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
KETABIDS = shutil.which("ketabids") or shutil.which("ketabids", path=str(Path(sys.executable).parent))


def run_main(cwd: Path, config: dict) -> subprocess.CompletedProcess:
    (cwd / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "KETABIDS_COMMAND": str(KETABIDS)}
    return subprocess.run(
        [sys.executable, str(ROOT / "main")], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(KETABIDS is None, reason="needs the ketabids command")
def test_sample_config_runs_the_group_level(tmp_path):
    from ketabids.simulate.cohort import simulate_cohort
    from ketabids.simulate.tables import write_tables

    design = simulate_cohort(n_discovery=40, n_external=(12,), n_saline=12, effect_size=2.0, seed=5)
    write_tables(design, tmp_path / "bids", tmp_path / "output", seed=5)
    config = json.loads((ROOT / "brainlife" / "config.json").read_text())
    result = run_main(tmp_path, config)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    command = result.stdout.splitlines()[0]
    assert "--cv-repeats 1" in command and "--c-grid 0.01 1" in command and "--verbose" not in command
    metrics = pd.read_csv(tmp_path / "output" / "group" / "metrics.tsv", sep="\t").set_index("evaluation")
    assert metrics.loc["cv", "n"] == 40
    assert {"external", "control"} <= set(metrics.index)


def test_unknown_key_is_a_usage_error(tmp_path):
    result = run_main(tmp_path, {"bids_dir": str(tmp_path), "analysis_level": "group", "n_folds": 3})
    assert result.returncode == 64
    assert (
        result.stderr.strip()
        == "main: config.json key 'n_folds' is not a ketabids option (see boutiques.json)"
    )


def test_missing_t1_is_missing_input(tmp_path):
    result = run_main(tmp_path, {"t1": "absent/t1.nii.gz"})
    assert result.returncode == 66
    assert result.stderr.strip() == "main: input missing: absent/t1.nii.gz"
