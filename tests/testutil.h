/* testutil — helpers shared by the Check suites of the file formats (test_gguf, test_qtype,
 * test_mkmodel): where the shared reference data lives, a private temporary directory per
 * run, reading a file whole, opening a GGUF that must open, a seeded PRNG, and the common
 * main. Header-only (static inline), because every tests/test_*.c is linked on its own. */
#ifndef EDGELLM_TESTUTIL_H
#define EDGELLM_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/gguf.h"

/* $SHARED, the read-only reference data (models/, tokenizer/). */
static inline const char *shared_dir(void)
{
    const char *s = getenv("SHARED");
    return s && *s ? s : "../shared";
}

/* This run's temporary directory, made by run_suite. */
static char tmp_dir[64];

/* A path inside tmp_dir. Two rotating buffers: two results may be used together. */
static inline const char *tmp_path(const char *name)
{
    static char path[2][256];
    static int which;
    which ^= 1;
    snprintf(path[which], sizeof path[which], "%s/%s", tmp_dir, name);
    return path[which];
}

/* The whole file in a malloc'd buffer of exactly its size (so ASan sees over-reads). */
static inline uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    ck_assert(buf != NULL);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static inline gguf *open_ok(const char *path)
{
    gguf *g;
    err_info ei = {0};
    int rc = gguf_open(&g, path, &ei);
    ck_assert_msg(rc == 0, "open %s: %s", path, ei.msg);
    return g;
}

static inline uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Runs suite s with CK_NORMAL output inside a fresh temporary directory; the exit status. */
static inline int run_suite(Suite *s)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/edgellm-test.XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    rmdir(tmp_dir); /* every test removes its files; a failed one leaves them to look at */
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
