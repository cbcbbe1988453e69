/* cli_engine — see cli_engine.h. */
#include "daemon/cli_engine.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void cli_engine_opts_default(cli_engine_opts *o)
{
    memset(o, 0, sizeof *o);
    o->kv_type = QT_F16;
}

static int parse_int(const char *arg, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int cli_engine_parse_opt(cli_engine_opts *o, int opt, const char *arg, const char *cmd)
{
    int rc = 0;
    switch (opt) {
    case 'm': o->model_path = arg; return 1;
    case 't': rc = parse_int(arg, 0, 256, &o->threads); break;
    case 'c': rc = parse_int(arg, 0, 1 << 24, &o->n_ctx); break;
    case 'b': rc = parse_int(arg, 0, 1 << 16, &o->n_batch); break;
    case 'K':
        if (!strcasecmp(arg, "F16")) o->kv_type = QT_F16;
        else if (!strcasecmp(arg, "F32")) o->kv_type = QT_F32;
        else rc = -1;
        break;
    case CLI_OPT_SHM: o->shm = CLI_SHM_ON; return 1;
    case CLI_OPT_NO_SHM: o->shm = CLI_SHM_OFF; return 1;
    case CLI_OPT_MLOCK: o->mlock = true; return 1;
    default: return 0;
    }
    if (rc) {
        fprintf(stderr, "edgellm %s: bad value '%s' for option -%c\n", cmd, arg, opt == 'K' ? 'K' : opt);
        return -1;
    }
    return 1;
}

/* The model over the shared copy when there is one (or o asks for one), else the file. */
static int open_model(cli_engine *e, const cli_engine_opts *o, err_info *ei)
{
    if (o->mlock && o->shm == CLI_SHM_OFF)
        return err_set(ei, -EINVAL, "--mlock locks the shared copy: it cannot go with --no-shm");
    if (o->shm == CLI_SHM_OFF)
        return model_open(&e->m, o->model_path, ei);
    mstore_opts mo;
    mstore_opts_default(&mo);
    mo.create = o->shm == CLI_SHM_ON || o->mlock;
    mo.mlock = o->mlock;
    mo.prepare = model_prepare_shared;
    err_info shm_ei = {0};
    int shm_rc = mstore_open(&e->ms, o->model_path, &mo, &shm_ei);
    if (shm_rc == 0)
        return (mstore_prepared(e->ms) ? model_open_prepared : model_open_mem)(&e->m, mstore_data(e->ms),
                                                                               mstore_size(e->ms), ei);
    if (mo.create)
        return err_set(ei, shm_rc, "%s", shm_ei.msg);
    /* the default only attaches, and must never cost the run: without a usable copy, the file */
    int rc = model_open(&e->m, o->model_path, ei);
    if (rc == 0 && shm_rc != -ERR_NOT_FOUND)
        fprintf(stderr, "edgellm: not using the shared copy (%s): reading the file\n", shm_ei.msg);
    return rc;
}

int cli_engine_open(cli_engine *e, const cli_engine_opts *o, err_info *ei)
{
    memset(e, 0, sizeof *e);
    model_session_params sp;
    model_session_params_default(&sp);
    int rc = open_model(e, o, ei);
    if (rc)
        goto fail;
    if ((rc = pool_new(&e->pool, o->threads, ei)))
        goto fail;
    sp.n_ctx = o->n_ctx;
    sp.n_batch = o->n_batch;
    sp.kv_type = o->kv_type;
    sp.pool = e->pool;
    if ((rc = model_session_new(&e->s, e->m, &sp, ei)))
        goto fail;
    return 0;
fail:
    cli_engine_close(e);
    return rc;
}

void cli_engine_close(cli_engine *e)
{
    model_session_free(e->s);
    pool_free(e->pool);
    model_close(e->m);
    mstore_close(e->ms);
    memset(e, 0, sizeof *e);
}

int cli_parse_int_list(const char *s, int32_t **out, int *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *v = malloc(cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    const char *p = s;
    int count = 0;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || x < INT32_MIN || x > INT32_MAX || (*end && *end != ',')) {
            free(v);
            return -EINVAL;
        }
        v[count++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    *out = v;
    *n = count;
    return 0;
}
