/* models — see models.h. Entries sit in a fixed array and are never freed before models_free,
 * so a pointer to one stays valid however the directory changes; a file that disappears
 * only marks its entry absent. Every state change that closes or starts a model happens on
 * the worker (models.h), which is what lets it drop the lock while it copies a model in or
 * closes one: nobody else can change that entry meanwhile, only look at it. */
#include "daemon/models.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "api/sse.h"
#include "daemon/sched.h"
#include "engine/mstore.h"

/* Models one daemon knows of; more files in the directory are ignored (and logged once). */
enum { MODELS_MAX = 256 };

/* A lease still held when a sweep is due postpones it by this much (no busy timer). */
#define LEASED_RETRY_NS 100000000LL

struct models_entry {
    char id[API_SSE_MODEL_MAX + 1];
    char path[CFG_PATH_MAX];
    bool is_default;
    bool present;              /* the file was there at the last look (always, for the default) */
    /* under ms->mu; changed from loaded to anything else only by the worker */
    models_state state;
    infer *in;                 /* while loaded or retired */
    bool shared;               /* in reads a shared copy, which stays when in is closed */
    int leases;                /* connection threads reading in */
    int pending;               /* jobs queued or running */
    int64_t expires_ns;        /* idle past this, it may be unloaded (INT64_MAX: never) */
    int64_t last_used_ns;      /* for choosing what to evict */
    uint64_t held_bytes;       /* what it holds against the budget: loaded, or its copy kept */
    uint8_t sha[SHA256_BYTES];
    bool sha_known;
    long long loaded_at;
    char message[ERR_MSG_MAX]; /* why it failed or was retired */
};

struct models {
    pthread_mutex_t mu;
    pthread_cond_t leases_done; /* a lease ended: an eviction may be waiting for it */
    const cfg *c;
    cache *db;
    models_entry *def;
    models_entry *active;      /* the started one (its session is the worker's) */
    models_entry *entries[MODELS_MAX];
    int n;
    bool has_dir;              /* a models directory was given (fixed until restart) */
    bool full_logged;
};

static const double MIB = 1048576.0;

const char *models_state_name(models_state s)
{
    static const char *const names[] = {[MODELS_UNLOADED] = "unloaded", [MODELS_LOADING] = "loading",
                                        [MODELS_LOADED] = "loaded", [MODELS_FAILED] = "error",
                                        [MODELS_RETIRED] = "error"};
    return names[s];
}

/* name ends in ".gguf" after at least one character */
static bool gguf_suffix(const char *name, size_t n) { return n > 5 && !strcmp(name + n - 5, ".gguf"); }

/* "/models/qwen2-0.5b.q4_k_m.gguf" -> "qwen2-0.5b.q4_k_m"; false when it does not fit. */
static bool id_of(const char *path, char id[API_SSE_MODEL_MAX + 1])
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (gguf_suffix(base, n))
        n -= 5;
    if (n == 0 || n > API_SSE_MODEL_MAX)
        return false;
    memcpy(id, base, n);
    id[n] = 0;
    return true;
}

static models_entry *by_id(models *ms, const char *id)
{
    for (int i = 0; i < ms->n; i++)
        if (!strcmp(ms->entries[i]->id, id))
            return ms->entries[i];
    return NULL;
}

static models_entry *add(models *ms, const char *id, const char *path)
{
    if (ms->n == MODELS_MAX) {
        if (!ms->full_logged)
            fprintf(stderr, "edgellmd: more than %d models: %s and later ones are not served\n", MODELS_MAX, path);
        ms->full_logged = true;
        return NULL;
    }
    models_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->id, sizeof e->id, "%s", id);
    snprintf(e->path, sizeof e->path, "%s", path);
    e->present = true;
    e->expires_ns = INT64_MAX;
    ms->entries[ms->n++] = e;
    return e;
}

static int gguf_name(const struct dirent *d)
{
    return d->d_name[0] != '.' && gguf_suffix(d->d_name, strlen(d->d_name));
}

/* Looks at the models directory again (ms->mu held): new files become entries, entries of
 * files that went away are marked absent. */
static void scan(models *ms)
{
    const char *dir = ms->c->models_dir;
    if (!dir[0])
        return;
    struct dirent **names = NULL;
    int k = scandir(dir, &names, gguf_name, alphasort);
    for (int i = 0; i < ms->n; i++)
        ms->entries[i]->present = ms->entries[i]->is_default;
    for (int i = 0; i < k; i++) {
        char path[CFG_PATH_MAX], id[API_SSE_MODEL_MAX + 1];
        struct stat st;
        int len = snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (len < (int)sizeof path && id_of(path, id) && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            models_entry *e = by_id(ms, id);
            if (!e)
                e = add(ms, id, path);
            else if (!e->is_default)
                e->present = true;
            /* the default model's name wins over a file of the directory with the same one */
        }
        free(names[i]);
    }
    free(names);
}

int models_new(models **out, const cfg *c, cache *db, err_info *ei)
{
    *out = NULL;
    models *ms = calloc(1, sizeof *ms);
    if (!ms)
        return err_set(ei, -ENOMEM, "out of memory");
    pthread_mutex_init(&ms->mu, NULL);
    pthread_cond_init(&ms->leases_done, NULL);
    ms->c = c;
    ms->db = db;
    ms->has_dir = c->models_dir[0] != 0;
    int rc = 0;
    struct stat st;
    if (c->models_dir[0] && (stat(c->models_dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        rc = err_set(ei, -ENOENT, "--models-dir %s: not a directory", c->models_dir);
        goto fail;
    }
    if (c->model[0]) {
        /* a bare name is a file of the directory; anything else is a path */
        char path[CFG_PATH_MAX], id[API_SSE_MODEL_MAX + 1];
        bool named = c->models_dir[0] && !strchr(c->model, '/') && stat(c->model, &st) != 0;
        int len = named ? snprintf(path, sizeof path, "%s/%s%s", c->models_dir, c->model,
                                   strstr(c->model, ".gguf") ? "" : ".gguf")
                        : snprintf(path, sizeof path, "%s", c->model);
        if (len >= (int)sizeof path || !id_of(path, id)) {
            rc = err_set(ei, -ERR_RANGE, "--model %s: the path or its name is too long", c->model);
            goto fail;
        }
        ms->def = add(ms, id, path);
        if (!ms->def) {
            rc = err_set(ei, -ENOMEM, "out of memory");
            goto fail;
        }
        ms->def->is_default = true;
    }
    scan(ms);
    *out = ms;
    return 0;
fail:
    models_free(ms);
    return rc;
}

void models_free(models *ms)
{
    if (!ms)
        return;
    for (int i = 0; i < ms->n; i++) {
        infer_close(ms->entries[i]->in);
        free(ms->entries[i]);
    }
    pthread_cond_destroy(&ms->leases_done);
    pthread_mutex_destroy(&ms->mu);
    free(ms);
}

void models_reconfigure(models *ms, const cfg *c)
{
    pthread_mutex_lock(&ms->mu);
    ms->c = c;
    pthread_mutex_unlock(&ms->mu);
}

/* "a, b, c" of the models there are (ms->mu held). */
static void list_ids(models *ms, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < ms->n && n + 1 < cap; i++)
        if (ms->entries[i]->present)
            n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? ", " : "", ms->entries[i]->id);
    if (!n)
        snprintf(out, cap, "none");
}

int models_find(models *ms, const char *id, models_entry **out, err_info *ei)
{
    *out = NULL;
    char want[API_SSE_MODEL_MAX + 1] = "", names[200];
    if (id && *id && !id_of(id, want))
        return err_set(ei, -ERR_NOT_FOUND, "model '%.200s' does not exist: the name is too long", id);
    pthread_mutex_lock(&ms->mu);
    models_entry *e = *want ? by_id(ms, want) : ms->def;
    if (!e || !e->present) {
        scan(ms); /* a file added since the last look */
        e = *want ? by_id(ms, want) : ms->def;
    }
    int rc = 0, present = 0;
    models_entry *only = NULL;
    for (int i = 0; !*want && !e && i < ms->n; i++)
        if (ms->entries[i]->present) {
            only = ms->entries[i];
            present++;
        }
    if (!*want && !e && present == 1)
        e = only; /* no default: the directory's only model is the obvious one */
    if (!e || (!e->present && !e->in)) {
        list_ids(ms, names, sizeof names);
        rc = *want ? err_set(ei, -ERR_NOT_FOUND, "model '%s' does not exist; available: %s", want, names)
                   : err_set(ei, -EINVAL, "'model' is required: there is no default model; available: %s", names);
        e = NULL;
    }
    pthread_mutex_unlock(&ms->mu);
    *out = e;
    return rc;
}

models_entry *models_default(models *ms) { return ms->def; }
bool models_any(const models *ms) { return ms->def || ms->has_dir; }
const char *models_entry_id(const models_entry *e) { return e->id; }

models_state models_state_of(models *ms, models_entry *e, char *message, size_t cap)
{
    pthread_mutex_lock(&ms->mu);
    models_state s = e->state;
    if (message)
        snprintf(message, cap, "%s", s == MODELS_FAILED || s == MODELS_RETIRED ? e->message : "");
    pthread_mutex_unlock(&ms->mu);
    return s;
}

infer *models_lease(models *ms, models_entry *e, const uint8_t **sha256)
{
    pthread_mutex_lock(&ms->mu);
    infer *in = e->state == MODELS_LOADED ? e->in : NULL;
    if (in)
        e->leases++;
    if (sha256)
        *sha256 = in && e->sha_known ? e->sha : NULL;
    pthread_mutex_unlock(&ms->mu);
    return in;
}

void models_unlease(models *ms, models_entry *e)
{
    pthread_mutex_lock(&ms->mu);
    if (--e->leases == 0)
        pthread_cond_broadcast(&ms->leases_done);
    pthread_mutex_unlock(&ms->mu);
}

void models_job_queued(models *ms, models_entry *e)
{
    pthread_mutex_lock(&ms->mu);
    e->pending++;
    pthread_mutex_unlock(&ms->mu);
}

/* When a model last used at now and kept keep_s seconds (< 0: for ever) may be unloaded. */
static int64_t expiry(int64_t now, double keep_s) { return keep_s < 0 ? INT64_MAX : now + (int64_t)(keep_s * 1e9); }

void models_job_done(models *ms, models_entry *e, double keep_alive_s)
{
    pthread_mutex_lock(&ms->mu);
    int64_t now = sched_now_ns();
    e->pending--;
    e->last_used_ns = now;
    e->expires_ns = expiry(now, isnan(keep_alive_s) ? ms->c->model_keep_alive_s : keep_alive_s);
    pthread_mutex_unlock(&ms->mu);
}

/* Takes e's model out of service (ms->mu held, on the worker): what the caller must close,
 * outside the lock. No new lease is given from the start; the ones held are waited for. */
static infer *detach(models *ms, models_entry *e, models_state next)
{
    e->state = next;
    if (ms->active == e)
        ms->active = NULL;
    while (e->leases > 0)
        pthread_cond_wait(&ms->leases_done, &ms->mu);
    infer *in = e->in;
    e->in = NULL;
    if (!e->shared)
        e->held_bytes = 0; /* a mapping holds nothing once it is gone */
    return in;
}

/* Bytes held by the models other than e (ms->mu held). */
static uint64_t held_by_others(models *ms, const models_entry *e)
{
    uint64_t sum = 0;
    for (int i = 0; i < ms->n; i++)
        if (ms->entries[i] != e)
            sum += ms->entries[i]->held_bytes;
    return sum;
}

/* What to give up for room (ms->mu held): kept copies first, then idle models, then models
 * with jobs waiting (they load again when their turn comes), the default model last; the
 * least recently used within each. NULL when nothing but e holds memory. */
static models_entry *victim(models *ms, const models_entry *e)
{
    models_entry *best = NULL;
    int best_rank = 0;
    for (int i = 0; i < ms->n; i++) {
        models_entry *v = ms->entries[i];
        if (v == e || !v->held_bytes || v->state == MODELS_LOADING)
            continue;
        int rank = !v->in ? 0 : v->is_default ? 3 : v->pending ? 2 : 1;
        if (!best || rank < best_rank || (rank == best_rank && v->last_used_ns < best->last_used_ns)) {
            best = v;
            best_rank = rank;
        }
    }
    return best;
}

/* Frees the memory of the least valuable other model (ms->mu held, dropped meanwhile):
 * closes it if loaded and removes its shared copy. False when there is none. */
static bool evict_one(models *ms, const models_entry *e, const char *why)
{
    models_entry *v = victim(ms, e);
    if (!v)
        return false;
    double mib = (double)v->held_bytes / MIB;
    bool was_loaded = v->in != NULL, shared = v->shared;
    infer *in = was_loaded ? detach(ms, v, v->state == MODELS_RETIRED ? MODELS_RETIRED : MODELS_UNLOADED) : NULL;
    v->held_bytes = 0;
    v->shared = false;
    pthread_mutex_unlock(&ms->mu);
    infer_close(in);
    err_info ei = {0};
    if (shared && mstore_remove(v->path, &ei) < 0)
        fprintf(stderr, "edgellmd: cannot remove the shared copy of %s: %s\n", v->id, ei.msg);
    fprintf(stderr, "edgellmd: %s %s (%.1f MiB%s) to make room for %s (%s)\n", was_loaded ? "unloaded" : "dropped",
            v->id, mib, shared ? ", shared copy removed" : "", e->id, why);
    pthread_mutex_lock(&ms->mu);
    return true;
}

static int over_budget(const models_entry *e, uint64_t size, uint64_t budget, err_info *ei)
{
    return err_set(ei, -ENOMEM, "model '%s' is %.1f MiB, over the memory budget of %.1f MiB (memory-budget-mb)", e->id,
                   (double)size / MIB, (double)budget / MIB);
}

/* Room for size more bytes within the budget (ms->mu held): evicts until they fit. */
static int make_room(models *ms, const models_entry *e, uint64_t size, err_info *ei)
{
    uint64_t budget = (uint64_t)ms->c->memory_budget_mb << 20;
    if (!budget)
        return 0;
    if (size > budget)
        return over_budget(e, size, budget, ei);
    while (held_by_others(ms, e) + size > budget)
        if (!evict_one(ms, e, "the memory budget"))
            return err_set(ei, -ENOMEM, "model '%s' (%.1f MiB) does not fit in the memory budget of %.1f MiB",
                           e->id, (double)size / MIB, (double)budget / MIB);
    return 0;
}

/* The SHA-256 the response cache keys on: the shared copy's (recorded when it was made), else
 * the file's, remembered in the cache database. Logged either way. */
static void identify(models *ms, models_entry *e, infer *in, const cfg *c)
{
    const uint8_t *sha = infer_model_sha256(in);
    char hex[SHA256_HEX];
    e->sha_known = false; /* a file loaded again may be another version, or mapped this time */
    if (sha) {
        memcpy(e->sha, sha, SHA256_BYTES);
        e->sha_known = true;
        sha256_hex(e->sha, hex);
        fprintf(stderr, "edgellmd: model sha256 %s (%s)\n", hex,
                infer_copied_now(in) ? "computed while copying" : "remembered by the shared copy");
        return;
    }
    if (!ms->db || c->no_cache)
        return; /* the hash only names the model in cache keys */
    /* read whole only the first time this file is seen; remembered in the database */
    int64_t t0 = sched_now_ns();
    bool remembered = false;
    err_info ei = {0};
    e->sha_known = cache_file_sha256(ms->db, e->path, e->sha, &remembered, &ei) == 0;
    if (e->sha_known) {
        sha256_hex(e->sha, hex);
        fprintf(stderr, "edgellmd: model sha256 %s (%s in %.0f ms)\n", hex, remembered ? "remembered" : "computed",
                (double)(sched_now_ns() - t0) / 1e6);
    } else {
        fprintf(stderr, "edgellmd: cannot hash the model, answers will not be cached: %s\n", ei.msg);
    }
}

/* Loads e (ms->mu held, dropped while the model is copied and parsed). */
static int load(models *ms, models_entry *e, err_info *ei)
{
    struct stat st;
    if (stat(e->path, &st) != 0) {
        int rc = err_set(ei, -errno, "%s: %s", e->path, strerror(errno));
        e->state = MODELS_FAILED;
        snprintf(e->message, sizeof e->message, "%s", ei->msg);
        return rc;
    }
    e->state = MODELS_LOADING;
    const cfg *c = ms->c;
    infer *in = NULL;
    int64_t t0 = sched_now_ns();
    int rc;
    for (;;) {
        if ((rc = make_room(ms, e, (uint64_t)st.st_size, ei)) < 0)
            break;
        c = ms->c;
        pthread_mutex_unlock(&ms->mu);
        rc = infer_open(&in, e->path, c, ei);
        pthread_mutex_lock(&ms->mu);
        /* without a budget the machine is the limit: a copy it has no room for makes room */
        if (rc != -ENOMEM || !evict_one(ms, e, "out of memory"))
            break;
    }
    if (rc < 0) {
        e->state = MODELS_FAILED;
        snprintf(e->message, sizeof e->message, "%s", err_text(ei, rc));
        return rc;
    }
    pthread_mutex_unlock(&ms->mu);
    identify(ms, e, in, c);
    fprintf(stderr, "edgellmd: loaded %s (id %s, %s) in %.0f ms, weights from %s; chat template %s (%s)\n", e->path,
            e->id, infer_arch(in), (double)(sched_now_ns() - t0) / 1e6, infer_source(in),
            chat_family_name(infer_chat_family(in)), infer_chat_source(in));
    if (!strcmp(infer_chat_source(in), "fallback"))
        fprintf(stderr, "edgellmd: %s has no recognisable chat template: using chatml\n", e->id);
    pthread_mutex_lock(&ms->mu);
    e->in = in;
    e->shared = infer_model_sha256(in) != NULL;
    e->held_bytes = infer_file_bytes(in);
    e->loaded_at = (long long)time(NULL);
    e->last_used_ns = sched_now_ns();
    e->expires_ns = expiry(e->last_used_ns, c->model_keep_alive_s);
    e->message[0] = 0;
    e->state = MODELS_LOADED;
    return 0;
}

int models_admit(models *ms, models_entry *e, err_info *ei)
{
    struct stat st;
    pthread_mutex_lock(&ms->mu);
    uint64_t budget = (uint64_t)ms->c->memory_budget_mb << 20;
    pthread_mutex_unlock(&ms->mu);
    if (budget && stat(e->path, &st) == 0 && (uint64_t)st.st_size > budget)
        return over_budget(e, (uint64_t)st.st_size, budget, ei);
    return 0;
}

int models_forget_failures(models *ms)
{
    int n = 0;
    pthread_mutex_lock(&ms->mu);
    for (int i = 0; i < ms->n; i++)
        if (ms->entries[i]->state == MODELS_FAILED) {
            ms->entries[i]->state = MODELS_UNLOADED;
            n++;
        }
    pthread_mutex_unlock(&ms->mu);
    return n;
}

int models_activate(models *ms, models_entry *e, infer **in, const uint8_t **sha256, err_info *ei)
{
    *in = NULL;
    pthread_mutex_lock(&ms->mu);
    int rc = 0;
    if (e->state == MODELS_RETIRED)
        rc = err_set(ei, -ERR_IO, "%s", e->message);
    else if (e->state != MODELS_LOADED)
        rc = load(ms, e, ei);
    models_entry *previous = ms->active;
    if (rc == 0 && previous != e) {
        ms->active = NULL;
        pthread_mutex_unlock(&ms->mu);
        /* the session is the worker's alone: no lock needed to free or make one (leases only
         * read the model) */
        if (previous && previous->in)
            infer_stop(previous->in);
        rc = infer_start(e->in, ei);
        pthread_mutex_lock(&ms->mu);
        if (rc == 0)
            ms->active = e;
    }
    if (rc == 0) {
        e->last_used_ns = sched_now_ns();
        *in = e->in;
        if (sha256)
            *sha256 = e->sha_known ? e->sha : NULL;
    }
    pthread_mutex_unlock(&ms->mu);
    return rc;
}

/* When e is to be closed, leases aside (ms->mu held): now if retired and still open, at the
 * end of its keep-alive if loaded, idle and not the default; else never (INT64_MAX). */
static int64_t close_at(const models_entry *e, int64_t now)
{
    if (e->state == MODELS_RETIRED && e->in)
        return now;
    return e->state == MODELS_LOADED && !e->is_default && !e->pending ? e->expires_ns : INT64_MAX;
}

/* e is due for closing now (ms->mu held) and nobody reads it. */
static bool due(const models_entry *e, int64_t now) { return !e->leases && close_at(e, now) <= now; }

void models_sweep(models *ms)
{
    pthread_mutex_lock(&ms->mu);
    for (int i = 0; i < ms->n; i++) {
        models_entry *e = ms->entries[i];
        int64_t now = sched_now_ns();
        if (!due(e, now))
            continue;
        bool retired = e->state == MODELS_RETIRED;
        double idle_s = (double)(now - e->last_used_ns) / 1e9;
        infer *in = detach(ms, e, retired ? MODELS_RETIRED : MODELS_UNLOADED);
        bool kept = e->shared;
        pthread_mutex_unlock(&ms->mu);
        infer_close(in);
        if (retired)
            fprintf(stderr, "edgellmd: closed the retired model %s\n", e->id);
        else
            fprintf(stderr, "edgellmd: unloaded %s after %.0f s idle%s\n", e->id, idle_s,
                    kept ? " (its shared copy stays: loading it again is warm)" : "");
        pthread_mutex_lock(&ms->mu);
    }
    pthread_mutex_unlock(&ms->mu);
}

int64_t models_next_sweep(models *ms)
{
    int64_t next = INT64_MAX, now = sched_now_ns();
    pthread_mutex_lock(&ms->mu);
    for (int i = 0; i < ms->n; i++) {
        const models_entry *e = ms->entries[i];
        int64_t at = close_at(e, now);
        if (at != INT64_MAX && e->leases && at < now + LEASED_RETRY_NS)
            at = now + LEASED_RETRY_NS; /* the lease ends soon: look again then */
        next = at < next ? at : next;
    }
    pthread_mutex_unlock(&ms->mu);
    return next;
}

bool models_retire(models *ms, models_entry *e, const char *message)
{
    pthread_mutex_lock(&ms->mu);
    bool first = e->state == MODELS_LOADED;
    if (first) {
        e->state = MODELS_RETIRED;
        snprintf(e->message, sizeof e->message, "%s", message);
    }
    pthread_mutex_unlock(&ms->mu);
    return first;
}

models_entry *models_current(models *ms)
{
    pthread_mutex_lock(&ms->mu);
    models_entry *e = ms->active && ms->active->state == MODELS_LOADED ? ms->active
                      : ms->def && ms->def->state == MODELS_LOADED  ? ms->def
                                                                     : NULL;
    pthread_mutex_unlock(&ms->mu);
    return e;
}

void models_list(models *ms, void (*fn)(void *ctx, const models_info *m), void *ctx)
{
    pthread_mutex_lock(&ms->mu);
    scan(ms);
    for (int i = 0; i < ms->n; i++) {
        const models_entry *e = ms->entries[i];
        struct stat st;
        bool there = stat(e->path, &st) == 0;
        if (!e->present && !e->in)
            continue;
        models_info m = {
            .id = e->id,
            .path = e->path,
            .state = e->state,
            .is_default = e->is_default,
            .created = e->in ? e->loaded_at : there ? (long long)st.st_mtime : 0,
            .bytes = there ? (uint64_t)st.st_size : e->held_bytes,
            .message = e->state == MODELS_FAILED || e->state == MODELS_RETIRED ? e->message : "",
        };
        fn(ctx, &m);
    }
    pthread_mutex_unlock(&ms->mu);
}
