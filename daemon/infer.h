/* infer — the daemon's hold on the engine for one model: its bytes (a shared copy from the
 * model store, engine/mstore.h, or with no-shm a mapping of the file), the parsed model, its
 * chat format, and while the worker uses it, the session it generates with; turning a
 * request into prompt tokens, and running one job through gen_run while writing its answer
 * into the job's channel.
 *
 * A model that is open but not started costs its parsed vocabulary and a mapping of shared
 * pages; a started one adds the session (KV cache, scratch, thread pool), which is why the
 * worker keeps only one started at a time (daemon/models.h).
 * Threads: infer_open may run anywhere (it is slow: a first copy reads the whole file).
 * infer_start, infer_stop and infer_run belong to the worker thread (the thread pool they
 * create must be driven by the thread that made it). infer_prompt, infer_tokenize and
 * infer_detokenize only read the model and may run on any thread, concurrently with the worker.
 * Not here: which models exist and when they load (models.h), queueing (sched.h), HTTP
 * (api/), choosing routes (router.h). */
#ifndef EDGELLM_INFER_H
#define EDGELLM_INFER_H

#include <stdbool.h>
#include <stdint.h>

#include "api/job.h"
#include "api/req.h"
#include "config/cfg.h"
#include "engine/chat.h"
#include "engine/err.h"

typedef struct infer infer;

/* The context a model gets unless --ctx says otherwise: its trained length, capped so a
 * model trained for 128k tokens does not ask for gigabytes of KV cache. */
enum { INFER_CTX_DEFAULT_MAX = 4096 };

/* Opens the model at path and picks its chat format (c->chat_template, else the GGUF's
 * template, else chatml). Unless c->no_shm, the bytes come from the shared-memory store
 * (c->mlock, c->shm_verify apply); if the store is unusable for a reason other than memory
 * (no /dev/shm, permissions), the file is mapped instead and infer_source says why.
 * -ENOMEM (message with the sizes) when the copy does not fit in memory. c is copied. */
int infer_open(infer **out, const char *path, const cfg *c, err_info *ei);
/* Creates the thread pool, session and generation context (n_ctx tokens). Worker thread;
 * a no-op when started already. */
int infer_start(infer *in, err_info *ei);
/* Frees what infer_start made (the KV cache is the big part); the model stays open. Worker
 * thread, or any thread once the worker can no longer reach in. */
void infer_stop(infer *in);
bool infer_started(const infer *in);
void infer_close(infer *in);

/* Where the weights are read from, for the log: "shared memory, attached (warm)", "shared
 * memory, copied now (cold)", "file mapping" or "file mapping (shared memory unusable: ...)".
 * Lives with in. */
const char *infer_source(const infer *in);
/* True when this open made the shared copy (a cold load: the file was read and hashed). */
bool infer_copied_now(const infer *in);
/* SHA-256 of the model file, as the store recorded it when it made the copy (the identity
 * the response cache keys on, with no second read of the file); NULL for a file mapping. */
const uint8_t *infer_model_sha256(const infer *in);
/* Bytes of the model file (what it holds in memory). */
uint64_t infer_file_bytes(const infer *in);

/* 0 while the model's bytes are still what was loaded; -ERR_IO, with a message naming the
 * file and telling the operator to restart, once a mapped file was truncated or rewritten in
 * place (its size or mtime changed) or a read of its mapping faulted and was papered over
 * with zeros (daemon/mapguard.h: the daemon survives, the answers would be garbage). A file
 * replaced by rename is not a change: the mapped one lives on. A shared copy is immune: it
 * is never written after it was made, whatever happens to the file (a new version of the
 * file is copied anew the next time the model loads), so this is always 0 for it.
 * infer_run checks before and after generating; the router retires the model on the first
 * failure. Any thread. */
int infer_check_file(const infer *in, err_info *ei);

/* Model id clients name in requests: the file name without directory and ".gguf". */
const char *infer_model_id(const infer *in);
const char *infer_model_path(const infer *in);
const char *infer_arch(const infer *in);
int32_t infer_n_ctx(const infer *in);          /* the session's context length, known at open */
uint64_t infer_weight_bytes(const infer *in);
chat_family infer_chat_family(const infer *in);
/* How the chat format was chosen: "flag", "model" or "fallback" (none recognised). */
const char *infer_chat_source(const infer *in);

/* The prompt text of a request: a chat rendered through the model's template, a completion's
 * prompt as it is. *text is malloc'd (NUL-terminated, *len bytes), caller frees. It is what
 * the model reads, so the response cache keys on it. */
int infer_render(const infer *in, const api_req *r, char **text, size_t *len, err_info *ei);
/* Prompt tokens of text from infer_render (a chat's special tokens parsed, a completion's
 * not), BOS added where the vocabulary asks. *tokens is malloc'd, caller frees.
 * -ERR_CONTEXT_FULL when the prompt leaves no room to generate in n_ctx. */
int infer_prompt(const infer *in, const api_req *r, const char *text, size_t len, int32_t **tokens, int32_t *n,
                 err_info *ei);

/* One job as the router hands it to the worker. */
typedef struct infer_task {
    const int32_t *prompt;
    int32_t n_prompt;
    int32_t max_tokens;
    int64_t deadline_ns;     /* sched_now_ns base; generation ends there (finish "length") */
} infer_task;

/* Generates job's answer into its channel (api_job_emit_*: SSE frames when the request
 * streams, plain text otherwise) and fills res (code, finish_reason, partial, counts,
 * timings other than queue_ms and total_ms). A model file that changed (infer_check_file)
 * fails the job with 503 model_not_loaded and that message. Worker thread. Never allocates
 * per token. */
void infer_run(infer *in, api_job *job, const infer_task *t, api_result *res);

/* /tokenize: ids of r->prompt, and with r->with_pieces their text, as a JSON body
 * ({"tokens":[...]} or {"tokens":[{"id":..,"piece":".."}...]}); *json malloc'd. */
int infer_tokenize(const infer *in, const api_req *r, char **json, err_info *ei);
/* /detokenize: {"content":"..."} for r->tokens; -ERR_RANGE names an id outside the vocab. */
int infer_detokenize(const infer *in, const api_req *r, char **json, err_info *ei);

#endif
