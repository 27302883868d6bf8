"""The files a finding leaves in --out, each checked before it is kept.

For a shrunk failure bnconform fuzz writes, named after a short hash of the scenario:

- `found_<hash>.yaml`: the spec (family `fuzz`), loadable with `bnconform run --specs DIR`, with
  a comment header saying backend, seed and what failed. It is loaded back with the real loader
  and run with `run_case` on the backend, on torch and on the oracle itself before it is kept:
  it must fail on the backend and pass on the other two. One that does not reproduce is kept
  under `DIR/unverified/` and the header says why;
- `found_<hash>.py` and `found_<hash>.npz`: a script that reproduces it with only the backend and
  NumPy (runners/fuzz/standalone.py with the finding filled in) and the oracle's expected values
  it compares with; it is run once too, and must exit 1;
- `found_<hash>.txt`: the diagnosis: the failure as run_case reports it (quantity, step, errors,
  likely cause), what the verification found, and the commands that reproduce it.
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import os
import pprint
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from bnconform.cases.dtypes import DTYPES
from bnconform.cases.loader import SpecError, load_file
from bnconform.cases.model import Case
from bnconform.cases.oracle import OracleError
from bnconform.cases.requirements import FEATURES
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig
from bnconform.runners.engine.execute import Outcome, SwitchedOracle, run_case
from bnconform.runners.engine.isolation import RemoteBackend
from bnconform.runners.engine.scenario import ORACLE_DEFAULTS, STATE, Run, init, steps_of
from bnconform.runners.fuzz import standalone
from bnconform.runners.fuzz.engine import REFERENCE, Failure, Stats, digest, is_failure
from bnconform.runners.fuzz.scenario import FAMILY

TITLE = "scenarios found by bnconform fuzz"
UNVERIFIED = "unverified"
FINDING_START, FINDING_END = "# -- FINDING -", "# -- END OF FINDING -"


class OracleBackend:
    """The float64 oracle driven as a backend (cases/oracle.py through execute's switched oracle
    with no switch on): a spec that fails here contradicts the reference itself."""

    name = "oracle"
    capabilities = Capabilities(dtypes=frozenset(DTYPES), features=frozenset(FEATURES))

    def version(self) -> str:
        return "bnconform's float64 oracle"

    def create(self, config: ModuleConfig) -> Any:
        return SwitchedOracle(config, frozenset())


@dataclass
class Written:
    """The files of one finding and what their check found."""

    case_id: str
    spec: Path
    script: Path
    expected: Path
    diagnosis: Path
    verified: bool
    notes: list[str] = field(default_factory=list)
    message: str = ""  # the failure on the backend, as run_case reports it for the written spec
    reproduce: list[str] = field(default_factory=list)
    script_exit: Optional[int] = None  # the standalone script's exit code on the backend (1 expected)

    @property
    def paths(self) -> list[Path]:
        return [self.spec, self.script, self.expected, self.diagnosis]


def finding_id(spec: dict[str, Any]) -> str:
    """`found_<hash>`: the same scenario gets the same name (a re-found failure overwrites its files)."""
    body = {k: v for k, v in spec.items() if k not in ("id", "description")}
    return f"found_{digest(body)[:10]}"


def _ordered(spec: dict[str, Any], spec_id: str, description: str) -> dict[str, Any]:
    out: dict[str, Any] = {"id": spec_id, "description": description, "config": spec["config"]}
    for key in ("init", "tolerance", "steps"):
        if key in spec:
            out[key] = spec[key]
    return out


class _Flow(dict[str, Any]):
    """A mapping written on one line: `{random: {seed: 3, shape: [2, 9]}}`."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data.items(),
                                                                            flow_style=True))


def _float(dumper: yaml.SafeDumper, value: float) -> yaml.ScalarNode:
    """Large and small numbers in exponent form (2.0e+15, not 2000000000000000.0), as YAML 1.1
    reads a float: with a dot in the mantissa."""
    if math.isfinite(value) and value != 0 and not 1e-4 <= abs(value) < 1e6:
        mantissa, exponent = f"{value:.15e}".split("e")
        mantissa = mantissa.rstrip("0")
        text = f"{mantissa}0e{exponent}" if mantissa.endswith(".") else f"{mantissa}e{exponent}"
        if float(text) == value:
            return dumper.represent_scalar("tag:yaml.org,2002:float", text)
    return dumper.represent_float(value)


_Dumper.add_representer(float, _float)


def _flowing(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with each array source, step argument, expectation and tolerance on one line."""
    def flow(value: Any) -> Any:
        return _Flow(value) if isinstance(value, dict) else value

    out = dict(spec)
    for key in ("init", "tolerance"):
        if key in out:
            out[key] = {k: flow(v) for k, v in out[key].items()}
    out["steps"] = [{k: flow(v) for k, v in step.items()} for step in spec["steps"]]
    return out


def spec_text(spec: dict[str, Any], header: list[str]) -> str:
    """The spec file: the comment header, then one spec of family fuzz in the YAML format."""
    document = {"family": FAMILY, "title": TITLE, "specs": [_flowing(spec)]}
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in header) + body


def _first_line(outcome: Outcome) -> str:
    return (outcome.message.strip().splitlines() or [outcome.outcome])[0]


def _cause(outcome: Outcome) -> Optional[str]:
    for line in outcome.message.splitlines():
        if line.startswith(("likely cause", "diagnosis:")):
            return line
    return None


def _run(case: Case, backend: Any, name: str, given_as: str) -> Outcome:
    if hasattr(backend, "begin_cell"):
        backend.begin_cell()
    return run_case(case, backend, name, given_as)


# -- the standalone script --------------------------------------------------------------------
def script_steps(case: Case, spec: dict[str, Any], conventions: Optional[Conventions]) -> tuple[list[dict[str, Any]],
                                                                                                dict[str, np.ndarray]]:
    """The script's steps (the spec's arguments, what each checks and with which tolerance) and
    the oracle's expected values, replayed with the backend's declared profile switched on."""
    deviations = conventions.deviations() if conventions is not None else frozenset()
    run = Run(case, deviations=deviations)
    init(run)
    offset = 0 if case.config.training else 1
    steps: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    oracle = run.sides["oracle"]
    for position, step in enumerate(steps_of(case)):
        raised: Optional[str] = None
        try:
            run.apply(step, "oracle")
        except OracleError as exc:
            raised = exc.kind
        if position < offset:
            continue  # the eval() before step 1 of a case that starts in eval mode
        index = position - offset + 1
        raw = spec["steps"][index - 1]
        action = step.action
        entry: dict[str, Any] = {"action": action, **_arguments(action, raw.get(action) or {})}
        if step.expect is not None and step.expect.error is not None:
            entry["error"] = raised or step.expect.error.type
        else:
            checks: dict[str, Any] = {}
            for q in ORACLE_DEFAULTS.get(action, STATE):
                if q == "fused_output":
                    continue
                value = run.value("oracle", q)
                dtype = oracle.dtype_of(q)
                tol = case.tolerance_for(dtype or case.config.dtype)
                want: dict[str, Any] = {"rtol": tol.rtol, "atol": tol.atol}
                if dtype is not None:
                    want["dtype"] = dtype
                if oracle.layout_of(q) is not None:
                    want["layout"] = oracle.layout_of(q)
                if value is None:
                    want["none"] = True
                else:
                    arrays[f"{index}:{q}"] = np.asarray(value, dtype=np.float64)
                checks[q] = want
            entry["expect"] = checks
        steps.append(entry)
    return steps, arrays


def _arguments(action: str, args: dict[str, Any]) -> dict[str, Any]:
    if action == "forward":
        return {k: args[k] for k in ("input", "layout", "grad_mode") if k in args}
    if action == "backward":
        return {"grad": args["grad"]}
    if action == "set":
        return {"values": dict(args)}
    if action == "state_dict":
        return {"save_as": args.get("save_as", "saved")}
    if action == "load_state_dict":
        return {"from": args["from"]}
    return {}


def script_text(backend_target: str, spec: dict[str, Any], steps: list[dict[str, Any]], expected_name: str,
                header: str) -> str:
    """standalone.py with the finding's data in place of the template's."""
    source = Path(standalone.__file__).read_text(encoding="utf-8")
    start, end = source.index(FINDING_START), source.index(FINDING_END)
    end = source.index("\n", end) + 1
    block = "\n".join([
        FINDING_START + "-" * 80,
        f"BACKEND = {backend_target!r}",
        f"CONFIG: dict[str, Any] = {_literal(spec['config'])}",
        f"INIT: dict[str, Any] = {_literal(spec.get('init', {}))}",
        f"STEPS: list[dict[str, Any]] = {_literal(steps)}",
        f"EXPECTED = {expected_name!r}",
        FINDING_END + "-" * 73,
        "",
    ])
    doc_end = source.index('"""', 3) + 3
    doc = source[3:doc_end - 3].split("\n(The template bnconform fuzz copies")[0].strip()
    return f'"""{header}\n\n{doc}\n"""' + source[doc_end:start] + block + source[end:]


def _literal(value: Any) -> str:
    """A Python literal of JSON-like data (None/True/False spelt as Python spells them)."""
    return pprint.pformat(json.loads(json.dumps(value)), width=110, sort_dicts=False)


# -- keeping a finding ------------------------------------------------------------------------
def keep(failure: Failure, *, backend: RemoteBackend, reference: Optional[RemoteBackend], name: str, given_as: str,
         target: str, out: Path, seed: int, stats: Stats, timeout: float) -> Written:
    """Write the finding's files into `out` (or `out/unverified`), checking each as it goes."""
    spec_id = finding_id(failure.prepared.spec)
    headline = str(failure)
    spec = _ordered(copy.deepcopy(failure.prepared.spec), spec_id,
                    f"found by bnconform fuzz on {name} (seed {seed}): {headline}"[:300])
    path = out / f"{spec_id}.yaml"
    path.write_text(spec_text(spec, ["bnconform fuzz: checking this scenario"]), encoding="utf-8")
    notes: list[str] = []
    case: Optional[Case] = None
    on_backend = on_reference = on_oracle = None
    try:
        [case] = load_file(path)
    except (SpecError, ValueError) as exc:
        notes.append(f"the written spec does not load: {exc}")
    if case is not None:
        on_backend = _run(case, backend, name, given_as)
        if not is_failure(on_backend):
            notes.append(f"on {name} it now reads {on_backend.outcome}: the failure did not reproduce (a flaky backend?)")
        if reference is not None:
            on_reference = _run(case, reference, REFERENCE, REFERENCE)
            if on_reference.outcome != "passed":
                notes.append(f"on {REFERENCE} it reads {on_reference.outcome}: {_first_line(on_reference)}")
        else:
            notes.append(f"the backend is {REFERENCE} itself: nothing to compare it with but the oracle")
        on_oracle = run_case(case, OracleBackend(), "oracle")
        if on_oracle.outcome != "passed":
            notes.append(f"on the oracle it reads {on_oracle.outcome}: {_first_line(on_oracle)}")
    verified = case is not None and not notes
    where = out if verified else out / UNVERIFIED
    where.mkdir(parents=True, exist_ok=True)
    files = {k: where / f"{spec_id}.{k}" for k in ("yaml", "py", "npz", "txt")}
    message = (on_backend or failure.outcome).message if on_backend and is_failure(on_backend) else failure.outcome.message
    reproduce = [shlex.join(["bnconform", "run", "--backend", given_as, "--specs", str(where), "--case", f"{FAMILY}/{spec_id}"]),
                 shlex.join(["python", str(files["py"])])]
    cause = _cause(on_backend) if on_backend and is_failure(on_backend) else _cause(failure.outcome)
    header = [
        f"bnconform fuzz found this scenario on {name} (--backend {given_as}), seed {seed}, "
        f"{datetime.date.today().isoformat()}",
        f"failed: {headline}",
        *([cause] if cause else []),
        (f"verified: it fails on {name} and passes on {REFERENCE} and on the oracle" if verified
         else "UNVERIFIED: " + "; ".join(notes)),
        f"run it:   {reproduce[0]}",
        f"or alone: python {files['py']}  (the backend and NumPy only; expected values in {files['npz'].name})",
    ]
    if where != out:
        path.unlink(missing_ok=True)
    files["yaml"].write_text(spec_text(spec, header), encoding="utf-8")
    script_exit: Optional[int] = None
    if case is not None:
        final = load_file(files["yaml"])[0]
        steps, arrays = script_steps(final, spec, backend.conventions)
        stored: dict[str, Any] = dict(arrays)
        np.savez_compressed(files["npz"], **stored)
        doc = (f"bnconform fuzz: {name} fails {FAMILY}/{spec_id} (seed {seed}): {headline}\n\n"
               f"The spec is {files['yaml'].name}; {files['txt'].name} has the diagnosis.")
        files["py"].write_text(script_text(target, spec, steps, files["npz"].name, doc), encoding="utf-8")
        script_exit = _run_script(files["py"], timeout)
        if script_exit != 1:
            notes.append(f"the standalone script exits {script_exit} on {name} (1 expected)")
    else:
        files["py"].write_text(f"raise SystemExit('the spec {files['yaml'].name} does not load: no script')\n", encoding="utf-8")
        np.savez_compressed(files["npz"])
    files["txt"].write_text(_diagnosis(name, given_as, spec_id, seed, stats, message, verified, notes, on_reference,
                                       on_oracle, reproduce, files), encoding="utf-8")
    return Written(f"{FAMILY}/{spec_id}", files["yaml"], files["py"], files["npz"], files["txt"], verified, notes,
                   message, reproduce, script_exit)


def _run_script(script: Path, timeout: float) -> Optional[int]:
    """The script's exit code (None if it ran past the time limit)."""
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=max(timeout, 30.0),
                              env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return None
    return proc.returncode


def _diagnosis(name: str, given_as: str, spec_id: str, seed: int, stats: Stats, message: str, verified: bool,
               notes: list[str], on_reference: Optional[Outcome], on_oracle: Optional[Outcome], reproduce: list[str],
               files: dict[str, Path]) -> str:
    found = f"{stats.found_after:.1f} s" if stats.found_after is not None else "?"
    lines = [
        f"bnconform fuzz finding {FAMILY}/{spec_id} on {name} (--backend {given_as})",
        f"seed {seed}; found after {stats.found_at} scenarios ({found}), shrunk in {stats.shrink_time:.1f} s",
        "",
        f"the failure on {name}, as `bnconform run` reports it:",
        *(f"  {line}" for line in message.rstrip().splitlines()),
        "",
        ("verified: the spec, loaded back, fails on the backend and passes on "
         f"{REFERENCE} ({on_reference.outcome if on_reference else 'n/a'}) and on the oracle "
         f"({on_oracle.outcome if on_oracle else 'n/a'})") if verified else "UNVERIFIED:",
        *(f"  {note}" for note in notes),
        "",
        "files:",
        *(f"  {p}" for p in files.values()),
        "",
        "reproduce:",
        *(f"  {command}" for command in reproduce),
        "",
    ]
    return "\n".join(lines)
