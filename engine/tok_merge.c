/* tok_merge — the merge loop both tokenizers share: split a word into UTF-8 characters,
 * then repeatedly merge the best adjacent pair until none is allowed, then map the
 * remaining symbols to ids. SPM and BPE differ only in which pairs may merge and in what
 * order (SPM: the pair's concatenation is a token, highest score first; BPE: the pair is a
 * listed merge, lowest rank first), so each supplies a pair-key function; ties go to the
 * leftmost pair in both, as in llama.cpp.
 *
 * The candidates sit in a binary heap; an entry whose symbols changed since it was queued
 * is skipped when popped, so a word of n characters costs O(n log n), not O(n^2).
 * Not here: pre-tokenization (tok_pre.c) or special tokens (tok_special.c). */
#include <errno.h>
#include <string.h>

#include "tok_internal.h"

/* Bytes in the character starting with lead byte b, by llama.cpp's rule (high nibble
 * only), so malformed UTF-8 is cut into symbols exactly as the reference cuts it. */
static size_t char_len(uint8_t b)
{
    static const uint8_t by_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return by_nibble[b >> 4];
}

/* Whether symbols l and r may merge, and with which key (higher merges first). */
typedef bool (*pair_key_fn)(const tok_vocab *v, const char *word, const tok_sym *l, const tok_sym *r,
                            double *key);

static bool spm_pair(const tok_vocab *v, const char *word, const tok_sym *l, const tok_sym *r, double *key)
{
    int32_t id = tok_map_find(&v->ids, word + l->start, (size_t)(l->len + r->len), NULL, 0);
    if (id < 0)
        return false;
    *key = v->score[id];
    return true;
}

static bool bpe_pair(const tok_vocab *v, const char *word, const tok_sym *l, const tok_sym *r, double *key)
{
    int32_t rank = tok_map_find(&v->ranks, word + l->start, (size_t)l->len, word + r->start, (size_t)r->len);
    if (rank < 0)
        return false;
    *key = -(double)rank;
    return true;
}

static bool bigram_before(const tok_bigram *a, const tok_bigram *b)
{
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}

static int heap_push(tok_work *w, tok_bigram b)
{
    if (tok_grow(&w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap))
        return -ENOMEM;
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_before(&b, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = b;
    return 0;
}

static tok_bigram heap_pop(tok_work *w)
{
    tok_bigram top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!bigram_before(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n)
        w->heap[i] = last;
    return top;
}

static int try_pair(const tok_vocab *v, tok_work *w, const char *word, pair_key_fn pair, int32_t left,
                    int32_t right)
{
    if (left < 0 || right < 0)
        return 0;
    const tok_sym *l = &w->sym[left], *r = &w->sym[right];
    tok_bigram b = {.left = left, .right = right, .size = l->len + r->len};
    if (!pair(v, word, l, r, &b.key))
        return 0;
    return heap_push(w, b);
}

static int merge_word(const tok_vocab *v, tok_work *w, const char *word, size_t n, pair_key_fn pair, tok_out *o)
{
    if (n == 0)
        return 0;
    if (n > INT32_MAX)
        return -E2BIG;
    if (tok_grow(&w->sym, &w->sym_cap, n, sizeof *w->sym))
        return -ENOMEM;
    int32_t n_sym = 0;
    for (size_t at = 0; at < n; n_sym++) {
        size_t len = char_len((uint8_t)word[at]);
        if (len > n - at)
            len = n - at;
        w->sym[n_sym] = (tok_sym){(int32_t)at, (int32_t)len, n_sym - 1, at + len < n ? n_sym + 1 : -1};
        at += len;
    }
    w->heap_n = 0;
    int rc = 0;
    for (int32_t i = 1; i < n_sym && !rc; i++)
        rc = try_pair(v, w, word, pair, i - 1, i);
    while (w->heap_n && !rc) {
        tok_bigram b = heap_pop(w);
        tok_sym *l = &w->sym[b.left], *r = &w->sym[b.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != b.size)
            continue; /* stale: one side was merged into something else since */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = b.left;
        rc = try_pair(v, w, word, pair, l->prev, b.left);
        if (!rc)
            rc = try_pair(v, w, word, pair, b.left, l->next);
    }
    if (rc)
        return rc;
    /* Every merged symbol is a token (SPM only merges into tokens; BPE merges are of
     * tokens), so llama.cpp's re-split through the merge history never finds anything
     * to do: a symbol is a token, or a character whose bytes fall back one by one. */
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const tok_sym *s = &w->sym[i];
        int32_t id = tok_map_find(&v->ids, word + s->start, (size_t)s->len, NULL, 0);
        if (id >= 0) {
            tok_emit(o, id);
            continue;
        }
        for (int32_t j = 0; j < s->len; j++) {
            int32_t b = v->byte_tok[(uint8_t)word[s->start + j]];
            if (b >= 0)
                tok_emit(o, b);
        }
    }
    return 0;
}

static bool is_space_mark(const char *s, size_t len) { return len == 3 && !memcmp(s, "\xE2\x96\x81", 3); }

int tok_merge_spm(const tok_vocab *v, tok_work *w, const char *text, size_t n, tok_out *o)
{
    if (!v->spm_split_words)
        return merge_word(v, w, text, n, spm_pair, o);
    /* Pieces merge independently: the heap stays small (in cache) instead of holding the
     * whole text's candidates, and the result is the same, since no merge crosses a cut
     * and the order of merges within a piece does not change. */
    size_t start = 0, at = 0;
    bool prev_mark = true;
    while (at < n) {
        size_t len = char_len((uint8_t)text[at]);
        if (len > n - at)
            len = n - at;
        bool mark = is_space_mark(text + at, len);
        if (mark && !prev_mark && at > start) {
            int rc = merge_word(v, w, text + start, at - start, spm_pair, o);
            if (rc)
                return rc;
            start = at;
        }
        prev_mark = mark;
        at += len;
    }
    return merge_word(v, w, text + start, n - start, spm_pair, o);
}

int tok_merge_bpe(const tok_vocab *v, tok_work *w, const char *word, size_t n, tok_out *o)
{
    if (v->ignore_merges) {
        int32_t id = tok_map_find(&v->ids, word, n, NULL, 0);
        if (id >= 0) {
            tok_emit(o, id);
            return 0;
        }
    }
    return merge_word(v, w, word, n, bpe_pair, o);
}
