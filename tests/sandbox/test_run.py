"""``uvm run --root``: real programs in a guest root built from host
binaries (and a 32-bit one), run as root and as an unprivileged user."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from harness import guest_env, uvm_command

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("uvm_available")]


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f"rc={res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return res.stdout


def test_reads_guest_files_and_not_host_ones(uvm_runner, host_root):
    out = ok(uvm_runner.run(host_root, "cat", "/etc/hostname"))
    assert out == (host_root / "etc/hostname").read_text()
    out = ok(uvm_runner.run(host_root, "sh", "-c", "ls /; test -e /bench && echo has-bench"))
    assert "has-bench" in out and "w" in out.split()


def test_exit_status_and_signal_pass_through(uvm_runner, host_root):
    assert uvm_runner.run(host_root, "sh", "-c", "exit 42").returncode == 42
    res = uvm_runner.run(host_root, "sh", "-c", "kill -TERM $$")
    assert res.returncode == -signal.SIGTERM  # uvm dies of the same signal
    res = uvm_runner.run(host_root, "static-probe", "x")
    assert res.returncode == 3 and res.stdout.startswith("static ok / 64 static-probe")


def test_cwd_getcwd_and_relative_paths(uvm_runner, host_root):
    out = ok(uvm_runner.run(host_root, "sh", "-c",
                            "pwd; cd /usr/lib/..; /bin/pwd; cd ../../..; /bin/pwd; "
                            "cd /etc && cat ./hostname ../etc/hostname | wc -l",
                            cwd="/usr/bin"))
    assert out.split() == ["/usr/bin", "/usr", "/", "2"]
    out = ok(uvm_runner.run(host_root, "python3", "-c",
                            "import os; os.chdir('/usr/share'); print(os.getcwd());"
                            "fd=os.open('/etc', os.O_RDONLY); os.chdir('/');"
                            "print(os.stat('hostname', dir_fd=fd).st_size > 0);"
                            "os.fchdir(fd); print(os.getcwd(), os.readlink('/proc/self/cwd'))"))
    assert out.split() == ["/usr/share", "True", "/etc", "/etc"]


def test_exe_argv0_and_loader_are_the_guests(uvm_runner, host_root):
    out = ok(uvm_runner.run(host_root, "python3", "-c",
                            "import os, sys; print(sys.argv[0]); print(os.readlink('/proc/self/exe'));"
                            "print(sys.executable); print(open('/proc/self/cmdline','rb').read().count(b'--argv0'))"))
    lines = out.split()
    assert lines[0] == "-c" and lines[1].startswith("/usr/bin/python3")
    assert lines[2].startswith("/usr/bin/python3")
    out = ok(uvm_runner.run(host_root, "bash", "-c", 'exec -a fancy-name sh -c "echo \\$0"'))
    assert out.strip() == "fancy-name"
    # AT_EXECFN names what the guest executed (ld.so, run explicitly, sets
    # it to the program's canonical guest path), never a host path
    code = ("import ctypes; f = ctypes.CDLL(None).getauxval; f.restype = ctypes.c_char_p;"
            "f.argtypes = [ctypes.c_ulong]; print(f(31).decode())")
    out = ok(uvm_runner.run(host_root, "sh", "-c", f'cd /usr && bin/python3 -c "{code}"'))
    assert out.strip() in ("bin/python3", "/usr/bin/python3.11")


@pytest.mark.parametrize("tracer", ["c", "python"])
def test_processes_are_named_after_their_programs(uvm_runner, host_root, i386_root, scratch,
                                                  tracer):
    """/proc/PID/comm, what top, ps -e, pgrep and killall read, names the
    program the guest executed, as without uvm, though the kernel ran its
    loader: a dynamically linked program, a script (its own name, cut to 15
    bytes as the kernel does), the shell, a thread; both ABIs, both tracers."""
    script = scratch / "a-long-script-name.sh"
    script.write_text("#!/bin/sh\ncat /proc/$$/comm\n")
    script.chmod(0o755)
    env = dict(guest_env(), UVM_TRACER=tracer)
    for root in (host_root, i386_root):
        out = ok(uvm_runner.run(root, "sh", "-c",
                                "cat /proc/self/comm; /mnt/a-long-script-name.sh; cat /proc/$$/comm",
                                binds=[(scratch, "/mnt")], env=env))
        assert out.split() == ["cat", "a-long-script-n", "sh"], root
    out = ok(uvm_runner.run(host_root, "python3", "-c",
                            "import threading; t = threading.Thread(target=lambda: print(open("
                            "f'/proc/self/task/{threading.get_native_id()}/comm').read())); "
                            "t.start(); t.join(); print(open('/proc/self/comm').read())", env=env))
    assert out.split() == ["python3", "python3"]


def test_scripts_nested_with_arguments(uvm_runner, host_root, scratch):
    (scratch / "inner").write_text("#!/bin/sh -e\necho inner:$0:$*\n")
    (scratch / "outer").write_text("#!/mnt/inner --flag\n")
    (scratch / "env-script").write_text("#!/usr/bin/env python3\nimport sys; print('py', sys.argv[1:])\n")
    for name in ("inner", "outer", "env-script"):
        os.chmod(scratch / name, 0o755)
    out = ok(uvm_runner.run(host_root, "/mnt/outer", "a", "b", binds=[(scratch, "/mnt")]))
    assert out.strip() == "inner:/mnt/inner:--flag /mnt/outer a b"
    out = ok(uvm_runner.run(host_root, "sh", "-c", "cd /mnt && ./env-script x y",
                            binds=[(scratch, "/mnt")]))
    assert out.strip() == "py ['x', 'y']"


def test_binds_and_writes(uvm_runner, host_root, scratch):
    (scratch / "in.txt").write_text("from host\n")
    out = ok(uvm_runner.run(host_root, "sh", "-c",
                            "cat /data/in.txt; echo made > /data/out.txt; mkdir -p /data/d/e; "
                            "ln -s /etc/hostname /data/link; cat /data/link; "
                            "mv /data/out.txt /data/d/e/moved; ls /data/d/e; cd /data/d && pwd",
                            binds=[(scratch, "/data")]))
    assert out.splitlines()[0] == "from host"
    assert out.splitlines()[1] == (host_root / "etc/hostname").read_text().strip()
    assert out.splitlines()[2:] == ["moved", "/data/d"]
    assert (scratch / "d/e/moved").read_text() == "made\n"
    assert os.readlink(scratch / "link") == "/etc/hostname"  # the guest's text, unchanged


def test_gcc_compiles_and_runs(uvm_runner, host_root, scratch):
    (scratch / "hello.c").write_text('#include <stdio.h>\nint main(void){puts("hello from gcc");return 0;}\n')
    out = ok(uvm_runner.run(host_root, "sh", "-c",
                            "cd /mnt && gcc -O1 -o hello hello.c && ./hello",
                            binds=[(scratch, "/mnt")], timeout=150))
    assert out.strip() == "hello from gcc"


def test_many_processes_and_leftovers(uvm_runner, host_root, tmp_path):
    out = ok(uvm_runner.run(host_root, "bash", "-c",
                            "for i in $(seq 300); do /bin/true & done; wait; echo all-done"))
    assert out.strip() == "all-done"
    # a daemon left behind does not keep uvm waiting (it is killed) ...
    res = uvm_runner.run(host_root, "sh", "-c", "sleep 1000 & echo started", timeout=30)
    assert res.returncode == 0 and res.stdout.strip() == "started"
    # ... unless --wait-all is given
    out = ok(uvm_runner.run(host_root, "sh", "-c", "(sleep 1; echo late) & echo early",
                            wait_all=True))
    assert out.split() == ["early", "late"]


def test_process_exiting_while_its_threads_sit_in_stops(uvm_runner, host_root):
    """exit_group kills sibling threads that are stopped in the tracer; uvm
    must take their vanishing in its stride, not abort."""
    code = (
        "import os, threading\n"
        "def spin():\n"
        "    while True: os.stat('/etc/hostname')\n"
        "for _ in range(6): threading.Thread(target=spin, daemon=True).start()\n"
        "os._exit(7)\n"
    )
    script = f"for i in $(seq 25); do python3 -c \"{code}\"; [ $? = 7 ] || exit 1; done; echo survived"
    out = ok(uvm_runner.run(host_root, "sh", "-c", script, timeout=240))
    assert out.strip() == "survived"


def test_threads_and_exec_from_a_thread(uvm_runner, host_root):
    code = (
        "import os, threading\n"
        "res = []\n"
        "def work(i):\n"
        "    for _ in range(50): os.stat('/etc/hostname'); os.listdir('/usr')\n"
        "    res.append(os.getcwd())\n"
        "ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(len(res), set(res), flush=True)\n"
        "t = threading.Thread(target=lambda: os.execv('/bin/echo', ['echo', 'exec-from-thread']))\n"
        "t.start(); t.join()\n"
    )
    out = ok(uvm_runner.run(host_root, "python3", "-c", code, cwd="/tmp"))
    assert out.splitlines() == ["8 {'/tmp'}", "exec-from-thread"]


def test_signals_pass_through(uvm_runner, host_root):
    out = ok(uvm_runner.run(host_root, "bash", "-c",
                            "trap 'echo got-usr1' USR1; (sleep 0.2; kill -USR1 $$) & "
                            "sleep 60 & s=$!; wait $s; kill $s; echo after"))
    assert out.split() == ["got-usr1", "after"]
    out = ok(uvm_runner.run(host_root, "bash", "-c",
                            "sleep 30 & p=$!; kill -STOP $p; kill -CONT $p; kill -KILL $p; "
                            "wait $p; echo status=$?"))
    assert out.strip() == "status=137"


def test_unix_sockets_on_long_paths(uvm_runner, host_root, scratch):
    deep = scratch / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    os.chown(deep.parent, uvm_runner.uid, uvm_runner.gid)
    os.chown(deep, uvm_runner.uid, uvm_runner.gid)
    code = (
        "import socket, os\n"
        "p = '/s/sock'\n"
        "srv = socket.socket(socket.AF_UNIX); srv.bind(p); srv.listen(1)\n"
        "cli = socket.socket(socket.AF_UNIX); cli.connect(p)\n"
        "con, _ = srv.accept(); cli.sendall(b'ping'); print(con.recv(4).decode(), os.path.exists(p))\n"
    )
    # the host path is longer than sun_path can hold (108 bytes)
    assert len(str(deep / "sock")) > 108
    out = ok(uvm_runner.run(host_root, "python3", "-c", code, binds=[(deep, "/s")]))
    assert out.strip() == "ping True"
    assert (deep / "sock").exists()  # the socket is where the guest put it


def test_unix_datagrams_sendto_and_sendmsg(uvm_runner, host_root, scratch):
    code = (
        "import socket\n"
        "srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); srv.bind('/mnt/log')\n"
        "cli = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "cli.sendto(b'one', '/mnt/log'); cli.sendmsg([b'two'], [], 0, '/mnt/log')\n"
        "print(srv.recv(9).decode(), srv.recv(9).decode())\n"
    )
    out = ok(uvm_runner.run(host_root, "python3", "-c", code, binds=[(scratch, "/mnt")]))
    assert out.strip() == "one two"
    assert (scratch / "log").exists()


SENDMMSG = r"""
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); srv.bind("/mnt/log")
cli = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = ctypes.create_string_buffer(b"\x01\x00/mnt/log\x00")
words = [ctypes.create_string_buffer(w) for w in (b"alpha", b"beta", b"gamma")]
iovs = [iovec(ctypes.cast(w, ctypes.c_void_p), len(w.value)) for w in words]
vec = (mmsghdr * 3)()
for i in range(3):
    vec[i].hdr.name, vec[i].hdr.namelen = ctypes.cast(addr, ctypes.c_void_p), 11
    vec[i].hdr.iov, vec[i].hdr.iovlen = ctypes.pointer(iovs[i]), 1
sent = libc.sendmmsg(cli.fileno(), vec, 3, 0)
print(sent, [m.len for m in vec], [srv.recv(9).decode() for _ in range(max(sent, 0))],
      vec[0].hdr.name == ctypes.addressof(addr))
"""


@pytest.mark.parametrize("layer", [True, False], ids=["layer", "no-layer"])
def test_unix_datagrams_sendmmsg(uvm_runner, host_root, scratch, layer):
    """Each destination translated; the guest's vector gets each message's
    length, and its own pointers back."""
    out = ok(uvm_runner.run(host_root, "python3", "-c", SENDMMSG, binds=[(scratch, "/mnt")],
                            extra=() if layer else ("--no-layer",)))
    assert out.strip() == "3 [5, 4, 5] ['alpha', 'beta', 'gamma'] True"
    assert (scratch / "log").exists()


SOCKET_NAMES_C = r"""
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static struct sockaddr_un named(const char *path, const char *suffix)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s%s", path, suffix);
    unlink(a.sun_path);
    return a;
}

static void show(const char *what, struct sockaddr_un *a, socklen_t n, socklen_t room)
{
    socklen_t got = n < room ? n : room;
    printf("%s %d %.*s\n", what, (int)n, got > 2 ? (int)strnlen(a->sun_path, got - 2) : 0,
           a->sun_path);
}

int main(int argc, char **argv)
{
    struct sockaddr_un srv = named(argv[1], ""), cli = named(argv[1], "-c"), r;
    struct sockaddr_un d1 = named(argv[1], "-d"), d2 = named(argv[1], "-e");
    socklen_t n;
    char byte;
    int s = socket(AF_UNIX, SOCK_STREAM, 0), c = socket(AF_UNIX, SOCK_STREAM, 0);
    int u1 = socket(AF_UNIX, SOCK_DGRAM, 0), u2 = socket(AF_UNIX, SOCK_DGRAM, 0);
    (void)argc;
    if (bind(s, (void *)&srv, sizeof srv) || listen(s, 1) || bind(c, (void *)&cli, sizeof cli)
        || connect(c, (void *)&srv, sizeof srv) || bind(u1, (void *)&d1, sizeof d1)
        || bind(u2, (void *)&d2, sizeof d2))
        return perror("set-up"), 1;
    n = sizeof r; getsockname(s, (void *)&r, &n); show("getsockname", &r, n, sizeof r);
    n = sizeof r; syscall(SYS_getsockname, s, &r, &n); show("direct", &r, n, sizeof r);
    n = sizeof r; getpeername(c, (void *)&r, &n); show("getpeername", &r, n, sizeof r);
    n = sizeof r; close(accept(s, (void *)&r, &n)); show("accept", &r, n, sizeof r);
    n = 5; getsockname(s, (void *)&r, &n); show("cut", &r, n, 5);
    sendto(u2, "x", 1, 0, (void *)&d1, sizeof d1);
    n = sizeof r; recvfrom(u1, &byte, 1, 0, (void *)&r, &n); show("recvfrom", &r, n, sizeof r);
    return 0;
}
"""


@pytest.mark.parametrize("layer", [True, False], ids=["layer", "no-layer"])
@pytest.mark.parametrize("abi", ["64", "32"])
def test_socket_names_come_back_as_the_guest_bound_them(uvm_runner, request, scratch, layer, abi):
    """getsockname, getpeername, accept and recvfrom report a socket bound
    in the guest by its guest name, with the kernel's length and its
    truncation (through socketcall and the direct calls for 32-bit)."""
    root = request.getfixturevalue("host_root" if abi == "64" else "i386_root")
    (scratch / "names.c").write_text(SOCKET_NAMES_C)
    subprocess.run(["gcc", "-O1", "-static", "-Wall", *(["-m32"] if abi == "32" else []),
                    "-o", str(scratch / "names"), str(scratch / "names.c")], check=True)
    out = ok(uvm_runner.run(root, "/mnt/names", "/mnt/s", binds=[(scratch, "/mnt")],
                            extra=() if layer else ("--no-layer",)))
    assert out.splitlines() == [
        "getsockname 9 /mnt/s", "direct 9 /mnt/s", "getpeername 9 /mnt/s",
        "accept 11 /mnt/s-c", "cut 9 /mn", "recvfrom 11 /mnt/s-e"]


OPENAT2 = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def openat2(path, flags=0, resolve=0, size=24):
    how = (ctypes.c_uint64 * 3)(flags, 0, resolve)
    fd = libc.syscall(437, -100, path.encode(), ctypes.byref(how), size)
    if fd < 0:
        return errno.errorcode[ctypes.get_errno()]
    with os.fdopen(fd) as f:
        return f.read().strip()
os.symlink("/etc/hostname", "/tmp/o2-link")
print(openat2("/etc/hostname"), openat2("/tmp/o2-link"), openat2("/tmp/o2-link", os.O_NOFOLLOW),
      openat2("/etc/hostname", resolve=0x08), openat2("/etc/hostname", size=8))
os.unlink("/tmp/o2-link")
"""


def test_openat2(uvm_runner, host_root):
    """Translated and pinned like openat; RESOLVE_* flags refused (ENOSYS:
    callers fall back to openat); a bad size refused as the kernel does."""
    out = ok(uvm_runner.run(host_root, "python3", "-c", OPENAT2))
    name = (host_root / "etc/hostname").read_text().strip()
    assert out.split() == [name, name, "ELOOP", "ENOSYS", "EINVAL"]


def test_guest_dropping_privileges_keeps_its_paths(uvm_runner, host_root):
    """A root guest that becomes another user (as su does) loses access to
    the tracer's /proc entry; its paths must still be translated."""
    code = (
        "import os\n"
        "if os.getuid() == 0:\n"
        "    os.setgroups([]); os.setgid(4242); os.setuid(4242)\n"
        "print(os.getuid(), open('/etc/hostname').read().strip(), os.listdir('/bench')[:1] != [])\n"
        "os.chdir('/usr/bin'); print(os.getcwd(), os.path.exists('python3'))\n"
    )
    out = ok(uvm_runner.run(host_root, "python3", "-c", code))
    lines = out.splitlines()
    assert lines[0].split()[0] == "4242"
    assert lines[0].split()[1] == (host_root / "etc/hostname").read_text().strip()
    assert lines[1] == "/usr/bin True"


def test_refused_calls(uvm_runner, host_root):
    code = (
        "import os, errno\n"
        "for f in (lambda: os.chroot('/tmp'),):\n"
        "    try: f(); print('allowed')\n"
        "    except OSError as e: print(errno.errorcode[e.errno])\n"
    )
    out = ok(uvm_runner.run(host_root, "python3", "-c", code))
    assert out.strip() == "EPERM"


def test_environment_options(uvm_runner, host_root):
    out = ok(uvm_runner.run(host_root, "sh", "-c", "echo ${FOO:-unset} ${LC_ALL:-none}",
                            env_vars=["FOO=bar"]))
    assert out.strip() == "bar C"
    out = ok(uvm_runner.run(host_root, "sh", "-c", "echo ${LC_ALL:-none} $PATH",
                            clean_env=True))
    assert out.split()[0] == "none" and "/usr/bin" in out


def test_verbose_log_and_stats(uvm_runner, host_root, scratch):
    stats = scratch / "stats.json"
    log = scratch / "log.txt"
    ok(uvm_runner.run(host_root, "cat", "/etc/hostname", stats=stats,
                      extra=["--log", str(log)], verbose=True))
    data = json.loads(stats.read_text())
    assert data["seccomp"] is True and data["processes"] == 1 and data["stops"] > 0
    assert "/etc/hostname" in log.read_text()


def test_without_seccomp_the_fallback_still_translates(uvm_runner, host_root, scratch):
    stats = scratch / "stats.json"
    out = ok(uvm_runner.run(host_root, "sh", "-c", "cat /etc/hostname; cd /usr && pwd",
                            stats=stats, extra=["--no-seccomp"]))
    assert out.splitlines()[1] == "/usr"
    assert json.loads(stats.read_text())["seccomp"] is False


def test_i386_guest(uvm_runner, i386_root):
    out = ok(uvm_runner.run(i386_root, "sh", "-c",
                            "static-probe; dynamic-probe; cd /usr/lib && pwd; "
                            "readlink /proc/self/exe; ls /etc/hostname"))
    lines = out.splitlines()
    assert lines[0].startswith("static ok / 32")
    assert lines[1].startswith("static ok / 32")
    assert lines[2:] == ["/usr/lib", "/bin/readlink", "/etc/hostname"]


@pytest.mark.parametrize("case", ["root-missing", "root-file", "bind-missing", "no-command",
                                  "stats-dir-missing", "log-is-a-directory"])
def test_refusals_are_one_line(case, host_root, tmp_path):
    args = {"root-missing": ["--root", str(tmp_path / "nope"), "--", "true"],
            "root-file": ["--root", str(host_root / "etc/hostname"), "--", "true"],
            "bind-missing": ["--root", str(host_root), "-b", str(tmp_path / "gone"), "--", "true"],
            "no-command": ["--root", str(host_root), "--", "no-such-command"],
            "stats-dir-missing": ["--root", str(host_root), "--stats", str(tmp_path / "no/s.json"),
                                  "--", "touch", str(tmp_path / "ran")],
            "log-is-a-directory": ["--root", str(host_root), "-v", "--log", str(tmp_path),
                                   "--", "touch", str(tmp_path / "ran")]}[case]
    res = subprocess.run([*uvm_command(), "run", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=guest_env(), timeout=60)
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("uvm: error: ")
    want = {"root-missing": "does not exist", "root-file": "not a directory",
            "bind-missing": "bind source", "no-command": "command not found",
            "stats-dir-missing": "--stats", "log-is-a-directory": "is a directory"}[case]
    assert want in res.stderr
    assert not (tmp_path / "ran").exists()  # refused before the guest ran
