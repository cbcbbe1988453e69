/* api_req — see req.h. Field readers (number, integer, boolean, string) share one lookup
 * that treats null as absent; each reader names the field in its error. */
#include "req.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct api_req_priv {
    cJSON *root;
};

/* The member called name, or NULL when absent or null. */
static const cJSON *field(const cJSON *obj, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNull(f) ? NULL : f;
}

static int read_number(const cJSON *obj, const char *name, double lo, double hi, float *out, err_info *ei)
{
    const cJSON *f = field(obj, name);
    if (!f)
        return 0;
    if (!cJSON_IsNumber(f))
        return err_set(ei, -ERR_TYPE, "'%s' must be a number", name);
    if (!(f->valuedouble >= lo && f->valuedouble <= hi))
        return err_set(ei, -ERR_RANGE, "'%s' must be between %g and %g", name, lo, hi);
    *out = (float)f->valuedouble;
    return 0;
}

/* Integers arrive as doubles: exact up to 2^53, which bounds every range used here. */
static int read_int(const cJSON *obj, const char *name, double lo, double hi, int64_t *out, bool *present,
                    err_info *ei)
{
    const cJSON *f = field(obj, name);
    if (!f)
        return 0;
    if (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble))
        return err_set(ei, -ERR_TYPE, "'%s' must be an integer", name);
    if (!(f->valuedouble >= lo && f->valuedouble <= hi))
        return err_set(ei, -ERR_RANGE, "'%s' must be between %.0f and %.0f", name, lo, hi);
    *out = (int64_t)f->valuedouble;
    if (present)
        *present = true;
    return 0;
}

static int read_bool(const cJSON *obj, const char *name, bool *out, err_info *ei)
{
    const cJSON *f = field(obj, name);
    if (!f)
        return 0;
    if (!cJSON_IsBool(f))
        return err_set(ei, -ERR_TYPE, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(f);
    return 0;
}

/* A string, or with one_of_array an array holding exactly one string (completions' prompt). */
static int read_string(const cJSON *obj, const char *name, bool required, bool one_of_array, const char **out,
                       err_info *ei)
{
    const cJSON *f = field(obj, name);
    if (f && one_of_array && cJSON_IsArray(f) && cJSON_GetArraySize(f) == 1)
        f = f->child;
    if (!f) {
        if (required)
            return err_set(ei, -EINVAL, "'%s' is required", name);
        return 0;
    }
    if (!cJSON_IsString(f))
        return err_set(ei, -ERR_TYPE, "'%s' must be a string%s", name, one_of_array ? " or an array of one string" : "");
    *out = f->valuestring;
    return 0;
}

/* content: a string, or an array of {"type":"text","text":...} parts, which are joined and
 * put back into the tree as one string so every message reads the same way. */
static int read_content(cJSON *msg, size_t i, const char **out, err_info *ei)
{
    cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (!c || cJSON_IsNull(c)) {
        *out = "";
        return 0;
    }
    if (cJSON_IsString(c)) {
        *out = c->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(c))
        return err_set(ei, -ERR_TYPE, "'messages[%zu].content' must be a string or an array of text parts", i);
    size_t total = 1, k = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            return err_set(ei, -EINVAL, "'messages[%zu].content[%zu]' must be {\"type\":\"text\",\"text\":string}", i, k);
        total += strlen(text->valuestring); /* sum <= body length: cannot overflow */
        k++;
    }
    char *joined = malloc(total), *p = joined;
    if (!joined)
        return err_set(ei, -ENOMEM, "out of memory");
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(p, t, n);
        p += n;
    }
    *p = 0;
    cJSON *s = cJSON_CreateString(joined);
    free(joined);
    if (!s || !cJSON_ReplaceItemInObjectCaseSensitive(msg, "content", s)) {
        cJSON_Delete(s);
        return err_set(ei, -ENOMEM, "out of memory");
    }
    *out = s->valuestring;
    return 0;
}

static int read_messages(api_req *r, cJSON *root, err_info *ei)
{
    cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0)
        return err_set(ei, m ? -ERR_TYPE : -EINVAL, "'messages' must be a non-empty array");
    r->n_msgs = (size_t)cJSON_GetArraySize(m);
    if (!(r->msgs = calloc(r->n_msgs, sizeof r->msgs[0])))
        return err_set(ei, -ENOMEM, "out of memory");
    size_t i = 0;
    cJSON *msg;
    cJSON_ArrayForEach(msg, m) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        if (!cJSON_IsObject(msg) || !cJSON_IsString(role))
            return err_set(ei, -ERR_TYPE, "'messages[%zu].role' must be a string", i);
        r->msgs[i].role = role->valuestring;
        int rc = read_content(msg, i, &r->msgs[i].content, ei);
        if (rc < 0)
            return rc;
        i++;
    }
    return 0;
}

static int read_stop(api_req *r, const cJSON *root, err_info *ei)
{
    const cJSON *s = field(root, "stop");
    if (!s)
        return 0;
    if (cJSON_IsString(s)) {
        /* "" would match everywhere (the array form refuses it too) */
        if (!s->valuestring[0])
            return err_set(ei, -EINVAL, "'stop' must be a non-empty string or an array of them");
        r->stop[r->n_stop++] = s->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(s) || cJSON_GetArraySize(s) > API_MAX_STOP)
        return err_set(ei, -EINVAL, "'stop' must be a string or an array of at most %d strings", API_MAX_STOP);
    const cJSON *e;
    cJSON_ArrayForEach(e, s) {
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return err_set(ei, -ERR_TYPE, "'stop[%d]' must be a non-empty string", r->n_stop);
        r->stop[r->n_stop++] = e->valuestring;
    }
    return 0;
}

/* Our extension object: "edgellm": {"route": "auto" | "local" | "cloud"}. */
static int read_target(api_req *r, const cJSON *root, err_info *ei)
{
    static const char *const names[] = {[API_TARGET_AUTO] = "auto", [API_TARGET_LOCAL] = "local",
                                        [API_TARGET_CLOUD] = "cloud"};
    const cJSON *ext = field(root, "edgellm");
    if (ext && !cJSON_IsObject(ext))
        return err_set(ei, -ERR_TYPE, "'edgellm' must be an object");
    const char *route = NULL;
    int rc = ext ? read_string(ext, "route", false, false, &route, ei) : 0;
    if (rc < 0)
        return err_set(ei, rc, "'edgellm.route' must be \"auto\", \"local\" or \"cloud\"");
    for (int t = 0; route && t < (int)(sizeof names / sizeof names[0]); t++)
        if (!strcmp(route, names[t])) {
            r->target = (api_target)t;
            return 0;
        }
    return route ? err_set(ei, -EINVAL, "'edgellm.route' must be \"auto\", \"local\" or \"cloud\"") : 0;
}

/* "keep_alive" as Ollama takes it: seconds as a number, or a string "30s", "5m", "1h", "0";
 * negative keeps the model loaded for ever. At most a year. */
static int read_keep_alive(api_req *r, const cJSON *root, err_info *ei)
{
    const cJSON *f = field(root, "keep_alive");
    if (!f)
        return 0;
    double v = f->valuedouble, unit = 1;
    char *end = NULL;
    if (cJSON_IsString(f)) {
        v = strtod(f->valuestring, &end);
        unit = !strcmp(end, "h") ? 3600 : !strcmp(end, "m") ? 60 : !strcmp(end, "s") || !*end ? 1 : 0;
        if (end == f->valuestring || unit == 0)
            return err_set(ei, -EINVAL, "'keep_alive' must be seconds, or a duration such as \"30s\", \"5m\", \"1h\"");
    } else if (!cJSON_IsNumber(f)) {
        return err_set(ei, -ERR_TYPE, "'keep_alive' must be a number of seconds or a duration string");
    }
    v *= unit;
    if (!(v >= -1e9 && v <= 365 * 86400.0))
        return err_set(ei, -ERR_RANGE, "'keep_alive' must be at most a year (negative: for ever)");
    r->keep_alive_s = v;
    r->keep_alive_set = true;
    return 0;
}

static int read_generation(api_req *r, cJSON *root, err_info *ei)
{
    int rc;
    sampler_params *sp = &r->sampling;
    int64_t v = 0;
    bool seen = false;
    if ((rc = read_int(root, "n", 1, 1, &v, NULL, ei)) < 0)
        return err_set(ei, rc, "'n' must be 1: one choice per request");
    if ((rc = read_int(root, "max_tokens", 1, 1 << 30, &v, &seen, ei)) < 0 ||
        (rc = read_int(root, "max_completion_tokens", 1, 1 << 30, &v, &seen, ei)) < 0)
        return rc;
    r->max_tokens = seen ? (int32_t)v : 0;
    seen = false;
    if ((rc = read_int(root, "top_k", 0, 1 << 30, &v, &seen, ei)) < 0)
        return rc;
    if (seen)
        sp->top_k = (int)v;
    /* Seeds span int64 in OpenAI's API; 2^53 is as far as a JSON number stays exact. */
    if ((rc = read_int(root, "seed", -9007199254740992.0, 9007199254740992.0, &v, &r->seed_set, ei)) < 0)
        return rc;
    if (r->seed_set)
        sp->seed = (uint64_t)v;
    if ((rc = read_number(root, "temperature", 0, 2, &sp->temperature, ei)) < 0 ||
        (rc = read_number(root, "top_p", 0, 1, &sp->top_p, ei)) < 0 ||
        (rc = read_number(root, "min_p", 0, 1, &sp->min_p, ei)) < 0 ||
        (rc = read_number(root, "repeat_penalty", 0, 10, &sp->repeat_penalty, ei)) < 0 ||
        (rc = read_number(root, "presence_penalty", -2, 2, &sp->presence_penalty, ei)) < 0 ||
        (rc = read_number(root, "frequency_penalty", -2, 2, &sp->frequency_penalty, ei)) < 0)
        return rc;
    float timeout = 0;
    if ((rc = read_number(root, "timeout", 0.001, 86400, &timeout, ei)) < 0)
        return rc;
    r->timeout_s = timeout;
    if ((rc = read_bool(root, "stream", &r->stream, ei)) < 0 || (rc = read_stop(r, root, ei)) < 0)
        return rc;
    const cJSON *so = field(root, "stream_options");
    if (so && !cJSON_IsObject(so))
        return err_set(ei, -ERR_TYPE, "'stream_options' must be an object");
    if (so && (rc = read_bool(so, "include_usage", &r->include_usage, ei)) < 0)
        return err_set(ei, rc, "'stream_options.include_usage' must be a boolean");
    if ((rc = sampler_params_check(sp, ei)) < 0 || (rc = read_keep_alive(r, root, ei)) < 0)
        return rc;
    return read_target(r, root, ei);
}

static int read_tokens(api_req *r, const cJSON *root, err_info *ei)
{
    const cJSON *t = field(root, "tokens");
    if (!cJSON_IsArray(t))
        return err_set(ei, t ? -ERR_TYPE : -EINVAL, "'tokens' must be an array of integers");
    r->n_tokens = (size_t)cJSON_GetArraySize(t);
    if (!(r->tokens = calloc(r->n_tokens ? r->n_tokens : 1, sizeof r->tokens[0])))
        return err_set(ei, -ENOMEM, "out of memory");
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, t) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
            e->valuedouble > INT32_MAX)
            return err_set(ei, -ERR_TYPE, "'tokens[%zu]' must be a non-negative integer", i);
        r->tokens[i++] = (int32_t)e->valuedouble;
    }
    return 0;
}

int api_req_parse(api_req **out, api_kind kind, const char *body, size_t len, err_info *ei)
{
    *out = NULL;
    int rc = -ENOMEM;
    api_req *r = calloc(1, sizeof *r);
    if (!r || !(r->priv = calloc(1, sizeof *r->priv))) {
        err_set(ei, rc, "out of memory");
        goto fail;
    }
    r->kind = kind;
    r->model = "";
    r->parse_special = true;
    sampler_params_default(&r->sampling);
    const char *end = body;
    cJSON *root = r->priv->root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!cJSON_IsObject(root)) {
        rc = err_set(ei, -ERR_FORMAT, "the request body is not a JSON object");
        goto fail;
    }
    /* cJSON stops after the first value: anything but white space after it means the body
     * is not one JSON text (two objects, say, which another parser might read differently) */
    for (; end < body + len; end++)
        if (!strchr(" \t\r\n", *end) || !*end) {
            rc = err_set(ei, -ERR_FORMAT, "the request body has more after its JSON object (at byte %zu)",
                         (size_t)(end - body));
            goto fail;
        }
    switch (kind) {
    case API_KIND_CHAT:
    case API_KIND_COMPLETION:
        rc = read_string(root, "model", false, false, &r->model, ei);
        if (rc == 0)
            rc = kind == API_KIND_CHAT ? read_messages(r, root, ei)
                                       : read_string(root, "prompt", true, true, &r->prompt, ei);
        if (rc == 0)
            rc = read_generation(r, root, ei);
        break;
    case API_KIND_TOKENIZE:
        rc = read_string(root, "model", false, false, &r->model, ei);
        if (rc == 0)
            rc = read_string(root, "content", true, false, &r->prompt, ei);
        if (rc == 0)
            rc = read_bool(root, "add_special", &r->add_special, ei);
        if (rc == 0)
            rc = read_bool(root, "parse_special", &r->parse_special, ei);
        if (rc == 0)
            rc = read_bool(root, "with_pieces", &r->with_pieces, ei);
        break;
    case API_KIND_DETOKENIZE:
        rc = read_string(root, "model", false, false, &r->model, ei);
        if (rc == 0)
            rc = read_tokens(r, root, ei);
        break;
    }
    if (rc < 0)
        goto fail;
    r->prompt_len = r->prompt ? strlen(r->prompt) : 0;
    *out = r;
    return 0;
fail:
    api_req_free(r);
    return rc;
}

void api_req_free(api_req *r)
{
    if (!r)
        return;
    if (r->priv)
        cJSON_Delete(r->priv->root);
    free(r->priv);
    free(r->msgs);
    free(r->tokens);
    free(r);
}
