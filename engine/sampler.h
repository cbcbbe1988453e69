/* sampler — turns a logit vector into the next token: repetition penalties, then greedy
 * (temperature 0) or top-k / top-p / min-p truncation, temperature, and a draw from a
 * seeded generator (same seed and inputs give the same tokens).
 *
 * All scratch memory is allocated by sampler_new; sampling a token allocates nothing.
 * Not here: stop strings and EOS handling (gen.h). */
#ifndef EDGELLM_SAMPLER_H
#define EDGELLM_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

typedef struct sampler_params {
    float temperature;       /* 0: greedy (argmax after penalties). Default 0.8 */
    int top_k;               /* <= 0: off. Default 40 */
    float top_p;             /* 1.0: off. Default 0.95 */
    float min_p;             /* 0: off. Default 0.05 */
    float repeat_penalty;    /* 1.0: off. Default 1.0 (llama.cpp's default) */
    int repeat_last_n;       /* window of recent tokens penalties look at; 0: none; default 64,
                              * at most 1 << 20 */
    float presence_penalty;  /* 0: off; [-2, 2] as in OpenAI's API */
    float frequency_penalty; /* 0: off; [-2, 2] */
    uint64_t seed;           /* generator seed; default 0 (callers wanting variety pick one) */
} sampler_params;

typedef struct sampler sampler;

void sampler_params_default(sampler_params *p);
/* Checks ranges; on failure returns -EINVAL and names the field in ei ("top_p must be in
 * (0, 1] (got 1.5)"). */
int sampler_params_check(const sampler_params *p, err_info *ei);

/* p is copied (and checked: -EINVAL as above). n_vocab fixes the logit vector length.
 * *out is owned by the caller; free with sampler_free. */
int sampler_new(sampler **out, const sampler_params *p, int32_t n_vocab, err_info *ei);
void sampler_free(sampler *s);
/* Forgets the token history and re-seeds the generator from the params. */
void sampler_reset(sampler *s);
/* Records a token (prompt or generated) in the penalty history; ids outside [0, n_vocab)
 * are ignored. */
void sampler_accept(sampler *s, int32_t token);
/* Picks the next token from logits (n_vocab floats, borrowed; penalties are applied to them
 * in place). Does not call sampler_accept. NaN logits are never picked unless all are. */
int32_t sampler_sample(sampler *s, float *logits);

#endif
