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
    bool finished;
    api_result result;
};

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

int api_job_write(api_job *j, const char *data, size_t n)
{
    pthread_mutex_lock(&j->mu);
    while (n && !atomic_load(&j->cancel)) {
        while (j->len == j->cap && !atomic_load(&j->cancel))
            pthread_cond_wait(&j->room, &j->mu);
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
    pthread_mutex_unlock(&j->mu);
    return atomic_load(&j->cancel) ? -ERR_CANCELLED : 0;
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
