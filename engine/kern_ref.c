/* kern_ref — scalar reference kernels: the definition of what every SIMD variant computes.
 * Integer parts are exact; float accumulation is plain left-to-right. */
#include "kern.h"

#include <math.h>
#include <string.h>

static float dot_f32(int n, const void *w, const void *x)
{
    const float *a = w, *b = x;
    float s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static float dot_f16(int n, const void *w, const void *x)
{
    const qt_f16 *a = w;
    const float *b = x;
    float s = 0;
    for (int i = 0; i < n; i++)
        s += qt_f16_to_f32(a[i]) * b[i];
    return s;
}

static float dot_bf16(int n, const void *w, const void *x)
{
    const qt_bf16 *a = w;
    const float *b = x;
    float s = 0;
    for (int i = 0; i < n; i++)
        s += qt_bf16_to_f32(a[i]) * b[i];
    return s;
}

static float dot_q4_0(int n, const void *w, const void *x)
{
    const qt_block_q4_0 *a = w;
    const qt_block_q8_0 *b = x;
    float s = 0;
    for (int i = 0; i < n / QK4_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_0 / 2; j++)
            sumi += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j] + ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + QK4_0 / 2];
        s += sumi * qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d);
    }
    return s;
}

static float dot_q4_1(int n, const void *w, const void *x)
{
    const qt_block_q4_1 *a = w;
    const qt_block_q8_1 *b = x;
    float s = 0;
    for (int i = 0; i < n / QK4_1; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_1 / 2; j++)
            sumi += (a[i].qs[j] & 0xF) * b[i].qs[j] + (a[i].qs[j] >> 4) * b[i].qs[j + QK4_1 / 2];
        s += sumi * qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d) + qt_f16_to_f32(a[i].m) * qt_f16_to_f32(b[i].s);
    }
    return s;
}

/* Fifth bit of element j of a Q5 block, as 0 or 16. */
static int q5_high(const uint8_t qh[4], int j)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    return (int)((h >> j) & 1u) << 4;
}

static float dot_q5_0(int n, const void *w, const void *x)
{
    const qt_block_q5_0 *a = w;
    const qt_block_q8_0 *b = x;
    float s = 0;
    for (int i = 0; i < n / QK5_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int lo = ((a[i].qs[j] & 0xF) | q5_high(a[i].qh, j)) - 16;
            int hi = ((a[i].qs[j] >> 4) | q5_high(a[i].qh, j + 16)) - 16;
            sumi += lo * b[i].qs[j] + hi * b[i].qs[j + QK5_0 / 2];
        }
        s += sumi * qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d);
    }
    return s;
}

static float dot_q5_1(int n, const void *w, const void *x)
{
    const qt_block_q5_1 *a = w;
    const qt_block_q8_1 *b = x;
    float s = 0;
    for (int i = 0; i < n / QK5_1; i++) {
        int sumi = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            int lo = (a[i].qs[j] & 0xF) | q5_high(a[i].qh, j);
            int hi = (a[i].qs[j] >> 4) | q5_high(a[i].qh, j + 16);
            sumi += lo * b[i].qs[j] + hi * b[i].qs[j + QK5_1 / 2];
        }
        s += sumi * qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d) + qt_f16_to_f32(a[i].m) * qt_f16_to_f32(b[i].s);
    }
    return s;
}

static float dot_q8_0(int n, const void *w, const void *x)
{
    const qt_block_q8_0 *a = w, *b = x;
    float s = 0;
    for (int i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++)
            sumi += a[i].qs[j] * b[i].qs[j];
        s += sumi * qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d);
    }
    return s;
}

/* Q4_K and Q5_K: sum over the eight sub-blocks of scale * (levels . q8), minus the mins
 * times the q8 sums, which Q8_K precomputes per 16 (bsums). level(j, l) gives the 4- or
 * 5-bit level of weight l of sub-block j. */
typedef int (*k_level_fn)(const void *block, int j, int l);

static int level_q4_k(const void *blk, int j, int l)
{
    const qt_block_q4_k *b = blk;
    uint8_t q = b->qs[32 * (j / 2) + l];
    return (j & 1) ? q >> 4 : q & 0xF;
}

static int level_q5_k(const void *blk, int j, int l)
{
    const qt_block_q5_k *b = blk;
    uint8_t q = b->qs[32 * (j / 2) + l];
    int lo = (j & 1) ? q >> 4 : q & 0xF;
    return lo + ((b->qh[l] >> j) & 1) * 16;
}

static void k_scale_min(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static float dot_k_affine(int n, const uint8_t *w, size_t block_bytes, k_level_fn level, const qt_block_q8_k *b)
{
    float s = 0;
    for (int i = 0; i < n / QK_K; i++, w += block_bytes) {
        /* d, dmin and scales sit at the same offsets in Q4_K and Q5_K */
        const qt_block_q4_k *hdr = (const qt_block_q4_k *)w;
        int sum_scaled = 0, sum_mins = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m, dot = 0;
            k_scale_min(j, hdr->scales, &sc, &m);
            for (int l = 0; l < 32; l++)
                dot += level(w, j, l) * b[i].qs[32 * j + l];
            sum_scaled += sc * dot;
            sum_mins += m * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        }
        s += b[i].d * (qt_f16_to_f32(hdr->d) * sum_scaled - qt_f16_to_f32(hdr->dmin) * sum_mins);
    }
    return s;
}

static float dot_q4_k(int n, const void *w, const void *x)
{
    return dot_k_affine(n, w, sizeof(qt_block_q4_k), level_q4_k, x);
}

static float dot_q5_k(int n, const void *w, const void *x)
{
    return dot_k_affine(n, w, sizeof(qt_block_q5_k), level_q5_k, x);
}

static float dot_q6_k(int n, const void *w, const void *x)
{
    const qt_block_q6_k *a = w;
    const qt_block_q8_k *b = x;
    float s = 0;
    for (int i = 0; i < n / QK_K; i++) {
        int sumi = 0;
        /* weight k sits at: half h = k/128, lane l = k%32, quarter q = (k%128)/32 */
        for (int k = 0; k < QK_K; k++) {
            int h = k / 128, q = (k % 128) / 32, l = k % 32;
            uint8_t lo = a[i].ql[64 * h + l + 32 * (q & 1)];
            int v = ((q < 2 ? lo & 0xF : lo >> 4) | (((a[i].qh[32 * h + l] >> (2 * q)) & 3) << 4)) - 32;
            sumi += a[i].scales[k / 16] * v * b[i].qs[k];
        }
        s += qt_f16_to_f32(a[i].d) * b[i].d * sumi;
    }
    return s;
}

static void quant_q8_0(const float *x, void *y, int n) { qt_quantize_row(QT_Q8_0, x, y, n); }
static void quant_q8_1(const float *x, void *y, int n) { qt_quantize_row(QT_Q8_1, x, y, n); }
static void quant_q8_k(const float *x, void *y, int n) { qt_quantize_row(QT_Q8_K, x, y, n); }

static void softmax(int n, float scale, float *x)
{
    float max = x[0], sum = 0;
    for (int i = 1; i < n; i++)
        max = x[i] > max ? x[i] : max;
    for (int i = 0; i < n; i++) {
        x[i] = expf(scale * (x[i] - max));
        sum += x[i];
    }
    for (int i = 0; i < n; i++)
        x[i] /= sum;
}

static void f32_to_f16(int n, const float *x, qt_f16 *y)
{
    for (int i = 0; i < n; i++)
        y[i] = qt_f32_to_f16(x[i]);
}

const kern_ops kern_ops_ref = {
    .name = "ref",
    .dot = {
        [QT_F32] = dot_f32, [QT_F16] = dot_f16, [QT_BF16] = dot_bf16,
        [QT_Q4_0] = dot_q4_0, [QT_Q4_1] = dot_q4_1, [QT_Q5_0] = dot_q5_0, [QT_Q5_1] = dot_q5_1,
        [QT_Q8_0] = dot_q8_0, [QT_Q4_K] = dot_q4_k, [QT_Q5_K] = dot_q5_k, [QT_Q6_K] = dot_q6_k,
    },
    .quantize = {[QT_Q8_0] = quant_q8_0, [QT_Q8_1] = quant_q8_1, [QT_Q8_K] = quant_q8_k},
    .softmax = softmax,
    .f32_to_f16 = f32_to_f16,
};
