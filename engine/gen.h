/* gen — the generation loop shared by `edgellm run` and the daemon's worker: reuse the
 * cached prompt prefix, prefill the rest, then sample, detokenize and stream text until
 * EOS, a stop string, max_tokens, the context limit or cancellation.
 *
 * Text reaches the caller in complete UTF-8 characters, with text that might be the start
 * of a stop string held back until it is known not to be one. No allocation per token. */
#ifndef EDGELLM_GEN_H
#define EDGELLM_GEN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "model.h"
#include "sampler.h"

typedef enum gen_finish {
    GEN_FINISH_STOP,      /* EOS/EOG token or stop string */
    GEN_FINISH_LENGTH,    /* max_tokens reached, or the context is full */
    GEN_FINISH_CANCELLED, /* cancel flag or callback asked to stop */
} gen_finish;

typedef struct gen_request {
    const int32_t *prompt;     /* borrowed for the call */
    int32_t n_prompt;
    int32_t max_tokens;        /* <= 0: until the context is full */
    sampler_params sampling;
    const char *const *stop;   /* stop strings (borrowed), n_stop of them */
    int n_stop;
    bool ignore_eos;
    const atomic_bool *cancel; /* polled per token and per prefill chunk; may be NULL */
} gen_request;

typedef struct gen_result {
    gen_finish finish;
    int32_t n_prompt;          /* prompt tokens */
    int32_t n_prompt_reused;   /* of which were already in the KV cache */
    int32_t n_generated;
    double prefill_ms;         /* prompt evaluation */
    double first_token_ms;     /* from the call to the first text callback or finish */
    double decode_ms;          /* everything after prefill */
} gen_result;

/* Receives each piece of generated text (complete UTF-8, not NUL-terminated). token is the
 * id that completed it. Return nonzero to stop (finish = CANCELLED). */
typedef int (*gen_text_fn)(void *ud, const char *text, size_t len, int32_t token);

typedef struct gen_ctx gen_ctx;

/* The context keeps the session (borrowed, must outlive it) and remembers which tokens sit
 * in its KV cache, for prefix reuse across requests. */
int gen_ctx_new(gen_ctx **out, const model *m, model_session *s, err_info *ei);
void gen_ctx_free(gen_ctx *g);

/* Runs one request. Returns 0 with res filled (also when cancelled), or a negative error:
 * -ERR_CONTEXT_FULL when the prompt alone does not fit, -EINVAL for bad sampling params. */
int gen_run(gen_ctx *g, const gen_request *rq, gen_text_fn on_text, void *ud, gen_result *res, err_info *ei);

#endif
