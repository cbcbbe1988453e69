/* model — loading a llama/qwen2 GGUF into a validated set of tensor views, and the forward
 * pass of a session over it.
 *
 * Loading checks every hyper-parameter and tensor shape against the architecture before
 * any session exists, so the forward pass can trust them. Weights are used in place in the
 * mapping. The forward pass processes prompt tokens in chunks of n_batch (each weight row
 * is read once per chunk and dotted with every token of it) and decodes with chunks of 1.
 *
 * Shapes in comments use GGUF order: [row length, rows]. A "row" of a weight matrix is one
 * output feature; activations are [tokens][features] row-major. */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAX_LAYERS = 1024,
    MAX_CTX_DEFAULT = 4096,   /* session default cap when the caller does not choose */
    ROW_ALIGN = 16,           /* matmul rows per thread start on multiples of this */
};

typedef struct layer {
    const gguf_tensor *attn_norm;   /* [n_embd] F32 */
    const gguf_tensor *wq;          /* [n_embd, n_head*head_dim] */
    const gguf_tensor *wk;          /* [n_embd, n_head_kv*head_dim] */
    const gguf_tensor *wv;          /* [n_embd, n_head_kv*head_dim] */
    const gguf_tensor *bq, *bk, *bv;/* [rows] F32, qwen2 only */
    const gguf_tensor *wo;          /* [n_head*head_dim, n_embd] */
    const gguf_tensor *ffn_norm;    /* [n_embd] F32 */
    const gguf_tensor *w_gate;      /* [n_embd, n_ff] */
    const gguf_tensor *w_up;        /* [n_embd, n_ff] */
    const gguf_tensor *w_down;      /* [n_ff, n_embd] */
} layer;

struct model {
    gguf *g;
    tok_vocab *vocab;
    model_hparams hp;
    layer *layers;                  /* n_layer */
    const gguf_tensor *tok_embd;    /* [n_embd, n_vocab] */
    const gguf_tensor *output_norm; /* [n_embd] F32 */
    const gguf_tensor *output;      /* [n_embd, n_vocab]; token_embd when tied */
    const gguf_tensor *rope_freqs;  /* [n_rot/2] F32 or NULL */
    qt_type main_type;
    uint64_t weight_bytes;
    bool strips;                    /* the image was prepared: in_strips says which matrices */
};

/* ---- loading ------------------------------------------------------------- */

/* Reads ARCH.suffix as a positive int32 (required unless def >= 0, which is then the default). */
static int arch_int(const model *m, const char *suffix, int64_t def, int64_t max, int32_t *out, err_info *ei)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->hp.arch_name, suffix);
    int64_t v;
    int rc = gguf_get_int(m->g, key, &v, ei);
    if (rc == -ERR_NOT_FOUND && def >= 0) {
        *out = (int32_t)def;
        return 0;
    }
    if (rc)
        return rc;
    if (v <= 0 || v > max)
        return err_set(ei, -ERR_RANGE, "metadata key '%s' = %lld is outside 1..%lld", key, (long long)v, (long long)max);
    *out = (int32_t)v;
    return 0;
}

static int arch_float(const model *m, const char *suffix, double def, bool required, float *out, err_info *ei)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->hp.arch_name, suffix);
    double v;
    int rc = gguf_get_float(m->g, key, &v, ei);
    if (rc == -ERR_NOT_FOUND && !required) {
        *out = (float)def;
        return 0;
    }
    if (rc)
        return rc;
    if (!isfinite(v) || v <= 0)
        return err_set(ei, -ERR_RANGE, "metadata key '%s' = %g must be positive", key, v);
    *out = (float)v;
    return 0;
}

static int read_rope_scaling(model *m, err_info *ei)
{
    model_hparams *hp = &m->hp;
    char key[128];
    hp->rope_freq_scale = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", hp->arch_name);
    gguf_str type;
    int rc = gguf_get_str(m->g, key, &type, ei);
    if (rc == -ERR_NOT_FOUND)
        return 0;
    if (rc)
        return rc;
    if (gguf_str_eq(type, "none"))
        return 0;
    if (!gguf_str_eq(type, "linear"))
        return err_set(ei, -ERR_UNSUPPORTED, "metadata key '%s' = '%.*s': only 'none' and 'linear' RoPE scaling are supported",
                       key, (int)(type.len > 32 ? 32 : type.len), type.ptr);
    float factor;
    if ((rc = arch_float(m, "rope.scaling.factor", 1.0, false, &factor, ei)))
        return rc;
    hp->rope_freq_scale = 1.0f / factor;
    return 0;
}

static int read_hparams(model *m, err_info *ei)
{
    model_hparams *hp = &m->hp;
    gguf_str arch;
    int rc = gguf_get_str(m->g, "general.architecture", &arch, ei);
    if (rc)
        return rc;
    if (gguf_str_eq(arch, "llama")) {
        hp->arch = MODEL_ARCH_LLAMA;
        hp->arch_name = "llama";
        hp->rope_neox = false; /* the converter permutes Q/K so adjacent pairs rotate */
    } else if (gguf_str_eq(arch, "qwen2")) {
        hp->arch = MODEL_ARCH_QWEN2;
        hp->arch_name = "qwen2";
        hp->rope_neox = true;
        hp->qkv_bias = true;
    } else {
        return err_set(ei, -ERR_UNSUPPORTED, "architecture '%.*s' is not supported (supported: llama, qwen2)",
                       (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
    }
    gguf_str name;
    if (gguf_get_str(m->g, "general.name", &name, NULL) == 0)
        snprintf(hp->name, sizeof hp->name, "%.*s", (int)(name.len < sizeof hp->name ? name.len : sizeof hp->name - 1), name.ptr);

    if ((rc = arch_int(m, "embedding_length", -1, 1 << 16, &hp->n_embd, ei)) ||
        (rc = arch_int(m, "block_count", -1, MAX_LAYERS, &hp->n_layer, ei)) ||
        (rc = arch_int(m, "attention.head_count", -1, 1024, &hp->n_head, ei)) ||
        (rc = arch_int(m, "attention.head_count_kv", hp->n_head, 1024, &hp->n_head_kv, ei)) ||
        (rc = arch_int(m, "feed_forward_length", -1, 1 << 20, &hp->n_ff, ei)) ||
        (rc = arch_int(m, "context_length", 2048, 1 << 24, &hp->n_ctx_train, ei)) ||
        (rc = arch_float(m, "attention.layer_norm_rms_epsilon", 0, true, &hp->rms_eps, ei)) ||
        (rc = arch_float(m, "rope.freq_base", 10000.0, false, &hp->rope_base, ei)))
        return rc;
    if (hp->n_head % hp->n_head_kv)
        return err_set(ei, -ERR_FORMAT, "%s.attention.head_count %d is not a multiple of head_count_kv %d",
                       hp->arch_name, hp->n_head, hp->n_head_kv);
    if ((rc = arch_int(m, "attention.key_length", hp->n_embd / hp->n_head, 1 << 12, &hp->head_dim, ei)))
        return rc;
    int32_t v_len;
    if ((rc = arch_int(m, "attention.value_length", hp->head_dim, 1 << 12, &v_len, ei)))
        return rc;
    if (v_len != hp->head_dim)
        return err_set(ei, -ERR_UNSUPPORTED, "%s.attention.value_length %d differs from key_length %d",
                       hp->arch_name, v_len, hp->head_dim);
    if ((rc = arch_int(m, "rope.dimension_count", hp->head_dim, hp->head_dim, &hp->n_rot, ei)))
        return rc;
    if (hp->n_rot % 2)
        return err_set(ei, -ERR_FORMAT, "%s.rope.dimension_count %d is odd", hp->arch_name, hp->n_rot);
    return read_rope_scaling(m, ei);
}

enum { BIND_OPTIONAL = 1, BIND_F32 = 2 };

/* Looks up the tensor called fmt... and checks its shape is [ne0] (ne1 == 0) or [ne0, ne1],
 * and its type: F32 with BIND_F32, else any type the kernels compute with. A missing tensor
 * is an error unless BIND_OPTIONAL, in which case *out is NULL. */
static int bind(model *m, err_info *ei, const gguf_tensor **out, unsigned flags, int64_t ne0, int64_t ne1,
                const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static int bind(model *m, err_info *ei, const gguf_tensor **out, unsigned flags, int64_t ne0, int64_t ne1,
                const char *fmt, ...)
{
    char name[GGUF_MAX_NAME];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const gguf_tensor *t = gguf_find_tensor(m->g, name);
    *out = t;
    if (!t)
        return (flags & BIND_OPTIONAL) ? 0 : err_set(ei, -ERR_FORMAT, "tensor '%s' is missing", name);
    uint32_t want_dims = ne1 ? 2 : 1;
    if (t->n_dims != want_dims || (int64_t)t->ne[0] != ne0 || (ne1 && (int64_t)t->ne[1] != ne1)) {
        if (ne1)
            return err_set(ei, -ERR_FORMAT, "tensor '%s' has shape [%llu, %llu] (%u dims), expected [%lld, %lld]", name,
                           (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], t->n_dims, (long long)ne0, (long long)ne1);
        return err_set(ei, -ERR_FORMAT, "tensor '%s' has shape [%llu, ...] (%u dims), expected [%lld]", name,
                       (unsigned long long)t->ne[0], t->n_dims, (long long)ne0);
    }
    const qt_traits *tr = qt_get(t->type);
    if ((flags & BIND_F32) ? t->type != QT_F32 : !tr->supported)
        return err_set(ei, -ERR_UNSUPPORTED, "tensor '%s' has type %s, %s", name, tr->name,
                       (flags & BIND_F32) ? "expected F32" : "which edgellm cannot compute with");
    return 0;
}

static int bind_tensors(model *m, err_info *ei)
{
    const model_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, V = hp->n_vocab, Q = (int64_t)hp->n_head * hp->head_dim,
            KV = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    unsigned bias = hp->qkv_bias ? 0 : BIND_OPTIONAL;
    int rc;
    if ((rc = bind(m, ei, &m->tok_embd, 0, E, V, "token_embd.weight")) ||
        (rc = bind(m, ei, &m->output_norm, BIND_F32, E, 0, "output_norm.weight")) ||
        (rc = bind(m, ei, &m->output, BIND_OPTIONAL, E, V, "output.weight")) ||
        (rc = bind(m, ei, &m->rope_freqs, BIND_OPTIONAL | BIND_F32, hp->n_rot / 2, 0, "rope_freqs.weight")))
        return rc;
    m->hp.tied_output = m->output == NULL;
    if (!m->output)
        m->output = m->tok_embd;
    m->hp.has_rope_factors = m->rope_freqs != NULL;
    for (int i = 0; i < hp->n_layer; i++) {
        layer *L = &m->layers[i];
        if ((rc = bind(m, ei, &L->attn_norm, BIND_F32, E, 0, "blk.%d.attn_norm.weight", i)) ||
            (rc = bind(m, ei, &L->wq, 0, E, Q, "blk.%d.attn_q.weight", i)) ||
            (rc = bind(m, ei, &L->wk, 0, E, KV, "blk.%d.attn_k.weight", i)) ||
            (rc = bind(m, ei, &L->wv, 0, E, KV, "blk.%d.attn_v.weight", i)) ||
            (rc = bind(m, ei, &L->bq, bias | BIND_F32, Q, 0, "blk.%d.attn_q.bias", i)) ||
            (rc = bind(m, ei, &L->bk, bias | BIND_F32, KV, 0, "blk.%d.attn_k.bias", i)) ||
            (rc = bind(m, ei, &L->bv, bias | BIND_F32, KV, 0, "blk.%d.attn_v.bias", i)) ||
            (rc = bind(m, ei, &L->wo, 0, Q, E, "blk.%d.attn_output.weight", i)) ||
            (rc = bind(m, ei, &L->ffn_norm, BIND_F32, E, 0, "blk.%d.ffn_norm.weight", i)) ||
            (rc = bind(m, ei, &L->w_gate, 0, E, F, "blk.%d.ffn_gate.weight", i)) ||
            (rc = bind(m, ei, &L->w_up, 0, E, F, "blk.%d.ffn_up.weight", i)) ||
            (rc = bind(m, ei, &L->w_down, 0, F, E, "blk.%d.ffn_down.weight", i)))
            return rc;
    }
    return 0;
}

enum { LAYER_MATRICES = 7 };

/* Matrix i of the n_layer * LAYER_MATRICES + 1 the forward pass multiplies with: each
 * layer's, then the output (token_embd when tied). */
static const gguf_tensor *matrix_at(const model *m, int i)
{
    if (i == m->hp.n_layer * LAYER_MATRICES)
        return m->output;
    const layer *L = &m->layers[i / LAYER_MATRICES];
    const gguf_tensor *mats[LAYER_MATRICES] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
    return mats[i % LAYER_MATRICES];
}

/* The type holding most bytes among the layer matrices (what a user calls the file's type). */
static void summarize_types(model *m)
{
    uint64_t bytes_by_type[QT_COUNT] = {0};
    for (int i = 0; i < m->hp.n_layer * LAYER_MATRICES; i++) /* the layers' */
        bytes_by_type[matrix_at(m, i)->type] += matrix_at(m, i)->nbytes;
    m->main_type = QT_F32;
    for (int t = 0; t < QT_COUNT; t++)
        if (bytes_by_type[t] > bytes_by_type[m->main_type])
            m->main_type = (qt_type)t;
    m->weight_bytes = 0;
    for (size_t i = 0; i < gguf_n_tensors(m->g); i++)
        m->weight_bytes += gguf_tensor_at(m->g, i)->nbytes;
}

/* Whether matrix w of m is stored in strips (kern.h): in a prepared image, every matrix the
 * forward pass only multiplies with (layers, and output when it is its own) whose type has
 * strips and whose rows come in whole strips. The token embeddings never are: their rows
 * are looked up one by one, also when they double as the output matrix. */
static bool in_strips(const model *m, const gguf_tensor *w)
{
    return m->strips && w != m->tok_embd && kern_strips_type((qt_type)w->type) && w->ne[1] % KERN_STRIP_ROWS == 0;
}

/* Opens the model in the file at path, or (path NULL) in the caller's size bytes at data,
 * which strips says were prepared (model_prepare_shared). */
static int open_model(model **out, const char *path, const void *data, size_t size, bool strips, err_info *ei)
{
    *out = NULL;
    model *m = calloc(1, sizeof *m);
    if (!m)
        return err_set(ei, -ENOMEM, "out of memory");
    m->strips = strips;
    int rc = path ? gguf_open(&m->g, path, ei) : gguf_open_mem(&m->g, data, size, ei);
    if (rc)
        goto fail;
    if ((rc = read_hparams(m, ei)) || (rc = tok_load(&m->vocab, m->g, ei)))
        goto fail;
    m->hp.n_vocab = tok_n_vocab(m->vocab);
    m->layers = calloc((size_t)m->hp.n_layer, sizeof *m->layers);
    if (!m->layers) {
        rc = err_set(ei, -ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = bind_tensors(m, ei)))
        goto fail;
    summarize_types(m);
    *out = m;
    return 0;
fail:
    model_close(m);
    return rc;
}

int model_open(model **out, const char *path, err_info *ei)
{
    return open_model(out, path, NULL, 0, false, ei);
}

int model_open_mem(model **out, const void *data, size_t size, err_info *ei)
{
    return open_model(out, NULL, data, size, false, ei);
}

int model_open_prepared(model **out, const void *data, size_t size, err_info *ei)
{
    return open_model(out, NULL, data, size, true, ei);
}

int model_prepare_shared(void *data, size_t size, err_info *ei)
{
    const kern_ops *k;
    if (kern_select(NULL, &k, NULL) < 0)
        return 0;
    for (int t = 0; t < QT_COUNT; t++) /* all strips types, or none: in_strips cannot know the kernel */
        if (kern_strips_type((qt_type)t) && !k->strips[t])
            return 0;
    model *m;
    int rc = open_model(&m, NULL, data, size, true, ei);
    if (rc)
        return rc;
    const int n = m->hp.n_layer * LAYER_MATRICES + 1;
    size_t widest = 0; /* bytes of the widest row to rearrange */
    for (int i = 0; i < n; i++) {
        const gguf_tensor *w = matrix_at(m, i);
        const size_t row_bytes = qt_row_bytes(w->type, (int)w->ne[0]);
        if (in_strips(m, w) && row_bytes > widest)
            widest = row_bytes;
    }
    uint8_t *rows = widest ? malloc(KERN_STRIP_ROWS * widest) : NULL;
    if (widest && !rows) {
        model_close(m);
        return err_set(ei, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        const gguf_tensor *w = matrix_at(m, i);
        if (!in_strips(m, w))
            continue;
        const size_t strip_bytes = KERN_STRIP_ROWS * qt_row_bytes(w->type, (int)w->ne[0]);
        uint8_t *at = (uint8_t *)data + ((const uint8_t *)w->data - (const uint8_t *)data); /* ours to write */
        for (uint64_t r0 = 0; r0 < w->ne[1]; r0 += KERN_STRIP_ROWS, at += strip_bytes) {
            memcpy(rows, at, strip_bytes);
            kern_strips_from_rows((qt_type)w->type, (int)w->ne[0], rows, at);
        }
    }
    free(rows);
    model_close(m);
    return widest > 0;
}

void model_close(model *m)
{
    if (!m)
        return;
    tok_free(m->vocab);
    free(m->layers);
    gguf_close(m->g);
    free(m);
}

const model_hparams *model_hparams_of(const model *m) { return &m->hp; }
const tok_vocab *model_vocab(const model *m) { return m->vocab; }
const gguf *model_gguf(const model *m) { return m->g; }
qt_type model_main_type(const model *m) { return m->main_type; }
uint64_t model_weight_bytes(const model *m) { return m->weight_bytes; }

/* ---- sessions ------------------------------------------------------------ */

/* Kinds of quantized activation the dot products need; each gets a buffer of n_batch rows
 * of the widest input. Float weight types dot with the input rows as they are. */
enum { ACT_Q8_0, ACT_Q8_1, ACT_Q8_K, ACT_KINDS };
static const qt_type act_kind_type[ACT_KINDS] = {QT_Q8_0, QT_Q8_1, QT_Q8_K};

static int act_kind_of(qt_type weight_type)
{
    switch (qt_get(weight_type)->act_type) {
    case QT_Q8_0: return ACT_Q8_0;
    case QT_Q8_1: return ACT_Q8_1;
    case QT_Q8_K: return ACT_Q8_K;
    default: return -1;
    }
}

struct model_session {
    const model *m;
    const kern_ops *k;
    pool *pool;             /* borrowed, may be NULL */
    int32_t n_ctx, n_batch, n_past;
    qt_type kv_type;
    size_t kv_elem;         /* bytes per cache element */
    int32_t kv_dim;         /* n_head_kv * head_dim */
    uint8_t *k_cache;       /* [n_layer][n_ctx][kv_dim]: a key is a row, as the scores' gemm reads it */
    uint8_t *v_cache;       /* [n_layer][kv_dim][v_row_bytes]: transposed, a row per value dimension
                             * over the positions, so that the weighted sum of values is a gemm too */
    size_t v_row_bytes;     /* n_ctx elements, rounded up to a cache line plus one: rows a power of two
                             * apart would share L1 sets, and the gemm reads 16 of them side by side */
    float *x;               /* [n_batch][n_embd] residual stream */
    float *xb;              /* [n_batch][max(n_embd, q_dim)] normed input / attention output */
    float *q, *kx, *vx;     /* [n_batch][q_dim], [n_batch][kv_dim] x2 */
    float *hb, *hb2;        /* [n_batch][n_ff] */
    float *proj;            /* [n_batch][n_embd] output of wo / w_down before the residual add */
    float *scores;          /* [threads][heads per KV group][n_ctx] attention weights */
    double *inv_freq;       /* [n_rot/2] RoPE angular frequency per pair (radians per position) */
    float *rope_cs;         /* [n_batch][n_rot/2][2] cos, sin for the chunk's positions */
    uint8_t *act[ACT_KINDS];/* [n_batch][act_stride], NULL when no weight needs the kind */
    size_t act_stride[ACT_KINDS];
};

void model_session_params_default(model_session_params *p)
{
    memset(p, 0, sizeof *p);
    p->kv_type = QT_F16;
}

/* calloc of n*m floats with overflow check; clears *ok on failure. */
static void *alloc_floats(size_t n, size_t m, bool *ok)
{
    size_t bytes;
    if (__builtin_mul_overflow(n, m, &bytes) || __builtin_mul_overflow(bytes, sizeof(float), &bytes)) {
        *ok = false;
        return NULL;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    *ok = *ok && p;
    return p;
}

static bool alloc_act_buffers(model_session *s, int32_t widest_in)
{
    bool need[ACT_KINDS] = {false};
    for (size_t i = 0; i < gguf_n_tensors(s->m->g); i++) {
        qt_type t = (qt_type)gguf_tensor_at(s->m->g, i)->type;
        int kind = act_kind_of(t);
        if (kind >= 0 && qt_get(t)->supported)
            need[kind] = true;
    }
    for (int kind = 0; kind < ACT_KINDS; kind++) {
        if (!need[kind])
            continue;
        /* inputs are multiples of the weight block, which the activation block divides */
        uint32_t blk = qt_get(act_kind_type[kind])->block_elems;
        int32_t row = (widest_in + (int32_t)blk - 1) / (int32_t)blk * (int32_t)blk;
        s->act_stride[kind] = qt_row_bytes(act_kind_type[kind], row);
        s->act[kind] = malloc((size_t)s->n_batch * s->act_stride[kind]);
        if (!s->act[kind])
            return false;
    }
    return true;
}

int model_session_new(model_session **out, const model *m, const model_session_params *p, err_info *ei)
{
    *out = NULL;
    const model_hparams *hp = &m->hp;
    model_session *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(ei, -ENOMEM, "out of memory");
    int rc = 0;
    s->m = m;
    s->pool = p->pool;
    s->k = p->kern;
    if (!s->k && (rc = kern_select(NULL, &s->k, ei)))
        goto fail;
    s->n_ctx = p->n_ctx > 0 ? p->n_ctx : (hp->n_ctx_train < MAX_CTX_DEFAULT ? hp->n_ctx_train : MAX_CTX_DEFAULT);
    if (s->n_ctx > (1 << 24)) {
        rc = err_set(ei, -ERR_RANGE, "context length %d is too large", s->n_ctx);
        goto fail;
    }
    s->n_batch = p->n_batch > 0 ? p->n_batch : 64;
    if (s->n_batch > s->n_ctx)
        s->n_batch = s->n_ctx;
    s->kv_type = p->kv_type;
    if (s->kv_type != QT_F16 && s->kv_type != QT_F32) {
        rc = err_set(ei, -ERR_UNSUPPORTED, "KV cache type %s is not supported (F16, F32 are)", qt_name(s->kv_type));
        goto fail;
    }
    s->kv_elem = s->kv_type == QT_F16 ? 2 : 4;
    s->kv_dim = hp->n_head_kv * hp->head_dim;
    int32_t q_dim = hp->n_head * hp->head_dim, wide = q_dim > hp->n_embd ? q_dim : hp->n_embd;
    size_t B = (size_t)s->n_batch;

    s->v_row_bytes = ((size_t)s->n_ctx * s->kv_elem + 63) / 64 * 64 + 64;
    const size_t k_bytes = (size_t)hp->n_layer * (size_t)s->n_ctx * (size_t)s->kv_dim * s->kv_elem,
                 v_bytes = (size_t)hp->n_layer * (size_t)s->kv_dim * s->v_row_bytes;
    s->k_cache = malloc(k_bytes);
    s->v_cache = malloc(v_bytes);
    bool ok = s->k_cache && s->v_cache;
    s->x = alloc_floats(B, (size_t)hp->n_embd, &ok);
    s->xb = alloc_floats(B, (size_t)wide, &ok);
    s->q = alloc_floats(B, (size_t)q_dim, &ok);
    s->kx = alloc_floats(B, (size_t)s->kv_dim, &ok);
    s->vx = alloc_floats(B, (size_t)s->kv_dim, &ok);
    s->hb = alloc_floats(B, (size_t)hp->n_ff, &ok);
    s->hb2 = alloc_floats(B, (size_t)hp->n_ff, &ok);
    s->proj = alloc_floats(B, (size_t)hp->n_embd, &ok);
    s->scores = alloc_floats((size_t)pool_size(s->pool) * (size_t)(hp->n_head / hp->n_head_kv), (size_t)s->n_ctx, &ok);
    s->rope_cs = alloc_floats(B, (size_t)hp->n_rot, &ok);
    s->inv_freq = calloc((size_t)hp->n_rot / 2 + 1, sizeof *s->inv_freq);
    ok = ok && s->inv_freq && alloc_act_buffers(s, hp->n_ff > wide ? hp->n_ff : wide);
    if (!ok) {
        rc = err_set(ei, -ENOMEM, "out of memory for a %d-token context (KV cache %zu MiB)", s->n_ctx,
                     (k_bytes + v_bytes) >> 20);
        goto fail;
    }
    for (int i = 0; i < hp->n_rot / 2; i++) {
        double f = pow((double)hp->rope_base, -2.0 * i / hp->n_rot) * hp->rope_freq_scale;
        if (m->rope_freqs)
            f /= ((const float *)m->rope_freqs->data)[i];
        s->inv_freq[i] = f;
    }
    *out = s;
    return 0;
fail:
    model_session_free(s);
    return rc;
}

void model_session_free(model_session *s)
{
    if (!s)
        return;
    void *bufs[] = {s->k_cache, s->v_cache, s->x, s->xb, s->q, s->kx, s->vx, s->hb, s->hb2, s->proj,
                    s->scores, s->rope_cs, s->inv_freq};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    for (int kind = 0; kind < ACT_KINDS; kind++)
        free(s->act[kind]);
    free(s);
}

int32_t model_session_n_ctx(const model_session *s) { return s->n_ctx; }
int32_t model_session_n_past(const model_session *s) { return s->n_past; }

void model_session_rewind(model_session *s, int32_t n_past)
{
    if (n_past >= 0 && n_past < s->n_past)
        s->n_past = n_past;
}

/* ---- forward pass building blocks -------------------------------------- */

/* Chunk size giving each thread two chunks (so a busy core just takes fewer), rounded up
 * to a multiple of align. Few: every chunk is a kern_gemm call whose first rows are fetched
 * without prefetch ahead, about 1.5 us each on decode's matvecs. With 2 threads, decode
 * (Q4_0) ran ~4% faster with 4 chunks a thread than with 8, and 2 did no worse than 4
 * (alternated in one loop on a noisy VM: 48.8-50.9 against 47.9-48.0 t/s at 36-37 GB/s,
 * 65.7 against 60.9 at 68). */
static int grain_for(const model_session *s, int n, int align)
{
    int per = n / (pool_size(s->pool) * 2);
    per = (per + align - 1) / align * align;
    return per > align ? per : align;
}

/* out[t] = x[t] / rms(x[t]) * w, for nt rows of n.
 * Both loops work in blocks of LANES so that -O2 vectorizes them (it will not add a scalar
 * epilogue itself): this runs serially between the parallel loops of every layer. The sum
 * of squares stays in double, in LANES partial sums instead of one chain of dependent adds. */
static void rmsnorm(float *restrict out, const float *restrict x, const float *restrict w, int nt, int n, float eps)
{
    enum { LANES = 4 };
    for (int t = 0; t < nt; t++, x += n, out += n) {
        double lane[LANES] = {0}, ss = 0;
        int i = 0;
        for (; i + LANES <= n; i += LANES)
            for (int l = 0; l < LANES; l++)
                lane[l] += (double)x[i + l] * x[i + l];
        for (; i < n; i++)
            ss += (double)x[i] * x[i];
        for (int l = 0; l < LANES; l++)
            ss += lane[l];
        float scale = (float)(1.0 / sqrt(ss / n + eps));
        for (i = 0; i + LANES <= n; i += LANES)
            for (int l = 0; l < LANES; l++)
                out[i + l] = x[i + l] * scale * w[i + l];
        for (; i < n; i++)
            out[i] = x[i] * scale * w[i];
    }
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

/* A matmul group: up to three weight matrices sharing one input, e.g. Q/K/V or gate/up.
 * out[j][t * rows_j + r] = dot(W_j row r, in[t]) + bias_j[r]. */
typedef struct matmul_job {
    model_session *s;
    int nt;                       /* tokens */
    float *in;                    /* [nt][k] */
    const float *up;              /* [nt][k] or NULL; else in = silu(in) * up first (SwiGLU) */
    int k;
    int pieces, piece_len;        /* the input step's items: each row in pieces of piece_len */
    int n_mats;
    const gguf_tensor *w[3];      /* each [k, rows_j] */
    const gguf_tensor *bias[3];   /* [rows_j] F32 or NULL */
    float *out[3];                /* [nt][rows_j] */
    bool quantize_needed[ACT_KINDS];
} matmul_job;

/* Prepares the input of items [i0, i1) (item = token * pieces + piece): the SwiGLU if any,
 * then conversion into every activation kind the group needs. */
static void matmul_input_worker(void *ctx, int i0, int i1, int slot)
{
    (void)slot;
    matmul_job *j = ctx;
    model_session *s = j->s;
    for (int i = i0; i < i1; i++) {
        int t = i / j->pieces, lo = i % j->pieces * j->piece_len;
        int n = j->k - lo < j->piece_len ? j->k - lo : j->piece_len;
        float *x = j->in + (size_t)t * j->k + lo;
        if (j->up) {
            const float *up = j->up + (size_t)t * j->k + lo;
            for (int e = 0; e < n; e++)
                x[e] = silu(x[e]) * up[e];
        }
        for (int kind = 0; kind < ACT_KINDS; kind++)
            if (j->quantize_needed[kind]) {
                qt_type type = act_kind_type[kind];
                s->k->quantize[type](x, s->act[kind] + t * s->act_stride[kind] + qt_row_bytes(type, lo), n);
            }
    }
}

/* Rows [r0, r1) of the group (its matrices' rows numbered one after another). */
static void matmul_dot_worker(void *ctx, int r0, int r1, int slot)
{
    (void)slot;
    matmul_job *j = ctx;
    model_session *s = j->s;
    int base = 0; /* first row of matrix m in the group's row numbering */
    for (int m = 0; m < j->n_mats; m++) {
        const gguf_tensor *w = j->w[m];
        int rows = (int)w->ne[1];
        int lo = r0 > base ? r0 - base : 0, hi = r1 - base < rows ? r1 - base : rows;
        base += rows;
        if (lo >= hi)
            continue;
        const bool strips = in_strips(s->m, w);
        if (strips) { /* the strips that start in [lo, hi): chunks may not start on one */
            lo = (lo + KERN_STRIP_ROWS - 1) / KERN_STRIP_ROWS * KERN_STRIP_ROWS;
            hi = hi == rows ? rows : (hi + KERN_STRIP_ROWS - 1) / KERN_STRIP_ROWS * KERN_STRIP_ROWS;
            if (lo >= hi)
                continue;
        }
        size_t row_bytes = qt_row_bytes((qt_type)w->type, j->k);
        int kind = act_kind_of((qt_type)w->type);
        const uint8_t *act = kind >= 0 ? s->act[kind] : (const uint8_t *)j->in;
        size_t act_stride = kind >= 0 ? s->act_stride[kind] : (size_t)j->k * sizeof(float);
        float *out = j->out[m];
        const uint8_t *rows_at = (const uint8_t *)w->data + (size_t)lo * row_bytes;
        if (strips)
            kern_gemm_strips(s->k, (qt_type)w->type, j->k, hi - lo, j->nt, rows_at, act, act_stride, out + lo,
                             (size_t)rows);
        else
            kern_gemm(s->k, (qt_type)w->type, j->k, hi - lo, j->nt, rows_at, row_bytes, act, act_stride, out + lo,
                      (size_t)rows);
        if (j->bias[m]) {
            const float *bias = j->bias[m]->data;
            for (int t = 0; t < j->nt; t++)
                for (int r = lo; r < hi; r++)
                    out[(size_t)t * rows + r] += bias[r];
        }
    }
}

/* Runs one matmul group: the input prepared once (SwiGLU with up unless NULL, conversion per
 * activation kind), then rows split over threads. */
static void matmul(model_session *s, int nt, float *in, const float *up, int k, int n_mats,
                   const gguf_tensor *const *w, const gguf_tensor *const *bias, float *const *out)
{
    matmul_job j = {.s = s, .nt = nt, .in = in, .up = up, .k = k, .pieces = 1, .piece_len = k, .n_mats = n_mats};
    bool any = false;
    int rows = 0;
    for (int m = 0; m < n_mats; m++) {
        rows += (int)w[m]->ne[1];
        j.w[m] = w[m];
        j.bias[m] = bias ? bias[m] : NULL;
        j.out[m] = out[m];
        int kind = act_kind_of((qt_type)w[m]->type);
        if (kind >= 0)
            any = j.quantize_needed[kind] = true;
    }
    /* Fewer tokens than threads (decode): a SwiGLU (n_ff expf per token) is worth splitting
     * each row over the threads, in pieces on boundaries of the widest activation block; a
     * bare conversion of a row is not worth the extra fork-join, so it runs on the caller. */
    int threads = pool_size(s->pool);
    if (up && nt < threads) {
        int blk = (int)qt_get(QT_Q8_K)->block_elems, blocks = (k + blk - 1) / blk;
        int pieces = threads < blocks ? threads : blocks;
        j.piece_len = (blocks + pieces - 1) / pieces * blk;
        j.pieces = (k + j.piece_len - 1) / j.piece_len;
    }
    if (any || up)
        pool_for(s->pool, nt * j.pieces, j.pieces > 1 ? 1 : 4, matmul_input_worker, &j);
    pool_for(s->pool, rows, grain_for(s, rows, ROW_ALIGN), matmul_dot_worker, &j);
}

static void matmul1(model_session *s, int nt, float *in, int k, const gguf_tensor *w, float *out)
{
    matmul(s, nt, in, NULL, k, 1, &w, NULL, &out);
}

/* Fills rope_cs with cos/sin of every (token, pair) angle of the chunk starting at pos0. */
static void rope_tables(model_session *s, int nt, int32_t pos0)
{
    int half = s->m->hp.n_rot / 2;
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < half; i++) {
            double a = (double)(pos0 + t) * s->inv_freq[i];
            s->rope_cs[(t * half + i) * 2] = (float)cos(a);
            s->rope_cs[(t * half + i) * 2 + 1] = (float)sin(a);
        }
}

/* Rotates the first n_rot dims of each of n_heads heads of vec (token t of the chunk). */
static void rope_apply(const model_session *s, float *vec, int n_heads, int t)
{
    const model_hparams *hp = &s->m->hp;
    int half = hp->n_rot / 2;
    const float *cs = s->rope_cs + (size_t)t * half * 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * hp->head_dim;
        for (int i = 0; i < half; i++) {
            /* neox pairs dim i with i + half; the original layout pairs 2i with 2i+1 */
            int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
            float c = cs[2 * i], sn = cs[2 * i + 1], x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * sn;
            v[b] = x0 * sn + x1 * c;
        }
    }
}

static uint8_t *k_cache_row(const model_session *s, int layer_i, int32_t pos)
{
    return s->k_cache + (((size_t)layer_i * s->n_ctx + pos) * s->kv_dim) * s->kv_elem;
}

/* Row of value dimension e (over all positions) of layer layer_i. */
static uint8_t *v_cache_row(const model_session *s, int layer_i, int32_t e)
{
    return s->v_cache + ((size_t)layer_i * s->kv_dim + e) * s->v_row_bytes;
}

/* Writes src (kv_dim floats) into the cache as kv_type, element e at dst + e * stride bytes:
 * a key's elements are contiguous (stride kv_elem), a value's one position of each row. */
static void cache_store(model_session *s, uint8_t *dst, size_t stride, const float *src)
{
    if (stride == s->kv_elem && s->kv_type == QT_F16)
        s->k->f32_to_f16(s->kv_dim, src, (qt_f16 *)dst);
    else if (s->kv_type == QT_F16)
        for (int e = 0; e < s->kv_dim; e++) {
            const qt_f16 h = qt_f32_to_f16(src[e]);
            memcpy(dst + e * stride, &h, sizeof h);
        }
    else
        for (int e = 0; e < s->kv_dim; e++)
            memcpy(dst + e * stride, src + e, sizeof *src);
}

typedef struct attn_job {
    model_session *s;
    int layer_i;
    int nt;
    int32_t pos0;
    int heads_per_item; /* query heads of one KV group taken together: a divisor of the group */
    float *out;         /* [nt][q_dim] */
} attn_job;

/* Causal attention of items [i0, i1), an item being a token and a run of heads_per_item query
 * heads of one KV group. The run's heads share their keys and values, so both halves are one
 * kern_gemm each, every key and value read and converted once for all of them (per head
 * and key, dot and axpy calls cost decode at 2k context half its speed): the scores are the
 * keys (rows) times the heads' queries (columns), the output the value dimensions' rows
 * (over the positions) times the heads' attention weights. */
static void attn_worker(void *ctx, int i0, int i1, int slot)
{
    attn_job *j = ctx;
    model_session *s = j->s;
    const model_hparams *hp = &s->m->hp;
    const int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv, q_dim = hp->n_head * hd;
    const int run = j->heads_per_item, runs = hp->n_head / run;
    const float scale = 1.0f / sqrtf((float)hd);
    float *att = s->scores + (size_t)slot * run * s->n_ctx; /* [run][n_ctx] */
    for (int item = i0; item < i1; item++) {
        const int t = item / runs, h0 = item % runs * run, g = h0 / group;
        const int32_t n_keys = j->pos0 + t + 1;
        kern_gemm(s->k, s->kv_type, hd, n_keys, run, k_cache_row(s, j->layer_i, 0) + (size_t)g * hd * s->kv_elem,
                  (size_t)s->kv_dim * s->kv_elem, s->q + (size_t)t * q_dim + (size_t)h0 * hd, (size_t)hd * sizeof(float),
                  att, (size_t)s->n_ctx);
        for (int i = 0; i < run; i++)
            s->k->softmax(n_keys, scale, att + (size_t)i * s->n_ctx);
        kern_gemm(s->k, s->kv_type, n_keys, hd, run, v_cache_row(s, j->layer_i, g * hd), s->v_row_bytes,
                  att, (size_t)s->n_ctx * sizeof(float), j->out + (size_t)t * q_dim + (size_t)h0 * hd, (size_t)hd);
    }
}

/* Query heads per attention item: a whole KV group, halved while that leaves fewer than two
 * items a thread (decode has one token: n_head_kv items). */
static int attn_heads_per_item(const model_session *s, int nt)
{
    const model_hparams *hp = &s->m->hp;
    int run = hp->n_head / hp->n_head_kv;
    while (run % 2 == 0 && nt * (hp->n_head / run) < 2 * pool_size(s->pool))
        run /= 2;
    return run;
}

/* One chunk of nt tokens at positions pos0.. through every layer. Leaves the final hidden
 * states (before output_norm) in s->x. */
static void forward_layers(model_session *s, const int32_t *tokens, int nt, int32_t pos0)
{
    const model *m = s->m;
    const model_hparams *hp = &m->hp;
    int E = hp->n_embd, q_dim = hp->n_head * hp->head_dim, F = hp->n_ff;
    size_t embd_row = qt_row_bytes((qt_type)m->tok_embd->type, E);
    for (int t = 0; t < nt; t++)
        qt_dequantize_row((qt_type)m->tok_embd->type, (const uint8_t *)m->tok_embd->data + (size_t)tokens[t] * embd_row,
                          s->x + (size_t)t * E, E);
    rope_tables(s, nt, pos0);
    for (int l = 0; l < hp->n_layer; l++) {
        const layer *L = &m->layers[l];
        rmsnorm(s->xb, s->x, L->attn_norm->data, nt, E, hp->rms_eps);
        const gguf_tensor *qkv[3] = {L->wq, L->wk, L->wv}, *qkv_bias[3] = {L->bq, L->bk, L->bv};
        float *qkv_out[3] = {s->q, s->kx, s->vx};
        matmul(s, nt, s->xb, NULL, E, 3, qkv, qkv_bias, qkv_out);
        for (int t = 0; t < nt; t++) {
            rope_apply(s, s->q + (size_t)t * q_dim, hp->n_head, t);
            rope_apply(s, s->kx + (size_t)t * s->kv_dim, hp->n_head_kv, t);
            cache_store(s, k_cache_row(s, l, pos0 + t), s->kv_elem, s->kx + (size_t)t * s->kv_dim);
            cache_store(s, v_cache_row(s, l, 0) + (size_t)(pos0 + t) * s->kv_elem, s->v_row_bytes,
                        s->vx + (size_t)t * s->kv_dim);
        }
        attn_job aj = {s, l, nt, pos0, attn_heads_per_item(s, nt), s->xb};
        pool_for(s->pool, nt * (hp->n_head / aj.heads_per_item), 1, attn_worker, &aj);
        matmul1(s, nt, s->xb, q_dim, L->wo, s->proj);
        for (size_t i = 0; i < (size_t)nt * E; i++)
            s->x[i] += s->proj[i];

        rmsnorm(s->xb, s->x, L->ffn_norm->data, nt, E, hp->rms_eps);
        const gguf_tensor *gate_up[2] = {L->w_gate, L->w_up};
        float *gate_up_out[2] = {s->hb, s->hb2};
        matmul(s, nt, s->xb, NULL, E, 2, gate_up, NULL, gate_up_out);
        matmul(s, nt, s->hb, s->hb2, F, 1, &L->w_down, NULL, &s->proj); /* silu(gate) * up, then down */
        for (size_t i = 0; i < (size_t)nt * E; i++)
            s->x[i] += s->proj[i];
    }
}

/* Logits of tokens [first, nt) of the chunk into out ([nt - first][n_vocab]). */
static void forward_logits(model_session *s, int first, int nt, float *out)
{
    const model *m = s->m;
    int E = m->hp.n_embd;
    rmsnorm(s->xb, s->x + (size_t)first * E, m->output_norm->data, nt - first, E, m->hp.rms_eps);
    matmul1(s, nt - first, s->xb, E, m->output, out);
}

int model_session_eval(model_session *s, const int32_t *tokens, int32_t n, float *logits, bool all_logits,
                       const atomic_bool *cancel, err_info *ei)
{
    const model_hparams *hp = &s->m->hp;
    if (n <= 0)
        return 0;
    if (n > s->n_ctx - s->n_past)
        return err_set(ei, -ERR_CONTEXT_FULL, "context full: %d tokens cached + %d new exceed the context length %d",
                       s->n_past, n, s->n_ctx);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return err_set(ei, -ERR_RANGE, "token id %d at position %d is outside the vocabulary (0..%d)", tokens[i], i,
                           hp->n_vocab - 1);
    for (int32_t done = 0; done < n;) {
        if (cancel && atomic_load_explicit(cancel, memory_order_relaxed))
            return err_set(ei, -ERR_CANCELLED, "cancelled after %d of %d tokens", done, n);
        int nt = n - done < s->n_batch ? n - done : s->n_batch;
        forward_layers(s, tokens + done, nt, s->n_past);
        s->n_past += nt;
        if (logits && all_logits)
            forward_logits(s, 0, nt, logits + (size_t)done * hp->n_vocab);
        else if (logits && done + nt == n)
            forward_logits(s, nt - 1, nt, logits);
        done += nt;
    }
    return 0;
}
