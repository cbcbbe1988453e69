/* kern_avx2 — AVX2 kernels (placeholder table: every entry falls back to ref until filled). */
#include "kern.h"

const kern_ops kern_ops_avx2 = {.name = "avx2"};
