/* pool — see pool.h.
 *
 * A loop is published as: params (n, grain, fn, ctx) and a 64-bit claim word holding
 * (generation << 32 | next item). Threads claim chunks with a CAS on the claim word, so a
 * claim can only succeed for the generation whose params the thread read. To make that
 * airtight the owner first closes the previous generation (claim = next gen | CLOSED),
 * then writes the new params (release), then opens the claim word; a thread that read new
 * params while holding an old claim value then fails its CAS.
 * `gen` (32-bit futex word) wakes sleeping workers; `done` counts finished items. */
#include "pool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
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

enum {
    /* ~20-50 us of polling before a worker sleeps: longer than the gaps between the loops of
     * one forward pass, far shorter than the gap between two requests */
    SPIN_ROUNDS = 1 << 14,
    /* polls before the owner, waiting for another thread's last chunk, starts yielding */
    FINISH_SPIN = 1 << 10,
};
#define CLOSED 0xffffffffu

typedef struct worker {
    pool *p;
    int slot;
    pthread_t thread;
} worker;

struct pool {
    int n;                        /* threads including the owner */
    worker *workers;              /* n - 1 */
    _Atomic uint64_t claim;       /* gen << 32 | next unclaimed item (CLOSED between loops) */
    _Atomic uint32_t gen;         /* futex word: generation of the newest loop */
    _Atomic int done;             /* items finished in the current loop */
    _Atomic int sleepers;         /* workers in (or entering) futex_wait on gen */
    _Atomic int n_items, grain;   /* params of the current loop */
    _Atomic(pool_fn) fn;
    _Atomic(void *) ctx;
    atomic_bool stop;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* Claims and runs chunks of loop `g` until none are left (or g is no longer current). */
static void run_chunks(pool *p, uint32_t g, int slot)
{
    uint64_t v = atomic_load(&p->claim);
    for (;;) {
        if ((uint32_t)(v >> 32) != g || (uint32_t)v == CLOSED)
            return;
        int n = atomic_load_explicit(&p->n_items, memory_order_acquire);
        int grain = atomic_load_explicit(&p->grain, memory_order_acquire);
        pool_fn fn = atomic_load_explicit(&p->fn, memory_order_acquire);
        void *ctx = atomic_load_explicit(&p->ctx, memory_order_acquire);
        uint32_t begin = (uint32_t)v;
        if (begin >= (uint32_t)n)
            return;
        uint32_t end = begin + (uint32_t)grain < (uint32_t)n ? begin + (uint32_t)grain : (uint32_t)n;
        if (!atomic_compare_exchange_weak(&p->claim, &v, ((uint64_t)g << 32) | end))
            continue; /* v now holds the current value */
        fn(ctx, (int)begin, (int)end, slot);
        atomic_fetch_add_explicit(&p->done, (int)(end - begin), memory_order_release);
        v = atomic_load(&p->claim);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pool *p = w->p;
    uint32_t seen = 0; /* gen starts at 0, so a worker that starts late still sees loop 1 */
    for (;;) {
        int spins = 0;
        uint32_t g;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ROUNDS) {
                cpu_relax();
                continue;
            }
            /* announce before the futex re-checks gen: an owner that bumps gen after this
             * sees the sleeper and wakes it; one that bumped before makes the wait return */
            atomic_fetch_add(&p->sleepers, 1);
            futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
        }
        seen = g;
        if (atomic_load(&p->stop))
            return NULL;
        run_chunks(p, g, w->slot);
    }
}

int pool_default_threads(void)
{
    /* count distinct first siblings of each CPU; fall back to online CPUs */
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
    atomic_store(&p->claim, CLOSED);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return err_set(ei, -ENOMEM, "out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker *w = &p->workers[i - 1];
        w->p = p;
        w->slot = i;
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
    futex_wake_all(&p->gen);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->workers[i - 1].thread, NULL);
    free(p->workers);
    free(p);
}

int pool_size(const pool *p) { return p ? p->n : 1; }

void pool_for(pool *p, int n, int grain, pool_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    if (!p || p->n == 1 || n <= grain) {
        for (int b = 0; b < n; b += grain)
            fn(ctx, b, n - b < grain ? n : b + grain, 0);
        return;
    }
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    atomic_store(&p->claim, ((uint64_t)g << 32) | CLOSED); /* stale claims of the last loop now fail */
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->n_items, n, memory_order_release);
    atomic_store_explicit(&p->grain, grain, memory_order_release);
    atomic_store_explicit(&p->fn, fn, memory_order_release);
    atomic_store_explicit(&p->ctx, ctx, memory_order_release);
    atomic_store(&p->claim, (uint64_t)g << 32);
    atomic_store(&p->gen, g);
    if (atomic_load(&p->sleepers) > 0) /* spinning workers need no system call */
        futex_wake_all(&p->gen);
    run_chunks(p, g, 0);
    /* every item is claimed; wait for chunks still running on other threads */
    for (int spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n; spins++) {
        if (spins < FINISH_SPIN)
            cpu_relax();
        else
            sched_yield(); /* the holder may be waiting for this very core */
    }
}
