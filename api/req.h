/* api_req — the JSON bodies the daemon accepts, parsed into one plain request struct:
 * OpenAI chat/completions and completions, and llama.cpp-style /tokenize and /detokenize.
 *
 * Every field is checked for type and range; an error names the field ("'top_p' must be a
 * number between 0 and 1") and maps to 400. Unknown fields are ignored, as OpenAI does.
 * null counts as absent. Not here: the model/queue decisions (daemon/router.c), HTTP. */
#ifndef EDGELLM_API_REQ_H
#define EDGELLM_API_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/chat.h"
#include "engine/err.h"
#include "engine/sampler.h"

typedef enum api_kind { API_KIND_CHAT, API_KIND_COMPLETION, API_KIND_TOKENIZE, API_KIND_DETOKENIZE } api_kind;

enum { API_MAX_STOP = 4 };

/* Where the client wants a completion served: body field "edgellm": {"route": ...}. */
typedef enum api_target {
    API_TARGET_AUTO,   /* "auto" (default): the daemon's offload policy decides */
    API_TARGET_LOCAL,  /* "local": on this device only */
    API_TARGET_CLOUD,  /* "cloud": the cloud endpoint, the device if it fails */
} api_target;

typedef struct api_req_priv api_req_priv;

/* All strings are NUL-terminated and owned by the request (freed by api_req_free). */
typedef struct api_req {
    api_kind kind;
    const char *model;            /* "" when absent */
    /* chat */
    chat_msg *msgs;
    size_t n_msgs;
    /* completion: the prompt; tokenize: "content" */
    const char *prompt;
    size_t prompt_len;
    /* completion and chat */
    int32_t max_tokens;           /* 0: the server's default */
    sampler_params sampling;      /* sampler_params_default, then the request's fields */
    bool seed_set;                /* false: the server picks a seed */
    const char *stop[API_MAX_STOP];
    int n_stop;
    bool stream;
    bool include_usage;           /* stream_options.include_usage */
    double timeout_s;             /* deadline for the whole request; 0: the server's default */
    api_target target;            /* edgellm.route */
    double keep_alive_s;          /* how long its model stays loaded once idle; < 0: for ever */
    bool keep_alive_set;          /* false: the server's model-keep-alive-s */
    /* tokenize */
    bool add_special;             /* default false */
    bool parse_special;           /* default true */
    bool with_pieces;             /* default false */
    /* detokenize */
    int32_t *tokens;
    size_t n_tokens;
    api_req_priv *priv;           /* the parsed JSON the strings point into */
} api_req;

/* Parses len bytes of body as a request of the given kind. On success *out is owned by the
 * caller (api_req_free). Errors: -ERR_FORMAT for text that is not a JSON object, -EINVAL /
 * -ERR_TYPE / -ERR_RANGE for a bad field, each with a message naming the field. */
int api_req_parse(api_req **out, api_kind kind, const char *body, size_t len, err_info *ei);
void api_req_free(api_req *r);

#endif
