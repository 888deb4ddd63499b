"""``uvm run --template`` and ``--cvmfs`` end to end, as root and as the test user.

Real programs in a template published by ``uvm publish`` and served on
loopback; the guest's view is compared with the reader (``Repository``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Tuple

from conftest import (FQRN, MISC, TEMPLATE_PATH, env_for, publish_tree, run_uvm, tempfile_dir,
                      uvm_cmd)

from faultserver import FaultServer

from uvm.cvmfs.repository import Repository

TEMPLATE = f"{FQRN}:{TEMPLATE_PATH}"


def _ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res.stdout


def test_template_runs_programs(uvm_runner, published, server, workdir):
    env = env_for(published, server.url_for(), workdir)
    out = _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "/bin/sh", "-c",
                      "cat /etc/uvm-marker; id -u; stat -c '%u %a' /etc/os-release; "
                      "python3 -c 'import json, hashlib; print(json.dumps([hashlib.sha256(b\"x\").hexdigest()[:8]]))'; "
                      "ls /srv; readlink /bin; cd /usr && pwd"))
    lines = out.splitlines()
    assert lines[0] == "revision one"
    assert lines[1] == str(uvm_runner.uid)
    assert lines[2] == f"{uvm_runner.uid} 644"   # owned by the invoking user, published mode
    assert lines[3] == '["2d711642"]'
    assert lines[4] == "empty"
    assert lines[5] == os.readlink("/bin") if os.path.islink("/bin") else True
    assert lines[-1] == "/usr"


def test_template_is_read_only(uvm_runner, published, server, workdir):
    env = env_for(published, server.url_for(), workdir)
    res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "/bin/sh", "-c",
                  "touch /etc/new 2>&1; { echo x >> /etc/uvm-marker; } 2>&1; rm /etc/os-release 2>&1; "
                  "mkdir -p /etc && echo mkdir-p-ok; echo hi > /tmp/uvm-tmpl-$$ && cat /tmp/uvm-tmpl-$$ "
                  "&& rm /tmp/uvm-tmpl-$$; cat /etc/uvm-marker")
    out = _ok(res)
    assert out.count("Read-only file system") == 3, out
    assert "mkdir-p-ok" in out and "hi" in out
    assert out.rstrip().endswith("revision one")


_LISTER = r"""
import hashlib, json, os, stat, sys
top = sys.argv[1]
out = {}
for dirpath, dirs, files in os.walk(top):
    for name in dirs + files:
        path = os.path.join(dirpath, name)
        st = os.lstat(path)
        rel = os.fsencode(os.path.relpath(path, top)).hex()
        item = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size,
                st.st_mtime_ns, st.st_nlink, st.st_uid]
        if stat.S_ISLNK(st.st_mode):
            item.append(os.fsencode(os.readlink(path)).hex())
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                item.append(hashlib.sha256(f.read()).hexdigest())
        out[rel] = item
print(json.dumps(out))
"""


def test_cvmfs_on_host_root_matches_the_repository(uvm_runner, published, server, workdir):
    import hashlib

    env = env_for(published, server.url_for(), workdir, UVM_ARCH="x86_64-test")
    script = workdir / "lister.py"
    script.write_text(_LISTER)
    os.chmod(script, 0o644)
    res = run_uvm(uvm_runner, env, "run", "--cvmfs", MISC, "--", "/bin/sh", "-c",
                  f"ls /cvmfs; ls /cvmfs/nope 2>&1; cd /cvmfs/{MISC} && pwd && "
                  f"python3 {script} /cvmfs/{MISC}")
    lines = _ok(res).splitlines()
    assert lines[0] == MISC
    assert "No such file or directory" in lines[1]
    assert lines[2] == f"/cvmfs/{MISC}"
    seen = {bytes.fromhex(k).decode("utf-8", "surrogateescape"): v
            for k, v in json.loads(lines[3]).items()}
    with Repository.open(MISC, servers=str(published.www / "cvmfs" / MISC),
                         keys=str(published.keys), state_dir=str(workdir / "reader-state"),
                         environ={"UVM_ARCH": "x86_64-test"}) as repo:
        want = {}
        for _dirpath, dirs, others in repo.walk("/"):
            for e in dirs + others:
                want[e.path.lstrip("/")] = e
        assert set(seen) == set(want)
        for name, e in want.items():
            fmt, mode, size, mtime_ns, nlink, uid = seen[name][:6]
            assert mode == stat.S_IMODE(e.mode), name
            assert mtime_ns == e.mtime * 10**9 + (e.mtime_ns or 0), name
            assert uid == uvm_runner.uid, name
            if e.is_dir:
                assert fmt == stat.S_IFDIR and nlink == e.linkcount, name
            elif e.is_symlink:
                assert fmt == stat.S_IFLNK, name
                assert bytes.fromhex(seen[name][6]) == os.fsencode(repo.readlink(e.path)), name
            elif e.is_regular:
                assert fmt == stat.S_IFREG and size == e.size, name
                assert nlink == (e.linkcount if e.hardlink_group else 1), name
                assert seen[name][6] == hashlib.sha256(repo.read(e.path)).hexdigest(), name
            elif stat.S_ISFIFO(e.mode):
                assert fmt == stat.S_IFIFO, name


def test_offline_from_a_warm_cache(uvm_runner, published, workdir):
    srv = FaultServer(str(published.www)).start()
    env = env_for(published, srv.url_for(), workdir)
    cmd = ["run", "--template", TEMPLATE, "--cvmfs", MISC, "--", "/bin/sh", "-c",
           f"python3 -c 'print(6*7)'; cat /cvmfs/{MISC}/d0/d1/d2/d3/d4/.cvmfscatalog; echo done"]
    assert _ok(run_uvm(uvm_runner, env, *cmd)).split() == ["42", "done"]
    srv.stop()
    # no server at all now: the verified manifest, the catalogs and the objects
    # come from the cache, the shadow tree from the earlier run
    assert _ok(run_uvm(uvm_runner, env, *cmd)).split() == ["42", "done"]


def test_a_missing_repository_among_several_is_one_error_line(uvm_runner, published, server,
                                                              workdir):
    """The template and the repositories under /cvmfs are opened side by side;
    one that the mirror lacks stops the run with one line naming it."""
    env = env_for(published, server.url_for(), workdir)
    res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--cvmfs", MISC,
                  "--cvmfs", "absent.uvm.test", "--", "/bin/true")
    assert res.returncode != 0 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "absent.uvm.test" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--cvmfs", MISC, "--",
                  "/bin/sh", "-c", "cat /etc/uvm-marker; ls /cvmfs")
    assert _ok(res) == f"revision one\n{MISC}\n"


def test_offline_a_file_not_in_the_cache_is_one_error_line(uvm_runner, published, workdir):
    """The guest gets EIO for each try (dash tries /usr/bin/wc, then /bin/wc,
    the same file); the user gets one line naming the file."""
    srv = FaultServer(str(published.www)).start()
    env = env_for(published, srv.url_for(), workdir)
    assert _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--",
                       "/bin/sh", "-c", "cat /etc/uvm-marker")) == "revision one\n"
    srv.stop()
    res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "/bin/sh", "-c",
                  "PATH=/usr/bin:/bin; wc -c < /etc/uvm-marker; echo status $?")
    assert res.stdout.splitlines()[-1:] == ["status 126"], (res.returncode, res.stdout, res.stderr)
    errors = [line for line in res.stderr.splitlines() if line.startswith("uvm: ERROR")]
    assert len(errors) == 1 and "/usr/bin/wc" in errors[0], res.stderr


@contextmanager
def _private_store(published, workdir) -> Iterator[Tuple[Path, FaultServer]]:
    """A private copy of the store, to publish more revisions into, and a
    server for it."""
    www = Path(tempfile_dir(workdir.parent))
    try:
        shutil.copytree(published.www, www / "www", symlinks=True)
        subprocess.run(["chmod", "-R", "a+rX", str(www)], check=True)
        srv = FaultServer(str(www / "www")).start()
        try:
            yield www / "www" / "cvmfs" / FQRN, srv
        finally:
            srv.stop()
    finally:
        shutil.rmtree(www, ignore_errors=True)


def _publish_revision(published, workdir, store: Path, tag: str, now: int,
                      change: Callable[[Path], None]) -> None:
    """The next revision of the template: its source as published, after
    ``change(template's top)``."""
    source = Path(tempfile_dir(workdir.parent))
    try:
        shutil.copytree(published.source, source / "src", symlinks=True)
        change(source / "src" / TEMPLATE_PATH.lstrip("/"))
        publish_tree(source / "src", store, published.keys, tag=tag, now=now)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    subprocess.run(["chmod", "-R", "a+rX", str(store)], check=True)


def test_record_replay_tag_and_date(uvm_runner, published, workdir):
    with _private_store(published, workdir) as (store, srv):
        env = env_for(published, srv.url_for(), workdir)
        record = workdir / "run.json"
        args = ["run", "--record", str(record), "--template", TEMPLATE, "--",
                "/bin/sh", "-c", "cat /etc/uvm-marker; exit 3"]
        res = run_uvm(uvm_runner, env, *args)
        assert res.returncode == 3 and res.stdout == "revision one\n", res.stderr
        data = json.loads(record.read_text())
        assert data["exit_status"] == 3
        assert data["command"] == ["/bin/sh", "-c", "cat /etc/uvm-marker; exit 3"]
        assert data["template"]["repository"] == FQRN
        assert data["template"]["path"] == TEMPLATE_PATH
        first_hash = data["template"]["root_hash"]
        # revision 2 changes the marker
        _publish_revision(published, workdir, store, "v2", 1_800_000_000,
                          lambda top: (top / "etc/uvm-marker").write_text("revision two\n"))
        fresh = env_for(published, srv.url_for(), workdir, CVMFS_CACHE_BASE=str(workdir / "c2"))
        marker = ["--", "/bin/cat", "/etc/uvm-marker"]
        assert _ok(run_uvm(uvm_runner, fresh, "run", "--template", TEMPLATE, *marker)) \
            == "revision two\n"
        res = run_uvm(uvm_runner, fresh, "run", "--replay", str(record))
        assert res.returncode == 3 and res.stdout == "revision one\n", res.stderr
        assert _ok(run_uvm(uvm_runner, fresh, "run", "--template", TEMPLATE + "@v1",
                           *marker)) == "revision one\n"
        assert _ok(run_uvm(uvm_runner, fresh, "run", "--template",
                           TEMPLATE + "@2025-01-01T00:00:00Z", *marker)) == "revision one\n"
        assert _ok(run_uvm(uvm_runner, fresh, "run", "--template", TEMPLATE + "@v2",
                           *marker)) == "revision two\n"
        again = workdir / "again.json"
        res = run_uvm(uvm_runner, fresh, "run", "--replay", str(record), "--record", str(again))
        assert json.loads(again.read_text())["template"]["root_hash"] == first_hash


def _age_manifest(workdir: Path) -> None:
    """Make the cache's verified manifest older than any TTL, as time would."""
    manifests = workdir / "cache" / "shared" / "manifests"
    old = time.time() - 24 * 3600
    for path in manifests.glob(f"{FQRN}.cvmfs*"):
        os.utime(path, (old, old))


def test_past_the_ttl_an_unchanged_template_costs_two_requests_and_a_new_one_is_seen(
        uvm_runner, published, workdir):
    with _private_store(published, workdir) as (store, srv):
        env = env_for(published, srv.url_for(), workdir)
        marker = ["run", "--template", TEMPLATE, "--", "/bin/cat", "/etc/uvm-marker"]
        assert _ok(run_uvm(uvm_runner, env, *marker)) == "revision one\n"
        _age_manifest(workdir)
        before = dict(srv.hits)
        assert _ok(run_uvm(uvm_runner, env, *marker)) == "revision one\n"
        asked = {path: n - before.get(path, 0) for path, n in srv.hits.items()
                 if n != before.get(path, 0)}
        assert sorted(os.path.basename(path) for path in asked) == [
            ".cvmfspublished", ".cvmfswhitelist"], asked
        _publish_revision(published, workdir, store, "v2", 1_800_000_000,
                          lambda top: (top / "etc/uvm-marker").write_text("revision two\n"))
        assert _ok(run_uvm(uvm_runner, env, *marker)) == "revision one\n"  # within the TTL
        _age_manifest(workdir)
        assert _ok(run_uvm(uvm_runner, env, *marker)) == "revision two\n"


def test_past_the_ttl_with_the_mirrors_down_the_run_says_offline_once(uvm_runner, published,
                                                                         workdir):
    srv = FaultServer(str(published.www)).start()
    env = env_for(published, srv.url_for(), workdir)
    assert _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--",
                       "/bin/sh", "-c", "cat /etc/uvm-marker; ls /srv")) == "revision one\nempty\n"
    srv.stop()
    _age_manifest(workdir)
    # /srv/empty is new to the shadow tree: the repository is opened, offline as well
    res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--",
                  "/bin/sh", "-c", "cat /etc/uvm-marker; ls -a /srv/empty")
    assert _ok(res) == "revision one\n.\n..\n"
    assert res.stderr.count("offline: no server reachable") == 1, res.stderr


def test_record_on_a_full_disk_is_one_line_and_leaves_nothing(uvm_runner, published, server,
                                                             workdir):
    small = workdir / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a small tmpfs (the tests need root): {mounted.stderr}"
    try:
        os.chown(small, uvm_runner.uid, uvm_runner.gid)
        with open(small / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"x" * 4096)
            except OSError:
                pass
        env = env_for(published, server.url_for(), workdir)
        res = run_uvm(uvm_runner, env, "run", "--record", str(small / "run.json"), "--template",
                      TEMPLATE, "--", "cat", "/etc/uvm-marker")
        assert res.returncode != 0 and res.stdout == "revision one\n", res.stderr
        assert res.stderr.count("\n") == 1 and "cannot write --record" in res.stderr, res.stderr
        assert "No space left" in res.stderr
        assert sorted(os.listdir(small)) == ["filler"]  # no half-written record, no temporary
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_two_cold_runs_at_once(uvm_runner, published, server, workdir):
    """Two uvm processes filling the same cold shadow tree and cache at once."""
    env = env_for(published, server.url_for(), workdir)
    cmd = uvm_cmd(uvm_runner, "run", "--template", TEMPLATE, "--", "/bin/sh", "-c",
                  "python3 -c 'import json, hashlib, csv; print(6*7)'; ls /usr/bin | wc -l; "
                  "cat /etc/uvm-marker")
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        outs.append(out)
    assert outs[0] == outs[1]
    assert outs[0].splitlines()[0] == "42" and outs[0].rstrip().endswith("revision one")


def test_preload_then_offline_in_a_new_tree(uvm_runner, published, workdir):
    """`uvm cache preload` fills the object cache; with the server gone, a
    first template run (no shadow tree yet) still works."""
    srv = FaultServer(str(published.www)).start()
    env = env_for(published, srv.url_for(), workdir)
    res = run_uvm(uvm_runner, env, "cache", "preload", TEMPLATE)
    assert res.returncode == 0, res.stderr
    srv.stop()
    out = _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "/bin/sh", "-c",
                      "python3 -c 'import json; print(json.dumps(1))'; cat /etc/uvm-marker"))
    assert out == "1\nrevision one\n"


def test_prefetch_list_recorded_published_and_fetched_by_a_cold_start(uvm_runner, published,
                                                                       workdir):
    """--record-prefetch lists what a start fetched; published as the
    template's .uvm-prefetch, a cold run fetches all of it (here for a
    command that opens none of it), so that a later start works offline."""
    start = ["--", "python3", "-c", "import json; print(json.dumps([42]))"]
    listed = workdir / "prefetch.txt"
    with _private_store(published, workdir) as (store, srv):
        env = env_for(published, srv.url_for(), workdir, CVMFS_CACHE_BASE=str(workdir / "c1"))
        assert _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE,
                           "--record-prefetch", str(listed), *start)) == "[42]\n"
        names = [n for n in listed.read_text().splitlines() if not n.startswith("#")]
        assert names[0].startswith("/usr/bin/python3")  # the program, then what it loads
        files = [n for n in names if not n.endswith("/")]  # then the directories it listed
        assert names[:len(files)] == files and len(files) < len(names), names
        assert any(n.endswith("/libc.so.6") for n in names), names
        assert any(n.startswith("/usr/lib/python3") and "/json/" in n for n in names), names
        assert all(n.startswith("/") and not n.startswith(TEMPLATE_PATH) for n in names)
        # warm: nothing fetched, said so, and the guest's status kept
        res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--record-prefetch",
                      str(workdir / "warm.txt"), "--", "python3", "-c",
                      "import json, sys; sys.exit(4)")
        assert res.returncode == 4 and "lists no file" in res.stderr, res.stderr
        # a second command recorded into the same list adds its own files after
        more = env_for(published, srv.url_for(), workdir, CVMFS_CACHE_BASE=str(workdir / "c3"))
        _ok(run_uvm(uvm_runner, more, "run", "--template", TEMPLATE, "--record-prefetch",
                    str(listed), "--", "cat", "/etc/uvm-marker"))
        merged = [n for n in listed.read_text().splitlines() if not n.startswith("#")]
        assert merged[:len(names)] == names and len(set(merged)) == len(merged)
        assert {"/usr/bin/cat", "/etc/uvm-marker"} <= set(merged[len(names):]), merged
        # revision 2 carries the list, with comments, blanks, a directory,
        # a missing file and a path that climbs out of the template
        extra = "\n# a comment\n\n/usr\n/no/such/file\n/../../../etc/passwd\n"
        _publish_revision(published, workdir, store, "v2", 1_800_000_000,
                          lambda top: (top / ".uvm-prefetch").write_text(listed.read_text()
                                                                         + extra))
        cold = env_for(published, srv.url_for(), workdir, CVMFS_CACHE_BASE=str(workdir / "c2"))
        listing = _ok(run_uvm(uvm_runner, cold, "templates", TEMPLATE))
        dirs = [n for n in merged if n.endswith("/")]
        assert (f"prefetch list: {len(merged) + 3} paths ({TEMPLATE_PATH}/.uvm-prefetch): "
                f"{len(merged) + 3 - len(dirs)} files fetched at once and {len(dirs)} "
                "directories") in listing, listing
        assert "prefetch list" not in _ok(run_uvm(uvm_runner, cold, "templates", TEMPLATE + "@v1"))
        assert _ok(run_uvm(uvm_runner, cold, "run", "--template", TEMPLATE, "--",
                           "cat", "/etc/uvm-marker")) == "revision one\n"
        # ...and made the directories the python3 start listed, though cat lists none
        assert any(n.startswith("/usr/lib/python3") for n in dirs), merged
        (tree,) = (workdir / "c2" / "shadow").glob(f"*/{FQRN}/*/tree")
        top = TEMPLATE_PATH.strip("/")
        for name in dirs:
            made = set(os.listdir(tree / top / name.strip("/"))) - {".uvm-prefetch"}
            assert made == set(os.listdir(published.source / top / name.strip("/"))), name
    # the server is gone: the python3 start was fetched by the list alone
    assert _ok(run_uvm(uvm_runner, cold, "run", "--template", TEMPLATE, *start)) == "[42]\n"


def test_a_cold_python_start_is_given_its_modules_before_it_asks(uvm_runner, published,
                                                                  workdir):
    """Executing python3 cold fetches, in the background, what its start
    reads (encodings, sitecustomize, the .pth files of its site directories
    and what they import) and makes its module directories: `python3 -V`,
    which reads none of them, leaves a cache from which a full start runs
    with the server gone."""
    def site_hook(top: Path) -> None:
        site = top / "usr/lib/python3/dist-packages"
        site.mkdir(parents=True)
        (site / "hook.pth").write_text("import uvmhook\n")
        (site / "uvmhook.py").write_text("print('hooked')\n")
        # site reads .pth files in the locale's codec: ASCII, as the template has no locales
        for codec in Path("/").glob("usr/lib/python3.*/encodings/**/ascii.*"):
            shutil.copy2(codec, top / codec.relative_to("/"))

    with _private_store(published, workdir) as (store, srv):
        _publish_revision(published, workdir, store, "v2", 1_800_000_000, site_hook)
        env = env_for(published, srv.url_for(), workdir, CVMFS_CACHE_BASE=str(workdir / "c"))
        assert _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--",
                           "python3", "-V")).startswith("Python 3.")
        (tree,) = (workdir / "c" / "shadow").glob(f"*/{FQRN}/*/tree")
        encodings = next((tree / TEMPLATE_PATH.strip("/") / "usr/lib").glob("python3.*/encodings"))
        published_v1 = published.source / encodings.relative_to(tree)
        assert set(os.listdir(encodings)) == set(os.listdir(published_v1)) | {"ascii.py"}
    res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--",
                       "python3", "-c", "print(42)")
    assert res.stdout == "hooked\n42\n", res.stderr


def test_a_cold_link_is_given_what_its_command_line_names(uvm_runner, published, workdir):
    """A linker's inputs (absolute paths, -l searched in the -L directories
    as ld does: .so before .a, and what a linker script among them names)
    are fetched while it starts; a file named to any other program is not.
    The "linker" is `true` under the name ld: it reads nothing, so what is
    there offline afterwards was fetched by uvm."""
    script = "/* GNU ld script */\nGROUP ( libuvm.so.1 AS_NEEDED ( /usr/lib/uvmlink/libuvmdep.so ) " \
             "-luvmextra )\n"

    def link_inputs(top: Path) -> None:
        shutil.copy2(shutil.which("true"), top / "usr/bin/ld")
        lib = top / "usr/lib/uvmlink"
        lib.mkdir(parents=True)
        for name in ("start.o", "libuvm.a", "unread.o", "libuvm.so.1", "libuvmdep.so",
                     "libuvmextra.a"):
            (lib / name).write_text(f"contents of {name}\n")
        (lib / "libuvm.so").write_text(script)

    lib = "/usr/lib/uvmlink"
    with _private_store(published, workdir) as (store, srv):
        _publish_revision(published, workdir, store, "v2", 1_800_000_000, link_inputs)
        env = env_for(published, srv.url_for(), workdir, CVMFS_CACHE_BASE=str(workdir / "c"))
        assert _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "/bin/sh", "-c",
                           f"cat /etc/uvm-marker && ld -o /tmp/x {lib}/start.o -L{lib} -luvm "
                           f"&& true {lib}/unread.o")) == "revision one\n"
    fetched = ("start.o", "libuvm.so.1", "libuvmdep.so", "libuvmextra.a")
    assert _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "cat",
                       f"{lib}/libuvm.so", *(f"{lib}/{name}" for name in fetched))) == \
        script + "".join(f"contents of {name}\n" for name in fetched)
    for unread in ("libuvm.a", "unread.o"):
        res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "cat", f"{lib}/{unread}")
        assert res.returncode != 0 and "not in the cache" in res.stderr, res.stderr


def test_a_cold_compile_is_given_the_headers_its_source_includes(uvm_runner, published,
                                                                   workdir):
    """gcc's compiler proper reads its source, then each header one include
    after another: uvm follows the #include lines through the search path
    and fetches each level in one wave.  The "compiler" is `true` under the
    name cc1: what is there offline afterwards was fetched by uvm."""
    cc1 = "/usr/lib/gcc/x86_64-linux-gnu/12/cc1"
    headers = {"usr/src/uvm/main.c": '#include <uvma.h>\n#include "near.h"\nint main;\n',
               "usr/src/uvm/near.h": "int near;\n",
               "usr/include/uvma.h": '#include "uvmb.h"\n',
               "usr/include/uvmb.h": "#include <sys/uvmc.h>\n",
               "usr/include/sys/uvmc.h": "int deepest;\n",
               "usr/include/uvmunused.h": "int unused;\n"}

    def sources(top: Path) -> None:
        (top / cc1.lstrip("/")).parent.mkdir(parents=True)
        shutil.copy2(shutil.which("true"), top / cc1.lstrip("/"))
        for name, text in headers.items():
            (top / name).parent.mkdir(parents=True, exist_ok=True)
            (top / name).write_text(text)

    with _private_store(published, workdir) as (store, srv):
        _publish_revision(published, workdir, store, "v2", 1_800_000_000, sources)
        env = env_for(published, srv.url_for(), workdir, CVMFS_CACHE_BASE=str(workdir / "c"))
        assert _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "/bin/sh", "-c",
                           f"cat /etc/uvm-marker && {cc1} -quiet /usr/src/uvm/main.c "
                           "-o /tmp/main.s")) == "revision one\n"
    read = [name for name in headers if name != "usr/include/uvmunused.h"]
    assert _ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "cat",
                       *("/" + name for name in read))) == "".join(headers[n] for n in read)
    res = run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "cat",
                  "/usr/include/uvmunused.h")
    assert res.returncode != 0 and "not in the cache" in res.stderr, res.stderr


def test_a_host_compile_against_cvmfs_headers_fetches_them_ahead(uvm_runner, published,
                                                                   workdir):
    """A worker node's own gcc compiling a source of the user's with
    -I/cvmfs/...: the headers are followed from the source on the host.
    One stands under `#if 0`, so the compiler never opens it: that it is
    there offline afterwards shows uvm fetched it ahead."""
    def headers(top: Path) -> None:
        include = top / "usr/include/uvm"
        include.mkdir(parents=True)
        (include / "top.h").write_text('#include "next.h"\n#if 0\n#include <unreached.h>\n'
                                       "#endif\n")
        (include / "next.h").write_text("int next;\n")
        (include / "unreached.h").write_text("int unreached;\n")

    include = f"/cvmfs/{FQRN}{TEMPLATE_PATH}/usr/include/uvm"
    source = workdir / "job.c"
    source.write_text("#include <top.h>\nint main(void) { return next; }\n")
    os.chmod(source, 0o644)
    with _private_store(published, workdir) as (store, srv):
        _publish_revision(published, workdir, store, "v2", 1_800_000_000, headers)
        env = env_for(published, srv.url_for(), workdir, CVMFS_CACHE_BASE=str(workdir / "c"))
        _ok(run_uvm(uvm_runner, env, "run", "--cvmfs", FQRN, "-w", str(workdir), "--",
                    "gcc", "-fsyntax-only", f"-I{include}", "job.c"))
    assert _ok(run_uvm(uvm_runner, env, "run", "--cvmfs", FQRN, "--", "cat",
                       f"{include}/unreached.h")) == "int unreached;\n"


_PROBE = r"""
import os
def show(label, fn):
    try:
        value = fn()
    except OSError as exc:
        value = "E%d" % exc.errno
    print(label, value)
for p in ("/etc/uvm-marker", "/etc", "/usr/bin/python3", "/bin", "/bin/sh", "/srv/empty",
          "/srv/nope", "/usr/lib", "/etc/os-release", "/usr/lib/os-release"):
    for _ in range(2):
        show("stat " + p, lambda: (oct(os.stat(p).st_mode), os.stat(p).st_size, os.stat(p).st_nlink))
        show("lstat " + p, lambda: oct(os.lstat(p).st_mode))
        show("link " + p, lambda: os.readlink(p))
        show("read " + p, lambda: open(p, "rb").read(24))
        show("list " + p, lambda: sorted(os.listdir(p))[:8])
os.chdir("/etc")
for name in ("uvm-marker", "os-release", "nope", "."):
    show("rel " + name, lambda: (os.stat(name).st_size, open(name, "rb").read(8)))
"""


def test_c_fast_path_and_python_tracer_agree_on_a_template(uvm_runner, published, server, workdir):
    """Cold (entries made on lookup, contents on open), then warm with the C
    fast path serving the shadow tree, then warm with the Python tracer:
    the guest sees the same everywhere."""
    outputs = []
    for tracer in ("c", "c", "python"):
        env = env_for(published, server.url_for(), workdir, UVM_TRACER=tracer)
        outputs.append(_ok(run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--",
                                   "python3", "-c", _PROBE)))
    assert outputs[0] == outputs[1] == outputs[2]
    assert "read /etc/uvm-marker b'revision one\\n'" in outputs[0]
    assert "stat /srv/nope E2" in outputs[0]
