/* kern_neon — aarch64 NEON (dotprod) kernels (placeholder table: every entry falls back to ref until filled). */
#include "kern.h"

const kern_ops kern_ops_neon = {.name = "neon"};
