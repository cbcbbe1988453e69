/* sched — see sched.h. The queue is a plain array kept in arrival order: it holds at most a
 * few dozen entries, so removing from the middle by shifting is cheaper to read and to get
 * right than a linked list, and it never allocates after sched_new. */
#include "sched.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct entry {
    void *item;
    int64_t deadline_ns;
} entry;

struct sched {
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* worker: an item arrived or stop was asked */
    entry *q;                /* [q_alloc] waiting items, q[0] is next */
    int depth, capacity, q_alloc;
    void (*chore)(void *ud); /* see sched_set_chore */
    bool poked;              /* the chore is due */
    void *running;
    bool stopping, exit;     /* stopping: refuse new items; exit: the worker leaves */
    uint64_t served;
    double service_ms_ewma;
    sched_run_fn run;
    sched_drop_fn drop;
    void *ud;
    pthread_t worker;
};

/* Weight of the newest request in the service-time average: recent enough to follow a change
 * of workload within a few requests, smooth enough that one long answer does not dominate. */
#define SERVICE_EWMA_ALPHA 0.3

int64_t sched_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void remove_at(sched *s, int i)
{
    memmove(&s->q[i], &s->q[i + 1], (size_t)(s->depth - i - 1) * sizeof s->q[0]);
    s->depth--;
}

static void *worker_main(void *arg)
{
    sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->depth && !s->exit && !s->poked)
            pthread_cond_wait(&s->wake, &s->mu);
        if (s->exit && !s->depth)
            break;
        if (s->poked) {
            s->poked = false;
            void (*chore)(void *) = s->chore;
            pthread_mutex_unlock(&s->mu);
            if (chore)
                chore(s->ud);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        entry e = s->q[0];
        remove_at(s, 0);
        int64_t start = sched_now_ns();
        if (e.deadline_ns <= start) {
            pthread_mutex_unlock(&s->mu);
            s->drop(s->ud, e.item, -ERR_TIMEOUT);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        s->running = e.item;
        pthread_mutex_unlock(&s->mu);
        s->run(s->ud, e.item);
        double ms = (double)(sched_now_ns() - start) / 1e6;
        pthread_mutex_lock(&s->mu);
        s->running = NULL;
        s->served++;
        s->service_ms_ewma = s->served == 1 ? ms : SERVICE_EWMA_ALPHA * ms + (1 - SERVICE_EWMA_ALPHA) * s->service_ms_ewma;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int sched_new(sched **out, int capacity, sched_run_fn run, sched_drop_fn drop, void *ud, err_info *ei)
{
    *out = NULL;
    if (capacity < 0 || !run || !drop)
        return err_set(ei, -EINVAL, "sched_new: capacity %d or a callback is invalid", capacity);
    int rc = -ENOMEM;
    sched *s = calloc(1, sizeof *s);
    /* One spare slot: the item the idle worker is about to pick up sits in the queue too. */
    if (!s || !(s->q = calloc((size_t)capacity + 1, sizeof s->q[0])))
        goto fail;
    s->capacity = capacity;
    s->q_alloc = capacity + 1;
    s->run = run;
    s->drop = drop;
    s->ud = ud;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    if ((rc = -pthread_create(&s->worker, NULL, worker_main, s)) < 0) {
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->mu);
        goto fail;
    }
    *out = s;
    return 0;
fail:
    if (s)
        free(s->q);
    free(s);
    return err_set(ei, rc, "sched_new: %s", rc == -ENOMEM ? "out of memory" : "cannot start the worker thread");
}

void sched_free(sched *s)
{
    if (!s)
        return;
    sched_stop(s, true);
    pthread_mutex_lock(&s->mu);
    s->exit = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->worker, NULL);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s->q);
    free(s);
}

int sched_submit(sched *s, void *item, int64_t deadline_ns)
{
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (s->stopping)
        rc = -ERR_CANCELLED;
    else if (s->depth + (s->running != NULL) > s->capacity)
        rc = -ERR_BUSY; /* one running plus capacity waiting */
    if (rc == 0) {
        s->q[s->depth++] = (entry){item, deadline_ns};
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

bool sched_remove(sched *s, void *item)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->depth && !found; i++)
        if (s->q[i].item == item) {
            remove_at(s, i);
            found = true;
        }
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* Drops waiting items whose deadline is <= limit (INT64_MAX: all), one at a time so the
 * callback runs without the lock (it may take its own locks, or submit). */
static int drop_matching(sched *s, int64_t limit, bool stop, int code)
{
    int n = 0;
    for (;;) {
        entry e = {NULL, 0};
        pthread_mutex_lock(&s->mu);
        if (stop)
            s->stopping = true;
        for (int i = 0; i < s->depth && !e.item; i++)
            if (s->q[i].deadline_ns <= limit) {
                e = s->q[i];
                remove_at(s, i);
            }
        pthread_mutex_unlock(&s->mu);
        if (!e.item)
            return n;
        s->drop(s->ud, e.item, code);
        n++;
    }
}

int sched_expire(sched *s, int64_t now_ns)
{
    return drop_matching(s, now_ns, false, -ERR_TIMEOUT);
}

void sched_stop(sched *s, bool cancel_queued)
{
    drop_matching(s, cancel_queued ? INT64_MAX : INT64_MIN, true, -ERR_CANCELLED);
}

int sched_set_capacity(sched *s, int capacity, err_info *ei)
{
    if (capacity < 0)
        return err_set(ei, -EINVAL, "queue capacity %d is negative", capacity);
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (capacity + 1 > s->q_alloc) { /* shrinking keeps the array: items waiting beyond it stay */
        entry *q = realloc(s->q, ((size_t)capacity + 1) * sizeof *q);
        if (q) {
            s->q = q;
            s->q_alloc = capacity + 1;
        } else {
            rc = err_set(ei, -ENOMEM, "out of memory for a queue of %d", capacity);
        }
    }
    if (rc == 0)
        s->capacity = capacity;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void sched_set_chore(sched *s, void (*chore)(void *ud))
{
    pthread_mutex_lock(&s->mu);
    s->chore = chore;
    pthread_mutex_unlock(&s->mu);
}

void sched_poke(sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->poked = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

int64_t sched_next_deadline(sched *s)
{
    int64_t next = INT64_MAX;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->depth; i++)
        if (s->q[i].deadline_ns < next)
            next = s->q[i].deadline_ns;
    pthread_mutex_unlock(&s->mu);
    return next;
}

void sched_get_stats(sched *s, sched_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = (sched_stats){
        .depth = s->depth,
        .capacity = s->capacity,
        .busy = s->running != NULL,
        .stopped = s->stopping,
        .served = s->served,
        .service_ms_ewma = s->service_ms_ewma,
    };
    pthread_mutex_unlock(&s->mu);
}

int sched_retry_after_s(sched *s)
{
    sched_stats st;
    sched_get_stats(s, &st);
    double ahead = st.depth + (st.busy ? 1 : 0);
    double seconds = st.service_ms_ewma * ahead / 1000.0;
    int whole = (int)seconds + (seconds > (int)seconds);
    return whole < 1 ? 1 : whole;
}

void sched_visit(sched *s, void (*fn)(void *ctx, void *item, int position), void *ctx)
{
    pthread_mutex_lock(&s->mu);
    if (s->running)
        fn(ctx, s->running, 0);
    for (int i = 0; i < s->depth; i++)
        fn(ctx, s->q[i].item, i + 1);
    pthread_mutex_unlock(&s->mu);
}
