/* api_job — one completion as both sides see it: a writer (the worker generating locally,
 * the cloud client on the event loop, or the cache replaying) writes the response bytes (SSE
 * frames, or plain text for a non-streamed reply) into a ring, the HTTP connection thread
 * reads them out and sends them. The ring is allocated once per request; writing a token
 * costs a memcpy and an eventfd write, never an allocation. A writer that must never wait
 * (the event loop) makes the ring elastic: it grows instead of waiting for the reader.
 *
 * Every writer formats through api_job_emit_*, so an answer looks the same whichever source
 * produced it, and the text can be captured for the response cache on the way. Where the
 * answer comes from is committed once (api_job_commit) before the first byte: until then a
 * streamed reply holds back its headers, because a cloud attempt may still fall back to the
 * local queue.
 *
 * Cancellation runs the other way: the connection sets the cancel flag (which gen_run
 * polls) when the client leaves. Reference counted: the connection and the scheduler each
 * hold a reference; the last api_job_unref frees it (and calls the owner's destructor).
 * Not here: generating (daemon/infer.c), queueing (daemon/sched.c), HTTP (api/http.c). */
#ifndef EDGELLM_API_JOB_H
#define EDGELLM_API_JOB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/err.h"
#include "api/req.h"
#include "api/sse.h"
#include "engine/err.h"

/* Where an answer came from: the X-Edgellm-Source header of every completion. */
typedef enum api_source { API_SOURCE_LOCAL, API_SOURCE_CACHE, API_SOURCE_CLOUD } api_source;
const char *api_source_name(api_source s); /* "local", "cache", "cloud"; static */

/* How a job ended; filled by the writer before api_job_finish. */
typedef struct api_result {
    int code;                   /* 0, or a negative code when no answer was produced */
    char message[ERR_MSG_MAX];  /* detail for code */
    const char *finish_reason;  /* "stop", "length" (static), or NULL when cancelled */
    int32_t n_prompt;
    int32_t n_generated;
    double queue_ms;            /* submission to start of work */
    double first_token_ms;      /* start of work to the first text */
    double decode_ms;           /* generation after the prompt was evaluated */
    double total_ms;            /* submission to finish */
    int32_t n_after_cancel;     /* tokens whose text came after the cancel flag was set */
    bool partial;               /* cut short by the deadline: not the answer a rerun would give */
    bool has_err;               /* code < 0 and the client's error is err, not derived from code */
    api_err err;
} api_result;

/* The error a client gets for a failed result: r->err if set, else api_err_from_code. */
api_err api_result_err(const api_result *r);

typedef struct api_job api_job;

/* Takes req (freed with the job). ring_cap: bytes of the response ring. The job starts with
 * one reference. */
int api_job_new(api_job **out, api_req *req, size_t ring_cap, err_info *ei);
void api_job_ref(api_job *j);
void api_job_unref(api_job *j);

api_req *api_job_req(api_job *j);            /* borrowed, lives with the job */
api_sse *api_job_sse(api_job *j);            /* the response's id/model/created, set by the router */
const atomic_bool *api_job_cancel_flag(const api_job *j);
bool api_job_cancelled(const api_job *j);
/* Data the owner (router) keeps with the job: freed by dtor(user) when the job is freed. */
void api_job_set_user(api_job *j, void *user, void (*dtor)(void *user));
void *api_job_user(api_job *j);

/* Writer side. Appends n bytes, waiting while the ring is full (elastic: growing it instead).
 * Returns -ERR_CANCELLED (nothing more will be read) once the job is cancelled, -ENOMEM when
 * an elastic ring would pass its limit. */
int api_job_write(api_job *j, const char *data, size_t n);
/* From now on writes never wait: the ring grows, up to max_bytes in all; 0 turns it back
 * to waiting (a job handed from the event loop to the worker). */
void api_job_set_elastic(api_job *j, size_t max_bytes);
/* Fixes the source (the first call wins) and releases a streamed reply's headers. */
void api_job_commit(api_job *j, api_source s);
/* True once committed or finished; *s (if not NULL) the source. */
bool api_job_committed(api_job *j, api_source *s);
/* Ends the stream with its result (copied). Wakes the reader. Call exactly once. */
void api_job_finish(api_job *j, const api_result *r);

/* The answer in the client's format, for every source: SSE frames when the request streams,
 * the bare text otherwise. frame is the writer's scratch of API_SSE_FRAME_MAX bytes (one per
 * writer thread, so a token costs no allocation). Each returns api_job_write's code. */
int api_job_emit_start(api_job *j, char *frame);   /* the role frame of a chat stream */
/* Text of the answer, split into frames of whole UTF-8 characters; captured if asked. */
int api_job_emit_text(api_job *j, const char *text, size_t len, char *frame);
/* The closing frames r calls for: an error frame (r->code < 0), or finish_reason plus the
 * usage frame if the request asked for it; then [DONE]. Nothing when the client left
 * (finish_reason NULL) or the reply is not streamed. Does not finish the job. */
int api_job_emit_end(api_job *j, const api_result *r, char *frame);

/* Keep a copy of the text api_job_emit_text passes (for the response cache). */
void api_job_capture(api_job *j);
/* The captured text (borrowed, lives with the job); false when capture was off or ran out
 * of memory. */
bool api_job_captured(api_job *j, const char **text, size_t *len);

/* Reader side (connection thread). */
typedef enum api_wait {
    API_WAIT_READY,      /* bytes to read, or the job finished */
    API_WAIT_TIMEOUT,    /* nothing happened within timeout_ms */
    API_WAIT_PEER_GONE,  /* the client closed its connection (client_fd hung up) */
} api_wait;
/* Waits until api_job_read has something to do or the job is done, watching client_fd (may
 * be -1) for a hang-up. timeout_ms < 0 waits for ever. */
api_wait api_job_wait(api_job *j, int client_fd, int timeout_ms);
/* Moves up to cap bytes out of the ring; returns the count (0 when empty). */
size_t api_job_read(api_job *j, char *buf, size_t cap);
/* True once api_job_finish ran and every byte was read; *r (if not NULL) then holds the result. */
bool api_job_done(api_job *j, api_result *r);
/* Sets the cancel flag (remembering when, the first time) and wakes a writer waiting for room. */
void api_job_cancel(api_job *j);
/* Milliseconds since the job was first cancelled, or -1 if it never was. */
double api_job_ms_since_cancel(const api_job *j);

#endif
