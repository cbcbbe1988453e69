/* chat — see chat.h. Recognises a chat template by distinctive substrings and renders
 * messages by a table that spells out, per family, the text around each kind of turn.
 * The renderings follow each family's official Jinja template (as transformers renders it);
 * where the template cannot express something (a system message for Gemma or Mistral) we
 * do what llama.cpp does. This is not a Jinja interpreter and does not try to be one.
 *
 * Deliberate differences from an official template, all shared with llama.cpp:
 * - ChatML: Qwen2.5's template inserts "You are Qwen, created by Alibaba Cloud. You are a
 *   helpful assistant." when no system message is given; we never invent a system prompt.
 * - Llama 3.1+: the template adds a "Cutting Knowledge Date" preamble to the system turn;
 *   we render the plain Llama 3 format.
 * - Phi-3-mini's first template drops system messages; we keep them as a <|system|> turn,
 *   as Phi-3's later templates do.
 * - Zephyr turns end with the template's eos_token, which we write as "</s>" (Zephyr 7B,
 *   TinyLlama chat): the template text does not say what its eos_token is.
 * - Mistral v0.1/v0.2 GGUFs converted before Mistral fixed their templates carry the old
 *   "[INST] ...[/INST]answer" spacing; we render Mistral's corrected v1 spacing for them. */
#include "chat.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { STRIP_USER = 1, STRIP_ASSISTANT = 2, STRIP_SYSTEM = 4 };

/* How one family lays out a conversation. Strings are written verbatim. */
typedef struct family_spec {
    const char *name;
    const char *turn_end;                /* chat_turn_end */
    /* NULL sys_open: no system turn; system text goes into a user turn as
     * merged_open + text + merged_close, ahead of the user's own content. */
    const char *sys_open, *sys_close;
    const char *merged_open, *merged_close;
    const char *user_open, *user_close;
    const char *asst_open, *asst_close;
    const char *bos_between;             /* before each user turn except at the very start
                                          * (Llama 2 puts bos_token before every [INST]) */
    const char *gen_prompt;              /* written for add_assistant */
    unsigned strip;                      /* STRIP_*: turn bodies are str.strip()'d */
    int sys_in_last_user;                /* merged system text goes to the last user turn */
} family_spec;

static const family_spec specs[CHAT_FAMILY_COUNT] = {
    [CHAT_CHATML] = {
        .name = "chatml", .turn_end = "<|im_end|>",
        .sys_open = "<|im_start|>system\n", .sys_close = "<|im_end|>\n",
        .user_open = "<|im_start|>user\n", .user_close = "<|im_end|>\n",
        .asst_open = "<|im_start|>assistant\n", .asst_close = "<|im_end|>\n",
        .gen_prompt = "<|im_start|>assistant\n",
    },
    [CHAT_LLAMA2] = {
        /* Llama-2-chat: bos + "[INST] " + strip(<<SYS>> block + user) + " [/INST]",
         * then " " + strip(answer) + " " + eos. */
        .name = "llama2", .turn_end = "</s>",
        .merged_open = "<<SYS>>\n", .merged_close = "\n<</SYS>>\n\n",
        .user_open = "[INST] ", .user_close = " [/INST]",
        .asst_open = " ", .asst_close = " </s>",
        .bos_between = "<s>", .gen_prompt = "",
        .strip = STRIP_USER | STRIP_ASSISTANT,
    },
    [CHAT_LLAMA3] = {
        .name = "llama3", .turn_end = "<|eot_id|>",
        .sys_open = "<|start_header_id|>system<|end_header_id|>\n\n", .sys_close = "<|eot_id|>",
        .user_open = "<|start_header_id|>user<|end_header_id|>\n\n", .user_close = "<|eot_id|>",
        .asst_open = "<|start_header_id|>assistant<|end_header_id|>\n\n", .asst_close = "<|eot_id|>",
        .gen_prompt = "<|start_header_id|>assistant<|end_header_id|>\n\n",
        .strip = STRIP_USER | STRIP_ASSISTANT | STRIP_SYSTEM,
    },
    [CHAT_MISTRAL] = {
        /* Mistral's v1 template: the system message leads the first user message. */
        .name = "mistral", .turn_end = "</s>",
        .merged_open = "", .merged_close = "\n\n",
        .user_open = " [INST] ", .user_close = " [/INST]",
        .asst_open = " ", .asst_close = "</s>",
        .gen_prompt = "",
    },
    [CHAT_ZEPHYR] = {
        .name = "zephyr", .turn_end = "</s>",
        .sys_open = "<|system|>\n", .sys_close = "</s>\n",
        .user_open = "<|user|>\n", .user_close = "</s>\n",
        .asst_open = "<|assistant|>\n", .asst_close = "</s>\n",
        .gen_prompt = "<|assistant|>\n",
    },
    [CHAT_PHI3] = {
        .name = "phi3", .turn_end = "<|end|>",
        .sys_open = "<|system|>\n", .sys_close = "<|end|>\n",
        .user_open = "<|user|>\n", .user_close = "<|end|>\n",
        .asst_open = "<|assistant|>\n", .asst_close = "<|end|>\n",
        .gen_prompt = "<|assistant|>\n",
    },
    [CHAT_GEMMA] = {
        /* No system role (the template raises); llama.cpp's fallback: system text, a blank
         * line, then the user's message, all in the user turn. */
        .name = "gemma", .turn_end = "<end_of_turn>",
        .merged_open = "", .merged_close = "\n\n",
        .user_open = "<start_of_turn>user\n", .user_close = "<end_of_turn>\n",
        .asst_open = "<start_of_turn>model\n", .asst_close = "<end_of_turn>\n",
        .gen_prompt = "<start_of_turn>model\n",
        .strip = STRIP_USER | STRIP_ASSISTANT,
    },
    [CHAT_MISTRAL_V3] = {
        /* Mistral's v3 template puts the system message in the last user message. */
        .name = "mistral-v3", .turn_end = "</s>",
        .merged_open = "", .merged_close = "\n\n",
        .user_open = "[INST] ", .user_close = "[/INST]",
        .asst_open = " ", .asst_close = "</s>",
        .gen_prompt = "",
        .strip = STRIP_ASSISTANT, .sys_in_last_user = 1,
    },
    [CHAT_MISTRAL_V3_TEKKEN] = {
        .name = "mistral-v3-tekken", .turn_end = "</s>",
        .merged_open = "", .merged_close = "\n\n",
        .user_open = "[INST]", .user_close = "[/INST]",
        .asst_open = "", .asst_close = "</s>",
        .gen_prompt = "",
        .sys_in_last_user = 1,
    },
};

/* ---- detection ------------------------------------------------------------------------ */

/* First match wins, so a template that contains another family's marker is listed before
 * that family. Rules mapping to CHAT_UNKNOWN catch look-alikes we cannot render right
 * (rendering them as the look-alike would silently produce a wrong prompt). */
static const struct detect_rule {
    const char *needle;
    const char *also;      /* must be present too, or NULL */
    chat_family family;
} detect_rules[] = {
    {"<|im_sep|>", NULL, CHAT_UNKNOWN},               /* Phi-4: ChatML tags plus a separator */
    {"<end_of_utterance>", NULL, CHAT_UNKNOWN},       /* SmolVLM: <|im_start|> is its BOS */
    {"<|im_start|>", NULL, CHAT_CHATML},
    {"<|start_header_id|>", "<|end_header_id|>", CHAT_LLAMA3},
    {"[SYSTEM_PROMPT]", NULL, CHAT_UNKNOWN},          /* Mistral v7: its own system tags */
    {"<<SYS>>", "[INST]", CHAT_LLAMA2},
    /* Among the Mistral templates the spacing inside the string literals tells the
     * tokenizer version: "[INST]" + content is Tekken, content + "[/INST]" is v3. */
    {"[INST]'", NULL, CHAT_MISTRAL_V3_TEKKEN},
    {"[INST]\"", NULL, CHAT_MISTRAL_V3_TEKKEN},
    {"'[/INST]'", NULL, CHAT_MISTRAL_V3},
    {"\"[/INST]\"", NULL, CHAT_MISTRAL_V3},
    {"[INST]", NULL, CHAT_MISTRAL},
    {"[gMASK]", NULL, CHAT_UNKNOWN},                  /* ChatGLM: also uses <|user|> */
    {"<|user|>", "<|end|>", CHAT_PHI3},
    {"<|user|>", NULL, CHAT_ZEPHYR},
    {"<start_of_turn>", NULL, CHAT_GEMMA},
};

static int contains(const char *text, size_t len, const char *needle)
{
    return memmem(text, len, needle, strlen(needle)) != NULL;
}

chat_family chat_detect(const char *template_text, size_t len)
{
    if (!template_text)
        return CHAT_UNKNOWN;
    for (size_t i = 0; i < sizeof detect_rules / sizeof detect_rules[0]; i++) {
        const struct detect_rule *r = &detect_rules[i];
        if (contains(template_text, len, r->needle) && (!r->also || contains(template_text, len, r->also)))
            return r->family;
    }
    return CHAT_UNKNOWN;
}

const char *chat_family_name(chat_family f)
{
    if (f <= CHAT_UNKNOWN || f >= CHAT_FAMILY_COUNT)
        return "unknown";
    return specs[f].name;
}

chat_family chat_family_from_name(const char *name)
{
    if (!name)
        return CHAT_UNKNOWN;
    for (int f = CHAT_UNKNOWN + 1; f < CHAT_FAMILY_COUNT; f++)
        if (strcmp(name, specs[f].name) == 0)
            return (chat_family)f;
    return CHAT_UNKNOWN;
}

const char *chat_turn_end(chat_family f)
{
    if (f <= CHAT_UNKNOWN || f >= CHAT_FAMILY_COUNT)
        return "";
    return specs[f].turn_end;
}

/* ---- rendering ------------------------------------------------------------------------ */

/* Rendering runs twice over the same messages: first with buf == NULL to count bytes (an
 * upper bound: stripping only happens on the second run), then into one allocation. */
typedef struct writer {
    char *buf;
    size_t len;
    int overflow;
} writer;

static void put(writer *w, const char *s)
{
    size_t n = strlen(s), end;
    if (__builtin_add_overflow(w->len, n, &end)) {
        w->overflow = 1;
        return;
    }
    if (w->buf)
        memcpy(w->buf + w->len, s, n);
    w->len = end;
}

/* Bytes of the whitespace character at s (n bytes available), or 0. The set is Python's
 * str.isspace(), which Jinja's trim and str.strip() in the templates use. */
static size_t space_at(const unsigned char *s, size_t n)
{
    if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x20)))
        return 1;
    if (n >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0))  /* U+0085, U+00A0 */
        return 2;
    if (n < 3)
        return 0;
    if (s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80)              /* U+1680 */
        return 3;
    if (s[0] == 0xe2 && s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8a) || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
        return 3;                                                  /* U+2000-200A, 2028, 2029, 202F */
    if (s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f)              /* U+205F */
        return 3;
    if (s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80)              /* U+3000 */
        return 3;
    return 0;
}

/* str.strip() of what was written since mark. */
static void strip_since(writer *w, size_t mark)
{
    if (!w->buf)
        return;
    unsigned char *b = (unsigned char *)w->buf;
    for (;;) {
        size_t k = 1;
        while (k <= 3 && !(w->len - mark >= k && space_at(b + w->len - k, k) == k))
            k++;
        if (k > 3)
            break;
        w->len -= k;
    }
    size_t lead = 0, k;
    while ((k = space_at(b + mark + lead, w->len - mark - lead)) > 0)
        lead += k;
    memmove(b + mark, b + mark + lead, w->len - mark - lead);
    w->len -= lead;
}

typedef enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT } role;

static int role_of(const chat_msg *m, role *out)
{
    static const char *const names[] = {"system", "user", "assistant"};
    for (int r = 0; r < 3; r++)
        if (strcmp(m->role, names[r]) == 0) {
            *out = (role)r;
            return 0;
        }
    return -1;
}

/* One turn: open + body + close, the body stripped when asked. */
static void put_turn(writer *w, const char *open, const char *body, const char *close, int strip)
{
    put(w, open);
    size_t mark = w->len;
    put(w, body);
    if (strip)
        strip_since(w, mark);
    put(w, close);
}

/* A user turn of a family without a system turn: the system messages among msgs[lo, hi)
 * lead the user's content (which may be NULL when the turn only carries system text). */
static void put_merged_user_turn(writer *w, const family_spec *sp, const chat_msg *msgs,
                                 const role *roles, size_t lo, size_t hi, const char *content)
{
    put(w, sp->user_open);
    size_t mark = w->len;
    int any = 0;
    for (size_t j = lo; j < hi; j++) {
        if (roles[j] != ROLE_SYSTEM)
            continue;
        put(w, any ? "\n\n" : sp->merged_open);
        put(w, msgs[j].content);
        any = 1;
    }
    if (any)
        put(w, sp->merged_close);
    if (content)
        put(w, content);
    if (sp->strip & STRIP_USER)
        strip_since(w, mark);
    put(w, sp->user_close);
}

static void render(writer *w, const family_spec *sp, const chat_msg *msgs, const role *roles,
                   size_t n, bool add_assistant)
{
    int merged = sp->sys_open == NULL;
    size_t last_user = n;  /* n: none */
    for (size_t i = 0; i < n; i++)
        if (roles[i] == ROLE_USER)
            last_user = i;

    size_t sys_from = 0;   /* merged system messages not yet placed start here */
    int started = 0;
    for (size_t i = 0; i < n; i++) {
        const char *content = msgs[i].content;
        switch (roles[i]) {
        case ROLE_SYSTEM:
            if (!merged)
                put_turn(w, sp->sys_open, content, sp->sys_close, sp->strip & STRIP_SYSTEM);
            continue;  /* merged: placed with a user turn below */
        case ROLE_USER:
            if (sp->bos_between && started)
                put(w, sp->bos_between);
            if (!merged) {
                put_turn(w, sp->user_open, content, sp->user_close, sp->strip & STRIP_USER);
            } else if (sp->sys_in_last_user) {
                put_merged_user_turn(w, sp, msgs, roles, i == last_user ? 0 : i, i == last_user ? n : i, content);
            } else {
                put_merged_user_turn(w, sp, msgs, roles, sys_from, i, content);
                sys_from = i + 1;
            }
            break;
        case ROLE_ASSISTANT:
            put_turn(w, sp->asst_open, content, sp->asst_close, sp->strip & STRIP_ASSISTANT);
            break;
        }
        started = 1;
    }
    /* System text that no user turn took (it came after the last user message, or there
     * is none) gets a user turn of its own rather than being dropped. */
    if (merged && !(sp->sys_in_last_user && last_user < n)) {
        size_t lo = sp->sys_in_last_user ? 0 : sys_from;
        int pending = 0;
        for (size_t j = lo; j < n; j++)
            pending |= roles[j] == ROLE_SYSTEM;
        if (pending) {
            if (sp->bos_between && started)
                put(w, sp->bos_between);
            put_merged_user_turn(w, sp, msgs, roles, lo, n, NULL);
        }
    }
    if (add_assistant)
        put(w, sp->gen_prompt);
}

int chat_render(chat_family f, const chat_msg *msgs, size_t n, bool add_assistant, char **out,
                size_t *len, err_info *ei)
{
    role *roles = NULL;
    char *buf = NULL;
    int rc;

    if (!out || !len || (n > 0 && !msgs)) {
        rc = err_set(ei, -EINVAL, "chat_render: missing argument");
        goto fail;
    }
    if (f <= CHAT_UNKNOWN || f >= CHAT_FAMILY_COUNT) {
        rc = err_set(ei, -ERR_UNSUPPORTED, "chat template not recognised: no prompt format to render with");
        goto fail;
    }
    roles = malloc((n ? n : 1) * sizeof *roles);  /* n <= SIZE_MAX / sizeof *msgs: no overflow */
    if (!roles) {
        rc = err_set(ei, -ENOMEM, "chat_render: out of memory for %zu messages", n);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            rc = err_set(ei, -EINVAL, "message %zu: missing %s", i, msgs[i].role ? "content" : "role");
            goto fail;
        }
        if (role_of(&msgs[i], &roles[i]) != 0) {
            rc = err_set(ei, -EINVAL, "message %zu: unknown role '%.64s' (expected system, user or assistant)",
                         i, msgs[i].role);
            goto fail;
        }
    }

    const family_spec *sp = &specs[f];
    writer count = {0};
    render(&count, sp, msgs, roles, n, add_assistant);
    if (count.overflow || count.len == SIZE_MAX) {
        rc = err_set(ei, -ENOMEM, "chat_render: prompt too large");
        goto fail;
    }
    buf = malloc(count.len + 1);
    if (!buf) {
        rc = err_set(ei, -ENOMEM, "chat_render: out of memory for a %zu-byte prompt", count.len);
        goto fail;
    }
    writer w = {.buf = buf};
    render(&w, sp, msgs, roles, n, add_assistant);
    assert(w.len <= count.len);
    buf[w.len] = '\0';
    free(roles);
    *out = buf;
    *len = w.len;
    return 0;

fail:
    free(buf);
    free(roles);
    return rc;
}
