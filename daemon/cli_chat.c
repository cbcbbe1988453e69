/* edgellm chat — a terminal client of a running edgellmd, over TCP (--url) or the Unix socket
 * (--socket). Each line typed (or -p PROMPT, once) becomes a user message; the whole
 * conversation is sent to /v1/chat/completions with stream:true and the answer is printed as
 * its SSE events arrive. Not a second engine: without a daemon it only reports the error. */
#include <cJSON.h>
#include <curl/curl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/cli.h"

#define USAGE "[--socket PATH | --url URL] [-p PROMPT] [--system TEXT] [-n MAX_TOKENS] [--temp T] [--model ID]"

typedef struct chat_opts {
    const char *socket_path;
    const char *url;
    const char *prompt;       /* one-shot: send this and exit */
    const char *system;
    const char *model;
    int max_tokens;
    double temperature;       /* < 0: the server's default */
} chat_opts;

/* Bytes of the response not yet split into events, and the answer so far. */
typedef struct stream_state {
    char *pending;
    size_t len, cap;
    char *answer;
    size_t answer_len, answer_cap;
    bool failed;
} stream_state;

static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 1024;
        while (ncap < *len + n + 1)
            ncap *= 2;
        char *b = realloc(*buf, ncap);
        if (!b)
            return -1;
        *buf = b;
        *cap = ncap;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* One SSE event ("data: {...}"): prints its text, or its error. */
static void handle_event(stream_state *st, const char *event)
{
    if (strncmp(event, "data: ", 6) || !strcmp(event + 6, "[DONE]"))
        return; /* comments (": keep-alive") and the end marker */
    cJSON *j = cJSON_Parse(event + 6);
    const cJSON *err = cJSON_GetObjectItem(j, "error");
    const cJSON *delta = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta");
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(delta, "content"));
    if (err) {
        fprintf(stderr, "edgellm chat: %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(err, "message")));
        st->failed = true;
    } else if (text && *text) {
        fputs(text, stdout);
        fflush(stdout);
        if (append(&st->answer, &st->answer_len, &st->answer_cap, text, strlen(text)) < 0)
            st->failed = true;
    }
    cJSON_Delete(j);
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    stream_state *st = ud;
    if (append(&st->pending, &st->len, &st->cap, data, size * n) < 0)
        return 0;
    char *start = st->pending, *end;
    while ((end = strstr(start, "\n\n"))) {
        *end = 0;
        handle_event(st, start);
        start = end + 2;
    }
    st->len -= (size_t)(start - st->pending);
    memmove(st->pending, start, st->len + 1);
    return size * n;
}

/* Sends the conversation, streams the answer to stdout; on success appends it to msgs. */
static int ask(CURL *curl, const chat_opts *o, cJSON *msgs)
{
    cJSON *req = cJSON_CreateObject();
    if (o->model)
        cJSON_AddStringToObject(req, "model", o->model);
    cJSON_AddItemReferenceToObject(req, "messages", msgs);
    cJSON_AddBoolToObject(req, "stream", true);
    if (o->max_tokens > 0)
        cJSON_AddNumberToObject(req, "max_tokens", o->max_tokens);
    if (o->temperature >= 0)
        cJSON_AddNumberToObject(req, "temperature", o->temperature);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    char url[1024];
    snprintf(url, sizeof url, "%s/v1/chat/completions", o->socket_path ? "http://localhost" : o->url);
    stream_state st = {0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &st);
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    int rc = 0;
    if (cc != CURLE_OK) {
        fprintf(stderr, "edgellm chat: %s: %s\n", o->socket_path ? o->socket_path : o->url, curl_easy_strerror(cc));
        rc = 1;
    } else if (status != 200) {
        /* an error reply is one JSON object, not an event stream */
        cJSON *j = cJSON_Parse(st.pending ? st.pending : "");
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message"));
        fprintf(stderr, "edgellm chat: HTTP %ld: %s\n", status, msg ? msg : "(no message)");
        cJSON_Delete(j);
        rc = 1;
    } else if (st.failed) {
        rc = 1;
    } else {
        putchar('\n');
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", st.answer ? st.answer : "");
        cJSON_AddItemToArray(msgs, m);
    }
    curl_slist_free_all(h);
    free(body);
    free(st.pending);
    free(st.answer);
    return rc;
}

static void add_message(cJSON *msgs, const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
}

int cli_chat(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, 0, 'S'}, {"url", required_argument, 0, 'U'},
        {"prompt", required_argument, 0, 'p'}, {"system", required_argument, 0, 'Y'},
        {"n-predict", required_argument, 0, 'n'}, {"temp", required_argument, 0, 'T'},
        {"model", required_argument, 0, 'M'}, {"help", no_argument, 0, 'h'}, {0}};
    chat_opts o = {.url = "http://127.0.0.1:8080", .temperature = -1};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "p:n:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'S': o.socket_path = optarg; break;
        case 'U': o.url = optarg; break;
        case 'p': o.prompt = optarg; break;
        case 'Y': o.system = optarg; break;
        case 'n': o.max_tokens = atoi(optarg); break;
        case 'T': o.temperature = atof(optarg); break;
        case 'M': o.model = optarg; break;
        case 'h': printf("usage: edgellm chat %s\n", USAGE); return 0;
        default: return cli_usage("chat", USAGE, "unknown option");
        }
    }
    if (optind < argc)
        return cli_usage("chat", USAGE, "unexpected argument '%s'", argv[optind]);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        return cli_usage("chat", USAGE, "libcurl failed to initialise");
    CURL *curl = curl_easy_init();
    if (o.socket_path)
        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, o.socket_path);
    cJSON *msgs = cJSON_CreateArray();
    if (o.system)
        add_message(msgs, "system", o.system);
    int rc = 0;
    if (o.prompt) {
        add_message(msgs, "user", o.prompt);
        rc = ask(curl, &o, msgs);
    } else {
        bool tty = isatty(STDIN_FILENO);
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        for (;;) {
            if (tty) {
                fputs("> ", stdout);
                fflush(stdout);
            }
            if ((n = getline(&line, &cap, stdin)) <= 0)
                break;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = 0;
            if (!n)
                continue;
            add_message(msgs, "user", line);
            if ((rc = ask(curl, &o, msgs)) != 0)
                cJSON_DeleteItemFromArray(msgs, cJSON_GetArraySize(msgs) - 1); /* let the user retry */
        }
        free(line);
    }
    cJSON_Delete(msgs);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    return rc;
}
