/* qtype — see qtype.h. Scalar code only: this file is the reference for every SIMD kernel,
 * so it favours the obvious loop over the fast one. */
#include "qtype.h"

#include <assert.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#define T_(name, elems, bytes, sup, act) {name, elems, bytes, sup, act}
static const qt_traits traits[QT_COUNT] = {
    [QT_F32] = T_("F32", 1, 4, true, QT_F32),
    [QT_F16] = T_("F16", 1, 2, true, QT_F32),
    [QT_Q4_0] = T_("Q4_0", QK4_0, sizeof(qt_block_q4_0), true, QT_Q8_0),
    [QT_Q4_1] = T_("Q4_1", QK4_1, sizeof(qt_block_q4_1), true, QT_Q8_1),
    [QT_Q5_0] = T_("Q5_0", QK5_0, sizeof(qt_block_q5_0), true, QT_Q8_0),
    [QT_Q5_1] = T_("Q5_1", QK5_1, sizeof(qt_block_q5_1), true, QT_Q8_1),
    [QT_Q8_0] = T_("Q8_0", QK8_0, sizeof(qt_block_q8_0), true, QT_Q8_0),
    [QT_Q8_1] = T_("Q8_1", QK8_1, sizeof(qt_block_q8_1), false, QT_Q8_1),
    [QT_Q2_K] = T_("Q2_K", QK_K, 84, false, QT_Q8_K),
    [QT_Q3_K] = T_("Q3_K", QK_K, 110, false, QT_Q8_K),
    [QT_Q4_K] = T_("Q4_K", QK_K, sizeof(qt_block_q4_k), true, QT_Q8_K),
    [QT_Q5_K] = T_("Q5_K", QK_K, sizeof(qt_block_q5_k), true, QT_Q8_K),
    [QT_Q6_K] = T_("Q6_K", QK_K, sizeof(qt_block_q6_k), true, QT_Q8_K),
    [QT_Q8_K] = T_("Q8_K", QK_K, sizeof(qt_block_q8_k), false, QT_Q8_K),
    [QT_IQ2_XXS] = T_("IQ2_XXS", QK_K, 66, false, QT_Q8_K),
    [QT_IQ2_XS] = T_("IQ2_XS", QK_K, 74, false, QT_Q8_K),
    [QT_IQ3_XXS] = T_("IQ3_XXS", QK_K, 98, false, QT_Q8_K),
    [QT_IQ1_S] = T_("IQ1_S", QK_K, 50, false, QT_Q8_K),
    [QT_IQ4_NL] = T_("IQ4_NL", 32, 18, false, QT_Q8_0),
    [QT_IQ3_S] = T_("IQ3_S", QK_K, 110, false, QT_Q8_K),
    [QT_IQ2_S] = T_("IQ2_S", QK_K, 82, false, QT_Q8_K),
    [QT_IQ4_XS] = T_("IQ4_XS", QK_K, 136, false, QT_Q8_K),
    [QT_I8] = T_("I8", 1, 1, false, QT_I8),
    [QT_I16] = T_("I16", 1, 2, false, QT_I16),
    [QT_I32] = T_("I32", 1, 4, false, QT_I32),
    [QT_I64] = T_("I64", 1, 8, false, QT_I64),
    [QT_F64] = T_("F64", 1, 8, false, QT_F64),
    [QT_IQ1_M] = T_("IQ1_M", QK_K, 56, false, QT_Q8_K),
    [QT_BF16] = T_("BF16", 1, 2, true, QT_F32),
    [QT_TQ1_0] = T_("TQ1_0", QK_K, 54, false, QT_Q8_K),
    [QT_TQ2_0] = T_("TQ2_0", QK_K, 66, false, QT_Q8_K),
};
#undef T_

_Static_assert(sizeof(qt_block_q4_0) == 18, "Q4_0 block layout");
_Static_assert(sizeof(qt_block_q4_1) == 20, "Q4_1 block layout");
_Static_assert(sizeof(qt_block_q5_0) == 22, "Q5_0 block layout");
_Static_assert(sizeof(qt_block_q5_1) == 24, "Q5_1 block layout");
_Static_assert(sizeof(qt_block_q8_0) == 34, "Q8_0 block layout");
_Static_assert(sizeof(qt_block_q8_1) == 36, "Q8_1 block layout");
_Static_assert(sizeof(qt_block_q4_k) == 144, "Q4_K block layout");
_Static_assert(sizeof(qt_block_q5_k) == 176, "Q5_K block layout");
_Static_assert(sizeof(qt_block_q6_k) == 210, "Q6_K block layout");
_Static_assert(sizeof(qt_block_q8_k) == 292, "Q8_K block layout");

const qt_traits *qt_get(uint32_t t)
{
    return (t < QT_COUNT && traits[t].name) ? &traits[t] : NULL;
}

const char *qt_name(uint32_t t)
{
    const qt_traits *tr = qt_get(t);
    return tr ? tr->name : "?";
}

int qt_from_name(const char *name)
{
    for (int t = 0; t < QT_COUNT; t++)
        if (traits[t].name && strcasecmp(traits[t].name, name) == 0)
            return t;
    return -1;
}

size_t qt_row_bytes(qt_type t, int64_t n)
{
    const qt_traits *tr = qt_get(t);
    if (!tr || n < 0 || n % tr->block_elems)
        return 0;
    return (size_t)(n / tr->block_elems) * tr->block_bytes;
}

/* ---- half precision ---------------------------------------------------- */

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float qt_f16_to_f32(qt_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

qt_f16 qt_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan (keep nan quiet) */
        return (qt_f16)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (qt_f16)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        /* scale so the half's ulp (2^-24) becomes 1 and let the FPU round to even */
        float v = bits_f32(absx) * 0x1p24f;
        uint32_t m = (uint32_t)lrintf(v);
        return (qt_f16)(sign | m); /* m == 0x400 carries into the exponent correctly */
    }
    /* normal: drop 13 mantissa bits with round-to-nearest-even */
    uint32_t r = absx + 0xfffu + ((absx >> 13) & 1u);
    return (qt_f16)(sign | ((r - 0x38000000u) >> 13));
}

float qt_bf16_to_f32(qt_bf16 h) { return bits_f32((uint32_t)h << 16); }

qt_bf16 qt_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (qt_bf16)((x >> 16) | 64); /* quiet nan */
    return (qt_bf16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* ---- dequantization ---------------------------------------------------- */

/* Unpacks the 6-bit scale and min of sub-block j (0..7) from a K block's scales[12]. */
static void k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void deq_q4_0(const qt_block_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK4_0) {
        float d = qt_f16_to_f32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = ((b[i].qs[j] & 0xF) - 8) * d;
            y[j + QK4_0 / 2] = ((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void deq_q4_1(const qt_block_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK4_1) {
        float d = qt_f16_to_f32(b[i].d), m = qt_f16_to_f32(b[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = (b[i].qs[j] & 0xF) * d + m;
            y[j + QK4_1 / 2] = (b[i].qs[j] >> 4) * d + m;
        }
    }
}

/* 5-bit value j (0..31) of a Q5 block: low nibble from qs, fifth bit from qh. */
static int q5_value(const uint8_t *qs, uint32_t qh, int j)
{
    int lo = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
    return lo | (int)(((qh >> j) & 1u) << 4);
}

static void deq_q5_0(const qt_block_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK5_0) {
        float d = qt_f16_to_f32(b[i].d);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < QK5_0; j++)
            y[j] = (q5_value(b[i].qs, qh, j) - 16) * d;
    }
}

static void deq_q5_1(const qt_block_q5_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK5_1) {
        float d = qt_f16_to_f32(b[i].d), m = qt_f16_to_f32(b[i].m);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < QK5_1; j++)
            y[j] = q5_value(b[i].qs, qh, j) * d + m;
    }
}

static void deq_q8_0(const qt_block_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK8_0) {
        float d = qt_f16_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j++)
            y[j] = b[i].qs[j] * d;
    }
}

static void deq_q8_1(const qt_block_q8_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK8_1) {
        float d = qt_f16_to_f32(b[i].d);
        for (int j = 0; j < QK8_1; j++)
            y[j] = b[i].qs[j] * d;
    }
}

/* Q4_K and Q5_K share a layout: each 64 weights use two sub-blocks, low nibbles then high. */
static void deq_q4_k(const qt_block_q4_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = qt_f16_to_f32(b[i].d), dmin = qt_f16_to_f32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int j = 0; j < QK_K / 64; j++, q += 32) {
            uint8_t sc, m;
            k_scale_min(2 * j, b[i].scales, &sc, &m);
            float d1 = d * sc, m1 = dmin * m;
            k_scale_min(2 * j + 1, b[i].scales, &sc, &m);
            float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void deq_q5_k(const qt_block_q5_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = qt_f16_to_f32(b[i].d), dmin = qt_f16_to_f32(b[i].dmin);
        const uint8_t *ql = b[i].qs, *qh = b[i].qh;
        uint8_t u1 = 1, u2 = 2; /* qh bit of the first and second sub-block of this 64 */
        for (int j = 0; j < QK_K / 64; j++, ql += 32, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, m;
            k_scale_min(2 * j, b[i].scales, &sc, &m);
            float d1 = d * sc, m1 = dmin * m;
            k_scale_min(2 * j + 1, b[i].scales, &sc, &m);
            float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void deq_q6_k(const qt_block_q6_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = qt_f16_to_f32(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        /* each 128 weights: ql[0..63], qh[0..31], scales[0..7] */
        for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

static void deq_q8_k(const qt_block_q8_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++)
        for (int j = 0; j < QK_K; j++)
            *y++ = b[i].d * b[i].qs[j];
}

void qt_dequantize_row(qt_type t, const void *src, float *dst, int64_t n)
{
    const qt_traits *tr = qt_get(t);
    assert(tr && n % tr->block_elems == 0);
    int64_t nb = n / tr->block_elems;
    switch (t) {
    case QT_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case QT_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = qt_f16_to_f32(((const qt_f16 *)src)[i]);
        break;
    case QT_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = qt_bf16_to_f32(((const qt_bf16 *)src)[i]);
        break;
    case QT_Q4_0: deq_q4_0(src, dst, nb); break;
    case QT_Q4_1: deq_q4_1(src, dst, nb); break;
    case QT_Q5_0: deq_q5_0(src, dst, nb); break;
    case QT_Q5_1: deq_q5_1(src, dst, nb); break;
    case QT_Q8_0: deq_q8_0(src, dst, nb); break;
    case QT_Q8_1: deq_q8_1(src, dst, nb); break;
    case QT_Q4_K: deq_q4_k(src, dst, nb); break;
    case QT_Q5_K: deq_q5_k(src, dst, nb); break;
    case QT_Q6_K: deq_q6_k(src, dst, nb); break;
    case QT_Q8_K: deq_q8_k(src, dst, nb); break;
    default: assert(!"qt_dequantize_row: unsupported type");
    }
}

/* ---- quantization ------------------------------------------------------ */

static int nearest_int(float f) { return (int)lrintf(f); }
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The element of x[0..n) with the largest magnitude, sign kept. */
static float signed_absmax(const float *x, int n)
{
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void minmax(const float *x, int n, float *mn, float *mx)
{
    *mn = *mx = x[0];
    for (int j = 1; j < n; j++) {
        if (x[j] < *mn) *mn = x[j];
        if (x[j] > *mx) *mx = x[j];
    }
}

/* Symmetric 2^bits-level blocks (Q4_0, Q5_0): the extreme value maps to level 0, so the
 * scale is negative when that value is positive; levels are stored offset by 2^(bits-1). */
static void quant_sym_levels(const float *x, int bits, float *d_out, uint8_t *L)
{
    int half = 1 << (bits - 1), top = (1 << bits) - 1;
    float d = signed_absmax(x, 32) / -half;
    float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++)
        L[j] = (uint8_t)clampi((int)(x[j] * id + half + 0.5f), 0, top);
    *d_out = d;
}

/* Affine blocks (Q4_1, Q5_1): level = (x - min) / d. */
static void quant_affine_levels(const float *x, int bits, float *d_out, float *m_out, uint8_t *L)
{
    int top = (1 << bits) - 1;
    float mn, mx;
    minmax(x, 32, &mn, &mx);
    float d = (mx - mn) / top;
    float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++)
        L[j] = (uint8_t)clampi((int)((x[j] - mn) * id + 0.5f), 0, top);
    *d_out = d;
    *m_out = mn;
}

/* Packs 32 levels into 16 bytes of nibbles (low nibble: first half) and, for 5-bit levels,
 * their fifth bits into qh. */
static void pack_nibbles(const uint8_t *L, uint8_t *qs, uint8_t *qh)
{
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((L[j] & 0xF) | ((L[j + 16] & 0xF) << 4));
        h |= (uint32_t)((L[j] >> 4) & 1) << j;
        h |= (uint32_t)((L[j + 16] >> 4) & 1) << (j + 16);
    }
    if (qh)
        memcpy(qh, &h, 4);
}

static void quant_q8_block(const float *x, float *d_out, int8_t *qs)
{
    float amax = fabsf(signed_absmax(x, 32));
    float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++)
        qs[j] = (int8_t)nearest_int(x[j] * id);
    *d_out = d;
}

/* Q8_K: the extreme value maps to -127 exactly, as the K-quant dot products assume. */
static void quant_q8_k(const float *x, qt_block_q8_k *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max = signed_absmax(x, QK_K);
        if (max == 0) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}

/* Q4_K / Q5_K: per sub-block of 32, an affine map level*scale - min with min >= 0, then the
 * eight scales and mins quantized to 6 bits against the block's d and dmin. */
static void quant_k_affine(const float *x, int bits, qt_f16 *d_out, qt_f16 *dmin_out,
                           uint8_t scales[K_SCALE_SIZE], uint8_t L[QK_K])
{
    int top = (1 << bits) - 1;
    float sub_scale[8], sub_min[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float mn, mx;
        minmax(x + 32 * j, 32, &mn, &mx);
        if (mn > 0)
            mn = 0;
        sub_scale[j] = (mx - mn) / top;
        sub_min[j] = -mn;
        if (sub_scale[j] > max_scale) max_scale = sub_scale[j];
        if (sub_min[j] > max_min) max_min = sub_min[j];
    }
    float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0, inv_min = max_min > 0 ? 63.0f / max_min : 0;
    memset(scales, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)clampi(nearest_int(inv_scale * sub_scale[j]), 0, 63);
        uint8_t lm = (uint8_t)clampi(nearest_int(inv_min * sub_min[j]), 0, 63);
        if (j < 4) {
            scales[j] = ls;
            scales[j + 4] = lm;
        } else {
            scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = qt_f32_to_f16(max_scale / 63.0f);
    *dmin_out = qt_f32_to_f16(max_min / 63.0f);
    /* levels against the scales as they will be decoded */
    float d = qt_f16_to_f32(*d_out), dmin = qt_f16_to_f32(*dmin_out);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        k_scale_min(j, scales, &sc, &m);
        float ds = d * sc, dm = dmin * m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = ds ? (uint8_t)clampi(nearest_int((x[32 * j + l] + dm) / ds), 0, top) : 0;
    }
}

static void quant_q4_k(const float *x, qt_block_q4_k *y, int64_t nb)
{
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        quant_k_affine(x, 4, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void quant_q5_k(const float *x, qt_block_q5_k *y, int64_t nb)
{
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        quant_k_affine(x, 5, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *ql = y[i].qs, m1 = 1, m2 = 2;
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int n = 0; n < QK_K; n += 64, ql += 32, m1 <<= 2, m2 <<= 2)
            for (int j = 0; j < 32; j++) {
                int l1 = L[n + j], l2 = L[n + j + 32];
                if (l1 > 15) { l1 -= 16; y[i].qh[j] |= m1; }
                if (l2 > 15) { l2 -= 16; y[i].qh[j] |= m2; }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
    }
}

/* Q6_K: per sub-block of 16 a signed scale mapping the extreme value to level -32, then the
 * sixteen scales as int8 against the block's d. */
static void quant_q6_k(const float *x, qt_block_q6_k *y, int64_t nb)
{
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float sub[16], max_scale = 0;
        for (int j = 0; j < 16; j++) {
            sub[j] = signed_absmax(x + 16 * j, 16) / -32.0f;
            if (fabsf(sub[j]) > fabsf(max_scale)) max_scale = sub[j];
        }
        float iscale = max_scale ? -128.0f / max_scale : 0;
        y[i].d = qt_f32_to_f16(max_scale ? 1.0f / iscale : 0);
        float d = qt_f16_to_f32(y[i].d);
        for (int j = 0; j < 16; j++) {
            y[i].scales[j] = (int8_t)clampi(nearest_int(iscale * sub[j]), -128, 127);
            float ds = d * y[i].scales[j];
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)(32 + (ds ? clampi(nearest_int(x[16 * j + l] / ds), -32, 31) : 0));
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; l++) {
                const uint8_t *g = L + j + l; /* g[0], g[32], g[64], g[96] */
                ql[l] = (uint8_t)((g[0] & 0xF) | ((g[64] & 0xF) << 4));
                ql[l + 32] = (uint8_t)((g[32] & 0xF) | ((g[96] & 0xF) << 4));
                qh[l] = (uint8_t)((g[0] >> 4) | ((g[32] >> 4) << 2) | ((g[64] >> 4) << 4) | ((g[96] >> 4) << 6));
            }
    }
}

void qt_quantize_row(qt_type t, const float *x, void *dst, int64_t n)
{
    const qt_traits *tr = qt_get(t);
    assert(tr && n % tr->block_elems == 0);
    int64_t nb = n / tr->block_elems;
    uint8_t L[32];
    float d, m;
    switch (t) {
    case QT_F32: memcpy(dst, x, (size_t)n * sizeof(float)); break;
    case QT_F16:
        for (int64_t i = 0; i < n; i++)
            ((qt_f16 *)dst)[i] = qt_f32_to_f16(x[i]);
        break;
    case QT_BF16:
        for (int64_t i = 0; i < n; i++)
            ((qt_bf16 *)dst)[i] = qt_f32_to_bf16(x[i]);
        break;
    case QT_Q4_0:
        for (int64_t i = 0; i < nb; i++, x += 32) {
            qt_block_q4_0 *b = (qt_block_q4_0 *)dst + i;
            quant_sym_levels(x, 4, &d, L);
            b->d = qt_f32_to_f16(d);
            pack_nibbles(L, b->qs, NULL);
        }
        break;
    case QT_Q5_0:
        for (int64_t i = 0; i < nb; i++, x += 32) {
            qt_block_q5_0 *b = (qt_block_q5_0 *)dst + i;
            quant_sym_levels(x, 5, &d, L);
            b->d = qt_f32_to_f16(d);
            pack_nibbles(L, b->qs, b->qh);
        }
        break;
    case QT_Q4_1:
        for (int64_t i = 0; i < nb; i++, x += 32) {
            qt_block_q4_1 *b = (qt_block_q4_1 *)dst + i;
            quant_affine_levels(x, 4, &d, &m, L);
            b->d = qt_f32_to_f16(d);
            b->m = qt_f32_to_f16(m);
            pack_nibbles(L, b->qs, NULL);
        }
        break;
    case QT_Q5_1:
        for (int64_t i = 0; i < nb; i++, x += 32) {
            qt_block_q5_1 *b = (qt_block_q5_1 *)dst + i;
            quant_affine_levels(x, 5, &d, &m, L);
            b->d = qt_f32_to_f16(d);
            b->m = qt_f32_to_f16(m);
            pack_nibbles(L, b->qs, b->qh);
        }
        break;
    case QT_Q8_0:
        for (int64_t i = 0; i < nb; i++, x += 32) {
            qt_block_q8_0 *b = (qt_block_q8_0 *)dst + i;
            quant_q8_block(x, &d, b->qs);
            b->d = qt_f32_to_f16(d);
        }
        break;
    case QT_Q8_1:
        for (int64_t i = 0; i < nb; i++, x += 32) {
            qt_block_q8_1 *b = (qt_block_q8_1 *)dst + i;
            quant_q8_block(x, &d, b->qs);
            int sum = 0;
            for (int j = 0; j < 32; j++)
                sum += b->qs[j];
            b->d = qt_f32_to_f16(d);
            b->s = qt_f32_to_f16(d * (float)sum);
        }
        break;
    case QT_Q4_K: quant_q4_k(x, dst, nb); break;
    case QT_Q5_K: quant_q5_k(x, dst, nb); break;
    case QT_Q6_K: quant_q6_k(x, dst, nb); break;
    case QT_Q8_K: quant_q8_k(x, dst, nb); break;
    default: assert(!"qt_quantize_row: unsupported type");
    }
}
