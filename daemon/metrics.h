/* metrics — the daemon's counters and histograms, rendered as Prometheus text for /metrics:
 * requests by route and status, queue wait and time-to-first-token histograms, prompt and
 * generated tokens, decode speed, cancellations, answers by source, the response cache
 * (hits, misses, stores, store errors, evictions), offloads by reason and cloud outcomes
 * and fallbacks, plus gauges the caller samples at render time (queue depth, busy worker,
 * model state, uptime).
 *
 * Thread-safe: one mutex around plain counters; updates happen once per request, never per
 * token. Not here: what the numbers mean for scheduling (sched.h). */
#ifndef EDGELLM_METRICS_H
#define EDGELLM_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/http.h"
#include "api/job.h"
#include "daemon/offload.h"
#include "engine/err.h"

typedef struct metrics metrics;

int metrics_new(metrics **out, err_info *ei);
void metrics_free(metrics *m);

/* One answered HTTP exchange. */
void metrics_request(metrics *m, api_route route, int status);
/* One finished job: run by the worker, or dropped from the queue (deadline, shutdown). */
void metrics_job(metrics *m, const api_result *r);
/* A job cancelled because its client left (queued or running). */
void metrics_cancelled(metrics *m);
/* A completion answered (status 200) from source s. */
void metrics_answer(metrics *m, api_source s);
/* A cache lookup. */
void metrics_cache_lookup(metrics *m, bool hit);
/* A cache store: result is cache_put's (entries evicted, or negative: the store failed). */
void metrics_cache_store(metrics *m, int result);
/* A request sent to the cloud, and how the exchange ended (fell_back: it went to the local
 * queue afterwards). */
void metrics_offload(metrics *m, offload_reason why);
void metrics_cloud_outcome(metrics *m, offload_outcome out, bool fell_back);

typedef struct metrics_gauges {
    int queue_depth;
    int queue_capacity;
    bool busy;
    bool model_ready;
    double uptime_s;
    double retry_after_s;
} metrics_gauges;

/* Prometheus text exposition; *out is malloc'd, the caller frees it. */
int metrics_render(metrics *m, const metrics_gauges *g, char **out, err_info *ei);

#endif
