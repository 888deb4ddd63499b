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

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define HANDLED 1
#define BAIL 0

#define SHORT_PATH 256  /* longer paths go to Python */
#define SLOTS 8192      /* published directories (power of two) */
#define ARENA (1 << 19) /* bytes of their names */
#define TIDS 2048       /* per-thread records (power of two) */
#define KNOWN 8192      /* live tracees (power of two) */
#define BIRTHS 256      /* births not yet taken by Python */
#define RED_ZONE_64 128
#define SCRATCH_GAP 64
#define SCRATCH_WINDOW 8192
#define AT_FDCWD32 0xFFFFFF9CUL
#define REALPATH_FD32 0xFFFF8A8AUL /* uvm_preload.c: readlinkat() on it is realpath() */
#define PTRACE_EVENT_SECCOMP_STOP (PTRACE_EVENT_SECCOMP << 8)

struct slot {
    uint64_t hash; /* 0: empty */
    uint32_t off;
    uint32_t len;
    int fd;
    uint32_t host_len;
    int filled;
    uint32_t xoff; /* the missing name, or the guest cwd, in the arena */
    uint32_t xlen;
};

struct dslot {
    unsigned long dev, ino; /* ino 0: empty */
    int fd;
    int filled;
};

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
    struct slot slots[SLOTS];
    uint32_t used;
    struct dslot dirs[SLOTS];
    uint32_t dirs_used;
    char *arena;
    uint32_t arena_used;
    char names[1024]; /* NUL-separated */
    size_t names_len;
    char prefix[48];  /* "/proc/<tracer>/fd/" */
    size_t prefix_len;
    int check_caps;
    int relative_ok;
    struct restart recs[TIDS];
    struct cap caps[TIDS];
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

static uint64_t hash_of(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ? h : 1;
}

struct fast *fast_new(int tracer_pid, int check_caps, int relative_ok)
{
    struct fast *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->arena = malloc(ARENA);
    if (!f->arena) {
        free(f);
        return NULL;
    }
    f->prefix_len = (size_t)snprintf(f->prefix, sizeof(f->prefix), "/proc/%d/fd/", tracer_pid);
    f->check_caps = check_caps;
    f->relative_ok = relative_ok;
    return f;
}

void fast_free(struct fast *f)
{
    if (f) {
        free(f->arena);
        free(f);
    }
}

void fast_set_row(struct fast *f, int abi, int nr, const struct fast_row *row)
{
    if ((abi == 0 || abi == 1) && nr >= 0 && nr < FAST_MAX_NR)
        f->rows[abi][nr] = *row;
}

int fast_add_name(struct fast *f, const char *name, size_t len)
{
    if (f->names_len + len + 1 > sizeof(f->names))
        return -1;
    memcpy(f->names + f->names_len, name, len);
    f->names_len += len;
    f->names[f->names_len++] = '\0';
    return 0;
}

static int reserved_name(const struct fast *f, const char *name, size_t len)
{
    for (size_t i = 0; i < f->names_len;) {
        size_t n = strlen(f->names + i);
        if (n == len && memcmp(f->names + i, name, len) == 0)
            return 1;
        i += n + 1;
    }
    return 0;
}

static int publish_extra(struct fast *f, const char *key, size_t len, int fd, size_t host_len,
                         int kind, const char *extra, size_t extra_len);

int fast_publish_exact(struct fast *f, const char *path, size_t len, int fd, size_t host_len,
                       int filled, const char *target, size_t target_len)
{
    char key[SHORT_PATH + 1];
    if (len >= SHORT_PATH || memchr(target, '/', target_len))
        return -1;
    key[0] = '\001'; /* never the first byte of a directory's key */
    memcpy(key + 1, path, len);
    return publish_extra(f, key, len + 1, fd, host_len, filled, target, target_len);
}

void fast_clear(struct fast *f)
{
    if (f->used || f->arena_used) {
        memset(f->slots, 0, sizeof(f->slots));
        f->used = 0;
        f->arena_used = 0;
    }
    if (f->dirs_used) {
        memset(f->dirs, 0, sizeof(f->dirs));
        f->dirs_used = 0;
    }
}

static struct dslot *find_dir(struct fast *f, unsigned long dev, unsigned long ino)
{
    uint64_t h = (ino * 0x9E3779B97F4A7C15ULL) ^ dev;
    for (uint32_t i = (uint32_t)(h >> 17) & (SLOTS - 1);; i = (i + 1) & (SLOTS - 1)) {
        struct dslot *d = &f->dirs[i];
        if (!d->ino || (d->ino == ino && d->dev == dev))
            return d;
    }
}

int fast_publish_dir(struct fast *f, unsigned long dev, unsigned long ino, int fd,
                     size_t host_len, int filled)
{
    if (!ino || host_len >= 4096)
        return -1;
    if (f->dirs_used >= SLOTS / 2)
        fast_clear(f);
    struct dslot *d = find_dir(f, dev, ino);
    if (!d->ino) {
        d->dev = dev;
        d->ino = ino;
        f->dirs_used++;
    }
    d->fd = fd;
    d->filled = filled;
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

void fast_forget(struct fast *f, int tid)
{
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

static struct slot *find(struct fast *f, const char *head, size_t len, uint64_t h)
{
    for (uint32_t i = (uint32_t)h & (SLOTS - 1);; i = (i + 1) & (SLOTS - 1)) {
        struct slot *s = &f->slots[i];
        if (!s->hash)
            return s;
        if (s->hash == h && s->len == len && memcmp(f->arena + s->off, head, len) == 0)
            return s;
    }
}

int fast_publish_canonical(struct fast *f, const char *head, size_t len, int fd,
                           size_t host_len, int filled, const char *guest, size_t guest_len)
{
    return publish_extra(f, head, len, fd, host_len, filled, guest, guest_len);
}

int fast_publish(struct fast *f, const char *head, size_t len, int fd, size_t host_len,
                 int filled)
{
    if (len >= SHORT_PATH)
        return -1;
    if (f->used >= SLOTS / 2 || f->arena_used + len > ARENA)
        fast_clear(f);
    uint64_t h = hash_of(head, len);
    struct slot *s = find(f, head, len, h);
    if (!s->hash) {
        memcpy(f->arena + f->arena_used, head, len);
        s->off = f->arena_used;
        s->len = (uint32_t)len;
        s->hash = h;
        f->arena_used += (uint32_t)len;
        f->used++;
    }
    s->fd = fd;
    s->host_len = (uint32_t)host_len;
    s->filled = filled;
    s->xlen = 0;
    return 0;
}

/* Publish ``key`` with the string ``extra`` beside it. */
static int publish_extra(struct fast *f, const char *key, size_t len, int fd, size_t host_len,
                         int kind, const char *extra, size_t extra_len)
{
    if (len >= SHORT_PATH || extra_len >= SHORT_PATH)
        return -1;
    if (f->arena_used + len + extra_len > ARENA)
        fast_clear(f);
    if (fast_publish(f, key, len, fd, host_len, kind) < 0)
        return -1;
    struct slot *s = find(f, key, len, hash_of(key, len));
    memcpy(f->arena + f->arena_used, extra, extra_len);
    s->xoff = f->arena_used;
    s->xlen = (uint32_t)extra_len;
    f->arena_used += (uint32_t)extra_len;
    return 0;
}

int fast_publish_missing(struct fast *f, const char *head, size_t len, int fd,
                         const char *name, size_t name_len)
{
    if (name_len == 0 || memchr(name, '/', name_len))
        return -1;
    return publish_extra(f, head, len, fd, 0, FAST_MISSING, name, name_len);
}

int fast_publish_cwd(struct fast *f, const char *host, size_t len, const char *guest,
                     size_t guest_len)
{
    char key[SHORT_PATH + 1];
    if (len >= SHORT_PATH || guest_len == 0)
        return -1;
    key[0] = '\002'; /* apart from directories and exact paths */
    memcpy(key + 1, host, len);
    return publish_extra(f, key, len + 1, -1, 0, FAST_CWD, guest, guest_len);
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

/* Is ``name`` (in directory ``dirfd`` of the tracee, or its cwd) a symlink? */
static int relative_is_link(int tid, unsigned long dirfd, const char *name)
{
    char where[SHORT_PATH + 64];
    struct stat st;
    if (dirfd == AT_FDCWD32)
        snprintf(where, sizeof(where), "/proc/%d/cwd/%s", tid, name);
    else
        snprintf(where, sizeof(where), "/proc/%d/fd/%lu/%s", tid, dirfd, name);
    return lstat(where, &st) == 0 && S_ISLNK(st.st_mode);
}

/* May the call go ahead on entry ``name`` of a published directory?
 * Symlinks to follow are walked by Python in the guest's view; in a
 * CernVM-FS shadow directory, subdirectories (completed on stat or open) and
 * files without their content yet (fetched on open) go to Python too, and a
 * missing name is absent from the revision once the directory is complete
 * (while it is partial, Python may have to make it). */
static int entry_ok(int dirfd, int filled, const char *name, int kind, int follow)
{
    struct stat st;
    if (filled != FAST_PLAIN) {
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return errno == ENOENT && filled == FAST_FILLED;
        if (S_ISDIR(st.st_mode) || (S_ISLNK(st.st_mode) && follow))
            return 0;
        return !(kind == FAST_OPEN && S_ISREG(st.st_mode) && st.st_size > 0 && st.st_blocks == 0);
    }
    return !(follow && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode));
}

/* A final symlink whose target is a plain name in the same directory
 * (libz.so.1 -> libz.so.1.2.13: every shared library opened by soname) is
 * followed here as Python would, up to a few hops: ``name`` becomes the
 * target.  0 when it is anything else (Python walks it). */
static int follow_in_dir(struct fast *f, int dirfd, char *name, size_t cap)
{
    for (int hops = 0; hops < 8; hops++) {
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISLNK(st.st_mode))
            return 1;
        char target[SHORT_PATH];
        ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
        if (n <= 0 || (size_t)n >= cap || memchr(target, '/', (size_t)n) ||
            (target[0] == '.' && (n == 1 || (n == 2 && target[1] == '.'))) ||
            reserved_name(f, target, (size_t)n))
            return 0;
        memcpy(name, target, (size_t)n);
        name[n] = '\0';
    }
    return 0;
}

/* The published directory a relative name starts from: the guest's cwd or
 * descriptor, if it is one of them. */
static struct dslot *start_dir(struct fast *f, int tid, unsigned long dirfd)
{
    char where[64];
    struct stat st;
    if (dirfd == AT_FDCWD32)
        snprintf(where, sizeof(where), "/proc/%d/cwd", tid);
    else
        snprintf(where, sizeof(where), "/proc/%d/fd/%lu", tid, dirfd);
    if (stat(where, &st) < 0 || !S_ISDIR(st.st_mode))
        return NULL;
    struct dslot *d = find_dir(f, (unsigned long)st.st_dev, (unsigned long)st.st_ino);
    return d->ino ? d : NULL;
}

/* Skip the call: the tracee gets ``ret`` as its result. */
static int answer(int tid, struct user_regs_struct *regs, long ret)
{
    regs->orig_rax = ~0UL;
    regs->rax = (unsigned long)ret;
    return ptrace(PTRACE_SETREGS, tid, 0, regs) < 0 ? BAIL : HANDLED;
}

/* A path below a head published missing: ENOENT while its first missing
 * name is still absent (anything there now, even a symlink: Python). */
static int missing(struct fast *f, int tid, struct user_regs_struct *regs, const struct slot *s)
{
    char name[SHORT_PATH];
    struct stat st;
    memcpy(name, f->arena + s->xoff, s->xlen);
    name[s->xlen] = '\0';
    if (!may_anchor(f, tid) || fstatat(s->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
        return BAIL;
    return answer(tid, regs, -ENOENT);
}

/* getcwd(buf, size) for a cwd Python has answered before. */
static int getcwd_call(struct fast *f, int tid, struct user_regs_struct *regs, int abi)
{
    const unsigned long *word = (const unsigned long *)regs;
    const int *aw = ARG_WORD[abi];
    char where[64], key[SHORT_PATH];
    snprintf(where, sizeof(where), "/proc/%d/cwd", tid);
    ssize_t n = readlink(where, key + 1, sizeof(key) - 2);
    if (n <= 0 || n >= (ssize_t)sizeof(key) - 2)
        return BAIL;
    key[0] = '\002';
    struct slot *s = find(f, key, (size_t)n + 1, hash_of(key, (size_t)n + 1));
    if (!s->hash || s->filled != FAST_CWD)
        return BAIL;
    if (s->xlen + 1 > (word[aw[1]] & 0xFFFFFFFFUL))
        return answer(tid, regs, -ERANGE);
    char out[SHORT_PATH];
    memcpy(out, f->arena + s->xoff, s->xlen);
    out[s->xlen] = '\0';
    if (write_mem(tid, word[aw[0]] & (abi ? 0xFFFFFFFFUL : ~0UL), out, s->xlen + 1) < 0)
        return BAIL;
    return answer(tid, regs, (long)s->xlen + 1);
}

/* realpath() of the preloaded library (uvm_preload.c): readlinkat() on
 * REALPATH_FD32.  Answered here for an absolute, clean path whose
 * directory Python published with its canonical guest path, when the last
 * name is no symlink and no bind point; everything else is Python's. */
static int realpath_call(struct fast *f, int tid, struct user_regs_struct *regs, int abi,
                         const char *path, size_t len)
{
    const unsigned long *word = (const unsigned long *)regs;
    const int *aw = ARG_WORD[abi];
    unsigned long mask = abi ? 0xFFFFFFFFUL : ~0UL;
    if (path[0] != '/' || len < 2 || path[len - 1] == '/' || strstr(path, "//") ||
        strstr(path, "/./") || strstr(path, "/../") || strncmp(path, "/proc", 5) == 0)
        return BAIL;
    const char *slash = strrchr(path, '/');
    const char *last = slash + 1;
    size_t last_len = (size_t)(path + len - last), head_len = (size_t)(slash - path);
    if ((last_len == 1 && last[0] == '.') || (last_len == 2 && last[0] == '.' && last[1] == '.') ||
        reserved_name(f, last, last_len))
        return BAIL;
    struct slot *s = find(f, path, head_len, hash_of(path, head_len));
    if (s->hash && s->filled == FAST_MISSING)
        return missing(f, tid, regs, s); /* an include path that is not there */
    if (!s->hash || !s->xlen || (s->filled != FAST_PLAIN && s->filled != FAST_FILLED))
        return BAIL;
    struct stat st;
    if (fstatat(s->fd, last, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? answer(tid, regs, -ENOENT) : BAIL;
    if (S_ISLNK(st.st_mode))
        return BAIL;
    char out[2 * SHORT_PATH];
    size_t n = s->xlen == 1 ? 0 : s->xlen; /* the canonical directory; "/" adds nothing */
    memcpy(out, f->arena + s->xoff, n);
    out[n] = '/';
    memcpy(out + n + 1, last, last_len);
    n += 1 + last_len;
    if (n >= (word[aw[3]] & 0xFFFFFFFFUL))
        return answer(tid, regs, -ENAMETOOLONG);
    if (write_mem(tid, word[aw[2]] & mask, out, n) < 0)
        return BAIL;
    f->counts.rewritten++;
    return answer(tid, regs, (long)n);
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
    unsigned long flags = row->flags_i >= 0 ? word[aw[row->flags_i]] & mask : 0;
    if (row->kind == FAST_READLINK && row->dirfd_i >= 0 &&
        (word[aw[row->dirfd_i]] & 0xFFFFFFFFUL) == REALPATH_FD32)
        return realpath_call(f, tid, &regs, abi, path, (size_t)len);
    if (len == 0) {
        /* fstat done as newfstatat(fd, "", AT_EMPTY_PATH) (glibc 2.33+),
         * statx alike: the descriptor itself, nothing to translate. */
        return row->kind == FAST_AT && row->dirfd_i >= 0 && (flags & AT_EMPTY_PATH) ? HANDLED : BAIL;
    }
    int follow = row->follow;
    if (row->kind == FAST_OPEN) {
        /* read-only, nothing created: O_WRONLY/O_RDWR, O_CREAT, O_TRUNC, O_TMPFILE */
        if (flags & (3 | 0100 | 01000 | 020000000))
            return BAIL;
        follow = !(flags & O_NOFOLLOW);
    } else if (row->kind == FAST_AT) {
        if (flags & row->toggle)
            follow = !follow;
    } else if (row->kind == FAST_READLINK) {
        follow = 0;
    }
    int setregs = 0;
    if (path[0] == '/') {
        char *slash = strrchr(path, '/');
        const char *last = slash + 1;
        size_t last_len = (size_t)(path + len - last);
        size_t head_len = (size_t)(slash - path);
        if (strncmp(path, "/proc", 5) == 0)
            return BAIL;
        struct slot *s = find(f, path, head_len, hash_of(path, head_len));
        if (s->hash && s->filled == FAST_MISSING)
            return missing(f, tid, &regs, s);
        char name[SHORT_PATH];
        int ok;
        if (len == 1) {
            /* "/" itself, published as an exact path when it is plain */
            s = find(f, "\001/", 2, hash_of("\001/", 2));
            if (!s->hash)
                return BAIL;
            memcpy(name, ".", 2);
            ok = 1;
        } else if (last_len == 0 || (last_len == 1 && last[0] == '.')) {
            /* "dir/" or "dir/.": the published directory itself */
            if (!s->hash || (s->filled != FAST_PLAIN && s->filled != FAST_FILLED))
                return BAIL;
            memcpy(name, ".", 2);
            ok = 1;
        } else if (last_len == 2 && last[0] == '.' && last[1] == '.') {
            return BAIL;
        } else {
            /* A name a bind may sit on is served only as an exact path. */
            memcpy(name, last, last_len + 1);
            ok = s->hash && !reserved_name(f, last, last_len) &&
                 (!follow || follow_in_dir(f, s->fd, name, sizeof(name))) &&
                 entry_ok(s->fd, s->filled, name, row->kind, follow);
        }
        if (!ok) {
            /* The path itself may be known: an entry of a directory whose
             * other entries map elsewhere, a complete shadow directory, or
             * a symlink (followed only) to a file elsewhere. */
            char key[SHORT_PATH + 1];
            key[0] = '\001';
            memcpy(key + 1, path, (size_t)len);
            s = find(f, key, (size_t)len + 1, hash_of(key, (size_t)len + 1));
            if (!s->hash || (s->xlen && !follow))
                return BAIL;
            if (s->xlen) {
                memcpy(name, f->arena + s->xoff, s->xlen);
                name[s->xlen] = '\0';
            } else {
                memcpy(name, last, last_len + 1);
            }
            if (!entry_ok(s->fd, s->filled, name, row->kind, follow))
                return BAIL;
        }
        if (s->host_len + 1 + strlen(name) >= 4096 || !may_anchor(f, tid))
            return BAIL;
        char host[SHORT_PATH + 64];
        int n = snprintf(host, sizeof(host), "%s%d/%s", f->prefix, s->fd, name);
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
         * or descriptor: no rewrite, when that directory is a plain one
         * (any directory without a layer or CernVM-FS tree; else one that
         * Python published). */
        if (row->kind == FAST_READLINK || strchr(path, '/'))
            return BAIL;
        if ((path[0] == '.' && (len == 1 || (len == 2 && path[1] == '.'))) ||
            reserved_name(f, path, (size_t)len))
            return BAIL;
        unsigned long dirfd = row->dirfd_i >= 0 ? word[aw[row->dirfd_i]] & 0xFFFFFFFFUL : AT_FDCWD32;
        if (f->relative_ok) {
            if (follow && relative_is_link(tid, dirfd, path))
                return BAIL;
        } else {
            struct dslot *d = start_dir(f, tid, dirfd);
            if (!d || !entry_ok(d->fd, d->filled, path, row->kind, follow))
                return BAIL;
        }
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
