"""``uvm run --template / --cvmfs / --record / --replay``: CernVM-FS trees in the sandbox.

The wiring for ``uvm/cli/run.py``: opens each repository once (its revision
pinned for the whole run), presents it as a shadow tree
(``uvm.sandbox.materialize``), and builds the :class:`Namespace`: the
template's subtree as ``/``, or the host's ``/`` for grid worker nodes, and
``/cvmfs/FQRN`` for every repository asked for.  Writes and reads run
records.  The options themselves are declared in ``run.py``, which imports
this module only when one of them is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Tuple

    from uvm.record import RunRecord

HOST_BINDS = ("/proc", "/sys", "/dev", "/tmp")


class CvmfsRun:
    """Repositories, shadow trees and the record of one ``uvm run``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from uvm import config as config_mod
        from uvm.errors import UsageError

        self.args = args
        self.config = config_mod.load(getattr(args, "config", None))
        self.repositories: List[Any] = []
        self._opened: Dict[Tuple[str, Optional[str], Optional[str], Optional[str]], Any] = {}
        self._opening = threading.Lock()  # _open_all's threads
        self.trees: Any = None
        self.template: Any = None
        self.template_repo: Any = None
        self.mounted: List[Tuple[str, Any]] = []
        self.started = time.time()
        self.replayed: Optional[RunRecord] = None
        if args.replay:
            from uvm.record import RunRecord  # (not on other runs: it imports dataclasses)

            try:
                with open(args.replay) as handle:
                    self.replayed = RunRecord.from_json(handle.read(), args.replay)
            except OSError as err:
                raise UsageError(f"cannot read {args.replay}: {err.strerror}") from None
            if args.template or args.cvmfs or args.root:
                raise UsageError("--replay takes the template and repositories from the record",
                                 hint="drop --template, --cvmfs and --root")
        if args.template and args.root:
            raise UsageError("--template and --root both choose the guest's /",
                             hint="give one of them")
        if args.record_prefetch and not (args.template or args.replay):
            raise UsageError("--record-prefetch lists the files of a template",
                             hint="add --template NAME")

    # -- the command -------------------------------------------------------------------

    def command(self, given: Sequence[str]) -> List[str]:
        if self.replayed is not None and not given:
            return list(self.replayed.command)
        return list(given)

    def apply_replay_options(self) -> None:
        """Fill cwd, binds and --env from the record (options given now come after)."""
        record = self.replayed
        if record is None:
            return
        if not self.args.cwd and record.cwd:
            self.args.cwd = record.cwd
        self.args.bind = list(record.binds) + list(self.args.bind)
        self.args.env = list(record.env) + list(self.args.env)

    # -- opening -----------------------------------------------------------------------

    def _open_all(self, wanted: List[Tuple[str, Optional[str], Optional[str], Optional[str]]]
                  ) -> None:
        """Open the run's repositories (fqrn, tag, date, root hash) side by side:
        each costs round trips (manifest, then catalog), which then overlap
        instead of adding up.  The first failure is raised once all ended; what
        did open is closed by :meth:`close`, as after a failure one by one."""
        wanted = list(dict.fromkeys(wanted))
        if len(wanted) < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(wanted)),
                                thread_name_prefix="uvm-open") as pool:
            futures = [pool.submit(self._open, *request) for request in wanted]
        for future in futures:
            future.result()

    def _open(self, fqrn: str, tag: Optional[str] = None, date: Optional[str] = None,
              root_hash: Optional[str] = None) -> Any:
        from uvm.sandbox.materialize import LazyRepository

        key = (fqrn, tag, date, root_hash)
        with self._opening:
            if key in self._opened:
                return self._opened[key]
        head = tag is None and date is None and root_hash is None
        for known_head, repo in list(self.repositories):
            if repo.fqrn == fqrn and root_hash is not None and str(repo.root_hash) == root_hash:
                return repo
            if repo.fqrn == fqrn and head and known_head:
                return repo
        revision = None
        offline = False
        if head:  # the manifest an earlier run verified, while fresh or served unchanged
            from uvm.cvmfs.head import fresh_head, revalidate_head

            settings = self.config.settings(fqrn)
            known = fresh_head(fqrn, settings) or revalidate_head(fqrn, settings)
            if known is not None:
                root_hash, revision, offline = known
        if root_hash is not None:
            opener = self._opener(fqrn, root_hash, quiet_offline=offline)
            repo = LazyRepository(fqrn, root_hash, opener, self.config.environ, revision)
        else:
            repo = self._opener(fqrn, None, tag, date)()
        with self._opening:
            self.repositories.append((head, repo))
            self._opened[key] = repo
        return repo

    def _opener(self, fqrn: str, root_hash: Optional[str], tag: Optional[str] = None,
                date: Optional[str] = None, quiet_offline: bool = False) -> Any:
        def opener() -> Any:
            from uvm.cvmfs.client import open_repository

            return open_repository(fqrn, self.config, tag=tag, date=date, root_hash=root_hash,
                                   quiet_offline=quiet_offline)
        return opener

    def _cvmfs_names(self) -> List[Tuple[str, Optional[str], Optional[str]]]:
        """(fqrn, tag, date) of every --cvmfs argument."""
        from uvm.errors import UsageError
        from uvm.templates import is_date

        names: List[Tuple[str, Optional[str], Optional[str]]] = []
        for item in self.args.cvmfs:
            for name in item.split(","):
                name = name.strip()
                if not name:
                    continue
                if name == "all":
                    everything = set(self.config.repositories())
                    everything.update(t.repository for t in self.config.templates.values())
                    if not everything:
                        raise UsageError("--cvmfs all: no repository is named in the configuration",
                                         hint="add [repositories.\"FQRN\"] tables or name them")
                    names.extend((n, None, None) for n in sorted(everything))
                else:
                    fqrn, _, selector = name.partition("@")
                    date = selector if selector and is_date(selector) else None
                    tag = selector if selector and not date else None
                    names.append((fqrn, tag, date))
        seen: Dict[str, Tuple[str, Optional[str], Optional[str]]] = {}
        for item in names:
            seen[item[0]] = item  # the last one given for a repository wins
        return list(seen.values())

    def namespace(self, binds: List[Tuple[str, str]], default_binds: bool) -> Any:
        from uvm.errors import SandboxError, UsageError
        from uvm.sandbox import materialize
        from uvm.sandbox.namespace import Namespace, binds_from_specs
        from uvm.templates import parse_spec

        settings = self.config.settings()
        show = None
        if sys.stderr.isatty() and not getattr(self.args, "quiet", False):
            def show(line: str) -> None:
                sys.stderr.write(f"uvm: {line}\n")
                sys.stderr.flush()
        self.fetch_log = materialize.FetchLog(show)
        self.trees = materialize.CvmfsTrees(materialize.shadow_base(settings.cache_base),
                                            self.fetch_log)
        record = self.replayed
        root: Optional[str] = None
        pre_binds: List[Tuple[str, str]] = []
        if record is not None:
            mounts = [(r.repository, None, None, r.root_hash) for r in record.repositories]
        else:
            mounts = [(name, tag, date, None) for name, tag, date in self._cvmfs_names()]
        spec = None
        wanted = list(mounts)
        if record is not None and record.template is not None:
            wanted.insert(0, (record.template.repository, None, None, record.template.root_hash))
        elif self.args.template:
            spec = parse_spec(self.args.template, self.config.templates)
            wanted.insert(0, (spec.repository, spec.tag, spec.date, None))
        self._open_all(wanted)
        if record is not None and record.template is not None:
            t = record.template
            self._use_template(t.repository, t.path, None, None, t.root_hash, t.spec)
        elif spec is not None:
            self.spec = spec
            self._use_template(spec.repository, spec.path, spec.tag, spec.date, None,
                               spec.text)
            if spec.env:
                self.args.env = [f"{k}={v}" for k, v in spec.env.items()] + list(self.args.env)
            pre_binds += binds_from_specs(list(spec.binds))
        if self.template is not None:
            tree, path = self.template
            root = tree.host_of(path)
            if not os.path.isdir(root):
                raise UsageError(f"template {self.template_spec}: {path} is not a directory "
                                 f"in {tree.fqrn}")
            if default_binds:
                pre_binds = [(p, p) for p in HOST_BINDS if os.path.isdir(p)] + pre_binds
        elif self.args.root:
            root = self.args.root
        else:
            root = "/"
        cvmfs_binds: List[Tuple[str, str]] = []
        if mounts:
            names = [m[0] for m in mounts]
            cvmfs_binds.append((materialize.mounts_dir(self.trees.base, names), "/cvmfs"))
            for name, tag, date, root_hash in mounts:
                if self.template is not None and name == self.template[0].fqrn \
                        and tag is None and date is None \
                        and root_hash in (None, self.template[0].root_hash):
                    tree = self.template[0]
                else:
                    tree = self.trees.add(self._open(name, tag=tag, date=date,
                                                     root_hash=root_hash))
                self.mounted.append((name, tree))
                cvmfs_binds.append((tree.top, f"/cvmfs/{name}"))
        try:
            return Namespace(root, pre_binds + cvmfs_binds + list(binds),
                             default_binds=default_binds, lazy=self.trees)
        except SandboxError:
            raise

    def _use_template(self, fqrn: str, path: str, tag: Optional[str], date: Optional[str],
                      root_hash: Optional[str], text: Optional[str]) -> None:
        repo = self._open(fqrn, tag=tag, date=date, root_hash=root_hash)
        tree = self.trees.add(repo, sysroot=path if path != "/" else "")
        if self.args.record_prefetch:
            tree.fetched = []
        self.template = (tree, path)
        self.template_repo = repo
        self.template_spec = text or f"{fqrn}:{path}"

    # -- the end -----------------------------------------------------------------------

    def finish(self, status: Optional[int], command: Sequence[str]) -> None:
        summary = self.fetch_log.summary() if getattr(self, "fetch_log", None) else None
        if summary and self.fetch_log.show is not None:
            self.fetch_log.show(summary)
        if self.args.record_prefetch and self.template is not None:
            self._write_prefetch_list(self.args.record_prefetch)
        if self.args.record:
            from datetime import datetime, timezone

            from uvm import __version__
            from uvm.record import RunRecord, TreeRecord

            template = None
            if self.template is not None:
                tree, path = self.template
                template = TreeRecord(tree.fqrn, tree.root_hash, self.template_repo.revision,
                                      path, self.template_spec)
            repos = []
            for name, tree in self.mounted:
                repos.append(TreeRecord(name, tree.root_hash, tree.repo.revision))
            record = RunRecord(
                command=list(command), cwd=self.args.cwd, template=template,
                repositories=repos, binds=list(self.args.bind), env=list(self.args.env),
                exit_status=status,
                started=datetime.fromtimestamp(self.started, timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%SZ"),
                elapsed_s=round(time.time() - self.started, 3), uvm_version=__version__)
            _write_output("--record", self.args.record, record.to_json())

    def _write_prefetch_list(self, path: str) -> None:
        """The files this run fetched and the directories it completed,
        after those ``path`` lists already (so that several commands
        recorded one after another make one list)."""
        from uvm.errors import UvmError
        from uvm.sandbox.materialize import PREFETCH_LIST, parse_prefetch_list

        tree, top = self.template
        names = tree.fetched_below("" if top == "/" else top)
        try:
            with open(path, "rb") as handle:
                known = parse_prefetch_list(handle.read())
        except FileNotFoundError:
            known = []
        except OSError as err:
            raise UvmError(f"cannot read --record-prefetch {path}: {err.strerror}",
                           hint="give a file you can read and write") from None
        lines = [f"# files starts in {tree.fqrn}:{top} fetched, then directories they listed "
                 f"(last: revision {self.template_repo.revision}), recorded by uvm run "
                 "--record-prefetch;",
                 f"# publish this file as {top.rstrip('/')}/{PREFETCH_LIST} to fetch them "
                 "in one wave, and make the directories meanwhile, on cold starts", *dict.fromkeys(known + names)]
        _write_output("--record-prefetch", path, "\n".join(lines) + "\n")
        if not any(not name.endswith("/") for name in names):
            sys.stderr.write(f"uvm: warning: {path} lists no file: this run found every file "
                             "it opened in the cache; record on a cold cache "
                             "(CVMFS_CACHE_BASE=$(mktemp -d) uvm run ...)\n")

    def close(self) -> None:
        if self.trees is not None:
            self.trees.close()
        for _head, repo in self.repositories:
            try:
                repo.close()
            except Exception:  # closing must not hide the run's status
                pass


def _write_output(option: str, path: str, text: str) -> None:
    """``text`` as file ``path``, whole or not at all (a full disk leaves the
    old file, or none, and says which option failed)."""
    from uvm.errors import UvmError

    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UvmError(f"cannot write {option} {path}: {err.strerror}",
                       hint="the command itself ran; free space or give another file") from None


def describe(run: CvmfsRun) -> Dict[str, Any]:
    """What the run uses, for ``-v``."""
    out: Dict[str, Any] = {}
    if run.template is not None:
        out["template"] = f"{run.template[0].fqrn}:{run.template[1]} @ {run.template[0].root_hash}"
    out["cvmfs"] = [f"{name} @ {tree.root_hash}" for name, tree in run.mounted]
    return out
