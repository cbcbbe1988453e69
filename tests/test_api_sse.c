/* test_api_sse — the response side of api/: SSE frames (each a "data: <JSON>\n\n" line that
 * parses, with the right object, delta and finish_reason; text escaped; never longer than
 * API_SSE_FRAME_MAX), the error table (status, type, code per error; JSON bodies), and the
 * job channel between worker and connection (ordering across the ring's wrap, a writer
 * blocked on a full ring, cancellation, time-outs, a client hanging up). */
#include <check.h>
#include <cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/err.h"
#include "api/job.h"
#include "api/sse.h"

/* Checks the framing of one frame and returns its JSON (caller deletes). */
static cJSON *frame_json(const char *buf, int n)
{
    ck_assert_int_gt(n, 8);
    ck_assert_int_eq((int)strlen(buf), n);
    ck_assert_msg(!strncmp(buf, "data: ", 6), "frame starts with '%.10s'", buf);
    ck_assert_msg(!strcmp(buf + n - 2, "\n\n"), "frame does not end with a blank line");
    ck_assert_ptr_null(memchr(buf, '\n', (size_t)n - 2)); /* one line: no raw newline inside */
    cJSON *j = cJSON_ParseWithLength(buf + 6, (size_t)n - 8);
    ck_assert_msg(j != NULL, "frame is not JSON: %s", buf);
    return j;
}

static const cJSON *choice0(const cJSON *j)
{
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    ck_assert_ptr_nonnull(c);
    return c;
}

START_TEST(chat_frames)
{
    api_sse s;
    api_sse_init(&s, true, "qwen\"2", 0xabcULL, 1700000000);
    ck_assert_str_eq(s.id, "chatcmpl-0000000000000abc");
    char buf[API_SSE_FRAME_MAX];
    cJSON *j = frame_json(buf, api_sse_role(&s, buf, sizeof buf));
    ck_assert_str_eq(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion.chunk");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "qwen\"2");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "id")->valuestring, s.id);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "created")->valuedouble, 1700000000);
    const cJSON *delta = cJSON_GetObjectItem(choice0(j), "delta");
    ck_assert_str_eq(cJSON_GetObjectItem(delta, "role")->valuestring, "assistant");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(choice0(j), "finish_reason")));
    cJSON_Delete(j);

    const char text[] = "a\"b\\c\nd\te\x01 \xc3\xa9\xe2\x82\xac";
    j = frame_json(buf, api_sse_text(&s, text, sizeof text - 1, buf, sizeof buf));
    delta = cJSON_GetObjectItem(choice0(j), "delta");
    ck_assert_str_eq(cJSON_GetObjectItem(delta, "content")->valuestring, text);
    ck_assert_ptr_null(cJSON_GetObjectItem(delta, "role"));
    cJSON_Delete(j);

    j = frame_json(buf, api_sse_finish(&s, "length", buf, sizeof buf));
    ck_assert_str_eq(cJSON_GetObjectItem(choice0(j), "finish_reason")->valuestring, "length");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(choice0(j), "delta")), 0);
    cJSON_Delete(j);

    j = frame_json(buf, api_sse_usage(&s, 12, 30, buf, sizeof buf));
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")), 0);
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    ck_assert_int_eq(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 12);
    ck_assert_int_eq(cJSON_GetObjectItem(u, "completion_tokens")->valueint, 30);
    ck_assert_int_eq(cJSON_GetObjectItem(u, "total_tokens")->valueint, 42);
    cJSON_Delete(j);
}
END_TEST

START_TEST(completion_frames)
{
    api_sse s;
    api_sse_init(&s, false, "m", 1, 5);
    ck_assert_str_eq(s.id, "cmpl-0000000000000001");
    char buf[API_SSE_FRAME_MAX];
    cJSON *j = frame_json(buf, api_sse_text(&s, "hi", 2, buf, sizeof buf));
    ck_assert_str_eq(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion");
    ck_assert_str_eq(cJSON_GetObjectItem(choice0(j), "text")->valuestring, "hi");
    cJSON_Delete(j);
    j = frame_json(buf, api_sse_finish(&s, "stop", buf, sizeof buf));
    ck_assert_str_eq(cJSON_GetObjectItem(choice0(j), "finish_reason")->valuestring, "stop");
    ck_assert_str_eq(cJSON_GetObjectItem(choice0(j), "text")->valuestring, "");
    cJSON_Delete(j);
    j = frame_json(buf, api_sse_error(API_E_CONTEXT_LENGTH, "too long", buf, sizeof buf));
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    ck_assert_str_eq(cJSON_GetObjectItem(e, "code")->valuestring, "context_length_exceeded");
    ck_assert_str_eq(cJSON_GetObjectItem(e, "message")->valuestring, "too long");
    cJSON_Delete(j);
    ck_assert_str_eq(API_SSE_DONE, "data: [DONE]\n\n");
}
END_TEST

START_TEST(worst_case_fits_frame_max)
{
    /* control bytes escape to 6 characters each: the largest a text frame can get */
    char text[API_SSE_TEXT_MAX], model[API_SSE_MODEL_MAX + 40];
    memset(text, 0x01, sizeof text);
    memset(model, 0x02, sizeof model - 1);
    model[sizeof model - 1] = 0;
    api_sse s;
    api_sse_init(&s, true, model, UINT64_MAX, 9999999999LL);
    char buf[API_SSE_FRAME_MAX];
    int n = api_sse_text(&s, text, sizeof text, buf, sizeof buf);
    ck_assert_int_lt(n, API_SSE_FRAME_MAX);
    cJSON_Delete(frame_json(buf, n));
    /* a long model id is cut on a character boundary, never inside one */
    char euro[3 * 60 + 1] = "";
    for (int i = 0; i < 60; i++)
        strcat(euro, "\xe2\x82\xac");
    api_sse_init(&s, true, euro, 0, 0);
    ck_assert_uint_eq(strlen(s.model_json), 126); /* 42 whole characters of 3 bytes */
    /* snprintf semantics: truncation reports the full length and stays terminated */
    char small[40];
    ck_assert_int_eq(api_sse_text(&s, "x", 1, small, sizeof small), api_sse_text(&s, "x", 1, buf, sizeof buf));
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
}
END_TEST

START_TEST(json_escape)
{
    char out[64];
    ck_assert_uint_eq(api_json_escape(out, sizeof out, "a\"\\\n\r\t\x1f\x7f\xc3\xa9", 10), 20);
    ck_assert_str_eq(out, "a\\\"\\\\\\n\\r\\t\\u001f\x7f\xc3\xa9");
    ck_assert_uint_eq(api_json_escape(NULL, 0, "\n", 1), 2);
    /* malformed UTF-8 (a lead byte cut off, a stray continuation) becomes U+FFFD escapes */
    ck_assert_uint_eq(api_json_escape(out, sizeof out, "\xe5\x8d x\x80", 5), 20);
    ck_assert_str_eq(out, "\\ufffd\\ufffd x\\ufffd");
    char tiny[3];
    ck_assert_uint_eq(api_json_escape(tiny, sizeof tiny, "abcd", 4), 4);
    ck_assert_str_eq(tiny, "ab");
}
END_TEST

START_TEST(error_table)
{
    static const struct {
        api_err e;
        int status;
        const char *code;
    } rows[] = {
        {API_E_INVALID_JSON, 400, "invalid_json"},       {API_E_INVALID_PARAM, 400, "invalid_parameter"},
        {API_E_CONTEXT_LENGTH, 400, "context_length_exceeded"},
        {API_E_NOT_FOUND, 404, "not_found"},             {API_E_MODEL_NOT_FOUND, 404, "model_not_found"},
        {API_E_METHOD, 405, "method_not_allowed"},       {API_E_SLOW_CLIENT, 408, "request_timeout"},
        {API_E_TOO_LARGE, 413, "payload_too_large"},     {API_E_INTERNAL, 500, "internal_error"},
        {API_E_UPSTREAM, 502, "upstream_error"},
        {API_E_QUEUE_FULL, 503, "queue_full"},           {API_E_TIMEOUT, 503, "timeout"},
        {API_E_NO_MODEL, 503, "model_not_loaded"},       {API_E_LOADING, 503, "model_loading"},
        {API_E_SHUTTING_DOWN, 503, "shutting_down"},     {API_E_OFFLOAD_REFUSED, 503, "offload_not_allowed"},
    };
    ck_assert_int_eq(sizeof rows / sizeof rows[0], API_E_COUNT);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        ck_assert_int_eq(api_err_status(rows[i].e), rows[i].status);
        ck_assert_str_eq(api_err_code(rows[i].e), rows[i].code);
        ck_assert_str_eq(api_err_type(rows[i].e), rows[i].status < 500 ? "invalid_request_error" : "server_error");
        char body[512];
        int n = api_err_body(rows[i].e, "bad \"thing\"\n", body, sizeof body);
        ck_assert_int_eq((int)strlen(body), n);
        cJSON *j = cJSON_Parse(body);
        const cJSON *err = cJSON_GetObjectItem(j, "error");
        ck_assert_str_eq(cJSON_GetObjectItem(err, "message")->valuestring, "bad \"thing\"\n");
        ck_assert_str_eq(cJSON_GetObjectItem(err, "code")->valuestring, rows[i].code);
        ck_assert(cJSON_IsNull(cJSON_GetObjectItem(err, "param")));
        cJSON_Delete(j);
    }
    /* engine codes: client mistakes never become 500 */
    ck_assert_int_eq(api_err_from_code(-EINVAL), API_E_INVALID_PARAM);
    ck_assert_int_eq(api_err_from_code(-ERR_RANGE), API_E_INVALID_PARAM);
    ck_assert_int_eq(api_err_from_code(-ERR_TYPE), API_E_INVALID_PARAM);
    ck_assert_int_eq(api_err_from_code(-ERR_UNSUPPORTED), API_E_INVALID_PARAM);
    ck_assert_int_eq(api_err_from_code(-ERR_CONTEXT_FULL), API_E_CONTEXT_LENGTH);
    ck_assert_int_eq(api_err_from_code(-ERR_BUSY), API_E_QUEUE_FULL);
    ck_assert_int_eq(api_err_from_code(-ERR_TIMEOUT), API_E_TIMEOUT);
    ck_assert_int_eq(api_err_from_code(-ERR_CANCELLED), API_E_SHUTTING_DOWN);
    ck_assert_int_eq(api_err_from_code(-ERR_NOT_FOUND), API_E_NOT_FOUND);
    ck_assert_int_eq(api_err_from_code(-ENOMEM), API_E_INTERNAL);
    ck_assert_int_eq(api_err_from_code(-ERR_IO), API_E_INTERNAL);
}
END_TEST

static api_job *new_job(size_t ring)
{
    api_req *req = NULL;
    ck_assert_int_eq(api_req_parse(&req, API_KIND_COMPLETION, "{\"prompt\":\"x\"}", 14, NULL), 0);
    api_job *j = NULL;
    ck_assert_int_eq(api_job_new(&j, req, ring, NULL), 0);
    return j;
}

typedef struct writer {
    api_job *job;
    int n_bytes;
    int rc;
} writer;

/* Writes bytes 0, 1, 2, ... (mod 251) in odd-sized pieces, then finishes. */
static void *write_pattern(void *arg)
{
    writer *w = arg;
    char piece[97];
    int sent = 0;
    while (sent < w->n_bytes && w->rc == 0) {
        int n = w->n_bytes - sent < (int)sizeof piece ? w->n_bytes - sent : (int)sizeof piece;
        for (int i = 0; i < n; i++)
            piece[i] = (char)((sent + i) % 251);
        w->rc = api_job_write(w->job, piece, (size_t)n);
        sent += n;
    }
    api_result r = {.n_generated = sent, .finish_reason = "stop"};
    api_job_finish(w->job, &r);
    return NULL;
}

START_TEST(channel_keeps_order_across_wrap)
{
    api_job *j = new_job(1000); /* small ring: the writer wraps and waits many times */
    writer w = {.job = j, .n_bytes = 200000};
    pthread_t t;
    pthread_create(&t, NULL, write_pattern, &w);
    int got = 0;
    char buf[333];
    api_result r;
    while (!api_job_done(j, &r)) {
        size_t n = api_job_read(j, buf, sizeof buf);
        for (size_t i = 0; i < n; i++, got++)
            ck_assert_int_eq((unsigned char)buf[i], got % 251);
        if (!n)
            ck_assert_int_ne(api_job_wait(j, -1, 5000), API_WAIT_TIMEOUT);
    }
    pthread_join(t, NULL);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_int_eq(got, 200000);
    ck_assert_int_eq(r.n_generated, 200000);
    ck_assert_str_eq(r.finish_reason, "stop");
    api_job_unref(j);
}
END_TEST

START_TEST(cancel_unblocks_a_full_writer)
{
    api_job *j = new_job(64);
    writer w = {.job = j, .n_bytes = 1 << 20};
    pthread_t t;
    pthread_create(&t, NULL, write_pattern, &w);
    while (api_job_wait(j, -1, 5000) != API_WAIT_READY)
        ;
    nanosleep(&(struct timespec){0, 20000000}, NULL); /* the writer is now stuck on a full ring */
    ck_assert(!api_job_cancelled(j));
    api_job_cancel(j);
    ck_assert(api_job_cancelled(j));
    ck_assert(atomic_load(api_job_cancel_flag(j)));
    pthread_join(t, NULL);
    ck_assert_int_eq(w.rc, -ERR_CANCELLED);
    api_job_unref(j);
}
END_TEST

START_TEST(wait_timeout_and_peer_gone)
{
    api_job *j = new_job(256);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(api_job_wait(j, sv[0], 50), API_WAIT_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    ck_assert_double_ge(ms, 45);
    /* bytes from the client (say, a pipelined request) are not a hang-up */
    ck_assert_int_eq(write(sv[1], "GET", 3), 3);
    ck_assert_int_eq(api_job_wait(j, sv[0], 20), API_WAIT_TIMEOUT);
    close(sv[1]);
    ck_assert_int_eq(api_job_wait(j, sv[0], 5000), API_WAIT_PEER_GONE);
    close(sv[0]);
    ck_assert_int_eq(api_job_write(j, "ab", 2), 0);
    ck_assert_int_eq(api_job_wait(j, -1, 0), API_WAIT_READY);
    ck_assert(!api_job_done(j, NULL)); /* bytes left and not finished */
    api_result r = {.code = -ERR_TIMEOUT};
    api_job_finish(j, &r);
    ck_assert(!api_job_done(j, NULL)); /* finished, but bytes still unread */
    char buf[4];
    ck_assert_uint_eq(api_job_read(j, buf, sizeof buf), 2);
    api_result got;
    ck_assert(api_job_done(j, &got));
    ck_assert_int_eq(got.code, -ERR_TIMEOUT);
    api_job_unref(j);
}
END_TEST

static int freed;
static void count_free(void *p)
{
    freed += p == &freed;
}

START_TEST(references_and_user_data)
{
    api_job *j = new_job(16);
    api_job_set_user(j, &freed, count_free);
    ck_assert_ptr_eq(api_job_user(j), &freed);
    ck_assert_str_eq(api_job_req(j)->prompt, "x");
    api_job_ref(j);
    api_job_unref(j);
    ck_assert_int_eq(freed, 0);
    api_job_unref(j);
    ck_assert_int_eq(freed, 1);
    api_job_unref(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api_sse");
    TCase *tc = tcase_create("api_sse");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, chat_frames);
    tcase_add_test(tc, completion_frames);
    tcase_add_test(tc, worst_case_fits_frame_max);
    tcase_add_test(tc, json_escape);
    tcase_add_test(tc, error_table);
    tcase_add_test(tc, channel_keeps_order_across_wrap);
    tcase_add_test(tc, cancel_unblocks_a_full_writer);
    tcase_add_test(tc, wait_timeout_and_peer_gone);
    tcase_add_test(tc, references_and_user_data);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
