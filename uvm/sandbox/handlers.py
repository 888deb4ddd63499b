"""The system call table: every call the tracer handles, and how.

One source of truth: the seccomp filter (``seccomp.py``) is generated from
:data:`TABLE`, and ``docs/syscalls.md`` describes the same rows.  Rows are
keyed by the ABI-independent name (``sysnums.py`` maps numbers of each ABI
onto names); a row is a tuple whose first item is its kind:

``("path", i, follow, mutates)``
    a path in argument ``i``, relative to the cwd.
``("open", i, flags_i)``
    like path; the final symlink is not followed for O_NOFOLLOW or
    O_CREAT|O_EXCL (``flags_i`` -1: creat).
``("at", dirfd_i, path_i, flags_i, follow, toggle, mutates)``
    a path relative to a directory descriptor; ``flags & toggle`` inverts
    ``follow``; AT_EMPTY_PATH with "" and a NULL path (utimensat) leave the
    call alone.
``("openat", dirfd_i, path_i, flags_i)`` / ``("openat2",)``
``("two", old_i, new_i, follow_old)`` / ``("two_at", odfd, old, ndfd, new, flags_i, follow_flag)``
    two paths (rename, link); the second never follows.
``("symlink", target_i, dirfd_i, path_i)``
    the link's content is left as the guest wrote it.
``("readlink", dirfd_i, path_i, buf_i, size_i)``
    /proc magic links answered in guest terms.
``("exec", dirfd_i, path_i, argv_i, envp_i, flags_i)``  see ``execve.py``.
``("getcwd",)``  answered by the tracer from the tracee's cwd.
``("sock", addr_i, len_i, bind)`` / ``("socketcall",)``  AF_UNIX paths.
``("sendto", addr_i, len_i)``
    the filter stops only when the destination pointer is not NULL.
``("sendmsg",)`` / ``("sendmmsg",)``  ``msg_name`` of each message header.
``("sockname", addr_i, len_i)``
    a socket address returned (getsockname, getpeername, accept,
    recvfrom): the filter stops only when the address pointer is not NULL,
    and a name the tracer bound for the guest is given back, at the call's
    exit, as the guest wrote it.
``("creds",)``
    set*id and capset: the tracer forgets what it knew of the caller's
    credentials (they decide whether /proc/<tracer>/fd anchors can be used;
    see ``anchors.py``); the call itself runs unchanged.
``("getaffinity", pid_i, len_i, mask_i)`` / ``("setaffinity", pid_i)``
    CPU affinity (``placement.py``): the guest is told the CPUs uvm was
    given, not the one CPU uvm may keep it on; a process that sets its own
    affinity is never moved again.
``("refuse", errno)``
    refused in the filter itself (no stop): mount and friends, chroot,
    io_uring (it would open paths without a system call), ...
"""

from __future__ import annotations

import errno

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Dict, Tuple

O_NOFOLLOW = 0o400000
O_CREAT = 0o100
O_EXCL = 0o200
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
IN_DONT_FOLLOW = 0x02000000

F, NF = True, False
M = True  # mutates: may turn a directory into something else

TABLE: Dict[str, Tuple] = {
    # open family
    "open": ("open", 0, 1),
    "creat": ("open", 0, -1),
    "openat": ("openat", 0, 1, 2),
    "openat2": ("openat2", 0, 1, 2),
    # stat family
    "stat": ("path", 0, F, False),
    "lstat": ("path", 0, NF, False),
    "oldstat": ("path", 0, F, False),
    "oldlstat": ("path", 0, NF, False),
    "stat64": ("path", 0, F, False),
    "lstat64": ("path", 0, NF, False),
    "newfstatat": ("at", 0, 1, 3, F, AT_SYMLINK_NOFOLLOW, False),
    "fstatat64": ("at", 0, 1, 3, F, AT_SYMLINK_NOFOLLOW, False),
    "statx": ("at", 0, 1, 2, F, AT_SYMLINK_NOFOLLOW, False),
    "statfs": ("path", 0, F, False),
    "statfs64": ("path", 0, F, False),
    # access
    "access": ("path", 0, F, False),
    "faccessat": ("at", 0, 1, -1, F, 0, False),
    "faccessat2": ("at", 0, 1, 3, F, AT_SYMLINK_NOFOLLOW, False),
    # links
    "readlink": ("readlink", -1, 0, 1, 2),
    "readlinkat": ("readlink", 0, 1, 2, 3),
    "symlink": ("symlink", 0, -1, 1),
    "symlinkat": ("symlink", 0, 1, 2),
    "link": ("two", 0, 1, NF),
    "linkat": ("two_at", 0, 1, 2, 3, 4, AT_SYMLINK_FOLLOW),
    "rename": ("two", 0, 1, NF),
    "renameat": ("two_at", 0, 1, 2, 3, -1, 0),
    "renameat2": ("two_at", 0, 1, 2, 3, -1, 0),
    "unlink": ("path", 0, NF, M),
    "unlinkat": ("at", 0, 1, -1, NF, 0, M),
    "rmdir": ("path", 0, NF, M),
    # directories
    "mkdir": ("path", 0, NF, False),
    "mkdirat": ("at", 0, 1, -1, NF, 0, False),
    "chdir": ("path", 0, F, False),
    "mknod": ("path", 0, NF, False),
    "mknodat": ("at", 0, 1, -1, NF, 0, False),
    # attributes
    "chmod": ("path", 0, F, False),
    "fchmodat": ("at", 0, 1, -1, F, 0, False),
    "fchmodat2": ("at", 0, 1, 3, F, AT_SYMLINK_NOFOLLOW, False),
    "chown": ("path", 0, F, False),
    "lchown": ("path", 0, NF, False),
    "chown16": ("path", 0, F, False),
    "lchown16": ("path", 0, NF, False),
    "chown32": ("path", 0, F, False),
    "lchown32": ("path", 0, NF, False),
    "fchownat": ("at", 0, 1, 4, F, AT_SYMLINK_NOFOLLOW, False),
    "utime": ("path", 0, F, False),
    "utimes": ("path", 0, F, False),
    "futimesat": ("at", 0, 1, -1, F, 0, False),
    "utimensat": ("at", 0, 1, 3, F, AT_SYMLINK_NOFOLLOW, False),
    "utimensat_time64": ("at", 0, 1, 3, F, AT_SYMLINK_NOFOLLOW, False),
    "truncate": ("path", 0, F, False),
    "truncate64": ("path", 0, F, False),
    # extended attributes
    "setxattr": ("path", 0, F, False),
    "getxattr": ("path", 0, F, False),
    "listxattr": ("path", 0, F, False),
    "removexattr": ("path", 0, F, False),
    "lsetxattr": ("path", 0, NF, False),
    "lgetxattr": ("path", 0, NF, False),
    "llistxattr": ("path", 0, NF, False),
    "lremovexattr": ("path", 0, NF, False),
    "setxattrat": ("at", 0, 1, 2, F, AT_SYMLINK_NOFOLLOW, False),
    "getxattrat": ("at", 0, 1, 2, F, AT_SYMLINK_NOFOLLOW, False),
    "listxattrat": ("at", 0, 1, 2, F, AT_SYMLINK_NOFOLLOW, False),
    "removexattrat": ("at", 0, 1, 2, F, AT_SYMLINK_NOFOLLOW, False),
    "file_getattr": ("at", 0, 1, 4, F, AT_SYMLINK_NOFOLLOW, False),
    "file_setattr": ("at", 0, 1, 4, F, AT_SYMLINK_NOFOLLOW, False),
    # notification
    "inotify_add_watch": ("at", -1, 1, 2, F, IN_DONT_FOLLOW, False),
    # execution
    "execve": ("exec", -1, 0, 1, 2, -1),
    "execveat": ("exec", 0, 1, 2, 3, 4),
    # results naming paths
    "getcwd": ("getcwd",),
    # AF_UNIX sockets
    "bind": ("sock", 1, 2, True),
    "connect": ("sock", 1, 2, False),
    "socketcall": ("socketcall",),
    "sendto": ("sendto", 4, 5),
    "sendmsg": ("sendmsg",),
    "sendmmsg": ("sendmmsg",),
    "getsockname": ("sockname", 1, 2),
    "getpeername": ("sockname", 1, 2),
    "accept": ("sockname", 1, 2),
    "accept4": ("sockname", 1, 2),
    "recvfrom": ("sockname", 4, 5),
    # credentials (only noted)
    **{name: ("creds",) for name in (
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
        "setfsuid", "setfsgid", "capset", "setuid16", "setgid16", "setreuid16",
        "setregid16", "setresuid16", "setresgid16", "setfsuid16", "setfsgid16")},
    # CPU placement (placement.py)
    "sched_getaffinity": ("getaffinity", 0, 1, 2),
    "sched_setaffinity": ("setaffinity", 0),
    # refused (in the filter, no stop)
    "chroot": ("refuse", errno.EPERM),
    "pivot_root": ("refuse", errno.EPERM),
    "mount": ("refuse", errno.EPERM),
    "umount": ("refuse", errno.EPERM),
    "umount2": ("refuse", errno.EPERM),
    "open_tree": ("refuse", errno.EPERM),
    "open_tree_attr": ("refuse", errno.EPERM),
    "move_mount": ("refuse", errno.EPERM),
    "fsopen": ("refuse", errno.EPERM),
    "fspick": ("refuse", errno.EPERM),
    "fsmount": ("refuse", errno.EPERM),
    "fsconfig": ("refuse", errno.EPERM),
    "mount_setattr": ("refuse", errno.EPERM),
    "swapon": ("refuse", errno.EPERM),
    "swapoff": ("refuse", errno.EPERM),
    "acct": ("refuse", errno.EPERM),
    "quotactl": ("refuse", errno.ENOSYS),
    "name_to_handle_at": ("refuse", errno.EOPNOTSUPP),
    "open_by_handle_at": ("refuse", errno.EPERM),
    "uselib": ("refuse", errno.ENOSYS),
    "fanotify_mark": ("refuse", errno.ENOSYS),
    "io_uring_setup": ("refuse", errno.ENOSYS),
    "statmount": ("refuse", errno.ENOSYS),
    "listmount": ("refuse", errno.ENOSYS),
}


# Calls that follow a final symlink -> their twin that does not (same
# arguments): a follow call whose last component the tracer checked becomes
# its twin, so that a symlink raced into its place is not followed.
NOFOLLOW_TWIN: Dict[str, str] = {
    "stat": "lstat", "stat64": "lstat64", "oldstat": "oldlstat",
    "chown": "lchown", "chown32": "lchown32", "chown16": "lchown16",
    "getxattr": "lgetxattr", "setxattr": "lsetxattr",
    "listxattr": "llistxattr", "removexattr": "lremovexattr",
}
