"""``uvm templates``: the configured templates, their revisions, tags and dates."""

from __future__ import annotations

import argparse
import datetime as _dt
from typing import Any, List, Optional


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "templates", help="list OS templates: names, repositories, revisions, tags, dates",
        description="List the templates of the configuration ([templates.NAME] tables) "
        "or the ones given (NAME or FQRN:/path), with the repository's current revision "
        "and its tags.  `uvm run --template NAME@TAG` or `NAME@DATE` picks one.")
    parser.add_argument("specs", nargs="*", metavar="NAME|FQRN:/path",
                        help="templates to show (default: every configured one)")
    parser.add_argument("--local", action="store_true",
                        help="only what the configuration says (no network, no cache)")
    parser.set_defaults(handler=_templates)


def _when(timestamp: Optional[int]) -> str:
    if not timestamp:
        return "-"
    return _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _show_prefetch_list(repo: Any, top: str) -> None:
    """The template's prefetch list (``templates.md``), when it has one."""
    from uvm.errors import UvmError
    from uvm.sandbox.materialize import PREFETCH_LIST, PREFETCH_LIST_MAX, parse_prefetch_list

    path = top.rstrip("/") + "/" + PREFETCH_LIST
    try:
        if not repo.exists(path) or repo.stat(path).size > PREFETCH_LIST_MAX:
            return
        with repo.open_file(path) as handle:
            names = parse_prefetch_list(handle.read())
    except UvmError as err:
        print(f"  prefetch list: cannot read ({err.one_line()})")
        return
    dirs = sum(1 for name in names if name.endswith("/"))
    print(f"  prefetch list: {len(names)} paths ({path}): {len(names) - dirs} files fetched "
          f"at once and {dirs} directories made meanwhile by cold starts")


def _templates(args: argparse.Namespace) -> int:
    from uvm import config as config_mod
    from uvm.cvmfs.client import open_repository
    from uvm.errors import UvmError
    from uvm.templates import parse_spec

    config = config_mod.load(getattr(args, "config", None))
    texts: List[str] = list(args.specs) or sorted(config.templates)
    if not texts:
        print("no templates configured (add [templates.NAME] tables to the configuration; "
              "`uvm run --template FQRN:/path` needs none)")
        return 0
    status = 0
    for text in texts:
        spec = parse_spec(text, config.templates)
        title = spec.name or spec.text
        print(f"{title}: {spec.repository}:{spec.path}")
        if spec.binds:
            print(f"  binds: {' '.join(spec.binds)}")
        if spec.env:
            print("  env:   " + " ".join(f"{k}={v}" for k, v in spec.env.items()))
        if args.local:
            continue
        try:
            repo: Any = open_repository(spec.repository, config, tag=spec.tag, date=spec.date)
        except UvmError as err:
            print(f"  error: {err.one_line()}")
            status = 1
            continue
        with repo:
            which = spec.selector or " (newest)"
            print(f"  revision {repo.revision}{which}: root catalog {repo.root_hash}, "
                  f"published {_when(repo.published)}")
            try:
                exists = repo.exists(spec.path)
            except UvmError:
                exists = False
            if not exists:
                print(f"  warning: {spec.path} does not exist in this revision")
            else:
                _show_prefetch_list(repo, spec.path)
            try:
                tags = repo.tags()
            except UvmError as err:
                print(f"  tags: cannot read ({err.one_line()})")
                tags = []
            shown = [t for t in tags if t.name not in ("trunk", "trunk-previous")]
            for tag in sorted(shown, key=lambda t: (t.revision, t.name)):
                print(f"  tag {tag.name:<20} revision {tag.revision:<6} {_when(tag.timestamp)}"
                      + (f"  {tag.description}" if getattr(tag, "description", "") else ""))
    return status
