"""Helpers of the layer tests."""

from __future__ import annotations

import os

# Scratch directories of the shared cached roots: other tests run programs
# there under native chroot (their baseline), at the same time as these.
SHARED_SCRATCH = ("/tmp", "/var/tmp")


def fingerprint(root, skip=()) -> dict:
    """Every entry's name, type, mode, owner, size, link count, mtime and
    ctime (ctime changes on any write or attribute change), except below the
    guest directories in ``skip``."""
    out = {}
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        guest_dir = dirpath[len(root):] or "/"
        if guest_dir in skip:
            dirnames[:] = []
            continue
        for name in [""] + dirnames + filenames:
            full = os.path.join(dirpath, name) if name else dirpath
            if name and full[len(root):] in skip:
                continue  # other tests write there at the same time
            st = os.lstat(full)
            out[full[len(root):] or "/"] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                            st.st_nlink, st.st_mtime_ns, st.st_ctime_ns)
    return out
