/* mkmodel — writes random-weight GGUF models in the shapes of real ones (TinyLlama 1.1B,
 * Qwen2.5 0.5B, SmolLM2 135M) and a small demo shape, with llama.cpp's tensor names,
 * metadata keys and per-tensor type choices, so the engine can be measured and tested at
 * real sizes without downloading weights. The CLI front end is `edgellm mkmodel`
 * (tools/mkmodel.c); this header is the library under it, used by tests too.
 *
 * Not a converter or a quantizer of real weights: the numbers are seeded Gaussian noise
 * (std 0.02 for matrices, so activations stay in a sane range; norms 1.0), quantized with
 * qt_quantize_row. Same options and seed => byte-identical file, whatever the thread count. */
#ifndef EDGELLM_MKMODEL_H
#define EDGELLM_MKMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"
#include "engine/gguf_write.h"
#include "engine/qtype.h"

typedef struct mkmodel_shape {
    const char *name;       /* "tinyllama-1.1b" */
    const char *arch;       /* GGUF general.architecture: "llama" or "qwen2" */
    int n_embd, n_layer, n_head, n_head_kv, n_ff;
    int n_vocab;            /* weights' vocab rows; 0 = the built-in vocab's own size */
    int n_ctx;              /* trained context length */
    float rope_base, rms_eps;
    bool tied;              /* output projection shares token_embd (no output.weight) */
    bool qkv_bias;          /* attn_q/k/v.bias tensors (qwen2) */
} mkmodel_shape;

/* The built-in shape called name, or NULL. Static storage. */
const mkmodel_shape *mkmodel_shape_find(const char *name);
/* The i-th built-in shape, or NULL past the last. Static storage. */
const mkmodel_shape *mkmodel_shape_at(size_t i);

/* File types, as llama.cpp's quantize names them. */
typedef enum mkmodel_ftype { MKMODEL_F16, MKMODEL_Q4_0, MKMODEL_Q8_0, MKMODEL_Q4_K_M, MKMODEL_FTYPE_COUNT } mkmodel_ftype;

/* ftype called name ("Q4_K_M", case-insensitive), or -1. */
int mkmodel_ftype_from_name(const char *name);
const char *mkmodel_ftype_name(mkmodel_ftype ft);
/* The general.file_type value llama.cpp writes for ft (its llama_ftype number). */
uint32_t mkmodel_ftype_number(mkmodel_ftype ft);

/* What a weight matrix is, for choosing its type. A tied token_embd is the output matrix. */
typedef enum mkmodel_role {
    MKMODEL_TOKEN_EMBD, MKMODEL_OUTPUT, MKMODEL_ATTN_Q, MKMODEL_ATTN_K, MKMODEL_ATTN_V, MKMODEL_ATTN_OUTPUT,
    MKMODEL_FFN_GATE, MKMODEL_FFN_UP, MKMODEL_FFN_DOWN
} mkmodel_role;

/* The type llama.cpp's quantize gives a matrix of this role in layer `layer` of n_layer
 * (ignored for token_embd/output) with rows of row_len elements, for file type ft:
 *   F16: F16. Q8_0: Q8_0, output included. Q4_0: Q4_0, output Q6_K.
 *   Q4_K_M: Q4_K; Q6_K for output and for attn_v and ffn_down in the layers llama.cpp's
 *   use_more_bits picks (the first and last eighth, and every third layer between).
 * Then llama.cpp's fallback when row_len is not whole blocks of that type (Qwen2.5's 896 or
 * SmolLM2's 576 against the K types' 256): Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and F16
 * when even that does not fit. Norms and biases are always F32 and do not come here. */
qt_type mkmodel_tensor_type(mkmodel_ftype ft, mkmodel_role role, int layer, int n_layer, int64_t row_len);

/* Adds (copies into w) the built-in tokenizer's tokenizer.* keys: byte-level BPE ("gpt2" model, "gpt-2" pre-tokenizer),
 * the 256 byte tokens, merges learned from a built-in English sample, <|endoftext|>
 * (BOS/EOS), <|im_start|>, <|im_end|> and a ChatML chat template; then "<unused_N>" tokens
 * up to pad_to tokens when pad_to is larger. *n_tokens gets the final token count. */
int mkmodel_vocab_builtin(gguf_writer *w, int64_t pad_to, int64_t *n_tokens, err_info *ei);

typedef struct mkmodel_opts {
    const mkmodel_shape *shape;
    mkmodel_ftype ftype;
    const char *path;       /* output file */
    uint64_t seed;
    const char *vocab_path; /* GGUF whose tokenizer.* keys to copy, or NULL for the built-in vocab */
    int n_threads;          /* <= 0: one per physical core */
} mkmodel_opts;

/* Generates and writes the model described by o (see gguf_writer_write for how the file
 * appears: never half-written). */
int mkmodel_write(const mkmodel_opts *o, err_info *ei);

#endif
