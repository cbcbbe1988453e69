/* kern_avx512 — AVX-512 (F, BW, VL, DQ) + VNNI kernels: the row dot products at 512 bits,
 * the gemm tiles of prefill and decode (16-row strips, kern_tile.h), plus the shared x86
 * quantizers and f16 helpers (kern_x86.h), whose O(n) cost gains nothing from wider
 * registers.
 *
 * 32-weight block types go two blocks per register. VNNI's vpdpbusd sums four u8 x s8
 * products straight into int32 lanes without the s16 saturation of maddubs, so weights are
 * taken as unsigned levels u = w + offset and the offset comes back out exactly:
 * Σ w·y = Σ u·y - offset·Σ y. K types multiply pair sums (maddubs, |pair| < 2^15) by their
 * sub-block scales with vpdpwssd. Float parts as in kern_avx2.c.
 * Not here: choosing this table (kern.c) or the definition of each result (kern_ref.c). */
#include "kern_x86.h"

#include <stdbool.h>
#include <stddef.h>

/* ---- float weights: F32, F16, BF16 ------------------------------------- */

typedef __m512 (*load16_fn)(const void *w, int i, __mmask16 keep); /* weights i..i+15, 0 where !keep */

KX_INLINE __m512 load16_f32(const void *w, int i, __mmask16 keep)
{
    return _mm512_maskz_loadu_ps(keep, (const float *)w + i);
}

KX_INLINE __m512 load16_f16(const void *w, int i, __mmask16 keep)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(keep, (const qt_f16 *)w + i));
}

KX_INLINE __m512 load16_bf16(const void *w, int i, __mmask16 keep)
{
    __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(keep, (const qt_bf16 *)w + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)); /* bf16 is the top half of an f32 */
}

KX_INLINE float dot_floats(int n, const void *w, const float *x, load16_fn load)
{
    const __mmask16 all = 0xFFFF;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int i = 0;
    for (; i + 64 <= n; i += 64)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            acc[k] = _mm512_fmadd_ps(load(w, i + 16 * k, all), _mm512_loadu_ps(x + i + 16 * k), acc[k]);
    for (; i + 16 <= n; i += 16)
        acc[0] = _mm512_fmadd_ps(load(w, i, all), _mm512_loadu_ps(x + i), acc[0]);
    if (i < n) { /* masked loads read nothing past the row */
        const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
        acc[1] = _mm512_fmadd_ps(load(w, i, tail), _mm512_maskz_loadu_ps(tail, x + i), acc[1]);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

static float dot_f32(int n, const void *w, const void *x) { return dot_floats(n, w, x, load16_f32); }
static float dot_f16(int n, const void *w, const void *x) { return dot_floats(n, w, x, load16_f16); }
static float dot_bf16(int n, const void *w, const void *x) { return dot_floats(n, w, x, load16_bf16); }

/* ---- 32-weight blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 --------------------- */

/* The nibbles of blocks a and b as 64 levels in element order: [a lo, a hi, b lo, b hi]. */
KX_INLINE __m512i nibbles64(const uint8_t *qa, const uint8_t *qb)
{
    __m512i z =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qa))),
                           _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qb)), 1);
    z = _mm512_mask_srli_epi16(z, 0xFF00FF00u, z, 4); /* 128-bit lanes 1 and 3: high nibbles */
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
}

/* Fifth bits of blocks a and b (qh: one little-endian 32-bit word each) as a byte mask. */
KX_INLINE __mmask64 bits64(const uint8_t *qha, const uint8_t *qhb)
{
    uint32_t a, b;
    memcpy(&a, qha, 4);
    memcpy(&b, qhb, 4);
    return (__mmask64)a | (__mmask64)b << 32;
}

/* Unsigned levels of two blocks of one type (each level = weight + the type's offset). */
typedef __m512i (*levels64_fn)(const uint8_t *a, const uint8_t *b);

KX_INLINE __m512i levels_q4_0(const uint8_t *a, const uint8_t *b)
{
    return nibbles64(((const qt_block_q4_0 *)a)->qs, ((const qt_block_q4_0 *)b)->qs);
}

KX_INLINE __m512i levels_q4_1(const uint8_t *a, const uint8_t *b)
{
    return nibbles64(((const qt_block_q4_1 *)a)->qs, ((const qt_block_q4_1 *)b)->qs);
}

KX_INLINE __m512i levels_q5_0(const uint8_t *a, const uint8_t *b)
{
    const qt_block_q5_0 *qa = (const void *)a, *qb = (const void *)b;
    __m512i u = nibbles64(qa->qs, qb->qs);
    return _mm512_mask_add_epi8(u, bits64(qa->qh, qb->qh), u, _mm512_set1_epi8(16));
}

KX_INLINE __m512i levels_q5_1(const uint8_t *a, const uint8_t *b)
{
    const qt_block_q5_1 *qa = (const void *)a, *qb = (const void *)b;
    __m512i u = nibbles64(qa->qs, qb->qs);
    return _mm512_mask_add_epi8(u, bits64(qa->qh, qb->qh), u, _mm512_set1_epi8(16));
}

KX_INLINE __m512i levels_q8_0(const uint8_t *a, const uint8_t *b)
{
    __m512i v =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)((const qt_block_q8_0 *)a)->qs)),
                           _mm256_loadu_si256((const __m256i *)((const qt_block_q8_0 *)b)->qs), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80)); /* w + 128 */
}

/* Σ levels·y of blocks a and b against their activation blocks, as floats: lanes 0-7 hold
 * block a's partial sums, 8-15 block b's (exact: |partial| < 2^24). */
KX_INLINE __m512 pair_sums(const uint8_t *wa, const uint8_t *wb, const uint8_t *xa, const uint8_t *xb,
                           levels64_fn levels, int offset, bool has_min)
{
    const size_t xqs = has_min ? offsetof(qt_block_q8_1, qs) : offsetof(qt_block_q8_0, qs);
    const __m512i y = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(xa + xqs))),
                                         _mm256_loadu_si256((const __m256i *)(xb + xqs)), 1);
    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), levels(wa, wb), y);
    if (offset)
        s = _mm512_sub_epi32(s, _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)offset), y));
    return _mm512_cvtepi32_ps(s);
}

/* Every 32-weight type starts with its f16 scale d; the affine ones (has_min) follow it with
 * the f16 min m and take Q8_1 activations, whose s = d·Σqs supplies m's share: m·s. */
KX_INLINE float dot_q32(int n, const void *w, const void *x, size_t block_bytes, levels64_fn levels, int offset,
                        bool has_min)
{
    const size_t xbytes = has_min ? sizeof(qt_block_q8_1) : sizeof(qt_block_q8_0);
    const uint8_t *wb = w, *xb = x;
    const __m512i first_two = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i last_two = _mm512_add_epi32(first_two, _mm512_set1_epi32(2));
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m128 acc_min = _mm_setzero_ps();
    int nb = n / 32, i = 0;
    /* four blocks per step, their scales converted together, into two FMA chains */
    for (; i + 4 <= nb; i += 4, wb += 4 * block_bytes, xb += 4 * xbytes) {
        const __m512 d = _mm512_castps128_ps512(kx_scale_products4(wb, block_bytes, xb, xbytes));
        acc0 = _mm512_fmadd_ps(pair_sums(wb, wb + block_bytes, xb, xb + xbytes, levels, offset, has_min),
                               _mm512_permutexvar_ps(first_two, d), acc0);
        acc1 = _mm512_fmadd_ps(pair_sums(wb + 2 * block_bytes, wb + 3 * block_bytes, xb + 2 * xbytes, xb + 3 * xbytes,
                                         levels, offset, has_min),
                               _mm512_permutexvar_ps(last_two, d), acc1);
        if (has_min)
            acc_min = _mm_add_ps(acc_min, kx_scale_products4(wb + 2, block_bytes, xb + 2, xbytes));
    }
    /* the last 0-3 blocks in pairs; an odd one is paired with itself and its twin's share dropped */
    for (; i < nb; i += 2, wb += 2 * block_bytes, xb += 2 * xbytes) {
        const bool pair = i + 1 < nb;
        const uint8_t *wb2 = pair ? wb + block_bytes : wb, *xb2 = pair ? xb + xbytes : xb;
        const qt_f16 *wh = (const qt_f16 *)wb, *xh = (const qt_f16 *)xb, *wh2 = (const qt_f16 *)wb2,
                     *xh2 = (const qt_f16 *)xb2;
        const float da = kx_f16(wh[0]) * kx_f16(xh[0]), db = pair ? kx_f16(wh2[0]) * kx_f16(xh2[0]) : 0.0f;
        acc0 = _mm512_fmadd_ps(pair_sums(wb, wb2, xb, xb2, levels, offset, has_min),
                               _mm512_insertf32x8(_mm512_set1_ps(da), _mm256_set1_ps(db), 1), acc0);
        if (has_min)
            acc_min = _mm_add_ps(acc_min, _mm_setr_ps(kx_f16(wh[1]) * kx_f16(xh[1]),
                                                      pair ? kx_f16(wh2[1]) * kx_f16(xh2[1]) : 0.0f, 0, 0));
    }
    return _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_insertf32x4(_mm512_setzero_ps(), acc_min, 0)));
}

KX_DOT_Q32(q4_0, 8, false)
KX_DOT_Q32(q4_1, 0, true)
KX_DOT_Q32(q5_0, 16, false)
KX_DOT_Q32(q5_1, 0, true)
KX_DOT_Q32(q8_0, 128, false)

/* ---- K types: Q4_K, Q5_K, Q6_K (256 weights, Q8_K activations) ---------- */

/* v's int16 element j + g in every int16 lane of group g, for groups of 2^log2_size lanes
 * (16: two sub-block scales per register; 8: four). */
KX_INLINE __m512i spread16(__m512i v, int j, int log2_size)
{
    const __m512i lane = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12,
                                          11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    return _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_srli_epi16(lane, log2_size), _mm512_set1_epi16((short)j)), v);
}

/* Float accumulator plus int32 lanes times a scale; the 8-lane ymm part goes in the low half. */
KX_INLINE __m512 fmadd256(__m256i v, float scale, __m512 acc)
{
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_inserti64x4(_mm512_setzero_si512(), v, 0)), _mm512_set1_ps(scale),
                           acc);
}

/* Q4_K and Q5_K (layout in kern_avx2.c): each 64 weights are 32 bytes of qs, low nibbles
 * sub-block 2c, high 2c+1, in one register: maddubs gives 16 pair sums per sub-block, and
 * vpdpwssd multiplies them by [sc_2c x16, sc_2c+1 x16] into int32. Q5_K's fifth bits of
 * chunk c are bits 2c (first 32 weights) and 2c+1 (next 32) of qh. */
KX_INLINE float dot_k_affine(int n, const uint8_t *w, const qt_block_q8_k *b, bool five_bit)
{
    const size_t block_bytes = five_bit ? sizeof(qt_block_q5_k) : sizeof(qt_block_q4_k);
    const size_t qs_off = five_bit ? offsetof(qt_block_q5_k, qs) : offsetof(qt_block_q4_k, qs);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n / QK_K; i++, w += block_bytes) {
        const qt_block_q4_k *hdr = (const qt_block_q4_k *)w;
        const __m128i sm = kx_k_scales(hdr->scales);
        const __m256i min_sums = kx_k_min_products(sm, b[i].bsums);
        const __m512i scales = _mm512_castsi128_si512(_mm_cvtepu8_epi16(sm));
        __m512i qh = _mm512_setzero_si512();
        if (five_bit) {
            const __m256i h = _mm256_loadu_si256((const __m256i *)((const qt_block_q5_k *)w)->qh);
            qh = _mm512_inserti64x4(_mm512_castsi256_si512(h), h, 1);
        }
        __m512i isum = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w + qs_off + 32 * c));
            __m512i u =
                _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), low4);
            if (five_bit) {
                const __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << 2 * c)),
                                                       _mm256_set1_epi8((char)(1 << (2 * c + 1))), 1);
                u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(qh, bit), u, _mm512_set1_epi8(16));
            }
            const __m512i p = _mm512_maddubs_epi16(u, _mm512_loadu_si512(b[i].qs + 64 * c));
            isum = _mm512_dpwssd_epi32(isum, p, spread16(scales, 2 * c, 4));
        }
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(kx_f16(hdr->d) * b[i].d), acc);
        acc = fmadd256(min_sums, -kx_f16(hdr->dmin) * b[i].d, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static float dot_q4_k(int n, const void *w, const void *x) { return dot_k_affine(n, w, x, false); }
static float dot_q5_k(int n, const void *w, const void *x) { return dot_k_affine(n, w, x, true); }

/* Q6_K (layout in kern_avx2.c): levels u in 0..63 stand for u - 32, the offset taken out
 * through bsums. Each 128 weights: the 64 bytes of ql are one register; their low nibbles
 * are weights 0-63, high nibbles 64-127; the two high bits come from qh, bits 0-1 / 2-3
 * for weights 0-31 / 32-63 and 4-5 / 6-7 for 64-95 / 96-127. qh goes in both halves, the
 * high one shifted two bits down by one vpsrlvw, so that one mask leaves u0's two bits at
 * 0-1 of each byte and u1's at 4-5; each level is then one vpternlogd taking bits 0-3 from
 * the nibble, the rest from those (shifted up four for u0). The offset's share starts the
 * integer sum. One Zen 4 core: 82 GOPS in L2 (test_kern's bench_gemm, one column) and 32.8
 * GB/s from cache (bench_matvec) against 73.5 and 30.0 with separate ands, shifts and ors
 * and the offset in a float fma of its own; from DRAM both are bound by it (22-24 GB/s). */
static float dot_q6_k(int n, const void *w, const void *x)
{
    const qt_block_q6_k *a = w;
    const qt_block_q8_k *b = x;
    const __m512i low4 = _mm512_set1_epi8(0x0F), pairs = _mm512_set1_epi8(0x33);
    /* qh in the low half (weights 0-31 and 64-95) as it is, in the high half (32-63, 96-127)
     * two bits down */
    const __m512i down = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a[i].scales));
        const __m256i offset =
            _mm256_slli_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)b[i].bsums), sc16), 5);
        const __m512i scales = _mm512_castsi256_si512(sc16);
        __m512i isum = _mm512_castsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), offset));
#pragma GCC unroll 4
        for (int h = 0; h < 2; h++) {
            const __m512i l = _mm512_loadu_si512(a[i].ql + 64 * h);
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h)));
            /* bits 0-1 of each byte: u0's high bits, bits 4-5: u1's */
            const __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(qh, down), pairs);
            const __m512i u0 = _mm512_ternarylogic_epi32(low4, l, _mm512_slli_epi16(hb, 4), 0xCA); /* low4 ? l : hb << 4 */
            const __m512i u1 = _mm512_ternarylogic_epi32(low4, _mm512_srli_epi16(l, 4), hb, 0xCA);
            const __m512i p0 = _mm512_maddubs_epi16(u0, _mm512_loadu_si512(b[i].qs + 128 * h));
            const __m512i p1 = _mm512_maddubs_epi16(u1, _mm512_loadu_si512(b[i].qs + 128 * h + 64));
            isum = _mm512_dpwssd_epi32(isum, p0, spread16(scales, 8 * h, 3)); /* sub-blocks 8h+0..3 */
            isum = _mm512_dpwssd_epi32(isum, p1, spread16(scales, 8 * h + 4, 3)); /* 8h+4..7 */
        }
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(kx_f16(a[i].d) * b[i].d), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* ---- gemm: row-interleaved tiles (kern_tile.h) --------------------------
 * A strip is 16 rows, one per int32 lane. Panel vectors hold four consecutive levels of
 * every row (lane r: row r), unsigned as vpdpbusd wants them; one vpdpbusd with four
 * broadcast activation bytes adds 64 products. The offsets of the unsigned levels come
 * back out through the sums of the activations (kt_act, or Q8_K's bsums), the K types'
 * sub-block scales through one vpmulld per sub-block and column. */

enum { STRIP = 16, COLS32 = 8, COLSK = 4, COLSF = 8 }; /* rows per strip; columns per tile32, tilek, tilef */

/* A strip's rows, addressed as quad[r / 4] + at[r % 4]: seven registers for sixteen rows
 * (the x86 addressing modes add the index), where sixteen pointers would spill. Or, where
 * block is set, a strip of a matrix in strips (kern.h) at quad[0], of blocks of that many
 * bytes, all dwords: load16x4 then reads what it would transpose, and gather_* must not be
 * used. Built by the two functions below with a constant block, so that the compiler drops
 * the layout test of every load16x4. */
typedef struct strip {
    const uint8_t *quad[4];
    size_t at[4];
    size_t block;
} strip;

KX_INLINE strip strip_rows(const uint8_t *w, size_t w_stride)
{
    return (strip){{w, w + 4 * w_stride, w + 8 * w_stride, w + 12 * w_stride},
                   {0, w_stride, 2 * w_stride, 3 * w_stride}, 0};
}

KX_INLINE strip strip_of_strips(const uint8_t *w, size_t block) { return (strip){{w}, {0}, block}; }

KX_INLINE const uint8_t *row_at(const strip *s, int r, size_t off) { return s->quad[r >> 2] + s->at[r & 3] + off; }

/* The 16 bytes at row r + off, as dword k of row r in lane r of q[k]: rows 4L+i go to
 * 128-bit lane L of a[i] (256-bit inserts first: cheaper than 512-bit ones), then each
 * lane is a 4x4 transpose. */
KX_INLINE void load16x4(const strip *s, size_t off, __m512i q[4])
{
    if (s->block) { /* dwords off/4.. of the block: groups of the strip's block off / block */
        const uint8_t *at = s->quad[0] + off / s->block * STRIP * s->block + STRIP * (off % s->block);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            q[i] = _mm512_loadu_si512(at + 64 * i);
        return;
    }
    __m512i a[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        const __m256i lo = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)row_at(s, i, off))),
            _mm_loadu_si128((const __m128i *)row_at(s, 4 + i, off)), 1);
        const __m256i hi = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)row_at(s, 8 + i, off))),
            _mm_loadu_si128((const __m128i *)row_at(s, 12 + i, off)), 1);
        a[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    const __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]), t1 = _mm512_unpackhi_epi32(a[0], a[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]), t3 = _mm512_unpackhi_epi32(a[2], a[3]);
    q[0] = _mm512_unpacklo_epi64(t0, t2);
    q[1] = _mm512_unpackhi_epi64(t0, t2);
    q[2] = _mm512_unpacklo_epi64(t1, t3);
    q[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* The 16-bit field at row r + off of each row, in lane r (int16). Scalar loads packed four
 * to a 64-bit word: a vector gather costs Zen 4 more, and narrow stores read back by one
 * wide load stall on store forwarding. */
KX_INLINE __m256i gather_u16(const strip *s, size_t off)
{
    uint64_t q[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        q[i] = 0;
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            uint16_t h;
            memcpy(&h, row_at(s, 4 * i + k, off), sizeof h);
            q[i] |= (uint64_t)h << (16 * k);
        }
    }
    return _mm256_setr_epi64x((long long)q[0], (long long)q[1], (long long)q[2], (long long)q[3]);
}

/* The f16 at row r + off of each row, as floats in lane r. */
KX_INLINE __m512 gather_f16(const strip *s, size_t off) { return _mm512_cvtph_ps(gather_u16(s, off)); }

/* The f16 in the low half of each int32 lane, as floats. */
KX_INLINE __m512 low_f16(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }

/* The little-endian 32-bit word at row r + off of each row, in lane r. */
KX_INLINE __m512i gather_u32(const strip *s, size_t off)
{
    const __m512i lo = _mm512_cvtepu16_epi32(gather_u16(s, off)), hi = _mm512_cvtepu16_epi32(gather_u16(s, off + 2));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

/* out[r] for r < nrows (a masked store): v, or v plus what is there. */
KX_INLINE void store_rows(float *out, __m512 v, int nrows, bool accumulate)
{
    const __mmask16 rows = (__mmask16)((1u << nrows) - 1);
    if (accumulate)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(rows, out));
    _mm512_mask_storeu_ps(out, rows, v);
}

KX_INLINE int32_t load_i32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* -- 32-weight blocks: one panel entry per block; levels by dword of the block (dword g:
 * weights 4g..4g+3, as in the activation block), d and (affine types) m per row. */
typedef struct panel32 {
    __m512i q[8];
    __m512 d, m;
} panel32;

/* -- K types: one panel entry per 256-weight block. q[i]: levels of weights 4i..4i+3;
 * sub-block s (of 32 weights for Q4_K/Q5_K, 16 for Q6_K) scaled by sc[s]; corr[k] holds
 * the int16 pair multiplying Q8_K's bsums[2k], bsums[2k+1] (mins, or Q6_K's -32 offset);
 * result d·d_y·Σ sc·levels·y + d2·d_y·Σ corr·bsums. */
typedef struct panelk {
    __m512i q[64];
    __m512i sc[16];
    __m512i corr[8];
    __m512 d, d2;
} panelk;
enum { K_CHUNK = KT_PANEL_BYTES / sizeof(panelk) };

typedef __m512i vint;
typedef __m512 vfloat;
/* vpdpbusd takes unsigned levels; sub-block scales are int32 lanes for vpmulld, corr is
 * int16 pairs for vpdpwssd (kern_tile_isa.h) */
enum { SIGNED_LEVELS = 0, SCALE_PAIRS = 0, CORR_PAIRS = 1 };

KX_INLINE __m512 vf_fma(__m512 acc, __m512 a, __m512 b) { return _mm512_fmadd_ps(a, b, acc); }
KX_INLINE __m512 vf_splat(float s) { return _mm512_set1_ps(s); }

#include "kern_tile_isa.h"

KX_INLINE void unpack_q8_0(const strip *row, size_t off, panel32 *p)
{
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        load16x4(row, off + offsetof(qt_block_q8_0, qs) + 16 * h, p->q + 4 * h);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) /* w + 128 */
            p->q[4 * h + k] = _mm512_xor_si512(p->q[4 * h + k], _mm512_set1_epi8((char)0x80));
    }
    p->d = gather_f16(row, off);
}

/* vpdpbusd of the eight dwords of levels with the broadcast dwords of y. */
KTI_INLINE kv_sum block_dot32(const panel32 *p, const uint8_t *y, int32_t offset, bool split, traits32 tr)
{
    (void)tr;
    __m512i s[2] = {_mm512_set1_epi32(offset), _mm512_setzero_si512()};
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++) {
        const int chain = split ? g & 1 : 0;
        s[chain] = _mm512_dpbusd_epi32(s[chain], p->q[g], _mm512_set1_epi32(load_i32(y + 4 * g)));
    }
    return (kv_sum)(split ? _mm512_add_epi32(s[0], s[1]) : s[0]);
}

/* Lane r of the result: the sum of row r's eight lanes, where acc[j] holds row 2j in lanes
 * 0-7 and row 2j+1 in lanes 8-15. Two rounds of pairwise adds leave each 128-bit lane with
 * one row's four partial sums, a 4x4 transpose-and-add per 128-bit lane sums them (element
 * 4L + i: row 4i + L), and one permutation puts row r in lane r. */
KX_INLINE __m512 row_pair_sums(const __m512 acc[8])
{
    __m512 c[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* 128-bit lanes: rows 4i, 4i+1, 4i+2, 4i+3 */
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 u0 = _mm512_add_ps(_mm512_unpacklo_ps(c[0], c[1]), _mm512_unpackhi_ps(c[0], c[1]));
    const __m512 u1 = _mm512_add_ps(_mm512_unpacklo_ps(c[2], c[3]), _mm512_unpackhi_ps(c[2], c[3]));
    const __m512 sums = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u0), _mm512_castps_pd(u1))),
                                      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u0), _mm512_castps_pd(u1))));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), sums);
}

/* Decode's Q8_0 (kt_kernel's matvec): a Q8_0 row needs no unpacking, so it is not
 * transposed either (the transposition would cost more than the dot products): each
 * register takes a block of two rows, one per 256-bit half, against the block's activations
 * in both halves; the w + 128 offset's share comes in through t's offset, added to each
 * half's first lane. The sixteen rows' scales are one vector, spread to each pair by one
 * permutation. One Zen 4 core (test_kern's bench_matvec): 41-47 GB/s from cache against
 * dot's 30, and from DRAM at least dot's 27-28 (24-37, the machine's bandwidth varies). */
static void matvec_q8_0_pairs(const uint8_t *w, size_t w_stride, int nb, const kt_prefetch *pf, const uint8_t *x,
                              const kt_act *t, float *out, int nrows, bool accumulate)
{
    const strip row = strip_rows(w, w_stride);
    kt_prefetch ahead = *pf;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        acc[j] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        kt_prefetch_step(&ahead);
        const size_t off = (size_t)b * sizeof(qt_block_q8_0), qs = off + offsetof(qt_block_q8_0, qs);
        const __m512i y = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x + qs)));
        const __m512i offset = _mm512_maskz_set1_epi32(0x0101, t[b].offset);
        const __m512 d = _mm512_mul_ps(gather_f16(&row, off), _mm512_set1_ps(t[b].d)); /* lane r: row r */
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const __m512i pair = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)row_at(&row, 2 * j, qs))),
                _mm256_loadu_si256((const __m256i *)row_at(&row, 2 * j + 1, qs)), 1);
            const __m512i levels = _mm512_xor_si512(pair, _mm512_set1_epi8((char)0x80)); /* w + 128 */
            const __m512i sum = _mm512_dpbusd_epi32(offset, levels, y);
            const __m512 scale = _mm512_permutexvar_ps(
                _mm512_inserti64x4(_mm512_set1_epi32(2 * j), _mm256_set1_epi32(2 * j + 1), 1), d);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[j]);
        }
    }
    store_rows(out, row_pair_sums(acc), nrows, accumulate);
}

/* Σ levels·y + offset of one Q4_0 block in sixteen rows, its qs bytes in the dwords q[] of
 * its rows (lane r: row r): lo levels q & 0x0F against y[0..15], hi ones q & 0xF0 against
 * y[16..31], which sums 16 times the hi share and saves the shift of each dword for one of
 * the sum. shifted: the qs start two bytes into q[0] (after the block's d) and end two
 * bytes into q[4] (before the next block's d), so those ends are masked off and each y
 * dword is taken from two bytes earlier, the ends' as a broadcast word. */
KX_INLINE __m512i q4_0_sum(const __m512i q[], bool shifted, const uint8_t *y, int32_t offset)
{
    __m512i lo = _mm512_set1_epi32(offset), hi = _mm512_setzero_si512();
    const int n = shifted ? 5 : 4;
#pragma GCC unroll 5
    for (int m = 0; m < n; m++) {
        const bool end = shifted && (m == 0 || m == 4);
        const uint32_t keep = !end ? 0xFFFFFFFFu : m == 0 ? 0xFFFF0000u : 0x0000FFFFu;
        const uint8_t *at = y + 4 * m - (shifted && m ? 2 : 0);
        __m512i ylo, yhi;
        if (end) {
            uint16_t a, b;
            memcpy(&a, at, sizeof a);
            memcpy(&b, at + 16, sizeof b);
            ylo = _mm512_set1_epi16((short)a);
            yhi = _mm512_set1_epi16((short)b);
        } else {
            ylo = _mm512_set1_epi32(load_i32(at));
            yhi = _mm512_set1_epi32(load_i32(at + 16));
        }
        lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(q[m], _mm512_set1_epi32((int)(keep & 0x0F0F0F0Fu))), ylo);
        hi = _mm512_dpbusd_epi32(hi, _mm512_and_si512(q[m], _mm512_set1_epi32((int)(keep & 0xF0F0F0F0u))), yhi);
    }
    return _mm512_add_epi32(lo, _mm512_srai_epi32(hi, 4));
}

/* Decode's Q4_0 (kt_kernel's matvec). The strip's matvec32 gathers the sixteen rows' d of
 * each block one f16 at a time (a fifth of its time); here eight blocks (144 bytes of each
 * row, 36 dwords) are transposed whole in nine load16x4, and every block is read from the
 * dwords it falls in: an odd block's qs are four whole dwords, an even one's start two
 * bytes into its first dword after its d, and the next block's d ends its fifth
 * (q4_0_sum's shifted), so both d are halves of dwords already loaded. The last nb % 8
 * blocks take matvec32. One Zen 4 core (test_kern's bench_matvec): 35 GB/s from cache
 * against matvec32's 28; decoding TinyLlama Q4_0 on 2 cores with ~70 GB/s of memory
 * bandwidth, 76 t/s against 72. */
static const traits32 traits_q4_0 = {false, 15, false};

static void matvec_q4_0_eights(const uint8_t *w, size_t w_stride, int nb, const kt_prefetch *pf, const uint8_t *x,
                               const kt_act *t, float *out, int nrows, bool accumulate)
{
    const strip row = strip_rows(w, w_stride);
    kt_prefetch ahead = *pf;
    const size_t ybytes = sizeof(qt_block_q8_0), yqs = offsetof(qt_block_q8_0, qs);
    /* word i of the result: d of row i of the even block (low word of dword 0) for i < 16,
     * then of the odd one (high word of dword 4) */
    const __m512i d_words = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 30,
                                             28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    const int whole = nb - nb % 8;
    for (int b = 0; b < whole; b += 8) {
        __m512i dw[36];
        int have = 0;
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) { /* blocks b + 2p (even) and b + 2p + 1: dwords 9p .. 9p+8 */
#pragma GCC unroll 3
            for (; have < 9 * p + 9; have += 4) /* loaded as they are needed: 36 vectors would spill */
                load16x4(&row, (size_t)b * sizeof(qt_block_q4_0) + 4 * (size_t)have, dw + have);
            const __m512i *q = dw + 9 * p;
            const __m512i d = _mm512_permutex2var_epi16(q[0], d_words, q[4]);
#pragma GCC unroll 2
            for (int odd = 0; odd < 2; odd++) {
                const int k = b + 2 * p + odd;
                kt_prefetch_step(&ahead);
                const __m512i sum = q4_0_sum(q + 5 * odd, !odd, x + (size_t)k * ybytes + yqs, t[k].offset);
                const __m256i dk = odd ? _mm512_extracti64x4_epi64(d, 1) : _mm512_castsi512_si256(d);
                acc[odd] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum),
                                           _mm512_mul_ps(_mm512_cvtph_ps(dk), _mm512_set1_ps(t[k].d)), acc[odd]);
            }
        }
    }
    store_rows(out, _mm512_add_ps(acc[0], acc[1]), nrows, accumulate);
    if (whole < nb)
        matvec32(w + (size_t)whole * sizeof(qt_block_q4_0), w_stride, nb - whole, &ahead,
                 x + (size_t)whole * ybytes, t + whole, out, nrows, accumulate || whole > 0,
                 sizeof(qt_block_q4_0), unpack_q4_0, traits_q4_0);
}

/* Decode over strips (kern.h), Q4_0 (nibbles) and Q8_0: a strip block holds the sixteen
 * rows' d as one f16 vector and each dword of their levels as one vector (lane r: row r),
 * so a block is five or nine loads and a vpdpbusd per dword with broadcast activation
 * dwords, with nothing to transpose or gather. Q4_0 takes group g's low nibbles against y
 * dword g and its high ones, masked in place (16 times their value, as in q4_0_sum),
 * against dword g + 4; Q8_0 each group, offset by 128, against dword g. The offsets come
 * back out through kt_act. A strip's blocks are one sequential stream, which the hardware
 * prefetchers follow without help. One Zen 4 core (test_kern's bench_matvec, rows and strips
 * alternated): from cache Q4_0 44-45 GB/s against matvec_q4_0_eights' 35, Q8_0 57-62
 * against matvec_q8_0_pairs' 38-42; decoding TinyLlama on 2 cores at 35-36 GB/s of memory
 * bandwidth, Q4_0 reaches 93-94% of it against 83-86%, and at 62-67 GB/s 77% against 65%
 * (Q8_0: 79% against 68-72%). */
KX_INLINE void strips_q32(int n, int nstrips, const uint8_t *w, const uint8_t *x, float *out, bool nibbles)
{
    const size_t block = KERN_STRIP_ROWS * (nibbles ? sizeof(qt_block_q4_0) : sizeof(qt_block_q8_0));
    const size_t ybytes = sizeof(qt_block_q8_0), yqs = offsetof(qt_block_q8_0, qs);
    const int nb = n / 32, groups = nibbles ? 4 : 8;
    const __m512i low4 = _mm512_set1_epi8(0x0F), high4 = _mm512_set1_epi8((char)0xF0), sign = _mm512_set1_epi8((char)0x80);
    kt_act t[KT_TABLE];
    for (int b0 = 0; b0 < nb; b0 += KT_TABLE) { /* activation facts for a span of blocks, shared by every strip */
        const int span = nb - b0 < KT_TABLE ? nb - b0 : KT_TABLE;
        (nibbles ? kx_act_offset8 : kx_act_offset128)(x + (size_t)b0 * ybytes, span, t);
        for (int s = 0; s < nstrips; s++) {
            const uint8_t *p = w + ((size_t)s * (size_t)nb + (size_t)b0) * block;
            __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int b = 0; b < span; b++, p += block) {
                const uint8_t *y = x + (size_t)(b0 + b) * ybytes + yqs;
                const uint8_t *q = p + KERN_STRIP_ROWS * sizeof(qt_f16);
                __m512i sum[2] = {_mm512_set1_epi32(t[b].offset), _mm512_setzero_si512()};
#pragma GCC unroll 8
                for (int g = 0; g < groups; g++) {
                    const __m512i v = _mm512_loadu_si512(q + 64 * g);
                    if (nibbles) {
                        sum[0] = _mm512_dpbusd_epi32(sum[0], _mm512_and_si512(v, low4),
                                                     _mm512_set1_epi32(load_i32(y + 4 * g)));
                        sum[1] = _mm512_dpbusd_epi32(sum[1], _mm512_and_si512(v, high4),
                                                     _mm512_set1_epi32(load_i32(y + 16 + 4 * g)));
                    } else { /* two chains */
                        sum[g & 1] = _mm512_dpbusd_epi32(sum[g & 1], _mm512_xor_si512(v, sign),
                                                         _mm512_set1_epi32(load_i32(y + 4 * g)));
                    }
                }
                const __m512i total = _mm512_add_epi32(sum[0], nibbles ? _mm512_srai_epi32(sum[1], 4) : sum[1]);
                const __m512 d = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)),
                                               _mm512_set1_ps(t[b].d));
                acc[b & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), d, acc[b & 1]);
            }
            store_rows(out + (size_t)s * KERN_STRIP_ROWS, _mm512_add_ps(acc[0], acc[1]), KERN_STRIP_ROWS, b0 > 0);
        }
    }
}

/* kt_kernel's pack for a chunk of a strip (kt_kernel.strips): each block's levels, unsigned
 * as unpack_q4_0 and unpack_q8_0 leave them, straight from its groups. */
KX_INLINE void pack_strips_q32(const uint8_t *w, int nb, void *panel, const kt_prefetch *pf, bool nibbles)
{
    const size_t block = KERN_STRIP_ROWS * (nibbles ? sizeof(qt_block_q4_0) : sizeof(qt_block_q8_0));
    const __m512i low4 = _mm512_set1_epi8(0x0F), sign = _mm512_set1_epi8((char)0x80);
    const int groups = nibbles ? 4 : 8;
    kt_prefetch ahead = *pf;
    panel32 *p = panel;
    for (int b = 0; b < nb; b++, w += block) {
        kt_prefetch_step(&ahead);
        const uint8_t *q = w + KERN_STRIP_ROWS * sizeof(qt_f16);
        p[b].d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w));
#pragma GCC unroll 8
        for (int g = 0; g < groups; g++) {
            const __m512i v = _mm512_loadu_si512(q + 64 * g);
            if (nibbles) { /* dword g: weights 4g..4g+3 (low nibbles), dword g + 4: 16 + 4g.. (high) */
                p[b].q[g] = _mm512_and_si512(v, low4);
                p[b].q[g + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            } else {
                p[b].q[g] = _mm512_xor_si512(v, sign);
            }
        }
    }
}

KT_TILE32_MATVEC(q4_0, q8_0, kx_act_offset8, traits_q4_0, matvec_q4_0_eights)
KT_TILE32(q4_1, q8_1, kx_act_q8_1, ((traits32){true, 15, false}))
KT_TILE32(q5_0, q8_0, kx_act_offset16, ((traits32){false, 31, false}))
KT_TILE32(q5_1, q8_1, kx_act_q8_1, ((traits32){true, 31, false}))
KT_TILE32_MATVEC(q8_0, q8_0, kx_act_offset128, ((traits32){false, 255, false}), matvec_q8_0_pairs)

/* Products with Q4_0 and Q8_0 matrices in strips: a single column by strips_q32, several
 * through the tiles of tile_q4_0 and tile_q8_0 with the strip packs. */
#define KX_GEMM_STRIPS(type, nibbles)                                                                               \
    static void pack_strips_##type(const uint8_t *w, size_t w_stride, int nb, void *panel, const kt_prefetch *pf)   \
    {                                                                                                               \
        (void)w_stride;                                                                                             \
        pack_strips_q32(w, nb, panel, pf, nibbles);                                                                 \
    }                                                                                                               \
    static void strips_##type(int n, int nstrips, const uint8_t *w, const uint8_t *x, float *out)                   \
    {                                                                                                               \
        strips_q32(n, nstrips, w, x, out, nibbles);                                                                 \
    }                                                                                                               \
    static const kt_kernel strips_tile_##type = {.strip = STRIP,                                                    \
                                                 .block_elems = 32,                                                 \
                                                 .chunk_blocks = KT_CHUNK_BLOCKS,                                   \
                                                 .block_bytes = sizeof(qt_block_##type),                            \
                                                 .act_block_bytes = sizeof(qt_block_q8_0),                          \
                                                 .act = nibbles ? kx_act_offset8 : kx_act_offset128,                \
                                                 .pack = pack_strips_##type,                                        \
                                                 .compute = compute_##type,                                         \
                                                 .dot = dot_##type,                                                 \
                                                 .strips = true};                                                   \
    KT_GEMM_STRIPS(type, strips_##type)
KX_GEMM_STRIPS(q4_0, true)
KX_GEMM_STRIPS(q8_0, false)
#undef KX_GEMM_STRIPS

/* Per sub-block, vpdpbusd of its dwords with the broadcast dwords of y, times its scale;
 * sub-blocks outside, so that a sub-block's levels are loaded once for every column. */
KTI_INLINE void block_dotk(const panelk *p, const qt_block_q8_k *const y[], int nc, kv_sum tot[], traitsk tr)
{
    const int per = 64 / tr.nsub; /* dwords per sub-block */
    __m512i t[8];
#pragma GCC unroll 8
    for (int c = 0; c < nc; c++)
        t[c] = _mm512_setzero_si512();
    for (int s = 0; s < tr.nsub; s++) {
        __m512i q[8];
#pragma GCC unroll 8
        for (int g = 0; g < per; g++)
            q[g] = p->q[per * s + g];
#pragma GCC unroll 8
        for (int c = 0; c < nc; c++) {
            __m512i sum = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int g = 0; g < per; g++)
                sum = _mm512_dpbusd_epi32(sum, q[g], _mm512_set1_epi32(load_i32(y[c]->qs + 4 * (per * s + g))));
            t[c] = _mm512_add_epi32(t[c], _mm512_mullo_epi32(sum, p->sc[s]));
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < nc; c++)
        tot[c] = (kv_sum)t[c];
}

/* vpdpwssd of each int16 pair of corr with the pair bsums[2k], bsums[2k+1]. */
KTI_INLINE kv_sum block_corrk(const panelk *p, const qt_block_q8_k *y)
{
    __m512i corr = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        corr = _mm512_dpwssd_epi32(corr, p->corr[k], _mm512_set1_epi32(load_i32(y->bsums + 2 * k)));
    return (kv_sum)corr;
}

/* Byte k of each dword of v as an int32, or (pair) as both int16 halves of it: one vpshufb
 * where shifts and masks take two to four ops (Q4_K decode, 30 GB/s from cache against 27
 * with them). */
KX_INLINE __m512i byte_of(__m512i v, int k, bool pair)
{
    int32_t pick[4]; /* dword i of each 128-bit lane: bytes 4i + k, zero, 4i + k or zero, zero */
    for (int i = 0; i < 4; i++)
        pick[i] = (4 * i + k) | 0x80 << 8 | (pair ? 4 * i + k : 0x80) << 16 | (int32_t)0x80000000;
    return _mm512_shuffle_epi8(v, _mm512_set4_epi32(pick[3], pick[2], pick[1], pick[0]));
}

/* Decode's Q4_K (kt_kernel's matvec): the strip's rows transposed into registers as pack
 * does, but used at once instead of stored as a panel entry and read back (decode through
 * the panel made 20.1 GB/s against dot's 20.0). The header's scales and mins are unpacked
 * once for the sixteen rows; each 64 weights take 16 vpdpbusd of their dwords against
 * broadcast activation dwords, the low nibbles (sub-block 2c) into one sum and the high
 * ones (2c+1) masked in place into another (16 times its value, as in q4_0_sum), each
 * scaled by one vpmulld; the mins' share is 8 vpdpwssd of (min, min) pairs with the bsums.
 * A step of the next strip's prefetches before each load16x4 of qs: one per block asked
 * for 40 lines at once (30 GB/s from cache, against 36). One Zen 4 core (test_kern's
 * bench_matvec): 36 GB/s from cache against dot's 19.7, from DRAM 22-27 against 16-18;
 * decoding TinyLlama Q4_K_M on 2 cores with ~70 GB/s of memory bandwidth, 64-70 t/s
 * against 52-58 (with ~37 GB/s both are bound by it: 81-87% of it against 84-90%). */
KX_INLINE void matvec_q4_k_from(const strip row, int nb, const kt_prefetch *pf, const uint8_t *x, float *out,
                                 int nrows, bool accumulate)
{
    kt_prefetch ahead = *pf;
    kt_prefetch_split(&ahead, 8); /* a step for each load16x4 of qs */
    const qt_block_q8_k *y = (const qt_block_q8_k *)x;
    const __m512i low4 = _mm512_set1_epi8(0x0F), high4 = _mm512_set1_epi8((char)0xF0);
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const size_t off = (size_t)b * sizeof(qt_block_q4_k);
        __m512i h[4]; /* d | dmin << 16, scales[0..3], [4..7], [8..11] */
        load16x4(&row, off, h);
        kv_u8 sc8[2], mn8[2];
        k_affine_scales(h, sc8, mn8);
        const __m512i sc[2] = {(__m512i)sc8[0], (__m512i)sc8[1]}, mn[2] = {(__m512i)mn8[0], (__m512i)mn8[1]};
        __m512i lo_tot = _mm512_setzero_si512(), hi_tot = _mm512_setzero_si512(), corr = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m512i q[8];
            kt_prefetch_step(&ahead);
            load16x4(&row, off + offsetof(qt_block_q4_k, qs) + 32 * c, q);
            kt_prefetch_step(&ahead);
            load16x4(&row, off + offsetof(qt_block_q4_k, qs) + 32 * c + 16, q + 4);
            __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(q[g], low4),
                                         _mm512_set1_epi32(load_i32(y[b].qs + 64 * c + 4 * g)));
                hi = _mm512_dpbusd_epi32(hi, _mm512_and_si512(q[g], high4),
                                         _mm512_set1_epi32(load_i32(y[b].qs + 64 * c + 32 + 4 * g)));
            }
            lo_tot = _mm512_add_epi32(lo_tot, _mm512_mullo_epi32(lo, byte_of(sc[c >> 1], 2 * c & 3, false)));
            hi_tot = _mm512_add_epi32(hi_tot, _mm512_mullo_epi32(hi, byte_of(sc[c >> 1], (2 * c + 1) & 3, false)));
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            corr = _mm512_dpwssd_epi32(corr, byte_of(mn[j >> 2], j & 3, true),
                                       _mm512_set1_epi32(load_i32(y[b].bsums + 2 * j)));
        const __m512i tot = _mm512_add_epi32(lo_tot, _mm512_srai_epi32(hi_tot, 4));
        const __m512 dy = _mm512_set1_ps(y[b].d);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_mul_ps(low_f16(h[0]), dy), acc);
        acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_mul_ps(low_f16(_mm512_srli_epi32(h[0], 16)), dy), acc);
    }
    store_rows(out, acc, nrows, accumulate);
}

static void matvec_q4_k_strip(const uint8_t *w, size_t w_stride, int nb, const kt_prefetch *pf, const uint8_t *x,
                              const kt_act *t, float *out, int nrows, bool accumulate)
{
    (void)t;
    matvec_q4_k_from(strip_rows(w, w_stride), nb, pf, x, out, nrows, accumulate);
}

KT_TILEK_MATVEC(q4_k, ((traitsk){8, true, 15}), matvec_q4_k_strip)

/* Q4_K in strips: the kernels above, with load16x4 reading the strips' groups in place of
 * transposing rows; decode prefetches nothing in its one sequential stream. One Zen 4 core
 * (bench_matvec): 47-48 GB/s from cache against 36 from rows; decoding TinyLlama Q4_K_M on
 * 2 cores, 87-93% of 35-37 GB/s against 80-84%, 73-74% of 58-64 GB/s against 59-63%. */
static void pack_strips_q4_k(const uint8_t *w, size_t w_stride, int nb, void *panel, const kt_prefetch *pf)
{
    (void)w_stride;
    const strip row = strip_of_strips(w, sizeof(qt_block_q4_k));
    kt_prefetch ahead = *pf;
    panelk *p = panel;
    for (int b = 0; b < nb; b++) {
        kt_prefetch_step(&ahead);
        unpack_q4_k(&row, (size_t)b * sizeof(qt_block_q4_k), &p[b]);
    }
}

static const kt_kernel strips_tile_q4_k = {.strip = STRIP,
                                           .block_elems = QK_K,
                                           .chunk_blocks = K_CHUNK,
                                           .block_bytes = sizeof(qt_block_q4_k),
                                           .act_block_bytes = sizeof(qt_block_q8_k),
                                           .pack = pack_strips_q4_k,
                                           .compute = compute_q4_k,
                                           .dot = dot_q4_k,
                                           .strips = true};

static void strips_q4_k(int n, int nstrips, const uint8_t *w, const uint8_t *x, float *out)
{
    const size_t strip_bytes = STRIP * (size_t)(n / QK_K) * sizeof(qt_block_q4_k);
    static const kt_prefetch none = {0};
    for (int s = 0; s < nstrips; s++)
        matvec_q4_k_from(strip_of_strips((const uint8_t *)w + (size_t)s * strip_bytes, sizeof(qt_block_q4_k)),
                         n / QK_K, &none, x, out + (size_t)s * STRIP, STRIP, false);
}
KT_GEMM_STRIPS(q4_k, strips_q4_k)
KT_TILEK(q5_k, ((traitsk){8, true, 31}))
/* Q6_K decodes by dot: a strip kernel in registers as Q4_K's (13 load16x4 of a block's 210
 * bytes per 16 rows, each level one vpternlogd, four vpdpbusd and a vpmulld per sub-block)
 * made 29.6 GB/s from cache and 16-18 from DRAM against dot's 30 and 21-25, row pairs
 * untransposed (as matvec_q8_0_pairs) 26 and 20. The transposition alone (loads and
 * load16x4, no arithmetic) made 40 GB/s from cache, and the strip's 16 rows read side by
 * side come slower from DRAM than dot's one stream (TinyLlama Q4_K_M on 2 cores, ~70 GB/s
 * of memory bandwidth: 60-67 t/s against 70-73). */
KT_TILEK(q6_k, ((traitsk){16, false, 63}))

KT_TILEF(f32, 4)
KT_TILEF(f16, 8)
KT_TILEF(bf16, 8)

#define KX_STRIPS {[QT_Q4_0] = gemm_strips_q4_0, [QT_Q8_0] = gemm_strips_q8_0, [QT_Q4_K] = gemm_strips_q4_k}
KX_KERN_OPS(avx512);
