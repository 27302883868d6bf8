"""Expected-deviation manifests: which failure a backend is known to show in which cases.

An entry names the case(s) (an id or a glob) and what it expects there, so that it excuses
that failure and no other: a diagnosis (a deviation name of cases/deviations.py that the
failure must be diagnosed as, and with which switched on the case passes; a list switches
several on together, for a cell that shows two findings at once), a message pattern (a regex
searched in the failure's text), or `outcome: error` (the only way to expect an error cell: a harness, build, crash or
time-limit error). A failure in a listed case that does not match still fails. A matching
failure becomes `xfailed` (with the reason); a pass becomes `xpassed` (which fails the gate
under --strict). An entry that matches no selected cell warns.

    backend: mykernel            # optional glob over backend names; default: every backend
    expected:
      - case: "bessel/*"
        diagnosis: biased_running_var
        reason: "we use the biased variance on purpose"
      - case: "*float64*"
        diagnosis: [momentum_float32, eps_float32]   # two findings at once: both switched on
        reason: "both are float32 operator attributes"
      - case: "errors/counter_counts_raising_call_golden"
        message: "num_batches_tracked differs"
        reason: "the batch-size check runs before counting"
        link: https://example.org/issue/12      # optional
      - case: "state/*"
        outcome: error
        message: "could not build the module"
        reason: "no state_dict yet"
      - case: "errors/channel_mismatch*"
        order_dependent: true                   # fails only after certain cells (below)
        message: "message differs"
        reason: "a compile cache left by an earlier case changes the message"

`order_dependent: true` expects an order-dependent failure (runners/engine/order.py: the cell
passes alone and fails after certain cells of its worker): only such a failure matches, and a
pass reads passed, not xpassed, since another order, shard or -n leaves the causing cells out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bnconform.cases.deviations import DEVIATIONS
from bnconform.cases.loader import SpecError, read_yaml
from bnconform.cases.model import id_matches
from bnconform.runners.engine.order import NOTE


class ManifestError(Exception):
    """A malformed manifest: the file and key are in the message."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    case: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    diagnosis: Optional[str | list[str]] = None
    message: Optional[str] = Field(None, min_length=1)
    outcome: Optional[Literal["error"]] = None
    order_dependent: bool = False
    link: Optional[str] = None

    @field_validator("diagnosis")
    @classmethod
    def _known(cls, v: Optional[str | list[str]]) -> Optional[str | list[str]]:
        for name in [v] if isinstance(v, str) else v or []:
            if name not in DEVIATIONS:
                raise ValueError(f"unknown diagnosis {name!r}; known: {', '.join(DEVIATIONS)}")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a list of diagnoses names each deviation once, and at least one")
        return v

    @field_validator("message")
    @classmethod
    def _regex(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"message is not a valid regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _says_what(self) -> "_Entry":
        if self.diagnosis is None and self.message is None and self.outcome is None:
            raise ValueError("an entry says what it expects: `diagnosis: NAME`, `message: PATTERN` or `outcome: error`")
        if self.outcome == "error" and self.diagnosis is not None:
            raise ValueError("an error cell has no diagnosis: give `message:` with `outcome: error`")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str = "*"
    expected: list[_Entry]


@dataclass(frozen=True)
class Entry:
    source: Path
    backend: str
    case: str
    reason: str
    diagnosis: Optional[tuple[str, ...]] = None  # the deviations switched on together (one, mostly)
    message: Optional[str] = None
    outcome: Optional[str] = None  # None: a failure; "error": an error cell
    link: Optional[str] = None
    order_dependent: bool = False  # only an order-dependent failure matches; a pass is no xpass

    def matches(self, case_id: str, backend_name: str) -> bool:
        """Whether the entry is about this cell (whatever the cell's result)."""
        return id_matches(backend_name, self.backend) and id_matches(case_id, self.case)

    def expects(self, outcome: str, message: str) -> bool:
        """Whether a cell's outcome and message are what this entry expects. A `diagnosis` entry
        also needs the case to pass with that deviation switched on (checked by the engine,
        which can rerun the case: Cells._expected)."""
        if outcome != (self.outcome or "failed"):
            return False
        if self.order_dependent and not message.startswith(f"{NOTE}:"):
            return False
        return self.message is None or re.search(self.message, message) is not None

    def expectation(self) -> str:
        parts = [f"outcome {self.outcome}"] if self.outcome == "error" else []
        parts += [f"diagnosis {' + '.join(self.diagnosis)}"] if self.diagnosis else []
        parts += [f"message /{self.message}/"] if self.message is not None else []
        parts += ["order-dependent"] if self.order_dependent else []
        return ", ".join(parts)

    def describe(self) -> str:
        return self.reason + (f" ({self.link})" if self.link else "")


def load(paths: Iterable[Path]) -> list[Entry]:
    entries = []
    for path in paths:
        path = Path(path)
        try:
            data = _File.model_validate(read_yaml(path))  # the spec files' loader: duplicate keys, bombs
        except SpecError as exc:
            raise ManifestError(str(exc)) from None
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ManifestError(f"{path}: {key}: {err['msg'].removeprefix('Value error, ')}") from None
        entries += [Entry(path, data.backend, e.case, e.reason, _names(e.diagnosis), e.message, e.outcome, e.link,
                          e.order_dependent) for e in data.expected]
    return entries


def _names(diagnosis: Optional[str | list[str]]) -> Optional[tuple[str, ...]]:
    return (diagnosis,) if isinstance(diagnosis, str) else None if diagnosis is None else tuple(diagnosis)


def about(entries: list[Entry], case_id: str, backend_name: str) -> list[Entry]:
    """The entries that name this cell."""
    return [e for e in entries if e.matches(case_id, backend_name)]
