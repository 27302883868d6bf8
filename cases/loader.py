"""Load spec files (safe YAML), validate them, and expand grids into cases.

Every mistake becomes a SpecError naming the file, the spec id and the key path, because
the person reading it is editing YAML, not Python.
"""
from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from .model import Case
from .requirements import check_declared, required_capabilities
from .schema import ModuleConfig, Spec, SpecFile

BUILTIN_SPECS = Path(__file__).resolve().parent.parent / "specs"


class SpecError(Exception):
    """A malformed spec: file, spec id and key path are in the message."""

    def __init__(self, path: Path, spec_id: str | None, key: str, message: str) -> None:
        where = f"{path}"
        if spec_id:
            where += f": spec {spec_id!r}"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}")


def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("Generated", "values"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _raise_validation(path: Path, spec_id: str | None, prefix: str, exc: ValidationError) -> None:
    first = exc.errors()[0]
    key = _loc(first["loc"])
    key = f"{prefix}.{key}" if prefix and key else (prefix or key)
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    raise SpecError(path, spec_id, key, f"{first['msg']}{more}") from None


def _grid_label(value: Any) -> str:
    return "None" if value is None else str(value)


def expand(path: Path, family: str, spec: Spec, defaults: dict[str, Any]) -> list[Case]:
    """One case per point of the spec's grid (one case when there is no grid)."""
    base = {**defaults, **spec.config.model_dump(exclude_unset=True)}
    keys = list(spec.grid)
    cases = []
    for values in itertools.product(*(spec.grid[k] for k in keys)) if keys else [()]:
        point = dict(zip(keys, values))
        try:
            config = ModuleConfig.model_validate({**base, **point})
        except ValidationError as exc:
            _raise_validation(path, spec.id, "grid" if point else "config", exc)
        suffix = "[" + ",".join(f"{k}={_grid_label(v)}" for k, v in point.items()) + "]" if point else ""
        case = Case(
            id=f"{family}/{spec.id}{suffix}",
            family=family,
            spec_id=spec.id,
            description=spec.description,
            source=path,
            config=config,
            init=dict(spec.init),
            steps=tuple(spec.steps),
            tolerances=dict(spec.tolerance),
        )
        try:
            check_declared(set(spec.requires))
            requires = required_capabilities(case) | set(spec.requires)
        except ValueError as exc:
            raise SpecError(path, spec.id, "requires", str(exc)) from None
        cases.append(Case(**{**case.__dict__, "requires": frozenset(requires)}))
    return cases


def load_file(path: Path) -> list[Case]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(path, None, "", f"not valid YAML: {exc}") from None
    except OSError as exc:
        raise SpecError(path, None, "", f"cannot read: {exc}") from None
    try:
        sfile = SpecFile.model_validate(raw)
    except ValidationError as exc:
        _raise_validation(path, None, "", exc)
    try:
        defaults = ModuleConfig.model_validate(sfile.defaults).model_dump(exclude_unset=True)
    except ValidationError as exc:
        _raise_validation(path, None, "defaults", exc)
    cases: list[Case] = []
    seen: set[str] = set()
    for index, raw_spec in enumerate(sfile.specs):
        spec_id = raw_spec.get("id") if isinstance(raw_spec, dict) else None
        try:
            spec = Spec.model_validate(raw_spec)
        except ValidationError as exc:
            _raise_validation(path, spec_id or f"specs[{index}]", "", exc)
        if spec.id in seen:
            raise SpecError(path, spec.id, "id", "duplicate spec id in this file")
        seen.add(spec.id)
        cases.extend(expand(path, sfile.family, spec, defaults))
    return cases


def spec_files(directories: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            raise SpecError(directory, None, "", "spec directory does not exist")
        files.extend(sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")))
    return files


def load_cases(directories: Iterable[Path]) -> list[Case]:
    """All cases of every spec file under the directories; case ids must be unique.

    Loaded once per process for a given set of directories: the command line, the pytest
    plugin and every cell share one parse.
    """
    return list(_load_cases(tuple(Path(d).resolve() for d in directories)))


@functools.lru_cache(maxsize=8)
def _load_cases(directories: tuple[Path, ...]) -> tuple[Case, ...]:
    cases: list[Case] = []
    where: dict[str, Path] = {}
    for path in spec_files(directories):
        for case in load_file(path):
            if case.id in where:
                raise SpecError(path, case.spec_id, "id", f"case id {case.id} also defined in {where[case.id]}")
            where[case.id] = path
            cases.append(case)
    return tuple(cases)
