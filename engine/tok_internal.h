/* tok_internal — what the tokenizer's files share and nobody else sees: the vocab's layout,
 * the string->index hash map, the per-call work area, and the entry points of the pieces
 * (tok_merge.c: the SPM/BPE merge loop; tok_pre.c: the PCRE2 pre-tokenizers;
 * tok_special.c: matching special tokens in raw text).
 *
 * Not a public header: include tok.h outside engine/tok*.c. */
#ifndef EDGELLM_TOK_INTERNAL_H
#define EDGELLM_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tok.h"

/* Per-token attribute byte: the (possibly overridden) tok_type plus flags. */
enum {
    TOK_ATTR_TYPE = 0x07,   /* tok_type value */
    TOK_ATTR_EOG = 0x08,    /* ends generation */
    TOK_ATTR_LSTRIP = 0x10, /* when matched as a special token, eats whitespace before it */
    TOK_ATTR_RSTRIP = 0x20, /* ... and after it */
};

/* Open-addressing map from a string to its index in a borrowed key array (token id, or
 * merge rank). Empty keys are not inserted; for a repeated key the first index is kept,
 * as llama.cpp keeps the first BPE rank. */
typedef struct tok_map {
    int32_t *slot;          /* mask + 1 entries: key index, or -1 when empty */
    uint32_t mask;
    const gguf_str *keys;   /* borrowed */
} tok_map;

/* Builds m over keys[0..n). *first_dup gets the index of the first key equal to an
 * earlier one, or -1. Returns 0 or -ENOMEM. */
int tok_map_init(tok_map *m, const gguf_str *keys, int32_t n, int32_t *first_dup);
void tok_map_free(tok_map *m);
/* Index of the key a[0..na), or, when b is not NULL, of the key "a b" (a, one space, b),
 * which is how merges are stored. -1 when absent. */
int32_t tok_map_find(const tok_map *m, const char *a, size_t na, const char *b, size_t nb);

typedef struct tok_special tok_special; /* trie of special tokens (tok_special.c) */
typedef struct tok_pre tok_pre;         /* compiled pre-tokenizer regexes (tok_pre.c) */

struct tok_vocab {
    tok_kind kind;
    int32_t n;                 /* tokens */
    gguf_str *text;            /* n token strings, borrowed from the gguf; owned array */
    float *score;              /* n SPM scores (0 when the file has none); NULL for BPE */
    uint8_t *attr;             /* n attribute bytes (TOK_ATTR_*) */
    tok_map ids;               /* text -> id */

    int32_t bos, eos, unk, eot, eom;
    bool add_bos, add_eos, add_space_prefix;
    bool ignore_merges;        /* BPE: a pre-token that is a whole token skips merging */
    /* SPM: no token has a U+2581 right after another character, so no merge crosses the
     * start of a "▁word" and the text can be merged one such piece at a time */
    bool spm_split_words;
    const char *pre_name;      /* static */

    /* Token emitted for a raw byte no symbol covers: SPM's <0xXX> (else the byte as a
     * one-byte token, else unk); BPE's one-byte token, else TOK_NULL (dropped). */
    int32_t byte_tok[256];
    /* GPT-2 byte map: byte -> its code point's UTF-8 (1 or 2 bytes); code point -> byte
     * for the 0x144 code points the map uses (-1 elsewhere). */
    char byte_utf8[256][2];
    uint8_t byte_utf8_len[256];
    int16_t cp_byte[0x144];

    gguf_str *merge;           /* BPE: n_merge merge strings "left right"; owned array */
    int32_t n_merge;
    tok_map ranks;             /* "left right" -> rank */
    tok_pre *pre;              /* BPE pre-tokenizer */
    tok_special *special;      /* NULL when the vocab has no special tokens */
};

/* One symbol of the word being merged: the bytes [start, start + len) of the word. */
typedef struct tok_sym {
    int32_t start, len;
    int32_t prev, next;        /* neighbours in the chain, -1 at the ends */
} tok_sym;

/* A candidate merge of two adjacent symbols. Higher key first, ties to the leftmost; size
 * is left + right length when queued, which detects entries made stale by other merges. */
typedef struct tok_bigram {
    double key;
    int32_t left, right, size;
} tok_bigram;

/* A special token found in the text, or (id == TOK_NULL) whitespace it strips. */
typedef struct tok_span {
    size_t start, end;
    int32_t id;
} tok_span;

/* Scratch for one tok_encode call: grown as needed, freed at the end of the call, so
 * concurrent calls on one vocab share nothing mutable. */
typedef struct tok_work {
    tok_sym *sym;
    size_t sym_cap;
    tok_bigram *heap;
    size_t heap_n, heap_cap;
    char *word;                /* SPM: escaped text; BPE: a pre-token in GPT-2 byte map */
    size_t word_cap;
    size_t *cut[2];            /* pre-tokenizer fragment ends, ping-pong between regexes */
    size_t cut_cap[2];
    pcre2_match_data *md;
    tok_span *span;
    size_t span_n, span_cap;
    uint8_t *taken;            /* per text byte: claimed by a special token */
} tok_work;

/* Grows *p (elements of elem bytes, capacity *cap) to hold at least need elements. */
int tok_grow(void *p, size_t *cap, size_t need, size_t elem);
void tok_work_free(tok_work *w);

/* Output cursor: ids beyond cap are counted but not stored. */
typedef struct tok_out {
    int32_t *ids;
    int cap, n;
} tok_out;

static inline void tok_emit(tok_out *o, int32_t id)
{
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

/* tok_merge.c: tokenizes one word (SPM: a whole escaped fragment; BPE: one pre-token
 * already in GPT-2's byte map) by repeated pair merges, appending ids to o. */
int tok_merge_spm(const tok_vocab *v, tok_work *w, const char *text, size_t n, tok_out *o);
int tok_merge_bpe(const tok_vocab *v, tok_work *w, const char *word, size_t n, tok_out *o);

/* tok_pre.c: the pre-tokenizer named by tokenizer.ggml.pre (name[0..len)). Sets the
 * family's defaults in v (pre_name, ignore_merges, add_bos). */
int tok_pre_open(tok_pre **out, tok_vocab *v, const char *name, size_t len, err_info *ei);
void tok_pre_free(tok_pre *p);
/* Splits text[0..n) into pre-tokens; on success w->cut[0][0..*n_words) holds their end
 * offsets in order. */
int tok_pre_split(const tok_pre *p, tok_work *w, const char *text, size_t n, size_t *n_words);

/* tok_special.c: builds v->special from the tokens whose attr is CONTROL, USER_DEFINED or
 * UNKNOWN (left NULL when there are none). */
int tok_special_build(tok_vocab *v);
void tok_special_free(tok_special *s);
/* Finds the special tokens in text[0..n) as llama.cpp's tokenizer_st_partition does and
 * leaves them in w->span[0..w->span_n), sorted by start. */
int tok_special_find(const tok_vocab *v, tok_work *w, const char *text, size_t n, bool parse_special);

#endif
