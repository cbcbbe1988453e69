/* kern_softmax_isa — attention's softmax with a vectorized exp, written once in GCC/clang
 * vector extensions: kern_x86.h (for AVX2 and AVX-512) and kern_neon.c include it, each
 * compiling it with its own target flags, after defining
 *   KSM_BYTES   bytes of the vectors to use (O(n) work beside the O(n·head_dim) gemms
 *               around it: 256-bit vectors are as good as 512-bit ones here)
 * and define a static kernel function ksm_softmax (kern_ops.softmax). Not a public header.
 *
 * Why not libm's expf: attention takes one exp per (head, key), 1.4 million a token for a
 * 22-layer, 32-head model at 2k context; a scalar call each, with the max and the sum as
 * serial chains, cost more than the scores and the weighted sum of values themselves. */
#ifndef EDGELLM_KERN_SOFTMAX_ISA_H
#define EDGELLM_KERN_SOFTMAX_ISA_H

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float ksm_f __attribute__((vector_size(KSM_BYTES)));
typedef int32_t ksm_i __attribute__((vector_size(KSM_BYTES)));
enum { KSM_LANES = KSM_BYTES / 4 };

#define KSM_INLINE static inline __attribute__((always_inline))

KSM_INLINE ksm_f ksm_splat(float s) { return (ksm_f){0} + s; }

/* Lanes of a where mask (all ones or zero per lane) is set, else of b. */
KSM_INLINE ksm_f ksm_select(ksm_i mask, ksm_f a, ksm_f b) { return (ksm_f)(((ksm_i)a & mask) | ((ksm_i)b & ~mask)); }

/* e^x for x <= 0, within a few ulp; 0 below -87 (where e^x leaves the normal floats:
 * softmax weights that small count for nothing beside the largest, which is 1).
 * x = n·ln2 + r with n = round(x / ln2) and |r| <= ln2/2 (ln2 in two parts, so r is exact
 * enough), e^r by its Taylor polynomial to degree 7 (the next term is below 6e-9·e^r, so
 * rounding is all the error), and 2^n added to the exponent bits. */
KSM_INLINE ksm_f ksm_exp(ksm_f x)
{
    const ksm_i underflow = x < ksm_splat(-87.0f);
    x = ksm_select(underflow, ksm_splat(-87.0f), x);
    const ksm_f round = ksm_splat(0x1.8p23f); /* adding it rounds to an integer (|value| < 2^22) */
    const ksm_f n = (x * ksm_splat(1.44269504f) + round) - round;
    const ksm_f r = (x - n * ksm_splat(0.693145751953125f)) - n * ksm_splat(1.428606765330187e-6f);
    ksm_f p = ksm_splat(1.0f / 5040);
    p = p * r + ksm_splat(1.0f / 720);
    p = p * r + ksm_splat(1.0f / 120);
    p = p * r + ksm_splat(1.0f / 24);
    p = p * r + ksm_splat(1.0f / 6);
    p = p * r + ksm_splat(0.5f);
    p = p * r + ksm_splat(1.0f);
    p = p * r + ksm_splat(1.0f);
    const ksm_i bits = (ksm_i)p + (__builtin_convertvector(n, ksm_i) << 23);
    return (ksm_f)(bits & ~underflow);
}

/* x[i] = e^(scale·(x[i] - max)) / Σ_j e^(scale·(x[j] - max)) for i < n (scale > 0, n >= 1).
 * The last n % KSM_LANES elements go through a vector padded with -inf, so every element
 * takes the same exp. */
static void ksm_softmax(int n, float scale, float *x)
{
    const int whole = n / KSM_LANES * KSM_LANES;
    ksm_f tail = ksm_splat(-INFINITY), v;
    memcpy(&tail, x + whole, (size_t)(n - whole) * sizeof *x);

    ksm_f vmax = tail;
    for (int i = 0; i < whole; i += KSM_LANES) {
        memcpy(&v, x + i, sizeof v);
        vmax = ksm_select(v > vmax, v, vmax);
    }
    float max = vmax[0];
    for (int l = 1; l < KSM_LANES; l++)
        max = vmax[l] > max ? vmax[l] : max;

    const ksm_f vscale = ksm_splat(scale), shift = ksm_splat(max * scale);
    ksm_f vsum = {0};
    for (int i = 0; i < whole; i += KSM_LANES) {
        memcpy(&v, x + i, sizeof v);
        v = ksm_exp(v * vscale - shift);
        vsum += v;
        memcpy(x + i, &v, sizeof v);
    }
    tail = ksm_exp(tail * vscale - shift); /* -inf lanes: 0 */
    vsum += tail;
    float sum = 0;
    for (int l = 0; l < KSM_LANES; l++)
        sum += vsum[l];

    const ksm_f inv = ksm_splat(1.0f / sum);
    for (int i = 0; i < whole; i += KSM_LANES) {
        memcpy(&v, x + i, sizeof v);
        v *= inv;
        memcpy(x + i, &v, sizeof v);
    }
    tail *= inv;
    memcpy(x + whole, &tail, (size_t)(n - whole) * sizeof *x);
}

#endif
