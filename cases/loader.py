"""Load spec files (safe YAML), validate them, and expand grids into cases.

Every mistake becomes a SpecError naming the file, the spec id and the key path, because
the person reading it is editing YAML, not Python. Everything that can be checked without
a backend is checked here, at load: the YAML itself (UTF-8, no repeated key, bounded alias
expansion), the schema (cases/schema.py), the size of grids and arrays (`limits:`), and
each case's shapes and goldens against its config (cases/checks.py).
"""
from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .checks import CaseProblem, check_case
from .model import Case
from .requirements import check_declared, required_capabilities
from .schema import Generated, Limits, ModuleConfig, Spec, SpecFile, grid_size
from .shapes import Problem, problems

# How many nodes YAML aliases (*name) may add to a file when expanded: a few kilobytes of
# nested aliases ("billion laughs") otherwise expand to billions of nodes, which validation
# would copy. Counted on the composed node graph, before anything is constructed or copied.
MAX_ALIAS_NODES = 10**6
MERGE_TAG = "tag:yaml.org,2002:merge"

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


class _YamlProblem(Exception):
    def __init__(self, path: list[Union[str, int]], message: str) -> None:
        super().__init__(message)
        self.path = path


def _key_path(path: Iterable[Union[str, int]]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


class _NodeCheck:
    """One pass over the composed YAML graph, each node visited once: repeated mapping keys, and
    the number of nodes aliases add when expanded (memoised per node, so an alias bomb costs
    what its text costs)."""

    def __init__(self, loader: "SpecYamlLoader", limit: int) -> None:
        self.loader, self.limit = loader, limit
        self.sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded
        self.open: set[int] = set()  # nodes being visited (an alias to one of them is a cycle)
        self.added = 0
        self.path: list[Union[str, int]] = []

    def _key(self, node: Node) -> Any:
        if node.tag == MERGE_TAG:  # `<<`: merged keys may be overridden, and it is no value of its own
            return MERGE_TAG
        if isinstance(node, ScalarNode):
            value = self.loader.construct_object(node)
            try:
                hash(value)
            except TypeError:
                return (node.tag, node.value)
            return value
        return (node.tag, id(node))

    def visit(self, node: Node) -> int:
        ident = id(node)
        if ident in self.sizes:  # a second reference: an alias, expanded where it is used
            size = self.sizes[ident]
            self.added += size
            if self.added > self.limit:
                raise _YamlProblem(self.path, f"YAML aliases expand the file by more than {self.limit} nodes here "
                                              f"(an alias bomb?); this alias names the node at line {node.start_mark.line + 1}")
            return size
        if ident in self.open:
            raise _YamlProblem(self.path, f"a YAML alias refers to a node that contains it (line {node.start_mark.line + 1})")
        self.open.add(ident)
        size = 1
        if isinstance(node, MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key, name = self._key(key_node), str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
                line = key_node.start_mark.line + 1
                self.path.append(name)
                if key in first_line:
                    raise _YamlProblem(self.path, f"duplicate key {name!r} at line {line} (first at line {first_line[key]})")
                first_line[key] = line
                size += self.visit(key_node) + self.visit(value_node)
                self.path.pop()
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.path.append(index)
                size += self.visit(item)
                self.path.pop()
        self.open.discard(ident)
        self.sizes[ident] = size
        return size


# libyaml composes the node graph in C (PyYAML's pure-Python composer is ~10x slower: seconds for
# the built-in library, minutes for a 10 MB file); the checks and the construction are the same.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecYamlLoader(_SafeLoader):
    """PyYAML's safe loader that refuses repeated mapping keys and alias bombs: the node graph is
    checked (_NodeCheck) before the document is constructed."""

    root: Optional[Node] = None

    def get_single_data(self) -> Any:
        node = self.root = self.get_single_node()
        if node is None:
            return None
        _NodeCheck(self, MAX_ALIAS_NODES).visit(node)
        return self.construct_document(node)


def _mapping_get(node: Optional[Node], key: str) -> Optional[Node]:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return value_node
    return None


def _spec_id_at(root: Optional[Node], path: list[Union[str, int]]) -> Optional[str]:
    """The id of the spec a key path (specs[i]...) is in, read from the composed graph."""
    if len(path) < 2 or path[0] != "specs" or not isinstance(path[1], int):
        return None
    specs = _mapping_get(root, "specs")
    if not isinstance(specs, SequenceNode) or path[1] >= len(specs.value):
        return None
    spec_id = _mapping_get(specs.value[path[1]], "id")
    return spec_id.value if isinstance(spec_id, ScalarNode) else f"specs[{path[1]}]"


def read_yaml(path: Path) -> Any:
    """The document of a spec file; any problem with the file itself becomes a SpecError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(path, None, "", f"cannot read: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(path, None, "", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} "
                                        f"(offset {exc.start}); save the file as UTF-8") from None
    loader: Optional[SpecYamlLoader] = None
    try:
        loader = SpecYamlLoader(text)
        return loader.get_single_data()
    except _YamlProblem as exc:
        assert loader is not None
        spec_id = _spec_id_at(loader.root, exc.path)
        raise SpecError(path, spec_id, _key_path(exc.path[2:] if spec_id else exc.path), str(exc)) from None
    except yaml.MarkedYAMLError as exc:  # one line: what, where, and in what
        mark = exc.problem_mark
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own bound (1000 levels)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            raise SpecError(path, None, "", f"not a spec: YAML nested too deeply{at}") from None
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context = f" ({exc.context}" + (f" at line {exc.context_mark.line + 1}" if exc.context_mark else "") + ")" \
            if exc.context else ""
        raise SpecError(path, None, "", f"not valid YAML: {exc.problem}{at}{context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(path, None, "", f"not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise SpecError(path, None, "", "not a spec: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


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
    message = first["msg"].removeprefix("Value error, ")
    raise SpecError(path, spec_id, key, f"{message}{more}") from None


def _grid_label(value: Any) -> str:
    return "None" if value is None else str(value)


def _shaped(obj: Any, problem: Optional[Problem], channels: int) -> Any:
    """`obj` with every `shape: problem` / `shape: channels` of a random source made concrete."""
    if isinstance(obj, Generated):
        word = obj.random.shape
        if not isinstance(word, str):
            return obj
        if word == "problem" and problem is None:
            raise ValueError("`shape: problem` names the input shape of a shapes-library problem: "
                             "the spec needs `shapes: [BATCH, ...]` (cases/shapes.py)")
        shape = list(problem.shape) if word == "problem" and problem is not None else [channels]
        return obj.model_copy(update={"random": obj.random.model_copy(update={"shape": shape})})
    if isinstance(obj, BaseModel):
        updates = {k: _shaped(getattr(obj, k), problem, channels) for k in type(obj).model_fields}
        changed = {k: v for k, v in updates.items() if v is not getattr(obj, k)}
        return obj.model_copy(update=changed) if changed else obj
    if isinstance(obj, list):
        items = [_shaped(v, problem, channels) for v in obj]
        return items if any(a is not b for a, b in zip(items, obj)) else obj
    if isinstance(obj, dict):
        entries = {k: _shaped(v, problem, channels) for k, v in obj.items()}
        return entries if any(entries[k] is not obj[k] for k in obj) else obj
    return obj


def expand(path: Path, family: str, spec: Spec, defaults: dict[str, Any]) -> list[Case]:
    """One case per problem of the spec's shape batches (if any) and point of its grid (one case
    when there is neither)."""
    base = {**defaults, **spec.config.model_dump(exclude_unset=True)}
    keys = list(spec.grid)
    if spec.shapes:
        fixed = [k for k in ("dim", "num_features") if k in spec.grid or k in spec.config.model_fields_set]
        if fixed:
            raise SpecError(path, spec.id, "shapes", f"each problem of the shape batches sets dim and num_features; "
                                                     f"the spec sets {' and '.join(fixed)} too")
    tolerances = (("tolerance", spec.tolerance), ("sum_tolerance", spec.sum_tolerance))
    per_value = [f"{key}.{dtype}.per_value" for key, tols in tolerances for dtype, tol in tols.items() if tol.per_value]
    if per_value and not spec.shapes:
        raise SpecError(path, spec.id, per_value[0], "a per-value tolerance is per value of a shapes-library problem: "
                                                    "the spec needs `shapes: [BATCH, ...]` (cases/shapes.py)")
    shaped: list[Optional[Problem]] = list(problems(spec.shapes)) if spec.shapes else [None]
    cases = []
    for problem, values in itertools.product(shaped, itertools.product(*(spec.grid[k] for k in keys)) if keys else [()]):
        point = dict(zip(keys, values))
        given = dict(point)
        if problem is not None:
            given.update(dim=problem.dim, num_features=problem.num_features)
        try:
            config = ModuleConfig.model_validate({**base, **given})
        except ValidationError as exc:
            _raise_validation(path, spec.id, "grid" if point else ("shapes" if problem else "config"), exc)
        labels = ([f"shape={problem.label}"] if problem is not None else []) + [
            f"{k}={_grid_label(v)}" for k, v in point.items()]
        suffix = "[" + ",".join(labels) + "]" if labels else ""
        try:
            init = _shaped(dict(spec.init), problem, config.num_features)
            steps = tuple(_shaped(list(spec.steps), problem, config.num_features))
        except ValueError as exc:
            raise SpecError(path, spec.id, "shapes", str(exc)) from None
        case = Case(
            id=f"{family}/{spec.id}{suffix}",
            family=family,
            spec_id=spec.id,
            description=spec.description,
            source=path,
            config=config,
            init=init,
            steps=steps,
            tolerances={str(k): v for k, v in spec.tolerance.items()},
            tier=problem.tier if problem is not None else "default",
            sum_tolerances={str(k): v for k, v in spec.sum_tolerance.items()},
            values_per_channel=problem.values_per_channel if problem is not None else 0,
        )
        try:
            check_declared(set(spec.requires))
            requires = required_capabilities(case) | set(spec.requires)
        except ValueError as exc:
            raise SpecError(path, spec.id, "requires", str(exc)) from None
        cases.append(Case(**{**case.__dict__, "requires": frozenset(requires)}))
    return cases


def load_file(path: Path) -> list[Case]:
    """The cases of one spec file, every load-time check passed (else a SpecError)."""
    return _file_cases(path, read_yaml(path))


def _file_cases(path: Path, raw: Any) -> list[Case]:
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
            _raise_validation(path, spec_id if isinstance(spec_id, str) and spec_id else f"specs[{index}]", "", exc)
        if spec.id in seen:
            raise SpecError(path, spec.id, "id", "duplicate spec id in this file")
        seen.add(spec.id)
        cases.extend(_checked(path, sfile.family, spec, defaults, sfile.limits))
    return cases


def _checked(path: Path, family: str, spec: Spec, defaults: dict[str, Any], limits: Limits) -> list[Case]:
    """The spec's cases, each checked against its own config (shapes, goldens, sizes)."""
    count = grid_size(spec.grid) * max(1, len(problems(spec.shapes)))  # before expanding: a 10**6-point grid is refused at once
    if count > limits.max_cases:
        raise SpecError(path, spec.id, "grid", f"expands to {count} cases, more than the limit of {limits.max_cases} "
                                               "(a spec file raises it with `limits: {max_cases: N}`)")
    cases = expand(path, family, spec, defaults)
    for case in cases:
        try:
            check_case(case, limits)
        except CaseProblem as exc:
            at = f" (case {case.id})" if spec.grid else ""
            raise SpecError(path, spec.id, exc.key, f"{exc}{at}") from None
    return cases


def spec_files(directories: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            raise SpecError(directory, None, "", "spec directory does not exist")
        files.extend(sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")))
    return files


def load_cases(directories: Iterable[Path], families: Optional[Iterable[str]] = None) -> list[Case]:
    """All cases of every spec file under the directories (or of the files of these families
    only: the others are read as YAML, for their family name, and not validated); case ids must
    be unique.

    Loaded once per process for a given set of directories and families: the command line, the
    pytest plugin and every cell share one parse.
    """
    wanted = None if families is None else frozenset(families)
    return list(_load_cases(tuple(Path(d).resolve() for d in directories), wanted))


def file_families(directories: Iterable[Path]) -> dict[Path, Optional[str]]:
    """Each spec file's declared family (None where the file declares none a spec could use)."""
    return {path: family for path, (family, _) in _documents(tuple(Path(d).resolve() for d in directories)).items()}


@functools.lru_cache(maxsize=8)
def _documents(directories: tuple[Path, ...]) -> dict[Path, tuple[Optional[str], Any]]:
    """Every spec file's YAML document (checked as YAML, not yet as a spec), with its family."""
    out: dict[Path, tuple[Optional[str], Any]] = {}
    for path in spec_files(directories):
        raw = read_yaml(path)
        family = raw.get("family") if isinstance(raw, dict) else None
        out[path] = (family if isinstance(family, str) else None, raw)
    return out


@functools.lru_cache(maxsize=8)
def _load_cases(directories: tuple[Path, ...], families: Optional[frozenset[str]]) -> tuple[Case, ...]:
    cases: list[Case] = []
    where: dict[str, Path] = {}
    for path, (family, raw) in _documents(directories).items():
        if families is not None and family is not None and family not in families:
            continue  # a file that declares no usable family is validated, so that its error is seen
        for case in _file_cases(path, raw):
            if case.id in where:
                raise SpecError(path, case.spec_id, "id", f"case id {case.id} also defined in {where[case.id]}")
            where[case.id] = path
            cases.append(case)
    return tuple(cases)
