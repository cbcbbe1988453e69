/* kern_avx2 — AVX2 (+FMA, F16C) kernels: the row dot product of every supported weight
 * type, the gemm tiles of prefill and decode (8-row strips, kern_tile.h), the products
 * with matrices in strips (kern.h: decode's 16-row layout, two of those 8-row strips side
 * by side), plus the shared x86 quantizers and f16 helpers (kern_x86.h).
 *
 * Integer parts are exact: 32 weight levels times 32 activation levels go through
 * maddubs (u8 x s8 -> pairs summed in s16) and madd (-> s32). maddubs wants its first
 * operand unsigned: the 4/5/6-bit formats store levels = weight + offset, so the offset's
 * share comes back out through y sums (Q8_K's bsums, or a second maddubs); Q8_0's signed
 * weights give their sign to the activation instead (|w| · sign(w)·y). That is exact
 * because activations come from the quantize entries, whose levels lie in [-127, 127]
 * (negating one never overflows, and |pair| <= 2·128·127 fits in s16).
 * Each block's integer sum is scaled in float and accumulated in 8-lane FMA registers.
 * Not here: choosing this table (kern.c) or the definition of each result (kern_ref.c). */
#include "kern_x86.h"

#include <stdbool.h>
#include <stddef.h>

/* ---- float weights: F32, F16, BF16 ------------------------------------- */

typedef __m256 (*load8_fn)(const void *w, int i); /* weights i..i+7 as floats */

KX_INLINE __m256 load8_f32(const void *w, int i) { return _mm256_loadu_ps((const float *)w + i); }

KX_INLINE __m256 load8_f16(const void *w, int i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const qt_f16 *)w + i)));
}

KX_INLINE __m256 load8_bf16(const void *w, int i)
{
    __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const qt_bf16 *)w + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)); /* bf16 is the top half of an f32 */
}

KX_INLINE float dot_floats(int n, const void *w, const float *x, load8_fn load, size_t elem_bytes)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            acc[k] = _mm256_fmadd_ps(load(w, i + 8 * k), _mm256_loadu_ps(x + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_fmadd_ps(load(w, i), _mm256_loadu_ps(x + i), acc[0]);
    if (i < n) {
        /* the last n - i < 8 elements through zero-padded copies, so one loader serves all */
        _Alignas(32) uint8_t wt[8 * sizeof(float)] = {0};
        float xt[8] = {0};
        memcpy(wt, (const uint8_t *)w + (size_t)i * elem_bytes, (size_t)(n - i) * elem_bytes);
        memcpy(xt, x + i, (size_t)(n - i) * sizeof(float));
        acc[1] = _mm256_fmadd_ps(load(wt, 0), _mm256_loadu_ps(xt), acc[1]);
    }
    return kx_hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
}

static float dot_f32(int n, const void *w, const void *x) { return dot_floats(n, w, x, load8_f32, sizeof(float)); }
static float dot_f16(int n, const void *w, const void *x) { return dot_floats(n, w, x, load8_f16, sizeof(qt_f16)); }
static float dot_bf16(int n, const void *w, const void *x) { return dot_floats(n, w, x, load8_bf16, sizeof(qt_bf16)); }

/* ---- 32-weight blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 --------------------- */

/* 16 bytes of nibbles as 32 levels in element order: low nibbles are elements 0-15. */
KX_INLINE __m256i nibbles32(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
}

/* 0xFF in byte j where bit j of the little-endian 32-bit word at qh is set. */
KX_INLINE __m256i bits32(const uint8_t *qh)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i byte_of_bit = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                                 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), byte_of_bit);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* Levels of one block as bytes: unsigned (weight + the type's offset: 8 for Q4_0, 16 for
 * Q5_0, 0 for Q4_1/Q5_1) or, for Q8_0, the signed weights themselves. */
typedef __m256i (*levels32_fn)(const void *block);

/* nibble | fifth bit << 4 */
KX_INLINE __m256i five_bit_levels(const uint8_t *qh, const uint8_t *qs)
{
    return _mm256_or_si256(nibbles32(qs), _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10)));
}

KX_INLINE __m256i levels_q4_0(const void *b) { return nibbles32(((const qt_block_q4_0 *)b)->qs); }
KX_INLINE __m256i levels_q4_1(const void *b) { return nibbles32(((const qt_block_q4_1 *)b)->qs); }
KX_INLINE __m256i levels_q5_0(const void *b)
{
    return five_bit_levels(((const qt_block_q5_0 *)b)->qh, ((const qt_block_q5_0 *)b)->qs);
}
KX_INLINE __m256i levels_q5_1(const void *b)
{
    return five_bit_levels(((const qt_block_q5_1 *)b)->qh, ((const qt_block_q5_1 *)b)->qs);
}
KX_INLINE __m256i levels_q8_0(const void *b)
{
    return _mm256_loadu_si256((const __m256i *)((const qt_block_q8_0 *)b)->qs);
}

/* Σ (levels[j] - offset)·y[j] of 32 byte pairs into 8 int32 lanes; offset < 0: the levels
 * are signed weights. Unsigned levels (< 32) go straight into maddubs, the offset's share
 * subtracted as offset·y pairs (both pair sums and their difference fit in s16). Signed
 * weights give their sign to y so maddubs gets |w| (a -128 weight becomes 128: still exact). */
KX_INLINE __m256i dot32(__m256i levels, __m256i y, int offset)
{
    __m256i pairs;
    if (offset < 0)
        pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(levels, levels), _mm256_sign_epi8(y, levels));
    else if (offset > 0)
        pairs =
            _mm256_sub_epi16(_mm256_maddubs_epi16(levels, y), _mm256_maddubs_epi16(_mm256_set1_epi8((char)offset), y));
    else
        pairs = _mm256_maddubs_epi16(levels, y);
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

/* Σ weights·y of one block, in 8 lanes, as floats (exact: |partial| < 2^24). */
KX_INLINE __m256 block_sums(const uint8_t *wb, const uint8_t *xb, levels32_fn levels, int offset, bool has_min)
{
    const size_t xqs = has_min ? offsetof(qt_block_q8_1, qs) : offsetof(qt_block_q8_0, qs);
    return _mm256_cvtepi32_ps(dot32(levels(wb), _mm256_loadu_si256((const __m256i *)(xb + xqs)), offset));
}

/* Every 32-weight type starts with its f16 scale d; the affine ones (has_min) follow it with
 * the f16 min m and take Q8_1 activations, whose s = d·Σqs supplies m's share: m·s. */
KX_INLINE float dot_q32(int n, const void *w, const void *x, size_t block_bytes, levels32_fn levels, int offset,
                        bool has_min)
{
    const size_t xbytes = has_min ? sizeof(qt_block_q8_1) : sizeof(qt_block_q8_0);
    const uint8_t *wb = w, *xb = x;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m128 acc_min = _mm_setzero_ps();
    int nb = n / 32, i = 0;
    /* four blocks per step, their scales converted together, into two FMA chains */
    for (; i + 4 <= nb; i += 4, wb += 4 * block_bytes, xb += 4 * xbytes) {
        const __m256 d = _mm256_castps128_ps256(kx_scale_products4(wb, block_bytes, xb, xbytes));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            acc[k & 1] = _mm256_fmadd_ps(block_sums(wb + k * block_bytes, xb + k * xbytes, levels, offset, has_min),
                                         _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(k)), acc[k & 1]);
        if (has_min)
            acc_min = _mm_add_ps(acc_min, kx_scale_products4(wb + 2, block_bytes, xb + 2, xbytes));
    }
    for (; i < nb; i++, wb += block_bytes, xb += xbytes) { /* the last 0-3 blocks one by one */
        const qt_f16 *wh = (const qt_f16 *)wb, *xh = (const qt_f16 *)xb;
        acc[0] = _mm256_fmadd_ps(block_sums(wb, xb, levels, offset, has_min),
                                 _mm256_set1_ps(kx_f16(wh[0]) * kx_f16(xh[0])), acc[0]);
        if (has_min)
            acc_min = _mm_add_ss(acc_min, _mm_set_ss(kx_f16(wh[1]) * kx_f16(xh[1])));
    }
    return kx_hsum_ps(
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_insertf128_ps(_mm256_setzero_ps(), acc_min, 0)));
}

KX_DOT_Q32(q4_0, 8, false)
KX_DOT_Q32(q4_1, 0, true)
KX_DOT_Q32(q5_0, 16, false)
KX_DOT_Q32(q5_1, 0, true)
KX_DOT_Q32(q8_0, -1, false)

/* ---- K types: Q4_K, Q5_K, Q6_K (256 weights, Q8_K activations) ---------- */

/* int16 element j (0..7) of v's low 128-bit lane in all of that lane, element k of the high
 * lane in all of that one. */
KX_INLINE __m256i splat16(__m256i v, int j, int k)
{
    return _mm256_shuffle_epi8(v, _mm256_setr_m128i(_mm_set1_epi16((short)(0x0202 * j + 0x0100)),
                                                    _mm_set1_epi16((short)(0x0202 * k + 0x0100))));
}

/* Q4_K and Q5_K share d, dmin and scales; Q5_K adds qh (fifth bit of weight l of sub-block j
 * is bit j of qh[l]). Each 64 weights are 32 bytes of qs: low nibbles sub-block 2c, high 2c+1.
 * Result: d·Σ_j sc_j (levels·y) - dmin·Σ_j m_j (y sums), the mins' sums from bsums. */
KX_INLINE float dot_k_affine(int n, const uint8_t *w, const qt_block_q8_k *b, bool five_bit)
{
    const size_t block_bytes = five_bit ? sizeof(qt_block_q5_k) : sizeof(qt_block_q4_k);
    const size_t qs_off = five_bit ? offsetof(qt_block_q5_k, qs) : offsetof(qt_block_q4_k, qs);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / QK_K; i++, w += block_bytes) {
        const qt_block_q4_k *hdr = (const qt_block_q4_k *)w;
        const __m128i sm = kx_k_scales(hdr->scales);
        const __m256i min_sums = kx_k_min_products(sm, b[i].bsums);
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm)); /* sc_j as int16, both lanes */
        __m256i qh =
            five_bit ? _mm256_loadu_si256((const __m256i *)((const qt_block_q5_k *)w)->qh) : _mm256_setzero_si256();
        __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w + qs_off + 32 * c));
            __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (five_bit) { /* bits 2c and 2c+1 of qh, moved to bit 4; shifting 16-bit words only
                             * pulls foreign bits into the top, never into bits 0-1 read here */
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(1)), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(2)), 3));
                qh = _mm256_srli_epi16(qh, 2);
            }
            const int8_t *y = b[i].qs + 64 * c;
            __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)y));
            __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 32)));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, splat16(scales, 2 * c, 2 * c)));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, splat16(scales, 2 * c + 1, 2 * c + 1)));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(kx_f16(hdr->d) * b[i].d), acc);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(min_sums), _mm256_set1_ps(-kx_f16(hdr->dmin) * b[i].d), acc);
    }
    return kx_hsum_ps(acc);
}

static float dot_q4_k(int n, const void *w, const void *x) { return dot_k_affine(n, w, x, false); }
static float dot_q5_k(int n, const void *w, const void *x) { return dot_k_affine(n, w, x, true); }

/* Q6_K: levels u in 0..63 stand for u - 32, so Σ sc·(u-32)·y = Σ sc·u·y - 32·Σ_k sc_k·bsums_k.
 * Each 128 weights: ql[64], qh[32]; 32-weight chunk c takes nibbles of ql (c&1 picks the
 * second 32 bytes, c>>1 the high nibble) and bits 2c..2c+1 of qh; chunk c of half h covers
 * sub-blocks 8h+2c (first 16, low lane) and 8h+2c+1 (high lane). */
static float dot_q6_k(int n, const void *w, const void *x)
{
    const qt_block_q6_k *a = w;
    const qt_block_q8_k *b = x;
    const __m256i low4 = _mm256_set1_epi8(0x0F), two_bits = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / QK_K; i++) {
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a[i].scales));
        const __m256i offset = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)b[i].bsums), sc16);
        __m256i isum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 5));
        const uint8_t *ql = a[i].ql, *qh = a[i].qh;
        const int8_t *y = b[i].qs;
#pragma GCC unroll 4
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, y += 128) {
            /* this half's eight scales in both lanes; chunk c wants 2c low, 2c+1 high */
            const __m256i sc =
                h ? _mm256_permute2x128_si256(sc16, sc16, 0x11) : _mm256_permute2x128_si256(sc16, sc16, 0x00);
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql),
                          l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
            const __m256i u[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), two_bits)),
                _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), two_bits)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(hb, two_bits)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                _mm256_and_si256(_mm256_srli_epi16(hb, 2), two_bits)),
            };
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                __m256i p = _mm256_maddubs_epi16(u[c], _mm256_loadu_si256((const __m256i *)(y + 32 * c)));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, splat16(sc, 2 * c, 2 * c + 1)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(kx_f16(a[i].d) * b[i].d), acc);
    }
    return kx_hsum_ps(acc);
}

/* ---- gemm: row-interleaved tiles (kern_tile.h) --------------------------
 * A strip is 8 rows, one per int32 lane. Panel vectors hold four consecutive levels of
 * every row (lane r: row r), unsigned for maddubs, whose pair sums of levels up to 15
 * (31, 63) add up exactly in int16 over 8 (4, 2) groups of four before madd widens them
 * to int32 (madd by the sub-block scales, for the K types). Q8_0 keeps |w| and the sign
 * trick of dot32. */

enum { STRIP = 8, COLS32 = 4, COLSK = 4, COLSF = 8 }; /* rows per strip; columns per tile32, tilek, tilef */

/* A strip's rows, addressed as quad[r / 4] + at[r % 4]: few registers for eight rows. Or,
 * where block is set, half h of a strip of a matrix in strips (kern.h: 16 rows, two of these
 * strips side by side), blocks of that many bytes: quad[0] is the half's lanes of the
 * first group (w + 32h), quad[1] its rows' heads (w + 16h). load16x4 then reads what it
 * would transpose and gather_f16 what it would gather (the head at a block's start; other
 * gather_* must not be used). Built by the two functions below with a constant block, so
 * that the compiler drops the layout test of every load. */
typedef struct strip {
    const uint8_t *quad[2];
    size_t at[4];
    size_t block;
} strip;

KX_INLINE strip strip_rows(const uint8_t *w, size_t w_stride)
{
    return (strip){{w, w + 4 * w_stride}, {0, w_stride, 2 * w_stride, 3 * w_stride}, 0};
}

KX_INLINE strip strip_of_strips(const uint8_t *w, size_t block, int half)
{
    return (strip){{w + 4 * STRIP * half, w + sizeof(qt_f16) * STRIP * half}, {0}, block};
}

/* The half's lanes of the group holding byte off of its rows (a strip of strips): group g
 * of a block holds dword g after the heads of its 16 rows (16·head bytes) and comes 64·g
 * bytes after them, at 16 times the dword's offset in a row's block, head included. */
KX_INLINE const uint8_t *strips_at(const strip *s, size_t off)
{
    return s->quad[0] + off / s->block * KERN_STRIP_ROWS * s->block + KERN_STRIP_ROWS * (off % s->block);
}

KX_INLINE const uint8_t *row_at(const strip *s, int r, size_t off) { return s->quad[r >> 2] + s->at[r & 3] + off; }

/* The 16 bytes at row r + off, as dword k of row r in lane r of q[k]: rows 4L+i go to
 * 128-bit lane L of a[i], then each lane is a 4x4 transpose. */
KX_INLINE void load16x4(const strip *s, size_t off, __m256i q[4])
{
    if (s->block) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            q[i] = _mm256_loadu_si256((const __m256i *)(strips_at(s, off) + 4 * KERN_STRIP_ROWS * i));
        return;
    }
    __m256i a[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        a[i] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)row_at(s, i, off))),
                                       _mm_loadu_si128((const __m128i *)row_at(s, 4 + i, off)), 1);
    const __m256i t0 = _mm256_unpacklo_epi32(a[0], a[1]), t1 = _mm256_unpackhi_epi32(a[0], a[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(a[2], a[3]), t3 = _mm256_unpackhi_epi32(a[2], a[3]);
    q[0] = _mm256_unpacklo_epi64(t0, t2);
    q[1] = _mm256_unpackhi_epi64(t0, t2);
    q[2] = _mm256_unpacklo_epi64(t1, t3);
    q[3] = _mm256_unpackhi_epi64(t1, t3);
}

/* The 16-bit field at row r + off of each row, in int16 lane r (scalar loads packed four
 * to a 64-bit word; see kern_avx512.c). */
KX_INLINE __m128i gather_u16(const strip *s, size_t off)
{
    uint64_t q[2];
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        q[i] = 0;
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            uint16_t h;
            memcpy(&h, row_at(s, 4 * i + k, off), sizeof h);
            q[i] |= (uint64_t)h << (16 * k);
        }
    }
    return _mm_set_epi64x((long long)q[1], (long long)q[0]);
}

/* The f16 at row r + off of each row, as floats in lane r. */
KX_INLINE __m256 gather_f16(const strip *s, size_t off)
{
    if (s->block) /* the heads of the half's rows: off at a block's start */
        return _mm256_cvtph_ps(
            _mm_loadu_si128((const __m128i *)(s->quad[1] + off / s->block * KERN_STRIP_ROWS * s->block)));
    return _mm256_cvtph_ps(gather_u16(s, off));
}

/* The little-endian 32-bit word at row r + off of each row, in lane r. */
KX_INLINE __m256i gather_u32(const strip *s, size_t off)
{
    const __m256i lo = _mm256_cvtepu16_epi32(gather_u16(s, off)), hi = _mm256_cvtepu16_epi32(gather_u16(s, off + 2));
    return _mm256_or_si256(lo, _mm256_slli_epi32(hi, 16));
}

/* The f16 in the low half of each int32 lane, as floats. */
KX_INLINE __m256 low_f16(__m256i v)
{
    const __m256i w = _mm256_packus_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), _mm256_setzero_si256());
    return _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(w, 0x08))); /* qwords 0, 2 */
}

/* out[r] for r < nrows: v, or v plus what is there. */
KX_INLINE void store_rows(float *out, __m256 v, int nrows, bool accumulate)
{
    if (nrows == STRIP) {
        if (accumulate)
            v = _mm256_add_ps(v, _mm256_loadu_ps(out));
        _mm256_storeu_ps(out, v);
        return;
    }
    float lanes[STRIP];
    _mm256_storeu_ps(lanes, v);
    for (int r = 0; r < nrows; r++)
        out[r] = accumulate ? out[r] + lanes[r] : lanes[r];
}

KX_INLINE __m256i bcast32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* Σ over groups g of levels·y as int32 lanes, 4 groups from q and the broadcast dwords of
 * y at 4g: pair sums in int16 over `per16` groups (exact for the levels' bound), then
 * widened by madd with scale (int16 pairs: ones, or a sub-block's scale). Q8_0's signed
 * levels (sign_src) go through |w| and the sign trick, one group at a time. */
KX_INLINE __m256i dot_groups(const __m256i *q, const __m256i *sign_src, const uint8_t *y, int ngroups, int per16,
                             __m256i scale)
{
    __m256i sum = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int g0 = 0; g0 < ngroups; g0 += per16) {
        __m256i s16 = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int g = g0; g < g0 + per16; g++) {
            const __m256i yg = bcast32(y + 4 * g);
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(q[g], sign_src ? _mm256_sign_epi8(yg, sign_src[g]) : yg));
        }
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(s16, scale));
    }
    return sum;
}

/* -- 32-weight blocks: one panel entry per block; levels by dword of the block (dword g:
 * weights 4g..4g+3, as in the activation block), d and (affine types) m per row; Q8_0
 * keeps |w| in q and w in sign. */
typedef struct panel32 {
    __m256i q[8], sign[8];
    __m256 d, m;
} panel32;

/* -- K types: one panel entry per 256-weight block, as in kern_avx512.c, except that the
 * sub-block scales are int16 pairs (sc, sc) for madd. */
typedef struct panelk {
    __m256i q[64];
    __m256i sc[16];
    __m256i corr[8];
    __m256 d, d2;
} panelk;
enum { K_CHUNK = KT_PANEL_BYTES / sizeof(panelk) };

typedef __m256i vint;
typedef __m256 vfloat;
/* maddubs takes unsigned levels; madd takes sub-block scales and corr as int16 pairs
 * (kern_tile_isa.h) */
enum { SIGNED_LEVELS = 0, SCALE_PAIRS = 1, CORR_PAIRS = 1 };

KX_INLINE __m256 vf_fma(__m256 acc, __m256 a, __m256 b) { return _mm256_fmadd_ps(a, b, acc); }
KX_INLINE __m256 vf_splat(float s) { return _mm256_set1_ps(s); }

#include "kern_tile_isa.h"

KX_INLINE void unpack_q8_0(const strip *row, size_t off, panel32 *p)
{
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        load16x4(row, off + offsetof(qt_block_q8_0, qs) + 16 * h, p->sign + 4 * h);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            p->q[4 * h + k] = _mm256_sign_epi8(p->sign[4 * h + k], p->sign[4 * h + k]);
    }
    p->d = gather_f16(row, off);
}

/* Pair sums in int16 over as many dwords as the largest level allows, widened by madd;
 * Q8_0 (signed) takes the sign trick. */
KTI_INLINE kv_sum block_dot32(const panel32 *p, const uint8_t *y, int32_t offset, bool split, traits32 tr)
{
    (void)split; /* dot_groups' int16 sums already make several chains */
    const int per16 = tr.is_signed ? 1 : tr.levels_max < 16 ? 8 : 4;
    return (kv_sum)_mm256_add_epi32(_mm256_set1_epi32(offset), dot_groups(p->q, tr.is_signed ? p->sign : NULL, y, 8,
                                                                           per16, _mm256_set1_epi16(1)));
}

/* Shared with the strips kernels below. */
static const traits32 traits_q4_0 = {false, 15, false}, traits_q8_0 = {false, 127, true};

KT_TILE32(q4_0, q8_0, kx_act_offset8, traits_q4_0)
KT_TILE32(q4_1, q8_1, kx_act_q8_1, ((traits32){true, 15, false}))
KT_TILE32(q5_0, q8_0, kx_act_offset16, ((traits32){false, 31, false}))
KT_TILE32(q5_1, q8_1, kx_act_q8_1, ((traits32){true, 31, false}))
KT_TILE32_MATVEC(q8_0, q8_0, kx_act_q8_0, traits_q8_0, NULL)

/* Per column and sub-block, its pair sums in int16, madd by its scale. */
KTI_INLINE void block_dotk(const panelk *p, const qt_block_q8_k *const y[], int nc, kv_sum tot[], traitsk tr)
{
    const int per = 64 / tr.nsub, per16 = tr.levels_max < 16 ? 8 : tr.levels_max < 32 ? 4 : 2;
#pragma GCC unroll 8
    for (int c = 0; c < nc; c++) {
        __m256i t = _mm256_setzero_si256();
        for (int s = 0; s < tr.nsub; s++)
            t = _mm256_add_epi32(t, dot_groups(p->q + per * s, NULL, (const uint8_t *)y[c]->qs + 4 * per * s, per,
                                               per16 < per ? per16 : per, p->sc[s]));
        tot[c] = (kv_sum)t;
    }
}

/* madd of each int16 pair of corr with the pair bsums[2k], bsums[2k+1]. */
KTI_INLINE kv_sum block_corrk(const panelk *p, const qt_block_q8_k *y)
{
    __m256i corr = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        corr = _mm256_add_epi32(corr, _mm256_madd_epi16(p->corr[k], bcast32(y->bsums + 2 * k)));
    return (kv_sum)corr;
}

KT_TILEK(q4_k, ((traitsk){8, true, 15}))
KT_TILEK(q5_k, ((traitsk){8, true, 31}))
KT_TILEK(q6_k, ((traitsk){16, false, 63}))

KT_TILEF(f32, 4)
KT_TILEF(f16, 8)
KT_TILEF(bf16, 8)

/* ---- matrices in strips (kern.h) ----------------------------------------
 * A strip of 16 rows is two of this file's 8-row strips side by side: each group of 64
 * bytes (one dword of every row's block) is two vectors, rows 0-7 then 8-15, and the 16
 * heads are two f16 vectors. strip_of_strips views each half as a strip whose load16x4 and
 * gather_f16 read those vectors in place, so the rows kernels' unpacking (kern_tile_isa.h)
 * and integer dot products serve strips unchanged, with nothing to transpose or gather.
 * Decode takes a block's two halves one after the other, each unpacked into registers and
 * used at once; prefill packs both halves of a chunk into one panel (half h's entry of
 * block b at h·nb + b) for the rows tiles. A strip's blocks are one sequential stream,
 * which the hardware prefetchers follow without help. One Zen 4 core (test_kern's
 * bench_matvec, rows and strips alternated, two runs): from cache Q4_0 37 GB/s against the
 * rows' 22, Q8_0 43-47 against 28, Q4_K 40 against 19.5; from DRAM 22-23 against 15-16,
 * 24-26 against 24, 23-24 against 15-16. Decoding TinyLlama on 2 cores at 37-38 GB/s of
 * memory bandwidth: Q4_0 reaches 91% of it against 79-81%, Q4_K_M 92% against 87%; at
 * 67-71 GB/s, Q4_0 72% against 47%, Q4_K_M 67-69% against 49-50%, Q8_0 79-82% against
 * 71-72% (the rows kernels are bound by their arithmetic there). */

/* Decode of Q4_0 and Q8_0: per block and half, block_dot32 from the levels unpack leaves
 * in registers, offset by t's share (Q4_0's levels are w + 8), times d·d_y. */
KX_INLINE void strips_q32(int n, int nstrips, const uint8_t *w, const uint8_t *x, float *out, size_t block_bytes,
                          unpack32_fn unpack, void (*act)(const uint8_t *, int, kt_act *), traits32 tr)
{
    const size_t block = KERN_STRIP_ROWS * block_bytes;
    const size_t ybytes = sizeof(qt_block_q8_0), yqs = offsetof(qt_block_q8_0, qs);
    const int nb = n / 32;
    kt_act t[KT_TABLE];
    for (int b0 = 0; b0 < nb; b0 += KT_TABLE) { /* activation facts for a span of blocks, shared by every strip */
        const int span = nb - b0 < KT_TABLE ? nb - b0 : KT_TABLE;
        act(x + (size_t)b0 * ybytes, span, t);
        for (int s = 0; s < nstrips; s++) {
            const uint8_t *p = w + ((size_t)s * (size_t)nb + (size_t)b0) * block;
            __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int b = 0; b < span; b++, p += block) {
                const uint8_t *y = x + (size_t)(b0 + b) * ybytes + yqs;
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    const strip half = strip_of_strips(p, block_bytes, h);
                    panel32 e;
                    unpack(&half, 0, &e);
                    acc[h] = vf_fma(acc[h], vf_of_sum(block_dot32(&e, y, t[b].offset, true, tr)),
                                    _mm256_mul_ps(e.d, vf_splat(t[b].d)));
                }
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++)
                store_rows(out + (size_t)s * KERN_STRIP_ROWS + STRIP * h, acc[h], STRIP, b0 > 0);
        }
    }
}

static void strips_q4_0(int n, int nstrips, const uint8_t *w, const uint8_t *x, float *out)
{
    strips_q32(n, nstrips, w, x, out, sizeof(qt_block_q4_0), unpack_q4_0, kx_act_offset8, traits_q4_0);
}

static void strips_q8_0(int n, int nstrips, const uint8_t *w, const uint8_t *x, float *out)
{
    strips_q32(n, nstrips, w, x, out, sizeof(qt_block_q8_0), unpack_q8_0, kx_act_q8_0, traits_q8_0);
}

/* Byte k of each dword of v as both int16 halves of it: a sub-block's scale or min as madd
 * takes it (one vpshufb). */
KX_INLINE __m256i byte_pair(__m256i v, int k)
{
    int32_t pick[4]; /* dword i of each 128-bit lane: bytes 4i + k, zero, 4i + k, zero */
    for (int i = 0; i < 4; i++)
        pick[i] = (4 * i + k) | 0x80 << 8 | (4 * i + k) << 16 | (int32_t)0x80000000;
    const __m128i lane = _mm_setr_epi32(pick[0], pick[1], pick[2], pick[3]);
    return _mm256_shuffle_epi8(v, _mm256_setr_m128i(lane, lane));
}

/* v, in a register at this point of the code (an empty asm, no instruction): where a chain
 * of int16 sums runs through it, GCC 12 can no longer expand the chain as all its maddubs
 * first, their results spilled to the stack and summed afterwards (Q4_K strips from cache:
 * 40 GB/s against 32). */
KX_INLINE __m256i in_register(__m256i v)
{
    __asm__("" : "+x"(v));
    return v;
}

/* Decode of Q4_K: per block, each half's header unpacked once for its eight rows (scales
 * and mins as (s, s) int16 pairs for madd); then group by group, each broadcast activation
 * dword taken by both halves at once (a loop per half had the compiler keep a block's 64
 * broadcasts on the stack: 24-25 GB/s from cache against 32), low nibbles into one int16 sum
 * per chunk of 64 weights (sub-block 2c), high ones into another (2c + 1), each widened by
 * madd with its scales; the mins' share is eight madds of (min, min) pairs with the bsums
 * pairs. */
static void strips_q4_k(int n, int nstrips, const uint8_t *w, const uint8_t *x, float *out)
{
    const size_t block = KERN_STRIP_ROWS * sizeof(qt_block_q4_k), qs = offsetof(qt_block_q4_k, qs);
    const int nb = n / QK_K;
    const qt_block_q8_k *y = (const qt_block_q8_k *)x;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int s = 0; s < nstrips; s++) {
        const uint8_t *p = w + (size_t)s * (size_t)nb * block;
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int b = 0; b < nb; b++, p += block) {
            const strip half[2] = {strip_of_strips(p, sizeof(qt_block_q4_k), 0),
                                   strip_of_strips(p, sizeof(qt_block_q4_k), 1)};
            const uint8_t *yq = (const uint8_t *)y[b].qs;
            __m256 d[2];
            __m256i sc[2][2], isum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) { /* the mins' share first, into acc */
                __m256i hd[4]; /* d | dmin << 16, scales[0..3], [4..7], [8..11] */
                load16x4(&half[h], 0, hd);
                kv_u8 sc8[2], mn8[2];
                k_affine_scales(hd, sc8, mn8);
                sc[h][0] = (__m256i)sc8[0];
                sc[h][1] = (__m256i)sc8[1];
                __m256i corr = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                    corr = _mm256_add_epi32(
                        corr, _mm256_madd_epi16(byte_pair((__m256i)mn8[j >> 2], j & 3), bcast32(y[b].bsums + 2 * j)));
                acc[h] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(corr),
                                          _mm256_mul_ps(low_f16(_mm256_srli_epi32(hd[0], 16)), vf_splat(y[b].d)),
                                          acc[h]);
                d[h] = _mm256_mul_ps(low_f16(hd[0]), vf_splat(y[b].d));
            }
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) { /* 32 bytes of qs: sub-block 2c in low nibbles, 2c + 1 in high */
                __m256i lo16[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, hi16[2] = {lo16[0], lo16[0]};
#pragma GCC unroll 8
                for (int g = 0; g < 8; g++) {
                    const __m256i ylo = bcast32(yq + 64 * c + 4 * g), yhi = bcast32(yq + 64 * c + 32 + 4 * g);
#pragma GCC unroll 2
                    for (int h = 0; h < 2; h++) {
                        const __m256i v =
                            _mm256_loadu_si256((const __m256i *)strips_at(&half[h], qs + 32 * c + 4 * g));
                        lo16[h] = in_register(
                            _mm256_add_epi16(lo16[h], _mm256_maddubs_epi16(_mm256_and_si256(v, low4), ylo)));
                        hi16[h] = in_register(_mm256_add_epi16(
                            hi16[h], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4), yhi)));
                    }
                }
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    isum[h] =
                        _mm256_add_epi32(isum[h], _mm256_madd_epi16(lo16[h], byte_pair(sc[h][c >> 1], 2 * c & 3)));
                    isum[h] = _mm256_add_epi32(isum[h],
                                               _mm256_madd_epi16(hi16[h], byte_pair(sc[h][c >> 1], (2 * c + 1) & 3)));
                }
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++)
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[h]), d[h], acc[h]);
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
            store_rows(out + (size_t)s * KERN_STRIP_ROWS + STRIP * h, acc[h], STRIP, false);
    }
}

/* Prefill over strips: kt_gemm's strips are the matrix's 16-row ones (two vectors of rows),
 * chunks half as many blocks as the rows tiles' so that both halves' entries fit the panel;
 * compute runs the rows tiles on each half. The shorter chunks' extra tile calls cost 2-4%
 * (64 columns of a 2048x2048 matrix from L2, one core: Q4_0 171-175 GOPS against the rows'
 * 177-179, Q8_0 115 against 120, Q4_K 164 against 168), where kern_gemm_strips' way back
 * into rows made 135, 97 and 151; TinyLlama Q4_0's pp64 on 2 cores loses 5-9% (137-145 t/s
 * against 150-158), the price of decode's 5-25 points of the bandwidth ceiling. Then
 * gemm_strips_<type> (KT_GEMM_STRIPS), with strips_<type> for a single column. */
#define KX_GEMM_STRIPS(type, panel_t, elems, chunk, act_type, act_fn)                                              \
    static void pack_strips_##type(const uint8_t *w, size_t w_stride, int nb, void *panel, const kt_prefetch *pf)   \
    {                                                                                                               \
        (void)w_stride;                                                                                             \
        kt_prefetch ahead = *pf;                                                                                    \
        panel_t *p = panel;                                                                                         \
        for (int b = 0; b < nb; b++, w += KERN_STRIP_ROWS * sizeof(qt_block_##type)) {                              \
            kt_prefetch_step(&ahead);                                                                               \
            for (int h = 0; h < 2; h++) {                                                                           \
                const strip half = strip_of_strips(w, sizeof(qt_block_##type), h);                                  \
                unpack_##type(&half, 0, &p[h * nb + b]);                                                            \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
    static void compute_strips_##type(const void *panel, int nb, const uint8_t *x, size_t x_stride, int ncols,      \
                                      const kt_act *t, int t_stride, float *out, size_t out_stride, int nrows,      \
                                      bool accumulate)                                                              \
    {                                                                                                               \
        (void)nrows; /* always a whole strip */                                                                     \
        for (int h = 0; h < 2; h++)                                                                                 \
            compute_##type((const panel_t *)panel + h * nb, nb, x, x_stride, ncols, t, t_stride, out + STRIP * h,  \
                           out_stride, STRIP, accumulate);                                                          \
    }                                                                                                               \
    static const kt_kernel strips_tile_##type = {.strip = KERN_STRIP_ROWS,                                          \
                                                 .block_elems = elems,                                              \
                                                 .chunk_blocks = chunk / 2,                                         \
                                                 .block_bytes = sizeof(qt_block_##type),                            \
                                                 .act_block_bytes = sizeof(qt_block_##act_type),                    \
                                                 .act = act_fn,                                                     \
                                                 .pack = pack_strips_##type,                                        \
                                                 .compute = compute_strips_##type,                                  \
                                                 .dot = dot_##type,                                                 \
                                                 .strips = true};                                                   \
    KT_GEMM_STRIPS(type, strips_##type)
KX_GEMM_STRIPS(q4_0, panel32, 32, KT_CHUNK_BLOCKS, q8_0, kx_act_offset8)
KX_GEMM_STRIPS(q8_0, panel32, 32, KT_CHUNK_BLOCKS, q8_0, kx_act_q8_0)
KX_GEMM_STRIPS(q4_k, panelk, QK_K, K_CHUNK, q8_k, NULL)
#undef KX_GEMM_STRIPS

#define KX_STRIPS {[QT_Q4_0] = gemm_strips_q4_0, [QT_Q8_0] = gemm_strips_q8_0, [QT_Q4_K] = gemm_strips_q4_k}
KX_KERN_OPS(avx2);
