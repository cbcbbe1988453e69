/* test_gguf_hostile — the malformed-GGUF corpus (tests/fuzz/corpus/gguf/hostile-*.gguf,
 * written by tests/fuzz/gen_seeds.py): one committed file per class of llama.cpp/ggml
 * advisory (wrapped size arithmetic, offsets past the end or wrapping, alignment zero, odd
 * or wrapping, huge string/array lengths and counts, tokenizer arrays of the wrong type,
 * byte tokens that are not <0xHH>, block_count beyond the tensors, hyper-parameters that do
 * not fit). Each must be refused at the layer that owns the check (the GGUF reader, the
 * tokenizer or the model) with the code and a message naming the culprit, and model_open,
 * the daemon's way in, must refuse it too. The table lists every hostile file: a new file
 * without a row fails the suite, so the corpus and its expectations cannot drift apart.
 *
 * Paths are relative to the repository root, where `make test` runs the suites. */
#include <check.h>
#include <dirent.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "testutil.h"

#define CORPUS "tests/fuzz/corpus/gguf"

typedef enum stage { AT_GGUF, AT_TOK, AT_MODEL } stage;

static const struct hostile {
    const char *name;    /* hostile-NAME.gguf */
    stage at;            /* the first layer that must refuse it */
    int code;
    const char *needle;  /* in the message */
} cases[] = {
    {"ne-product-wraps", AT_GGUF, -ERR_FORMAT, "tensor 't': element count overflows at dimension 1"},
    {"ne-bytes-wrap", AT_GGUF, -ERR_FORMAT, "tensor 't': byte size overflows"},
    {"ne-negative", AT_GGUF, -ERR_FORMAT, "tensor 't': dimension 0 is -1"},
    {"n-dims-huge", AT_GGUF, -ERR_FORMAT, "tensor 't': n_dims is 2147483648"},
    {"offset-past-eof", AT_GGUF, -ERR_FORMAT, "tensor 't': data [1099511627776, +64) runs past the end"},
    {"offset-wraps", AT_GGUF, -ERR_FORMAT, "tensor 't': data [18446744073709551584, +64) runs past the end"},
    {"alignment-zero", AT_GGUF, -ERR_FORMAT, "'general.alignment' is 0, expected a power of two"},
    {"alignment-wraps", AT_GGUF, -ERR_FORMAT, "'general.alignment' is 2147483648, expected a power of two"},
    {"alignment-odd", AT_GGUF, -ERR_FORMAT, "'general.alignment' is 48, expected a power of two"},
    {"string-length-huge", AT_GGUF, -ERR_FORMAT, "string length 18446744073709551615 exceeds"},
    {"array-length-huge", AT_GGUF, -ERR_FORMAT, "metadata key 'a': array of 2305843009213693952 uint64 elements exceeds"},
    {"string-array-length-huge", AT_GGUF, -ERR_FORMAT, "string element 4 of 1152921504606846976"},
    {"kv-count-huge", AT_GGUF, -ERR_FORMAT, "metadata count 4611686018427387904 cannot fit"},
    {"tensor-count-huge", AT_GGUF, -ERR_FORMAT, "tensor count 2305843009213693952 cannot fit"},
    {"tokens-not-strings", AT_TOK, -ERR_TYPE, "'tokenizer.ggml.tokens' is an array of uint32, expected an array of string"},
    {"tokens-scalar", AT_TOK, -ERR_TYPE, "'tokenizer.ggml.tokens' has type string, expected array"},
    {"scores-strings", AT_TOK, -ERR_TYPE, "'tokenizer.ggml.scores' is an array of string, expected an array of float32"},
    {"token-type-f32", AT_TOK, -ERR_TYPE, "'tokenizer.ggml.token_type' is an array of float32, expected an array of int32"},
    {"token-type-short", AT_TOK, -ERR_FORMAT, "tokenizer.ggml.token_type has 10 entries but tokenizer.ggml.tokens has 260"},
    {"bos-id-string", AT_TOK, -ERR_TYPE, "'tokenizer.ggml.bos_token_id' has type string"},
    {"bos-id-out-of-range", AT_TOK, -ERR_RANGE, "tokenizer.ggml.bos_token_id = 4294967295 is not a token id"},
    {"tokenizer-model-unknown", AT_TOK, -ERR_UNSUPPORTED, "tokenizer.ggml.model 'wordpiece' is not supported"},
    {"duplicate-token", AT_TOK, -ERR_FORMAT, "token 259 has the same text as token 1"},
    {"byte-token-not-hex", AT_TOK, -ERR_FORMAT, "token 68 '<0xZZ>' has type byte but is not of the form <0xHH>"},
    {"byte-token-0x100", AT_TOK, -ERR_FORMAT, "token 68 '<0x100>' has type byte but is not of the form <0xHH>"},
    {"byte-token-negative", AT_TOK, -ERR_FORMAT, "token 68 '<0x-1>' has type byte but is not of the form <0xHH>"},
    {"byte-token-short", AT_TOK, -ERR_FORMAT, "token 68 '<0x>' has type byte but is not of the form <0xHH>"},
    {"byte-token-empty", AT_TOK, -ERR_FORMAT, "token 68 '' has type byte but is not of the form <0xHH>"},
    {"block-count-too-large", AT_MODEL, -ERR_FORMAT, "tensor 'blk.1.attn_norm.weight' is missing"},
    {"block-count-huge", AT_MODEL, -ERR_RANGE, "'llama.block_count' = 4294967295 is outside 1..1024"},
    {"block-count-negative", AT_MODEL, -ERR_RANGE, "'llama.block_count' = -1 is outside 1..1024"},
    {"head-count-zero", AT_MODEL, -ERR_RANGE, "'llama.attention.head_count' = 0 is outside 1..1024"},
    {"head-count-kv-odd", AT_MODEL, -ERR_FORMAT, "head_count 2 is not a multiple of head_count_kv 3"},
    {"embedding-length-mismatch", AT_MODEL, -ERR_FORMAT, "'token_embd.weight' has shape [8, 260] (2 dims), expected [16, 260]"},
    {"vocab-embedding-mismatch", AT_MODEL, -ERR_FORMAT, "'token_embd.weight' has shape [8, 260] (2 dims), expected [8, 261]"},
    {"rms-eps-nan", AT_MODEL, -ERR_RANGE, "'llama.attention.layer_norm_rms_epsilon' = nan must be positive"},
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

static const char *path_of(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, CORPUS "/hostile-%s.gguf", name);
    return path;
}

static void expect_refusal(const char *what, int rc, const err_info *ei, const struct hostile *h)
{
    ck_assert_msg(rc == h->code, "%s: %s gave %d (%s), expected %d (%s)", h->name, what, rc, err_name(rc), h->code,
                  err_name(h->code));
    ck_assert_msg(ei->code == rc, "%s: %s: the message is for code %d", h->name, what, ei->code);
    ck_assert_msg(strstr(ei->msg, h->needle), "%s: %s said '%s', expected it to say '%s'", h->name, what, ei->msg,
                  h->needle);
}

/* Each file is refused by the layer that owns the check, the layers before it accept it
 * (so the refusal is the one intended, not an earlier accident), and model_open refuses it
 * with the same message. */
START_TEST(each_file_refused_where_expected)
{
    const struct hostile *h = &cases[_i];
    const char *path = path_of(h->name);
    size_t size;
    uint8_t *data = slurp(path, &size); /* exactly its size: ASan sees any over-read */
    gguf *g = NULL;
    err_info ei = {0};
    int rc = gguf_open_mem(&g, data, size, &ei);
    if (h->at == AT_GGUF) {
        expect_refusal("gguf_open_mem", rc, &ei, h);
    } else {
        ck_assert_msg(rc == 0, "%s: the GGUF reader refused it: %s", h->name, ei.msg);
        tok_vocab *v = NULL;
        rc = tok_load(&v, g, &ei);
        if (h->at == AT_TOK) {
            expect_refusal("tok_load", rc, &ei, h);
            ck_assert_ptr_null(v);
        } else {
            ck_assert_msg(rc == 0, "%s: the tokenizer refused it: %s", h->name, ei.msg);
            tok_free(v);
        }
        gguf_close(g);
    }
    model *m = NULL;
    ei = (err_info){0};
    rc = model_open(&m, path, &ei);
    expect_refusal("model_open", rc, &ei, h);
    ck_assert_ptr_null(m);
    free(data);
}
END_TEST

static int is_hostile(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return !strncmp(e->d_name, "hostile-", 8) && n > 5 && !strcmp(e->d_name + n - 5, ".gguf");
}

/* The corpus and the table list the same files. */
START_TEST(table_covers_the_corpus)
{
    struct dirent **names;
    int n = scandir(CORPUS, &names, is_hostile, alphasort);
    ck_assert_msg(n > 0, "no hostile files in %s (run from the repository root)", CORPUS);
    for (int i = 0; i < n; i++) {
        bool listed = false;
        for (int k = 0; k < N_CASES && !listed; k++) {
            char file[128];
            snprintf(file, sizeof file, "hostile-%s.gguf", cases[k].name);
            listed = !strcmp(names[i]->d_name, file);
        }
        ck_assert_msg(listed, "%s has no row in the table of test_gguf_hostile.c", names[i]->d_name);
        free(names[i]);
    }
    free(names);
    ck_assert_int_eq(n, N_CASES);
}
END_TEST

/* The files are variations of one small valid model: that model loads (so the refusals
 * above come from the variation, not from a broken base). */
START_TEST(base_model_loads)
{
    model *m;
    err_info ei = {0};
    ck_assert_msg(model_open(&m, CORPUS "/llama-spm-tiny-f16.gguf", &ei) == 0, "%s", ei.msg);
    ck_assert_int_eq(model_hparams_of(m)->n_vocab, 260);
    model_close(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf_hostile");
    TCase *tc = tcase_create("corpus");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, table_covers_the_corpus);
    tcase_add_test(tc, base_model_loads);
    tcase_add_loop_test(tc, each_file_refused_where_expected, 0, N_CASES);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
