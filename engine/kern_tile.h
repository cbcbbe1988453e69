/* kern_tile — private to the SIMD kernel files (kern_avx2.c, kern_avx512.c, kern_neon.c):
 * the loop nest their gemm entries share, so that each file only says how to unpack its
 * weight types and how to multiply them. Not a public header: kern.h is the API.
 *
 * The layout that makes a tile fast: a strip of `strip` weight rows (one per int32 lane of
 * the ISA's vector) over a chunk of the reduction is unpacked once into a panel in which
 * one vector holds four consecutive weight levels of every row of the strip. Four
 * activation bytes, broadcast, then multiply all rows of the strip in one dot-product
 * instruction, the per-block scales of all rows are one vector, and a column's result is
 * one vector of rows: contiguous in out (kern_gemm_fn keeps rows contiguous). No
 * horizontal sums, and the unpacking (the costly part of a matrix-vector product) is
 * paid once per strip instead of once per column. A chunk's panel fits in L1; the
 * activation blocks of a chunk are read from L2 once per strip.
 *
 * Not here: the unpacking or the arithmetic (each ISA file), or what a result is
 * (kern_ref.c's dot products). */
#ifndef EDGELLM_KERN_TILE_H
#define EDGELLM_KERN_TILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kern.h"

/* Most columns done at once; bytes of one panel (on the stack); most blocks in one chunk;
 * kt_act entries gathered at once (columns x blocks); most bytes of a strip's chunk of
 * weights (strip x chunk_blocks x block_bytes), for staging a short last strip. */
enum {
    KT_COLS = 64,
    KT_PANEL_BYTES = 24 * 1024,
    KT_CHUNK_BLOCKS = 32,
    KT_TABLE = KT_COLS * KT_CHUNK_BLOCKS,
    KT_STAGE_BYTES = 20 * 1024
};

/* Per activation block (one column, one 32-element Q8_0/Q8_1 block): its scale d as a
 * float, the weight offset's share -offset·Σqs (types whose levels are weight + offset),
 * and Q8_1's s as a float. Gathered once per chunk for every column, shared by all strips. */
typedef struct kt_act {
    float d;
    int32_t offset;
    float s;
} kt_act;

/* The weights the next strip will read, asked into L2 a few cache lines at a time while
 * the current strip is unpacked. A strip reads its rows side by side, a block at a time: as
 * many short streams as rows, which hardware prefetchers follow too late when the weights
 * come from DRAM (decode); even steps of sequential prefetches one strip ahead keep the
 * reads as fast as one stream. */
typedef struct kt_prefetch {
    const uint8_t *next, *end; /* next line to ask for; end of the current row's bytes (NULL: none) */
    size_t w_stride, bytes;    /* row stride; bytes wanted from each row's start */
    int rows_left;             /* rows after the current one */
    int lines_per_step;
} kt_prefetch;

/* One step's share of the lines; pack and matvec take one step per block (or, after
 * kt_prefetch_split, several). The change of row is rare and kept out of the loop, which
 * then stays short enough not to straddle a 64-byte code line wherever it lands: when it
 * did, Q8_0 decode measured 38 GB/s from cache against 41. */
static inline void kt_prefetch_step(kt_prefetch *p)
{
    for (int i = 0; i < p->lines_per_step; i++) {
        if (__builtin_expect(p->next >= p->end, 0)) {
            if (p->rows_left == 0)
                return;
            p->rows_left--;
            p->end += p->w_stride;
            p->next = (const uint8_t *)((uintptr_t)(p->end - p->bytes) & ~(uintptr_t)63);
        }
        __builtin_prefetch(p->next, 0, 2);
        p->next += 64;
    }
}

/* The same lines in n times as many steps, for a kernel that takes n steps per block where
 * one block's share (a Q4_K block's: 40 lines) would come as a burst that the loads behind
 * it wait for. */
static inline void kt_prefetch_split(kt_prefetch *p, int n) { p->lines_per_step = (p->lines_per_step + n - 1) / n; }

/* One weight type's kernel, as an ISA file defines it. */
typedef struct kt_kernel {
    int strip;              /* rows per strip: int32 lanes of the vector */
    int block_elems;        /* weights per block (float types: per 16 bytes; rows may end in a part) */
    int chunk_blocks;       /* blocks per chunk, <= KT_CHUNK_BLOCKS: a strip's chunk fits KT_PANEL_BYTES
                             * unpacked and KT_STAGE_BYTES packed */
    size_t block_bytes;     /* bytes per weight block */
    size_t act_block_bytes; /* bytes per activation block (one per weight block) */
    /* t[b] for the nb activation blocks at x (one column); NULL when compute needs none */
    void (*act)(const uint8_t *x, int nb, kt_act *t);
    /* Unpacks nb blocks of the strip's rows w + r·w_stride, r < strip, into panel
     * (KT_PANEL_BYTES, 64-byte aligned), taking a kt_prefetch_step of a copy of *pf per
     * block. Always a whole strip: kt_gemm copies a short last one, zero-padded, first. */
    void (*pack)(const uint8_t *w, size_t w_stride, int nb, void *panel, const kt_prefetch *pf);
    /* For c < ncols (<= KT_COLS) and r < nrows: out[c·out_stride + r] = (or, when
     * accumulate, +=) the panel's row r dotted with the nb activation blocks of column c
     * at x + c·x_stride; t[c·t_stride + b] holds their kt_act when act is set. */
    void (*compute)(const void *panel, int nb, const uint8_t *x, size_t x_stride, int ncols, const kt_act *t,
                    int t_stride, float *out, size_t out_stride, int nrows, bool accumulate);
    /* Decode's single column: compute's result (ncols 1) straight from the strip's rows, as
     * pack takes them, each block unpacked into registers and used at once (a panel only
     * pays for itself over several columns). NULL: a single column takes dot per row. */
    void (*matvec)(const uint8_t *w, size_t w_stride, int nb, const kt_prefetch *pf, const uint8_t *x,
                   const kt_act *t, float *out, int nrows, bool accumulate);
    kern_dot_fn dot; /* the variant's dot product for this type */
    /* The matrix is in strips (kern.h; rows a multiple of strip): pack reads the chunk's
     * blocks of one strip, one after another at w (w_stride unused), prefetching the next
     * strip's chunk (one run of bytes), and a single column takes pack and compute. */
    bool strips;
} kt_kernel;

/* kern_gemm_fn (kern.h) for the weight type k unpacks: strips × chunks × columns. Float
 * rows that end in part of a block get that part from k->dot. With k->strips, w is a
 * matrix in strips and w_stride its row bytes. */
void kt_gemm(const kt_kernel *k, int n, int rows, int cols, const void *w, size_t w_stride, const void *x,
             size_t x_stride, float *out, size_t out_stride);

/* gemm_<type>: the kern_gemm_fn of the including file's kt_kernel tile_<type>. */
#define KT_GEMM(type)                                                                                       \
    static void gemm_##type(int n, int rows, int cols, const void *w, size_t w_stride, const void *x,       \
                            size_t x_stride, float *out, size_t out_stride)                                 \
    {                                                                                                       \
        kt_gemm(&tile_##type, n, rows, cols, w, w_stride, x, x_stride, out, out_stride);                    \
    }

#endif
