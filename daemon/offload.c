/* offload — see offload.h. One `transfer` per cloud exchange: built on the submitting thread
 * (body, easy handle), handed to the loop through a locked inbox and an async wake-up, then
 * driven by curl_multi_socket_action from uv_poll and uv_timer callbacks. The cloud's reply
 * is read line by line (SSE "data:" lines), or whole when it answers with plain JSON, and
 * re-emitted into the job as it arrives. */
#include "offload.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/sched.h"

enum {
    ANSWER_MAX = 16 << 20,  /* bytes of one cloud reply (and of the job's elastic ring) */
    ERROR_BODY_MAX = 4096,  /* bytes kept of a non-2xx body, to pick out its error message */
    KEY_MAX = 1024,
};

/* ---- policy ------------------------------------------------------------------------- */

const char *offload_reason_name(offload_reason r)
{
    static const char *const names[] = {
        [OFFLOAD_QUEUE_FULL] = "queue_full", [OFFLOAD_DEADLINE] = "deadline", [OFFLOAD_CONTEXT] = "context",
        [OFFLOAD_NO_MODEL] = "no_model",     [OFFLOAD_REQUESTED] = "requested", [OFFLOAD_PREFERRED] = "prefer",
    };
    return r < OFFLOAD_REASON_COUNT ? names[r] : "none";
}

const char *offload_outcome_name(offload_outcome o)
{
    static const char *const names[] = {
        [OFFLOAD_OK] = "ok",           [OFFLOAD_E_REFUSED] = "refused", [OFFLOAD_E_TIMEOUT] = "timeout",
        [OFFLOAD_E_STATUS] = "status", [OFFLOAD_E_MALFORMED] = "malformed", [OFFLOAD_E_NETWORK] = "network",
        [OFFLOAD_E_CANCELLED] = "cancelled",
    };
    return o < OFFLOAD_OUTCOME_COUNT ? names[o] : "unknown";
}

offload_route offload_decide(cfg_offload_mode mode, bool configured, offload_reason trigger, bool never,
                             api_target target, offload_reason *why)
{
    if (target == API_TARGET_LOCAL)
        return OFFLOAD_ROUTE_LOCAL;
    bool allowed = configured && mode != CFG_OFFLOAD_OFF && !never;
    if (target == API_TARGET_CLOUD) {
        *why = OFFLOAD_REQUESTED;
        return allowed ? OFFLOAD_ROUTE_CLOUD : OFFLOAD_ROUTE_REFUSE;
    }
    if (!allowed || (trigger == OFFLOAD_NO_TRIGGER && mode != CFG_OFFLOAD_PREFER))
        return OFFLOAD_ROUTE_LOCAL;
    *why = trigger != OFFLOAD_NO_TRIGGER ? trigger : OFFLOAD_PREFERRED;
    return OFFLOAD_ROUTE_CLOUD;
}

/* ---- the request body -------------------------------------------------------------------- */

/* A float parameter as the client would have written it (0.7, not 0.699999988). */
static cJSON *add_float(cJSON *obj, const char *name, float v)
{
    char text[32];
    snprintf(text, sizeof text, "%.7g", (double)v);
    return cJSON_AddNumberToObject(obj, name, strtod(text, NULL));
}

int offload_body(const api_req *req, const char *model, int32_t max_tokens, char **body, err_info *ei)
{
    *body = NULL;
    const sampler_params *sp = &req->sampling;
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && model && *model)
        ok = cJSON_AddStringToObject(root, "model", model) != NULL;
    if (ok && req->kind == API_KIND_CHAT) {
        cJSON *msgs = cJSON_AddArrayToObject(root, "messages");
        ok = msgs != NULL;
        for (size_t i = 0; ok && i < req->n_msgs; i++) {
            cJSON *m = cJSON_CreateObject();
            ok = m && cJSON_AddItemToArray(msgs, m) && cJSON_AddStringToObject(m, "role", req->msgs[i].role) &&
                 cJSON_AddStringToObject(m, "content", req->msgs[i].content);
        }
    } else if (ok) {
        ok = cJSON_AddStringToObject(root, "prompt", req->prompt) != NULL;
    }
    ok = ok && cJSON_AddNumberToObject(root, "max_tokens", max_tokens) && add_float(root, "temperature", sp->temperature) &&
         add_float(root, "top_p", sp->top_p);
    if (ok && sp->presence_penalty != 0)
        ok = add_float(root, "presence_penalty", sp->presence_penalty) != NULL;
    if (ok && sp->frequency_penalty != 0)
        ok = add_float(root, "frequency_penalty", sp->frequency_penalty) != NULL;
    if (ok && req->seed_set)
        ok = cJSON_AddNumberToObject(root, "seed", (double)(int64_t)sp->seed) != NULL;
    if (ok && req->n_stop) {
        cJSON *stop = cJSON_AddArrayToObject(root, "stop");
        for (int i = 0; ok && i < req->n_stop; i++)
            ok = stop && cJSON_AddItemToArray(stop, cJSON_CreateString(req->stop[i]));
    }
    cJSON *so = NULL;
    ok = ok && cJSON_AddTrueToObject(root, "stream") && (so = cJSON_AddObjectToObject(root, "stream_options")) &&
         cJSON_AddTrueToObject(so, "include_usage");
    if (ok)
        *body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return *body ? 0 : err_set(ei, -ENOMEM, "offload: out of memory building the request");
}

/* ---- the client ----------------------------------------------------------------------------- */

typedef enum reply_kind { REPLY_UNKNOWN, REPLY_SSE, REPLY_JSON, REPLY_ERROR } reply_kind;

/* A growable byte buffer (doubling, so appends are amortised). */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static bool buf_add(buf *b, const char *data, size_t n, size_t limit)
{
    if (n > limit || b->len > limit - n)
        return false;
    if (b->cap - b->len <= n) {
        size_t ncap = b->cap ? b->cap : 1024;
        while (ncap - b->len <= n)
            ncap *= 2;
        char *p = realloc(b->p, ncap);
        if (!p)
            return false;
        b->p = p;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0; /* always a C string too: the audit and cJSON read it so */
    return true;
}

typedef struct transfer {
    struct transfer *next;     /* in the inbox, then in the active list */
    offload *o;
    api_job *job;
    offload_reason why;
    offload_done_fn done;
    void *ud;
    CURL *easy;
    char *body;
    int64_t start_ns;
    reply_kind kind;
    buf raw;                   /* SSE: the unfinished line; JSON/error: the whole body */
    buf text;                  /* the answer so far */
    int64_t received;          /* bytes from the cloud */
    char finish[16];
    int32_t n_prompt, n_generated;
    bool committed;            /* the job has cloud bytes: no fallback any more */
    offload_outcome failure;   /* what the parser found wrong (OFFLOAD_OK: nothing) */
} transfer;

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    offload *o;
} sock_ctx;

struct offload {
    const cfg *c;
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    uv_async_t inbox_wake;
    int open_handles;          /* timer and async: the memory goes when both have closed */
    pthread_mutex_t mu;
    transfer *inbox;           /* mu */
    bool stopped;              /* mu */
    transfer *active;          /* loop thread */
    atomic_int in_flight;
    cache *audit;
    struct curl_slist *headers; /* shared by every transfer; holds the key */
    char url_chat[CFG_PATH_MAX + 32], url_text[CFG_PATH_MAX + 32];
    char describe[512];
    char frame[API_SSE_FRAME_MAX]; /* the loop's SSE scratch */
};

static double ms_since(int64_t t0)
{
    return (double)(sched_now_ns() - t0) / 1e6;
}

/* Text of the answer: kept, and passed on at once when the client streams (the first
 * piece commits the job to the cloud). */
static bool add_text(transfer *t, const char *s, size_t n)
{
    if (!n)
        return true;
    if (!buf_add(&t->text, s, n, ANSWER_MAX)) {
        t->failure = OFFLOAD_E_MALFORMED;
        return false;
    }
    if (!api_job_req(t->job)->stream)
        return true;
    if (!t->committed) {
        t->committed = true;
        api_job_commit(t->job, API_SOURCE_CLOUD);
        api_job_emit_start(t->job, t->o->frame);
    }
    int rc = api_job_emit_text(t->job, s, n, t->o->frame);
    if (rc < 0)
        t->failure = rc == -ERR_CANCELLED ? OFFLOAD_E_CANCELLED : OFFLOAD_E_MALFORMED;
    return rc == 0;
}

/* A usage count from the cloud, or keep when it is not a whole number in 0..INT32_MAX:
 * converting a double outside int32's range (1e300, say) is undefined behaviour. */
static int32_t token_count(const cJSON *n, int32_t keep)
{
    if (!cJSON_IsNumber(n) || !(n->valuedouble >= 0 && n->valuedouble <= INT32_MAX) ||
        n->valuedouble != floor(n->valuedouble))
        return keep;
    return (int32_t)n->valuedouble;
}

/* One completion object, streamed chunk or whole: its text, finish_reason and usage. */
static bool take_completion(transfer *t, const cJSON *root)
{
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err && !cJSON_IsNull(err)) {
        t->failure = OFFLOAD_E_STATUS;
        return false;
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsArray(choices)) {
        t->failure = OFFLOAD_E_MALFORMED;
        return false;
    }
    const cJSON *ch = cJSON_GetArrayItem(choices, 0);
    if (ch) {
        const cJSON *holder = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        if (!holder)
            holder = cJSON_GetObjectItemCaseSensitive(ch, "message");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(holder ? holder : ch, holder ? "content" : "text");
        const char *s = cJSON_GetStringValue(content);
        if (s && !add_text(t, s, strlen(s)))
            return false;
        const char *finish = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason"));
        if (finish)
            snprintf(t->finish, sizeof t->finish, "%s", finish);
    }
    if (cJSON_IsObject(usage)) {
        t->n_prompt = token_count(cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens"), t->n_prompt);
        t->n_generated = token_count(cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens"), t->n_generated);
    }
    return true;
}

static bool take_json(transfer *t, const char *s, size_t n)
{
    cJSON *root = cJSON_ParseWithLength(s, n);
    bool ok = cJSON_IsObject(root) && take_completion(t, root);
    if (!cJSON_IsObject(root))
        t->failure = OFFLOAD_E_MALFORMED;
    cJSON_Delete(root);
    return ok;
}

/* One SSE line: "data: {...}" or "data: [DONE]"; comments, other fields, blanks ignored. */
static bool take_line(transfer *t, char *line, size_t n)
{
    if (n && line[n - 1] == '\r')
        n--;
    if (n < 5 || memcmp(line, "data:", 5))
        return true;
    line += 5;
    n -= 5;
    if (n && *line == ' ')
        line++, n--;
    if (n == 6 && !memcmp(line, "[DONE]", 6))
        return true;
    return take_json(t, line, n);
}

static reply_kind reply_kind_of(transfer *t)
{
    long status = 0;
    char *type = NULL;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &type);
    if (status / 100 != 2)
        return REPLY_ERROR;
    return type && strstr(type, "text/event-stream") ? REPLY_SSE : REPLY_JSON;
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *ud)
{
    transfer *t = ud;
    size_t n = size * nmemb;
    t->received += (int64_t)n;
    if (t->kind == REPLY_UNKNOWN)
        t->kind = reply_kind_of(t);
    if (t->kind == REPLY_ERROR) {
        /* only a bounded prefix is kept: it is never shown (it may echo the key) */
        size_t keep = t->raw.len < ERROR_BODY_MAX ? ERROR_BODY_MAX - t->raw.len : 0;
        buf_add(&t->raw, data, n < keep ? n : keep, ERROR_BODY_MAX);
        return n;
    }
    if (!buf_add(&t->raw, data, n, ANSWER_MAX)) {
        t->failure = OFFLOAD_E_MALFORMED;
        return 0;
    }
    if (t->kind == REPLY_JSON)
        return n;
    /* every complete line now, the unfinished rest stays */
    char *p = t->raw.p, *end = t->raw.p + t->raw.len, *nl;
    while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
        if (!take_line(t, p, (size_t)(nl - p)))
            return 0;
        p = nl + 1;
    }
    t->raw.len = (size_t)(end - p);
    memmove(t->raw.p, p, t->raw.len);
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    transfer *t = ud;
    return api_job_cancelled(t->job); /* nonzero aborts the transfer: its client left */
}

static offload_outcome classify(transfer *t, CURLcode code)
{
    switch (code) {
    case CURLE_OK:
        break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return OFFLOAD_E_REFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return OFFLOAD_E_TIMEOUT;
    case CURLE_ABORTED_BY_CALLBACK:
        return OFFLOAD_E_CANCELLED;
    case CURLE_WRITE_ERROR:
        return t->failure != OFFLOAD_OK ? t->failure : OFFLOAD_E_NETWORK;
    default:
        return OFFLOAD_E_NETWORK;
    }
    if (t->failure != OFFLOAD_OK)
        return t->failure;
    if (t->kind == REPLY_ERROR || t->kind == REPLY_UNKNOWN)
        return t->kind == REPLY_ERROR ? OFFLOAD_E_STATUS : OFFLOAD_E_MALFORMED;
    /* the end of the body: an SSE line without its newline, or the whole JSON answer */
    bool ok = t->kind == REPLY_SSE ? take_line(t, t->raw.p ? t->raw.p : "", t->raw.len)
                                   : take_json(t, t->raw.p ? t->raw.p : "", t->raw.len);
    if (!ok)
        return t->failure != OFFLOAD_OK ? t->failure : OFFLOAD_E_MALFORMED;
    return t->finish[0] ? OFFLOAD_OK : OFFLOAD_E_MALFORMED; /* a stream cut short has no finish_reason */
}

static void audit(transfer *t, offload_outcome out, long status, double ms)
{
    offload *o = t->o;
    if (!o->audit)
        return;
    bool content = o->c->offload_audit_content;
    cache_audit_rec rec = {
        .at_ms = (int64_t)time(NULL) * 1000,
        .reason = offload_reason_name(t->why),
        .outcome = offload_outcome_name(out),
        .http_status = (int)status,
        .request_bytes = (int64_t)strlen(t->body),
        .response_bytes = t->received,
        .ms = ms,
        .request = content ? t->body : NULL,
        .response = content ? (t->text.p ? t->text.p : "") : NULL,
    };
    err_info ei = {0};
    if (cache_audit(o->audit, &rec, &ei) < 0)
        fprintf(stderr, "edgellmd: offload audit not written: %s\n", ei.msg);
}

static void transfer_free(transfer *t)
{
    curl_easy_cleanup(t->easy);
    free(t->body);
    free(t->raw.p);
    free(t->text.p);
    free(t);
}

/* The end of an exchange (taken off the multi handle already): the answer or the failure
 * goes into the job as far as it can, then to the done callback. */
static void complete(transfer *t, CURLcode code)
{
    offload *o = t->o;
    offload_outcome out = classify(t, code);
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    api_job *job = t->job;
    api_result res = {0};
    if (out == OFFLOAD_OK) {
        res.finish_reason = strcmp(t->finish, "length") ? "stop" : "length";
        res.n_prompt = t->n_prompt;
        res.n_generated = t->n_generated;
        if (!api_job_req(job)->stream) {
            api_job_commit(job, API_SOURCE_CLOUD);
            api_job_emit_text(job, t->text.p ? t->text.p : "", t->text.len, o->frame);
        } else if (!t->committed) {
            api_job_commit(job, API_SOURCE_CLOUD); /* an empty answer */
            api_job_emit_start(job, o->frame);
        }
        t->committed = true;
        api_job_emit_end(job, &res, o->frame);
    } else if (t->committed) {
        res.code = -ERR_IO;
        res.has_err = true;
        res.err = API_E_UPSTREAM;
        snprintf(res.message, sizeof res.message, "the cloud endpoint failed mid-answer (%s)", offload_outcome_name(out));
        api_job_emit_end(job, &res, o->frame);
    }
    double ms = ms_since(t->start_ns);
    audit(t, out, status, ms);
    fprintf(stderr, "edgellmd: offload %s reason=%s -> %s (HTTP %ld, %lld bytes) %.1f ms%s\n", api_job_sse(job)->id,
            offload_reason_name(t->why), offload_outcome_name(out), status, (long long)t->received, ms,
            out == OFFLOAD_OK || out == OFFLOAD_E_CANCELLED ? "" : t->committed ? "; stream ended with an error"
                                                                                  : "; falling back to local");
    offload_done_fn done = t->done;
    void *ud = t->ud;
    bool committed = t->committed;
    transfer_free(t);
    atomic_fetch_sub(&o->in_flight, 1);
    done(ud, job, out, committed, &res);
}

static void unlink_active(offload *o, transfer *t)
{
    for (transfer **p = &o->active; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            return;
        }
}

static void check_done(offload *o)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(o->multi, &left)))
        if (m->msg == CURLMSG_DONE) {
            transfer *t = NULL;
            CURLcode code = m->data.result;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            curl_multi_remove_handle(o->multi, m->easy_handle);
            unlink_active(o, t);
            complete(t, code);
        }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx *ctx = p->data;
    offload *o = ctx->o; /* ctx may be closed during the action */
    int flags = status < 0 ? CURL_CSELECT_ERR
                           : (events & UV_READABLE ? CURL_CSELECT_IN : 0) | (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(o->multi, ctx->fd, flags, &running);
    check_done(o);
}

static void free_sock(uv_handle_t *h)
{
    free(h->data);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *ud, void *sockp)
{
    (void)easy;
    offload *o = ud;
    sock_ctx *ctx = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (ctx) {
            uv_poll_stop(&ctx->poll);
            uv_close((uv_handle_t *)&ctx->poll, free_sock);
            curl_multi_assign(o->multi, s, NULL);
        }
        return 0;
    }
    if (!ctx) {
        if (!(ctx = calloc(1, sizeof *ctx)))
            return -1;
        ctx->fd = s;
        ctx->o = o;
        if (uv_poll_init_socket(o->loop, &ctx->poll, s) < 0) {
            free(ctx);
            return -1;
        }
        ctx->poll.data = ctx;
        curl_multi_assign(o->multi, s, ctx);
    }
    int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&ctx->poll, events, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *timer)
{
    offload *o = timer->data;
    int running;
    curl_multi_socket_action(o->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(o);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *ud)
{
    (void)multi;
    offload *o = ud;
    if (timeout_ms < 0)
        uv_timer_stop(&o->timer);
    else
        uv_timer_start(&o->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* The loop takes what the connection threads submitted, and drops exchanges whose client
 * left. */
static void on_inbox(uv_async_t *a)
{
    offload *o = a->data;
    for (transfer **p = &o->active; *p;) {
        transfer *t = *p;
        if (!api_job_cancelled(t->job)) {
            p = &t->next;
            continue;
        }
        *p = t->next;
        curl_multi_remove_handle(o->multi, t->easy);
        complete(t, CURLE_ABORTED_BY_CALLBACK);
    }
    pthread_mutex_lock(&o->mu);
    transfer *t = o->inbox;
    o->inbox = NULL;
    pthread_mutex_unlock(&o->mu);
    while (t) {
        transfer *next = t->next;
        t->start_ns = sched_now_ns();
        if (curl_multi_add_handle(o->multi, t->easy) != CURLM_OK) {
            complete(t, CURLE_FAILED_INIT);
        } else {
            t->next = o->active;
            o->active = t;
        }
        t = next;
    }
}

/* The key, trimmed; refused when it could break the header it goes into. */
static int read_key(const cfg *c, char *key, size_t cap, const char **from, err_info *ei)
{
    key[0] = 0;
    *from = "none";
    if (c->offload_key_file[0]) {
        FILE *f = fopen(c->offload_key_file, "r");
        if (!f)
            return err_set(ei, -errno, "offload key file %s: %s", c->offload_key_file, strerror(errno));
        size_t n = fread(key, 1, cap - 1, f);
        fclose(f);
        key[n] = 0;
        *from = "file";
    } else if (getenv("EDGELLM_OFFLOAD_KEY")) {
        snprintf(key, cap, "%s", getenv("EDGELLM_OFFLOAD_KEY"));
        *from = "environment";
    }
    size_t n = strlen(key);
    while (n && isspace((unsigned char)key[n - 1]))
        key[--n] = 0;
    for (size_t i = 0; i < n; i++)
        if (key[i] <= ' ' || key[i] > '~')
            return err_set(ei, -EINVAL, "the offload API key (from %s) has a character that cannot go in a header", *from);
    return 0;
}

/* "MODE to scheme://host:port/path" without credentials, for the log. */
static void describe(offload *o, const char *key_from)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, o->c->offload_url, 0) == CURLUE_OK) {
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
        curl_url_get(u, CURLUPART_HOST, &host, 0);
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
        curl_url_get(u, CURLUPART_PATH, &path, 0);
    }
    static const char *const modes[] = {[CFG_OFFLOAD_OFF] = "off", [CFG_OFFLOAD_FALLBACK] = "fallback",
                                        [CFG_OFFLOAD_PREFER] = "prefer"};
    snprintf(o->describe, sizeof o->describe, "%s to %s://%s:%s%s (API key from %s)", modes[o->c->offload_mode],
             scheme ? scheme : "?", host ? host : "?", port ? port : "?", path ? path : "", key_from);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
}

static void on_closed(uv_handle_t *h)
{
    offload *o = h->data;
    if (--o->open_handles == 0) {
        pthread_mutex_destroy(&o->mu);
        free(o);
        curl_global_cleanup();
    }
}

int offload_new(offload **out, uv_loop_t *loop, const cfg *c, cache *audit_db, err_info *ei)
{
    *out = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return err_set(ei, -ERR_IO, "offload: libcurl failed to initialise");
    offload *o = calloc(1, sizeof *o);
    if (!o) {
        curl_global_cleanup();
        return err_set(ei, -ENOMEM, "offload: out of memory");
    }
    o->c = c;
    o->loop = loop;
    o->audit = audit_db;
    pthread_mutex_init(&o->mu, NULL);
    atomic_init(&o->in_flight, 0);
    size_t n = strlen(c->offload_url);
    while (n && c->offload_url[n - 1] == '/')
        n--;
    snprintf(o->url_chat, sizeof o->url_chat, "%.*s/chat/completions", (int)n, c->offload_url);
    snprintf(o->url_text, sizeof o->url_text, "%.*s/completions", (int)n, c->offload_url);
    char key[KEY_MAX], auth[KEY_MAX + 32];
    const char *key_from;
    int rc = read_key(c, key, sizeof key, &key_from, ei);
    struct curl_slist *h = NULL;
    if (rc == 0) {
        h = curl_slist_append(NULL, "Content-Type: application/json");
        h = h ? curl_slist_append(h, "Accept: text/event-stream") : NULL;
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        h = h && key[0] ? curl_slist_append(h, auth) : h;
        o->headers = h;
        o->multi = curl_multi_init();
        if (!h || !o->multi)
            rc = err_set(ei, -ENOMEM, "offload: out of memory");
    }
    memset(key, 0, sizeof key); /* no copy of the key left lying on the stack */
    memset(auth, 0, sizeof auth);
    if (rc < 0) {
        curl_slist_free_all(o->headers);
        curl_multi_cleanup(o->multi);
        pthread_mutex_destroy(&o->mu);
        free(o);
        curl_global_cleanup();
        return rc;
    }
    describe(o, key_from);
    curl_multi_setopt(o->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(o->multi, CURLMOPT_SOCKETDATA, o);
    curl_multi_setopt(o->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(o->multi, CURLMOPT_TIMERDATA, o);
    uv_timer_init(loop, &o->timer);
    uv_async_init(loop, &o->inbox_wake, on_inbox);
    o->timer.data = o->inbox_wake.data = o;
    o->open_handles = 2;
    *out = o;
    return 0;
}

/* Completes every submitted and running exchange as cancelled; stop refuses new ones. */
static void abort_all(offload *o, bool stop)
{
    pthread_mutex_lock(&o->mu);
    o->stopped |= stop;
    transfer *pending = o->inbox;
    o->inbox = NULL;
    pthread_mutex_unlock(&o->mu);
    while (pending) {
        transfer *next = pending->next;
        complete(pending, CURLE_ABORTED_BY_CALLBACK);
        pending = next;
    }
    while (o->active) {
        transfer *t = o->active;
        o->active = t->next;
        curl_multi_remove_handle(o->multi, t->easy);
        complete(t, CURLE_ABORTED_BY_CALLBACK);
    }
}

void offload_cancel_all(offload *o)
{
    if (o)
        abort_all(o, false);
}

void offload_free(offload *o)
{
    if (!o)
        return;
    abort_all(o, true);
    curl_multi_cleanup(o->multi); /* closes cached connections: their poll handles close */
    curl_slist_free_all(o->headers);
    uv_close((uv_handle_t *)&o->timer, on_closed);
    uv_close((uv_handle_t *)&o->inbox_wake, on_closed);
}

bool offload_configured(const offload *o)
{
    return o && o->c->offload_url[0];
}

const char *offload_describe(const offload *o)
{
    return o->describe;
}

void offload_notice_cancel(offload *o)
{
    if (o)
        uv_async_send(&o->inbox_wake);
}

int offload_in_flight(offload *o)
{
    return o ? atomic_load(&o->in_flight) : 0;
}

int offload_submit(offload *o, api_job *job, offload_reason why, const char *model, int32_t max_tokens,
                   offload_done_fn done, void *ud, err_info *ei)
{
    const api_req *req = api_job_req(job);
    transfer *t = calloc(1, sizeof *t);
    if (!t)
        return err_set(ei, -ENOMEM, "offload: out of memory");
    int rc = offload_body(req, model, max_tokens, &t->body, ei);
    if (rc == 0 && !(t->easy = curl_easy_init()))
        rc = err_set(ei, -ENOMEM, "offload: out of memory");
    if (rc < 0) {
        free(t->body);
        free(t);
        return rc;
    }
    t->o = o;
    t->job = job;
    t->why = why;
    t->done = done;
    t->ud = ud;
    t->start_ns = sched_now_ns();
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->kind == API_KIND_CHAT ? o->url_chat : o->url_text);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(t->body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, o->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, t);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)o->c->offload_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->c->offload_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    api_job_set_elastic(job, ANSWER_MAX);
    pthread_mutex_lock(&o->mu);
    bool stopped = o->stopped;
    if (!stopped) {
        t->next = o->inbox;
        o->inbox = t;
        atomic_fetch_add(&o->in_flight, 1);
    }
    pthread_mutex_unlock(&o->mu);
    if (stopped) {
        api_job_set_elastic(job, 0);
        transfer_free(t);
        return err_set(ei, -ERR_CANCELLED, "the server is shutting down");
    }
    uv_async_send(&o->inbox_wake);
    return 0;
}
