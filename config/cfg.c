/* cfg — see cfg.h. One row per setting in `options`; the file, environment and flag
 * readers all go through set_value, so a value means the same wherever it comes from. */
#include "cfg.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OPT_BOOL: a flag that takes no value ("--no-cache"; "--no-cache=false" also works),
 * true/false/1/0 elsewhere. OPT_ENUM: one of the '|'-separated names in `choices`, stored as
 * its index (the matching enum of cfg.h lists them in the same order). */
typedef enum opt_kind { OPT_STR, OPT_INT32, OPT_INT64, OPT_BOOL, OPT_ENUM } opt_kind;

typedef struct opt {
    const char *name;     /* flag without "--"; env and JSON spell it EDGELLM_NAME / name */
    opt_kind kind;
    size_t offset;        /* into cfg */
    size_t size;          /* of the field (strings: buffer incl. NUL) */
    int base;             /* integers: 10, or 8 for permission bits */
    int64_t min, max;     /* integers: accepted range */
    const char *help;
    const char *choices;  /* OPT_ENUM: "a|b|c" */
    bool live;            /* SIGHUP applies a new value; otherwise it needs a restart */
} opt;

/* when: LIVE (a reload applies it) or RESTART (fixed once the daemon runs: sockets, threads,
 * the context, what the HTTP layer and the cache were opened with, where models come from). */
enum { RESTART = 0, LIVE = 1 };
#define STR_OPT(name, field, when, help) \
    {name, OPT_STR, offsetof(cfg, field), sizeof(((cfg *)0)->field), 0, 0, 0, help, NULL, when}
#define INT_OPT(name, field, when, base, lo, hi, help) \
    {name, OPT_INT32, offsetof(cfg, field), sizeof(int32_t), base, lo, hi, help, NULL, when}
#define INT64_OPT(name, field, when, lo, hi, help) \
    {name, OPT_INT64, offsetof(cfg, field), sizeof(int64_t), 10, lo, hi, help, NULL, when}
#define BOOL_OPT(name, field, when, help) \
    {name, OPT_BOOL, offsetof(cfg, field), sizeof(int32_t), 0, 0, 1, help, NULL, when}
#define ENUM_OPT(name, field, when, choices, help) \
    {name, OPT_ENUM, offsetof(cfg, field), sizeof(int32_t), 0, 0, 0, help, choices, when}

static const opt options[] = {
    STR_OPT("model", model, RESTART, "GGUF file to serve, or the name of one in --models-dir: the default model"),
    STR_OPT("models-dir", models_dir, RESTART, "directory whose *.gguf files are served by name (\"model\" field)"),
    INT_OPT("model-keep-alive-s", model_keep_alive_s, LIVE, 10, -1, 365 * 86400,
            "unload a model idle this long (not the default model); -1 = never"),
    BOOL_OPT("no-shm", no_shm, RESTART, "map model files instead of sharing one copy in /dev/shm"),
    BOOL_OPT("mlock", mlock, LIVE, "lock shared model copies in RAM (needs LimitMEMLOCK)"),
    BOOL_OPT("shm-verify", shm_verify, LIVE, "re-hash a shared copy made earlier before trusting it"),
    INT_OPT("memory-budget-mb", memory_budget_mb, LIVE, 10, 0, INT32_MAX,
            "MiB of model weights held in memory at once; 0 = as much as the machine has"),
    STR_OPT("host", host, RESTART, "TCP address to listen on; empty disables TCP"),
    INT_OPT("port", port, RESTART, 10, 0, 65535, "TCP port; 0 picks a free one"),
    STR_OPT("socket", socket_path, RESTART, "Unix socket path to listen on as well"),
    INT_OPT("socket-mode", socket_mode, RESTART, 8, 0, 0777, "permission bits of the Unix socket (octal)"),
    INT_OPT("threads", threads, RESTART, 10, 0, 1024, "inference threads; 0 = one per physical core"),
    INT_OPT("ctx", ctx, RESTART, 10, 0, 1 << 20, "context length in tokens; 0 = the model's, capped at 4096"),
    INT_OPT("queue", queue, LIVE, 10, 0, 4096, "requests allowed to wait behind the running one"),
    STR_OPT("chat-template", chat_template, RESTART, "chat format (chatml, llama2, llama3, ...); default: detect"),
    INT_OPT("max-tokens", max_tokens, LIVE, 10, 1, 1 << 20, "default max_tokens of a request"),
    INT_OPT("timeout-ms", timeout_ms, LIVE, 10, 1, INT32_MAX, "default request deadline, queue wait included"),
    INT_OPT("read-timeout-ms", read_timeout_ms, RESTART, 10, 1, INT32_MAX, "a request slower to arrive gets 408"),
    INT_OPT("idle-timeout-s", idle_timeout_s, RESTART, 10, 1, 86400, "idle keep-alive connections close after this"),
    INT_OPT("keepalive-ms", keepalive_ms, RESTART, 10, 10, 3600000, "SSE comment period while a stream waits"),
    INT_OPT("grace-ms", grace_ms, LIVE, 10, 0, 3600000, "SIGTERM: time in-flight requests get to finish"),
    INT_OPT("max-conns", max_conns, RESTART, 10, 1, 100000, "concurrent connections per listener"),
    INT64_OPT("body-limit", body_limit, RESTART, 1, (int64_t)1 << 32, "largest request body in bytes (413 beyond)"),
    STR_OPT("state-dir", state_dir, RESTART, "state directory; \"\" = $STATE_DIRECTORY, else ~/.local/state/edgellm"),
    STR_OPT("cache-db", cache_db, RESTART, "response cache database (SQLite); \"\" = <state-dir>/cache.db"),
    BOOL_OPT("no-cache", no_cache, LIVE, "never answer from or store into the response cache"),
    ENUM_OPT("cache-scope", cache_scope, LIVE, "deterministic|all",
             "cache deterministic requests only (temperature 0 or a seed), or all"),
    INT_OPT("cache-ttl-s", cache_ttl_s, RESTART, 10, 0, INT32_MAX, "cached answers expire after this; 0 = never"),
    INT64_OPT("cache-max-bytes", cache_max_bytes, RESTART, 4096, (int64_t)1 << 40,
              "cache size limit; least recently used answers are evicted"),
    STR_OPT("offload-url", offload_url, LIVE, "cloud OpenAI-compatible base URL (https://host/v1); empty = no offload"),
    ENUM_OPT("offload-mode", offload_mode, LIVE, "off|fallback|prefer",
             "off, fallback (only when the device cannot serve) or prefer (cloud first)"),
    STR_OPT("offload-key-file", offload_key_file, LIVE, "file with the cloud API key (else env EDGELLM_OFFLOAD_KEY)"),
    STR_OPT("offload-model", offload_model, LIVE, "model name asked of the cloud; \"\" = the local model id"),
    INT_OPT("offload-connect-timeout-ms", offload_connect_timeout_ms, LIVE, 10, 1, INT32_MAX,
            "cloud connection time-out (then local fallback)"),
    INT_OPT("offload-timeout-ms", offload_timeout_ms, LIVE, 10, 1, INT32_MAX,
            "cloud exchange time-out (then local fallback)"),
    BOOL_OPT("offload-audit-content", offload_audit_content, LIVE, "keep request and answer text in the offload audit"),
};
enum { N_OPTIONS = sizeof options / sizeof options[0] };

static void set_defaults(cfg *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->host, "127.0.0.1");
    c->port = 8080;
    c->socket_mode = 0660;
    c->queue = 16;
    c->max_tokens = 512;
    c->timeout_ms = 600000;
    c->read_timeout_ms = 10000;
    c->idle_timeout_s = 60;
    c->keepalive_ms = 5000;
    c->grace_ms = 10000;
    c->max_conns = 256;
    c->body_limit = 1 << 20;
    c->cache_scope = CFG_CACHE_DETERMINISTIC;
    c->cache_ttl_s = 7 * 86400;
    c->cache_max_bytes = 64 << 20;
    c->offload_mode = CFG_OFFLOAD_FALLBACK;
    c->offload_connect_timeout_ms = 2000;
    c->offload_timeout_ms = 60000;
    c->model_keep_alive_s = 300; /* Ollama's default: a model asked for again soon stays */
}

/* The index-th of the '|'-separated names of choices (its length in *len), NULL past the end. */
static const char *choice_at(const char *choices, int index, size_t *len)
{
    const char *p = choices;
    for (int i = 0; i < index && p; i++)
        if ((p = strchr(p, '|')))
            p++;
    if (p)
        *len = strcspn(p, "|");
    return p;
}

/* Index of text among the names of choices, -1 when absent. */
static int choice_index(const char *choices, const char *text)
{
    size_t len;
    const char *name;
    for (int i = 0; (name = choice_at(choices, i, &len)); i++)
        if (len == strlen(text) && !memcmp(name, text, len))
            return i;
    return -1;
}

/* Parses text into o's field of c. where names the source for the error message. */
static int set_value(cfg *c, const opt *o, const char *text, const char *where, err_info *ei)
{
    char *field = (char *)c + o->offset;
    if (o->kind == OPT_STR) {
        size_t n = strlen(text);
        if (n >= o->size)
            return err_set(ei, -ERR_RANGE, "%s: longer than %zu bytes", where, o->size - 1);
        memcpy(field, text, n + 1);
        return 0;
    }
    if (o->kind == OPT_BOOL || o->kind == OPT_ENUM) {
        int v = o->kind == OPT_ENUM ? choice_index(o->choices, text)
                : !strcmp(text, "true") || !strcmp(text, "1") ? 1
                : !strcmp(text, "false") || !strcmp(text, "0") ? 0 : -1;
        if (v < 0)
            return err_set(ei, -EINVAL, "%s: '%s' is not one of %s", where, text,
                           o->kind == OPT_ENUM ? o->choices : "true|false");
        *(int32_t *)field = v;
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, o->base);
    if (end == text || *end || errno)
        return err_set(ei, -EINVAL, "%s: '%s' is not %s integer", where, text,
                       o->base == 8 ? "an octal" : "an");
    if (v < o->min || v > o->max)
        return err_set(ei, -ERR_RANGE, "%s: %lld is outside [%lld, %lld] (%s)", where, v, (long long)o->min,
                       (long long)o->max, o->help);
    if (o->kind == OPT_INT32)
        *(int32_t *)field = (int32_t)v;
    else
        *(int64_t *)field = v;
    return 0;
}

static const opt *find_flag(const char *name, size_t len)
{
    for (int i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].name) == len && !memcmp(options[i].name, name, len))
            return &options[i];
    return NULL;
}

/* "chat-template" -> "chat_template" (JSON) or "EDGELLM_CHAT_TEMPLATE" (env). */
static void spell(const char *name, const char *prefix, bool upper, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (; *name && n + 1 < cap; name++)
        out[n++] = *name == '-' ? '_' : upper ? (char)toupper((unsigned char)*name) : *name;
    out[n] = 0;
}

/* Edit distance between a and b (each at most 63 bytes counted), for "did you mean". */
static int distance(const char *a, const char *b)
{
    enum { N = 64 };
    int row[N], la = (int)strnlen(a, N - 1), lb = (int)strnlen(b, N - 1);
    for (int j = 0; j <= lb; j++)
        row[j] = j;
    for (int i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= lb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            best = up + 1 < best ? up + 1 : best;
            best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

/* The option whose JSON key is key; else NULL, with *nearest the closest key when one is
 * close enough to be a likely typo ("" otherwise). */
static const opt *find_key(const char *key, char nearest[64])
{
    int best = 4; /* more edits than this is another word, not a typo */
    nearest[0] = 0;
    for (int i = 0; i < N_OPTIONS; i++) {
        char k[64];
        spell(options[i].name, "", false, k, sizeof k);
        if (!strcmp(k, key))
            return &options[i];
        int d = distance(key, k);
        if (d < best && d < (int)strlen(k)) {
            best = d;
            memcpy(nearest, k, sizeof k);
        }
    }
    return NULL;
}

static const char *json_type(const cJSON *item)
{
    return cJSON_IsString(item) ? "a string" : cJSON_IsNumber(item) ? "a number" : cJSON_IsBool(item) ? "a boolean"
           : cJSON_IsNull(item) ? "null" : cJSON_IsArray(item) ? "an array" : "an object";
}

/* One key of the file into c. */
static int set_json(cfg *c, const cJSON *item, const char *path, err_info *ei)
{
    char where[CFG_NAME_MAX + 64], nearest[64];
    snprintf(where, sizeof where, "config file %s: key \"%s\"", path, item->string);
    const opt *o = find_key(item->string, nearest);
    if (!o)
        return nearest[0] ? err_set(ei, -EINVAL, "%s is not a setting; did you mean \"%s\"?", where, nearest)
                          : err_set(ei, -EINVAL, "%s is not a setting (edgellmd --help lists them; '_' for '-')", where);
    char num[32];
    const char *value = cJSON_GetStringValue(item);
    if (!value && cJSON_IsBool(item) && o->kind == OPT_BOOL)
        value = cJSON_IsTrue(item) ? "true" : "false";
    if (!value && cJSON_IsNumber(item) && (o->kind == OPT_INT32 || o->kind == OPT_INT64)) {
        /* range first: converting a double beyond long long (1e300) is undefined */
        if (!(fabs(item->valuedouble) < 0x1p63))
            return err_set(ei, -ERR_RANGE, "%s: %g is out of range [%lld, %lld]", where, item->valuedouble,
                           (long long)o->min, (long long)o->max);
        if (item->valuedouble != (double)(long long)item->valuedouble)
            return err_set(ei, -EINVAL, "%s: expected an integer, got %g", where, item->valuedouble);
        /* JSON has no octal: a number is taken as the value itself. */
        snprintf(num, sizeof num, o->base == 8 ? "%llo" : "%lld", (long long)item->valuedouble);
        value = num;
    }
    if (!value) {
        static const char *const expected[] = {[OPT_STR] = "a string", [OPT_INT32] = "a number",
                                               [OPT_INT64] = "a number", [OPT_BOOL] = "a boolean (true or false)",
                                               [OPT_ENUM] = "a string"};
        return err_set(ei, -ERR_TYPE, "%s: expected %s, got %s", where, expected[o->kind], json_type(item));
    }
    return set_value(c, o, value, where, ei);
}

/* What a reader does with a bad value: stop at the first (report NULL: cfg_load) or report
 * each and go on (cfg_check_file). */
typedef struct problems {
    void (*report)(void *ud, const char *problem);
    void *ud;
    int count;
} problems;

/* rc from a check that found a problem described in ei: the code to stop with, or 0 to go
 * on after reporting it. */
static int found(problems *p, int rc, const err_info *ei)
{
    if (!p || !p->report)
        return rc;
    p->report(p->ud, err_text(ei, rc));
    p->count++;
    return 0;
}

static int load_file(cfg *c, const char *path, problems *p, err_info *ei)
{
    int rc = 0;
    char *text = NULL;
    cJSON *root = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(ei, -errno, "config file %s: %s", path, strerror(errno));
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size < 0 || size > (1 << 20) || fseek(f, 0, SEEK_SET) != 0) {
        rc = err_set(ei, -ERR_FORMAT, "config file %s: unreadable or larger than 1 MiB", path);
        goto fail;
    }
    text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        rc = err_set(ei, text ? -ERR_IO : -ENOMEM, "config file %s: read failed", path);
        goto fail;
    }
    text[size] = 0;
    const char *end = text;
    root = cJSON_ParseWithLengthOpts(text, (size_t)size, &end, false);
    if (!cJSON_IsObject(root)) {
        /* where the parser stopped, as a line number: the place to look */
        int line = 1;
        for (const char *q = text; end && q < end; q++)
            line += *q == '\n';
        rc = err_set(ei, -ERR_FORMAT, "config file %s: not a JSON object (%s at line %d)", path,
                     root ? "another value" : "a syntax error", line);
        goto fail;
    }
    for (const cJSON *item = root->child; item; item = item->next) {
        err_info one = {0};
        int bad = set_json(c, item, path, &one);
        if (bad < 0 && (rc = found(p, bad, &one)) < 0) {
            *ei = one;
            goto fail;
        }
    }
fail:
    cJSON_Delete(root);
    free(text);
    fclose(f);
    return rc;
}

static int load_env(cfg *c, err_info *ei)
{
    for (int i = 0; i < N_OPTIONS; i++) {
        char var[64];
        spell(options[i].name, "EDGELLM_", true, var, sizeof var);
        const char *value = getenv(var);
        char where[80];
        snprintf(where, sizeof where, "environment %s", var);
        int rc = value ? set_value(c, &options[i], value, where, ei) : 0;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Visits each "--name value" / "--name=value" of argv. With only_config, handles --config
 * alone (it has to be read before everything else); otherwise every flag but --config. */
static int load_flags(cfg *c, int argc, char **argv, bool only_config, const char **config_path, err_info *ei)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0)
            return err_set(ei, -EINVAL, "unexpected argument '%s'", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = find_flag(name, len);
        const char *value = eq ? eq + 1 : o && o->kind == OPT_BOOL ? "true" : (i + 1 < argc ? argv[++i] : NULL);
        if (!value)
            return err_set(ei, -EINVAL, "flag --%.*s needs a value", (int)len, name);
        bool is_config = len == 6 && !memcmp(name, "config", 6);
        if (is_config) {
            if (only_config)
                *config_path = value;
            continue;
        }
        if (!o)
            return err_set(ei, -EINVAL, "unknown flag --%.*s", (int)len, name);
        char where[80];
        snprintf(where, sizeof where, "flag --%s", o->name);
        int rc = only_config ? 0 : set_value(c, o, value, where, ei);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Checks of the settings as a whole, once every source was read. */
static int validate(const cfg *c, err_info *ei)
{
    if (!c->host[0] && !c->socket_path[0])
        return err_set(ei, -EINVAL, "nothing to listen on: host and socket are both empty");
    if (c->mlock && c->no_shm)
        return err_set(ei, -EINVAL, "mlock locks the shared copies of the models: it cannot go with no-shm");
    return 0;
}

int cfg_load(cfg *c, int argc, char **argv, err_info *ei)
{
    set_defaults(c);
    const char *config_path = getenv("EDGELLM_CONFIG");
    int rc = load_flags(c, argc, argv, true, &config_path, ei);
    if (rc == 0 && config_path && *config_path)
        rc = load_file(c, config_path, NULL, ei);
    if (rc == 0)
        rc = load_env(c, ei);
    if (rc == 0)
        rc = load_flags(c, argc, argv, false, NULL, ei);
    if (rc == 0)
        rc = validate(c, ei);
    return rc;
}

int cfg_check_file(cfg *c, const char *path, void (*report)(void *ud, const char *problem), void *ud,
                   err_info *ei)
{
    set_defaults(c);
    problems p = {.report = report, .ud = ud};
    int rc = load_file(c, path, &p, ei);
    if (rc < 0)
        return rc;
    err_info whole = {0};
    if ((rc = validate(c, &whole)) < 0)
        found(&p, rc, &whole);
    return p.count;
}

/* o's value in c as the usage and the reload log show it: "text", 16, 0660, on, fallback. */
static void format_value(const opt *o, const cfg *c, char *out, size_t cap)
{
    const char *field = (const char *)c + o->offset;
    int32_t index = o->kind == OPT_BOOL || o->kind == OPT_ENUM ? *(const int32_t *)field : 0;
    size_t name_len = 0;
    const char *name;
    switch (o->kind) {
    case OPT_STR: snprintf(out, cap, "\"%s\"", field); break;
    case OPT_BOOL: snprintf(out, cap, "%s", index ? "on" : "off"); break;
    case OPT_ENUM:
        name = choice_at(o->choices, index, &name_len);
        snprintf(out, cap, "%.*s", (int)name_len, name ? name : "?");
        break;
    case OPT_INT32:
    case OPT_INT64:
        snprintf(out, cap, o->base == 8 ? "0%llo" : "%lld",
                 o->kind == OPT_INT32 ? (long long)*(const int32_t *)field : (long long)*(const int64_t *)field);
        break;
    }
}

int cfg_reload(cfg *next, const cfg *running,
               void (*changed)(void *ud, const char *name, bool live, const char *was, const char *now), void *ud)
{
    int live = 0;
    for (int i = 0; i < N_OPTIONS; i++) {
        const opt *o = &options[i];
        char *to = (char *)next + o->offset;
        const char *from = (const char *)running + o->offset;
        if (o->kind == OPT_STR ? !strcmp(to, from) : !memcmp(to, from, o->size))
            continue;
        char was[CFG_PATH_MAX + 2], now[CFG_PATH_MAX + 2];
        format_value(o, running, was, sizeof was);
        format_value(o, next, now, sizeof now);
        changed(ud, o->name, o->live, was, now);
        if (o->live)
            live++;
        else
            memcpy(to, from, o->size);
    }
    return live;
}

int cfg_usage(char *buf, size_t cap)
{
    cfg d;
    set_defaults(&d);
    size_t n = 0;
    int len = snprintf(buf, cap, "  --%-26s %s\n", "config FILE", "JSON file of settings (keys as below, '_' for '-')");
    n += (size_t)len;
    for (int i = 0; i < N_OPTIONS; i++) {
        const opt *o = &options[i];
        char def[64];
        format_value(o, &d, def, sizeof def);
        len = snprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, "  --%-26s %s (default %s%s%s)%s\n", o->name,
                       o->help, def, o->kind == OPT_ENUM ? ", of " : "", o->kind == OPT_ENUM ? o->choices : "",
                       o->live ? " [reloadable]" : "");
        n += (size_t)len;
    }
    return (int)n;
}
