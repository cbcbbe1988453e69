/* kern — picks the kernel table for this CPU (see kern.h). Each SIMD file exports a
 * partially filled `kern_ops kern_ops_<isa>`; here it is completed from ref once, and
 * offered only if the CPU reports the instructions it was compiled for. */
#include "kern.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

extern const kern_ops kern_ops_ref;
#if defined(__x86_64__)
extern const kern_ops kern_ops_avx2, kern_ops_avx512;
#endif
#if defined(__aarch64__)
extern const kern_ops kern_ops_neon;
#endif

typedef struct variant {
    const kern_ops *partial;  /* as the ISA file defines it */
    bool (*cpu_has)(void);
    kern_ops full;            /* partial completed from ref */
} variant;

static bool always(void) { return true; }

#if defined(__x86_64__)
#include <cpuid.h>

/* CPUID feature bits, masked by what the OS saves on context switch (XCR0): a CPU with
 * AVX-512 under an OS that does not preserve ZMM state must not use it. */
typedef struct x86_features {
    bool avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni;
} x86_features;

static x86_features x86_detect(void)
{
    x86_features f = {0};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX))
        return f;
    uint32_t xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    bool ymm_saved = (xcr0_lo & 0x6) == 0x6, zmm_saved = (xcr0_lo & 0xe6) == 0xe6;
    f.fma = ymm_saved && (c & bit_FMA);
    f.f16c = ymm_saved && (c & bit_F16C);
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return f;
    f.avx2 = ymm_saved && (b & bit_AVX2);
    f.avx512f = zmm_saved && (b & bit_AVX512F);
    f.avx512bw = zmm_saved && (b & bit_AVX512BW);
    f.avx512vl = zmm_saved && (b & bit_AVX512VL);
    f.avx512dq = zmm_saved && (b & bit_AVX512DQ);
    f.avx512vnni = zmm_saved && (c & bit_AVX512VNNI);
    return f;
}

static bool has_avx2(void)
{
    x86_features f = x86_detect();
    return f.avx2 && f.fma && f.f16c;
}

static bool has_avx512(void)
{
    x86_features f = x86_detect();
    return has_avx2() && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni;
}
#endif
#if defined(__aarch64__)
static bool has_neon_dotprod(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
#endif

/* Best last: kern_select's default walks from the end. */
static variant variants[] = {
    {&kern_ops_ref, always, {0}},
#if defined(__x86_64__)
    {&kern_ops_avx2, has_avx2, {0}},
    {&kern_ops_avx512, has_avx512, {0}},
#endif
#if defined(__aarch64__)
    {&kern_ops_neon, has_neon_dotprod, {0}},
#endif
};
enum { N_VARIANTS = sizeof variants / sizeof variants[0] };

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

#define FILL_(field) if (!v->full.field) v->full.field = kern_ops_ref.field

static void init_tables(void)
{
    for (int i = 0; i < N_VARIANTS; i++) {
        variant *v = &variants[i];
        v->full = *v->partial;
        for (int t = 0; t < QT_COUNT; t++) {
            FILL_(dot[t]);
            FILL_(quantize[t]);
        }
        FILL_(softmax);
        FILL_(f32_to_f16);
    }
}
#undef FILL_

const kern_ops *kern_ref(void)
{
    pthread_once(&init_once, init_tables);
    return &variants[0].full;
}

const kern_ops *kern_by_name(const char *name)
{
    pthread_once(&init_once, init_tables);
    for (int i = 0; i < N_VARIANTS; i++)
        if (strcmp(variants[i].partial->name, name) == 0)
            return variants[i].cpu_has() ? &variants[i].full : NULL;
    return NULL;
}

int kern_available(const char **names, int cap)
{
    int n = 0;
    for (int i = 0; i < N_VARIANTS; i++)
        if (variants[i].cpu_has() && n < cap)
            names[n++] = variants[i].partial->name;
    return n;
}

int kern_select(const char *force, const kern_ops **out, err_info *ei)
{
    pthread_once(&init_once, init_tables);
    if (!force || !*force)
        force = getenv("EDGELLM_KERNEL");
    if (force && *force) {
        *out = kern_by_name(force);
        if (!*out)
            return err_set(ei, -ERR_UNSUPPORTED,
                           "kernel variant '%s' is not available on this CPU/binary (try EDGELLM_KERNEL=ref)", force);
        return 0;
    }
    for (int i = N_VARIANTS - 1; i >= 0; i--)
        if (variants[i].cpu_has()) {
            *out = &variants[i].full;
            return 0;
        }
    *out = &variants[0].full;
    return 0;
}

void kern_gemm(const kern_ops *k, qt_type t, int n, int rows, int cols, const void *w, size_t w_stride,
               const void *x, size_t x_stride, float *out, size_t out_stride)
{
    if (k->gemm[t]) {
        k->gemm[t](n, rows, cols, w, w_stride, x, x_stride, out, out_stride);
        return;
    }
    kern_dot_fn dot = k->dot[t];
    for (int r = 0; r < rows; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * w_stride;
        for (int c = 0; c < cols; c++)
            out[(size_t)c * out_stride + r] = dot(n, wr, (const uint8_t *)x + (size_t)c * x_stride);
    }
}

/* ---- strips (kern.h) ---- */

bool kern_strips_type(qt_type t) { return t == QT_Q4_0 || t == QT_Q8_0 || t == QT_Q4_K; }

/* Moves blocks [b0, b0 + nb) of a strip's 16 rows between the strip and rows (block b0 + b
 * of row r at rows + r * rows_stride + b * block_bytes): into the strip when to_strip, else
 * out of it. A block is its head (an f16 d where block_bytes % 4 == 2, else nothing) and
 * whole dwords. Inlined into each direction's caller, so that every move is a plain load
 * and store: turning strips back into rows is on the path of the variants without a strips
 * kernel. */
static inline __attribute__((always_inline)) void strip_blocks(qt_type t, int b0, int nb, const uint8_t *src,
                                                               uint8_t *dst, size_t rows_stride, bool to_strip)
{
    enum { R = KERN_STRIP_ROWS };
    const size_t bb = qt_get(t)->block_bytes, head = bb % 4, groups = bb / 4;
    for (int b = 0; b < nb; b++) {
        const size_t strip_block = (size_t)(b0 + b) * R * bb; /* heads[R], then groups x R dwords */
        for (int r = 0; r < R; r++) {
            const size_t row_block = (size_t)r * rows_stride + (size_t)b * bb; /* head, then groups dwords */
            const size_t sh = strip_block + (size_t)r * head, sq = strip_block + R * head + 4 * (size_t)r;
            if (to_strip) {
                memcpy(dst + sh, src + row_block, head);
                for (size_t g = 0; g < groups; g++)
                    memcpy(dst + sq + g * 4 * R, src + row_block + head + 4 * g, 4);
            } else {
                memcpy(dst + row_block, src + sh, head);
                for (size_t g = 0; g < groups; g++)
                    memcpy(dst + row_block + head + 4 * g, src + sq + g * 4 * R, 4);
            }
        }
    }
}

void kern_strips_from_rows(qt_type t, int n, const void *rows, void *strip)
{
    strip_blocks(t, 0, n / (int)qt_get(t)->block_elems, rows, strip, qt_row_bytes(t, n), true);
}

void kern_gemm_strips(const kern_ops *k, qt_type t, int n, int rows, int cols, const void *w, const void *x,
                      size_t x_stride, float *out, size_t out_stride)
{
    enum { R = KERN_STRIP_ROWS, STAGE_BYTES = 18 * 1024, COLS = 64 };
    const qt_traits *q = qt_get(t);
    const int nb = n / (int)q->block_elems, nstrips = rows / R, chunk_blocks = STAGE_BYTES / (R * (int)q->block_bytes);
    const size_t strip_bytes = R * qt_row_bytes(t, n);
    if (k->strips[t]) {
        k->strips[t](n, rows, cols, w, x, x_stride, out, out_stride);
        return;
    }
    /* back into rows, as many blocks of the 16 rows at a time as STAGE_BYTES hold (33 of
     * Q8_0, 8 of Q4_K), each chunk's products added up, up to COLS columns at a time */
    _Alignas(64) uint8_t stage[STAGE_BYTES];
    float part[COLS * R];
    assert(kern_strips_type(t) && rows % R == 0);
    for (int s = 0; s < nstrips; s++) {
        const uint8_t *strip = (const uint8_t *)w + (size_t)s * strip_bytes;
        for (int b0 = 0; b0 < nb; b0 += chunk_blocks) {
            const int kb = nb - b0 < chunk_blocks ? nb - b0 : chunk_blocks;
            const size_t chunk_row = (size_t)kb * q->block_bytes;
            strip_blocks(t, b0, kb, strip, stage, chunk_row, false);
            const uint8_t *xb = (const uint8_t *)x + kern_act_bytes(t, b0 * (int)q->block_elems);
            for (int c0 = 0; c0 < cols; c0 += COLS) {
                const int nc = cols - c0 < COLS ? cols - c0 : COLS;
                kern_gemm(k, t, kb * (int)q->block_elems, R, nc, stage, chunk_row, xb + (size_t)c0 * x_stride, x_stride,
                          part, R);
                for (int c = 0; c < nc; c++)
                    for (int r = 0; r < R; r++) {
                        float *o = out + (size_t)(c0 + c) * out_stride + (size_t)s * R + r;
                        *o = b0 ? *o + part[c * R + r] : part[c * R + r];
                    }
            }
        }
    }
}

size_t kern_act_bytes(qt_type t, int n)
{
    qt_type a = qt_get(t)->act_type;
    return a == QT_F32 ? (size_t)n * sizeof(float) : qt_row_bytes(a, n);
}

void kern_prepare_act(const kern_ops *k, qt_type t, const float *x, void *buf, int n)
{
    qt_type a = qt_get(t)->act_type;
    if (a == QT_F32)
        memcpy(buf, x, (size_t)n * sizeof(float));
    else
        k->quantize[a](x, buf, n);
}
