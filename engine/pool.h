/* pool — a fixed set of worker threads that share out the items of one parallel loop at a
 * time (a matmul's rows, attention's heads), fork-join style.
 *
 * Items are claimed in chunks from a shared counter by whichever threads are running, the
 * caller included. A worker the OS has not scheduled (the edge box is busy with something
 * else) claims nothing, so the loop still finishes at the speed of the threads that do run
 * instead of stalling for a scheduler time slice.
 * Workers spin briefly after each loop (a forward pass issues hundreds per token, a few
 * microseconds apart), then sleep on a futex: an idle daemon uses no CPU.
 * Not a general task queue: one loop at a time, issued by the thread that owns the pool. */
#ifndef EDGELLM_POOL_H
#define EDGELLM_POOL_H

#include "err.h"

typedef struct pool pool;

/* Loop body: processes items [begin, end). slot (0 .. pool_size-1, 0 is the caller) names
 * the calling thread, for per-thread scratch; one slot never runs two chunks at once. */
typedef void (*pool_fn)(void *ctx, int begin, int end, int slot);

/* n_threads counts the caller too: n_threads - 1 workers are started. n_threads <= 0 means
 * one per physical core (pool_default_threads). */
int pool_new(pool **out, int n_threads, err_info *ei);
/* Stops and joins the workers. NULL is fine. */
void pool_free(pool *p);
/* Threads including the caller; 1 for a NULL pool. */
int pool_size(const pool *p);

/* Runs fn over items [0, n) in chunks of at most grain items and returns when all are done.
 * p may be NULL: then every chunk runs on the caller. */
void pool_for(pool *p, int n, int grain, pool_fn fn, void *ctx);

/* Physical cores of this machine (at least 1): SMT siblings share the memory bandwidth that
 * decode is bound by, so they add nothing. */
int pool_default_threads(void);

#endif
