"""`bnconform` console script.

`run`, `check` and `mutants` are one pytest session each, through bnconform's pytest plugin
(the same cells, options, manifests and outcomes as in a user's own pytest), followed by a
view over the report it wrote: the matrix, one backend's verdict per family, or the mutation
score. What the user typed is checked first, so a mistake is one line and exit 2 before any
case runs. Exit codes: 0 every selected cell ran and passed (or deviates as declared, or is
an expected failure); 1 a cell failed or errored; 2 usage, spec or --out error, or the run
was interrupted (no verdict).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import bnconform
from bnconform.runners.engine import options
from bnconform.runners.engine.options import BENCH, CHECK, FUZZ, MUTANTS, RUN, Settings

if TYPE_CHECKING:  # each command imports what it runs: `--version`, `compare` and usage errors stay quick
    from bnconform.runners.reports.results import RunReport

PACKAGE = Path(bnconform.__file__).parent
CELLS_MODULE = PACKAGE / "cases" / "test_conformance.py"
BENCH_MODULE = PACKAGE / "runners" / "bench" / "cases.py"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageProblem(Exception):
    """What the user typed cannot run (printed as one line, exit 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnconform", description="BatchNorm behaviour conformance suite")
    parser.add_argument("--version", action="version", version=f"bnconform {bnconform.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    options.add_cli_options(sub.add_parser(RUN, help="run the conformance cases and write the matrix"), RUN)
    options.add_cli_options(sub.add_parser(CHECK, help="one backend, the plugin author's view: verdict per family, "
                                                       "first failures"), CHECK)
    mut = sub.add_parser(MUTANTS, help="score the suite on deliberately broken backends: killed and diagnosed")
    mut.add_argument("--corpus", default=None, metavar="MODULE",
                     help="module with MUTANTS and CAUSE (default: the corpus shipped with bnconform)")
    mut.add_argument("--mutant", action="append", default=[], metavar="NAME", help="only this mutant (repeatable)")
    options.add_cli_options(mut, MUTANTS)
    options.add_cli_options(sub.add_parser(BENCH, help="time every backend against torch, kernel against kernel and "
                                                      "as called; write timing.json and timing.md"), BENCH)
    options.add_cli_options(sub.add_parser(FUZZ, help="property-based scenarios against the oracle within a time "
                                                     "budget; a failure is shrunk and kept as a spec and a script"), FUZZ)
    cmp_ = sub.add_parser("compare", help="what changed between two conformance (or two timing) reports")
    cmp_.add_argument("base", metavar="BASE", help="the earlier conformance.json or timing.json")
    cmp_.add_argument("new", metavar="NEW", help="the later report of the same kind")
    cmp_.add_argument("--threshold", type=float, default=0.0, metavar="F",
                      help="timing: a slowdown the 95%% interval is sure of is a regression; with F, only one sure to "
                      "exceed F (e.g. 0.05)")
    cmp_.add_argument("--allow-removed", action="store_true",
                      help="conformance: cells missing from NEW, or skipped in NEW but run in BASE, are not regressions")
    cmp_.add_argument("--json", metavar="FILE", help="also write the diff as JSON")
    cmp_.add_argument("--md", metavar="FILE", help="also write the Markdown (for a pull-request comment)")
    cmp_.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page (diff + new report)")
    mrg = sub.add_parser("merge", help="one report from the conformance.json of several runs: the shards of one "
                                       "selection (--shard I/N), or columns run on other machines")
    mrg.add_argument("reports", nargs="+", metavar="REPORT", help="a conformance.json (its shards, its columns)")
    mrg.add_argument("--out", default="reports", metavar="DIR",
                     help="directory for the merged reports, cleared of them first (default: reports)")
    mrg.add_argument("--html", action="store_true", help="also write conformance.html")
    mrg.add_argument("--junit", metavar="FILE", help="also write JUnit XML of the merged cells to FILE")
    return parser


def _importable_from_cwd() -> None:
    """`--backend pkg.module:attr` resolves from the current directory, here and in every worker."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH", "")) if p)


def _check_request(settings: Settings, command: str, in_process: bool) -> None:
    """Fail fast, before pytest starts, on what the user typed and on backends that cannot run
    (the plugin checks the same again, from the same cached specs, for users who run it from
    pytest; the backends' checked workers are handed to it when the cells run in this process)."""
    from bnconform.cases.loader import SpecError
    from bnconform.runners.backends import UnknownBackend
    from bnconform.runners.engine import manifest
    from bnconform.runners.engine.cells import (
        BackendProblem,
        EmptySelection,
        keep_for_this_process,
        preflight,
        selected_cases,
        selected_columns,
    )
    from bnconform.runners.engine.isolation import warm_up
    from bnconform.runners.reports import outdir

    try:
        columns = selected_columns(settings)
        # The workers' server starts now, so that its imports (torch's seconds) overlap the spec
        # loading below; ml_dtypes (a second more) only for a run of the whole library, whose
        # bfloat16 cases reach every worker (a narrower one imports it where a case needs it).
        warm_up(columns, bfloat16=not (settings.family or settings.case))
        cases = selected_cases(settings)
        hosts = preflight(settings, columns, cases)
        manifest.load(Path(p) for p in settings.manifest)
    except (SpecError, EmptySelection, UnknownBackend, manifest.ManifestError, BackendProblem) as exc:
        raise UsageProblem(str(exc)) from None
    try:  # only a run that can go ahead clears the older reports (a refused one leaves them be)
        outdir.prepare_reports(Path(settings.out), command, Path(settings.junit) if settings.junit else None)
    except outdir.OutDirError as exc:
        hosts.close()
        raise UsageProblem(str(exc)) from None
    if in_process:
        keep_for_this_process(settings, hosts)
    else:
        hosts.close()


def _needs_torch(command: str, why: str) -> None:
    """bench and fuzz measure against torch itself: without it they cannot say anything."""
    from bnconform.runners.backends import TORCH_MISSING, torch_installed

    if not torch_installed():
        raise UsageProblem(f"{command} {why}, and {TORCH_MISSING}")


def _plugins(*names: str) -> list[str]:
    """`-p NAME` for entry-point plugins, needed only where pytest's plugin autoloading is off."""
    return [a for n in names for a in ("-p", n)] if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") else []


def _pytest_base(module: Path) -> list[str]:
    """A pytest session of bnconform's own: none of the caller's pytest configuration or conftests."""
    return [str(module), "-c", os.devnull, "--rootdir", str(PACKAGE), "--noconftest", "--assert=plain", "-p", "no:cacheprovider",
            *_plugins("bnconform")]


def _interrupt_on_sigterm() -> None:
    """A CI job cancelled with SIGTERM stops like Ctrl-C: the report is written, marked interrupted."""
    def handler(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _engine(args: argparse.Namespace, command: str, backends: Optional[list[str]] = None) -> tuple[int, Optional[RunReport]]:
    """One pytest session over the selected cells; the pytest exit code made a gate, and the report."""
    import pytest

    from bnconform.runners.reports.results import RunReport

    _importable_from_cwd()
    settings = Settings.from_args(args, command)
    if backends is not None:
        settings.backend = backends
    in_process = str(args.workers) in ("0", "")
    if settings.keep_order and not in_process:
        raise UsageProblem(f"--keep-order runs the cases in the given order, in one process per backend column: "
                           f"not with -n/--workers {args.workers}")
    _interrupt_on_sigterm()
    _check_request(settings, command, in_process)
    argv = _pytest_base(CELLS_MODULE) + ["-v" if args.verbose else "-q"]
    argv += ["-rN", "--tb=no"]  # each cell's message is in the summary by cause and in the reports
    if not in_process:
        argv += [*_plugins("xdist"), "-n", str(args.workers), "--max-worker-restart", "1000"]
    argv += options.pytest_args(args, command)
    if command == MUTANTS:  # rerunning failures alone changes no outcome, so no score: not worth a worker each
        argv.append("--bnconform-no-rerun-alone")
    if backends is not None:
        argv += [a for name in backends for a in ("--bnconform-backend", name)]
    code = int(pytest.main(argv))
    path = Path(settings.out) / "conformance.json"
    report = RunReport.read(path) if path.exists() else None
    if code in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) and report is None:
        print("bnconform: the run wrote no report", file=sys.stderr)
        return EXIT_USAGE, None
    if code == pytest.ExitCode.OK:
        return EXIT_OK, report
    if code == pytest.ExitCode.TESTS_FAILED:
        return EXIT_FAILED, report
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("bnconform: no case matched the selection", file=sys.stderr)
    return EXIT_USAGE, report


def run(args: argparse.Namespace) -> int:
    return _engine(args, RUN)[0]


def check(args: argparse.Namespace) -> int:
    """The check view of one backend (printed and written to check.md); the exit code is the engine's,
    so manifests, profiles and --strict mean exactly what they mean in `run`."""
    from bnconform.runners.engine.cells import selected_columns
    from bnconform.runners.reports.check import check_text

    if len(args.backend) != 1:
        raise UsageProblem("check takes exactly one --backend")
    code, report = _engine(args, CHECK)
    if report is None:
        return code
    text = check_text(report, selected_columns(Settings.from_args(args, CHECK))[0].name)
    print(text)
    (Path(args.out) / "check.md").write_text(text + "\n", encoding="utf-8")
    return code


def mutants(args: argparse.Namespace) -> int:
    """Mutation score; exit 1 when a mutant survives or fewer than 90% are diagnosed correctly."""
    from bnconform.runners.backends import MUTANTS_MODULE
    from bnconform.runners.reports.mutants import load_corpus, report, score, summary

    _importable_from_cwd()
    module = args.corpus or MUTANTS_MODULE
    try:
        corpus, causes = load_corpus(module)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageProblem(f"corpus {module}: {exc}") from None
    names = args.mutant or list(corpus)
    unknown = [n for n in names if n not in corpus]
    if unknown:
        raise UsageProblem(f"unknown mutant {unknown}; the corpus has {', '.join(corpus)}")
    code, run_report = _engine(args, MUTANTS, backends=[f"{n}={module}:{n}" for n in names])
    if run_report is None:
        return code
    scores = [score(n, causes[n], [r for r in run_report.results if r.backend == n]) for n in names]
    for m in scores:
        print(f"{m.name}: {'killed' if m.killed else 'SURVIVED'} ({m.failed}/{m.cases} cases failed); "
              f"diagnosis: {', '.join(m.top_diagnoses) or 'none'}")
    text, data = report(scores)
    out = Path(args.out)
    (out / "mutants.md").write_text(text, encoding="utf-8")
    (out / "mutants.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    s = summary(scores)
    print(f"\nmutation score: killed {s['killed']}/{s['total']}, correctly diagnosed "
          f"{s['diagnosed']}/{s['with_known_cause']}")
    print(f"wrote {out / 'mutants.md'}\nwrote {out / 'mutants.json'}")
    if run_report.interrupted:
        return EXIT_USAGE
    ok = not s["survivors"] and s["diagnosed"] >= 0.9 * s["with_known_cause"]
    return EXIT_OK if ok else EXIT_FAILED


def bench(args: argparse.Namespace) -> int:
    """Time the backends (pytest on the bench cases, in this process), then write timing.json and timing.md."""
    import tempfile

    import pytest

    from bnconform.runners.backends import UnknownBackend
    from bnconform.runners.bench.cases import RAW_ENV
    from bnconform.runners.bench.workloads import SHAPES, shape_id
    from bnconform.runners.engine.cells import selected_columns
    from bnconform.runners.reports import outdir
    from bnconform.runners.reports.timing import write

    _importable_from_cwd()
    _needs_torch("bench", "times every backend against torch's kernel")
    names = list(dict.fromkeys(["torch"] + (args.backend or ["numpy", "cffi"])))
    try:
        selected_columns(Settings(backend=names))
        out = outdir.prepare(Path(args.out), outdir.REPORT_FILES[BENCH])
    except (UnknownBackend, outdir.OutDirError) as exc:
        raise UsageProblem(str(exc)) from None
    unknown = [s for s in args.shape if s not in {shape_id(x) for x in SHAPES}]
    if unknown:
        raise UsageProblem(f"unknown shape {unknown}; shapes: {', '.join(shape_id(x) for x in SHAPES)}")
    threads = args.threads
    if not threads:
        import torch

        threads = torch.get_num_threads()
    machine = {"cpu_count": os.cpu_count() or 1, "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "bench.jsonl"
        raw.touch()
        os.environ[RAW_ENV] = str(raw)
        argv = _pytest_base(BENCH_MODULE) + ["-p", "no:xdist", "-q", f"--bnconform-threads={threads}",
                                             f"--bnconform-max-time={args.max_time}", *(["--bnconform-sweep"] * args.sweep)]
        argv += [a for n in names for a in ("--bnconform-backend", n)] + [a for s in args.shape for a in ("--bnconform-shape", s)]
        code = int(pytest.main(argv))
        machine["load_after"] = os.getloadavg()[0]
        if not raw.read_text(encoding="utf-8").strip():
            print("bnconform: the benchmark run wrote no results", file=sys.stderr)
            return EXIT_FAILED
        paths = write(raw, out, threads, names, machine)
    if args.html:
        from bnconform.runners.reports.html import page

        html_path = out / "timing.html"
        html_path.write_text(page("BatchNorm timing", timing=json.loads(paths[0].read_text())), encoding="utf-8")
        paths.append(html_path)
    for p in paths:
        print(f"wrote {p}")
    return EXIT_OK if code == 0 else EXIT_FAILED


def compare_reports(args: argparse.Namespace) -> int:
    """Print the diff as Markdown; exit 1 on any regression, 2 on unreadable input."""
    from bnconform.runners.reports.compare import compare, load, markdown
    from bnconform.runners.reports.results import RunReport

    try:
        diff = compare(Path(args.base), Path(args.new), args.threshold, args.allow_removed)
    except (ValueError, KeyError) as exc:
        raise UsageProblem(str(exc)) from None
    text = markdown(diff)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(diff, indent=2) + "\n", encoding="utf-8")
    if args.md:
        Path(args.md).write_text(text + "\n", encoding="utf-8")
    if args.html:
        from bnconform.runners.reports.html import page

        new = load(Path(args.new))
        html = (page("bnconform compare", diff=diff, conformance=RunReport.from_json(new)) if diff["kind"] == "conformance"
                else page("bnconform compare", diff=diff, timing=new))
        Path(args.html).write_text(html, encoding="utf-8")
    return EXIT_FAILED if diff["regressions"] else EXIT_OK


def merge_reports(args: argparse.Namespace) -> int:
    """One report from several runs' conformance.json (runners/reports/merge.py), written as `run`
    writes its own; the exit code is the one a single run over those cells would give."""
    from bnconform.runners.reports import outdir
    from bnconform.runners.reports.matrix import terminal_summary, write_all
    from bnconform.runners.reports.merge import MergeError, merge

    try:
        report = merge([Path(p) for p in args.reports])  # read before --out is cleared: an input may live there
    except MergeError as exc:
        raise UsageProblem(str(exc)) from None
    out, junit = Path(args.out), Path(args.junit).resolve() if args.junit else None
    try:
        outdir.prepare_reports(out, "merge", Path(args.junit) if args.junit else None)
        paths = write_all(report, out, html=args.html, junit=junit)
    except (outdir.OutDirError, OSError) as exc:
        raise UsageProblem(str(exc)) from None
    print(f"bnconform: merged {len(args.reports)} reports: {', '.join(args.reports)}")
    print(terminal_summary(report))
    for error in report.unchecked:
        print(f"error: {error}")
    for path in paths:
        print(f"wrote {path}")
    if report.interrupted or report.unchecked:
        return EXIT_USAGE
    return EXIT_FAILED if report.failed() else EXIT_OK


def _number(option: str, text: object, kind: Callable[[str], float], ok: Callable[[float], bool], what: str) -> float:
    """A numeric option's value, or a one-line usage problem."""
    try:
        value = kind(str(text))
    except ValueError:
        raise UsageProblem(f"{option} {text}: must be {what}") from None
    if not (math.isfinite(value) and ok(value)):
        raise UsageProblem(f"{option} {text}: must be {what}")
    return value


def fuzz(args: argparse.Namespace) -> int:
    """Property-based scenarios on one backend (runners/fuzz/): exit 1 with the files of a failure."""
    from bnconform.runners.fuzz.command import FuzzUsageError, Request
    from bnconform.runners.fuzz.command import run as run_fuzz
    from bnconform.runners.fuzz.engine import new_seed

    _importable_from_cwd()
    if len(args.backend) != 1:
        raise UsageProblem("fuzz takes exactly one --backend")
    _needs_torch("fuzz", "keeps a failure only where torch passes the same scenario")
    budget = _number("--budget", args.budget, float, lambda v: v > 0, "a positive number of seconds")
    seed = (int(_number("--seed", args.seed, int, lambda v: v >= 0, "a non-negative integer")) if args.seed is not None
            else new_seed())
    request = Request(args.backend[0], budget, seed, Path(args.out), args.timeout, args.progress)
    _interrupt_on_sigterm()
    try:
        return run_fuzz(request)
    except FuzzUsageError as exc:
        raise UsageProblem(str(exc)) from None


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    RUN: run, CHECK: check, MUTANTS: mutants, BENCH: bench, FUZZ: fuzz, "compare": compare_reports,
    "merge": merge_reports,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageProblem as exc:
        print(f"bnconform: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before any case ran (a backend slow to load, say): no verdict, no report
        print("bnconform: interrupted before any case ran", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `bnconform check ... | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
