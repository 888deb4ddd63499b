"""Open a repository the production way: configuration → fetcher → verified reader.

The one place where the network client is wired to the format reader, in a
fixed order (as ``MountPoint::Create`` does in the stock client): effective
settings for the repository, the shared cache, the fetcher with its mirror
and proxy chain, the master keys, then :meth:`Repository.open`, which
verifies manifest, certificate and whitelist through the fetcher.  Only once
that succeeded are the bootstrap files kept as the "last verified" state for
offline runs.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from uvm import config as config_mod
from uvm.cvmfs.cache import Cache
from uvm.cvmfs.domains import public_key_files
from uvm.cvmfs.fetcher import Fetcher, ObjectRequest
from uvm.cvmfs.hashing import Suffix


def parse_target(text: str) -> Tuple[str, str]:
    """``FQRN[:/path]`` → (fqrn, path)."""
    fqrn, _, path = text.partition(":")
    return fqrn, path or "/"


def open_repository(
    fqrn: str,
    config: Optional[config_mod.Config] = None,
    *,
    tag: Optional[str] = None,
    date: Optional[str] = None,
    root_hash: Optional[str] = None,
    cache: Optional[Cache] = None,
    state_dir: Optional[str] = None,
) -> Any:
    """A verified :class:`uvm.cvmfs.repository.Repository` whose source is a :class:`Fetcher`.

    ``tag``/``date``/``root_hash`` default to ``CVMFS_REPOSITORY_TAG`` /
    ``CVMFS_REPOSITORY_DATE`` / ``CVMFS_ROOT_HASH``.  The repository's
    ``source`` attribute is the fetcher (for prefetching and statistics).
    """
    from uvm.cvmfs.repository import Repository

    config = config or config_mod.load()
    settings = config.settings(fqrn)
    if tag is None and date is None and root_hash is None:
        tag = settings.repository_tag or None
        date = settings.repository_date or None
        root_hash = settings.root_hash or None
    fetcher = Fetcher.from_settings(fqrn, settings, cache)
    keys: Optional[List[str]] = public_key_files(settings.public_key, settings.keys_dir, fqrn)
    repository = Repository.open(
        fqrn, keys=keys or None, tag=tag, date=date, root_hash=root_hash,
        source=fetcher, state_dir=state_dir, environ=config.environ)
    fetcher.remember_verified()
    return repository


def subtree_objects(repository: Any, path: str = "/") -> List[ObjectRequest]:
    """Every object needed to read the files below ``path`` (chunks included).

    Walking loads the nested catalogs on the way (they are fetched and pinned
    as the walk reaches them); external files are skipped, as uvm does not
    fetch them.
    """
    wanted: List[ObjectRequest] = []
    for _directory, _dirs, others in repository.walk(path):
        for entry in others:
            if not entry.is_regular or entry.is_external:
                continue
            compressed = getattr(entry, "compressed", True)
            if entry.is_chunked:
                for chunk in repository.tree.chunks(entry):
                    wanted.append((chunk.content_hash, Suffix.PARTIAL, chunk.size, compressed))
            elif entry.content_hash is not None:
                wanted.append((entry.content_hash, Suffix.NONE, entry.size, compressed))
    return list(dict.fromkeys(wanted))
