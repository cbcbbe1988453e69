/* kern_tile_isa — the part of a SIMD file's gemm section that does not depend on the
 * instruction set, written once: the unpacking of a block of every weight type but Q8_0
 * (masks and shifts on lanes), the loops that unpack a strip into a panel, the tiles' loops
 * and float arithmetic (per block and column: an integer dot product, converted, scaled and
 * accumulated), the split of columns into groups a tile keeps in registers, decode's matvec,
 * and the macros that declare each weight type's kt_kernel (kern_tile.h) and gemm entry. Not
 * a public header, and not a standalone one: kern_avx2.c, kern_avx512.c and kern_neon.c
 * include it in the middle of their gemm section, after defining
 *   STRIP, COLS32, COLSK, COLSF   rows per strip; most columns per tile32 / tilek / tilef call
 *   strip, strip_rows(w, stride)  a strip's row addresses
 *   panel32, panelk, K_CHUNK      a 32-weight block / K block unpacked; K blocks per chunk
 *   vint, vfloat                  the ISA's integer and float vectors (STRIP 32-bit lanes)
 *   load16x4, gather_f16,         a strip's bytes transposed to lanes (16 bytes of each row;
 *   gather_u32, low_f16           an f16 or a u32 field of each row); f16 in lanes' low halves
 *   vf_fma(acc, a, b)             acc + a·b, fused
 *   vf_splat(s)                   s in every lane
 *   store_rows(out, v, nrows,     out[r] = v's lane r (or += when accumulate), r < nrows
 *              accumulate)
 *   SIGNED_LEVELS                 1: the ISA multiplies signed weights (levels minus their
 *                                 offset); 0: unsigned levels, the offset comes back through
 *                                 the activations' sums (kt_act, Q8_K's bsums)
 *   SCALE_PAIRS                   1: a K sub-block's scale is held as an int16 pair (s, s)
 *   CORR_PAIRS                    1: a K block's corr[k] multiplies bsums[2k], bsums[2k+1] as an
 *                                 int16 pair; 0: corr[j] is sub-block j's min, an int32
 * and before defining their unpack_q8_0 and the integer dot products of one panel entry
 * with one column's activations, as int32 lanes (declared here):
 *   block_dot32(p, y, offset, split, tr)  offset + Σ levels·y of a 32-weight block (y: its
 *                                         32 activation bytes; split: in two dependency
 *                                         chains, for a single column, whose latency
 *                                         would otherwise show)
 *   block_dotk(p, y, nc, tot, tr)         tot[c] = Σ_s sc_s·Σ levels·y[c] over the sub-blocks
 *                                         s of a K block, for the nc columns' blocks y[c]
 *                                         (all columns in one call: the ISA picks the loop
 *                                         order)
 *   block_corrk(p, y)                     Σ corr·bsums (CORR_PAIRS) or Σ_j corr_j·(y's sum
 *                                         over sub-block j) of a K block */
#ifndef EDGELLM_KERN_TILE_ISA_H
#define EDGELLM_KERN_TILE_ISA_H

#include "kern_tile.h"

#define KTI_INLINE static inline __attribute__((always_inline))

/* What the tiles need to know of a 32-weight type: whether it has mins (m, times Q8_1's s);
 * where an ISA sums pairs of products in int16 (AVX2), its largest level and whether its
 * levels are signed (Q8_0, which then takes the sign trick). */
typedef struct traits32 {
    bool has_min;
    int levels_max;
    bool is_signed;
} traits32;

/* Of a K type: its sub-blocks per block, whether it has mins (corr, where SIGNED_LEVELS;
 * unsigned levels always need corr for their offset) and its largest level (as traits32). */
typedef struct traitsk {
    int nsub;
    bool has_min;
    int levels_max;
} traitsk;

/* Of a float type: weights per 16 bytes. */
typedef struct traitsf {
    int elems;
} traitsf;

/* -- float weights: a block is 16 bytes of a row (4 F32 or 8 F16/BF16 weights), unpacked
 * to floats: w[e] lane r is weight e of row r. */
typedef struct panelf {
    vfloat w[8];
} panelf;

_Static_assert(KT_CHUNK_BLOCKS * sizeof(panel32) <= KT_PANEL_BYTES, "a chunk of 32-weight blocks exceeds the panel");
_Static_assert(STRIP * KT_CHUNK_BLOCKS * sizeof(qt_block_q8_0) <= KT_STAGE_BYTES, "32-weight chunk exceeds the stage");
_Static_assert(K_CHUNK >= 1 && K_CHUNK * sizeof(panelk) <= KT_PANEL_BYTES && (int)K_CHUNK <= (int)KT_CHUNK_BLOCKS,
               "a chunk of K blocks exceeds the panel");
_Static_assert(STRIP * K_CHUNK * sizeof(qt_block_q6_k) <= KT_STAGE_BYTES, "K chunk exceeds the stage");
_Static_assert(KT_CHUNK_BLOCKS * sizeof(panelf) <= KT_PANEL_BYTES, "a chunk of float weights exceeds the panel");
_Static_assert(STRIP * KT_CHUNK_BLOCKS * 16 <= KT_STAGE_BYTES, "float chunk exceeds the stage");

/* ---- unpacking, written once --------------------------------------------
 * Vectors as wide as the ISA's, in GCC/clang vector extensions: the unpacking of levels
 * is masks and shifts on lanes, the same in every instruction set, so it is written here
 * on these and cast to and from the ISA's own types (a cast between vectors of one size
 * keeps the bits). Panel layouts are in the ISA files. */
typedef uint8_t kv_u8 __attribute__((vector_size(4 * STRIP)));
typedef uint32_t kv_u32 __attribute__((vector_size(4 * STRIP)));
typedef int32_t kv_i32 __attribute__((vector_size(4 * STRIP)));

/* (a, b) as int16 halves of each 32-bit lane. */
KTI_INLINE kv_u32 kv_pair16(kv_i32 a, kv_i32 b) { return ((kv_u32)a & 0xFFFF) | (kv_u32)b << 16; }

/* Levels of 32 weights whose low nibbles are weights 0-15 and high ones 16-31 (dwords of
 * the ISA's load16x4 at qs_off): lo[k] then hi[k], less offset where SIGNED_LEVELS. */
KTI_INLINE void nibble_levels(const strip *row, size_t qs_off, int offset, vint lo[4], vint hi[4])
{
    vint q[4];
    load16x4(row, qs_off, q);
    const uint8_t off = (uint8_t)(SIGNED_LEVELS ? offset : 0);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        lo[k] = (vint)(((kv_u8)q[k] & 0x0F) - off);
        hi[k] = (vint)((kv_u8)((kv_u32)q[k] >> 4 & 0x0F0F0F0F) - off);
    }
}

/* Adds 16 to each level whose bit in its row's 32-bit qh (lane r) is set: dword g wants
 * bits 4g..4g+3, one to each of its bytes. The multiplication spreads nibble bit k to bit
 * 8k (its partial products, at bits k + 7j, never overlap), the mask keeps those. */
KTI_INLINE void add_fifth_bits(kv_u32 qh, vint q[8])
{
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++) {
        const kv_u32 spread = ((qh >> (4 * g) & 0xF) * 0x00204081u & 0x01010101u) << 4;
        q[g] = (vint)((kv_u8)q[g] + (kv_u8)spread);
    }
}

KTI_INLINE void unpack_q4_0(const strip *row, size_t off, panel32 *p)
{
    nibble_levels(row, off + offsetof(qt_block_q4_0, qs), 8, p->q, p->q + 4);
    p->d = gather_f16(row, off);
}

KTI_INLINE void unpack_q4_1(const strip *row, size_t off, panel32 *p)
{
    nibble_levels(row, off + offsetof(qt_block_q4_1, qs), 0, p->q, p->q + 4);
    p->d = gather_f16(row, off);
    p->m = gather_f16(row, off + offsetof(qt_block_q4_1, m));
}

KTI_INLINE void unpack_q5_0(const strip *row, size_t off, panel32 *p)
{
    nibble_levels(row, off + offsetof(qt_block_q5_0, qs), 16, p->q, p->q + 4);
    add_fifth_bits((kv_u32)gather_u32(row, off + offsetof(qt_block_q5_0, qh)), p->q);
    p->d = gather_f16(row, off);
}

KTI_INLINE void unpack_q5_1(const strip *row, size_t off, panel32 *p)
{
    nibble_levels(row, off + offsetof(qt_block_q5_1, qs), 0, p->q, p->q + 4);
    add_fifth_bits((kv_u32)gather_u32(row, off + offsetof(qt_block_q5_1, qh)), p->q);
    p->d = gather_f16(row, off);
    p->m = gather_f16(row, off + offsetof(qt_block_q5_1, m));
}

/* A K sub-block's scale s as the ISA's tilek takes it, and a corr entry: the int16 pair
 * (a, b) where CORR_PAIRS, else a (a sub-block's min; such ISAs have SIGNED_LEVELS and no
 * Q6_K corr). Cast to panelk's own vector types. */
#define KTI_SCALE(s) ((__typeof__(((panelk *)0)->sc[0]))(SCALE_PAIRS ? kv_pair16(s, s) : (kv_u32)(s)))
#define KTI_CORR(a, b) ((__typeof__(((panelk *)0)->corr[0]))(CORR_PAIRS ? kv_pair16(a, b) : (kv_u32)(a)))

/* Q4_K/Q5_K header: d, dmin and the 6-bit scales and mins of the eight sub-blocks, packed
 * as in kern_ref.c (bytes 0-3: low 6 bits of scales 0-3, top 2 bits of scales 4-7; 4-7:
 * the same for mins; 8-11: low nibbles of scales 4-7, high ones of mins 4-7). From the
 * header's dwords h (load16x4 at the block), the scales of sub-blocks 4k..4k+3 as the bytes
 * of each lane of sc[k], the mins likewise in mn[k]. */
KTI_INLINE void k_affine_scales(const vint h[4], kv_u8 sc[2], kv_u8 mn[2])
{
    const kv_u8 b1 = (kv_u8)h[1], b2 = (kv_u8)h[2], b3 = (kv_u8)h[3];
    sc[0] = b1 & 63;
    sc[1] = (b3 & 15) | ((kv_u8)((kv_u32)h[1] >> 2) & 0x30);
    mn[0] = b2 & 63;
    mn[1] = (kv_u8)((kv_u32)h[3] >> 4 & 0x0F0F0F0F) | ((kv_u8)((kv_u32)h[2] >> 2) & 0x30);
}

/* The header into a panel entry; the mins' share comes back as d2·Σ corr·bsums, so
 * d2 = -dmin. */
KTI_INLINE void k_affine_header(const strip *row, size_t off, panelk *p)
{
    vint h[4];
    load16x4(row, off, h); /* d | dmin << 16, scales[0..3], [4..7], [8..11] */
    p->d = low_f16(h[0]);
    p->d2 = -low_f16((vint)((kv_u32)h[0] >> 16));
    kv_u8 sc[2], mn[2];
    k_affine_scales(h, sc, mn);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        const kv_i32 s = (kv_i32)((kv_u32)sc[j >> 2] >> (8 * (j & 3)) & 0xFF);
        const kv_i32 m = (kv_i32)((kv_u32)mn[j >> 2] >> (8 * (j & 3)) & 0xFF);
        p->sc[j] = KTI_SCALE(s);
        p->corr[j] = KTI_CORR(m, m);
    }
}

/* Q4_K/Q5_K levels: each 32 bytes of qs hold sub-block 2c in low nibbles, 2c+1 in high. */
KTI_INLINE void k_nibble_levels(const strip *row, size_t qs_off, panelk *p)
{
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
            nibble_levels(row, qs_off + 32 * c + 16 * h, 0, p->q + 16 * c + 4 * h, p->q + 16 * c + 8 + 4 * h);
}

KTI_INLINE void unpack_q4_k(const strip *row, size_t off, panelk *p)
{
    k_affine_header(row, off, p);
    k_nibble_levels(row, off + offsetof(qt_block_q4_k, qs), p);
}

/* Q5_K: the fifth bit of weight l of sub-block j is bit j of qh[l]. */
KTI_INLINE void unpack_q5_k(const strip *row, size_t off, panelk *p)
{
    k_affine_header(row, off, p);
    k_nibble_levels(row, off + offsetof(qt_block_q5_k, qs), p);
    vint qh[8];
    load16x4(row, off + offsetof(qt_block_q5_k, qh), qh);
    load16x4(row, off + offsetof(qt_block_q5_k, qh) + 16, qh + 4);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++)
            p->q[8 * j + g] = (vint)((kv_u32)p->q[8 * j + g] | ((kv_u32)qh[g] >> j & 0x01010101) << 4);
}

/* Q6_K: 32-weight chunk 4h+q, dword g takes nibble q>>1 of ql dword 16h + 8(q&1) + g and
 * bits 2q..2q+1 of qh dword 8h + g; levels u stand for u - 32 (subtracted where
 * SIGNED_LEVELS, else their share -32·sc_k·bsums[k] is corr's); 16 sub-blocks of 16
 * with int8 scales. */
KTI_INLINE void unpack_q6_k(const strip *row, size_t off, panelk *p)
{
    vint ql[32], qh[16], sc[4];
#pragma GCC unroll 8
    for (int m = 0; m < 8; m++)
        load16x4(row, off + offsetof(qt_block_q6_k, ql) + 16 * m, ql + 4 * m);
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++)
        load16x4(row, off + offsetof(qt_block_q6_k, qh) + 16 * m, qh + 4 * m);
    load16x4(row, off + offsetof(qt_block_q6_k, scales), sc);
    const uint8_t off32 = SIGNED_LEVELS ? 32 : 0;
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++)
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++)
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                const kv_u32 lo = (kv_u32)ql[16 * h + 8 * (q & 1) + g] >> (4 * (q >> 1)) & 0x0F0F0F0F;
                const kv_u32 hb = (kv_u32)qh[8 * h + g];
                const kv_u32 hi = (q < 2 ? hb << (4 - 2 * q) : hb >> (2 * q - 4)) & 0x30303030;
                p->q[32 * h + 8 * q + g] = (vint)((kv_u8)(lo | hi) - off32);
            }
    kv_i32 s[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; k++) { /* int8 scale k: byte k%4 of dword k/4, sign-extended */
        s[k] = (kv_i32)((kv_u32)sc[k >> 2] << (24 - 8 * (k & 3))) >> 24;
        p->sc[k] = KTI_SCALE(s[k]);
    }
    if (!SIGNED_LEVELS)
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            p->corr[k] = KTI_CORR(s[2 * k] * -32, s[2 * k + 1] * -32);
    p->d = gather_f16(row, off + offsetof(qt_block_q6_k, d));
    p->d2 = p->d;
}

KTI_INLINE void unpack_f32(const strip *row, size_t off, panelf *p)
{
    vint q[4];
    load16x4(row, off, q);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        p->w[k] = (vfloat)q[k];
}

KTI_INLINE void unpack_f16(const strip *row, size_t off, panelf *p)
{
    vint q[4];
    load16x4(row, off, q);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        p->w[2 * k] = low_f16(q[k]);
        p->w[2 * k + 1] = low_f16((vint)((kv_u32)q[k] >> 16));
    }
}

KTI_INLINE void unpack_bf16(const strip *row, size_t off, panelf *p)
{
    vint q[4];
    load16x4(row, off, q);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) { /* bf16 is the top half of an f32 */
        p->w[2 * k] = (vfloat)((kv_u32)q[k] << 16);
        p->w[2 * k + 1] = (vfloat)((kv_u32)q[k] & 0xFFFF0000u);
    }
}

typedef void (*unpack32_fn)(const strip *row, size_t off, panel32 *p); /* the block at off */
typedef void (*unpackk_fn)(const strip *row, size_t off, panelk *p);
typedef void (*unpackf_fn)(const strip *row, size_t off, panelf *p);

/* Where tile32 takes its blocks from: a packed panel (unpack NULL), or the strip's rows
 * themselves (decode's matvec: each block unpacked into registers as it is used, the next
 * strip's prefetches taken on the way). unpack must be a constant where this is inlined,
 * so that it is inlined too: a call through a pointer would cost more than the block. */
typedef struct source32 {
    const panel32 *panel;
    strip rows;
    kt_prefetch ahead;
} source32;

/* Block b: the panel's entry, or unpacked into *scratch. */
KTI_INLINE const panel32 *src_block(source32 *src, int b, size_t block_bytes, unpack32_fn unpack, panel32 *scratch)
{
    if (!unpack)
        return &src->panel[b];
    kt_prefetch_step(&src->ahead);
    unpack(&src->rows, (size_t)b * block_bytes, scratch);
    return scratch;
}

typedef int32_t kv_sum __attribute__((vector_size(4 * STRIP))); /* a dot product's int32 lanes */

KTI_INLINE kv_sum block_dot32(const panel32 *p, const uint8_t *y, int32_t offset, bool split, traits32 tr);
KTI_INLINE void block_dotk(const panelk *p, const qt_block_q8_k *const y[], int nc, kv_sum tot[], traitsk tr);
KTI_INLINE kv_sum block_corrk(const panelk *p, const qt_block_q8_k *y);

KTI_INLINE vfloat vf_of_sum(kv_sum v) { return __builtin_convertvector(v, vfloat); }

/* A tile's accumulators, one vector of rows per column: zeroed, and stored (or added) into
 * out's columns at the end. */
KTI_INLINE void zero_columns(vfloat acc[], int nc)
{
#pragma GCC unroll 8
    for (int c = 0; c < nc; c++)
        acc[c] = vf_splat(0);
}

KTI_INLINE void store_columns(const vfloat acc[], int nc, float *out, size_t out_stride, int nrows, bool accumulate)
{
#pragma GCC unroll 8
    for (int c = 0; c < nc; c++)
        store_rows(out + (size_t)c * out_stride, acc[c], nrows, accumulate);
}

/* kt_kernel's compute for nc columns (a constant where this is inlined, so that the
 * accumulators stay in registers), and decode's matvec (nc 1, blocks from src's rows): per
 * block, Σ levels·y from the offset's share, times d·d_y; affine types add m·s_y. */
KTI_INLINE void tile32(source32 *src, size_t block_bytes, unpack32_fn unpack, int nb, const uint8_t *x,
                       size_t x_stride, const kt_act *t, int t_stride, float *out, size_t out_stride, int nrows,
                       bool accumulate, int nc, traits32 tr)
{
    const size_t ybytes = tr.has_min ? sizeof(qt_block_q8_1) : sizeof(qt_block_q8_0);
    const size_t qs = tr.has_min ? offsetof(qt_block_q8_1, qs) : offsetof(qt_block_q8_0, qs);
    vfloat acc[8];
    zero_columns(acc, nc);
    for (int b = 0; b < nb; b++) {
        panel32 scratch;
        const panel32 *p = src_block(src, b, block_bytes, unpack, &scratch);
#pragma GCC unroll 8
        for (int c = 0; c < nc; c++) {
            const uint8_t *y = x + (size_t)c * x_stride + (size_t)b * ybytes + qs;
            const kt_act *a = &t[c * t_stride + b];
            acc[c] = vf_fma(acc[c], vf_of_sum(block_dot32(p, y, a->offset, nc == 1, tr)), p->d * a->d);
            if (tr.has_min)
                acc[c] = vf_fma(acc[c], p->m, vf_splat(a->s));
        }
    }
    store_columns(acc, nc, out, out_stride, nrows, accumulate);
}

/* Per K block and column, block_dotk times d·d_y, plus block_corrk times d2·d_y. */
KTI_INLINE void tilek(const panelk *p, int nb, const uint8_t *x, size_t x_stride, float *out, size_t out_stride,
                      int nrows, bool accumulate, int nc, traitsk tr)
{
    vfloat acc[8];
    zero_columns(acc, nc);
    for (int b = 0; b < nb; b++) {
        const qt_block_q8_k *y[8];
        kv_sum tot[8];
#pragma GCC unroll 8
        for (int c = 0; c < nc; c++)
            y[c] = (const qt_block_q8_k *)(x + (size_t)c * x_stride) + b;
        block_dotk(&p[b], y, nc, tot, tr);
#pragma GCC unroll 8
        for (int c = 0; c < nc; c++) {
            acc[c] = vf_fma(acc[c], vf_of_sum(tot[c]), p[b].d * y[c]->d);
            if (tr.has_min || !SIGNED_LEVELS)
                acc[c] = vf_fma(acc[c], vf_of_sum(block_corrk(&p[b], y[c])), p[b].d2 * y[c]->d);
        }
    }
    store_columns(acc, nc, out, out_stride, nrows, accumulate);
}

/* Per weight, its vector of rows times the column's activation. */
KTI_INLINE void tilef(const panelf *p, int nb, const uint8_t *x, size_t x_stride, float *out, size_t out_stride,
                      int nrows, bool accumulate, int nc, traitsf tr)
{
    vfloat acc[8];
    zero_columns(acc, nc);
    for (int b = 0; b < nb; b++)
#pragma GCC unroll 8
        for (int e = 0; e < tr.elems; e++)
#pragma GCC unroll 8
            for (int c = 0; c < nc; c++)
                acc[c] = vf_fma(acc[c], p[b].w[e],
                                vf_splat(((const float *)(x + (size_t)c * x_stride))[b * tr.elems + e]));
    store_columns(acc, nc, out, out_stride, nrows, accumulate);
}

/* pack32, packk and packf: a strip's blocks unpacked one after another into the panel,
 * prefetching on the way. */
#define KTI_PACK(name, panel_t, unpack_t)                                                                         \
    KTI_INLINE void name(const uint8_t *w, size_t w_stride, int nb, void *panel, const kt_prefetch *pf,          \
                         size_t block_bytes, unpack_t unpack)                                                    \
    {                                                                                                            \
        const strip row = strip_rows(w, w_stride);                                                               \
        kt_prefetch ahead = *pf; /* a local copy stays in registers */                                           \
        panel_t *p = panel;                                                                                      \
        for (int b = 0; b < nb; b++) {                                                                           \
            kt_prefetch_step(&ahead);                                                                            \
            unpack(&row, (size_t)b * block_bytes, &p[b]);                                                        \
        }                                                                                                        \
    }
KTI_PACK(pack32, panel32, unpack32_fn)
KTI_PACK(packk, panelk, unpackk_fn)
KTI_PACK(packf, panelf, unpackf_fn)
#undef KTI_PACK

/* kt_kernel's compute: groups of COLS32 columns, then the rest in halving groups. */
KTI_INLINE void compute32(const void *panel, int nb, const uint8_t *x, size_t x_stride, int ncols, const kt_act *t,
                          int t_stride, float *out, size_t out_stride, int nrows, bool accumulate, traits32 tr)
{
    source32 src = {.panel = panel};
    int c = 0;
#define KTI_TILE32(n)                                                                                           \
    tile32(&src, 0, NULL, nb, x + c * x_stride, x_stride, t + c * t_stride, t_stride, out + c * out_stride,   \
           out_stride, nrows, accumulate, n, tr)
    for (; c + COLS32 <= ncols; c += COLS32)
        KTI_TILE32(COLS32);
    if (COLS32 > 4 && ncols - c >= 4) {
        KTI_TILE32(4);
        c += 4;
    }
    if (ncols - c >= 2) {
        KTI_TILE32(2);
        c += 2;
    }
    if (ncols - c >= 1)
        KTI_TILE32(1);
#undef KTI_TILE32
}

KTI_INLINE void matvec32(const uint8_t *w, size_t w_stride, int nb, const kt_prefetch *pf, const uint8_t *x,
                         const kt_act *t, float *out, int nrows, bool accumulate, size_t block_bytes,
                         unpack32_fn unpack, traits32 tr)
{
    source32 src = {NULL, strip_rows(w, w_stride), *pf};
    tile32(&src, block_bytes, unpack, nb, x, 0, t, 0, out, 0, nrows, accumulate, 1, tr);
}

/* computek and computef: groups of COLSK (COLSF) columns, then the rest in halving groups
 * (each a constant, as in compute32). */
#define KTI_TILE_AT(tile, n)                                                                                     \
    tile(p, nb, x + c * x_stride, x_stride, out + c * out_stride, out_stride, nrows, accumulate, n, tr)
#define KTI_COMPUTE(name, tile, panel_t, cols, traits_t)                                                        \
    KTI_INLINE void name(const void *panel, int nb, const uint8_t *x, size_t x_stride, int ncols, float *out,    \
                         size_t out_stride, int nrows, bool accumulate, traits_t tr)                             \
    {                                                                                                            \
        const panel_t *p = panel;                                                                                \
        int c = 0;                                                                                               \
        for (; c + cols <= ncols; c += cols)                                                                     \
            KTI_TILE_AT(tile, cols);                                                                             \
        if (cols > 4 && ncols - c >= 4) {                                                                        \
            KTI_TILE_AT(tile, 4);                                                                                \
            c += 4;                                                                                              \
        }                                                                                                        \
        if (cols > 2 && ncols - c >= 2) {                                                                        \
            KTI_TILE_AT(tile, 2);                                                                                \
            c += 2;                                                                                              \
        }                                                                                                        \
        if (ncols - c >= 1)                                                                                      \
            KTI_TILE_AT(tile, 1);                                                                                \
    }
KTI_COMPUTE(computek, tilek, panelk, COLSK, traitsk)
KTI_COMPUTE(computef, tilef, panelf, COLSF, traitsf)
#undef KTI_COMPUTE
#undef KTI_TILE_AT

/* tile_<type> and gemm_<type> of a 32-weight type with act_type activations (q8_0, or
 * q8_1 for the affine types); act_fn gives the kt_act of its blocks. Decode takes the
 * strip's matvec32: a single column gains most from unpacking a block once for sixteen rows
 * (Q4_0 from DRAM, AVX-512: 20.5 GB/s against dot's 14.3; AVX-512's Q4_0 has since a
 * kernel of its own, through KT_TILE32_MATVEC). */
#define KT_TILE32(type, act_type, act_fn, traits)                                                               \
    static void matvec_##type(const uint8_t *w, size_t w_stride, int nb, const kt_prefetch *pf, const uint8_t *x, \
                              const kt_act *t, float *out, int nrows, bool accumulate)                           \
    {                                                                                                            \
        matvec32(w, w_stride, nb, pf, x, t, out, nrows, accumulate, sizeof(qt_block_##type), unpack_##type,      \
                 traits);                                                                                        \
    }                                                                                                            \
    KT_TILE32_MATVEC(type, act_type, act_fn, traits, matvec_##type)

/* KT_TILE32 with decode's kernel named: matvec_fn, or NULL for the dot per row. Q8_0 is
 * not unpacked, only transposed, and the transposition costs more than it saves: AVX-512
 * has a kernel of its own (matvec_q8_0_pairs); AVX2 and NEON take dot (from DRAM, AVX2's
 * strip made 19.4 GB/s against dot's 26.3; decoding TinyLlama Q8_0 on 2 Zen 4 cores, the
 * AVX-512 strip 33.6 t/s against dot's 38.5). */
#define KT_TILE32_MATVEC(type, act_type, act_fn, traits, matvec_fn)                                             \
    static void pack_##type(const uint8_t *w, size_t w_stride, int nb, void *panel, const kt_prefetch *pf)       \
    {                                                                                                            \
        pack32(w, w_stride, nb, panel, pf, sizeof(qt_block_##type), unpack_##type);                              \
    }                                                                                                            \
    static void compute_##type(const void *panel, int nb, const uint8_t *x, size_t x_stride, int ncols,          \
                               const kt_act *t, int t_stride, float *out, size_t out_stride, int nrows,          \
                               bool accumulate)                                                                  \
    {                                                                                                            \
        compute32(panel, nb, x, x_stride, ncols, t, t_stride, out, out_stride, nrows, accumulate, traits);       \
    }                                                                                                            \
    static const kt_kernel tile_##type = {.strip = STRIP,                                                        \
                                          .block_elems = 32,                                                     \
                                          .chunk_blocks = KT_CHUNK_BLOCKS,                                       \
                                          .block_bytes = sizeof(qt_block_##type),                                \
                                          .act_block_bytes = sizeof(qt_block_##act_type),                        \
                                          .act = act_fn,                                                         \
                                          .pack = pack_##type,                                                   \
                                          .compute = compute_##type,                                             \
                                          .matvec = matvec_fn,                                                   \
                                          .dot = dot_##type};                                                    \
    KT_GEMM(type)

/* gemm_strips_<type> (kern_strips_fn) of a type the ISA has strips kernels for: a single
 * column by decode(n, strips, w, x, out), its matvec over whole strips, several columns
 * through strips_tile_<type>, a kt_kernel whose pack reads strips. */
#define KT_GEMM_STRIPS(type, decode)                                                                             \
    static void gemm_strips_##type(int n, int rows, int cols, const void *w, const void *x, size_t x_stride,     \
                                   float *out, size_t out_stride)                                                \
    {                                                                                                            \
        const kt_kernel *k = &strips_tile_##type;                                                                \
        if (cols == 1)                                                                                           \
            decode(n, rows / KERN_STRIP_ROWS, w, x, out);                                                        \
        else                                                                                                     \
            kt_gemm(k, n, rows, cols, w, (size_t)(n / k->block_elems) * k->block_bytes, x, x_stride, out,        \
                    out_stride);                                                                                 \
    }

/* tile_<type> and gemm_<type> of a K type. Decode loops the dot product, which already
 * spreads its float work over 256 weights and measured as fast as a strip unpacked into a
 * panel for a single column; KT_TILEK_MATVEC names a kernel of the ISA's own instead
 * (AVX-512's Q4_K). */
#define KT_TILEK(type, traits) KT_TILEK_MATVEC(type, traits, NULL)
#define KT_TILEK_MATVEC(type, traits, matvec_fn)                                                                 \
    KTI_TILE_PANEL(type, packk, computek, traits, QK_K, K_CHUNK, sizeof(qt_block_##type), sizeof(qt_block_q8_k), \
                   matvec_fn)

/* tile_<type> and gemm_<type> of a float type with elems weights per 16 bytes (decode takes
 * dot too: a float row gains nothing from unpacking). */
#define KT_TILEF(type, elems)                                                                                    \
    KTI_TILE_PANEL(type, packf, computef, ((traitsf){elems}), elems, KT_CHUNK_BLOCKS, 16, elems * sizeof(float), NULL)

/* tile_<type> and gemm_<type> of a type whose tiles need no kt_act, from the pack and
 * compute loops of its panel family. */
#define KTI_TILE_PANEL(type, pack_fn, compute_fn, traits, elems, chunk, wbytes, xbytes, matvec_fn)               \
    static void pack_##type(const uint8_t *w, size_t w_stride, int nb, void *panel, const kt_prefetch *pf)       \
    {                                                                                                            \
        pack_fn(w, w_stride, nb, panel, pf, wbytes, unpack_##type);                                              \
    }                                                                                                            \
    static void compute_##type(const void *panel, int nb, const uint8_t *x, size_t x_stride, int ncols,          \
                               const kt_act *t, int t_stride, float *out, size_t out_stride, int nrows,          \
                               bool accumulate)                                                                  \
    {                                                                                                            \
        (void)t, (void)t_stride;                                                                                 \
        compute_fn(panel, nb, x, x_stride, ncols, out, out_stride, nrows, accumulate, traits);                   \
    }                                                                                                            \
    static const kt_kernel tile_##type = {.strip = STRIP,                                                        \
                                          .block_elems = elems,                                                  \
                                          .chunk_blocks = chunk,                                                 \
                                          .block_bytes = wbytes,                                                 \
                                          .act_block_bytes = xbytes,                                             \
                                          .pack = pack_##type,                                                   \
                                          .compute = compute_##type,                                             \
                                          .matvec = matvec_fn,                                                   \
                                          .dot = dot_##type};                                                    \
    KT_GEMM(type)

#endif
