"""The ptrace sandbox: run programs with another directory tree as their root.

``run(root, argv, binds=...)`` and :class:`Sandbox` are the entry points;
:class:`Namespace` (root + binds) is the pure description other backends
feed.
"""

from __future__ import annotations

__all__ = ["Namespace", "Sandbox", "run"]


def __getattr__(name):
    if name == "Namespace":
        from uvm.sandbox.namespace import Namespace

        return Namespace
    if name in ("Sandbox", "run"):
        from uvm.sandbox import runner

        return getattr(runner, name)
    raise AttributeError(name)
