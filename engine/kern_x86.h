/* kern_x86 — private to the two x86 kernel files (kern_avx2.c, kern_avx512.c): the pieces
 * both use, written once. Each of those files includes this header and so compiles it with
 * its own target flags; everything here needs AVX2 + FMA + F16C and nothing more.
 *
 * Holds: horizontal sums, block-scale conversion, the K-quant scale unpacking, the
 * activation quantizers and attention's softmax (O(n) next to the O(n·rows) products around
 * them, so 256-bit code is as good as 512-bit there), the f16 KV-cache helper, and the
 * macros that make each file's dot entries and table. Not a public header: kern.h is the API. */
#ifndef EDGELLM_KERN_X86_H
#define EDGELLM_KERN_X86_H

#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "kern.h"
#include "kern_tile.h"

#define KX_INLINE static inline __attribute__((always_inline))

KX_INLINE float kx_f16(qt_f16 h) { return _cvtsh_ss(h); }

KX_INLINE float kx_hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* d_w·d_x of 4 consecutive blocks: the f16 at the start of each weight block (stride
 * wstride) times the one at the start of its activation block (stride xstride). The eight
 * halves are gathered with integer loads and converted by one instruction, which costs the
 * vector units far less than converting each block's pair on its own. */
KX_INLINE __m128 kx_scale_products4(const uint8_t *w, size_t wstride, const uint8_t *x, size_t xstride)
{
    uint64_t wd = 0, xd = 0;
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        uint16_t a, b;
        memcpy(&a, w + k * wstride, sizeof a);
        memcpy(&b, x + k * xstride, sizeof b);
        wd |= (uint64_t)a << (16 * k);
        xd |= (uint64_t)b << (16 * k);
    }
    const __m256 f = _mm256_cvtph_ps(_mm_set_epi64x((long long)xd, (long long)wd));
    return _mm_mul_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
}

/* Sums of the two groups of 16 int8 in q (bytes 0-15 and 16-31): pair sums, then each
 * 128-bit lane's total. */
KX_INLINE void kx_sums16(__m256i q, int *first, int *second)
{
    __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
    s = _mm256_hadd_epi32(s, s);
    s = _mm256_hadd_epi32(s, s);
    *first = _mm256_extract_epi32(s, 0);
    *second = _mm256_extract_epi32(s, 4);
}

/* The 6-bit scales and mins of a Q4_K/Q5_K block, unpacked from scales[12] into bytes
 * [sc0..sc7, m0..m7]. Packing (see qtype.c): sub-blocks 0-3 keep scale and min in the low
 * 6 bits of bytes 0-3 and 4-7; sub-blocks 4-7 keep their low 4 bits in the nibbles of bytes
 * 8-11 and their top 2 bits in the top bits of bytes 0-3 (scales) and 4-7 (mins).
 * Reads 16 bytes: the block continues past scales[12] (qs or qh), so this stays inside it. */
KX_INLINE __m128i kx_k_scales(const uint8_t *scales)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)scales);
    /* per output byte: the byte holding its low bits, and (for sub-blocks 4-7) the one
     * holding its top two bits; -1 gives zero */
    const __m128i low = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m128i top = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    const __m128i low_mask = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
    const __m128i high_nibble_mask = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15);
    __m128i r = _mm_and_si128(low, low_mask);
    r = _mm_or_si128(r, _mm_and_si128(_mm_srli_epi16(low, 4), high_nibble_mask));       /* mins 4-7: high nibble */
    return _mm_or_si128(r, _mm_and_si128(_mm_srli_epi16(top, 2), _mm_set1_epi8(0x30))); /* (b >> 6) << 4 */
}

/* Q4_K/Q5_K mins against Q8_K's bsums: lane j = m_j·(bsums[2j] + bsums[2j+1]), the y sum
 * of sub-block j times its min (scales_mins as from kx_k_scales; |lane| < 63·2·16·127 < 2^18). */
KX_INLINE __m256i kx_k_min_products(__m128i scales_mins, const int16_t *bsums)
{
    const __m256i mins = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(scales_mins, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), mins);
}

/* ---- activation quantizers ----------------------------------------------
 * Same float operations as qt_quantize_row in the same order, so the bytes are identical:
 * _mm256_cvtps_epi32 rounds to nearest even under the default MXCSR, as lrintf does. */

KX_INLINE __m256 kx_abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

KX_INLINE float kx_absmax(const float *x, int n) /* n a multiple of 8 */
{
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8)
        m = _mm256_max_ps(m, kx_abs_ps(_mm256_loadu_ps(x + j)));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* round(x[j] * scale) for 32 floats, packed to int8 in order. Saturation of the packs
 * clamps at 127, which is the reference's clamp for Q8_K; nothing rounds below -127. */
KX_INLINE __m256i kx_round32(const float *x, __m256 scale)
{
    __m256i q[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), scale));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    /* packs work per 128-bit lane: the int32 groups come out as 0,2,4,6,1,3,5,7 */
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* One Q8_0/Q8_1 block: d = absmax / 127, levels round(x / d). Returns d (as float). */
KX_INLINE float kx_quant_block32(const float *x, int8_t *qs)
{
    float d = kx_absmax(x, 32) / 127.0f, id = d ? 1.0f / d : 0.0f;
    _mm256_storeu_si256((__m256i *)qs, kx_round32(x, _mm256_set1_ps(id)));
    return d;
}

static inline void kx_quantize_q8_0(const float *x, void *y, int n)
{
    qt_block_q8_0 *b = y;
    for (int i = 0; i < n / QK8_0; i++, x += QK8_0)
        b[i].d = _cvtss_sh(kx_quant_block32(x, b[i].qs), _MM_FROUND_TO_NEAREST_INT);
}

static inline void kx_quantize_q8_1(const float *x, void *y, int n)
{
    qt_block_q8_1 *b = y;
    for (int i = 0; i < n / QK8_1; i++, x += QK8_1) {
        float d = kx_quant_block32(x, b[i].qs);
        int first, second;
        kx_sums16(_mm256_loadu_si256((const __m256i *)b[i].qs), &first, &second);
        b[i].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        b[i].s = _cvtss_sh(d * (float)(first + second), _MM_FROUND_TO_NEAREST_INT);
    }
}

/* Q8_K: the first element of largest magnitude maps to -127 exactly (its sign matters). */
static inline void kx_quantize_q8_k(const float *x, void *y, int n)
{
    qt_block_q8_k *b = y;
    for (int i = 0; i < n / QK_K; i++, x += QK_K) {
        const float amax = kx_absmax(x, QK_K);
        if (amax == 0) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        int at_max = 0;
        for (int j = 0; j < QK_K; j += 8) {
            int hit =
                _mm256_movemask_ps(_mm256_cmp_ps(kx_abs_ps(_mm256_loadu_ps(x + j)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (hit) {
                at_max = j + __builtin_ctz((unsigned)hit);
                break;
            }
        }
        const float iscale = -127.0f / x[at_max];
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q = kx_round32(x + j, _mm256_set1_ps(iscale));
            _mm256_storeu_si256((__m256i *)(b[i].qs + j), q);
            int first, second;
            kx_sums16(q, &first, &second);
            b[i].bsums[j / 16] = (int16_t)first;
            b[i].bsums[j / 16 + 1] = (int16_t)second;
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---- gemm: activation facts (kern_tile.h) --------------------------------
 * For the 32-weight types: each Q8_0/Q8_1 block's scale (and Q8_1's s) as floats, and the
 * share of the weight offset, -offset·Σqs, that the tiles start their integer sums from
 * (their panels hold unsigned levels, weight + offset, for the u8 x s8 instructions). */

/* Σqs of 8 consecutive activation blocks (bytes apart, levels at qs): each block's pair
 * sums, then one tree of horizontal adds for all eight (lanes = blocks). */
KX_INLINE __m256i kx_level_sums8(const uint8_t *x, size_t bytes, size_t qs)
{
    __m256i s[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        s[k] = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_set1_epi8(1), _mm256_loadu_si256((const __m256i *)(x + k * bytes + qs))),
            _mm256_set1_epi16(1));
    /* each hadd level halves the vectors; 128-bit lanes keep the two halves of every block */
    const __m256i q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    const __m256i q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
}

KX_INLINE void kx_act32(const uint8_t *x, int nb, kt_act *t, int offset, bool q8_1)
{
    const size_t bytes = q8_1 ? sizeof(qt_block_q8_1) : sizeof(qt_block_q8_0);
    const size_t qs = q8_1 ? offsetof(qt_block_q8_1, qs) : offsetof(qt_block_q8_0, qs);
    for (int b = 0; b < nb; b += 8) {
        int32_t sums[8] = {0};
        if (offset && b + 8 <= nb) {
            _mm256_storeu_si256((__m256i *)sums, kx_level_sums8(x + (size_t)b * bytes, bytes, qs));
        } else if (offset) { /* the last 1-7 blocks */
            for (int k = 0; k < nb - b; k++) {
                int first, second;
                kx_sums16(_mm256_loadu_si256((const __m256i *)(x + (size_t)(b + k) * bytes + qs)), &first, &second);
                sums[k] = first + second;
            }
        }
        for (int k = 0; k < 8 && b + k < nb; k++) {
            const uint8_t *blk = x + (size_t)(b + k) * bytes;
            qt_f16 h[2];
            memcpy(h, blk, sizeof h);
            t[b + k] = (kt_act){kx_f16(h[0]), -offset * sums[k], q8_1 ? kx_f16(h[1]) : 0.0f};
        }
    }
}

static inline void kx_act_q8_0(const uint8_t *x, int nb, kt_act *t) { kx_act32(x, nb, t, 0, false); }
static inline void kx_act_offset8(const uint8_t *x, int nb, kt_act *t) { kx_act32(x, nb, t, 8, false); }
static inline void kx_act_offset16(const uint8_t *x, int nb, kt_act *t) { kx_act32(x, nb, t, 16, false); }
static inline void kx_act_offset128(const uint8_t *x, int nb, kt_act *t) { kx_act32(x, nb, t, 128, false); }
static inline void kx_act_q8_1(const uint8_t *x, int nb, kt_act *t) { kx_act32(x, nb, t, 0, true); }

/* ---- attention's softmax and the f16 cache ---------------------------- */

#define KSM_BYTES 32
#include "kern_softmax_isa.h"

static inline void kx_f32_to_f16(int n, const float *x, qt_f16 *y)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

/* dot_<type> for a 32-weight type from the including file's dot_q32 and levels_<type>:
 * levels carry the weight plus offset (or, offset -1, are signed weights); has_min marks the
 * affine types (Q8_1 activations). */
#define KX_DOT_Q32(type, offset, has_min)                                                 \
    static float dot_##type(int n, const void *w, const void *x)                          \
    {                                                                                     \
        return dot_q32(n, w, x, sizeof(qt_block_##type), levels_##type, offset, has_min); \
    }

/* The table an x86 kernel file exports (kern.c completes and offers it): its own static
 * dot_<type> and gemm_<type> functions, the quantizers and f16 helpers above, and the
 * strips entries the file defines as KX_STRIPS (an initializer of kern_ops.strips). */
#define KX_KERN_OPS(isa)                                                                                        \
    const kern_ops kern_ops_##isa = {                                                                           \
        .name = #isa,                                                                                           \
        .dot = {[QT_F32] = dot_f32,                                                                             \
                [QT_F16] = dot_f16,                                                                             \
                [QT_BF16] = dot_bf16,                                                                           \
                [QT_Q4_0] = dot_q4_0,                                                                           \
                [QT_Q4_1] = dot_q4_1,                                                                           \
                [QT_Q5_0] = dot_q5_0,                                                                           \
                [QT_Q5_1] = dot_q5_1,                                                                           \
                [QT_Q8_0] = dot_q8_0,                                                                           \
                [QT_Q4_K] = dot_q4_k,                                                                           \
                [QT_Q5_K] = dot_q5_k,                                                                           \
                [QT_Q6_K] = dot_q6_k},                                                                          \
        .quantize = {[QT_Q8_0] = kx_quantize_q8_0, [QT_Q8_1] = kx_quantize_q8_1, [QT_Q8_K] = kx_quantize_q8_k}, \
        .softmax = ksm_softmax,                                                                                 \
        .f32_to_f16 = kx_f32_to_f16,                                                                            \
        .gemm = {[QT_F32] = gemm_f32,                                                                           \
                 [QT_F16] = gemm_f16,                                                                           \
                 [QT_BF16] = gemm_bf16,                                                                         \
                 [QT_Q4_0] = gemm_q4_0,                                                                         \
                 [QT_Q4_1] = gemm_q4_1,                                                                         \
                 [QT_Q5_0] = gemm_q5_0,                                                                         \
                 [QT_Q5_1] = gemm_q5_1,                                                                         \
                 [QT_Q8_0] = gemm_q8_0,                                                                         \
                 [QT_Q4_K] = gemm_q4_k,                                                                         \
                 [QT_Q5_K] = gemm_q5_k,                                                                         \
                 [QT_Q6_K] = gemm_q6_k},                                                                        \
        .strips = KX_STRIPS,                                                                                    \
    }

#endif
