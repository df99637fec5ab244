"""``bosh exec launch --no-container`` runs the app described by boutiques.json on synthetic tables."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("bosh") is None or shutil.which("ketabids") is None, reason="needs bosh + ketabids"
)
def test_bosh_launch_runs_the_group_level(tmp_path):
    from ketabids.simulate.cohort import simulate_cohort
    from ketabids.simulate.tables import write_tables

    bids_dir, out = tmp_path / "bids", tmp_path / "out"
    design = simulate_cohort(n_discovery=40, n_external=(12,), n_saline=12, effect_size=2.0, seed=5)
    write_tables(design, bids_dir, out, seed=5)
    invocation = {
        "bids_dir": str(bids_dir),
        "output_dir": str(out),
        "analysis_level": "group",
        "cv_repeats": 1,
        "outer_folds": 4,
        "inner_folds": 3,
        "n_permutations": 5,
        "n_jobs": 1,
        "c_grid": [0.01, 1.0],
    }
    invocation_file = tmp_path / "invocation.json"
    invocation_file.write_text(json.dumps(invocation))
    result = subprocess.run(
        ["bosh", "exec", "launch", "--no-container", str(ROOT / "boutiques.json"), str(invocation_file)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = pd.read_csv(out / "group" / "metrics.tsv", sep="\t").set_index("evaluation")
    assert {"cv", "external", "control"} <= set(metrics.index)
    assert metrics.loc["cv", "n"] == 40
    model_card = json.loads((out / "group" / "model.json").read_text())
    assert model_card["atlas"] == "neuromorphometrics" and model_card["classifier"] == "svm-linear"
