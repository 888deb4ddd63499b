/* uvm_preload.c: realpath() in one request to the tracer, fstat() in none.
 *
 * glibc's realpath() calls readlink() on every component of its argument
 * (gcc does so for every header it opens), and under uvm each of those is a
 * tracer stop.  The tracer's resolver knows the guest's canonical path of
 * any path already, so this library, which the tracer preloads into the
 * programs that call realpath() (ld.so --preload), asks it once: a
 * readlinkat() on UVM_REALPATH_FD, a descriptor number no process has (the
 * kernel would say EBADF), answered by the tracer with the canonical path,
 * or -errno as realpath() would fail.
 *
 * glibc 2.33 and later make fstat() a newfstatat(fd, "", AT_EMPTY_PATH),
 * which the tracer must stop on (the filter cannot tell an empty path from
 * another); the plain fstat system call, which takes no path, does not stop.
 *
 * Nothing here decides anything: the tracer still translates every call.
 * The library has no libc of its own (glibc versions differ between
 * guests); errno and malloc are the guest's, found when the loader binds
 * the symbols.
 */

#include <stddef.h>

#define UVM_REALPATH_FD (-0x7576)
#define PATH_MAX_ 4096
#define ERRNO_EINVAL 22
#define ERRNO_ENOENT 2
#define ERRNO_ENOMEM 12

extern int *__errno_location(void);
extern void *malloc(size_t size);

#if defined(__x86_64__)
#define NR_READLINKAT 267L
#define NR_FSTAT 5L  /* struct stat as glibc's */
#elif defined(__i386__)
#define NR_READLINKAT 305L
#define NR_FSTAT 197L /* fstat64: struct stat64 as glibc's */
#else
#error "uvm_preload.c: x86_64 or i386 only"
#endif

char *realpath(const char *path, char *resolved);
char *canonicalize_file_name(const char *path);
char *__realpath_chk(const char *path, char *resolved, size_t resolvedlen);
int fstat64(int fd, void *buf);
#if defined(__x86_64__)
int fstat(int fd, void *buf);
#endif

/* A system call of up to four arguments: the result, or -errno. */
static long sys4(long nr, long a, long b, long c, long d)
{
    long ret;
#if defined(__x86_64__)
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
#else
    long args[4] = {a, b, c, d};
    __asm__ volatile("push %%ebx\n\t"
                     "movl 0(%1), %%ebx\n\t"
                     "movl 4(%1), %%ecx\n\t"
                     "movl 8(%1), %%edx\n\t"
                     "movl 12(%1), %%esi\n\t"
                     "int $0x80\n\t"
                     "pop %%ebx"
                     : "=a"(ret)
                     : "D"(args), "0"(nr)
                     : "ecx", "edx", "esi", "memory");
#endif
    return ret;
}

static long ask_tracer(const char *path, char *buf, long size)
{
    return sys4(NR_READLINKAT, UVM_REALPATH_FD, (long)path, (long)buf, size);
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
    n = ask_tracer(path, buf, PATH_MAX_);
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

int fstat64(int fd, void *buf)
{
    long ret = sys4(NR_FSTAT, fd, (long)buf, 0, 0);
    if (ret < 0) {
        *__errno_location() = (int)-ret;
        return -1;
    }
    return 0;
}

#if defined(__x86_64__)
/* (i386's fstat() fills the 32-bit struct stat: glibc's own, converted.) */
int fstat(int fd, void *buf)
{
    return fstat64(fd, buf);
}
#endif
