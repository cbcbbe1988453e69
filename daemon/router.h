/* router — decides what happens to each request the HTTP layer parsed: which route answers
 * it, whether it may be queued (model ready, model name right, prompt fits, queue not
 * full), and what the worker does with it. Owns the scheduler, the metrics and the model
 * state (none, loading, ready, failed).
 *
 * Later issues slot in here, in router_handle: the response cache lookup and the local /
 * cloud policy, before a job is queued.
 * Threads: the api_handler callbacks run on HTTP connection threads; jobs run on the
 * scheduler's worker; router_model_loaded, router_drain and router_expire on the event loop. */
#ifndef EDGELLM_ROUTER_H
#define EDGELLM_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "api/http.h"
#include "config/cfg.h"
#include "daemon/infer.h"
#include "engine/err.h"

typedef struct router router;

/* c is borrowed and must outlive the router. wake(wake_ud) is called (from any thread)
 * whenever the event loop should look again: a job was queued (a new deadline) or finished
 * (a drain may be complete), or the model became ready. */
int router_new(router **out, const cfg *c, void (*wake)(void *), void *wake_ud, err_info *ei);
/* Stops the worker (queued jobs are dropped, a running one is cancelled) and frees. */
void router_free(router *r);

/* The handler to give api_server_start; valid while the router lives. */
const api_handler *router_handler(router *r);

/* Model state transitions, from the event loop: loading began; loading ended with in (taken)
 * or failed with a message. A loaded model becomes ready once the worker started it. */
void router_model_loading(router *r);
void router_model_loaded(router *r, infer *in);
void router_model_failed(router *r, const char *message);
/* "ok", "loading", "no_model" or "error". */
const char *router_model_state(router *r);

/* Drops queued jobs whose deadline passed; returns the next deadline (sched_now_ns base,
 * INT64_MAX for none) for the loop's timer. */
int64_t router_expire(router *r);
/* Shutdown: refuse new requests (503). With cancel_all also drop the queue and cancel the
 * running job. */
void router_drain(router *r, bool cancel_all);
/* Nothing queued or running. */
bool router_idle(router *r);

#endif
