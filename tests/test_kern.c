/* test_kern — every kernel variant this CPU runs (kern_available) against the scalar
 * reference (kern_ref.c): dot products for every supported weight type over random,
 * extreme and all-zero rows of many lengths; gemm tiles of them with tails and odd
 * strides against ref's dot per (row, column); the activation quantizers against
 * qt_quantize_row; the f16 helpers; and kern_select's reading of EDGELLM_KERNEL.
 *
 * With EDGELLM_KERN_BENCH=1 first test cases print single-thread throughput per type and
 * variant: gemm GOPS for a prefill batch and for decode, and GB/s of weights of a 5632x2048
 * matrix times one vector; the checks follow as usual.
 * Not here: whole-model accuracy (test_model.c compares logits with llama.cpp's). */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kern.h"

enum { MAX_VARIANTS = 8 };

static const qt_type dot_types[] = {QT_F32,  QT_F16,  QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q5_0,
                                    QT_Q5_1, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
enum { N_DOT_TYPES = sizeof dot_types / sizeof dot_types[0] };
static const qt_type act_types[] = {QT_Q8_0, QT_Q8_1, QT_Q8_K};

/* ---- random data -------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (rng_next(s) >> 11) * 0x1p-53; }

static float rng_gauss(uint64_t *s)
{
    double u = rng_unit(s) + 0x1p-60, v = rng_unit(s);
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

/* A finite f16 scale with random sign: mostly normal in [2^-12, 2^4), sometimes subnormal.
 * Never inf or NaN: every variant's result would be inf or NaN, with nothing to compare. */
static qt_f16 rng_scale(uint64_t *s)
{
    uint64_t r = rng_next(s);
    uint16_t sign = (r & 1) ? 0x8000 : 0, man = (uint16_t)((r >> 1) & 0x3ff);
    if ((r >> 11) % 8 == 0)
        return (qt_f16)(sign | (man ? man : 1));   /* subnormal */
    uint16_t exp = (uint16_t)(3 + (r >> 14) % 16); /* biased 3..18: 2^-12 .. 2^3 */
    return (qt_f16)(sign | exp << 10 | man);
}

/* Where each quantized type keeps its f16 scale fields (d, and m / dmin where it has one). */
typedef struct scale_fields {
    size_t d, min;
    bool has_min;
} scale_fields;

static scale_fields fields_of(qt_type t)
{
    switch (t) {
    case QT_Q4_0: return (scale_fields){offsetof(qt_block_q4_0, d), 0, false};
    case QT_Q4_1: return (scale_fields){offsetof(qt_block_q4_1, d), offsetof(qt_block_q4_1, m), true};
    case QT_Q5_0: return (scale_fields){offsetof(qt_block_q5_0, d), 0, false};
    case QT_Q5_1: return (scale_fields){offsetof(qt_block_q5_1, d), offsetof(qt_block_q5_1, m), true};
    case QT_Q8_0: return (scale_fields){offsetof(qt_block_q8_0, d), 0, false};
    case QT_Q4_K: return (scale_fields){offsetof(qt_block_q4_k, d), offsetof(qt_block_q4_k, dmin), true};
    case QT_Q5_K: return (scale_fields){offsetof(qt_block_q5_k, d), offsetof(qt_block_q5_k, dmin), true};
    case QT_Q6_K: return (scale_fields){offsetof(qt_block_q6_k, d), 0, false};
    default: ck_abort_msg("no scale fields for %s", qt_name(t));
    }
    return (scale_fields){0, 0, false};
}

static bool is_float_type(qt_type t) { return t == QT_F32 || t == QT_F16 || t == QT_BF16; }

typedef enum fill_mode {
    FILL_QUANTIZED, /* Gaussian floats through qt_quantize_row: what model files hold */
    FILL_BYTES,     /* every level byte random (all bit patterns, -128 in Q8_0), random scales */
    FILL_EXTREME,   /* level bytes 0x00/0xFF/0x80/0x7F only, activations ±max: saturation paths */
    FILL_ZERO,
    FILL_MODES
} fill_mode;
static const char *const mode_names[] = {"quantized", "bytes", "extreme", "zero"};

static void set_f16(uint8_t *p, qt_f16 v) { memcpy(p, &v, sizeof v); }
static qt_f16 get_f16(const uint8_t *p)
{
    qt_f16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* n weights of type t in a fresh malloc of exactly qt_row_bytes(t, n) bytes (so ASan sees any
 * read past the row). Floats of the float types stay finite. */
static void *make_weights(qt_type t, int n, fill_mode mode, uint64_t *s)
{
    size_t bytes = qt_row_bytes(t, n);
    uint8_t *w = malloc(bytes);
    ck_assert_ptr_nonnull(w);
    float *f = malloc((size_t)n * sizeof *f);
    ck_assert_ptr_nonnull(f);
    static const uint8_t extremes[4] = {0x00, 0xFF, 0x80, 0x7F};
    switch (mode) {
    case FILL_ZERO: memset(w, 0, bytes); break;
    case FILL_QUANTIZED:
        for (int j = 0; j < n; j++)
            f[j] = rng_gauss(s);
        qt_quantize_row(t, f, w, n);
        break;
    case FILL_BYTES:
    case FILL_EXTREME:
        if (is_float_type(t)) {
            for (int j = 0; j < n; j++)
                f[j] = mode == FILL_EXTREME ? ((rng_next(s) & 1) ? -60000.0f : 60000.0f)
                                            : (float)ldexp(rng_gauss(s), (int)(rng_next(s) % 33) - 20);
            qt_quantize_row(t, f, w, n);
            break;
        }
        for (size_t j = 0; j < bytes; j++)
            w[j] = mode == FILL_EXTREME ? extremes[rng_next(s) % 4] : (uint8_t)rng_next(s);
        const scale_fields sf = fields_of(t);
        size_t block = qt_get(t)->block_bytes;
        for (size_t b = 0; b < bytes; b += block) {
            set_f16(w + b + sf.d, rng_scale(s));
            if (sf.has_min)
                set_f16(w + b + sf.min, rng_scale(s));
        }
        break;
    default: ck_abort();
    }
    free(f);
    return w;
}

static float *make_floats(int n, fill_mode mode, uint64_t *s)
{
    float *x = malloc((size_t)n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (int j = 0; j < n; j++)
        x[j] = mode == FILL_ZERO ? 0.0f : mode == FILL_EXTREME ? ((rng_next(s) & 1) ? -3.0f : 3.0f) : rng_gauss(s);
    return x;
}

/* ---- the dot-product bound ----------------------------------------------
 * Integer parts are exact in every variant, so two results differ only by float rounding:
 * of each block's term (the int-to-float conversion, the products of the scales: at most 5
 * roundings) and of summing the terms (ref left to right; SIMD in lanes, at most two
 * accumulations per block per lane, then a tree of the lanes). With u = 2^-24 and nt terms
 * (blocks, or elements for the float types), the standard bound for recursive summation
 * |fl(Σt) - Σt| <= (k-1)·u·Σ|t| gives each side at most (2·nt + 16)·u·Σ|t|, so
 *     |simd - ref| <= (4·nt + 32)·u·S
 * where S majorizes Σ|t|: the sum over elements of |w|·|x|, with the affine types' scale
 * and min taken as magnitudes (the kernels sum scale·level·y and min·y separately, so their
 * terms can exceed |w·x|). 1% slack covers the f16 rounding of Q8_1's s and of the S
 * computation itself. For 4096-element quantized rows nt is 128 or 16, so the bound is
 * about 3e-5·S or 6e-6·S; short rows (1 to 5 blocks) make tail mistakes stand far out. */
static double majorant(qt_type t, const void *w, const void *act, int n)
{
    size_t bytes = qt_row_bytes(t, n);
    uint8_t *wm = malloc(bytes);
    float *wf = malloc((size_t)n * sizeof *wf), *xf = malloc((size_t)n * sizeof *xf);
    ck_assert(wm && wf && xf);
    memcpy(wm, w, bytes);
    if (!is_float_type(t) && fields_of(t).has_min) {
        /* Q4_1/Q5_1 decode d·q + m, Q4_K/Q5_K d·sc·q - dmin·mn: make every part add up */
        bool k_type = t == QT_Q4_K || t == QT_Q5_K;
        const scale_fields sf = fields_of(t);
        for (size_t b = 0; b < bytes; b += qt_get(t)->block_bytes) {
            set_f16(wm + b + sf.d, get_f16(wm + b + sf.d) & 0x7fff);
            qt_f16 m = get_f16(wm + b + sf.min);
            set_f16(wm + b + sf.min, k_type ? (m | 0x8000) : (m & 0x7fff));
        }
    }
    qt_dequantize_row(t, wm, wf, n);
    qt_type at = qt_get(t)->act_type;
    if (at == QT_F32)
        memcpy(xf, act, (size_t)n * sizeof *xf);
    else
        qt_dequantize_row(at, act, xf, n);
    double sum = 0;
    for (int j = 0; j < n; j++)
        sum += fabs((double)wf[j]) * fabs((double)xf[j]);
    free(wm);
    free(wf);
    free(xf);
    return sum;
}

static double dot_tolerance(qt_type t, const void *w, const void *act, int n)
{
    const int nt = n / (int)qt_get(t)->block_elems;
    return (4.0 * nt + 32) * 0x1p-24 * majorant(t, w, act, n) * 1.01 + 1e-30;
}

static const kern_ops *variant(int i, const char **name)
{
    const char *names[MAX_VARIANTS];
    int nv = kern_available(names, MAX_VARIANTS);
    ck_assert_int_lt(i, nv);
    *name = names[i];
    const kern_ops *k = kern_by_name(names[i]);
    ck_assert_ptr_nonnull(k);
    return k;
}

static int n_variants(void)
{
    const char *names[MAX_VARIANTS];
    return kern_available(names, MAX_VARIANTS);
}

/* One row of type t and length n (elements) in the given mode: every variant vs ref. */
static void check_dot(qt_type t, int n, fill_mode mode, uint64_t seed)
{
    uint64_t s = seed;
    const kern_ops *ref = kern_ref();
    void *w = make_weights(t, n, mode, &s);
    float *x = make_floats(n, mode, &s);
    void *act = malloc(kern_act_bytes(t, n));
    ck_assert_ptr_nonnull(act);
    kern_prepare_act(ref, t, x, act, n);

    const float want = ref->dot[t](n, w, act);
    const double tol = dot_tolerance(t, w, act, n);
    for (int v = 0; v < n_variants(); v++) {
        const char *name;
        const kern_ops *k = variant(v, &name);
        ck_assert_ptr_nonnull(k->dot[t]);
        const float got = k->dot[t](n, w, act);
        ck_assert_msg(isfinite(got) && fabs((double)got - want) <= tol,
                      "%s dot %s n=%d mode=%s seed=%llu: got %.9g, ref %.9g, |diff| %.3g > tol %.3g", name, qt_name(t),
                      n, mode_names[mode], (unsigned long long)seed, got, want, fabs((double)got - want), tol);
    }
    free(act);
    free(x);
    free(w);
}

/* Row lengths in blocks: one block, odd counts, and past 4096 elements. */
static const int blocks_q32[] = {1, 2, 3, 5, 7, 31, 128, 129};
static const int blocks_k[] = {1, 2, 3, 5, 16, 17};
/* Float rows: every tail length 0..7 around the 32-wide unroll, short and long. */
static const int lengths_float[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 4096, 4099};

START_TEST(test_dot_matches_ref)
{
    const qt_type t = dot_types[_i];
    for (int mode = 0; mode < FILL_MODES; mode++)
        for (uint64_t seed = 1; seed <= 3; seed++) {
            if (is_float_type(t))
                for (size_t j = 0; j < sizeof lengths_float / sizeof *lengths_float; j++)
                    check_dot(t, lengths_float[j], (fill_mode)mode, seed * 1000 + j);
            else if (qt_get(t)->block_elems == QK_K)
                for (size_t j = 0; j < sizeof blocks_k / sizeof *blocks_k; j++)
                    check_dot(t, blocks_k[j] * QK_K, (fill_mode)mode, seed * 1000 + j);
            else
                for (size_t j = 0; j < sizeof blocks_q32 / sizeof *blocks_q32; j++)
                    check_dot(t, blocks_q32[j] * 32, (fill_mode)mode, seed * 1000 + j);
        }
}
END_TEST

/* The bound must not hide real mistakes: in short random rows, one weight off by one level
 * (Q4_0: a nibble; Q8_0: a byte) moves ref's own result by more than the tolerance. */
START_TEST(test_dot_bound_catches_one_level)
{
    const kern_ops *ref = kern_ref();
    static const qt_type types[] = {QT_Q4_0, QT_Q8_0};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (uint64_t seed = 1; seed <= 20; seed++) {
            const qt_type t = types[ti];
            const int n = 2 * 32;
            uint64_t s = seed;
            uint8_t *w = make_weights(t, n, FILL_QUANTIZED, &s);
            float *x = make_floats(n, FILL_QUANTIZED, &s);
            qt_block_q8_0 act[2];
            kern_prepare_act(ref, t, x, act, n);
            const double tol = dot_tolerance(t, w, act, n);
            const float before = ref->dot[t](n, w, act);
            /* the element of largest activation in block 1, its level moved towards the middle */
            int j = 0;
            for (int l = 1; l < 32; l++)
                if (abs(act[1].qs[l]) > abs(act[1].qs[j]))
                    j = l;
            uint8_t *q = w + qt_get(t)->block_bytes +
                         (t == QT_Q4_0 ? offsetof(qt_block_q4_0, qs) + j % 16 : offsetof(qt_block_q8_0, qs) + j);
            if (t == QT_Q8_0)
                *q = (uint8_t)((int8_t)*q + ((int8_t)*q > 0 ? -1 : 1));
            else if (j < 16)
                *q = (uint8_t)((*q & 0xF0) | (((*q & 0xF) + ((*q & 0xF) > 8 ? -1 : 1)) & 0xF));
            else
                *q = (uint8_t)((*q & 0x0F) | ((((*q >> 4) + ((*q >> 4) > 8 ? -1 : 1)) & 0xF) << 4));
            const float after = ref->dot[t](n, w, act);
            ck_assert_msg(fabs((double)after - before) > 10 * tol,
                          "%s seed %llu: a one-level change (%g) is within 10x the tolerance (%g)", qt_name(t),
                          (unsigned long long)seed, fabs((double)after - before), tol);
            free(w);
            free(x);
        }
}
END_TEST

/* ---- gemm (tiles of dot products) ----------------------------------------- */

/* rows x cols tiles around every variant's strip (4, 8, 16 rows: short last strips), its
 * column groups (1, 2, 4, 8) and kern_tile's column chunk (64), with reductions of n_blocks
 * weight blocks around its reduction chunk (32 blocks, 4 K blocks) and its spans of
 * activation facts (32 blocks at 64 columns; 2048 at one column, decode's matvec). */
typedef struct gemm_shape {
    int rows, cols, n_blocks;
} gemm_shape;
static const gemm_shape gemm_shapes[] = {
    {1, 1, 1},  {3, 2, 5},    {16, 1, 33}, {17, 3, 2},   {5, 9, 70}, {40, 7, 3}, {33, 69, 2},
    {8, 64, 1}, {20, 13, 35}, {9, 64, 34}, {6, 15, 9},   {9, 1, 2100}, {7, 3, 0},
};

/* A fresh buffer of count items of `bytes` each, `stride` apart (the padding between filled
 * with a pattern a kernel must not take for data), ending exactly at the last item (so
 * ASan sees any read past it). */
static uint8_t *strided_copy(void *const *items, int count, size_t bytes, size_t stride)
{
    uint8_t *buf = malloc((size_t)(count - 1) * stride + bytes);
    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i < count; i++) {
        memcpy(buf + (size_t)i * stride, items[i], bytes);
        if (i + 1 < count)
            memset(buf + (size_t)i * stride + bytes, 0xA5, stride - bytes);
    }
    return buf;
}

static const uint32_t out_sentinel = 0x7fc0dead; /* a NaN no kernel produces */

/* Alignment of a row of type t (weights or activations): the widest field of its blocks. */
static size_t row_align(qt_type t) { return t == QT_F32 || t == QT_Q8_K ? 4 : 2; }

/* One tile of type t in the given mode: every variant's kern_gemm against ref's dot of each
 * (row, column) pair, padded strides everywhere, and nothing written to out's padding.
 * strips: the matrix laid out in strips (kern.h; rows packed, a multiple of 16) through
 * kern_gemm_strips. */
static void check_gemm(qt_type t, gemm_shape sh, fill_mode mode, uint64_t seed, bool strips)
{
    uint64_t s = seed;
    const kern_ops *ref = kern_ref();
    const int n = sh.n_blocks * (int)qt_get(t)->block_elems, rows = sh.rows, cols = sh.cols;
    const size_t row_bytes = qt_row_bytes(t, n), act_bytes = kern_act_bytes(t, n);
    /* padded strides that are no multiple of a block, aligned as real rows are */
    const size_t w_stride = strips ? row_bytes : row_bytes + row_align(t) * (1 + seed % 7);
    const size_t x_stride = act_bytes + row_align(qt_get(t)->act_type) * (1 + seed % 5), out_stride = rows + 3;
    void **wrows = malloc((size_t)rows * sizeof *wrows), **xcols = malloc((size_t)cols * sizeof *xcols);
    ck_assert(wrows && xcols);
    for (int r = 0; r < rows; r++)
        wrows[r] = make_weights(t, n, mode, &s);
    for (int c = 0; c < cols; c++) {
        float *f = make_floats(n, mode, &s);
        xcols[c] = malloc(act_bytes);
        ck_assert_ptr_nonnull(xcols[c]);
        kern_prepare_act(ref, t, f, xcols[c], n);
        free(f);
    }
    uint8_t *w = strided_copy(wrows, rows, row_bytes, w_stride), *x = strided_copy(xcols, cols, act_bytes, x_stride);
    if (strips) {
        const size_t strip_bytes = KERN_STRIP_ROWS * row_bytes;
        uint8_t *plain = malloc(strip_bytes);
        ck_assert_ptr_nonnull(plain);
        for (int r0 = 0; r0 < rows; r0 += KERN_STRIP_ROWS) {
            memcpy(plain, w + (size_t)r0 * row_bytes, strip_bytes);
            kern_strips_from_rows(t, n, plain, w + (size_t)r0 * row_bytes);
        }
        free(plain);
    }
    float *want = malloc((size_t)rows * cols * sizeof *want), *out = malloc((size_t)cols * out_stride * sizeof *out);
    double *tol = malloc((size_t)rows * cols * sizeof *tol);
    ck_assert(want && out && tol);
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) {
            want[c * rows + r] = ref->dot[t](n, wrows[r], xcols[c]);
            tol[c * rows + r] = dot_tolerance(t, wrows[r], xcols[c], n);
        }
    for (int v = 0; v < n_variants(); v++) {
        const char *name;
        const kern_ops *k = variant(v, &name);
        for (size_t i = 0; i < (size_t)cols * out_stride; i++)
            memcpy(&out[i], &out_sentinel, sizeof out_sentinel);
        if (strips)
            kern_gemm_strips(k, t, n, rows, cols, w, x, x_stride, out, out_stride);
        else
            kern_gemm(k, t, n, rows, cols, w, w_stride, x, x_stride, out, out_stride);
        for (int c = 0; c < cols; c++) {
            for (int r = 0; r < rows; r++) {
                const float got = out[c * out_stride + r], exp = want[c * rows + r];
                const double e = tol[c * rows + r];
                ck_assert_msg(isfinite(got) && fabs((double)got - exp) <= e,
                              "%s gemm%s %s n=%d %dx%d mode=%s seed=%llu [row %d, col %d]: got %.9g, ref %.9g, "
                              "|diff| %.3g > tol %.3g",
                              name, strips ? " (strips)" : "", qt_name(t), n, rows, cols, mode_names[mode], (unsigned long long)seed, r, c, got,
                              exp, fabs((double)got - exp), e);
            }
            for (size_t r = (size_t)rows; r < out_stride; r++)
                ck_assert_msg(memcmp(&out[c * out_stride + r], &out_sentinel, sizeof out_sentinel) == 0,
                              "%s gemm %s %dx%d wrote out[col %d, row %zu] past the tile", name, qt_name(t), rows,
                              cols, c, r);
        }
    }
    for (int r = 0; r < rows; r++)
        free(wrows[r]);
    for (int c = 0; c < cols; c++)
        free(xcols[c]);
    free(wrows);
    free(xcols);
    free(w);
    free(x);
    free(want);
    free(out);
    free(tol);
}

START_TEST(test_gemm_matches_ref)
{
    const qt_type t = dot_types[_i];
    for (int mode = 0; mode < FILL_MODES; mode++)
        for (size_t j = 0; j < sizeof gemm_shapes / sizeof *gemm_shapes; j++) {
            gemm_shape sh = gemm_shapes[j];
            if (is_float_type(t)) /* in elements: rows ending in part of 16 bytes or shorter */
                sh.n_blocks = sh.n_blocks * 9 + 3;
            else if (sh.n_blocks == 0) /* rows shorter than a block are float rows only */
                continue;
            check_gemm(t, sh, (fill_mode)mode, 100 * (uint64_t)mode + j + 1, false);
        }
}
END_TEST

/* Matrices in strips: one column (a variant's strips kernel, where it has one: spans of
 * activation facts end at 2048 blocks) and several (turned back into rows, in chunks of 32
 * blocks and 64 columns). */
static const qt_type strips_types[] = {QT_Q4_0, QT_Q8_0, QT_Q4_K};
static const gemm_shape strips_shapes[] = {{16, 1, 1}, {16, 1, 33}, {48, 1, 70}, {16, 1, 2051},
                                           {32, 3, 5}, {16, 70, 33}, {16, 2, 2051}};

START_TEST(test_gemm_strips_matches_ref)
{
    const qt_type t = strips_types[_i];
    ck_assert(kern_strips_type(t));
    for (int mode = 0; mode < FILL_MODES; mode++)
        for (size_t j = 0; j < sizeof strips_shapes / sizeof *strips_shapes; j++)
            check_gemm(t, strips_shapes[j], (fill_mode)mode, 100 * (uint64_t)mode + j + 1, true);
}
END_TEST

/* ---- activation quantizers ---------------------------------------------- */

typedef enum act_pattern {
    ACT_GAUSS,
    ACT_ZERO,
    ACT_TIES,     /* levels landing exactly between two integers */
    ACT_TWIN_MAX, /* the largest magnitude twice, negative first: Q8_K must take the first */
    ACT_WIDE,     /* block magnitudes from 2^-100 to 2^60 */
    ACT_PATTERNS
} act_pattern;

static void make_act_input(float *x, int n, int block, act_pattern p, uint64_t *s)
{
    for (int j = 0; j < n; j++)
        x[j] = rng_gauss(s);
    for (int b = 0; b < n; b += block) {
        float *xb = x + b;
        switch (p) {
        case ACT_ZERO: memset(xb, 0, (size_t)block * sizeof *xb); break;
        case ACT_TIES:
            /* max 127 makes the scale 1 (Q8_0/Q8_1) or -1 (Q8_K), so k + 0.5 is an exact tie */
            for (int j = 0; j < block; j++)
                xb[j] = (float)((int)(rng_next(s) % 200) - 100) + 0.5f;
            xb[rng_next(s) % block] = 127.0f;
            break;
        case ACT_TWIN_MAX: {
            int first = (int)(rng_next(s) % (block - 1)), second = first + 1 + (int)(rng_next(s) % (block - 1 - first));
            xb[first] = -9.0f;
            xb[second] = 9.0f;
            break;
        }
        case ACT_WIDE: {
            float scale = (float)ldexp(1.0, (int)(rng_next(s) % 161) - 100);
            for (int j = 0; j < block; j++)
                xb[j] *= scale;
            break;
        }
        default: break;
        }
    }
}

/* Levels may differ by one where an exact tie rounds differently; scales must match. */
static void compare_act_blocks(qt_type at, const uint8_t *want, const uint8_t *got, int n, const char *what)
{
    const size_t block = qt_get(at)->block_bytes;
    for (int b = 0; b < n / (int)qt_get(at)->block_elems; b++, want += block, got += block) {
        const int8_t *qw, *qg;
        int nq;
        if (at == QT_Q8_K) {
            const qt_block_q8_k *w = (const void *)want, *g = (const void *)got;
            ck_assert_msg(memcmp(&w->d, &g->d, sizeof w->d) == 0, "%s block %d: d %g, ref %g", what, b, g->d, w->d);
            for (int k = 0; k < QK_K / 16; k++) {
                int sum = 0;
                for (int l = 0; l < 16; l++)
                    sum += g->qs[16 * k + l];
                ck_assert_msg(g->bsums[k] == sum, "%s block %d: bsums[%d] = %d, its levels sum to %d", what, b, k,
                              g->bsums[k], sum);
            }
            qw = w->qs, qg = g->qs, nq = QK_K;
        } else if (at == QT_Q8_1) {
            const qt_block_q8_1 *w = (const void *)want, *g = (const void *)got;
            ck_assert_msg(w->d == g->d, "%s block %d: d %#x, ref %#x", what, b, g->d, w->d);
            int sw = 0, sg = 0;
            for (int l = 0; l < QK8_1; l++)
                sw += w->qs[l], sg += g->qs[l];
            /* s = d·Σqs: equal when the sums are, else off by d per level of difference */
            double tol =
                sw == sg ? 0 : fabs(qt_f16_to_f32(w->d)) * abs(sw - sg) * 1.01 + fabs(qt_f16_to_f32(w->s)) * 0x1p-10;
            ck_assert_msg(g->s == w->s || fabs((double)qt_f16_to_f32(g->s) - qt_f16_to_f32(w->s)) <= tol,
                          "%s block %d: s %g, ref %g", what, b, qt_f16_to_f32(g->s), qt_f16_to_f32(w->s));
            qw = w->qs, qg = g->qs, nq = QK8_1;
        } else {
            const qt_block_q8_0 *w = (const void *)want, *g = (const void *)got;
            ck_assert_msg(w->d == g->d, "%s block %d: d %#x, ref %#x", what, b, g->d, w->d);
            qw = w->qs, qg = g->qs, nq = QK8_0;
        }
        for (int l = 0; l < nq; l++) {
            ck_assert_msg(abs(qw[l] - qg[l]) <= 1, "%s block %d level %d: %d, ref %d", what, b, l, qg[l], qw[l]);
            /* the x86 dot kernels negate activation levels: -128 would overflow */
            ck_assert_msg(qg[l] != -128, "%s block %d level %d is -128", what, b, l);
        }
    }
}

START_TEST(test_quantize_matches_ref)
{
    const qt_type at = act_types[_i];
    const int block = (int)qt_get(at)->block_elems;
    static const int n_blocks[] = {1, 2, 3, 16, 17};
    for (int v = 0; v < n_variants(); v++) {
        const char *name;
        const kern_ops *k = variant(v, &name);
        ck_assert_ptr_nonnull(k->quantize[at]);
        for (int p = 0; p < ACT_PATTERNS; p++)
            for (size_t j = 0; j < sizeof n_blocks / sizeof *n_blocks; j++) {
                uint64_t s = 77 + 10 * j + (uint64_t)p;
                int n = n_blocks[j] * block;
                size_t bytes = qt_row_bytes(at, n);
                float *x = malloc((size_t)n * sizeof *x);
                uint8_t *want = malloc(bytes), *got = malloc(bytes);
                ck_assert(x && want && got);
                make_act_input(x, n, block, (act_pattern)p, &s);
                qt_quantize_row(at, x, want, n);
                k->quantize[at](x, got, n);
                char what[96];
                snprintf(what, sizeof what, "%s quantize %s pattern %d n=%d", name, qt_name(at), p, n);
                compare_act_blocks(at, want, got, n, what);
                free(x);
                free(want);
                free(got);
            }
    }
}
END_TEST

/* ---- softmax and f16 conversion ----------------------------------------- */

/* Softmax against ref's expf: each weight within a few ulp of exp plus the two sums' rounding
 * (ref adds left to right, a variant by lanes), weights that ref finds below the normal
 * floats may be 0, nothing written past n; scores spread narrow and wide, all equal, and
 * one far above the rest (the others' weights then below the normal floats). */
START_TEST(test_softmax_matches_ref)
{
    const kern_ops *ref = kern_ref();
    static const int lengths[] = {1, 5, 8, 13, 16, 31, 64, 67, 1000, 2049};
    static const float spreads[] = {1.0f, 30.0f, 0.0f, -1.0f}; /* 0: all equal; -1: one outlier */
    for (int v = 0; v < n_variants(); v++) {
        const char *name;
        const kern_ops *k = variant(v, &name);
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++)
            for (size_t si = 0; si < sizeof spreads / sizeof *spreads; si++) {
                uint64_t s = 17 + li * 5 + si;
                const int n = lengths[li], pad = 8;
                const float scale = 0.125f;
                float *xr = malloc((size_t)(n + pad) * sizeof *xr), *xk = malloc((size_t)(n + pad) * sizeof *xk);
                ck_assert(xr && xk);
                for (int j = 0; j < n + pad; j++)
                    xr[j] = spreads[si] > 0 ? spreads[si] * rng_gauss(&s) : 3.0f;
                if (spreads[si] < 0)
                    xr[n / 2] = 800.0f; /* every other weight e^-99.6: below the normal floats */
                memcpy(xk, xr, (size_t)(n + pad) * sizeof *xr);
                ref->softmax(n, scale, xr);
                k->softmax(n, scale, xk);
                double sum = 0;
                for (int j = 0; j < n; j++) {
                    double tol = 1e-5 * xr[j] + 0x1p-126;
                    ck_assert_msg(fabs((double)xk[j] - xr[j]) <= tol, "%s softmax n=%d spread %g [%d]: %.9g, ref %.9g",
                                  name, n, spreads[si], j, xk[j], xr[j]);
                    sum += xk[j];
                }
                ck_assert_msg(fabs(sum - 1) < 1e-5, "%s softmax n=%d spread %g sums to %.9g", name, n, spreads[si], sum);
                for (int j = n; j < n + pad; j++)
                    ck_assert_msg(xk[j] == xr[j], "%s softmax n=%d wrote x[%d] past the end", name, n, j);
                free(xr);
                free(xk);
            }
    }
}
END_TEST

static bool f16_is_nan(qt_f16 h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }

START_TEST(test_f32_to_f16_exact)
{
    const kern_ops *ref = kern_ref();
    enum { N = 4096 + 5, PAD = 8 };
    static float x[N];
    static qt_f16 yr[N + PAD], yk[N + PAD];
    uint64_t s = 99;
    for (int j = 0; j < N; j++) {
        switch (j % 6) {
        case 0: x[j] = rng_gauss(&s); break;
        case 1: { /* every exponent from f16-subnormal range to overflow */
            uint32_t bits = (uint32_t)(rng_next(&s) & 0x807fffffu) | (uint32_t)(96 + rng_next(&s) % 50) << 23;
            memcpy(&x[j], &bits, 4);
            break;
        }
        case 2: { /* exact ties: halfway between two adjacent halves */
            qt_f16 h = (qt_f16)(rng_next(&s) % 0x7bff);
            x[j] = (qt_f16_to_f32(h) + qt_f16_to_f32((qt_f16)(h + 1))) / 2;
            break;
        }
        case 3: x[j] = (float)(65504.0 + (double)(rng_next(&s) % 64)); break; /* around the overflow edge */
        case 4: {
            static const float special[] = {0.0f,       -0.0f,    INFINITY,        -INFINITY,
                                            NAN,        65520.0f, -65519.996f,     0x1p-25f,
                                            0x1.8p-25f, 0x1p-24f, 0x1.000002p-25f, 6.1035156e-5f};
            x[j] = special[(j / 6) % (sizeof special / sizeof *special)];
            break;
        }
        default: x[j] = (float)ldexp(rng_gauss(&s), -14 - (int)(rng_next(&s) % 12)); break; /* subnormal halves */
        }
    }
    ref->f32_to_f16(N, x, yr);
    for (int v = 0; v < n_variants(); v++) {
        const char *name;
        const kern_ops *k = variant(v, &name);
        static const int lengths[] = {N, 1, 7, 8, 9, 23};
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
            const int n = lengths[li];
            for (int j = 0; j < N + PAD; j++)
                yk[j] = 0xabcd;
            k->f32_to_f16(n, x, yk);
            for (int j = 0; j < n; j++) /* NaN payloads may differ: only NaN-ness is compared */
                ck_assert_msg(yk[j] == yr[j] || (f16_is_nan(yk[j]) && f16_is_nan(yr[j])),
                              "%s f32_to_f16(%a) = %#x, ref %#x", name, (double)x[j], yk[j], yr[j]);
            for (int j = n; j < n + PAD; j++)
                ck_assert_msg(yk[j] == 0xabcd, "%s f32_to_f16 n=%d wrote y[%d] past the end", name, n, j);
        }
    }
}
END_TEST

/* ---- tables and selection ----------------------------------------------- */

/* The entries each SIMD variant implements itself: a table that quietly fell back to ref
 * everywhere would pass every comparison above. */
START_TEST(test_variants_implement_their_entries)
{
    const kern_ops *ref = kern_ref();
    for (int v = 0; v < n_variants(); v++) {
        const char *name;
        const kern_ops *k = variant(v, &name);
        ck_assert_str_eq(k->name, name);
        for (int j = 0; j < N_DOT_TYPES; j++)
            ck_assert_msg(k->dot[dot_types[j]], "%s has no dot for %s", name, qt_name(dot_types[j]));
        for (size_t j = 0; j < sizeof act_types / sizeof *act_types; j++)
            ck_assert_ptr_nonnull(k->quantize[act_types[j]]);
        ck_assert(k->softmax && k->f32_to_f16);
        if (k == ref)
            continue;
        for (int j = 0; j < N_DOT_TYPES; j++) {
            ck_assert_msg(k->dot[dot_types[j]] != ref->dot[dot_types[j]], "%s falls back to ref for dot %s", name,
                          qt_name(dot_types[j]));
            ck_assert_msg(k->gemm[dot_types[j]], "%s has no gemm for %s", name, qt_name(dot_types[j]));
        }
        for (size_t j = 0; j < sizeof act_types / sizeof *act_types; j++)
            ck_assert_msg(k->quantize[act_types[j]] != ref->quantize[act_types[j]],
                          "%s falls back to ref for quantize %s", name, qt_name(act_types[j]));
        ck_assert_msg(k->softmax != ref->softmax && k->f32_to_f16 != ref->f32_to_f16,
                      "%s falls back to ref for softmax or f16", name);
    }
}
END_TEST

START_TEST(test_select_honours_env)
{
    const char *names[MAX_VARIANTS];
    int nv = kern_available(names, MAX_VARIANTS);
    ck_assert_int_ge(nv, 1);
    ck_assert_str_eq(names[0], "ref");
    const kern_ops *k;
    err_info ei = {0};

    for (int v = 0; v < nv; v++) {
        ck_assert_int_eq(setenv("EDGELLM_KERNEL", names[v], 1), 0);
        ck_assert_int_eq(kern_select(NULL, &k, &ei), 0);
        ck_assert_str_eq(k->name, names[v]);
        ck_assert_ptr_eq(k, kern_by_name(names[v]));
    }
    /* an explicit choice wins over the environment */
    ck_assert_int_eq(setenv("EDGELLM_KERNEL", names[nv - 1], 1), 0);
    ck_assert_int_eq(kern_select("ref", &k, &ei), 0);
    ck_assert_ptr_eq(k, kern_ref());

    /* unknown names, and known ones this binary or CPU cannot run, are refused by name */
#if defined(__x86_64__)
    static const char *const refused[] = {"bogus", "NEON", "neon", "Ref"};
#else
    static const char *const refused[] = {"bogus", "avx2", "avx512", "Ref"};
#endif
    for (size_t j = 0; j < sizeof refused / sizeof *refused; j++) {
        ck_assert_int_eq(setenv("EDGELLM_KERNEL", refused[j], 1), 0);
        k = NULL;
        ck_assert_int_eq(kern_select(NULL, &k, &ei), -ERR_UNSUPPORTED);
        ck_assert_msg(strstr(ei.msg, refused[j]) != NULL, "message '%s' does not name '%s'", ei.msg, refused[j]);
        ck_assert_ptr_null(kern_by_name(refused[j]));
    }
    /* unset or empty: the best this CPU runs, i.e. the last one listed */
    ck_assert_int_eq(setenv("EDGELLM_KERNEL", "", 1), 0);
    ck_assert_int_eq(kern_select(NULL, &k, &ei), 0);
    ck_assert_str_eq(k->name, names[nv - 1]);
    ck_assert_int_eq(unsetenv("EDGELLM_KERNEL"), 0);
    ck_assert_int_eq(kern_select(NULL, &k, &ei), 0);
    ck_assert_str_eq(k->name, names[nv - 1]);
}
END_TEST

/* ---- benchmark (EDGELLM_KERN_BENCH=1) ----------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* GB/s of weights streamed by rows x cols matrix-vector products as decode runs them
 * (kern_gemm with one column), best of a few passes. "dram": copies of the matrix cycled so
 * their total exceeds any last-level cache, as in decode of a real model; "cache": one
 * matrix again and again. */
/* Seconds for one matrix-vector product over each of `copies` matrices mat_bytes apart from
 * m (cycled: from DRAM) or over the first one `copies` times (from cache): rows, or strips. */
static void time_matvec(const kern_ops *k, qt_type t, bool strips, const uint8_t *m, size_t mat_bytes, int rows,
                        int n, const void *act, int copies, float *out, double *dram_s, double *cache_s)
{
    volatile float sink = 0;
    for (int cached = 0; cached < 2; cached++) {
        const double t0 = now_s();
        for (int c = 0; c < copies; c++) {
            const uint8_t *w = cached ? m : m + (size_t)c * mat_bytes;
            if (strips)
                kern_gemm_strips(k, t, n, rows, 1, w, act, 0, out, 0);
            else
                kern_gemm(k, t, n, rows, 1, w, qt_row_bytes(t, n), act, 0, out, 0);
            sink += out[c % rows];
        }
        *(cached ? cache_s : dram_s) = now_s() - t0;
    }
    (void)sink;
}

START_TEST(bench_matvec)
{
    enum { ROWS = 5632, COLS = 2048, COPIES = 24, PASSES = 3 };
    static const qt_type types[] = {QT_Q4_0, QT_Q4_K, QT_Q8_0, QT_Q6_K};
    uint64_t s = 2024;
    float *x = make_floats(COLS, FILL_QUANTIZED, &s), *f = malloc((size_t)COLS * sizeof *f);
    float *out = malloc((size_t)ROWS * sizeof *out);
    ck_assert(f && out);
    printf("kern bench: %dx%d matrix x vector, single thread, GB/s of weights (dram: %d copies cycled); "
           "strips: the matrix laid out for decode (kern.h)\n",
           ROWS, COLS, COPIES);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const qt_type t = types[ti];
        const size_t row_bytes = qt_row_bytes(t, COLS), mat_bytes = row_bytes * ROWS;
        uint8_t *m = malloc(mat_bytes * COPIES), *ms = kern_strips_type(t) ? malloc(mat_bytes * COPIES) : NULL;
        ck_assert(m && (ms || !kern_strips_type(t)));
        for (int r = 0; r < ROWS; r++) {
            for (int j = 0; j < COLS; j++)
                f[j] = rng_gauss(&s);
            qt_quantize_row(t, f, m + r * row_bytes, COLS);
        }
        for (int r0 = 0; ms && r0 < ROWS; r0 += KERN_STRIP_ROWS)
            kern_strips_from_rows(t, COLS, m + r0 * row_bytes, ms + r0 * row_bytes);
        for (int c = 1; c < COPIES; c++) {
            memcpy(m + c * mat_bytes, m, mat_bytes);
            if (ms)
                memcpy(ms + c * mat_bytes, ms, mat_bytes);
        }
        void *act = malloc(kern_act_bytes(t, COLS));
        kern_prepare_act(kern_ref(), t, x, act, COLS);
        for (int v = 0; v < n_variants(); v++) {
            const char *name;
            const kern_ops *k = variant(v, &name);
            const int copies = strcmp(name, "ref") == 0 ? 2 : COPIES; /* ref is slow: fewer rows */
            double best_dram[2] = {0, 0}, best_cache[2] = {0, 0};
            for (int pass = 0; pass < PASSES; pass++)
                for (int layout = 0; layout < (ms ? 2 : 1); layout++) { /* rows, strips: alternated */
                    double dram_s = 0, cache_s = 0, gb = (double)mat_bytes * copies / 1e9;
                    time_matvec(k, t, layout, layout ? ms : m, mat_bytes, ROWS, COLS, act, copies, out, &dram_s,
                                &cache_s);
                    best_dram[layout] = fmax(best_dram[layout], gb / dram_s);
                    best_cache[layout] = fmax(best_cache[layout], gb / cache_s);
                }
            for (int layout = 0; layout < (ms ? 2 : 1); layout++)
                printf("  %-5s %-7s %-6s dram %6.2f GB/s  cache %6.2f GB/s  (%.1f MB)\n", qt_name(t), name,
                       layout ? "strips" : "rows", best_dram[layout], best_cache[layout], mat_bytes / 1e6);
        }
        free(act);
        free(m);
        free(ms);
    }
    free(x);
    free(f);
    free(out);
    fflush(stdout);
}
END_TEST

/* Single-thread GOPS (2·rows·n·cols / s) of kern_gemm on a 2048x2048 matrix in L2-sized
 * row chunks (128 rows, as the forward pass hands them to a thread), for a prefill batch
 * (64 columns) and decode (1), each variant's own gemm against its dot loop. */
START_TEST(bench_gemm)
{
    enum { ROWS = 2048, N = 2048, CHUNK = 128, PASSES = 3 };
    static const qt_type types[] = {QT_Q4_0, QT_Q4_K, QT_Q8_0, QT_Q6_K, QT_Q5_0, QT_Q4_1, QT_Q5_1, QT_Q5_K, QT_F16};
    static const int col_counts[] = {64, 1};
    uint64_t s = 7;
    float *f = malloc((size_t)N * sizeof *f), *out = malloc((size_t)64 * ROWS * sizeof *out);
    ck_assert(f && out);
    printf("kern bench: %dx%d matrix in %d-row chunks x C columns, single thread, GOPS (gemm / dot loop)\n", ROWS, N,
           CHUNK);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const qt_type t = types[ti];
        const size_t row_bytes = qt_row_bytes(t, N), act_bytes = kern_act_bytes(t, N);
        uint8_t *m = malloc(row_bytes * ROWS), *act = malloc(act_bytes * 64);
        ck_assert(m && act);
        for (int r = 0; r < ROWS; r++) {
            for (int j = 0; j < N; j++)
                f[j] = rng_gauss(&s);
            qt_quantize_row(t, f, m + r * row_bytes, N);
        }
        for (int c = 0; c < 64; c++) {
            for (int j = 0; j < N; j++)
                f[j] = rng_gauss(&s);
            kern_prepare_act(kern_ref(), t, f, act + c * act_bytes, N);
        }
        for (int v = 1; v < n_variants(); v++) {
            const char *name;
            const kern_ops *k = variant(v, &name);
            kern_ops dots = *k;
            dots.gemm[t] = NULL;
            printf("  %-5s %-7s", qt_name(t), name);
            for (size_t ci = 0; ci < sizeof col_counts / sizeof *col_counts; ci++) {
                const int cols = col_counts[ci];
                double best[2] = {0, 0};
                for (int pass = 0; pass < PASSES; pass++)
                    for (int which = 0; which < 2; which++) {
                        const kern_ops *kk = which ? &dots : k;
                        double t0 = now_s();
                        for (int r0 = 0; r0 < ROWS; r0 += CHUNK)
                            kern_gemm(kk, t, N, CHUNK, cols, m + r0 * row_bytes, row_bytes, act, act_bytes, out + r0,
                                      ROWS);
                        double ops = 2.0 * ROWS * N * cols / (now_s() - t0) / 1e9;
                        if (ops > best[which])
                            best[which] = ops;
                    }
                printf("  %2d cols %7.1f / %6.1f", cols, best[0], best[1]);
            }
            printf("\n");
        }
        free(m);
        free(act);
    }
    free(f);
    free(out);
    fflush(stdout);
}
END_TEST

static Suite *kern_suite(bool with_bench)
{
    Suite *s = suite_create("kern");
    if (with_bench) {
        TCase *tb = tcase_create("bench");
        tcase_set_timeout(tb, 1200);
        tcase_add_test(tb, bench_gemm);
        tcase_add_test(tb, bench_matvec);
        suite_add_tcase(s, tb);
    }
    TCase *tc = tcase_create("dot");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_dot_matches_ref, 0, N_DOT_TYPES);
    tcase_add_test(tc, test_dot_bound_catches_one_level);
    suite_add_tcase(s, tc);
    tc = tcase_create("gemm");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, test_gemm_matches_ref, 0, N_DOT_TYPES);
    tcase_add_loop_test(tc, test_gemm_strips_matches_ref, 0, sizeof strips_types / sizeof *strips_types);
    suite_add_tcase(s, tc);
    tc = tcase_create("convert");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_quantize_matches_ref, 0, sizeof act_types / sizeof *act_types);
    tcase_add_test(tc, test_softmax_matches_ref);
    tcase_add_test(tc, test_f32_to_f16_exact);
    suite_add_tcase(s, tc);
    tc = tcase_create("select");
    tcase_add_test(tc, test_variants_implement_their_entries);
    tcase_add_test(tc, test_select_honours_env);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    const char *b = getenv("EDGELLM_KERN_BENCH");
    SRunner *sr = srunner_create(kern_suite(b && *b && strcmp(b, "0") != 0));
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
