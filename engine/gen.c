/* gen — see gen.h. The loop: reuse the cached prefix, prefill, then per token: sample,
 * stream its text through the stop-string filter, evaluate it. Everything a request needs
 * is allocated before its first token. */
#include "gen.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tok.h"

struct gen_ctx {
    const model *m;
    model_session *s;           /* borrowed */
    const tok_vocab *vocab;
    int32_t *cached;            /* [n_ctx] tokens whose K/V the session holds, in order */
    int32_t n_cached;
    float *logits;              /* [n_vocab] */
    int piece_cap;              /* room for the text one token can decode to */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int gen_ctx_new(gen_ctx **out, const model *m, model_session *s, err_info *ei)
{
    *out = NULL;
    gen_ctx *g = calloc(1, sizeof *g);
    if (!g)
        return err_set(ei, -ENOMEM, "out of memory");
    g->m = m;
    g->s = s;
    g->vocab = model_vocab(m);
    g->cached = malloc((size_t)model_session_n_ctx(s) * sizeof *g->cached);
    g->logits = malloc((size_t)model_hparams_of(m)->n_vocab * sizeof *g->logits);
    if (!g->cached || !g->logits) {
        gen_ctx_free(g);
        return err_set(ei, -ENOMEM, "out of memory");
    }
    /* decoding never lengthens a token's raw text (byte tokens and GPT-2's byte map shrink
     * it), but each invalid byte may become a 3-byte U+FFFD, plus up to 3 held-back bytes */
    int longest = 0;
    for (int32_t id = 0; id < tok_n_vocab(g->vocab); id++)
        if ((int)tok_text(g->vocab, id).len > longest)
            longest = (int)tok_text(g->vocab, id).len;
    g->piece_cap = 3 * longest + 32;
    model_session_rewind(s, 0);
    *out = g;
    return 0;
}

void gen_ctx_free(gen_ctx *g)
{
    if (!g)
        return;
    free(g->cached);
    free(g->logits);
    free(g);
}

/* Text generated but not yet handed to the caller, because its tail could be the start of a
 * stop string. */
typedef struct stop_filter {
    const gen_request *rq;
    gen_text_fn emit;
    void *ud;
    char *buf;
    size_t len, cap;
    size_t max_stop;
    bool stopped;      /* a stop string was found */
    bool refused;      /* the callback asked to stop */
} stop_filter;

static void filter_emit(stop_filter *f, size_t n, int32_t token)
{
    if (n && !f->refused && f->emit(f->ud, f->buf, n, token))
        f->refused = true;
    memmove(f->buf, f->buf + n, f->len - n);
    f->len -= n;
}

/* Appends a piece, emits everything that cannot belong to a stop string. */
static void filter_push(stop_filter *f, const char *text, size_t n, int32_t token)
{
    size_t old = f->len;
    memcpy(f->buf + f->len, text, n);
    f->len += n;
    /* a stop string wholly inside the buffer ends generation before it */
    size_t from = old >= f->max_stop ? old - f->max_stop + 1 : 0, cut = f->len;
    for (int i = 0; i < f->rq->n_stop; i++) {
        size_t sl = strlen(f->rq->stop[i]);
        for (size_t p = from; sl && p + sl <= f->len && p < cut; p++)
            if (memcmp(f->buf + p, f->rq->stop[i], sl) == 0) {
                cut = p;
                break;
            }
    }
    if (cut < f->len) {
        f->len = cut;
        f->stopped = true;
        filter_emit(f, cut, token);
        return;
    }
    /* hold back the longest tail that is a proper prefix of some stop string */
    size_t keep = 0;
    for (int i = 0; i < f->rq->n_stop; i++) {
        size_t sl = strlen(f->rq->stop[i]);
        for (size_t k = sl && sl - 1 < f->len ? sl - 1 : f->len; sl && k > keep; k--)
            if (memcmp(f->buf + f->len - k, f->rq->stop[i], k) == 0) {
                keep = k;
                break;
            }
    }
    filter_emit(f, f->len - keep, token);
}

static int32_t common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb)
{
    int32_t i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

/* Brings the session to exactly rq's prompt, reusing the cached prefix; leaves the logits
 * of the last prompt token in g->logits. */
static int prefill(gen_ctx *g, const gen_request *rq, gen_result *res, err_info *ei)
{
    int32_t reuse = common_prefix(g->cached, g->n_cached, rq->prompt, rq->n_prompt);
    if (reuse == rq->n_prompt)
        reuse--; /* the last prompt token must be evaluated again to get its logits */
    model_session_rewind(g->s, reuse);
    g->n_cached = reuse;
    int rc = model_session_eval(g->s, rq->prompt + reuse, rq->n_prompt - reuse, g->logits, false, rq->cancel, ei);
    /* whatever was evaluated is cached, also after a cancellation */
    g->n_cached = model_session_n_past(g->s);
    memcpy(g->cached + reuse, rq->prompt + reuse, (size_t)(g->n_cached - reuse) * sizeof *g->cached);
    res->n_prompt_reused = reuse;
    return rc;
}

int gen_run(gen_ctx *g, const gen_request *rq, gen_text_fn on_text, void *ud, gen_result *res, err_info *ei)
{
    double t0 = now_ms();
    memset(res, 0, sizeof *res);
    res->n_prompt = rq->n_prompt;
    int32_t n_ctx = model_session_n_ctx(g->s);
    if (rq->n_prompt <= 0)
        return err_set(ei, -EINVAL, "the prompt is empty");
    if (rq->n_prompt > n_ctx)
        return err_set(ei, -ERR_CONTEXT_FULL, "the prompt has %d tokens, more than the context length %d", rq->n_prompt,
                       n_ctx);
    int rc = sampler_params_check(&rq->sampling, ei);
    if (rc)
        return rc;

    stop_filter f = {.rq = rq, .emit = on_text, .ud = ud};
    for (int i = 0; i < rq->n_stop; i++)
        if (strlen(rq->stop[i]) > f.max_stop)
            f.max_stop = strlen(rq->stop[i]);
    f.cap = f.max_stop + (size_t)g->piece_cap;
    f.buf = malloc(f.cap);
    char *piece = malloc((size_t)g->piece_cap);
    sampler *smp = NULL;
    if (!f.buf || !piece) {
        rc = err_set(ei, -ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = sampler_new(&smp, &rq->sampling, model_hparams_of(g->m)->n_vocab, ei)))
        goto done;

    rc = prefill(g, rq, res, ei);
    res->prefill_ms = now_ms() - t0;
    if (rc == -ERR_CANCELLED) {
        rc = 0;
        res->finish = GEN_FINISH_CANCELLED;
        res->first_token_ms = res->prefill_ms;
        goto done;
    }
    if (rc)
        goto done;
    for (int32_t i = 0; i < rq->n_prompt; i++)
        sampler_accept(smp, rq->prompt[i]);

    tok_stream ts;
    tok_stream_init(&ts);
    ts.at_start = false; /* generated text continues the prompt: keep its leading space */
    res->finish = GEN_FINISH_LENGTH;
    for (;;) {
        if (rq->cancel && atomic_load_explicit(rq->cancel, memory_order_relaxed)) {
            res->finish = GEN_FINISH_CANCELLED;
            break;
        }
        int32_t tok = sampler_sample(smp, g->logits);
        if (res->n_generated == 0)
            res->first_token_ms = now_ms() - t0;
        if (!rq->ignore_eos && tok_is_eog(g->vocab, tok)) {
            res->finish = GEN_FINISH_STOP;
            break;
        }
        sampler_accept(smp, tok);
        res->n_generated++;
        int n = tok_stream_push(g->vocab, &ts, tok, piece, g->piece_cap);
        if (n > 0)
            filter_push(&f, piece, (size_t)n, tok);
        if (f.stopped || f.refused) {
            res->finish = f.stopped ? GEN_FINISH_STOP : GEN_FINISH_CANCELLED;
            break;
        }
        if ((rq->max_tokens > 0 && res->n_generated >= rq->max_tokens) || model_session_n_past(g->s) >= n_ctx)
            break;
        if ((rc = model_session_eval(g->s, &tok, 1, g->logits, false, NULL, ei)))
            goto done;
        g->cached[g->n_cached++] = tok;
    }
    if (res->finish != GEN_FINISH_CANCELLED && !f.stopped) {
        /* release what the stop filter and the UTF-8 stream still hold */
        int n = tok_stream_flush(&ts, piece, g->piece_cap);
        if (n > 0 && f.len + (size_t)n <= f.cap) {
            memcpy(f.buf + f.len, piece, (size_t)n);
            f.len += (size_t)n;
        }
        filter_emit(&f, f.len, TOK_NULL);
    }
done:
    res->decode_ms = now_ms() - t0 - res->prefill_ms;
    sampler_free(smp);
    free(piece);
    free(f.buf);
    return rc;
}
