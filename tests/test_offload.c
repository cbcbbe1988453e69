/* test_offload — daemon/offload.c: the decision table (every mode x trigger x never header x
 * route field), the body asked of the cloud, and real exchanges through libcurl on a libuv
 * loop against a scripted HTTP server in this process: a streamed answer cut at awkward
 * places, a plain JSON answer, 5xx, a malformed body, an error object in the stream, a
 * stream cut short before and after the first text (the latter ends the client's stream
 * with an error frame), a refused connection, a server that never answers (time-out), usage
 * numbers no int32 can hold, and the API key going only into the Authorization header. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/offload.h"
#include "tests/testutil.h"

/* ---- the decision table ------------------------------------------------------------- */

START_TEST(decision_table)
{
    static const offload_reason triggers[] = {OFFLOAD_NO_TRIGGER, OFFLOAD_QUEUE_FULL, OFFLOAD_DEADLINE, OFFLOAD_CONTEXT,
                                              OFFLOAD_NO_MODEL};
    for (int mode = CFG_OFFLOAD_OFF; mode <= CFG_OFFLOAD_PREFER; mode++)
        for (int configured = 0; configured < 2; configured++)
            for (size_t t = 0; t < sizeof triggers / sizeof triggers[0]; t++)
                for (int never = 0; never < 2; never++)
                    for (int target = API_TARGET_AUTO; target <= API_TARGET_CLOUD; target++) {
                        offload_reason why = OFFLOAD_NO_TRIGGER, trig = triggers[t];
                        offload_route got = offload_decide((cfg_offload_mode)mode, configured, trig, never,
                                                           (api_target)target, &why);
                        bool allowed = configured && mode != CFG_OFFLOAD_OFF && !never;
                        offload_route want;
                        offload_reason want_why = OFFLOAD_NO_TRIGGER;
                        if (target == API_TARGET_LOCAL) {
                            want = OFFLOAD_ROUTE_LOCAL;
                        } else if (target == API_TARGET_CLOUD) {
                            want = allowed ? OFFLOAD_ROUTE_CLOUD : OFFLOAD_ROUTE_REFUSE;
                            want_why = OFFLOAD_REQUESTED;
                        } else if (allowed && trig != OFFLOAD_NO_TRIGGER) {
                            want = OFFLOAD_ROUTE_CLOUD;
                            want_why = trig;
                        } else if (allowed && mode == CFG_OFFLOAD_PREFER) {
                            want = OFFLOAD_ROUTE_CLOUD;
                            want_why = OFFLOAD_PREFERRED;
                        } else {
                            want = OFFLOAD_ROUTE_LOCAL;
                        }
                        ck_assert_msg(got == want, "mode %d configured %d trigger %s never %d target %d: route %d",
                                      mode, configured, offload_reason_name(trig), never, target, got);
                        if (want == OFFLOAD_ROUTE_CLOUD || want == OFFLOAD_ROUTE_REFUSE)
                            ck_assert_msg(why == want_why, "reason %s, expected %s", offload_reason_name(why),
                                          offload_reason_name(want_why));
                    }
    /* spot checks of the rows that matter most */
    offload_reason why;
    ck_assert_int_eq(offload_decide(CFG_OFFLOAD_FALLBACK, true, OFFLOAD_NO_TRIGGER, false, API_TARGET_AUTO, &why),
                     OFFLOAD_ROUTE_LOCAL);
    ck_assert_int_eq(offload_decide(CFG_OFFLOAD_FALLBACK, true, OFFLOAD_QUEUE_FULL, true, API_TARGET_AUTO, &why),
                     OFFLOAD_ROUTE_LOCAL);
    ck_assert_int_eq(offload_decide(CFG_OFFLOAD_PREFER, true, OFFLOAD_NO_TRIGGER, true, API_TARGET_CLOUD, &why),
                     OFFLOAD_ROUTE_REFUSE);
    ck_assert_str_eq(offload_reason_name(OFFLOAD_QUEUE_FULL), "queue_full");
    ck_assert_str_eq(offload_outcome_name(OFFLOAD_E_TIMEOUT), "timeout");
}
END_TEST

static api_req *parse(api_kind kind, const char *body)
{
    api_req *r = NULL;
    err_info ei = {0};
    ck_assert_msg(api_req_parse(&r, kind, body, strlen(body), &ei) == 0, "%s", ei.msg);
    return r;
}

START_TEST(request_body)
{
    api_req *r = parse(API_KIND_CHAT, "{\"messages\":[{\"role\":\"system\",\"content\":\"Be \\\"brief\\\".\"},"
                                      "{\"role\":\"user\",\"content\":\"Hi\"}],\"temperature\":0.7,\"seed\":42,"
                                      "\"stop\":[\"x\",\"y\"],\"top_k\":5,\"presence_penalty\":0.5}");
    char *body = NULL;
    err_info ei = {0};
    ck_assert_int_eq(offload_body(r, "gpt-x", 33, &body, &ei), 0);
    ck_assert_str_eq(body, "{\"model\":\"gpt-x\",\"messages\":[{\"role\":\"system\",\"content\":\"Be \\\"brief\\\".\"},"
                           "{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":33,\"temperature\":0.7,"
                           "\"top_p\":0.95,\"presence_penalty\":0.5,\"seed\":42,\"stop\":[\"x\",\"y\"],"
                           "\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    free(body);
    api_req_free(r);
    r = parse(API_KIND_COMPLETION, "{\"prompt\":\"Once\",\"temperature\":0}");
    ck_assert_int_eq(offload_body(r, NULL, 8, &body, &ei), 0);
    ck_assert_str_eq(body, "{\"prompt\":\"Once\",\"max_tokens\":8,\"temperature\":0,\"top_p\":0.95,\"stream\":true,"
                           "\"stream_options\":{\"include_usage\":true}}");
    free(body);
    api_req_free(r);
}
END_TEST

/* ---- a scripted cloud ------------------------------------------------------------------------- */

/* What the server sends: pieces with a short pause between them (so the client sees them
 * in separate reads); NULL ends. hang: read the request, then send nothing until the client
 * gives up. */
typedef struct script {
    const char *pieces[8];
    bool hang;
} script;

static struct {
    int listen_fd, port;
    pthread_t thread;
    const script *script;
    char request[8192];      /* the last request, headers and body */
    pthread_mutex_t mu;
} srv;

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(srv.listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        char req[8192];
        size_t n = 0;
        ssize_t k;
        /* the headers, then Content-Length bytes of body */
        while (n < sizeof req - 1 && (k = recv(fd, req + n, sizeof req - 1 - n, 0)) > 0) {
            n += (size_t)k;
            req[n] = 0;
            char *end = strstr(req, "\r\n\r\n"), *cl = strcasestr(req, "content-length:");
            if (end && cl && n >= (size_t)(end + 4 - req) + strtoul(cl + 15, NULL, 10))
                break;
        }
        pthread_mutex_lock(&srv.mu);
        memcpy(srv.request, req, n + 1);
        const script *s = srv.script;
        pthread_mutex_unlock(&srv.mu);
        if (s->hang) {
            char b[64];
            while (recv(fd, b, sizeof b, 0) > 0) /* until the client closes */
                ;
        }
        for (int i = 0; !s->hang && s->pieces[i]; i++) {
            if (send(fd, s->pieces[i], strlen(s->pieces[i]), MSG_NOSIGNAL) < 0)
                break;
            usleep(20000);
        }
        close(fd);
    }
}

static void server_start(void)
{
    pthread_mutex_init(&srv.mu, NULL);
    srv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(srv.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(srv.listen_fd, 8), 0);
    getsockname(srv.listen_fd, (struct sockaddr *)&a, &len);
    srv.port = ntohs(a.sin_port);
    pthread_create(&srv.thread, NULL, serve, NULL);
}

static void server_stop(void)
{
    shutdown(srv.listen_fd, SHUT_RDWR);
    close(srv.listen_fd);
    pthread_join(srv.thread, NULL);
    pthread_mutex_destroy(&srv.mu);
}

#define SSE_HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
#define CHUNK(text) "data: {\"choices\":[{\"index\":0,\"text\":\"" text "\",\"finish_reason\":null}]}\n\n"

/* What one exchange produced. */
typedef struct exchange {
    bool finished;
    offload_outcome out;
    bool committed;
    api_result res;
    api_source source;
    bool source_committed;
    char client[16384];      /* what the client's connection would have sent */
    size_t client_len;
} exchange;

static void on_done(void *ud, api_job *job, offload_outcome out, bool committed, api_result *res)
{
    exchange *x = ud;
    x->finished = true;
    x->out = out;
    x->committed = committed;
    x->res = *res;
    x->source_committed = api_job_committed(job, &x->source);
    x->client_len = api_job_read(job, x->client, sizeof x->client - 1);
    x->client[x->client_len] = 0;
    api_job_unref(job);
    uv_stop(uv_default_loop());
}

/* One exchange of body (a completion request) against the script, or against url. */
static void run(const script *s, const char *url, const char *body, exchange *x)
{
    memset(x, 0, sizeof *x);
    pthread_mutex_lock(&srv.mu);
    srv.script = s;
    srv.request[0] = 0;
    pthread_mutex_unlock(&srv.mu);
    cfg c = {.offload_connect_timeout_ms = 1000, .offload_timeout_ms = 400, .offload_mode = CFG_OFFLOAD_FALLBACK};
    if (url)
        snprintf(c.offload_url, sizeof c.offload_url, "%s", url);
    else
        snprintf(c.offload_url, sizeof c.offload_url, "http://127.0.0.1:%d/v1/", srv.port);
    setenv("EDGELLM_OFFLOAD_KEY", "sk-test-123", 1);
    offload *o;
    err_info ei = {0};
    ck_assert_msg(offload_new(&o, uv_default_loop(), &c, NULL, &ei) == 0, "%s", ei.msg);
    ck_assert(offload_configured(o));
    ck_assert_ptr_null(strstr(offload_describe(o), "sk-test"));
    api_job *job;
    ck_assert_int_eq(api_job_new(&job, parse(API_KIND_COMPLETION, body), 1024, &ei), 0);
    api_sse_init(api_job_sse(job), false, "local-model", 1, 1700000000);
    api_job_capture(job);
    ck_assert_int_eq(offload_submit(o, job, OFFLOAD_REQUESTED, "cloud-model", 16, on_done, x, &ei), 0);
    ck_assert_int_eq(offload_in_flight(o), 1);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    ck_assert(x->finished);
    ck_assert_int_eq(offload_in_flight(o), 0);
    offload_free(o);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT); /* the handles' close callbacks */
}

/* The client's stream ends with [DONE]. */
static void expect_done(const exchange *x)
{
    size_t n = strlen(x->client), done = strlen(API_SSE_DONE);
    ck_assert_uint_ge(n, done);
    ck_assert_str_eq(x->client + n - done, API_SSE_DONE);
}

static const script sse_ok = {.pieces = {SSE_HEAD "data: {\"choices\":[{\"index\":0,\"text\":\"Hel",
                               "lo\",\"finish_reason\":null}]}\n\n: a comment\n\n" CHUNK(" w\\u00f6rld"),
                               "data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\r\n\r\n"
                               "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\n",
                               "data: [DONE]\n\n", NULL}};

START_TEST(streamed_answer_not_streamed_to_client)
{
    exchange x;
    run(&sse_ok, NULL, "{\"prompt\":\"Once\",\"max_tokens\":16}", &x);
    ck_assert_int_eq(x.out, OFFLOAD_OK);
    ck_assert_str_eq(x.client, "Hello w\xc3\xb6rld"); /* the bare text: the HTTP layer wraps it */
    ck_assert_str_eq(x.res.finish_reason, "length");
    ck_assert_int_eq(x.res.n_prompt, 4);
    ck_assert_int_eq(x.res.n_generated, 3);
    ck_assert(x.source_committed);
    ck_assert_int_eq(x.source, API_SOURCE_CLOUD);
    /* what the cloud was asked, and how */
    ck_assert_ptr_nonnull(strstr(srv.request, "POST /v1/completions HTTP/1.1"));
    ck_assert_ptr_nonnull(strstr(srv.request, "Authorization: Bearer sk-test-123\r\n"));
    ck_assert_ptr_nonnull(strstr(srv.request, "\"model\":\"cloud-model\""));
    ck_assert_ptr_nonnull(strstr(srv.request, "\"stream\":true"));
}
END_TEST

START_TEST(streamed_answer_streamed_to_client)
{
    exchange x;
    run(&sse_ok, NULL, "{\"prompt\":\"Once\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}", &x);
    ck_assert_int_eq(x.out, OFFLOAD_OK);
    ck_assert(x.committed);
    /* our own chunk format, under the local id and model name */
    ck_assert_ptr_nonnull(strstr(x.client, "data: {\"id\":\"cmpl-0000000000000001\",\"object\":\"text_completion\","
                                           "\"created\":1700000000,\"model\":\"local-model\",\"choices\":[{\"index\":0,"
                                           "\"text\":\"Hello\",\"logprobs\":null,\"finish_reason\":null}]}\n\n"));
    ck_assert_ptr_nonnull(strstr(x.client, "\"text\":\" w\xc3\xb6rld\""));
    ck_assert_ptr_nonnull(strstr(x.client, "\"finish_reason\":\"length\""));
    ck_assert_ptr_nonnull(strstr(x.client, "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3,\"total_tokens\":7}"));
    expect_done(&x);
}
END_TEST

START_TEST(json_answer)
{
    static const script s = {.pieces = {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                              "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"plain\"},",
                              "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}",
                              NULL}};
    exchange x;
    run(&s, NULL, "{\"prompt\":\"Once\"}", &x);
    ck_assert_int_eq(x.out, OFFLOAD_OK);
    ck_assert_str_eq(x.client, "plain");
    ck_assert_str_eq(x.res.finish_reason, "stop");
    ck_assert_int_eq(x.res.n_generated, 1);
}
END_TEST

/* Failures before anything reached the client: nothing written, not committed, so the
 * router may still fall back. */
START_TEST(failures_before_the_answer)
{
    static const script status = {.pieces = {"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                   "Connection: close\r\n\r\n{\"error\":{\"message\":\"overloaded, key sk-test-123\"}}",
                                   NULL}};
    static const script garbage = {.pieces = {SSE_HEAD "data: {not json\n\n", NULL}};
    static const script error_obj = {.pieces = {SSE_HEAD "data: {\"error\":{\"message\":\"bad\"}}\n\n", NULL}};
    static const script cut = {.pieces = {SSE_HEAD "data: {\"choices\":[{\"index\":0,\"text\":\"\"}]}\n\n", NULL}};
    static const script empty = {.pieces = {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", NULL}};
    static const script hang = {.hang = true};
    static const struct { const script *s; offload_outcome want; } cases[] = {
        {&status, OFFLOAD_E_STATUS}, {&garbage, OFFLOAD_E_MALFORMED}, {&error_obj, OFFLOAD_E_STATUS},
        {&cut, OFFLOAD_E_MALFORMED}, {&empty, OFFLOAD_E_MALFORMED}, {&hang, OFFLOAD_E_TIMEOUT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int stream = 0; stream < 2; stream++) {
            exchange x;
            run(cases[i].s, NULL, stream ? "{\"prompt\":\"a\",\"stream\":true}" : "{\"prompt\":\"a\"}", &x);
            ck_assert_msg(x.out == cases[i].want, "case %zu stream %d: %s", i, stream, offload_outcome_name(x.out));
            ck_assert_msg(!x.committed && !x.source_committed && x.client_len == 0, "case %zu: committed", i);
        }
    }
}
END_TEST

START_TEST(refused_connection)
{
    /* a port that was just free: nothing listens there */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", ntohs(a.sin_port));
    exchange x;
    run(&sse_ok, url, "{\"prompt\":\"a\"}", &x);
    ck_assert_int_eq(x.out, OFFLOAD_E_REFUSED);
    ck_assert(!x.committed);
}
END_TEST

/* Cut short after text reached a streaming client: no fallback is possible; the stream is
 * closed with an error frame and [DONE]. */
START_TEST(failure_mid_stream)
{
    static const script s = {.pieces = {SSE_HEAD CHUNK("partial"), NULL}};
    exchange x;
    run(&s, NULL, "{\"prompt\":\"a\",\"stream\":true}", &x);
    ck_assert_int_eq(x.out, OFFLOAD_E_MALFORMED);
    ck_assert(x.committed);
    ck_assert_int_lt(x.res.code, 0);
    ck_assert_int_eq(api_result_err(&x.res), API_E_UPSTREAM);
    ck_assert_ptr_nonnull(strstr(x.client, "\"text\":\"partial\""));
    ck_assert_ptr_nonnull(strstr(x.client, "data: {\"error\":{\"message\":\"the cloud endpoint failed mid-answer"));
    expect_done(&x);
}
END_TEST

/* A cloud whose usage numbers are absurd (beyond int32, negative, fractional, not numbers):
 * they are ignored rather than converted (a double outside int32 is undefined behaviour;
 * on x86 it came out as -2147483648 prompt tokens). */
START_TEST(absurd_usage_numbers)
{
    static const char *const usages[] = {
        "\"usage\":{\"prompt_tokens\":1e300,\"completion_tokens\":-5}",
        "\"usage\":{\"prompt_tokens\":2.5,\"completion_tokens\":\"7\"}",
    };
    for (size_t i = 0; i < sizeof usages / sizeof usages[0]; i++) {
        char answer[256];
        snprintf(answer, sizeof answer, "{\"choices\":[{\"index\":0,\"text\":\"ok\",\"finish_reason\":\"stop\"}],%s}",
                 usages[i]);
        const script s = {.pieces = {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
                                     answer, NULL}};
        exchange x;
        run(&s, NULL, "{\"prompt\":\"a\"}", &x);
        ck_assert_int_eq(x.out, OFFLOAD_OK);
        ck_assert_str_eq(x.client, "ok");
        ck_assert_msg(x.res.n_prompt == 0 && x.res.n_generated == 0, "%s: counts %d, %d", usages[i], x.res.n_prompt,
                      x.res.n_generated);
    }
}
END_TEST

START_TEST(bad_key_refused)
{
    cfg c = {.offload_connect_timeout_ms = 1000, .offload_timeout_ms = 1000};
    snprintf(c.offload_url, sizeof c.offload_url, "http://127.0.0.1:1/v1");
    setenv("EDGELLM_OFFLOAD_KEY", "sk-bad\r\nX-Injected: 1", 1);
    offload *o = NULL;
    err_info ei = {0};
    ck_assert_int_eq(offload_new(&o, uv_default_loop(), &c, NULL, &ei), -EINVAL);
    ck_assert_ptr_null(strstr(ei.msg, "sk-bad")); /* the key is never echoed */
    unsetenv("EDGELLM_OFFLOAD_KEY");
    snprintf(c.offload_key_file, sizeof c.offload_key_file, "/nonexistent/key");
    ck_assert_int_eq(offload_new(&o, uv_default_loop(), &c, NULL, &ei), -ENOENT);
    ck_assert_ptr_nonnull(strstr(ei.msg, "/nonexistent/key"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("offload");
    TCase *tc = tcase_create("offload");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, server_start, server_stop);
    tcase_add_test(tc, decision_table);
    tcase_add_test(tc, request_body);
    tcase_add_test(tc, streamed_answer_not_streamed_to_client);
    tcase_add_test(tc, streamed_answer_streamed_to_client);
    tcase_add_test(tc, json_answer);
    tcase_add_test(tc, failures_before_the_answer);
    tcase_add_test(tc, refused_connection);
    tcase_add_test(tc, failure_mid_stream);
    tcase_add_test(tc, bad_key_refused);
    tcase_add_test(tc, absurd_usage_numbers);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
