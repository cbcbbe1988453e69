/* test_model — the engine's forward pass against llama.cpp's reference logits
 * ($SHARED/models/X.refN.json, rule in $SHARED/README.md), on every kernel variant this
 * machine runs; plus the session mechanics (chunked prefill, rewind, cancellation, context
 * limit) and model-loading errors. */
#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"

static const char *shared_dir(void)
{
    const char *s = getenv("SHARED");
    return s && *s ? s : "../shared";
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = 0;
    fclose(f);
    return buf;
}

/* One reference file: the token sequence and, per position, the reference's top-40. */
typedef struct ref_case {
    cJSON *root;
    int32_t *tokens;
    int n_tokens;
    cJSON *rows;
} ref_case;

static int ref_load(ref_case *rc, const char *path)
{
    char *text = read_file(path);
    if (!text)
        return -1;
    rc->root = cJSON_Parse(text);
    free(text);
    if (!rc->root)
        return -1;
    cJSON *pt = cJSON_GetObjectItem(rc->root, "prompt_tokens"), *gt = cJSON_GetObjectItem(rc->root, "greedy_tokens");
    rc->rows = cJSON_GetObjectItem(rc->root, "rows");
    rc->n_tokens = cJSON_GetArraySize(pt) + cJSON_GetArraySize(gt);
    rc->tokens = malloc((size_t)rc->n_tokens * sizeof *rc->tokens);
    int i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, pt) rc->tokens[i++] = it->valueint;
    cJSON_ArrayForEach(it, gt) rc->tokens[i++] = it->valueint;
    return cJSON_GetArraySize(rc->rows) == rc->n_tokens ? 0 : -1;
}

static void ref_free(ref_case *rc)
{
    cJSON_Delete(rc->root);
    free(rc->tokens);
}

/* The k-th largest value of x (k from 1), by partial selection on a copy. */
static float kth_largest(const float *x, int n, int k, float *scratch)
{
    memcpy(scratch, x, (size_t)n * sizeof *x);
    for (int j = 0; j < k; j++) {
        int best = j;
        for (int i = j + 1; i < n; i++)
            if (scratch[i] > scratch[best])
                best = i;
        float t = scratch[j];
        scratch[j] = scratch[best];
        scratch[best] = t;
    }
    return scratch[k - 1];
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

typedef struct conf_result {
    int rows;
    int top1_mismatch;
    double worst;  /* in units of the row's std */
} conf_result;

/* Applies the conformance rule to every row; logits is [n_tokens][n_vocab]. */
static conf_result check_rows(const ref_case *rc, const float *logits, int n_vocab)
{
    conf_result r = {0};
    float *scratch = malloc((size_t)n_vocab * sizeof *scratch);
    for (int p = 0; p < rc->n_tokens; p++) {
        const float *row = logits + (size_t)p * n_vocab;
        cJSON *ref = cJSON_GetArrayItem(rc->rows, p);
        cJSON *ids = cJSON_GetObjectItem(ref, "top_ids"), *vals = cJSON_GetObjectItem(ref, "top_logits");
        double std = cJSON_GetObjectItem(ref, "std")->valuedouble;
        int nref = cJSON_GetArraySize(ids);
        double gap = cJSON_GetArrayItem(vals, 0)->valuedouble - cJSON_GetArrayItem(vals, 1)->valuedouble;
        if (gap > 0.5 * std && argmax(row, n_vocab) != cJSON_GetArrayItem(ids, 0)->valueint)
            r.top1_mismatch++;
        float mine40 = kth_largest(row, n_vocab, nref, scratch);
        for (int j = 0; j < nref; j++) {
            int id = cJSON_GetArrayItem(ids, j)->valueint;
            double want = cJSON_GetArrayItem(vals, j)->valuedouble;
            double err = fabs(row[id] - want);
            /* an id outside our own top 40 is fine only if its reference logit is within the
             * tolerance of our 40th; being in our top-40 or not, its own value is what we have */
            if (row[id] < mine40)
                err = fmax(err, want - mine40 > 0 ? want - mine40 : 0);
            r.worst = fmax(r.worst, err / std);
        }
        r.rows++;
    }
    free(scratch);
    return r;
}

static bool is_float_file(const char *name)
{
    return strstr(name, ".f16.") || strstr(name, ".f32.") || strstr(name, ".bf16.");
}

/* Evaluates every token of rc with all logits on a fresh session. */
static float *eval_all(const model *m, const kern_ops *k, pool *pl, int n_batch, qt_type kv_type, const ref_case *rc)
{
    model_session_params sp;
    model_session_params_default(&sp);
    sp.kern = k;
    sp.kv_type = kv_type;
    sp.pool = pl;
    sp.n_ctx = rc->n_tokens;
    sp.n_batch = n_batch;
    model_session *s;
    err_info ei = {0};
    ck_assert_msg(model_session_new(&s, m, &sp, &ei) == 0, "session: %s", ei.msg);
    int n_vocab = model_hparams_of(m)->n_vocab;
    float *logits = malloc((size_t)rc->n_tokens * n_vocab * sizeof *logits);
    ck_assert_msg(model_session_eval(s, rc->tokens, rc->n_tokens, logits, true, NULL, &ei) == 0, "eval: %s", ei.msg);
    model_session_free(s);
    return logits;
}

/* The conformance rule on model m (file name, layout: "rows" or "strips") with each kernel,
 * in prefill chunks of n_batch tokens (0: the default). */
static void check_conformance(const model *m, const char *name, const char *layout, int n_batch,
                              const char *const *kernels, int n_kern, pool *pl, const ref_case *rc)
{
    const double tol = is_float_file(name) ? 0.02 : 0.25;
    for (int ki = 0; ki < n_kern; ki++) {
        float *logits = eval_all(m, kern_by_name(kernels[ki]), pl, n_batch, QT_F16, rc);
        conf_result r = check_rows(rc, logits, model_hparams_of(m)->n_vocab);
        printf("conformance %-34s kernel=%-6s %-6s batch=%-2d rows=%d worst=%.4f std (tol %.2f) top1_mismatch=%d\n",
               name, kernels[ki], layout, n_batch, r.rows, r.worst, tol, r.top1_mismatch);
        ck_assert_msg(r.top1_mismatch == 0, "%s/%s/%s: %d top-1 mismatches", name, kernels[ki], layout,
                      r.top1_mismatch);
        ck_assert_msg(r.worst <= tol, "%s/%s/%s: worst error %.4f std > %.2f", name, kernels[ki], layout, r.worst, tol);
        free(logits);
    }
}

/* The file at path in page-aligned memory, as a shared copy holds it; *size its bytes. */
static void *read_image(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    *size = (size_t)ftell(f);
    rewind(f);
    void *buf = aligned_alloc(4096, (*size + 4095) / 4096 * 4096);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, *size, f), *size);
    fclose(f);
    return buf;
}

/* Every reference file with every kernel variant, read as it is and, where this machine's
 * kernel lays matrices out in strips (model_prepare_shared), as a prepared shared copy, in
 * prefill chunks and one token at a time: the variants without a strips kernel take strips
 * back into rows. */
START_TEST(conformance_all_models_all_kernels)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models", shared_dir());
    struct dirent **entries;
    int n_entries = scandir(dir, &entries, NULL, alphasort);
    ck_assert_msg(n_entries >= 0, "cannot open %s (set SHARED)", dir);
    /* every variant this CPU runs, or those listed in $TEST_KERNELS (e.g. "neon" under qemu,
     * where the scalar path costs minutes and is the same C code as on x86) */
    const char *kernels[8];
    int n_kern = kern_available(kernels, 8);
    const char *only = getenv("TEST_KERNELS");
    for (int i = 0; only && *only && i < n_kern;)
        if (!strstr(only, kernels[i]))
            memmove(&kernels[i], &kernels[i + 1], (size_t)(--n_kern - i) * sizeof *kernels);
        else
            i++;
    ck_assert_msg(n_kern > 0, "no kernel variant left to test (TEST_KERNELS=%s)", only ? only : "");
    /* $TEST_THREADS: 1 under qemu-user, which cannot start threads here */
    const char *threads = getenv("TEST_THREADS");
    pool *pl;
    ck_assert_int_eq(pool_new(&pl, threads ? atoi(threads) : 2, NULL), 0);
    int files = 0;
    for (int e = 0; e < n_entries; e++) {
        const struct dirent *de = entries[e];
        const char *dot = strstr(de->d_name, ".ref");
        if (!dot || !strstr(de->d_name, ".json"))
            continue;
        char ref_path[2048], model_path[2048];
        snprintf(ref_path, sizeof ref_path, "%s/%s", dir, de->d_name);
        snprintf(model_path, sizeof model_path, "%s/%.*s.gguf", dir, (int)(dot - de->d_name), de->d_name);
        ref_case rc;
        ck_assert_msg(ref_load(&rc, ref_path) == 0, "bad reference %s", ref_path);
        model *m;
        err_info ei = {0};
        ck_assert_msg(model_open(&m, model_path, &ei) == 0, "%s: %s", model_path, ei.msg);
        check_conformance(m, de->d_name, "rows", 0, kernels, n_kern, pl, &rc);
        model_close(m);
        size_t size;
        void *image = read_image(model_path, &size);
        const int prepared = model_prepare_shared(image, size, &ei);
        ck_assert_msg(prepared >= 0, "%s: %s", model_path, ei.msg);
        if (prepared) {
            ck_assert_msg(model_open_prepared(&m, image, size, &ei) == 0, "%s: %s", model_path, ei.msg);
            /* prefill's chunks take strips back into rows; one token a chunk is decode's path */
            check_conformance(m, de->d_name, "strips", 0, kernels, n_kern, pl, &rc);
            check_conformance(m, de->d_name, "strips", 1, kernels, n_kern, pl, &rc);
            model_close(m);
        }
        free(image);
        ref_free(&rc);
        files++;
    }
    for (int e = 0; e < n_entries; e++)
        free(entries[e]);
    free(entries);
    pool_free(pl);
    ck_assert_msg(files >= 15, "expected the 15 reference files, found %d", files);
}
END_TEST

/* Opens the first reference model and case for the mechanics tests. */
static model *open_ref(const char *name, ref_case *rc)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/models/%s.ref1.json", shared_dir(), name);
    ck_assert_int_eq(ref_load(rc, path), 0);
    snprintf(path, sizeof path, "%s/models/%s.gguf", shared_dir(), name);
    model *m;
    err_info ei = {0};
    ck_assert_msg(model_open(&m, path, &ei) == 0, "%s", ei.msg);
    return m;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

/* Chunked prefill (odd chunk sizes, 1 and 2 threads) must give the same logits as one chunk:
 * the math per token is identical, only the grouping differs. */
START_TEST(chunking_and_threads_do_not_change_results)
{
    ref_case rc;
    model *m = open_ref("qwen2-gpt2.q4_k_m", &rc);
    const kern_ops *k = kern_ref();
    int n_vocab = model_hparams_of(m)->n_vocab;
    float *whole = eval_all(m, k, NULL, rc.n_tokens, QT_F16, &rc);
    pool *pl;
    ck_assert_int_eq(pool_new(&pl, 2, NULL), 0);
    int batches[] = {1, 7, 64};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        float *chunked = eval_all(m, k, pl, batches[i], QT_F16, &rc);
        double d = max_abs_diff(whole, chunked, (size_t)rc.n_tokens * n_vocab);
        ck_assert_msg(d < 1e-3, "n_batch=%d differs by %g", batches[i], d);
        free(chunked);
    }
    pool_free(pl);
    free(whole);
    model_close(m);
    ref_free(&rc);
}
END_TEST

/* An F32 KV cache (--kv-type F32) meets the float files' conformance tolerance on every
 * kernel this CPU runs, in chunks of 7 tokens with 2 threads: its keys and values take the
 * same gemm paths as F16's, through the F32 tile kernels. */
START_TEST(f32_kv_cache_conforms)
{
    ref_case rc;
    model *m = open_ref("qwen2-gpt2-e128.f16", &rc);
    const char *kernels[8];
    int n_kern = kern_available(kernels, 8);
    pool *pl;
    ck_assert_int_eq(pool_new(&pl, 2, NULL), 0);
    for (int ki = 0; ki < n_kern; ki++) {
        float *logits = eval_all(m, kern_by_name(kernels[ki]), pl, 7, QT_F32, &rc);
        conf_result r = check_rows(&rc, logits, model_hparams_of(m)->n_vocab);
        ck_assert_msg(r.top1_mismatch == 0 && r.worst <= 0.02, "%s: worst %.4f std, %d top-1 mismatches",
                      kernels[ki], r.worst, r.top1_mismatch);
        free(logits);
    }
    pool_free(pl);
    model_close(m);
    ref_free(&rc);
}
END_TEST

/* Rewinding to a prefix and re-feeding the rest reproduces the fresh logits (prefix reuse). */
START_TEST(rewind_reuses_prefix)
{
    ref_case rc;
    model *m = open_ref("llama-spm.q8_0", &rc);
    int n_vocab = model_hparams_of(m)->n_vocab, n = rc.n_tokens, keep = n / 2;
    model_session_params sp;
    model_session_params_default(&sp);
    sp.n_ctx = n;
    model_session *s;
    err_info ei = {0};
    ck_assert_int_eq(model_session_new(&s, m, &sp, &ei), 0);
    float *fresh = malloc((size_t)n_vocab * sizeof *fresh), *again = malloc((size_t)n_vocab * sizeof *again);
    ck_assert_int_eq(model_session_eval(s, rc.tokens, n, fresh, false, NULL, &ei), 0);
    ck_assert_int_eq(model_session_n_past(s), n);
    model_session_rewind(s, keep);
    ck_assert_int_eq(model_session_n_past(s), keep);
    ck_assert_int_eq(model_session_eval(s, rc.tokens + keep, n - keep, again, false, NULL, &ei), 0);
    ck_assert_double_lt(max_abs_diff(fresh, again, (size_t)n_vocab), 1e-4);
    free(fresh);
    free(again);
    model_session_free(s);
    model_close(m);
    ref_free(&rc);
}
END_TEST

START_TEST(context_limit_and_bad_tokens_are_refused)
{
    ref_case rc;
    model *m = open_ref("llama-spm.q4_0", &rc);
    model_session_params sp;
    model_session_params_default(&sp);
    sp.n_ctx = 8;
    model_session *s;
    err_info ei = {0};
    ck_assert_int_eq(model_session_new(&s, m, &sp, &ei), 0);
    ck_assert_int_eq(model_session_eval(s, rc.tokens, 9, NULL, false, NULL, &ei), -ERR_CONTEXT_FULL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "context"));
    ck_assert_int_eq(model_session_n_past(s), 0);
    ck_assert_int_eq(model_session_eval(s, rc.tokens, 8, NULL, false, NULL, &ei), 0);
    ck_assert_int_eq(model_session_eval(s, rc.tokens, 1, NULL, false, NULL, &ei), -ERR_CONTEXT_FULL);
    model_session_rewind(s, 0);
    int32_t bad[2] = {1, 32000};
    ck_assert_int_eq(model_session_eval(s, bad, 2, NULL, false, NULL, &ei), -ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(ei.msg, "32000"));
    model_session_free(s);
    model_close(m);
    ref_free(&rc);
}
END_TEST

/* A raised cancel flag stops prefill at the next chunk boundary, keeping what was done. */
START_TEST(cancel_stops_between_chunks)
{
    ref_case rc;
    model *m = open_ref("llama-spm.q4_0", &rc);
    model_session_params sp;
    model_session_params_default(&sp);
    sp.n_batch = 4;
    model_session *s;
    err_info ei = {0};
    ck_assert_int_eq(model_session_new(&s, m, &sp, &ei), 0);
    atomic_bool cancel = true;
    ck_assert_int_eq(model_session_eval(s, rc.tokens, 12, NULL, false, &cancel, &ei), -ERR_CANCELLED);
    ck_assert_int_eq(model_session_n_past(s), 0);
    model_session_free(s);
    model_close(m);
    ref_free(&rc);
}
END_TEST

START_TEST(unsupported_files_are_refused_by_name)
{
    model *m;
    err_info ei = {0};
    char path[2048];
    /* a vocab-only file: architecture llama but no tensors */
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-llama-spm.gguf", shared_dir());
    ck_assert_int_ne(model_open(&m, path, &ei), 0);
    ck_assert_msg(strstr(ei.msg, "token_embd.weight") != NULL, "message: %s", ei.msg);
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-falcon.gguf", shared_dir());
    ck_assert_int_eq(model_open(&m, path, &ei), -ERR_UNSUPPORTED);
    ck_assert_msg(strstr(ei.msg, "falcon") != NULL, "message: %s", ei.msg);
    ck_assert_int_ne(model_open(&m, "/nonexistent.gguf", &ei), 0);
    ck_assert_ptr_nonnull(strstr(ei.msg, "/nonexistent.gguf"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("conformance");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, conformance_all_models_all_kernels);
    suite_add_tcase(s, tc);
    tc = tcase_create("session");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, chunking_and_threads_do_not_change_results);
    tcase_add_test(tc, f32_kv_cache_conforms);
    tcase_add_test(tc, rewind_reuses_prefix);
    tcase_add_test(tc, context_limit_and_bad_tokens_are_refused);
    tcase_add_test(tc, cancel_stops_between_chunks);
    tcase_add_test(tc, unsupported_files_are_refused_by_name);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
