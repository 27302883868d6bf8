"""Expected-deviation manifests: case ids or globs a backend is known to fail, each with a reason.

Matching cells are run as usual; a failure becomes `xfailed` (with the reason), a pass becomes
`xpassed` (which fails the gate under --strict). An entry that matches no selected cell warns.

    backend: mykernel        # optional glob over backend names; default: every backend
    expected:
      - case: "errors/counter_counts_raising_call_golden"
        reason: "the batch-size check runs before counting"
        link: https://example.org/issue/12      # optional
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bnconform.cases.model import id_matches


class ManifestError(Exception):
    """A malformed manifest: the file and key are in the message."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    case: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    link: Optional[str] = None


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
    link: Optional[str]

    def matches(self, case_id: str, backend_name: str) -> bool:
        return id_matches(backend_name, self.backend) and id_matches(case_id, self.case)

    def describe(self) -> str:
        return self.reason + (f" ({self.link})" if self.link else "")


def load(paths: Iterable[Path]) -> list[Entry]:
    entries = []
    for path in paths:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            data = _File.model_validate(raw)
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc}") from None
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path}: not valid YAML: {exc}") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ManifestError(f"{path}: {key}: {err['msg']}") from None
        entries += [Entry(path, data.backend, e.case, e.reason, e.link) for e in data.expected]
    return entries


def find(entries: list[Entry], case_id: str, backend_name: str) -> Optional[Entry]:
    return next((e for e in entries if e.matches(case_id, backend_name)), None)
