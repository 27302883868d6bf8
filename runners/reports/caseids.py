"""Case ids written compactly: the grid points of one spec collapsed into brace patterns.

A report about 144 cells must not list 144 ids when they are six points of a grid each:
`tracked[training=True,dim={1,2,3},dtype={float32,float64}]` stands for exactly the ids it
expands to (the cartesian product of the braced values), never for more. Ids that do not read
`family/spec[key=value,...]` are kept as they are.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

_ID = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<grid>[^\[\]]*)\]$")
Point = tuple[str, ...]
Pattern = tuple[tuple[str, ...], ...]  # the values of each grid key


@dataclass(frozen=True)
class Collapsed:
    text: str  # e.g. momentum/cumulative[dim={1,2},dtype=float32]
    ids: tuple[str, ...]  # the case ids it stands for, in the order given


def _parse(case_id: str) -> Optional[tuple[str, tuple[str, ...], Point]]:
    """(family/spec, grid keys, grid values), or None for an id without a plain grid."""
    match = _ID.match(case_id)
    if match is None:
        return None
    keys, values = [], []
    for part in match["grid"].split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.isidentifier() or not value or any(c in value for c in "={}"):
            return None
        keys.append(key)
        values.append(value)
    return match["base"], tuple(keys), tuple(values)


def _patterns(points: list[Point]) -> list[Pattern]:
    """Exact cover of `points` by products: split on the first key, merge values whose rests agree."""
    if not points[0]:
        return [()]
    rests: dict[str, list[Point]] = {}
    for p in points:
        rests.setdefault(p[0], []).append(p[1:])
    merged: dict[tuple[Pattern, ...], list[str]] = {}
    for first, rest in rests.items():
        merged.setdefault(tuple(_patterns(rest)), []).append(first)
    return [(tuple(firsts),) + pattern for patterns, firsts in merged.items() for pattern in patterns]


def _text(base: str, keys: tuple[str, ...], pattern: Pattern) -> str:
    values = [vs[0] if len(vs) == 1 else "{" + ",".join(vs) + "}" for vs in pattern]
    return f"{base}[{','.join(f'{k}={v}' for k, v in zip(keys, values))}]"


def collapse(ids: Iterable[str]) -> list[Collapsed]:
    """The ids as few patterns as exactly cover them, in the order of each pattern's first id."""
    ordered = list(dict.fromkeys(ids))
    position = {case_id: i for i, case_id in enumerate(ordered)}
    groups: dict[tuple[str, tuple[str, ...]], dict[Point, str]] = {}
    out: list[Collapsed] = []
    for case_id in ordered:
        parsed = _parse(case_id)
        if parsed is None:
            out.append(Collapsed(case_id, (case_id,)))
        else:
            base, keys, point = parsed
            groups.setdefault((base, keys), {})[point] = case_id
    for (base, keys), points in groups.items():
        for pattern in _patterns(list(points)):
            members = tuple(case_id for point, case_id in points.items()
                            if all(v in vs for v, vs in zip(point, pattern)))
            out.append(Collapsed(_text(base, keys, pattern), members))
    return sorted(out, key=lambda c: position[c.ids[0]])
