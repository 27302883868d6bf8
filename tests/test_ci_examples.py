"""The CI files in docs/ci/ are what docs/ci.md shows, and their commands work as written.

The shell lines of their steps (`run:` on GitHub, `script:` on GitLab) run with bash as the CI
runs them, in an empty directory, with the variables the CI sets, against bnconform installed
from its wheel (the install test's venv, built once per test run: tests/installed.py). The one
thing set from outside is BNCONFORM_REQUIREMENT, the built wheel instead of the package index.
"""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT
from tests.installed import user_env

GITHUB = ROOT / "docs" / "ci" / "github-actions.yml"
GITLAB = ROOT / "docs" / "ci" / "gitlab-ci.yml"
REPORTS = {"conformance.json", "conformance.md", "conformance.html", "junit.xml"}


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_docs_ci_shows_each_file_as_it_is(path: Path) -> None:
    doc = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    link = path.relative_to(ROOT / "docs").as_posix()
    assert f"]({link})" in doc, f"docs/ci.md does not link {link}"
    assert f"```yaml\n{path.read_text(encoding='utf-8')}```" in doc, f"docs/ci.md does not show {link} as it is"


def _bash(script: str, cwd: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", *flags, "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _junit(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    return {k: int(root.attrib[k]) for k in ("tests", "failures", "errors", "skipped")}


@pytest.mark.parametrize(("backend", "code"), [("torch", 0), ("mutant:biased_running_var", 1)], ids=["passes", "fails"])
def test_the_github_workflow_runs_as_written(backend: str, code: int, installed: Path, wheel: Path,
                                             tmp_path: Path) -> None:
    """The gate's exit code is the job's; the summary and the reports are there either way."""
    (job,) = yaml.safe_load(GITHUB.read_text(encoding="utf-8"))["jobs"].values()
    work, summary = tmp_path / "workspace", tmp_path / "step_summary.md"
    work.mkdir()
    summary.touch()  # the runner creates it, empty, for each step
    env = {**user_env(installed), **job.get("env", {}), "BACKEND": backend, "CI": "true", "GITHUB_ACTIONS": "true",
           "GITHUB_WORKSPACE": str(work), "GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(tmp_path),
           "BNCONFORM_REQUIREMENT": str(wheel)}
    steps: list[dict[str, Any]] = job["steps"]
    runs = [s for s in steps if "run" in s]
    assert len(runs) == 2
    codes = []
    for step in runs:  # bash -e: the runner's default shell on Linux; a failed step ends the job
        proc = _bash(step["run"], work, env, "-e")
        codes.append(proc.returncode)
        if proc.returncode:
            break
    assert codes == [0, code], proc.stdout[-3000:] + proc.stderr[-3000:]
    out = work / "reports" / "bnconform"
    assert REPORTS <= {p.name for p in out.iterdir()}
    assert summary.read_text() == (out / "conformance.md").read_text() != ""
    uploads = [s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and all((work / p).is_dir() for p in uploads)
    counts = _junit(out / "junit.xml")
    assert counts["tests"] >= 321 and (counts["failures"] > 0) == bool(code)


def test_the_gitlab_job_runs_as_written(installed: Path, wheel: Path, tmp_path: Path) -> None:
    (job,) = yaml.safe_load(GITLAB.read_text(encoding="utf-8")).values()
    work = tmp_path / "project"
    work.mkdir()
    env = {**user_env(installed), **job.get("variables", {}), "CI": "true", "GITLAB_CI": "true",
           "CI_PROJECT_DIR": str(work), "BNCONFORM_REQUIREMENT": str(wheel)}
    proc = _bash("\n".join(job["script"]), work, env, "-eo", "pipefail")  # the runner stops at a failing line
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"  # the reports of a failed gate are the ones a user needs
    assert all((work / p).is_dir() for p in artifacts["paths"])
    assert REPORTS <= {p.name for p in (work / "reports" / "bnconform").iterdir()}
    counts = _junit(work / artifacts["reports"]["junit"])
    assert counts["tests"] >= 321 and counts["failures"] == counts["errors"] == 0
