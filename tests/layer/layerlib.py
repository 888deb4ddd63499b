"""Helpers of the layer tests."""

from __future__ import annotations

import os


def fingerprint(root) -> dict:
    out = {}
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            full = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(full)
            out[full[len(root):] or "/"] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                            st.st_nlink, st.st_mtime_ns, st.st_ctime_ns)
    return out
