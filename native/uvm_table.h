/* uvm_table.h: the published directories, and the lookup both sides share.
 *
 * Python's namespace resolves guest directories; the tracer publishes each
 * (its guest path as written, and the tracer's descriptor of its host
 * directory) in this table.  Two readers replay what Python did for paths
 * in those directories, for read-only calls only:
 *
 * - the tracer's C wait loop (uvm_fastpath.c), at a seccomp stop;
 * - the library preloaded into guest programs (uvm_preload.c), before the
 *   call, so that there is no stop at all.  It maps the table read-only
 *   (the tracer keeps it in a memfd) and makes the translated call through
 *   the filter's gate (a per-run key in an unused argument register).
 *
 * One writer (the tracer's thread), any number of readers in other
 * processes: a sequence count, odd while the table is being written, lets a
 * reader retry a lookup that overlapped a write; every offset read is
 * bounds-checked, so a torn read is a miss, never a fault.  ``generation``
 * counts the clears: the tracer closes a cleared descriptor only at the
 * second clear after it (anchors.py), so a reader whose generation moved by
 * less than two has used a descriptor that still named its directory.
 *
 * Fixed-width fields only: 32- and 64-bit readers see the same layout.
 */

#ifndef UVM_TABLE_H
#define UVM_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define T_MAGIC 0x31656c6261746d75ULL /* "umtable1" */
#define T_SHORT_PATH 256              /* longer paths are not served */
#define T_SLOTS 8192                  /* published heads (power of two) */
#define T_DIRS 8192                   /* directories by identity (power of two) */
#define T_ARENA (1 << 19)             /* bytes of their names */
#define T_NAMES 1024                  /* reserved last components, NUL-separated */

/* what a slot is: the values of uvm.sandbox.namespace */
#define T_PLAIN 0
#define T_FILLED 2  /* a complete CernVM-FS shadow directory */
#define T_PARTIAL 3 /* one still being filled */
#define T_MISSING 4 /* a head whose first missing directory is known */
#define T_CWD 5     /* a cwd's host path, and its guest path */
#define T_LAYERED 6 /* a copied-up layer directory: only the names it lacks */

/* what a call is (uvm_fastpath.h's rows use the same numbers) */
#define T_KIND_AT 1
#define T_KIND_PATH 2
#define T_KIND_OPEN 3
#define T_KIND_READLINK 4

struct t_slot {
    uint64_t hash; /* 0: empty */
    uint32_t off, len;
    int32_t fd;
    uint32_t host_len;
    int32_t filled;
    uint32_t xoff, xlen; /* the missing name, the guest cwd or path, a target */
    uint32_t writes;     /* a create or write open in it is a translation only */
};

struct t_dir {
    uint64_t dev, ino; /* ino 0: empty */
    int32_t fd, filled;
};

struct table {
    uint64_t magic;
    uint64_t key;        /* the filter's gate (seccomp.py): none while 0 */
    uint32_t seq;        /* odd while being written */
    uint32_t generation; /* clears so far */
    int32_t relative_ok; /* plain names below any cwd are the kernel's */
    uint32_t used, dirs_used, arena_used, names_len, prefix_len;
    char prefix[48]; /* "/proc/<tracer>/fd/" */
    char names[T_NAMES];
    struct t_slot slots[T_SLOTS];
    struct t_dir dirs[T_DIRS];
    char arena[T_ARENA];
};

_Static_assert(sizeof(struct t_slot) == 40 && sizeof(struct t_dir) == 24, "t_slot layout");
_Static_assert(offsetof(struct table, slots) == 1120, "table layout");

/* The metadata the lookup needs of one entry. */
struct t_stat {
    unsigned mode;
    int64_t size, blocks;
};

/* How a reader looks at an entry of a published directory: by the
 * tracer's descriptor ``fd``, or (fd -1) by ``name`` relative to the
 * guest's own ``dirfd``.  0 or -errno. */
struct t_io {
    void *ctx;
    int (*lstat)(void *ctx, int fd, long dirfd, const char *name, struct t_stat *st);
    long (*readlink)(void *ctx, int fd, const char *name, char *buf, size_t size);
};

/* What a lookup found. */
#define T_BAIL 0   /* the tracer's Python must see the call */
#define T_HOST 1   /* call on prefix + fd + "/" + name instead */
#define T_AS_IS 2  /* the guest's own relative name is right */
#define T_ENOENT 3 /* fails with ENOENT, nothing to ask the kernel */

struct t_answer {
    int action;
    int fd;
    int trusted; /* T_HOST: the final name was not checked (t_absolute) */
    int writes;  /* T_HOST: in a directory whose slot says writes are plain */
    char name[T_SHORT_PATH];
};

#define T_S_IFMT 0170000
#define T_S_IFDIR 0040000
#define T_S_IFREG 0100000
#define T_S_IFLNK 0120000
#define T_ENOENT_ERR 2

static inline int t_memeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static inline const char *t_memchr(const char *s, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == c)
            return s + i;
    return NULL;
}

static inline size_t t_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static inline uint64_t t_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ? h : 1;
}

static inline int t_in_arena(uint32_t off, uint32_t len)
{
    return off <= T_ARENA && len <= T_ARENA - off;
}

/* The slot of ``key`` or the empty slot where it would go; NULL when a
 * reader's probe found neither (a torn read). */
static inline const struct t_slot *t_find(const struct table *t, const char *key, size_t len)
{
    uint64_t h = t_hash(key, len);
    for (uint32_t i = (uint32_t)h & (T_SLOTS - 1), n = 0; n < T_SLOTS; i = (i + 1) & (T_SLOTS - 1), n++) {
        const struct t_slot *s = &t->slots[i];
        if (!s->hash)
            return s;
        if (s->hash == h && s->len == len && t_in_arena(s->off, s->len) &&
            t_memeq(t->arena + s->off, key, len))
            return s;
    }
    return NULL;
}

/* The slot of ``key`` if it is published. */
static inline const struct t_slot *t_lookup(const struct table *t, const char *key, size_t len)
{
    const struct t_slot *s = t_find(t, key, len);
    return s && s->hash && t_in_arena(s->xoff, s->xlen) && s->xlen < T_SHORT_PATH ? s : NULL;
}

/* The directory known by identity, or NULL. */
static inline const struct t_dir *t_find_dir(const struct table *t, uint64_t dev, uint64_t ino)
{
    uint64_t h = (ino * 0x9E3779B97F4A7C15ULL) ^ dev;
    for (uint32_t i = (uint32_t)(h >> 17) & (T_DIRS - 1), n = 0; n < T_DIRS; i = (i + 1) & (T_DIRS - 1), n++) {
        const struct t_dir *d = &t->dirs[i];
        if (!d->ino || (d->ino == ino && d->dev == dev))
            return d;
    }
    return NULL;
}

static inline int t_reserved(const struct table *t, const char *name, size_t len)
{
    size_t end = t->names_len < T_NAMES ? t->names_len : T_NAMES;
    for (size_t i = 0; i < end;) {
        size_t n = 0;
        while (i + n < end && t->names[i + n])
            n++;
        if (n == len && t_memeq(t->names + i, name, len))
            return 1;
        i += n + 1;
    }
    return 0;
}

static inline int t_dot_or_dotdot(const char *name, size_t len)
{
    return name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.'));
}

/* May the call go ahead on entry ``name`` of a published directory?
 * Symlinks to follow are walked by Python in the guest's view; in a
 * CernVM-FS shadow directory, subdirectories (completed on stat or open)
 * and files without their content yet (fetched on open) go to Python too,
 * and a missing name is absent from the revision once the directory is
 * complete (while it is partial, Python may have to make it).  In a
 * copied-up layer directory, which holds every name of the merged view,
 * only a missing name is settled (the kernel says ENOENT there too). */
static inline int t_entry_ok(const struct t_io *io, int fd, long dirfd, int filled,
                             const char *name, int kind, int follow)
{
    struct t_stat st = {0, 0, 0};
    if (filled == T_LAYERED) /* an entry may be a placeholder for the root's */
        return io->lstat(io->ctx, fd, dirfd, name, &st) == -T_ENOENT_ERR;
    if (filled != T_PLAIN) {
        int err = io->lstat(io->ctx, fd, dirfd, name, &st);
        if (err < 0)
            return err == -T_ENOENT_ERR && filled == T_FILLED;
        unsigned type = st.mode & T_S_IFMT;
        if (type == T_S_IFDIR || (type == T_S_IFLNK && follow))
            return 0;
        return !(kind == T_KIND_OPEN && type == T_S_IFREG && st.size > 0 && st.blocks == 0);
    }
    return !follow || io->lstat(io->ctx, fd, dirfd, name, &st) < 0 ||
           (st.mode & T_S_IFMT) != T_S_IFLNK;
}

/* A final symlink whose target is a plain name in the same directory
 * (libz.so.1 -> libz.so.1.2.13: every shared library opened by soname) is
 * followed as Python would, up to a few hops: ``name`` becomes the target.
 * 0 when it is anything else (Python walks it). */
static inline int t_follow_in_dir(const struct table *t, const struct t_io *io, int fd, char *name,
                                  size_t cap)
{
    for (int hops = 0; hops < 8; hops++) {
        struct t_stat st = {0, 0, 0};
        if (io->lstat(io->ctx, fd, -1, name, &st) < 0 || (st.mode & T_S_IFMT) != T_S_IFLNK)
            return 1;
        char target[T_SHORT_PATH];
        long n = io->readlink(io->ctx, fd, name, target, sizeof(target) - 1);
        if (n <= 0 || (size_t)n >= cap || t_memchr(target, '/', (size_t)n) ||
            t_dot_or_dotdot(target, (size_t)n) || t_reserved(t, target, (size_t)n))
            return 0;
        for (long i = 0; i < n; i++)
            name[i] = target[i];
        name[n] = '\0';
    }
    return 0;
}

static inline void t_copy(char *out, const char *in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = in[i];
    out[n] = '\0';
}

/* An absolute ``path`` (``len`` bytes, < T_SHORT_PATH) of a read-only call
 * of ``kind`` that follows a final symlink if ``follow``.  For T_ENOENT,
 * ``out->fd`` and ``out->name`` are the missing name the answer rests on,
 * which the caller has just seen absent (a tracee that cannot reach the
 * tracer's descriptors is the caller's business).
 *
 * ``trusting``: in a plain directory, the final name is not checked for a
 * symlink to follow; the caller makes the call without following and
 * looks again (not trusting) if the kernel met a symlink (``out->trusted``
 * says it must): one call instead of two where each costs a walk. */
static inline void t_absolute(const struct table *t, const struct t_io *io, const char *path,
                              size_t len, int kind, int follow, int trusting,
                              struct t_answer *out)
{
    out->action = T_BAIL;
    out->trusted = 0;
    out->writes = 0;
    if (len < 1 || len >= T_SHORT_PATH || path[0] != '/' ||
        (len >= 5 && t_memeq(path, "/proc", 5)))
        return;
    size_t head_len = len - 1;
    while (path[head_len] != '/')
        head_len--;
    const char *last = path + head_len + 1;
    size_t last_len = len - head_len - 1;
    const struct t_slot *s = t_lookup(t, path, head_len);
    if (s && s->filled == T_MISSING) {
        /* ENOENT while its first missing name is still absent (anything
         * there now, even a symlink: Python) */
        struct t_stat st = {0, 0, 0};
        t_copy(out->name, t->arena + s->xoff, s->xlen);
        if (io->lstat(io->ctx, s->fd, -1, out->name, &st) == -T_ENOENT_ERR) {
            out->fd = s->fd;
            out->action = T_ENOENT;
        }
        return;
    }
    int ok;
    if (len == 1) {
        /* "/" itself, published as an exact path when it is plain */
        s = t_lookup(t, "\001/", 2);
        if (!s)
            return;
        t_copy(out->name, ".", 1);
        ok = 1;
    } else if (last_len == 0 || (last_len == 1 && last[0] == '.')) {
        /* "dir/" or "dir/.": the published directory itself ("dir/."
         * looks "." up in it, which needs search permission, "dir/" not) */
        if (!s || (s->filled != T_PLAIN && s->filled != T_FILLED))
            return;
        t_copy(out->name, ".", last_len);
        ok = 1;
    } else if (last_len == 2 && last[0] == '.' && last[1] == '.') {
        return;
    } else {
        /* A name a bind may sit on is served only as an exact path. */
        t_copy(out->name, last, last_len);
        ok = s && !t_reserved(t, last, last_len);
        if (ok && trusting && follow && s->filled == T_PLAIN)
            out->trusted = 1;
        else
            ok = ok && (!follow || t_follow_in_dir(t, io, s->fd, out->name, sizeof(out->name))) &&
                 t_entry_ok(io, s->fd, -1, s->filled, out->name, kind, follow);
    }
    if (!ok) {
        /* The path itself may be known: an entry of a directory whose
         * other entries map elsewhere, a complete shadow directory, or a
         * symlink (followed only) to a file elsewhere. */
        char key[T_SHORT_PATH + 1];
        key[0] = '\001';
        t_copy(key + 1, path, len);
        s = t_lookup(t, key, len + 1);
        if (!s || (s->xlen && !follow))
            return;
        if (s->xlen)
            t_copy(out->name, t->arena + s->xoff, s->xlen);
        else
            t_copy(out->name, last, last_len);
        if (!t_entry_ok(io, s->fd, -1, s->filled, out->name, kind, follow))
            return;
    }
    if (s->host_len + 1 + t_strlen(out->name) >= 4096)
        return;
    out->fd = s->fd;
    out->writes = s->writes == 1;
    out->action = T_HOST;
}

/* The directory a relative name starts from, found by its identity and,
 * if the table does not know it, by its parent's (``..``): a directory
 * below a published plain one is plain too (nothing below a directory
 * still wholly the root's, wholly the layer's or a bind's is copied up or
 * filled on demand, and a mount point is no child of this kind), and is
 * looked at through the guest's own descriptor (``fd`` -1 in ``scratch``).
 * NULL when neither is known. */
static inline const struct t_dir *t_start_dir(const struct table *t, uint64_t dev, uint64_t ino,
                                              int parent_known, uint64_t pdev, uint64_t pino,
                                              struct t_dir *scratch)
{
    const struct t_dir *d = t_find_dir(t, dev, ino);
    if (d && d->ino)
        return d;
    if (!parent_known || pdev != dev) /* not across a mount: /proc, a bind */
        return NULL;
    const struct t_dir *p = t_find_dir(t, pdev, pino);
    if (!p || !p->ino || p->filled != T_PLAIN)
        return NULL;
    scratch->dev = dev;
    scratch->ino = ino;
    scratch->fd = -1;
    scratch->filled = T_PLAIN;
    return scratch;
}

/* One plain ``name`` relative to the guest's own ``dirfd`` (AT_FDCWD or a
 * descriptor), whose directory ``start`` is (NULL: not known,
 * t_start_dir): may the kernel look it up as it is?  Yes when that
 * directory is a plain one (any directory with no layer or CernVM-FS tree,
 * ``relative_ok``; else one Python published, or below one). */
static inline int t_relative_ok(const struct table *t, const struct t_io *io, const char *name,
                                size_t len, long dirfd, const struct t_dir *start, int kind,
                                int follow)
{
    if (len == 0 || len >= T_SHORT_PATH || t_memchr(name, '/', len) ||
        t_dot_or_dotdot(name, len) || t_reserved(t, name, len))
        return 0;
    if (t->relative_ok && kind != T_KIND_READLINK) { /* (a cwd in /proc: its links) */
        struct t_stat st = {0, 0, 0};
        return !(follow && io->lstat(io->ctx, -1, dirfd, name, &st) == 0 &&
                 (st.mode & T_S_IFMT) == T_S_IFLNK);
    }
    return start && start->ino &&
           t_entry_ok(io, start->fd, start->fd < 0 ? dirfd : -1, start->filled, name, kind, follow);
}

/* ``path`` (absolute) without its "." components and repeated slashes,
 * and with each ".." applied to the canonical guest path of the directory
 * before it, which must be published: as glibc's realpath() goes up,
 * from the directory with its symlinks followed, and without searching
 * it.  Into ``out`` (T_SHORT_PATH bytes); the new length, or 0 when a
 * directory before a ".." is not published.  (gcc asks for the realpath
 * of "12/../../../x86_64-linux-gnu/crti.o" and the like at every link.) */
static inline size_t t_clean(const struct table *t, const char *path, size_t len, char *out)
{
    size_t n = 0; /* the path so far, without its final slash: "" is "/" */
    for (size_t i = 0; i < len;) {
        while (i < len && path[i] == '/')
            i++;
        const char *name = path + i;
        size_t name_len = 0;
        while (i < len && path[i] != '/')
            i++, name_len++;
        if (name_len == 0 || (name_len == 1 && name[0] == '.'))
            continue;
        if (name_len == 2 && name[0] == '.' && name[1] == '.') {
            if (n == 0)
                continue; /* "/.." is "/" */
            const struct t_slot *s = t_lookup(t, out, n);
            if (!s || !s->xlen ||
                (s->filled != T_PLAIN && s->filled != T_FILLED && s->filled != T_LAYERED))
                return 0;
            const char *canonical = t->arena + s->xoff;
            n = s->xlen;
            while (n > 0 && canonical[n - 1] != '/')
                n--;
            n = n > 0 ? n - 1 : 0;
            for (size_t j = 0; j < n; j++)
                out[j] = canonical[j];
            continue;
        }
        if (n + 1 + name_len >= T_SHORT_PATH)
            return 0;
        out[n++] = '/';
        for (size_t j = 0; j < name_len; j++)
            out[n++] = name[j];
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
    return n;
}

/* realpath() of an absolute ``path`` whose directory Python
 * published with its canonical guest path, when the last name is no bind
 * point and no symlink (or one to a plain name in the same directory): the
 * length written to ``out`` (at most ``cap``), -ENOENT, -ENAMETOOLONG, or
 * 0 when Python must answer. */
static inline long t_realpath(const struct table *t, const struct t_io *io, const char *path,
                              size_t len, char *out, size_t cap, int *missing_fd)
{
    *missing_fd = -1;
    /* a final "/" or "/." asks for a directory: Python checks */
    if (len < 2 || len >= T_SHORT_PATH || path[0] != '/' || path[len - 1] == '/' ||
        (path[len - 1] == '.' && path[len - 2] == '/'))
        return 0;
    char clean[T_SHORT_PATH];
    for (size_t i = 0; i + 1 < len; i++)
        if (path[i] == '/' && (path[i + 1] == '/' || path[i + 1] == '.')) {
            len = t_clean(t, path, len, clean);
            path = clean;
            break;
        }
    if (len < 2 || (len >= 5 && t_memeq(path, "/proc", 5)))
        return 0;
    size_t head_len = len - 1;
    while (path[head_len] != '/')
        head_len--;
    const char *last = path + head_len + 1;
    size_t last_len = len - head_len - 1;
    if (t_reserved(t, last, last_len))
        return 0;
    const struct t_slot *s = t_lookup(t, path, head_len);
    struct t_stat st = {0, 0, 0};
    char name[T_SHORT_PATH];
    if (s && s->filled == T_MISSING) {
        /* an include path that is not there */
        t_copy(name, t->arena + s->xoff, s->xlen);
        if (io->lstat(io->ctx, s->fd, -1, name, &st) != -T_ENOENT_ERR)
            return 0;
        *missing_fd = s->fd;
        return -T_ENOENT_ERR;
    }
    if (!s || !s->xlen ||
        (s->filled != T_PLAIN && s->filled != T_FILLED && s->filled != T_LAYERED))
        return 0;
    t_copy(name, last, last_len);
    int err = io->lstat(io->ctx, s->fd, -1, name, &st);
    if (s->filled == T_LAYERED && err != -T_ENOENT_ERR)
        return 0; /* perhaps a placeholder */
    if (err == 0 && (st.mode & T_S_IFMT) == T_S_IFLNK) {
        /* a symlink to a plain name in the same directory (gcc -> gcc-12) */
        if (!t_follow_in_dir(t, io, s->fd, name, sizeof(name)))
            return 0;
        err = io->lstat(io->ctx, s->fd, -1, name, &st);
    }
    if (err == -T_ENOENT_ERR)
        return -T_ENOENT_ERR;
    if (err < 0 || (st.mode & T_S_IFMT) == T_S_IFLNK)
        return 0;
    last = name;
    last_len = t_strlen(name);
    size_t n = s->xlen == 1 ? 0 : s->xlen; /* the canonical directory; "/" adds nothing */
    if (n + 1 + last_len >= cap)
        return -36; /* ENAMETOOLONG */
    for (size_t i = 0; i < n; i++)
        out[i] = t->arena[s->xoff + i];
    out[n] = '/';
    for (size_t i = 0; i < last_len; i++)
        out[n + 1 + i] = last[i];
    return (long)(n + 1 + last_len);
}

#endif
