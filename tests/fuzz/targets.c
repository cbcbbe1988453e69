/* targets — see targets.h. Six targets over the parsers of untrusted input, four in the
 * engine and two in the HTTP API:
 *
 * gguf  arbitrary bytes into gguf_open_mem; an accepted file is walked whole (every key,
 *       string array and tensor must lie inside the buffer), then its tokenizer (tok_load,
 *       pieces, a few encodes) and its model (model_open through a memfd, hyper-parameter
 *       and tensor validation, and one evaluation of two tokens, which must not read
 *       outside what validation accepted).
 * tok   the first byte picks one of four reference vocabs ($SHARED/tokenizer) and
 *       parse_special; the rest is encoded, ids must be in range, add_bos must only add
 *       BOS/EOS around the same ids, decoding must give the text back (BPE: valid UTF-8;
 *       SPM: plain text, with the space prefix) and the streaming decoder must release only
 *       valid UTF-8 that agrees with the plain decode.
 * chat  the whole input is a template for chat_detect; the input after its first byte,
 *       split at NUL bytes, is a conversation (each field's first byte picks the role)
 *       rendered in every family: a NUL-terminated prompt of the stated length that holds
 *       every message's text.
 * utf8  the helpers of utf8.h against an independent decoder written from the Unicode
 *       standard's table of well-formed byte sequences (Table 3-7), which also gives the
 *       expected output of utf8_sanitize and of the streaming decoder.
 * req   the first byte picks the route (chat, completions, tokenize, detokenize), the rest
 *       is the body for api_req_parse: a refusal names the problem; an accepted request
 *       holds only what its documented ranges allow (strings that end, ids >= 0, sampling
 *       parameters sampler_params_check accepts, at most API_MAX_STOP stop strings).
 * sse   the text path of a streamed answer: the input (flags, a model id, a chunking seed,
 *       then text) goes through api_job_emit_* into a job's ring exactly as the worker
 *       writes it; what a client would read must be well-formed UTF-8, "data: " frames no
 *       longer than API_SSE_FRAME_MAX, each a JSON object with the response's id and
 *       model, whose texts add up to each chunk with every byte that cannot start a
 *       character replaced by U+FFFD, one finish_reason (or one error), usage when asked,
 *       then [DONE]; the cache's capture is the input itself. api_json_escape into a
 *       small buffer must give the same length and a NUL-terminated prefix.
 *
 * Not here: the libFuzzer entry points (FUZZ_HARNESS in targets.h). */
#include "targets.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cJSON.h>

#include "api/job.h"
#include "api/req.h"
#include "api/sse.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/qtype.h"
#include "engine/tok.h"
#include "engine/utf8.h"

void (*fuzz_fail_handler)(const char *msg);

static void fuzz_fail_at(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void fuzz_fail_at(int line, const char *fmt, ...)
{
    char msg[512];
    int k = snprintf(msg, sizeof msg, "targets.c:%d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    if (fuzz_fail_handler)
        fuzz_fail_handler(msg);
    fprintf(stderr, "fuzz property failed: %s\n", msg);
    abort();
}

#define EXPECT(cond, ...)                        \
    do {                                         \
        if (!(cond))                             \
            fuzz_fail_at(__LINE__, __VA_ARGS__); \
    } while (0)

void fuzz_init_or_die(const fuzz_target *t)
{
    err_info ei = {0};
    int rc = t->init ? t->init(&ei) : 0;
    if (rc)
        fuzz_fail_at(__LINE__, "target %s: set-up failed: %s", t->name, err_text(&ei, rc));
}

static volatile uint8_t touch_sink; /* keeps the reads below from being optimized out */

/* Reads every byte of p[0..n), so a sanitizer sees any part that is not really there. */
static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= b[i];
    touch_sink ^= x;
}

/* Growable byte string for decoded text. */
typedef struct bytes {
    char *p;
    size_t n, cap;
} bytes;

static void bytes_reserve(bytes *b, size_t more)
{
    if (b->n + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + more)
        cap *= 2;
    b->p = realloc(b->p, cap);
    EXPECT(b->p, "out of memory");
    b->cap = cap;
}

static void bytes_put(bytes *b, const char *s, size_t n)
{
    if (n == 0)
        return; /* b->p may still be NULL, and NULL + 0 is undefined */
    bytes_reserve(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static bool bytes_eq(const bytes *b, const char *s, size_t n)
{
    return b->n == n && (n == 0 || memcmp(b->p, s, n) == 0);
}

/* ---- reference UTF-8 (Unicode Table 3-7) -------------------------------------------- */

/* Length of the well-formed sequence at s[0..n), or 0 when it is ill-formed or cut short;
 * *partial (may be NULL) tells the second case: the bytes are a proper prefix of some
 * well-formed sequence. */
static int ref_seq(const uint8_t *s, size_t n, bool *partial)
{
    if (partial)
        *partial = false;
    uint8_t b = s[0], lo = 0x80, hi = 0xBF;
    int len;
    if (b < 0x80)
        return 1;
    else if (b >= 0xC2 && b <= 0xDF)
        len = 2;
    else if (b >= 0xE0 && b <= 0xEF)
        len = 3, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
    else if (b >= 0xF0 && b <= 0xF4)
        len = 4, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) {
            if (partial)
                *partial = true;
            return 0;
        }
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF))
            return 0;
    }
    return len;
}

static uint32_t ref_cp(const uint8_t *s, int len)
{
    static const uint8_t lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = s[0] & lead_mask[len];
    for (int i = 1; i < len; i++)
        cp = cp << 6 | (s[i] & 0x3F);
    return cp;
}

static bool ref_valid(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        int k = ref_seq(u + i, n - i, NULL);
        if (!k)
            return false;
        i += (size_t)k;
    }
    return true;
}

/* Where s[0..n) ends with a proper prefix of a well-formed character: its start, else n. */
static size_t ref_partial_tail(const char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        bool partial;
        ref_seq((const uint8_t *)s + n - back, back, &partial);
        if (partial)
            return n - back;
    }
    return n;
}

/* s[0..n) with every byte that does not start a well-formed character replaced by U+FFFD,
 * appended to out. */
static void ref_sanitize(const char *s, size_t n, bytes *out)
{
    for (size_t i = 0; i < n;) {
        int k = ref_seq((const uint8_t *)s + i, n - i, NULL);
        bytes_put(out, k ? s + i : "\xEF\xBF\xBD", k ? (size_t)k : 3);
        i += k ? (size_t)k : 1;
    }
}

/* ---- tokenizer helpers shared by the gguf and tok targets ---------------------------- */

/* Encodes text and checks the result: first with no room (which must report the count with
 * -ERANGE), then into a buffer of that size; every id in range. Returns the malloc'd ids. */
static int32_t *encode_checked(const tok_vocab *v, const char *text, size_t n, bool add_bos, bool parse_special,
                               int *n_ids)
{
    int count = -1;
    int rc = tok_encode(v, text, n, add_bos, parse_special, NULL, 0, &count);
    EXPECT(rc == 0 || rc == -ERANGE, "tok_encode of %zu bytes failed: %d (%s)", n, rc, err_name(rc));
    EXPECT(count >= 0 && (rc == 0) == (count == 0), "tok_encode with cap 0: rc %d but count %d", rc, count);
    int32_t *ids = malloc(((size_t)count + 1) * sizeof *ids);
    EXPECT(ids, "out of memory");
    int again = -1;
    rc = tok_encode(v, text, n, add_bos, parse_special, ids, count, &again);
    EXPECT(rc == 0 && again == count, "tok_encode into %d ids: rc %d, count %d", count, rc, again);
    for (int i = 0; i < count; i++)
        EXPECT(ids[i] >= 0 && ids[i] < tok_n_vocab(v), "id %d at %d is outside the vocab of %d", ids[i], i,
               tok_n_vocab(v));
    *n_ids = count;
    return ids;
}

/* The piece of id into b; a piece too long for a small buffer must be cut at the buffer's
 * end (not a byte further) and still report its full length. */
static void put_piece_checked(const tok_vocab *v, int32_t id, bool render_special, bytes *b)
{
    int len = tok_piece(v, id, render_special, NULL, 0);
    EXPECT(len >= 0, "tok_piece(%d) = %d", id, len);
    char small[8];
    memset(small, 0x5A, sizeof small);
    EXPECT(tok_piece(v, id, render_special, small, 4) == len, "tok_piece(%d) into 4 bytes changed its length", id);
    for (size_t i = 4; i < sizeof small; i++)
        EXPECT(small[i] == 0x5A, "tok_piece(%d) wrote past its 4-byte buffer", id);
    bytes_reserve(b, (size_t)len + 1);
    EXPECT(tok_piece(v, id, render_special, b->p + b->n, len) == len, "tok_piece(%d) is not stable", id);
    b->n += (size_t)len;
}

/* ---- gguf ------------------------------------------------------------------------------ */

static bool inside(const gguf *g, const void *p, uint64_t n)
{
    const uint8_t *base = gguf_base(g), *q = p;
    return q >= base && (uint64_t)(q - base) <= gguf_size(g) && n <= gguf_size(g) - (uint64_t)(q - base);
}

/* A NUL-terminated copy of s, or NULL when s holds a NUL (no C string can name it). */
static char *cstr(gguf_str s)
{
    if (memchr(s.ptr, 0, s.len))
        return NULL;
    char *c = malloc(s.len + 1);
    EXPECT(c, "out of memory");
    memcpy(c, s.ptr, s.len);
    c[s.len] = 0;
    return c;
}

static bool is_int_type(gguf_vtype t)
{
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 || t == GGUF_I32 ||
           t == GGUF_U64 || t == GGUF_I64;
}

/* The typed getters agree with the entry's type. */
static void check_getters(const gguf *g, const gguf_kv *kv, const char *key)
{
    int64_t i;
    double f;
    bool b;
    gguf_str s;
    gguf_arr a;
    int rc = gguf_get_int(g, key, &i, NULL);
    EXPECT(is_int_type(kv->type) ? rc == 0 || rc == -ERR_RANGE : rc == -ERR_TYPE, "gguf_get_int('%s') = %d", key, rc);
    rc = gguf_get_float(g, key, &f, NULL);
    EXPECT((rc == 0) == (kv->type == GGUF_F32 || kv->type == GGUF_F64), "gguf_get_float('%s') = %d", key, rc);
    rc = gguf_get_bool(g, key, &b, NULL);
    EXPECT((rc == 0) == (kv->type == GGUF_BOOL), "gguf_get_bool('%s') = %d", key, rc);
    rc = gguf_get_str(g, key, &s, NULL);
    EXPECT((rc == 0) == (kv->type == GGUF_STR), "gguf_get_str('%s') = %d", key, rc);
    rc = gguf_get_arr(g, key, GGUF_STR, &a, NULL);
    EXPECT((rc == 0) == (kv->type == GGUF_ARR && kv->v.a.elem == GGUF_STR), "gguf_get_arr('%s') = %d", key, rc);
}

static void walk_kvs(const gguf *g)
{
    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        const gguf_kv *kv = gguf_kv_at(g, i);
        EXPECT(inside(g, kv->key.ptr, kv->key.len), "key %zu lies outside the file", i);
        touch(kv->key.ptr, kv->key.len);
        char *key = cstr(kv->key);
        if (key) {
            EXPECT(gguf_find(g, key) == kv, "gguf_find('%s') does not find entry %zu", key, i);
            check_getters(g, kv, key);
            free(key);
        }
        if (kv->type == GGUF_STR) {
            EXPECT(inside(g, kv->v.s.ptr, kv->v.s.len), "string value %zu lies outside the file", i);
            touch(kv->v.s.ptr, kv->v.s.len);
        }
        if (kv->type != GGUF_ARR)
            continue;
        const gguf_arr *a = &kv->v.a;
        EXPECT(a->elem < GGUF_VTYPE_COUNT && a->elem != GGUF_ARR, "array %zu has element type %d", i, (int)a->elem);
        EXPECT(inside(g, a->data, a->nbytes), "array %zu lies outside the file", i);
        if (a->elem != GGUF_STR) {
            EXPECT(a->nbytes == a->n * gguf_vtype_size(a->elem), "array %zu: %llu bytes for %llu elements", i,
                   (unsigned long long)a->nbytes, (unsigned long long)a->n);
            touch(a->data, a->nbytes);
            continue;
        }
        EXPECT(a->n <= a->nbytes / 8, "string array %zu: %llu strings in %llu bytes", i, (unsigned long long)a->n,
               (unsigned long long)a->nbytes);
        gguf_str *strs = malloc((size_t)a->n * sizeof *strs + 1);
        EXPECT(strs, "out of memory");
        gguf_arr_strings(a, strs);
        uint64_t used = 0;
        for (uint64_t k = 0; k < a->n; k++) {
            EXPECT(inside(g, strs[k].ptr, strs[k].len), "string %llu of array %zu lies outside the file",
                   (unsigned long long)k, i);
            touch(strs[k].ptr, strs[k].len);
            used += 8 + strs[k].len;
        }
        EXPECT(used == a->nbytes, "string array %zu: strings use %llu of %llu bytes", i, (unsigned long long)used,
               (unsigned long long)a->nbytes);
        free(strs);
    }
}

typedef struct extent {
    uint64_t start, end;
} extent;

static int cmp_extent(const void *a, const void *b)
{
    const extent *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static void walk_tensors(const gguf *g)
{
    size_t n = gguf_n_tensors(g);
    extent *ext = malloc((n + 1) * sizeof *ext);
    EXPECT(ext, "out of memory");
    const uint8_t *data = (const uint8_t *)gguf_base(g) + gguf_data_offset(g);
    for (size_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        EXPECT(inside(g, t->name.ptr, t->name.len) && t->name.len > 0 && t->name.len < GGUF_MAX_NAME,
               "tensor %zu: bad name", i);
        EXPECT(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS, "tensor %zu: n_dims %u", i, t->n_dims);
        for (uint32_t d = t->n_dims; d < GGUF_MAX_DIMS; d++)
            EXPECT(t->ne[d] == 1, "tensor %zu: unused dimension %u is %llu", i, d, (unsigned long long)t->ne[d]);
        const qt_traits *tr = qt_get(t->type);
        EXPECT(tr, "tensor %zu: unknown type %u accepted", i, t->type);
        /* whole blocks, as many as the elements need (checked by division: no product
         * here can overflow and hide a wrong size) */
        uint64_t nelems = gguf_tensor_nelems(t);
        EXPECT(nelems % tr->block_elems == 0 && t->nbytes % tr->block_bytes == 0 &&
                   t->nbytes / tr->block_bytes == nelems / tr->block_elems,
               "tensor %zu: %llu bytes for %llu elements of %s", i, (unsigned long long)t->nbytes,
               (unsigned long long)nelems, tr->name);
        EXPECT(t->offset % gguf_alignment(g) == 0, "tensor %zu: misaligned offset", i);
        EXPECT((const uint8_t *)t->data == data + t->offset && inside(g, t->data, t->nbytes),
               "tensor %zu: data lies outside the file", i);
        touch(t->data, t->nbytes);
        char *name = cstr(t->name);
        if (name) {
            EXPECT(gguf_find_tensor(g, name) == t, "gguf_find_tensor('%s') does not find tensor %zu", name, i);
            free(name);
        }
        ext[i] = (extent){t->offset, t->offset + t->nbytes};
    }
    qsort(ext, n, sizeof *ext, cmp_extent);
    for (size_t i = 1; i < n; i++)
        EXPECT(ext[i].start >= ext[i - 1].end, "two tensors share bytes at offset %llu",
               (unsigned long long)ext[i].start);
    free(ext);
}

/* Texts with the usual special tokens, byte-fallback material and broken UTF-8. */
static const char *const sample_texts[] = {
    "Hello world! 123 4567",
    " <s>[INST] hi [/INST]</s><|im_start|>user\n<|im_end|><|endoftext|><unk>",
    "\xE2\x96\x81x  \t\n\n\xC3\xA9t\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 \xFF\xC3(\xED\xA0\x80",
};

/* An accepted vocab: coherent accessors, pieces for every id, encodes of a few texts. */
static void check_vocab(const tok_vocab *v)
{
    int32_t n = tok_n_vocab(v);
    EXPECT(n >= 1, "vocab of %d tokens", n);
    EXPECT(tok_bos(v) == TOK_NULL || (tok_bos(v) >= 0 && tok_bos(v) < n), "BOS %d", tok_bos(v));
    EXPECT(tok_eos(v) == TOK_NULL || (tok_eos(v) >= 0 && tok_eos(v) < n), "EOS %d", tok_eos(v));
    bytes b = {0}, joined = {0};
    for (int32_t id = 0; id < n; id++) {
        EXPECT(tok_type_of(v, id) <= TOK_TYPE_BYTE, "token %d has type %d", id, (int)tok_type_of(v, id));
        gguf_str t = tok_text(v, id);
        EXPECT(t.len == 0 || tok_find(v, t.ptr, t.len) == id, "tok_find does not find token %d by its text", id);
        b.n = 0;
        put_piece_checked(v, id, true, &b);
        if (id < 64)
            bytes_put(&joined, t.ptr, t.len);
    }
    for (int special = 0; special < 2; special++) {
        for (size_t i = 0; i < sizeof sample_texts / sizeof sample_texts[0]; i++) {
            int n_ids;
            free(encode_checked(v, sample_texts[i], strlen(sample_texts[i]), true, special, &n_ids));
        }
        int n_ids;
        free(encode_checked(v, joined.p, joined.n, false, special, &n_ids));
    }
    free(b.p);
    free(joined.p);
}

/* model_open takes a path: the input goes into a memfd opened as /proc/self/fd/N, so no
 * file is written. One memfd per process, rewritten for each input. */
static void check_model(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0)
        EXPECT((fd = memfd_create("fuzz-gguf", MFD_CLOEXEC)) >= 0, "memfd_create: %s", strerror(errno));
    EXPECT(ftruncate(fd, 0) == 0, "ftruncate: %s", strerror(errno));
    for (size_t done = 0; done < size;) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        EXPECT(w > 0, "pwrite: %s", strerror(errno));
        done += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    model *m;
    err_info ei = {0};
    int rc = model_open(&m, path, &ei);
    if (rc) {
        EXPECT(rc < 0 && ei.code == rc && ei.msg[0], "model_open failed (%d) without naming the problem", rc);
        return;
    }
    const model_hparams *hp = model_hparams_of(m);
    EXPECT(hp->n_vocab == tok_n_vocab(model_vocab(m)) && hp->n_embd > 0 && hp->n_layer > 0 && hp->head_dim > 0 &&
               hp->n_head % hp->n_head_kv == 0 && hp->n_rot <= hp->head_dim,
           "model_open accepted incoherent hyper-parameters");
    /* the forward pass trusts what model_open validated: evaluate two tokens */
    model_session_params p;
    model_session_params_default(&p);
    p.n_ctx = 4;
    p.n_batch = 2;
    model_session *s;
    rc = model_session_new(&s, m, &p, &ei);
    EXPECT(rc == 0, "model_session_new: %s", err_text(&ei, rc));
    float *logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    EXPECT(logits, "out of memory");
    int32_t tokens[2] = {0, hp->n_vocab - 1};
    rc = model_session_eval(s, tokens, 2, logits, false, NULL, &ei);
    EXPECT(rc == 0, "model_session_eval: %s", err_text(&ei, rc));
    free(logits);
    model_session_free(s);
    model_close(m);
}

static void run_gguf(const uint8_t *data, size_t size)
{
    gguf *g;
    err_info ei = {0};
    int rc = gguf_open_mem(&g, data, size, &ei);
    if (rc) {
        EXPECT(rc < 0 && ei.code == rc && ei.msg[0], "gguf_open_mem failed (%d) without naming the problem", rc);
        return;
    }
    EXPECT(gguf_version(g) == 2 || gguf_version(g) == 3, "version %u accepted", gguf_version(g));
    EXPECT(gguf_data_offset(g) % gguf_alignment(g) == 0, "data section misaligned");
    walk_kvs(g);
    walk_tensors(g);
    tok_vocab *v;
    rc = tok_load(&v, g, &ei);
    if (rc == 0) {
        check_vocab(v);
        tok_free(v);
    } else {
        EXPECT(rc < 0 && ei.code == rc && ei.msg[0], "tok_load failed (%d) without naming the problem", rc);
    }
    if (gguf_find(g, "general.architecture"))
        check_model(data, size);
    gguf_close(g);
}

const fuzz_target fuzz_target_gguf = {"gguf", NULL, run_gguf};

/* ---- tok ------------------------------------------------------------------------------- */

/* llama-spm: SentencePiece; gpt-2: GPT-2's own pre-tokenizer; gpt-2-pre-qwen2: a Llama 3
 * style regex; deepseek-llm: long Unicode ranges and thousands of special tokens. */
static const char *const tok_ref_names[] = {"llama-spm", "gpt-2", "gpt-2-pre-qwen2", "deepseek-llm"};
enum { N_TOK_REFS = sizeof tok_ref_names / sizeof tok_ref_names[0] };

static struct {
    gguf *g;
    tok_vocab *v;
} tok_refs[N_TOK_REFS];

static int init_tok(err_info *ei)
{
    const char *shared = getenv("SHARED");
    if (!shared || !*shared)
        shared = "../shared";
    for (int i = 0; i < N_TOK_REFS; i++) {
        if (tok_refs[i].v)
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-%s.gguf", shared, tok_ref_names[i]);
        int rc = gguf_open(&tok_refs[i].g, path, ei);
        if (!rc && (rc = tok_load(&tok_refs[i].v, tok_refs[i].g, ei)))
            err_set(ei, rc, "%s: %s", path, err_text(ei, rc));
        if (rc)
            return rc;
    }
    return 0;
}

/* Encoding with add_bos only adds the vocab's BOS in front and EOS at the end. */
static void check_add_bos(const tok_vocab *v, const char *text, size_t n, bool parse_special, const int32_t *ids,
                          int n_ids)
{
    int n_with;
    int32_t *with = encode_checked(v, text, n, true, parse_special, &n_with);
    int lead = tok_adds_bos(v) && tok_bos(v) != TOK_NULL;
    EXPECT(n_with >= n_ids + lead && n_with <= n_ids + lead + 1, "add_bos turned %d ids into %d", n_ids, n_with);
    EXPECT(!lead || with[0] == tok_bos(v), "add_bos did not start with BOS");
    EXPECT(n_ids == 0 || memcmp(with + lead, ids, (size_t)n_ids * sizeof *ids) == 0, "add_bos changed the ids");
    EXPECT(n_with == n_ids + lead || with[n_with - 1] == tok_eos(v), "add_bos appended a token that is not EOS");
    free(with);
}

/* What decoding must give back, if the round trip is exact for this input, which must be
 * valid UTF-8 (in broken text a byte-level BPE drops bytes without a token, and SPM, which
 * cuts characters by their lead byte as llama.cpp does, can swallow the bytes of an escaped
 * space into a broken character): BPE gives the text; SPM without special-token parsing
 * gives it with one space in front, and a U+2581 in it comes back as a space. */
static bool expected_text(const tok_vocab *v, const char *text, size_t n, bool parse_special, bytes *out)
{
    if (!ref_valid(text, n))
        return false;
    if (tok_kind_of(v) == TOK_BPE) {
        bytes_put(out, text, n);
        return true;
    }
    if (parse_special)
        return false;
    if (n)
        bytes_put(out, " ", 1);
    for (size_t i = 0; i < n; i++) {
        if (i + 3 <= n && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
            bytes_put(out, " ", 1);
            i += 2;
        } else {
            bytes_put(out, text + i, 1);
        }
    }
    return true;
}

/* The streaming decoder releases only valid UTF-8 (so it never splits a character), and
 * what it releases adds up to the plain decode S (less the first token's leading space
 * where the vocab drops it) with every byte that cannot start a character replaced by
 * U+FFFD, and a character S leaves unfinished released by flush as one U+FFFD. */
static void check_stream(const tok_vocab *v, const int32_t *ids, int n_ids, const bytes *shown)
{
    tok_stream s;
    tok_stream_init(&s);
    bytes streamed = {0}, chunk = {0}, want = {0};
    for (int i = 0; i < n_ids; i++) {
        /* a piece can grow threefold (each byte a U+FFFD); 32 covers the held bytes */
        int cap = 3 * tok_piece(v, ids[i], false, NULL, 0) + 32;
        chunk.n = 0;
        bytes_reserve(&chunk, (size_t)cap);
        int k = tok_stream_push(v, &s, ids[i], chunk.p, cap);
        EXPECT(k >= 0, "tok_stream_push(%d) into %d bytes = %d", ids[i], cap, k);
        EXPECT(ref_valid(chunk.p, (size_t)k), "streamed chunk %d is not valid UTF-8", i);
        bytes_put(&streamed, chunk.p, (size_t)k);
    }
    char tail[4];
    int k = tok_stream_flush(&s, tail, sizeof tail);
    EXPECT(k == 0 || (k == 3 && memcmp(tail, "\xEF\xBF\xBD", 3) == 0), "tok_stream_flush gave %d bytes", k);
    bytes_put(&streamed, tail, (size_t)k);

    size_t skip = 0;
    if (n_ids && tok_kind_of(v) == TOK_SPM) {
        char first[1];
        skip = tok_piece(v, ids[0], false, first, 1) > 0 && first[0] == ' ';
    }
    const char *text = shown->n ? shown->p + skip : "";
    size_t n = shown->n - skip, complete = ref_partial_tail(text, n);
    ref_sanitize(text, complete, &want);
    bytes_put(&want, "\xEF\xBF\xBD", complete < n ? 3 : 0);
    EXPECT(bytes_eq(&streamed, want.p, want.n), "streamed text (%zu bytes) differs from the decoded text (%zu bytes)",
           streamed.n, want.n);
    free(want.p);
    free(streamed.p);
    free(chunk.p);
}

static void run_tok(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    const tok_vocab *v = tok_refs[data[0] % N_TOK_REFS].v;
    bool parse_special = data[0] & 0x80;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    int n_ids;
    int32_t *ids = encode_checked(v, text, n, false, parse_special, &n_ids);
    check_add_bos(v, text, n, parse_special, ids, n_ids);
    bytes rendered = {0}, shown = {0}, expected = {0};
    for (int i = 0; i < n_ids; i++) {
        put_piece_checked(v, ids[i], true, &rendered);
        put_piece_checked(v, ids[i], false, &shown);
    }
    if (expected_text(v, text, n, parse_special, &expected))
        EXPECT(bytes_eq(&rendered, expected.p, expected.n),
               "%s: decode(encode(%zu bytes)) gives %zu bytes, expected %zu",
               tok_ref_names[data[0] % N_TOK_REFS], n, rendered.n, expected.n);
    check_stream(v, ids, n_ids, &shown);
    free(expected.p);
    free(shown.p);
    free(rendered.p);
    free(ids);
}

const fuzz_target fuzz_target_tok = {"tok", init_tok, run_tok};

/* ---- chat ------------------------------------------------------------------------------ */

enum { MAX_CHECKED_MSGS = 64 };   /* messages whose text is looked for in the output */

/* The message text with leading and trailing bytes that may belong to whitespace (ASCII
 * controls, space, any non-ASCII byte) cut off: what remains survives the str.strip() some
 * families apply, so it must appear verbatim in the prompt. */
static void core_of(const char *s, const char **core, size_t *len)
{
    size_t a = 0, b = strlen(s);
    while (a < b && ((uint8_t)s[a] <= 0x20 || (uint8_t)s[a] >= 0x80))
        a++;
    while (b > a && ((uint8_t)s[b - 1] <= 0x20 || (uint8_t)s[b - 1] >= 0x80))
        b--;
    *core = s + a;
    *len = b - a;
}

static void run_chat(const uint8_t *data, size_t size)
{
    chat_family detected = chat_detect((const char *)data, size);
    EXPECT(detected >= CHAT_UNKNOWN && detected < CHAT_FAMILY_COUNT, "chat_detect gave %d", (int)detected);
    EXPECT(detected == CHAT_UNKNOWN || chat_family_from_name(chat_family_name(detected)) == detected,
           "family %d does not survive its name", (int)detected);
    if (size == 0)
        return;
    static const char *const roles[] = {"system", "user", "assistant"};
    bool add_assistant = data[0] & 1;
    /* fields are NUL-terminated: the input after byte 0, with a NUL after the last one */
    size_t n_text = size - 1, n_msgs = 0;
    char *text = malloc(n_text + 1);
    chat_msg *msgs = malloc((n_text + 1) * sizeof *msgs);
    EXPECT(text && msgs, "out of memory");
    memcpy(text, data + 1, n_text);
    text[n_text] = 0;
    bool roles_known = true;
    for (size_t at = 0; at < n_text; at += strlen(text + at) + 1) {
        const char *field = text + at;
        unsigned pick = (uint8_t)field[0] % 4;
        const char *rest = field[0] ? field + 1 : field;
        /* pick 3: the rest of the field is the role itself, mostly an unknown one */
        msgs[n_msgs] = pick < 3 ? (chat_msg){roles[pick], rest} : (chat_msg){rest, ""};
        if (pick == 3)
            roles_known = roles_known &&
                          (!strcmp(rest, "system") || !strcmp(rest, "user") || !strcmp(rest, "assistant"));
        n_msgs++;
    }
    for (int f = CHAT_UNKNOWN; f <= CHAT_FAMILY_COUNT; f++) {
        char *out = NULL;
        size_t len = SIZE_MAX;
        err_info ei = {0};
        int rc = chat_render((chat_family)f, msgs, n_msgs, add_assistant, &out, &len, &ei);
        if (f == CHAT_UNKNOWN || f == CHAT_FAMILY_COUNT) {
            EXPECT(rc == -ERR_UNSUPPORTED && !out, "family %d: rc %d", f, rc);
            continue;
        }
        if (!roles_known) {
            EXPECT(rc == -EINVAL && ei.msg[0] && !out, "%s: unknown role gave rc %d", chat_family_name(f), rc);
            continue;
        }
        EXPECT(rc == 0, "%s: chat_render of %zu messages: %s", chat_family_name(f), n_msgs, err_text(&ei, rc));
        EXPECT(strlen(out) == len, "%s: prompt is %zu bytes to its NUL but len says %zu", chat_family_name(f),
               strlen(out), len);
        for (size_t i = 0; i < n_msgs && i < MAX_CHECKED_MSGS; i++) {
            const char *core;
            size_t core_len;
            core_of(msgs[i].content, &core, &core_len);
            EXPECT(core_len == 0 || memmem(out, len, core, core_len), "%s: message %zu is missing from the prompt",
                   chat_family_name(f), i);
        }
        free(out);
    }
    free(msgs);
    free(text);
}

const fuzz_target fuzz_target_chat = {"chat", NULL, run_chat};

/* ---- utf8 ------------------------------------------------------------------------------ */

static void check_decode_at(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    int k = ref_seq(u, n, NULL);
    uint32_t cp;
    int got = utf8_decode(s, n, &cp);
    if (k) {
        EXPECT(got == k && cp == ref_cp(u, k), "utf8_decode of a %d-byte character gave %d bytes, U+%04X", k, got, cp);
        EXPECT(utf8_len(u[0]) == k, "utf8_len(%02X) = %d, expected %d", u[0], utf8_len(u[0]), k);
        char out[4];
        EXPECT(utf8_encode(cp, out) == k && memcmp(out, s, (size_t)k) == 0, "utf8_encode(U+%04X) differs", cp);
    } else {
        EXPECT(got == 1 && cp == UTF8_REPLACEMENT, "utf8_decode of ill-formed %02X gave %d bytes, U+%04X", u[0],
               got, cp);
    }
}

/* utf8_complete_prefix keeps exactly what cannot become part of a longer character: a
 * trailing proper prefix of a well-formed character is cut, anything else kept. */
static void check_complete_prefix(const char *s, size_t n)
{
    size_t p = utf8_complete_prefix(s, n), want = ref_partial_tail(s, n);
    EXPECT(p == want, "utf8_complete_prefix of %zu bytes = %zu, expected %zu", n, p, want);
}

/* utf8_sanitize gives the reference's replacement, in place, within cap; or, one byte short
 * of room, -1 and the text untouched. */
static void check_sanitize(const char *s, size_t n)
{
    bytes want = {0};
    ref_sanitize(s, n, &want);
    char *buf = malloc(want.n + 1);
    EXPECT(buf, "out of memory");
    memcpy(buf, s, n);
    long got = utf8_sanitize(buf, n, want.n);
    EXPECT(got == (long)want.n && bytes_eq(&want, buf, want.n), "utf8_sanitize of %zu bytes gave %ld, expected %zu",
           n, got, want.n);
    if (want.n > n) {
        memcpy(buf, s, n);
        got = utf8_sanitize(buf, n, want.n - 1);
        EXPECT(got == -1 && memcmp(buf, s, n) == 0, "utf8_sanitize without room gave %ld", got);
    }
    free(buf);
    free(want.p);
}

static void check_encode(uint32_t cp)
{
    char out[4];
    int k = utf8_encode(cp, out);
    bool valid = cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    EXPECT(k >= 1 && k <= 4 && ref_seq((const uint8_t *)out, (size_t)k, NULL) == k, "utf8_encode(%#x) is ill-formed",
           cp);
    EXPECT(ref_cp((const uint8_t *)out, k) == (valid ? cp : UTF8_REPLACEMENT), "utf8_encode(%#x) encodes U+%04X", cp,
           ref_cp((const uint8_t *)out, k));
}

static void check_byte_map(uint8_t b, uint32_t cp)
{
    uint32_t image = utf8_byte_to_cp(b);
    EXPECT(image < 0x144 && utf8_cp_to_byte(image) == b, "byte %02X maps to U+%04X, which does not map back", b, image);
    EXPECT((image == b) == ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE),
           "byte %02X maps to U+%04X", b, image);
    int back = utf8_cp_to_byte(cp);
    EXPECT(back < 0 ? cp >= 0x144 || cp < 0x100 : utf8_byte_to_cp((uint8_t)back) == cp,
           "U+%04X maps to byte %d, which does not map back", cp, back);
}

static void run_utf8(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    for (size_t i = 0; i < size; i++) {
        check_decode_at(s + i, size - i);
        check_complete_prefix(s, i + 1);
        uint32_t cp = 0;
        memcpy(&cp, data + i, size - i < 4 ? size - i : 4);
        check_encode(cp);
        check_encode(cp & 0x1FFFFF);   /* mostly in range, where a 4-byte word mostly is not */
        check_byte_map(data[i], cp & 0x1FF);
    }
    check_sanitize(s, size);
    /* cutting well-formed text anywhere cuts back to the last character boundary */
    if (ref_valid(s, size)) {
        for (size_t cut = 0, boundary = 0; cut <= size; cut++) {
            if (cut == size || ref_seq(data + cut, size - cut, NULL))
                boundary = cut;
            EXPECT(utf8_complete_prefix(s, cut) == boundary, "cut at %zu of valid text kept %zu bytes, expected %zu",
                   cut, utf8_complete_prefix(s, cut), boundary);
        }
    }
}

const fuzz_target fuzz_target_utf8 = {"utf8", NULL, run_utf8};

/* ---- req ------------------------------------------------------------------------------- */

/* s is a C string (every byte up to its NUL is really there). */
static void touch_cstr(const char *s, const char *what)
{
    EXPECT(s, "%s is NULL", what);
    touch(s, strlen(s) + 1);
}

static void check_generation(const api_req *r)
{
    err_info ei = {0};
    EXPECT(r->max_tokens >= 0 && r->max_tokens <= 1 << 30, "max_tokens %d accepted", (int)r->max_tokens);
    EXPECT(sampler_params_check(&r->sampling, &ei) == 0, "sampling parameters the sampler refuses: %s", ei.msg);
    EXPECT(r->n_stop >= 0 && r->n_stop <= API_MAX_STOP, "%d stop strings", r->n_stop);
    for (int i = 0; i < r->n_stop; i++)
        touch_cstr(r->stop[i], "a stop string");
    EXPECT(r->timeout_s == 0 || (r->timeout_s >= 0.0009 && r->timeout_s <= 86400), "timeout %g accepted",
           r->timeout_s);
    EXPECT(r->target == API_TARGET_AUTO || r->target == API_TARGET_LOCAL || r->target == API_TARGET_CLOUD,
           "route %d", (int)r->target);
}

static void run_req(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    api_kind kind = (api_kind)(data[0] % 4);
    api_req *r = NULL;
    err_info ei = {0};
    /* the body is exactly the rest of the input, not NUL-terminated: the parser must keep
     * to its length */
    int rc = api_req_parse(&r, kind, (const char *)data + 1, size - 1, &ei);
    if (rc) {
        EXPECT(rc < 0 && ei.code == rc && ei.msg[0] && !r, "api_req_parse failed (%d) without naming the problem", rc);
        return;
    }
    EXPECT(r && r->kind == kind, "api_req_parse gave a request of kind %d for %d", r ? (int)r->kind : -1, (int)kind);
    touch_cstr(r->model, "model");
    switch (kind) {
    case API_KIND_CHAT:
        EXPECT(r->n_msgs >= 1 && r->msgs, "a chat of %zu messages accepted", r->n_msgs);
        for (size_t i = 0; i < r->n_msgs; i++) {
            touch_cstr(r->msgs[i].role, "a role");
            touch_cstr(r->msgs[i].content, "a message's content");
        }
        check_generation(r);
        break;
    case API_KIND_COMPLETION:
        touch_cstr(r->prompt, "prompt");
        EXPECT(r->prompt_len == strlen(r->prompt), "prompt_len %zu for a prompt of %zu bytes", r->prompt_len,
               strlen(r->prompt));
        check_generation(r);
        break;
    case API_KIND_TOKENIZE:
        touch_cstr(r->prompt, "content");
        break;
    case API_KIND_DETOKENIZE:
        EXPECT(r->tokens, "no token array");
        for (size_t i = 0; i < r->n_tokens; i++)
            EXPECT(r->tokens[i] >= 0, "token %zu is %d", i, (int)r->tokens[i]);
        break;
    }
    api_req_free(r);
}

const fuzz_target fuzz_target_req = {"req", NULL, run_req};

/* ---- sse ------------------------------------------------------------------------------- */

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes the JSON string whose body starts at s (after the opening quote) into out, up to
 * the closing quote; returns the bytes of s it used, quote included. Written here rather
 * than taken from cJSON, which cuts a string at an escaped NUL. */
static size_t json_unescape(const char *s, size_t n, bytes *out)
{
    size_t i = 0;
    while (i < n && s[i] != '"') {
        if (s[i] != '\\') {
            bytes_put(out, s + i++, 1);
            continue;
        }
        EXPECT(i + 1 < n, "a frame ends inside an escape");
        char c = s[i + 1], one = c;
        i += 2;
        if (c == 'u') {
            EXPECT(i + 4 <= n, "a frame ends inside \\u");
            uint32_t cp = 0;
            for (int k = 0; k < 4; k++) {
                int h = hex_value(s[i + (size_t)k]);
                EXPECT(h >= 0, "bad \\u escape");
                cp = cp << 4 | (uint32_t)h;
            }
            i += 4;
            EXPECT(cp < 0x20 || cp == 0xFFFD, "\\u%04x: only control characters and U+FFFD are escaped", cp);
            char u[4];
            bytes_put(out, u, (size_t)utf8_encode(cp, u));
            continue;
        }
        switch (c) {
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case '"': case '\\': case '/': break;
        default: EXPECT(0, "unknown escape \\%c", c);
        }
        bytes_put(out, &one, 1);
    }
    EXPECT(i < n, "unterminated string");
    return i + 1;
}

/* The decoded text of the string member that follows key (e.g. "\"content\":\"") in a
 * frame, appended to out; false when the frame has no such member. A key inside an escaped
 * string cannot match: there its quotes are preceded by backslashes. */
static bool member_text(const char *frame, size_t n, const char *key, bytes *out)
{
    const char *at = memmem(frame, n, key, strlen(key));
    if (!at)
        return false;
    size_t start = (size_t)(at - frame) + strlen(key);
    json_unescape(frame + start, n - start, out);
    return true;
}

/* A tiny deterministic generator for the chunk sizes. */
static uint32_t next_rand(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

enum { SSE_END_STOP, SSE_END_LENGTH, SSE_END_ERROR, SSE_END_CANCELLED };

/* The frames a job's client would read, checked one by one (see the top of the file). */
static void check_frames(const bytes *out, bool chat, int end, bool usage, const char *model_id, size_t model_len,
                         const bytes *want_text)
{
    EXPECT(ref_valid(out->p, out->n), "the stream is not valid UTF-8");
    const char *id = chat ? "chatcmpl-00000000000012ab" : "cmpl-00000000000012ab";
    bytes text = {0}, want_model = {0};
    ref_sanitize(model_id, model_len, &want_model);
    int finishes = 0, errors = 0, usages = 0, frames = 0;
    bool done = false;
    for (size_t at = 0; at < out->n;) {
        const char *ev = out->p + at, *sep = memmem(ev, out->n - at, "\n\n", 2);
        EXPECT(sep, "the stream ends inside a frame");
        size_t len = (size_t)(sep - ev);
        EXPECT(len + 2 <= API_SSE_FRAME_MAX, "a frame of %zu bytes", len + 2);
        EXPECT(!done, "a frame after [DONE]");
        EXPECT(len > 6 && !memcmp(ev, "data: ", 6), "a frame that is not \"data: \"");
        at += len + 2;
        if (len == 12 && !memcmp(ev + 6, "[DONE]", 6)) {
            done = true;
            continue;
        }
        cJSON *j = cJSON_ParseWithLength(ev + 6, len - 6);
        EXPECT(cJSON_IsObject(j), "frame %d is not a JSON object", frames);
        frames++;
        if (cJSON_GetObjectItemCaseSensitive(j, "error")) {
            errors++;
            cJSON_Delete(j);
            continue;
        }
        const char *got_id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "id"));
        EXPECT(got_id && !strcmp(got_id, id), "wrong id");
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "model"));
        EXPECT(m && bytes_eq(&want_model, m, strlen(m)), "the model id comes out as '%s'", m ? m : "(none)");
        const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
        EXPECT(cJSON_IsArray(choices), "no choices");
        if (cJSON_GetObjectItemCaseSensitive(j, "usage")) {
            usages++;
            EXPECT(cJSON_GetArraySize(choices) == 0, "a usage frame with choices");
        }
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(choices, 0), "finish_reason");
        if (cJSON_IsString(fr))
            finishes++;
        size_t before = text.n;
        bool has = member_text(ev, len, chat ? "\"content\":\"" : "\"text\":\"", &text);
        EXPECT(text.n - before <= 3 * API_SSE_TEXT_MAX, "a frame carries %zu bytes of text", text.n - before);
        EXPECT(has || cJSON_GetArraySize(choices) == 0 || chat, "a text frame without text");
        cJSON_Delete(j);
    }
    EXPECT(bytes_eq(&text, want_text->p, want_text->n), "the frames carry %zu bytes of text, expected %zu", text.n,
           want_text->n);
    EXPECT(done == (end != SSE_END_CANCELLED), "[DONE] %s", done ? "after a cancelled answer" : "missing");
    EXPECT(finishes == (end <= SSE_END_LENGTH), "%d finish_reason frames", finishes);
    EXPECT(errors == (end == SSE_END_ERROR), "%d error frames", errors);
    EXPECT(usages == (usage && end <= SSE_END_LENGTH), "%d usage frames", usages);
    free(text.p);
    free(want_model.p);
}

/* Input: byte 0 flags (bit 0 chat, bit 1 include_usage, bits 2-3 how the answer ends),
 * byte 1 the model id's length, byte 2 the chunking seed (odd: chunks up to 3000 bytes,
 * across API_SSE_TEXT_MAX; even: up to 8), then the model id, then the text. */
static void run_sse(const uint8_t *data, size_t size)
{
    if (size < 3)
        return;
    bool chat = data[0] & 1, usage = data[0] & 2;
    int end = (data[0] >> 2) & 3;
    size_t model_len = data[1] < size - 3 ? data[1] : size - 3;
    uint32_t seed = 0x9E3779B9u ^ data[2];
    const char *text = (const char *)data + 3 + model_len;
    size_t n = size - 3 - model_len;
    char model_id[256];
    memcpy(model_id, data + 3, model_len);
    model_id[model_len] = 0;
    model_len = strlen(model_id);                  /* the id is a C string: up to a NUL */
    if (model_len > API_SSE_MODEL_MAX)             /* cut on a character boundary */
        model_len = utf8_complete_prefix(model_id, API_SSE_MODEL_MAX);

    api_req *r;
    err_info ei = {0};
    static const char body[] = "{\"prompt\":\"\",\"stream\":true}";
    EXPECT(api_req_parse(&r, API_KIND_COMPLETION, body, sizeof body - 1, &ei) == 0, "%s", ei.msg);
    r->include_usage = usage;
    api_job *j;
    EXPECT(api_job_new(&j, r, 64, &ei) == 0, "api_job_new: %s", ei.msg);
    api_job_set_elastic(j, SIZE_MAX / 2); /* nobody reads until the end: the ring grows */
    api_sse_init(api_job_sse(j), chat, model_id, 0x12ab, 1700000000);
    api_job_capture(j);
    char *frame = malloc(API_SSE_FRAME_MAX); /* exactly the documented size, for ASan */
    EXPECT(frame, "out of memory");
    EXPECT(api_job_emit_start(j, frame) == 0, "api_job_emit_start failed");
    bytes want = {0};
    for (size_t at = 0; at < n;) {
        size_t k = 1 + next_rand(&seed) % ((seed & 1) ? 3000 : 8);
        if (k > n - at)
            k = n - at;
        EXPECT(api_job_emit_text(j, text + at, k, frame) == 0, "api_job_emit_text failed");
        ref_sanitize(text + at, k, &want);
        at += k;
    }
    api_result res = {.n_prompt = 3, .n_generated = 5};
    if (end == SSE_END_STOP || end == SSE_END_LENGTH)
        res.finish_reason = end == SSE_END_STOP ? "stop" : "length";
    if (end == SSE_END_ERROR) {
        res.code = -ERR_IO;
        snprintf(res.message, sizeof res.message, "%.*s", (int)(n < 200 ? n : 200), text); /* any bytes */
    }
    EXPECT(api_job_emit_end(j, &res, frame) == 0, "api_job_emit_end failed");
    api_job_finish(j, &res);
    bytes out = {0};
    size_t k;
    do {
        bytes_reserve(&out, 65536);
        k = api_job_read(j, out.p + out.n, 65536);
        out.n += k;
    } while (k);
    EXPECT(api_job_done(j, NULL), "the job is not done after everything was read");
    const char *captured;
    size_t captured_len;
    EXPECT(api_job_captured(j, &captured, &captured_len) && captured_len == n &&
               (n == 0 || !memcmp(captured, text, n)),
           "the captured text differs from what was emitted");
    check_frames(&out, chat, end, usage, model_id, model_len, &want);

    /* the escaper into a small buffer: the full length, a NUL-terminated prefix */
    size_t full = api_json_escape(NULL, 0, text, n), cap = 1 + data[2] % 64;
    char small[65];
    EXPECT(api_json_escape(small, cap, text, n) == full, "api_json_escape's length depends on the room");
    EXPECT(strlen(small) == (full < cap ? full : cap - 1), "api_json_escape did not end its output at the room");
    EXPECT(full <= 6 * n, "api_json_escape gave %zu bytes for %zu", full, n);

    free(out.p);
    free(want.p);
    free(frame);
    api_job_unref(j);
}

const fuzz_target fuzz_target_sse = {"sse", NULL, run_sse};

const fuzz_target *const fuzz_targets[] = {&fuzz_target_gguf, &fuzz_target_tok, &fuzz_target_chat, &fuzz_target_utf8,
                                           &fuzz_target_req,  &fuzz_target_sse, NULL};
