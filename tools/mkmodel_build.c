/* mkmodel_build — the shapes, the per-tensor type rule, the weight generator and the file
 * layout of synthetic models (see mkmodel.h). The tokenizer is mkmodel_vocab.c's; the
 * command line is mkmodel.c's.
 *
 * Weights are produced while the file is written (gguf_writer fill callbacks), a chunk of
 * rows at a time on all cores, so memory stays at one chunk however big the model is.
 * Every row draws from its own random stream, keyed by (seed, tensor index, row), which is
 * what makes the bytes independent of the thread count and the chunking. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/gguf.h"
#include "engine/pool.h"
#include "tools/mkmodel.h"

/* Real shapes as in each model's Hugging Face config.json. demo is ours: small and fast,
 * with the built-in vocab. */
static const mkmodel_shape shapes[] = {
    {"demo", "llama", 256, 4, 8, 4, 768, 0, 2048, 10000.0f, 1e-5f, false, false},
    {"tinyllama-1.1b", "llama", 2048, 22, 32, 4, 5632, 32000, 2048, 10000.0f, 1e-5f, false, false},
    {"qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 4864, 151936, 32768, 1000000.0f, 1e-6f, true, true},
    {"smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152, 8192, 100000.0f, 1e-5f, true, false},
};

const mkmodel_shape *mkmodel_shape_at(size_t i) { return i < sizeof shapes / sizeof shapes[0] ? &shapes[i] : NULL; }

const mkmodel_shape *mkmodel_shape_find(const char *name)
{
    for (const mkmodel_shape *s = shapes; s < shapes + sizeof shapes / sizeof shapes[0]; s++)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static const struct {
    const char *name;
    uint32_t number; /* llama_ftype: MOSTLY_F16 = 1, MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7, MOSTLY_Q4_K_M = 15 */
} ftypes[MKMODEL_FTYPE_COUNT] = {
    [MKMODEL_F16] = {"F16", 1},
    [MKMODEL_Q4_0] = {"Q4_0", 2},
    [MKMODEL_Q8_0] = {"Q8_0", 7},
    [MKMODEL_Q4_K_M] = {"Q4_K_M", 15},
};

int mkmodel_ftype_from_name(const char *name)
{
    for (int i = 0; i < MKMODEL_FTYPE_COUNT; i++)
        if (strcasecmp(ftypes[i].name, name) == 0)
            return i;
    return -1;
}

const char *mkmodel_ftype_name(mkmodel_ftype ft) { return ftypes[ft].name; }
uint32_t mkmodel_ftype_number(mkmodel_ftype ft) { return ftypes[ft].number; }

/* llama.cpp's Q4_K_M spends more bits on attn_v and ffn_down in the first and last eighth
 * of the layers and in every third layer between. */
static bool use_more_bits(int layer, int n_layer)
{
    return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

/* llama.cpp's fallback when rows are not whole 256-element super-blocks (e.g. Qwen2.5's
 * 896 or SmolLM2's 576): each K type maps to a 32-block type of similar size, and F16 is
 * the last resort. */
static qt_type fit_row(qt_type t, int64_t row_len)
{
    if (row_len % qt_get(t)->block_elems == 0)
        return t;
    switch (t) {
    case QT_Q4_K: t = QT_Q5_0; break;
    case QT_Q5_K: t = QT_Q5_1; break;
    case QT_Q6_K: t = QT_Q8_0; break;
    default: return QT_F16;
    }
    return row_len % qt_get(t)->block_elems == 0 ? t : QT_F16;
}

qt_type mkmodel_tensor_type(mkmodel_ftype ft, mkmodel_role role, int layer, int n_layer, int64_t row_len)
{
    qt_type t = QT_F16;
    switch (ft) {
    case MKMODEL_F16: t = QT_F16; break;
    case MKMODEL_Q8_0: t = QT_Q8_0; break;
    case MKMODEL_Q4_0: t = role == MKMODEL_OUTPUT ? QT_Q6_K : QT_Q4_0; break;
    case MKMODEL_Q4_K_M:
        if (role == MKMODEL_OUTPUT ||
            ((role == MKMODEL_ATTN_V || role == MKMODEL_FFN_DOWN) && use_more_bits(layer, n_layer)))
            t = QT_Q6_K;
        else
            t = QT_Q4_K;
        break;
    default: break;
    }
    return fit_row(t, row_len);
}

/* ---- weight generation ------------------------------------------------------------- */

/* splitmix64's output function (Steele, Lea, Flood 2014): a strong 64-bit mixer. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Matrices and biases ~ N(0, 0.02^2): with rms-normed inputs, every projection's output then
 * has a standard deviation of about 0.02 * sqrt(row length), of order 1 at these widths. */
static const float weight_std = 0.02f;

typedef struct gen_tensor {
    char name[GGUF_MAX_NAME];
    qt_type type;
    uint32_t n_dims;
    uint64_t ne[2];
    bool ones;                /* a norm: all 1.0; else Gaussian noise */
    uint64_t stream;          /* mixes seed and tensor index */
    struct generator *gen;
} gen_tensor;

typedef struct generator {
    pool *pool;
    float *scratch;           /* one row of max_row floats per thread */
    uint64_t max_row;
    gen_tensor *t;            /* n planned tensors, in file order */
    size_t n;
} generator;

typedef struct fill_job {
    const gen_tensor *t;
    uint64_t row0;
    int n_rows;
    uint8_t *dst;
} fill_job;

/* Row `row` of t as floats: its own stream of Box-Muller pairs. */
static void gen_row(const gen_tensor *t, uint64_t row, float *x)
{
    int64_t n = (int64_t)t->ne[0];
    if (t->ones) {
        for (int64_t i = 0; i < n; i++)
            x[i] = 1.0f;
        return;
    }
    const float two_pi = 6.28318530718f;
    uint64_t state = mix64(t->stream ^ mix64(row + 1));
    for (int64_t i = 0; i < n; i += 2) {
        uint64_t bits = mix64(state += 0x9e3779b97f4a7c15ull);
        float u1 = (float)((bits >> 40) + 1) * 0x1p-24f; /* (0, 1]: log stays finite */
        float u2 = (float)(bits & 0xffffff) * 0x1p-24f;
        float r = weight_std * sqrtf(-2.0f * logf(u1)), a = two_pi * u2;
        x[i] = r * cosf(a);
        if (i + 1 < n)
            x[i + 1] = r * sinf(a);
    }
}

/* Generates and quantizes rows [b, e) of the chunk; slot picks this thread's scratch row. */
static void fill_worker(void *ctx, int b, int e, int slot)
{
    const fill_job *j = ctx;
    const gen_tensor *t = j->t;
    float *x = t->gen->scratch + (size_t)slot * t->gen->max_row;
    size_t row_bytes = qt_row_bytes(t->type, (int64_t)t->ne[0]);
    for (int r = b; r < e; r++) {
        gen_row(t, j->row0 + (uint64_t)r, x);
        qt_quantize_row(t->type, x, j->dst + (size_t)r * row_bytes, (int64_t)t->ne[0]);
    }
}

static int fill_tensor(void *ctx, uint64_t row0, uint64_t n_rows, void *dst, err_info *ei)
{
    const gen_tensor *t = ctx;
    if (n_rows > INT32_MAX) /* the writer's chunks are far smaller */
        return err_set(ei, -ERANGE, "tensor '%s': chunk of %llu rows is too large", t->name, (unsigned long long)n_rows);
    fill_job j = {t, row0, (int)n_rows, dst};
    pool_for(t->gen->pool, j.n_rows, 1, fill_worker, &j);
    return 0;
}

/* ---- layout -------------------------------------------------------------------------- */

enum { VEC_NORM = -1, VEC_BIAS = -2 }; /* F32 vectors, in place of an mkmodel_role */

/* Appends tensor fmt... of shape [ne0] (ne1 == 0) or [ne0, ne1]: F32 for vectors, else the
 * type the rule picks for its role. */
static void plan(generator *g, const mkmodel_opts *o, int role, int layer, uint64_t ne0, uint64_t ne1,
                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void plan(generator *g, const mkmodel_opts *o, int role, int layer, uint64_t ne0, uint64_t ne1,
                 const char *fmt, ...)
{
    gen_tensor *t = &g->t[g->n];
    *t = (gen_tensor){.n_dims = ne1 ? 2 : 1, .ne = {ne0, ne1 ? ne1 : 1}, .ones = role == VEC_NORM, .gen = g};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->type = role < 0 ? QT_F32
                       : mkmodel_tensor_type(o->ftype, (mkmodel_role)role, layer, o->shape->n_layer, (int64_t)ne0);
    t->stream = mix64(o->seed ^ mix64(0x5eed0000ull + g->n));
    if (ne0 > g->max_row)
        g->max_row = ne0;
    g->n++;
}

/* The tensors of shape s with n_vocab rows of embeddings, named and ordered as llama.cpp's
 * converter writes them. */
static int plan_tensors(generator *g, const mkmodel_opts *o, uint64_t n_vocab, err_info *ei)
{
    const mkmodel_shape *s = o->shape;
    uint64_t E = (uint64_t)s->n_embd, F = (uint64_t)s->n_ff, head_dim = E / (uint64_t)s->n_head;
    uint64_t Q = head_dim * (uint64_t)s->n_head, KV = head_dim * (uint64_t)s->n_head_kv;
    size_t max_tensors = 3 + 12 * (size_t)s->n_layer;
    if (!(g->t = calloc(max_tensors, sizeof *g->t)))
        return err_set(ei, -ENOMEM, "out of memory planning %zu tensors", max_tensors);
    plan(g, o, s->tied ? MKMODEL_OUTPUT : MKMODEL_TOKEN_EMBD, 0, E, n_vocab, "token_embd.weight");
    for (int i = 0; i < s->n_layer; i++) {
        plan(g, o, VEC_NORM, i, E, 0, "blk.%d.attn_norm.weight", i);
        plan(g, o, MKMODEL_ATTN_Q, i, E, Q, "blk.%d.attn_q.weight", i);
        plan(g, o, MKMODEL_ATTN_K, i, E, KV, "blk.%d.attn_k.weight", i);
        plan(g, o, MKMODEL_ATTN_V, i, E, KV, "blk.%d.attn_v.weight", i);
        if (s->qkv_bias) {
            plan(g, o, VEC_BIAS, i, Q, 0, "blk.%d.attn_q.bias", i);
            plan(g, o, VEC_BIAS, i, KV, 0, "blk.%d.attn_k.bias", i);
            plan(g, o, VEC_BIAS, i, KV, 0, "blk.%d.attn_v.bias", i);
        }
        plan(g, o, MKMODEL_ATTN_OUTPUT, i, Q, E, "blk.%d.attn_output.weight", i);
        plan(g, o, VEC_NORM, i, E, 0, "blk.%d.ffn_norm.weight", i);
        plan(g, o, MKMODEL_FFN_GATE, i, E, F, "blk.%d.ffn_gate.weight", i);
        plan(g, o, MKMODEL_FFN_UP, i, E, F, "blk.%d.ffn_up.weight", i);
        plan(g, o, MKMODEL_FFN_DOWN, i, F, E, "blk.%d.ffn_down.weight", i);
    }
    plan(g, o, VEC_NORM, 0, E, 0, "output_norm.weight");
    if (!s->tied)
        plan(g, o, MKMODEL_OUTPUT, 0, E, n_vocab, "output.weight");
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------ */

/* Copies every tokenizer.* entry of the GGUF at path; *n_vocab gets its token count. */
static int copy_vocab(gguf_writer *w, const char *path, int64_t *n_vocab, err_info *ei)
{
    gguf *v;
    gguf_arr tokens;
    int rc = gguf_open(&v, path, ei);
    if (rc)
        return rc;
    if ((rc = gguf_get_arr(v, "tokenizer.ggml.tokens", GGUF_STR, &tokens, ei))) {
        char msg[ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", ei ? ei->msg : "");
        err_set(ei, rc, "%s: %s", path, msg);
    } else if (tokens.n == 0 || tokens.n > INT32_MAX) {
        rc = err_set(ei, -ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path, (unsigned long long)tokens.n);
    } else {
        *n_vocab = (int64_t)tokens.n;
        for (size_t i = 0; i < gguf_n_kv(v); i++) {
            const gguf_kv *kv = gguf_kv_at(v, i);
            if (kv->key.len > 10 && memcmp(kv->key.ptr, "tokenizer.", 10) == 0)
                gguf_writer_copy_kv(w, kv); /* failures are sticky in w */
        }
    }
    gguf_close(v);
    return rc;
}

/* Sets ARCH.suffix to a scalar of type t (value points to the matching C type). */
static void set_arch(gguf_writer *w, const char *arch, const char *suffix, gguf_vtype t, const void *value)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    gguf_writer_set(w, key, t, value);
}

static int set_metadata(gguf_writer *w, const mkmodel_opts *o, int64_t *n_vocab, err_info *ei)
{
    const mkmodel_shape *s = o->shape;
    char name[128];
    if (strcmp(s->name, "demo") == 0)
        snprintf(name, sizeof name, "edgellm demo (random weights, seed %llu)", (unsigned long long)o->seed);
    else
        snprintf(name, sizeof name, "synthetic %s (random weights, seed %llu)", s->name, (unsigned long long)o->seed);
    gguf_writer_set_str(w, "general.architecture", s->arch);
    gguf_writer_set_str(w, "general.name", name);
    int rc = o->vocab_path ? copy_vocab(w, o->vocab_path, n_vocab, ei) : mkmodel_vocab_builtin(w, s->n_vocab, n_vocab, ei);
    if (rc)
        return rc;
    const struct {
        const char *suffix;
        uint32_t v;
    } ints[] = {
        {"context_length", (uint32_t)s->n_ctx},
        {"embedding_length", (uint32_t)s->n_embd},
        {"block_count", (uint32_t)s->n_layer},
        {"feed_forward_length", (uint32_t)s->n_ff},
        {"attention.head_count", (uint32_t)s->n_head},
        {"attention.head_count_kv", (uint32_t)s->n_head_kv},
        {"rope.dimension_count", (uint32_t)(s->n_embd / s->n_head)},
        {"vocab_size", (uint32_t)*n_vocab},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        set_arch(w, s->arch, ints[i].suffix, GGUF_U32, &ints[i].v);
    set_arch(w, s->arch, "rope.freq_base", GGUF_F32, &s->rope_base);
    set_arch(w, s->arch, "attention.layer_norm_rms_epsilon", GGUF_F32, &s->rms_eps);
    gguf_writer_set_u32(w, "general.file_type", mkmodel_ftype_number(o->ftype));
    gguf_writer_set_u32(w, "general.quantization_version", 2);
    return 0;
}

int mkmodel_write(const mkmodel_opts *o, err_info *ei)
{
    if (!o->shape || (unsigned)o->ftype >= MKMODEL_FTYPE_COUNT || !o->path)
        return err_set(ei, -EINVAL, "mkmodel: shape, type and output path are required");
    generator g = {0};
    gguf_writer *w = NULL;
    int64_t n_vocab = 0;
    int rc = gguf_writer_new(&w, ei);
    if (rc || (rc = set_metadata(w, o, &n_vocab, ei)) || (rc = plan_tensors(&g, o, (uint64_t)n_vocab, ei)) ||
        (rc = pool_new(&g.pool, o->n_threads, ei)))
        goto done;
    size_t n_floats;
    if (__builtin_mul_overflow((size_t)pool_size(g.pool), (size_t)g.max_row, &n_floats) ||
        !(g.scratch = malloc(n_floats * sizeof *g.scratch))) {
        rc = err_set(ei, -ENOMEM, "out of memory for %d rows of %llu floats", pool_size(g.pool),
                     (unsigned long long)g.max_row);
        goto done;
    }
    for (size_t i = 0; i < g.n; i++)
        gguf_writer_add_tensor_fill(w, g.t[i].name, g.t[i].type, g.t[i].n_dims, g.t[i].ne, fill_tensor, &g.t[i]);
    rc = gguf_writer_write(w, o->path, ei);
done:
    gguf_writer_free(w);
    pool_free(g.pool);
    free(g.scratch);
    free(g.t);
    return rc;
}
