/* qtype — the tensor element types of GGUF files: their numbering and block layouts,
 * half-precision conversions, and the scalar (reference) dequantizers and quantizers.
 *
 * These scalar routines are the truth the SIMD kernels (kern_*.c) are tested against,
 * and the quantizers are what mkmodel and activation quantization use. This module does
 * not do dot products; see kern.h.
 *
 * Block layouts are the GGUF on-disk formats (little-endian, packed), e.g. Q4_0 stores
 * 32 weights as one f16 scale and 16 bytes of 4-bit values. */
#ifndef EDGELLM_QTYPE_H
#define EDGELLM_QTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Numbering fixed by the GGUF format (ggml_type). Gaps are retired types. */
typedef enum qt_type {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q8_1 = 9,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,
    QT_IQ2_XXS = 16,
    QT_IQ2_XS = 17,
    QT_IQ3_XXS = 18,
    QT_IQ1_S = 19,
    QT_IQ4_NL = 20,
    QT_IQ3_S = 21,
    QT_IQ2_S = 22,
    QT_IQ4_XS = 23,
    QT_I8 = 24,
    QT_I16 = 25,
    QT_I32 = 26,
    QT_I64 = 27,
    QT_F64 = 28,
    QT_IQ1_M = 29,
    QT_BF16 = 30,
    QT_TQ1_0 = 34,
    QT_TQ2_0 = 35,
    QT_COUNT = 36
} qt_type;

enum { QK4_0 = 32, QK4_1 = 32, QK5_0 = 32, QK5_1 = 32, QK8_0 = 32, QK8_1 = 32, QK_K = 256, K_SCALE_SIZE = 12 };

typedef uint16_t qt_f16; /* IEEE 754 binary16 bits */
typedef uint16_t qt_bf16; /* bfloat16 bits */

/* Block layouts. Field comments give element counts; "d" is the scale. */
typedef struct { qt_f16 d; uint8_t qs[QK4_0 / 2]; } qt_block_q4_0;            /* 18 B */
typedef struct { qt_f16 d, m; uint8_t qs[QK4_1 / 2]; } qt_block_q4_1;         /* 20 B */
typedef struct { qt_f16 d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } qt_block_q5_0;    /* 22 B */
typedef struct { qt_f16 d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } qt_block_q5_1; /* 24 B */
typedef struct { qt_f16 d; int8_t qs[QK8_0]; } qt_block_q8_0;                 /* 34 B */
/* Q8_1: s = d * sum(qs), used as the activation partner of Q4_1/Q5_1 (they need the sum). */
typedef struct { qt_f16 d, s; int8_t qs[QK8_1]; } qt_block_q8_1;              /* 36 B */
/* Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed into scales[12]. */
typedef struct { qt_f16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } qt_block_q4_k; /* 144 B */
/* Q5_K: as Q4_K plus one high bit per weight in qh. */
typedef struct { qt_f16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } qt_block_q5_k; /* 176 B */
/* Q6_K: 16 sub-blocks of 16 with int8 scales; 4 low bits in ql, 2 high bits in qh. */
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; qt_f16 d; } qt_block_q6_k; /* 210 B */
/* Q8_K: activation partner of the K types; bsums[i] = sum of qs[16i .. 16i+15]. */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } qt_block_q8_k; /* 292 B */

/* Traits of one type. block_elems/block_bytes are known for every type GGUF defines, so a
 * file with an unsupported type still parses and is refused by name. */
typedef struct qt_traits {
    const char *name;     /* "Q4_K"; NULL for a number that is not a type */
    uint32_t block_elems; /* weights per block (1 for plain types) */
    uint32_t block_bytes; /* bytes per block */
    bool supported;       /* the engine can compute with it */
    qt_type act_type;     /* type activations are converted to for dot products with it */
} qt_traits;

/* Traits of t, or NULL when t is not a known type number. Static storage. */
const qt_traits *qt_get(uint32_t t);
/* Name of t, or "?" when unknown. */
const char *qt_name(uint32_t t);
/* Type whose name is `name` (case-insensitive), or -1. */
int qt_from_name(const char *name);
/* Bytes used by a row of n elements of type t; 0 when n is not a multiple of the block. */
size_t qt_row_bytes(qt_type t, int64_t n);

float qt_f16_to_f32(qt_f16 h);
qt_f16 qt_f32_to_f16(float f);   /* round to nearest even, like F16C's VCVTPS2PH imm 0 */
float qt_bf16_to_f32(qt_bf16 h);
qt_bf16 qt_f32_to_bf16(float f); /* round to nearest even */

/* Converts n elements of type t at src into floats. n must be a multiple of the block size;
 * t must be supported (or Q8_1/Q8_K). */
void qt_dequantize_row(qt_type t, const void *src, float *dst, int64_t n);

/* Quantizes n floats into type t (any supported type, plus Q8_1/Q8_K). n must be a multiple
 * of the block size. Writes qt_row_bytes(t, n) bytes. Round-to-nearest with the scale chosen
 * from each block's extreme values: exact for the activation types Q8_0/Q8_1/Q8_K (the
 * layouts the dot products expect), good enough for mkmodel's random weights. */
void qt_quantize_row(qt_type t, const float *src, void *dst, int64_t n);

#endif
