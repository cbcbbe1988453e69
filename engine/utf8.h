/* utf8 — small UTF-8 helpers shared by the tokenizers, the detokenizer and the SSE
 * chunker: encode/decode one code point, measure a character, find the longest prefix of a
 * buffer that does not end inside a character, and GPT-2's byte <-> code point mapping.
 * Pure functions; no allocation, no locale. */
#ifndef EDGELLM_UTF8_H
#define EDGELLM_UTF8_H

#include <stddef.h>
#include <stdint.h>

enum { UTF8_REPLACEMENT = 0xFFFD };

/* Length of the character whose first byte is b: 1..4, or 1 for a stray continuation or an
 * invalid lead byte (so a scan always advances). */
int utf8_len(uint8_t b);
/* Decodes the character at s (n bytes available) into *cp and returns the bytes it used
 * (>= 1). Invalid or truncated input yields UTF8_REPLACEMENT and consumes 1 byte. */
int utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Writes cp as UTF-8 into out (room for 4) and returns the byte count (1..4); code points
 * above U+10FFFF or surrogates are written as U+FFFD. */
int utf8_encode(uint32_t cp, char *out);
/* Length of the longest prefix of s[0..n) that does not end in the middle of a character:
 * an incomplete trailing sequence (which may still be completed by more bytes) is excluded. */
size_t utf8_complete_prefix(const char *s, size_t n);

/* Replaces, in place, every byte of s[0..len) that does not start a valid character with
 * U+FFFD (3 bytes), so the text is valid UTF-8. Returns the new length, or -1 (s untouched)
 * if it would exceed cap. Valid input is left as it is at the cost of one scan. */
long utf8_sanitize(char *s, size_t len, size_t cap);

/* GPT-2 byte-level BPE maps every byte to a printable code point (e.g. ' ' -> U+0120 'Ġ').
 * byte -> code point, and the inverse (-1 when cp is not the image of a byte). */
uint32_t utf8_byte_to_cp(uint8_t b);
int utf8_cp_to_byte(uint32_t cp);

#endif
