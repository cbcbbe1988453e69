/* tok — tokenizers read from GGUF metadata: SentencePiece-style ("llama": score-driven
 * merges, byte fallback) and byte-level BPE ("gpt2": ranked merges after a regex
 * pre-tokenizer chosen by tokenizer.ggml.pre), plus special tokens and detokenization.
 *
 * Conformance target: the token ids llama.cpp produces for the same vocab and text.
 * Not here: chat templates (chat.h) or sampling (sampler.h). */
#ifndef EDGELLM_TOK_H
#define EDGELLM_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"

typedef struct tok_vocab tok_vocab;

typedef enum tok_kind { TOK_SPM, TOK_BPE } tok_kind;

/* Token attributes from tokenizer.ggml.token_type (GGUF numbering). */
typedef enum tok_type {
    TOK_TYPE_UNDEFINED = 0, TOK_TYPE_NORMAL = 1, TOK_TYPE_UNKNOWN = 2, TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4, TOK_TYPE_UNUSED = 5, TOK_TYPE_BYTE = 6
} tok_type;

enum { TOK_NULL = -1 };

/* Reads the tokenizer from g's metadata. Token strings are borrowed from g: g must outlive
 * the vocab; *out is owned by the caller (tok_free), NULL on failure. Fails with a message
 * naming the key for a missing or mistyped entry (e.g. tokenizer.ggml.tokens not an array
 * of strings), an unsupported model/pre, sizes of tokens/scores/token_type that disagree,
 * a special token id out of range, a merge without a space, or two tokens with one text
 * (llama.cpp asserts or throws on these). Absent keys take llama.cpp's defaults, including
 * its odd BOS = EOS = 11 for a "gpt2" vocab that names neither. */
int tok_load(tok_vocab **out, const gguf *g, err_info *ei);
void tok_free(tok_vocab *v);

tok_kind tok_kind_of(const tok_vocab *v);
int32_t tok_n_vocab(const tok_vocab *v);
const char *tok_pre_name(const tok_vocab *v);   /* pre-tokenizer in use, e.g. "llama3"; "none" for SPM */
int32_t tok_bos(const tok_vocab *v);            /* TOK_NULL when the vocab has none */
int32_t tok_eos(const tok_vocab *v);
bool tok_adds_bos(const tok_vocab *v);          /* the vocab asks for BOS at the start */
bool tok_is_eog(const tok_vocab *v, int32_t id); /* end of generation: EOS, EOT, <|im_end|>, ... */
/* Type after llama.cpp's fixes: tokens detected as EOT/EOM/FIM/EOG by their text are CONTROL. */
tok_type tok_type_of(const tok_vocab *v, int32_t id);
/* Raw token string as stored in the vocab (e.g. "▁the", "Ġthe", "<0x0A>"); borrowed. */
gguf_str tok_text(const tok_vocab *v, int32_t id);
/* Id of the token whose raw string is exactly text[0..len), or TOK_NULL. */
int32_t tok_find(const tok_vocab *v, const char *text, size_t len);

/* Tokenizes len bytes of text (need not be valid UTF-8, need not be NUL-terminated).
 * add_bos: add the special tokens the vocab asks for (llama.cpp's add_special): BOS first
 * if tok_adds_bos, EOS last if tokenizer.ggml.add_eos_token. parse_special: text like
 * "<|im_start|>" becomes its control token instead of being spelled out; USER_DEFINED
 * tokens are matched either way, as in llama.cpp.
 * Writes up to cap ids to out and the full count to *n_out; returns -ERANGE (with *n_out
 * set) when cap is too small, so callers can retry with a bigger buffer. Other failures:
 * -ENOMEM, -E2BIG (text over ~700 MB), -ERR_RANGE (PCRE2 gave up on pathological input).
 * Thread-safe: any number of calls may run on one vocab at once. */
int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
               int32_t *out, int cap, int *n_out);

/* The bytes token id stands for in decoded text: "▁" becomes a space, byte tokens their
 * byte, BPE's byte-to-unicode mapping is undone. Control tokens give "" unless
 * render_special. Writes at most cap bytes, returns the piece's full length (like snprintf,
 * no NUL). */
int tok_piece(const tok_vocab *v, int32_t id, bool render_special, char *buf, int cap);

/* Incremental detokenizer for streaming: feeds one token at a time and releases only
 * complete, valid UTF-8 characters, holding back a split multi-byte sequence until it
 * completes; bytes that can never form a character are released as U+FFFD.
 * Plain value type; initialise with tok_stream_init. */
typedef struct tok_stream {
    char held[8];   /* bytes of an incomplete UTF-8 character */
    int n_held;
    bool at_start;  /* no token pushed yet: the first one loses its prefix space (SPM) */
} tok_stream;

/* Starts at the start of a text: the first token's leading space is dropped when the vocab
 * adds a space prefix (llama.cpp's detokenize). Set s->at_start = false after init to
 * continue text that is already shown (e.g. generation after a prompt). */
void tok_stream_init(tok_stream *s);
/* Appends the text of id to out (cap bytes) and returns the bytes written; never splits a
 * character. Returns -ERANGE if cap is too small (32 + 3 x the longest token always is, since each
 * byte may become a 3-byte U+FFFD). */
int tok_stream_push(const tok_vocab *v, tok_stream *s, int32_t id, char *out, int cap);
/* Releases whatever is still held (an invalid or truncated sequence) as U+FFFD. */
int tok_stream_flush(tok_stream *s, char *out, int cap);

#endif
