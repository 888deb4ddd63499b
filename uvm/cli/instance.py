"""``uvm instance``: named instances (writable layers kept across runs)."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "instance",
        help="list, show, remove or export named instances (uvm run --instance NAME)",
        description="Named instances keep the writable layer of `uvm run --instance NAME` "
        "across runs.",
    )
    sub = parser.add_subparsers(metavar="ACTION")
    p = sub.add_parser("list", help="the instances, their roots and sizes")
    p.set_defaults(handler=_list)
    p = sub.add_parser("show", help="one instance in detail")
    p.add_argument("name")
    p.set_defaults(handler=_show)
    p = sub.add_parser("rm", help="remove an instance (its layer)")
    p.add_argument("name", nargs="+")
    p.set_defaults(handler=_rm)
    p = sub.add_parser("export", help="write what the instance changed as a tar file "
                       "(deletions as .wh.NAME whiteouts)")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.set_defaults(handler=_export)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _list(args) -> int:
    from uvm.sandbox.instances import list_instances

    for inst in list_instances():
        info = inst.info()
        print(f"{inst.name}\t{info.get('what') or info.get('root')}\truns={info.get('runs', 0)}"
              f"\tlast={_when(info.get('last_run'))}\t{inst.size() // 1024} KiB"
              + ("\tin use" if inst.in_use() else ""))
    return 0


def _show(args) -> int:
    from uvm.sandbox.instances import Instance
    from uvm.sandbox.layer import Layer

    inst = Instance(args.name)
    info = inst.info()
    print(f"name      {inst.name}")
    print(f"path      {inst.path}")
    print(f"root      {info.get('root')}")
    print(f"created   {_when(info.get('created'))}")
    print(f"last run  {_when(info.get('last_run'))}")
    print(f"runs      {info.get('runs', 0)}")
    if info.get("identity"):
        print(f"identity  {info['identity'][0]}:{info['identity'][1]}")
    print(f"size      {inst.size() // 1024} KiB")
    print(f"in use    {'yes' if inst.in_use() else 'no'}")
    if not inst.in_use():
        layer = Layer(inst.path, info["root"])
        try:
            counts = {"dir": 0, "entry": 0, "deleted": 0}
            for kind, _g, _h in layer.changes():
                counts[kind] += 1
        finally:
            layer._journal.close()
        print(f"changes   {counts['entry']} objects, {counts['dir']} directories, "
              f"{counts['deleted']} deletions")
    return 0


def _rm(args) -> int:
    from uvm.sandbox.instances import Instance

    for name in args.name:
        Instance(name).remove()
    return 0


def _export(args) -> int:
    from uvm.sandbox.instances import Instance

    n = Instance(args.name).export(args.output)
    print(f"{args.output}: {n} members")
    return 0
