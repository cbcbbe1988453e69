/* test_mkmodel — the synthetic-model writer (tools/mkmodel*.c) and its CLI.
 *
 * The per-tensor type rule against the types llama.cpp actually chose in the shared
 * reference models, and at the real shapes (use_more_bits layers, fallbacks for rows that
 * are not whole super-blocks); the built-in vocab (byte tokens, consistent merges,
 * specials, padding, compression of English text); written files (metadata, names,
 * shapes, types, weight statistics) read back by our reader, tokenizer and forward pass;
 * byte-identical output for the same seed at any thread count; --vocab copying; the CLI's
 * exit codes. The CLI tests run $EDGELLM_BUILD/edgellm (default build/), which
 * `make check-unit` builds first. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "engine/utf8.h"
#include "tests/testutil.h"
#include "tools/mkmodel.h"

static void write_model(const mkmodel_shape *shape, mkmodel_ftype ft, uint64_t seed, const char *vocab,
                        int n_threads, const char *path)
{
    mkmodel_opts o = {.shape = shape, .ftype = ft, .path = path, .seed = seed, .vocab_path = vocab,
                      .n_threads = n_threads};
    err_info ei = {0};
    int rc = mkmodel_write(&o, &ei);
    ck_assert_msg(rc == 0, "mkmodel_write %s: %s", path, ei.msg);
}

/* Element k of an int32 array (array data in a file is not aligned). */
static int32_t arr_i32(const gguf_arr *a, uint64_t k)
{
    int32_t v;
    memcpy(&v, a->data + 4 * k, 4);
    return v;
}

/* ---- the type rule ------------------------------------------------------------------- */

/* Role of a matrix by name (-1 for norms and biases, which are always F32); *layer gets
 * the block number. A token_embd without an output.weight is the output matrix. */
static int role_of(const char *name, bool tied, int *layer)
{
    static const struct {
        const char *suffix;
        mkmodel_role role;
    } roles[] = {
        {".attn_q.weight", MKMODEL_ATTN_Q},       {".attn_k.weight", MKMODEL_ATTN_K},
        {".attn_v.weight", MKMODEL_ATTN_V},       {".attn_output.weight", MKMODEL_ATTN_OUTPUT},
        {".ffn_gate.weight", MKMODEL_FFN_GATE},   {".ffn_up.weight", MKMODEL_FFN_UP},
        {".ffn_down.weight", MKMODEL_FFN_DOWN},
    };
    *layer = 0;
    if (strcmp(name, "token_embd.weight") == 0)
        return tied ? MKMODEL_OUTPUT : MKMODEL_TOKEN_EMBD;
    if (strcmp(name, "output.weight") == 0)
        return MKMODEL_OUTPUT;
    if (sscanf(name, "blk.%d.", layer) != 1)
        return -1;
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        size_t n = strlen(name), k = strlen(roles[i].suffix);
        if (n > k && strcmp(name + n - k, roles[i].suffix) == 0)
            return (int)roles[i].role;
    }
    return -1;
}

/* Every tensor of llama.cpp's reference files gets the type our rule predicts. */
START_TEST(test_type_rule_matches_llama_cpp_files)
{
    static const struct {
        const char *file;
        mkmodel_ftype ft;
    } files[] = {
        {"llama-spm.q8_0", MKMODEL_Q8_0},       {"llama-spm.q4_0", MKMODEL_Q4_0},
        {"llama-spm.q4_k_m", MKMODEL_Q4_K_M},   {"qwen2-gpt2.q4_k_m", MKMODEL_Q4_K_M},
        {"qwen2-gpt2-e128.f16", MKMODEL_F16},
    };
    char path[512];
    snprintf(path, sizeof path, "%s/models/%s.gguf", shared_dir(), files[_i].file);
    gguf *g = open_ok(path);
    bool tied = gguf_find_tensor(g, "output.weight") == NULL;
    uint32_t n_layer = 0;
    err_info ei = {0};
    gguf_str arch;
    ck_assert_int_eq(gguf_get_str(g, "general.architecture", &arch, &ei), 0);
    char key[64];
    snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
    ck_assert_int_eq(gguf_get_u32(g, key, &n_layer, &ei), 0);
    int n_matrices = 0;
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char name[GGUF_MAX_NAME];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        int layer, role = role_of(name, tied, &layer);
        qt_type want = role < 0 ? QT_F32
                                : mkmodel_tensor_type(files[_i].ft, (mkmodel_role)role, layer, (int)n_layer,
                                                      (int64_t)t->ne[0]);
        ck_assert_msg(t->type == (uint32_t)want, "%s %s: llama.cpp chose %s, the rule says %s", files[_i].file, name,
                      qt_name(t->type), qt_name(want));
        n_matrices += role >= 0;
    }
    ck_assert_int_ge(n_matrices, 15);
    gguf_close(g);
}
END_TEST

START_TEST(test_type_rule_at_real_shapes)
{
    /* TinyLlama (22 layers): attn_v and ffn_down get Q6_K in these layers only */
    static const int more_bits[] = {0, 1, 4, 7, 10, 13, 16, 19, 20, 21};
    for (int i = 0, k = 0; i < 22; i++) {
        bool more = k < 10 && more_bits[k] == i;
        k += more;
        qt_type want = more ? QT_Q6_K : QT_Q4_K;
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_ATTN_V, i, 22, 2048), want);
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_FFN_DOWN, i, 22, 5632), want);
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_ATTN_Q, i, 22, 2048), QT_Q4_K);
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_FFN_UP, i, 22, 2048), QT_Q4_K);
    }
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_OUTPUT, 0, 22, 2048), QT_Q6_K);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_TOKEN_EMBD, 0, 22, 2048), QT_Q4_K);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_0, MKMODEL_OUTPUT, 0, 22, 2048), QT_Q6_K);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_0, MKMODEL_TOKEN_EMBD, 0, 22, 2048), QT_Q4_0);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q8_0, MKMODEL_OUTPUT, 0, 22, 2048), QT_Q8_0);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_F16, MKMODEL_OUTPUT, 0, 22, 2048), QT_F16);

    /* Qwen2.5 0.5B (896) and SmolLM2 135M (576): rows are not whole 256-blocks, so Q4_K
     * falls back to Q5_0 and Q6_K to Q8_0; ffn_down rows (4864, 1536) are, and keep K types */
    int widths[] = {896, 576};
    for (int w = 0; w < 2; w++) {
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_ATTN_Q, 5, 24, widths[w]), QT_Q5_0);
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_ATTN_V, 0, 24, widths[w]), QT_Q8_0);
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_ATTN_V, 3, 24, widths[w]), QT_Q5_0);
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_OUTPUT, 0, 24, widths[w]), QT_Q8_0);
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_0, MKMODEL_OUTPUT, 0, 24, widths[w]), QT_Q8_0);
        ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_0, MKMODEL_ATTN_Q, 0, 24, widths[w]), QT_Q4_0);
    }
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_FFN_DOWN, 0, 24, 4864), QT_Q6_K);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_FFN_DOWN, 3, 24, 4864), QT_Q4_K);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_FFN_DOWN, 4, 30, 1536), QT_Q4_K);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_FFN_DOWN, 5, 30, 1536), QT_Q6_K);
    /* a row no quantized type fits: F16 */
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q4_K_M, MKMODEL_ATTN_Q, 0, 2, 48), QT_F16);
    ck_assert_int_eq(mkmodel_tensor_type(MKMODEL_Q8_0, MKMODEL_ATTN_Q, 0, 2, 48), QT_F16);
}
END_TEST

START_TEST(test_shapes_and_names)
{
    const char *names[] = {"demo", "tinyllama-1.1b", "qwen2.5-0.5b", "smollm2-135m"};
    for (int i = 0; i < 4; i++) {
        const mkmodel_shape *s = mkmodel_shape_find(names[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_ptr_eq(mkmodel_shape_at((size_t)i), s);
        ck_assert_int_eq(s->n_embd % s->n_head, 0);
        ck_assert_int_eq(s->n_head % s->n_head_kv, 0);
    }
    ck_assert_ptr_null(mkmodel_shape_at(4));
    ck_assert_ptr_null(mkmodel_shape_find("llama-7b"));
    const mkmodel_shape *q = mkmodel_shape_find("qwen2.5-0.5b");
    ck_assert(q->tied && q->qkv_bias && q->n_vocab == 151936 && q->n_embd / q->n_head == 64);
    ck_assert_int_eq(mkmodel_ftype_from_name("q4_k_m"), MKMODEL_Q4_K_M);
    ck_assert_int_eq(mkmodel_ftype_from_name("Q8_0"), MKMODEL_Q8_0);
    ck_assert_int_eq(mkmodel_ftype_from_name("Q4_K"), -1);
    ck_assert_uint_eq(mkmodel_ftype_number(MKMODEL_F16), 1);
    ck_assert_uint_eq(mkmodel_ftype_number(MKMODEL_Q4_0), 2);
    ck_assert_uint_eq(mkmodel_ftype_number(MKMODEL_Q8_0), 7);
    ck_assert_uint_eq(mkmodel_ftype_number(MKMODEL_Q4_K_M), 15);
}
END_TEST

/* ---- built-in vocab -------------------------------------------------------------------- */

/* A GGUF holding only the built-in vocab, padded to pad_to tokens. */
static gguf *builtin_vocab_file(int64_t pad_to, int64_t *n_tokens)
{
    gguf_writer *w;
    err_info ei = {0};
    ck_assert_int_eq(gguf_writer_new(&w, &ei), 0);
    ck_assert_msg(mkmodel_vocab_builtin(w, pad_to, n_tokens, &ei) == 0, "%s", ei.msg);
    const char *path = tmp_path("vocab.gguf");
    ck_assert_msg(gguf_writer_write(w, path, &ei) == 0, "%s", ei.msg);
    gguf_writer_free(w);
    gguf *g = open_ok(path);
    unlink(path); /* the mapping stays valid */
    return g;
}

START_TEST(test_builtin_vocab_is_consistent)
{
    int64_t n;
    gguf *g = builtin_vocab_file(0, &n);
    err_info ei = {0};
    gguf_arr toks, types, merges;
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STR, &toks, &ei), 0);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_I32, &types, &ei), 0);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_STR, &merges, &ei), 0);
    ck_assert_uint_eq(toks.n, (uint64_t)n);
    ck_assert_uint_eq(types.n, toks.n);
    ck_assert_uint_ge(merges.n, 250); /* "a few hundred" */
    gguf_str *t = malloc(toks.n * sizeof *t), *m = malloc(merges.n * sizeof *m);
    gguf_arr_strings(&toks, t);
    gguf_arr_strings(&merges, m);
    for (int b = 0; b < 256; b++) { /* byte tokens first, spelled as GPT-2 does */
        char u[4];
        int len = utf8_encode(utf8_byte_to_cp((uint8_t)b), u);
        ck_assert_msg(t[b].len == (uint64_t)len && memcmp(t[b].ptr, u, (size_t)len) == 0, "byte token %d", b);
        ck_assert_int_eq(arr_i32(&types, (uint64_t)b), TOK_TYPE_NORMAL);
    }
    /* every merge joins two tokens into a token */
    for (uint64_t i = 0; i < merges.n; i++) {
        const char *sp = memchr(m[i].ptr + 1, ' ', m[i].len - 1);
        ck_assert_ptr_nonnull(sp);
        size_t ll = (size_t)(sp - m[i].ptr), rl = m[i].len - ll - 1;
        bool left = false, right = false, joined = false;
        for (uint64_t k = 0; k < toks.n; k++) {
            left |= t[k].len == ll && memcmp(t[k].ptr, m[i].ptr, ll) == 0;
            right |= t[k].len == rl && memcmp(t[k].ptr, sp + 1, rl) == 0;
            joined |= t[k].len == ll + rl && memcmp(t[k].ptr, m[i].ptr, ll) == 0 && memcmp(t[k].ptr + ll, sp + 1, rl) == 0;
        }
        ck_assert_msg(left && right && joined, "merge %llu '%.*s' is not over tokens", (unsigned long long)i,
                      (int)m[i].len, m[i].ptr);
    }
    uint32_t bos, eos;
    ck_assert_int_eq(gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &bos, &ei), 0);
    ck_assert_int_eq(gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos, &ei), 0);
    ck_assert(bos == eos && gguf_str_eq(t[bos], "<|endoftext|>"));
    ck_assert(gguf_str_eq(t[n - 2], "<|im_start|>") && gguf_str_eq(t[n - 1], "<|im_end|>"));
    for (int64_t k = n - 3; k < n; k++)
        ck_assert_int_eq(arr_i32(&types, (uint64_t)k), TOK_TYPE_CONTROL);
    gguf_str tmpl;
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.chat_template", &tmpl, &ei), 0);
    ck_assert_int_eq(chat_detect(tmpl.ptr, (size_t)tmpl.len), CHAT_CHATML);
    free(t);
    free(m);

    /* our tokenizer reads it, compresses English, and decodes back to the same text */
    tok_vocab *v;
    ck_assert_msg(tok_load(&v, g, &ei) == 0, "%s", ei.msg);
    ck_assert_int_eq(tok_kind_of(v), TOK_BPE);
    const char *text = "Once upon a time there was a little town. The people were happy, and the children "
                       "played in the garden every afternoon.";
    int32_t ids[256];
    int n_ids;
    ck_assert_int_eq(tok_encode(v, text, strlen(text), false, false, ids, 256, &n_ids), 0);
    ck_assert_msg(n_ids * 10 < (int)strlen(text) * 4, "%d tokens for %zu bytes", n_ids, strlen(text));
    char back[512];
    int len = 0;
    for (int i = 0; i < n_ids; i++)
        len += tok_piece(v, ids[i], false, back + len, (int)sizeof back - len);
    ck_assert_int_eq(len, (int)strlen(text));
    ck_assert(memcmp(back, text, (size_t)len) == 0);
    ck_assert(tok_is_eog(v, (int32_t)eos) && tok_is_eog(v, (int32_t)n - 1));
    tok_free(v);
    gguf_close(g);
}
END_TEST

START_TEST(test_builtin_vocab_pads_to_real_size)
{
    int64_t n, n_plain;
    gguf_close(builtin_vocab_file(0, &n_plain));
    gguf *g = builtin_vocab_file(151936, &n);
    ck_assert_int_eq(n, 151936);
    err_info ei = {0};
    gguf_arr toks, types;
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STR, &toks, &ei), 0);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_I32, &types, &ei), 0);
    ck_assert_uint_eq(toks.n, 151936);
    gguf_str *t = malloc(toks.n * sizeof *t);
    gguf_arr_strings(&toks, t);
    ck_assert(gguf_str_eq(t[n_plain - 1], "<|im_end|>"));
    ck_assert(gguf_str_eq(t[n_plain], "<unused_0>"));
    char last[32];
    snprintf(last, sizeof last, "<unused_%lld>", (long long)(151936 - n_plain - 1));
    ck_assert(gguf_str_eq(t[151935], last));
    for (int64_t k = n_plain; k < n; k++)
        ck_assert_int_eq(arr_i32(&types, (uint64_t)k), TOK_TYPE_UNUSED);
    tok_vocab *v; /* distinct texts, as the tokenizer requires */
    ck_assert_msg(tok_load(&v, g, &ei) == 0, "%s", ei.msg);
    tok_free(v);
    free(t);
    gguf_close(g);
}
END_TEST

/* ---- written files --------------------------------------------------------------------- */

static void expect_u32(const gguf *g, const char *key, uint32_t want)
{
    uint32_t v;
    err_info ei = {0};
    ck_assert_msg(gguf_get_u32(g, key, &v, &ei) == 0, "%s", ei.msg);
    ck_assert_msg(v == want, "%s = %u, want %u", key, v, want);
}

static void expect_f32(const gguf *g, const char *key, float want)
{
    const gguf_kv *kv = gguf_find(g, key);
    ck_assert_msg(kv && kv->type == GGUF_F32, "%s missing or not float32", key);
    ck_assert_msg((float)kv->v.f == want, "%s = %g, want %g", key, kv->v.f, (double)want);
}

/* Mean and standard deviation of a tensor's dequantized values. */
static void tensor_stats(const gguf_tensor *t, double *mean, double *std)
{
    int64_t row = (int64_t)t->ne[0], rows = (int64_t)(gguf_tensor_nelems(t) / t->ne[0]);
    size_t rb = qt_row_bytes((qt_type)t->type, row);
    float *x = malloc((size_t)row * sizeof *x);
    double s = 0, s2 = 0;
    for (int64_t r = 0; r < rows; r++) {
        qt_dequantize_row((qt_type)t->type, (const uint8_t *)t->data + r * rb, x, row);
        for (int64_t i = 0; i < row; i++) {
            s += x[i];
            s2 += (double)x[i] * x[i];
        }
    }
    free(x);
    double n = (double)(row * rows);
    *mean = s / n;
    *std = sqrt(s2 / n - *mean * *mean);
}

/* Checks everything the file of shape s (n_vocab tokens, type ft, seed) should hold. */
static void check_file(const char *path, const mkmodel_shape *s, mkmodel_ftype ft, int64_t n_vocab, uint64_t seed)
{
    gguf *g = open_ok(path);
    const char *a = s->arch;
    char key[128], name[128];
    gguf_str str;
    err_info ei = {0};
    ck_assert_int_eq(gguf_get_str(g, "general.architecture", &str, &ei), 0);
    ck_assert(gguf_str_eq(str, a));
    ck_assert_int_eq(gguf_get_str(g, "general.name", &str, &ei), 0);
    snprintf(name, sizeof name, "seed %llu)", (unsigned long long)seed);
    ck_assert_msg(memmem(str.ptr, str.len, "random weights", 14) && memmem(str.ptr, str.len, name, strlen(name)),
                  "general.name '%.*s'", (int)str.len, str.ptr);
    expect_u32(g, "general.file_type", mkmodel_ftype_number(ft));
    expect_u32(g, "general.quantization_version", 2);
    const struct {
        const char *suffix;
        uint32_t v;
    } ints[] = {
        {"context_length", (uint32_t)s->n_ctx},      {"embedding_length", (uint32_t)s->n_embd},
        {"block_count", (uint32_t)s->n_layer},       {"feed_forward_length", (uint32_t)s->n_ff},
        {"attention.head_count", (uint32_t)s->n_head}, {"attention.head_count_kv", (uint32_t)s->n_head_kv},
        {"rope.dimension_count", (uint32_t)(s->n_embd / s->n_head)}, {"vocab_size", (uint32_t)n_vocab},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", a, ints[i].suffix);
        expect_u32(g, key, ints[i].v);
    }
    snprintf(key, sizeof key, "%s.rope.freq_base", a);
    expect_f32(g, key, s->rope_base);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a);
    expect_f32(g, key, s->rms_eps);

    uint64_t E = (uint64_t)s->n_embd, hd = E / (uint64_t)s->n_head, KV = hd * (uint64_t)s->n_head_kv;
    size_t want_tensors = 2 + !s->tied + (size_t)s->n_layer * (9 + (s->qkv_bias ? 3 : 0));
    ck_assert_uint_eq(gguf_n_tensors(g), want_tensors);
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        int layer, role = role_of(name, s->tied, &layer);
        qt_type want = role < 0 ? QT_F32
                                : mkmodel_tensor_type(ft, (mkmodel_role)role, layer, s->n_layer, (int64_t)t->ne[0]);
        ck_assert_msg(t->type == (uint32_t)want, "%s: %s, want %s", name, qt_name(t->type), qt_name(want));
        ck_assert_uint_eq(t->n_dims, role < 0 ? 1 : 2);
    }
    const struct {
        const char *name;
        uint64_t ne0, ne1;
    } shapes[] = {
        {"token_embd.weight", E, (uint64_t)n_vocab}, {"output_norm.weight", E, 1},
        {"blk.0.attn_q.weight", E, E},               {"blk.0.attn_k.weight", E, KV},
        {"blk.0.attn_v.weight", E, KV},              {"blk.0.attn_output.weight", E, E},
        {"blk.0.ffn_gate.weight", E, (uint64_t)s->n_ff}, {"blk.0.ffn_up.weight", E, (uint64_t)s->n_ff},
        {"blk.0.ffn_down.weight", (uint64_t)s->n_ff, E},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, shapes[i].name);
        ck_assert_msg(t != NULL, "%s missing", shapes[i].name);
        ck_assert_msg(t->ne[0] == shapes[i].ne0 && t->ne[1] == shapes[i].ne1, "%s has shape [%llu, %llu]",
                      shapes[i].name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1]);
    }
    ck_assert((gguf_find_tensor(g, "output.weight") == NULL) == s->tied);
    ck_assert((gguf_find_tensor(g, "blk.0.attn_k.bias") != NULL) == s->qkv_bias);

    /* the numbers: matrices ~ N(0, 0.02^2), norms exactly 1 */
    double mean, std;
    tensor_stats(gguf_find_tensor(g, "blk.0.ffn_up.weight"), &mean, &std);
    ck_assert_msg(fabs(mean) < 0.001 && std > 0.019 && std < 0.021, "ffn_up mean %g std %g", mean, std);
    tensor_stats(gguf_find_tensor(g, "blk.1.attn_norm.weight"), &mean, &std);
    ck_assert(mean == 1.0 && std == 0.0);
    if (s->qkv_bias) {
        tensor_stats(gguf_find_tensor(g, "blk.0.attn_q.bias"), &mean, &std);
        ck_assert_msg(std > 0.01 && std < 0.03, "bias std %g", std);
    }
    gguf_close(g);

    /* and the engine runs it: finite logits of sane spread */
    model *m;
    ck_assert_msg(model_open(&m, path, &ei) == 0, "%s", ei.msg);
    model_session_params p;
    model_session_params_default(&p);
    p.n_ctx = 64;
    model_session *sess;
    ck_assert_msg(model_session_new(&sess, m, &p, &ei) == 0, "%s", ei.msg);
    int32_t toks[4] = {1, 2, 3, (int32_t)(n_vocab - 1)};
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    ck_assert_msg(model_session_eval(sess, toks, 4, logits, false, NULL, &ei) == 0, "%s", ei.msg);
    double s1 = 0, s2 = 0;
    for (int64_t i = 0; i < n_vocab; i++) {
        ck_assert_msg(isfinite(logits[i]), "logit %lld is %g", (long long)i, logits[i]);
        s1 += logits[i];
        s2 += (double)logits[i] * logits[i];
    }
    std = sqrt(s2 / n_vocab - (s1 / n_vocab) * (s1 / n_vocab));
    ck_assert_msg(std > 0.05 && std < 20, "logit std %g", std);
    free(logits);
    model_session_free(sess);
    model_close(m);
}

START_TEST(test_demo_in_every_type)
{
    const mkmodel_shape *demo = mkmodel_shape_find("demo");
    const char *path = tmp_path("demo.gguf");
    write_model(demo, (mkmodel_ftype)_i, 11, NULL, 2, path);
    gguf *g = open_ok(path);
    const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    int64_t n_vocab = (int64_t)t->ne[1];
    gguf_close(g);
    check_file(path, demo, (mkmodel_ftype)_i, n_vocab, 11);
    unlink(path);
}
END_TEST

/* Small shapes of the other layouts: qwen2 with biases and tied output at a width that is
 * not a multiple of 256 (K types fall back), and a tied llama. */
START_TEST(test_small_custom_shapes)
{
    static const mkmodel_shape shapes[] = {
        {"qwen2-small", "qwen2", 192, 2, 3, 1, 512, 0, 4096, 1000000.0f, 1e-6f, true, true},
        {"llama-tied", "llama", 128, 3, 2, 2, 256, 1000, 512, 100000.0f, 1e-5f, true, false},
    };
    for (int ft = 0; ft < MKMODEL_FTYPE_COUNT; ft++)
        for (size_t i = 0; i < 2; i++) {
            const char *path = tmp_path("small.gguf");
            write_model(&shapes[i], (mkmodel_ftype)ft, 3, NULL, 1, path);
            gguf *g = open_ok(path);
            int64_t n_vocab = (int64_t)gguf_find_tensor(g, "token_embd.weight")->ne[1];
            gguf_close(g);
            if (shapes[i].n_vocab)
                ck_assert_int_eq(n_vocab, shapes[i].n_vocab);
            check_file(path, &shapes[i], (mkmodel_ftype)ft, n_vocab, 3);
            unlink(path);
        }
}
END_TEST

/* A real shape end to end: SmolLM2-135M, the smallest (about 100 MB as Q4_K_M). */
START_TEST(test_real_shape_smollm2)
{
    const mkmodel_shape *s = mkmodel_shape_find("smollm2-135m");
    const char *path = tmp_path("smollm2.gguf");
    write_model(s, MKMODEL_Q4_K_M, 1, NULL, 0, path);
    check_file(path, s, MKMODEL_Q4_K_M, 49152, 1);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_msg(st.st_size > 95e6 && st.st_size < 110e6, "%lld bytes", (long long)st.st_size);
    unlink(path);
}
END_TEST

START_TEST(test_same_seed_same_bytes_any_threads)
{
    const mkmodel_shape *demo = mkmodel_shape_find("demo");
    const char *p1 = tmp_path("seed-a.gguf"), *p2 = tmp_path("seed-b.gguf");
    write_model(demo, MKMODEL_Q4_K_M, 5, NULL, 1, p1);
    write_model(demo, MKMODEL_Q4_K_M, 5, NULL, 3, p2);
    size_t n1, n2;
    uint8_t *a = slurp(p1, &n1), *b = slurp(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_msg(memcmp(a, b, n1) == 0, "same seed, different bytes with 1 and 3 threads");
    free(b);
    write_model(demo, MKMODEL_Q4_K_M, 6, NULL, 2, p2);
    b = slurp(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    size_t differing = 0;
    for (size_t i = 0; i < n1; i++)
        differing += a[i] != b[i];
    ck_assert_msg(differing > n1 / 2, "seeds 5 and 6 share %zu of %zu bytes", n1 - differing, n1);
    free(a);
    free(b);
    unlink(p1);
    unlink(p2);
}
END_TEST

static bool kv_equal(const gguf_kv *a, const gguf_kv *b)
{
    if (a->type != b->type || a->key.len != b->key.len || memcmp(a->key.ptr, b->key.ptr, a->key.len))
        return false;
    switch (a->type) {
    case GGUF_STR: return a->v.s.len == b->v.s.len && memcmp(a->v.s.ptr, b->v.s.ptr, a->v.s.len) == 0;
    case GGUF_ARR:
        return a->v.a.elem == b->v.a.elem && a->v.a.n == b->v.a.n && a->v.a.nbytes == b->v.a.nbytes &&
               memcmp(a->v.a.data, b->v.a.data, (size_t)a->v.a.nbytes) == 0;
    case GGUF_F32: case GGUF_F64: return a->v.f == b->v.f;
    case GGUF_BOOL: return a->v.b == b->v.b;
    default: return a->v.u == b->v.u;
    }
}

START_TEST(test_vocab_is_copied)
{
    const char *vocabs[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2-pre-qwen2.gguf"};
    char vpath[512];
    snprintf(vpath, sizeof vpath, "%s/tokenizer/%s", shared_dir(), vocabs[_i]);
    const char *path = tmp_path("vocab-model.gguf");
    write_model(mkmodel_shape_find("demo"), MKMODEL_Q8_0, 1, vpath, 2, path);
    gguf *src = open_ok(vpath), *dst = open_ok(path);
    err_info ei = {0};
    gguf_arr toks;
    ck_assert_int_eq(gguf_get_arr(src, "tokenizer.ggml.tokens", GGUF_STR, &toks, &ei), 0);
    int copied = 0;
    for (size_t i = 0; i < gguf_n_kv(src); i++) {
        const gguf_kv *kv = gguf_kv_at(src, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.ptr);
        if (strncmp(key, "tokenizer.", 10) != 0)
            continue;
        const gguf_kv *got = gguf_find(dst, key);
        ck_assert_msg(got && kv_equal(kv, got), "%s not copied exactly", key);
        copied++;
    }
    ck_assert_int_ge(copied, 5);
    ck_assert_uint_eq(gguf_find_tensor(dst, "token_embd.weight")->ne[1], toks.n);
    ck_assert_uint_eq(gguf_find_tensor(dst, "output.weight")->ne[1], toks.n);
    gguf_close(src);
    gguf_close(dst);
    check_file(path, mkmodel_shape_find("demo"), MKMODEL_Q8_0, (int64_t)toks.n, 1);
    unlink(path);
}
END_TEST

/* ---- the command line ---------------------------------------------------------------- */

/* Runs `edgellm mkmodel ARGS` (output discarded) and returns its exit status. */
static int run_cli(const char *args)
{
    const char *b = getenv("EDGELLM_BUILD");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/edgellm mkmodel %s >/dev/null 2>&1", b && *b ? b : "build", args);
    int st = system(cmd);
    ck_assert_msg(st != -1 && WIFEXITED(st), "could not run: %s", cmd);
    return WEXITSTATUS(st);
}

START_TEST(test_cli)
{
    const char *b = getenv("EDGELLM_BUILD");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/edgellm", b && *b ? b : "build");
    ck_assert_msg(access(bin, X_OK) == 0, "%s is not built (set EDGELLM_BUILD)", bin);
    const char *out = tmp_path("cli.gguf"), *lib = tmp_path("lib.gguf");
    char args[1024];
    snprintf(args, sizeof args, "--shape demo --type Q4_K_M -o %s --seed 9", out);
    ck_assert_int_eq(run_cli(args), 0);
    write_model(mkmodel_shape_find("demo"), MKMODEL_Q4_K_M, 9, NULL, 0, lib);
    size_t n1, n2;
    uint8_t *x = slurp(out, &n1), *y = slurp(lib, &n2);
    ck_assert(n1 == n2 && memcmp(x, y, n1) == 0); /* the CLI is the library with these options */
    free(x);
    free(y);
    unlink(out);
    unlink(lib);

    const char *usage_errors[] = {
        "--shape llama-7b --type Q8_0 -o %s", "--shape demo --type Q3_K -o %s", "--shape demo --type Q8_0",
        "--shape demo --type Q8_0 -o %s --seed -1", "--shape demo --type Q8_0 -o %s --seed 12x",
        "--shape demo --type Q8_0 -o %s extra", "--shape demo --type Q8_0 -o %s --frobnicate",
    };
    for (size_t i = 0; i < sizeof usage_errors / sizeof usage_errors[0]; i++) {
        snprintf(args, sizeof args, usage_errors[i], out);
        ck_assert_msg(run_cli(args) == 2, "'%s' should be a usage error", args);
        ck_assert_msg(access(out, F_OK) != 0, "'%s' wrote a file", args);
    }
    snprintf(args, sizeof args, "--shape demo --type Q8_0 -o %s --vocab %s/absent.gguf", out, tmp_dir);
    ck_assert_int_eq(run_cli(args), 1);
    ck_assert(access(out, F_OK) != 0);
}
END_TEST

static Suite *mkmodel_suite(void)
{
    Suite *s = suite_create("mkmodel");
    TCase *tc = tcase_create("rules");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_type_rule_matches_llama_cpp_files, 0, 5);
    tcase_add_test(tc, test_type_rule_at_real_shapes);
    tcase_add_test(tc, test_shapes_and_names);
    tcase_add_test(tc, test_builtin_vocab_is_consistent);
    tcase_add_test(tc, test_builtin_vocab_pads_to_real_size);
    suite_add_tcase(s, tc);
    tc = tcase_create("files");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, test_demo_in_every_type, 0, MKMODEL_FTYPE_COUNT);
    tcase_add_test(tc, test_small_custom_shapes);
    tcase_add_test(tc, test_same_seed_same_bytes_any_threads);
    tcase_add_loop_test(tc, test_vocab_is_copied, 0, 2);
    tcase_add_test(tc, test_real_shape_smollm2);
    tcase_add_test(tc, test_cli);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(mkmodel_suite()); }
