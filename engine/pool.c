/* pool — see pool.h. Synchronisation is two futex words: `gen` (bumped to publish a job)
 * and `pending` (workers still running it). Spinning first keeps the wake-up latency of
 * back-to-back jobs at a few hundred nanoseconds; the futex makes idle free. */
#include "pool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* ~20-50 us of polling before sleeping: longer than the gaps inside a forward pass, far
 * shorter than the gap between two tokens of a slow client. */
enum { SPIN_ROUNDS = 1 << 14 };

typedef struct worker {
    pool *p;
    int ith;
    pthread_t thread;
} worker;

struct pool {
    int n;                       /* threads including the caller */
    worker *workers;             /* n - 1 */
    _Atomic uint32_t gen;        /* futex word: job generation */
    _Atomic uint32_t pending;    /* futex word: workers yet to finish the current job */
    atomic_bool stop;
    pool_fn fn;                  /* current job; written before gen is bumped */
    void *ctx;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* Waits until *addr != value: spins, then sleeps. */
static void wait_change(_Atomic uint32_t *addr, uint32_t value)
{
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        if (atomic_load_explicit(addr, memory_order_acquire) != value)
            return;
        cpu_relax();
    }
    while (atomic_load_explicit(addr, memory_order_acquire) == value)
        futex_wait(addr, value);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pool *p = w->p;
    uint32_t seen = 0; /* gen starts at 0 and only pool_run/pool_free bump it, so a worker
                        * that starts late still sees the first job */
    for (;;) {
        wait_change(&p->gen, seen);
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (atomic_load(&p->stop))
            return NULL;
        p->fn(p->ctx, w->ith, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1)
            futex_wake(&p->pending, 1);
    }
}

int pool_default_threads(void)
{
    /* count distinct (package, core) pairs; fall back to online CPUs */
    int cores = 0;
    char seen[1024] = {0};
    for (int cpu = 0; cpu < 1024; cpu++) {
        char path[96];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", cpu);
        FILE *f = fopen(path, "r");
        if (!f)
            break;
        int first = -1;
        if (fscanf(f, "%d", &first) == 1 && first >= 0 && first < 1024 && !seen[first]) {
            seen[first] = 1;
            cores++;
        }
        fclose(f);
    }
    if (cores > 0)
        return cores;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int pool_new(pool **out, int n_threads, err_info *ei)
{
    *out = NULL;
    if (n_threads <= 0)
        n_threads = pool_default_threads();
    if (n_threads > 256)
        return err_set(ei, -ERR_RANGE, "thread count %d is above 256", n_threads);
    pool *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(ei, -ENOMEM, "out of memory");
    p->n = n_threads;
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return err_set(ei, -ENOMEM, "out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker *w = &p->workers[i - 1];
        w->p = p;
        w->ith = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc) {
            p->n = i; /* join only the ones started */
            pool_free(p);
            return err_set(ei, -rc, "cannot start worker thread %d: %s", i, strerror(rc));
        }
    }
    *out = p;
    return 0;
}

void pool_free(pool *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen, p->n);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->workers[i - 1].thread, NULL);
    free(p->workers);
    free(p);
}

int pool_size(const pool *p) { return p->n; }

void pool_run(pool *p, pool_fn fn, void *ctx)
{
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_relaxed);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    futex_wake(&p->gen, p->n - 1);
    fn(ctx, 0, p->n);
    uint32_t left;
    while ((left = atomic_load_explicit(&p->pending, memory_order_acquire)) != 0)
        wait_change(&p->pending, left);
}

void pool_split(int n, int ith, int nth, int align, int *begin, int *end)
{
    if (align < 1)
        align = 1;
    int units = (n + align - 1) / align;
    int per = units / nth, extra = units % nth;
    int b = ith * per + (ith < extra ? ith : extra);
    int e = b + per + (ith < extra ? 1 : 0);
    *begin = b * align < n ? b * align : n;
    *end = e * align < n ? e * align : n;
}
