"""``uvm config show``: the effective settings and where each one came from."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="show the effective configuration")
    commands = parser.add_subparsers(metavar="ACTION")
    show = commands.add_parser(
        "show", help="print every setting, its value and its origin (file, environment, default)")
    show.add_argument("--repo", metavar="FQRN",
                      help="settings as they apply to this repository (domain and "
                      "repository tables, built-in stratum-1 list)")
    show.set_defaults(handler=_show)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def _show(args: argparse.Namespace) -> int:
    from uvm import config as config_mod
    from uvm.cvmfs.domains import public_key_files

    config = config_mod.load(getattr(args, "config", None))
    settings = config.settings(args.repo)
    scope = f"repository {args.repo}" if args.repo else "all repositories"
    print(f"# effective settings for {scope}")
    if config.files:
        print("# files read (later wins): " + ", ".join(f.path for f in config.files))
    else:
        print("# no configuration file found (looked in "
              + ", ".join(config_mod.config_file_paths(config.environ)) + ")")
    rows = []
    for key, value in settings.items():
        setting = config_mod.SETTINGS_BY_KEY[key]
        rows.append((f"{key} = {_format(value.value)}", value.origin, setting.env or ""))
    width = min(max(len(r[0]) for r in rows), 40)
    for text, origin, env in rows:
        print(f"{text:<{width}}  # {origin}" + (f"; env {env}" if env else ""))
    if args.repo:
        from uvm.cvmfs.servers import expand_server_urls, parse_proxy_groups

        mirrors = expand_server_urls(settings.server_url, args.repo)
        print(f"# mirrors: {' ; '.join(mirrors) or '(none)'}")
        groups = parse_proxy_groups(settings.http_proxy, settings.fallback_proxy)
        print("# proxy groups: " + " ; ".join(" | ".join(g) for g in groups))
        keys = public_key_files(settings.public_key, settings.keys_dir, args.repo)
        print("# master keys: " + (", ".join(keys) or "(none found)"))
    for name, template in sorted(config.templates.items()):
        print(f"# template {name}: {template.repository}:{template.path}  ({template.origin})")
    return 0
