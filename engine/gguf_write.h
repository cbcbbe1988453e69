/* gguf_write — builds GGUF v3 files: metadata of every value type, tensor infos, and the
 * aligned data section, in the layout gguf.h (and llama.cpp) read.
 *
 * Not here: reading files (gguf.h), choosing tensor types or making weights (tools/mkmodel).
 *
 * Memory: metadata values are copied into the writer when set. Tensor data is never copied
 * into it: a tensor is either a caller's buffer, borrowed until gguf_writer_write returns,
 * or a fill callback that gguf_writer_write calls for consecutive ranges of rows into one
 * bounded staging buffer (about GGUF_WRITER_CHUNK bytes), so a model can be generated and
 * written in one pass without ever being whole in memory.
 *
 * Errors are sticky: the first failing set/add call is recorded in the writer (its message
 * names the key or tensor), later set/add calls do nothing, and gguf_writer_write returns
 * that failure. Callers may therefore check only the result of gguf_writer_write.
 *
 * A key set twice keeps its first position and takes the last value. "general.alignment"
 * (uint32, a power of two up to 16 MiB; default 32) sets the data alignment. */
#ifndef EDGELLM_GGUF_WRITE_H
#define EDGELLM_GGUF_WRITE_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"
#include "qtype.h"

enum { GGUF_WRITER_CHUNK = 8 << 20 };

typedef struct gguf_writer gguf_writer;

/* Produces rows [row0, row0 + n_rows) of a tensor into dst (n_rows rows of
 * qt_row_bytes(type, ne[0]) bytes each; a row is ne[0] elements). gguf_writer_write calls it
 * from its own thread, in increasing row order, once per chunk. Returns 0 or a negative code
 * (with a message in ei), which aborts the write. ctx is the caller's. */
typedef int (*gguf_writer_fill_fn)(void *ctx, uint64_t row0, uint64_t n_rows, void *dst, err_info *ei);

/* A new, empty writer, owned by the caller: free with gguf_writer_free. */
int gguf_writer_new(gguf_writer **out, err_info *ei);
/* Frees w and everything it copied. NULL is fine. */
void gguf_writer_free(gguf_writer *w);

/* Sets key (copied) to a fixed-size scalar of type t read from value, which points to the
 * matching C type: uint8_t, int8_t, ..., float (F32), double (F64), bool (BOOL). */
int gguf_writer_set(gguf_writer *w, const char *key, gguf_vtype t, const void *value);
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
/* s is a NUL-terminated string (UTF-8 by convention); copied. */
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *s);
/* An array of n fixed-size elements of type elem, packed in data (copied). BOOL elements
 * must be 0 or 1. Strings: gguf_writer_set_arr_str; nested arrays do not exist in GGUF. */
int gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem, uint64_t n, const void *data);
/* An array of n strings: strs[i] is lens[i] bytes (may hold anything, including NUL), or
 * NUL-terminated when lens is NULL. Copied. */
int gguf_writer_set_arr_str(gguf_writer *w, const char *key, uint64_t n, const char *const *strs,
                            const uint64_t *lens);
/* Copies one entry (key, type and value) of an opened file, e.g. every tokenizer.* key of a
 * vocab GGUF. kv is only read during the call. */
int gguf_writer_copy_kv(gguf_writer *w, const gguf_kv *kv);

/* Adds a tensor called name (copied; 1..GGUF_MAX_NAME-1 bytes, unique) of type t and shape
 * ne[0..n_dims) (ne[0] is the row length, a multiple of t's block; n_dims 1..4), whose bytes
 * are data: qt_row_bytes(t, ne[0]) * rows, borrowed until gguf_writer_write returns.
 * Tensors are laid out in the order they are added. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, qt_type t, uint32_t n_dims, const uint64_t *ne,
                           const void *data);
/* Same, with the bytes produced at write time by fill(ctx, ...), chunk by chunk. */
int gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, qt_type t, uint32_t n_dims,
                                const uint64_t *ne, gguf_writer_fill_fn fill, void *ctx);

/* Writes the file to path: into a temporary file in the same directory, flushed to disk,
 * then renamed over path, so path never holds a partial file. Returns the writer's
 * recorded error if any set/add call failed, else 0 or a negative code naming the problem.
 * May be called more than once. */
int gguf_writer_write(gguf_writer *w, const char *path, err_info *ei);

#endif
