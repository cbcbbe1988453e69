/* router — see router.h. A completion goes: draining? -> its model (models_find) -> with
 * that model loaded: rendered prompt, cache key and lookup (a hit is replayed at once),
 * prompt tokens; not loaded: all that later, on the worker; unusable (failed, retired,
 * over the budget, none at all): the reason it cannot run here -> job with its data ->
 * offload_decide -> the scheduler or the cloud. The worker runs it (run_job: loading its
 * model first), the queue gives it back (drop_job) or the cloud completes it (cloud_done,
 * which may hand it to the queue); whichever path, the job is finished exactly once, and
 * the connection thread sends whatever it says. When the connection is done (release), a
 * finished answer goes into the cache.
 *
 * The configuration is a pointer swapped whole by a reload: a request reads the one in
 * force when it looks, and old ones stay alive (router.h), so no field is ever seen half
 * written. */
#include "router.h"

#include <cJSON.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/metrics.h"
#include "daemon/models.h"
#include "daemon/sched.h"

/* The default model's start-up; afterwards its entry's own state also counts (router_model_state). */
typedef enum model_state { MODEL_NONE, MODEL_LOADING, MODEL_READY, MODEL_FAILED } model_state;

/* Response channel per job: frames are a few hundred bytes, so this holds many tokens of
 * slack before a slow reader makes the worker wait. */
enum { JOB_RING_BYTES = 64 * 1024 };

struct router {
    _Atomic(const cfg *) c;    /* in force; see the top of this file */
    api_handler h;
    sched *sched;
    metrics *metrics;
    models *ms;
    cache *db;                 /* NULL: no cache */
    _Atomic(offload *) off;    /* NULL: no offload; swapped like c */
    atomic_bool store_error_logged; /* a failing disk is reported once, not per request */
    _Atomic int state;         /* model_state */
    char fail_msg[ERR_MSG_MAX];/* why the default model did not start; written before state FAILED */
    atomic_bool draining;
    atomic_int reloads;
    void (*wake)(void *);
    void *wake_ud;
    int64_t start_ns;
    _Atomic uint64_t counter;  /* ids and default seeds */
    uint64_t salt;
    char frame[API_SSE_FRAME_MAX]; /* the worker's, for a job that ends before its model runs it */
    char start_item;           /* address queued to make the worker load the default model */
};

static const cfg *conf(router *r) { return atomic_load(&r->c); }
static offload *off_of(router *r) { return atomic_load(&r->off); }

/* Why the device does not serve a request itself, as the client would hear it. */
typedef struct refusal {
    api_err err;
    char msg[ERR_MSG_MAX];
    int retry_after_s;
} refusal;

/* What the router keeps with each job (api_job_user). */
typedef struct job_data {
    models_entry *entry;       /* its model; NULL when none could be named */
    bool local_ok;             /* the device can run it (else local says why not) */
    bool queued;               /* counted among the entry's pending jobs */
    int32_t *tokens;           /* NULL until prepared (by the worker when the model was not loaded) */
    int32_t n_tokens;
    int32_t max_tokens;
    int64_t submit_ns, deadline_ns;
    _Atomic int64_t start_ns;  /* when the worker took it; 0 while waiting */
    offload_reason trigger;    /* what the device cannot do for it (OFFLOAD_NO_TRIGGER: nothing) */
    refusal local;             /* the device's answer when !local_ok */
    uint8_t key[SHA256_BYTES]; /* cache key, when keyed */
    bool keyed, store, hit;    /* cacheable; its answer is to be stored; it was a cache hit */
    bool no_cache, no_store;   /* the request's Cache-Control */
} job_data;

static void job_data_free(void *p)
{
    job_data *d = p;
    if (d)
        free(d->tokens);
    free(d);
}

/* splitmix64: distinct, well-mixed 64-bit values from a counter. */
static uint64_t next_random(router *r)
{
    uint64_t z = r->salt + 0x9e3779b97f4a7c15ULL * (atomic_fetch_add(&r->counter, 1) + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double ms_between(int64_t a_ns, int64_t b_ns)
{
    return (double)(b_ns - a_ns) / 1e6;
}

/* A model whose file was truncated or rewritten under its mapping computes garbage (see
 * daemon/mapguard.h): from the first time infer_check_file says so, the model is retired
 * with that message (its requests 503; /health "error" for the default model), logged once,
 * and the worker closes it. Any thread. */
static void check_model(router *r, models_entry *e)
{
    infer *in = e ? models_lease(r->ms, e, NULL) : NULL;
    if (!in)
        return;
    err_info ei = {0};
    int rc = infer_check_file(in, &ei);
    models_unlease(r->ms, e);
    if (rc < 0 && models_retire(r->ms, e, ei.msg)) {
        fprintf(stderr, "edgellmd: %s\n", ei.msg);
        r->wake(r->wake_ud);
    }
}

/* ---- worker side ------------------------------------------------------------------ */

static int prepare(router *r, job_data *d, const api_req *req, infer *in, const uint8_t *sha, cache_entry *hit,
                   err_info *ei);

/* job left the queue (it ran, was dropped or removed): its model's keep-alive runs from now. */
static void unqueue(router *r, api_job *job)
{
    job_data *d = api_job_user(job);
    const api_req *req = api_job_req(job);
    if (!d->queued)
        return;
    d->queued = false;
    models_job_done(r->ms, d->entry, req->keep_alive_set ? req->keep_alive_s : MODELS_KEEP_ALIVE_DEFAULT);
}

/* Ends a job that the queue or the cloud held (their reference goes). */
static void finish_job(router *r, api_job *job, api_result *res)
{
    job_data *d = api_job_user(job);
    unqueue(r, job);
    api_source source = API_SOURCE_LOCAL;
    api_job_committed(job, &source);
    res->total_ms = ms_between(d->submit_ns, sched_now_ns());
    if (source == API_SOURCE_LOCAL)
        metrics_job(r->metrics, res);
    if (res->code == 0 && res->finish_reason)
        metrics_answer(r->metrics, source);
    api_job_finish(job, res);
    api_job_unref(job); /* the queue's reference */
    r->wake(r->wake_ud);
}

/* The worker's start item: the default model loaded and started. */
static void start_model(router *r)
{
    err_info ei = {0};
    infer *in;
    models_entry *e = models_default(r->ms);
    int rc = models_activate(r->ms, e, &in, NULL, &ei);
    if (rc < 0) {
        fprintf(stderr, "edgellmd: cannot load %s: %s\n", models_entry_id(e), err_text(&ei, rc));
        snprintf(r->fail_msg, sizeof r->fail_msg, "%s", err_text(&ei, rc));
        atomic_store(&r->state, MODEL_FAILED);
    } else {
        atomic_store(&r->state, MODEL_READY);
    }
    r->wake(r->wake_ud);
}

/* The worker's part before generating: the job's model loaded and started, and the prompt
 * prepared if the connection could not (its model was not loaded then). NULL, with res
 * filled, when the job cannot run. */
static infer *ready_to_run(router *r, api_job *job, job_data *d, api_result *res)
{
    infer *in = NULL;
    const uint8_t *sha = NULL;
    err_info ei = {0};
    int rc = models_activate(r->ms, d->entry, &in, &sha, &ei);
    if (rc < 0) {
        if (models_state_of(r->ms, d->entry, NULL, 0) != MODELS_RETIRED) /* that was logged when it happened */
            fprintf(stderr, "edgellmd: cannot load %s: %s\n", models_entry_id(d->entry), err_text(&ei, rc));
        *res = (api_result){.code = rc, .has_err = true, .err = API_E_NO_MODEL, .queue_ms = res->queue_ms};
        snprintf(res->message, sizeof res->message, "model '%s' cannot be loaded: %s", models_entry_id(d->entry),
                 err_text(&ei, rc));
        return NULL;
    }
    if (d->tokens)
        return in;
    if ((rc = prepare(r, d, api_job_req(job), in, sha, NULL, &ei)) < 0) {
        res->code = rc;
        snprintf(res->message, sizeof res->message, "%s", err_text(&ei, rc));
        return NULL;
    }
    if (!d->local_ok) { /* too long for the context */
        *res = (api_result){.code = -ERR_CONTEXT_FULL, .has_err = true, .err = d->local.err, .queue_ms = res->queue_ms};
        snprintf(res->message, sizeof res->message, "%s", d->local.msg);
        return NULL;
    }
    if (d->keyed && d->store)
        api_job_capture(job);
    return in;
}

static void run_job(void *ud, void *item)
{
    router *r = ud;
    if (item == &r->start_item) {
        start_model(r);
        return;
    }
    api_job *job = item;
    job_data *d = api_job_user(job);
    int64_t now = sched_now_ns();
    atomic_store(&d->start_ns, now);
    api_result res = {.queue_ms = ms_between(d->submit_ns, now)};
    infer *in;
    if (api_job_cancelled(job)) {
        res.code = -ERR_CANCELLED; /* its client left just as it reached the worker */
        snprintf(res.message, sizeof res.message, "cancelled");
    } else if ((in = ready_to_run(r, job, d, &res))) {
        infer_task t = {d->tokens, d->n_tokens, d->max_tokens, d->deadline_ns};
        infer_run(in, job, &t, &res);
        check_model(r, d->entry);
    } else {
        api_job_emit_end(job, &res, r->frame);
    }
    if (res.code == -ERR_CANCELLED || (res.code == 0 && !res.finish_reason)) {
        metrics_cancelled(r->metrics);
        /* How fast a hang-up stops the work: the promise is one token or one prefill chunk. */
        fprintf(stderr,
                "edgellmd: cancelled %s after %d tokens: %d more after the client left, stopped %.2f ms after it "
                "(%.2f ms per token)\n",
                api_job_sse(job)->id, res.n_generated, res.n_after_cancel, api_job_ms_since_cancel(job),
                res.n_generated > 0 ? res.decode_ms / res.n_generated : 0.0);
    }
    finish_job(r, job, &res);
}

static void drop_job(void *ud, void *item, int code)
{
    router *r = ud;
    if (item == &r->start_item)
        return; /* stopped before the model started: nothing to answer */
    api_job *job = item;
    job_data *d = api_job_user(job);
    api_result res = {.code = code, .queue_ms = ms_between(d->submit_ns, sched_now_ns())};
    if (code == -ERR_TIMEOUT)
        snprintf(res.message, sizeof res.message, "the request waited %.0f ms in the queue and passed its deadline",
                 res.queue_ms);
    else
        snprintf(res.message, sizeof res.message, "the server is shutting down");
    finish_job(r, job, &res);
}

/* ---- connection side -------------------------------------------------------------- */

static void refuse(api_call *call, const refusal *f)
{
    api_call_error(call, f->err, "%s", f->msg);
    call->retry_after_s = f->retry_after_s;
}

/* True when the device can run work for e (now, or once the worker has loaded it); else
 * why not in *f. */
static bool model_usable(router *r, models_entry *e, refusal *f)
{
    *f = (refusal){.err = API_E_NO_MODEL};
    if (!e) {
        snprintf(f->msg, sizeof f->msg, "no model is loaded: start edgellmd with --model FILE.gguf");
        return false;
    }
    check_model(r, e);
    model_state start = e == models_default(r->ms) ? (model_state)atomic_load(&r->state) : MODEL_READY;
    if (start == MODEL_LOADING) {
        *f = (refusal){.err = API_E_LOADING, .retry_after_s = 1};
        snprintf(f->msg, sizeof f->msg, "the model is still loading; retry shortly");
        return false;
    }
    char why[ERR_MSG_MAX];
    models_state s = models_state_of(r->ms, e, why, sizeof why);
    err_info ei = {0};
    if (s == MODELS_RETIRED)
        snprintf(f->msg, sizeof f->msg, "the model is out of service: %s", why);
    else if (s == MODELS_FAILED || start == MODEL_FAILED)
        snprintf(f->msg, sizeof f->msg, "the model failed to load: %s", s == MODELS_FAILED ? why : r->fail_msg);
    else if (models_admit(r->ms, e, &ei) < 0)
        snprintf(f->msg, sizeof f->msg, "%s", ei.msg);
    else
        return true;
    return false;
}

/* ---- response cache --------------------------------------------------------------- */

static void hash_field(sha256_ctx *h, const char *name, const void *data, size_t n)
{
    uint64_t len = n; /* length-prefixed, so no two requests hash the same bytes */
    sha256_update(h, name, strlen(name) + 1);
    sha256_update(h, &len, sizeof len);
    sha256_update(h, data, n);
}

static void hash_number(sha256_ctx *h, const char *name, double v)
{
    char text[40];
    int n = snprintf(text, sizeof text, "%.9g", v);
    hash_field(h, name, text, (size_t)n);
}

/* The canonical request (router.h) -> key. model_sha: the model file's SHA-256. */
static void cache_key(const uint8_t *model_sha, int32_t n_ctx, const api_req *req, const char *prompt, size_t len,
                      int32_t max_tokens, uint8_t key[SHA256_BYTES])
{
    const sampler_params *sp = &req->sampling;
    sha256_ctx h;
    sha256_init(&h);
    hash_field(&h, "edgellm-cache-v1", "", 0);
    hash_field(&h, "model", model_sha, SHA256_BYTES);
    hash_number(&h, "n_ctx", n_ctx);
    hash_field(&h, "kind", req->kind == API_KIND_CHAT ? "chat" : "completion", req->kind == API_KIND_CHAT ? 4 : 10);
    hash_field(&h, "prompt", prompt, len);
    hash_number(&h, "max_tokens", max_tokens);
    for (int i = 0; i < req->n_stop; i++)
        hash_field(&h, "stop", req->stop[i], strlen(req->stop[i]));
    hash_number(&h, "temperature", sp->temperature);
    hash_number(&h, "top_k", sp->top_k);
    hash_number(&h, "top_p", sp->top_p);
    hash_number(&h, "min_p", sp->min_p);
    hash_number(&h, "repeat_penalty", sp->repeat_penalty);
    hash_number(&h, "repeat_last_n", sp->repeat_last_n);
    hash_number(&h, "presence_penalty", sp->presence_penalty);
    hash_number(&h, "frequency_penalty", sp->frequency_penalty);
    /* Greedy decoding ignores the seed; a sampled answer depends on it (and without an
     * explicit one, only the "all" scope caches it, seed-independently). */
    if (sp->temperature > 0 && req->seed_set) {
        char seed[24];
        hash_field(&h, "seed", seed, (size_t)snprintf(seed, sizeof seed, "%llu", (unsigned long long)sp->seed));
    }
    sha256_final(&h, key);
}

static bool cacheable(router *r, const api_req *req, const uint8_t *model_sha)
{
    const cfg *c = conf(r);
    return r->db && !c->no_cache && model_sha &&
           (c->cache_scope == CFG_CACHE_ALL || req->sampling.temperature == 0 || req->seed_set);
}

/* Writes a cached answer into job, as the worker would have, and finishes it. */
static void replay(router *r, api_job *job, const cache_entry *e)
{
    char frame[API_SSE_FRAME_MAX];
    job_data *d = api_job_user(job);
    api_result res = {
        .finish_reason = strcmp(e->finish_reason, "length") ? "stop" : "length",
        .n_prompt = e->n_prompt,
        .n_generated = e->n_generated,
    };
    d->hit = true;
    api_job_set_elastic(job, SIZE_MAX / 2); /* this thread is also the reader: never wait */
    api_job_commit(job, API_SOURCE_CACHE);
    api_job_emit_start(job, frame);
    api_job_emit_text(job, e->text, e->len, frame);
    api_job_emit_end(job, &res, frame);
    res.total_ms = ms_between(d->submit_ns, sched_now_ns());
    metrics_answer(r->metrics, API_SOURCE_CACHE);
    api_job_finish(job, &res);
}

/* After the connection is done with job: a cache hit refreshes its recency, a fresh
 * complete answer is stored. A failing database is logged once, and counted. */
static void remember(router *r, api_job *job, job_data *d)
{
    api_result res;
    const char *text;
    size_t len;
    api_source source = API_SOURCE_LOCAL;
    err_info ei = {0};
    int rc = 0;
    if (!d || !d->keyed || !api_job_done(job, &res) || res.code < 0 || !res.finish_reason)
        return;
    if (d->hit) {
        rc = cache_touch(r->db, d->key, &ei);
    } else if (d->store && !res.partial && api_job_captured(job, &text, &len)) {
        api_job_committed(job, &source);
        cache_entry e = {.text = (char *)text, .len = len, .n_prompt = res.n_prompt, .n_generated = res.n_generated};
        snprintf(e.finish_reason, sizeof e.finish_reason, "%s", res.finish_reason);
        snprintf(e.origin, sizeof e.origin, "%s", api_source_name(source));
        rc = cache_put(r->db, d->key, &e, &ei);
        metrics_cache_store(r->metrics, rc);
    }
    if (rc < 0 && !atomic_exchange(&r->store_error_logged, true))
        fprintf(stderr, "edgellmd: %s (answers are still served; further cache errors are only counted)\n", ei.msg);
}

/* ---- local or cloud --------------------------------------------------------------- */

/* Hands job to the scheduler with one reference the caller passes; the job now answers
 * from the device. */
static int queue_local(router *r, api_job *job)
{
    job_data *d = api_job_user(job);
    api_job_set_elastic(job, 0); /* the worker may wait for a slow reader */
    /* counted first: the worker may finish it before sched_submit even returns */
    models_job_queued(r->ms, d->entry);
    d->queued = true;
    /* Held across the hand-off: once submitted, the worker may finish the job and drop the
     * queue's reference, and the connection send the answer and drop its own, before the
     * commit below. A cloud fallback's caller holds none of its own to keep the job alive. */
    api_job_ref(job);
    int rc = sched_submit(r->sched, job, d->deadline_ns);
    if (rc == 0) {
        api_job_commit(job, API_SOURCE_LOCAL);
        r->wake(r->wake_ud);
    } else {
        d->queued = false;
        models_job_done(r->ms, d->entry, MODELS_KEEP_ALIVE_DEFAULT);
    }
    api_job_unref(job);
    return rc;
}

/* The end of a cloud exchange (event loop). A failure before anything reached the client
 * falls back to the device when it can serve the request, else gives the device's answer. */
static void cloud_done(void *ud, api_job *job, offload_outcome out, bool committed, api_result *res)
{
    router *r = ud;
    job_data *d = api_job_user(job);
    if (api_job_cancelled(job) && out != OFFLOAD_OK)
        out = OFFLOAD_E_CANCELLED; /* its client left: nobody to fall back for */
    bool fall_back = out != OFFLOAD_OK && out != OFFLOAD_E_CANCELLED && !committed;
    int rc = fall_back && d->local_ok ? queue_local(r, job) : -ERR_NOT_FOUND;
    metrics_cloud_outcome(r->metrics, out, fall_back && rc == 0);
    if (rc == 0)
        return; /* the queue has the offload's reference now */
    if (out == OFFLOAD_E_CANCELLED && !committed) {
        res->code = -ERR_CANCELLED;
        snprintf(res->message, sizeof res->message, "cancelled");
        metrics_cancelled(r->metrics);
    } else if (fall_back && d->local_ok) {
        res->code = rc;
        snprintf(res->message, sizeof res->message, "%s",
                 rc == -ERR_BUSY ? "the cloud failed and the local queue is full; retry later"
                                 : "the server is shutting down");
    } else if (fall_back) {
        *res = (api_result){.code = -ERR_IO, .has_err = true, .err = d->local.err};
        snprintf(res->message, sizeof res->message, "the cloud endpoint failed (%s) and %s", offload_outcome_name(out),
                 d->local.msg);
    }
    finish_job(r, job, res);
}

/* The model name asked of the cloud. */
static const char *cloud_model(router *r, const api_req *req, const job_data *d)
{
    const cfg *c = conf(r);
    if (c->offload_model[0])
        return c->offload_model;
    if (req->model[0])
        return req->model;
    return d->entry ? models_entry_id(d->entry) : NULL;
}

static void send_to_cloud(router *r, api_call *call, api_job *job, offload_reason why)
{
    job_data *d = api_job_user(job);
    err_info ei = {0};
    api_job_ref(job); /* the offload's */
    int rc = offload_submit(off_of(r), job, why, cloud_model(r, api_job_req(job), d), d->max_tokens, cloud_done, r,
                            &ei);
    if (rc < 0) {
        api_job_unref(job);
        api_job_unref(job);
        api_call_error(call, rc == -ERR_CANCELLED ? API_E_SHUTTING_DOWN : API_E_INTERNAL, "%s", err_text(&ei, rc));
        return;
    }
    metrics_offload(r->metrics, why);
    call->job = job;
}

/* Milliseconds a request queued now would wait before it starts: the smoothed service time
 * of each job ahead of it. */
static double estimated_wait_ms(router *r)
{
    sched_stats st;
    sched_get_stats(r->sched, &st);
    return st.service_ms_ewma * (st.depth + (st.busy ? 1 : 0));
}

/* offload_decide for this job and trigger. */
static offload_route decide(router *r, const api_call *call, api_job *job, offload_reason trigger, offload_reason *why)
{
    return offload_decide((cfg_offload_mode)conf(r)->offload_mode, offload_configured(off_of(r)), trigger,
                          call->offload_never, api_job_req(job)->target, why);
}

/* Local, cloud, or a refusal, re-deciding as the device's limits show up: the deadline
 * estimate, then a full queue. Takes the connection's reference to job. */
static void route_job(router *r, api_call *call, api_job *job)
{
    job_data *d = api_job_user(job);
    offload_reason why = OFFLOAD_NO_TRIGGER;
    switch (decide(r, call, job, d->trigger, &why)) {
    case OFFLOAD_ROUTE_REFUSE:
        api_call_error(call, API_E_OFFLOAD_REFUSED, "%s",
                       call->offload_never ? "the request asks for the cloud, but X-Edgellm-Offload: never keeps it here"
                       : !offload_configured(off_of(r)) ? "the request asks for the cloud, but no offload endpoint is configured"
                                                     : "the request asks for the cloud, but offload is off");
        api_job_unref(job);
        return;
    case OFFLOAD_ROUTE_CLOUD:
        send_to_cloud(r, call, job, why);
        return;
    case OFFLOAD_ROUTE_LOCAL:
        break;
    }
    if (!d->local_ok) {
        refuse(call, &d->local);
        api_job_unref(job);
        return;
    }
    double deadline_ms = ms_between(d->submit_ns, d->deadline_ns);
    if (estimated_wait_ms(r) > deadline_ms && decide(r, call, job, OFFLOAD_DEADLINE, &why) == OFFLOAD_ROUTE_CLOUD) {
        send_to_cloud(r, call, job, why);
        return;
    }
    api_job_ref(job); /* the queue's */
    int rc = queue_local(r, job);
    if (rc == 0) {
        call->job = job;
        return;
    }
    api_job_unref(job);
    if (rc == -ERR_BUSY && decide(r, call, job, OFFLOAD_QUEUE_FULL, &why) == OFFLOAD_ROUTE_CLOUD) {
        send_to_cloud(r, call, job, why);
        return;
    }
    api_job_unref(job);
    if (rc == -ERR_BUSY) {
        api_call_error(call, API_E_QUEUE_FULL, "the queue is full (%d waiting); retry later", conf(r)->queue);
        call->retry_after_s = sched_retry_after_s(r->sched);
    } else {
        api_call_error(call, API_E_SHUTTING_DOWN, "the server is shutting down");
    }
}

/* The prompt of req for the model in (file SHA-256 sha, NULL when unknown): rendered, keyed
 * for the cache and, when hit is not NULL, looked up (a hit fills *hit and no tokens are
 * made), then tokenized. A prompt too long for the context is not an error: it is a
 * trigger, and d->local says what the device would answer. Connection thread (with a lease
 * on the model) or the worker. */
static int prepare(router *r, job_data *d, const api_req *req, infer *in, const uint8_t *sha, cache_entry *hit,
                   err_info *ei)
{
    char *text = NULL;
    size_t len = 0;
    int rc = infer_render(in, req, &text, &len, ei);
    if (rc == 0 && (d->keyed = cacheable(r, req, sha))) {
        cache_key(sha, infer_n_ctx(in), req, text, len, d->max_tokens, d->key);
        d->store = !d->no_store;
        if (hit && !d->no_cache) {
            err_info miss = {0}; /* a failed lookup is a miss */
            int found = cache_get(r->db, d->key, hit, &miss);
            metrics_cache_lookup(r->metrics, found > 0);
            if (found > 0) {
                free(text);
                return 0;
            }
        }
    }
    if (rc == 0)
        rc = infer_prompt(in, req, text, len, &d->tokens, &d->n_tokens, ei);
    free(text);
    if (rc == -ERR_CONTEXT_FULL) {
        d->local_ok = false;
        d->trigger = OFFLOAD_CONTEXT;
        d->local.err = API_E_CONTEXT_LENGTH;
        snprintf(d->local.msg, sizeof d->local.msg, "%s", err_text(ei, rc));
        rc = 0;
    }
    return rc;
}

/* The model call->req names (*e NULL when the daemon has none at all). False when call
 * already has its answer: 404 for an unknown model, 400 when it must be named. */
static bool find_model(router *r, api_call *call, models_entry **e)
{
    err_info ei = {0};
    int rc = models_any(r->ms) ? models_find(r->ms, call->req->model, e, &ei) : 0;
    if (rc < 0)
        api_call_error(call, rc == -ERR_NOT_FOUND ? API_E_MODEL_NOT_FOUND : API_E_INVALID_PARAM, "%s", ei.msg);
    return rc == 0;
}

/* The request's model, and what the device can do with it: prepared here when the model is
 * loaded, later by the worker when not. False when call already has its answer (an error). */
static bool choose_model(router *r, api_call *call, job_data *d, cache_entry *hit)
{
    if (!find_model(r, call, &d->entry))
        return false;
    err_info ei = {0};
    int rc;
    d->local_ok = model_usable(r, d->entry, &d->local);
    if (!d->local_ok) {
        d->trigger = OFFLOAD_NO_MODEL;
        return true;
    }
    const uint8_t *sha;
    infer *in = models_lease(r->ms, d->entry, &sha);
    if (!in)
        return true; /* not loaded: the worker loads it and prepares the prompt then */
    rc = prepare(r, d, call->req, in, sha, hit, &ei);
    models_unlease(r->ms, d->entry);
    if (rc < 0)
        api_call_error(call, api_err_from_code(rc), "%s", err_text(&ei, rc));
    return rc == 0;
}

static void submit(router *r, api_call *call)
{
    api_req *req = call->req;
    const cfg *c = conf(r);
    if (atomic_load(&r->draining)) {
        api_call_error(call, API_E_SHUTTING_DOWN, "the server is shutting down");
        return;
    }
    job_data *d = calloc(1, sizeof *d);
    if (!d) {
        api_call_error(call, API_E_INTERNAL, "out of memory");
        return;
    }
    d->trigger = OFFLOAD_NO_TRIGGER;
    d->max_tokens = req->max_tokens > 0 ? req->max_tokens : c->max_tokens;
    d->submit_ns = sched_now_ns();
    double timeout_ms = req->timeout_s > 0 ? req->timeout_s * 1e3 : c->timeout_ms;
    d->deadline_ns = d->submit_ns + (int64_t)(timeout_ms * 1e6);
    d->no_cache = call->no_cache;
    d->no_store = call->no_store;
    cache_entry hit = {0};
    if (!choose_model(r, call, d, &hit)) {
        job_data_free(d);
        return;
    }
    if (!req->seed_set)
        req->sampling.seed = next_random(r);
    api_job *job;
    err_info ei = {0};
    int rc = api_job_new(&job, req, JOB_RING_BYTES, &ei);
    if (rc < 0) {
        job_data_free(d);
        cache_entry_free(&hit);
        api_call_error(call, API_E_INTERNAL, "%s", err_text(&ei, rc));
        return;
    }
    call->req = NULL; /* the job owns it now */
    api_job_set_user(job, d, job_data_free);
    const char *id = d->entry ? models_entry_id(d->entry) : req->model[0] ? req->model : "edgellm";
    api_sse_init(api_job_sse(job), req->kind == API_KIND_CHAT, id, next_random(r), (long long)time(NULL));
    if (hit.text) {
        replay(r, job, &hit);
        cache_entry_free(&hit);
        call->job = job;
        return;
    }
    if (d->keyed && d->store)
        api_job_capture(job);
    route_job(r, call, job);
}

static void reply_json(api_call *call, int status, cJSON *root)
{
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    api_call_reply(call, status, NULL, text);
}

/* The default model's health, as /health and the metrics see it; why it is not ready in
 * msg (cap bytes). */
static model_state health(router *r, char *msg, size_t cap)
{
    models_entry *e = models_default(r->ms);
    check_model(r, e);
    model_state s = (model_state)atomic_load(&r->state);
    msg[0] = 0;
    if (s == MODEL_NONE)
        snprintf(msg, cap, "no model is loaded: start edgellmd with --model FILE.gguf or --models-dir DIR");
    else if (s == MODEL_FAILED)
        snprintf(msg, cap, "%s", r->fail_msg);
    else if (s == MODEL_READY && e) {
        models_state es = models_state_of(r->ms, e, msg, cap);
        if (es == MODELS_FAILED || es == MODELS_RETIRED)
            s = MODEL_FAILED;
    }
    return s;
}

static void reply_health(router *r, api_call *call)
{
    char msg[ERR_MSG_MAX];
    model_state s = health(r, msg, sizeof msg);
    static const char *const names[] = {[MODEL_NONE] = "no_model", [MODEL_LOADING] = "loading", [MODEL_READY] = "ok",
                                        [MODEL_FAILED] = "error"};
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", names[s]);
    if (msg[0])
        cJSON_AddStringToObject(root, "message", msg);
    reply_json(call, s == MODEL_READY ? 200 : 503, root);
}

static void add_model(void *ctx, const models_info *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "object", "model");
    cJSON_AddNumberToObject(o, "created", (double)m->created);
    cJSON_AddStringToObject(o, "owned_by", "edgellm");
    cJSON_AddStringToObject(o, "state", models_state_name(m->state));
    if (m->is_default)
        cJSON_AddBoolToObject(o, "default", true);
    cJSON_AddNumberToObject(o, "size_bytes", (double)m->bytes);
    if (m->message[0])
        cJSON_AddStringToObject(o, "error", m->message);
    cJSON_AddItemToArray(ctx, o);
}

static void reply_models(router *r, api_call *call)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    models_list(r->ms, add_model, cJSON_AddArrayToObject(root, "data"));
    reply_json(call, 200, root);
}

typedef struct status_ctx {
    router *r;
    cJSON *waiting;
    cJSON *in_flight;
    int64_t now;
} status_ctx;

static void status_visit(void *ctx, void *item, int position)
{
    status_ctx *sc = ctx;
    if (item == &sc->r->start_item)
        return;
    api_job *job = item;
    job_data *d = api_job_user(job);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", api_job_sse(job)->id);
    cJSON_AddBoolToObject(o, "stream", api_job_req(job)->stream);
    if (position == 0) {
        cJSON_AddNumberToObject(o, "running_ms", ms_between(atomic_load(&d->start_ns), sc->now));
        cJSON_AddNumberToObject(o, "prompt_tokens", d->n_tokens);
        sc->in_flight = o;
    } else {
        cJSON_AddNumberToObject(o, "position", position);
        cJSON_AddNumberToObject(o, "waited_ms", ms_between(d->submit_ns, sc->now));
        cJSON_AddItemToArray(sc->waiting, o);
    }
}

static uint64_t rss_bytes(void)
{
    unsigned long long pages_total = 0, pages_rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &pages_total, &pages_rss) != 2)
            pages_rss = 0;
        fclose(f);
    }
    return (uint64_t)pages_rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void reply_status(router *r, api_call *call)
{
    const cfg *c = conf(r);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", router_model_state(r));
    models_entry *e = models_current(r->ms);
    infer *in = e ? models_lease(r->ms, e, NULL) : NULL;
    if (in) {
        cJSON *m = cJSON_AddObjectToObject(root, "model");
        cJSON_AddStringToObject(m, "id", infer_model_id(in));
        cJSON_AddStringToObject(m, "path", infer_model_path(in));
        cJSON_AddStringToObject(m, "arch", infer_arch(in));
        cJSON_AddNumberToObject(m, "n_ctx", infer_n_ctx(in));
        cJSON_AddStringToObject(m, "chat_template", chat_family_name(infer_chat_family(in)));
        cJSON_AddStringToObject(m, "chat_template_source", infer_chat_source(in));
        cJSON_AddNumberToObject(m, "weight_bytes", (double)infer_weight_bytes(in));
        cJSON_AddStringToObject(m, "weights_from", infer_source(in));
    } else {
        cJSON_AddNullToObject(root, "model");
    }
    sched_stats st;
    sched_get_stats(r->sched, &st);
    status_ctx sc = {.r = r, .waiting = cJSON_CreateArray(), .now = sched_now_ns()};
    sched_visit(r->sched, status_visit, &sc);
    cJSON *q = cJSON_AddObjectToObject(root, "queue");
    cJSON_AddNumberToObject(q, "depth", st.depth);
    cJSON_AddNumberToObject(q, "capacity", st.capacity);
    cJSON_AddItemToObject(q, "waiting", sc.waiting);
    cJSON_AddNumberToObject(q, "served", (double)st.served);
    cJSON_AddNumberToObject(q, "service_ms_ewma", st.service_ms_ewma);
    if (sc.in_flight)
        cJSON_AddItemToObject(root, "in_flight", sc.in_flight);
    else
        cJSON_AddNullToObject(root, "in_flight");
    cJSON *mem = cJSON_AddObjectToObject(root, "memory");
    cJSON_AddNumberToObject(mem, "rss_bytes", (double)rss_bytes());
    cJSON_AddNumberToObject(mem, "weight_bytes", in ? (double)infer_weight_bytes(in) : 0);
    cJSON_AddNumberToObject(mem, "budget_bytes", (double)((uint64_t)c->memory_budget_mb << 20));
    if (in)
        models_unlease(r->ms, e);
    /* what a reload may have changed (router.h) */
    cJSON *lim = cJSON_AddObjectToObject(root, "limits");
    cJSON_AddNumberToObject(lim, "max_tokens", c->max_tokens);
    cJSON_AddNumberToObject(lim, "timeout_ms", c->timeout_ms);
    cJSON_AddNumberToObject(lim, "grace_ms", c->grace_ms);
    cJSON_AddNumberToObject(lim, "model_keep_alive_s", c->model_keep_alive_s);
    cJSON_AddNumberToObject(root, "reloads", atomic_load(&r->reloads));
    cJSON_AddNumberToObject(root, "uptime_s", ms_between(r->start_ns, sched_now_ns()) / 1e3);
    cJSON_AddBoolToObject(root, "draining", atomic_load(&r->draining));
    reply_json(call, 200, root);
}

static void reply_metrics(router *r, api_call *call)
{
    sched_stats st;
    sched_get_stats(r->sched, &st);
    metrics_gauges g = {
        .queue_depth = st.depth,
        .queue_capacity = st.capacity,
        .busy = st.busy,
        .model_ready = !strcmp(router_model_state(r), "ok"),
        .uptime_s = ms_between(r->start_ns, sched_now_ns()) / 1e3,
        .retry_after_s = sched_retry_after_s(r->sched),
    };
    char *text = NULL;
    err_info ei = {0};
    int rc = metrics_render(r->metrics, &g, &text, &ei);
    if (rc < 0)
        api_call_error(call, API_E_INTERNAL, "%s", err_text(&ei, rc));
    else
        api_call_reply(call, 200, "text/plain; version=0.0.4", text);
}

/* /tokenize and /detokenize need the model's vocabulary: its model must be loaded (a
 * completion for it loads it). */
static void reply_tokens(router *r, api_call *call)
{
    models_entry *e = NULL;
    if (!find_model(r, call, &e))
        return;
    refusal f;
    infer *in = NULL;
    if (model_usable(r, e, &f) && !(in = models_lease(r->ms, e, NULL))) {
        f = (refusal){.err = API_E_NO_MODEL};
        snprintf(f.msg, sizeof f.msg, "model '%s' is not loaded: a completion for it loads it", models_entry_id(e));
    }
    if (!in) {
        refuse(call, &f);
        return;
    }
    char *json = NULL;
    err_info ei = {0};
    int rc = call->route == API_ROUTE_TOKENIZE ? infer_tokenize(in, call->req, &json, &ei)
                                               : infer_detokenize(in, call->req, &json, &ei);
    models_unlease(r->ms, e);
    if (rc < 0)
        api_call_error(call, api_err_from_code(rc), "%s", err_text(&ei, rc));
    else
        api_call_reply(call, 200, NULL, json);
}

/* The route choice: one switch, so every route's handling is found here. */
static void handle(void *ud, api_call *call)
{
    router *r = ud;
    switch (call->route) {
    case API_ROUTE_HEALTH: reply_health(r, call); break;
    case API_ROUTE_MODELS: reply_models(r, call); break;
    case API_ROUTE_STATUS: reply_status(r, call); break;
    case API_ROUTE_METRICS: reply_metrics(r, call); break;
    case API_ROUTE_CHAT:
    case API_ROUTE_COMPLETIONS: submit(r, call); break;
    case API_ROUTE_TOKENIZE:
    case API_ROUTE_DETOKENIZE: reply_tokens(r, call); break;
    case API_ROUTE_UNKNOWN: api_call_error(call, API_E_NOT_FOUND, "no such route"); break;
    }
}

static void release(void *ud, api_job *job)
{
    router *r = ud;
    remember(r, job, api_job_user(job));
    if (sched_remove(r->sched, job)) {
        /* Its client left while it waited: it leaves the queue now, never reaching the worker. */
        unqueue(r, job);
        metrics_cancelled(r->metrics);
        api_job_unref(job);
        r->wake(r->wake_ud);
    } else if (!api_job_done(job, NULL)) {
        api_job_cancel(job); /* running: gen_run stops at the next token or prefill chunk */
        offload_notice_cancel(off_of(r)); /* or at the cloud: the exchange is aborted */
    }
    api_job_unref(job);
}

static void log_request(void *ud, const api_log *rec)
{
    router *r = ud;
    metrics_request(r->metrics, rec->route, rec->status);
    const api_result *res = rec->result;
    fprintf(stderr, "edgellmd: %s %s %d queue_ms=%.1f prompt=%d gen=%d ms=%.3f%s%s%s\n", rec->method, rec->path,
            rec->status, res ? res->queue_ms : 0.0, res ? res->n_prompt : 0, res ? res->n_generated : 0, rec->total_ms,
            rec->source ? " source=" : "", rec->source ? rec->source : "", rec->client_gone ? " client_gone" : "");
    r->wake(r->wake_ud); /* a drain may be waiting for the last answer to go out */
}

/* ---- life cycle ------------------------------------------------------------------- */

/* The worker's housekeeping (sched_set_chore): idle models go, then the loop re-arms its
 * keep-alive timer. */
static void chore(void *ud)
{
    router *r = ud;
    models_sweep(r->ms);
    r->wake(r->wake_ud);
}

int router_new(router **out, const cfg *c, cache *db, offload *off, void (*wake)(void *), void *wake_ud,
               err_info *ei)
{
    *out = NULL;
    router *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(ei, -ENOMEM, "out of memory");
    atomic_init(&r->c, c);
    atomic_init(&r->off, off);
    r->db = db;
    r->h = (api_handler){.ud = r, .handle = handle, .release = release, .log = log_request};
    r->wake = wake;
    r->wake_ud = wake_ud;
    r->start_ns = sched_now_ns();
    r->salt = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)r->start_ns;
    atomic_init(&r->state, MODEL_NONE);
    int rc = metrics_new(&r->metrics, ei);
    if (rc == 0)
        rc = models_new(&r->ms, c, db, ei);
    if (rc == 0)
        rc = sched_new(&r->sched, c->queue, run_job, drop_job, r, ei);
    if (rc < 0) {
        router_free(r);
        return rc;
    }
    sched_set_chore(r->sched, chore);
    *out = r;
    return 0;
}

void router_free(router *r)
{
    if (!r)
        return;
    if (r->sched)
        router_drain(r, true);
    sched_free(r->sched);
    models_free(r->ms);
    metrics_free(r->metrics);
    free(r);
}

const api_handler *router_handler(router *r) { return &r->h; }

void router_start(router *r)
{
    if (!models_default(r->ms)) {
        atomic_store(&r->state, models_any(r->ms) ? MODEL_READY : MODEL_NONE);
        return;
    }
    atomic_store(&r->state, MODEL_LOADING);
    /* The worker loads it and creates the session: its thread pool must belong to the
     * thread that runs it, and loads happen nowhere else (models.h). */
    if (sched_submit(r->sched, &r->start_item, INT64_MAX) < 0) {
        snprintf(r->fail_msg, sizeof r->fail_msg, "the worker refused to start the model");
        atomic_store(&r->state, MODEL_FAILED);
    }
}

const char *router_model_state(router *r)
{
    static const char *const names[] = {[MODEL_NONE] = "no_model", [MODEL_LOADING] = "loading", [MODEL_READY] = "ok",
                                        [MODEL_FAILED] = "error"};
    char msg[ERR_MSG_MAX];
    return names[health(r, msg, sizeof msg)];
}

int router_reconfigure(router *r, const cfg *c, offload *off, err_info *ei)
{
    int rc = sched_set_capacity(r->sched, c->queue, ei);
    atomic_store(&r->c, c);
    atomic_store(&r->off, off);
    models_reconfigure(r->ms, c);
    atomic_fetch_add(&r->reloads, 1);
    models_forget_failures(r->ms);
    if (atomic_load(&r->state) == MODEL_FAILED)
        router_start(r); /* the default model's file may have been fixed */
    return rc;
}

int64_t router_next_sweep(router *r) { return models_next_sweep(r->ms); }
void router_sweep(router *r) { sched_poke(r->sched); }

int64_t router_expire(router *r)
{
    sched_expire(r->sched, sched_now_ns());
    return sched_next_deadline(r->sched);
}

static void cancel_running(void *ctx, void *item, int position)
{
    router *r = ctx;
    if (position == 0 && item != &r->start_item)
        api_job_cancel(item);
}

void router_drain(router *r, bool cancel_all)
{
    atomic_store(&r->draining, true);
    sched_stop(r->sched, cancel_all);
    if (cancel_all) {
        sched_visit(r->sched, cancel_running, r);
        offload_cancel_all(off_of(r));
    }
}

bool router_idle(router *r)
{
    sched_stats st;
    sched_get_stats(r->sched, &st);
    return st.depth == 0 && !st.busy && offload_in_flight(off_of(r)) == 0;
}
