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
} opt;

#define STR_OPT(name, field, help) \
    {name, OPT_STR, offsetof(cfg, field), sizeof(((cfg *)0)->field), 0, 0, 0, help, NULL}
#define INT_OPT(name, field, base, lo, hi, help) \
    {name, OPT_INT32, offsetof(cfg, field), sizeof(int32_t), base, lo, hi, help, NULL}
#define BOOL_OPT(name, field, help) {name, OPT_BOOL, offsetof(cfg, field), sizeof(int32_t), 0, 0, 1, help, NULL}
#define ENUM_OPT(name, field, choices, help) \
    {name, OPT_ENUM, offsetof(cfg, field), sizeof(int32_t), 0, 0, 0, help, choices}

static const opt options[] = {
    STR_OPT("model", model, "GGUF model file to serve (without one the daemon starts and says so)"),
    STR_OPT("host", host, "TCP address to listen on; empty disables TCP"),
    INT_OPT("port", port, 10, 0, 65535, "TCP port; 0 picks a free one"),
    STR_OPT("socket", socket_path, "Unix socket path to listen on as well"),
    INT_OPT("socket-mode", socket_mode, 8, 0, 0777, "permission bits of the Unix socket (octal)"),
    INT_OPT("threads", threads, 10, 0, 1024, "inference threads; 0 = one per physical core"),
    INT_OPT("ctx", ctx, 10, 0, 1 << 20, "context length in tokens; 0 = the model's, capped at 4096"),
    INT_OPT("queue", queue, 10, 0, 4096, "requests allowed to wait behind the running one"),
    STR_OPT("chat-template", chat_template, "chat format (chatml, llama2, llama3, ...); default: detect"),
    INT_OPT("max-tokens", max_tokens, 10, 1, 1 << 20, "default max_tokens of a request"),
    INT_OPT("timeout-ms", timeout_ms, 10, 1, INT32_MAX, "default request deadline, queue wait included"),
    INT_OPT("read-timeout-ms", read_timeout_ms, 10, 1, INT32_MAX, "a request slower to arrive gets 408"),
    INT_OPT("idle-timeout-s", idle_timeout_s, 10, 1, 86400, "idle keep-alive connections close after this"),
    INT_OPT("keepalive-ms", keepalive_ms, 10, 10, 3600000, "SSE comment period while a stream waits"),
    INT_OPT("grace-ms", grace_ms, 10, 0, 3600000, "SIGTERM: time in-flight requests get to finish"),
    INT_OPT("max-conns", max_conns, 10, 1, 100000, "concurrent connections per listener"),
    {"body-limit", OPT_INT64, offsetof(cfg, body_limit), sizeof(int64_t), 10, 1, (int64_t)1 << 32,
     "largest request body in bytes (413 beyond)", NULL},
    STR_OPT("state-dir", state_dir, "state directory; \"\" = $STATE_DIRECTORY, else ~/.local/state/edgellm"),
    STR_OPT("cache-db", cache_db, "response cache database (SQLite); \"\" = <state-dir>/cache.db"),
    BOOL_OPT("no-cache", no_cache, "never answer from or store into the response cache"),
    ENUM_OPT("cache-scope", cache_scope, "deterministic|all",
             "cache deterministic requests only (temperature 0 or a seed), or all"),
    INT_OPT("cache-ttl-s", cache_ttl_s, 10, 0, INT32_MAX, "cached answers expire after this; 0 = never"),
    {"cache-max-bytes", OPT_INT64, offsetof(cfg, cache_max_bytes), sizeof(int64_t), 10, 4096, (int64_t)1 << 40,
     "cache size limit; least recently used answers are evicted", NULL},
    STR_OPT("offload-url", offload_url, "cloud OpenAI-compatible base URL (https://host/v1); empty = no offload"),
    ENUM_OPT("offload-mode", offload_mode, "off|fallback|prefer",
             "off, fallback (only when the device cannot serve) or prefer (cloud first)"),
    STR_OPT("offload-key-file", offload_key_file, "file with the cloud API key (else env EDGELLM_OFFLOAD_KEY)"),
    STR_OPT("offload-model", offload_model, "model name asked of the cloud; \"\" = the local model id"),
    INT_OPT("offload-connect-timeout-ms", offload_connect_timeout_ms, 10, 1, INT32_MAX,
            "cloud connection time-out (then local fallback)"),
    INT_OPT("offload-timeout-ms", offload_timeout_ms, 10, 1, INT32_MAX, "cloud exchange time-out (then local fallback)"),
    BOOL_OPT("offload-audit-content", offload_audit_content, "keep request and answer text in the offload audit"),
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
        return err_set(ei, -ERR_RANGE, "%s: %lld is outside [%lld, %lld]", where, v, (long long)o->min,
                       (long long)o->max);
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

static int load_file(cfg *c, const char *path, err_info *ei)
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
    root = cJSON_ParseWithLength(text, (size_t)size);
    if (!cJSON_IsObject(root)) {
        rc = err_set(ei, -ERR_FORMAT, "config file %s: not a JSON object", path);
        goto fail;
    }
    for (const cJSON *item = root->child; item; item = item->next) {
        const opt *o = NULL;
        char key[64];
        for (int i = 0; i < N_OPTIONS && !o; i++) {
            spell(options[i].name, "", false, key, sizeof key);
            if (!strcmp(key, item->string))
                o = &options[i];
        }
        char where[CFG_NAME_MAX + 64];
        snprintf(where, sizeof where, "config file %s: key \"%s\"", path, item->string);
        if (!o) {
            rc = err_set(ei, -EINVAL, "%s is not a setting", where);
            goto fail;
        }
        char num[32];
        const char *value = cJSON_GetStringValue(item);
        if (!value && cJSON_IsBool(item) && o->kind == OPT_BOOL)
            value = cJSON_IsTrue(item) ? "true" : "false";
        if (!value && cJSON_IsNumber(item) && (o->kind == OPT_INT32 || o->kind == OPT_INT64)) {
            /* range first: converting a double beyond long long (1e300) is undefined */
            if (!(fabs(item->valuedouble) < 0x1p63)) {
                rc = err_set(ei, -ERR_RANGE, "%s: %g is out of range", where, item->valuedouble);
                goto fail;
            }
            if (item->valuedouble != (double)(long long)item->valuedouble) {
                rc = err_set(ei, -EINVAL, "%s: expected an integer", where);
                goto fail;
            }
            /* JSON has no octal: a number is taken as the value itself. */
            snprintf(num, sizeof num, o->base == 8 ? "%llo" : "%lld", (long long)item->valuedouble);
            value = num;
        }
        if (!value) {
            static const char *const expected[] = {[OPT_STR] = "string", [OPT_INT32] = "number", [OPT_INT64] = "number",
                                                   [OPT_BOOL] = "boolean", [OPT_ENUM] = "string"};
            rc = err_set(ei, -ERR_TYPE, "%s: expected a %s", where, expected[o->kind]);
            goto fail;
        }
        if ((rc = set_value(c, o, value, where, ei)) < 0)
            goto fail;
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

int cfg_load(cfg *c, int argc, char **argv, err_info *ei)
{
    set_defaults(c);
    const char *config_path = getenv("EDGELLM_CONFIG");
    int rc = load_flags(c, argc, argv, true, &config_path, ei);
    if (rc == 0 && config_path && *config_path)
        rc = load_file(c, config_path, ei);
    if (rc == 0)
        rc = load_env(c, ei);
    if (rc == 0)
        rc = load_flags(c, argc, argv, false, NULL, ei);
    if (rc == 0 && !c->host[0] && !c->socket_path[0])
        rc = err_set(ei, -EINVAL, "nothing to listen on: host and socket are both empty");
    return rc;
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
        const char *field = (const char *)&d + o->offset;
        char def[64];
        int32_t index = o->kind == OPT_BOOL || o->kind == OPT_ENUM ? *(const int32_t *)field : 0;
        if (o->kind == OPT_STR)
            snprintf(def, sizeof def, "\"%s\"", field);
        else if (o->kind == OPT_BOOL)
            snprintf(def, sizeof def, "%s", index ? "on" : "off");
        else if (o->kind == OPT_ENUM) {
            size_t name_len = 0;
            const char *name = choice_at(o->choices, index, &name_len);
            snprintf(def, sizeof def, "%.*s, of %s", (int)name_len, name, o->choices);
        } else
            snprintf(def, sizeof def, o->base == 8 ? "0%llo" : "%lld",
                     o->kind == OPT_INT32 ? (long long)*(const int32_t *)field : (long long)*(const int64_t *)field);
        len = snprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, "  --%-26s %s (default %s)\n", o->name,
                       o->help, def);
        n += (size_t)len;
    }
    return (int)n;
}
