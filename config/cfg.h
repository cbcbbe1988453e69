/* cfg — every setting of the daemon in one plain struct, filled from (lowest to highest
 * precedence) built-in defaults, a JSON config file, EDGELLM_* environment variables and
 * command-line flags, then validated.
 *
 * One table (cfg.c) describes each setting once: its flag, its environment variable, its
 * JSON key, its range and its help line, so the three sources cannot drift apart.
 * Not here: acting on the settings (daemon/) or reloading them (SIGHUP, a later issue). */
#ifndef EDGELLM_CFG_H
#define EDGELLM_CFG_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

enum { CFG_PATH_MAX = 4096, CFG_SOCKET_MAX = 108 /* sun_path */, CFG_NAME_MAX = 256 };

typedef struct cfg {
    char model[CFG_PATH_MAX];        /* GGUF to serve; "" starts without a model */
    char host[CFG_NAME_MAX];         /* TCP address to bind; "" disables TCP */
    int32_t port;                    /* 0 picks a free port (logged at start-up) */
    char socket_path[CFG_SOCKET_MAX];/* Unix socket to serve on; "" for none */
    int32_t socket_mode;             /* permission bits of the socket file (octal in files) */
    int32_t threads;                 /* inference threads; 0: one per physical core */
    int32_t ctx;                     /* context length in tokens; 0: the model's (capped) */
    int32_t queue;                   /* requests that may wait behind the running one */
    char chat_template[64];          /* family name overriding detection; "" to detect */
    int32_t max_tokens;              /* default when a request names none */
    int32_t timeout_ms;              /* default request deadline (queue wait + generation) */
    int32_t read_timeout_ms;         /* a request must arrive within this, else 408 */
    int32_t idle_timeout_s;          /* idle keep-alive connections are closed after this */
    int32_t keepalive_ms;            /* SSE comment period while a streamed request waits */
    int32_t grace_ms;                /* SIGTERM: how long in-flight work may finish */
    int32_t max_conns;               /* concurrent connections per listener */
    int64_t body_limit;              /* request body bytes; larger bodies get 413 */
} cfg;

/* Fills c from defaults, then the file named by --config (or EDGELLM_CONFIG), then the
 * environment, then argv[1..argc) (argv[0] is the program), and validates the result.
 * Flags take "--name VALUE" or "--name=VALUE". Errors (-EINVAL, -ERR_RANGE, -ERR_FORMAT,
 * -ENOENT) name the flag, variable or key and the source. argv is only read. */
int cfg_load(cfg *c, int argc, char **argv, err_info *ei);

/* Writes the flag summary (one line per setting, with its default) into buf like
 * snprintf: returns the full length, truncating to cap. */
int cfg_usage(char *buf, size_t cap);

#endif
