/* offload — sending completions to a cloud OpenAI-compatible endpoint: the policy that says
 * when a request may leave the device, and the HTTP client that carries it there.
 *
 * The policy (offload_decide) is a pure function of the operator's mode, what the device
 * cannot do for this request (the trigger), the client's X-Edgellm-Offload header and its
 * "edgellm": {"route"} field:
 *
 *   route field  never header   mode      trigger (see offload_reason)   -> decision
 *   local        any            any       any                            -> local (its own error if it cannot)
 *   cloud        yes            any       any                            -> refuse (503)
 *   cloud        no             off / no URL  any                        -> refuse (503)
 *   cloud        no             fallback, prefer  any                    -> cloud ("requested")
 *   auto         yes            any       any                            -> local (its own error if it cannot)
 *   auto         no             off / no URL  any                        -> local (its own error if it cannot)
 *   auto         no             fallback  none                           -> local
 *   auto         no             fallback  queue_full, deadline, context, no_model -> cloud (that reason)
 *   auto         no             prefer    none                           -> cloud ("prefer")
 *   auto         no             prefer    a trigger                      -> cloud (that reason)
 *
 * The response cache is asked first, whatever the route: a hit never leaves the device.
 * "Local with its own error" means: queue full -> 503 queue_full, prompt too long -> 400
 * context_length_exceeded, no model -> 503 model_not_loaded, estimated wait past the
 * deadline -> queued anyway (it may still make it, else 503 timeout). A cloud failure
 * (refused, time-out, non-2xx status, malformed body) before the first byte reached the
 * client falls back to the local queue when the device can serve the request, else gives
 * the local error; after the first streamed byte it ends the stream with an error frame
 * and [DONE] (bytes already sent cannot be taken back).
 *
 * The client is libcurl's multi interface driven by the daemon's libuv loop (socket and
 * timer callbacks): no thread per request. The cloud is always asked to stream; its SSE
 * deltas (or a plain JSON completion, if it ignores that) are re-emitted through
 * api_job_emit_*, so the client sees our own chunk format, labelled with the local model
 * id, and the text is captured for the cache like a local answer. The API key (from a file
 * or $EDGELLM_OFFLOAD_KEY) is sent only as the Authorization header: never logged, echoed
 * or stored. Redirects are not followed, so the key cannot be carried to another host.
 * Not here: the cache, the local queue (router.c decides what a failure leads to). */
#ifndef EDGELLM_OFFLOAD_H
#define EDGELLM_OFFLOAD_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "api/job.h"
#include "api/req.h"
#include "config/cfg.h"
#include "daemon/cache.h"
#include "engine/err.h"

/* Why a request left the device: the metric label and the audit's reason column. */
typedef enum offload_reason {
    OFFLOAD_QUEUE_FULL,    /* the local queue is full */
    OFFLOAD_DEADLINE,      /* the estimated local wait passes the request's deadline */
    OFFLOAD_CONTEXT,       /* the prompt does not fit the local context */
    OFFLOAD_NO_MODEL,      /* no local model is ready (none, loading, or failed) */
    OFFLOAD_REQUESTED,     /* "edgellm": {"route": "cloud"} */
    OFFLOAD_PREFERRED,     /* mode prefer */
    OFFLOAD_REASON_COUNT,
    OFFLOAD_NO_TRIGGER = OFFLOAD_REASON_COUNT, /* as a trigger: the device can serve it */
} offload_reason;
const char *offload_reason_name(offload_reason r); /* "queue_full", ...; static */

typedef enum offload_route { OFFLOAD_ROUTE_LOCAL, OFFLOAD_ROUTE_CLOUD, OFFLOAD_ROUTE_REFUSE } offload_route;

/* The table above. configured: an endpoint URL is set. *why gets the reason when the answer
 * is cloud. */
offload_route offload_decide(cfg_offload_mode mode, bool configured, offload_reason trigger, bool never,
                             api_target target, offload_reason *why);

/* How a cloud exchange ended: the metric label and the audit's outcome column. */
typedef enum offload_outcome {
    OFFLOAD_OK,
    OFFLOAD_E_REFUSED,     /* connection refused or unreachable */
    OFFLOAD_E_TIMEOUT,     /* connect or total time-out */
    OFFLOAD_E_STATUS,      /* an HTTP status other than 2xx, or an error object in the stream */
    OFFLOAD_E_MALFORMED,   /* a body that is not an OpenAI completion, or a stream cut short */
    OFFLOAD_E_NETWORK,     /* any other transfer error */
    OFFLOAD_E_CANCELLED,   /* the client left, or the daemon stopped */
    OFFLOAD_OUTCOME_COUNT,
} offload_outcome;
const char *offload_outcome_name(offload_outcome o); /* "ok", "refused", ...; static */

/* The JSON body asked of the cloud for req: model, messages or prompt, max_tokens, the
 * OpenAI sampling fields (temperature, top_p, seed if the client set one, penalties, stop),
 * and stream with usage. *body is malloc'd, caller frees. */
int offload_body(const api_req *req, const char *model, int32_t max_tokens, char **body, err_info *ei);

typedef struct offload offload;

/* c is borrowed and must outlive the offload; audit (may be NULL) receives one row per
 * exchange. Reads the API key (c->offload_key_file, else $EDGELLM_OFFLOAD_KEY; none is fine
 * for an endpoint that needs none). loop: the thread running it is the only one that drives
 * transfers. */
int offload_new(offload **out, uv_loop_t *loop, const cfg *c, cache *audit, err_info *ei);
/* Loop thread (or after the loop stopped, before its last run): aborts every transfer (each
 * done callback runs with OFFLOAD_E_CANCELLED) and closes the handles; the memory goes once
 * the loop has run their close callbacks. NULL ok. */
void offload_free(offload *o);
/* Loop thread: aborts every exchange now (done runs with OFFLOAD_E_CANCELLED); new ones are
 * still accepted. */
void offload_cancel_all(offload *o);
/* An endpoint URL is set (offload possible at all). */
bool offload_configured(const offload *o);
/* For the start-up log: "fallback to http://host:port/v1 (API key from file)". Lives with o;
 * no key, no credentials from the URL. */
const char *offload_describe(const offload *o);

/* The end of one exchange, on the loop thread. out: the outcome; committed: bytes reached
 * the job (a stream started), so no fallback is possible and the job's stream is already
 * closed; res: the result to finish the job with (the answer's counts on OFFLOAD_OK, the
 * error when committed). The callback owns the job reference the offload held. */
typedef void (*offload_done_fn)(void *ud, api_job *job, offload_outcome out, bool committed, api_result *res);

/* Any thread. Sends job's request to the cloud; the caller's reference to job passes to the
 * offload until done runs (exactly once, on the loop thread). The job is made elastic (the
 * loop never waits for a slow reader). Returns -ENOMEM or -ERR_CANCELLED (stopped) without
 * taking the reference. */
int offload_submit(offload *o, api_job *job, offload_reason why, const char *model, int32_t max_tokens,
                   offload_done_fn done, void *ud, err_info *ei);
/* Any thread: a job at the cloud was cancelled (its client left); the loop aborts its
 * exchange now rather than at libcurl's next progress call (up to a second away). */
void offload_notice_cancel(offload *o);
/* Exchanges in flight (submitted, done not yet called). Any thread. */
int offload_in_flight(offload *o);

#endif
