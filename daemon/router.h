/* router — decides what happens to each request the HTTP layer parsed: which route answers
 * it; for a completion, which model it names (daemon/models.h), whether the response cache
 * has it, whether it stays on the device (model usable, prompt fits, queue not full, wait
 * within the deadline) or goes to the cloud (offload_decide), and what the worker does with
 * it (loading its model first when needed); afterwards, whether its answer is stored. Owns
 * the scheduler, the metrics, the models and the start-up state of the default model (none,
 * loading, ready, failed).
 *
 * A request for a model that is loaded is rendered, looked up in the cache and tokenized on
 * its connection thread, so a prompt that cannot fit is known before it ever waits; one for
 * a model that is not loaded waits in the same FIFO queue, and the worker loads the model
 * and prepares it when its turn comes (its cache lookup is skipped; its answer is stored).
 *
 * The cache key is the SHA-256 of the canonical request: the model file's SHA-256 and the
 * context length, the kind (chat or completion), the rendered prompt, max_tokens, the stop
 * strings and every sampling parameter (the seed only when sampling is random). Only
 * deterministic requests (temperature 0, or an explicit seed) are cached unless the cache
 * scope is "all"; an answer cut short by its deadline is never stored.
 * Threads: the api_handler callbacks run on HTTP connection threads; jobs, model loads and
 * unloads run on the scheduler's worker; router_start, router_reconfigure, router_drain,
 * router_expire, router_sweep and the cloud's completions on the event loop. */
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

/* c (the configuration in force until router_reconfigure), db (NULL: no cache) and off
 * (NULL: no offload) are borrowed and must outlive the router. wake(wake_ud) is called (from
 * any thread) whenever the event loop should look again: a job was queued (a new deadline)
 * or finished (a drain may be complete), a model was loaded or unloaded (a new keep-alive
 * deadline), or the default model became ready. Errors: the models directory's (models.h). */
int router_new(router **out, const cfg *c, cache *db, offload *off, void (*wake)(void *), void *wake_ud,
               err_info *ei);
/* Stops the worker (queued jobs are dropped, a running one is cancelled), closes the models
 * and frees. */
void router_free(router *r);

/* The handler to give api_server_start; valid while the router lives. */
const api_handler *router_handler(router *r);

/* Starts serving: the worker loads and starts the default model (until then its state is
 * "loading"); without one the state is "ok" at once when a models directory is served, else
 * "no_model". Event loop, once. */
void router_start(router *r);
/* "ok", "loading", "no_model" or "error" (the default model failed to start, or its mapped
 * file changed under it: /health says why). */
const char *router_model_state(router *r);

/* SIGHUP: c and off (NULL: none) replace the configuration and the offload client in force
 * for requests from now on (the old ones must live on until the router is freed: requests
 * in flight may still hold them); the queue takes c->queue, the models c's keep-alive,
 * budget, mlock and verify; models whose load failed are tried again (the default one now).
 * -ENOMEM when the queue cannot grow (the rest is applied). */
int router_reconfigure(router *r, const cfg *c, offload *off, err_info *ei);

/* Keep-alive: when the worker should next unload idle models (sched_now_ns base, INT64_MAX
 * for never), and the loop's timer asking it to (the worker does it between jobs). */
int64_t router_next_sweep(router *r);
void router_sweep(router *r);

/* Drops queued jobs whose deadline passed; returns the next deadline (sched_now_ns base,
 * INT64_MAX for none) for the loop's timer. */
int64_t router_expire(router *r);
/* Shutdown: refuse new requests (503). With cancel_all also drop the queue, cancel the
 * running job and abort the cloud exchanges (event loop). */
void router_drain(router *r, bool cancel_all);
/* Nothing queued, running, or at the cloud. */
bool router_idle(router *r);

#endif
