"""`bnconform` console script: run the conformance matrix and write its reports.

`bnconform run` is pytest underneath (the same cases, ids and options as `pytest`), with the
exit status made into a CI gate: 0 nothing failed, 1 a case failed or errored, 2 usage or
spec errors.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import pytest

from cases.loader import BUILTIN_SPECS, SpecError, load_cases
from runners import manifest
from runners.backends import UnknownBackend, resolve
from runners.plugin import split_alias

ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnconform", description="BatchNorm behaviour conformance suite")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the conformance cases and write the matrix")
    run.add_argument("--backend", action="append", default=[], metavar="NAME",
                     help="torch, torch-cuda, numpy or package.module:attr (repeatable; default: built-ins available here)")
    run.add_argument("--specs", action="append", default=[], metavar="DIR", help="extra spec directory (repeatable)")
    run.add_argument("--case", action="append", default=[], metavar="ID", help="only this case id or glob (repeatable)")
    run.add_argument("--exclude", action="append", default=[], metavar="ID", help="leave out this case id or glob (repeatable)")
    run.add_argument("--family", action="append", default=[], metavar="NAME", help="only this family (repeatable)")
    run.add_argument("--manifest", action="append", default=[], metavar="FILE",
                     help="expected-deviation manifest (YAML): matching cells are xfailed (repeatable)")
    run.add_argument("--strict", action="store_true", help="a manifest entry that passes (xpassed) fails the gate")
    run.add_argument("--out", default="reports", metavar="DIR", help="report directory (default: reports)")
    run.add_argument("-n", "--workers", default="0", metavar="N",
                     help="pytest-xdist workers: a number or 'auto' (default 0: in-process)")
    run.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    run.add_argument("--html", action="store_true", help="also write conformance.html (self-contained)")
    bench = sub.add_parser("bench", help="time every backend with pytest-benchmark; write timing.json and timing.md")
    bench.add_argument("--backend", action="append", default=[], metavar="NAME",
                       help="backend to time (repeatable; default: torch, numpy, cffi; torch is always timed, as the reference)")
    bench.add_argument("--out", default="reports", metavar="DIR", help="report directory (default: reports)")
    bench.add_argument("--threads", type=int, default=0, metavar="N", help="threads for every backend (default: torch's)")
    bench.add_argument("--shape", action="append", default=[], metavar="NxCx...", help="only this shape, e.g. 4x8x4x4 (repeatable)")
    bench.add_argument("--max-time", type=float, default=0.5, metavar="S", help="seconds per benchmark beyond 5 rounds (default 0.5)")
    bench.add_argument("--html", action="store_true", help="also write timing.html with the chart")
    cmp_ = sub.add_parser("compare", help="what changed between two conformance (or two timing) reports")
    cmp_.add_argument("base", metavar="BASE", help="the earlier conformance.json or timing.json")
    cmp_.add_argument("new", metavar="NEW", help="the later report of the same kind")
    cmp_.add_argument("--threshold", type=float, default=0.10, metavar="F",
                      help="timing: a median slower by more than this fraction is a regression (default 0.10)")
    cmp_.add_argument("--json", metavar="FILE", help="also write the diff as JSON")
    cmp_.add_argument("--md", metavar="FILE", help="also write the Markdown (for a pull-request comment)")
    cmp_.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page (diff + new report)")
    chk = sub.add_parser("check", help="one backend, the plugin author's view: verdict per family, first failures")
    chk.add_argument("--backend", required=True, metavar="NAME", help="the backend to check")
    chk.add_argument("--specs", action="append", default=[], metavar="DIR", help="extra spec directory (repeatable)")
    chk.add_argument("--family", action="append", default=[], metavar="NAME", help="only this family (repeatable)")
    mut = sub.add_parser("mutants", help="score the suite on deliberately broken backends: killed and diagnosed")
    mut.add_argument("--corpus", default="tests.mutants", metavar="MODULE",
                     help="module with MUTANTS and CAUSE (default: tests.mutants)")
    mut.add_argument("--mutant", action="append", default=[], metavar="NAME", help="only this mutant (repeatable)")
    mut.add_argument("--specs", action="append", default=[], metavar="DIR", help="extra spec directory (repeatable)")
    mut.add_argument("--out", default="reports", metavar="DIR", help="writes mutants.md and mutants.json here")
    return parser


def compare_reports(args: argparse.Namespace) -> int:
    """Print the diff as Markdown; exit 1 on any regression, 2 on unreadable input."""
    import json

    from runners.compare_reports import compare, load, markdown

    try:
        diff = compare(Path(args.base), Path(args.new), args.threshold)
    except (ValueError, KeyError) as exc:
        print(f"bnconform: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = markdown(diff)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(diff, indent=2) + "\n", encoding="utf-8")
    if args.md:
        Path(args.md).write_text(text + "\n", encoding="utf-8")
    if args.html:
        from runners.html_report import page
        from runners.results import RunReport

        new = load(Path(args.new))
        kwargs = {"conformance": RunReport.from_json(new)} if diff["kind"] == "conformance" else {"timing": new}
        Path(args.html).write_text(page("bnconform compare", diff=diff, **kwargs), encoding="utf-8")
    return EXIT_FAILED if diff["regressions"] else EXIT_OK


def check_backend(args: argparse.Namespace) -> int:
    """Print the check report; exit 1 when a case failed."""
    from runners.check import check

    _importable_from_cwd()
    try:
        cases = load_cases([BUILTIN_SPECS] + [Path(d) for d in args.specs])
        backend = resolve(args.backend)
    except (SpecError, UnknownBackend) as exc:
        print(f"bnconform: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.family:
        cases = [c for c in cases if c.family in args.family]
    text, ok = check(args.backend, backend, cases)
    print(text)
    return EXIT_OK if ok else EXIT_FAILED


def mutants(args: argparse.Namespace) -> int:
    """Mutation score; exit 1 when a mutant survives or fewer than 90% are diagnosed correctly."""
    import json

    from runners.mutation import load_corpus, report, score, summary

    _importable_from_cwd()
    sys.path.insert(0, str(ROOT))  # the corpus lives in tests/
    try:
        cases = load_cases([BUILTIN_SPECS] + [Path(d) for d in args.specs])
        corpus, causes = load_corpus(args.corpus)
    except (SpecError, ImportError, AttributeError, ValueError) as exc:
        print(f"bnconform: {exc}", file=sys.stderr)
        return EXIT_USAGE
    names = args.mutant or list(corpus)
    unknown = [n for n in names if n not in corpus]
    if unknown:
        print(f"bnconform: unknown mutant {unknown}; corpus has {', '.join(corpus)}", file=sys.stderr)
        return EXIT_USAGE
    scores = []
    for name in names:
        scores.append(score(name, corpus[name], causes[name], cases))
        m = scores[-1]
        print(f"{name}: {'killed' if m.killed else 'SURVIVED'} ({m.failed}/{m.cases} cases failed); "
              f"diagnosis: {', '.join(m.top_diagnoses) or 'none'}", flush=True)
    text, data = report(scores)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutants.md").write_text(text)
    (out / "mutants.json").write_text(json.dumps(data, indent=2) + "\n")
    s = summary(scores)
    print(f"\nmutation score: killed {s['killed']}/{s['total']}, correctly diagnosed "
          f"{s['diagnosed']}/{s['with_known_cause']}")
    print(f"wrote {out / 'mutants.md'}\nwrote {out / 'mutants.json'}")
    ok = not s["survivors"] and s["diagnosed"] >= 0.9 * s["with_known_cause"]
    return EXIT_OK if ok else EXIT_FAILED


def _pytest_args(args: argparse.Namespace) -> list[str]:
    out = [
        str(ROOT / "cases" / "test_conformance.py"),
        "--rootdir", str(ROOT),
        "-p", "no:cacheprovider",
        "--report-dir", str(Path(args.out).resolve()),
        "-rfE",
        "-v" if args.verbose else "-q",
    ]
    if args.workers not in ("0", ""):
        out += ["-n", args.workers]
    for flag in ("backend", "specs", "case", "exclude", "family", "manifest"):
        for value in getattr(args, flag):
            out += [f"--{flag}", str(Path(value).resolve()) if flag in ("specs", "manifest") else value]
    if args.strict:
        out.append("--strict-manifest")
    return out


def _importable_from_cwd() -> None:
    """`--backend pkg.module:attr` resolves from the current directory, here and in xdist workers."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH", "")) if p)


def run(args: argparse.Namespace) -> int:
    _importable_from_cwd()
    try:  # fail fast, before pytest starts, on what the user typed
        load_cases([BUILTIN_SPECS] + [Path(d) for d in args.specs])
        for name in args.backend:
            resolve(split_alias(name)[1])
        manifest.load(Path(p) for p in args.manifest)
    except (SpecError, UnknownBackend, manifest.ManifestError) as exc:
        print(f"bnconform: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code = int(pytest.main(_pytest_args(args)))
    report = Path(args.out) / "conformance.json"
    if args.html and report.exists():
        from runners.html_report import page
        from runners.results import RunReport

        out = Path(args.out) / "conformance.html"
        out.write_text(page("BatchNorm conformance", conformance=RunReport.read(report)), encoding="utf-8")
        print(f"wrote {out}")
    if code == 0:
        return EXIT_OK
    if code == 1:
        return EXIT_FAILED
    if code == 5:
        print("bnconform: no case matched the selection", file=sys.stderr)
    return EXIT_USAGE


def bench(args: argparse.Namespace) -> int:
    """Time the backends (pytest-benchmark), then write timing.json and timing.md."""
    import tempfile

    from runners.bench_setup import SHAPES, shape_id
    from runners.timing_report import write

    _importable_from_cwd()
    names = list(dict.fromkeys(["torch"] + (args.backend or ["numpy", "cffi"])))
    try:
        for name in names:
            resolve(name)
    except UnknownBackend as exc:
        print(f"bnconform: {exc}", file=sys.stderr)
        return EXIT_USAGE
    unknown = [s for s in args.shape if s not in {shape_id(x) for x in SHAPES}]
    if unknown:
        print(f"bnconform: unknown shape {unknown}; shapes: {', '.join(shape_id(x) for x in SHAPES)}", file=sys.stderr)
        return EXIT_USAGE
    threads = args.threads
    if not threads:
        import torch

        threads = torch.get_num_threads()
    for var in [v for v in os.environ if v.startswith("PYTEST_XDIST_")]:
        del os.environ[var]  # launched from an xdist worker: benchmarks would be disabled
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "benchmark.json"
        pytest_args = [
            str(ROOT / "runners" / "bench_cases.py"), "--rootdir", str(ROOT), "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
            f"--benchmark-json={raw}", "--benchmark-min-rounds=5", f"--benchmark-max-time={args.max_time}",
            "--benchmark-warmup=on", "--benchmark-warmup-iterations=1", "--benchmark-disable-gc",
            "--benchmark-columns=median,min,max,rounds", "--benchmark-sort=name",
            f"--bench-threads={threads}",
        ] + [f"--bench-backend={n}" for n in names] + [f"--bench-shape={s}" for s in args.shape]
        code = int(pytest.main(pytest_args))
        if not raw.exists():
            print("bnconform: the benchmark run wrote no results", file=sys.stderr)
            return EXIT_FAILED
        paths = write(raw, Path(args.out), threads, names)
    if args.html:
        import json as _json

        from runners.html_report import page

        out = Path(args.out) / "timing.html"
        out.write_text(page("BatchNorm timing", timing=_json.loads(paths[0].read_text())), encoding="utf-8")
        paths.append(out)
    for p in paths:
        print(f"wrote {p}")
    return EXIT_OK if code == 0 else EXIT_FAILED


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "bench":
        return bench(args)
    if args.command == "mutants":
        return mutants(args)
    if args.command == "check":
        return check_backend(args)
    if args.command == "compare":
        return compare_reports(args)
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
