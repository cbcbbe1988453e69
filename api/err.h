/* api_err — the one table from "what went wrong" to the HTTP status, OpenAI error type and
 * code a client sees, and the JSON error body {"error":{"message","type","param","code"}}.
 *
 * Every error reply of the daemon goes through here, so a status is chosen in one place:
 * client mistakes are 4xx, overload and shutdown are 503, and only our own failures are 500.
 * Not here: deciding which error applies (the parser, router and HTTP layer do). */
#ifndef EDGELLM_API_ERR_H
#define EDGELLM_API_ERR_H

#include <stddef.h>

/* X(symbol, status, type, code) */
#define API_ERR_TABLE(X)                                                               \
    X(API_E_INVALID_JSON, 400, "invalid_request_error", "invalid_json")                \
    X(API_E_INVALID_PARAM, 400, "invalid_request_error", "invalid_parameter")          \
    X(API_E_CONTEXT_LENGTH, 400, "invalid_request_error", "context_length_exceeded")   \
    X(API_E_NOT_FOUND, 404, "invalid_request_error", "not_found")                      \
    X(API_E_MODEL_NOT_FOUND, 404, "invalid_request_error", "model_not_found")          \
    X(API_E_METHOD, 405, "invalid_request_error", "method_not_allowed")                \
    X(API_E_SLOW_CLIENT, 408, "invalid_request_error", "request_timeout")              \
    X(API_E_TOO_LARGE, 413, "invalid_request_error", "payload_too_large")              \
    X(API_E_INTERNAL, 500, "server_error", "internal_error")                           \
    X(API_E_UPSTREAM, 502, "server_error", "upstream_error")                           \
    X(API_E_QUEUE_FULL, 503, "server_error", "queue_full")                             \
    X(API_E_TIMEOUT, 503, "server_error", "timeout")                                   \
    X(API_E_NO_MODEL, 503, "server_error", "model_not_loaded")                         \
    X(API_E_LOADING, 503, "server_error", "model_loading")                             \
    X(API_E_SHUTTING_DOWN, 503, "server_error", "shutting_down")                       \
    X(API_E_OFFLOAD_REFUSED, 503, "server_error", "offload_not_allowed")

typedef enum api_err {
#define API_ERR_ENUM_(sym, status, type, code) sym,
    API_ERR_TABLE(API_ERR_ENUM_)
#undef API_ERR_ENUM_
    API_E_COUNT
} api_err;

int api_err_status(api_err e);
const char *api_err_type(api_err e);   /* static */
const char *api_err_code(api_err e);   /* static */

/* The error for a negative engine/daemon code (err.h): invalid arguments -> INVALID_PARAM,
 * -ERR_CONTEXT_FULL -> CONTEXT_LENGTH, -ERR_BUSY -> QUEUE_FULL, -ERR_TIMEOUT -> TIMEOUT,
 * -ERR_CANCELLED -> SHUTTING_DOWN, -ERR_NOT_FOUND -> NOT_FOUND, anything else -> INTERNAL. */
api_err api_err_from_code(int code);

/* Writes the JSON error body for e with message (UTF-8, escaped here) into buf like
 * snprintf: returns the full length, truncating to cap (always NUL-terminated if cap > 0). */
int api_err_body(api_err e, const char *message, char *buf, size_t cap);

#endif
