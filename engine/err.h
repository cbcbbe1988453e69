/* err — the project's one table of error codes, and a small buffer that carries
 * a human-readable detail ("tensor 'blk.0.attn_q.weight': offset past end of file")
 * from the place that detects a problem to the place that reports it.
 *
 * Convention (see DESIGN.md): functions return int, 0 on success, a negative code on
 * failure. Codes below ERR_BASE are negated errno values (-ENOMEM, -EINVAL, ...);
 * codes from ERR_BASE up are our own, listed once in ERR_TABLE.
 * This module never prints; callers decide where a message goes. */
#ifndef EDGELLM_ERR_H
#define EDGELLM_ERR_H

#include <stddef.h>

/* X(symbol, message) — append only; the numbers are part of logs and tests. */
#define ERR_TABLE(X)                                                      \
    X(ERR_FORMAT, "malformed input")                                      \
    X(ERR_UNSUPPORTED, "unsupported feature")                             \
    X(ERR_NOT_FOUND, "not found")                                         \
    X(ERR_RANGE, "value out of range")                                    \
    X(ERR_CONTEXT_FULL, "context length exceeded")                        \
    X(ERR_CANCELLED, "cancelled")                                         \
    X(ERR_TYPE, "wrong type")                                             \
    X(ERR_TIMEOUT, "timed out")                                           \
    X(ERR_BUSY, "busy")                                                   \
    X(ERR_IO, "input/output error")

enum {
    ERR_BASE = 1000,
    ERR_BEFORE_FIRST_ = ERR_BASE - 1,
#define ERR_ENUM_(sym, msg) sym,
    ERR_TABLE(ERR_ENUM_)
#undef ERR_ENUM_
    ERR_END_
};

/* Detail of the last failure: code plus a message naming the culprit.
 * Plain value type; callers usually keep one on the stack. */
enum { ERR_MSG_MAX = 320 };
typedef struct err_info {
    int code;                 /* negative code, 0 when nothing was recorded */
    char msg[ERR_MSG_MAX];    /* NUL-terminated; "" when nothing was recorded */
} err_info;

/* Records code and a printf-style detail into ei (ei may be NULL) and returns code,
 * so a failure site reads `return err_set(ei, -ERR_FORMAT, "...", ...);`. */
int err_set(err_info *ei, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Symbolic name ("ERR_FORMAT", "ENOMEM") and generic message of a code.
 * Static strings, never NULL. */
const char *err_name(int code);
const char *err_message(int code);

/* The detail if one was recorded, else the generic message of code. Never NULL. */
const char *err_text(const err_info *ei, int code);

#endif
