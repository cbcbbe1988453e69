/* api_http — the HTTP side of the daemon on libmicrohttpd: routes, request bodies and their
 * limits (413, 408), error replies, streaming a job's SSE frames, waiting for a job's answer,
 * and noticing a client that hangs up (which cancels its job).
 *
 * Threading: one MHD daemon per listening socket, thread-per-connection (with a connection
 * limit and an idle timeout). A connection thread may block: waiting for its job while the
 * worker generates, or for a slow client to take the bytes. That is what keeps a slow client
 * from delaying anyone else, and it lets the waiting thread poll its own socket for a hang-up
 * (MHD cannot report one while the application holds the connection).
 *
 * What a route does is not decided here: every parsed request goes to the handler (the
 * daemon's router), which answers with a body or with a queued job to stream or wait for. */
#ifndef EDGELLM_API_HTTP_H
#define EDGELLM_API_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/err.h"
#include "api/job.h"
#include "api/req.h"
#include "engine/err.h"

typedef enum api_route {
    API_ROUTE_HEALTH,       /* GET /health */
    API_ROUTE_MODELS,       /* GET /v1/models */
    API_ROUTE_STATUS,       /* GET /v1/status */
    API_ROUTE_METRICS,      /* GET /metrics */
    API_ROUTE_CHAT,         /* POST /v1/chat/completions */
    API_ROUTE_COMPLETIONS,  /* POST /v1/completions */
    API_ROUTE_TOKENIZE,     /* POST /tokenize */
    API_ROUTE_DETOKENIZE,   /* POST /detokenize */
    API_ROUTE_COUNT,
    API_ROUTE_UNKNOWN = API_ROUTE_COUNT, /* for logs and metrics: no route matched */
} api_route;

/* "/v1/chat/completions"; "other" for API_ROUTE_UNKNOWN. Static. */
const char *api_route_path(api_route r);

/* One request as the handler sees it, and its answer. The handler sets either a reply
 * (status + body) or job. */
typedef struct api_call {
    api_route route;
    api_req *req;              /* parsed body (POST routes); the handler may take it (set NULL) */
    /* request headers that steer a completion (parsed here, case-insensitively) */
    bool no_cache;             /* Cache-Control: no-cache -- do not answer from the cache */
    bool no_store;             /* Cache-Control: no-store -- do not keep this answer */
    bool offload_never;        /* X-Edgellm-Offload: never -- the request must not leave the device */
    int status;                /* reply status */
    char *body;                /* reply body, malloc'd (freed by api_http) */
    size_t body_len;
    const char *content_type;  /* static; NULL means application/json */
    int retry_after_s;         /* > 0 adds a Retry-After header */
    api_job *job;              /* instead of a reply: the job (one reference passes); a streamed
                                  reply's headers wait until it is committed (api_job_commit) */
} api_call;

/* Sets an error reply on c: status and body from e, the message printf-formatted. */
void api_call_error(api_call *c, api_err e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sets a reply taking ownership of the malloc'd NUL-terminated text (NULL: out of memory,
 * which becomes a 500). */
void api_call_reply(api_call *c, int status, const char *content_type, char *text);

/* What the access log and the metrics need about one finished exchange. */
typedef struct api_log {
    const char *method;
    api_route route;
    const char *path;          /* as requested */
    int status;
    bool client_gone;          /* the client hung up before the reply was complete */
    const api_result *result;  /* the job's result, NULL when no job ran */
    const char *source;        /* where the job's answer came from (static), NULL without a job */
    double total_ms;           /* request start to last byte */
} api_log;

typedef struct api_handler {
    void *ud;
    void (*handle)(void *ud, api_call *call);
    /* The connection is done with job (answered, or its client left): cancel it if it is
     * still queued or running, and drop the connection's reference. */
    void (*release)(void *ud, api_job *job);
    void (*log)(void *ud, const api_log *rec);
} api_handler;

typedef struct api_server_params {
    int64_t body_limit;      /* bytes */
    int read_timeout_ms;     /* the whole request must arrive within this (408) */
    int idle_timeout_s;      /* MHD closes connections idle for this long */
    int keepalive_ms;        /* SSE comment period while a streamed job has nothing to send */
    int max_conns;
} api_server_params;

typedef struct api_server api_server;

/* Serves HTTP on listen_fd (a bound, listening TCP or Unix socket; owned by the server from
 * now on). h is copied; h->ud must outlive the server. */
int api_server_start(api_server **out, int listen_fd, const api_server_params *p, const api_handler *h,
                     err_info *ei);
/* Stops accepting new connections (the listening socket is closed); open ones go on. */
void api_server_quiesce(api_server *s);
/* Requests in progress (received and not yet completely answered); idle keep-alive
 * connections do not count. A drain waits for this to reach 0. */
int api_server_active(api_server *s);
/* Closes every connection (waiting connection threads see a hang-up and cancel their jobs),
 * joins the threads and frees the server. NULL ok. */
void api_server_stop(api_server *s);

#endif
