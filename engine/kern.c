/* kern — picks the kernel table for this CPU (see kern.h). Each SIMD file exports a
 * partially filled `kern_ops kern_ops_<isa>`; here it is completed from ref once, and
 * offered only if the CPU reports the instructions it was compiled for. */
#include "kern.h"

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
static bool has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
static bool has_avx512(void)
{
    __builtin_cpu_init();
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
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
        FILL_(axpy_f16);
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
