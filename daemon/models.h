/* models — which models the daemon serves and their life cycle: the default model (--model)
 * and every *.gguf file of --models-dir, each named by its file name without ".gguf"; loading
 * one when a request needs it, unloading it after it was idle for its keep-alive, keeping
 * what is loaded within the memory budget, and the one session the worker generates with.
 *
 * An entry is unloaded, loading, loaded (open; and started while the worker's session is
 * its), failed (its load failed: the message says why; requests for it are refused until a
 * reload, SIGHUP, lets the next one try again) or retired (its mapped file changed under it,
 * infer_check_file: out of service until restart).
 * The default model is loaded at start and stays loaded; the others load on demand and are
 * unloaded once idle past their keep-alive (the request's "keep_alive", else
 * model-keep-alive-s). Only one model is started at a time: switching frees the previous
 * one's session (KV cache, threads) but keeps it open until its keep-alive runs out.
 *
 * Memory. A model's bytes live in a shared copy (engine/mstore.h) unless no-shm. Unloading
 * keeps the copy, so loading the model again is warm (an attach, not a read of the file);
 * the copy is removed only when its room is needed. The budget (memory-budget-mb) bounds the
 * bytes of the models this daemon holds, loaded or kept as copies: a model larger than the
 * budget is refused; one that does not fit beside the others makes room by removing the
 * least recently used kept copies, then unloading the least recently used idle models. The
 * same happens without a budget when the machine itself is out of memory for a copy. Copies
 * made by an earlier run count once this run loads them.
 *
 * Threads: everything that opens, starts, stops or closes a model runs on the scheduler's
 * worker (models_activate while it runs a job, models_sweep as its chore), so a session is
 * never freed under a generation. Connection threads look entries up and lease loaded models
 * (a leased model is not closed until the lease ends). One mutex; copying and parsing a model
 * run outside it, with its entry marked loading.
 * Not here: the engine side of one model (infer.h), the queue (sched.h), routes (router.h). */
#ifndef EDGELLM_MODELS_H
#define EDGELLM_MODELS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/cfg.h"
#include "daemon/cache.h"
#include "daemon/infer.h"
#include "engine/err.h"
#include "engine/sha256.h"

typedef struct models models;
typedef struct models_entry models_entry;

typedef enum models_state {
    MODELS_UNLOADED,
    MODELS_LOADING,
    MODELS_LOADED,
    MODELS_FAILED,
    MODELS_RETIRED,
} models_state;

/* "unloaded", "loading", "loaded", "error", "error" (what /v1/models says). Static. */
const char *models_state_name(models_state s);

/* Reads the models directory (c->models_dir) and names the default model (c->model: a path,
 * or the name of a file in the directory). c and db (NULL: no cache, model files are not
 * hashed) are borrowed; c until models_reconfigure replaces it. Nothing is loaded yet. */
int models_new(models **out, const cfg *c, cache *db, err_info *ei);
/* Closes every model (the worker must be stopped). NULL ok. */
void models_free(models *ms);
/* SIGHUP: keep-alive, budget, mlock and shm-verify from c from now on (borrowed until the
 * next call or models_free). */
void models_reconfigure(models *ms, const cfg *c);

/* Any thread. The entry named id (a file name without ".gguf"; "" or NULL: the default
 * model). An unknown id looks at the directory again (a file added since start). Errors:
 * -ERR_NOT_FOUND "model 'x' does not exist; available: a, b", -EINVAL when id is empty and
 * there is no default model. Entries live as long as ms. */
int models_find(models *ms, const char *id, models_entry **out, err_info *ei);
/* The default model's entry, NULL without one. */
models_entry *models_default(models *ms);
/* True when there is anything to serve: a default model or a models directory. */
bool models_any(const models *ms);
const char *models_entry_id(const models_entry *e);
/* e's state; message (cap bytes, may be NULL) gets why it failed or was retired. */
models_state models_state_of(models *ms, models_entry *e, char *message, size_t cap);

/* Any thread: e's model, leased (it stays open until models_unlease), or NULL when e is not
 * loaded. *sha256 (may be NULL) points to its file's SHA-256 (valid while leased), or NULL
 * when unknown. */
infer *models_lease(models *ms, models_entry *e, const uint8_t **sha256);
void models_unlease(models *ms, models_entry *e);

/* The keep-alive a job asks for: seconds (< 0: for ever), or this for the configured one. */
#define MODELS_KEEP_ALIVE_DEFAULT NAN
/* Any thread: a job for e was queued, or left the queue (ran, or was dropped). A model with
 * jobs queued is never unloaded for idleness; the last one sets when it may be. */
void models_job_queued(models *ms, models_entry *e);
void models_job_done(models *ms, models_entry *e, double keep_alive_s);

/* Any thread: -ENOMEM (the message gives the sizes) when e is larger than the whole memory
 * budget, so a request for it is refused before it waits in the queue for nothing. */
int models_admit(models *ms, models_entry *e, err_info *ei);

/* Worker: makes e loaded (making room in the budget first) and its session the started one
 * (stopping the previous model's). *in, and *sha256 (may be NULL: the file's SHA-256, NULL
 * when unknown), are valid until the worker's next models_activate or models_sweep. Errors:
 * -ENOMEM with the sizes when it cannot fit, the load's error (which leaves e failed), or
 * e's retirement. */
int models_activate(models *ms, models_entry *e, infer **in, const uint8_t **sha256, err_info *ei);

/* SIGHUP: models whose load failed may be tried again (the file may have been fixed).
 * Returns how many were failed. Any thread. */
int models_forget_failures(models *ms);

/* Worker (the scheduler's chore): unloads models idle past their keep-alive, and closes
 * retired ones. */
void models_sweep(models *ms);
/* Any thread: when models_sweep next has something to do (sched_now_ns base), INT64_MAX
 * for never. */
int64_t models_next_sweep(models *ms);

/* e's mapped file changed under it (infer_check_file said so with message): e is out of
 * service until restart. Any thread; true the first time, so the caller logs it once. */
bool models_retire(models *ms, models_entry *e, const char *message);

/* The model the worker has started (the one just used), else the default; NULL if neither
 * is loaded. For /v1/status: lease it to look inside. */
models_entry *models_current(models *ms);

/* One line of /v1/models. */
typedef struct models_info {
    const char *id;
    const char *path;
    models_state state;
    bool is_default;
    long long created;        /* Unix time: when it was loaded, else the file's mtime */
    uint64_t bytes;           /* the file's size */
    const char *message;      /* why it failed, "" otherwise */
} models_info;
/* Calls fn for every model (the default first, then the directory in name order), after
 * looking at the directory again; files gone from it are left out unless loaded. */
void models_list(models *ms, void (*fn)(void *ctx, const models_info *m), void *ctx);

#endif
