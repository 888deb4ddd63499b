/* uvm_fastpath.c: see uvm_fastpath.h.
 *
 * One stop settled here costs waitpid, GETREGS, one process_vm_readv, for
 * a call that follows symlinks one fstatat, one process_vm_writev, SETREGS
 * and PTRACE_CONT; the same work Python's Tracer.enter does, without the
 * interpreter.  Every case not covered exactly is handed back to Python
 * untouched ("bail"), so a miss costs only the GETREGS and the read.
 */

#define _GNU_SOURCE
#include "uvm_fastpath.h"
#include "uvm_table.h"

_Static_assert(FAST_AT == T_KIND_AT && FAST_PATH == T_KIND_PATH && FAST_OPEN == T_KIND_OPEN &&
                   FAST_READLINK == T_KIND_READLINK,
               "one numbering of call kinds");

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define HANDLED 1
#define BAIL 0

#define SHORT_PATH T_SHORT_PATH
#define TIDS 2048       /* per-thread records (power of two) */
#define KNOWN 8192      /* live tracees (power of two) */
#define BIRTHS 256      /* births not yet taken by Python */
#define RED_ZONE_64 128
#define SCRATCH_GAP 64
#define SCRATCH_WINDOW 8192
#define AT_FDCWD32 0xFFFFFF9CUL
#define REALPATH_FD32 0xFFFF8A8AUL /* uvm_preload.c: readlinkat() on it is realpath() */
#define PTRACE_EVENT_SECCOMP_STOP (PTRACE_EVENT_SECCOMP << 8)

struct restart {
    int tid;
    unsigned long rip, rsp, addr;
    size_t len;
    char path[SHORT_PATH];
};

struct cap {
    int tid;
    int ok;
};

struct fast {
    struct fast_row rows[2][FAST_MAX_NR];
    struct table *t; /* shared with the preloaded library (uvm_table.h) */
    char passthrough[2][64];
    int check_caps;
    struct restart recs[TIDS];
    struct cap caps[TIDS];
    int exec_settled[TIDS];    /* tid whose next exec event the C may resume */
    int known[KNOWN];          /* tid, or 0; -tid: known, chose its own CPUs */
    struct fast_birth births[BIRTHS];
    int births_used;
    struct fast_counts counts;
};

/* user_regs_struct words holding arguments 0..5, per ABI. */
static const int ARG_WORD[2][6] = {
    {14, 13, 12, 7, 9, 8}, /* rdi rsi rdx r10 r8 r9 */
    {5, 11, 12, 13, 14, 4}, /* ebx ecx edx esi edi ebp */
};

size_t fast_table_size(void)
{
    return sizeof(struct table);
}

struct fast *fast_new(int tracer_pid, int check_caps, int relative_ok, int table_fd,
                      unsigned long long key)
{
    struct fast *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    void *t = table_fd >= 0 ? mmap(NULL, sizeof(struct table), PROT_READ | PROT_WRITE, MAP_SHARED,
                                   table_fd, 0)
                            : mmap(NULL, sizeof(struct table), PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED) {
        free(f);
        return NULL;
    }
    f->t = t;
    f->t->prefix_len = (uint32_t)snprintf(f->t->prefix, sizeof(f->t->prefix), "/proc/%d/fd/",
                                          tracer_pid);
    f->t->relative_ok = relative_ok;
    f->t->key = key;
    __atomic_store_n(&f->t->magic, T_MAGIC, __ATOMIC_RELEASE);
    f->check_caps = check_caps;
    return f;
}

void fast_free(struct fast *f)
{
    if (f) {
        munmap(f->t, sizeof(struct table));
        free(f);
    }
}

/* The table's one writer brackets every change: readers in other
 * processes retry a lookup that saw an odd or changed count. */
static void write_begin(struct table *t)
{
    __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void write_end(struct table *t)
{
    __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
}

void fast_set_row(struct fast *f, int abi, int nr, const struct fast_row *row)
{
    if ((abi == 0 || abi == 1) && nr >= 0 && nr < FAST_MAX_NR)
        f->rows[abi][nr] = *row;
}

int fast_add_passthrough(struct fast *f, const char *path, size_t len)
{
    for (int i = 0; i < 2; i++)
        if (!f->passthrough[i][0] && len > 0 && len < sizeof(f->passthrough[i])) {
            memcpy(f->passthrough[i], path, len);
            return 0;
        }
    return -1;
}

int fast_add_name(struct fast *f, const char *name, size_t len)
{
    struct table *t = f->t;
    if (t->names_len + len + 1 > sizeof(t->names))
        return -1;
    write_begin(t);
    memcpy(t->names + t->names_len, name, len);
    t->names_len += (uint32_t)len;
    t->names[t->names_len++] = '\0';
    write_end(t);
    return 0;
}

static void clear_table(struct table *t)
{
    if (t->used || t->arena_used) {
        memset(t->slots, 0, sizeof(t->slots));
        t->used = 0;
        t->arena_used = 0;
    }
    if (t->dirs_used) {
        memset(t->dirs, 0, sizeof(t->dirs));
        t->dirs_used = 0;
    }
    t->generation++;
}

void fast_clear(struct fast *f)
{
    write_begin(f->t);
    clear_table(f->t);
    write_end(f->t);
}

/* The writable slot of ``key`` (the table's writer only). */
static struct t_slot *slot_of(struct table *t, const char *key, size_t len)
{
    return (struct t_slot *)t_find(t, key, len);
}

/* Publish ``key``, with the string ``extra`` beside it (none if NULL). */
static int put(struct fast *f, const char *key, size_t len, int fd, size_t host_len, int filled,
               int writes, const char *extra, size_t extra_len)
{
    struct table *t = f->t;
    if (len >= SHORT_PATH || extra_len >= SHORT_PATH)
        return -1;
    write_begin(t);
    if (t->used >= T_SLOTS / 2 || t->arena_used + len + extra_len > T_ARENA)
        clear_table(t);
    struct t_slot *s = slot_of(t, key, len);
    if (!s->hash) {
        memcpy(t->arena + t->arena_used, key, len);
        s->off = t->arena_used;
        s->len = (uint32_t)len;
        s->hash = t_hash(key, len);
        t->arena_used += (uint32_t)len;
        t->used++;
    }
    s->fd = fd;
    s->host_len = (uint32_t)host_len;
    s->filled = filled;
    s->writes = writes != 0;
    s->xlen = 0;
    if (extra) {
        memcpy(t->arena + t->arena_used, extra, extra_len);
        s->xoff = t->arena_used;
        s->xlen = (uint32_t)extra_len;
        t->arena_used += (uint32_t)extra_len;
    }
    write_end(t);
    return 0;
}

int fast_publish(struct fast *f, const char *head, size_t len, int fd, size_t host_len,
                 int filled, int writes)
{
    return put(f, head, len, fd, host_len, filled, writes, NULL, 0);
}

int fast_publish_canonical(struct fast *f, const char *head, size_t len, int fd,
                           size_t host_len, int filled, int writes, const char *guest,
                           size_t guest_len)
{
    return put(f, head, len, fd, host_len, filled, writes, guest, guest_len);
}

int fast_publish_exact(struct fast *f, const char *path, size_t len, int fd, size_t host_len,
                       int filled, const char *target, size_t target_len)
{
    char key[SHORT_PATH + 1];
    if (len >= SHORT_PATH || memchr(target, '/', target_len))
        return -1;
    key[0] = '\001'; /* never the first byte of a directory's key */
    memcpy(key + 1, path, len);
    return put(f, key, len + 1, fd, host_len, filled, 0, target, target_len);
}

int fast_publish_missing(struct fast *f, const char *head, size_t len, int fd,
                         const char *name, size_t name_len)
{
    if (name_len == 0 || memchr(name, '/', name_len))
        return -1;
    return put(f, head, len, fd, 0, T_MISSING, 0, name, name_len);
}

int fast_publish_cwd(struct fast *f, const char *host, size_t len, const char *guest,
                     size_t guest_len)
{
    char key[SHORT_PATH + 1];
    if (len >= SHORT_PATH || guest_len == 0)
        return -1;
    key[0] = '\002'; /* apart from directories and exact paths */
    memcpy(key + 1, host, len);
    return put(f, key, len + 1, -1, 0, T_CWD, 0, guest, guest_len);
}

int fast_publish_dir(struct fast *f, unsigned long dev, unsigned long ino, int fd,
                     size_t host_len, int filled)
{
    struct table *t = f->t;
    if (!ino || host_len >= 4096)
        return -1;
    write_begin(t);
    if (t->dirs_used >= T_DIRS / 2)
        clear_table(t);
    struct t_dir *d = (struct t_dir *)t_find_dir(t, dev, ino);
    if (!d->ino) {
        d->dev = dev;
        d->ino = ino;
        t->dirs_used++;
    }
    d->fd = fd;
    d->filled = filled;
    write_end(t);
    return 0;
}

void fast_forget_creds(struct fast *f)
{
    memset(f->caps, 0, sizeof(f->caps));
}

/* -- tracees ---------------------------------------------------------------- */

static int *known_slot(struct fast *f, int tid)
{
    return &f->known[(unsigned)tid & (KNOWN - 1)];
}

/* 1: known, its events may be settled here; -1: known, chose its own CPUs. */
static int known_as(struct fast *f, int tid)
{
    int k = __atomic_load_n(known_slot(f, tid), __ATOMIC_RELAXED);
    return k == tid ? 1 : k == -tid ? -1 : 0;
}

void fast_know(struct fast *f, int tid, int own)
{
    int *slot = known_slot(f, tid);
    int k = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (k == 0 || k == tid || k == -tid)
        __atomic_store_n(slot, own ? -tid : tid, __ATOMIC_RELAXED);
}

int fast_known(struct fast *f, int *out, int cap)
{
    int n = 0;
    for (int i = 0; i < KNOWN && n < cap; i++) {
        int k = __atomic_load_n(&f->known[i], __ATOMIC_RELAXED);
        if (k)
            out[n++] = k < 0 ? -k : k;
    }
    return n;
}

/* The start of /proc/<tid>/<what> in buf (NUL-terminated); 0 when gone. */
static ssize_t read_proc(int tid, const char *what, char *buf, size_t cap)
{
    char path[48];
    snprintf(path, sizeof(path), "/proc/%d/%s", tid, what);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        n = 0;
    buf[n] = 0;
    return n;
}

/* Nanoseconds ``tid`` has waited runnable for a CPU (schedstat's second
 * number), 0 when gone. */
static long long run_delay(int tid)
{
    char buf[96];
    if (!read_proc(tid, "schedstat", buf, sizeof(buf)))
        return 0;
    char *space = strchr(buf, ' ');
    return space ? strtoll(space + 1, NULL, 10) : 0;
}

int fast_sample(struct fast *f, int tracer_tid, int limit, int want_runnable, int *runnable,
                long long *delay)
{
    int n = 0, ready = 0;
    long long waited = run_delay(tracer_tid);
    for (int i = 0; i < KNOWN; i++) {
        int k = __atomic_load_n(&f->known[i], __ATOMIC_RELAXED);
        if (!k)
            continue;
        if (++n > limit)
            continue;  /* counted only */
        int tid = k < 0 ? -k : k;
        char buf[512];
        if (want_runnable && read_proc(tid, "stat", buf, sizeof(buf))) {
            char *end = strrchr(buf, ')');
            ready += end && end[1] == ' ' && end[2] == 'R';
        }
        waited += run_delay(tid);
    }
    *runnable = ready;
    *delay = waited;
    return n;
}

int fast_take_births(struct fast *f, struct fast_birth *out, int cap)
{
    int n = f->births_used < cap ? f->births_used : cap;
    memcpy(out, f->births, (size_t)n * sizeof(*out));
    memmove(f->births, f->births + n, (size_t)(f->births_used - n) * sizeof(*out));
    f->births_used -= n;
    return n;
}

/* A fork, vfork or clone event of a known tracee: its child is known from
 * now on (unless its slot is taken), and Python hears of it. */
static int born(struct fast *f, int tid, int event)
{
    unsigned long msg = 0;
    if (known_as(f, tid) != 1 || f->births_used == BIRTHS ||
        ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg) < 0 || msg == 0)
        return BAIL;
    int child = (int)msg, k = __atomic_load_n(known_slot(f, child), __ATOMIC_RELAXED);
    if (k != 0 && k != child)
        return BAIL;
    __atomic_store_n(known_slot(f, child), child, __ATOMIC_RELAXED);
    f->births[f->births_used++] = (struct fast_birth){tid, child, event};
    return HANDLED;
}

void fast_exec_settles(struct fast *f, int tid, int yes)
{
    int *slot = &f->exec_settled[(unsigned)tid & (TIDS - 1)];
    if (yes)
        *slot = tid;
    else if (*slot == tid)
        *slot = 0;
}

/* The exec event of a known tracee whose exec Python planned needing
 * nothing more at the event (fast_exec_settles): resumed here, and Python
 * hears of it with the births, in order. */
static int exec_seen(struct fast *f, int tid)
{
    int *slot = &f->exec_settled[(unsigned)tid & (TIDS - 1)];
    unsigned long former = 0;
    if (*slot != tid || known_as(f, tid) != 1 || f->births_used == BIRTHS ||
        ptrace(PTRACE_GETEVENTMSG, tid, 0, &former) < 0 || (int)former != tid)
        return BAIL; /* (an exec from another thread of the process: Python's) */
    *slot = 0;
    if (f->check_caps)
        fast_forget_creds(f); /* exec clears a non-root process's capabilities */
    f->births[f->births_used++] = (struct fast_birth){tid, tid, PTRACE_EVENT_EXEC};
    return HANDLED;
}

void fast_forget(struct fast *f, int tid)
{
    fast_exec_settles(f, tid, 0);
    int *slot = known_slot(f, tid);
    if (*slot == tid || *slot == -tid)
        __atomic_store_n(slot, 0, __ATOMIC_RELAXED);
    struct cap *c = &f->caps[(unsigned)tid & (TIDS - 1)];
    struct restart *r = &f->recs[(unsigned)tid & (TIDS - 1)];
    if (c->tid == tid)
        c->tid = 0;
    if (r->tid == tid)
        r->tid = 0;
}

void fast_counts(struct fast *f, struct fast_counts *out)
{
    *out = f->counts;
}

/* -- per-thread state ------------------------------------------------------ */

static int may_anchor(struct fast *f, int tid)
{
    if (!f->check_caps)
        return 1;
    struct cap *c = &f->caps[(unsigned)tid & (TIDS - 1)];
    if (c->tid == tid)
        return c->ok;
    /* capget: one system call, where /proc/TID/status formats a page */
    struct { uint32_t version; int pid; } head = {0x20080522, tid};
    uint32_t data[6];
    int ok = syscall(SYS_capget, &head, data) == 0 && (data[0] >> 19) & 1; /* CAP_SYS_PTRACE */
    c->tid = tid;
    c->ok = ok;
    return ok;
}

int fast_restarted(struct fast *f, int tid, unsigned long rip, unsigned long rsp,
                   unsigned long addr, char *out, size_t cap)
{
    struct restart *r = &f->recs[(unsigned)tid & (TIDS - 1)];
    if (r->tid != tid || r->rip != rip || r->rsp != rsp || r->addr != addr || r->len >= cap)
        return -1;
    memcpy(out, r->path, r->len + 1);
    return (int)r->len;
}

/* -- one stop -------------------------------------------------------------- */

/* The NUL-terminated string at ``addr`` if shorter than SHORT_PATH. */
static ssize_t read_path(int tid, unsigned long addr, char *out)
{
    size_t got = 0;
    while (got < SHORT_PATH) {
        size_t page = 4096 - ((addr + got) & 4095);
        size_t want = SHORT_PATH - got < page ? SHORT_PATH - got : page;
        struct iovec local = {out + got, want};
        struct iovec remote = {(void *)(addr + got), want};
        ssize_t n = process_vm_readv(tid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return -1;
        char *nul = memchr(out + got, '\0', (size_t)n);
        if (nul)
            return nul - out;
        got += (size_t)n;
    }
    return -1;
}

static int write_mem(int tid, unsigned long addr, const char *data, size_t len)
{
    struct iovec local = {(void *)data, len};
    struct iovec remote = {(void *)addr, len};
    return process_vm_writev(tid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* The tracer's view of a published directory's entries (uvm_table.h):
 * its own descriptors, and the tracee's cwd or descriptors through /proc. */
static int tracer_lstat(void *ctx, int fd, long dirfd, const char *name, struct t_stat *out)
{
    struct stat st;
    int r;
    if (fd >= 0) {
        r = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW);
    } else {
        char where[SHORT_PATH + 64];
        int tid = *(const int *)ctx;
        if ((unsigned long)dirfd == AT_FDCWD32)
            snprintf(where, sizeof(where), "/proc/%d/cwd/%s", tid, name);
        else
            snprintf(where, sizeof(where), "/proc/%d/fd/%ld/%s", tid, dirfd, name);
        r = lstat(where, &st);
    }
    if (r < 0)
        return -errno;
    out->mode = st.st_mode;
    out->size = st.st_size;
    out->blocks = st.st_blocks;
    return 0;
}

static long tracer_readlink(void *ctx, int fd, const char *name, char *buf, size_t size)
{
    (void)ctx;
    ssize_t n = readlinkat(fd, name, buf, size);
    return n < 0 ? -errno : n;
}

/* The directory a relative name starts from: the guest's cwd or
 * descriptor, if the table knows it or its parent (t_start_dir). */
static const struct t_dir *start_dir(struct fast *f, int tid, unsigned long dirfd,
                                     struct t_dir *scratch)
{
    char where[64];
    struct stat st, parent;
    if (dirfd == AT_FDCWD32)
        snprintf(where, sizeof(where), "/proc/%d/cwd", tid);
    else
        snprintf(where, sizeof(where), "/proc/%d/fd/%lu", tid, dirfd);
    if (stat(where, &st) < 0 || !S_ISDIR(st.st_mode))
        return NULL;
    const struct t_dir *d = t_find_dir(f->t, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
    if (d && d->ino)
        return d;
    strcat(where, "/..");
    int known = lstat(where, &parent) == 0;
    return t_start_dir(f->t, (uint64_t)st.st_dev, (uint64_t)st.st_ino, known,
                       known ? (uint64_t)parent.st_dev : 0, known ? (uint64_t)parent.st_ino : 0,
                       scratch);
}

/* Skip the call: the tracee gets ``ret`` as its result. */
static int answer(int tid, struct user_regs_struct *regs, long ret)
{
    regs->orig_rax = ~0UL;
    regs->rax = (unsigned long)ret;
    return ptrace(PTRACE_SETREGS, tid, 0, regs) < 0 ? BAIL : HANDLED;
}

/* The published slot of the guest's cwd (its guest path is the slot's
 * string), for a cwd Python has answered before; NULL if not. */
static const struct t_slot *cwd_of(struct fast *f, int tid)
{
    char where[64], key[SHORT_PATH];
    snprintf(where, sizeof(where), "/proc/%d/cwd", tid);
    ssize_t n = readlink(where, key + 1, sizeof(key) - 2);
    if (n <= 0 || n >= (ssize_t)sizeof(key) - 2)
        return NULL;
    key[0] = '\002';
    const struct t_slot *s = t_lookup(f->t, key, (size_t)n + 1);
    return s && s->filled == T_CWD ? s : NULL;
}

/* Relative ``path`` (``len`` bytes) from the guest's cwd, as a path from
 * its /, into ``out`` (SHORT_PATH bytes): the new length, or 0 when the
 * cwd is not published or the path too long. */
static size_t from_cwd(struct fast *f, int tid, const char *path, size_t len, char *out)
{
    const struct t_slot *cwd = cwd_of(f, tid);
    if (!cwd || cwd->xlen + 1 + len >= SHORT_PATH)
        return 0;
    size_t at = cwd->xlen == 1 ? 0 : cwd->xlen; /* "/" adds nothing */
    memcpy(out, f->t->arena + cwd->xoff, at);
    out[at] = '/';
    memcpy(out + at + 1, path, len + 1);
    return at + 1 + len;
}

/* getcwd(buf, size) for a cwd Python has answered before. */
static int getcwd_call(struct fast *f, int tid, struct user_regs_struct *regs, int abi)
{
    const unsigned long *word = (const unsigned long *)regs;
    const int *aw = ARG_WORD[abi];
    const struct t_slot *s = cwd_of(f, tid);
    if (!s)
        return BAIL;
    if (s->xlen + 1 > (word[aw[1]] & 0xFFFFFFFFUL))
        return answer(tid, regs, -ERANGE);
    char out[SHORT_PATH];
    memcpy(out, f->t->arena + s->xoff, s->xlen);
    out[s->xlen] = '\0';
    if (write_mem(tid, word[aw[0]] & (abi ? 0xFFFFFFFFUL : ~0UL), out, s->xlen + 1) < 0)
        return BAIL;
    return answer(tid, regs, (long)s->xlen + 1);
}

/* realpath() of the preloaded library (uvm_preload.c): readlinkat() on
 * REALPATH_FD32, for a process that could not answer it from the table
 * itself (it maps the table too). */
static int realpath_call(struct fast *f, int tid, struct user_regs_struct *regs, int abi,
                         const struct t_io *io, const char *path, size_t len)
{
    const unsigned long *word = (const unsigned long *)regs;
    const int *aw = ARG_WORD[abi];
    char out[2 * SHORT_PATH], full[SHORT_PATH];
    int missing_fd;
    if (path[0] != '/') { /* a relative name (ld's "-lgcc") */
        len = from_cwd(f, tid, path, len, full);
        if (!len)
            return BAIL;
        path = full;
    }
    size_t cap = word[aw[3]] & 0xFFFFFFFFUL;
    long n = t_realpath(f->t, io, path, len, out, cap < sizeof(out) ? cap : sizeof(out), &missing_fd);
    if (n == 0 || (missing_fd >= 0 && !may_anchor(f, tid)))
        return BAIL;
    if (n < 0)
        return answer(tid, regs, n);
    if (write_mem(tid, word[aw[2]] & (abi ? 0xFFFFFFFFUL : ~0UL), out, (size_t)n) < 0)
        return BAIL;
    f->counts.rewritten++;
    return answer(tid, regs, n);
}

static int enter(struct fast *f, int tid)
{
    struct user_regs_struct regs;
    unsigned long *word = (unsigned long *)&regs;
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0)
        return BAIL;
    int abi = regs.cs == 0x23;
    if (!abi && regs.rip < 0x100000000UL) {
        unsigned long msg = 1;
        if (ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg) < 0 || msg == 1)
            return BAIL; /* int $0x80 from 64-bit code: Python refuses it */
    }
    unsigned long nr = regs.orig_rax;
    if (nr >= FAST_MAX_NR)
        return BAIL;
    const struct fast_row *row = &f->rows[abi][nr];
    if (row->kind == FAST_NONE)
        return BAIL;
    if (row->kind == FAST_GETCWD)
        return getcwd_call(f, tid, &regs, abi);
    unsigned long mask = abi ? 0xFFFFFFFFUL : ~0UL;
    const int *aw = ARG_WORD[abi];
    unsigned long ptr = word[aw[row->path_i]] & mask;
    unsigned long sp = regs.rsp & mask;
    unsigned long top = sp - (abi ? 0 : RED_ZONE_64) - SCRATCH_GAP;
    char path[SHORT_PATH];
    ssize_t len;
    struct restart *rec = &f->recs[(unsigned)tid & (TIDS - 1)];
    if (ptr < top && ptr >= top - SCRATCH_WINDOW) {
        /* Our own copy, for a call restarted after a signal (the copy may
         * be overwritten by the signal frame): the guest's path again. */
        if (rec->tid != tid || rec->rip != regs.rip || rec->rsp != regs.rsp || rec->addr != ptr)
            return BAIL; /* Python's copy: Python knows */
        len = (ssize_t)rec->len;
        memcpy(path, rec->path, rec->len + 1);
    } else {
        len = read_path(tid, ptr, path);
        if (len < 0)
            return BAIL;
    }
    struct t_io io = {&tid, tracer_lstat, tracer_readlink};
    unsigned long flags = row->flags_i >= 0 ? word[aw[row->flags_i]] & mask : 0;
    if (row->kind == FAST_READLINK && row->dirfd_i >= 0 &&
        (word[aw[row->dirfd_i]] & 0xFFFFFFFFUL) == REALPATH_FD32)
        return realpath_call(f, tid, &regs, abi, &io, path, (size_t)len);
    if (len == 0) {
        /* fstat done as newfstatat(fd, "", AT_EMPTY_PATH) (glibc 2.33+),
         * statx alike: the descriptor itself, nothing to translate. */
        return row->kind == FAST_AT && row->dirfd_i >= 0 && (flags & AT_EMPTY_PATH) ? HANDLED : BAIL;
    }
    int follow = row->follow;
    unsigned long dirfd = row->dirfd_i >= 0 ? word[aw[row->dirfd_i]] & 0xFFFFFFFFUL : AT_FDCWD32;
    /* an open that writes or creates (O_WRONLY/O_RDWR, O_CREAT, O_TRUNC):
     * only in a directory where that is a plain translation (a bind, the
     * layer's own), named absolutely or from the cwd; O_TMPFILE never */
    int writing = row->kind == FAST_OPEN && (flags & (3 | 0100 | 01000));
    if (row->kind == FAST_OPEN) {
        if ((flags & 020000000) || (writing && path[0] != '/' && dirfd != AT_FDCWD32))
            return BAIL;
        follow = !(flags & O_NOFOLLOW);
    } else if (row->kind == FAST_AT) {
        if (flags & row->toggle)
            follow = !follow;
    } else if (row->kind == FAST_READLINK) {
        follow = 0;
    }
    if (row->kind == FAST_OPEN && !writing) {
        for (int i = 0; i < 2; i++) {
            /* the loader opens the preloaded library, by its name or with
             * the process's after '?' (dispatch.py's _named_library): the
             * kernel gets the name alone */
            size_t n = strlen(f->passthrough[i]);
            if (!n || strncmp(path, f->passthrough[i], n) != 0)
                continue;
            if (path[n] == '\0')
                return HANDLED;
            if (path[n] != '?')
                continue;
            unsigned long addr = (top - n - 1) & ~15UL;
            if (write_mem(tid, addr, f->passthrough[i], n + 1) < 0)
                return BAIL;
            word[aw[row->path_i]] = addr;
            return ptrace(PTRACE_SETREGS, tid, 0, &regs) < 0 ? BAIL : HANDLED;
        }
    }
    int setregs = 0;
    const char *whole = path; /* the path from the guest's / */
    size_t whole_len = (size_t)len;
    char joined[SHORT_PATH];
    if (path[0] != '/' && dirfd == AT_FDCWD32 && (writing || memchr(path, '/', (size_t)len))) {
        /* below the cwd, several names deep or written to: as the whole path */
        whole_len = from_cwd(f, tid, path, (size_t)len, joined);
        if (!whole_len)
            return BAIL;
        whole = joined;
    }
    if (whole[0] == '/') {
        struct t_answer ans;
        t_absolute(f->t, &io, whole, whole_len, row->kind, follow, 0, &ans);
        if (ans.action == T_ENOENT)
            return may_anchor(f, tid) ? answer(tid, &regs, -ENOENT) : BAIL;
        if (ans.action != T_HOST || (writing && !ans.writes) || !may_anchor(f, tid))
            return BAIL;
        char host[SHORT_PATH + 64];
        int n = snprintf(host, sizeof(host), "%s%d/%s", f->t->prefix, ans.fd, ans.name);
        if (n <= 0 || (size_t)n >= sizeof(host))
            return BAIL;
        unsigned long addr = (top - (unsigned long)n - 1) & ~15UL;
        if (write_mem(tid, addr, host, (size_t)n + 1) < 0)
            return BAIL;
        word[aw[row->path_i]] = addr;
        rec->tid = tid;
        rec->rip = regs.rip;
        rec->rsp = regs.rsp;
        rec->addr = addr;
        rec->len = (size_t)len;
        memcpy(rec->path, path, (size_t)len + 1);
        setregs = 1;
        f->counts.rewritten++;
    } else {
        /* One plain name, looked up by the kernel from the guest's own cwd
         * or descriptor: no rewrite. */
        struct t_dir scratch;
        const struct t_dir *start = f->t->relative_ok ? NULL : start_dir(f, tid, dirfd, &scratch);
        if (!t_relative_ok(f->t, &io, path, (size_t)len, (long)dirfd, start, row->kind, follow))
            return BAIL;
    }
    if (follow) {
        /* The final component was checked: the kernel must not follow a
         * symlink raced into its place. */
        if (row->kind == FAST_OPEN) {
            word[aw[row->flags_i]] = flags | O_NOFOLLOW;
            setregs = 1;
        } else if (row->kind == FAST_AT && row->flags_i >= 0 && row->toggle) {
            word[aw[row->flags_i]] = flags | (unsigned long)row->toggle;
            setregs = 1;
        } else if (row->kind == FAST_PATH && row->nofollow_nr >= 0) {
            regs.orig_rax = (unsigned long)row->nofollow_nr;
            setregs = 1;
        }
    }
    if (setregs && ptrace(PTRACE_SETREGS, tid, 0, &regs) < 0)
        return BAIL;
    return HANDLED;
}

/* A stop other than a seccomp one, of a known tracee, that needs no
 * decision: a child's birth, a first or resuming stop (PTRACE_EVENT_STOP
 * with SIGTRAP), a signal to pass on unchanged.  0 when Python must see
 * it; else the signal to resume with, plus one. */
static int settle_event(struct fast *f, int tid, int st)
{
    int sig = (st >> 8) & 0xFF, event = (st >> 16) & 0xFF;
    switch (event) {
    case PTRACE_EVENT_FORK:
    case PTRACE_EVENT_VFORK:
    case PTRACE_EVENT_CLONE:
        return born(f, tid, event) == HANDLED ? 1 : 0;
    case PTRACE_EVENT_EXEC:
        return exec_seen(f, tid) == HANDLED ? 1 : 0;
    case PTRACE_EVENT_STOP:
        return sig == SIGTRAP && known_as(f, tid) ? 1 : 0;
    case 0:
        /* a syscall-exit stop (SIGTRAP|0x80) is Python's: it asked for it */
        return sig != (SIGTRAP | 0x80) && known_as(f, tid) ? sig + 1 : 0;
    default:
        return 0;
    }
}

int fast_wait(struct fast *f, int *tid, int *status)
{
    for (;;) {
        int st = 0;
        pid_t pid = waitpid(-1, &st, __WALL);
        if (pid < 0)
            return -errno;
        if (WIFSTOPPED(st)) {
            if ((st >> 8) == (SIGTRAP | PTRACE_EVENT_SECCOMP_STOP)) {
                if (enter(f, pid) == HANDLED) {
                    f->counts.handled++;
                    ptrace(PTRACE_CONT, pid, 0, 0); /* ESRCH: its exit comes next */
                    continue;
                }
            } else {
                int resume = settle_event(f, pid, st);
                if (resume) {
                    f->counts.events++;
                    ptrace(PTRACE_CONT, pid, 0, (void *)(long)(resume - 1));
                    continue;
                }
            }
        }
        *tid = pid;
        *status = st;
        return f->births_used;
    }
}
