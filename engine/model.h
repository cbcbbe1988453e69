/* model — a transformer loaded from GGUF (architectures `llama` and `qwen2`) and the
 * sessions that run it: KV cache, scratch buffers, forward pass.
 *
 * A model is immutable after model_open and may back several sessions; a session is used by
 * one thread at a time. Weights stay in the file mapping (no copy): tensor pointers are
 * borrowed from the gguf object the model owns (or from the caller's buffer, model_open_mem).
 * Not here: tokenization (tok.h), sampling (sampler.h), the generation loop (gen.h). */
#ifndef EDGELLM_MODEL_H
#define EDGELLM_MODEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"
#include "kern.h"
#include "pool.h"
#include "tok.h"

typedef enum model_arch { MODEL_ARCH_LLAMA, MODEL_ARCH_QWEN2 } model_arch;

typedef struct model_hparams {
    model_arch arch;
    const char *arch_name;   /* "llama", "qwen2" */
    char name[128];          /* general.name, "" if absent */
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;        /* per-head width of Q/K/V */
    int32_t n_ff;
    int32_t n_rot;           /* leading dims of each head that RoPE rotates */
    int32_t n_ctx_train;     /* context length the model was trained for */
    float rms_eps;
    float rope_base;         /* theta base */
    float rope_freq_scale;   /* 1 / linear scaling factor */
    bool rope_neox;          /* rotate pairs (i, i + n_rot/2) instead of (2i, 2i+1) */
    bool has_rope_factors;   /* per-frequency divisors (Llama 3.1+ rope_freqs.weight) */
    bool tied_output;        /* output projection is token_embd */
    bool qkv_bias;
} model_hparams;

typedef struct model model;

/* Opens path, validates the architecture, hyper-parameters and every tensor's shape and
 * type, and loads the tokenizer. Errors name the key or tensor ("blk.3.attn_k.weight has
 * shape [256, 64], expected [256, 128]"; "architecture 'falcon' is not supported"). */
int model_open(model **out, const char *path, err_info *ei);
/* Same over a GGUF image in the caller's memory (e.g. mstore_data of a shared copy): the
 * buffer is borrowed, read-only, and must outlive the model. */
int model_open_mem(model **out, const void *data, size_t size, err_info *ei);
/* Same over an image model_prepare_shared rearranged (it returned 1). */
int model_open_prepared(model **out, const void *data, size_t size, err_info *ei);
/* Rearranges the GGUF image at data (size bytes, writable, ours alone) for decode: the
 * matrices of types with strips (kern.h) laid out in strips, when this machine's kernel
 * (kern_select) multiplies them natively, so that every process mapping the image decodes
 * from strips without rearranging anything itself. Returns 1 when it rearranged, 0 when it
 * left the image as it is (no such kernel or matrix), or a negative code when the image is
 * no model (validated as model_open_mem does). An mstore_opts.prepare (mstore.h). */
int model_prepare_shared(void *data, size_t size, err_info *ei);
void model_close(model *m);

const model_hparams *model_hparams_of(const model *m);
const tok_vocab *model_vocab(const model *m);
const gguf *model_gguf(const model *m);
/* Most common weight type of the layer matrices, e.g. QT_Q4_K for a Q4_K_M file. */
qt_type model_main_type(const model *m);
/* Bytes of all tensor data. */
uint64_t model_weight_bytes(const model *m);

typedef struct model_session_params {
    int32_t n_ctx;          /* <= 0: n_ctx_train (capped at 4096 to bound memory) */
    qt_type kv_type;        /* QT_F16 (default) or QT_F32 */
    int32_t n_batch;        /* tokens per prefill chunk, <= 0: 64 */
    pool *pool;             /* borrowed; NULL runs on the calling thread */
    const kern_ops *kern;   /* borrowed; NULL selects with kern_select(NULL) */
} model_session_params;

void model_session_params_default(model_session_params *p);

typedef struct model_session model_session;

int model_session_new(model_session **out, const model *m, const model_session_params *p, err_info *ei);
void model_session_free(model_session *s);

int32_t model_session_n_ctx(const model_session *s);
/* Positions already in the KV cache. */
int32_t model_session_n_past(const model_session *s);
/* Forgets positions from n_past on (n_past <= current), keeping the prefix for reuse. */
void model_session_rewind(model_session *s, int32_t n_past);

/* Feeds n tokens at positions n_past .. n_past+n-1 and advances n_past.
 * logits: if all_logits, n * n_vocab floats (row i after token i); otherwise n_vocab floats
 * for the last token. May be NULL when the caller only wants the cache filled.
 * cancel (may be NULL) is polled between prefill chunks: when it becomes true the call
 * stops with -ERR_CANCELLED, keeping the positions evaluated so far.
 * Errors: -ERR_CONTEXT_FULL when n_past + n > n_ctx (nothing evaluated), -ERR_RANGE for a
 * token id outside the vocabulary. */
int model_session_eval(model_session *s, const int32_t *tokens, int32_t n, float *logits, bool all_logits,
                       const atomic_bool *cancel, err_info *ei);

#endif
