/* api_http — see http.h. One `conn` per request carries it from the first call of the
 * access handler (route, limits) through the body to the reply, and to the completion
 * notice that logs it and releases its job. */
#include "http.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/sse.h"

struct api_server {
    struct MHD_Daemon *mhd;
    atomic_int active;       /* conns between the first call and the completion notice */
    api_server_params p;
    api_handler h;
};

static const struct {
    const char *path;
    const char *method;
    api_kind body_kind;  /* how a POST body is parsed */
} routes[API_ROUTE_COUNT] = {
    [API_ROUTE_HEALTH] = {"/health", "GET", 0},
    [API_ROUTE_MODELS] = {"/v1/models", "GET", 0},
    [API_ROUTE_STATUS] = {"/v1/status", "GET", 0},
    [API_ROUTE_METRICS] = {"/metrics", "GET", 0},
    [API_ROUTE_CHAT] = {"/v1/chat/completions", "POST", API_KIND_CHAT},
    [API_ROUTE_COMPLETIONS] = {"/v1/completions", "POST", API_KIND_COMPLETION},
    [API_ROUTE_TOKENIZE] = {"/tokenize", "POST", API_KIND_TOKENIZE},
    [API_ROUTE_DETOKENIZE] = {"/detokenize", "POST", API_KIND_DETOKENIZE},
};

const char *api_route_path(api_route r)
{
    return r < API_ROUTE_COUNT ? routes[r].path : "other";
}

typedef struct conn {
    api_server *srv;
    api_route route;
    const char *method;        /* MHD's, valid until the completion notice */
    char path[128];
    struct timespec start;
    int fd;                    /* the client socket, watched for a hang-up while waiting */
    char *body;                /* request body so far */
    size_t len, cap;
    uint64_t discarded;        /* body bytes dropped after the limit was passed */
    bool replied;              /* a response was queued; later body bytes are discarded */
    bool client_gone;
    int status;
    api_job *job;
    api_result result;
    bool have_result;
} conn;

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

void api_call_reply(api_call *c, int status, const char *content_type, char *text)
{
    free(c->body);
    c->body = text;
    c->body_len = text ? strlen(text) : 0;
    c->status = text ? status : 500;
    c->content_type = content_type;
}

void api_call_error(api_call *c, api_err e, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int n = api_err_body(e, msg, NULL, 0);
    char *body = malloc((size_t)n + 1);
    if (body)
        api_err_body(e, msg, body, (size_t)n + 1);
    api_call_reply(c, api_err_status(e), NULL, body);
}

/* Queues a response and records its status. headers: NULL-terminated name/value pairs. */
static enum MHD_Result send_response(struct MHD_Connection *mc, conn *c, int status, struct MHD_Response *r,
                                     const char *content_type, const char *const *headers)
{
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type ? content_type : "application/json");
    for (; headers && headers[0]; headers += 2)
        if (headers[1])
            MHD_add_response_header(r, headers[0], headers[1]);
    enum MHD_Result ok = MHD_queue_response(mc, (unsigned)status, r);
    MHD_destroy_response(r);
    c->status = status;
    c->replied = true;
    return ok;
}

static enum MHD_Result send_body(struct MHD_Connection *mc, conn *c, int status, char *body, size_t len,
                                 const char *content_type, const char *const *headers)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r)
        free(body);
    return send_response(mc, c, status, r, content_type, headers);
}

static enum MHD_Result send_error(struct MHD_Connection *mc, conn *c, api_err e, const char *message,
                                  const char *const *headers)
{
    api_call call = {0};
    api_call_error(&call, e, "%s", message);
    return send_body(mc, c, call.status, call.body, call.body_len, NULL, headers);
}

/* The non-streamed answer: chat.completion or text_completion around the whole text. */
static char *completion_json(const api_sse *s, const char *text, size_t len, const api_result *r)
{
    size_t esc = api_json_escape(NULL, 0, text, len);
    char usage[160];
    snprintf(usage, sizeof usage, "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}",
             (int)r->n_prompt, (int)r->n_generated, (int)(r->n_prompt + r->n_generated));
    const char *finish = r->finish_reason ? r->finish_reason : "stop";
    const char *fmt_chat = "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":\"%s\","
                           "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},"
                           "\"logprobs\":null,\"finish_reason\":\"%s\"}],%s}";
    const char *fmt_text = "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,\"model\":\"%s\","
                           "\"choices\":[{\"index\":0,\"text\":\"%s\",\"logprobs\":null,\"finish_reason\":\"%s\"}],%s}";
    const char *fmt = s->chat ? fmt_chat : fmt_text;
    size_t cap = strlen(fmt) + strlen(s->id) + 24 + strlen(s->model_json) + esc + strlen(finish) + strlen(usage) + 1;
    char *out = malloc(cap), *etext = malloc(esc + 1);
    if (out && etext) {
        api_json_escape(etext, esc + 1, text, len);
        snprintf(out, cap, fmt, s->id, s->created, s->model_json, etext, finish, usage);
    } else {
        free(out);
        out = NULL;
    }
    free(etext);
    return out;
}

/* Headers every completion answer carries: its id (to find it in /v1/status and logs) and
 * where the answer came from. */
static const char *source_of(api_job *job)
{
    api_source s = API_SOURCE_LOCAL;
    api_job_committed(job, &s);
    return api_source_name(s);
}
#define COMPLETION_HEADERS(job) "X-Request-Id", api_job_sse(job)->id, "X-Edgellm-Source", source_of(job)

/* Replies with the job's result once it has finished, collecting its text while waiting.
 * A client that hangs up meanwhile cancels the job and gets its connection closed. */
static enum MHD_Result answer_when_done(struct MHD_Connection *mc, conn *c)
{
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 16384;
            char *t = realloc(text, ncap);
            if (!t) {
                free(text);
                api_job_cancel(c->job);
                return send_error(mc, c, API_E_INTERNAL, "out of memory", NULL);
            }
            text = t;
            cap = ncap;
        }
        len += api_job_read(c->job, text + len, cap - len);
        if (api_job_done(c->job, &c->result))
            break;
        if (api_job_wait(c->job, c->fd, -1) == API_WAIT_PEER_GONE) {
            free(text);
            c->client_gone = true;
            api_job_cancel(c->job);
            return MHD_NO;
        }
    }
    c->have_result = true;
    if (c->result.code < 0) {
        free(text);
        api_err e = api_result_err(&c->result);
        const char *h[] = {COMPLETION_HEADERS(c->job), "Retry-After", api_err_status(e) == 503 ? "1" : NULL, NULL};
        return send_error(mc, c, e, c->result.message, h);
    }
    char *json = completion_json(api_job_sse(c->job), text, len, &c->result);
    free(text);
    if (!json)
        return send_error(mc, c, API_E_INTERNAL, "out of memory", NULL);
    const char *h[] = {COMPLETION_HEADERS(c->job), NULL};
    return send_body(mc, c, 200, json, strlen(json), NULL, h);
}

/* MHD pulls the stream from here; blocking is allowed in thread-per-connection mode. */
static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    conn *c = cls;
    static const char keepalive[] = ": keep-alive\n\n";
    for (;;) {
        size_t n = api_job_read(c->job, buf, max);
        if (n)
            return (ssize_t)n;
        if (api_job_done(c->job, &c->result)) {
            c->have_result = true;
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        switch (api_job_wait(c->job, c->fd, c->srv->p.keepalive_ms)) {
        case API_WAIT_PEER_GONE:
            c->client_gone = true;
            api_job_cancel(c->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        case API_WAIT_TIMEOUT:
            if (max >= sizeof keepalive - 1) {
                memcpy(buf, keepalive, sizeof keepalive - 1);
                return (ssize_t)(sizeof keepalive - 1);
            }
            break;
        case API_WAIT_READY:
            break;
        }
    }
}

static enum MHD_Result answer_stream(struct MHD_Connection *mc, conn *c)
{
    /* The headers name the source, so they wait until it is settled (a cloud attempt can
     * still fall back to the local queue); a client leaving meanwhile cancels the job. */
    while (!api_job_committed(c->job, NULL))
        if (api_job_wait(c->job, c->fd, -1) == API_WAIT_PEER_GONE) {
            c->client_gone = true;
            api_job_cancel(c->job);
            return MHD_NO;
        }
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_stream, c, NULL);
    const char *h[] = {COMPLETION_HEADERS(c->job), "Cache-Control", "no-cache", NULL};
    return send_response(mc, c, 200, r, "text/event-stream", h);
}

/* True when the comma-separated header value list holds token (case-insensitive). */
static bool header_has(const char *list, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = list; p && *p; p += strspn(p, ",")) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, ",");
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == n && !strncasecmp(p, token, n))
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

/* The headers that steer a completion; an X-Edgellm-Offload value other than never/allow is
 * refused, since a misspelt "never" must not let a request leave the device. */
static bool read_directives(struct MHD_Connection *mc, api_call *call)
{
    const char *cc = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Cache-Control");
    call->no_cache = header_has(cc, "no-cache");
    call->no_store = header_has(cc, "no-store");
    const char *off = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "X-Edgellm-Offload");
    call->offload_never = header_has(off, "never");
    return !off || call->offload_never || header_has(off, "allow");
}

static enum MHD_Result dispatch(struct MHD_Connection *mc, conn *c)
{
    api_server *s = c->srv;
    api_call call = {.route = c->route};
    bool completion = c->route == API_ROUTE_CHAT || c->route == API_ROUTE_COMPLETIONS;
    if (completion && !read_directives(mc, &call))
        return send_error(mc, c, API_E_INVALID_PARAM, "header X-Edgellm-Offload must be 'never' or 'allow'", NULL);
    if (routes[c->route].method[0] == 'P') {
        err_info ei = {0};
        int rc = api_req_parse(&call.req, routes[c->route].body_kind, c->body ? c->body : "", c->len, &ei);
        if (rc < 0)
            return send_error(mc, c, rc == -ERR_FORMAT ? API_E_INVALID_JSON : api_err_from_code(rc),
                              err_text(&ei, rc), NULL);
    }
    free(c->body);
    c->body = NULL;
    s->h.handle(s->h.ud, &call);
    api_req_free(call.req);
    if (call.job) {
        free(call.body);
        c->job = call.job;
        return api_job_req(c->job)->stream ? answer_stream(mc, c) : answer_when_done(mc, c);
    }
    char retry[16];
    snprintf(retry, sizeof retry, "%d", call.retry_after_s);
    const char *h[] = {"Retry-After", call.retry_after_s > 0 ? retry : NULL, NULL};
    if (!call.body)
        return send_error(mc, c, API_E_INTERNAL, "out of memory", NULL);
    return send_body(mc, c, call.status, call.body, call.body_len, call.content_type, h);
}

/* First call for a request: route it and check what can be checked before the body. */
static enum MHD_Result begin(struct MHD_Connection *mc, conn *c, const char *url, const char *method)
{
    c->route = API_ROUTE_UNKNOWN;
    for (int r = 0; r < API_ROUTE_COUNT; r++)
        if (!strcmp(url, routes[r].path))
            c->route = (api_route)r;
    if (c->route == API_ROUTE_UNKNOWN) {
        char msg[200];
        snprintf(msg, sizeof msg, "no route %s %.120s", method, url);
        return send_error(mc, c, API_E_NOT_FOUND, msg, NULL);
    }
    if (strcmp(method, routes[c->route].method)) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s does not accept %s; use %s", url, method, routes[c->route].method);
        const char *h[] = {"Allow", routes[c->route].method, NULL};
        return send_error(mc, c, API_E_METHOD, msg, h);
    }
    /* A body announced over the limit is refused before it is read when it is far over (no
     * point taking it in). One less than 4 times the limit is read and dropped (take_body)
     * and refused at its end: a client that is still sending when the reply comes and the
     * connection closes gets a TCP reset, which most HTTP clients report instead of the 413. */
    const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoll(cl, NULL, 10) / 4 > c->srv->p.body_limit) {
        char msg[160];
        snprintf(msg, sizeof msg, "request body of %s bytes is over the limit of %lld", cl,
                 (long long)c->srv->p.body_limit);
        return send_error(mc, c, API_E_TOO_LARGE, msg, NULL);
    }
    return MHD_YES;
}

/* An error found while the body is still arriving (a client too slow, or far over the
 * size limit, to be worth reading to the end). MHD cannot queue a response in the middle of
 * an upload, so the reply is written straight to the socket (this thread owns it in
 * thread-per-connection mode) and the connection is closed. */
static enum MHD_Result refuse_upload(conn *c, api_err e, const char *message)
{
    char body[512], head[256];
    int n = api_err_body(e, message, body, sizeof body);
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n",
                     api_err_status(e), MHD_get_reason_phrase_for((unsigned)api_err_status(e)), n);
    if (c->fd >= 0 && send(c->fd, head, (size_t)h, MSG_NOSIGNAL) == h)
        send(c->fd, body, (size_t)n, MSG_NOSIGNAL);
    c->status = api_err_status(e);
    c->replied = true;
    return MHD_NO;
}

/* Appends a piece of the body, enforcing the size limit and the read deadline. */
static enum MHD_Result take_body(conn *c, const char *data, size_t n)
{
    const api_server_params *p = &c->srv->p;
    char msg[120];
    if (ms_since(&c->start) > p->read_timeout_ms) {
        snprintf(msg, sizeof msg, "the request took longer than %d ms to arrive", p->read_timeout_ms);
        return refuse_upload(c, API_E_SLOW_CLIENT, msg);
    }
    size_t need;
    if (c->discarded || __builtin_add_overflow(c->len, n, &need) || need > (uint64_t)p->body_limit) {
        c->discarded += n;
        if (c->discarded / 4 <= (uint64_t)p->body_limit)
            return MHD_YES;
        snprintf(msg, sizeof msg, "request body is over the limit of %lld bytes", (long long)p->body_limit);
        return refuse_upload(c, API_E_TOO_LARGE, msg);
    }
    if (need + 1 > c->cap) {
        size_t ncap = c->cap ? c->cap : 4096;
        while (ncap < need + 1)
            ncap *= 2;
        char *b = realloc(c->body, ncap);
        if (!b)
            return refuse_upload(c, API_E_INTERNAL, "out of memory");
        c->body = b;
        c->cap = ncap;
    }
    memcpy(c->body + c->len, data, n);
    c->len = need;
    c->body[c->len] = 0;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    conn *c = *con_cls;
    if (!c) {
        if (!(c = calloc(1, sizeof *c)))
            return MHD_NO;
        *con_cls = c;
        c->srv = cls;
        atomic_fetch_add(&c->srv->active, 1);
        c->method = method;
        snprintf(c->path, sizeof c->path, "%s", url);
        clock_gettime(CLOCK_MONOTONIC, &c->start);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        return begin(mc, c, url, method);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        return c->replied ? MHD_YES : take_body(c, upload, n);
    }
    if (c->replied)
        return MHD_YES;
    char msg[120];
    if (ms_since(&c->start) > c->srv->p.read_timeout_ms) {
        snprintf(msg, sizeof msg, "the request took longer than %d ms to arrive", c->srv->p.read_timeout_ms);
        return send_error(mc, c, API_E_SLOW_CLIENT, msg, NULL);
    }
    if (c->discarded) {
        snprintf(msg, sizeof msg, "request body is over the limit of %lld bytes", (long long)c->srv->p.body_limit);
        return send_error(mc, c, API_E_TOO_LARGE, msg, NULL);
    }
    return dispatch(mc, c);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)mc;
    api_server *s = cls;
    conn *c = *con_cls;
    if (!c)
        return;
    *con_cls = NULL;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && c->job && !api_job_done(c->job, NULL)) {
        c->client_gone = true;
        api_job_cancel(c->job);
    }
    /* c is freed before the log call: the log gets copies. */
    api_result result = c->result;
    char path[sizeof c->path];
    memcpy(path, c->path, sizeof path);
    api_log rec = {
        .method = c->method,
        .route = c->route,
        .path = path,
        .status = c->status,
        .client_gone = c->client_gone,
        .result = c->have_result ? &result : NULL,
        .source = c->job ? source_of(c->job) : NULL,
        .total_ms = ms_since(&c->start),
    };
    if (c->job)
        s->h.release(s->h.ud, c->job);
    free(c->body);
    free(c);
    atomic_fetch_sub(&s->active, 1);
    s->h.log(s->h.ud, &rec); /* last: the handler may look at api_server_active */
}

int api_server_start(api_server **out, int listen_fd, const api_server_params *p, const api_handler *h,
                     err_info *ei)
{
    *out = NULL;
    api_server *s = calloc(1, sizeof *s);
    if (!s) {
        close(listen_fd);
        return err_set(ei, -ENOMEM, "api_server_start: out of memory");
    }
    s->p = *p;
    s->h = *h;
    /* Thread per connection (see http.h); poll() rather than select() so descriptor numbers
     * above FD_SETSIZE work; ITC so api_server_quiesce can wake the listening thread. */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC;
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                              MHD_OPTION_LISTEN_SOCKET, listen_fd,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)p->max_conns,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)p->idle_timeout_s,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              /* Sanitizer builds need the room; a connection uses a few KiB. */
                              MHD_OPTION_THREAD_STACK_SIZE, (size_t)1 << 20,
                              MHD_OPTION_END);
    if (!s->mhd) {
        close(listen_fd);
        free(s);
        return err_set(ei, -ERR_IO, "libmicrohttpd refused to start on descriptor %d", listen_fd);
    }
    *out = s;
    return 0;
}

void api_server_quiesce(api_server *s)
{
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

int api_server_active(api_server *s)
{
    return atomic_load(&s->active);
}

void api_server_stop(api_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->mhd);
    free(s);
}
