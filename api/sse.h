/* api_sse — server-sent-event framing of OpenAI streaming responses, formatted with snprintf
 * into the caller's buffer: the worker calls this once per token, so it must not allocate or
 * build a JSON tree. Also the JSON string escaper the hand-written JSON of api/ shares.
 *
 * Frames: "data: <chat.completion.chunk or text_completion JSON>\n\n", the final chunk
 * carrying finish_reason, an optional usage chunk, then "data: [DONE]\n\n".
 * Not here: splitting text on UTF-8 boundaries (the caller hands whole characters, at most
 * API_SSE_TEXT_MAX bytes per frame) or writing to sockets (api/http.c). */
#ifndef EDGELLM_API_SSE_H
#define EDGELLM_API_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/err.h"

enum {
    API_SSE_TEXT_MAX = 1024,                      /* text bytes per frame */
    API_SSE_MODEL_MAX = 128,                      /* model id bytes */
    /* Every frame fits in this: text escaped at most 6x (\u00XX), plus the envelope. */
    API_SSE_FRAME_MAX = 6 * API_SSE_TEXT_MAX + 6 * API_SSE_MODEL_MAX + 512,
};

#define API_SSE_DONE "data: [DONE]\n\n"

/* What every frame of one response repeats. Plain value type. */
typedef struct api_sse {
    bool chat;                              /* chat.completion.chunk, else text_completion */
    char id[48];                            /* "chatcmpl-..." / "cmpl-..." */
    long long created;                      /* Unix seconds */
    char model_json[6 * API_SSE_MODEL_MAX + 1]; /* model id, already JSON-escaped */
} api_sse;

/* id_bits makes the id unique ("chatcmpl-<16 hex digits>"); model_id is copied, truncated to
 * API_SSE_MODEL_MAX bytes on a character boundary. */
void api_sse_init(api_sse *s, bool chat, const char *model_id, uint64_t id_bits, long long created);

/* Each writes one frame into buf like snprintf (returns the full length; with
 * cap >= API_SSE_FRAME_MAX nothing is ever truncated). */
int api_sse_role(const api_sse *s, char *buf, size_t cap);  /* chat: delta {"role":"assistant"} */
int api_sse_text(const api_sse *s, const char *text, size_t len, char *buf, size_t cap); /* len <= TEXT_MAX */
int api_sse_finish(const api_sse *s, const char *finish_reason, char *buf, size_t cap);
int api_sse_usage(const api_sse *s, int32_t n_prompt, int32_t n_generated, char *buf, size_t cap);
/* An error after the stream started: "data: {"error":{...}}\n\n". */
int api_sse_error(api_err e, const char *message, char *buf, size_t cap);

/* Escapes len bytes of s as the inside of a JSON string (quotes, backslash, control
 * characters) into dst like snprintf: returns the escaped length, writes at most cap - 1
 * bytes plus a NUL (dst may be NULL when cap is 0). Well-formed UTF-8 passes through; each
 * byte of a malformed sequence becomes \ufffd, so the output is at most 6 * len bytes. */
size_t api_json_escape(char *dst, size_t cap, const char *s, size_t len);

#endif
