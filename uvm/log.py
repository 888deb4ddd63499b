"""Library logging that costs nothing until something is logged.

``import logging`` (with ``traceback``, ``string`` and friends) is 6-10 ms
of every ``uvm`` command on the machines uvm targets, and most runs never
log a line.  Modules take ``log = uvm.log.get(__name__)``: the standard
logger is made, and the CLI's configuration applied, on the first call.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, Optional

# (level name, format) the CLI asked for, applied when logging is first used
_wanted: Optional[tuple] = None


class _Logger:
    """Stands for ``logging.getLogger(name)`` until a method is called."""

    __slots__ = ("_name", "_logger")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            self._logger = _logging().getLogger(self._name)
        return getattr(self._logger, attr)


def get(name: str) -> _Logger:
    return _Logger(name)


def configure(level: str, fmt: str) -> None:
    """The command line's choice: records at ``level`` and above go to
    stderr as ``fmt`` (applied now if logging is in use, else on first use)."""
    global _wanted
    _wanted = (level, fmt)
    if "logging" in sys.modules:
        _logging()


def shutdown() -> None:
    """Flush the handlers, if logging was ever used."""
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()


def _logging() -> Any:
    global _wanted
    import logging

    if _wanted is not None:
        level, fmt = _wanted
        _wanted = None
        logging.basicConfig(level=getattr(logging, level.upper()), format=fmt)
    return logging
