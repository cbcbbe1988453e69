/* sha256 — portable SHA-256 (FIPS 180-4) over memory and files, libc only: the response
 * cache keys requests by it and the daemon identifies model files by it.
 *
 * Not here: HMAC, other digests, or hardware SHA extensions (a model file is hashed once and
 * remembered, so the portable loop is fast enough). Never prints, never allocates except in
 * sha256_file's read buffer. */
#ifndef EDGELLM_SHA256_H
#define EDGELLM_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

enum { SHA256_BYTES = 32, SHA256_HEX = 2 * SHA256_BYTES + 1 /* with the NUL */ };

/* Streaming state. Plain value type: keep it on the stack. */
typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t bytes;          /* message length so far */
    uint8_t block[64];       /* partial block, `bytes % 64` of it used */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
/* Feeds n bytes of data (borrowed for the call; may be NULL when n is 0). */
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Writes the digest to out and leaves c unusable until sha256_init. */
void sha256_final(sha256_ctx *c, uint8_t out[SHA256_BYTES]);

/* One-shot digest of n bytes. */
void sha256(const void *data, size_t n, uint8_t out[SHA256_BYTES]);
/* Lower-case hex of a digest into hex[SHA256_HEX] (NUL-terminated). */
void sha256_hex(const uint8_t digest[SHA256_BYTES], char hex[SHA256_HEX]);

/* Digest of the whole file at path, read sequentially in 1 MiB pieces (a model file of
 * hundreds of MB never has to fit in memory). Errors: -errno from open/read (the message
 * names the path), -ENOMEM. */
int sha256_file(const char *path, uint8_t out[SHA256_BYTES], err_info *ei);

#endif
