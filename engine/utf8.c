/* utf8 — see utf8.h. */
#include "utf8.h"

#include <stdbool.h>
#include <string.h>

int utf8_len(uint8_t b)
{
    if (b < 0x80) return 1;
    if ((b & 0xE0) == 0xC0 && b >= 0xC2) return 2;
    if ((b & 0xF0) == 0xE0) return 3;
    if ((b & 0xF8) == 0xF0 && b <= 0xF4) return 4;
    return 1;
}

int utf8_decode(const char *s, size_t n, uint32_t *cp)
{
    const uint8_t *u = (const uint8_t *)s;
    int len = utf8_len(u[0]);
    if (len == 1) {
        *cp = u[0] < 0x80 ? u[0] : UTF8_REPLACEMENT;
        return 1;
    }
    if ((size_t)len > n)
        goto bad;
    uint32_t c = u[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80)
            goto bad;
        c = (c << 6) | (u[i] & 0x3F);
    }
    /* reject overlong forms, surrogates and values past U+10FFFF */
    static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_for_len[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        goto bad;
    *cp = c;
    return len;
bad:
    *cp = UTF8_REPLACEMENT;
    return 1;
}

int utf8_encode(uint32_t cp, char *out)
{
    uint8_t *o = (uint8_t *)out;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        cp = UTF8_REPLACEMENT;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

size_t utf8_complete_prefix(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    /* a character is at most 4 bytes: only the last 3 can start an incomplete one */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t b = u[n - back];
        if ((b & 0xC0) == 0x80)
            continue; /* continuation byte: keep looking for the lead */
        int len = utf8_len(b);
        if (len > 1 && (size_t)len > back) {
            /* a lead whose continuation bytes so far are all valid: may still complete,
             * unless the first one already makes it an overlong form, a surrogate or a
             * value past U+10FFFF (E0 80, ED A0, F0 80, F4 90), which no byte can mend */
            bool ok = true;
            for (size_t i = 1; i < back; i++)
                ok = ok && (u[n - back + i] & 0xC0) == 0x80;
            if (ok && back >= 2) {
                uint8_t c = u[n - back + 1];
                ok = !((b == 0xE0 && c < 0xA0) || (b == 0xED && c > 0x9F) || (b == 0xF0 && c < 0x90) ||
                       (b == 0xF4 && c > 0x8F));
            }
            return ok ? n - back : n;
        }
        return n;
    }
    return n;
}

long utf8_sanitize(char *s, size_t len, size_t cap)
{
    size_t out_len = 0;
    uint32_t cp;
    for (size_t i = 0; i < len;) {
        int n = utf8_decode(s + i, len - i, &cp);
        out_len += cp == UTF8_REPLACEMENT && n == 1 ? 3 : (size_t)n; /* a real U+FFFD is 3 bytes too */
        i += (size_t)n;
    }
    if (out_len == len)
        return (long)len; /* every byte belonged to a valid character */
    if (out_len > cap)
        return -1;
    /* move the input to the end of the buffer, then rewrite it from the start: the output
     * never overtakes the unread input because it is never shorter than the input */
    size_t in = cap - len;
    memmove(s + in, s, len);
    size_t o = 0;
    while (in < cap) {
        int n = utf8_decode(s + in, cap - in, &cp);
        if (cp == UTF8_REPLACEMENT && n == 1)
            o += (size_t)utf8_encode(UTF8_REPLACEMENT, s + o);
        else
            memmove(s + o, s + in, (size_t)n), o += (size_t)n;
        in += (size_t)n;
    }
    return (long)o;
}

/* GPT-2's table: printable Latin-1 bytes map to themselves; the other 68 bytes map, in
 * byte order, to U+0100 onwards. */
static bool byte_is_printable(uint8_t b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t utf8_byte_to_cp(uint8_t b)
{
    if (byte_is_printable(b))
        return b;
    uint32_t n = 0;
    for (int i = 0; i < b; i++)
        n += !byte_is_printable((uint8_t)i);
    return 0x100 + n;
}

int utf8_cp_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_is_printable((uint8_t)cp) ? (int)cp : -1;
    uint32_t n = 0;
    for (int b = 0; b < 256; b++)
        if (!byte_is_printable((uint8_t)b) && 0x100 + n++ == cp)
            return b;
    return -1;
}
