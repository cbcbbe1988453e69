/* infer — see infer.h. The worker's frame buffer lives here, allocated with the infer
 * object, so streaming a token formats into memory that already exists. A mapped model file
 * stays open beside its mapping, so a truncation or an in-place rewrite of that very file is
 * seen by one fstat (a file replaced by rename leaves the mapped one intact: nothing to see);
 * a shared copy needs no such watch. */
#include "infer.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/mapguard.h"
#include "daemon/sched.h"
#include "engine/gen.h"
#include "engine/model.h"
#include "engine/mstore.h"
#include "engine/pool.h"
#include "engine/tok.h"
#include "engine/utf8.h"

struct infer {
    cfg c;
    char path[CFG_PATH_MAX];
    mstore *ms;                     /* the shared copy the model reads, or NULL: a file mapping */
    model *m;
    int fd;                         /* a mapped file, for its stat; -1 for a shared copy */
    struct stat st;                 /* as it was when loaded */
    mapguard *guard;                /* the mapping's SIGBUS guard; NULL if none was free (or shared) */
    int32_t n_ctx;
    char source[ERR_MSG_MAX + 64];  /* infer_source */
    pool *pool;
    model_session *s;
    gen_ctx *g;
    char id[API_SSE_MODEL_MAX + 1];
    chat_family family;
    const char *chat_source;
    char frame[API_SSE_FRAME_MAX];  /* the worker formats every SSE frame here */
};

/* "/models/qwen2-0.5b.q4_k_m.gguf" -> "qwen2-0.5b.q4_k_m" */
static void model_id_from_path(const char *path, char *id, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf"))
        n -= 5;
    snprintf(id, cap, "%.*s", (int)n, base);
}

static int choose_chat_family(infer *in, err_info *ei)
{
    if (in->c.chat_template[0]) {
        in->family = chat_family_from_name(in->c.chat_template);
        in->chat_source = "flag";
        if (in->family == CHAT_UNKNOWN)
            return err_set(ei, -EINVAL, "flag --chat-template: unknown chat template '%s'", in->c.chat_template);
        return 0;
    }
    gguf_str tmpl = {0};
    gguf_get_str(model_gguf(in->m), "tokenizer.chat_template", &tmpl, NULL);
    in->family = chat_detect(tmpl.ptr, (size_t)tmpl.len);
    in->chat_source = "model";
    if (in->family == CHAT_UNKNOWN) {
        in->family = CHAT_CHATML;
        in->chat_source = "fallback";
    }
    return 0;
}

/* The model over a mapping of the file, watched for changes (infer_check_file). */
static int open_mapped(infer *in, err_info *ei)
{
    /* stat before mapping: a change between the two shows up as a change later */
    in->fd = open(in->path, O_RDONLY | O_CLOEXEC);
    if (in->fd >= 0 && fstat(in->fd, &in->st) < 0) {
        close(in->fd);
        in->fd = -1;
    }
    int rc = model_open(&in->m, in->path, ei);
    if (rc == 0) {
        /* not fatal: without a free guard the model still works, it is only the truncation
         * that would kill it */
        const gguf *g = model_gguf(in->m);
        mapguard_arm(&in->guard, gguf_base(g), (size_t)gguf_size(g), NULL);
    }
    return rc;
}

/* The model over its shared copy. A store that cannot be used (no /dev/shm, its
 * permissions, another process's copy stalled) falls back to the file, so a container
 * without /dev/shm still serves; but memory (the budget's business: models.c evicts and
 * retries) and an mlock the operator asked for are errors. A file that cannot be read
 * fails again in the fallback, with its own message. */
static int open_shared(infer *in, err_info *ei)
{
    mstore_opts mo;
    mstore_opts_default(&mo);
    mo.mlock = in->c.mlock;
    mo.verify = in->c.shm_verify;
    mo.prepare = model_prepare_shared;
    err_info shm_ei = {0};
    int rc = mstore_open(&in->ms, in->path, &mo, &shm_ei);
    if (rc == 0) {
        snprintf(in->source, sizeof in->source, "shared memory, %s",
                 mstore_created(in->ms) ? "copied now (cold)" : "attached (warm)");
        if ((rc = (mstore_prepared(in->ms) ? model_open_prepared : model_open_mem)(&in->m, mstore_data(in->ms),
                                                                                   mstore_size(in->ms), ei)) < 0) {
            /* a file that is no model must not stay in memory as one */
            mstore_close(in->ms);
            in->ms = NULL;
            mstore_remove(in->path, NULL);
        }
        return rc;
    }
    if (rc == -ENOMEM || in->c.mlock)
        return err_set(ei, rc, "%s", shm_ei.msg);
    snprintf(in->source, sizeof in->source, "file mapping (shared memory unusable: %s)", shm_ei.msg);
    return open_mapped(in, ei);
}

int infer_open(infer **out, const char *path, const cfg *c, err_info *ei)
{
    *out = NULL;
    infer *in = calloc(1, sizeof *in);
    if (!in)
        return err_set(ei, -ENOMEM, "out of memory");
    in->c = *c;
    in->fd = -1;
    snprintf(in->path, sizeof in->path, "%s", path);
    snprintf(in->source, sizeof in->source, "file mapping");
    model_id_from_path(path, in->id, sizeof in->id);
    int rc = c->no_shm ? open_mapped(in, ei) : open_shared(in, ei);
    if (rc == 0) {
        int32_t trained = model_hparams_of(in->m)->n_ctx_train;
        in->n_ctx = c->ctx > 0 ? c->ctx : trained < INFER_CTX_DEFAULT_MAX ? trained : INFER_CTX_DEFAULT_MAX;
        rc = choose_chat_family(in, ei);
    }
    if (rc < 0) {
        infer_close(in);
        return rc;
    }
    *out = in;
    return 0;
}

int infer_start(infer *in, err_info *ei)
{
    if (in->g)
        return 0;
    model_session_params sp;
    model_session_params_default(&sp);
    int rc = pool_new(&in->pool, in->c.threads, ei);
    sp.n_ctx = in->n_ctx;
    sp.pool = in->pool;
    if (rc == 0)
        rc = model_session_new(&in->s, in->m, &sp, ei);
    if (rc == 0)
        rc = gen_ctx_new(&in->g, in->m, in->s, ei);
    if (rc < 0)
        infer_stop(in);
    return rc;
}

void infer_stop(infer *in)
{
    gen_ctx_free(in->g);
    model_session_free(in->s);
    pool_free(in->pool);
    in->g = NULL;
    in->s = NULL;
    in->pool = NULL;
}

bool infer_started(const infer *in) { return in->g != NULL; }

void infer_close(infer *in)
{
    if (!in)
        return;
    infer_stop(in);
    mapguard_disarm(in->guard);
    model_close(in->m);
    mstore_close(in->ms);
    if (in->fd >= 0)
        close(in->fd);
    free(in);
}

int infer_check_file(const infer *in, err_info *ei)
{
    uint64_t faults = mapguard_faults(in->guard);
    struct stat now;
    if (in->fd >= 0 && fstat(in->fd, &now) == 0 &&
        (now.st_size != in->st.st_size || now.st_mtim.tv_sec != in->st.st_mtim.tv_sec ||
         now.st_mtim.tv_nsec != in->st.st_mtim.tv_nsec))
        return err_set(ei, -ERR_IO,
                       "the model file %s was truncated or rewritten after it was loaded (%lld bytes then, %lld now%s):"
                       " restart edgellmd to load it again",
                       in->path, (long long)in->st.st_size, (long long)now.st_size,
                       faults ? ", and reading it faulted" : "");
    if (faults)
        return err_set(ei, -ERR_IO,
                       "reading the model file %s faulted (%llu pages were gone: it was truncated while in use):"
                       " restart edgellmd to load it again",
                       in->path, (unsigned long long)faults);
    return 0;
}

const char *infer_source(const infer *in) { return in->source; }
bool infer_copied_now(const infer *in) { return in->ms && mstore_created(in->ms); }
const uint8_t *infer_model_sha256(const infer *in) { return in->ms ? mstore_hash(in->ms) : NULL; }
uint64_t infer_file_bytes(const infer *in)
{
    return in->ms ? mstore_size(in->ms) : (uint64_t)gguf_size(model_gguf(in->m));
}

const char *infer_model_id(const infer *in) { return in->id; }
const char *infer_model_path(const infer *in) { return in->path; }
const char *infer_arch(const infer *in) { return model_hparams_of(in->m)->arch_name; }
int32_t infer_n_ctx(const infer *in) { return in->n_ctx; }
uint64_t infer_weight_bytes(const infer *in) { return model_weight_bytes(in->m); }
chat_family infer_chat_family(const infer *in) { return in->family; }
const char *infer_chat_source(const infer *in) { return in->chat_source; }

/* tok_encode into a malloc'd array sized by a first guess, retried once with the count the
 * tokenizer reports. */
static int encode(const tok_vocab *v, const char *text, size_t len, bool add_bos, bool special, int32_t **out,
                  int32_t *n, err_info *ei)
{
    int cap = len < (size_t)INT32_MAX - 16 ? (int)len + 16 : INT32_MAX;
    int count = 0, rc = -ERANGE;
    int32_t *ids = NULL;
    for (int attempt = 0; attempt < 2 && rc == -ERANGE; attempt++) {
        int32_t *grown = realloc(ids, (size_t)cap * sizeof *ids);
        if (!grown) {
            free(ids);
            return err_set(ei, -ENOMEM, "out of memory for %d tokens", cap);
        }
        ids = grown;
        rc = tok_encode(v, text, len, add_bos, special, ids, cap, &count);
        cap = count;
    }
    if (rc < 0) {
        free(ids);
        return err_set(ei, rc, "cannot tokenize the prompt");
    }
    *out = ids;
    *n = count;
    return 0;
}

int infer_render(const infer *in, const api_req *r, char **text, size_t *len, err_info *ei)
{
    if (r->kind == API_KIND_CHAT)
        return chat_render(in->family, r->msgs, r->n_msgs, true, text, len, ei);
    *text = malloc(r->prompt_len + 1);
    if (!*text)
        return err_set(ei, -ENOMEM, "out of memory");
    memcpy(*text, r->prompt, r->prompt_len + 1);
    *len = r->prompt_len;
    return 0;
}

int infer_prompt(const infer *in, const api_req *r, const char *text, size_t len, int32_t **tokens, int32_t *n,
                 err_info *ei)
{
    *tokens = NULL;
    /* A chat's rendered template carries special tokens; a completion prompt is plain text. */
    bool chat = r->kind == API_KIND_CHAT;
    int rc = encode(model_vocab(in->m), text, len, true, chat, tokens, n, ei);
    int32_t n_ctx = infer_n_ctx(in);
    if (rc == 0 && *n >= n_ctx) {
        free(*tokens);
        *tokens = NULL;
        return err_set(ei, -ERR_CONTEXT_FULL, "the prompt is %d tokens; the context holds %d, so nothing could be generated",
                       *n, n_ctx);
    }
    return rc;
}

typedef struct run_state {
    infer *in;
    api_job *job;
    int64_t deadline_ns;
    bool deadline_hit;
    int32_t n_after_cancel;
} run_state;

static int on_text(void *ud, const char *text, size_t len, int32_t token)
{
    (void)token;
    run_state *st = ud;
    st->n_after_cancel += api_job_cancelled(st->job);
    if (mapguard_faults(st->in->guard))
        return 1; /* the weights turned to zeros: stop computing garbage (infer_run says why) */
    if (sched_now_ns() > st->deadline_ns) {
        st->deadline_hit = true;
        return 1;
    }
    return api_job_emit_text(st->job, text, len, st->in->frame) < 0;
}

void infer_run(infer *in, api_job *job, const infer_task *t, api_result *res)
{
    api_req *r = api_job_req(job);
    const char *stops[API_MAX_STOP + 1];
    int n_stop = 0;
    for (int i = 0; i < r->n_stop; i++)
        stops[n_stop++] = r->stop[i];
    const char *turn_end = chat_turn_end(in->family);
    if (r->kind == API_KIND_CHAT && *turn_end)
        stops[n_stop++] = turn_end;
    gen_request g = {
        .prompt = t->prompt,
        .n_prompt = t->n_prompt,
        .max_tokens = t->max_tokens,
        .sampling = r->sampling,
        .stop = stops,
        .n_stop = n_stop,
        .cancel = api_job_cancel_flag(job),
    };
    run_state st = {.in = in, .job = job, .deadline_ns = t->deadline_ns};
    gen_result gr = {0};
    err_info ei = {0};
    /* a model file changed under its mapping: refuse before, and disown what was computed
     * from zeros after (mapguard.h) */
    int rc = infer_check_file(in, &ei);
    bool file_ok = rc == 0;
    if (file_ok) {
        api_job_emit_start(job, in->frame);
        rc = gen_run(in->g, &g, on_text, &st, &gr, &ei);
        if (rc == 0 && (rc = infer_check_file(in, &ei)) < 0)
            file_ok = false;
    }
    res->n_prompt = gr.n_prompt;
    res->n_generated = gr.n_generated;
    res->first_token_ms = gr.first_token_ms;
    res->decode_ms = gr.decode_ms;
    res->n_after_cancel = st.n_after_cancel;
    if (rc < 0) {
        res->code = rc;
        snprintf(res->message, sizeof res->message, "%s", err_text(&ei, rc));
        if (!file_ok) { /* the model, not the request, is at fault */
            res->has_err = true;
            res->err = API_E_NO_MODEL;
        }
    } else {
        static const char *const reasons[] = {[GEN_FINISH_STOP] = "stop", [GEN_FINISH_LENGTH] = "length"};
        /* A deadline truncates like max_tokens does; a client that left needs no reason. */
        res->finish_reason =
            gr.finish == GEN_FINISH_CANCELLED ? (st.deadline_hit ? "length" : NULL) : reasons[gr.finish];
        res->partial = st.deadline_hit;
    }
    api_job_emit_end(job, res, in->frame);
}

/* True when s[0..n) is well-formed UTF-8 (a piece of a byte-fallback token may not be). */
static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int used = utf8_decode(s + i, n - i, &cp);
        if (cp == UTF8_REPLACEMENT && used < 3)
            return false;
        i += (size_t)used;
    }
    return true;
}

static char *print_json(cJSON *root, int rc_if_null, int *rc)
{
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    *rc = text ? 0 : rc_if_null;
    return text;
}

int infer_tokenize(const infer *in, const api_req *r, char **json, err_info *ei)
{
    const tok_vocab *v = model_vocab(in->m);
    int32_t *ids = NULL, n = 0;
    int rc = encode(v, r->prompt, r->prompt_len, r->add_special, r->parse_special, &ids, &n, ei);
    if (rc < 0)
        return rc;
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "tokens");
    char piece[1024];
    for (int32_t i = 0; arr && i < n; i++) {
        cJSON *item = cJSON_CreateNumber(ids[i]);
        if (r->with_pieces) {
            cJSON *obj = cJSON_CreateObject();
            cJSON_AddItemToObject(obj, "id", item);
            int len = tok_piece(v, ids[i], true, piece, sizeof piece - 1);
            len = len < (int)sizeof piece - 1 ? len : (int)sizeof piece - 1;
            piece[len] = 0;
            if (valid_utf8(piece, (size_t)len)) {
                cJSON_AddStringToObject(obj, "piece", piece);
            } else {
                cJSON *bytes = cJSON_AddArrayToObject(obj, "piece");
                for (int b = 0; b < len; b++)
                    cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)piece[b]));
            }
            item = obj;
        }
        cJSON_AddItemToArray(arr, item);
    }
    free(ids);
    *json = print_json(arr ? root : (cJSON_Delete(root), NULL), -ENOMEM, &rc);
    return rc < 0 ? err_set(ei, rc, "out of memory") : 0;
}

int infer_detokenize(const infer *in, const api_req *r, char **json, err_info *ei)
{
    const tok_vocab *v = model_vocab(in->m);
    int32_t n_vocab = tok_n_vocab(v);
    size_t cap = 64;
    for (size_t i = 0; i < r->n_tokens; i++) {
        if (r->tokens[i] >= n_vocab)
            return err_set(ei, -ERR_RANGE, "'tokens[%zu]' is %d; the vocabulary has %d tokens", i, r->tokens[i], n_vocab);
        cap += 3 * (size_t)tok_text(v, r->tokens[i]).len + 32; /* the bound tok_stream_push needs per token */
    }
    char *text = malloc(cap);
    if (!text)
        return err_set(ei, -ENOMEM, "out of memory");
    tok_stream st;
    tok_stream_init(&st);
    size_t len = 0;
    for (size_t i = 0; i < r->n_tokens; i++) {
        int k = tok_stream_push(v, &st, r->tokens[i], text + len, (int)(cap - len));
        len += k > 0 ? (size_t)k : 0;
    }
    int k = tok_stream_flush(&st, text + len, (int)(cap - len));
    len += k > 0 ? (size_t)k : 0;
    text[len] = 0;
    cJSON *root = cJSON_CreateObject();
    int rc;
    if (!cJSON_AddStringToObject(root, "content", text)) {
        cJSON_Delete(root);
        root = NULL;
    }
    free(text);
    *json = print_json(root, -ENOMEM, &rc);
    return rc < 0 ? err_set(ei, rc, "out of memory") : 0;
}
