/* cli_engine — what the engine-running subcommands (run, logits, bench) share: the
 * -m/-t/-c/--kv-type options and opening model + thread pool + session from them. */
#ifndef EDGELLM_CLI_ENGINE_H
#define EDGELLM_CLI_ENGINE_H

#include <stdbool.h>

#include "engine/model.h"

typedef struct cli_engine_opts {
    const char *model_path;  /* -m */
    int threads;             /* -t, <= 0: physical cores */
    int n_ctx;               /* -c, <= 0: model default */
    int n_batch;             /* -b, <= 0: session default */
    qt_type kv_type;         /* --kv-type F16|F32 */
} cli_engine_opts;

typedef struct cli_engine {
    model *m;
    pool *pool;
    model_session *s;
} cli_engine;

void cli_engine_opts_default(cli_engine_opts *o);
/* Handles one of the shared options: returns 1 if opt (a getopt_long result, with optarg)
 * was one of them, 0 if not, -1 (after printing why) if its value was bad. */
int cli_engine_parse_opt(cli_engine_opts *o, int opt, const char *arg, const char *cmd);
/* getopt_long entries and the usage text of the shared options, for the commands' tables. */
#define CLI_ENGINE_LONGOPTS                                                               \
    {"model", required_argument, 0, 'm'}, {"threads", required_argument, 0, 't'},         \
        {"ctx", required_argument, 0, 'c'}, {"batch", required_argument, 0, 'b'},          \
        {"kv-type", required_argument, 0, 'K'}
#define CLI_ENGINE_SHORTOPTS "m:t:c:b:"
#define CLI_ENGINE_USAGE "-m MODEL.gguf [-t THREADS] [-c CTX] [-b BATCH] [--kv-type F16|F32]"

/* Opens everything; on failure nothing is left open and ei says why. */
int cli_engine_open(cli_engine *e, const cli_engine_opts *o, err_info *ei);
void cli_engine_close(cli_engine *e);

/* Parses a comma-separated list of integers into a malloc'd array (*out, *n). */
int cli_parse_int_list(const char *s, int32_t **out, int *n);

#endif
