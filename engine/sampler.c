/* sampler — see sampler.h. The chain and its defaults follow llama.cpp's: penalties, then
 * (temperature > 0) top-k, top-p, min-p, temperature, softmax and a draw; temperature <= 0
 * is argmax. top-p and min-p see temperature-1 probabilities, as in llama.cpp, where the
 * temperature stage comes after them.
 *
 * Speed with a 152k vocabulary: top-k keeps a k-element heap in one pass over the logits;
 * without top-k, min-p becomes a logit threshold (p >= min_p * p_max  <=>  logit >=
 * max + log(min_p)), and top-p sorts only the tokens above a threshold that is lowered until
 * they hold enough probability. Nothing here allocates after sampler_new.
 *
 * Determinism: xoshiro256** seeded through splitmix64, our own exp, and a fixed order of
 * floating-point operations, so the same seed and logits give the same tokens on every run
 * and machine. (A compiler that fuses multiply-adds, as aarch64 builds do, rounds a few
 * weights differently in the last bit; that changes a draw only when the uniform lands
 * within that rounding of a boundary, about 1e-7 of tokens.)
 * Not here: EOS, stop strings, logit bias (gen.h). */
#include "sampler.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { REPEAT_LAST_N_MAX = 1 << 20 };

typedef struct cand {
    float logit;   /* after penalties; overwritten by the draw weight at the end */
    int32_t id;
} cand;

struct sampler {
    sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    /* Penalty window: the last p.repeat_last_n accepted tokens in a ring, and how often
     * each token occurs in it (counts[n_vocab]). */
    int32_t *ring;
    int32_t ring_len, ring_head;  /* head: next slot to write */
    int32_t *counts;
    cand *cand;                   /* [n_vocab] scratch */
};

void sampler_params_default(sampler_params *p)
{
    *p = (sampler_params){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0,
    };
}

int sampler_params_check(const sampler_params *p, err_info *ei)
{
    /* Written so that NaN fails every test. */
    if (!(p->temperature >= 0.0f && isfinite(p->temperature)))
        return err_set(ei, -EINVAL, "temperature must be a finite number >= 0 (got %g)", p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return err_set(ei, -EINVAL, "top_p must be in (0, 1] (got %g)", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return err_set(ei, -EINVAL, "min_p must be in [0, 1] (got %g)", p->min_p);
    if (!(p->repeat_penalty > 0.0f && isfinite(p->repeat_penalty)))
        return err_set(ei, -EINVAL, "repeat_penalty must be a finite number > 0 (got %g)", p->repeat_penalty);
    if (p->repeat_last_n < 0 || p->repeat_last_n > REPEAT_LAST_N_MAX)
        return err_set(ei, -EINVAL, "repeat_last_n must be in [0, %d] (got %d)", REPEAT_LAST_N_MAX,
                       p->repeat_last_n);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return err_set(ei, -EINVAL, "presence_penalty must be in [-2, 2] (got %g)", p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return err_set(ei, -EINVAL, "frequency_penalty must be in [-2, 2] (got %g)", p->frequency_penalty);
    return 0;
}

/* ---- generator: xoshiro256** (Blackman & Vigna), state filled by splitmix64 ---------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

int sampler_new(sampler **out, const sampler_params *p, int32_t n_vocab, err_info *ei)
{
    sampler *s = NULL;
    size_t bytes;
    int rc = sampler_params_check(p, ei);
    if (rc)
        goto fail;
    if (n_vocab <= 0) {
        rc = err_set(ei, -EINVAL, "sampler: vocabulary size must be > 0 (got %d)", n_vocab);
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (!s || __builtin_mul_overflow((size_t)n_vocab, sizeof *s->cand, &bytes)) {
        rc = err_set(ei, -ENOMEM, "sampler: out of memory");
        goto fail;
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc(bytes);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->ring = malloc((size_t)(p->repeat_last_n ? p->repeat_last_n : 1) * sizeof *s->ring);
    if (!s->cand || !s->counts || !s->ring) {
        rc = err_set(ei, -ENOMEM, "sampler: out of memory for %d candidates", n_vocab);
        goto fail;
    }
    sampler_reset(s);
    *out = s;
    return 0;

fail:
    sampler_free(s);
    return rc;
}

void sampler_free(sampler *s)
{
    if (!s)
        return;
    free(s->ring);
    free(s->counts);
    free(s->cand);
    free(s);
}

void sampler_reset(sampler *s)
{
    for (int32_t i = 0; i < s->ring_len; i++)
        s->counts[s->ring[i]] = 0;
    s->ring_len = s->ring_head = 0;
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

/* Token ids outside [0, n_vocab) cannot be penalised and are not recorded. */
void sampler_accept(sampler *s, int32_t token)
{
    int32_t cap = s->p.repeat_last_n;
    if (cap == 0 || token < 0 || token >= s->n_vocab)
        return;
    if (s->ring_len == cap)
        s->counts[s->ring[s->ring_head]]--;  /* the oldest token leaves the window */
    else
        s->ring_len++;
    s->ring[s->ring_head] = token;
    s->counts[token]++;
    s->ring_head = (s->ring_head + 1) % cap;
}

/* ---- stages ---------------------------------------------------------------------------- */

/* llama.cpp's penalties, once per distinct token in the window. A token's count is negated
 * while it is being visited so that repeats of it are skipped, then restored. */
static void apply_penalties(sampler *s, float *logits)
{
    const sampler_params *p = &s->p;
    if (p->repeat_penalty == 1.0f && p->frequency_penalty == 0.0f && p->presence_penalty == 0.0f)
        return;
    for (int32_t i = 0; i < s->ring_len; i++) {
        int32_t t = s->ring[i], c = s->counts[t];
        if (c <= 0)
            continue;
        float l = logits[t];
        l = l > 0.0f ? l / p->repeat_penalty : l * p->repeat_penalty;
        logits[t] = l - (float)c * p->frequency_penalty - p->presence_penalty;
        s->counts[t] = -c;
    }
    for (int32_t i = 0; i < s->ring_len; i++) {
        int32_t t = s->ring[i];
        if (s->counts[t] < 0)
            s->counts[t] = -s->counts[t];
    }
}

/* The largest logit, NaN ignored (-inf if there is none). Eight independent lanes let the
 * compiler vectorise the scan (out of line, so it stays a loop nest of its own). */
__attribute__((noinline)) static float max_logit(const float *l, int32_t n)
{
    enum { LANES = 8 };
    float m[LANES];
    for (int j = 0; j < LANES; j++)
        m[j] = -INFINITY;
    int32_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++)
            m[j] = l[i + j] > m[j] ? l[i + j] : m[j];
    for (; i < n; i++)
        m[0] = l[i] > m[0] ? l[i] : m[0];
    for (int j = 1; j < LANES; j++)
        m[0] = m[j] > m[0] ? m[j] : m[0];
    return m[0];
}

/* Lowest id among the largest logits; 0 when all are NaN. */
static int32_t argmax(const float *logits, int32_t n)
{
    float m = max_logit(logits, n);
    for (int32_t i = 0; i < n; i++)
        if (logits[i] == m)
            return i;
    return 0;
}

/* e^x for x <= 0, within 1 ulp; 0 below about -87 (where expf turns denormal) and for NaN. Our own
 * rather than libm's so that draws do not depend on the libm version, and inlinable so the
 * full-vocabulary sums vectorise. Cephes' method: x = n ln2 + r with |r| <= ln2/2, a
 * degree-7 polynomial for e^r, and 2^n put into the exponent bits. */
static inline float exp_nonpos(float x)
{
    float t = x * 1.44269504f + 12582912.0f;  /* 1.5 * 2^23: rounds x*log2(e) to an integer */
    float n = t - 12582912.0f;
    uint32_t tbits;
    memcpy(&tbits, &t, sizeof tbits);
    int32_t ni = (int32_t)(tbits - 0x4b400000u);  /* the integer n, from t's mantissa */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;  /* ln2 split in two for exactness */
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
               1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    /* 2^n in the exponent bits; n outside [-126, 0] (x below about -87, -inf, NaN) gives 0.
     * Integer selects keep the function branch-free, hence vectorisable. */
    uint32_t keep = ni >= -126 && ni <= 0 ? ~0u : 0u;
    uint32_t sbits = ((uint32_t)(ni + 127) << 23) & keep, ybits, out;
    float scale, res;
    memcpy(&scale, &sbits, sizeof scale);
    res = y * scale;
    memcpy(&ybits, &res, sizeof ybits);
    out = ybits & keep;
    memcpy(&res, &out, sizeof res);
    return res;
}

/* acc[j] += e^(l[i + j] - max) for i a multiple of 8 below n8. Kept out of line: as a
 * loop nest of its own, the compiler vectorises it (8 fixed lanes, so the order of the
 * additions, and the result, do not depend on the vector width). */
__attribute__((noinline)) static void add_exp_lanes(float *restrict acc, const float *restrict l, int32_t n8,
                                                    float max)
{
    for (int32_t i = 0; i < n8; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += exp_nonpos(l[i + j] - max);
}

/* Sum of e^(l - max) over l (NaN counts 0): float lanes, folded into a double every block
 * to bound the rounding. */
static double sum_exp(const float *l, int32_t n, float max)
{
    enum { BLOCK = 2048 };
    double z = 0.0;
    int32_t n8 = n & ~7;
    for (int32_t i = 0; i < n8; i += BLOCK) {
        float acc[8] = {0};
        add_exp_lanes(acc, l + i, n8 - i < BLOCK ? n8 - i : BLOCK, max);
        for (int j = 0; j < 8; j++)
            z += acc[j];
    }
    for (int32_t i = n8; i < n; i++)
        z += exp_nonpos(l[i] - max);
    return z;
}

/* Candidate order: larger logit first, then lower id, so every result is reproducible. */
static int cand_before(const cand *a, const cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *x, const void *y)
{
    const cand *a = x, *b = y;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static float clean(float l)
{
    return isnan(l) ? -INFINITY : l;
}

/* Min-heap on cand_before: h[0] is the worst of the k kept. */
static void heap_sift_down(cand *h, int32_t k, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < k && cand_before(&h[w], &h[l]))
            w = l;
        if (r < k && cand_before(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The k best tokens into c[0..k), sorted. Later ids never beat an equal logit, so a plain
 * > against the heap's worst is the whole test; once the heap holds good tokens most
 * 64-token blocks fail it on their (vectorised) maximum alone. */
static int32_t top_k(cand *c, const float *logits, int32_t n, int32_t k)
{
    enum { BLOCK = 64 };
    for (int32_t i = 0; i < k; i++)
        c[i] = (cand){clean(logits[i]), i};
    for (int32_t i = k / 2 - 1; i >= 0; i--)
        heap_sift_down(c, k, i);
    for (int32_t b = k; b < n; b += BLOCK) {
        int32_t end = n - b > BLOCK ? b + BLOCK : n;
        if (!(max_logit(logits + b, end - b) > c[0].logit))
            continue;
        for (int32_t i = b; i < end; i++)
            if (logits[i] > c[0].logit) {
                c[0] = (cand){logits[i], i};
                heap_sift_down(c, k, 0);
            }
    }
    qsort(c, (size_t)k, sizeof *c, cand_cmp);
    return k;
}

/* Tokens with logit >= threshold, in id order. The threshold sits near the maximum, so
 * most 64-token blocks are skipped on their maximum. */
static int32_t collect_at_least(cand *c, const float *logits, int32_t n, float threshold)
{
    enum { BLOCK = 64 };
    int32_t m = 0;
    for (int32_t b = 0; b < n; b += BLOCK) {
        int32_t end = n - b > BLOCK ? b + BLOCK : n;
        if (!(max_logit(logits + b, end - b) >= threshold))
            continue;
        for (int32_t i = b; i < end; i++)
            if (logits[i] >= threshold)
                c[m++] = (cand){logits[i], i};
    }
    return m;
}

/* Length of the shortest prefix of sorted c whose temperature-1 probability reaches top_p,
 * where z = sum of exp(logit - max) over the whole candidate set; *reached tells whether it
 * did. If not (c holds too little mass, or rounding kept the sum just short), all n. */
static int32_t top_p_prefix(const cand *c, int32_t n, float max, double z, float top_p, bool *reached)
{
    double need = (double)top_p * z, cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += exp_nonpos(c[i].logit - max);
        if (cum >= need) {
            *reached = true;
            return i + 1;
        }
    }
    *reached = false;
    return n;
}

/* Without top-k: the candidates top-p and min-p keep, sorted (or, with top-p off, in id
 * order). min-p keeps a prefix of the sorted vocabulary and so does top-p; the result is
 * the shorter one, so min-p's threshold is applied first, when collecting. */
static int32_t filter_full_vocab(sampler *s, const float *logits)
{
    const sampler_params *p = &s->p;
    int32_t n = s->n_vocab;
    float max = max_logit(logits, n);
    float floor = p->min_p > 0.0f ? max + logf(p->min_p) : -INFINITY;
    if (p->top_p >= 1.0f)
        return collect_at_least(s->cand, logits, n, floor);

    double z = sum_exp(logits, n, max);
    /* Collect the tokens within `window` of the max and sort them; if they hold less than
     * top_p of the mass and min-p allows more, widen the window and start again. Each round
     * is one pass plus a sort of what passed. exp_nonpos is 0 below -87, so a window of
     * 128 holds every token that has any mass. */
    for (float window = 4.0f;; window *= 2.0f) {
        float threshold = fmaxf(max - window, floor);
        int32_t m = collect_at_least(s->cand, logits, n, threshold);
        qsort(s->cand, (size_t)m, sizeof *s->cand, cand_cmp);
        bool reached;
        int32_t k = top_p_prefix(s->cand, m, max, z, p->top_p, &reached);
        if (reached || threshold <= floor || window >= 128.0f)
            return k;
    }
}

/* Softmax at the given temperature over c[0..n) and one draw. */
static int32_t draw(sampler *s, cand *c, int32_t n)
{
    float max = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        max = fmaxf(max, c[i].logit);
    if (!(max > -INFINITY))  /* no finite logit: nothing to weigh */
        return c[0].id;
    float inv_t = 1.0f / s->p.temperature;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        c[i].logit = exp_nonpos((c[i].logit - max) * inv_t);
        sum += c[i].logit;
    }
    double u = rng_uniform(s->rng) * sum, cum = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < n; i++) {
        if (c[i].logit <= 0.0f)
            continue;
        cum += c[i].logit;
        last = i;
        if (u < cum)
            return c[i].id;
    }
    return c[last].id;  /* u fell past the sum by rounding */
}

int32_t sampler_sample(sampler *s, float *logits)
{
    const sampler_params *p = &s->p;
    int32_t n = s->n_vocab;
    apply_penalties(s, logits);
    if (p->temperature <= 0.0f)
        return argmax(logits, n);

    int32_t m;
    if (p->top_k > 0 && p->top_k < n) {
        m = top_k(s->cand, logits, n, p->top_k);
        float max = s->cand[0].logit;
        if (p->top_p < 1.0f) {
            double z = 0.0;
            for (int32_t i = 0; i < m; i++)
                z += exp_nonpos(s->cand[i].logit - max);
            bool reached;
            m = top_p_prefix(s->cand, m, max, z, p->top_p, &reached);
        }
        if (p->min_p > 0.0f) {
            float floor = max + logf(p->min_p);
            while (m > 1 && s->cand[m - 1].logit < floor)
                m--;
        }
    } else {
        m = filter_full_vocab(s, logits);
    }
    if (m == 0)  /* every logit was NaN or -inf */
        return argmax(logits, n);
    return draw(s, s->cand, m);
}
