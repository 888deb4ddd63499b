/* One system call in a loop, timed: the cost of a tracer stop under uvm.
 * Built static by bench_stops.py (and dynamic, for the libc-* kinds, which
 * the preloaded library serves); usage: stops KIND COUNT. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    const char *kind = argv[1];
    long n = atol(argv[2]);
    struct stat st;
    int fd = open("/etc/hostname", O_RDONLY);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (!strcmp(kind, "getpid"))  /* not traced: the baseline */
            syscall(SYS_getpid);
        else if (!strcmp(kind, "fstat"))  /* glibc's fstat: a stop, no rewrite */
            syscall(SYS_newfstatat, fd, "", &st, AT_EMPTY_PATH);
        else if (!strcmp(kind, "lstat"))  /* a stop and a rewrite */
            syscall(SYS_newfstatat, AT_FDCWD, "/etc/hostname", &st, AT_SYMLINK_NOFOLLOW);
        else if (!strcmp(kind, "stat"))  /* a rewrite and the final symlink check */
            syscall(SYS_newfstatat, AT_FDCWD, "/etc/hostname", &st, 0);
        else if (!strcmp(kind, "libc-stat"))  /* glibc's stat(), or the library's */
            stat("/etc/hostname", &st);
        else if (!strcmp(kind, "libc-open"))
            close(open("/etc/hostname", O_RDONLY));
        else
            return 2;
    }
    printf("%.3f\n", (now() - t0) / (double)n * 1e6);
    return 0;
}
