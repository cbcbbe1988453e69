/* err — see err.h. Table lookups and the detail buffer; nothing else. */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    const char *msg;
} own_codes[] = {
#define ERR_ROW_(sym, msg) {#sym, msg},
    ERR_TABLE(ERR_ROW_)
#undef ERR_ROW_
};

int err_set(err_info *ei, int code, const char *fmt, ...)
{
    if (ei) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ei->msg, sizeof ei->msg, fmt, ap);
        va_end(ap);
        ei->code = code;
    }
    return code;
}

static int own_index(int code)
{
    int c = -code;
    return (c >= ERR_BASE && c < ERR_END_) ? c - ERR_BASE : -1;
}

const char *err_name(int code)
{
    int i = own_index(code);
    if (i >= 0)
        return own_codes[i].name;
    switch (-code) {
    case 0: return "OK";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EEXIST: return "EEXIST";
    case EAGAIN: return "EAGAIN";
    case ERANGE: return "ERANGE";
    default: return "E?";
    }
}

const char *err_message(int code)
{
    int i = own_index(code);
    if (i >= 0)
        return own_codes[i].msg;
    if (code == 0)
        return "success";
    return strerror(-code);
}

const char *err_text(const err_info *ei, int code)
{
    if (ei && ei->code != 0 && ei->msg[0])
        return ei->msg;
    return err_message(code);
}
