/* test_cache — daemon/cache.c on real SQLite files: store and look up, replace, the TTL, LRU
 * eviction under the size limit (and what counts as use), a corrupt file moved aside at
 * open, a directory it cannot write, the remembered model-file hash (and that a changed
 * file is hashed again), and the offload audit rows. */
#include <check.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/cache.h"
#include "tests/testutil.h"

static cache *open_db(const char *name, int64_t ttl_s, int64_t max_bytes)
{
    cache *c = NULL;
    err_info ei = {0};
    cache_params p = {.path = tmp_path(name), .ttl_s = ttl_s, .max_bytes = max_bytes};
    ck_assert_msg(cache_open(&c, &p, NULL, &ei) == 0, "open %s: %s", p.path, ei.msg);
    return c;
}

static void remove_db(const char *name)
{
    char side[300];
    unlink(tmp_path(name));
    snprintf(side, sizeof side, "%s-wal", tmp_path(name));
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", tmp_path(name));
    unlink(side);
}

static void key_of(const char *s, uint8_t key[SHA256_BYTES])
{
    sha256(s, strlen(s), key);
}

static int put(cache *c, const char *key, const char *text)
{
    uint8_t k[SHA256_BYTES];
    key_of(key, k);
    cache_entry e = {.text = (char *)text, .len = strlen(text), .n_prompt = 3, .n_generated = 5};
    strcpy(e.finish_reason, "stop");
    strcpy(e.origin, "local");
    err_info ei = {0};
    int rc = cache_put(c, k, &e, &ei);
    ck_assert_msg(rc >= 0, "put %s: %s", key, ei.msg);
    return rc;
}

/* The stored text, or NULL on a miss (caller frees). */
static char *get(cache *c, const char *key)
{
    uint8_t k[SHA256_BYTES];
    key_of(key, k);
    cache_entry e;
    err_info ei = {0};
    int rc = cache_get(c, k, &e, &ei);
    ck_assert_msg(rc >= 0, "get %s: %s", key, ei.msg);
    return rc ? e.text : NULL;
}

START_TEST(store_and_lookup)
{
    cache *c = open_db("a.db", 0, 1 << 20);
    char *miss = get(c, "nothing");
    ck_assert_ptr_null(miss);
    ck_assert_int_eq(put(c, "k1", "hello \xe2\x82\xac world"), 0);
    uint8_t k[SHA256_BYTES];
    key_of("k1", k);
    cache_entry e;
    err_info ei = {0};
    ck_assert_int_eq(cache_get(c, k, &e, &ei), 1);
    ck_assert_str_eq(e.text, "hello \xe2\x82\xac world");
    ck_assert_uint_eq(e.len, strlen("hello \xe2\x82\xac world"));
    ck_assert_str_eq(e.finish_reason, "stop");
    ck_assert_str_eq(e.origin, "local");
    ck_assert_int_eq(e.n_prompt, 3);
    ck_assert_int_eq(e.n_generated, 5);
    cache_entry_free(&e);
    /* bytes are kept exactly, NULs included */
    cache_entry bin = {.text = "a\0b", .len = 3, .finish_reason = "length", .origin = "cloud"};
    key_of("bin", k);
    ck_assert_int_eq(cache_put(c, k, &bin, &ei), 0);
    ck_assert_int_eq(cache_get(c, k, &e, &ei), 1);
    ck_assert_uint_eq(e.len, 3);
    ck_assert_mem_eq(e.text, "a\0b", 3);
    ck_assert_str_eq(e.finish_reason, "length");
    cache_entry_free(&e);
    /* replacing keeps one entry and the new text */
    put(c, "k1", "second");
    char *t = get(c, "k1");
    ck_assert_str_eq(t, "second");
    free(t);
    cache_close(c);
    /* and it all survives a reopen */
    c = open_db("a.db", 0, 1 << 20);
    t = get(c, "k1");
    ck_assert_str_eq(t, "second");
    free(t);
    cache_close(c);
    remove_db("a.db");
}
END_TEST

START_TEST(ttl_expires)
{
    cache *c = open_db("ttl.db", 1, 1 << 20);
    put(c, "k", "soon gone");
    char *t = get(c, "k");
    ck_assert_ptr_nonnull(t);
    free(t);
    usleep(1100 * 1000);
    ck_assert_ptr_null(get(c, "k"));
    cache_close(c);
    remove_db("ttl.db");
}
END_TEST

/* Each entry is charged its text plus a fixed overhead (128): 4 entries of 200 bytes are
 * 1312 bytes, so a limit of 1000 holds three. */
START_TEST(lru_eviction)
{
    char text[201];
    memset(text, 'x', 200);
    text[200] = 0;
    cache *c = open_db("lru.db", 0, 1000);
    /* recency is kept in milliseconds: a pause between steps orders them */
    ck_assert_int_eq(put(c, "a", text), 0);
    usleep(5000);
    ck_assert_int_eq(put(c, "b", text), 0);
    usleep(5000);
    ck_assert_int_eq(put(c, "c", text), 0);
    /* a is used (touched) after b and c were stored: b is now the least recently used */
    usleep(5000);
    uint8_t k[SHA256_BYTES];
    key_of("a", k);
    err_info ei = {0};
    ck_assert_int_eq(cache_touch(c, k, &ei), 0);
    usleep(5000);
    ck_assert_int_eq(put(c, "d", text), 1);
    char *t;
    ck_assert_ptr_null(get(c, "b"));
    ck_assert_ptr_nonnull(t = get(c, "a"));
    free(t);
    ck_assert_ptr_nonnull(t = get(c, "c"));
    free(t);
    ck_assert_ptr_nonnull(t = get(c, "d"));
    free(t);
    /* replacing an entry does not count it twice: no eviction */
    ck_assert_int_eq(put(c, "d", text), 0);
    /* an answer larger than the whole cache is refused, nothing evicted */
    char big[2000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cache_entry e = {.text = big, .len = strlen(big), .finish_reason = "stop", .origin = "local"};
    key_of("big", k);
    ck_assert_int_eq(cache_put(c, k, &e, &ei), -ERR_RANGE);
    ck_assert_ptr_nonnull(t = get(c, "a"));
    free(t);
    cache_close(c);
    remove_db("lru.db");
}
END_TEST

START_TEST(corrupt_file_is_moved_aside)
{
    const char *path = tmp_path("bad.db");
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database ", f);
    fclose(f);
    cache *c = NULL;
    bool moved = false;
    err_info ei = {0};
    cache_params p = {.path = path, .ttl_s = 0, .max_bytes = 1 << 20};
    ck_assert_msg(cache_open(&c, &p, &moved, &ei) == 0, "%s", ei.msg);
    ck_assert(moved);
    put(c, "k", "works again");
    char *t = get(c, "k");
    ck_assert_str_eq(t, "works again");
    free(t);
    cache_close(c);
    /* the bad file is kept beside it for a post-mortem */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s.corrupt-* >/dev/null 2>&1 && rm -f %s.corrupt-*", path, path);
    ck_assert_int_eq(system(cmd), 0);
    /* a real database with a damaged page: quick_check catches it too */
    c = open_db("bad.db", 0, 1 << 20);
    char text[3000];
    memset(text, 'z', sizeof text - 1);
    text[sizeof text - 1] = 0;
    for (int i = 0; i < 40; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        put(c, key, text);
    }
    cache_close(c);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 4096, SEEK_SET); /* pages 2 and 3: B-tree pages of the schema's tables */
    for (int i = 0; i < 8192; i++)
        fputc(0xA5, f);
    fclose(f);
    moved = false;
    ck_assert_msg(cache_open(&c, &p, &moved, &ei) == 0, "%s", ei.msg);
    ck_assert(moved);
    ck_assert_ptr_null(get(c, "k1"));
    cache_close(c);
    ck_assert_int_eq(system(cmd), 0);
    remove_db("bad.db");
}
END_TEST

START_TEST(unwritable_place_is_an_error)
{
    cache *c = (cache *)1;
    err_info ei = {0};
    cache_params p = {.path = "/nonexistent-dir/edgellm/cache.db", .ttl_s = 0, .max_bytes = 1 << 20};
    ck_assert_int_eq(cache_open(&c, &p, NULL, &ei), -ERR_IO);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(ei.msg, "/nonexistent-dir/edgellm/cache.db"));
}
END_TEST

START_TEST(file_hash_is_remembered)
{
    const char *model = tmp_path("model.bin");
    FILE *f = fopen(model, "wb");
    fputs("pretend weights", f);
    fclose(f);
    uint8_t want[SHA256_BYTES], got[SHA256_BYTES];
    sha256("pretend weights", 15, want);
    cache *c = open_db("h.db", 0, 1 << 20);
    bool remembered = true;
    err_info ei = {0};
    ck_assert_int_eq(cache_file_sha256(c, model, got, &remembered, &ei), 0);
    ck_assert(!remembered);
    ck_assert_mem_eq(got, want, SHA256_BYTES);
    ck_assert_int_eq(cache_file_sha256(c, model, got, &remembered, &ei), 0);
    ck_assert(remembered);
    ck_assert_mem_eq(got, want, SHA256_BYTES);
    /* rewritten (size and mtime change): hashed again */
    f = fopen(model, "wb");
    fputs("other weights!!!", f);
    fclose(f);
    sha256("other weights!!!", 16, want);
    ck_assert_int_eq(cache_file_sha256(c, model, got, &remembered, &ei), 0);
    ck_assert(!remembered);
    ck_assert_mem_eq(got, want, SHA256_BYTES);
    /* without a database: always computed */
    ck_assert_int_eq(cache_file_sha256(NULL, model, got, &remembered, &ei), 0);
    ck_assert(!remembered);
    ck_assert_mem_eq(got, want, SHA256_BYTES);
    unlink(model);
    ck_assert_int_eq(cache_file_sha256(c, model, got, NULL, &ei), -ENOENT);
    cache_close(c);
    remove_db("h.db");
}
END_TEST

START_TEST(audit_rows)
{
    cache *c = open_db("audit.db", 0, 1 << 20);
    err_info ei = {0};
    cache_audit_rec r1 = {.at_ms = 1000, .reason = "queue_full", .outcome = "ok", .http_status = 200,
                          .request_bytes = 50, .response_bytes = 700, .ms = 12.5};
    cache_audit_rec r2 = {.at_ms = 2000, .reason = "requested", .outcome = "timeout", .request_bytes = 60,
                          .request = "{\"prompt\":\"secret\"}", .response = ""};
    ck_assert_int_eq(cache_audit(c, &r1, &ei), 0);
    ck_assert_int_eq(cache_audit(c, &r2, &ei), 0);
    cache_close(c);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(tmp_path("audit.db"), &db), SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db,
                                        "SELECT reason, outcome, http_status, request_bytes, response_bytes, request "
                                        "FROM offload_audit ORDER BY id",
                                        -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "queue_full");
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 1), "ok");
    ck_assert_int_eq(sqlite3_column_int(st, 2), 200);
    ck_assert_int_eq(sqlite3_column_int(st, 4), 700);
    ck_assert_int_eq(sqlite3_column_type(st, 5), SQLITE_NULL); /* content only when configured */
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 1), "timeout");
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 5), "{\"prompt\":\"secret\"}");
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
    remove_db("audit.db");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cache");
    TCase *tc = tcase_create("cache");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, store_and_lookup);
    tcase_add_test(tc, ttl_expires);
    tcase_add_test(tc, lru_eviction);
    tcase_add_test(tc, corrupt_file_is_moved_aside);
    tcase_add_test(tc, unwritable_place_is_an_error);
    tcase_add_test(tc, file_hash_is_remembered);
    tcase_add_test(tc, audit_rows);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
