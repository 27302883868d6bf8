"""conformance.md groups what a CI user acts on by cause: its size follows the causes, not the
cells, and every non-passing cell can still be found in it."""
from __future__ import annotations

import itertools
import re

import pytest

from bnconform.runners.reports.caseids import collapse
from bnconform.runners.reports.causes import group, normalise
from bnconform.runners.reports.matrix import markdown
from bnconform.runners.reports.results import BackendInfo, CaseResult, RunReport


def expand(pattern: str) -> set[str]:
    """What a collapsed pattern stands for: the product of its braced values."""
    match = re.fullmatch(r"(?P<base>[^\[]+)\[(?P<grid>.*)\]", pattern)
    if match is None or "{" not in pattern:
        return {pattern}
    parts = re.findall(r"(\w+)=(\{[^}]*\}|[^,]*)", match["grid"])
    choices = [[(k, v) for v in (vs[1:-1].split(",") if vs.startswith("{") else [vs])] for k, vs in parts]
    return {match["base"] + "[" + ",".join(f"{k}={v}" for k, v in point) + "]" for point in itertools.product(*choices)}


def grid(base: str, **axes: list[str]) -> list[str]:
    keys = list(axes)
    return [base + "[" + ",".join(f"{k}={v}" for k, v in zip(keys, values)) + "]"
            for values in itertools.product(*axes.values())]


@pytest.mark.parametrize("ids", [
    grid("conditions/tracked", training=["True"], dim=["1", "2", "3"], dtype=["float32", "float64"]),
    grid("conditions/tracked", training=["True", "False"], dim=["1", "2", "3"], dtype=["float32", "float64"])[:-1],
    grid("m/v", momentum=["0.1", "None"], dim=["1", "2"])[::2] + ["m/plain_golden", "m/odd[x=[1, 2]]"],
    [],
])
def test_collapsed_patterns_stand_for_exactly_the_ids(ids: list[str]) -> None:
    collapsed = collapse(ids)
    assert sorted(i for c in collapsed for i in c.ids) == sorted(ids)  # each id in exactly one pattern
    for c in collapsed:
        assert expand(c.text) == set(c.ids), c.text


def test_a_full_grid_is_one_pattern_and_a_holed_grid_a_few() -> None:
    full = grid("conditions/tracked", training=["True"], dim=["1", "2", "3"], dtype=["float32", "float64"])
    assert [c.text for c in collapse(full)] == ["conditions/tracked[training=True,dim={1,2,3},dtype={float32,float64}]"]
    holed = grid("s/r", dim=["1", "2", "3"], dtype=["float32", "float64"])[:-1]
    assert [c.text for c in collapse(holed)] == ["s/r[dim={1,2},dtype={float32,float64}]", "s/r[dim=3,dtype=float32]"]


def _failed(spec: str, backend: str, message: str, diagnosis: list[str] | None = None,
            outcome: str = "failed") -> CaseResult:
    return CaseResult(spec=spec, family=spec.split("/")[0], backend=backend, outcome=outcome, message=message,
                      diagnosis=diagnosis or [])


def test_normalising_takes_out_numbers_ids_names_and_the_reference() -> None:
    a = _failed("eps/values[eps=0.1,dim=2]", "mine", "running_var differs after step 2 (forward) [expected: oracle, "
                "float64]\n  max abs error 1.2e-02")
    b = _failed("bessel/nc_golden", "other", "running_var differs after step 1 (forward) [expected: golden, float32]")
    assert normalise(a) == normalise(b) == "running_var differs after step N (forward)"
    crash = _failed("x/y", "mine", "worker crashed: signal 11 (SIGSEGV) during step 3 (forward) at 0x7f3a2b", outcome="error")
    assert normalise(crash) == "worker crashed: signal N (SIGSEGV) during step N (forward) at 0x…"
    named = _failed("x/y[dim=1]", "mine", "mine could not run x/y[dim=1]: float16 missing", outcome="error")
    assert normalise(named) == "<backend> could not run <case>: float16 missing"
    headed = _failed("x/y", "b", "fails even under its declared conventions (momentum=decay):\noutput differs after step 4")
    assert normalise(headed) == "fails even under its declared conventions (momentum=decay): output differs after step N"


def test_causes_are_diagnoses_or_their_combination_else_the_message() -> None:
    results = [_failed(f"f/a[dim={d}]", "b", "x differs", ["eps_omitted"]) for d in (1, 2)]
    results += [_failed("f/c", "b", "x differs", ["momentum_inverted", "eps_omitted"]),
                _failed("f/d", "c", "x differs", ["eps_omitted", "momentum_inverted"]),
                _failed("f/e", "b", "timed out after 5 s in step 1 (forward)", outcome="error"),
                _failed("f/f", "c", "timed out after 9 s in step 3 (forward)", outcome="error"),
                _failed("f/g", "b", "passed", outcome="passed")]
    causes = {c.title: c for c in group(results)}
    assert set(causes) == {"eps_omitted", "eps_omitted + momentum_inverted", "timed out after N s in step N (forward)"}
    assert causes["eps_omitted + momentum_inverted"].backends() == ["b", "c"]
    assert causes["timed out after N s in step N (forward)"].outcomes("c") == {"error": 1}


def _report(results: list[CaseResult]) -> RunReport:
    names = list(dict.fromkeys(r.backend for r in results))
    return RunReport(suite_version="t", backends=[BackendInfo(n, "1", []) for n in names], results=results)


def _many(failing_specs: int) -> RunReport:
    """torch passing beside a backend failing `failing_specs` x 6 grid cells for one diagnosed cause,
    a handful erroring for one undiagnosed cause, and one declared deviation."""
    ids = [i for s in range(failing_specs) for i in grid(f"fam{s % 3}/spec{s}", dim=["1", "2", "3"],
                                                         dtype=["float32", "float64"])]
    results = [_failed(i, "torch", "", outcome="passed") for i in ids]
    for n, i in enumerate(ids):
        if n % 7 == 3:
            results.append(_failed(i, "mine", f"timed out after {n} s in step {n % 4} (forward)", outcome="error"))
        elif n % 7 == 5:
            results.append(_failed(i, "mine", "deviates (declared): momentum is a decay", outcome="deviates"))
        else:
            results.append(_failed(i, "mine", f"running_var differs after step {n % 3} (forward)\n  error {n}",
                                   ["biased_running_var"]))
    return _report(results)


def test_the_markdown_grows_with_causes_not_cells() -> None:
    small, large = markdown(_many(4)), markdown(_many(40))
    assert small.count("\n### ") == large.count("\n### ") == 3  # two causes to act on, one declared reason
    assert large.count("```") == small.count("```") == 4  # one example message per cause to act on
    assert len(large.splitlines()) < 2 * len(small.splitlines()) + 80  # 10x the cells, not 10x the lines
    assert large.count("running_var differs") == 1


def test_every_non_passing_cell_can_be_found_in_the_markdown() -> None:
    report = _many(12)
    md = markdown(report)
    listed: set[str] = set()
    for family in report.families():
        section = md.split(f"\n## {family}\n", 1)[1].split("\n## ", 1)[0]
        listed |= {i for p in re.findall(r"^\| `([^`]+)`", section, flags=re.M) for i in expand(p)}
    assert listed == {r.spec for r in report.results if r.outcome != "passed"}


def test_a_family_that_passes_everywhere_is_one_line() -> None:
    report = _report([_failed("fam/a", "torch", "", outcome="passed"), _failed("fam/a", "numpy", "", outcome="passed")])
    md = markdown(report)
    assert "## fam\n\nAll 1 cases pass on every backend." in md and "Failures by cause" not in md


def test_a_short_backend_name_is_replaced_as_a_token_and_error_mismatches_group_by_types() -> None:
    one = _failed("errors/a[dim=1]", "t", "wrong exception at step 1 (forward): expected ValueError matching "
                  "/more than 1 value/, got RuntimeError: Expected more than 1 value per channel, got input size [1, 2]")
    two = _failed("errors/b", "t", "wrong exception at step 2 (forward): expected ValueError matching "
                  "/expected .*D input/, got RuntimeError: expected 4D input (got 3D input)")
    assert normalise(one) == normalise(two) == "wrong exception at step N (forward): expected ValueError, got RuntimeError"
    words = _failed("errors/c", "t", "step 1 (forward) raises ValueError as expected; message differs: "
                    "expected /x/, got 'bad input'")
    assert normalise(words) == "step N (forward) raises ValueError as expected; message differs"


def test_the_terminal_summary_lists_causes_not_cells() -> None:
    from bnconform.runners.reports.matrix import terminal_summary
    from bnconform.runners.reports.results import RunReport

    results = [_failed(f"conditions/c{i}", "b", "running_var differs after step 1 (forward)\n"
                       f"reproduce: bnconform run --backend b --case conditions/c{i}") for i in range(50)]
    for r in results:
        r.diagnosis = ["biased_running_var"]
    text = terminal_summary(RunReport(suite_version="x", backends=[], results=results))
    assert "what to act on, by cause:\n[1] 50 cells (b): biased_running_var\n  e.g. conditions/c0 on b:" in text
    assert text.count("reproduce:") == 1 and "[2]" not in text
