/* cli_engine — what the engine-running subcommands (run, logits, bench) share: the
 * -m/-t/-c/--kv-type/--shm/--mlock options and opening model + thread pool + session.
 *
 * Shared memory (engine/mstore.h) by default only when it is already there: a running or
 * recently stopped edgellmd leaves the model in /dev/shm, and a CLI run that attaches to it
 * reads nothing from the disk and adds no memory. The CLI does not make a copy unless asked
 * (--shm): a one-shot command that left hundreds of MB of RAM behind after exiting would
 * surprise on a 4 GB board. --no-shm always maps the file. */
#ifndef EDGELLM_CLI_ENGINE_H
#define EDGELLM_CLI_ENGINE_H

#include <stdbool.h>

#include "engine/model.h"
#include "engine/mstore.h"

typedef enum cli_shm {
    CLI_SHM_ATTACH,          /* default: use the shared copy if there is one, else the file */
    CLI_SHM_ON,              /* --shm: use the shared copy, making it if needed */
    CLI_SHM_OFF,             /* --no-shm: map the file */
} cli_shm;

typedef struct cli_engine_opts {
    const char *model_path;  /* -m */
    int threads;             /* -t, <= 0: physical cores */
    int n_ctx;               /* -c, <= 0: model default */
    int n_batch;             /* -b, <= 0: session default */
    qt_type kv_type;         /* --kv-type F16|F32 */
    cli_shm shm;             /* --shm / --no-shm */
    bool mlock;              /* --mlock: lock the shared copy in RAM (implies --shm) */
} cli_engine_opts;

typedef struct cli_engine {
    mstore *ms;              /* the shared copy the model reads, or NULL (file mapping) */
    model *m;
    pool *pool;
    model_session *s;
} cli_engine;

void cli_engine_opts_default(cli_engine_opts *o);
/* Handles one of the shared options: returns 1 if opt (a getopt_long result, with optarg)
 * was one of them, 0 if not, -1 (after printing why) if its value was bad. */
int cli_engine_parse_opt(cli_engine_opts *o, int opt, const char *arg, const char *cmd);
/* getopt_long entries and the usage text of the shared options, for the commands' tables. */
enum { CLI_OPT_SHM = 0x100, CLI_OPT_NO_SHM, CLI_OPT_MLOCK }; /* long-only options */
#define CLI_ENGINE_LONGOPTS                                                               \
    {"model", required_argument, 0, 'm'}, {"threads", required_argument, 0, 't'},         \
        {"ctx", required_argument, 0, 'c'}, {"batch", required_argument, 0, 'b'},          \
        {"kv-type", required_argument, 0, 'K'}, {"shm", no_argument, 0, CLI_OPT_SHM},      \
        {"no-shm", no_argument, 0, CLI_OPT_NO_SHM}, {"mlock", no_argument, 0, CLI_OPT_MLOCK}
#define CLI_ENGINE_SHORTOPTS "m:t:c:b:"
#define CLI_ENGINE_USAGE "-m MODEL.gguf [-t THREADS] [-c CTX] [-b BATCH] [--kv-type F16|F32] [--shm|--no-shm] [--mlock]"

/* Opens everything; on failure nothing is left open and ei says why. -EINVAL for --mlock
 * with --no-shm. */
int cli_engine_open(cli_engine *e, const cli_engine_opts *o, err_info *ei);
void cli_engine_close(cli_engine *e);

/* Parses a comma-separated list of integers into a malloc'd array (*out, *n). */
int cli_parse_int_list(const char *s, int32_t **out, int *n);

#endif
