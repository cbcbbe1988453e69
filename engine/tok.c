/* tok — see tok.h. Reading the vocab from GGUF metadata (with llama.cpp's defaults, its
 * special-token detection by text and its per-model attribute fixes), the encode driver
 * that cuts the text at special tokens and hands the pieces to SPM or BPE, and
 * detokenization.
 *
 * Where llama.cpp would crash or throw (a duplicate token text, a special id out of range,
 * a merge without a space) the vocab is refused instead, with the key named. Where it
 * picks an arbitrary token (the first hash-map hit when detecting EOT/FIM tokens by text)
 * the lowest id is taken. Not here: the merge loop (tok_merge.c), regex pre-tokenizers
 * (tok_pre.c), special-token matching (tok_special.c). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "utf8.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"

/* ---- helpers shared by the tok files ------------------------------------------------- */

int tok_grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16, bytes;
    while (n < need)
        if (__builtin_mul_overflow(n, 2, &n))
            return -ENOMEM;
    if (__builtin_mul_overflow(n, elem, &bytes))
        return -ENOMEM;
    void *old; /* p points at some T *; go through memcpy rather than pun it as void * */
    memcpy(&old, p, sizeof old);
    void *grown = realloc(old, bytes);
    if (!grown)
        return -ENOMEM;
    memcpy(p, &grown, sizeof grown);
    *cap = n;
    return 0;
}

void tok_work_free(tok_work *w)
{
    free(w->sym);
    free(w->heap);
    free(w->word);
    free(w->cut[0]);
    free(w->cut[1]);
    pcre2_match_data_free(w->md);
    free(w->span);
    free(w->taken);
}

/* FNV-1a: short keys, no alignment assumptions, and a pair "a b" hashes in parts. */
enum { FNV_SEED = 2166136261u, FNV_PRIME = 16777619u };

static uint32_t fnv(uint32_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * FNV_PRIME;
    return h;
}

static bool key_is(gguf_str k, const char *a, size_t na, const char *b, size_t nb)
{
    if (!b)
        return k.len == na && memcmp(k.ptr, a, na) == 0;
    return k.len == na + 1 + nb && memcmp(k.ptr, a, na) == 0 && k.ptr[na] == ' ' &&
           memcmp(k.ptr + na + 1, b, nb) == 0;
}

int tok_map_init(tok_map *m, const gguf_str *keys, int32_t n, int32_t *first_dup)
{
    *first_dup = -1;
    size_t cap = 16;
    while (cap < (size_t)n * 2) /* load <= 1/2 keeps probe runs short */
        cap *= 2;
    m->keys = keys;
    m->mask = (uint32_t)(cap - 1);
    if (!(m->slot = malloc(cap * sizeof *m->slot)))
        return -ENOMEM;
    memset(m->slot, 0xff, cap * sizeof *m->slot);
    for (int32_t i = 0; i < n; i++) {
        if (keys[i].len == 0)
            continue;
        uint32_t h = fnv(FNV_SEED, keys[i].ptr, keys[i].len) & m->mask;
        bool dup = false;
        for (; m->slot[h] >= 0 && !dup; h = (h + 1) & m->mask)
            dup = key_is(keys[m->slot[h]], keys[i].ptr, keys[i].len, NULL, 0);
        if (!dup)
            m->slot[h] = i;
        else if (*first_dup < 0)
            *first_dup = i;
    }
    return 0;
}

void tok_map_free(tok_map *m)
{
    free(m->slot);
    m->slot = NULL;
}

int32_t tok_map_find(const tok_map *m, const char *a, size_t na, const char *b, size_t nb)
{
    uint32_t h = fnv(FNV_SEED, a, na);
    if (b)
        h = fnv(fnv(h, " ", 1), b, nb);
    for (h &= m->mask;; h = (h + 1) & m->mask) {
        int32_t i = m->slot[h];
        if (i < 0 || key_is(m->keys[i], a, na, b, nb))
            return i;
    }
}

/* ---- loading ------------------------------------------------------------------------- */

/* Special token slots llama.cpp reads; only some are kept in the vocab, the rest matter
 * for which tokens become CONTROL and end generation. */
enum { S_BOS, S_EOS, S_UNK, S_EOT, S_EOM, S_FIM_PRE, S_FIM_SUF, S_FIM_MID, S_FIM_PAD, S_FIM_REP, S_FIM_SEP, S_COUNT };

static const struct {
    const char *key;
    int slot;
} id_keys[] = { /* in llama.cpp's order: the deprecated FIM keys override the new ones */
    {"tokenizer.ggml.bos_token_id", S_BOS},         {"tokenizer.ggml.eos_token_id", S_EOS},
    {"tokenizer.ggml.eot_token_id", S_EOT},         {"tokenizer.ggml.eom_token_id", S_EOM},
    {"tokenizer.ggml.unknown_token_id", S_UNK},     {"tokenizer.ggml.fim_pre_token_id", S_FIM_PRE},
    {"tokenizer.ggml.fim_suf_token_id", S_FIM_SUF}, {"tokenizer.ggml.fim_mid_token_id", S_FIM_MID},
    {"tokenizer.ggml.fim_pad_token_id", S_FIM_PAD}, {"tokenizer.ggml.fim_rep_token_id", S_FIM_REP},
    {"tokenizer.ggml.fim_sep_token_id", S_FIM_SEP}, {"tokenizer.ggml.prefix_token_id", S_FIM_PRE},
    {"tokenizer.ggml.suffix_token_id", S_FIM_SUF},  {"tokenizer.ggml.middle_token_id", S_FIM_MID},
};

/* Texts by which llama.cpp recognises a slot the metadata left unset; the token found
 * becomes CONTROL. */
static const char *const eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                        "<EOT>", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {"<|fim_prefix|>", "<fim-prefix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>", NULL};
static const char *const fim_suf_texts[] = {"<|fim_suffix|>", "<fim-suffix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>", "<SUF>", NULL};
static const char *const fim_mid_texts[] = {"<|fim_middle|>", "<fim-middle>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>", NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<PAD>", NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};

static const char *const *const detect_texts[S_COUNT] = {
    [S_EOT] = eot_texts,         [S_EOM] = eom_texts,         [S_FIM_PRE] = fim_pre_texts,
    [S_FIM_SUF] = fim_suf_texts, [S_FIM_MID] = fim_mid_texts, [S_FIM_PAD] = fim_pad_texts,
    [S_FIM_REP] = fim_rep_texts, [S_FIM_SEP] = fim_sep_texts,
};

/* Tokens that end generation by their text (llama.cpp's special_eog_ids), besides the
 * EOS, EOT, EOM and FIM pad/repo/separator slots. */
static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                        "<|eom_id|>", "<EOT>", NULL};
static const int eog_slots[] = {S_EOS, S_EOT, S_EOM, S_FIM_PAD, S_FIM_REP, S_FIM_SEP};

static int32_t find_cstr(const tok_vocab *v, const char *s) { return tok_map_find(&v->ids, s, strlen(s), NULL, 0); }

static void set_type(tok_vocab *v, int32_t id, tok_type t)
{
    v->attr[id] = (uint8_t)((v->attr[id] & ~TOK_ATTR_TYPE) | t);
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The byte an SPM byte token "<0xHH>" stands for, or -1 when its text is not that form. */
static int spm_byte_value(gguf_str t)
{
    if (t.len != 6 || memcmp(t.ptr, "<0x", 3) || t.ptr[5] != '>' || hex_digit(t.ptr[3]) < 0 || hex_digit(t.ptr[4]) < 0)
        return -1;
    return hex_digit(t.ptr[3]) * 16 + hex_digit(t.ptr[4]);
}

/* Reads the token strings, types and (SPM) scores, and indexes the strings. */
static int load_tokens(tok_vocab *v, const gguf *g, err_info *ei)
{
    gguf_arr toks, arr;
    int rc = gguf_get_arr(g, KEY_TOKENS, GGUF_STR, &toks, ei);
    if (rc)
        return rc;
    if (toks.n == 0 || toks.n > INT32_MAX)
        return err_set(ei, -ERR_FORMAT, "%s has %llu entries, expected 1..%d", KEY_TOKENS,
                       (unsigned long long)toks.n, INT32_MAX);
    v->n = (int32_t)toks.n;
    size_t n = (size_t)toks.n, bytes;
    if (__builtin_mul_overflow(n, sizeof *v->text, &bytes) || !(v->text = malloc(bytes)) ||
        !(v->attr = malloc(n)) || (v->kind == TOK_SPM && !(v->score = calloc(n, sizeof *v->score))))
        return err_set(ei, -ENOMEM, "out of memory for %zu tokens", n);
    gguf_arr_strings(&toks, v->text);
    memset(v->attr, TOK_TYPE_NORMAL, n); /* llama.cpp's default without token_type */
    if (gguf_find(g, KEY_TYPES)) {
        if ((rc = gguf_get_arr(g, KEY_TYPES, GGUF_I32, &arr, ei)))
            return rc;
        if (arr.n != toks.n)
            return err_set(ei, -ERR_FORMAT, "%s has %llu entries but %s has %zu", KEY_TYPES,
                           (unsigned long long)arr.n, KEY_TOKENS, n);
        for (size_t i = 0; i < n; i++) {
            int32_t t;
            memcpy(&t, arr.data + 4 * i, 4);
            v->attr[i] = (uint8_t)(t >= TOK_TYPE_UNDEFINED && t <= TOK_TYPE_BYTE ? t : TOK_TYPE_UNDEFINED);
            /* llama.cpp reads an SPM byte token's value with substr(3, 2) and strtol, which
             * throws on a short text and yields a wrong or negative byte on a malformed one
             * ("<0xZZ>", "<0x-1>", "<0x100>"): such a vocab is refused, naming the token. */
            if (v->kind == TOK_SPM && t == TOK_TYPE_BYTE && spm_byte_value(v->text[i]) < 0)
                return err_set(ei, -ERR_FORMAT, "%s: token %zu '%.*s' has type byte but is not of the form <0xHH>",
                               KEY_TOKENS, i, (int)(v->text[i].len < 40 ? v->text[i].len : 40), v->text[i].ptr);
        }
    }
    if (v->kind == TOK_SPM && gguf_find(g, KEY_SCORES)) {
        if ((rc = gguf_get_arr(g, KEY_SCORES, GGUF_F32, &arr, ei)))
            return rc;
        if (arr.n != toks.n)
            return err_set(ei, -ERR_FORMAT, "%s has %llu entries but %s has %zu", KEY_SCORES,
                           (unsigned long long)arr.n, KEY_TOKENS, n);
        memcpy(v->score, arr.data, 4 * n); /* GGUF is little-endian, as are our hosts */
    }
    int32_t dup;
    if (tok_map_init(&v->ids, v->text, v->n, &dup))
        return err_set(ei, -ENOMEM, "out of memory indexing %zu tokens", n);
    if (dup >= 0) /* llama.cpp asserts on this */
        return err_set(ei, -ERR_FORMAT, "%s: token %d has the same text as token %d", KEY_TOKENS, dup,
                       tok_map_find(&v->ids, v->text[dup].ptr, v->text[dup].len, NULL, 0));
    return 0;
}

/* Whether some token holds a U+2581 preceded by another character (see spm_split_words). */
static bool space_mark_inside_token(const tok_vocab *v)
{
    static const char mark[3] = {'\xE2', '\x96', '\x81'};
    for (int32_t id = 0; id < v->n; id++) {
        const char *t = v->text[id].ptr, *end = t + v->text[id].len, *p = t;
        while ((p = memmem(p, (size_t)(end - p), mark, 3))) {
            if (p > t && (p - t < 3 || memcmp(p - 3, mark, 3)))
                return true;
            p += 3;
        }
    }
    return false;
}

/* Reads and indexes the BPE merges ("left right", rank = position). */
static int load_merges(tok_vocab *v, const gguf *g, err_info *ei)
{
    gguf_arr arr;
    int rc = gguf_get_arr(g, KEY_MERGES, GGUF_STR, &arr, ei);
    if (rc)
        return rc;
    size_t bytes;
    if (arr.n > INT32_MAX)
        return err_set(ei, -ERR_FORMAT, "%s has %llu entries, more than %d", KEY_MERGES, (unsigned long long)arr.n,
                       INT32_MAX);
    if (__builtin_mul_overflow((size_t)arr.n, sizeof *v->merge, &bytes) || !(v->merge = malloc(bytes ? bytes : 1)))
        return err_set(ei, -ENOMEM, "out of memory for %llu merges", (unsigned long long)arr.n);
    v->n_merge = (int32_t)arr.n;
    gguf_arr_strings(&arr, v->merge);
    for (int32_t i = 0; i < v->n_merge; i++) {
        const gguf_str *m = &v->merge[i];
        /* llama.cpp splits at the first space after the first byte */
        if (m->len < 3 || !memchr(m->ptr + 1, ' ', m->len - 2))
            return err_set(ei, -ERR_FORMAT, "%s entry %d '%.*s' is not two parts separated by a space", KEY_MERGES,
                           i, (int)(m->len < 40 ? m->len : 40), m->ptr);
    }
    int32_t dup; /* a repeated merge keeps its first rank, as llama.cpp's emplace does */
    if (tok_map_init(&v->ranks, v->merge, v->n_merge, &dup))
        return err_set(ei, -ENOMEM, "out of memory indexing %d merges", v->n_merge);
    return 0;
}

/* Overrides *b with key's value when the key is present (and a bool). */
static int opt_bool(const gguf *g, const char *key, bool *b, err_info *ei)
{
    return gguf_find(g, key) ? gguf_get_bool(g, key, b, ei) : 0;
}

/* Reads the special ids, add_* flags, detects unset slots by text and marks EOG tokens. */
static int load_specials(tok_vocab *v, const gguf *g, int32_t *slot, err_info *ei)
{
    int rc;
    for (size_t k = 0; k < sizeof id_keys / sizeof id_keys[0]; k++) {
        uint32_t id;
        if (!gguf_find(g, id_keys[k].key))
            continue;
        if ((rc = gguf_get_u32(g, id_keys[k].key, &id, ei)))
            return rc;
        if (id >= (uint32_t)v->n)
            return err_set(ei, -ERR_RANGE, "%s = %u is not a token id (the vocab has %d)", id_keys[k].key, id, v->n);
        slot[id_keys[k].slot] = (int32_t)id;
    }
    if ((rc = opt_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos, ei)) ||
        (rc = opt_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos, ei)) ||
        (rc = opt_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, ei)))
        return rc;
    for (int s = 0; s < S_COUNT; s++) {
        if (slot[s] != TOK_NULL || !detect_texts[s])
            continue;
        for (const char *const *t = detect_texts[s]; *t; t++) {
            int32_t id = find_cstr(v, *t);
            if (id >= 0 && (slot[s] == TOK_NULL || id < slot[s]))
                slot[s] = id;
        }
        if (slot[s] != TOK_NULL)
            set_type(v, slot[s], TOK_TYPE_CONTROL);
    }
    for (const char *const *t = eog_texts; *t; t++) {
        int32_t id = find_cstr(v, *t);
        if (id >= 0) {
            set_type(v, id, TOK_TYPE_CONTROL);
            v->attr[id] |= TOK_ATTR_EOG;
        }
    }
    for (size_t k = 0; k < sizeof eog_slots / sizeof eog_slots[0]; k++)
        if (slot[eog_slots[k]] != TOK_NULL)
            v->attr[slot[eog_slots[k]]] |= TOK_ATTR_EOG;
    v->bos = slot[S_BOS];
    v->eos = slot[S_EOS];
    v->unk = slot[S_UNK];
    v->eot = slot[S_EOT];
    v->eom = slot[S_EOM];
    return 0;
}

static bool contains(const char *hay, size_t n, const char *needle) { return memmem(hay, n, needle, strlen(needle)); }

static void set_flag(tok_vocab *v, const char *text, uint8_t flag, bool on)
{
    int32_t id = find_cstr(v, text);
    if (id >= 0)
        v->attr[id] = (uint8_t)(on ? v->attr[id] | flag : v->attr[id] & ~flag);
}

/* llama.cpp's per-model whitespace stripping around special tokens, keyed on the
 * pre-tokenizer and model names. */
static void load_strip_rules(tok_vocab *v, const gguf *g, gguf_str pre)
{
    gguf_str name = {0};
    char lower[256];
    size_t n = 0;
    if (gguf_get_str(g, "general.name", &name, NULL) == 0)
        for (; n < name.len && n < sizeof lower; n++)
            lower[n] = (char)tolower((unsigned char)name.ptr[n]);
    if (contains(pre.ptr, pre.len, "jina-v2-de") || contains(pre.ptr, pre.len, "jina-v2-es") ||
        contains(pre.ptr, pre.len, "jina-v2-code")) {
        set_flag(v, "<mask>", TOK_ATTR_LSTRIP, true);
    } else if (contains(lower, n, "phi-3") || contains(lower, n, "phi3")) {
        for (int32_t id = 0; id < v->n; id++) {
            tok_type t = (tok_type)(v->attr[id] & TOK_ATTR_TYPE);
            if (t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNKNOWN)
                v->attr[id] |= TOK_ATTR_RSTRIP;
        }
        set_flag(v, "</s>", TOK_ATTR_RSTRIP, true);
        set_flag(v, "<unk>", TOK_ATTR_RSTRIP, false);
        set_flag(v, "<s>", TOK_ATTR_RSTRIP, false);
        set_flag(v, "<|endoftext|>", TOK_ATTR_RSTRIP, false);
    }
}

/* The GPT-2 byte map both ways, and the token each raw byte falls back to. */
static void load_byte_tables(tok_vocab *v)
{
    memset(v->cp_byte, 0xff, sizeof v->cp_byte);
    for (int b = 0; b < 256; b++) {
        uint32_t cp = utf8_byte_to_cp((uint8_t)b);
        char u[4];
        v->byte_utf8_len[b] = (uint8_t)utf8_encode(cp, u);
        memcpy(v->byte_utf8[b], u, 2); /* the map's code points are all below U+0800 */
        v->cp_byte[cp] = (int16_t)b;
        char one = (char)b, hex[8];
        int32_t id = TOK_NULL;
        if (v->kind == TOK_SPM) {
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            id = find_cstr(v, hex);
        }
        if (id < 0)
            id = tok_map_find(&v->ids, &one, 1, NULL, 0);
        if (id < 0 && v->kind == TOK_SPM)
            id = v->unk; /* llama.cpp throws here */
        v->byte_tok[b] = id;
    }
}

int tok_load(tok_vocab **out, const gguf *g, err_info *ei)
{
    *out = NULL;
    gguf_str model, pre = {"", 0};
    int rc = gguf_get_str(g, KEY_MODEL, &model, ei);
    if (rc)
        return rc;
    if (gguf_find(g, KEY_PRE) && (rc = gguf_get_str(g, KEY_PRE, &pre, ei)))
        return rc;
    tok_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return err_set(ei, -ENOMEM, "out of memory");
    /* llama.cpp's defaults per model, before the metadata overrides them */
    int32_t slot[S_COUNT];
    for (int s = 0; s < S_COUNT; s++)
        slot[s] = TOK_NULL;
    if (gguf_str_eq(model, "llama")) {
        v->kind = TOK_SPM;
        slot[S_BOS] = 1, slot[S_EOS] = 2, slot[S_UNK] = 0;
        v->add_bos = v->add_space_prefix = true;
        v->pre_name = "none";
    } else if (gguf_str_eq(model, "gpt2")) {
        v->kind = TOK_BPE;
        slot[S_BOS] = slot[S_EOS] = 11; /* sic: llama.cpp's default for BPE vocabs */
    } else {
        rc = err_set(ei, -ERR_UNSUPPORTED, "%s '%.*s' is not supported (expected llama or gpt2)", KEY_MODEL,
                     (int)(model.len < 64 ? model.len : 64), model.ptr);
        goto fail;
    }
    if ((rc = load_tokens(v, g, ei)))
        goto fail;
    v->spm_split_words = v->kind == TOK_SPM && !space_mark_inside_token(v);
    for (int s = 0; s < S_COUNT; s++)
        if (slot[s] >= v->n)
            slot[s] = TOK_NULL;
    if (v->kind == TOK_BPE &&
        ((rc = load_merges(v, g, ei)) || (rc = tok_pre_open(&v->pre, v, pre.ptr, (size_t)pre.len, ei))))
        goto fail;
    if ((rc = load_specials(v, g, slot, ei)))
        goto fail;
    load_strip_rules(v, g, pre);
    load_byte_tables(v);
    if ((rc = tok_special_build(v))) {
        rc = err_set(ei, rc, "out of memory for the special tokens");
        goto fail;
    }
    *out = v;
    return 0;
fail:
    tok_free(v);
    return rc;
}

void tok_free(tok_vocab *v)
{
    if (!v)
        return;
    tok_special_free(v->special);
    tok_pre_free(v->pre);
    tok_map_free(&v->ranks);
    free(v->merge);
    tok_map_free(&v->ids);
    free(v->attr);
    free(v->score);
    free(v->text);
    free(v);
}

/* ---- accessors ----------------------------------------------------------------------- */

tok_kind tok_kind_of(const tok_vocab *v) { return v->kind; }
int32_t tok_n_vocab(const tok_vocab *v) { return v->n; }
const char *tok_pre_name(const tok_vocab *v) { return v->pre_name; }
int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }
bool tok_adds_bos(const tok_vocab *v) { return v->add_bos; }

static bool valid_id(const tok_vocab *v, int32_t id) { return id >= 0 && id < v->n; }

bool tok_is_eog(const tok_vocab *v, int32_t id) { return valid_id(v, id) && (v->attr[id] & TOK_ATTR_EOG); }

tok_type tok_type_of(const tok_vocab *v, int32_t id)
{
    return valid_id(v, id) ? (tok_type)(v->attr[id] & TOK_ATTR_TYPE) : TOK_TYPE_UNDEFINED;
}

gguf_str tok_text(const tok_vocab *v, int32_t id) { return valid_id(v, id) ? v->text[id] : (gguf_str){"", 0}; }

int32_t tok_find(const tok_vocab *v, const char *text, size_t len)
{
    return len ? tok_map_find(&v->ids, text, len, NULL, 0) : TOK_NULL;
}

/* ---- encoding ------------------------------------------------------------------------ */

/* SPM: spaces become U+2581, and text right after the start or a special token gets one in
 * front when the vocab adds a space prefix. */
static int encode_spm(const tok_vocab *v, tok_work *w, const char *text, size_t n, bool after_special, tok_out *o)
{
    static const char space[3] = {'\xE2', '\x96', '\x81'};
    if (tok_grow(&w->word, &w->word_cap, 3 * n + 3, 1))
        return -ENOMEM;
    size_t k = 0;
    if (v->add_space_prefix && after_special)
        memcpy(w->word, space, 3), k = 3;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ')
            memcpy(w->word + k, space, 3), k += 3;
        else
            w->word[k++] = text[i];
    }
    return tok_merge_spm(v, w, w->word, k, o);
}

/* BPE: pre-tokenize, then merge each pre-token spelled in GPT-2's byte map. */
static int encode_bpe(const tok_vocab *v, tok_work *w, const char *text, size_t n, tok_out *o)
{
    size_t n_words;
    int rc = tok_pre_split(v->pre, w, text, n, &n_words);
    for (size_t i = 0, start = 0; i < n_words && !rc; i++) {
        size_t end = w->cut[0][i], k = 0;
        if (tok_grow(&w->word, &w->word_cap, 2 * (end - start), 1))
            return -ENOMEM;
        for (size_t j = start; j < end; j++) {
            uint8_t b = (uint8_t)text[j];
            memcpy(w->word + k, v->byte_utf8[b], 2);
            k += v->byte_utf8_len[b];
        }
        rc = tok_merge_bpe(v, w, w->word, k, o);
        start = end;
    }
    return rc;
}

int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special, int32_t *out,
               int cap, int *n_out)
{
    *n_out = 0;
    if (cap < 0 || (cap > 0 && !out) || (len > 0 && !text))
        return -EINVAL;
    if (len > (size_t)(INT_MAX - 8) / 3) /* an SPM byte can become 3 byte tokens */
        return -E2BIG;
    tok_out o = {out, cap, 0};
    tok_work w = {0};
    if (add_bos && v->add_bos && v->bos != TOK_NULL)
        tok_emit(&o, v->bos);
    int rc = tok_special_find(v, &w, text, len, parse_special);
    size_t at = 0;
    bool after_special = true; /* the start of the text counts, for SPM's space prefix */
    for (size_t k = 0; k <= w.span_n && !rc; k++) {
        size_t end = k < w.span_n ? w.span[k].start : len;
        if (end > at) {
            rc = v->kind == TOK_SPM ? encode_spm(v, &w, text + at, end - at, after_special, &o)
                                    : encode_bpe(v, &w, text + at, end - at, &o);
            after_special = false;
        }
        if (k < w.span_n) {
            if (w.span[k].id != TOK_NULL) { /* else whitespace a special token stripped */
                tok_emit(&o, w.span[k].id);
                after_special = true;
            }
            at = w.span[k].end;
        }
    }
    if (add_bos && v->add_eos && v->eos != TOK_NULL)
        tok_emit(&o, v->eos);
    tok_work_free(&w);
    *n_out = o.n;
    if (rc)
        return rc;
    return o.n > cap ? -ERANGE : 0;
}

/* ---- decoding ------------------------------------------------------------------------ */

/* Appends s[0..n) at buf[at..] as far as cap allows; returns the new logical length. */
static int put_piece(char *buf, int cap, int at, const char *s, size_t n)
{
    if (at < cap)
        memcpy(buf + at, s, (size_t)(cap - at) < n ? (size_t)(cap - at) : n);
    return at + (int)n;
}

int tok_piece(const tok_vocab *v, int32_t id, bool render_special, char *buf, int cap)
{
    if (!valid_id(v, id))
        return 0;
    gguf_str t = v->text[id];
    int len = 0;
    switch ((tok_type)(v->attr[id] & TOK_ATTR_TYPE)) {
    case TOK_TYPE_CONTROL:
    case TOK_TYPE_UNKNOWN:
        if (!render_special)
            return 0;
        /* fall through */
    case TOK_TYPE_USER_DEFINED:
        return put_piece(buf, cap, 0, t.ptr, t.len);
    case TOK_TYPE_NORMAL:
        for (size_t i = 0; i < t.len;) {
            uint32_t cp;
            int n = utf8_decode(t.ptr + i, t.len - i, &cp);
            if (v->kind == TOK_SPM && cp == 0x2581) {
                len = put_piece(buf, cap, len, " ", 1);
            } else if (v->kind == TOK_BPE && cp < 0x144 && v->cp_byte[cp] >= 0) {
                char b = (char)v->cp_byte[cp];
                len = put_piece(buf, cap, len, &b, 1);
            } else { /* as stored (llama.cpp prints an [UNK_BYTE_..] marker for BPE) */
                len = put_piece(buf, cap, len, t.ptr + i, (size_t)n);
            }
            i += (size_t)n;
        }
        return len;
    case TOK_TYPE_BYTE:
        if (v->kind == TOK_SPM) { /* load_tokens checked the form */
            char b = (char)spm_byte_value(t);
            return put_piece(buf, cap, 0, &b, 1);
        }
        return 0; /* a BPE vocab's byte tokens render as nothing, as in llama.cpp */
    default: /* UNDEFINED, UNUSED: llama.cpp renders nothing */
        return 0;
    }
}

void tok_stream_init(tok_stream *s)
{
    memset(s, 0, sizeof *s);
    s->at_start = true;
}

int tok_stream_push(const tok_vocab *v, tok_stream *s, int32_t id, char *out, int cap)
{
    int held = s->n_held;
    if (cap < held)
        return -ERANGE;
    memcpy(out, s->held, (size_t)held);
    int len = tok_piece(v, id, false, out + held, cap - held);
    if (len > cap - held)
        return -ERANGE;
    if (s->at_start) {
        /* llama.cpp strips one leading space from the first token only (its lstrip) */
        s->at_start = false;
        if (v->add_space_prefix && len > 0 && out[held] == ' ')
            memmove(out + held, out + held + 1, (size_t)--len);
    }
    size_t total = (size_t)(held + len), done = utf8_complete_prefix(out, total);
    s->n_held = (int)(total - done);
    memcpy(s->held, out + done, (size_t)s->n_held);
    /* the released part may still hold bytes no continuation can mend (a lead byte followed
     * by ASCII, a stray continuation byte): they become U+FFFD, so callers get valid UTF-8 */
    long valid = utf8_sanitize(out, done, (size_t)cap);
    return valid < 0 ? -ERANGE : (int)valid;
}

int tok_stream_flush(tok_stream *s, char *out, int cap)
{
    if (s->n_held == 0)
        return 0;
    char rep[4];
    int n = utf8_encode(UTF8_REPLACEMENT, rep);
    if (cap < n)
        return -ERANGE;
    memcpy(out, rep, (size_t)n);
    s->n_held = 0;
    return n;
}
