/* uvm_preload.c: read-only path calls served in the guest, with no stop.
 *
 * Every path call of a guest stops it so that the tracer can translate the
 * path: two process switches and a few system calls of the tracer, 20-50
 * µs on the machines uvm runs on, against 1 µs natively.  Most are
 * read-only calls in directories the tracer has resolved before (a
 * compiler's headers, an interpreter's modules).  The tracer preloads this
 * library (ld.so --preload) into the programs that import these calls, and
 * it serves them itself:
 *
 * - it maps the tracer's table of published directories read-only
 *   (uvm_table.h: the same table and the same lookup as the tracer's C);
 * - for a path in one of them it makes the translated call itself, naming
 *   the tracer's descriptor of the host directory, with the run's key in
 *   the sixth argument register, which the seccomp filter lets through for
 *   read-only calls only (openat without write or create flags,
 *   newfstatat, faccessat, readlinkat; seccomp.py);
 * - anything else (a path Python has not resolved, a symlink to walk, a
 *   write) is the plain system call, which the tracer handles as always.
 *
 * The tracer is still the only one that decides: the library replays its
 * answers.  The key is not a secret from a guest that looks for it in its
 * own memory; such a guest can read (never write) outside its root, which
 * docs/sandbox.md states.
 *
 * It also answers realpath() from the table (else in one request to the
 * tracer: a readlinkat() on UVM_REALPATH_FD, a descriptor number no process
 * has), and fstat() with the plain fstat system call, which takes no path
 * (glibc 2.33+ makes fstat a newfstatat(fd, "", AT_EMPTY_PATH), which the
 * filter cannot tell from a path call).
 *
 * No libc of its own (guests have their own glibc versions); errno and
 * malloc are the guest's, bound by the loader.  The tracer writes the table's
 * name and the key into ``uvm_config`` of its copy of this file.
 */

#define _GNU_SOURCE /* dl_iterate_phdr */
#include <link.h>
#include <stdarg.h>
#include <stddef.h>

#include "uvm_table.h"

#define UVM_REALPATH_FD (-0x7576)
#define PATH_MAX_ 4096
#define AT_FDCWD_ (-100)
#define AT_SYMLINK_NOFOLLOW_ 0x100
#define AT_EMPTY_PATH_ 0x1000
#define O_CREAT_ 0100
#define O_NOFOLLOW_ 0400000
#define O_CLOEXEC_ 02000000
#define O_TMPFILE_ 020000000
#define O_PATH_ 010000000
#define O_WRITES_ (3 | O_CREAT_ | 01000 | O_TMPFILE_) /* uvm_fastpath.c reads the same */
#define ERRNO_EINVAL 22
#define ERRNO_ENOENT 2
#define ERRNO_ENOMEM 12

extern int *__errno_location(void);
extern void *malloc(size_t size);
extern void *fdopen(int fd, const char *mode);
extern void *_IO_fopen(const char *path, const char *mode); /* glibc's fopen */

#if defined(__x86_64__)
#define NR_OPENAT 257L
#define NR_FSTATAT 262L /* newfstatat: struct stat as glibc's */
#define NR_READLINKAT 267L
#define NR_FACCESSAT 269L
#define NR_STATX 332L
#define NR_GETXATTR 191L
#define NR_LGETXATTR 192L
#define NR_FSTAT 5L
#define NR_CLOSE 3L
#define NR_MMAP 9L
#define NR_PRCTL 157L
#define O_LARGEFILE_ 0 /* implied */
#define STAT_INO 8
#define STAT_MODE 24
#define STAT_SIZE 48
#define STAT_BLOCKS 64
#define STAT_BYTES 144
#elif defined(__i386__)
#define NR_OPENAT 295L
#define NR_FSTATAT 300L /* fstatat64: struct stat64 as glibc's */
#define NR_READLINKAT 305L
#define NR_FACCESSAT 307L
#define NR_STATX 383L
#define NR_GETXATTR 229L
#define NR_LGETXATTR 230L
#define NR_FSTAT 197L /* fstat64 */
#define NR_CLOSE 6L
#define NR_MMAP 192L /* mmap2 */
#define NR_PRCTL 172L
#define O_LARGEFILE_ 0100000
#define STAT_INO 88
#define STAT_MODE 16
#define STAT_SIZE 44
#define STAT_BLOCKS 56
#define STAT_BYTES 96
#else
#error "uvm_preload.c: x86_64 or i386 only"
#endif

typedef uint64_t __attribute__((may_alias)) u64_alias;
typedef uint32_t __attribute__((may_alias)) u32_alias;
typedef uint16_t __attribute__((may_alias)) u16_alias;

union uvm_key {
    unsigned long long k64;
    uint32_t k32[2]; /* i386: the low half */
};

/* Written by the tracer into its copy of this file (uvm/sandbox/preload.py). */
static volatile const struct {
    char magic[16];
    union uvm_key key;
    char table[64];
} uvm_config = {"uvm-preload-cfg1", {0}, ""};

static const struct table *table;

/* A system call of up to five arguments ``a``: the result, or -errno.
 * ``key`` goes into the sixth argument register for the call only,
 * straight from memory: the run's key for the filter's gate (gated()), or
 * zero, so that no plain call carries it by accident (sys4()).  (i386:
 * through __kernel_vsyscall, as glibc does; int $0x80 costs several times
 * more on some kernels.) */
static long call5(long nr, const long a[5], const volatile union uvm_key *key)
{
    long ret;
#if defined(__x86_64__)
    register long r10 __asm__("r10") = a[3];
    register long r8 __asm__("r8") = a[4];
    __asm__ volatile("movq %[key], %%r9\n\t"
                     "syscall\n\t"
                     "xorl %%r9d, %%r9d"
                     : "=a"(ret)
                     : "0"(nr), "D"(a[0]), "S"(a[1]), "d"(a[2]), "r"(r10), "r"(r8),
                       [key] "m"(key->k64)
                     : "rcx", "r11", "r9", "memory");
#else
    const long *p = a;
    __asm__ volatile("push %%ebp\n\t"
                     "push %%ebx\n\t"
                     "movl %[key], %%ebp\n\t"
                     "movl 0(%1), %%ebx\n\t"
                     "movl 4(%1), %%ecx\n\t"
                     "movl 8(%1), %%edx\n\t"
                     "movl 12(%1), %%esi\n\t"
                     "movl 16(%1), %%edi\n\t"
                     "call *%%gs:0x10\n\t"
                     "pop %%ebx\n\t"
                     "pop %%ebp"
                     : "=a"(ret), "+D"(p)
                     : "0"(nr), [key] "m"(key->k32[0])
                     : "ecx", "edx", "esi", "memory");
#endif
    return ret;
}

static const volatile union uvm_key no_key;

static long sys4(long nr, long a, long b, long c, long d)
{
    const long args[5] = {a, b, c, d, 0};
    return call5(nr, args, &no_key);
}

static long gated(long nr, long a, long b, long c, long d)
{
    const long args[5] = {a, b, c, d, 0};
    return call5(nr, args, &uvm_config.key);
}

static long fail(long ret)
{
    if (ret < 0) {
        *__errno_location() = (int)-ret;
        return -1;
    }
    return ret;
}

/* Map the tracer's table: its name and the key are in uvm_config. */
__attribute__((constructor)) static void map_table(void)
{
    char name[sizeof(uvm_config.table)];
    for (size_t i = 0; i < sizeof(name); i++)
        name[i] = uvm_config.table[i];
    name[sizeof(name) - 1] = '\0';
    if (name[0] != '/' || !uvm_config.key.k64)
        return;
    long fd = gated(NR_OPENAT, AT_FDCWD_, (long)name, O_CLOEXEC_, 0);
    if (fd < 0)
        return; /* this process cannot reach the tracer's descriptors */
    long args[6] = {0, (long)sizeof(struct table), 1 /* PROT_READ */, 1 /* MAP_SHARED */, fd, 0};
    long addr;
#if defined(__x86_64__)
    register long r10 __asm__("r10") = args[3];
    register long r8 __asm__("r8") = args[4];
    register long r9 __asm__("r9") = args[5];
    __asm__ volatile("syscall"
                     : "=a"(addr)
                     : "0"(NR_MMAP), "D"(args[0]), "S"(args[1]), "d"(args[2]), "r"(r10), "r"(r8),
                       "r"(r9)
                     : "rcx", "r11", "memory");
#else
    long *p = args;
    __asm__ volatile("push %%ebp\n\t"
                     "push %%ebx\n\t"
                     "movl 0(%1), %%ebx\n\t"
                     "movl 4(%1), %%ecx\n\t"
                     "movl 8(%1), %%edx\n\t"
                     "movl 12(%1), %%esi\n\t"
                     "movl 20(%1), %%ebp\n\t"
                     "movl 16(%1), %%edi\n\t"
                     "call *%%gs:0x10\n\t"
                     "pop %%ebx\n\t"
                     "pop %%ebp"
                     : "=a"(addr), "+D"(p)
                     : "0"(NR_MMAP)
                     : "ecx", "edx", "esi", "memory");
#endif
    sys4(NR_CLOSE, fd, 0, 0, 0);
    if ((unsigned long)addr < (unsigned long)-4095L)
        table = (const struct table *)addr;
}

/* -- the process's name ------------------------------------------------------ */

#define PR_SET_NAME_ 15

static void name_process(void);

/* dl_iterate_phdr's callback: the name this library was loaded by. */
static int own_name(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    ElfW(Addr) me = (ElfW(Addr))&name_process;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && me - info->dlpi_addr - ph->p_vaddr < ph->p_memsz) {
            *(const char **)data = info->dlpi_name;
            return 1;
        }
    }
    return 0;
}

/* The kernel named the process after the loader it executed; the tracer
 * put the name it would have had without uvm (the file name the guest
 * executed) after '?' in the name the loader preloaded this library by
 * (dispatch.py's _named_library).  top, ps, pgrep and killall read it. */
__attribute__((constructor)) static void name_process(void)
{
    const char *name = NULL;
    dl_iterate_phdr(own_name, &name);
    while (name && *name && *name != '?')
        name++;
    if (name && *name == '?' && name[1])
        sys4(NR_PRCTL, PR_SET_NAME_, (long)(name + 1), 0, 0);
}

/* -- the lookup's view of the tracer's directories -------------------------- */

/* "/proc/<tracer>/fd/<fd>/<name>" into ``out`` (T_SHORT_PATH + 64 bytes). */
static void host_name(int fd, const char *name, char *out)
{
    size_t n = table->prefix_len < sizeof(table->prefix) ? table->prefix_len : 0;
    char digits[12];
    int d = 0;
    unsigned v = (unsigned)fd;
    for (size_t i = 0; i < n; i++)
        out[i] = table->prefix[i];
    do
        digits[d++] = (char)('0' + v % 10);
    while ((v /= 10) > 0 && d < 11);
    while (d > 0)
        out[n++] = digits[--d];
    out[n++] = '/';
    for (size_t i = 0; name[i] && i < T_SHORT_PATH; i++)
        out[n++] = name[i];
    out[n] = '\0';
}

static int guest_lstat(void *ctx, int fd, long dirfd, const char *name, struct t_stat *st)
{
    char host[T_SHORT_PATH + 64];
    unsigned char buf[STAT_BYTES] __attribute__((aligned(8)));
    long r;
    (void)ctx;
    if (fd >= 0) {
        host_name(fd, name, host);
        r = gated(NR_FSTATAT, AT_FDCWD_, (long)host, (long)buf, AT_SYMLINK_NOFOLLOW_);
    } else {
        r = gated(NR_FSTATAT, dirfd, (long)name, (long)buf, AT_SYMLINK_NOFOLLOW_);
    }
    if (r != 0)
        return r < 0 ? (int)r : -5 /* EIO */;
    st->mode = *(u32_alias *)(buf + STAT_MODE);
    st->size = (int64_t) * (u64_alias *)(buf + STAT_SIZE);
    st->blocks = (int64_t) * (u64_alias *)(buf + STAT_BLOCKS);
    return 0;
}

static long guest_readlink(void *ctx, int fd, const char *name, char *buf, size_t size)
{
    char host[T_SHORT_PATH + 64];
    (void)ctx;
    host_name(fd, name, host);
    return gated(NR_READLINKAT, AT_FDCWD_, (long)host, (long)buf, (long)size);
}

static const struct t_io guest_io = {NULL, guest_lstat, guest_readlink};

/* -- serving a call ---------------------------------------------------------- */

/* Did an unchecked call without following find a symlink?  (Then it
 * opened or described the wrong thing: nothing was done with it.) */
static int met_symlink(long nr, long ret, const long a[5])
{
    if (nr == NR_OPENAT)
        return ret == -40; /* ELOOP */
    if (nr == NR_STATX) /* stx_mode, 16 bits at 0x1c */
        return ret == 0 && (*(u16_alias *)((char *)a[4] + 0x1c) & T_S_IFMT) == T_S_IFLNK;
    return nr == NR_FSTATAT && ret == 0 &&
           (*(u32_alias *)((char *)a[2] + STAT_MODE) & T_S_IFMT) == T_S_IFLNK;
}

/* One read-only call: ``nr`` with arguments ``given``, the path in
 * ``given[path_i]`` (1 for the *at calls, after their directory; 0 for
 * the xattr calls), of ``kind``, following a final symlink if ``follow``;
 * ``nofollow_i`` is the argument that takes ``nofollow`` to stop the
 * kernel following a name the lookup checked (or -1: none).  Served
 * through the gate when the table knows the path, else the plain call.
 * The result, or -errno. */
static long serve(long nr, const long given[5], int path_i, int kind, int follow, int nofollow_i,
                  long nofollow)
{
    const struct table *t = table;
    const char *path = (const char *)given[path_i];
    long dirfd = path_i ? given[0] : AT_FDCWD_;
    if (t == NULL || __atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != T_MAGIC || path == NULL)
        return call5(nr, given, &no_key);
    size_t len = 0;
    while (len < T_SHORT_PATH && path[len])
        len++;
    /* a call the kernel can be told not to follow is made first unchecked
     * (t_absolute's ``trusting``); O_PATH opens a symlink without ELOOP */
    int trusting = follow && nofollow_i >= 0 && !(nr == NR_OPENAT && (given[2] & O_PATH_));
    for (int tries = 0; tries < 3 && len < T_SHORT_PATH && len > 0; tries++) {
        uint32_t seq = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE);
        if (seq & 1)
            continue;
        uint32_t generation = t->generation;
        struct t_answer ans;
        char host[T_SHORT_PATH + 64];
        if (path[0] == '/') {
            t_absolute(t, &guest_io, path, len, kind, follow, trusting, &ans);
            if (ans.action == T_HOST)
                host_name(ans.fd, ans.name, host);
        } else {
            const struct t_dir *start = NULL;
            struct t_dir scratch;
            unsigned char buf[STAT_BYTES] __attribute__((aligned(8)));
            unsigned char up[STAT_BYTES] __attribute__((aligned(8)));
            if (!t->relative_ok &&
                gated(NR_FSTATAT, dirfd, (long)"", (long)buf, AT_EMPTY_PATH_) == 0) {
                uint64_t dev = *(u64_alias *)buf, ino = *(u64_alias *)(buf + STAT_INO);
                start = t_find_dir(t, dev, ino);
                if (!start || !start->ino) {
                    int known = gated(NR_FSTATAT, dirfd, (long)"..", (long)up,
                                      AT_SYMLINK_NOFOLLOW_) == 0;
                    start = t_start_dir(t, dev, ino, known, known ? *(u64_alias *)up : 0,
                                        known ? *(u64_alias *)(up + STAT_INO) : 0, &scratch);
                }
            }
            int ok = t_relative_ok(t, &guest_io, path, len, dirfd, start, kind, follow);
            ans.action = ok ? T_AS_IS : T_BAIL;
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&t->seq, __ATOMIC_RELAXED) != seq)
            continue;
        if (ans.action == T_BAIL)
            break;
        if (ans.action == T_ENOENT)
            return -ERRNO_ENOENT;
        long args[5] = {given[0], given[1], given[2], given[3], given[4]};
        if (ans.action == T_HOST) {
            if (path_i)
                args[0] = AT_FDCWD_;
            args[path_i] = (long)host;
        }
        if (follow && nofollow_i >= 0)
            args[nofollow_i] |= nofollow;
        /* the lookup checked that the final name is no symlink: getxattr
         * is made as lgetxattr, so that none raced into its place is followed */
        long ret = call5(nr == NR_GETXATTR ? NR_LGETXATTR : nr, args, &uvm_config.key);
        if (ans.action == T_HOST && ret == -13 /* EACCES */)
            break; /* perhaps this process may not reach the tracer's descriptors */
        if (ans.action == T_HOST && ans.trusted && met_symlink(nr, ret, args)) {
            trusting = 0; /* the final name is a symlink: look again, checking */
            continue;
        }
        if (__atomic_load_n(&t->generation, __ATOMIC_ACQUIRE) - generation < 2)
            return ret;
        /* two clears since the lookup: the descriptor may name another
         * directory now (anchors.py); ask the tracer */
        if (nr == NR_OPENAT && ret >= 0)
            sys4(NR_CLOSE, ret, 0, 0, 0);
        break;
    }
    return call5(nr, given, &no_key);
}

static long serve_open(long dirfd, const char *path, int flags, long mode)
{
    if (flags & O_WRITES_)
        return sys4(NR_OPENAT, dirfd, (long)path, flags, mode);
    const long a[5] = {dirfd, (long)path, flags, mode, 0};
    return serve(NR_OPENAT, a, 1, T_KIND_OPEN, !(flags & O_NOFOLLOW_), 2, O_NOFOLLOW_);
}

static long serve_stat(long dirfd, const char *path, void *buf, int flags)
{
    if (path != NULL && path[0] == '\0' && (flags & AT_EMPTY_PATH_))
        return gated(NR_FSTATAT, dirfd, (long)path, (long)buf, flags); /* the descriptor's own */
    const long a[5] = {dirfd, (long)path, (long)buf, flags, 0};
    return serve(NR_FSTATAT, a, 1, T_KIND_AT, !(flags & AT_SYMLINK_NOFOLLOW_), 3,
                 AT_SYMLINK_NOFOLLOW_);
}

/* The mode argument of open(): only with O_CREAT or O_TMPFILE. */
#define OPEN_MODE(flags, last)                                                                 \
    long mode = 0;                                                                             \
    if ((flags) & O_CREAT_ || ((flags) & O_TMPFILE_) == O_TMPFILE_) {                          \
        va_list ap;                                                                            \
        va_start(ap, last);                                                                    \
        mode = va_arg(ap, int);                                                                \
        va_end(ap);                                                                            \
    }

int open(const char *path, int flags, ...)
{
    OPEN_MODE(flags, flags)
    return (int)fail(serve_open(AT_FDCWD_, path, flags, mode));
}

int open64(const char *path, int flags, ...)
{
    OPEN_MODE(flags, flags)
    return (int)fail(serve_open(AT_FDCWD_, path, flags | O_LARGEFILE_, mode));
}

int openat(int dirfd, const char *path, int flags, ...)
{
    OPEN_MODE(flags, flags)
    return (int)fail(serve_open(dirfd, path, flags, mode));
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    OPEN_MODE(flags, flags)
    return (int)fail(serve_open(dirfd, path, flags | O_LARGEFILE_, mode));
}

/* _FORTIFY_SOURCE's checked forms (they have no mode). */
int __open_2(const char *path, int flags)
{
    return (int)fail(serve_open(AT_FDCWD_, path, flags, 0));
}

int __open64_2(const char *path, int flags)
{
    return (int)fail(serve_open(AT_FDCWD_, path, flags | O_LARGEFILE_, 0));
}

int __openat_2(int dirfd, const char *path, int flags)
{
    return (int)fail(serve_open(dirfd, path, flags, 0));
}

int __openat64_2(int dirfd, const char *path, int flags)
{
    return (int)fail(serve_open(dirfd, path, flags | O_LARGEFILE_, 0));
}

/* stat64 and friends fill the kernel's structure on both ABIs (i386's plain
 * stat() fills glibc's 32-bit one, converted: glibc keeps it). */
int fstatat64(int dirfd, const char *path, void *buf, int flags)
{
    return (int)fail(serve_stat(dirfd, path, buf, flags));
}

int stat64(const char *path, void *buf)
{
    return fstatat64(AT_FDCWD_, path, buf, 0);
}

int lstat64(const char *path, void *buf)
{
    return fstatat64(AT_FDCWD_, path, buf, AT_SYMLINK_NOFOLLOW_);
}

/* fopen() for reading: the open served here, then the guest's own
 * fdopen(); any other mode is glibc's own fopen (its writes and
 * creations are the tracer's anyway), exported as _IO_fopen. */
static int read_only_mode(const char *mode, int *flags)
{
    if (mode == NULL || mode[0] != 'r')
        return 0;
    for (const char *m = mode + 1; *m; m++) {
        if (*m == 'e')
            *flags |= O_CLOEXEC_;
        else if (*m != 'b' && *m != 'c' && *m != 'm')
            return 0; /* '+', 'x', ",ccs=": glibc's */
    }
    return 1;
}

static void *served_fopen(const char *path, const char *mode, int large)
{
    int flags = large ? O_LARGEFILE_ : 0;
    if (path == NULL || !read_only_mode(mode, &flags))
        return _IO_fopen(path, mode);
    long fd = serve_open(AT_FDCWD_, path, flags, 0);
    if (fd < 0) {
        *__errno_location() = (int)-fd;
        return NULL;
    }
    void *stream = fdopen((int)fd, mode);
    if (stream == NULL) {
        int err = *__errno_location();
        sys4(NR_CLOSE, fd, 0, 0, 0);
        *__errno_location() = err;
    }
    return stream;
}

void *fopen(const char *path, const char *mode)
{
    return served_fopen(path, mode, 0);
}

void *fopen64(const char *path, const char *mode)
{
    return served_fopen(path, mode, 1);
}

int access(const char *path, int mode)
{
    const long a[5] = {AT_FDCWD_, (long)path, mode, 0, 0};
    return (int)fail(serve(NR_FACCESSAT, a, 1, T_KIND_PATH, 1, -1, 0));
}

long readlinkat(int dirfd, const char *path, char *buf, size_t size)
{
    const long a[5] = {dirfd, (long)path, (long)buf, (long)size, 0};
    return fail(serve(NR_READLINKAT, a, 1, T_KIND_READLINK, 0, -1, 0));
}

/* statx() (ls, and glibc's own stat() of 32-bit programs built with 64-bit
 * time): the kernel's structure on both ABIs. */
int statx(int dirfd, const char *path, int flags, unsigned mask, void *buf)
{
    const long a[5] = {dirfd, (long)path, flags, (long)mask, (long)buf};
    if (path != NULL && path[0] == '\0' && (flags & AT_EMPTY_PATH_))
        return (int)fail(call5(NR_STATX, a, &uvm_config.key)); /* the descriptor's own */
    return (int)fail(serve(NR_STATX, a, 1, T_KIND_AT, !(flags & AT_SYMLINK_NOFOLLOW_), 2,
                           AT_SYMLINK_NOFOLLOW_));
}

/* ls -l asks for every file's ACL and security label. */
long getxattr(const char *path, const char *name, void *value, size_t size)
{
    const long a[5] = {(long)path, (long)name, (long)value, (long)size, 0};
    return fail(serve(NR_GETXATTR, a, 0, T_KIND_PATH, 1, -1, 0));
}

long lgetxattr(const char *path, const char *name, void *value, size_t size)
{
    const long a[5] = {(long)path, (long)name, (long)value, (long)size, 0};
    return fail(serve(NR_LGETXATTR, a, 0, T_KIND_PATH, 0, -1, 0));
}

long readlink(const char *path, char *buf, size_t size)
{
    return readlinkat(AT_FDCWD_, path, buf, size);
}

int fstat64(int fd, void *buf)
{
    return (int)fail(sys4(NR_FSTAT, fd, (long)buf, 0, 0));
}

#if defined(__x86_64__)
/* On x86_64 the plain names fill the same structure. */
int fstatat(int dirfd, const char *path, void *buf, int flags)
{
    return fstatat64(dirfd, path, buf, flags);
}

int stat(const char *path, void *buf)
{
    return fstatat64(AT_FDCWD_, path, buf, 0);
}

int lstat(const char *path, void *buf)
{
    return fstatat64(AT_FDCWD_, path, buf, AT_SYMLINK_NOFOLLOW_);
}

int fstat(int fd, void *buf)
{
    return fstat64(fd, buf);
}
#else
/* A 32-bit program built with 64-bit time (_TIME_BITS=64, as Debian's i386
 * coreutils and tar are) calls these; glibc makes them a statx() and
 * converts, as here.  Their structure: dev 0, ino 8, mode 16, nlink 20,
 * uid 24, gid 28, rdev 32, size 40, blksize 48, blocks 52, then three
 * {64-bit seconds, 32-bit nanoseconds, 4 bytes of padding} at 60, 76, 92;
 * 108 bytes. */
#define STATX_BASIC_STATS_ 0x7ffU

static uint64_t dev_of(const unsigned char *major_minor)
{
    uint64_t major = *(u32_alias *)major_minor, minor = *(u32_alias *)(major_minor + 4);
    return ((major & 0xfffff000ULL) << 32) | ((major & 0xfffULL) << 8) |
           ((minor & 0xffffff00ULL) << 12) | (minor & 0xffULL);
}

static void put_time(unsigned char *to, const unsigned char *statx_time)
{
    *(u64_alias *)to = *(u64_alias *)statx_time;
    *(u32_alias *)(to + 8) = *(u32_alias *)(statx_time + 8);
    *(u32_alias *)(to + 12) = 0;
}

int __fstatat64_time64(int dirfd, const char *path, void *buf, int flags)
{
    unsigned char sx[256] __attribute__((aligned(8)));
    unsigned char *st = buf;
    long r = statx(dirfd, path, flags, STATX_BASIC_STATS_, sx);
    if (r != 0)
        return (int)r; /* -1, errno set */
    *(u64_alias *)st = dev_of(sx + 136);
    *(u64_alias *)(st + 8) = *(u64_alias *)(sx + 32);
    *(u32_alias *)(st + 16) = *(u16_alias *)(sx + 28);
    *(u32_alias *)(st + 20) = *(u32_alias *)(sx + 16);
    *(u32_alias *)(st + 24) = *(u32_alias *)(sx + 20);
    *(u32_alias *)(st + 28) = *(u32_alias *)(sx + 24);
    *(u64_alias *)(st + 32) = dev_of(sx + 128);
    *(u64_alias *)(st + 40) = *(u64_alias *)(sx + 40);
    *(u32_alias *)(st + 48) = *(u32_alias *)(sx + 4);
    *(u64_alias *)(st + 52) = *(u64_alias *)(sx + 48);
    put_time(st + 60, sx + 64);  /* atime */
    put_time(st + 76, sx + 112); /* mtime */
    put_time(st + 92, sx + 96);  /* ctime */
    return 0;
}

int __stat64_time64(const char *path, void *buf)
{
    return __fstatat64_time64(AT_FDCWD_, path, buf, 0);
}

int __lstat64_time64(const char *path, void *buf)
{
    return __fstatat64_time64(AT_FDCWD_, path, buf, AT_SYMLINK_NOFOLLOW_);
}

int __fstat64_time64(int fd, void *buf)
{
    return __fstatat64_time64(fd, "", buf, AT_EMPTY_PATH_);
}
#endif

/* -- realpath() --------------------------------------------------------------- */

/* The canonical path into ``buf`` from the table, or from the tracer. */
static long canonical(const char *path, char *buf)
{
    const struct table *t = table;
    size_t len = 0;
    while (len < T_SHORT_PATH && path[len])
        len++;
    if (t != NULL && __atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) == T_MAGIC) {
        for (int tries = 0; tries < 3; tries++) {
            uint32_t seq = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE);
            if (seq & 1)
                continue;
            int missing_fd;
            long n = t_realpath(t, &guest_io, path, len, buf, PATH_MAX_, &missing_fd);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&t->seq, __ATOMIC_RELAXED) != seq)
                continue;
            if (n != 0)
                return n;
            break;
        }
    }
    return sys4(NR_READLINKAT, UVM_REALPATH_FD, (long)path, (long)buf, PATH_MAX_);
}

char *realpath(const char *path, char *resolved)
{
    char buf[PATH_MAX_];
    long n, i;

    if (path == NULL) {
        *__errno_location() = ERRNO_EINVAL;
        return NULL;
    }
    if (path[0] == '\0') {
        *__errno_location() = ERRNO_ENOENT;
        return NULL;
    }
    n = canonical(path, buf);
    if (n < 0) {
        *__errno_location() = (int)-n;
        return NULL;
    }
    if (resolved == NULL) {
        resolved = malloc((size_t)n + 1);
        if (resolved == NULL) {
            *__errno_location() = ERRNO_ENOMEM;
            return NULL;
        }
    }
    for (i = 0; i < n; i++)
        resolved[i] = buf[i];
    resolved[n] = '\0';
    return resolved;
}

char *canonicalize_file_name(const char *path)
{
    return realpath(path, NULL);
}

char *__realpath_chk(const char *path, char *resolved, size_t resolvedlen)
{
    (void)resolvedlen; /* PATH_MAX at least, or the program would not build */
    return realpath(path, resolved);
}
