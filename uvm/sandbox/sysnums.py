"""System call numbers of both ABIs, generated from python-ptrace's tables.

Handlers are keyed by name; these tables map each ABI's raw numbers onto
those names (as PRoot's sysnums-*.h do).  python-ptrace's i386 table stops at
Linux 2.6 and its x86_64 one at 5.8, so the newer calls are added here from
the kernel's syscall_32.tbl / syscall_64.tbl.
"""

from __future__ import annotations

import os

from uvm.sandbox.arch import ABI_I386, ABI_X86_64

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Dict


def _load_table(name: str):
    """python-ptrace's ``ptrace/syscall/linux/<name>.py`` (plain data),
    loaded by file so that the ``ptrace.syscall`` package, which imports
    its whole decoding machinery, stays unloaded: uvm's start-up counts."""
    import importlib.util

    spec = importlib.util.find_spec("ptrace")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("python-ptrace is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "syscall", "linux", name + ".py")
    namespace: dict = {}
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), namespace)
    return namespace["SYSCALL_NAMES"]

# Numbers shared by both ABIs since Linux 5.1 (424 onwards).
_COMMON_NEW = {
    424: "pidfd_send_signal", 425: "io_uring_setup", 426: "io_uring_enter",
    427: "io_uring_register", 428: "open_tree", 429: "move_mount",
    430: "fsopen", 431: "fsconfig", 432: "fsmount", 433: "fspick",
    434: "pidfd_open", 435: "clone3", 436: "close_range", 437: "openat2",
    438: "pidfd_getfd", 439: "faccessat2", 440: "process_madvise",
    441: "epoll_pwait2", 442: "mount_setattr", 443: "quotactl_fd",
    444: "landlock_create_ruleset", 445: "landlock_add_rule",
    446: "landlock_restrict_self", 447: "memfd_secret",
    448: "process_mrelease", 449: "futex_waitv",
    450: "set_mempolicy_home_node", 451: "cachestat", 452: "fchmodat2",
    453: "map_shadow_stack", 454: "futex_wake", 455: "futex_wait",
    456: "futex_requeue", 457: "statmount", 458: "listmount",
    459: "lsm_get_self_attr", 460: "lsm_set_self_attr",
    461: "lsm_list_modules", 462: "mseal", 463: "setxattrat",
    464: "getxattrat", 465: "listxattrat", 466: "removexattrat",
    467: "open_tree_attr", 468: "file_getattr", 469: "file_setattr",
}

# i386 numbers from Linux 2.6.22 to 5.0 (syscall_32.tbl).
_I386_MIDDLE = {
    320: "utimensat", 321: "signalfd", 322: "timerfd_create", 323: "eventfd",
    324: "fallocate", 325: "timerfd_settime", 326: "timerfd_gettime",
    327: "signalfd4", 328: "eventfd2", 329: "epoll_create1", 330: "dup3",
    331: "pipe2", 332: "inotify_init1", 333: "preadv", 334: "pwritev",
    335: "rt_tgsigqueueinfo", 336: "perf_event_open", 337: "recvmmsg",
    338: "fanotify_init", 339: "fanotify_mark", 340: "prlimit64",
    341: "name_to_handle_at", 342: "open_by_handle_at", 343: "clock_adjtime",
    344: "syncfs", 345: "sendmmsg", 346: "setns", 347: "process_vm_readv",
    348: "process_vm_writev", 349: "kcmp", 350: "finit_module",
    351: "sched_setattr", 352: "sched_getattr", 353: "renameat2",
    354: "seccomp", 355: "getrandom", 356: "memfd_create", 357: "bpf",
    358: "execveat", 359: "socket", 360: "socketpair", 361: "bind",
    362: "connect", 363: "listen", 364: "accept4", 365: "getsockopt",
    366: "setsockopt", 367: "getsockname", 368: "getpeername",
    369: "sendto", 370: "sendmsg", 371: "recvfrom", 372: "recvmsg",
    373: "shutdown", 374: "userfaultfd", 375: "membarrier", 376: "mlock2",
    377: "copy_file_range", 378: "preadv2", 379: "pwritev2",
    380: "pkey_mprotect", 381: "pkey_alloc", 382: "pkey_free", 383: "statx",
    384: "arch_prctl", 385: "io_pgetevents", 386: "rseq",
    393: "semget", 394: "semctl", 395: "shmget", 396: "shmctl", 397: "shmat",
    398: "shmdt", 399: "msgget", 400: "msgsnd", 401: "msgrcv", 402: "msgctl",
    403: "clock_gettime64", 404: "clock_settime64", 405: "clock_adjtime64",
    406: "clock_getres_time64", 407: "clock_nanosleep_time64",
    408: "timer_gettime64", 409: "timer_settime64", 410: "timerfd_gettime64",
    411: "timerfd_settime64", 412: "utimensat_time64",
    413: "pselect6_time64", 414: "ppoll_time64",
    416: "io_pgetevents_time64", 417: "recvmmsg_time64",
    418: "mq_timedsend_time64", 419: "mq_timedreceive_time64",
    420: "semtimedop_time64", 421: "rt_sigtimedwait_time64",
    422: "futex_time64", 423: "sched_rr_get_interval_time64",
}

# python-ptrace's i386 names that differ from the unified names handlers use.
_I386_RENAME = {
    "stat": "oldstat", "lstat": "oldlstat", "newstat": "stat",
    "newlstat": "lstat", "newfstat": "fstat",
    "chown16": "chown16", "lchown16": "lchown16",
    "lchown": "lchown32", "chown": "chown32", "fchown": "fchown32",
}


def generate() -> Dict[int, Dict[int, str]]:
    """Build both tables from python-ptrace plus the additions above."""
    x86_64 = {nr: name for nr, name in _load_table("x86_64").items() if nr < 512}
    x86_64.update((nr, name) for nr, name in _COMMON_NEW.items() if nr not in x86_64)
    i386 = {nr: _I386_RENAME.get(name, name) for nr, name in _load_table("i386").items()}
    i386.update(_I386_MIDDLE)
    i386.update(_COMMON_NEW)
    return {ABI_X86_64: x86_64, ABI_I386: i386}


def render() -> str:
    """Source of ``_sysnames.py``: the generated tables, so that start-up
    reads a cached module instead of re-parsing python-ptrace's files."""
    tables = generate()
    lines = ['"""Generated by ``python -m uvm.sandbox.sysnums``: do not edit."""', ""]
    for abi, var in ((ABI_X86_64, "X86_64"), (ABI_I386, "I386")):
        lines.append(f"{var} = {{")
        lines.extend(f"    {nr}: {name!r}," for nr, name in sorted(tables[abi].items()))
        lines.append("}")
    return "\n".join(lines) + "\n"


def _tables() -> Dict[int, Dict[int, str]]:
    try:
        from uvm.sandbox import _sysnames
    except ImportError:  # not generated yet
        return generate()
    return {ABI_X86_64: _sysnames.X86_64, ABI_I386: _sysnames.I386}


NAMES: Dict[int, Dict[int, str]] = _tables()
NUMBERS: Dict[int, Dict[str, int]] = {
    abi: {name: nr for nr, name in table.items()} for abi, table in NAMES.items()
}
# Numbers above this are newer than uvm knows; the filter refuses them (ENOSYS)
# so that a future path-taking call is never passed through untranslated.
HIGHEST_KNOWN = max(_COMMON_NEW)


def number(abi: int, name: str) -> int:
    return NUMBERS[abi][name]


if __name__ == "__main__":
    target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sysnames.py")
    with open(target, "w", encoding="utf-8") as f:
        f.write(render())
    print(f"wrote {target}")
