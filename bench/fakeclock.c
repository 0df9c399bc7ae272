/* A wall clock moved forward for one process, for bench/soak.py: CLOCK_REALTIME (and
 * gettimeofday, time) read FAKECLOCK_OFFSET_NS nanoseconds ahead; every other clock, sleep and
 * timed wait is left alone. libfaketime fakes more than the wall clock and breaks Python's
 * time.sleep and timed lock waits in that mode. Built by bench/soak.py:
 *     gcc -shared -fPIC -O2 -o fakeclock.so fakeclock.c -ldl
 * With FAKECLOCK_OFFSET_FILE (8 bytes: the offset in nanoseconds, native order) instead, the
 * offset is read from that file at every call, so several processes (a server and its
 * clients, bench/locks.py) share one clock that the controller moves forward.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile long long *shared = 0;
static int shared_tried = 0;

static long long offset_ns(void) {
    static long long offset = -1;
    if (!shared_tried) {
        shared_tried = 1;
        const char *path = getenv("FAKECLOCK_OFFSET_FILE");
        if (path) {
            int fd = open(path, O_RDONLY);
            if (fd >= 0) {
                void *map = mmap(0, sizeof(long long), PROT_READ, MAP_SHARED, fd, 0);
                close(fd);
                if (map != MAP_FAILED) shared = (volatile long long *)map;
            }
        }
    }
    if (shared) return *shared > 0 ? *shared : 0;
    if (offset < 0) {
        const char *text = getenv("FAKECLOCK_OFFSET_NS");
        offset = text ? atoll(text) : 0;
        if (offset < 0) offset = 0;
    }
    return offset;
}

static void shift(struct timespec *ts) {
    long long ns = (long long)ts->tv_nsec + offset_ns() % 1000000000LL;
    ts->tv_sec += offset_ns() / 1000000000LL + ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int done = real(clock, ts);
    if (done == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) shift(ts);
    return done;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int done = clock_gettime(CLOCK_REALTIME, &ts);
    if (done == 0 && tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    (void)tz;
    return done;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
