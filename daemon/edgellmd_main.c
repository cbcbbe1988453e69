/* edgellmd — the long-running inference service. This file wires the parts together and
 * owns the libuv event loop: signals (SIGTERM drains, SIGINT stops now, SIGHUP reloads the
 * configuration), the timers that expire queued requests at their deadline and unload idle
 * models at their keep-alive, the wake-ups from the worker and the HTTP threads, the cache
 * database, the cloud client that runs on the loop, and the conversation with systemd
 * (daemon/sdnotify.h): sockets it passed (LISTEN_FDS) are served instead of binding, STATUS=
 * lines while the default model loads, READY=1 once /health says it is ready (or why it is
 * not: the API is up either way), WATCHDOG=1 from the loop, RELOADING=1 ... READY=1 around a
 * reload, STOPPING=1 at a signal. --check-config FILE checks a configuration file and exits.
 *
 * A reload loads the configuration again from the same sources (file, environment, flags),
 * logs every change, applies the live ones and logs the others as needing a restart
 * (config/cfg.h says which are which). Each configuration and offload client stays alive
 * until exit, since requests in flight may still hold the previous ones (router.h).
 *
 * Not here: HTTP (api/http.c), routing and jobs (router.c), models (models.c), the queue
 * (sched.c), the engine (infer.c). This is the only file of the daemon that exits. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "api/http.h"
#include "config/cfg.h"
#include "daemon/cache.h"
#include "daemon/offload.h"
#include "daemon/router.h"
#include "daemon/sched.h"
#include "daemon/sdnotify.h"
#include "daemon/sock.h"
#include "engine/chat.h"

/* Listening sockets systemd may pass (the TCP port and the Unix socket, with room to spare);
 * reloads in one run (each keeps its configuration and offload client until exit). */
enum { MAX_LISTENERS = 8, MAX_RELOADS = 4096 };

typedef struct edgellmd {
    int argc;
    char **argv;              /* read again by each reload */
    cfg *c;                   /* in force: configs[n_configs - 1] */
    cfg *configs[MAX_RELOADS];/* every one loaded so far (see the top of this file) */
    int n_configs;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t deadline, grace, sweep, watchdog;
    uv_signal_t sigterm, sigint, sighup;
    router *r;
    cache *db;                /* NULL: no cache (disabled, or the database cannot be opened) */
    offload *off;             /* in force; NULL: no offload URL */
    offload *offloads[MAX_RELOADS]; /* every client made so far, freed at exit */
    int n_offloads;
    sysd_listen_fd inherited[MAX_LISTENERS];
    int n_inherited;          /* sockets systemd passed (LISTEN_FDS) */
    bool bound_unix;          /* we made the Unix socket file (so we remove it) */
    api_server *servers[MAX_LISTENERS];
    int n_servers;
    bool draining;
    bool grace_over;          /* stop without waiting for connections still sending */
    bool notify_failed;       /* a notification failed: logged once */
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


/* One sd_notify message; a failure (a malformed $NOTIFY_SOCKET, a socket that went away) is
 * logged once: the service goes on, systemd's time-outs will say the rest. */
static void notify(edgellmd *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notify(edgellmd *d, const char *fmt, ...)
{
    char state[SYSD_STATE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(state, sizeof state, fmt, ap);
    va_end(ap);
    err_info ei = {0};
    if (sysd_notify(&ei, "%s", state) < 0 && !d->notify_failed) {
        d->notify_failed = true;
        fprintf(stderr, "edgellmd: cannot notify systemd: %s\n", ei.msg);
    }
}

static void on_watchdog(uv_timer_t *t)
{
    notify(t->data, "WATCHDOG=1");
}

static void on_sweep(uv_timer_t *t)
{
    edgellmd *d = t->data;
    router_sweep(d->r); /* the worker unloads, then wakes us to re-arm */
}

/* Arms timer to call cb at the sched_now_ns time `at` (INT64_MAX: stops it). */
static void arm(uv_timer_t *timer, uv_timer_cb cb, int64_t at)
{
    if (at == INT64_MAX) {
        uv_timer_stop(timer);
        return;
    }
    int64_t ms = (at - sched_now_ns()) / 1000000 + 1;
    uv_timer_start(timer, cb, ms > 0 ? (uint64_t)ms : 0, 0);
}

/* Tells systemd the state: READY=1 whenever it is no longer "loading" (also when the model
 * failed: the API is up and /health says why, where a service that never became ready would
 * be killed and restarted in a loop), with a STATUS= line either way. */
static void tell_state(edgellmd *d, const char *state)
{
    const char *what = d->c->model[0] ? d->c->model : d->c->models_dir;
    if (!strcmp(state, "loading"))
        notify(d, "STATUS=loading %s", what);
    else if (!strcmp(state, "ok"))
        notify(d, "READY=1\nSTATUS=serving %s", what);
    else if (!strcmp(state, "error"))
        notify(d, "READY=1\nSTATUS=%s: not serving, see /health", what);
    else
        notify(d, "READY=1\nSTATUS=no model configured");
}

/* The model state changed to state (from d->announced): the log, and systemd. */
static void announce(edgellmd *d, const char *state)
{
    bool was_ready = !strcmp(d->announced, "ok");
    d->announced = state;
    if (!strcmp(state, "ok"))
        fprintf(stderr, "edgellmd: %s\n", d->c->model[0] ? "model ready" : "ready: models load on demand");
    else if (!strcmp(state, "error"))
        fprintf(stderr, "edgellmd: the model %s; see /health\n", was_ready ? "is out of service" : "could not be started");
    if (strcmp(state, "loading")) /* main said so before the load began */
        tell_state(d, state);
}

/* True when every offload client, the current and those a reload replaced, is idle. */
static bool clouds_idle(edgellmd *d)
{
    for (int i = 0; i < d->n_offloads; i++)
        if (offload_in_flight(d->offloads[i]))
            return false;
    return true;
}

/* Everything the loop reacts to is re-derived here from the router's state, so a wake-up
 * that arrives twice, or late, does no harm. */
static void react(edgellmd *d)
{
    arm(&d->deadline, on_deadline, router_expire(d->r));
    arm(&d->sweep, on_sweep, router_next_sweep(d->r));
    const char *state = router_model_state(d->r);
    if (strcmp(state, d->announced))
        announce(d, state);
    int active = 0;
    for (int i = 0; i < d->n_servers; i++)
        active += api_server_active(d->servers[i]);
    if (d->draining && router_idle(d->r) && clouds_idle(d) && (active == 0 || d->grace_over))
        uv_stop(&d->loop);
}

/* Stops accepting and lets in-flight work finish for grace_ms (SIGTERM) or cancels it at
 * once (SIGINT, or a second signal). The loop ends when the router is idle. */
static void drain(edgellmd *d, uint64_t grace_ms)
{
    if (!d->draining) {
        d->draining = true;
        notify(d, "STOPPING=1\nSTATUS=%s", grace_ms ? "draining: finishing requests in flight" : "stopping");
        for (int i = 0; i < d->n_servers; i++)
            api_server_quiesce(d->servers[i]);
        router_drain(d->r, false);
    }
    if (grace_ms == 0) {
        d->grace_over = true;
        uv_timer_stop(&d->grace);
        router_drain(d->r, true);
        for (int i = 0; i < d->n_offloads; i++)
            offload_cancel_all(d->offloads[i]); /* those a reload replaced too */
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
    drain(d, now ? 0 : (uint64_t)d->c->grace_ms);
}

/* A configuration's checks beyond cfg_load's: the chat template is one the engine knows. */
static int check_more(const cfg *c, err_info *ei)
{
    if (c->chat_template[0] && chat_family_from_name(c->chat_template) == CHAT_UNKNOWN)
        return err_set(ei, -EINVAL, "--chat-template %s: not a known chat format", c->chat_template);
    return 0;
}

static void log_change(void *ud, const char *name, bool live, const char *was, const char *now)
{
    (void)ud;
    if (live)
        fprintf(stderr, "edgellmd: reload: %s %s -> %s\n", name, was, now);
    else
        fprintf(stderr, "edgellmd: reload: %s %s -> %s needs a restart: still %s\n", name, was, now, was);
}

/* SIGHUP: see the top of this file. The offload client is made anew each time, so a key
 * file rewritten in place is read again. */
static void reload(edgellmd *d)
{
    err_info ei = {0};
    if (sysd_notify_reloading("reloading the configuration", &ei) < 0 && !d->notify_failed) {
        d->notify_failed = true;
        fprintf(stderr, "edgellmd: cannot notify systemd: %s\n", ei.msg);
    }
    fprintf(stderr, "edgellmd: SIGHUP: reloading the configuration\n");
    cfg *next = NULL;
    offload *off = NULL;
    int rc = d->n_configs < MAX_RELOADS ? 0 : err_set(&ei, -E2BIG, "reloaded %d times: restart edgellmd", MAX_RELOADS);
    if (rc == 0 && !(next = malloc(sizeof *next)))
        rc = err_set(&ei, -ENOMEM, "out of memory");
    if (rc == 0 && (rc = cfg_load(next, d->argc, d->argv, &ei)) == 0 && (rc = check_more(next, &ei)) == 0) {
        cfg_reload(next, d->c, log_change, d);
        if (next->offload_url[0])
            rc = offload_new(&off, &d->loop, next, d->db, &ei);
    }
    if (rc < 0) {
        free(next);
        fprintf(stderr, "edgellmd: reload failed, the running configuration stays: %s\n", err_text(&ei, rc));
        notify(d, "READY=1\nSTATUS=reload failed, the running configuration stays: %s", err_text(&ei, rc));
        return;
    }
    if (off) {
        d->offloads[d->n_offloads++] = off;
        fprintf(stderr, "edgellmd: offload %s\n", offload_describe(off));
    }
    d->configs[d->n_configs++] = d->c = next;
    d->off = off;
    if ((rc = router_reconfigure(d->r, next, off, &ei)) < 0)
        fprintf(stderr, "edgellmd: reload: %s\n", err_text(&ei, rc));
    fprintf(stderr, "edgellmd: reload done\n");
    tell_state(d, router_model_state(d->r));
    react(d);
}

static void on_sighup(uv_signal_t *s, int signum)
{
    (void)signum;
    edgellmd *d = s->data;
    if (!d->draining)
        reload(d);
}

/* Where fd listens, for the log: "http://127.0.0.1:8080", "unix:/run/edgellm/edgellmd.sock". */
static void describe_socket(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(out, cap, "fd %d", fd);
    } else if (ss.ss_family == AF_UNIX) {
        const char *path = ((struct sockaddr_un *)&ss)->sun_path;
        snprintf(out, cap, "unix:%s%s", path[0] ? "" : "@", path[0] ? path : path + 1);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, cap, "http://[%s]:%d", host, ntohs(a->sin6_port));
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, cap, "http://%s:%d", host, ntohs(a->sin_port));
    }
}

/* Serves HTTP on the listening fd (taken over). */
static int serve(edgellmd *d, int fd, const char *origin, err_info *ei)
{
    const cfg *c = d->c;
    api_server_params p = {
        .body_limit = c->body_limit,
        .read_timeout_ms = c->read_timeout_ms,
        .idle_timeout_s = c->idle_timeout_s,
        .keepalive_ms = c->keepalive_ms,
        .max_conns = c->max_conns,
    };
    char where[CFG_PATH_MAX + 16];
    describe_socket(fd, where, sizeof where);
    int rc = api_server_start(&d->servers[d->n_servers], fd, &p, router_handler(d->r), ei);
    if (rc == 0) {
        d->n_servers++;
        fprintf(stderr, "edgellmd: listening on %s%s\n", where, origin);
    }
    return rc;
}

/* The sockets systemd passed (socket activation) when there are any, else those the
 * configuration names. An inherited socket file belongs to systemd: it is never removed. */
static int start_listeners(edgellmd *d, err_info *ei)
{
    const cfg *c = d->c;
    int fd, port, rc;
    for (int i = 0; i < d->n_inherited; i++) {
        const sysd_listen_fd *s = &d->inherited[i];
        if (s->type != SOCK_STREAM || !s->listening ||
            (s->family != AF_UNIX && s->family != AF_INET && s->family != AF_INET6))
            return err_set(ei, -EINVAL, "LISTEN_FDS: fd %d (%s) is not a listening TCP or Unix stream socket", s->fd,
                           s->name);
        if ((rc = serve(d, s->fd, " (socket activation)", ei)) < 0)
            return rc;
    }
    if (d->n_inherited) {
        if (c->host[0] || c->socket_path[0])
            fprintf(stderr, "edgellmd: serving the %d socket%s systemd passed instead of host/port/socket\n",
                    d->n_inherited, d->n_inherited == 1 ? "" : "s");
        return 0;
    }
    if (c->host[0] && ((rc = sock_listen_tcp(c->host, c->port, &fd, &port, ei)) < 0 || (rc = serve(d, fd, "", ei)) < 0))
        return rc;
    if (c->socket_path[0]) {
        if ((rc = sock_listen_unix(c->socket_path, c->socket_mode, &fd, ei)) < 0)
            return rc;
        d->bound_unix = true;
        if ((rc = serve(d, fd, "", ei)) < 0)
            return rc;
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
    const cfg *c = d->c;
    if (c->no_cache && !c->offload_url[0])
        return;
    char path[CFG_PATH_MAX];
    cache_path(c, path, sizeof path);
    cache_params p = {.path = path, .ttl_s = c->cache_ttl_s, .max_bytes = c->cache_max_bytes};
    err_info ei = {0};
    if (!path[0])
        fprintf(stderr, "edgellmd: no state directory (set --state-dir or --cache-db): running without a cache\n");
    else if (cache_open(&d->db, &p, NULL, &ei) < 0)
        fprintf(stderr, "edgellmd: %s: running without a cache\n", ei.msg);
    else
        fprintf(stderr, "edgellmd: cache %s%s\n", path, c->no_cache ? " (offload audit only: --no-cache)" : "");
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void print_problem(void *ud, const char *problem)
{
    (void)ud;
    fprintf(stderr, "edgellmd: %s\n", problem);
}

/* --check-config [FILE]: every problem of the file on stderr and exit 2, or "OK" (with
 * warnings about files it names that are not there yet) and exit 0. */
static int check_config(const char *path)
{
    cfg c;
    err_info ei = {0};
    int n = cfg_check_file(&c, path, print_problem, NULL, &ei);
    if (n < 0) {
        fprintf(stderr, "edgellmd: %s\n", err_text(&ei, n));
        return 2;
    }
    if (check_more(&c, &ei) < 0) {
        print_problem(NULL, ei.msg);
        n++;
    }
    if (n) {
        fprintf(stderr, "edgellmd: %s: %d problem%s (edgellmd --help lists every setting with its range and default)\n",
                path, n, n == 1 ? "" : "s");
        return 2;
    }
    struct stat st;
    if (c.models_dir[0] && (stat(c.models_dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        fprintf(stderr, "edgellmd: warning: models_dir %s is not a directory (yet): the daemon would not start\n",
                c.models_dir);
    if (c.model[0] && (strchr(c.model, '/') || !c.models_dir[0]) && stat(c.model, &st) != 0)
        fprintf(stderr, "edgellmd: warning: model %s does not exist (yet): /health would say so\n", c.model);
    printf("edgellmd: %s: OK\n", path);
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            char usage[8192];
            cfg_usage(usage, sizeof usage);
            printf("usage: edgellmd [--model FILE.gguf] [--models-dir DIR] [options]\n"
                   "       edgellmd --check-config [FILE]   (default %s)\n\n%s"
                   "\nEvery option can also be set as EDGELLM_NAME in the environment (e.g. EDGELLM_PORT=9000)\n"
                   "or in a JSON file given with --config; flags win over the environment, which wins over the file.\n"
                   "[reloadable]: SIGHUP applies a new value; the others need a restart.\n",
                   CFG_DEFAULT_FILE, usage);
            return 0;
        }
        if (!strncmp(argv[i], "--check-config", 14) && (argv[i][14] == 0 || argv[i][14] == '='))
            return check_config(argv[i][14] ? argv[i] + 15 : i + 1 < argc ? argv[i + 1] : CFG_DEFAULT_FILE);
    }
    static edgellmd d; /* static: signal and async handles must not move */
    d.argc = argc;
    d.argv = argv;
    err_info ei = {0};
    /* first, before any thread: it edits the environment */
    int rc = sysd_listen_fds(d.inherited, MAX_LISTENERS, &d.n_inherited, &ei);
    if (rc < 0) {
        fprintf(stderr, "edgellmd: %s\n", err_text(&ei, rc));
        return 1;
    }
    if (!(d.c = malloc(sizeof *d.c)))
        return 1;
    d.configs[d.n_configs++] = d.c;
    rc = cfg_load(d.c, argc, argv, &ei);
    if (rc == 0)
        rc = check_more(d.c, &ei);
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
    uv_timer_init(&d.loop, &d.sweep);
    uv_timer_init(&d.loop, &d.watchdog);
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    uv_signal_init(&d.loop, &d.sighup);
    d.wake.data = d.deadline.data = d.grace.data = d.sweep.data = d.watchdog.data = &d;
    d.sigterm.data = d.sigint.data = d.sighup.data = &d;
    d.announced = "";
    open_cache(&d);
    if (d.c->offload_url[0]) {
        if ((rc = offload_new(&d.off, &d.loop, d.c, d.db, &ei)) < 0) {
            fprintf(stderr, "edgellmd: %s\n", err_text(&ei, rc));
            rc = 1;
            goto done;
        }
        d.offloads[d.n_offloads++] = d.off;
        fprintf(stderr, "edgellmd: offload %s\n", offload_describe(d.off));
    }
    if ((rc = router_new(&d.r, d.c, d.db, d.off, wake, &d, &ei)) < 0 || (rc = start_listeners(&d, &ei)) < 0) {
        fprintf(stderr, "edgellmd: %s\n", err_text(&ei, rc));
        rc = 1;
        goto done;
    }
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sighup, on_sighup, SIGHUP);
    uint64_t watchdog_usec = 0;
    if (sysd_watchdog_usec(&watchdog_usec, &ei) < 0)
        fprintf(stderr, "edgellmd: %s: no watchdog pings\n", ei.msg);
    if (watchdog_usec) { /* half the period, as sd_watchdog_enabled(3) advises */
        uint64_t ms = watchdog_usec / 2000 ? watchdog_usec / 2000 : 1;
        uv_timer_start(&d.watchdog, on_watchdog, ms, ms);
        fprintf(stderr, "edgellmd: systemd watchdog: a ping every %llu ms\n", (unsigned long long)ms);
    }
    if (d.c->models_dir[0])
        fprintf(stderr, "edgellmd: models directory %s: models load on demand\n", d.c->models_dir);
    else if (!d.c->model[0])
        fprintf(stderr, "edgellmd: no model given (--model FILE.gguf): completions answer 503 until one is\n");
    if (d.c->model[0])
        tell_state(&d, "loading"); /* before the worker can be done with it */
    router_start(d.r);
    react(&d);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    rc = 0;
done:
    for (int i = 0; i < d.n_servers; i++)
        api_server_stop(d.servers[i]);
    if (d.bound_unix)
        unlink(d.c->socket_path);
    /* before the router: the last exchanges finish their jobs through it */
    for (int i = 0; i < d.n_offloads; i++)
        offload_free(d.offloads[i]);
    router_free(d.r);
    cache_close(d.db);
    uv_walk(&d.loop, close_handle, NULL);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    uv_loop_close(&d.loop);
    for (int i = 0; i < d.n_configs; i++)
        free(d.configs[i]);
    fprintf(stderr, "edgellmd: stopped\n");
    return rc;
}
