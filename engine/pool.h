/* pool — a fixed set of worker threads that run one function on every thread and wait for
 * all of them (fork-join), for splitting a matmul's rows or attention's heads.
 *
 * Workers spin briefly after each job (a forward pass issues hundreds of jobs per token, a
 * few microseconds apart) and then sleep on a futex, so an idle daemon uses no CPU.
 * Not a general task queue: one job at a time, issued by one owner thread. */
#ifndef EDGELLM_POOL_H
#define EDGELLM_POOL_H

#include "err.h"

typedef struct pool pool;

/* Job body: called once per thread with ith in [0, nth). ctx is the caller's. */
typedef void (*pool_fn)(void *ctx, int ith, int nth);

/* n_threads counts the caller too: n_threads - 1 workers are started. n_threads <= 0 means
 * one per physical core (pool_default_threads). */
int pool_new(pool **out, int n_threads, err_info *ei);
/* Stops and joins the workers. NULL is fine. */
void pool_free(pool *p);
int pool_size(const pool *p);

/* Runs fn on all threads (the caller is thread 0) and returns when every call returned.
 * Only the thread that created the pool may call it. */
void pool_run(pool *p, pool_fn fn, void *ctx);

/* Physical cores of this machine (at least 1): SMT siblings share the memory bandwidth that
 * decode is bound by, so they add nothing. */
int pool_default_threads(void);

/* Splits n items into nth nearly equal contiguous ranges; the range of thread ith is
 * [*begin, *end). When align > 1 boundaries fall on multiples of align. */
void pool_split(int n, int ith, int nth, int align, int *begin, int *end);

#endif
