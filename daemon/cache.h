/* cache — the daemon's SQLite database: the response cache (answers keyed by the SHA-256 of
 * the canonical request, with a TTL and a size limit enforced by evicting the least recently
 * used), the remembered SHA-256 of model files, and the offload audit table.
 *
 * The file is opened once at start in WAL mode with synchronous=NORMAL and checked
 * (quick_check): a corrupt or foreign file is moved aside (logged) and a new one created.
 * Any other failure (read-only or full disk, permissions) is returned: the daemon then runs
 * without a cache. A store that fails later returns its error and changes nothing else.
 *
 * Thread-safe: lookups use their own connection, so an answer from the cache never waits
 * behind a store (WAL lets a reader run beside the writer); everything else shares the
 * writer connection. Each connection sits behind its own mutex.
 * Not here: what may be cached, the key's contents (router.c), metrics, offloading. */
#ifndef EDGELLM_CACHE_H
#define EDGELLM_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"
#include "engine/sha256.h"

typedef struct cache cache;

typedef struct cache_params {
    const char *path;       /* database file (borrowed for the call); its directory must exist */
    int64_t ttl_s;          /* answers older than this are misses; 0: no limit */
    int64_t max_bytes;      /* stored answers beyond this evict the least recently used */
} cache_params;

/* Opens or creates the database. A corrupt file is renamed to PATH.corrupt-UNIXTIME (its
 * -wal and -shm removed) and a new one made; *moved_aside (may be NULL) tells. Errors:
 * -ERR_IO naming the path and SQLite's reason. */
int cache_open(cache **out, const cache_params *p, bool *moved_aside, err_info *ei);
void cache_close(cache *c);    /* NULL ok */

/* One stored answer. */
typedef struct cache_entry {
    char *text;                /* the answer's content; cache_get mallocs it (cache_entry_free) */
    size_t len;
    char finish_reason[16];    /* "stop" or "length" */
    int32_t n_prompt, n_generated;
    char origin[8];            /* where it was first produced: "local" or "cloud" */
} cache_entry;
void cache_entry_free(cache_entry *e);

/* 1 and *e filled on a hit (text owned by the caller), 0 on a miss or an expired entry,
 * negative on a database error. Does not update recency (cache_touch does, off the hit's
 * path). */
int cache_get(cache *c, const uint8_t key[SHA256_BYTES], cache_entry *e, err_info *ei);
/* Marks key as just used, for LRU eviction. */
int cache_touch(cache *c, const uint8_t key[SHA256_BYTES], err_info *ei);
/* Stores (or replaces) e under key (e is only read), then evicts expired and least recently
 * used entries until the size limit holds. Returns how many entries were evicted, or a
 * negative code (-ERR_IO: full or read-only disk, ...) with nothing stored. */
int cache_put(cache *c, const uint8_t key[SHA256_BYTES], const cache_entry *e, err_info *ei);

/* SHA-256 of the file at path, remembered under its (device, inode, size, mtime) so a model
 * is read whole only the first time it is seen. c may be NULL (always computes);
 * *remembered (may be NULL) says whether it came from the database. Slow on a miss: call it
 * off the event loop. */
int cache_file_sha256(cache *c, const char *path, uint8_t out[SHA256_BYTES], bool *remembered, err_info *ei);

/* One row of the offload audit: every cloud attempt, whatever its outcome. */
typedef struct cache_audit_rec {
    int64_t at_ms;             /* Unix time in ms */
    const char *reason;        /* why the request left the device (offload_reason_name) */
    const char *outcome;       /* "ok" or the failure (offload_failure_name) */
    int http_status;           /* the cloud's status, 0 when none came */
    int64_t request_bytes, response_bytes;
    double ms;                 /* the exchange's duration */
    const char *request;       /* the body sent, NULL unless content is audited */
    const char *response;      /* the answer's text, NULL unless content is audited */
} cache_audit_rec;
/* Appends rec (only read); the table keeps the newest CACHE_AUDIT_ROWS rows. */
enum { CACHE_AUDIT_ROWS = 100000 };
int cache_audit(cache *c, const cache_audit_rec *rec, err_info *ei);

#endif
