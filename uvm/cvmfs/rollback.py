"""Rollback protection: never accept a manifest older than one accepted before.

The newest accepted manifest of each repository is remembered per user in
``state_dir/manifests`` (the stock client keeps the same fact per cache).
A mirror that serves an older, still validly signed manifest (a stale copy
or a replay) is then refused instead of silently turning back the clock.
Kept apart from the reader so that runs which confirm a known manifest
(``uvm.cvmfs.head``) can check it without importing the signature code.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Optional

from uvm import log as uvm_log
from uvm.errors import RollbackError

log = uvm_log.get(__name__)


def default_state_dir() -> str:
    base = (os.environ.get("XDG_STATE_HOME")
            or os.path.join(os.path.expanduser("~"), ".local", "state"))
    return os.path.join(base, "uvm")


class RollbackState:
    """Newest accepted manifest per repository, kept in ``state_dir/manifests``."""

    def __init__(self, state_dir: str) -> None:
        self.directory = os.path.join(state_dir, "manifests")

    def _path(self, fqrn: str) -> str:
        return os.path.join(self.directory, fqrn.replace("/", "_") + ".json")

    def check_and_record(self, fqrn: str, revision: int, timestamp: Optional[int],
                         root_hash: str) -> None:
        """Refuse a manifest older than the newest accepted; remember a newer one."""
        path = self._path(fqrn)
        try:
            with open(path) as handle:
                seen = json.load(handle)
        except (OSError, ValueError):
            seen = None
        if seen:
            newest_ts, newest_rev = int(seen.get("timestamp", 0)), int(seen.get("revision", 0))
            if timestamp is not None and timestamp < newest_ts:
                raise RollbackError(
                    f"manifest of {fqrn} (revision {revision}, published "
                    f"{_when(timestamp)}) is older than revision {newest_rev} seen before "
                    f"(published {_when(newest_ts)})",
                    hint="a mirror serves stale or replayed data",
                )
            if timestamp is None and revision < newest_rev:
                raise RollbackError(
                    f"manifest of {fqrn} has revision {revision}, older than {newest_rev}"
                )
            if (timestamp or 0) <= newest_ts and revision <= newest_rev:
                return
        record = {"timestamp": timestamp or 0, "revision": revision, "root_hash": root_hash}
        try:
            os.makedirs(self.directory, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as handle:
                json.dump(record, handle)
            os.replace(tmp, path)
        except OSError as err:
            log.warning("cannot record the manifest state of %s in %s: %s", fqrn, path, err)


def _when(timestamp: int) -> str:
    try:
        return _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # a damaged state file: say the number
        return f"at {timestamp} s"
