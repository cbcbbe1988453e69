/* kern — the compute kernels the forward pass spends its time in: dot products of weight
 * rows with activations (and their tiles, which attention uses too), activation
 * quantization, attention's softmax, and the f16 conversion of the KV cache.
 *
 * One table of function pointers (kern_ops) per instruction set: kern_ref.c is the scalar
 * truth; kern_avx2.c, kern_avx512.c, kern_neon.c are the SIMD variants, each compiled with
 * its own target flags and chosen once at start-up from the CPU's features. Entries a
 * variant does not implement are filled from ref, so every table is complete. Tests compare
 * every variant with ref.
 *
 * Not here: threading (pool.h) or model structure (model.c). Kernels never allocate. */
#ifndef EDGELLM_KERN_H
#define EDGELLM_KERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "qtype.h"

/* Dot product of one weight row w (n elements of the weight type) with activations x,
 * already converted to the weight type's act_type (qt_get(t)->act_type): Q8_0 blocks for
 * Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K types, plain floats for F32/F16/BF16.
 * n is a multiple of the weight type's block size. */
typedef float (*kern_dot_fn)(int n, const void *w, const void *x);

/* Converts n floats into activation type blocks (Q8_0, Q8_1 or Q8_K); n a multiple of the
 * block size. Must produce the bytes qt_quantize_row would (integer results are exact). */
typedef void (*kern_quantize_fn)(const float *x, void *y, int n);

/* A tile of dot products, the matrix-matrix form prefill needs:
 * out[c * out_stride + r] = dot(n, w + r * w_stride, x + c * x_stride) for r < rows, c < cols.
 * Same weight and activation types as kern_dot_fn; strides in bytes (out_stride in floats).
 * A SIMD variant unpacks each weight block once for several activation columns and reads
 * each activation block once for several rows. */
typedef void (*kern_gemm_fn)(int n, int rows, int cols, const void *w, size_t w_stride, const void *x,
                             size_t x_stride, float *out, size_t out_stride);

/* ---- strips: decode's layout of a weight matrix ------------------------------------------
 * A matrix-vector product reads KERN_STRIP_ROWS rows side by side, one per int32 lane, and
 * transposing each block of them into one vector per dword is half of its work
 * (kern_avx512.c). Stored transposed, they need none. A strip is 16 consecutive rows, block
 * by block: for block b, the 16 rows' heads (a block's f16 scale d where its size is 2 past
 * a multiple of 4, as Q4_0's and Q8_0's; none where it is whole dwords, as Q4_K's), then
 * the rest of each row's block as groups of 16 dwords, group g holding dword g of every
 * row's block after its head (dword r: row r). These are the 16 rows' bytes rearranged
 * within their 16·row_bytes: a matrix in strips keeps its size, and strip s starts where
 * row 16·s did. Types: kern_strips_type (Q4_0, Q8_0, Q4_K). Activations as for rows
 * (kern_dot_fn). model_prepare_shared stores matrices so in the shared copy (mstore.h),
 * where every process reads them without rearranging. */
enum { KERN_STRIP_ROWS = 16 };

/* kern_gemm_fn for a matrix in strips: rows a multiple of 16, w the start of a strip (the
 * row stride is the row's bytes). */
typedef void (*kern_strips_fn)(int n, int rows, int cols, const void *w, const void *x, size_t x_stride, float *out,
                               size_t out_stride);

typedef struct kern_ops {
    const char *name;                       /* "ref", "avx2", "avx512", "neon" */
    kern_dot_fn dot[QT_COUNT];              /* by weight type; NULL where unsupported */
    kern_quantize_fn quantize[QT_COUNT];    /* by activation type: Q8_0, Q8_1, Q8_K */
    /* x[i] = e^(scale·(x[i] - max)) / Σ_j e^(scale·(x[j] - max)) for i < n: attention's
     * weights from its scores (scale > 0, n >= 1). */
    void (*softmax)(int n, float scale, float *x);
    /* y[i] = f16(x[i]) for i < n (writing K/V into the cache). */
    void (*f32_to_f16)(int n, const float *x, qt_f16 *y);
    /* by weight type; NULL where the variant has no tiled kernel (kern_gemm then loops dot) */
    kern_gemm_fn gemm[QT_COUNT];
    /* by weight type: products with a matrix in strips; NULL where the variant has none
     * (kern_gemm_strips then turns strips back into rows) */
    kern_strips_fn strips[QT_COUNT];
} kern_ops;

/* The scalar reference table. Always available. */
const kern_ops *kern_ref(void);

/* The table called name ("ref", "avx2", "avx512", "neon") if this binary has it and this
 * CPU can run it, else NULL. Missing entries are filled from ref. */
const kern_ops *kern_by_name(const char *name);

/* The table to use: `force` if non-NULL, else $EDGELLM_KERNEL if set, else the best this CPU
 * runs. Fails with -ERR_UNSUPPORTED (message naming the variant) when the requested variant
 * is unknown or the CPU lacks its instructions. */
int kern_select(const char *force, const kern_ops **out, err_info *ei);

/* Names of every variant this binary and CPU can run, ref first. Returns the count. */
int kern_available(const char **names, int cap);

/* The tile product of kern_gemm_fn with k's kernels for weight type t: k->gemm[t] when the
 * variant has one, else one k->dot[t] per (row, column). */
void kern_gemm(const kern_ops *k, qt_type t, int n, int rows, int cols, const void *w, size_t w_stride,
               const void *x, size_t x_stride, float *out, size_t out_stride);

/* Whether blocks of type t can be laid out in strips. */
bool kern_strips_type(qt_type t);

/* Lays out the 16 rows at rows (n elements each, qt_row_bytes(t, n) apart) as one strip at
 * strip (the same number of bytes, not overlapping rows). t: kern_strips_type. */
void kern_strips_from_rows(qt_type t, int n, const void *rows, void *strip);

/* kern_gemm for a matrix in strips: rows a multiple of 16, w the start of a strip.
 * out[c * out_stride + r] = dot(row r, x + c * x_stride). k->strips[t] where k has it;
 * otherwise each strip is turned back into rows, a few blocks at a time, for kern_gemm. */
void kern_gemm_strips(const kern_ops *k, qt_type t, int n, int rows, int cols, const void *w, const void *x,
                      size_t x_stride, float *out, size_t out_stride);

/* Bytes of activation buffer needed for n floats converted for weight type t. */
size_t kern_act_bytes(qt_type t, int n);

/* Converts x (n floats) into the activation form for weight type t, into buf
 * (kern_act_bytes(t, n) bytes). For float weight types this is a copy. */
void kern_prepare_act(const kern_ops *k, qt_type t, const float *x, void *buf, int n);

#endif
