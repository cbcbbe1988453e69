/* kern_avx512 — AVX512 kernels (placeholder table: every entry falls back to ref until filled). */
#include "kern.h"

const kern_ops kern_ops_avx512 = {.name = "avx512"};
