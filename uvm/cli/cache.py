"""``uvm cache info | clean | preload``: the shared object cache."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Optional


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="inspect, clean or fill the shared object cache")
    commands = parser.add_subparsers(metavar="ACTION")

    info = commands.add_parser("info", help="size, quota, objects and hit rate")
    info.set_defaults(handler=_info)

    clean = commands.add_parser("clean", help="remove every object not in use by a running uvm")
    clean.set_defaults(handler=_clean)

    preload = commands.add_parser(
        "preload", help="download a repository subtree into the cache, in parallel")
    preload.add_argument("target", metavar="FQRN[:/path]|TEMPLATE",
                         help="a repository subtree, or a template from the configuration")
    choice = preload.add_mutually_exclusive_group()
    choice.add_argument("--tag", metavar="NAME", help="the revision with this tag")
    choice.add_argument("--date", metavar="ISO8601",
                        help="the newest revision published at or before this time")
    choice.add_argument("--root-hash", metavar="HASH", help="this root catalog")
    preload.add_argument("-j", "--parallel", type=int, metavar="N",
                         help="parallel downloads (default: parallel_downloads setting)")
    preload.set_defaults(handler=_preload)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _open_cache(args: argparse.Namespace) -> Any:
    from uvm import config as config_mod
    from uvm.cvmfs.cache import Cache

    settings = config_mod.load(getattr(args, "config", None)).settings()
    return Cache(settings.cache_base, settings.quota_limit)


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def _info(args: argparse.Namespace) -> int:
    cache = _open_cache(args)
    try:
        info = cache.info()
        repositories = cache.known_repositories()
    finally:
        cache.close()
    quota = info["quota_limit"]
    rate = info["hit_rate"]
    print(f"directory:   {info['directory']}" + ("  (shared)" if info["shared"] else ""))
    print(f"size:        {human(info['size'])}"
          + (f" of {human(quota)} quota ({100 * info['size'] / quota:.0f}%)" if quota
             else " (no quota)"))
    print(f"objects:     {info['objects']}  ({info['pinned']} pinned by running processes)")
    print("hit rate:    " + (f"{100 * rate:.1f}% of {info['hits'] + info['misses']} lookups"
                               if rate is not None else "no lookups yet"))
    print(f"downloaded:  {info['downloads']} objects, {human(info['bytes_downloaded'])}; "
          f"{info['evictions']} evicted")
    print(f"free disk:   {human(info['free'])}")
    if info["in_progress"] or info["quarantined"]:
        print(f"in progress: {info['in_progress']} downloads; "
              f"{info['quarantined']} quarantined objects")
    now = time.time()
    for fqrn, fields, verified in repositories:
        published = fields.get("T")
        when = (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(int(published)))
                if published and published.isdigit() else "?")
        print(f"repository:  {fqrn} revision {fields.get('S', '?')}, published {when}, "
              f"verified {_ago(now - verified)} (offline runs start from here)")
    return 0


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{max(0, int(seconds))} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def _clean(args: argparse.Namespace) -> int:
    cache = _open_cache(args)
    try:
        removed = cache.clean()
        left = cache.info()
    finally:
        cache.close()
    if not args.quiet:
        print(f"removed {removed} objects; {left['objects']} pinned objects kept "
              f"({human(left['size'])})")
    return 0


class ProgressBar:
    """One updating line on a terminal: percentage, counts, rate and ETA."""

    def __init__(self, stream: Any, what: str) -> None:
        self.stream = stream
        self.what = what
        self._last = 0.0

    def __call__(self, state: Any) -> None:
        now = time.monotonic()
        finished = state.done == state.total
        if not finished and now - self._last < 0.1:
            return
        self._last = now
        elapsed = max(now - state.started, 1e-6)
        fraction = (state.bytes_done / state.bytes_total if state.bytes_total
                    else state.done / max(state.total, 1))
        rate = state.bytes_done / elapsed
        eta = (elapsed / fraction - elapsed) if fraction > 0 else None
        bar = "#" * int(fraction * 24)
        text = (f"\r{self.what} [{bar:<24}] {100 * fraction:5.1f}% "
                f"{state.done}/{state.total} objects, {human(state.bytes_done)}, "
                f"{human(rate)}/s, ETA {_clock(eta)}")
        if state.failed:
            text += f", {state.failed} failed"
        self.stream.write(text + ("\n" if finished else ""))
        self.stream.flush()


def _clock(seconds: Optional[float]) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _preload(args: argparse.Namespace) -> int:
    from uvm import config as config_mod
    from uvm.cvmfs.client import open_repository, parse_target, subtree_objects

    config = config_mod.load(getattr(args, "config", None))
    template = config.templates.get(args.target)
    if template is not None:  # a template name preloads its tree
        fqrn, path = template.repository, template.path
    else:
        fqrn, path = parse_target(args.target)
    started = time.monotonic()
    with open_repository(fqrn, config, tag=args.tag, date=args.date,
                         root_hash=args.root_hash) as repository:
        wanted = subtree_objects(repository, path)
        fetcher = repository.source
        show = sys.stderr.isatty() and not args.quiet
        progress = ProgressBar(sys.stderr, f"{fqrn}:{path}") if show else None
        fetcher.prefetch(wanted, progress=progress, parallel=args.parallel)
        total = sum(item[2] or 0 for item in wanted)
        if not args.quiet:
            print(f"{fqrn}:{path} revision {repository.revision}: {len(wanted)} objects, "
                  f"{human(total)} in the cache ({time.monotonic() - started:.1f} s)")
    return 0
