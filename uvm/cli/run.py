"""``uvm run``: run a command with a directory as its root filesystem."""

from __future__ import annotations

import argparse
import os
import sys

from uvm.cli import run_layer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a command inside a guest root (like proot -r)",
        description="Run CMD with DIR as its root directory, without privileges: "
        "a ptrace tracer translates every path the guest uses.",
    )
    parser.add_argument("--root", "-r", metavar="DIR",
                        help="host directory to use as the guest's / (or --template, or "
                        "--cvmfs alone for the host's /)")
    parser.add_argument("-b", "--bind", action="append", default=[], metavar="HOST[:GUEST]",
                        help="make host path HOST visible at GUEST (default: the same path); repeatable")
    parser.add_argument("-w", "--cwd", metavar="DIR",
                        help="guest working directory (default: the current directory "
                        "if the guest can see it, else /)")
    parser.add_argument("--clean-env", action="store_true",
                        help="start from an empty environment (PATH, HOME and TERM get defaults)")
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="set an environment variable in the guest; repeatable")
    parser.add_argument("--no-default-binds", action="store_true",
                        help="do not bind the host's /proc, /sys, /dev, /tmp when the root lacks them")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log every path translation (to stderr or --log)")
    parser.add_argument("--log", metavar="FILE", help="write -v output to FILE")
    parser.add_argument("--wait-all", action="store_true",
                        help="when the command ends, wait for the processes it left behind "
                        "(default: kill them)")
    parser.add_argument("--stats", metavar="FILE",
                        help="write tracer counters (stops, processes, seccomp) as JSON to FILE")
    parser.add_argument("--spread", action="store_true",
                        help="let the scheduler place uvm and the guest on any CPU (default: one "
                        "CPU while the guest runs one thing at a time, which saves most of a "
                        "stop's cost; every allowed CPU when it runs several)")
    parser.add_argument("--no-seccomp", action="store_true",
                        help="stop on every system call (debugging; slow)")
    _add_cvmfs_arguments(parser)  # --template, --cvmfs, --record, --replay
    run_layer.add_arguments(parser)  # --keep, --layer, --instance, --no-layer, -0, -i
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                        help="the command to run")
    parser.set_defaults(handler=_run)


def _add_cvmfs_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``uvm/cli/run_cvmfs.py``, declared here: a plain
    ``--root`` run does not import the CernVM-FS side."""
    group = parser.add_argument_group("CernVM-FS")
    group.add_argument("--template", "-t", metavar="SPEC",
                       help="use a repository subtree as the guest's /: NAME[@TAG|@DATE] "
                       "from the configuration, or FQRN:/path[@TAG|@DATE]")
    group.add_argument("--cvmfs", action="append", default=[], metavar="FQRN|all",
                       help="make repository FQRN visible at /cvmfs/FQRN (repeatable; "
                       "FQRN@TAG or FQRN@DATE pins a revision; 'all': every repository "
                       "named in the configuration); without --template or --root the "
                       "host's / is the guest's /")
    group.add_argument("--record", metavar="FILE",
                       help="write a JSON record of the run: command, revisions (root "
                       "catalog hashes), exit status")
    group.add_argument("--replay", metavar="FILE",
                       help="run the command of a record again, on the same revisions")
    group.add_argument("--record-prefetch", metavar="FILE",
                       help="write the template files this run fetched, one per line, "
                       "after those FILE already lists: published as .uvm-prefetch at the "
                       "template's top, they are fetched in one parallel wave by the first "
                       "run of a revision (record on a cold cache)")


def _cvmfs_wanted(args: argparse.Namespace) -> bool:
    return bool(args.template or args.cvmfs or args.replay or args.record
                or args.record_prefetch)


def _environment(args: argparse.Namespace) -> dict:
    from uvm.errors import UsageError

    if args.clean_env:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root" if os.geteuid() == 0 else "/",
        }
        if "TERM" in os.environ:
            env["TERM"] = os.environ["TERM"]
    else:
        env = dict(os.environ)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"bad --env {item!r}", hint="use --env KEY=VALUE")
        env[key] = value
    return env


def _check_outputs(args: argparse.Namespace) -> None:
    """The files a run writes are checked before it starts: a job of hours
    must not end in "cannot write"."""
    from uvm.errors import UsageError

    for option, path in (("--log", args.log), ("--stats", args.stats),
                         ("--record", args.record), ("--record-prefetch", args.record_prefetch)):
        if not path:
            continue
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"{option} {path}: directory {parent} does not exist",
                             hint="create it, or give another file")
        if os.path.isdir(path):
            raise UsageError(f"{option} {path} is a directory", hint="give a file name")
        if not os.access(parent, os.W_OK | os.X_OK) \
                or (os.path.exists(path) and not os.access(path, os.W_OK)):
            raise UsageError(f"{option} {path}: not writable", hint="give a file you can write")


def _run(args: argparse.Namespace) -> int:
    from uvm.errors import UsageError
    from uvm.sandbox.namespace import Namespace, binds_from_specs
    from uvm.sandbox.runner import Sandbox, reraise_status

    _check_outputs(args)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    cv = None
    if _cvmfs_wanted(args):
        from uvm.cli.run_cvmfs import CvmfsRun

        cv = CvmfsRun(args)
        command = cv.command(command)
        cv.apply_replay_options()
    elif not args.root:
        raise UsageError("no guest root given", hint="use --root DIR, --template SPEC or --cvmfs FQRN")
    if not command:
        raise UsageError("no command given", hint="uvm run --root DIR -- CMD ARGS")
    status = None
    lr = run_layer.LayerRun(args)  # the writable layer (--root runs; templates when asked)
    try:
        ns = (cv.namespace(binds_from_specs(args.bind), not args.no_default_binds) if cv
              else lr.namespace(args.root, binds_from_specs(args.bind), not args.no_default_binds)
              if lr.wanted(args)
              else Namespace(args.root, binds_from_specs(args.bind),
                             default_binds=not args.no_default_binds))
        if cv is not None and lr.asked():
            ns = lr.over(ns, args.template or args.replay or "")
    except BaseException:
        if cv is not None:
            cv.close()
        raise
    log = open(args.log, "a") if args.log else None
    try:
        box = Sandbox(ns, command, cwd=args.cwd, env=_environment(args),
                      verbose=args.verbose, log=log, wait_all=args.wait_all,
                      use_seccomp=not args.no_seccomp, spread=args.spread)
        status = box.run()
        if args.stats:
            box.write_stats(args.stats)
    finally:
        if log:
            log.close()
        if cv is not None:
            cv.finish(status, command)
            cv.close()
        lr.finish()
    sys.stdout.flush()
    return reraise_status(box.result.status) if box.result else status
