/* uvm_preload.c: realpath() in one request to the tracer.
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

char *realpath(const char *path, char *resolved);
char *canonicalize_file_name(const char *path);
char *__realpath_chk(const char *path, char *resolved, size_t resolvedlen);

static long ask_tracer(const char *path, char *buf, long size)
{
    long ret;
#if defined(__x86_64__)
    register long r10 __asm__("r10") = size;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(267L), "D"((long)UVM_REALPATH_FD), "S"(path), "d"(buf), "r"(r10)
                     : "rcx", "r11", "memory");
#elif defined(__i386__)
    long args[4] = {UVM_REALPATH_FD, (long)path, (long)buf, size};
    __asm__ volatile("push %%ebx\n\t"
                     "movl 0(%1), %%ebx\n\t"
                     "movl 4(%1), %%ecx\n\t"
                     "movl 8(%1), %%edx\n\t"
                     "movl 12(%1), %%esi\n\t"
                     "int $0x80\n\t"
                     "pop %%ebx"
                     : "=a"(ret)
                     : "D"(args), "0"(305L)
                     : "ecx", "edx", "esi", "memory");
#else
#error "uvm_preload.c: x86_64 or i386 only"
#endif
    return ret;
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
