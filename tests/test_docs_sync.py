"""The docs say what the code does: names in the docs are checked against the code, both ways.

Deviation names (docs/diagnosis.md), capability features and conventions (docs/backends.md,
docs/spec-format.md), command-line and pytest options (README.md, docs/ci.md), the README's
layout table (every module), and no reference to a file outside the repository.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from bnconform.cases.deviations import DEVIATIONS
from bnconform.cases.requirements import FEATURES
from bnconform.runners import cli
from bnconform.runners.backends.protocol import Conventions
from bnconform.runners.engine.options import OPTIONS, PREFIX, Settings
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md")}


def _table_names(text: str) -> set[str]:
    """The backticked names in the first column of a Markdown table."""
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.M))


def test_every_deviation_is_in_the_diagnosis_table_and_nothing_else_is() -> None:
    assert _table_names(DOCS["diagnosis.md"]) == set(DEVIATIONS)


@pytest.mark.parametrize("doc", ["backends.md", "spec-format.md"])
def test_every_capability_feature_is_documented(doc: str) -> None:
    text = DOCS[doc]
    missing = [f for f in FEATURES if f"`{f}`" not in text]
    assert not missing, f"{doc} does not name {missing}"


def test_the_conventions_table_has_every_field_and_only_those() -> None:
    section = DOCS["backends.md"].split("## Conventions", 1)[1].split("\n## ", 1)[0]
    assert _table_names(section) == {f.name for f in dataclasses.fields(Conventions)}


def _cli_flags() -> set[str]:
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    flags = set()
    for command in sub.choices.values():  # type: ignore[union-attr]
        for action in command._actions:
            flags.update(s for s in action.option_strings if s.startswith("--") and s != "--help")
    return flags


def test_every_command_line_option_is_in_the_readme() -> None:
    missing = sorted(f for f in _cli_flags() if f"`{f}" not in README)
    assert not missing, f"README.md does not mention {missing}"


def test_every_bnconform_command_in_the_readme_parses() -> None:
    """The reverse direction: what the README shows a user typing is accepted by the parser."""
    lines = [line.split("#")[0].strip() for line in README.splitlines() if line.startswith("bnconform ")]
    assert len(lines) > 10
    for line in lines:
        try:
            cli._parser().parse_args(shlex.split(line)[1:])
        except SystemExit:  # argparse's way to reject
            pytest.fail(f"README shows a command the CLI rejects: {line}")


def test_every_pytest_option_is_in_docs_ci_and_the_settings_match_the_table() -> None:
    flags = [f"--{PREFIX}{o.name}" for o in OPTIONS if o.pytest]
    missing = [f for f in flags if f"`{f}" not in DOCS["ci.md"]]
    assert not missing, f"docs/ci.md does not name {missing}"
    documented = set(re.findall(r"`(--bnconform-[a-z-]+)", DOCS["ci.md"]))
    assert documented <= set(flags), f"docs/ci.md names options that do not exist: {documented - set(flags)}"
    assert {f.name for f in dataclasses.fields(Settings)} == {o.dest for o in OPTIONS if o.pytest}


def _modules() -> list[Path]:
    """Every module of the package, but the __init__.py files that hold only a docstring."""
    out = []
    for top in ("cases", "runners", "bnconform"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if top == "bnconform" and path.parent != ROOT / "bnconform":
                continue  # the links to cases/ and runners/
            if path.name == "__init__.py" and len(path.read_text().strip().splitlines()) <= 3:
                continue
            out.append(path.relative_to(ROOT))
    return out


def test_the_readme_layout_table_lists_every_module() -> None:
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in layout.splitlines() if line.startswith("| `")]
    missing = []
    for module in _modules():
        parent = f"`{module.parent.as_posix()}/`"
        name = module.name if module.parent.name != "c" else f"c/{module.name}"
        owner = next((r for r in rows if r.split("|")[1].strip() == parent), None)
        if module.parent.name == "c":
            owner = next(r for r in rows if r.split("|")[1].strip() == "`runners/backends/`")
        if owner is None or f"`{name}`" not in owner:
            missing.append(module.as_posix())
    assert not missing, f"README's layout table does not list {missing}"


def test_nothing_in_the_product_cites_a_path_outside_the_repository() -> None:
    files = [ROOT / "README.md", ROOT / "conftest.py", ROOT / "Makefile", ROOT / "tox.ini", ROOT / ".ci" / "run"]
    files += [p for top in ("cases", "runners", "specs", "tests", "docs", "examples") for p in (ROOT / top).rglob("*")
              if p.is_file() and p.suffix in (".py", ".yaml", ".md", ".c", ".h", ".toml") and p != Path(__file__)]
    cites = [p.relative_to(ROOT).as_posix() for p in files
             if "BATCHNORM.md" in (text := p.read_text(encoding="utf-8")) or "../shared" in text]
    assert not cites, f"these cite a file outside the repository: {cites}"


def _manifest_examples() -> list[tuple[str, int, str]]:
    """Every YAML block of the docs that is a manifest (it has an `expected:` list)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"```yaml\n(.*?)```", text, re.S):
            if re.search(r"^expected:", match.group(1), re.M):
                found.append((path.name, text[: match.start()].count("\n") + 1, match.group(1)))
    return found


def test_every_manifest_example_in_the_docs_is_a_valid_manifest(tmp_path: Path) -> None:
    from bnconform.runners.engine.manifest import load

    examples = _manifest_examples()
    assert len(examples) >= 2  # backends.md and ci.md show one each
    for name, line, block in examples:
        path = tmp_path / f"{name}-{line}.yaml"
        path.write_text(block, encoding="utf-8")
        assert load([path]), f"{name} line {line}"
