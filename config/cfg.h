/* cfg — every setting of the daemon in one plain struct, filled from (lowest to highest
 * precedence) built-in defaults, a JSON config file, EDGELLM_* environment variables and
 * command-line flags, then validated.
 *
 * One table (cfg.c) describes each setting once: its flag, its environment variable, its
 * JSON key, its range, its help line and whether SIGHUP can change it in a running daemon,
 * so the three sources (and the reload) cannot drift apart.
 *
 * The file is read only when one is named (--config or EDGELLM_CONFIG): the installed
 * service names CFG_DEFAULT_FILE in its unit, and a developer's `make run` is never changed
 * by a system-wide file it did not ask for. --check-config without a file checks that one.
 * Not here: acting on the settings or on a reload (daemon/). */
#ifndef EDGELLM_CFG_H
#define EDGELLM_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

enum { CFG_PATH_MAX = 4096, CFG_SOCKET_MAX = 108 /* sun_path */, CFG_NAME_MAX = 256 };

/* The configuration file of the installed service (systemd/edgellmd.service names it). */
#define CFG_DEFAULT_FILE "/etc/edgellm/edgellmd.json"

/* Which requests the response cache answers and stores (a request's own Cache-Control can
 * only narrow this). */
typedef enum cfg_cache_scope {
    CFG_CACHE_DETERMINISTIC,         /* temperature 0 or an explicit seed: the same answer again */
    CFG_CACHE_ALL,                   /* every request, sampled ones too */
} cfg_cache_scope;

/* When a request may leave the device for the cloud endpoint (see daemon/offload.h for the
 * whole decision table). */
typedef enum cfg_offload_mode {
    CFG_OFFLOAD_OFF,                 /* never */
    CFG_OFFLOAD_FALLBACK,            /* only when the device cannot serve it (queue full, ...) */
    CFG_OFFLOAD_PREFER,              /* cloud first, the device when the cloud fails */
} cfg_offload_mode;

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
    /* response cache (daemon/cache.h) */
    char state_dir[CFG_PATH_MAX];    /* "" : $STATE_DIRECTORY, else $XDG_STATE_HOME or ~/.local/state */
    char cache_db[CFG_PATH_MAX];     /* "" : <state dir>/cache.db */
    int32_t no_cache;                /* 1: never answer from or store into the cache */
    int32_t cache_scope;             /* cfg_cache_scope */
    int32_t cache_ttl_s;             /* entries older than this are not served; 0: no limit */
    int64_t cache_max_bytes;         /* least recently used entries go beyond this */
    /* cloud offload (daemon/offload.h); the API key is never part of cfg */
    char offload_url[CFG_PATH_MAX];  /* OpenAI base URL ("https://host/v1"); "" disables offload */
    int32_t offload_mode;            /* cfg_offload_mode */
    char offload_key_file[CFG_PATH_MAX]; /* file holding the API key; else $EDGELLM_OFFLOAD_KEY */
    char offload_model[CFG_NAME_MAX];/* model name sent to the cloud; "" : the local model id */
    int32_t offload_connect_timeout_ms;
    int32_t offload_timeout_ms;      /* the whole cloud exchange */
    int32_t offload_audit_content;   /* 1: the audit table keeps request and answer text too */
    /* models and their memory (daemon/models.h) */
    char models_dir[CFG_PATH_MAX];   /* its *.gguf files are served by name; "" for none */
    int32_t model_keep_alive_s;      /* an idle model is unloaded after this; -1: never */
    int32_t no_shm;                  /* 1: map model files instead of sharing copies (mstore.h) */
    int32_t mlock;                   /* 1: lock the shared copies in RAM */
    int32_t shm_verify;              /* 1: re-hash a shared copy found at load before using it */
    int32_t memory_budget_mb;        /* model bytes held in memory at once; 0: the machine's limit */
} cfg;

/* Fills c from defaults, then the file named by --config (or EDGELLM_CONFIG), then the
 * environment, then argv[1..argc) (argv[0] is the program), and validates the result.
 * Flags take "--name VALUE" or "--name=VALUE". Errors (-EINVAL, -ERR_RANGE, -ERR_FORMAT,
 * -ENOENT) name the flag, variable or key and the source. argv is only read. */
int cfg_load(cfg *c, int argc, char **argv, err_info *ei);

/* Writes the flag summary (one line per setting, with its default) into buf like
 * snprintf: returns the full length, truncating to cap. */
int cfg_usage(char *buf, size_t cap);

/* --check-config: reads the JSON file at path over the defaults, as cfg_load would, but
 * goes on past a bad key and calls report(ud, problem) for each one: an unknown key (with
 * the nearest known one), a wrong type (what was expected, what was found), a value out of
 * range (the range and what the setting is for), plus the checks cfg_load makes of the
 * whole. Returns the number of problems (0: the file is good), or a negative code when the
 * file cannot be read or is not a JSON object (ei says which). c receives the result. */
int cfg_check_file(cfg *c, const char *path, void (*report)(void *ud, const char *problem), void *ud,
                   err_info *ei);

/* SIGHUP: next is the configuration just loaded, running the one in use. Calls changed(ud,
 * name, live, old value, new value) for each setting that differs; a setting SIGHUP cannot
 * change (live false: host, port, threads, ...) is put back to its running value in next,
 * so next describes what will actually run. Returns how many live settings changed. */
int cfg_reload(cfg *next, const cfg *running,
               void (*changed)(void *ud, const char *name, bool live, const char *was, const char *now), void *ud);

#endif
