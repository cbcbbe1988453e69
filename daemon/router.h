/* router — decides what happens to each request the HTTP layer parsed: which route answers
 * it; for a completion, whether the response cache has it, whether it stays on the device
 * (model ready, model name right, prompt fits, queue not full, wait within the deadline) or
 * goes to the cloud (offload_decide), and what the worker does with it; afterwards, whether
 * its answer is stored. Owns the scheduler, the metrics and the model state (none, loading,
 * ready, failed).
 *
 * The cache key is the SHA-256 of the canonical request: the model file's SHA-256 and the
 * context length, the kind (chat or completion), the rendered prompt, max_tokens, the stop
 * strings and every sampling parameter (the seed only when sampling is random). Only
 * deterministic requests (temperature 0, or an explicit seed) are cached unless the cache
 * scope is "all"; an answer cut short by its deadline is never stored.
 * Threads: the api_handler callbacks run on HTTP connection threads; jobs run on the
 * scheduler's worker; router_model_loaded, router_drain, router_expire and the cloud's
 * completions on the event loop. */
#ifndef EDGELLM_ROUTER_H
#define EDGELLM_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "api/http.h"
#include "config/cfg.h"
#include "daemon/cache.h"
#include "daemon/infer.h"
#include "daemon/offload.h"
#include "engine/err.h"
#include "engine/sha256.h"

typedef struct router router;

/* c, db (NULL: no cache) and off (NULL: no offload) are borrowed and must outlive the
 * router. wake(wake_ud) is called (from any thread) whenever the event loop should look
 * again: a job was queued (a new deadline) or finished (a drain may be complete), or the
 * model became ready. */
int router_new(router **out, const cfg *c, cache *db, offload *off, void (*wake)(void *), void *wake_ud,
               err_info *ei);
/* Stops the worker (queued jobs are dropped, a running one is cancelled) and frees. */
void router_free(router *r);

/* The handler to give api_server_start; valid while the router lives. */
const api_handler *router_handler(router *r);

/* Model state transitions, from the event loop: loading began; loading ended with in (taken)
 * and the model file's SHA-256 (copied; NULL when unknown: nothing is cached) or failed
 * with a message. A loaded model becomes ready once the worker started it. */
void router_model_loading(router *r);
void router_model_loaded(router *r, infer *in, const uint8_t sha256[SHA256_BYTES]);
void router_model_failed(router *r, const char *message);
/* "ok", "loading", "no_model" or "error". */
const char *router_model_state(router *r);

/* Drops queued jobs whose deadline passed; returns the next deadline (sched_now_ns base,
 * INT64_MAX for none) for the loop's timer. */
int64_t router_expire(router *r);
/* Shutdown: refuse new requests (503). With cancel_all also drop the queue, cancel the
 * running job and abort the cloud exchanges (event loop). */
void router_drain(router *r, bool cancel_all);
/* Nothing queued, running, or at the cloud. */
bool router_idle(router *r);

#endif
