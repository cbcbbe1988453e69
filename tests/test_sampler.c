/* test_sampler — greedy and its ties, seeded determinism, exact penalty arithmetic,
 * parameter checks, and the truncations (top-k, top-p, min-p) verified on logits built so
 * that excluded tokens can never be drawn, 10k draws each; also the draw's frequencies
 * against the softmax at two temperatures, and the cost per token at 152k vocabulary. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sampler.h"

enum { N_DRAWS = 10000 };

static sampler *make(const sampler_params *p, int32_t n_vocab)
{
    sampler *s = NULL;
    err_info ei = {0};
    ck_assert_msg(sampler_new(&s, p, n_vocab, &ei) == 0, "sampler_new: %s", ei.msg);
    return s;
}

/* Sampling-only params: temperature 1, all truncations off, no penalties. */
static sampler_params plain(void)
{
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 1234;
    return p;
}

/* Small deterministic generator for test logits (independent of the sampler's). */
static uint32_t lcg(uint32_t *x)
{
    *x = *x * 1664525u + 1013904223u;
    return *x >> 8;
}

static void random_logits(float *l, int32_t n, uint32_t seed)
{
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)lcg(&seed) / (float)(1u << 24) * 20.0f - 10.0f;
}

/* counts[id]++ for each of n_draws tokens a fresh sampler with params p draws from fresh
 * copies of logits l. */
static void count_draws(const sampler_params *p, const float *l, int32_t n, int *counts, int n_draws)
{
    sampler *s = make(p, n);
    float *scratch = malloc((size_t)n * sizeof *scratch);
    for (int i = 0; i < n_draws; i++) {
        memcpy(scratch, l, (size_t)n * sizeof *l);
        int32_t t = sampler_sample(s, scratch);
        ck_assert_int_ge(t, 0);
        ck_assert_int_lt(t, n);
        counts[t]++;
    }
    free(scratch);
    sampler_free(s);
}

/* ---- greedy ------------------------------------------------------------------------------ */

START_TEST(greedy_picks_argmax)
{
    sampler_params p = plain();
    p.temperature = 0.0f;
    enum { N = 5000 };
    sampler *s = make(&p, N);
    float *l = malloc(N * sizeof *l);
    for (uint32_t seed = 1; seed <= 20; seed++) {
        random_logits(l, N, seed);
        int32_t want = 0;
        for (int32_t i = 1; i < N; i++)
            if (l[i] > l[want])
                want = i;
        ck_assert_int_eq(sampler_sample(s, l), want);
    }
    free(l);
    sampler_free(s);
}
END_TEST

START_TEST(greedy_ties_pick_lowest_id)
{
    sampler_params p = plain();
    p.temperature = 0.0f;
    sampler *s = make(&p, 6);
    float l[6] = {1.0f, 3.0f, -2.0f, 3.0f, NAN, 3.0f};
    ck_assert_int_eq(sampler_sample(s, l), 1);
    float nan_first[3] = {NAN, 0.5f, 0.5f};
    sampler_free(s);
    s = make(&p, 3);
    ck_assert_int_eq(sampler_sample(s, nan_first), 1);
    sampler_free(s);
}
END_TEST

/* top_k = 1 leaves only the argmax, whatever the temperature. */
START_TEST(top_k_1_equals_greedy)
{
    sampler_params p = plain();
    p.top_k = 1;
    p.temperature = 1.5f;
    enum { N = 3000 };
    sampler *s = make(&p, N);
    float *l = malloc(N * sizeof *l);
    for (uint32_t seed = 1; seed <= 200; seed++) {
        random_logits(l, N, seed);
        l[seed % N] = l[(seed * 7) % N];  /* some ties */
        int32_t want = 0;
        for (int32_t i = 1; i < N; i++)
            if (l[i] > l[want])
                want = i;
        ck_assert_int_eq(sampler_sample(s, l), want);
    }
    free(l);
    sampler_free(s);
}
END_TEST

/* ---- determinism ------------------------------------------------------------------------- */

/* 200 tokens with the default chain over a changing logit vector. */
static void run_sequence(sampler *s, int32_t *out, int32_t n_vocab)
{
    float *l = malloc((size_t)n_vocab * sizeof *l);
    for (int i = 0; i < 200; i++) {
        random_logits(l, n_vocab, (uint32_t)i + 1);
        for (int32_t j = 0; j < n_vocab; j++)
            l[j] *= 0.3f;  /* flat enough that the draw matters */
        out[i] = sampler_sample(s, l);
        sampler_accept(s, out[i]);
    }
    free(l);
}

START_TEST(same_seed_same_tokens)
{
    sampler_params p;
    sampler_params_default(&p);
    p.seed = 42;
    p.repeat_penalty = 1.1f;
    enum { N = 2000 };
    sampler *a = make(&p, N), *b = make(&p, N);
    int32_t ta[200], tb[200], tc[200];
    run_sequence(a, ta, N);
    run_sequence(b, tb, N);
    ck_assert_mem_eq(ta, tb, sizeof ta);
    sampler_reset(a);  /* forgets history and re-seeds: the same run again */
    run_sequence(a, tc, N);
    ck_assert_mem_eq(ta, tc, sizeof ta);
    sampler_free(a);
    sampler_free(b);
}
END_TEST

START_TEST(different_seeds_differ)
{
    sampler_params p;
    sampler_params_default(&p);
    enum { N = 2000 };
    int32_t t[4][200];
    for (int k = 0; k < 4; k++) {
        p.seed = (uint64_t)k;
        sampler *s = make(&p, N);
        run_sequence(s, t[k], N);
        sampler_free(s);
    }
    for (int a = 0; a < 4; a++)
        for (int b = a + 1; b < 4; b++) {
            int same = 0;
            for (int i = 0; i < 200; i++)
                same += t[a][i] == t[b][i];
            ck_assert_msg(same < 150, "seeds %d and %d agree on %d of 200 tokens", a, b, same);
        }
}
END_TEST

/* ---- penalties --------------------------------------------------------------------------- */

/* A greedy sampler (so sample() only applies penalties and picks) that has seen hist. */
static sampler *greedy_after(sampler_params p, int32_t n_vocab, const int32_t *hist, int n_hist)
{
    p.temperature = 0.0f;
    sampler *s = make(&p, n_vocab);
    for (int i = 0; i < n_hist; i++)
        sampler_accept(s, hist[i]);
    return s;
}

START_TEST(penalties_change_exactly_the_seen_logits)
{
    sampler_params p = plain();
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    const int32_t hist[] = {3, 5, 3, 99};  /* 99 is out of range: ignored */
    sampler *s = greedy_after(p, 8, hist, 4);
    const float orig[8] = {1, 2, 3, 4, 5, -1, 0, 7};
    const float want[8] = {1, 2, 3,
                           4.0f / 2 - 2 * 0.5f - 0.25f,   /* seen twice, positive: divided */
                           5, -1.0f * 2 - 0.5f - 0.25f,   /* seen once, negative: multiplied */
                           0, 7};
    /* Twice: the counts must survive the visit. */
    for (int round = 0; round < 2; round++) {
        float l[8];
        memcpy(l, orig, sizeof l);
        sampler_sample(s, l);
        for (int i = 0; i < 8; i++)
            ck_assert_msg(l[i] == want[i], "round %d logit %d: %g, want %g", round, i, l[i], want[i]);
    }
    sampler_reset(s);  /* forgets the history */
    float l[8];
    memcpy(l, orig, sizeof l);
    sampler_sample(s, l);
    ck_assert_mem_eq(l, orig, sizeof l);
    sampler_free(s);
}
END_TEST

START_TEST(penalty_window_forgets_old_tokens)
{
    sampler_params p = plain();
    p.repeat_penalty = 4.0f;
    p.repeat_last_n = 2;
    const int32_t hist[] = {0, 1, 2};  /* 0 leaves the window */
    sampler *s = greedy_after(p, 4, hist, 3);
    float l[4] = {8, 8, 8, 8};
    ck_assert_int_eq(sampler_sample(s, l), 0);
    ck_assert(l[0] == 8 && l[1] == 2 && l[2] == 2 && l[3] == 8);
    sampler_free(s);

    p.repeat_last_n = 0;  /* window 0: no penalties at all */
    s = greedy_after(p, 4, hist, 1);
    float m[4] = {8, 1, 1, 1};
    ck_assert_int_eq(sampler_sample(s, m), 0);
    ck_assert(m[0] == 8);
    sampler_free(s);
}
END_TEST

/* ---- truncation -------------------------------------------------------------------------- */

/* Probabilities .5 .3 .15 .05 on tokens 2, 9, 4, 0 of a 64-token vocabulary (the rest
 * impossible); top_p 0.75 must keep exactly {2, 9}. Run with and without top-k. */
START_TEST(top_p_excludes_the_tail)
{
    enum { N = 64 };
    float l[N];
    for (int i = 0; i < N; i++)
        l[i] = -INFINITY;
    l[2] = logf(0.5f), l[9] = logf(0.3f), l[4] = logf(0.15f), l[0] = logf(0.05f);
    for (int top_k = 0; top_k <= 40; top_k += 40) {
        sampler_params p = plain();
        p.top_p = 0.75f;
        p.top_k = top_k;
        int counts[N] = {0};
        count_draws(&p, l, N, counts, N_DRAWS);
        ck_assert_int_eq(counts[2] + counts[9], N_DRAWS);
        /* renormalised: 0.5/0.8 and 0.3/0.8, 4 sigma ~ 0.02 */
        ck_assert_msg(fabs(counts[2] / (double)N_DRAWS - 0.625) < 0.02, "top_k %d: token 2 drawn %d", top_k,
                      counts[2]);
    }
}
END_TEST

/* One strong token among 20000 equal ones: top-p must take the equal tokens in id order
 * until the mass is reached (a long prefix, found by widening the window), never beyond.
 * Every draw sorts ~20k candidates here, hence fewer draws. */
START_TEST(top_p_over_a_flat_vocab)
{
    enum { N = 20000, DRAWS = 2000 };
    float *l = calloc(N, sizeof *l);
    int *counts = calloc(N, sizeof *counts);
    l[7] = 8.0f;
    sampler_params p = plain();
    p.top_p = 0.9f;
    /* Expected prefix: token 7, then ids 0, 1, 2, ... (skipping 7) until the mass is 0.9. */
    double z = exp(8.0) + (N - 1), cum = exp(8.0);
    int32_t last = -1;
    for (int32_t i = 0; cum < 0.9 * z; i++)
        if (i != 7) {
            cum += 1.0;
            last = i;
        }
    count_draws(&p, l, N, counts, DRAWS);
    int32_t max_drawn = 0;
    for (int32_t i = 0; i < N; i++)
        if (counts[i])
            max_drawn = i;
    ck_assert_msg(max_drawn <= last + 1, "drew %d past the top-p boundary %d", max_drawn, last);
    ck_assert_msg(max_drawn > last - 500, "largest id drawn %d, boundary %d: prefix too short", max_drawn, last);
    ck_assert_int_gt(counts[7], DRAWS / 20);  /* p = e^8 / (0.9 z) = 0.14 */
    free(counts);
    free(l);
}
END_TEST

/* min_p 0.1 on logits 0, -1, -2, ...: p_i / p_max = e^-i, so only 0, 1, 2 survive
 * (e^-2 = .135, e^-3 = .05); a high temperature afterwards must not bring the rest back. */
START_TEST(min_p_excludes_unlikely_tokens)
{
    enum { N = 1000 };
    float l[N];
    for (int i = 0; i < N; i++)
        l[(i * 37) % N] = -(float)i;  /* scatter the ranks over the ids */
    for (int top_k = 0; top_k <= 40; top_k += 40) {
        sampler_params p = plain();
        p.min_p = 0.1f;
        p.temperature = 3.0f;
        p.top_k = top_k;
        int counts[N] = {0};
        count_draws(&p, l, N, counts, N_DRAWS);
        ck_assert_int_eq(counts[0] + counts[37] + counts[74], N_DRAWS);
        ck_assert(counts[0] > 0 && counts[37] > 0 && counts[74] > 0);
    }
}
END_TEST

START_TEST(top_k_excludes_the_rest)
{
    enum { N = 500 };
    float l[N];
    random_logits(l, N, 99);
    for (int i = 0; i < N; i++)
        l[i] *= 0.05f;  /* nearly flat: without top-k everything would be drawn */
    sampler_params p = plain();
    p.top_k = 5;
    int counts[N] = {0};
    count_draws(&p, l, N, counts, N_DRAWS);
    /* the 5 largest */
    int kept = 0;
    for (int i = 0; i < N; i++) {
        int above = 0;
        for (int j = 0; j < N; j++)
            above += l[j] > l[i] || (l[j] == l[i] && j < i);
        if (above < 5) {
            ck_assert_int_gt(counts[i], 0);
            kept += counts[i];
        }
    }
    ck_assert_int_eq(kept, N_DRAWS);
}
END_TEST

/* Frequencies follow softmax(logit / T): .5 .3 .2 at T = 1, and p^(1/2) renormalised at T = 2. */
START_TEST(draw_follows_the_softmax)
{
    float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    const float temps[2] = {1.0f, 2.0f};
    for (int k = 0; k < 2; k++) {
        sampler_params p = plain();
        p.temperature = temps[k];
        int counts[3] = {0};
        count_draws(&p, l, 3, counts, N_DRAWS);
        double z = 0, want[3];
        for (int i = 0; i < 3; i++)
            z += want[i] = pow(exp(l[i]), 1.0 / temps[k]);
        for (int i = 0; i < 3; i++)
            ck_assert_msg(fabs(counts[i] / (double)N_DRAWS - want[i] / z) < 0.02, "T %g token %d: %d draws, want %.3f",
                          temps[k], i, counts[i], want[i] / z);
    }
}
END_TEST

/* ---- parameters -------------------------------------------------------------------------- */

static void expect_rejected(sampler_params p, const char *field)
{
    err_info ei = {0};
    sampler *s = NULL;
    ck_assert_int_eq(sampler_params_check(&p, &ei), -EINVAL);
    ck_assert_msg(strncmp(ei.msg, field, strlen(field)) == 0, "message '%s' should name %s", ei.msg, field);
    ck_assert_int_eq(sampler_new(&s, &p, 10, &ei), -EINVAL);
    ck_assert_ptr_null(s);
}

START_TEST(params_check_rejects_each_bad_field)
{
    sampler_params ok;
    sampler_params_default(&ok);
    err_info ei = {0};
    ck_assert_int_eq(sampler_params_check(&ok, &ei), 0);

    const struct { const char *field; float *slot; float bad[3]; } floats[] = {
        {"temperature", &ok.temperature, {-0.1f, NAN, INFINITY}},
        {"top_p", &ok.top_p, {0.0f, 1.01f, NAN}},
        {"min_p", &ok.min_p, {-0.01f, 1.01f, NAN}},
        {"repeat_penalty", &ok.repeat_penalty, {0.0f, -1.0f, INFINITY}},
        {"presence_penalty", &ok.presence_penalty, {-2.01f, 2.01f, NAN}},
        {"frequency_penalty", &ok.frequency_penalty, {-2.01f, 2.01f, NAN}},
    };
    for (size_t f = 0; f < sizeof floats / sizeof floats[0]; f++)
        for (int b = 0; b < 3; b++) {
            float saved = *floats[f].slot;
            *floats[f].slot = floats[f].bad[b];
            expect_rejected(ok, floats[f].field);
            *floats[f].slot = saved;
        }
    sampler_params p = ok;
    p.repeat_last_n = -1;
    expect_rejected(p, "repeat_last_n");
    p.repeat_last_n = (1 << 20) + 1;
    expect_rejected(p, "repeat_last_n");

    /* the edges of each range are accepted */
    p = ok;
    p.temperature = 0.0f, p.top_p = 1.0f, p.min_p = 1.0f, p.presence_penalty = -2.0f, p.frequency_penalty = 2.0f;
    p.repeat_last_n = 1 << 20, p.top_k = -1;
    ck_assert_int_eq(sampler_params_check(&p, &ei), 0);

    sampler *s = NULL;
    ck_assert_int_eq(sampler_new(&s, &ok, 0, &ei), -EINVAL);
    ck_assert_ptr_null(s);
}
END_TEST

/* ---- speed at Qwen2's vocabulary --------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median time of one sampler_sample (the machine is shared: the median ignores bursts). */
static double us_per_token(const sampler_params *p, int32_t n, const float *logits, float *scratch, int32_t *tok)
{
    enum { ROUNDS = 301 };
    static double us[ROUNDS];
    sampler *s = make(p, n);
    for (int r = 0; r < ROUNDS; r++) {
        struct timespec t0, t1;
        memcpy(scratch, logits, (size_t)n * sizeof *logits);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        *tok = sampler_sample(s, scratch);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        us[r] = (double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3;
        sampler_accept(s, *tok);
    }
    sampler_free(s);
    qsort(us, ROUNDS, sizeof us[0], cmp_double);
    return us[ROUNDS / 2];
}

/* Logits shaped like a model's: a Gaussian bulk (std 2.5) and three clear favourites holding
 * 97% of the mass. Prints the cost; every setting must pick a favourite (min-p .05 and
 * top-p .9 each leave only those), greedy the first. */
START_TEST(speed_at_152k)
{
    enum { N = 151936 };
    float *l = malloc(N * sizeof *l), *scratch = malloc(N * sizeof *scratch);
    uint32_t x = 7;
    for (int32_t i = 0; i < N; i += 2) {  /* Box-Muller */
        double u1 = (lcg(&x) + 1.0) / (1u << 24), u2 = lcg(&x) / (double)(1u << 24);
        double r = sqrt(-2.0 * log(u1)) * 2.5;
        l[i] = (float)(r * cos(2 * M_PI * u2));
        if (i + 1 < N)
            l[i + 1] = (float)(r * sin(2 * M_PI * u2));
    }
    l[1000] = 18.0f, l[2000] = 17.0f, l[3000] = 16.5f;

    sampler_params def;
    sampler_params_default(&def);
    sampler_params nok = def;
    nok.top_k = 0, nok.top_p = 0.9f;
    sampler_params nok_nomin = nok;
    nok_nomin.min_p = 0.0f;
    sampler_params greedy = def;
    greedy.temperature = 0.0f;
    const struct { const char *name; sampler_params *p; } runs[] = {
        {"defaults (top_k 40, top_p .95, min_p .05, T .8)", &def},
        {"top_k 0, top_p .9 (min_p .05)", &nok},
        {"top_k 0, top_p .9, min_p 0", &nok_nomin},
        {"greedy", &greedy},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        int32_t tok;
        double us = us_per_token(runs[i].p, N, l, scratch, &tok);
        printf("sampler, %d-token vocabulary, %s: %.1f us/token (median)\n", N, runs[i].name, us);
        ck_assert_msg(tok == 1000 || tok == 2000 || tok == 3000, "%s: token %d", runs[i].name, tok);
        if (runs[i].p == &greedy)
            ck_assert_int_eq(tok, 1000);
    }
    free(scratch);
    free(l);
}
END_TEST

static Suite *sampler_suite(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("greedy");
    tcase_add_test(tc, greedy_picks_argmax);
    tcase_add_test(tc, greedy_ties_pick_lowest_id);
    tcase_add_test(tc, top_k_1_equals_greedy);
    suite_add_tcase(s, tc);

    tc = tcase_create("determinism");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, same_seed_same_tokens);
    tcase_add_test(tc, different_seeds_differ);
    suite_add_tcase(s, tc);

    tc = tcase_create("penalties");
    tcase_add_test(tc, penalties_change_exactly_the_seen_logits);
    tcase_add_test(tc, penalty_window_forgets_old_tokens);
    suite_add_tcase(s, tc);

    tc = tcase_create("truncation");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, top_p_excludes_the_tail);
    tcase_add_test(tc, top_p_over_a_flat_vocab);
    tcase_add_test(tc, min_p_excludes_unlikely_tokens);
    tcase_add_test(tc, top_k_excludes_the_rest);
    tcase_add_test(tc, draw_follows_the_softmax);
    suite_add_tcase(s, tc);

    tc = tcase_create("params");
    tcase_add_test(tc, params_check_rejects_each_bad_field);
    suite_add_tcase(s, tc);

    tc = tcase_create("speed");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, speed_at_152k);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sampler_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
