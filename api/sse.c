/* api_sse — see sse.h. All frames come from one function, frame(), so the envelope is
 * written once; the public functions only choose what goes inside "choices". */
#include "sse.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/utf8.h"

size_t api_json_escape(char *dst, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t k = 0, used = 1;
        switch (c) {
        case '"': esc[k++] = '\\'; esc[k++] = '"'; break;
        case '\\': esc[k++] = '\\'; esc[k++] = '\\'; break;
        case '\n': esc[k++] = '\\'; esc[k++] = 'n'; break;
        case '\r': esc[k++] = '\\'; esc[k++] = 'r'; break;
        case '\t': esc[k++] = '\\'; esc[k++] = 't'; break;
        default:
            if (c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                k = 6;
            } else if (c < 0x80) {
                esc[k++] = (char)c;
            } else {
                /* JSON text must be UTF-8: a malformed sequence becomes U+FFFD rather than
                 * making the whole document unreadable. */
                uint32_t cp;
                used = (size_t)utf8_decode(s + i, len - i, &cp);
                if (cp == UTF8_REPLACEMENT && used < 3) {
                    memcpy(esc, "\\ufffd", 6);
                    k = 6;
                } else {
                    memcpy(esc, s + i, used);
                    k = used;
                }
            }
        }
        for (size_t j = 0; j < k; j++, n++)
            if (n + 1 < cap)
                dst[n] = esc[j];
        i += used;
    }
    if (cap)
        dst[n < cap ? n : cap - 1] = 0;
    return n;
}

void api_sse_init(api_sse *s, bool chat, const char *model_id, uint64_t id_bits, long long created)
{
    s->chat = chat;
    snprintf(s->id, sizeof s->id, "%s-%016llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)id_bits);
    s->created = created;
    size_t len = strlen(model_id);
    if (len > API_SSE_MODEL_MAX)
        len = utf8_complete_prefix(model_id, API_SSE_MODEL_MAX);
    api_json_escape(s->model_json, sizeof s->model_json, model_id, len);
}

/* Appends like snprintf at offset n of buf; returns the new full length. */
static size_t put(char *buf, size_t cap, size_t n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static size_t put(char *buf, size_t cap, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, fmt, ap);
    va_end(ap);
    return n + (size_t)(k > 0 ? k : 0);
}

/* One frame. inner: the JSON inside "choices":[...] up to where the text goes, then the
 * escaped text (if any), then tail. usage frames pass an empty choices array. */
static int frame(const api_sse *s, const char *inner, const char *text, size_t len, const char *tail, char *buf,
                 size_t cap)
{
    size_t n = put(buf, cap, 0, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":\"%s\",%s", s->id,
                   s->chat ? "chat.completion.chunk" : "text_completion", s->created, s->model_json, inner);
    n += api_json_escape(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, text, len);
    n = put(buf, cap, n, "%s}\n\n", tail);
    return (int)n;
}

int api_sse_role(const api_sse *s, char *buf, size_t cap)
{
    if (!s->chat)
        return frame(s, "\"choices\":[{\"index\":0,\"text\":\"", "", 0,
                     "\",\"logprobs\":null,\"finish_reason\":null}]", buf, cap);
    return frame(s, "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"", "", 0,
                 "\"},\"logprobs\":null,\"finish_reason\":null}]", buf, cap);
}

int api_sse_text(const api_sse *s, const char *text, size_t len, char *buf, size_t cap)
{
    if (len > API_SSE_TEXT_MAX)
        len = API_SSE_TEXT_MAX;
    if (!s->chat)
        return frame(s, "\"choices\":[{\"index\":0,\"text\":\"", text, len,
                     "\",\"logprobs\":null,\"finish_reason\":null}]", buf, cap);
    return frame(s, "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"", text, len,
                 "\"},\"logprobs\":null,\"finish_reason\":null}]", buf, cap);
}

int api_sse_finish(const api_sse *s, const char *finish_reason, char *buf, size_t cap)
{
    char tail[96];
    snprintf(tail, sizeof tail, "%s\"logprobs\":null,\"finish_reason\":\"%s\"}]", s->chat ? "}," : "\",",
             finish_reason);
    return frame(s, s->chat ? "\"choices\":[{\"index\":0,\"delta\":{" : "\"choices\":[{\"index\":0,\"text\":\"", "", 0,
                 tail, buf, cap);
}

int api_sse_usage(const api_sse *s, int32_t n_prompt, int32_t n_generated, char *buf, size_t cap)
{
    char tail[160];
    snprintf(tail, sizeof tail,
             "\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}",
             (int)n_prompt, (int)n_generated, (int)(n_prompt + n_generated));
    return frame(s, "", "", 0, tail, buf, cap);
}

int api_sse_error(api_err e, const char *message, char *buf, size_t cap)
{
    size_t n = put(buf, cap, 0, "data: ");
    n += (size_t)api_err_body(e, message, n < cap ? buf + n : NULL, n < cap ? cap - n : 0);
    return (int)put(buf, cap, n, "\n\n");
}
