/* test_gen — the generation loop: text arrives as valid UTF-8, stop strings end generation
 * and never reach the caller (also when split across tokens), max_tokens / EOS / callback
 * stop give the right finish, the cached prompt prefix is reused, cancellation works, and
 * the same seed gives the same text. Uses the small reference models (random weights:
 * their output is arbitrary but deterministic). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gen.h"
#include "engine/tok.h"
#include "engine/utf8.h"
#include "tests/testutil.h"

typedef struct fixture {
    model *m;
    model_session *s;
    gen_ctx *g;
} fixture;

static fixture open_fixture(const char *name)
{
    fixture f;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s.gguf", shared_dir(), name);
    err_info ei = {0};
    ck_assert_msg(model_open(&f.m, path, &ei) == 0, "%s", ei.msg);
    model_session_params sp;
    model_session_params_default(&sp);
    sp.n_ctx = 256;
    ck_assert_int_eq(model_session_new(&f.s, f.m, &sp, &ei), 0);
    ck_assert_int_eq(gen_ctx_new(&f.g, f.m, f.s, &ei), 0);
    return f;
}

static void close_fixture(fixture *f)
{
    gen_ctx_free(f->g);
    model_session_free(f->s);
    model_close(f->m);
}

/* Everything the callback saw, plus checks on each piece. */
typedef struct collected {
    char text[16384];
    size_t len;
    int calls;
    int stop_after_calls;   /* > 0: return nonzero on that call */
    bool bad_utf8;
} collected;

static int collect(void *ud, const char *text, size_t len, int32_t token)
{
    (void)token;
    collected *c = ud;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int n = utf8_decode(text + i, len - i, &cp);
        if (cp == UTF8_REPLACEMENT && n == 1)
            c->bad_utf8 = true;
        i += (size_t)n;
    }
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, text, len);
        c->len += len;
    }
    c->calls++;
    return c->stop_after_calls > 0 && c->calls >= c->stop_after_calls;
}

static int32_t *encode(const fixture *f, const char *text, int *n)
{
    int cap = (int)strlen(text) + 8;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    ck_assert_int_eq(tok_encode(model_vocab(f->m), text, strlen(text), true, false, ids, cap, n), 0);
    return ids;
}

static gen_request request(const int32_t *prompt, int n, int max_tokens, uint64_t seed, float temp)
{
    gen_request rq = {.prompt = prompt, .n_prompt = n, .max_tokens = max_tokens};
    sampler_params_default(&rq.sampling);
    rq.sampling.seed = seed;
    rq.sampling.temperature = temp;
    return rq;
}

/* Hot sampling on a byte-level vocab produces tokens that split characters and stray
 * continuation bytes: every piece handed over must still be valid UTF-8. */
START_TEST(text_is_always_valid_utf8)
{
    fixture f = open_fixture("qwen2-gpt2.q4_k_m");
    int n;
    int32_t *p = encode(&f, "日本語のテキスト ünïcödé €", &n);
    for (uint64_t seed = 1; seed <= 12; seed++) {
        gen_request rq = request(p, n, 48, seed, 1.5f);
        rq.ignore_eos = true;
        collected c = {0};
        gen_result res;
        err_info ei = {0};
        ck_assert_int_eq(gen_run(f.g, &rq, collect, &c, &res, &ei), 0);
        ck_assert_msg(!c.bad_utf8, "seed %llu: invalid UTF-8 reached the callback", (unsigned long long)seed);
        ck_assert_int_eq(res.n_generated, 48);
        ck_assert_int_eq(res.finish, GEN_FINISH_LENGTH);
    }
    free(p);
    close_fixture(&f);
}
END_TEST

START_TEST(same_seed_same_text_and_prefix_reuse)
{
    fixture f = open_fixture("llama-spm.q8_0");
    int n;
    int32_t *p = encode(&f, "Once upon a time, there was a little robot", &n);
    gen_request rq = request(p, n, 24, 42, 0.9f);
    rq.ignore_eos = true;
    collected a = {0}, b = {0};
    gen_result ra, rb;
    err_info ei = {0};
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &a, &ra, &ei), 0);
    ck_assert_int_eq(ra.n_prompt_reused, 0);
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &b, &rb, &ei), 0);
    /* the whole prompt but its last token was still cached */
    ck_assert_int_eq(rb.n_prompt_reused, n - 1);
    ck_assert_uint_eq(a.len, b.len);
    ck_assert_mem_eq(a.text, b.text, a.len);
    rq.sampling.seed = 43;
    collected c = {0};
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &c, &ra, &ei), 0);
    ck_assert_msg(c.len != a.len || memcmp(c.text, a.text, a.len) != 0, "another seed gave the same text");
    free(p);
    close_fixture(&f);
}
END_TEST

/* A stop string taken from the middle of the greedy output (so it is hit, and likely spans
 * a token boundary) cuts the text right before it. */
START_TEST(stop_string_ends_generation_before_it)
{
    fixture f = open_fixture("llama-spm.q4_k_m");
    int n;
    int32_t *p = encode(&f, "The quick brown fox", &n);
    gen_request rq = request(p, n, 40, 1, 0.0f);
    rq.ignore_eos = true;
    collected full = {0};
    gen_result res;
    err_info ei = {0};
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &full, &res, &ei), 0);
    ck_assert_uint_ge(full.len, 20);
    /* a stop string of 5 bytes starting at byte 10 of the greedy text (moved back to a
     * character start) */
    size_t at = 10;
    while (at > 0 && (full.text[at] & 0xC0) == 0x80)
        at--;
    char stop[8] = {0};
    memcpy(stop, full.text + at, 5);
    size_t expect = (size_t)(strstr(full.text, stop) - full.text); /* first occurrence */
    const char *stops[2] = {"never-appears-\x01", stop};
    rq.stop = stops;
    rq.n_stop = 2;
    collected cut = {0};
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &cut, &res, &ei), 0);
    ck_assert_int_eq(res.finish, GEN_FINISH_STOP);
    ck_assert_uint_eq(cut.len, expect);
    ck_assert_mem_eq(cut.text, full.text, expect);
    free(p);
    close_fixture(&f);
}
END_TEST

START_TEST(callback_and_flag_cancel)
{
    fixture f = open_fixture("llama-spm.q4_0");
    int n;
    int32_t *p = encode(&f, "Hello there", &n);
    gen_request rq = request(p, n, 100, 7, 0.8f);
    rq.ignore_eos = true;
    collected c = {.stop_after_calls = 3};
    gen_result res;
    err_info ei = {0};
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &c, &res, &ei), 0);
    ck_assert_int_eq(res.finish, GEN_FINISH_CANCELLED);
    ck_assert_int_eq(c.calls, 3);
    atomic_bool cancel = true;
    rq.cancel = &cancel;
    collected d = {0};
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &d, &res, &ei), 0);
    ck_assert_int_eq(res.finish, GEN_FINISH_CANCELLED);
    ck_assert_int_eq(res.n_generated, 0);
    free(p);
    close_fixture(&f);
}
END_TEST

START_TEST(limits_and_errors)
{
    fixture f = open_fixture("llama-spm.q4_0");
    int32_t *big = calloc(300, sizeof *big);
    for (int i = 0; i < 300; i++)
        big[i] = 100 + i;
    gen_request rq = request(big, 300, 10, 1, 0.0f);
    gen_result res;
    err_info ei = {0};
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &(collected){0}, &res, &ei), -ERR_CONTEXT_FULL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "context"));
    /* a prompt that leaves 5 free positions stops with LENGTH when the context is full */
    rq = request(big, 251, 0, 1, 0.0f);
    rq.ignore_eos = true;
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &(collected){0}, &res, &ei), 0);
    ck_assert_int_eq(res.finish, GEN_FINISH_LENGTH);
    ck_assert_int_eq(res.n_generated, 6); /* 5 evaluated + the last one sampled */
    rq = request(big, 0, 10, 1, 0.0f);
    ck_assert_int_eq(gen_run(f.g, &rq, collect, &(collected){0}, &res, &ei), -EINVAL);
    rq = request(big, 10, 10, 1, -1.0f);
    ck_assert_int_ne(gen_run(f.g, &rq, collect, &(collected){0}, &res, &ei), 0);
    ck_assert_ptr_nonnull(strstr(ei.msg, "temperature"));
    free(big);
    close_fixture(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gen");
    TCase *tc = tcase_create("gen");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, text_is_always_valid_utf8);
    tcase_add_test(tc, same_seed_same_text_and_prefix_reuse);
    tcase_add_test(tc, stop_string_ends_generation_before_it);
    tcase_add_test(tc, callback_and_flag_cancel);
    tcase_add_test(tc, limits_and_errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
