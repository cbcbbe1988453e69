/* edgellmd — the long-running inference service. This file wires the parts together and
 * owns the libuv event loop: signals (SIGTERM drains, SIGINT stops now), the timer that
 * expires queued requests at their deadline, the wake-ups from the worker and the HTTP
 * threads, loading the model (and its SHA-256, the cache's idea of its identity) off the
 * loop so /health can answer "loading" meanwhile, the cache database, and the cloud
 * client that runs on the loop.
 *
 * Not here: HTTP (api/http.c), routing and jobs (router.c), the queue (sched.c), the engine
 * (infer.c). This is the only file of the daemon that exits. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "api/http.h"
#include "config/cfg.h"
#include "daemon/cache.h"
#include "daemon/infer.h"
#include "daemon/offload.h"
#include "daemon/router.h"
#include "daemon/sched.h"
#include "daemon/sock.h"
#include "engine/chat.h"

typedef struct edgellmd {
    cfg c;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t deadline, grace;
    uv_signal_t sigterm, sigint;
    uv_work_t load;
    router *r;
    cache *db;                /* NULL: no cache (disabled, or the database cannot be opened) */
    offload *off;             /* NULL: no offload URL */
    api_server *servers[2];
    int n_servers;
    infer *loaded;            /* result of the load work */
    err_info load_err;
    int load_rc;
    uint8_t model_sha[SHA256_BYTES];
    bool model_sha_ok;
    bool loading, draining;
    bool grace_over;          /* stop without waiting for connections still sending */
    const char *announced;    /* model state last logged */
} edgellmd;

static void react(edgellmd *d);
static void on_grace(uv_timer_t *t);

static void wake(void *ud)
{
    edgellmd *d = ud;
    uv_async_send(&d->wake);
}

static void on_wake(uv_async_t *h)
{
    react(h->data);
}

static void on_deadline(uv_timer_t *t)
{
    react(t->data);
}

/* Everything the loop reacts to is re-derived here from the router's state, so a wake-up
 * that arrives twice, or late, does no harm. */
static void react(edgellmd *d)
{
    int64_t next = router_expire(d->r);
    if (next == INT64_MAX) {
        uv_timer_stop(&d->deadline);
    } else {
        int64_t ms = (next - sched_now_ns()) / 1000000 + 1;
        uv_timer_start(&d->deadline, on_deadline, ms > 0 ? (uint64_t)ms : 0, 0);
    }
    const char *state = router_model_state(d->r);
    if (strcmp(state, d->announced) && !d->loading) {
        bool was_ready = !strcmp(d->announced, "ok");
        d->announced = state;
        if (!strcmp(state, "ok"))
            fprintf(stderr, "edgellmd: model ready\n");
        else if (!strcmp(state, "error"))
            fprintf(stderr, "edgellmd: the model %s; see /health\n", was_ready ? "is out of service" : "could not be started");
    }
    int active = 0;
    for (int i = 0; i < d->n_servers; i++)
        active += api_server_active(d->servers[i]);
    if (d->draining && !d->loading && router_idle(d->r) && (active == 0 || d->grace_over))
        uv_stop(&d->loop);
}

static void load_work(uv_work_t *w)
{
    edgellmd *d = w->data;
    d->load_rc = infer_open(&d->loaded, &d->c, &d->load_err);
    if (d->load_rc < 0 || !d->db || d->c.no_cache)
        return; /* the hash only names the model in cache keys */
    /* Read whole only the first time this file is seen; remembered in the database. */
    int64_t t0 = sched_now_ns();
    bool remembered = false;
    err_info ei = {0};
    char hex[SHA256_HEX];
    d->model_sha_ok = cache_file_sha256(d->db, d->c.model, d->model_sha, &remembered, &ei) == 0;
    if (d->model_sha_ok) {
        sha256_hex(d->model_sha, hex);
        fprintf(stderr, "edgellmd: model sha256 %s (%s in %.0f ms)\n", hex, remembered ? "remembered" : "computed",
                (double)(sched_now_ns() - t0) / 1e6);
    } else {
        fprintf(stderr, "edgellmd: cannot hash the model, answers will not be cached: %s\n", ei.msg);
    }
}

static void load_done(uv_work_t *w, int status)
{
    edgellmd *d = w->data;
    d->loading = false;
    if (status == 0 && d->load_rc == 0) {
        infer *in = d->loaded;
        fprintf(stderr, "edgellmd: loaded %s (id %s, %s); chat template %s (%s)\n", d->c.model, infer_model_id(in),
                infer_arch(in), chat_family_name(infer_chat_family(in)), infer_chat_source(in));
        if (!strcmp(infer_chat_source(in), "fallback"))
            fprintf(stderr, "edgellmd: the model has no recognisable chat template: using chatml\n");
        router_model_loaded(d->r, in, d->model_sha_ok ? d->model_sha : NULL);
    } else {
        const char *msg = err_text(&d->load_err, d->load_rc);
        fprintf(stderr, "edgellmd: cannot load %s: %s\n", d->c.model, msg);
        router_model_failed(d->r, msg);
    }
    react(d);
}

/* Stops accepting and lets in-flight work finish for grace_ms (SIGTERM) or cancels it at
 * once (SIGINT, or a second signal). The loop ends when the router is idle. */
static void drain(edgellmd *d, uint64_t grace_ms)
{
    if (!d->draining) {
        d->draining = true;
        for (int i = 0; i < d->n_servers; i++)
            api_server_quiesce(d->servers[i]);
        router_drain(d->r, false);
    }
    if (grace_ms == 0) {
        d->grace_over = true;
        uv_timer_stop(&d->grace);
        router_drain(d->r, true);
    } else {
        uv_timer_start(&d->grace, on_grace, grace_ms, 0);
    }
    react(d);
}

static void on_grace(uv_timer_t *t)
{
    edgellmd *d = t->data;
    fprintf(stderr, "edgellmd: grace period over: cancelling what is left\n");
    drain(d, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    edgellmd *d = s->data;
    bool now = signum == SIGINT || d->draining;
    fprintf(stderr, "edgellmd: %s: %s\n", signum == SIGINT ? "SIGINT" : "SIGTERM",
            now ? "stopping now" : "draining");
    drain(d, now ? 0 : (uint64_t)d->c.grace_ms);
}

static int start_listeners(edgellmd *d, err_info *ei)
{
    const cfg *c = &d->c;
    api_server_params p = {
        .body_limit = c->body_limit,
        .read_timeout_ms = c->read_timeout_ms,
        .idle_timeout_s = c->idle_timeout_s,
        .keepalive_ms = c->keepalive_ms,
        .max_conns = c->max_conns,
    };
    int fd, port, rc;
    if (c->host[0]) {
        if ((rc = sock_listen_tcp(c->host, c->port, &fd, &port, ei)) < 0 ||
            (rc = api_server_start(&d->servers[d->n_servers], fd, &p, router_handler(d->r), ei)) < 0)
            return rc;
        d->n_servers++;
        bool v6 = strchr(c->host, ':') != NULL;
        fprintf(stderr, "edgellmd: listening on http://%s%s%s:%d\n", v6 ? "[" : "", c->host, v6 ? "]" : "", port);
    }
    if (c->socket_path[0]) {
        if ((rc = sock_listen_unix(c->socket_path, c->socket_mode, &fd, ei)) < 0 ||
            (rc = api_server_start(&d->servers[d->n_servers], fd, &p, router_handler(d->r), ei)) < 0)
            return rc;
        d->n_servers++;
        fprintf(stderr, "edgellmd: listening on unix:%s\n", c->socket_path);
    }
    return 0;
}

/* The database path: --cache-db, else <state dir>/cache.db, the state directory being
 * --state-dir, $STATE_DIRECTORY (systemd's StateDirectory=), $XDG_STATE_HOME/edgellm or
 * ~/.local/state/edgellm, created if missing. "" when there is nowhere to put it. */
static void cache_path(const cfg *c, char *path, size_t cap)
{
    if (c->cache_db[0]) {
        snprintf(path, cap, "%s", c->cache_db);
        return;
    }
    char dir[CFG_PATH_MAX];
    const char *sd = getenv("STATE_DIRECTORY"), *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (c->state_dir[0])
        snprintf(dir, sizeof dir, "%s", c->state_dir);
    else if (sd && *sd)
        snprintf(dir, sizeof dir, "%.*s", (int)strcspn(sd, ":"), sd); /* the first of a list */
    else if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s/edgellm", xdg);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.local/state/edgellm", home);
    else
        dir[0] = 0;
    /* mkdir -p: the parents of a default directory may not exist yet */
    for (char *p = dir + 1; *dir && *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(dir, 0700);
            *p = '/';
        }
    if (*dir)
        mkdir(dir, 0700);
    snprintf(path, cap, "%s%s", dir, *dir ? "/cache.db" : "");
}

/* The database, unless nothing needs it (no cache and no offload audit). Any failure leaves
 * the daemon running without it. */
static void open_cache(edgellmd *d)
{
    if (d->c.no_cache && !d->c.offload_url[0])
        return;
    char path[CFG_PATH_MAX];
    cache_path(&d->c, path, sizeof path);
    cache_params p = {.path = path, .ttl_s = d->c.cache_ttl_s, .max_bytes = d->c.cache_max_bytes};
    err_info ei = {0};
    if (!path[0])
        fprintf(stderr, "edgellmd: no state directory (set --state-dir or --cache-db): running without a cache\n");
    else if (cache_open(&d->db, &p, NULL, &ei) < 0)
        fprintf(stderr, "edgellmd: %s: running without a cache\n", ei.msg);
    else
        fprintf(stderr, "edgellmd: cache %s%s\n", path, d->c.no_cache ? " (offload audit only: --no-cache)" : "");
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            char usage[8192];
            cfg_usage(usage, sizeof usage);
            printf("usage: edgellmd [--model FILE.gguf] [options]\n\n%s"
                   "\nEvery option can also be set as EDGELLM_NAME in the environment (e.g. EDGELLM_PORT=9000)\n"
                   "or in a JSON file given with --config; flags win over the environment, which wins over the file.\n",
                   usage);
            return 0;
        }
    static edgellmd d; /* static: signal and async handles must not move */
    err_info ei = {0};
    int rc = cfg_load(&d.c, argc, argv, &ei);
    if (rc == 0 && d.c.chat_template[0] && chat_family_from_name(d.c.chat_template) == CHAT_UNKNOWN)
        rc = err_set(&ei, -EINVAL, "--chat-template %s: not a known chat format", d.c.chat_template);
    if (rc < 0) {
        fprintf(stderr, "edgellmd: %s\n(edgellmd --help lists the options)\n", err_text(&ei, rc));
        return 2;
    }
    /* A client that vanishes mid-write must cost a failed send, not the process. */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&d.loop);
    uv_async_init(&d.loop, &d.wake, on_wake);
    uv_timer_init(&d.loop, &d.deadline);
    uv_timer_init(&d.loop, &d.grace);
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    d.wake.data = d.deadline.data = d.grace.data = d.sigterm.data = d.sigint.data = d.load.data = &d;
    d.announced = "no_model";
    open_cache(&d);
    if (d.c.offload_url[0]) {
        if ((rc = offload_new(&d.off, &d.loop, &d.c, d.db, &ei)) < 0) {
            fprintf(stderr, "edgellmd: %s\n", err_text(&ei, rc));
            rc = 1;
            goto done;
        }
        fprintf(stderr, "edgellmd: offload %s\n", offload_describe(d.off));
    }
    if ((rc = router_new(&d.r, &d.c, d.db, d.off, wake, &d, &ei)) < 0 || (rc = start_listeners(&d, &ei)) < 0) {
        fprintf(stderr, "edgellmd: %s\n", err_text(&ei, rc));
        rc = 1;
        goto done;
    }
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    if (d.c.model[0]) {
        d.loading = true;
        d.announced = "loading";
        router_model_loading(d.r);
        uv_queue_work(&d.loop, &d.load, load_work, load_done);
    } else {
        fprintf(stderr, "edgellmd: no model given (--model FILE.gguf): completions answer 503 until one is\n");
    }
    uv_run(&d.loop, UV_RUN_DEFAULT);
    rc = 0;
done:
    for (int i = 0; i < d.n_servers; i++)
        api_server_stop(d.servers[i]);
    if (d.c.socket_path[0] && d.n_servers)
        unlink(d.c.socket_path);
    offload_free(d.off); /* before the router: the last exchanges finish their jobs through it */
    router_free(d.r);
    cache_close(d.db);
    uv_walk(&d.loop, close_handle, NULL);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    uv_loop_close(&d.loop);
    fprintf(stderr, "edgellmd: stopped\n");
    return rc;
}
