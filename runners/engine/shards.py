"""`--shard I/N`: one of N deterministic, balanced parts of the selected cases.

A CI matrix splits one run across machines; `bnconform merge` puts the parts back together.
A case goes to a shard by its place in the selection (the selected cases in load order, case k
to shard (k mod N) + 1), which depends only on the spec set and the filters, never on the
machine: every shard of one command line agrees on who has which case, every column of a case
lands in the same shard, and shard sizes differ by at most one. Round robin rather than blocks,
so that each shard gets a share of every family (the large ones cost more). The shard and the
selection it splits are recorded in the report's metadata so that merge can check them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, TypeVar

if TYPE_CHECKING:
    from bnconform.runners.engine.options import Settings

T = TypeVar("T")
FORM = re.compile(r"(?P<index>[0-9]+)/(?P<count>[0-9]+)")


class ShardError(Exception):
    """A malformed --shard value, or a shard the selection leaves empty: a usage error."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: Optional[str]) -> Optional[Shard]:
    """The shard a --shard value names (None for no value); ShardError names the option and the value."""
    if text is None:
        return None
    match = FORM.fullmatch(str(text).strip())
    if match is None:
        raise ShardError(f"--shard {text}: must be I/N, shard I of N, with 1 <= I <= N (e.g. 1/2)")
    index, count = int(match["index"]), int(match["count"])
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"--shard {text}: must be I/N, shard I of N, with 1 <= I <= N (e.g. 1/2)")
    return Shard(index, count)


def take(items: list[T], shard: Optional[Shard]) -> list[T]:
    """This shard's items: item k (0-based, in the given order) goes to shard (k mod N) + 1."""
    if shard is None:
        return items
    mine = items[shard.index - 1::shard.count]
    if not mine:
        n = len(items)
        raise ShardError(f"--shard {shard}: shard {shard.index} of {shard.count} has no case: the selection has "
                         f"only {n} case{'' if n == 1 else 's'} (at most {n} shard{'' if n == 1 else 's'})")
    return mine


def selection(settings: Settings) -> dict[str, Any]:
    """What a shard is a part of (beside the spec set, metadata.spec_digest): the filters and the
    tier, which decide the selected cases and their order; merge checks that the shards it is
    given split the same selection. Extra --specs directories are absolute paths that differ
    between machines, so they are counted by the spec digest instead."""
    return {"family": list(settings.family), "case": list(settings.case), "exclude": list(settings.exclude),
            "tier": settings.tier, "keep_order": settings.keep_order}


def metadata(settings: Settings) -> dict[str, Any]:
    """The report metadata a run adds: its selection, and its shard ("I/N", or None for the whole of it)."""
    try:
        shard = parse(settings.shard)
    except ShardError:  # refused before any case ran; a report is not written then, but never fail here
        return {"selection": selection(settings), "shard": settings.shard}
    return {"selection": selection(settings), "shard": str(shard) if shard else None}
