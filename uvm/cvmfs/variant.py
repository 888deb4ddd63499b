"""Variant symlinks: ``$(VAR)`` and ``$(VAR:-default)`` in link targets.

The stock client expands them from its own environment when it reads a
symlink (``SqlDirent::ExpandSymlink``, format notes §4.4): an unset variable
without a default becomes the empty string and an unterminated ``$(`` stays
literal.  Pure function; the caller chooses the environment.
"""

from __future__ import annotations

from typing import Mapping


def expand(target: str, environ: Mapping[str, str]) -> str:
    """Expand every ``$(NAME)`` / ``$(NAME:-default)`` in ``target``."""
    if "$" not in target:
        return target
    out = []
    i, end = 0, len(target)
    while i < end:
        char = target[i]
        if char == "$" and i < end - 2 and target[i + 1] == "(":
            close = target.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
                continue
            body = target[i + 2:close]
            name, sep, default = body.partition(":-")
            value = environ.get(name)
            out.append(value if value is not None else (default if sep else ""))
            i = close + 1
            continue
        out.append(char)
        i += 1
    return "".join(out)
