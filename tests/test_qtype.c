/* test_qtype — tensor types (engine/qtype.c): half-precision conversions against slow
 * exact references (every f16 and bf16 value; f32 -> f16/bf16 rounding at every rounding
 * boundary, in the subnormal range, at overflow, for NaN); quantize -> dequantize error
 * bounds per type relative to each block's largest magnitude; Q8_K's bsums; the
 * dequantizers' block layouts, checked against llama.cpp's own files (the shared reference
 * models hold the same weights quantized to several types); qt_row_bytes and qt_from_name.
 * Not here: dot-product kernels (test_kern.c). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/qtype.h"
#include "tests/testutil.h"

static double rng_unit(uint64_t *s) { return ((rng_next(s) >> 11) + 0.5) * 0x1p-53; }
static float rng_gauss(uint64_t *s) { return (float)(sqrt(-2 * log(rng_unit(s))) * cos(6.283185307179586 * rng_unit(s))); }

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- half precision ---------------------------------------------------------------- */

/* Exact value of the non-negative f16 bit pattern h <= 0x7c00, reading 0x7c00 as 2^16 (the
 * next step of the exponent ladder), so the overflow threshold falls out of ordinary
 * rounding. */
static double half_value(uint16_t h)
{
    int exp = h >> 10, man = h & 0x3ff;
    return exp == 0 ? ldexp(man, -24) : ldexp(1024 + man, exp - 25);
}

/* Round-to-nearest-even f32 -> f16 by searching the ladder of half values. */
static uint16_t ref_f32_to_f16(float f)
{
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (isnan(f))
        return sign | 0x7e00;
    double a = fabs((double)f);
    if (a >= 65536.0)
        return sign | 0x7c00;
    uint16_t lo = 0, hi = 0x7c00; /* half_value(lo) <= a < half_value(hi) */
    while (hi - lo > 1) {
        uint16_t mid = (uint16_t)((lo + hi) / 2);
        if (half_value(mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    double below = a - half_value(lo), above = half_value(hi) - a;
    uint16_t r = below < above ? lo : above < below ? hi : (lo & 1) ? hi : lo;
    return sign | r;
}

START_TEST(test_every_f16_converts_exactly_and_round_trips)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = qt_f16_to_f32((qt_f16)h);
        int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
        bool neg = h & 0x8000;
        if (exp == 31 && man) {
            ck_assert_msg(isnan(f) && !!signbit(f) == neg, "f16 %#x should be NaN", h);
            qt_f16 back = qt_f32_to_f16(f);
            ck_assert_msg((back & 0x7c00) == 0x7c00 && (back & 0x3ff) && (back & 0x8000) == (h & 0x8000),
                          "NaN %#x came back as %#x", h, back);
            continue;
        }
        double expect = exp == 31 ? INFINITY : half_value((uint16_t)(h & 0x7fff));
        ck_assert_msg((double)f == (neg ? -expect : expect) && !!signbit(f) == neg, "f16 %#x -> %a", h, f);
        ck_assert_msg(qt_f32_to_f16(f) == h, "f16 %#x round trip gave %#x", h, qt_f32_to_f16(f));
    }
}
END_TEST

static void check_f16(float f)
{
    qt_f16 got = qt_f32_to_f16(f), want = ref_f32_to_f16(f);
    if (isnan(f))
        ck_assert_msg((got & 0x7c00) == 0x7c00 && (got & 0x3ff) && (got & 0x8000) == (want & 0x8000),
                      "NaN %#x gave %#x", f32_bits(f), got);
    else
        ck_assert_msg(got == want, "f32 %a (%#x): got f16 %#x, want %#x", f, f32_bits(f), got, want);
}

START_TEST(test_f32_to_f16_rounds_to_nearest_even)
{
    /* every representable value, every midpoint between neighbours (the ties) and the
     * floats just either side of each midpoint, both signs, subnormals and overflow
     * included (the last midpoint is 65520, where rounding meets infinity) */
    for (uint16_t h = 0; h < 0x7c00; h++) {
        float v = (float)half_value(h), mid = (float)((half_value(h) + half_value(h + 1)) / 2);
        float probes[] = {v, mid, nextafterf(mid, 0), nextafterf(mid, INFINITY), nextafterf(v, INFINITY)};
        for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
            check_f16(probes[i]);
            check_f16(-probes[i]);
        }
    }
    float specials[] = {0x1p-25f, 0x1.000002p-25f, 0x1p-26f, 0x1p-149f, 65519.996f, 65520.0f, 1e10f, INFINITY, NAN,
                        -NAN, 3.4e38f};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        check_f16(specials[i]);
        check_f16(-specials[i]);
    }
    ck_assert_uint_eq(qt_f32_to_f16(65520.0f), 0x7c00);
    ck_assert_uint_eq(qt_f32_to_f16(0x1p-25f), 0);      /* tie between 0 and the smallest subnormal: even */
    ck_assert_uint_eq(qt_f32_to_f16(0x1.8p-24f), 2);    /* tie between subnormals 1 and 2: even */
    uint64_t seed = 1;
    for (int i = 0; i < 1000000; i++) {
        uint32_t bits = (uint32_t)rng_next(&seed);
        if (i % 2) /* half of them in the f16 range, where the work is */
            bits = (bits & 0x80000000u) | (0x33000000u + bits % (0x47800000u - 0x33000000u));
        check_f16(bits_f32(bits));
    }
}
END_TEST

/* Round-to-nearest-even f32 -> bf16 by comparing the two candidates' distances. */
static uint16_t ref_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t lo = (uint16_t)(x >> 16), hi = (uint16_t)(lo + 1);
    double d_lo = fabs((double)f - (double)qt_bf16_to_f32(lo));
    double d_hi = (lo & 0x7fff) == 0x7f7f ? /* next is infinity: it sits one step up */
                      fabs(ldexp(1.0, 128) * (signbit(f) ? -1 : 1) - (double)f)
                                         : fabs((double)qt_bf16_to_f32(hi) - (double)f);
    return d_lo < d_hi ? lo : d_hi < d_lo ? hi : (lo & 1) ? hi : lo;
}

START_TEST(test_bf16_conversions)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = qt_bf16_to_f32((qt_bf16)h);
        ck_assert_uint_eq(f32_bits(f), h << 16);
        qt_bf16 back = qt_f32_to_bf16(f);
        if (isnan(f))
            ck_assert_msg((back & 0x7f80) == 0x7f80 && (back & 0x7f) && (back & 0x8000) == (h & 0x8000),
                          "NaN %#x came back as %#x", h, back);
        else
            ck_assert_msg(back == h, "bf16 %#x round trip gave %#x", h, back);
    }
    uint64_t seed = 2;
    for (int i = 0; i < 1000000; i++) {
        uint32_t bits = (uint32_t)rng_next(&seed);
        if (i % 4 == 0)
            bits = (bits & 0xffff0000u) | 0x8000u; /* exact ties */
        float f = bits_f32(bits);
        if (isnan(f) || isinf(f))
            continue;
        ck_assert_msg(qt_f32_to_bf16(f) == ref_f32_to_bf16(f), "f32 %#x: got bf16 %#x, want %#x", bits,
                      qt_f32_to_bf16(f), ref_f32_to_bf16(f));
    }
    ck_assert_uint_eq(qt_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert(isnan(qt_bf16_to_f32(qt_f32_to_bf16(NAN))));
}
END_TEST

/* ---- quantization error --------------------------------------------------------------- */

/* Worst and RMS error relative to the block's largest magnitude, over Gaussian, uniform,
 * outlier-heavy and all-positive data. The worst-case bounds are the grids' half steps
 * (plus clamping where the grid is asymmetric, plus f16 rounding of the scales); the RMS
 * bounds sit ~15% above what the current quantizers reach, so a regression shows. */
static const struct {
    qt_type type;
    double max_err, rms_err;
} error_bounds[] = {
    {QT_F32, 0, 0},
    {QT_F16, 0x1p-11, 0.00015},
    {QT_BF16, 0x1p-8, 0.0011},
    {QT_Q4_0, 1.0 / 8 + 0x1p-10, 0.040},  /* levels -8..7: the far side of the extreme clamps at 7 */
    {QT_Q4_1, 1.0 / 15 + 0x1p-10, 0.034},  /* half of a step of (max - min) / 15 */
    {QT_Q5_0, 1.0 / 16 + 0x1p-10, 0.020},
    {QT_Q5_1, 1.0 / 31 + 0x1p-10, 0.017},
    {QT_Q8_0, 1.0 / 254 + 0x1p-11, 0.0026},
    {QT_Q8_1, 1.0 / 254 + 0x1p-11, 0.0026},
    {QT_Q4_K, 0.075, 0.028},
    {QT_Q5_K, 0.040, 0.014},
    {QT_Q6_K, 0.045, 0.008},
    {QT_Q8_K, 1.0 / 254 + 1e-6, 0.0026},
};

START_TEST(test_quantize_error_bounds)
{
    qt_type t = error_bounds[_i].type;
    enum { N = 256 * 64 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    void *q = malloc(qt_row_bytes(t, N));
    uint64_t seed = 3 + (uint64_t)_i;
    int block = qt_get(t)->block_elems < 32 ? 32 : (int)qt_get(t)->block_elems;
    double worst = 0, sq = 0;
    long count = 0;
    for (int dist = 0; dist < 4; dist++) {
        for (int i = 0; i < N; i++) {
            switch (dist) {
            case 0: x[i] = rng_gauss(&seed); break;
            case 1: x[i] = (float)(2 * rng_unit(&seed) - 1) * 100; break;
            case 2: x[i] = rng_gauss(&seed) * 0.01f + (i % 97 == 0 ? 1.0f : 0.0f); break;
            default: x[i] = (float)(rng_unit(&seed) + 0.5) * 0.02f; break;
            }
        }
        qt_quantize_row(t, x, q, N);
        qt_dequantize_row(t, q, y, N);
        for (int b = 0; b < N; b += block) {
            double amax = 0;
            for (int i = b; i < b + block; i++)
                amax = fmax(amax, fabs(x[i]));
            for (int i = b; i < b + block; i++) {
                double e = fabs((double)x[i] - y[i]) / amax;
                worst = fmax(worst, e);
                sq += e * e;
                count++;
            }
        }
    }
    double rms = sqrt(sq / count);
    ck_assert_msg(worst <= error_bounds[_i].max_err, "%s: worst error %.5f of the block max > %.5f", qt_name(t),
                  worst, error_bounds[_i].max_err);
    ck_assert_msg(rms <= error_bounds[_i].rms_err, "%s: rms error %.5f of the block max > %.5f", qt_name(t), rms,
                  error_bounds[_i].rms_err);

    /* all-zero blocks come back as exact zeros, not NaN */
    memset(x, 0, N * sizeof *x);
    qt_quantize_row(t, x, q, N);
    qt_dequantize_row(t, q, y, N);
    for (int i = 0; i < N; i++)
        ck_assert_msg(y[i] == 0.0f, "%s: zero input gave %g at %d", qt_name(t), y[i], i);
    free(x);
    free(y);
    free(q);
}
END_TEST

START_TEST(test_q8_k_bsums_and_extreme)
{
    enum { N = 256 * 8 };
    float x[N];
    qt_block_q8_k q[N / 256];
    uint64_t seed = 4;
    for (int i = 0; i < N; i++)
        x[i] = rng_gauss(&seed) * (i < 256 ? 1e-3f : 5.0f);
    x[300] = 40.0f; /* a positive extreme: maps to -127 with a negative scale */
    x[600] = -40.0f;
    qt_quantize_row(QT_Q8_K, x, q, N);
    for (int b = 0; b < N / 256; b++) {
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += q[b].qs[16 * j + l];
            ck_assert_msg(q[b].bsums[j] == sum, "block %d bsum %d: %d != %d", b, j, q[b].bsums[j], sum);
        }
        int at = 0;
        for (int i = 1; i < 256; i++)
            if (fabsf(x[256 * b + i]) > fabsf(x[256 * b + at]))
                at = i;
        ck_assert_int_eq(q[b].qs[at], -127);
        ck_assert_float_eq_tol(q[b].d * -127, x[256 * b + at], fabsf(x[256 * b + at]) * 1e-6f);
    }
}
END_TEST

/* ---- dequantizer layouts ------------------------------------------------------------- */

/* Hand-made blocks of the 32-element types, decoded as the GGUF layouts define them:
 * element j < 16 is the low nibble of qs[j], element j + 16 its high nibble, and the fifth
 * bit of element j is bit j of qh. */
START_TEST(test_small_block_layouts)
{
    float y[32];
    qt_block_q4_0 b40 = {.d = qt_f32_to_f16(0.5f)};
    qt_block_q4_1 b41 = {.d = qt_f32_to_f16(0.25f), .m = qt_f32_to_f16(-1.0f)};
    qt_block_q5_0 b50 = {.d = qt_f32_to_f16(2.0f)};
    qt_block_q5_1 b51 = {.d = qt_f32_to_f16(1.0f), .m = qt_f32_to_f16(3.0f)};
    qt_block_q8_0 b80 = {.d = qt_f32_to_f16(-0.125f)};
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        uint8_t lo = (uint8_t)j, hi = (uint8_t)(15 - j);
        b40.qs[j] = b41.qs[j] = b50.qs[j] = b51.qs[j] = (uint8_t)(lo | hi << 4);
    }
    for (int j = 0; j < 32; j += 3)
        qh |= 1u << j;
    memcpy(b50.qh, &qh, 4);
    memcpy(b51.qh, &qh, 4);
    for (int j = 0; j < 32; j++)
        b80.qs[j] = (int8_t)(j * 8 - 128);
    for (int j = 0; j < 32; j++) {
        int nib = j < 16 ? j : 15 - (j - 16), five = nib | (int)((qh >> j) & 1) << 4;
        qt_dequantize_row(QT_Q4_0, &b40, y, 32);
        ck_assert_float_eq(y[j], (nib - 8) * 0.5f);
        qt_dequantize_row(QT_Q4_1, &b41, y, 32);
        ck_assert_float_eq(y[j], nib * 0.25f - 1.0f);
        qt_dequantize_row(QT_Q5_0, &b50, y, 32);
        ck_assert_float_eq(y[j], (five - 16) * 2.0f);
        qt_dequantize_row(QT_Q5_1, &b51, y, 32);
        ck_assert_float_eq(y[j], five * 1.0f + 3.0f);
        qt_dequantize_row(QT_Q8_0, &b80, y, 32);
        ck_assert_float_eq(y[j], (j * 8 - 128) * -0.125f);
    }
}
END_TEST

/* Q5_K is Q4_K plus a fifth bit per weight: with qh all zero they decode alike, and each
 * set bit adds 16 steps of its sub-block's scale. */
START_TEST(test_q5_k_extends_q4_k)
{
    uint64_t seed = 5;
    qt_block_q4_k a;
    qt_block_q5_k b;
    uint8_t *ra = (uint8_t *)&a;
    for (size_t i = 0; i < sizeof a; i++)
        ra[i] = (uint8_t)rng_next(&seed);
    a.d = qt_f32_to_f16(0.01f);
    a.dmin = qt_f32_to_f16(0.02f);
    b.d = a.d;
    b.dmin = a.dmin;
    memcpy(b.scales, a.scales, sizeof a.scales);
    memcpy(b.qs, a.qs, sizeof a.qs);
    memset(b.qh, 0, sizeof b.qh);
    float ya[256], yb[256], yc[256];
    qt_dequantize_row(QT_Q4_K, &a, ya, 256);
    qt_dequantize_row(QT_Q5_K, &b, yb, 256);
    for (int i = 0; i < 256; i++)
        ck_assert_float_eq(ya[i], yb[i]);
    int i_bit = 77; /* weight 77: sub-block 2 (weights 64..95), position 13 */
    b.qh[13] = 1u << 2;
    qt_dequantize_row(QT_Q5_K, &b, yc, 256);
    for (int i = 0; i < 256; i++)
        if (i != i_bit)
            ck_assert_float_eq(yc[i], yb[i]);
    float step = qt_f16_to_f32(a.d) * (a.scales[2] & 63), added = yc[i_bit] - yb[i_bit];
    ck_assert_float_eq_tol(added, 16 * step, 1e-4f);
}
END_TEST

/* rms(a - b) / rms(a) of the two dequantized copies of one tensor. */
static double compare_dequantized(const gguf_tensor *ta, const gguf_tensor *tb)
{
    ck_assert_uint_eq(ta->ne[0], tb->ne[0]);
    ck_assert_uint_eq(gguf_tensor_nelems(ta), gguf_tensor_nelems(tb));
    int64_t row = (int64_t)ta->ne[0], rows = (int64_t)(gguf_tensor_nelems(ta) / ta->ne[0]);
    size_t ra = qt_row_bytes((qt_type)ta->type, row), rb = qt_row_bytes((qt_type)tb->type, row);
    float *xa = malloc((size_t)row * sizeof *xa), *xb = malloc((size_t)row * sizeof *xb);
    double diff = 0, norm = 0;
    for (int64_t r = 0; r < rows; r++) {
        qt_dequantize_row((qt_type)ta->type, (const uint8_t *)ta->data + r * ra, xa, row);
        qt_dequantize_row((qt_type)tb->type, (const uint8_t *)tb->data + r * rb, xb, row);
        for (int64_t i = 0; i < row; i++) {
            diff += (double)(xa[i] - xb[i]) * (xa[i] - xb[i]);
            norm += (double)xa[i] * xa[i];
        }
    }
    free(xa);
    free(xb);
    return sqrt(diff / norm);
}

/* The llama-spm reference models hold the same seeded weights as Q8_0, Q4_0 (+Q6_K output)
 * and Q4_K_M. Decoding each with our dequantizers must give the same tensor up to
 * quantization noise; a misread layout gives unrelated numbers (relative difference ~1.4). */
START_TEST(test_dequantizers_agree_on_llama_cpp_files)
{
    static const struct {
        const char *file, *tensor;
        qt_type type;
        double max_rel; /* noise of the coarser of the two types */
    } cases[] = {
        {"llama-spm.q4_0", "token_embd.weight", QT_Q4_0, 0.11}, /* measured 0.086 */
        {"llama-spm.q4_0", "output.weight", QT_Q6_K, 0.03},     /* 0.019 */
        {"llama-spm.q4_k_m", "token_embd.weight", QT_Q4_K, 0.09}, /* 0.072 */
        {"llama-spm.q4_k_m", "blk.1.attn_v.weight", QT_Q6_K, 0.03},
        {"llama-spm.q4_k_m", "blk.0.ffn_down.weight", QT_Q4_K, 0.09},
    };
    char path[512];
    snprintf(path, sizeof path, "%s/models/llama-spm.q8_0.gguf", shared_dir());
    gguf *base, *other;
    err_info ei = {0};
    ck_assert_msg(gguf_open(&base, path, &ei) == 0, "%s (set SHARED)", ei.msg);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "%s/models/%s.gguf", shared_dir(), cases[i].file);
        ck_assert_msg(gguf_open(&other, path, &ei) == 0, "%s", ei.msg);
        const gguf_tensor *ta = gguf_find_tensor(base, cases[i].tensor), *tb = gguf_find_tensor(other, cases[i].tensor);
        ck_assert(ta && tb);
        ck_assert_uint_eq(ta->type, QT_Q8_0);
        ck_assert_uint_eq(tb->type, cases[i].type);
        double rel = compare_dequantized(ta, tb);
        ck_assert_msg(rel < cases[i].max_rel, "%s %s (%s) differs from Q8_0 by %.3f of its rms", cases[i].file,
                      cases[i].tensor, qt_name(tb->type), rel);
        gguf_close(other);
    }
    gguf_close(base);
}
END_TEST

/* ---- names and sizes ----------------------------------------------------------------- */

START_TEST(test_row_bytes_and_names)
{
    static const struct {
        qt_type type;
        int64_t n;
        size_t bytes;
    } rows[] = {
        {QT_F32, 10, 40},      {QT_F16, 3, 6},          {QT_BF16, 3, 6},       {QT_Q4_0, 64, 36},
        {QT_Q4_1, 32, 20},     {QT_Q5_0, 32, 22},       {QT_Q5_1, 32, 24},     {QT_Q8_0, 4096, 4352},
        {QT_Q4_K, 256, 144},   {QT_Q5_K, 512, 352},     {QT_Q6_K, 2048, 1680}, {QT_Q8_K, 256, 292},
        {QT_IQ4_NL, 64, 36},   {QT_Q4_0, 33, 0} /* not whole blocks */,      {QT_Q4_K, 896, 0},
        {QT_F32, -1, 0},       {(qt_type)4, 32, 0} /* retired number */,     {QT_Q8_0, 0, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        ck_assert_msg(qt_row_bytes(rows[i].type, rows[i].n) == rows[i].bytes, "%s x %lld: %zu bytes, want %zu",
                      qt_name(rows[i].type), (long long)rows[i].n, qt_row_bytes(rows[i].type, rows[i].n),
                      rows[i].bytes);

    ck_assert_int_eq(qt_from_name("Q4_K"), QT_Q4_K);
    ck_assert_int_eq(qt_from_name("q4_k"), QT_Q4_K);
    ck_assert_int_eq(qt_from_name("bf16"), QT_BF16);
    ck_assert_int_eq(qt_from_name("F32"), QT_F32);
    ck_assert_int_eq(qt_from_name("TQ2_0"), QT_TQ2_0);
    ck_assert_int_eq(qt_from_name("Q4_K_M"), -1); /* a file type, not a tensor type */
    ck_assert_int_eq(qt_from_name(""), -1);
    ck_assert_int_eq(qt_from_name("?"), -1);
    for (int t = 0; t < QT_COUNT; t++) {
        const qt_traits *tr = qt_get((uint32_t)t);
        if (tr)
            ck_assert_int_eq(qt_from_name(tr->name), t);
        else
            ck_assert_str_eq(qt_name((uint32_t)t), "?");
    }
    ck_assert_ptr_null(qt_get(QT_COUNT));
    ck_assert_ptr_null(qt_get(UINT32_MAX));
    ck_assert_str_eq(qt_name(QT_Q6_K), "Q6_K");
}
END_TEST

static Suite *qtype_suite(void)
{
    Suite *s = suite_create("qtype");
    TCase *tc = tcase_create("half");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_every_f16_converts_exactly_and_round_trips);
    tcase_add_test(tc, test_f32_to_f16_rounds_to_nearest_even);
    tcase_add_test(tc, test_bf16_conversions);
    suite_add_tcase(s, tc);
    tc = tcase_create("quant");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_quantize_error_bounds, 0, sizeof error_bounds / sizeof error_bounds[0]);
    tcase_add_test(tc, test_q8_k_bsums_and_extreme);
    tcase_add_test(tc, test_small_block_layouts);
    tcase_add_test(tc, test_q5_k_extends_q4_k);
    tcase_add_test(tc, test_dequantizers_agree_on_llama_cpp_files);
    tcase_add_test(tc, test_row_bytes_and_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(qtype_suite()); }
