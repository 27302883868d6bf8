"""The worked examples of the docs are real specs: each one runs through `bnconform run` and passes.

docs/spec-format.md (and docs/semantics.md, should it show one) marks each complete example with
`<!-- example: NAME -->` right before its ```yaml block. Each is written to a spec directory of
its own and run by the CLI on the torch and numpy backends, beside the built-in specs: every case
must pass on torch, and on numpy pass or be skipped for a capability numpy does not declare
(double_backward). Its literal goldens must also agree with the oracle. The tests are named
after the example, so a broken one names itself.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from bnconform.cases.goldens import golden_disagreements, has_goldens
from bnconform.cases.loader import load_file
from bnconform.cases.requirements import FEATURES
from bnconform.runners import cli
from tests.helpers import ROOT, write_spec

DOCS = ("spec-format.md", "semantics.md")
MARKER = re.compile(r"^<!-- example: ([A-Za-z0-9_-]+) -->[ \t]*\n\n?```yaml\n(.*?)^```", re.S | re.M)
ANY_MARKER = re.compile(r"^<!-- example:.*$", re.M)
MIN_EXAMPLES = 7  # one per family: precision, layout, autograd, checkpoints, modes, fold, shards


def _examples() -> tuple[list[tuple[str, str, str]], list[str]]:
    """(name, document, YAML text) of every marked example, in document order; and the markers
    (lines starting `<!-- example:`) that no ```yaml block follows."""
    found, orphans = [], []
    for doc in DOCS:
        text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
        blocks = MARKER.findall(text)
        found += [(name, doc, block) for name, block in blocks]
        if len(ANY_MARKER.findall(text)) != len(blocks):
            orphans += [f"docs/{doc}: {m}" for m in ANY_MARKER.findall(text)
                        if not any(m.startswith(f"<!-- example: {name} -->") for name, _ in blocks)]
    return found, orphans


EXAMPLES, ORPHANS = _examples()


def test_the_docs_show_an_example_per_new_family() -> None:
    assert not ORPHANS, f"markers without a ```yaml block right after them: {ORPHANS}"
    names = [name for name, _, _ in EXAMPLES]
    assert len(names) >= MIN_EXAMPLES, f"only {len(names)} marked examples in docs/{' and docs/'.join(DOCS)}: {names}"
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"example names used twice: {duplicates}"


def _skip_is_declared(message: str) -> bool:
    """A skip that names only capabilities (which numpy does not declare), not an unavailable backend."""
    match = re.fullmatch(r"numpy does not declare: ([^;]+)(; .+)?", message.strip())  # then its reasons
    return bool(match) and all(n.strip() in FEATURES for n in match.group(1).split(","))


@pytest.mark.parametrize(("name", "doc", "text"), EXAMPLES, ids=[name for name, _, _ in EXAMPLES])
def test_example_passes_on_torch_and_numpy(name: str, doc: str, text: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    where = f"docs/{doc}, example {name!r}"
    family = yaml.safe_load(text)["family"]
    spec = write_spec(tmp_path / "specs", f"{name}.yaml", text)
    cases = load_file(spec)
    assert any(has_goldens(c) for c in cases), f"{where}: no golden (a hand-derived literal) to show"
    for case in cases:
        problems = golden_disagreements(case)
        assert not problems, f"{where}: a golden disagrees with the oracle in {case.id}:\n" + "\n".join(problems)

    out = tmp_path / "out"
    code = cli.main(["run", "--backend", "torch", "--backend", "numpy", "--specs", str(spec.parent),
                     "--family", family, "--out", str(out), "-n", "0", "--progress", "off"])
    printed = capsys.readouterr()
    assert code == 0, f"{where}: bnconform run exited {code}\n{printed.out[-3000:]}\n{printed.err[-3000:]}"

    results = json.loads((out / "conformance.json").read_text(encoding="utf-8"))["results"]
    by_backend = {b: [r for r in results if r["backend"] == b] for b in ("torch", "numpy")}
    for backend, rows in by_backend.items():
        assert len(rows) == len(cases), f"{where}: {len(rows)} {backend} results for {len(cases)} cases"
    bad = [f"{r['spec']} on torch: {r['outcome']} {r['message']}" for r in by_backend["torch"] if r["outcome"] != "passed"]
    bad += [f"{r['spec']} on numpy: {r['outcome']} {r['message']}" for r in by_backend["numpy"]
            if r["outcome"] != "passed" and not (r["outcome"] == "skipped" and _skip_is_declared(r["message"]))]
    assert not bad, f"{where}:\n" + "\n".join(bad)
    assert any(r["outcome"] == "passed" for r in by_backend["numpy"]), f"{where}: nothing of it runs on numpy"
