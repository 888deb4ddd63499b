"""Template specifications: which repository subtree becomes the guest's ``/`` (pure).

Accepted forms (``uvm run --template SPEC``)::

    NAME                      a [templates.NAME] entry of the configuration
    NAME@TAG                  ... at the revision with this tag
    NAME@DATE                 ... at the newest revision published at or before DATE
    FQRN:/path                any repository subtree, no configuration needed
    FQRN:/path@TAG            (DATE: ISO 8601, e.g. 2026-11-01 or 2026-11-01T00:00:00Z)

A registry entry gives the repository, the path inside it and optional
default binds and environment.  The revision chosen is pinned for the whole
run (the repository is opened once).
"""

# A collections.namedtuple, not a dataclass or a typing.NamedTuple: every
# template run parses its spec, and ``dataclasses`` imports ``inspect``
# (7-8 ms of a warm run's start), ``typing`` 3 ms (see ``uvm/config.py``).

from __future__ import annotations

import re
from collections import namedtuple
from types import MappingProxyType

from uvm.errors import UsageError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Mapping, Optional, Tuple

_DATE = re.compile(r"\A\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?\Z")
_FQRN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\.[A-Za-z0-9_.-]+\Z")


class TemplateSpec(namedtuple("TemplateSpec", ("text", "repository", "path", "name", "tag",
                                                "date", "binds", "env"),
                               defaults=("/", None, None, None, (), MappingProxyType({})))):
    """A resolved ``--template`` argument."""

    __slots__ = ()
    text: str
    repository: str
    path: str
    name: Optional[str]          # registry name, if it came from one
    tag: Optional[str]
    date: Optional[str]
    binds: Tuple[str, ...]
    env: Mapping[str, str]       # read-only: one shared empty default

    @property
    def selector(self) -> str:
        """``@TAG``, ``@DATE`` or '' (the newest revision)."""
        return f"@{self.tag}" if self.tag else (f"@{self.date}" if self.date else "")


def is_date(text: str) -> bool:
    return bool(_DATE.match(text))


def normalize_path(path: str) -> str:
    parts = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            raise UsageError(f"template path {path!r} must not contain '..'")
        parts.append(comp)
    return "/" + "/".join(parts)


def parse_spec(text: str, registry: Mapping[str, Any] = MappingProxyType({})) -> TemplateSpec:
    """Parse SPEC against the configuration's templates (``Config.templates``)."""
    if not text:
        raise UsageError("empty template name", hint="use NAME, NAME@TAG or FQRN:/path")
    base, selector = text, ""
    head, sep, tail = text.rpartition("@")
    if sep and head and "/" not in tail:
        base, selector = head, tail
        if not selector:
            raise UsageError(f"template {text!r}: nothing after '@'",
                             hint="give a tag or an ISO 8601 date")
    tag = date = None
    if selector:
        if is_date(selector):
            date = selector
        else:
            tag = selector
    if ":" in base:
        fqrn, _, path = base.partition(":")
        if not _FQRN.match(fqrn):
            raise UsageError(f"template {text!r}: {fqrn!r} is not a repository name",
                             hint="use FQRN:/path, e.g. sft.cern.ch:/os/el9")
        return TemplateSpec(text, fqrn, normalize_path(path or "/"), None, tag, date)
    entry = registry.get(base)
    if entry is None:
        known = ", ".join(sorted(registry)) or "none configured"
        raise UsageError(f"unknown template {base!r} (known: {known})",
                         hint="add a [templates.NAME] table to the configuration, "
                         "or use FQRN:/path")
    return TemplateSpec(text, entry.repository, normalize_path(entry.path or "/"), base, tag,
                        date, tuple(entry.binds), MappingProxyType(dict(entry.env)))


__all__ = ["TemplateSpec", "parse_spec", "is_date", "normalize_path"]
