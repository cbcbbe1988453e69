/* kern_neon — aarch64 NEON kernels with the dot-product extension (sdot: four int8 x int8
 * products summed into each int32 lane) and half-precision conversions (Raspberry Pi 5,
 * Jetson Orin, any ARMv8.2-A core with asimddp): every row dot product, the gemm tiles of
 * prefill and decode (4-row strips, kern_tile.h), the activation quantizers and the f16
 * KV-cache helpers.
 *
 * sdot is signed x signed, so weights are unpacked to their signed values and no sign or
 * offset tricks are needed; integer sums are exact (|sum| < 2^31 for every format). Each
 * block's or sub-block's sum is scaled in float and accumulated in 4-lane FMA registers.
 * Not here: choosing this table (kern.c) or the definition of each result (kern_ref.c). */
#include "kern.h"
#include "kern_tile.h"

#include <arm_neon.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define KN_INLINE static inline __attribute__((always_inline))

KN_INLINE float f16_at(const void *p)
{
    __fp16 h;
    memcpy(&h, p, sizeof h);
    return (float)h;
}

/* ---- float weights: F32, F16, BF16 ------------------------------------- */

typedef float32x4_t (*load4_fn)(const void *w, int i); /* weights i..i+3 as floats */

KN_INLINE float32x4_t load4_f32(const void *w, int i) { return vld1q_f32((const float *)w + i); }
KN_INLINE float32x4_t load4_f16(const void *w, int i) { return vcvt_f32_f16(vld1_f16((const __fp16 *)w + i)); }
KN_INLINE float32x4_t load4_bf16(const void *w, int i)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)w + i), 16)); /* top half of an f32 */
}

KN_INLINE float dot_floats(int n, const void *w, const float *x, load4_fn load, size_t elem_bytes)
{
    float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    int i = 0;
    for (; i + 16 <= n; i += 16)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            acc[k] = vfmaq_f32(acc[k], load(w, i + 4 * k), vld1q_f32(x + i + 4 * k));
    for (; i + 4 <= n; i += 4)
        acc[0] = vfmaq_f32(acc[0], load(w, i), vld1q_f32(x + i));
    if (i < n) {
        /* the last n - i < 4 elements through zero-padded copies, so one loader serves all */
        _Alignas(16) uint8_t wt[4 * sizeof(float)] = {0};
        float xt[4] = {0};
        memcpy(wt, (const uint8_t *)w + (size_t)i * elem_bytes, (size_t)(n - i) * elem_bytes);
        memcpy(xt, x + i, (size_t)(n - i) * sizeof(float));
        acc[1] = vfmaq_f32(acc[1], load(wt, 0), vld1q_f32(xt));
    }
    return vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
}

static float dot_f32(int n, const void *w, const void *x) { return dot_floats(n, w, x, load4_f32, sizeof(float)); }
static float dot_f16(int n, const void *w, const void *x) { return dot_floats(n, w, x, load4_f16, sizeof(qt_f16)); }
static float dot_bf16(int n, const void *w, const void *x) { return dot_floats(n, w, x, load4_bf16, sizeof(qt_bf16)); }

/* ---- 32-weight blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 --------------------- */

/* The 32 signed weights of a block, elements 0-15 in v[0] and 16-31 in v[1]. */
typedef struct w32 {
    int8x16_t v[2];
} w32;
typedef w32 (*values32_fn)(const void *block);

/* 16 bytes of nibbles: low nibbles are elements 0-15, high ones 16-31. */
KN_INLINE w32 nibbles32(const uint8_t *qs)
{
    uint8x16_t q = vld1q_u8(qs);
    return (w32){{vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), vreinterpretq_s8_u8(vshrq_n_u8(q, 4))}};
}

/* 16 in byte j where bit j of the little-endian 32-bit word at qh is set, else 0. */
KN_INLINE w32 fifth_bits32(const uint8_t *qh)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    const uint8x16_t bytes = vreinterpretq_u8_u32(vdupq_n_u32(h));
    static const uint8_t lo_idx[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t hi_idx[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t b = vld1q_u8(bit), sixteen = vdupq_n_u8(16);
    uint8x16_t lo = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(lo_idx)), b), sixteen);
    uint8x16_t hi = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(hi_idx)), b), sixteen);
    return (w32){{vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)}};
}

KN_INLINE w32 add32(w32 a, w32 b) { return (w32){{vaddq_s8(a.v[0], b.v[0]), vaddq_s8(a.v[1], b.v[1])}}; }
KN_INLINE w32 sub32(w32 a, int k)
{
    return (w32){{vsubq_s8(a.v[0], vdupq_n_s8((int8_t)k)), vsubq_s8(a.v[1], vdupq_n_s8((int8_t)k))}};
}

KN_INLINE w32 values_q4_0(const void *b) { return sub32(nibbles32(((const qt_block_q4_0 *)b)->qs), 8); }
KN_INLINE w32 values_q4_1(const void *b) { return nibbles32(((const qt_block_q4_1 *)b)->qs); }
KN_INLINE w32 values_q5_0(const void *b)
{
    const qt_block_q5_0 *q = b;
    return sub32(add32(nibbles32(q->qs), fifth_bits32(q->qh)), 16);
}
KN_INLINE w32 values_q5_1(const void *b)
{
    const qt_block_q5_1 *q = b;
    return add32(nibbles32(q->qs), fifth_bits32(q->qh));
}
KN_INLINE w32 values_q8_0(const void *b)
{
    const int8_t *qs = ((const qt_block_q8_0 *)b)->qs;
    return (w32){{vld1q_s8(qs), vld1q_s8(qs + 16)}};
}

/* Every 32-weight type starts with its f16 scale d; the affine ones (has_min) follow it with
 * the f16 min m and take Q8_1 activations, whose s = d·Σqs supplies m's share: m·s. */
KN_INLINE float32x4_t block32(float32x4_t acc, float *acc_min, const uint8_t *wb, const uint8_t *xb, values32_fn values,
                              bool has_min)
{
    const int8_t *y = (const int8_t *)(xb + (has_min ? offsetof(qt_block_q8_1, qs) : offsetof(qt_block_q8_0, qs)));
    const w32 v = values(wb);
    int32x4_t s = vdotq_s32(vdotq_s32(vdupq_n_s32(0), v.v[0], vld1q_s8(y)), v.v[1], vld1q_s8(y + 16));
    if (has_min)
        *acc_min += f16_at(wb + 2) * f16_at(xb + 2);
    return vfmaq_n_f32(acc, vcvtq_f32_s32(s), f16_at(wb) * f16_at(xb));
}

KN_INLINE float dot_q32(int n, const void *w, const void *x, size_t block_bytes, values32_fn values, bool has_min)
{
    const size_t xbytes = has_min ? sizeof(qt_block_q8_1) : sizeof(qt_block_q8_0);
    const uint8_t *wb = w, *xb = x;
    float32x4_t acc0 = vdupq_n_f32(0), acc1 = vdupq_n_f32(0);
    float acc_min = 0;
    int nb = n / 32, i = 0;
    /* two blocks per step into two accumulators: independent FMA chains */
    for (; i + 2 <= nb; i += 2, wb += 2 * block_bytes, xb += 2 * xbytes) {
        acc0 = block32(acc0, &acc_min, wb, xb, values, has_min);
        acc1 = block32(acc1, &acc_min, wb + block_bytes, xb + xbytes, values, has_min);
    }
    if (i < nb)
        acc0 = block32(acc0, &acc_min, wb, xb, values, has_min);
    return vaddvq_f32(vaddq_f32(acc0, acc1)) + acc_min;
}

static float dot_q4_0(int n, const void *w, const void *x)
{
    return dot_q32(n, w, x, sizeof(qt_block_q4_0), values_q4_0, false);
}
static float dot_q4_1(int n, const void *w, const void *x)
{
    return dot_q32(n, w, x, sizeof(qt_block_q4_1), values_q4_1, true);
}
static float dot_q5_0(int n, const void *w, const void *x)
{
    return dot_q32(n, w, x, sizeof(qt_block_q5_0), values_q5_0, false);
}
static float dot_q5_1(int n, const void *w, const void *x)
{
    return dot_q32(n, w, x, sizeof(qt_block_q5_1), values_q5_1, true);
}
static float dot_q8_0(int n, const void *w, const void *x)
{
    return dot_q32(n, w, x, sizeof(qt_block_q8_0), values_q8_0, false);
}

/* ---- K types: Q4_K, Q5_K, Q6_K (256 weights, Q8_K activations) ---------- */

/* The 6-bit scales and mins of a Q4_K/Q5_K block: sc[0..7] then m[0..7]. Sub-blocks 0-3
 * keep them in the low 6 bits of bytes 0-3 / 4-7; sub-blocks 4-7 keep their low 4 bits in
 * the nibbles of bytes 8-11 and their top 2 bits in the top bits of bytes 0-3 / 4-7. */
KN_INLINE void k_scales(const uint8_t *packed, uint8_t out[16])
{
    uint32_t u[3], r[4];
    memcpy(u, packed, sizeof u);
    r[0] = u[0] & 0x3f3f3f3fu;
    r[1] = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u);
    r[2] = u[1] & 0x3f3f3f3fu;
    r[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u);
    memcpy(out, r, sizeof r);
}

/* Q4_K and Q5_K: each 64 weights are 32 bytes of qs, low nibbles sub-block 2c, high 2c+1;
 * Q5_K's fifth bit of weight l of sub-block j is bit j of qh[l]. Result:
 * d·Σ_j sc_j·(levels·y) - dmin·Σ_j m_j·(y sums), the y sums of 16 from bsums. */
KN_INLINE float dot_k_affine(int n, const uint8_t *w, const qt_block_q8_k *b, bool five_bit)
{
    const size_t block_bytes = five_bit ? sizeof(qt_block_q5_k) : sizeof(qt_block_q4_k);
    const size_t qs_off = five_bit ? offsetof(qt_block_q5_k, qs) : offsetof(qt_block_q4_k, qs);
    const uint8x16_t low4 = vdupq_n_u8(0x0F), one = vdupq_n_u8(1), two = vdupq_n_u8(2);
    float32x4_t acc = vdupq_n_f32(0);
    float acc_min = 0;
    for (int i = 0; i < n / QK_K; i++, w += block_bytes) {
        const qt_block_q4_k *hdr = (const qt_block_q4_k *)w;
        uint8_t sm[16];
        k_scales(hdr->scales, sm);
        /* mins: per sub-block y sums (pairs of bsums) times m_j */
        const int16x8_t ysum = vpaddq_s16(vld1q_s16(b[i].bsums), vld1q_s16(b[i].bsums + 8));
        const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm + 8)));
        const int32x4_t pm =
            vmlal_s16(vmull_s16(vget_low_s16(ysum), vget_low_s16(mins)), vget_high_s16(ysum), vget_high_s16(mins));
        uint8x16_t qh[2] = {vdupq_n_u8(0), vdupq_n_u8(0)};
        if (five_bit) {
            qh[0] = vld1q_u8(((const qt_block_q5_k *)w)->qh);
            qh[1] = vld1q_u8(((const qt_block_q5_k *)w)->qh + 16);
        }
        int32x4_t isum = vdupq_n_s32(0);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const int8_t *y = b[i].qs + 64 * c;
            int32x4_t dlo = vdupq_n_s32(0), dhi = vdupq_n_s32(0);
#pragma GCC unroll 4
            for (int k = 0; k < 2; k++) { /* 16 of the 32 bytes at a time */
                const uint8x16_t q = vld1q_u8(w + qs_off + 32 * c + 16 * k);
                uint8x16_t lo = vandq_u8(q, low4), hi = vshrq_n_u8(q, 4);
                if (five_bit) {
                    lo = vorrq_u8(lo, vshlq_n_u8(vandq_u8(qh[k], one), 4));
                    hi = vorrq_u8(hi, vshlq_n_u8(vandq_u8(qh[k], two), 3));
                    qh[k] = vshrq_n_u8(qh[k], 2);
                }
                dlo = vdotq_s32(dlo, vreinterpretq_s8_u8(lo), vld1q_s8(y + 16 * k));
                dhi = vdotq_s32(dhi, vreinterpretq_s8_u8(hi), vld1q_s8(y + 32 + 16 * k));
            }
            isum = vmlaq_n_s32(isum, dlo, sm[2 * c]);
            isum = vmlaq_n_s32(isum, dhi, sm[2 * c + 1]);
        }
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(isum), f16_at(&hdr->d) * b[i].d);
        acc_min += f16_at(&hdr->dmin) * b[i].d * (float)vaddvq_s32(pm);
    }
    return vaddvq_f32(acc) - acc_min;
}

static float dot_q4_k(int n, const void *w, const void *x) { return dot_k_affine(n, w, x, false); }
static float dot_q5_k(int n, const void *w, const void *x) { return dot_k_affine(n, w, x, true); }

/* Q6_K: weight = (4 low bits from ql | 2 high bits from qh) - 32. Each 128 weights: ql[64],
 * qh[32]; chunk c (32 weights) takes the low (c < 2) or high nibbles of ql[32·(c&1) + l] and
 * bits 2c..2c+1 of qh[l]. Every 16 weights (one int8 scale) are one sdot. */
static float dot_q6_k(int n, const void *w, const void *x)
{
    const qt_block_q6_k *a = w;
    const qt_block_q8_k *b = x;
    const uint8x16_t low4 = vdupq_n_u8(0x0F), low2 = vdupq_n_u8(0x03);
    const int8x16_t thirty_two = vdupq_n_s8(32);
    float32x4_t acc = vdupq_n_f32(0);
    for (int i = 0; i < n / QK_K; i++) {
        int32x4_t isum = vdupq_n_s32(0);
#pragma GCC unroll 4
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = a[i].ql + 64 * h, *qh = a[i].qh + 32 * h;
            const int8_t *y = b[i].qs + 128 * h, *sc = a[i].scales + 8 * h;
#pragma GCC unroll 4
            for (int k = 0; k < 2; k++) { /* lanes l = 16k .. 16k+15 of each chunk */
                const uint8x16_t l0 = vld1q_u8(ql + 16 * k), l1 = vld1q_u8(ql + 32 + 16 * k);
                const uint8x16_t hb = vld1q_u8(qh + 16 * k);
                const uint8x16_t u[4] = {
                    vorrq_u8(vandq_u8(l0, low4), vshlq_n_u8(vandq_u8(hb, low2), 4)),
                    vorrq_u8(vandq_u8(l1, low4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), low2), 4)),
                    vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), low2), 4)),
                    vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4)),
                };
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) {
                    int8x16_t v = vsubq_s8(vreinterpretq_s8_u8(u[c]), thirty_two);
                    int32x4_t d = vdotq_s32(vdupq_n_s32(0), v, vld1q_s8(y + 32 * c + 16 * k));
                    isum = vmlaq_n_s32(isum, d, sc[2 * c + k]);
                }
            }
        }
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(isum), f16_at(&a[i].d) * b[i].d);
    }
    return vaddvq_f32(acc);
}

/* ---- activation quantizers ----------------------------------------------
 * Same float operations as qt_quantize_row in the same order, so the bytes are identical:
 * vcvtnq rounds to nearest even, as lrintf does under the default rounding mode. */

KN_INLINE float absmax(const float *x, int n) /* n a multiple of 4 */
{
    float32x4_t m = vdupq_n_f32(0);
    for (int j = 0; j < n; j += 4)
        m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + j))); /* maxNum: a NaN never wins */
    return vmaxnmvq_f32(m);
}

/* round(x[j] * scale) for 16 floats as int8; saturation clamps at 127 (the Q8_K clamp). */
KN_INLINE int8x16_t round16(const float *x, float scale)
{
    int16x8_t h[2];
#pragma GCC unroll 4
    for (int k = 0; k < 2; k++) {
        int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 8 * k), scale));
        int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 8 * k + 4), scale));
        h[k] = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    }
    return vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1]));
}

/* One Q8_0/Q8_1 block: d = absmax / 127, levels round(x / d); returns d and Σ levels. */
KN_INLINE float quant_block32(const float *x, int8_t *qs, int *sum)
{
    float d = absmax(x, 32) / 127.0f, id = d ? 1.0f / d : 0.0f;
    int8x16_t a = round16(x, id), b = round16(x + 16, id);
    vst1q_s8(qs, a);
    vst1q_s8(qs + 16, b);
    *sum = vaddlvq_s8(a) + vaddlvq_s8(b);
    return d;
}

static void quantize_q8_0(const float *x, void *y, int n)
{
    qt_block_q8_0 *b = y;
    int sum;
    for (int i = 0; i < n / QK8_0; i++, x += QK8_0) {
        __fp16 d = (__fp16)quant_block32(x, b[i].qs, &sum);
        memcpy(&b[i].d, &d, sizeof d);
    }
}

static void quantize_q8_1(const float *x, void *y, int n)
{
    qt_block_q8_1 *b = y;
    int sum;
    for (int i = 0; i < n / QK8_1; i++, x += QK8_1) {
        float d = quant_block32(x, b[i].qs, &sum);
        __fp16 dh = (__fp16)d, sh = (__fp16)(d * (float)sum);
        memcpy(&b[i].d, &dh, sizeof dh);
        memcpy(&b[i].s, &sh, sizeof sh);
    }
}

/* Q8_K: the first element of largest magnitude maps to -127 exactly (its sign matters). */
static void quantize_q8_k(const float *x, void *y, int n)
{
    qt_block_q8_k *b = y;
    for (int i = 0; i < n / QK_K; i++, x += QK_K) {
        const float amax = absmax(x, QK_K);
        if (amax == 0) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        int at_max = 0;
        while (__builtin_fabsf(x[at_max]) != amax)
            at_max++;
        const float iscale = -127.0f / x[at_max];
        for (int j = 0; j < QK_K; j += 16) {
            int8x16_t q = round16(x + j, iscale);
            vst1q_s8(b[i].qs + j, q);
            b[i].bsums[j / 16] = vaddlvq_s8(q);
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---- attention's softmax and the f16 cache ---------------------------- */

#define KSM_BYTES 16
#include "kern_softmax_isa.h"


static void f32_to_f16(int n, const float *x, qt_f16 *y)
{
    int i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_f16((__fp16 *)y + i, vcvt_f16_f32(vld1q_f32(x + i)));
    for (; i < n; i++) {
        __fp16 h = (__fp16)x[i];
        memcpy(y + i, &h, sizeof h);
    }
}

/* ---- gemm: row-interleaved tiles (kern_tile.h) --------------------------
 * A strip is 4 rows, one per int32 lane. Panel vectors hold four consecutive signed
 * weights of every row (lane r: row r); sdot by element multiplies them with one 32-bit
 * lane of an activation vector, so activations need no broadcasts. Weights are signed as
 * sdot wants them: no offsets, and Q6_K needs no correction. */

enum { STRIP = 4, COLS32 = 8, COLSK = 4, COLSF = 8 }; /* rows per strip; columns per tile32, tilek, tilef */

/* A strip's rows. */
typedef struct strip {
    const uint8_t *row[STRIP];
} strip;

KN_INLINE strip strip_rows(const uint8_t *w, size_t w_stride)
{
    return (strip){{w, w + w_stride, w + 2 * w_stride, w + 3 * w_stride}};
}

typedef int8x16_t vint;
typedef float32x4_t vfloat;
/* sdot takes signed weights; sub-block scales and Q4_K/Q5_K's mins (corr) are int32 lanes
 * (kern_tile_isa.h) */
enum { SIGNED_LEVELS = 1, SCALE_PAIRS = 0, CORR_PAIRS = 0 };

KN_INLINE float32x4_t vf_fma(float32x4_t acc, float32x4_t a, float32x4_t b) { return vfmaq_f32(acc, a, b); }
KN_INLINE float32x4_t vf_splat(float s) { return vdupq_n_f32(s); }

/* The 16 bytes at row r + off, as dword k of row r in lane r of q[k] (a 4x4 transpose). */
KN_INLINE void load16x4(const strip *s, size_t off, vint q[4])
{
    uint32x4_t a[4];
#pragma GCC unroll 4
    for (int r = 0; r < STRIP; r++)
        a[r] = vreinterpretq_u32_u8(vld1q_u8(s->row[r] + off));
    const uint32x4_t t0 = vtrn1q_u32(a[0], a[1]), t1 = vtrn2q_u32(a[0], a[1]);
    const uint32x4_t t2 = vtrn1q_u32(a[2], a[3]), t3 = vtrn2q_u32(a[2], a[3]);
    q[0] = vreinterpretq_s8_u64(vzip1q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2)));
    q[1] = vreinterpretq_s8_u64(vzip1q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3)));
    q[2] = vreinterpretq_s8_u64(vzip2q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2)));
    q[3] = vreinterpretq_s8_u64(vzip2q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3)));
}

/* The f16 at row r + off of each row, as floats in lane r. */
KN_INLINE float32x4_t gather_f16(const strip *s, size_t off)
{
    uint64_t q = 0;
#pragma GCC unroll 4
    for (int r = 0; r < STRIP; r++) {
        uint16_t h;
        memcpy(&h, s->row[r] + off, sizeof h);
        q |= (uint64_t)h << (16 * r);
    }
    return vcvt_f32_f16(vreinterpret_f16_u64(vcreate_u64(q)));
}

/* The f16 in the low half of each int32 lane, as floats. */
KN_INLINE float32x4_t low_f16(vint v) { return vcvt_f32_f16(vreinterpret_f16_u16(vmovn_u32(vreinterpretq_u32_s8(v)))); }

/* The little-endian 32-bit word at row r + off of each row, in lane r. */
KN_INLINE uint32x4_t gather_u32(const strip *s, size_t off)
{
    uint32_t v[STRIP];
#pragma GCC unroll 4
    for (int r = 0; r < STRIP; r++)
        memcpy(&v[r], s->row[r] + off, sizeof v[r]);
    return vld1q_u32(v);
}

/* acc + Σ_k q[k]·(lane k of y), four weights of each row against four activations each. */
KN_INLINE int32x4_t dot_lanes(int32x4_t acc, const int8x16_t q[4], int8x16_t y)
{
    acc = vdotq_laneq_s32(acc, q[0], y, 0);
    acc = vdotq_laneq_s32(acc, q[1], y, 1);
    acc = vdotq_laneq_s32(acc, q[2], y, 2);
    return vdotq_laneq_s32(acc, q[3], y, 3);
}

/* out[r] for r < nrows: v, or v plus what is there. */
KN_INLINE void store_rows(float *out, float32x4_t v, int nrows, bool accumulate)
{
    if (nrows == STRIP) {
        vst1q_f32(out, accumulate ? vaddq_f32(v, vld1q_f32(out)) : v);
        return;
    }
    float lanes[STRIP];
    vst1q_f32(lanes, v);
    for (int r = 0; r < nrows; r++)
        out[r] = accumulate ? out[r] + lanes[r] : lanes[r];
}

/* Activation facts for the 32-weight types: d (and Q8_1's s) as floats; no offsets. */
KN_INLINE void act32(const uint8_t *x, int nb, kt_act *t, bool q8_1)
{
    const size_t bytes = q8_1 ? sizeof(qt_block_q8_1) : sizeof(qt_block_q8_0);
    for (int b = 0; b < nb; b++, x += bytes)
        t[b] = (kt_act){f16_at(x), 0, q8_1 ? f16_at(x + 2) : 0.0f};
}

static void act_q8_0(const uint8_t *x, int nb, kt_act *t) { act32(x, nb, t, false); }
static void act_q8_1(const uint8_t *x, int nb, kt_act *t) { act32(x, nb, t, true); }

/* -- 32-weight blocks: one panel entry per block; weights by dword of the block (dword g:
 * weights 4g..4g+3, as in the activation block), d and (affine types) m per row. */
typedef struct panel32 {
    int8x16_t q[8];
    float32x4_t d, m;
} panel32;

/* -- K types: one panel entry per 256-weight block. q[i]: weights 4i..4i+3; sub-block s
 * (of 32 weights for Q4_K/Q5_K, 16 for Q6_K) scaled by sc[s]; Q4_K/Q5_K's mins corr[j]
 * times the y sums of sub-block j; result d·d_y·Σ sc·w·y + d2·d_y·Σ corr·ysum, d2 = -dmin. */
typedef struct panelk {
    int8x16_t q[64];
    int32x4_t sc[16], corr[8];
    float32x4_t d, d2;
} panelk;
enum { /* K blocks per chunk: as many as the panel and the stage hold */
    K_CHUNK = KT_PANEL_BYTES / sizeof(panelk) < KT_STAGE_BYTES / (STRIP * sizeof(qt_block_q6_k))
                  ? KT_PANEL_BYTES / sizeof(panelk)
                  : KT_STAGE_BYTES / (STRIP * sizeof(qt_block_q6_k))
};

#include "kern_tile_isa.h"

KN_INLINE void unpack_q8_0(const strip *row, size_t off, panel32 *p)
{
    load16x4(row, off + offsetof(qt_block_q8_0, qs), p->q);
    load16x4(row, off + offsetof(qt_block_q8_0, qs) + 16, p->q + 4);
    p->d = gather_f16(row, off);
}

/* sdot of the eight dwords of weights with the lanes of y. */
KTI_INLINE kv_sum block_dot32(const panel32 *p, const uint8_t *y, int32_t offset, bool split, traits32 tr)
{
    (void)split, (void)tr;
    const int8_t *ys = (const int8_t *)y;
    return (kv_sum)dot_lanes(dot_lanes(vdupq_n_s32(offset), p->q, vld1q_s8(ys)), p->q + 4, vld1q_s8(ys + 16));
}

KT_TILE32(q4_0, q8_0, act_q8_0, ((traits32){false, 15, false}))
KT_TILE32(q4_1, q8_1, act_q8_1, ((traits32){true, 15, false}))
KT_TILE32(q5_0, q8_0, act_q8_0, ((traits32){false, 31, false}))
KT_TILE32(q5_1, q8_1, act_q8_1, ((traits32){true, 31, false}))
KT_TILE32_MATVEC(q8_0, q8_0, act_q8_0, ((traits32){false, 127, true}), NULL)

/* Per column and sub-block, sdot of its dwords with the lanes of y, times its scale. */
KTI_INLINE void block_dotk(const panelk *p, const qt_block_q8_k *const y[], int nc, kv_sum tot[], traitsk tr)
{
    const int per = 64 / tr.nsub; /* dwords per sub-block */
#pragma GCC unroll 8
    for (int c = 0; c < nc; c++) {
        int32x4_t t = vdupq_n_s32(0);
        for (int s = 0; s < tr.nsub; s++) {
            int32x4_t sum = vdupq_n_s32(0);
#pragma GCC unroll 2
            for (int g = 0; g < per; g += 4)
                sum = dot_lanes(sum, p->q + per * s + g, vld1q_s8(y[c]->qs + 4 * (per * s + g)));
            t = vmlaq_s32(t, sum, p->sc[s]);
        }
        tot[c] = (kv_sum)t;
    }
}

/* Q4_K/Q5_K's mins times the y sums of the eight sub-blocks (pairs of bsums). */
KTI_INLINE kv_sum block_corrk(const panelk *p, const qt_block_q8_k *y)
{
    const int16x8_t ysum = vpaddq_s16(vld1q_s16(y->bsums), vld1q_s16(y->bsums + 8));
    const int32x4_t lo = vmovl_s16(vget_low_s16(ysum)), hi = vmovl_s16(vget_high_s16(ysum));
    int32x4_t corr = vmulq_laneq_s32(p->corr[0], lo, 0);
    corr = vmlaq_laneq_s32(corr, p->corr[1], lo, 1);
    corr = vmlaq_laneq_s32(corr, p->corr[2], lo, 2);
    corr = vmlaq_laneq_s32(corr, p->corr[3], lo, 3);
    corr = vmlaq_laneq_s32(corr, p->corr[4], hi, 0);
    corr = vmlaq_laneq_s32(corr, p->corr[5], hi, 1);
    corr = vmlaq_laneq_s32(corr, p->corr[6], hi, 2);
    return (kv_sum)vmlaq_laneq_s32(corr, p->corr[7], hi, 3);
}

KT_TILEK(q4_k, ((traitsk){8, true, 15}))
KT_TILEK(q5_k, ((traitsk){8, true, 31}))
KT_TILEK(q6_k, ((traitsk){16, false, 63}))

KT_TILEF(f32, 4)
KT_TILEF(f16, 8)
KT_TILEF(bf16, 8)

const kern_ops kern_ops_neon = {
    .name = "neon",
    .dot =
        {
            [QT_F32] = dot_f32,
            [QT_F16] = dot_f16,
            [QT_BF16] = dot_bf16,
            [QT_Q4_0] = dot_q4_0,
            [QT_Q4_1] = dot_q4_1,
            [QT_Q5_0] = dot_q5_0,
            [QT_Q5_1] = dot_q5_1,
            [QT_Q8_0] = dot_q8_0,
            [QT_Q4_K] = dot_q4_k,
            [QT_Q5_K] = dot_q5_k,
            [QT_Q6_K] = dot_q6_k,
        },
    .quantize = {[QT_Q8_0] = quantize_q8_0, [QT_Q8_1] = quantize_q8_1, [QT_Q8_K] = quantize_q8_k},
    .softmax = ksm_softmax,
    .f32_to_f16 = f32_to_f16,
    .gemm =
        {
            [QT_F32] = gemm_f32,
            [QT_F16] = gemm_f16,
            [QT_BF16] = gemm_bf16,
            [QT_Q4_0] = gemm_q4_0,
            [QT_Q4_1] = gemm_q4_1,
            [QT_Q5_0] = gemm_q5_0,
            [QT_Q5_1] = gemm_q5_1,
            [QT_Q8_0] = gemm_q8_0,
            [QT_Q4_K] = gemm_q4_k,
            [QT_Q5_K] = gemm_q5_k,
            [QT_Q6_K] = gemm_q6_k,
        },
};
