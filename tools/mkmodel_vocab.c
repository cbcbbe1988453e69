/* mkmodel_vocab — the built-in tokenizer of synthetic models (see mkmodel.h): GPT-2-style
 * byte-level BPE whose merges are learned here, at run time, from a short English sample,
 * so text costs a few bytes per token instead of one token per byte.
 *
 * Learning is ordinary BPE training: split the sample into pre-tokens roughly as GPT-2's
 * regex does (merges never cross pre-token boundaries, so ones that did would be dead),
 * then repeatedly merge the most frequent adjacent pair; ties go to the lowest pair of ids,
 * which makes the vocab the same on every run and machine.
 *
 * Not a general tokenizer trainer, and not the tokenizer: engine/tok.c reads the result. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/utf8.h"
#include "tools/mkmodel.h"

enum { MAX_MERGES = 400, TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_UNUSED = 5 };

static const char sample_text[] =
    "Once upon a time there was a little town at the edge of a forest. The people who lived there "
    "were farmers and makers, and every morning they walked to the market with bread, apples and "
    "wool. One day a traveller came to the town and asked the children what they wanted to learn. "
    "\"We want to know how the river finds its way to the sea,\" said the oldest girl. The traveller "
    "smiled, because she had asked the same question when she was young.\n"
    "It is not hard to see why small computers are everywhere now. A gateway in a factory reads "
    "the sensors, sends the important numbers to the cloud, and keeps working when the network is "
    "down. It should answer quickly, use little memory, and never stop for long. When a question "
    "arrives, the model reads the prompt, thinks about each word in turn, and writes its answer one "
    "token at a time.\n"
    "The weather was warm in the morning and cold in the evening. She opened the window, looked at "
    "the mountains, and wrote a long letter to her brother. He had moved to the city three years "
    "ago, and he was working for a company that built bridges and roads. In his last letter he said "
    "that he would come home for the summer, and that he would bring his friends with him.\n"
    "What is the capital of France? Paris is the capital and the largest city of France. How many "
    "days are there in a week? There are seven days in a week, and twelve months in a year. Can you "
    "tell me a story about a dog and a cat? The dog and the cat were good friends, and they played "
    "together in the garden every afternoon until the sun went down.\n"
    "You are a helpful assistant. Please answer the question below in a few sentences, and explain "
    "your reasoning. If you do not know the answer, say that you do not know. Thank you for your "
    "help, and have a nice day.\n"
    "The system starts when the machine is powered on. It loads the model from the disk into memory, "
    "checks that every file is complete, and then waits for requests. Each request is placed in a "
    "queue, and the worker takes them one at a time. If the queue is full, the server tells the client "
    "to try again later. If the model cannot answer in time, the request can be sent to a larger "
    "model in the cloud, and the answer comes back through the same connection.\n"
    "In the spring the farmers planted their fields, and in the autumn they brought the harvest into "
    "the barns. The children went to school in the village, where they learned to read and write, to "
    "count, and to draw maps of the country. Their teacher was an old man with a long white beard, who "
    "had travelled all over the world when he was young. He told them about the cities he had seen, "
    "the people he had met, and the languages they spoke.\n"
    "Science is the study of the natural world through observation and experiment. Scientists ask "
    "questions, make predictions, and test them carefully. When the results do not match the "
    "prediction, they change the theory and try again. This simple process has given us medicine, "
    "electricity, computers, and a better understanding of our place in the universe.\n";

static const char chatml_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};

/* A list of strings kept back to back in one buffer. */
typedef struct strlist {
    char *buf;
    size_t used, cap;
    size_t *off;       /* n offsets into buf */
    uint64_t *len;     /* n lengths */
    size_t n, cap_n;
} strlist;

/* Appends a + sep + b (sep may be 0 for none). */
static int strlist_add(strlist *l, const char *a, size_t alen, char sep, const char *b, size_t blen)
{
    size_t need = alen + (sep != 0) + blen;
    if (l->cap - l->used < need) {
        size_t cap = l->cap ? l->cap : 4096;
        while (cap - l->used < need)
            cap *= 2;
        char *p = realloc(l->buf, cap);
        if (!p)
            return -ENOMEM;
        l->buf = p;
        l->cap = cap;
    }
    if (l->n == l->cap_n) {
        size_t cap_n = l->cap_n ? 2 * l->cap_n : 1024;
        size_t *off = realloc(l->off, cap_n * sizeof *off);
        if (!off)
            return -ENOMEM;
        l->off = off;
        uint64_t *len = realloc(l->len, cap_n * sizeof *len);
        if (!len)
            return -ENOMEM;
        l->len = len;
        l->cap_n = cap_n;
    }
    char *dst = l->buf + l->used;
    memcpy(dst, a, alen);
    if (sep)
        dst[alen] = sep;
    memcpy(dst + alen + (sep != 0), b, blen);
    l->off[l->n] = l->used;
    l->len[l->n++] = need;
    l->used += need;
    return 0;
}

static const char *strlist_at(const strlist *l, size_t i) { return l->buf + l->off[i]; }

static void strlist_free(strlist *l)
{
    free(l->buf);
    free(l->off);
    free(l->len);
}

/* Index of the string s[0..len) in l, or -1. */
static int32_t strlist_find(const strlist *l, const char *s, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->len[i] == len && memcmp(strlist_at(l, i), s, len) == 0)
            return (int32_t)i;
    return -1;
}

/* Stores the whole list into w under key. */
static int strlist_set(gguf_writer *w, const char *key, const strlist *l)
{
    const char **ptrs = malloc((l->n ? l->n : 1) * sizeof *ptrs);
    if (!ptrs)
        return -ENOMEM;
    for (size_t i = 0; i < l->n; i++)
        ptrs[i] = strlist_at(l, i);
    int rc = gguf_writer_set_arr_str(w, key, l->n, ptrs, l->len);
    free(ptrs);
    return rc;
}

/* ---- training ---------------------------------------------------------------------- */

/* One distinct pre-token of the sample: how often it occurs and its current split. */
typedef struct word {
    const char *text;
    size_t len;
    int count;
    int32_t ids[64];
    int n;
} word;

static bool is_letter(char c) { return isalpha((unsigned char)c); }
static bool is_digit(char c) { return isdigit((unsigned char)c); }
static bool is_space(char c) { return isspace((unsigned char)c); }

/* Length of the pre-token at s, approximating GPT-2's
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ on ASCII. */
static size_t pretoken_len(const char *s, size_t n)
{
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    for (size_t k = 0; k < sizeof contractions / sizeof contractions[0]; k++) {
        size_t cl = strlen(contractions[k]);
        if (cl <= n && memcmp(s, contractions[k], cl) == 0)
            return cl;
    }
    size_t i = (s[0] == ' ' && n > 1 && !is_space(s[1])) ? 1 : 0;
    if (is_space(s[i])) { /* a whitespace run leaves its last char to a following word */
        size_t j = i;
        while (j < n && is_space(s[j]))
            j++;
        return (j < n && j - i > 1) ? j - 1 : j;
    }
    bool (*same)(char) = is_letter(s[i]) ? is_letter : is_digit(s[i]) ? is_digit : NULL;
    size_t j = i + 1;
    while (j < n && (same ? same(s[j]) : !is_space(s[j]) && !is_letter(s[j]) && !is_digit(s[j])))
        j++;
    return j;
}

/* Splits the sample into distinct words, each spelled as byte tokens (id = byte value). */
static int split_sample(word **out, size_t *n_out)
{
    size_t n_text = sizeof sample_text - 1, n = 0;
    word *words = calloc(n_text, sizeof *words); /* never more words than bytes */
    if (!words)
        return -ENOMEM;
    for (size_t pos = 0; pos < n_text;) {
        size_t len = pretoken_len(sample_text + pos, n_text - pos);
        const char *text = sample_text + pos;
        pos += len;
        size_t i = 0;
        while (i < n && !(words[i].len == len && memcmp(words[i].text, text, len) == 0))
            i++;
        if (i == n) {
            if (len > sizeof words[i].ids / sizeof words[i].ids[0])
                continue; /* no word of the sample is this long; skipping one is harmless */
            words[n++] = (word){.text = text, .len = len};
            for (size_t k = 0; k < len; k++)
                words[i].ids[k] = (uint8_t)text[k];
            words[i].n = (int)len;
        }
        words[i].count++;
    }
    *out = words;
    *n_out = n;
    return 0;
}

typedef struct pair_count {
    int32_t left, right;
    int count;
} pair_count;

static int cmp_pair(const void *a, const void *b)
{
    const pair_count *x = a, *y = b;
    if (x->left != y->left)
        return x->left < y->left ? -1 : 1;
    return (x->right > y->right) - (x->right < y->right);
}

/* The most frequent adjacent pair over all words (ties: lowest ids). scratch holds room
 * for every adjacent pair. */
static pair_count best_pair(const word *words, size_t n_words, pair_count *scratch)
{
    size_t n = 0;
    for (size_t i = 0; i < n_words; i++)
        for (int k = 0; k + 1 < words[i].n; k++)
            scratch[n++] = (pair_count){words[i].ids[k], words[i].ids[k + 1], words[i].count};
    qsort(scratch, n, sizeof *scratch, cmp_pair);
    pair_count best = {-1, -1, 0};
    for (size_t i = 0; i < n;) {
        pair_count sum = scratch[i++];
        while (i < n && cmp_pair(&scratch[i], &sum) == 0)
            sum.count += scratch[i++].count;
        if (sum.count > best.count)
            best = sum;
    }
    return best;
}

static void apply_merge(word *words, size_t n_words, pair_count p, int32_t id)
{
    for (size_t i = 0; i < n_words; i++) {
        word *w = &words[i];
        int out = 0;
        for (int k = 0; k < w->n; k++) {
            if (k + 1 < w->n && w->ids[k] == p.left && w->ids[k + 1] == p.right) {
                w->ids[out++] = id;
                k++;
            } else {
                w->ids[out++] = w->ids[k];
            }
        }
        w->n = out;
    }
}

/* Fills tokens with the 256 byte tokens plus the learned ones, merges with "left right". */
static int learn(strlist *tokens, strlist *merges)
{
    word *words = NULL;
    size_t n_words = 0;
    pair_count *scratch = malloc(sizeof sample_text * sizeof *scratch);
    int rc = scratch ? split_sample(&words, &n_words) : -ENOMEM;
    for (int b = 0; b < 256 && !rc; b++) {
        char u[4];
        rc = strlist_add(tokens, u, (size_t)utf8_encode(utf8_byte_to_cp((uint8_t)b), u), 0, "", 0);
    }
    for (int m = 0; m < MAX_MERGES && !rc; m++) {
        pair_count p = best_pair(words, n_words, scratch);
        if (p.count < 2)
            break;
        size_t ll = tokens->len[p.left], rl = tokens->len[p.right];
        char *joined = malloc(ll + rl);
        if (!joined) {
            rc = -ENOMEM;
            break;
        }
        memcpy(joined, strlist_at(tokens, (size_t)p.left), ll);
        memcpy(joined + ll, strlist_at(tokens, (size_t)p.right), rl);
        rc = strlist_add(merges, joined, ll, ' ', joined + ll, rl);
        /* the joined text may already be a token reached by another split: reuse it */
        int32_t id = strlist_find(tokens, joined, ll + rl);
        if (id < 0 && !rc) {
            id = (int32_t)tokens->n;
            rc = strlist_add(tokens, joined, ll + rl, 0, "", 0);
        }
        free(joined);
        if (!rc)
            apply_merge(words, n_words, p, id);
    }
    free(words);
    free(scratch);
    return rc;
}

int mkmodel_vocab_builtin(gguf_writer *w, int64_t pad_to, int64_t *n_tokens, err_info *ei)
{
    strlist tokens = {0}, merges = {0};
    int32_t *types = NULL;
    int rc = learn(&tokens, &merges);
    size_t n_learned = tokens.n;
    uint32_t first_special = (uint32_t)tokens.n;
    for (size_t i = 0; i < sizeof specials / sizeof specials[0] && !rc; i++)
        rc = strlist_add(&tokens, specials[i], strlen(specials[i]), 0, "", 0);
    for (int64_t u = 0; (int64_t)tokens.n < pad_to && !rc; u++) {
        char name[32];
        int len = snprintf(name, sizeof name, "<unused_%lld>", (long long)u);
        rc = strlist_add(&tokens, name, (size_t)len, 0, "", 0);
    }
    if (rc || !(types = malloc(tokens.n * sizeof *types))) {
        rc = err_set(ei, -ENOMEM, "out of memory building the built-in vocab");
        goto done;
    }
    uint32_t n_special = sizeof specials / sizeof specials[0];
    for (size_t i = 0; i < tokens.n; i++)
        types[i] = i < n_learned ? TOKEN_NORMAL : i < first_special + n_special ? TOKEN_CONTROL : TOKEN_UNUSED;
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    if ((rc = strlist_set(w, "tokenizer.ggml.tokens", &tokens)) || (rc = strlist_set(w, "tokenizer.ggml.merges", &merges))) {
        rc = err_set(ei, rc, "cannot store the built-in vocab");
        goto done;
    }
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, tokens.n, types);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", first_special);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", first_special);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    /* the writer's errors are sticky: the last call returns the first failure */
    if ((rc = gguf_writer_set_str(w, "tokenizer.chat_template", chatml_template)))
        rc = err_set(ei, rc, "cannot store the built-in vocab");
    *n_tokens = (int64_t)tokens.n;
done:
    free(types);
    strlist_free(&tokens);
    strlist_free(&merges);
    return rc;
}
