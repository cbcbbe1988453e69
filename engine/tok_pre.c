/* tok_pre — BPE pre-tokenizers: the regex lists llama.cpp applies before merging, chosen by
 * tokenizer.ggml.pre, run with PCRE2. Each regex in turn splits every current fragment into
 * its matches and the unmatched gaps between them, which stay fragments of their own.
 *
 * llama.cpp does not run these regexes literally: GPT-2's and Llama 3's go through
 * hand-written matchers, the rest through std::regex over a copy of the text in which
 * every non-ASCII whitespace character became U+000B and every other non-ASCII character
 * a stand-in byte for its category. Both use one whitespace set, Unicode's White_Space
 * (Python's regex module \s), so rewrite_regex gives \s that exact meaning (PCRE2's own
 * \s also matches U+180E), and, in a regex without \p{..} categories, keeps non-ASCII
 * whitespace out of explicit character ranges, as the U+000B stand-in does. Categories
 * (\p{L}, \p{N}, \p{P}) come from PCRE2's Unicode tables; they can differ from llama.cpp's
 * only for characters new in a later Unicode version.
 *
 * The compiled regexes are shared read-only by all threads; match data is per call
 * (tok_work). Not here: merging (tok_merge.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "utf8.h"

enum { MAX_REGEX = 6 };

struct tok_pre {
    int n;
    pcre2_code *code[MAX_REGEX];
};

/* The regexes, verbatim from llama.cpp's llm_tokenizer_bpe (llama-vocab.cpp). */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3_HEAD "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_LLAMA3_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK "[一-龥ࠀ-一가-퟿]+"

static const char *const re_gpt2[] = {RE_GPT2, NULL};
static const char *const re_llama3[] = {RE_LLAMA3_HEAD "\\p{N}{1,3}" RE_LLAMA3_TAIL, NULL};
static const char *const re_qwen2[] = {RE_LLAMA3_HEAD "\\p{N}" RE_LLAMA3_TAIL, NULL};
static const char *const re_starcoder[] = {"\\p{N}", RE_GPT2, NULL};
static const char *const re_falcon[] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL};
static const char *const re_default[] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL};
static const char *const re_deepseek_llm[] = {
    "[\r\n]",
    /* six letters are written as escapes: each has a canonically equivalent twin (U+1F7D
     * and U+03CE, U+212A and K, ...) and text tools that normalize Unicode swap them,
     * which turns the ranges around */
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-" "\xE1\xBD\xBD" "ᾀ-ᾴᾶ-ᾼ" "\xE1\xBE\xBE" "ῂ-ῄῆ-ῌῐ-" "\xE1\xBF\x93" "ῖ-" "\xE1\xBF\x9B" "ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ" "\xE2\x84\xA6" "ℨ" "\xE2\x84\xAA" "-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    RE_CJK,
    "\\p{N}+",
    NULL,
};
static const char *const re_deepseek_coder[] = {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}", NULL};

typedef struct family {
    const char *name;            /* what tok_pre_name reports */
    const char *const *regex;    /* NULL-terminated, applied in order */
    bool ignore_merges;          /* a pre-token that is a token is emitted unmerged */
    bool add_bos;                /* default when tokenizer.ggml.add_bos_token is absent */
} family;

static const family fam_gpt2 = {"gpt2", re_gpt2, false, false};
static const family fam_llama3 = {"llama3", re_llama3, true, true};
static const family fam_dbrx = {"dbrx", re_llama3, false, false};
static const family fam_qwen2 = {"qwen2", re_qwen2, false, false};
static const family fam_starcoder = {"starcoder", re_starcoder, false, false};
static const family fam_falcon = {"falcon", re_falcon, false, false};
static const family fam_default = {"default", re_default, false, false};
static const family fam_deepseek_llm = {"deepseek-llm", re_deepseek_llm, false, false};
static const family fam_deepseek_coder = {"deepseek-coder", re_deepseek_coder, false, false};

/* tokenizer.ggml.pre values and their families, as llama.cpp's vocab loader maps them. */
static const struct {
    const char *pre;
    const family *fam;
} pre_names[] = {
    {"", &fam_default}, {"default", &fam_default},
    {"gpt-2", &fam_gpt2}, {"phi-2", &fam_gpt2}, {"jina-es", &fam_gpt2}, {"jina-de", &fam_gpt2},
    {"gigachat", &fam_gpt2}, {"jina-v1-en", &fam_gpt2}, {"jina-v2-es", &fam_gpt2}, {"jina-v2-de", &fam_gpt2},
    {"jina-v2-code", &fam_gpt2}, {"roberta-bpe", &fam_gpt2}, {"mpt", &fam_gpt2}, {"olmo", &fam_gpt2},
    {"jais", &fam_gpt2},
    {"llama3", &fam_llama3}, {"llama-v3", &fam_llama3}, {"llama-bpe", &fam_llama3}, {"falcon3", &fam_llama3},
    {"dbrx", &fam_dbrx}, {"smaug-bpe", &fam_dbrx},
    {"qwen2", &fam_qwen2}, {"stablelm2", &fam_qwen2}, {"megrez", &fam_qwen2},
    {"starcoder", &fam_starcoder}, {"refact", &fam_starcoder}, {"command-r", &fam_starcoder},
    {"smollm", &fam_starcoder}, {"codeshell", &fam_starcoder}, {"exaone", &fam_starcoder},
    {"minerva-7b", &fam_starcoder},
    {"falcon", &fam_falcon},
    {"deepseek-llm", &fam_deepseek_llm},
    {"deepseek-coder", &fam_deepseek_coder},
};

/* Unicode White_Space, which is what \s means to llama.cpp (Python's regex module). */
static const uint32_t white_space[][2] = {
    {0x09, 0x0D}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
    {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};
enum { N_WHITE_SPACE = sizeof white_space / sizeof white_space[0] };

typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static int put(strbuf *b, const char *s, size_t n)
{
    if (tok_grow(&b->p, &b->cap, b->n + n + 1, 1))
        return -ENOMEM;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int puts_(strbuf *b, const char *s) { return put(b, s, strlen(s)); }

/* Appends [lo, hi] as class items. */
static int put_range(strbuf *b, uint32_t lo, uint32_t hi)
{
    char item[40];
    int n = lo == hi ? snprintf(item, sizeof item, "\\x{%X}", lo) : snprintf(item, sizeof item, "\\x{%X}-\\x{%X}", lo, hi);
    return put(b, item, (size_t)n);
}

/* Appends [lo, hi] less the White_Space code points from first_ws on. */
static int put_range_without_ws(strbuf *b, uint32_t lo, uint32_t hi, int first_ws)
{
    int rc = 0;
    for (int k = first_ws; k < N_WHITE_SPACE && lo <= hi && !rc; k++) {
        if (white_space[k][1] < lo)
            continue;
        if (white_space[k][0] > hi)
            break;
        if (white_space[k][0] > lo)
            rc = put_range(b, lo, white_space[k][0] - 1);
        lo = white_space[k][1] + 1;
    }
    return !rc && lo <= hi ? put_range(b, lo, hi) : rc;
}

/* Reads one class member at re[*i] (a UTF-8 character or a one-character escape such as
 * \r or \$) into *cp and moves past it. */
static int class_atom(const char *re, size_t len, size_t *i, uint32_t *cp)
{
    if (re[*i] != '\\') {
        *i += (size_t)utf8_decode(re + *i, len - *i, cp);
        return 0;
    }
    if (*i + 1 >= len)
        return -EINVAL;
    char c = re[*i + 1];
    *i += 2;
    if (c == 'r' || c == 'n' || c == 't') {
        *cp = c == 'r' ? '\r' : c == 'n' ? '\n' : '\t';
        return 0;
    }
    *cp = (uint8_t)c;
    /* \s, \d, \x.. and the like are not single characters; none occurs here */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ? -EINVAL : 0;
}

/* Rewrites the positive class re[open..close] (brackets included) as code point ranges
 * without the non-ASCII White_Space characters, which in llama.cpp's std::wregex path have
 * been replaced by U+000B before matching and so never match an explicit range. */
static int put_class_without_ws(strbuf *b, const char *re, size_t len, size_t open, size_t close)
{
    int first_non_ascii = 0;
    while (white_space[first_non_ascii][0] < 0x80)
        first_non_ascii++;
    int rc = put(b, "[", 1);
    for (size_t i = open + 1; i < close && !rc;) {
        uint32_t lo, hi;
        if ((rc = class_atom(re, len, &i, &lo)))
            break;
        hi = lo;
        if (i + 1 < close && re[i] == '-') {
            i++;
            if ((rc = class_atom(re, len, &i, &hi)))
                break;
        }
        rc = put_range_without_ws(b, lo, hi, first_non_ascii);
    }
    return rc ? rc : put(b, "]", 1);
}

/* Appends White_Space as class items (inside brackets already), or as a class. */
static int put_white_space(strbuf *b, const char *open, const char *close)
{
    int rc = puts_(b, open);
    for (int k = 0; k < N_WHITE_SPACE && !rc; k++)
        rc = put_range(b, white_space[k][0], white_space[k][1]);
    return rc ? rc : puts_(b, close);
}

/* Offset of the ']' closing the class opened at re[open], or len if unterminated. */
static size_t class_end(const char *re, size_t len, size_t open)
{
    size_t i = open + 1;
    if (i < len && re[i] == '^')
        i++;
    if (i < len && re[i] == ']')
        i++; /* a leading ']' is a literal */
    for (; i < len && re[i] != ']'; i++)
        if (re[i] == '\\')
            i++;
    return i;
}

/* Rewrites a regex of llama.cpp's dialect into PCRE2 syntax with the same meaning (see the
 * file comment). Returns 0 or a negative code; b->p is the result. */
static int rewrite_regex(const char *re, strbuf *b)
{
    size_t len = strlen(re);
    /* llama.cpp takes a regex with a category down the collapsed path, one without it down
     * the std::wregex path where non-ASCII whitespace only matches \s */
    bool wide = !strstr(re, "\\p{L}") && !strstr(re, "\\p{N}") && !strstr(re, "\\p{P}");
    bool inside = false;
    size_t close = 0;
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        if (!inside && re[i] == '[') {
            close = class_end(re, len, i);
            if (close >= len)
                return -EINVAL;
            if (wide && re[i + 1] != '^') {
                rc = put_class_without_ws(b, re, len, i, close);
                i = close;
                continue;
            }
            inside = true;
            rc = put(b, "[", 1);
            continue;
        }
        if (inside && i == close) {
            inside = false;
            rc = put(b, "]", 1);
            continue;
        }
        if (re[i] == '\\' && i + 1 < len && (re[i + 1] == 's' || re[i + 1] == 'S')) {
            if (inside && re[i + 1] == 'S')
                return -EINVAL; /* no class in llama.cpp's lists holds \S */
            rc = inside ? put_white_space(b, "", "") : put_white_space(b, re[i + 1] == 's' ? "[" : "[^", "]");
            i++;
            continue;
        }
        if (re[i] == '\\' && i + 1 < len) {
            rc = put(b, re + i, 2);
            i++;
            continue;
        }
        rc = put(b, re + i, 1);
    }
    return rc;
}

static int compile(const family *fam, int i, pcre2_code **out, err_info *ei)
{
    strbuf b = {0};
    int rc = rewrite_regex(fam->regex[i], &b);
    if (rc) {
        free(b.p);
        return err_set(ei, rc, "pre-tokenizer '%s': regex %d could not be rewritten", fam->name, i);
    }
    int code;
    PCRE2_SIZE at;
    /* MATCH_INVALID_UTF: malformed input (which llama.cpp refuses by throwing) is never
     * matched and so ends up in gap fragments; DOLLAR_ENDONLY: '$' is the end of the
     * fragment, as in ECMAScript, not also before a final newline */
    *out = pcre2_compile((PCRE2_SPTR)b.p, b.n, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY,
                         &code, &at, NULL);
    free(b.p);
    if (!*out) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(code, msg, sizeof msg);
        return err_set(ei, -ERR_UNSUPPORTED, "pre-tokenizer '%s': regex %d: %s at offset %zu", fam->name, i,
                       (const char *)msg, (size_t)at);
    }
    /* JIT is several times faster; without it (unsupported CPU, no executable memory)
     * the interpreter gives the same matches */
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);
    return 0;
}

int tok_pre_open(tok_pre **out, tok_vocab *v, const char *name, size_t len, err_info *ei)
{
    *out = NULL;
    const family *fam = NULL;
    for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0] && !fam; i++)
        if (strlen(pre_names[i].pre) == len && memcmp(pre_names[i].pre, name, len) == 0)
            fam = pre_names[i].fam;
    if (!fam)
        return err_set(ei, -ERR_UNSUPPORTED, "tokenizer.ggml.pre '%.*s' is not a supported pre-tokenizer",
                       (int)(len < 64 ? len : 64), name);
    tok_pre *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(ei, -ENOMEM, "out of memory");
    for (; fam->regex[p->n]; p->n++) {
        int rc = compile(fam, p->n, &p->code[p->n], ei);
        if (rc) {
            tok_pre_free(p);
            return rc;
        }
    }
    v->pre_name = fam->name;
    v->ignore_merges = fam->ignore_merges;
    v->add_bos = fam->add_bos;
    *out = p;
    return 0;
}

void tok_pre_free(tok_pre *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        pcre2_code_free(p->code[i]);
    free(p);
}

static int push_cut(tok_work *w, size_t *n, size_t end)
{
    if (tok_grow(&w->cut[1], &w->cut_cap[1], *n + 1, sizeof *w->cut[1]))
        return -ENOMEM;
    w->cut[1][(*n)++] = end;
    return 0;
}

/* Splits text[start, end) by one regex into matches and gaps, appending their ends to
 * w->cut[1]. */
static int split_fragment(const pcre2_code *code, tok_work *w, const char *text, size_t start, size_t end,
                          size_t *n_next)
{
    PCRE2_SPTR subject = (PCRE2_SPTR)text + start;
    size_t len = end - start, search = 0, gap = 0;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
    int rc = 0;
    while (search < len && !rc) {
        int m = pcre2_match(code, subject, len, search, 0, w->md, NULL);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m < 0) /* a match, depth or heap limit on pathological input */
            return m == PCRE2_ERROR_NOMEMORY ? -ENOMEM : -ERR_RANGE;
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* none of the lists can match empty; step over it all the same */
            search = ms + 1;
            while (search < len && (subject[search] & 0xC0) == 0x80)
                search++;
            continue;
        }
        if (ms > gap)
            rc = push_cut(w, n_next, start + ms);
        if (!rc)
            rc = push_cut(w, n_next, start + me);
        gap = search = me;
    }
    if (!rc && gap < len)
        rc = push_cut(w, n_next, end);
    return rc;
}

int tok_pre_split(const tok_pre *p, tok_work *w, const char *text, size_t n, size_t *n_words)
{
    if (!w->md && !(w->md = pcre2_match_data_create(1, NULL)))
        return -ENOMEM;
    if (tok_grow(&w->cut[0], &w->cut_cap[0], 1, sizeof *w->cut[0]))
        return -ENOMEM;
    w->cut[0][0] = n;
    size_t n_cur = n ? 1 : 0;
    for (int r = 0; r < p->n; r++) {
        size_t n_next = 0, start = 0;
        for (size_t i = 0; i < n_cur; i++) {
            int rc = split_fragment(p->code[r], w, text, start, w->cut[0][i], &n_next);
            if (rc)
                return rc;
            start = w->cut[0][i];
        }
        size_t *t = w->cut[0], tc = w->cut_cap[0];
        w->cut[0] = w->cut[1], w->cut_cap[0] = w->cut_cap[1];
        w->cut[1] = t, w->cut_cap[1] = tc;
        n_cur = n_next;
    }
    *n_words = n_cur;
    return 0;
}
