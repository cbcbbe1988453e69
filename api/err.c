/* api_err — see err.h. */
#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api/sse.h"
#include "engine/err.h"

static const struct {
    int status;
    const char *type, *code;
} rows[API_E_COUNT] = {
#define API_ERR_ROW_(sym, status, type, code) [sym] = {status, type, code},
    API_ERR_TABLE(API_ERR_ROW_)
#undef API_ERR_ROW_
};

int api_err_status(api_err e) { return rows[e].status; }
const char *api_err_type(api_err e) { return rows[e].type; }
const char *api_err_code(api_err e) { return rows[e].code; }

api_err api_err_from_code(int code)
{
    switch (code) {
    case -EINVAL:
    case -ERANGE:
    case -ERR_RANGE:
    case -ERR_TYPE:
    case -ERR_FORMAT:
    case -ERR_UNSUPPORTED: return API_E_INVALID_PARAM;
    case -ERR_CONTEXT_FULL: return API_E_CONTEXT_LENGTH;
    case -ERR_BUSY: return API_E_QUEUE_FULL;
    case -ERR_TIMEOUT: return API_E_TIMEOUT;
    case -ERR_CANCELLED: return API_E_SHUTTING_DOWN;
    case -ERR_NOT_FOUND: return API_E_NOT_FOUND;
    default: return API_E_INTERNAL;
    }
}

int api_err_body(api_err e, const char *message, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "{\"error\":{\"message\":\"");
    n += api_json_escape(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, message, strlen(message));
    n += (size_t)snprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0,
                          "\",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}", rows[e].type, rows[e].code);
    return (int)n;
}
