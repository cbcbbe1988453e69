/* test_tok — the tokenizer against llama.cpp: every $SHARED/tokenizer/NAME.gguf.inp/.out
 * pair (found by listing the directory), the prompt_tokens of $SHARED/models/X.refN.json,
 * special tokens, byte fallback, streaming detokenization, the EOG set, refusal of
 * malformed metadata (GGUFs built in memory), concurrent use, and speed. */
#include <check.h>
#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/gguf.h"
#include "engine/tok.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static const char *shared_dir(void)
{
    const char *s = getenv("SHARED");
    return s && *s ? s : "../shared";
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A vocab opened from a file, with its gguf kept alive. */
typedef struct loaded {
    gguf *g;
    tok_vocab *v;
} loaded;

static loaded load_path(const char *path)
{
    loaded l = {0};
    err_info ei = {0};
    int rc = gguf_open(&l.g, path, &ei);
    ck_assert_msg(rc == 0, "%s: %s", path, err_text(&ei, rc));
    rc = tok_load(&l.v, l.g, &ei);
    ck_assert_msg(rc == 0, "%s: %s", path, err_text(&ei, rc));
    return l;
}

static loaded load_vocab(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-%s.gguf", shared_dir(), name);
    return load_path(path);
}

static void unload(loaded *l)
{
    tok_free(l->v);
    gguf_close(l->g);
}

/* Encodes text, growing the buffer as tok_encode asks; *n gets the count. */
static int32_t *encode(const tok_vocab *v, const char *text, size_t len, bool add_bos, bool special, int *n)
{
    int cap = 8;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    int rc = tok_encode(v, text, len, add_bos, special, ids, cap, n);
    if (rc == -ERANGE) {
        ck_assert_int_gt(*n, cap);
        cap = *n;
        ids = realloc(ids, (size_t)cap * sizeof *ids);
        rc = tok_encode(v, text, len, add_bos, special, ids, cap, n);
    }
    ck_assert_int_eq(rc, 0);
    return ids;
}

/* Decodes ids with a tok_stream into a malloc'd string (*len bytes). */
static char *decode(const tok_vocab *v, const int32_t *ids, int n, size_t *len)
{
    size_t cap = 64, at = 0;
    char *out = malloc(cap);
    char piece[4096];
    tok_stream s;
    tok_stream_init(&s);
    for (int i = 0; i <= n; i++) {
        int k = i < n ? tok_stream_push(v, &s, ids[i], piece, sizeof piece) : tok_stream_flush(&s, piece, sizeof piece);
        ck_assert_int_ge(k, 0);
        while (at + (size_t)k > cap)
            out = realloc(out, cap *= 2);
        memcpy(out + at, piece, (size_t)k);
        at += (size_t)k;
    }
    *len = at;
    return out;
}

/* Concatenates the raw pieces of ids (tok_piece: bytes as the tokens spell them, valid
 * UTF-8 or not) into a malloc'd buffer (*len bytes). */
static char *decode_raw(const tok_vocab *v, const int32_t *ids, int n, size_t *len)
{
    size_t at = 0;
    char *out = malloc(4096);
    for (int i = 0; i < n; i++) {
        int k = tok_piece(v, ids[i], false, out + at, (int)(4096 - at));
        ck_assert(k >= 0 && at + (size_t)k <= 4096);
        at += (size_t)k;
    }
    *len = at;
    return out;
}

/* Token ids as llama.cpp's test files write them: each preceded by a space. */
static void format_ids(const int32_t *ids, int n, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, " %d", ids[i]);
}

/* ---- the llama.cpp test vectors ------------------------------------------------------ */

enum { MAX_VOCABS = 64 };
static char vocab_files[MAX_VOCABS][256];
static int n_vocab_files;

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

/* Lists $SHARED/tokenizer/X.gguf that have an X.gguf.inp, so new pairs are picked up. */
static void discover_vocabs(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tokenizer", shared_dir());
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) && n_vocab_files < MAX_VOCABS;) {
        size_t n = strlen(e->d_name);
        if (n > 9 && n < 255 && !strcmp(e->d_name + n - 9, ".gguf.inp")) {
            memcpy(vocab_files[n_vocab_files], e->d_name, n - 4);
            vocab_files[n_vocab_files++][n - 4] = 0;
        }
    }
    closedir(d);
    qsort(vocab_files, (size_t)n_vocab_files, sizeof vocab_files[0], cmp_str);
}

START_TEST(test_vectors_found)
{
    /* the loop test below runs once per pair; make sure there are pairs to run */
    ck_assert_msg(n_vocab_files >= 8, "found %d vocab test pairs in %s/tokenizer", n_vocab_files, shared_dir());
}
END_TEST

START_TEST(test_vectors)
{
    const char *name = vocab_files[_i];
    char path[1024];
    size_t inp_len, out_len;
    snprintf(path, sizeof path, "%s/tokenizer/%s.inp", shared_dir(), name);
    char *inp = read_file(path, &inp_len);
    snprintf(path, sizeof path, "%s/tokenizer/%s.out", shared_dir(), name);
    char *out = read_file(path, &out_len);
    snprintf(path, sizeof path, "%s/tokenizer/%s", shared_dir(), name);
    loaded l = load_path(path);

    static const char sep[] = "\n__ggml_vocab_test__\n";
    int total = 0, passed = 0, lossless = 0;
    char *text = inp, *line = out;
    for (char *end; (end = strstr(text, sep)); text = end + strlen(sep)) {
        char *eol = strchr(line, '\n');
        ck_assert_msg(eol, "%s: fewer lines in .out than strings in .inp", name);
        *eol = 0;
        size_t len = (size_t)(end - text);
        int n;
        int32_t *ids = encode(l.v, text, len, false, false, &n);
        char got[16384];
        format_ids(ids, n, got, sizeof got);
        bool same = strcmp(got, line) == 0;
        passed += same;
        if (!same)
            fprintf(stderr, "%s string %d: expected '%s'\n%*sgot      '%s'\n", name, total, line, (int)strlen(name) + 10,
                    "", got);
        size_t dec_len;
        char *dec = decode(l.v, ids, n, &dec_len);
        bool round = dec_len == len && memcmp(dec, text, len) == 0;
        lossless += round;
        if (!round)
            fprintf(stderr, "%s string %d: decodes to '%.*s'\n", name, total, (int)dec_len, dec);
        free(dec);
        free(ids);
        total++;
        line = eol + 1;
    }
    printf("%s: %d/%d strings match llama.cpp, %d/%d decode back exactly\n", name, passed, total, lossless, total);
    fflush(stdout); /* a failed check ends this forked test without flushing */
    ck_assert_int_gt(total, 0);
    ck_assert_int_eq(passed, total);
    ck_assert_int_eq(lossless, total);
    ck_assert_msg(*line == 0, "%s: more lines in .out than strings in .inp", name);
    unload(&l);
    free(inp);
    free(out);
}
END_TEST

START_TEST(test_model_prompts)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models", shared_dir());
    DIR *d = opendir(dir);
    ck_assert_msg(d, "cannot list %s", dir);
    int checked = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const char *ref = strstr(e->d_name, ".ref");
        size_t n = strlen(e->d_name);
        if (!ref || n < 5 || strcmp(e->d_name + n - 5, ".json"))
            continue;
        char path[1024];
        size_t len;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *json = read_file(path, &len);
        cJSON *root = cJSON_Parse(json);
        ck_assert_msg(root, "%s: not JSON", path);
        const cJSON *prompt = cJSON_GetObjectItem(root, "prompt");
        const cJSON *add_bos = cJSON_GetObjectItem(root, "add_bos");
        const cJSON *want = cJSON_GetObjectItem(root, "prompt_tokens");
        ck_assert(cJSON_IsString(prompt) && cJSON_IsBool(add_bos) && cJSON_IsArray(want));
        snprintf(path, sizeof path, "%s/%.*s.gguf", dir, (int)(ref - e->d_name), e->d_name);
        loaded l = load_path(path);
        int n_ids;
        int32_t *ids = encode(l.v, prompt->valuestring, strlen(prompt->valuestring), cJSON_IsTrue(add_bos), false, &n_ids);
        ck_assert_msg(n_ids == cJSON_GetArraySize(want), "%s: %d tokens, expected %d", e->d_name, n_ids,
                      cJSON_GetArraySize(want));
        for (int i = 0; i < n_ids; i++)
            ck_assert_msg(ids[i] == cJSON_GetArrayItem(want, i)->valueint, "%s: token %d is %d, expected %d", e->d_name,
                          i, ids[i], cJSON_GetArrayItem(want, i)->valueint);
        free(ids);
        unload(&l);
        cJSON_Delete(root);
        free(json);
        checked++;
    }
    closedir(d);
    printf("model prompts: %d reference files match\n", checked);
    ck_assert_int_ge(checked, 15);
}
END_TEST

/* ---- behaviour ----------------------------------------------------------------------- */

static int32_t id_of(const tok_vocab *v, const char *text)
{
    int32_t id = tok_find(v, text, strlen(text));
    ck_assert_msg(id != TOK_NULL, "no token '%s'", text);
    return id;
}

/* Asserts that text encodes to exactly the n ids given. */
static void expect_ids(const tok_vocab *v, const char *text, bool add_bos, bool special, const int32_t *want, int n)
{
    int got_n;
    int32_t *got = encode(v, text, strlen(text), add_bos, special, &got_n);
    char a[1024], b[1024];
    format_ids(got, got_n, a, sizeof a);
    format_ids(want, n, b, sizeof b);
    ck_assert_msg(!strcmp(a, b), "'%s' (bos %d, special %d): got%s, expected%s", text, add_bos, special, a, b);
    free(got);
}

START_TEST(test_special_parsing)
{
    loaded l = load_vocab("gpt-2");
    int32_t eot = id_of(l.v, "<|endoftext|>");
    expect_ids(l.v, "<|endoftext|>", false, true, (int32_t[]){eot}, 1);
    int n;
    int32_t *ids = encode(l.v, "<|endoftext|>", 13, false, false, &n);
    ck_assert_int_gt(n, 1); /* spelled out, not the control token */
    for (int i = 0; i < n; i++)
        ck_assert_int_ne(ids[i], eot);
    free(ids);
    /* longest special token first, and the text between stays normal text */
    expect_ids(l.v, "a<|endoftext|>b", false, true, (int32_t[]){id_of(l.v, "a"), eot, id_of(l.v, "b")}, 3);
    unload(&l);

    /* SPM: text after a special token gets the space prefix, as at the start */
    l = load_vocab("llama-spm");
    expect_ids(l.v, "<s>Hello", true, true, (int32_t[]){1, 1, id_of(l.v, "\xE2\x96\x81Hello")}, 3);
    unload(&l);

    /* USER_DEFINED tokens are matched even without parse_special; phi-3's "</s>" also
     * swallows the whitespace after it (RSTRIP) */
    l = load_vocab("phi-3");
    ck_assert_int_eq(tok_type_of(l.v, 2), TOK_TYPE_USER_DEFINED);
    int32_t a = id_of(l.v, "\xE2\x96\x81" "a"), b = id_of(l.v, "\xE2\x96\x81" "b");
    expect_ids(l.v, "a</s>   b", false, false, (int32_t[]){a, 2, b}, 3);
    ids = encode(l.v, "a<|end|>b", 9, false, false, &n);
    for (int i = 0; i < n; i++)
        ck_assert_int_ne(ids[i], id_of(l.v, "<|end|>"));
    free(ids);
    expect_ids(l.v, "a<|end|>b", false, true, (int32_t[]){a, id_of(l.v, "<|end|>"), b}, 3);
    unload(&l);

    /* deepseek's user-defined single letters win over byte-level BPE */
    l = load_vocab("deepseek-llm");
    int32_t oe = id_of(l.v, "\xC3\xB6");
    ck_assert_int_eq(tok_type_of(l.v, oe), TOK_TYPE_USER_DEFINED);
    expect_ids(l.v, "\xC3\xB6", false, false, (int32_t[]){oe}, 1);
    unload(&l);
}
END_TEST

START_TEST(test_byte_fallback_and_stream)
{
    loaded l = load_vocab("llama-spm");
    /* U+1F999 is not in the Llama 2 vocab: its four bytes become <0xXX> tokens */
    const char *llama = "\xF0\x9F\xA6\x99";
    int32_t bytes[4] = {id_of(l.v, "<0xF0>"), id_of(l.v, "<0x9F>"), id_of(l.v, "<0xA6>"), id_of(l.v, "<0x99>")};
    expect_ids(l.v, llama, false, false, (int32_t[]){id_of(l.v, "\xE2\x96\x81"), bytes[0], bytes[1], bytes[2], bytes[3]},
               5);
    tok_stream s;
    tok_stream_init(&s);
    s.at_start = false;
    char out[64];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tok_stream_push(l.v, &s, bytes[i], out, sizeof out), 0); /* held back */
    ck_assert_int_eq(tok_stream_push(l.v, &s, bytes[3], out, sizeof out), 4);
    ck_assert_mem_eq(out, llama, 4);
    ck_assert_int_eq(tok_stream_flush(&s, out, sizeof out), 0);
    /* a truncated character is released as U+FFFD at the end */
    ck_assert_int_eq(tok_stream_push(l.v, &s, bytes[0], out, sizeof out), 0);
    ck_assert_int_eq(tok_stream_push(l.v, &s, bytes[1], out, sizeof out), 0);
    ck_assert_int_eq(tok_stream_flush(&s, out, sizeof out), 3);
    ck_assert_mem_eq(out, "\xEF\xBF\xBD", 3);
    /* held bytes plus a piece that does not fit: refused, state kept */
    ck_assert_int_eq(tok_stream_push(l.v, &s, bytes[0], out, sizeof out), 0);
    ck_assert_int_eq(tok_stream_push(l.v, &s, id_of(l.v, "\xE2\x96\x81Hello"), out, 3), -ERANGE);
    /* ... and then the held lead byte, which the space can never complete, shows as U+FFFD */
    ck_assert_int_eq(tok_stream_push(l.v, &s, id_of(l.v, "\xE2\x96\x81Hello"), out, sizeof out), 9);
    ck_assert_mem_eq(out, "\xEF\xBF\xBD Hello", 9);
    /* from the start of text the prefix space goes; continuing text keeps it */
    tok_stream_init(&s);
    ck_assert_int_eq(tok_stream_push(l.v, &s, id_of(l.v, "\xE2\x96\x81Hello"), out, sizeof out), 5);
    ck_assert_mem_eq(out, "Hello", 5);
    ck_assert_int_eq(tok_stream_push(l.v, &s, id_of(l.v, "\xE2\x96\x81world"), out, sizeof out), 6);
    ck_assert_mem_eq(out, " world", 6);

    ck_assert_int_eq(tok_piece(l.v, 1, false, out, sizeof out), 0);
    ck_assert_int_eq(tok_piece(l.v, 1, true, out, sizeof out), 3);
    ck_assert_mem_eq(out, "<s>", 3);
    ck_assert_int_eq(tok_piece(l.v, id_of(l.v, "<0x0A>"), false, out, sizeof out), 1);
    ck_assert_int_eq(out[0], '\n');
    /* like snprintf: the full length, only cap bytes written */
    memset(out, '#', sizeof out);
    ck_assert_int_eq(tok_piece(l.v, id_of(l.v, "\xE2\x96\x81Hello"), false, out, 2), 6);
    ck_assert_mem_eq(out, " H#", 3);
    unload(&l);

    l = load_vocab("gpt-2");
    ck_assert_int_eq(tok_piece(l.v, id_of(l.v, "\xC4\xA0world"), false, out, sizeof out), 6);
    ck_assert_mem_eq(out, " world", 6);
    tok_stream_init(&s); /* BPE adds no space prefix: nothing is stripped */
    ck_assert_int_eq(tok_stream_push(l.v, &s, id_of(l.v, "\xC4\xA0world"), out, sizeof out), 6);
    unload(&l);
}
END_TEST

START_TEST(test_eog_and_flags)
{
    loaded l = load_vocab("llama-spm");
    ck_assert(tok_kind_of(l.v) == TOK_SPM);
    ck_assert(tok_adds_bos(l.v));
    ck_assert_int_eq(tok_bos(l.v), 1);
    ck_assert_int_eq(tok_eos(l.v), 2);
    ck_assert(tok_is_eog(l.v, 2));
    ck_assert(!tok_is_eog(l.v, 1) && !tok_is_eog(l.v, 0) && !tok_is_eog(l.v, -1) && !tok_is_eog(l.v, 32000));
    expect_ids(l.v, "", true, false, (int32_t[]){1}, 1);
    unload(&l);

    l = load_vocab("phi-3");
    ck_assert(tok_is_eog(l.v, id_of(l.v, "<|endoftext|>")));
    ck_assert(tok_is_eog(l.v, id_of(l.v, "<|end|>")));
    ck_assert(!tok_is_eog(l.v, id_of(l.v, "<|user|>")));
    unload(&l);

    static const struct {
        const char *name, *pre;
        bool bos;
    } bpe[] = {
        {"gpt-2", "gpt2", false},        {"gpt-2-pre-llama-bpe", "llama3", true}, {"gpt-2-pre-qwen2", "qwen2", false},
        {"starcoder", "starcoder", false}, {"falcon", "falcon", false},          {"deepseek-llm", "deepseek-llm", true},
    };
    for (size_t i = 0; i < sizeof bpe / sizeof bpe[0]; i++) {
        l = load_vocab(bpe[i].name);
        ck_assert(tok_kind_of(l.v) == TOK_BPE);
        ck_assert_str_eq(tok_pre_name(l.v), bpe[i].pre);
        ck_assert_msg(tok_adds_bos(l.v) == bpe[i].bos, "%s", bpe[i].name);
        ck_assert_msg(tok_is_eog(l.v, tok_eos(l.v)), "%s: eos is not end of generation", bpe[i].name);
        int32_t eot = tok_find(l.v, "<|endoftext|>", 13);
        if (eot != TOK_NULL)
            ck_assert(tok_is_eog(l.v, eot) && tok_type_of(l.v, eot) == TOK_TYPE_CONTROL);
        unload(&l);
    }
}
END_TEST

START_TEST(test_output_capacity)
{
    loaded l = load_vocab("gpt-2");
    int32_t ids[2] = {-7, -7};
    int n = -1;
    ck_assert_int_eq(tok_encode(l.v, "Hello world, again", 18, false, false, ids, 2, &n), -ERANGE);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(ids[0], id_of(l.v, "Hello"));
    ck_assert_int_eq(tok_encode(l.v, "Hello", 5, false, false, NULL, 0, &n), -ERANGE);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(tok_encode(l.v, "", 0, false, false, NULL, 0, &n), 0);
    ck_assert_int_eq(n, 0);
    /* malformed UTF-8 is not refused: its bytes go through the byte map, and the pieces
     * give them back exactly; the stream, which promises valid UTF-8, shows U+FFFD */
    const char bad[] = "a\xFF\xC3(b";
    int32_t *got = encode(l.v, bad, 5, false, false, &n);
    size_t len;
    char *dec = decode_raw(l.v, got, n, &len);
    ck_assert_uint_eq(len, 5);
    ck_assert_mem_eq(dec, bad, 5);
    free(dec);
    dec = decode(l.v, got, n, &len);
    ck_assert_uint_eq(len, 9);
    ck_assert_mem_eq(dec, "a\xEF\xBF\xBD\xEF\xBF\xBD(b", 9);
    free(dec);
    free(got);
    unload(&l);
}
END_TEST

/* ---- malformed metadata: GGUFs written in memory ------------------------------------- */

typedef struct gw {
    uint8_t buf[1 << 16];
    size_t n;
    uint64_t n_kv;
} gw;

static void gw_raw(gw *w, const void *p, size_t n)
{
    ck_assert(w->n + n <= sizeof w->buf);
    memcpy(w->buf + w->n, p, n);
    w->n += n;
}
static void gw_u32v(gw *w, uint32_t x) { gw_raw(w, &x, 4); }
static void gw_u64v(gw *w, uint64_t x) { gw_raw(w, &x, 8); }
static void gw_strv(gw *w, const char *s)
{
    gw_u64v(w, strlen(s));
    gw_raw(w, s, strlen(s));
}
static void gw_key(gw *w, const char *key, uint32_t type)
{
    gw_strv(w, key);
    gw_u32v(w, type);
    w->n_kv++;
}
static void gw_begin(gw *w)
{
    w->n = 0;
    w->n_kv = 0;
    gw_raw(w, "GGUF", 4);
    gw_u32v(w, 3);
    gw_u64v(w, 0); /* tensors */
    gw_u64v(w, 0); /* kv count, patched by gw_end */
}
static void gw_end(gw *w) { memcpy(w->buf + 16, &w->n_kv, 8); }
static void gw_str(gw *w, const char *key, const char *val)
{
    gw_key(w, key, GGUF_STR);
    gw_strv(w, val);
}
static void gw_u32(gw *w, const char *key, uint32_t val)
{
    gw_key(w, key, GGUF_U32);
    gw_u32v(w, val);
}
static void gw_strs(gw *w, const char *key, const char *const *s, int n)
{
    gw_key(w, key, GGUF_ARR);
    gw_u32v(w, GGUF_STR);
    gw_u64v(w, (uint64_t)n);
    for (int i = 0; i < n; i++)
        gw_strv(w, s[i]);
}
/* An array of n 4-byte elements of type t, all equal to the 4 bytes at val. */
static void gw_arr4(gw *w, const char *key, gguf_vtype t, const void *val, int n)
{
    gw_key(w, key, GGUF_ARR);
    gw_u32v(w, t);
    gw_u64v(w, (uint64_t)n);
    for (int i = 0; i < n; i++)
        gw_raw(w, val, 4);
}

enum { BAD_NONE, BAD_TOKENS_TYPE, BAD_TOKEN_TYPE_TYPE, BAD_SCORES_LEN, BAD_MODEL, BAD_PRE, BAD_BOS, BAD_MERGE,
       BAD_DUP_TOKEN, BAD_NO_TOKENS, BAD_COUNT };

/* A tiny BPE vocab (a, b, ab, <|endoftext|>; merge "a b"), or SPM when spm, spoiled by bad. */
static void write_vocab(gw *w, bool spm, int bad)
{
    static const char *const toks[] = {"a", "b", "ab", "<|endoftext|>"};
    static const char *const dup_toks[] = {"a", "b", "a", "<|endoftext|>"};
    int32_t normal = 1;
    float score = 0;
    gw_begin(w);
    gw_str(w, "tokenizer.ggml.model", bad == BAD_MODEL ? "wordpiece" : spm ? "llama" : "gpt2");
    if (!spm)
        gw_str(w, "tokenizer.ggml.pre", bad == BAD_PRE ? "no-such-pre" : "gpt-2");
    if (bad == BAD_TOKENS_TYPE)
        gw_arr4(w, "tokenizer.ggml.tokens", GGUF_I32, &normal, 4);
    else if (bad != BAD_NO_TOKENS)
        gw_strs(w, "tokenizer.ggml.tokens", bad == BAD_DUP_TOKEN ? dup_toks : toks, 4);
    if (bad == BAD_TOKEN_TYPE_TYPE)
        gw_strs(w, "tokenizer.ggml.token_type", toks, 4);
    else
        gw_arr4(w, "tokenizer.ggml.token_type", GGUF_I32, &normal, 4);
    if (spm)
        gw_arr4(w, "tokenizer.ggml.scores", GGUF_F32, &score, bad == BAD_SCORES_LEN ? 3 : 4);
    else
        gw_strs(w, "tokenizer.ggml.merges", (const char *const[]){bad == BAD_MERGE ? "ab" : "a b"}, 1);
    gw_u32(w, "tokenizer.ggml.bos_token_id", bad == BAD_BOS ? 4 : 3);
    gw_end(w);
}

START_TEST(test_malformed_metadata)
{
    static const struct {
        int bad;
        bool spm;
        const char *key;
    } cases[] = {
        {BAD_TOKENS_TYPE, false, "tokenizer.ggml.tokens"},   {BAD_TOKEN_TYPE_TYPE, false, "tokenizer.ggml.token_type"},
        {BAD_SCORES_LEN, true, "tokenizer.ggml.scores"},     {BAD_MODEL, false, "tokenizer.ggml.model"},
        {BAD_PRE, false, "tokenizer.ggml.pre"},              {BAD_BOS, false, "tokenizer.ggml.bos_token_id"},
        {BAD_MERGE, false, "tokenizer.ggml.merges"},         {BAD_DUP_TOKEN, true, "tokenizer.ggml.tokens"},
        {BAD_NO_TOKENS, false, "tokenizer.ggml.tokens"},
    };
    static gw w;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_vocab(&w, cases[i].spm, cases[i].bad);
        gguf *g;
        err_info ei = {0};
        int rc = gguf_open_mem(&g, w.buf, w.n, &ei);
        ck_assert_msg(rc == 0, "case %zu: %s", i, err_text(&ei, rc));
        tok_vocab *v = (tok_vocab *)&w; /* must be reset to NULL on failure */
        rc = tok_load(&v, g, &ei);
        ck_assert_msg(rc < 0, "case %zu (%s) was accepted", i, cases[i].key);
        ck_assert_ptr_null(v);
        ck_assert_msg(strstr(ei.msg, cases[i].key), "case %zu: message '%s' does not name %s", i, ei.msg, cases[i].key);
        gguf_close(g);
    }
    /* the same writer without a defect gives a working vocab */
    for (int spm = 0; spm < 2; spm++) {
        write_vocab(&w, spm, BAD_NONE);
        gguf *g;
        tok_vocab *v;
        err_info ei = {0};
        ck_assert_int_eq(gguf_open_mem(&g, w.buf, w.n, &ei), 0);
        int rc = tok_load(&v, g, &ei);
        ck_assert_msg(rc == 0, "%s", err_text(&ei, rc));
        ck_assert_int_eq(tok_bos(v), 3);
        ck_assert(tok_is_eog(v, 3)); /* "<|endoftext|>" by its text */
        ck_assert_int_eq(tok_type_of(v, 3), TOK_TYPE_CONTROL);
        if (!spm) {
            expect_ids(v, "ab", false, false, (int32_t[]){2}, 1);
            expect_ids(v, "ba", false, false, (int32_t[]){1, 0}, 2);
            expect_ids(v, "abc", false, false, (int32_t[]){2}, 1); /* 'c' has no token: dropped */
        }
        tok_free(v);
        gguf_close(g);
    }
}
END_TEST

/* ---- concurrency and speed ----------------------------------------------------------- */

typedef struct job {
    const tok_vocab *v;
    const char *text;
    size_t len;
    int32_t *ids;
    int n;
} job;

static void *run_job(void *p)
{
    job *j = p;
    for (int rep = 0; rep < 20; rep++) {
        int n;
        int32_t *ids = encode(j->v, j->text, j->len, true, true, &n);
        if (rep == 0) {
            j->ids = ids;
            j->n = n;
            continue;
        }
        if (n != j->n || memcmp(ids, j->ids, (size_t)n * sizeof *ids))
            j->n = -1;
        free(ids);
    }
    return NULL;
}

START_TEST(test_concurrent_encode)
{
    static const char *const names[] = {"gpt-2-pre-llama-bpe", "llama-spm"};
    for (int k = 0; k < 2; k++) {
        loaded l = load_vocab(names[k]);
        char path[1024];
        size_t len;
        snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-%s.gguf.inp", shared_dir(), names[k]);
        char *text = read_file(path, &len);
        int n_ref;
        int32_t *ref = encode(l.v, text, len, true, true, &n_ref);
        job jobs[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (job){l.v, text, len, NULL, 0};
            ck_assert_int_eq(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            ck_assert_int_eq(jobs[i].n, n_ref);
            ck_assert_mem_eq(jobs[i].ids, ref, (size_t)n_ref * sizeof *ref);
            free(jobs[i].ids);
        }
        free(ref);
        free(text);
        unload(&l);
    }
}
END_TEST

START_TEST(test_speed)
{
    /* ~1 MB of the vectors' mixed text: scripts, emoji, digits, whitespace runs */
    char path[1024];
    size_t len;
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-gpt-2.gguf.inp", shared_dir());
    char *unit = read_file(path, &len);
    size_t reps = (1 << 20) / len + 1, total = reps * len;
    char *text = malloc(total);
    for (size_t i = 0; i < reps; i++)
        memcpy(text + i * len, unit, len);
    static const char *const names[] = {"gpt-2", "llama-spm", "gpt-2-pre-llama-bpe", "deepseek-llm"};
    for (int k = 0; k < 4; k++) {
        char vpath[1024];
        snprintf(vpath, sizeof vpath, "%s/tokenizer/ggml-vocab-%s.gguf", shared_dir(), names[k]);
        gguf *g;
        tok_vocab *v;
        ck_assert_int_eq(gguf_open(&g, vpath, NULL), 0);
        double t0 = now_s();
        ck_assert_int_eq(tok_load(&v, g, NULL), 0);
        double t_load = now_s() - t0;
        int n;
        t0 = now_s();
        int32_t *ids = encode(v, text, total, false, false, &n);
        double t = now_s() - t0;
        printf("%-20s load %6.1f ms (%d tokens); encode %.2f MB in %.3f s = %.1f MB/s, %d tokens\n", names[k],
               t_load * 1e3, tok_n_vocab(v), total / 1e6, t, total / 1e6 / t, n);
        /* "well under a second" unoptimised and uninstrumented; sanitizers cost ~10x */
        ck_assert_msg(t < (SANITIZED ? 15.0 : 1.0), "%s: %.2f s for %zu bytes", names[k], t, total);
        free(ids);
        tok_free(v);
        gguf_close(g);
    }
    free(text);
    free(unit);
}
END_TEST

START_TEST(test_long_runs)
{
    /* one 200k-letter word, and whitespace runs: no regex or merge limit may give out */
    enum { N = 200000 };
    char *text = malloc(N + 2);
    for (int k = 0; k < n_vocab_files; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tokenizer/%s", shared_dir(), vocab_files[k]);
        loaded l = load_path(path);
        for (int pass = 0; pass < 3; pass++) {
            memset(text, pass == 0 ? 'a' : pass == 1 ? ' ' : '\n', N);
            memcpy(text + N, "1x", 2);
            int n;
            int32_t *ids = encode(l.v, text, N + 2, false, false, &n);
            size_t len;
            char *dec = decode(l.v, ids, n, &len);
            ck_assert_msg(len == N + 2 && !memcmp(dec, text, len), "%s: pass %d does not decode back", vocab_files[k],
                          pass);
            free(dec);
            free(ids);
        }
        unload(&l);
    }
    free(text);
}
END_TEST

START_TEST(test_load_150k)
{
    /* a synthetic BPE vocab of 150k tokens and 150k merges, the size of Qwen's */
    enum { N = 150000 };
    size_t cap = 12u << 20;
    uint8_t *buf = malloc(cap);
    size_t at = 0;
#define PUT(p, n) (memcpy(buf + at, (p), (n)), at += (n))
    uint32_t u32;
    uint64_t u64;
    PUT("GGUF", 4);
    u32 = 3, PUT(&u32, 4);
    u64 = 0, PUT(&u64, 8);
    u64 = 4, PUT(&u64, 8);
    const char *keys[] = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges"};
    for (int k = 0; k < 4; k++) {
        u64 = strlen(keys[k]), PUT(&u64, 8), PUT(keys[k], u64);
        if (k < 2) {
            const char *val = k == 0 ? "gpt2" : "qwen2";
            u32 = GGUF_STR, PUT(&u32, 4), u64 = strlen(val), PUT(&u64, 8), PUT(val, u64);
            continue;
        }
        u32 = GGUF_ARR, PUT(&u32, 4), u32 = GGUF_STR, PUT(&u32, 4), u64 = N, PUT(&u64, 8);
        for (int i = 0; i < N; i++) {
            char s[32];
            int n = k == 2 ? snprintf(s, sizeof s, "t%d", i) : snprintf(s, sizeof s, "t%d t%d", i, (i * 7) % N);
            u64 = (uint64_t)n, PUT(&u64, 8), PUT(s, (size_t)n);
        }
    }
#undef PUT
    ck_assert_uint_le(at, cap);
    gguf *g;
    tok_vocab *v;
    err_info ei = {0};
    ck_assert_int_eq(gguf_open_mem(&g, buf, at, &ei), 0);
    double t0 = now_s();
    int rc = tok_load(&v, g, &ei);
    double ms = (now_s() - t0) * 1e3;
    ck_assert_msg(rc == 0, "%s", err_text(&ei, rc));
    printf("tok_load of a %d-token, %d-merge vocab: %.1f ms\n", N, N, ms);
    ck_assert_int_eq(tok_n_vocab(v), N);
    ck_assert_int_eq(tok_find(v, "t149999", 7), N - 1);
    ck_assert_msg(ms < (SANITIZED ? 3000 : 300), "tok_load took %.1f ms", ms);
    tok_free(v);
    gguf_close(g);
    free(buf);
}
END_TEST

int main(void)
{
    discover_vocabs();
    Suite *s = suite_create("tok");
    TCase *tc = tcase_create("llama.cpp vectors");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_vectors_found);
    tcase_add_loop_test(tc, test_vectors, 0, n_vocab_files);
    tcase_add_test(tc, test_model_prompts);
    suite_add_tcase(s, tc);
    tc = tcase_create("behaviour");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_special_parsing);
    tcase_add_test(tc, test_byte_fallback_and_stream);
    tcase_add_test(tc, test_eog_and_flags);
    tcase_add_test(tc, test_output_capacity);
    tcase_add_test(tc, test_malformed_metadata);
    suite_add_tcase(s, tc);
    /* tagged so emulated runs can leave them out: qemu-user here cannot start threads, and
     * timing an emulator measures nothing (make test-aarch64 sets CK_EXCLUDE_TAGS) */
    tc = tcase_create("threads");
    tcase_set_tags(tc, "threads");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_concurrent_encode);
    suite_add_tcase(s, tc);
    tc = tcase_create("speed");
    tcase_set_tags(tc, "speed");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_speed);
    tcase_add_test(tc, test_long_runs);
    tcase_add_test(tc, test_load_150k);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
