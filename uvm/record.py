"""Run records: what ran, on which revisions, and how it ended (pure model, JSON).

``uvm run --record FILE`` writes one; ``uvm run --replay FILE`` runs the same
command again with the template and every /cvmfs repository pinned to the
root catalog hashes recorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from uvm.errors import UsageError

FORMAT = "uvm-run-record/1"


@dataclass
class TreeRecord:
    """One repository revision seen by the run."""

    repository: str
    root_hash: str
    revision: int
    path: str = "/"                      # the template's subtree (template only)
    spec: Optional[str] = None           # what the user asked for (template only)


@dataclass
class RunRecord:
    command: List[str]
    cwd: Optional[str] = None
    template: Optional[TreeRecord] = None
    repositories: List[TreeRecord] = field(default_factory=list)   # /cvmfs mounts
    binds: List[str] = field(default_factory=list)
    env: List[str] = field(default_factory=list)                   # --env K=V given
    exit_status: Optional[int] = None
    started: Optional[str] = None
    elapsed_s: Optional[float] = None
    uvm_version: Optional[str] = None

    def to_json(self) -> str:
        data: Dict[str, Any] = {"format": FORMAT}
        data.update(asdict(self))
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "record") -> "RunRecord":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise UsageError(f"{where} is not JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UsageError(f"{where} is not a uvm run record (format {FORMAT})")
        try:
            command = [str(x) for x in data["command"]]
            template = data.get("template")
            return cls(
                command=command,
                cwd=data.get("cwd"),
                template=TreeRecord(**template) if template else None,
                repositories=[TreeRecord(**r) for r in data.get("repositories") or []],
                binds=[str(b) for b in data.get("binds") or []],
                env=[str(e) for e in data.get("env") or []],
                exit_status=data.get("exit_status"),
                started=data.get("started"),
                elapsed_s=data.get("elapsed_s"),
                uvm_version=data.get("uvm_version"),
            )
        except (KeyError, TypeError) as err:
            raise UsageError(f"{where} is not a valid uvm run record ({err})") from None


__all__ = ["RunRecord", "TreeRecord", "FORMAT"]
