/* uvm_fastpath.h: the tracer's per-stop hot path in C.
 *
 * uvm/sandbox/fastpath.py is the only user.  The wait loop lives here: a
 * seccomp stop whose call the C can settle from what Python has taught it
 * (a row per system call, and guest directories already resolved by
 * Python's namespace, each with the tracer's directory descriptor) is
 * handled without coming back to Python; every other stop is returned to
 * Python, which handles it as before.  The C never decides policy: it only
 * replays, for read-only calls, what Python did for the same directory.
 */

#include <stddef.h>

#define FAST_NONE 0
#define FAST_AT 1       /* stat-like call with a dirfd and maybe flags */
#define FAST_PATH 2     /* path relative to the cwd */
#define FAST_OPEN 3     /* open/openat: only read-only flags */
#define FAST_READLINK 4 /* absolute paths only */
#define FAST_GETCWD 5   /* path_i: the buffer, flags_i: its size */

#define FAST_MAX_NR 512

/* The kinds of published directory are uvm_table.h's T_PLAIN, T_FILLED,
 * T_PARTIAL (uvm.sandbox.namespace's values). */

struct fast_row {
    int kind;
    int dirfd_i;     /* argument holding the directory descriptor, or -1 */
    int path_i;
    int flags_i;     /* argument holding the flags, or -1 */
    int follow;      /* follows a final symlink unless flags say otherwise */
    int toggle;      /* flag bit inverting follow */
    int nofollow_nr; /* same call without following (stat -> lstat), or -1 */
};

struct fast_counts {
    unsigned long handled;   /* seccomp stops settled in C */
    unsigned long rewritten; /* of which a path was rewritten */
    unsigned long events;    /* other stops settled in C: forks, signals */
};

/* A tracee the C saw being born (a fork, vfork or clone event), or one
 * whose exec event it resumed (PTRACE_EVENT_EXEC: parent and child are
 * the tracee). */
struct fast_birth {
    int parent;
    int child;
    int event; /* PTRACE_EVENT_FORK, _VFORK, _CLONE or _EXEC */
};

struct fast;

/* The size of the table of published directories (uvm_table.h), which
 * lives in ``table_fd`` (a memfd of that size, shared read-only with the
 * preloaded library), or in private memory when ``table_fd`` is -1;
 * ``key``: the filter's gate for the library's calls. */
size_t fast_table_size(void);
struct fast *fast_new(int tracer_pid, int check_caps, int relative_ok, int table_fd,
                      unsigned long long key);
void fast_free(struct fast *f);
void fast_set_row(struct fast *f, int abi, int nr, const struct fast_row *row);
/* A path a read-only open may name as it is: the preloaded library, which
 * the guest's loader opens as /proc/<tracer>/fd/N (at most two). */
int fast_add_passthrough(struct fast *f, const char *path, size_t len);
/* Last components that always go to Python (a bind may sit on them). */
int fast_add_name(struct fast *f, const char *name, size_t len);
/* Guest directory ``head`` (as written by the guest, before the last '/')
 * resolves to the host directory behind tracer descriptor ``fd``.
 * ``filled``: T_PLAIN, or a CernVM-FS shadow directory, complete
 * (T_FILLED) or still being filled (T_PARTIAL), whose subdirectories
 * and content-less files (and, while partial, missing names) need Python.
 * ``writes``: an open that creates or writes a name in it is a plain
 * translation too (a bind, the writable layer's own directory). */
int fast_publish(struct fast *f, const char *head, size_t len, int fd, size_t host_len,
                 int filled, int writes);
/* The same, with the directory's canonical guest path ``guest``: the
 * realpath() of the preloaded library (uvm_preload.c) is answered from it. */
int fast_publish_canonical(struct fast *f, const char *head, size_t len, int fd,
                           size_t host_len, int filled, int writes, const char *guest,
                           size_t guest_len);
/* One exact path (``path``, absolute as written) whose own host name is in
 * the directory behind ``fd``: for entries of a directory whose others map
 * elsewhere (the top of a writable layer maps /usr, /etc, ... one by one).
 * With a ``target`` name, ``path`` is a symlink that calls following it
 * find as entry ``target`` of that directory (``filled`` as for
 * fast_publish); calls that do not follow it go to Python. */
int fast_publish_exact(struct fast *f, const char *path, size_t len, int fd, size_t host_len,
                       int filled, const char *target, size_t target_len);
/* Guest directory ``head`` does not exist: its walk found no entry
 * ``name`` in the (plain or complete) directory behind ``fd``.  While that is
 * still so, every read-only call on a path below ``head`` fails with ENOENT
 * without reaching the kernel (compilers and interpreters search many
 * directories that are not there). */
int fast_publish_missing(struct fast *f, const char *head, size_t len, int fd,
                         const char *name, size_t name_len);
/* A tracee whose cwd is host directory ``host`` gets ``guest`` from getcwd. */
int fast_publish_cwd(struct fast *f, const char *host, size_t len, const char *guest,
                     size_t guest_len);
/* The same directory known by identity, for names relative to a guest's
 * cwd or directory descriptor that is this very directory. */
int fast_publish_dir(struct fast *f, unsigned long dev, unsigned long ino, int fd,
                     size_t host_len, int filled);
void fast_clear(struct fast *f);
void fast_forget_creds(struct fast *f);
/* ``yes``: the next exec event of ``tid`` needs nothing of Python at the
 * event (its bookkeeping can wait for Python's next stop): the C resumes
 * it and queues it with the births.  ``no``: Python's. */
void fast_exec_settles(struct fast *f, int tid, int yes);
/* ``tid`` has exited: what the C remembers of it must not pass to a new
 * thread given the same number. */
void fast_forget(struct fast *f, int tid);
/* Tracee ``tid`` is Python's: the C may resume its fork events, its
 * first stop and its signals.  ``own``: it chose its own CPU affinity; its
 * fork events go to Python, which passes that choice on to the child. */
void fast_know(struct fast *f, int tid, int own);
/* The live tracees the C knows, for the CPU placement's thread (read
 * without a lock: a tracee born or gone meanwhile may be missed). */
int fast_known(struct fast *f, int *out, int cap);
/* For the CPU placement's thread (placement.py), without Python's lock:
 * how many tracees the C knows; when at most ``limit``, also the
 * nanoseconds they and ``tracer_tid`` have spent waiting for a CPU
 * (/proc/<tid>/schedstat) and, if ``want_runnable``, how many of them are
 * runnable (/proc/<tid>/stat). */
int fast_sample(struct fast *f, int tracer_tid, int limit, int want_runnable, int *runnable,
                long long *delay);
/* Wait for the next stop Python must see; the number of births to take
 * with fast_take_births first (Python learns of a child before any stop
 * of it reaches Python), or -errno of waitpid. */
int fast_wait(struct fast *f, int *tid, int *status);
int fast_take_births(struct fast *f, struct fast_birth *out, int cap);
/* The guest's path of a call restarted after a signal, whose argument
 * still points at the C's copy below the stack; -1 when not ours. */
int fast_restarted(struct fast *f, int tid, unsigned long rip, unsigned long rsp,
                   unsigned long addr, char *out, size_t cap);
void fast_counts(struct fast *f, struct fast_counts *out);
