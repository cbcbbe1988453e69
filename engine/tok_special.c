/* tok_special — finds special tokens (CONTROL, USER_DEFINED, UNKNOWN) in raw text before the
 * normal tokenizer runs, with llama.cpp's precedence: tokens are taken one at a time,
 * longest text first (ties: lower id), and each claims its leftmost non-overlapping
 * occurrences in the text not yet claimed. With parse_special off only USER_DEFINED tokens
 * are matched. A token marked LSTRIP/RSTRIP also swallows the whitespace beside it.
 *
 * All occurrences are found in one pass over the text with a byte trie, then resolved in
 * precedence order, instead of one substring search per special token (deepseek has 2400).
 * Not here: what happens to the text between the tokens (tok.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct trie_node {
    int32_t child;    /* first child, -1 if none */
    int32_t sibling;  /* next child of the same parent, -1 if none */
    int32_t id;       /* token ending here, or -1 */
    uint8_t byte;
} trie_node;

struct tok_special {
    trie_node *node;
    int32_t n_node;
    int32_t root[256];  /* node for each first byte, -1 if no special token starts with it */
    int32_t *rank;      /* per token id: precedence (0 = first), -1 if not special */
};

/* An occurrence of a special token in the text. */
typedef struct hit {
    int32_t rank, id;
    size_t pos;
} hit;

static bool is_special_type(tok_type t)
{
    return t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNKNOWN;
}

/* A special token with its text length, sorted into precedence order. */
typedef struct by_len {
    uint64_t len;
    int32_t id;
} by_len;

static int cmp_precedence(const void *a, const void *b)
{
    const by_len *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int32_t add_node(tok_special *s, uint8_t byte)
{
    s->node[s->n_node] = (trie_node){-1, -1, -1, byte};
    return s->n_node++;
}

int tok_special_build(tok_vocab *v)
{
    int32_t n_special = 0;
    size_t n_bytes = 0;
    for (int32_t id = 0; id < v->n; id++)
        if (is_special_type((tok_type)(v->attr[id] & TOK_ATTR_TYPE)) && v->text[id].len) {
            n_special++;
            n_bytes += v->text[id].len;
        }
    if (n_special == 0)
        return 0;
    tok_special *s = calloc(1, sizeof *s);
    by_len *order = malloc((size_t)n_special * sizeof *order);
    if (!s || !order || n_bytes > INT32_MAX)
        goto nomem;
    s->node = malloc(n_bytes * sizeof *s->node);
    s->rank = malloc((size_t)v->n * sizeof *s->rank);
    if (!s->node || !s->rank)
        goto nomem;
    memset(s->root, -1, sizeof s->root);
    for (int32_t id = 0, k = 0; id < v->n; id++) {
        s->rank[id] = -1;
        if (is_special_type((tok_type)(v->attr[id] & TOK_ATTR_TYPE)) && v->text[id].len)
            order[k++] = (by_len){v->text[id].len, id};
    }
    qsort(order, (size_t)n_special, sizeof *order, cmp_precedence);
    for (int32_t k = 0; k < n_special; k++) {
        int32_t id = order[k].id;
        const uint8_t *t = (const uint8_t *)v->text[id].ptr;
        s->rank[id] = k;
        if (s->root[t[0]] < 0)
            s->root[t[0]] = add_node(s, t[0]);
        int32_t at = s->root[t[0]];
        for (uint64_t i = 1; i < v->text[id].len; i++) {
            int32_t c = s->node[at].child;
            while (c >= 0 && s->node[c].byte != t[i])
                c = s->node[c].sibling;
            if (c < 0) {
                c = add_node(s, t[i]);
                s->node[c].sibling = s->node[at].child;
                s->node[at].child = c;
            }
            at = c;
        }
        s->node[at].id = id; /* texts are unique, so no node is claimed twice */
    }
    free(order);
    v->special = s;
    return 0;
nomem:
    free(order);
    tok_special_free(s);
    return -ENOMEM;
}

void tok_special_free(tok_special *s)
{
    if (!s)
        return;
    free(s->node);
    free(s->rank);
    free(s);
}

static int cmp_hit(const void *a, const void *b)
{
    const hit *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_span(const void *a, const void *b)
{
    const tok_span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* llama.cpp strips with C isspace on bytes: ASCII whitespace only. */
static bool ascii_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static int add_span(tok_work *w, size_t start, size_t end, int32_t id)
{
    if (tok_grow(&w->span, &w->span_cap, w->span_n + 1, sizeof *w->span))
        return -ENOMEM;
    w->span[w->span_n++] = (tok_span){start, end, id};
    memset(w->taken + start, 1, end - start);
    return 0;
}

/* Claims the occurrence h of token id if none of its bytes is claimed yet, with the
 * whitespace its LSTRIP/RSTRIP attributes swallow. */
static int claim(const tok_vocab *v, tok_work *w, const char *text, size_t n, const hit *h)
{
    size_t len = (size_t)v->text[h->id].len, end = h->pos + len;
    if (memchr(w->taken + h->pos, 1, len))
        return 0;
    size_t ws = h->pos;
    if (v->attr[h->id] & TOK_ATTR_LSTRIP)
        while (ws > 0 && !w->taken[ws - 1] && ascii_space(text[ws - 1]))
            ws--;
    size_t we = end;
    if (v->attr[h->id] & TOK_ATTR_RSTRIP)
        while (we < n && !w->taken[we] && ascii_space(text[we]))
            we++;
    int rc = add_span(w, h->pos, end, h->id);
    if (!rc && ws < h->pos)
        rc = add_span(w, ws, h->pos, TOK_NULL);
    if (!rc && we > end)
        rc = add_span(w, end, we, TOK_NULL);
    return rc;
}

int tok_special_find(const tok_vocab *v, tok_work *w, const char *text, size_t n, bool parse_special)
{
    const tok_special *s = v->special;
    w->span_n = 0;
    if (!s)
        return 0;
    hit *hits = NULL;
    size_t n_hits = 0, hits_cap = 0;
    int rc = 0;
    for (size_t pos = 0; pos < n && !rc; pos++) {
        for (int32_t at = s->root[(uint8_t)text[pos]], i = 1; at >= 0;) {
            int32_t id = s->node[at].id;
            if (id >= 0 && (parse_special || (v->attr[id] & TOK_ATTR_TYPE) == TOK_TYPE_USER_DEFINED)) {
                if ((rc = tok_grow(&hits, &hits_cap, n_hits + 1, sizeof *hits)))
                    break;
                hits[n_hits++] = (hit){s->rank[id], id, pos};
            }
            if (pos + (size_t)i >= n)
                break;
            int32_t c = s->node[at].child;
            while (c >= 0 && s->node[c].byte != (uint8_t)text[pos + (size_t)i])
                c = s->node[c].sibling;
            at = c;
            i++;
        }
    }
    if (rc || n_hits == 0)
        goto done;
    qsort(hits, n_hits, sizeof *hits, cmp_hit);
    free(w->taken);
    if (!(w->taken = calloc(n, 1))) {
        rc = -ENOMEM;
        goto done;
    }
    for (size_t k = 0; k < n_hits && !rc; k++)
        rc = claim(v, w, text, n, &hits[k]);
    qsort(w->span, w->span_n, sizeof *w->span, cmp_span);
done:
    free(hits);
    return rc;
}
