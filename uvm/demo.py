"""``uvm demo``: the whole product on one machine, with no network beyond loopback.

1. build a small OS template from this machine's programs (``uvm.hostroot``);
2. publish it as a CernVM-FS repository with the publisher (``uvm publish``);
3. serve the repository over HTTP on 127.0.0.1 (a thread of this process);
4. list it with ``uvm templates``;
5. run a command inside it with ``uvm run --template``, cold and then warm.

Each step is announced through ``say``; the uvm commands run as
subprocesses with a configuration file written into the work directory,
exactly as a user would type them.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional

FQRN = "demo.uvm.local"
TEMPLATE = "demo"
TEMPLATE_PATH = "/os/demo"
DEFAULT_COMMAND = ("/bin/bash", "-c",
                   'echo "inside: $(. /etc/os-release; echo "$PRETTY_NAME")"; '
                   'echo "kernel: $(uname -sr), user id $(id -u)"; '
                   "python3 -c 'import sys, json; print(\"python\", sys.version.split()[0], "
                   "json.dumps({\"ok\": True}))'; echo \"/ holds:\" $(ls /)")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class LoopbackServer:
    """A static web server on 127.0.0.1 for ``docroot`` (a daemon thread)."""

    def __init__(self, docroot: str) -> None:
        handler = functools.partial(_QuietHandler, directory=docroot)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _uvm(config: str, *args: str) -> List[str]:
    return [sys.executable, "-m", "uvm", "--config", config, *args]


def _child_env(work: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVMFS_")}
    env["XDG_STATE_HOME"] = os.path.join(work, "state")
    env["XDG_CONFIG_HOME"] = os.path.join(work, "no-user-config")
    return env


def run_demo(work: Optional[str] = None, command: Optional[List[str]] = None,
             keep: bool = False, say: Callable[[str], None] = print) -> int:
    from uvm.cvmfs.publish import create_keys, publish
    from uvm.hostroot import build_root

    own = work is None
    work = work or tempfile.mkdtemp(prefix="uvm-demo-")
    os.makedirs(work, exist_ok=True)
    work = os.path.realpath(work)
    command = list(command or DEFAULT_COMMAND)
    try:
        started = time.monotonic()
        src = os.path.join(work, "src")
        say(f"[1/5] building a small OS template from this machine's programs in {src}")
        shutil.rmtree(src, ignore_errors=True)
        counts = build_root(src + TEMPLATE_PATH)
        say(f"      {counts['programs']} programs and python modules, {counts['libraries']} "
            f"shared libraries, {counts['files']} files")

        store = os.path.join(work, "www", "cvmfs", FQRN)
        keys = os.path.join(work, "keys")
        say(f"[2/5] publishing it as repository {FQRN}: uvm publish {src} --repo {FQRN} "
            f"--to {store} --keys {keys} --tag demo-1")
        if not os.path.exists(os.path.join(keys, FQRN + ".pub")):
            create_keys(FQRN, keys)
        result = publish(src, FQRN, store, keys, tag="demo-1")
        say(f"      revision {result.revision}, root catalog {result.root_hash}, "
            f"{result.new_objects} new objects")

        with LoopbackServer(os.path.join(work, "www")) as server:
            url = f"http://127.0.0.1:{server.port}/cvmfs/@fqrn@"
            say(f"[3/5] serving it on loopback: {url.replace('@fqrn@', FQRN)}")
            config = os.path.join(work, "config.toml")
            with open(config, "w") as handle:
                handle.write(
                    f'cache_base = "{os.path.join(work, "cache")}"\n\n'
                    f'[repositories."{FQRN}"]\nserver_url = "{url}"\nkeys_dir = "{keys}"\n\n'
                    f'[templates.{TEMPLATE}]\nrepository = "{FQRN}"\npath = "{TEMPLATE_PATH}"\n'
                    f'env = {{ LANG = "C" }}\n')
            env = _child_env(work)
            say(f"[4/5] uvm --config {config} templates")
            res = subprocess.run(_uvm(config, "templates"), env=env)
            if res.returncode != 0:
                say("uvm demo: listing the templates failed")
                return res.returncode
            status = 0
            for label in ("cold cache", "warm cache"):
                shown = " ".join(_quote(a) for a in command)
                say(f"[5/5] ({label}) uvm run --template {TEMPLATE} -- {shown}")
                began = time.monotonic()
                res = subprocess.run(_uvm(config, "run", "--template", TEMPLATE, "--clean-env",
                                          "--", *command), env=env)
                say(f"      exit status {res.returncode} in {time.monotonic() - began:.2f} s")
                status = status or res.returncode
        say(f"done in {time.monotonic() - started:.1f} s"
            + (f"; everything is in {work}" if keep or not own else ""))
        return status
    finally:
        if own and not keep:
            from uvm.sandbox.trees import remove_tree

            remove_tree(work)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)




__all__ = ["run_demo", "LoopbackServer"]
