/* metrics — see metrics.h. Fixed arrays sized by the route table and a short list of the
 * statuses the daemon sends, so recording a request never allocates. */
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Latency buckets in seconds: from a warm, empty queue (milliseconds) to a long wait. */
static const double bucket_s[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
enum { N_BUCKETS = sizeof bucket_s / sizeof bucket_s[0] };

/* Statuses the daemon answers with; anything else lands in the last slot as "other". */
static const int statuses[] = {200, 400, 404, 405, 408, 413, 500, 502, 503};
enum { N_STATUSES = sizeof statuses / sizeof statuses[0] };

typedef struct hist {
    uint64_t le[N_BUCKETS]; /* cumulative is computed at render time; these are per bucket */
    uint64_t count;
    double sum;
} hist;

struct metrics {
    pthread_mutex_t mu;
    uint64_t requests[API_ROUTE_COUNT + 1][N_STATUSES + 1];
    hist queue_wait, ttft;
    uint64_t prompt_tokens, generated_tokens, jobs, cancellations;
    double decode_s;                /* total decode time, for the generated/decode rate */
    double last_decode_tps;
    uint64_t answers[3];            /* by api_source */
    uint64_t cache_hits, cache_misses, cache_stores, cache_store_errors, cache_evictions;
    uint64_t offloads[OFFLOAD_REASON_COUNT];
    uint64_t cloud[OFFLOAD_OUTCOME_COUNT];
    uint64_t fallbacks;
};

/* Every counter update is one increment under the lock. */
#define COUNT(m, expr)                \
    do {                              \
        pthread_mutex_lock(&(m)->mu); \
        expr;                         \
        pthread_mutex_unlock(&(m)->mu); \
    } while (0)

int metrics_new(metrics **out, err_info *ei)
{
    metrics *m = calloc(1, sizeof *m);
    *out = m;
    if (!m)
        return err_set(ei, -ENOMEM, "metrics: out of memory");
    pthread_mutex_init(&m->mu, NULL);
    return 0;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_request(metrics *m, api_route route, int status)
{
    int s = 0;
    while (s < N_STATUSES && statuses[s] != status)
        s++;
    pthread_mutex_lock(&m->mu);
    m->requests[route <= API_ROUTE_COUNT ? route : API_ROUTE_COUNT][s]++;
    pthread_mutex_unlock(&m->mu);
}

static void observe(hist *h, double seconds)
{
    int b = 0;
    while (b < N_BUCKETS && seconds > bucket_s[b])
        b++;
    if (b < N_BUCKETS)
        h->le[b]++;
    h->count++;
    h->sum += seconds;
}

void metrics_job(metrics *m, const api_result *r)
{
    pthread_mutex_lock(&m->mu);
    m->jobs++;
    observe(&m->queue_wait, r->queue_ms / 1e3);
    if (r->code == 0 && r->n_generated > 0) {
        observe(&m->ttft, r->first_token_ms / 1e3);
        if (r->decode_ms > 0) {
            m->decode_s += r->decode_ms / 1e3;
            m->last_decode_tps = r->n_generated / (r->decode_ms / 1e3);
        }
    }
    m->prompt_tokens += (uint64_t)(r->n_prompt > 0 ? r->n_prompt : 0);
    m->generated_tokens += (uint64_t)(r->n_generated > 0 ? r->n_generated : 0);
    pthread_mutex_unlock(&m->mu);
}

void metrics_cancelled(metrics *m) { COUNT(m, m->cancellations++); }
void metrics_answer(metrics *m, api_source s) { COUNT(m, m->answers[s]++); }
void metrics_cache_lookup(metrics *m, bool hit) { COUNT(m, hit ? m->cache_hits++ : m->cache_misses++); }
void metrics_offload(metrics *m, offload_reason why) { COUNT(m, m->offloads[why]++); }

void metrics_cache_store(metrics *m, int result)
{
    pthread_mutex_lock(&m->mu);
    if (result < 0) {
        m->cache_store_errors++;
    } else {
        m->cache_stores++;
        m->cache_evictions += (uint64_t)result;
    }
    pthread_mutex_unlock(&m->mu);
}

void metrics_cloud_outcome(metrics *m, offload_outcome out, bool fell_back)
{
    COUNT(m, m->cloud[out]++; m->fallbacks += fell_back);
}

/* One labelled counter family: names[i] is the label value of values[i]. */
static void render_family(FILE *f, const char *name, const char *help, const char *label, const uint64_t *values,
                          int n, const char *(*label_of)(int))
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s{%s=\"%s\"} %llu\n", name, label, label_of(i), (unsigned long long)values[i]);
}

static const char *source_label(int i) { return api_source_name((api_source)i); }
static const char *reason_label(int i) { return offload_reason_name((offload_reason)i); }
static const char *outcome_label(int i) { return offload_outcome_name((offload_outcome)i); }

static void render_hist(FILE *f, const char *name, const char *help, const hist *h)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < N_BUCKETS; b++) {
        cum += h->le[b];
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_s[b], (unsigned long long)cum);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)h->count, name,
            h->sum, name, (unsigned long long)h->count);
}

static void render_counter(FILE *f, const char *name, const char *help, const char *type, double v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

int metrics_render(metrics *m, const metrics_gauges *g, char **out, err_info *ei)
{
    size_t len = 0;
    *out = NULL;
    FILE *f = open_memstream(out, &len);
    if (!f)
        return err_set(ei, -ENOMEM, "metrics: out of memory");
    pthread_mutex_lock(&m->mu);
    fprintf(f, "# HELP edgellm_http_requests_total HTTP requests answered, by route and status.\n"
               "# TYPE edgellm_http_requests_total counter\n");
    for (int r = 0; r <= API_ROUTE_COUNT; r++)
        for (int s = 0; s <= N_STATUSES; s++)
            if (m->requests[r][s]) {
                char status[8];
                snprintf(status, sizeof status, s < N_STATUSES ? "%d" : "other", s < N_STATUSES ? statuses[s] : 0);
                fprintf(f, "edgellm_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                        api_route_path((api_route)r), status, (unsigned long long)m->requests[r][s]);
            }
    render_hist(f, "edgellm_queue_wait_seconds", "Time requests waited in the queue.", &m->queue_wait);
    render_hist(f, "edgellm_time_to_first_token_seconds", "From start of work to the first generated text.", &m->ttft);
    render_counter(f, "edgellm_prompt_tokens_total", "Prompt tokens of requests that ran.", "counter",
                   (double)m->prompt_tokens);
    render_counter(f, "edgellm_generated_tokens_total", "Tokens generated.", "counter", (double)m->generated_tokens);
    render_counter(f, "edgellm_decode_seconds_total", "Time spent generating after the prompt.", "counter", m->decode_s);
    render_counter(f, "edgellm_decode_tokens_per_second", "Decode speed of the last request that generated.", "gauge",
                   m->last_decode_tps);
    render_counter(f, "edgellm_jobs_total", "Requests that reached the worker or left the queue unrun.", "counter",
                   (double)m->jobs);
    render_counter(f, "edgellm_cancellations_total", "Requests cancelled because their client left.", "counter",
                   (double)m->cancellations);
    render_family(f, "edgellm_answers_total", "Completions answered, by where the answer came from.", "source",
                  m->answers, 3, source_label);
    render_counter(f, "edgellm_cache_hits_total", "Completions answered from the response cache.", "counter",
                   (double)m->cache_hits);
    render_counter(f, "edgellm_cache_misses_total", "Cache lookups that found nothing.", "counter",
                   (double)m->cache_misses);
    render_counter(f, "edgellm_cache_stores_total", "Answers stored in the cache.", "counter", (double)m->cache_stores);
    render_counter(f, "edgellm_cache_store_errors_total", "Answers the cache failed to store (full or read-only disk).",
                   "counter", (double)m->cache_store_errors);
    render_counter(f, "edgellm_cache_evictions_total", "Cached answers dropped (expired or least recently used).",
                   "counter", (double)m->cache_evictions);
    render_family(f, "edgellm_offloads_total", "Requests sent to the cloud endpoint, by reason.", "reason", m->offloads,
                  OFFLOAD_REASON_COUNT, reason_label);
    render_family(f, "edgellm_cloud_outcomes_total", "Cloud exchanges by outcome.", "outcome", m->cloud,
                  OFFLOAD_OUTCOME_COUNT, outcome_label);
    render_counter(f, "edgellm_cloud_fallbacks_total", "Failed cloud exchanges handed to the local queue.", "counter",
                   (double)m->fallbacks);
    pthread_mutex_unlock(&m->mu);
    render_counter(f, "edgellm_queue_depth", "Requests waiting.", "gauge", g->queue_depth);
    render_counter(f, "edgellm_queue_capacity", "Requests allowed to wait.", "gauge", g->queue_capacity);
    render_counter(f, "edgellm_worker_busy", "1 while a request is generating.", "gauge", g->busy);
    render_counter(f, "edgellm_model_ready", "1 once the model is loaded.", "gauge", g->model_ready);
    render_counter(f, "edgellm_retry_after_seconds", "Current Retry-After estimate for a refused request.", "gauge",
                   g->retry_after_s);
    render_counter(f, "edgellm_uptime_seconds", "Seconds since start.", "gauge", g->uptime_s);
    if (fclose(f) != 0 || !*out) {
        free(*out);
        *out = NULL;
        return err_set(ei, -ENOMEM, "metrics: out of memory");
    }
    return 0;
}
