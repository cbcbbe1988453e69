/* sched — the daemon's scheduler: a bounded FIFO of waiting requests and the one worker
 * thread that runs them, one at a time, in arrival order.
 *
 * Items are opaque pointers owned by the caller; the scheduler only orders them, keeps their
 * deadlines and hands each to exactly one of two callbacks: run (it reached the worker) or
 * drop (it left the queue without running: deadline passed, or the scheduler stopped).
 * sched_remove takes an item out silently (the caller already knows, e.g. its client left).
 * Not here: what running an item means (daemon/infer.c), HTTP, or timers (the event loop
 * calls sched_expire when sched_next_deadline comes). */
#ifndef EDGELLM_SCHED_H
#define EDGELLM_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/err.h"

typedef struct sched sched;

/* Runs on the worker thread, outside the scheduler's lock. */
typedef void (*sched_run_fn)(void *ud, void *item);
/* The item left the queue unrun with code -ERR_TIMEOUT (deadline) or -ERR_CANCELLED (stop).
 * Called on the thread that caused it, outside the lock. */
typedef void (*sched_drop_fn)(void *ud, void *item, int code);

/* capacity: items that may wait (the running one not counted), >= 0. Starts the worker.
 * ud is passed to both callbacks. */
int sched_new(sched **out, int capacity, sched_run_fn run, sched_drop_fn drop, void *ud, err_info *ei);
/* Stops (as sched_stop(s, true)), waits for the running item and joins the worker. NULL ok. */
void sched_free(sched *s);

/* Monotonic clock the deadlines are measured on, in nanoseconds. */
int64_t sched_now_ns(void);

/* Appends item (borrowed until run or drop) with an absolute deadline (sched_now_ns base;
 * INT64_MAX for none). -ERR_BUSY when capacity items already wait, -ERR_CANCELLED after
 * sched_stop. */
int sched_submit(sched *s, void *item, int64_t deadline_ns);
/* Takes item out of the queue without calling drop. False when it was not waiting (already
 * running, finished, or never queued). */
bool sched_remove(sched *s, void *item);
/* Drops every waiting item whose deadline is <= now_ns (drop code -ERR_TIMEOUT); returns how
 * many. The worker also skips expired items when it picks the next one. */
int sched_expire(sched *s, int64_t now_ns);
/* Earliest deadline among waiting items, INT64_MAX when none. */
int64_t sched_next_deadline(sched *s);
/* Refuses new items from now on; with cancel_queued, drops the waiting ones (-ERR_CANCELLED).
 * The running item is not touched: cancelling it is the caller's business. */
void sched_stop(sched *s, bool cancel_queued);
/* A new capacity (>= 0; SIGHUP). Items already waiting stay, even beyond it; new ones are
 * refused until the queue is back under it. -ENOMEM leaves the old capacity. */
int sched_set_capacity(sched *s, int capacity, err_info *ei);

/* Housekeeping that must run on the worker thread (unloading an idle model frees the
 * session the worker generates with): after sched_poke, the worker calls chore(ud) once,
 * before it takes the next item and never while one runs. Pokes that arrive before the
 * chore ran count once. Set the chore before the first poke. Any thread. */
void sched_set_chore(sched *s, void (*chore)(void *ud));
void sched_poke(sched *s);

typedef struct sched_stats {
    int depth;               /* items waiting */
    int capacity;
    bool busy;               /* an item is running */
    bool stopped;
    uint64_t served;         /* items run to completion so far */
    double service_ms_ewma;  /* smoothed run time per item, 0 before the first */
} sched_stats;

void sched_get_stats(sched *s, sched_stats *out);
/* Seconds a client refused now should wait: the smoothed service time times the items
 * ahead of it (waiting plus running), rounded up, at least 1. */
int sched_retry_after_s(sched *s);

/* Calls fn for the running item (position 0) and each waiting item (positions 1..depth) in
 * order, under the scheduler's lock: fn must be quick and must not call sched_*. Items are
 * guaranteed alive during the call. */
void sched_visit(sched *s, void (*fn)(void *ctx, void *item, int position), void *ctx);

#endif
