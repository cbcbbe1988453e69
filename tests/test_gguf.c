/* test_gguf — the GGUF reader (engine/gguf.c) and writer (engine/gguf_write.c).
 *
 * Writer: everything it writes reads back bit-exactly (every value type, arrays, string
 * arrays with empty and UTF-8 strings, tensors of every type at alignments 32 and 64,
 * streamed tensors bigger than one chunk); copying llama.cpp's reference models through it
 * reproduces them byte for byte; failures leave no file behind.
 * Reader: hand-built hostile files (a byte builder below) are each refused with a message
 * naming the problem; a small valid file truncated at every byte is always refused; a few
 * thousand random byte flips never crash it (run under ASan to make that mean something). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/qtype.h"
#include "tests/testutil.h"

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_dir_entries(void)
{
    DIR *d = opendir(tmp_dir);
    ck_assert(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* ---- byte builder for hand-made files ----------------------------------------------- */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_raw(bb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert(b->p != NULL);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void bb_u32(bb *b, uint32_t v) { bb_raw(b, &v, 4); }
static void bb_u64(bb *b, uint64_t v) { bb_raw(b, &v, 8); }
static void bb_u8(bb *b, uint8_t v) { bb_raw(b, &v, 1); }

static void bb_str(bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_raw(b, s, strlen(s));
}

static void bb_hdr(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb_raw(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_U32);
    bb_u32(b, v);
}

static void bb_kv_str(bb *b, const char *key, const char *v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_STR);
    bb_str(b, v);
}

static void bb_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

static void bb_zeros(bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, 0);
}

static void bb_align(bb *b, size_t a) { bb_zeros(b, (a - b->n % a) % a); }

/* Opens b from a buffer of exactly its size (so ASan sees any over-read) and expects a
 * refusal whose message contains needle. */
static void expect_refused(const bb *b, size_t len, const char *needle)
{
    uint8_t *copy = malloc(len ? len : 1);
    ck_assert(copy != NULL);
    memcpy(copy, b->p, len);
    gguf *g = (gguf *)1;
    err_info ei = {0};
    int rc = gguf_open_mem(&g, copy, len, &ei);
    ck_assert_msg(rc < 0, "accepted a file that should be refused for '%s'", needle);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(ei.code, rc);
    ck_assert_msg(strstr(ei.msg, needle) != NULL, "message '%s' does not contain '%s'", ei.msg, needle);
    free(copy);
}

static void expect_refused_all(const bb *b, const char *needle) { expect_refused(b, b->n, needle); }

/* A small valid file with no trailing padding, so that every truncation cuts something:
 * three metadata entries (string, uint32, string array) and two tensors. */
static void build_valid(bb *b)
{
    bb_hdr(b, 3, 2, 3);
    bb_kv_str(b, "general.architecture", "llama");
    bb_kv_u32(b, "test.count", 7);
    bb_str(b, "test.words");
    bb_u32(b, GGUF_ARR);
    bb_u32(b, GGUF_STR);
    bb_u64(b, 3);
    bb_str(b, "a");
    bb_str(b, "bc");
    bb_str(b, "");
    uint64_t ne_a[] = {4}, ne_b[] = {32, 2};
    bb_tensor(b, "a", 1, ne_a, QT_F32, 0);
    bb_tensor(b, "b", 2, ne_b, QT_Q8_0, 32);
    bb_align(b, 32);
    float fa[4] = {1, 2, 3, 4};
    bb_raw(b, fa, sizeof fa);
    bb_zeros(b, 16);
    for (int i = 0; i < 68; i++)
        bb_u8(b, (uint8_t)i);
}

START_TEST(test_valid_builder_file_opens)
{
    bb b = {0};
    build_valid(&b);
    gguf *g;
    err_info ei = {0};
    ck_assert_msg(gguf_open_mem(&g, b.p, b.n, &ei) == 0, "%s", ei.msg);
    ck_assert_uint_eq(gguf_n_kv(g), 3);
    ck_assert_uint_eq(gguf_n_tensors(g), 2);
    const gguf_tensor *t = gguf_find_tensor(g, "b");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->nbytes, 68);
    ck_assert_uint_eq((const uint8_t *)t->data + t->nbytes - (const uint8_t *)gguf_base(g), b.n);
    gguf_close(g);
    free(b.p);
}
END_TEST

/* ---- hostile headers ------------------------------------------------------------------ */

START_TEST(test_refuses_bad_header)
{
    bb b = {0};
    build_valid(&b);
    memcpy(b.p, "GGUX", 4);
    expect_refused_all(&b, "bad magic");
    memcpy(b.p, "GGUF", 4);
    uint32_t versions[] = {1, 4, 0};
    const char *why[] = {"version 1", "version 4", "version 0"};
    for (int i = 0; i < 3; i++) {
        memcpy(b.p + 4, &versions[i], 4);
        expect_refused_all(&b, why[i]);
    }
    uint8_t big_endian_3[4] = {0, 0, 0, 3};
    memcpy(b.p + 4, big_endian_3, 4);
    expect_refused_all(&b, "big-endian");
    expect_refused(&b, 3, "too short");
    free(b.p);

    bb h = {0};
    bb_hdr(&h, 3, 1ull << 60, 0);
    bb_zeros(&h, 64);
    expect_refused_all(&h, "tensor count 1152921504606846976");
    h.n = 0;
    bb_hdr(&h, 3, 0, 1ull << 60);
    bb_zeros(&h, 64);
    expect_refused_all(&h, "metadata count 1152921504606846976");
    free(h.p);
}
END_TEST

/* Restarts b as a file of one metadata entry, key of value type `type`, up to its value. */
static void bb_one_kv(bb *b, const char *key, uint32_t type)
{
    b->n = 0;
    bb_hdr(b, 3, 0, 1);
    bb_str(b, key);
    bb_u32(b, type);
}

/* The same for an array entry, up to its elements. */
static void bb_one_arr(bb *b, const char *key, uint32_t elem, uint64_t n)
{
    bb_one_kv(b, key, GGUF_ARR);
    bb_u32(b, elem);
    bb_u64(b, n);
}

START_TEST(test_refuses_bad_strings)
{
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 100); /* key length past the end */
    bb_raw(&b, "general.x", 9);
    expect_refused_all(&b, "string length 100 exceeds");
    b.n = 0;
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 1ull << 63);
    bb_zeros(&b, 16);
    expect_refused_all(&b, "string length 9223372036854775808 exceeds");
    bb_one_kv(&b, "general.name", GGUF_STR);
    bb_u64(&b, 1000); /* value past the end */
    bb_raw(&b, "abc", 3);
    expect_refused_all(&b, "metadata key 'general.name'");
    free(b.p);
}
END_TEST

START_TEST(test_refuses_bad_values)
{
    bb b = {0};
    bb_one_kv(&b, "flag", GGUF_BOOL);
    bb_u8(&b, 2);
    expect_refused_all(&b, "bool value 2");
    bb_one_kv(&b, "odd", 13);
    bb_u32(&b, 0);
    expect_refused_all(&b, "unknown value type 13");

    bb_one_arr(&b, "nest", GGUF_ARR, 1);
    bb_u32(&b, GGUF_U8);
    bb_u64(&b, 1);
    bb_u8(&b, 0);
    expect_refused_all(&b, "nested array");
    bb_one_arr(&b, "weird", 40, 1);
    bb_zeros(&b, 8);
    expect_refused_all(&b, "array element type 40 is unknown");
    bb_one_arr(&b, "huge", GGUF_U32, 1ull << 61); /* 2^63 bytes: fits in 64 bits, not in the file */
    bb_zeros(&b, 64);
    expect_refused_all(&b, "array of 2305843009213693952 uint32 elements exceeds");
    bb_one_arr(&b, "huger", GGUF_U64, 1ull << 62); /* the byte count overflows */
    bb_zeros(&b, 64);
    expect_refused_all(&b, "array of 4611686018427387904 uint64 elements exceeds");
    bb_one_arr(&b, "tokenizer.ggml.tokens", GGUF_STR, 3); /* the 3rd string runs past the end */
    bb_str(&b, "a");
    bb_str(&b, "b");
    bb_u64(&b, 50);
    expect_refused_all(&b, "string element 2 of 3");

    b.n = 0;
    bb_hdr(&b, 3, 0, 2);
    bb_kv_u32(&b, "general.alignment", 32);
    bb_kv_u32(&b, "general.alignment", 64);
    expect_refused_all(&b, "'general.alignment' appears twice");
    free(b.p);
}
END_TEST

START_TEST(test_refuses_bad_alignment)
{
    uint32_t bad[] = {0, 3, 48, 1u << 25};
    for (int i = 0; i < 4; i++) {
        bb b = {0};
        bb_one_kv(&b, "general.alignment", GGUF_U32);
        bb_u32(&b, bad[i]);
        char needle[64];
        snprintf(needle, sizeof needle, "'general.alignment' is %u", bad[i]);
        expect_refused_all(&b, needle);
        free(b.p);
    }
    bb b = {0};
    bb_one_kv(&b, "general.alignment", GGUF_U64);
    bb_u64(&b, 32);
    expect_refused_all(&b, "'general.alignment' has type uint64");
    bb_one_kv(&b, "general.alignment", GGUF_STR);
    bb_str(&b, "32");
    expect_refused_all(&b, "'general.alignment' has type string");
    free(b.p);
}
END_TEST

/* One tensor info (plus data_bytes of data) in an otherwise empty file. */
static void build_one_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                             uint64_t offset, size_t data_bytes)
{
    b->n = 0;
    bb_hdr(b, 3, 1, 0);
    bb_tensor(b, name, n_dims, ne, type, offset);
    bb_align(b, 32);
    bb_zeros(b, data_bytes);
}

START_TEST(test_refuses_bad_tensor_infos)
{
    bb b = {0};
    uint64_t ne5[] = {1, 1, 1, 1, 1};
    build_one_tensor(&b, "t", 5, ne5, QT_F32, 0, 64);
    expect_refused_all(&b, "tensor 't': n_dims is 5");
    build_one_tensor(&b, "t", 0, ne5, QT_F32, 0, 64);
    expect_refused_all(&b, "n_dims is 0");

    uint64_t zero[] = {4, 0};
    build_one_tensor(&b, "t", 2, zero, QT_F32, 0, 64);
    expect_refused_all(&b, "dimension 1 is 0");

    uint64_t negative[] = {1ull << 63, 1};
    build_one_tensor(&b, "t", 2, negative, QT_F32, 0, 64);
    expect_refused_all(&b, "dimension 0 is -9223372036854775808, expected a positive size");

    uint64_t product[] = {1ull << 20, 1ull << 20, 1ull << 24}; /* 2^64 elements */
    build_one_tensor(&b, "t", 3, product, QT_F32, 0, 64);
    expect_refused_all(&b, "element count overflows at dimension 2");
    uint64_t product63[] = {1ull << 31, 1ull << 31, 2}; /* 2^63: fits uint64, not int64 */
    build_one_tensor(&b, "t", 3, product63, QT_F32, 0, 64);
    expect_refused_all(&b, "element count overflows at dimension 2");

    uint64_t bytes_rows[] = {1ull << 31, 1ull << 31}; /* 2^62 floats: 2^64 bytes */
    build_one_tensor(&b, "t", 2, bytes_rows, QT_F32, 0, 64);
    expect_refused_all(&b, "byte size overflows");
    uint64_t bytes_row[] = {1ull << 62}; /* one row of 2^64 bytes */
    build_one_tensor(&b, "t", 1, bytes_row, QT_F32, 0, 64);
    expect_refused_all(&b, "byte size overflows");

    uint64_t ne[] = {32, 2};
    build_one_tensor(&b, "t", 2, ne, 99, 0, 256);
    expect_refused_all(&b, "unknown tensor type 99");
    build_one_tensor(&b, "t", 2, ne, 4 /* retired Q4_2 */, 0, 256);
    expect_refused_all(&b, "unknown tensor type 4");

    uint64_t ne33[] = {33, 2};
    build_one_tensor(&b, "t", 2, ne33, QT_Q4_0, 0, 256);
    expect_refused_all(&b, "row length 33 is not a multiple of the Q4_0 block size 32");
    uint64_t ne896[] = {896, 2};
    build_one_tensor(&b, "t", 2, ne896, QT_Q4_K, 0, 4096);
    expect_refused_all(&b, "row length 896 is not a multiple of the Q4_K block size 256");

    build_one_tensor(&b, "t", 2, ne, QT_F32, 8, 512);
    expect_refused_all(&b, "data offset 8 is not a multiple of the alignment 32");
    build_one_tensor(&b, "t", 2, ne, QT_F32, 1ull << 40, 256);
    expect_refused_all(&b, "runs past the end of the file");
    build_one_tensor(&b, "t", 2, ne, QT_F32, 0, 256 - 1); /* data short by exactly one byte */
    expect_refused_all(&b, "tensor 't': data [0, +256) runs past the end");
    build_one_tensor(&b, "t", 2, ne, QT_F32, 0, 256); /* the same with the byte: fine */
    gguf *g;
    err_info ei = {0};
    ck_assert_msg(gguf_open_mem(&g, b.p, b.n, &ei) == 0, "%s", ei.msg);
    gguf_close(g);

    build_one_tensor(&b, "", 2, ne, QT_F32, 0, 256);
    expect_refused_all(&b, "name length 0");
    char long_name[GGUF_MAX_NAME + 1];
    memset(long_name, 'x', GGUF_MAX_NAME);
    long_name[GGUF_MAX_NAME] = 0;
    build_one_tensor(&b, long_name, 2, ne, QT_F32, 0, 256);
    expect_refused_all(&b, "name length 256");
    free(b.p);
}
END_TEST

START_TEST(test_refuses_duplicate_and_overlapping_tensors)
{
    uint64_t ne[] = {8};
    bb b = {0};
    bb_hdr(&b, 3, 2, 0);
    bb_tensor(&b, "w", 1, ne, QT_F32, 0);
    bb_tensor(&b, "w", 1, ne, QT_F32, 32);
    bb_align(&b, 32);
    bb_zeros(&b, 64);
    expect_refused_all(&b, "tensor 'w' appears twice");

    b.n = 0;
    bb_hdr(&b, 3, 2, 0);
    bb_tensor(&b, "second", 1, ne, QT_F32, 32);
    bb_tensor(&b, "first", 1, (uint64_t[]){16}, QT_F32, 0); /* 64 bytes: runs into 'second' */
    bb_align(&b, 32);
    bb_zeros(&b, 96);
    expect_refused_all(&b, "tensor 'second': data at offset 32 overlaps tensor 'first'");
    free(b.p);
}
END_TEST

START_TEST(test_truncation_at_every_byte)
{
    bb b = {0};
    build_valid(&b);
    for (size_t len = 0; len < b.n; len++) {
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, b.p, len);
        gguf *g = NULL;
        err_info ei = {0};
        int rc = gguf_open_mem(&g, copy, len, &ei);
        ck_assert_msg(rc < 0, "truncated to %zu of %zu bytes and still accepted", len, b.n);
        ck_assert_ptr_null(g);
        ck_assert_msg(ei.msg[0] != 0, "no message for truncation at %zu", len);
        free(copy);
    }
    free(b.p);
}
END_TEST

/* Reads everything an accepted file exposes, so ASan sees any view that leaves the buffer. */
static void touch_everything(const gguf *g)
{
    volatile uint8_t sink = 0;
    const uint8_t *base = gguf_base(g), *end = base + gguf_size(g);
    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        const gguf_kv *kv = gguf_kv_at(g, i);
        ck_assert(kv->key.len == 0 || ((const uint8_t *)kv->key.ptr >= base && (const uint8_t *)kv->key.ptr + kv->key.len <= end));
        for (uint64_t k = 0; k < kv->key.len; k++)
            sink ^= (uint8_t)kv->key.ptr[k];
        if (kv->type == GGUF_STR)
            for (uint64_t k = 0; k < kv->v.s.len; k++)
                sink ^= (uint8_t)kv->v.s.ptr[k];
        if (kv->type == GGUF_ARR && kv->v.a.elem == GGUF_STR) {
            gguf_str *s = malloc((size_t)kv->v.a.n * sizeof *s + 1);
            ck_assert(s != NULL);
            gguf_arr_strings(&kv->v.a, s);
            for (uint64_t k = 0; k < kv->v.a.n; k++)
                if (s[k].len)
                    sink ^= (uint8_t)(s[k].ptr[0] ^ s[k].ptr[s[k].len - 1]);
            free(s);
        } else if (kv->type == GGUF_ARR && kv->v.a.nbytes) {
            sink ^= kv->v.a.data[0] ^ kv->v.a.data[kv->v.a.nbytes - 1];
        }
    }
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const uint8_t *d = t->data;
        ck_assert(d >= base && t->nbytes <= (uint64_t)(end - d));
        if (t->nbytes)
            sink ^= d[0] ^ d[t->nbytes - 1];
    }
    (void)sink;
}

/* Flips 1..4 random bytes of a copy of file, n_rounds times; the reader must refuse or
 * accept without ever reading outside the copy. */
static void fuzz(const uint8_t *file, size_t n, int n_rounds, uint64_t seed)
{
    int accepted = 0;
    for (int r = 0; r < n_rounds; r++) {
        uint8_t *copy = malloc(n);
        memcpy(copy, file, n);
        int flips = 1 + (int)(rng_next(&seed) % 4);
        for (int f = 0; f < flips; f++)
            copy[rng_next(&seed) % n] = (uint8_t)rng_next(&seed);
        gguf *g = NULL;
        err_info ei = {0};
        if (gguf_open_mem(&g, copy, n, &ei) == 0) {
            touch_everything(g);
            gguf_close(g);
            accepted++;
        } else {
            ck_assert(g == NULL && ei.msg[0]);
        }
        free(copy);
    }
    /* both outcomes must occur, or the flips did not exercise the parser */
    ck_assert_int_gt(accepted, 0);
    ck_assert_int_lt(accepted, n_rounds);
}

START_TEST(test_random_byte_flips)
{
    bb b = {0};
    build_valid(&b);
    fuzz(b.p, b.n, 3000, 42);
    free(b.p);
}
END_TEST

/* ---- accessors ----------------------------------------------------------------------- */

START_TEST(test_typed_getters_name_the_key)
{
    bb b = {0};
    bb_hdr(&b, 3, 0, 3);
    bb_str(&b, "tokenizer.ggml.tokens"); /* an array of int32 where strings are expected */
    bb_u32(&b, GGUF_ARR);
    bb_u32(&b, GGUF_I32);
    bb_u64(&b, 2);
    bb_u32(&b, 5);
    bb_u32(&b, 6);
    bb_kv_str(&b, "general.name", "x");
    bb_str(&b, "big");
    bb_u32(&b, GGUF_U64);
    bb_u64(&b, 1ull << 40);
    gguf *g;
    err_info ei = {0};
    ck_assert_int_eq(gguf_open_mem(&g, b.p, b.n, &ei), 0);
    gguf_arr a;
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STR, &a, &ei), -ERR_TYPE);
    ck_assert_msg(strstr(ei.msg, "'tokenizer.ggml.tokens' is an array of int32, expected an array of string"), "%s", ei.msg);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_I32, &a, &ei), 0);
    ck_assert_uint_eq(a.n, 2);
    uint32_t u;
    ck_assert_int_eq(gguf_get_u32(g, "general.name", &u, &ei), -ERR_TYPE);
    ck_assert_msg(strstr(ei.msg, "'general.name' has type string"), "%s", ei.msg);
    ck_assert_int_eq(gguf_get_u32(g, "big", &u, &ei), -ERR_RANGE);
    ck_assert_msg(strstr(ei.msg, "'big'"), "%s", ei.msg);
    ck_assert_int_eq(gguf_get_u32(g, "absent", &u, &ei), -ERR_NOT_FOUND);
    ck_assert_msg(strstr(ei.msg, "'absent'"), "%s", ei.msg);
    gguf_close(g);
    free(b.p);
}
END_TEST

START_TEST(test_open_path_errors)
{
    gguf *g;
    err_info ei = {0};
    const char *missing = tmp_path("does-not-exist.gguf");
    ck_assert_int_eq(gguf_open(&g, missing, &ei), -ENOENT);
    ck_assert_msg(strstr(ei.msg, missing), "%s", ei.msg);
    ck_assert_int_lt(gguf_open(&g, tmp_dir, &ei), 0);
    ck_assert_msg(strstr(ei.msg, "not a regular file"), "%s", ei.msg);
    const char *empty = tmp_path("empty.gguf");
    FILE *f = fopen(empty, "wb");
    fclose(f);
    ck_assert_int_eq(gguf_open(&g, empty, &ei), -ERR_FORMAT);
    ck_assert_msg(strstr(ei.msg, "empty"), "%s", ei.msg);
    const char *bad = tmp_path("bad.gguf");
    f = fopen(bad, "wb");
    fputs("GGUFxxxxxxxxxxxxxxxxxxxx", f);
    fclose(f);
    ck_assert_int_lt(gguf_open(&g, bad, &ei), 0);
    ck_assert_msg(strncmp(ei.msg, bad, strlen(bad)) == 0, "message does not start with the path: %s", ei.msg);
    unlink(empty);
    unlink(bad);
}
END_TEST

/* ---- writer round trips -------------------------------------------------------------- */

static gguf_writer *new_writer(void)
{
    gguf_writer *w;
    err_info ei = {0};
    ck_assert_int_eq(gguf_writer_new(&w, &ei), 0);
    return w;
}

static void write_ok(gguf_writer *w, const char *path)
{
    err_info ei = {0};
    int rc = gguf_writer_write(w, path, &ei);
    ck_assert_msg(rc == 0, "write %s: %s", path, ei.msg);
}

static const gguf_kv *must_find(const gguf *g, const char *key, gguf_vtype type)
{
    const gguf_kv *kv = gguf_find(g, key);
    ck_assert_msg(kv != NULL, "missing %s", key);
    ck_assert_int_eq(kv->type, type);
    return kv;
}

static const char *const words[] = {"", "hello", "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93", "", "a\0b", "\xf0\x9f\x98\x80"};
static const uint64_t word_lens[] = {0, 5, 18, 0, 3, 4};
enum { N_WORDS = 6 };

/* Arrays of every fixed-size type (bool aside) hold the same ARR_BYTES bytes. */
enum { ARR_BYTES = 40 };

static void array_pattern(uint8_t *bytes)
{
    for (int i = 0; i < ARR_BYTES; i++)
        bytes[i] = (uint8_t)(i * 37 + 1);
}

/* The key of value type t's array, or false when t has no such array. */
static bool array_key(int t, char *key, size_t cap)
{
    if (!gguf_vtype_size((gguf_vtype)t) || t == GGUF_BOOL)
        return false;
    snprintf(key, cap, "arr.%s", gguf_vtype_name((uint32_t)t));
    return true;
}

/* Every scalar type at its extremes, strings, every array type, a key set twice. */
static void set_all_values(gguf_writer *w)
{
    uint8_t u8 = 255;
    int8_t i8 = -128;
    uint16_t u16 = 65535;
    int16_t i16 = -32768;
    uint64_t u64 = UINT64_MAX;
    int64_t i64 = INT64_MIN;
    double f64 = 0x1p-1074;
    gguf_writer_set(w, "v.u8", GGUF_U8, &u8);
    gguf_writer_set(w, "v.i8", GGUF_I8, &i8);
    gguf_writer_set(w, "v.u16", GGUF_U16, &u16);
    gguf_writer_set(w, "v.i16", GGUF_I16, &i16);
    gguf_writer_set_u32(w, "v.u32", 0xfffffffeu);
    gguf_writer_set_i32(w, "v.i32", INT32_MIN);
    gguf_writer_set_f32(w, "v.f32", -0x1.fffffep127f);
    gguf_writer_set_f32(w, "v.f32sub", 0x1p-149f);
    gguf_writer_set_bool(w, "v.true", true);
    gguf_writer_set_bool(w, "v.false", false);
    gguf_writer_set(w, "v.u64", GGUF_U64, &u64);
    gguf_writer_set(w, "v.i64", GGUF_I64, &i64);
    gguf_writer_set(w, "v.f64", GGUF_F64, &f64);
    gguf_writer_set_str(w, "v.str", "h\xc3\xa9llo");
    gguf_writer_set_str(w, "v.empty", "");
    gguf_writer_set_u32(w, "v.twice", 1);
    uint8_t bytes[ARR_BYTES];
    array_pattern(bytes);
    char key[32];
    for (int t = 0; t < GGUF_VTYPE_COUNT; t++)
        if (array_key(t, key, sizeof key))
            gguf_writer_set_arr(w, key, (gguf_vtype)t, ARR_BYTES / gguf_vtype_size((gguf_vtype)t), bytes);
    gguf_writer_set_arr(w, "arr.bool", GGUF_BOOL, 4, (uint8_t[]){0, 1, 1, 0});
    gguf_writer_set_arr(w, "arr.none", GGUF_U8, 0, NULL);
    gguf_writer_set_arr_str(w, "arr.str", N_WORDS, words, word_lens);
    gguf_writer_set_arr_str(w, "arr.cstr", 2, (const char *const[]){"x", "yz"}, NULL);
    gguf_writer_set_str(w, "v.twice", "second"); /* keeps its place, takes the new value */
}

static void check_all_values(const gguf *g)
{
    ck_assert_uint_eq(must_find(g, "v.u8", GGUF_U8)->v.u, 255);
    ck_assert_int_eq(must_find(g, "v.i8", GGUF_I8)->v.i, -128);
    ck_assert_uint_eq(must_find(g, "v.u16", GGUF_U16)->v.u, 65535);
    ck_assert_int_eq(must_find(g, "v.i16", GGUF_I16)->v.i, -32768);
    ck_assert_uint_eq(must_find(g, "v.u32", GGUF_U32)->v.u, 0xfffffffeu);
    ck_assert_int_eq(must_find(g, "v.i32", GGUF_I32)->v.i, INT32_MIN);
    ck_assert(must_find(g, "v.f32", GGUF_F32)->v.f == (double)-0x1.fffffep127f);
    ck_assert(must_find(g, "v.f32sub", GGUF_F32)->v.f == 0x1p-149);
    ck_assert(must_find(g, "v.true", GGUF_BOOL)->v.b == true);
    ck_assert(must_find(g, "v.false", GGUF_BOOL)->v.b == false);
    ck_assert(must_find(g, "v.u64", GGUF_U64)->v.u == UINT64_MAX);
    ck_assert(must_find(g, "v.i64", GGUF_I64)->v.i == INT64_MIN);
    ck_assert(must_find(g, "v.f64", GGUF_F64)->v.f == 0x1p-1074);
    ck_assert(gguf_str_eq(must_find(g, "v.str", GGUF_STR)->v.s, "h\xc3\xa9llo"));
    ck_assert_uint_eq(must_find(g, "v.empty", GGUF_STR)->v.s.len, 0);
    ck_assert(gguf_str_eq(must_find(g, "v.twice", GGUF_STR)->v.s, "second"));
    ck_assert(gguf_str_eq(gguf_kv_at(g, 15)->key, "v.twice"));
    uint8_t bytes[ARR_BYTES];
    array_pattern(bytes);
    char key[32];
    for (int t = 0; t < GGUF_VTYPE_COUNT; t++) {
        if (!array_key(t, key, sizeof key))
            continue;
        size_t size = gguf_vtype_size((gguf_vtype)t);
        gguf_arr a;
        err_info ei = {0};
        ck_assert_msg(gguf_get_arr(g, key, (gguf_vtype)t, &a, &ei) == 0, "%s", ei.msg);
        ck_assert_uint_eq(a.n, ARR_BYTES / size);
        ck_assert_uint_eq(a.nbytes, ARR_BYTES / size * size);
        ck_assert(memcmp(a.data, bytes, (size_t)a.nbytes) == 0);
    }
    const gguf_arr *b = &must_find(g, "arr.bool", GGUF_ARR)->v.a;
    ck_assert(b->elem == GGUF_BOOL && b->n == 4 && memcmp(b->data, (uint8_t[]){0, 1, 1, 0}, 4) == 0);
    ck_assert_uint_eq(must_find(g, "arr.none", GGUF_ARR)->v.a.n, 0);
    const gguf_arr *s = &must_find(g, "arr.str", GGUF_ARR)->v.a;
    ck_assert(s->elem == GGUF_STR && s->n == N_WORDS);
    gguf_str strs[N_WORDS];
    gguf_arr_strings(s, strs);
    for (int i = 0; i < N_WORDS; i++) {
        ck_assert_uint_eq(strs[i].len, word_lens[i]);
        ck_assert(memcmp(strs[i].ptr, words[i], word_lens[i]) == 0);
    }
    gguf_arr_strings(&must_find(g, "arr.cstr", GGUF_ARR)->v.a, strs);
    ck_assert(gguf_str_eq(strs[0], "x") && gguf_str_eq(strs[1], "yz"));
}

START_TEST(test_writer_round_trips_every_value_type)
{
    gguf_writer *w = new_writer();
    set_all_values(w);
    const char *path = tmp_path("values.gguf");
    write_ok(w, path);
    gguf_writer_free(w);
    gguf *g = open_ok(path);
    ck_assert_uint_eq(gguf_version(g), 3);
    ck_assert_uint_eq(gguf_n_tensors(g), 0);
    check_all_values(g);

    /* copying every entry out of the file reproduces it byte for byte */
    w = new_writer();
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        ck_assert_int_eq(gguf_writer_copy_kv(w, gguf_kv_at(g, i)), 0);
    const char *copy = tmp_path("values-copy.gguf");
    write_ok(w, copy);
    gguf_writer_free(w);
    size_t n1, n2;
    uint8_t *a = slurp(path, &n1), *b = slurp(copy, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(a, b, n1) == 0);
    fuzz(a, n1, 2000, 7); /* the same file under random flips */
    free(a);
    free(b);
    gguf_close(g);
    unlink(path);
    unlink(copy);
}
END_TEST

/* Tensors of every type qtype knows, 1 to 4 dims, random bytes, at alignment 32 or 64. */
START_TEST(test_writer_round_trips_tensors)
{
    uint32_t align = _i == 0 ? 32 : 64;
    gguf_writer *w = new_writer();
    if (align != 32)
        gguf_writer_set_u32(w, "general.alignment", align);
    uint8_t *data[QT_COUNT] = {0};
    uint64_t seed = 99;
    int n_added = 0;
    for (int t = 0; t < QT_COUNT; t++) {
        const qt_traits *tr = qt_get((uint32_t)t);
        if (!tr)
            continue;
        uint32_t n_dims = 1 + (uint32_t)(t % 4);
        uint64_t ne[4] = {tr->block_elems * (uint64_t)(1 + t % 3), 3, 2, 1};
        size_t nbytes = qt_row_bytes((qt_type)t, (int64_t)ne[0]);
        for (uint32_t d = 1; d < n_dims; d++)
            nbytes *= ne[d];
        data[t] = malloc(nbytes);
        for (size_t i = 0; i < nbytes; i++)
            data[t][i] = (uint8_t)rng_next(&seed);
        char name[32];
        snprintf(name, sizeof name, "t.%s", tr->name);
        ck_assert_int_eq(gguf_writer_add_tensor(w, name, (qt_type)t, n_dims, ne, data[t]), 0);
        n_added++;
    }
    const char *path = tmp_path("tensors.gguf");
    write_ok(w, path);
    gguf_writer_free(w);
    gguf *g = open_ok(path);
    ck_assert_uint_eq(gguf_alignment(g), align);
    ck_assert_uint_eq(gguf_data_offset(g) % align, 0);
    ck_assert_uint_eq(gguf_n_tensors(g), (size_t)n_added);
    uint64_t expect_offset = 0;
    size_t i = 0;
    for (int t = 0; t < QT_COUNT; t++) {
        const qt_traits *tr = qt_get((uint32_t)t);
        if (!tr)
            continue;
        const gguf_tensor *x = gguf_tensor_at(g, i++);
        char name[32];
        snprintf(name, sizeof name, "t.%s", tr->name);
        ck_assert_msg(gguf_str_eq(x->name, name), "tensor %zu is not %s", i - 1, name);
        ck_assert_uint_eq(x->type, (uint32_t)t);
        ck_assert_uint_eq(x->n_dims, 1 + (uint32_t)(t % 4));
        ck_assert_uint_eq(x->ne[0], tr->block_elems * (uint64_t)(1 + t % 3));
        ck_assert_uint_eq(x->offset, expect_offset);
        ck_assert_uint_eq(x->offset % align, 0);
        ck_assert(memcmp(x->data, data[t], (size_t)x->nbytes) == 0);
        expect_offset += (x->nbytes + align - 1) / align * align;
        free(data[t]);
    }
    ck_assert_uint_eq(gguf_size(g), gguf_data_offset(g) + expect_offset);
    gguf_close(g);
    unlink(path);
}
END_TEST

/* Records the chunks a fill callback is asked for and writes a pattern from the row. */
typedef struct fill_log {
    uint64_t next_row, row_bytes;
    int calls;
    bool fail_at_second;
} fill_log;

static uint8_t pattern(uint64_t row, uint64_t i) { return (uint8_t)(row * 31 + i * 7 + (row >> 8)); }

static int fill_pattern(void *ctx, uint64_t row0, uint64_t n_rows, void *dst, err_info *ei)
{
    fill_log *log = ctx;
    ck_assert_uint_eq(row0, log->next_row); /* in order, no gap, no overlap */
    ck_assert(n_rows * log->row_bytes <= GGUF_WRITER_CHUNK || n_rows == 1);
    if (log->fail_at_second && ++log->calls == 2)
        return err_set(ei, -ERR_CANCELLED, "generator gave up at row %llu", (unsigned long long)row0);
    for (uint64_t r = 0; r < n_rows; r++)
        for (uint64_t i = 0; i < log->row_bytes; i++)
            ((uint8_t *)dst)[r * log->row_bytes + i] = pattern(row0 + r, i);
    log->next_row = row0 + n_rows;
    return 0;
}

START_TEST(test_writer_streams_big_tensors)
{
    gguf_writer *w = new_writer();
    uint64_t ne_many[] = {1000, 5000};         /* 20 MB of F32: three chunks */
    uint64_t ne_wide[] = {3u << 20};           /* one 12 MB row: bigger than a chunk */
    fill_log many = {.row_bytes = 4000}, wide = {.row_bytes = 12u << 20};
    gguf_writer_add_tensor_fill(w, "many", QT_F32, 2, ne_many, fill_pattern, &many);
    gguf_writer_add_tensor_fill(w, "wide", QT_F32, 1, ne_wide, fill_pattern, &wide);
    const char *path = tmp_path("big.gguf");
    write_ok(w, path);
    ck_assert_uint_eq(many.next_row, 5000);
    ck_assert_uint_eq(wide.next_row, 1);
    gguf *g = open_ok(path);
    const gguf_tensor *t = gguf_find_tensor(g, "many");
    ck_assert_uint_eq(t->nbytes, 20000000);
    const uint8_t *d = t->data;
    for (uint64_t r = 0; r < 5000; r += 7)
        for (uint64_t i = 0; i < 4000; i += 13)
            ck_assert_uint_eq(d[r * 4000 + i], pattern(r, i));
    d = gguf_find_tensor(g, "wide")->data;
    ck_assert_uint_eq(d[(12u << 20) - 1], pattern(0, (12u << 20) - 1));
    gguf_close(g);

    /* a failing generator aborts the write: the old file stays, no temporary is left */
    int entries = count_dir_entries();
    many = (fill_log){.row_bytes = 4000, .fail_at_second = true};
    wide.next_row = 0;
    err_info ei = {0};
    ck_assert_int_eq(gguf_writer_write(w, path, &ei), -ERR_CANCELLED);
    ck_assert_msg(strstr(ei.msg, "generator gave up at row"), "%s", ei.msg);
    ck_assert_int_eq(count_dir_entries(), entries);
    g = open_ok(path);
    ck_assert_uint_eq(pattern(4999, 3999), ((const uint8_t *)gguf_find_tensor(g, "many")->data)[20000000 - 1]);
    gguf_close(g);
    gguf_writer_free(w);
    unlink(path);
}
END_TEST

START_TEST(test_writer_refuses_what_the_reader_would)
{
    uint64_t ne[] = {32, 2}, ne33[] = {33}, zero[] = {4, 0};
    float data[64] = {0};
    struct {
        const char *needle;
        int rc;
    } cases[] = {
        {"tensor 'w' added twice", -EINVAL},
        {"name '' has length 0", -EINVAL},
        {"has length 256", -EINVAL},
        {"n_dims is 5", -EINVAL},
        {"dimension 1 is 0", -EINVAL},
        {"row length 33 is not a multiple of the Q8_0 block size 32", -EINVAL},
        {"unknown type 4", -EINVAL},
        {"arrays of string go through gguf_writer_set_arr_str", -EINVAL},
        {"arrays of array", -EINVAL},
        {"bool element 1 is 2", -EINVAL},
        {"metadata key is empty", -EINVAL},
        {"'x': array is not a scalar type", -EINVAL},
        {"tensor 'v': element count overflows", -EINVAL},
        {"tensor 'v': byte size overflows", -EINVAL},
    };
    char long_name[GGUF_MAX_NAME + 1];
    memset(long_name, 'n', GGUF_MAX_NAME);
    long_name[GGUF_MAX_NAME] = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gguf_writer *w = new_writer();
        gguf_writer_add_tensor(w, "w", QT_F32, 2, ne, data);
        int rc;
        switch (i) {
        case 0: rc = gguf_writer_add_tensor(w, "w", QT_F32, 2, ne, data); break;
        case 1: rc = gguf_writer_add_tensor(w, "", QT_F32, 2, ne, data); break;
        case 2: rc = gguf_writer_add_tensor(w, long_name, QT_F32, 2, ne, data); break;
        case 3: rc = gguf_writer_add_tensor(w, "v", QT_F32, 5, (uint64_t[]){1, 1, 1, 1, 1}, data); break;
        case 4: rc = gguf_writer_add_tensor(w, "v", QT_F32, 2, zero, data); break;
        case 5: rc = gguf_writer_add_tensor(w, "v", QT_Q8_0, 1, ne33, data); break;
        case 6: rc = gguf_writer_add_tensor(w, "v", (qt_type)4, 1, ne, data); break;
        case 7: rc = gguf_writer_set_arr(w, "x", GGUF_STR, 1, data); break;
        case 8: rc = gguf_writer_set_arr(w, "x", GGUF_ARR, 1, data); break;
        case 9: rc = gguf_writer_set_arr(w, "x", GGUF_BOOL, 2, (uint8_t[]){1, 2}); break;
        case 10: rc = gguf_writer_set_u32(w, "", 1); break;
        case 11: rc = gguf_writer_set(w, "x", GGUF_ARR, data); break;
        case 12: rc = gguf_writer_add_tensor(w, "v", QT_F32, 3, (uint64_t[]){1ull << 31, 1ull << 31, 2}, data); break;
        default: rc = gguf_writer_add_tensor(w, "v", QT_F32, 1, (uint64_t[]){1ull << 62}, data); break;
        }
        ck_assert_int_eq(rc, cases[i].rc);
        /* sticky: later calls change nothing, and the write reports the first failure */
        ck_assert_int_eq(gguf_writer_set_u32(w, "later", 1), cases[i].rc);
        err_info ei = {0};
        const char *path = tmp_path("refused.gguf");
        ck_assert_int_eq(gguf_writer_write(w, path, &ei), cases[i].rc);
        ck_assert_msg(strstr(ei.msg, cases[i].needle), "case %zu: '%s' lacks '%s'", i, ei.msg, cases[i].needle);
        ck_assert(!file_exists(path));
        gguf_writer_free(w);
    }
}
END_TEST

START_TEST(test_writer_refuses_bad_alignment_and_paths)
{
    uint64_t sixty_four = 64;
    for (int i = 0; i < 4; i++) {
        gguf_writer *w = new_writer();
        if (i < 3)
            gguf_writer_set_u32(w, "general.alignment", (uint32_t[]){0, 3, 1u << 25}[i]);
        else
            gguf_writer_set(w, "general.alignment", GGUF_U64, &sixty_four);
        err_info ei = {0};
        ck_assert_int_eq(gguf_writer_write(w, tmp_path("align.gguf"), &ei), -EINVAL);
        ck_assert_msg(strstr(ei.msg, "general.alignment must be a uint32 power of two"), "%s", ei.msg);
        gguf_writer_free(w);
    }
    gguf_writer *w = new_writer();
    err_info ei = {0};
    const char *path = tmp_path("no-such-dir/x.gguf");
    ck_assert_int_eq(gguf_writer_write(w, path, &ei), -ENOENT);
    ck_assert_msg(strstr(ei.msg, path), "%s", ei.msg);
    gguf_writer_free(w);
}
END_TEST

/* Copies a llama.cpp-written model through the writer (all metadata, tensors borrowed
 * from the mapping): the output must equal the input byte for byte. */
START_TEST(test_writer_reproduces_reference_models)
{
    static const char *const models[] = {"llama-spm.q8_0", "llama-spm.q4_0", "llama-spm.q4_k_m",
                                          "qwen2-gpt2-e128.f16", "qwen2-gpt2.q4_k_m"};
    char src[512];
    snprintf(src, sizeof src, "%s/models/%s.gguf", shared_dir(), models[_i]);
    gguf *g = open_ok(src);
    gguf_writer *w = new_writer();
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        gguf_writer_copy_kv(w, gguf_kv_at(g, i));
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char name[GGUF_MAX_NAME];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        gguf_writer_add_tensor(w, name, (qt_type)t->type, t->n_dims, t->ne, t->data);
    }
    const char *dst = tmp_path("copy.gguf");
    write_ok(w, dst);
    gguf_writer_free(w);
    size_t n_dst;
    uint8_t *out = slurp(dst, &n_dst);
    ck_assert_uint_eq(n_dst, gguf_size(g));
    const uint8_t *in = gguf_base(g);
    size_t first_diff = 0;
    while (first_diff < n_dst && out[first_diff] == in[first_diff])
        first_diff++;
    ck_assert_msg(first_diff == n_dst, "%s: copy differs at byte %zu", models[_i], first_diff);
    free(out);
    gguf_close(g);
    unlink(dst);
}
END_TEST

/* Every shared reference file (models and vocabs) opens. */
START_TEST(test_reads_reference_files)
{
    const char *dirs[] = {"models", "tokenizer"};
    int n_opened = 0;
    for (int d = 0; d < 2; d++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", shared_dir(), dirs[d]);
        DIR *dp = opendir(dir);
        ck_assert_msg(dp != NULL, "cannot list %s (set SHARED)", dir);
        for (struct dirent *e; (e = readdir(dp));) {
            size_t len = strlen(e->d_name);
            if (len < 5 || strcmp(e->d_name + len - 5, ".gguf") != 0)
                continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            gguf *g = open_ok(path);
            ck_assert_uint_eq(gguf_version(g), 3);
            touch_everything(g);
            gguf_close(g);
            n_opened++;
        }
        closedir(dp);
    }
    ck_assert_int_ge(n_opened, 13); /* 5 models, 8 vocabs */
}
END_TEST

static Suite *gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("hostile");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_valid_builder_file_opens);
    tcase_add_test(tc, test_refuses_bad_header);
    tcase_add_test(tc, test_refuses_bad_strings);
    tcase_add_test(tc, test_refuses_bad_values);
    tcase_add_test(tc, test_refuses_bad_alignment);
    tcase_add_test(tc, test_refuses_bad_tensor_infos);
    tcase_add_test(tc, test_refuses_duplicate_and_overlapping_tensors);
    tcase_add_test(tc, test_truncation_at_every_byte);
    tcase_add_test(tc, test_random_byte_flips);
    tcase_add_test(tc, test_typed_getters_name_the_key);
    tcase_add_test(tc, test_open_path_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_writer_round_trips_every_value_type);
    tcase_add_loop_test(tc, test_writer_round_trips_tensors, 0, 2);
    tcase_add_test(tc, test_writer_streams_big_tensors);
    tcase_add_test(tc, test_writer_refuses_what_the_reader_would);
    tcase_add_test(tc, test_writer_refuses_bad_alignment_and_paths);
    tcase_add_loop_test(tc, test_writer_reproduces_reference_models, 0, 5);
    tcase_add_test(tc, test_reads_reference_files);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(gguf_suite()); }
