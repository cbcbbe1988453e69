/* cache — see cache.h. Statements are prepared once at open and reset after each use, so a
 * lookup is one B-tree search and no SQL parsing. The writer keeps the running total of
 * stored bytes, read once at open, so checking the size limit after a store costs nothing. */
#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Bytes an entry is charged beyond its text: key, columns and B-tree overhead, roughly. */
enum { ROW_OVERHEAD = 128 };

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS responses("
    "  key BLOB PRIMARY KEY, created_ms INTEGER NOT NULL, used_ms INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    "  finish TEXT NOT NULL, n_prompt INTEGER NOT NULL, n_generated INTEGER NOT NULL, origin TEXT NOT NULL,"
    "  content BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS responses_used ON responses(used_ms);"
    "CREATE TABLE IF NOT EXISTS file_hashes("
    "  dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, path TEXT, sha256 BLOB NOT NULL,"
    "  PRIMARY KEY(dev, ino, size, mtime_ns));"
    "CREATE TABLE IF NOT EXISTS offload_audit("
    "  id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, reason TEXT NOT NULL, outcome TEXT NOT NULL,"
    "  http_status INTEGER, request_bytes INTEGER, response_bytes INTEGER, ms REAL, request TEXT, response TEXT);";

/* The writer's statements, in the order of W_SQL. */
enum { W_BYTES, W_TOTAL, W_PUT, W_TOUCH, W_OLDEST, W_DELETE, W_EXPIRED, W_PURGE, W_HASH_GET, W_HASH_PUT, W_AUDIT, W_AUDIT_TRIM, W_COUNT };
static const char *const W_SQL[W_COUNT] = {
    [W_BYTES] = "SELECT bytes FROM responses WHERE key = ?1",
    [W_TOTAL] = "SELECT COALESCE(SUM(bytes), 0) FROM responses",
    [W_PUT] = "INSERT OR REPLACE INTO responses VALUES(?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [W_TOUCH] = "UPDATE responses SET used_ms = ?2 WHERE key = ?1",
    [W_OLDEST] = "SELECT key, bytes FROM responses ORDER BY used_ms LIMIT 64",
    [W_DELETE] = "DELETE FROM responses WHERE key = ?1",
    [W_EXPIRED] = "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM responses WHERE created_ms < ?1",
    [W_PURGE] = "DELETE FROM responses WHERE created_ms < ?1",
    [W_HASH_GET] = "SELECT sha256 FROM file_hashes WHERE dev = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
    [W_HASH_PUT] = "INSERT OR REPLACE INTO file_hashes VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    [W_AUDIT] = ("INSERT INTO offload_audit(at_ms, reason, outcome, http_status, request_bytes, response_bytes, ms,"
                 " request, response) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
    [W_AUDIT_TRIM] = "DELETE FROM offload_audit WHERE id <= last_insert_rowid() - ?1",
};

struct cache {
    int64_t ttl_ms, max_bytes;
    pthread_mutex_t rd_mu, wr_mu;
    sqlite3 *rd, *wr;
    sqlite3_stmt *get;               /* reader */
    sqlite3_stmt *w[W_COUNT];        /* writer */
    int64_t total_bytes;             /* charged bytes of all entries (writer's lock) */
    int64_t next_purge_ms;           /* expired entries are swept at most once a minute */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -ERR_IO with SQLite's own words; what names the operation. */
static int db_error(err_info *ei, sqlite3 *db, const char *what)
{
    return err_set(ei, -ERR_IO, "cache: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

static bool is_corruption(int rc)
{
    rc &= 0xff;
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

/* Runs SQL that returns nothing of interest; the primary result code. */
static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* "ok" from PRAGMA quick_check, else the primary error code (SQLITE_CORRUPT for a report). */
static int quick_check(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        rc = strcmp((const char *)sqlite3_column_text(st, 0), "ok") ? SQLITE_CORRUPT : SQLITE_OK;
    sqlite3_finalize(st);
    return rc;
}

static sqlite3 *connect(const char *path, int *rc)
{
    sqlite3 *db = NULL;
    *rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (*rc == SQLITE_OK)
        sqlite3_busy_timeout(db, 2000); /* another process (a second daemon) may hold the lock briefly */
    return db;
}

/* The writer connection, configured and checked. On failure *rc is SQLite's code. */
static sqlite3 *open_writer(const char *path, int *rc)
{
    sqlite3 *db = connect(path, rc);
    if (*rc == SQLITE_OK)
        *rc = exec(db, "PRAGMA journal_mode=WAL");
    if (*rc == SQLITE_OK)
        *rc = quick_check(db);
    if (*rc == SQLITE_OK)
        *rc = exec(db, "PRAGMA synchronous=NORMAL");
    if (*rc == SQLITE_OK)
        *rc = exec(db, SCHEMA);
    return db;
}

/* Renames a corrupt database (and drops its journal files, which belong to it). */
static int move_aside(const char *path, err_info *ei)
{
    char aside[4200], side[4200];
    snprintf(aside, sizeof aside, "%s.corrupt-%lld", path, (long long)time(NULL));
    if (rename(path, aside) < 0)
        return err_set(ei, -ERR_IO, "cache: %s is corrupt and cannot be moved aside: %s", path, strerror(errno));
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    fprintf(stderr, "edgellmd: cache: %s was corrupt: moved to %s, starting with an empty cache\n", path, aside);
    return 0;
}

/* One integer from a writer statement with at most one blob parameter; false on error. */
static bool query_int(sqlite3_stmt *st, const uint8_t *key, int64_t *out)
{
    if (key)
        sqlite3_bind_blob(st, 1, key, SHA256_BYTES, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

/* The running total from the table itself (at open, and after a store was rolled back). */
static bool read_total(cache *c)
{
    return query_int(c->w[W_TOTAL], NULL, &c->total_bytes);
}

static int prepare_all(cache *c, err_info *ei)
{
    if (sqlite3_prepare_v3(c->rd,
                           "SELECT content, finish, n_prompt, n_generated, origin FROM responses"
                           " WHERE key = ?1 AND (?2 = 0 OR created_ms >= ?2)",
                           -1, SQLITE_PREPARE_PERSISTENT, &c->get, NULL) != SQLITE_OK)
        return db_error(ei, c->rd, "prepare");
    for (int i = 0; i < W_COUNT; i++)
        if (sqlite3_prepare_v3(c->wr, W_SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &c->w[i], NULL) != SQLITE_OK)
            return db_error(ei, c->wr, "prepare");
    return read_total(c) ? 0 : db_error(ei, c->wr, "reading the size");
}

int cache_open(cache **out, const cache_params *p, bool *moved_aside, err_info *ei)
{
    *out = NULL;
    if (moved_aside)
        *moved_aside = false;
    cache *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(ei, -ENOMEM, "cache: out of memory");
    c->ttl_ms = p->ttl_s * 1000;
    c->max_bytes = p->max_bytes;
    pthread_mutex_init(&c->rd_mu, NULL);
    pthread_mutex_init(&c->wr_mu, NULL);
    int rc, src;
    c->wr = open_writer(p->path, &src);
    if (is_corruption(src)) {
        sqlite3_close_v2(c->wr);
        c->wr = NULL;
        if ((rc = move_aside(p->path, ei)) < 0)
            goto fail;
        if (moved_aside)
            *moved_aside = true;
        c->wr = open_writer(p->path, &src);
    }
    if (src != SQLITE_OK) {
        rc = err_set(ei, -ERR_IO, "cache: cannot open %s: %s", p->path, c->wr ? sqlite3_errmsg(c->wr) : sqlite3_errstr(src));
        goto fail;
    }
    c->rd = connect(p->path, &src);
    if (src != SQLITE_OK) {
        rc = db_error(ei, c->rd, "opening the reader");
        goto fail;
    }
    if ((rc = prepare_all(c, ei)) < 0)
        goto fail;
    *out = c;
    return 0;
fail:
    cache_close(c);
    return rc;
}

void cache_close(cache *c)
{
    if (!c)
        return;
    sqlite3_finalize(c->get);
    for (int i = 0; i < W_COUNT; i++)
        sqlite3_finalize(c->w[i]);
    sqlite3_close_v2(c->rd);
    sqlite3_close_v2(c->wr);
    pthread_mutex_destroy(&c->rd_mu);
    pthread_mutex_destroy(&c->wr_mu);
    free(c);
}

void cache_entry_free(cache_entry *e)
{
    free(e->text);
    e->text = NULL;
}

static void copy_text(char *dst, size_t cap, const unsigned char *src)
{
    snprintf(dst, cap, "%s", src ? (const char *)src : "");
}

int cache_get(cache *c, const uint8_t key[SHA256_BYTES], cache_entry *e, err_info *ei)
{
    memset(e, 0, sizeof *e);
    pthread_mutex_lock(&c->rd_mu);
    sqlite3_stmt *st = c->get;
    sqlite3_bind_blob(st, 1, key, SHA256_BYTES, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->ttl_ms ? now_ms() - c->ttl_ms : 0);
    int rc = sqlite3_step(st), hit = 0;
    if (rc == SQLITE_ROW) {
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        const void *blob = sqlite3_column_blob(st, 0);
        if ((e->text = malloc(len + 1))) {
            if (len)
                memcpy(e->text, blob, len);
            e->text[len] = 0;
            e->len = len;
            copy_text(e->finish_reason, sizeof e->finish_reason, sqlite3_column_text(st, 1));
            e->n_prompt = sqlite3_column_int(st, 2);
            e->n_generated = sqlite3_column_int(st, 3);
            copy_text(e->origin, sizeof e->origin, sqlite3_column_text(st, 4));
            hit = 1;
        } else {
            hit = err_set(ei, -ENOMEM, "cache: out of memory");
        }
    } else if (rc != SQLITE_DONE) {
        hit = db_error(ei, c->rd, "lookup");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_unlock(&c->rd_mu);
    return hit;
}

/* Steps a writer statement that returns no rows; resets it. SQLite's code. */
static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int cache_touch(cache *c, const uint8_t key[SHA256_BYTES], err_info *ei)
{
    pthread_mutex_lock(&c->wr_mu);
    sqlite3_stmt *st = c->w[W_TOUCH];
    sqlite3_bind_blob(st, 1, key, SHA256_BYTES, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms());
    int rc = step_done(st) == SQLITE_OK ? 0 : db_error(ei, c->wr, "touch");
    pthread_mutex_unlock(&c->wr_mu);
    return rc;
}

/* Drops expired entries (at most once a minute); returns how many, or -1. Writer's lock. */
static int purge_expired(cache *c, int64_t now)
{
    if (!c->ttl_ms || now < c->next_purge_ms)
        return 0;
    c->next_purge_ms = now + 60000;
    sqlite3_stmt *q = c->w[W_EXPIRED];
    sqlite3_bind_int64(q, 1, now - c->ttl_ms);
    int n = -1;
    int64_t bytes = 0;
    if (sqlite3_step(q) == SQLITE_ROW) {
        n = sqlite3_column_int(q, 0);
        bytes = sqlite3_column_int64(q, 1);
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    if (n <= 0)
        return n;
    sqlite3_bind_int64(c->w[W_PURGE], 1, now - c->ttl_ms);
    if (step_done(c->w[W_PURGE]) != SQLITE_OK)
        return -1;
    c->total_bytes -= bytes;
    return n;
}

/* Evicts least recently used entries until the total fits; returns how many, or -1. */
static int evict_lru(cache *c)
{
    int n = 0;
    while (c->total_bytes > c->max_bytes) {
        uint8_t keys[64][SHA256_BYTES];
        int64_t bytes[64];
        int k = 0;
        sqlite3_stmt *q = c->w[W_OLDEST];
        while (k < 64 && sqlite3_step(q) == SQLITE_ROW) {
            if (sqlite3_column_bytes(q, 0) == SHA256_BYTES)
                memcpy(keys[k], sqlite3_column_blob(q, 0), SHA256_BYTES);
            bytes[k++] = sqlite3_column_int64(q, 1);
        }
        sqlite3_reset(q);
        if (k == 0)
            break; /* nothing left to evict: the total was stale */
        for (int i = 0; i < k && c->total_bytes > c->max_bytes; i++) {
            sqlite3_bind_blob(c->w[W_DELETE], 1, keys[i], SHA256_BYTES, SQLITE_STATIC);
            if (step_done(c->w[W_DELETE]) != SQLITE_OK)
                return -1;
            c->total_bytes -= bytes[i];
            n++;
        }
    }
    if (c->total_bytes < 0)
        c->total_bytes = 0;
    return n;
}

int cache_put(cache *c, const uint8_t key[SHA256_BYTES], const cache_entry *e, err_info *ei)
{
    int64_t charged = (int64_t)e->len + ROW_OVERHEAD, now = now_ms();
    if (charged > c->max_bytes)
        return err_set(ei, -ERR_RANGE, "cache: an answer of %zu bytes is over the size limit", e->len);
    pthread_mutex_lock(&c->wr_mu);
    int rc = exec(c->wr, "BEGIN IMMEDIATE");
    int64_t replaced = 0; /* a replaced entry's bytes leave the total */
    if (rc == SQLITE_OK && !query_int(c->w[W_BYTES], key, &replaced))
        rc = sqlite3_errcode(c->wr);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *st = c->w[W_PUT];
        sqlite3_bind_blob(st, 1, key, SHA256_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int64(st, 3, charged);
        sqlite3_bind_text(st, 4, e->finish_reason, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 5, e->n_prompt);
        sqlite3_bind_int(st, 6, e->n_generated);
        sqlite3_bind_text(st, 7, e->origin, -1, SQLITE_STATIC);
        sqlite3_bind_blob64(st, 8, e->len ? e->text : "", e->len, SQLITE_STATIC);
        rc = step_done(st);
    }
    int evicted = 0;
    if (rc == SQLITE_OK) {
        c->total_bytes += charged - replaced;
        int expired = purge_expired(c, now), lru = expired < 0 ? -1 : evict_lru(c);
        evicted = expired + lru;
        if (expired < 0 || lru < 0)
            rc = sqlite3_errcode(c->wr);
    }
    if (rc == SQLITE_OK)
        rc = exec(c->wr, "COMMIT");
    int out = rc == SQLITE_OK ? evicted : db_error(ei, c->wr, "store");
    if (rc != SQLITE_OK) {
        exec(c->wr, "ROLLBACK");
        read_total(c); /* how much of the total was rolled back is not known here */
    }
    pthread_mutex_unlock(&c->wr_mu);
    return out;
}

int cache_file_sha256(cache *c, const char *path, uint8_t out[SHA256_BYTES], bool *remembered, err_info *ei)
{
    if (remembered)
        *remembered = false;
    struct stat sb;
    if (stat(path, &sb) < 0)
        return err_set(ei, -errno, "%s: %s", path, strerror(errno));
    int64_t id[4] = {(int64_t)sb.st_dev, (int64_t)sb.st_ino, (int64_t)sb.st_size,
                     (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec};
    if (c) {
        pthread_mutex_lock(&c->wr_mu);
        sqlite3_stmt *q = c->w[W_HASH_GET];
        for (int i = 0; i < 4; i++)
            sqlite3_bind_int64(q, i + 1, id[i]);
        bool found = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_bytes(q, 0) == SHA256_BYTES;
        if (found)
            memcpy(out, sqlite3_column_blob(q, 0), SHA256_BYTES);
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        pthread_mutex_unlock(&c->wr_mu);
        if (found) {
            if (remembered)
                *remembered = true;
            return 0;
        }
    }
    int rc = sha256_file(path, out, ei);
    if (rc < 0 || !c)
        return rc;
    pthread_mutex_lock(&c->wr_mu);
    sqlite3_stmt *st = c->w[W_HASH_PUT];
    for (int i = 0; i < 4; i++)
        sqlite3_bind_int64(st, i + 1, id[i]);
    sqlite3_bind_text(st, 5, path, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, out, SHA256_BYTES, SQLITE_STATIC);
    step_done(st); /* not remembering only costs the next start another read */
    pthread_mutex_unlock(&c->wr_mu);
    return 0;
}

int cache_audit(cache *c, const cache_audit_rec *r, err_info *ei)
{
    pthread_mutex_lock(&c->wr_mu);
    sqlite3_stmt *st = c->w[W_AUDIT];
    sqlite3_bind_int64(st, 1, r->at_ms);
    sqlite3_bind_text(st, 2, r->reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->outcome, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, r->http_status);
    sqlite3_bind_int64(st, 5, r->request_bytes);
    sqlite3_bind_int64(st, 6, r->response_bytes);
    sqlite3_bind_double(st, 7, r->ms);
    if (r->request)
        sqlite3_bind_text(st, 8, r->request, -1, SQLITE_STATIC);
    if (r->response)
        sqlite3_bind_text(st, 9, r->response, -1, SQLITE_STATIC);
    int rc = step_done(st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(c->w[W_AUDIT_TRIM], 1, CACHE_AUDIT_ROWS);
        rc = step_done(c->w[W_AUDIT_TRIM]);
    }
    int out = rc == SQLITE_OK ? 0 : db_error(ei, c->wr, "audit");
    pthread_mutex_unlock(&c->wr_mu);
    return out;
}
