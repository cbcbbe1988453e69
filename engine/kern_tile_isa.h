/* kern_tile_isa — the half of a SIMD file's gemm section that does not depend on the
 * instruction set, written once: the loops that unpack a strip into a panel, the split of
 * columns into groups a tile keeps in registers, decode's matvec, and the macros that
 * declare each weight type's kt_kernel (kern_tile.h) and gemm entry. Not a public header,
 * and not a standalone one: kern_avx2.c, kern_avx512.c and kern_neon.c include it in the
 * middle of their gemm section, after defining
 *   STRIP, COLS32, COLSK, COLSF   rows per strip; most columns per tile32 / tilek / tilef call
 *   strip, strip_rows(w, stride)  a strip's row addresses
 *   panel32, panelk, K_CHUNK      a 32-weight block / K block unpacked; K blocks per chunk
 *   panelf                        16 bytes of float weights (F32, F16, BF16) unpacked
 *   traits32, traitsk, traitsf    what their tile functions need to know of a type
 * and before defining their unpack_<type> functions and
 *   tile32(src, block_bytes, unpack, nb, x, x_stride, t, t_stride, out, out_stride, nrows,
 *          accumulate, nc, traits32)
 *   tilek(panel, nb, x, x_stride, out, out_stride, nrows, accumulate, nc, traitsk)
 *   tilef(panel, nb, x, x_stride, out, out_stride, nrows, accumulate, nc, traitsf)
 * (declared here), which compute nc columns (a constant where they are inlined, so that
 * the accumulators stay in registers) of a strip: kt_kernel's compute, for nc columns. */
#ifndef EDGELLM_KERN_TILE_ISA_H
#define EDGELLM_KERN_TILE_ISA_H

#include "kern_tile.h"

#define KTI_INLINE static inline __attribute__((always_inline))

_Static_assert(KT_CHUNK_BLOCKS * sizeof(panel32) <= KT_PANEL_BYTES, "a chunk of 32-weight blocks exceeds the panel");
_Static_assert(STRIP * KT_CHUNK_BLOCKS * sizeof(qt_block_q8_0) <= KT_STAGE_BYTES, "32-weight chunk exceeds the stage");
_Static_assert(K_CHUNK >= 1 && K_CHUNK * sizeof(panelk) <= KT_PANEL_BYTES && (int)K_CHUNK <= (int)KT_CHUNK_BLOCKS,
               "a chunk of K blocks exceeds the panel");
_Static_assert(STRIP * K_CHUNK * sizeof(qt_block_q6_k) <= KT_STAGE_BYTES, "K chunk exceeds the stage");
_Static_assert(KT_CHUNK_BLOCKS * sizeof(panelf) <= KT_PANEL_BYTES, "a chunk of float weights exceeds the panel");
_Static_assert(STRIP * KT_CHUNK_BLOCKS * 16 <= KT_STAGE_BYTES, "float chunk exceeds the stage");

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

KTI_INLINE void src_block(source32 *src, int b, size_t block_bytes, unpack32_fn unpack, panel32 *p)
{
    if (!unpack) {
        *p = src->panel[b];
        return;
    }
    kt_prefetch_step(&src->ahead);
    unpack(&src->rows, (size_t)b * block_bytes, p);
}

KTI_INLINE void tile32(source32 *src, size_t block_bytes, unpack32_fn unpack, int nb, const uint8_t *x,
                       size_t x_stride, const kt_act *t, int t_stride, float *out, size_t out_stride, int nrows,
                       bool accumulate, int nc, traits32 tr);
KTI_INLINE void tilek(const panelk *p, int nb, const uint8_t *x, size_t x_stride, float *out, size_t out_stride,
                      int nrows, bool accumulate, int nc, traitsk tr);
KTI_INLINE void tilef(const panelf *p, int nb, const uint8_t *x, size_t x_stride, float *out, size_t out_stride,
                      int nrows, bool accumulate, int nc, traitsf tr);

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
 * q8_1 for the affine types); act_fn gives the kt_act of its blocks. with_matvec: decode
 * takes matvec, else dot (Q8_0: its bytes need no unpacking but the transposition, which
 * then costs more than it saves; measured from DRAM, AVX-512 26.2 GB/s against dot's
 * 27.1, AVX2 19.4 against 26.3, where Q4_0's matvec makes 20.5 of dot's 14.3). */
#define KT_TILE32(type, act_type, act_fn, traits, with_matvec)                                                   \
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
    static void matvec_##type(const uint8_t *w, size_t w_stride, int nb, const kt_prefetch *pf, const uint8_t *x, \
                              const kt_act *t, float *out, int nrows, bool accumulate)                           \
    {                                                                                                            \
        matvec32(w, w_stride, nb, pf, x, t, out, nrows, accumulate, sizeof(qt_block_##type), unpack_##type,      \
                 traits);                                                                                        \
    }                                                                                                            \
    static const kt_kernel tile_##type = {.strip = STRIP,                                                        \
                                          .block_elems = 32,                                                     \
                                          .chunk_blocks = KT_CHUNK_BLOCKS,                                       \
                                          .block_bytes = sizeof(qt_block_##type),                                \
                                          .act_block_bytes = sizeof(qt_block_##act_type),                        \
                                          .act = act_fn,                                                         \
                                          .pack = pack_##type,                                                   \
                                          .compute = compute_##type,                                             \
                                          .matvec = (with_matvec) ? matvec_##type : NULL,                        \
                                          .dot = dot_##type};                                                    \
    KT_GEMM(type)

/* tile_<type> and gemm_<type> of a K type. Decode loops the dot product: it already spreads
 * its float work over 256 weights, and measures as fast as a strip's unpacking for a
 * single column. */
#define KT_TILEK(type, traits)                                                                                   \
    KTI_TILE_PANEL(type, packk, computek, traits, QK_K, K_CHUNK, sizeof(qt_block_##type), sizeof(qt_block_q8_k))

/* tile_<type> and gemm_<type> of a float type with elems weights per 16 bytes (decode takes
 * dot too: a float row gains nothing from unpacking). */
#define KT_TILEF(type, elems)                                                                                    \
    KTI_TILE_PANEL(type, packf, computef, ((traitsf){elems}), elems, KT_CHUNK_BLOCKS, 16, elems * sizeof(float))

/* tile_<type> and gemm_<type> of a type whose tiles need no kt_act, from the pack and
 * compute loops of its panel family. */
#define KTI_TILE_PANEL(type, pack_fn, compute_fn, traits, elems, chunk, wbytes, xbytes)                          \
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
                                          .dot = dot_##type};                                                    \
    KT_GEMM(type)

#endif
