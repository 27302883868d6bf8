"""Every finding docs/frameworks.md states for Paddle, TensorFlow, Keras-on-TensorFlow, Equinox, Haiku,
MLX and torch's compilers is shown by a script that calls the framework directly
(docs/findings/*.py), not through bnconform.

Each script says what it needs on a `# requires:` line and asserts the finding (it fails when
the framework no longer behaves so). Here each runs where its frameworks are installed
(`tox -e paddle`, `tox -e tensorflow`, `tox -e equinox`, `tox -e haiku`, `tox -e mlx`,
`tox -e frameworks`) and is skipped, saying so,
elsewhere. The other tests keep the scripts, the page and the manifests pointing at each other.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bnconform.runners.backends.frameworks import MANIFESTS
from bnconform.runners.engine.manifest import load

ROOT = Path(__file__).resolve().parent.parent
FINDINGS = ROOT / "docs" / "findings"
PAGE = (ROOT / "docs" / "frameworks.md").read_text(encoding="utf-8")
SCRIPTS = sorted(FINDINGS.glob("*.py"))
COLUMNS = {"paddle": "paddle_", "tensorflow": "tensorflow_", "keras-tf": "keras_tf_", "equinox": "equinox_",
           "haiku": "haiku_", "mlx": "mlx_", "torch-compile": "torch_compile_", "torch-compile-fullgraph": "torch_compile_",
           "torch-compile-aot": "torch_compile_", "torch-export": "torch_export_", "torchscript": "torchscript_"}


def requires(script: Path) -> list[str]:
    match = re.search(r"^# requires: (.+)$", script.read_text(encoding="utf-8"), re.M)
    assert match, f"{script.name} has no '# requires: module, ...' line"
    return [m.strip() for m in match.group(1).split(",")]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_finding_script_shows_it_in_the_framework(script: Path, tmp_path: Path) -> None:
    missing = [m for m in requires(script) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed here (tox -e paddle / tensorflow / equinox / haiku / mlx / "
                    "frameworks runs it)")
    # From an empty directory with the interpreter's own environment: nothing of bnconform's.
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script.name} no longer shows its finding:\n{done.stdout}\n{done.stderr[-3000:]}"


def test_there_are_scripts_for_each_new_column() -> None:
    for column, prefix in COLUMNS.items():
        assert any(s.name.startswith(prefix) for s in SCRIPTS), column


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_docs_show_each_script(script: Path) -> None:
    assert f"docs/findings/{script.name}" in PAGE, f"docs/frameworks.md does not mention {script.name}"


@pytest.mark.parametrize("column", sorted(COLUMNS))
def test_each_manifest_entry_names_an_existing_script(column: str) -> None:
    """A finding excused in a shipped manifest is one the page can show: its reason names the script."""
    for entry in load([MANIFESTS / f"{column}.yaml"]):
        named = re.findall(r"docs/findings/(\w+\.py)", entry.reason)
        shared = "(below)" in entry.reason or "(as above)" in entry.reason
        assert named or shared, f"{column}: entry {entry.case!r} names no docs/findings script"
        for name in named:
            assert (FINDINGS / name).is_file(), f"{column}: {entry.case!r} names a missing {name}"


def test_page_names_no_script_that_does_not_exist() -> None:
    for name in set(re.findall(r"docs/findings/(\w+\.py)", PAGE)):
        assert (FINDINGS / name).is_file(), name
