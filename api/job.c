/* api_job — see job.h. A mutex guards the ring; the writer waits on a condition variable for
 * room, the reader on an eventfd so it can watch its client socket in the same poll(). */
#include "job.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine/utf8.h"

struct api_job {
    atomic_int refs;
    atomic_bool cancel;
    _Atomic int64_t cancelled_at_ns; /* CLOCK_MONOTONIC; 0 until cancelled */
    api_req *req;
    api_sse sse;
    void *user;
    void (*user_dtor)(void *);
    pthread_mutex_t mu;
    pthread_cond_t room;     /* writer: bytes were read or the job was cancelled */
    int efd;                 /* reader: bytes were written or the job finished */
    char *ring;
    size_t cap, head, len;   /* bytes [head, head + len) mod cap are unread */
    size_t elastic_max;      /* > 0: writes grow the ring up to this instead of waiting */
    bool committed, finished;
    api_source source;
    api_result result;
    /* the text for the cache: one writer at a time, so no lock */
    bool capture, capture_failed;
    char *text;
    size_t text_len, text_cap;
};

const char *api_source_name(api_source s)
{
    static const char *const names[] = {[API_SOURCE_LOCAL] = "local", [API_SOURCE_CACHE] = "cache",
                                        [API_SOURCE_CLOUD] = "cloud"};
    return names[s];
}

int api_job_new(api_job **out, api_req *req, size_t ring_cap, err_info *ei)
{
    *out = NULL;
    api_job *j = calloc(1, sizeof *j);
    if (!j || !(j->ring = malloc(ring_cap ? ring_cap : 1)))
        goto fail;
    if ((j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        int rc = -errno;
        free(j->ring);
        free(j);
        return err_set(ei, rc, "api_job_new: eventfd failed");
    }
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancel, false);
    j->req = req;
    j->cap = ring_cap ? ring_cap : 1;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->room, NULL);
    *out = j;
    return 0;
fail:
    free(j);
    return err_set(ei, -ENOMEM, "api_job_new: out of memory");
}

void api_job_ref(api_job *j)
{
    atomic_fetch_add(&j->refs, 1);
}

void api_job_unref(api_job *j)
{
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    if (j->user_dtor)
        j->user_dtor(j->user);
    api_req_free(j->req);
    close(j->efd);
    pthread_cond_destroy(&j->room);
    pthread_mutex_destroy(&j->mu);
    free(j->ring);
    free(j->text);
    free(j);
}

api_req *api_job_req(api_job *j) { return j->req; }
api_sse *api_job_sse(api_job *j) { return &j->sse; }
const atomic_bool *api_job_cancel_flag(const api_job *j) { return &j->cancel; }
bool api_job_cancelled(const api_job *j) { return atomic_load(&j->cancel); }
void *api_job_user(api_job *j) { return j->user; }

void api_job_set_user(api_job *j, void *user, void (*dtor)(void *user))
{
    j->user = user;
    j->user_dtor = dtor;
}

static void signal_reader(api_job *j)
{
    uint64_t one = 1;
    /* Fails only when the counter would overflow, i.e. the reader already has a wake-up. */
    (void)!write(j->efd, &one, sizeof one);
}

api_err api_result_err(const api_result *r)
{
    return r->has_err ? r->err : api_err_from_code(r->code);
}

/* An elastic ring full: a bigger one holding the unread bytes from offset 0. Under mu. */
static bool grow(api_job *j, size_t need)
{
    size_t ncap = j->cap * 2 > need ? j->cap * 2 : need;
    if (ncap > j->elastic_max)
        ncap = j->elastic_max;
    char *ring = ncap > j->cap ? malloc(ncap) : NULL;
    if (!ring)
        return false;
    size_t first = j->cap - j->head < j->len ? j->cap - j->head : j->len;
    memcpy(ring, j->ring + j->head, first);
    memcpy(ring + first, j->ring, j->len - first);
    free(j->ring);
    j->ring = ring;
    j->cap = ncap;
    j->head = 0;
    return true;
}

void api_job_set_elastic(api_job *j, size_t max_bytes)
{
    pthread_mutex_lock(&j->mu);
    j->elastic_max = max_bytes;
    pthread_mutex_unlock(&j->mu);
}

int api_job_write(api_job *j, const char *data, size_t n)
{
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    while (n && !atomic_load(&j->cancel)) {
        while (j->len == j->cap && !atomic_load(&j->cancel)) {
            if (!j->elastic_max) {
                pthread_cond_wait(&j->room, &j->mu);
            } else if (!grow(j, j->len + n)) {
                rc = -ENOMEM;
                goto out;
            }
        }
        size_t tail = (j->head + j->len) % j->cap;
        size_t chunk = j->cap - j->len;
        if (chunk > j->cap - tail)
            chunk = j->cap - tail; /* up to the end of the buffer; the rest wraps next turn */
        if (chunk > n)
            chunk = n;
        memcpy(j->ring + tail, data, chunk);
        j->len += chunk;
        data += chunk;
        n -= chunk;
        signal_reader(j);
    }
out:
    pthread_mutex_unlock(&j->mu);
    return atomic_load(&j->cancel) ? -ERR_CANCELLED : rc;
}

void api_job_commit(api_job *j, api_source s)
{
    pthread_mutex_lock(&j->mu);
    if (!j->committed) {
        j->committed = true;
        j->source = s;
        signal_reader(j);
    }
    pthread_mutex_unlock(&j->mu);
}

bool api_job_committed(api_job *j, api_source *s)
{
    pthread_mutex_lock(&j->mu);
    bool committed = j->committed || j->finished;
    if (s)
        *s = j->source;
    pthread_mutex_unlock(&j->mu);
    return committed;
}

void api_job_finish(api_job *j, const api_result *r)
{
    pthread_mutex_lock(&j->mu);
    j->result = *r;
    j->finished = true;
    signal_reader(j);
    pthread_mutex_unlock(&j->mu);
}

api_wait api_job_wait(api_job *j, int client_fd, int timeout_ms)
{
    pthread_mutex_lock(&j->mu);
    bool ready = j->len > 0 || j->finished;
    pthread_mutex_unlock(&j->mu);
    if (ready)
        return API_WAIT_READY;
    /* POLLRDHUP reports the peer's FIN without reading anything, so pipelined request bytes
     * waiting in the socket do not count as activity. */
    struct pollfd fds[2] = {{.fd = j->efd, .events = POLLIN}, {.fd = client_fd, .events = POLLRDHUP}};
    int rc;
    do
        rc = poll(fds, client_fd >= 0 ? 2 : 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (client_fd >= 0 && (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return API_WAIT_PEER_GONE;
    if (rc > 0 && (fds[0].revents & POLLIN)) {
        uint64_t count;
        (void)!read(j->efd, &count, sizeof count);
        return API_WAIT_READY;
    }
    return API_WAIT_TIMEOUT;
}

size_t api_job_read(api_job *j, char *buf, size_t cap)
{
    pthread_mutex_lock(&j->mu);
    size_t n = 0;
    while (n < cap && j->len) {
        size_t chunk = j->cap - j->head;
        if (chunk > j->len)
            chunk = j->len;
        if (chunk > cap - n)
            chunk = cap - n;
        memcpy(buf + n, j->ring + j->head, chunk);
        j->head = (j->head + chunk) % j->cap;
        j->len -= chunk;
        n += chunk;
    }
    if (n)
        pthread_cond_signal(&j->room);
    pthread_mutex_unlock(&j->mu);
    return n;
}

bool api_job_done(api_job *j, api_result *r)
{
    pthread_mutex_lock(&j->mu);
    bool done = j->finished && j->len == 0;
    if (done && r)
        *r = j->result;
    pthread_mutex_unlock(&j->mu);
    return done;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double api_job_ms_since_cancel(const api_job *j)
{
    int64_t at = atomic_load(&j->cancelled_at_ns);
    return at ? (double)(now_ns() - at) / 1e6 : -1.0;
}

void api_job_cancel(api_job *j)
{
    pthread_mutex_lock(&j->mu);
    int64_t never = 0;
    atomic_compare_exchange_strong(&j->cancelled_at_ns, &never, now_ns());
    atomic_store(&j->cancel, true);
    pthread_cond_broadcast(&j->room);
    pthread_mutex_unlock(&j->mu);
}

/* ---- formatting shared by every writer ------------------------------------------------- */

static int emit_frame(api_job *j, char *frame, int n)
{
    return api_job_write(j, frame, (size_t)n);
}

int api_job_emit_start(api_job *j, char *frame)
{
    if (!j->req->stream)
        return 0;
    return emit_frame(j, frame, api_sse_role(&j->sse, frame, API_SSE_FRAME_MAX));
}

/* Appends to the capture buffer, doubling it (amortised: no allocation per token). */
static void capture_text(api_job *j, const char *text, size_t len)
{
    if (!j->capture || j->capture_failed)
        return;
    if (j->text_cap - j->text_len < len) {
        size_t ncap = j->text_cap ? j->text_cap : 4096;
        while (ncap - j->text_len < len && ncap < SIZE_MAX / 2)
            ncap *= 2;
        char *t = ncap - j->text_len >= len ? realloc(j->text, ncap) : NULL;
        if (!t) {
            j->capture_failed = true;
            return;
        }
        j->text = t;
        j->text_cap = ncap;
    }
    memcpy(j->text + j->text_len, text, len);
    j->text_len += len;
}

int api_job_emit_text(api_job *j, const char *text, size_t len, char *frame)
{
    capture_text(j, text, len);
    if (!j->req->stream)
        return api_job_write(j, text, len);
    while (len) {
        /* Frames carry whole characters: a split one would reach the client as two halves. */
        size_t n = len <= API_SSE_TEXT_MAX ? len : utf8_complete_prefix(text, API_SSE_TEXT_MAX);
        if (n == 0)
            n = API_SSE_TEXT_MAX; /* not UTF-8 at all: any cut is as good as another */
        int rc = emit_frame(j, frame, api_sse_text(&j->sse, text, n, frame, API_SSE_FRAME_MAX));
        if (rc < 0)
            return rc;
        text += n;
        len -= n;
    }
    return 0;
}

int api_job_emit_end(api_job *j, const api_result *r, char *frame)
{
    if (!j->req->stream || (r->code == 0 && !r->finish_reason))
        return 0;
    int rc;
    if (r->code < 0) {
        rc = emit_frame(j, frame, api_sse_error(api_result_err(r), r->message, frame, API_SSE_FRAME_MAX));
    } else {
        rc = emit_frame(j, frame, api_sse_finish(&j->sse, r->finish_reason, frame, API_SSE_FRAME_MAX));
        if (rc == 0 && j->req->include_usage)
            rc = emit_frame(j, frame, api_sse_usage(&j->sse, r->n_prompt, r->n_generated, frame, API_SSE_FRAME_MAX));
    }
    return rc < 0 ? rc : api_job_write(j, API_SSE_DONE, sizeof API_SSE_DONE - 1);
}

void api_job_capture(api_job *j)
{
    j->capture = true;
}

bool api_job_captured(api_job *j, const char **text, size_t *len)
{
    if (!j->capture || j->capture_failed)
        return false;
    *text = j->text ? j->text : "";
    *len = j->text_len;
    return true;
}
