/* kern_tile — the loop nest of the SIMD gemm kernels (see kern_tile.h). Plain C, compiled
 * without ISA flags: it only orders the work and calls the ISA file's pack and compute,
 * each of which does a whole strip-by-chunk at a time, so the indirect calls cost nothing
 * measurable. */
#include "kern_tile.h"

#include <limits.h>
#include <string.h>

static int min_int(int a, int b) { return a < b ? a : b; }

/* Prefetches for nrows rows from w (bytes from each one's start), spread over steps steps. */
static kt_prefetch prefetch_plan(const uint8_t *w, size_t w_stride, int nrows, size_t bytes, int steps)
{
    kt_prefetch pf = {NULL, NULL, w_stride, bytes, 0, 0};
    if (nrows > 0) {
        pf.next = (const uint8_t *)((uintptr_t)w & ~(uintptr_t)63);
        pf.end = w + bytes;
        pf.rows_left = nrows - 1;
        pf.lines_per_step = (int)(((size_t)nrows * ((bytes + 63) / 64 + 1) + (size_t)steps - 1) / (size_t)steps);
    }
    return pf;
}

/* Activation facts (kt_act) are gathered for a span of blocks of every column at once, as
 * many as the table holds, and reused by every strip of the span. A prefill batch (64
 * columns) gets spans of one chunk: each strip's chunk is unpacked once for all columns.
 * Decode (one column) gets a span of the whole row, so each strip reads its rows from
 * start to end while the next strip's are prefetched. out accumulates the chunks' partial
 * sums. */
static void tiles(const kt_kernel *k, int nb, int rows, int cols, const uint8_t *w, size_t w_stride,
                  const uint8_t *x, size_t x_stride, float *out, size_t out_stride)
{
    _Alignas(64) uint8_t panel[KT_PANEL_BYTES];
    _Alignas(64) uint8_t stage[KT_STAGE_BYTES];
    kt_act table[KT_TABLE];
    const int span = k->act ? KT_TABLE / cols / k->chunk_blocks * k->chunk_blocks : nb;
    for (int s0 = 0; s0 < nb; s0 += span) {
        const int ns = min_int(span, nb - s0);
        if (k->act)
            for (int c = 0; c < cols; c++)
                k->act(x + (size_t)c * x_stride + (size_t)s0 * k->act_block_bytes, ns, table + c * ns);
        for (int r0 = 0; r0 < rows; r0 += k->strip) {
            const int nr = min_int(k->strip, rows - r0);
            for (int b0 = s0; b0 < s0 + ns; b0 += k->chunk_blocks) {
                const int kb = min_int(k->chunk_blocks, s0 + ns - b0);
                const size_t bytes = (size_t)kb * k->block_bytes;
                const uint8_t *xb = x + (size_t)b0 * k->act_block_bytes;
                const uint8_t *src; /* what pack or matvec reads, src_stride apart */
                size_t src_stride;
                kt_prefetch next;
                if (k->strips) { /* the chunk is one run of bytes, and so is the next strip's */
                    src = w + (size_t)r0 * w_stride + (size_t)b0 * k->strip * k->block_bytes;
                    src_stride = 0;
                    next = prefetch_plan(src + (size_t)k->strip * w_stride, 0, r0 + nr < rows, (size_t)k->strip * bytes,
                                         kb);
                } else {
                    const uint8_t *wc = w + (size_t)r0 * w_stride + (size_t)b0 * k->block_bytes;
                    if (r0 == 0) { /* nothing fetched this one ahead: ask for all of it at once */
                        kt_prefetch now = prefetch_plan(wc, w_stride, nr, bytes, 1);
                        now.lines_per_step = INT_MAX;
                        kt_prefetch_step(&now);
                    }
                    next = prefetch_plan(wc + (size_t)nr * w_stride, w_stride, min_int(k->strip, rows - r0 - nr), bytes,
                                         kb);
                    if (nr < k->strip) { /* a short last strip: its rows, then zeros, one after another */
                        for (int r = 0; r < nr; r++)
                            memcpy(stage + (size_t)r * bytes, wc + (size_t)r * w_stride, bytes);
                        memset(stage + (size_t)nr * bytes, 0, (size_t)(k->strip - nr) * bytes);
                    }
                    src = nr < k->strip ? stage : wc;
                    src_stride = nr < k->strip ? bytes : w_stride;
                }
                if (cols == 1 && k->matvec) {
                    k->matvec(src, src_stride, kb, &next, xb, table + (b0 - s0), out + r0, nr, b0 > 0);
                } else {
                    k->pack(src, src_stride, kb, panel, &next);
                    k->compute(panel, kb, xb, x_stride, cols, table + (b0 - s0), ns, out + r0, out_stride, nr,
                               b0 > 0);
                }
            }
        }
    }
}

void kt_gemm(const kt_kernel *k, int n, int rows, int cols, const void *w, size_t w_stride, const void *x,
             size_t x_stride, float *out, size_t out_stride)
{
    const int nb = n / k->block_elems, tail = n - nb * k->block_elems; /* tail: float types only */
    if (nb == 0 || (cols == 1 && !k->matvec && !k->strips)) {
        for (int c = 0; c < cols; c++)
            for (int r = 0; r < rows; r++)
                out[(size_t)c * out_stride + r] =
                    k->dot(n, (const uint8_t *)w + (size_t)r * w_stride, (const uint8_t *)x + (size_t)c * x_stride);
        return;
    }
    for (int c0 = 0; c0 < cols; c0 += KT_COLS)
        tiles(k, nb, rows, cols - c0 < KT_COLS ? cols - c0 : KT_COLS, w, w_stride,
              (const uint8_t *)x + (size_t)c0 * x_stride, x_stride, out + (size_t)c0 * out_stride, out_stride);
    if (tail) /* the last elements of float rows, short of a block */
        for (int c = 0; c < cols; c++)
            for (int r = 0; r < rows; r++)
                out[(size_t)c * out_stride + r] += k->dot(
                    tail, (const uint8_t *)w + (size_t)r * w_stride + (size_t)nb * k->block_bytes,
                    (const uint8_t *)x + (size_t)c * x_stride + (size_t)nb * k->act_block_bytes);
}
