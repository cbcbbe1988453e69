/* test_sha256 — engine/sha256 against the NIST FIPS 180-4 example vectors (empty, "abc",
 * the 448- and 896-bit messages, one million 'a'), padding at every block-boundary length,
 * arbitrary update splits, and sha256_file against the in-memory digest. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sha256.h"
#include "tests/testutil.h"

static void expect_hex(const uint8_t d[SHA256_BYTES], const char *want)
{
    char hex[SHA256_HEX];
    sha256_hex(d, hex);
    ck_assert_str_eq(hex, want);
}

START_TEST(nist_vectors)
{
    static const struct { const char *msg, *digest; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrs"
         "tnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t d[SHA256_BYTES];
        sha256(v[i].msg, strlen(v[i].msg), d);
        expect_hex(d, v[i].digest);
    }
}
END_TEST

START_TEST(one_million_a)
{
    sha256_ctx c;
    sha256_init(&c);
    char a[1000];
    memset(a, 'a', sizeof a);
    for (int i = 0; i < 1000; i++)
        sha256_update(&c, a, sizeof a);
    uint8_t d[SHA256_BYTES];
    sha256_final(&c, d);
    expect_hex(d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

/* Lengths around the 55/56-byte padding boundary and whole blocks (digests from Python's
 * hashlib over the bytes (7i + 3) mod 256). */
START_TEST(padding_boundaries)
{
    static const struct { size_t n; const char *digest; } v[] = {
        {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
        {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
        {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
        {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
        {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
        {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
        {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
    };
    uint8_t msg[128];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7 + 3);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t d[SHA256_BYTES];
        sha256(msg, v[i].n, d);
        expect_hex(d, v[i].digest);
    }
}
END_TEST

/* Any way of cutting the message into updates gives the one-shot digest. */
START_TEST(split_updates_agree)
{
    uint8_t msg[300], whole[SHA256_BYTES];
    uint64_t seed = 42;
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)rng_next(&seed);
    sha256(msg, sizeof msg, whole);
    for (int trial = 0; trial < 200; trial++) {
        sha256_ctx c;
        sha256_init(&c);
        size_t at = 0;
        while (at < sizeof msg) {
            size_t n = (size_t)(rng_next(&seed) % 130);
            if (n > sizeof msg - at)
                n = sizeof msg - at;
            sha256_update(&c, msg + at, n);
            at += n;
        }
        uint8_t d[SHA256_BYTES];
        sha256_final(&c, d);
        ck_assert_mem_eq(d, whole, SHA256_BYTES);
    }
}
END_TEST

START_TEST(file_digest)
{
    /* 2.5 MiB: several read pieces, the last one partial. */
    size_t n = (5u << 20) / 2 + 17;
    uint8_t *data = malloc(n), want[SHA256_BYTES], got[SHA256_BYTES];
    ck_assert_ptr_nonnull(data);
    uint64_t seed = 7;
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)rng_next(&seed);
    const char *path = tmp_path("blob");
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
    sha256(data, n, want);
    err_info ei = {0};
    ck_assert_int_eq(sha256_file(path, got, &ei), 0);
    ck_assert_mem_eq(got, want, SHA256_BYTES);
    unlink(path);
    free(data);
    ck_assert_int_eq(sha256_file(path, got, &ei), -ENOENT);
    ck_assert_ptr_nonnull(strstr(ei.msg, "blob"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sha256");
    TCase *tc = tcase_create("sha256");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, nist_vectors);
    tcase_add_test(tc, one_million_a);
    tcase_add_test(tc, padding_boundaries);
    tcase_add_test(tc, split_updates_agree);
    tcase_add_test(tc, file_digest);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
