"""The CI files in docs/ci/ are what docs/ci.md shows, and their commands work as written.

The shell lines of their steps (`run:` on GitHub, `script:` on GitLab) run with bash as the CI
runs them, in an empty directory, with the variables the CI sets, against bnconform installed
from its wheel (the install test's venv, built once per test run: tests/installed.py). The one
thing set from outside is BNCONFORM_REQUIREMENT, the built wheel instead of the package index.
"""
from __future__ import annotations

import fnmatch
import json
import re
import shutil
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
SHARDS = ROOT / "docs" / "ci" / "github-actions-shards.yml"
REPORTS = {"conformance.json", "conformance.md", "conformance.html", "junit.xml"}
# What the tests put in the files' OPTIONS (empty in the files: the whole default tier): a few
# families, enough to pass on torch and to fail on the mutant; the whole tier is the matrix's.
OPTIONS = "--family conditions --family bessel --family momentum"


@pytest.mark.parametrize("path", [GITHUB, GITLAB, SHARDS], ids=["github", "gitlab", "github-shards"])
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
    assert job["env"]["OPTIONS"] == ""
    env = {**user_env(installed), **job.get("env", {}), "BACKEND": backend, "OPTIONS": OPTIONS, "CI": "true",
           "GITHUB_ACTIONS": "true",
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
    cells = json.loads((out / "conformance.json").read_text())["results"]
    assert counts["tests"] == len(cells) > 50 and (counts["failures"] > 0) == bool(code)
    assert {r["family"] for r in cells} == {"conditions", "bessel", "momentum"}  # the OPTIONS reached the run


def test_the_gitlab_job_runs_as_written(installed: Path, wheel: Path, tmp_path: Path) -> None:
    (job,) = yaml.safe_load(GITLAB.read_text(encoding="utf-8")).values()
    work = tmp_path / "project"
    work.mkdir()
    assert job["variables"]["OPTIONS"] == ""
    env = {**user_env(installed), **job.get("variables", {}), "OPTIONS": OPTIONS, "CI": "true", "GITLAB_CI": "true",
           "CI_PROJECT_DIR": str(work), "BNCONFORM_REQUIREMENT": str(wheel)}
    proc = _bash("\n".join(job["script"]), work, env, "-eo", "pipefail")  # the runner stops at a failing line
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"  # the reports of a failed gate are the ones a user needs
    assert all((work / p).is_dir() for p in artifacts["paths"])
    assert REPORTS <= {p.name for p in (work / "reports" / "bnconform").iterdir()}
    counts = _junit(work / artifacts["reports"]["junit"])
    cells = json.loads((work / "reports" / "bnconform" / "conformance.json").read_text())["results"]
    assert counts["tests"] == len(cells) > 50 and counts["failures"] == counts["errors"] == 0


def _resolve(value: str, matrix: dict[str, Any]) -> str:
    """What the runner makes of a `${{ matrix.NAME }}` in an env or `with:` value (the only
    expressions the shards workflow has outside `if:`)."""
    resolved = re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", lambda m: str(matrix[m[1]]), str(value))
    assert "${{" not in resolved, value
    return resolved


def _github_env(installed: Path, wheel: Path, root: Path, job: dict[str, Any], matrix: dict[str, Any],
                backend: str) -> tuple[Path, Path, dict[str, str]]:
    """A job's workspace, step summary file and environment, as the runner gives them."""
    work, summary = root / "workspace", root / "step_summary.md"
    work.mkdir(parents=True)
    summary.touch()
    env = {**user_env(installed), **{k: _resolve(v, matrix) for k, v in job.get("env", {}).items()},
           "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(work), "GITHUB_STEP_SUMMARY": str(summary),
           "RUNNER_TEMP": str(root), "BNCONFORM_REQUIREMENT": str(wheel)}
    if "BACKEND" in env:
        assert env["OPTIONS"] == ""
        env["BACKEND"], env["OPTIONS"] = backend, OPTIONS
    return work, summary, env


def _steps(steps: list[dict[str, Any]], work: Path, env: dict[str, str], matrix: dict[str, Any],
           downloads: Path, uploads: Path, leave_out: str = "") -> list[int]:
    """A job's steps in order, as the runner takes them: after a failed step only those with
    `if: ${{ !cancelled() }}`; `run:` steps with bash -e; upload-artifact copies its path (if there:
    the action only warns) to uploads/NAME; download-artifact copies every artifact in downloads
    matching its pattern to PATH/NAME (v4 without merge-multiple), but `leave_out`. The `run:`
    exit codes."""
    codes: list[int] = []
    for step in steps:
        if any(codes) and step.get("if") != "${{ !cancelled() }}":
            continue
        uses = step.get("uses", "")
        if "run" in step:
            assert "${{" not in step["run"]  # the shell lines are shell: what this test runs is what the file says
            proc = _bash(step["run"], work, env, "-e")
            codes.append(proc.returncode)
            print(f"$ {step['run']}{proc.stdout[-3000:]}{proc.stderr[-3000:]}")  # shown when the test fails
        elif uses.startswith("actions/upload-artifact"):
            name, path = _resolve(step["with"]["name"], matrix), work / step["with"]["path"]
            if path.is_dir():
                shutil.copytree(path, uploads / name)
        elif uses.startswith("actions/download-artifact"):
            for found in sorted(downloads.iterdir()):
                if fnmatch.fnmatch(found.name, step["with"]["pattern"]) and found.name != leave_out:
                    shutil.copytree(found, work / step["with"]["path"] / found.name)
    return codes


@pytest.mark.parametrize(("backend", "code"), [("torch", 0), ("mutant:biased_running_var", 1)], ids=["passes", "fails"])
def test_the_github_shards_workflow_runs_as_written(backend: str, code: int, installed: Path, wheel: Path,
                                                    tmp_path: Path) -> None:
    """Each shard job on a workspace of its own, its reports passed to the merge job as artifacts;
    the merge job's gate exits as one run would, and refuses when a shard's artifact is missing."""
    jobs = yaml.safe_load(SHARDS.read_text(encoding="utf-8"))["jobs"]
    shard_job, merge_job = jobs["shard"], jobs["merge"]
    assert merge_job["needs"] == "shard" and "cancelled()" in merge_job["if"]  # it gates even when a shard failed
    values = shard_job["strategy"]["matrix"]["shard"]
    assert int(shard_job["env"]["SHARDS"]) == len(values) > 1
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    shard_cells = []
    for value in values:  # the shard jobs: a failing cell is the merge job's to gate, so each exits 0
        matrix = {"shard": value}
        work, _, env = _github_env(installed, wheel, tmp_path / f"shard-{value}", shard_job, matrix, backend)
        assert _steps(shard_job["steps"], work, env, matrix, artifacts, artifacts) == [0, 0]
        report = json.loads((work / "reports" / "bnconform" / "conformance.json").read_text())
        assert report["metadata"]["shard"] == f"{value}/{len(values)}"
        shard_cells.append({(r["spec"], r["backend"], r["outcome"]) for r in report["results"]})
    assert sorted(p.name for p in artifacts.iterdir()) == [f"bnconform-shard-{v}" for v in values]

    work, summary, env = _github_env(installed, wheel, tmp_path / "merge", merge_job, {}, backend)
    assert _steps(merge_job["steps"], work, env, {}, artifacts, tmp_path / "merged") == [0, code]
    out = work / "reports" / "bnconform"
    assert REPORTS <= {p.name for p in out.iterdir()}
    assert summary.read_text() == (out / "conformance.md").read_text() != ""
    merged = json.loads((out / "conformance.json").read_text())
    assert {(r["spec"], r["backend"], r["outcome"]) for r in merged["results"]} == set().union(*shard_cells)
    assert len(merged["metadata"]["merged_from"]) == len(values)
    counts = _junit(out / "junit.xml")
    assert counts["tests"] == len(merged["results"]) > 50 and (counts["failures"] > 0) == bool(code)
    assert (tmp_path / "merged" / "bnconform-reports" / "conformance.json").is_file()  # uploaded, pass or fail

    # the merge job again, one shard's artifact lost: no verdict, and no report that reads as the whole run
    work, summary, env = _github_env(installed, wheel, tmp_path / "merge-lost", merge_job, {}, backend)
    lost = f"bnconform-shard-{values[-1]}"
    assert _steps(merge_job["steps"], work, env, {}, artifacts, tmp_path / "lost", leave_out=lost) == [0, 2]
    assert not (work / "reports" / "bnconform" / "conformance.json").exists() and summary.read_text() == ""
    assert not (tmp_path / "lost").exists()
