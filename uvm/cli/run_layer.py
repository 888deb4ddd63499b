"""``uvm run`` options of the writable layer, instances and identity.

The wiring for ``uvm/cli/run.py``: every ``--root`` run gets a writable
layer (a temporary directory removed at exit unless ``--keep``; a named
instance with ``--instance``; none with ``--no-layer``), and ``-0`` / ``-i``
choose the identity the guest sees.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, List, Optional, Tuple


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("writable layer and identity")
    group.add_argument("--keep", action="store_true",
                       help="keep the writable layer after the run (its directory is printed)")
    group.add_argument("--layer", metavar="DIR",
                       help="use DIR as the writable layer (created if missing, kept)")
    group.add_argument("--instance", metavar="NAME",
                       help="keep the layer as named instance NAME across runs "
                       "(see uvm instance)")
    group.add_argument("--no-layer", "--read-only", dest="no_layer", action="store_true",
                       help="no writable layer: writes go straight to the --root directory")
    group.add_argument("-0", "--root-id", action="store_true",
                       help="the guest sees itself as root (uid, gid and groups 0); "
                       "chown and mknod are recorded in the layer")
    group.add_argument("-i", "--identity", metavar="UID:GID",
                       help="the guest sees this uid and gid")


class LayerRun:
    """The layer (and instance lock) of one ``uvm run``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from uvm.errors import UsageError
        from uvm.sandbox.identity import Identity, parse_identity

        self.args = args
        self.layer: Any = None
        self.instance: Any = None
        self.temp = False
        self.identity: Optional[Identity] = None
        if args.root_id and args.identity:
            raise UsageError("-0 and -i both choose the identity", hint="give one of them")
        if args.root_id:
            self.identity = Identity(0, 0)
        elif args.identity:
            self.identity = parse_identity(args.identity)
        if args.no_layer and (args.keep or args.layer or args.instance or self.identity):
            raise UsageError("--no-layer excludes --keep, --layer, --instance, -0 and -i",
                             hint="the identity is kept in the layer's metadata")
        if args.instance and args.layer:
            raise UsageError("--instance and --layer both choose the layer", hint="give one of them")

    @staticmethod
    def wanted(args: argparse.Namespace) -> bool:
        return not args.no_layer

    def namespace(self, root: str, binds: List[Tuple[str, str]], default_binds: bool) -> Any:
        from uvm.sandbox.layer_tracer import LayerNamespace

        if not os.path.isdir(root):
            from uvm.sandbox.namespace import Namespace

            Namespace(root)  # the usual "guest root ... does not exist" error
        self._open(root, os.path.realpath(root))
        try:
            return LayerNamespace(root, self.layer, binds, default_binds=default_binds,
                                  identity=self.identity)
        except BaseException:
            self.finish()
            raise

    def asked(self) -> bool:
        """Did the user ask for a layer explicitly (templates have none by default)?"""
        a = self.args
        return bool(a.keep or a.layer or a.instance or self.identity)

    def _open(self, root: str, what: str, prepare=None) -> Any:
        from uvm.sandbox.layer import Layer

        args = self.args
        if args.instance:
            from uvm.sandbox.instances import Instance

            self.instance = Instance(args.instance)
            self.layer = self.instance.open_layer(root, what, self.identity, prepare=prepare)
        elif args.layer:
            self.layer = Layer(args.layer, root, prepare=prepare)
        else:
            self.temp = True
            self.layer = Layer(_temp_layer_dir(), root, prepare=prepare, durable=args.keep)
        return self.layer

    def over(self, ns: Any, what: str) -> Any:
        """A layer over the root of an existing namespace (a template's
        shadow tree: content is fetched before it is copied up)."""
        from uvm.errors import LayerError
        from uvm.sandbox.layer_tracer import LayerNamespace

        if ns.root == "/":
            raise LayerError("a writable layer needs a guest root (--root or --template)",
                             hint="--cvmfs alone runs on the host's /, which is not layered")
        lazy = getattr(ns, "lazy", None)
        prepare = None
        if lazy is not None:
            def prepare(host: str) -> None:
                lazy.ensure(host)
                lazy.before("open", host, 0)
        self._open(ns.root, what, prepare)
        try:
            return LayerNamespace(ns.root, self.layer, [(b.host, b.guest) for b in ns.binds],
                                  default_binds=False, lazy=lazy, identity=self.identity)
        except BaseException:
            self.finish()
            raise

    def finish(self) -> None:
        """Close the layer; remove a temporary one unless --keep."""
        if self.layer is None:
            return
        layer, self.layer = self.layer, None
        try:
            layer.close()
        finally:
            if self.instance is not None:
                self.instance.unlock()
            if self.temp and not self.args.keep:
                from uvm.sandbox.trees import remove_tree

                remove_tree(layer.path)
            elif self.temp:
                sys.stderr.write(f"uvm: writable layer kept in {layer.path}\n")
                sys.stderr.flush()


def _temp_layer_dir() -> str:
    """``tempfile.mkdtemp(prefix="uvm-layer-")``, made directly in the first
    directory tempfile would try ($TMPDIR, $TEMP, $TMP, else /tmp); by
    tempfile only when that fails (importing it is 2 ms of every run)."""
    env = os.environ
    base = env.get("TMPDIR") or env.get("TEMP") or env.get("TMP") or "/tmp"
    path = os.path.join(os.path.abspath(base), "uvm-layer-" + os.urandom(6).hex())
    try:
        os.mkdir(path, 0o700)
    except OSError:
        import tempfile

        return tempfile.mkdtemp(prefix="uvm-layer-")
    return path


__all__ = ["add_arguments", "LayerRun"]
