/* gguf — reader of GGUF v2/v3 model files, over a read-only memory mapping.
 *
 * The file is untrusted: every count, length, offset, shape product and alignment is checked
 * against the bytes present before it is used, and a malformed file is refused with an
 * err_info message naming the offending key or tensor. After gguf_open succeeds, every
 * string, array and tensor the accessors return lies wholly inside the mapping.
 *
 * Not here: interpreting the metadata (model.c, tok.c) or writing files (gguf_write.h).
 * Strings and arrays are borrowed views into the mapping, valid until gguf_close. */
#ifndef EDGELLM_GGUF_H
#define EDGELLM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Metadata value types; numbering fixed by the format. */
typedef enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STR = 8, GGUF_ARR = 9, GGUF_U64 = 10, GGUF_I64 = 11,
    GGUF_F64 = 12, GGUF_VTYPE_COUNT = 13
} gguf_vtype;

enum {
    GGUF_DEFAULT_ALIGNMENT = 32,
    GGUF_MAX_DIMS = 4,
    GGUF_MAX_NAME = 256,          /* longest tensor name we accept */
};

/* A string inside the file: not NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

/* An array value. Fixed-size elements are packed little-endian at data (n * gguf_vtype_size
 * bytes); string elements are length-prefixed, so use gguf_arr_strings to index them. */
typedef struct gguf_arr {
    gguf_vtype elem;
    uint64_t n;
    const uint8_t *data;
    uint64_t nbytes;  /* bytes the elements occupy in the file */
} gguf_arr;

typedef struct gguf_kv {
    gguf_str key;
    gguf_vtype type;
    union {
        uint64_t u;   /* U8, U16, U32, U64 */
        int64_t i;    /* I8, I16, I32, I64 */
        double f;     /* F32, F64 */
        bool b;       /* BOOL */
        gguf_str s;   /* STR */
        gguf_arr a;   /* ARR */
    } v;
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];  /* ne[0] is the row length (innermost); unused dims are 1 */
    uint32_t type;               /* qt_type number (qtype.h); known to qt_get() */
    uint64_t offset;             /* from the start of the data section */
    uint64_t nbytes;
    const void *data;            /* inside the mapping, nbytes long */
} gguf_tensor;

typedef struct gguf gguf;

/* Maps and validates the file at path. On success *out owns the mapping; free with
 * gguf_close. On failure returns a negative code and names the problem in ei. */
int gguf_open(gguf **out, const char *path, err_info *ei);

/* Same over a caller's buffer (tests, fuzzing, shared memory). The buffer is borrowed and
 * must outlive the returned object. */
int gguf_open_mem(gguf **out, const void *data, size_t size, err_info *ei);

void gguf_close(gguf *g);

uint32_t gguf_version(const gguf *g);
uint32_t gguf_alignment(const gguf *g);
/* The whole file as mapped, and where its data section starts. */
const void *gguf_base(const gguf *g);
size_t gguf_size(const gguf *g);
uint64_t gguf_data_offset(const gguf *g);

size_t gguf_n_kv(const gguf *g);
const gguf_kv *gguf_kv_at(const gguf *g, size_t i);
/* The entry for key, or NULL. */
const gguf_kv *gguf_find(const gguf *g, const char *key);

/* Typed getters. Each returns 0, -ERR_NOT_FOUND when the key is absent (ei gets "missing
 * key K"), or -ERR_TYPE / -ERR_RANGE when present with the wrong type or an out-of-range
 * value (ei names the key and what was found). */
int gguf_get_int(const gguf *g, const char *key, int64_t *out, err_info *ei);   /* any integer type */
int gguf_get_u32(const gguf *g, const char *key, uint32_t *out, err_info *ei);  /* any integer type, 0..UINT32_MAX */
int gguf_get_float(const gguf *g, const char *key, double *out, err_info *ei);  /* F32 or F64 */
int gguf_get_bool(const gguf *g, const char *key, bool *out, err_info *ei);
int gguf_get_str(const gguf *g, const char *key, gguf_str *out, err_info *ei);
/* An array whose elements have type elem. */
int gguf_get_arr(const gguf *g, const char *key, gguf_vtype elem, gguf_arr *out, err_info *ei);

/* Fills out[0 .. a->n) with views of the strings of a string array (already validated). */
void gguf_arr_strings(const gguf_arr *a, gguf_str *out);

size_t gguf_n_tensors(const gguf *g);
const gguf_tensor *gguf_tensor_at(const gguf *g, size_t i);
/* The tensor called name, or NULL. */
const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name);
/* Elements in t (product of ne). */
uint64_t gguf_tensor_nelems(const gguf_tensor *t);

/* Bytes of one value of a fixed-size type, 0 for STR and ARR. */
size_t gguf_vtype_size(gguf_vtype t);
const char *gguf_vtype_name(uint32_t t);
/* True when s holds exactly the NUL-terminated string c. */
bool gguf_str_eq(gguf_str s, const char *c);

#endif
