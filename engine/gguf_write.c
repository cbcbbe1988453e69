/* gguf_write — see gguf_write.h. Each metadata value is kept already encoded (the bytes
 * that follow its type tag in the file), so writing the header is concatenation and
 * copying an entry out of an opened file is a copy of its bytes. Tensor data streams from
 * the caller's buffers or fill callbacks straight to the file descriptor.
 *
 * Not a validator of meaning: it writes whatever keys it is given, but refuses anything
 * gguf.h would refuse to read back (bad alignment, duplicate or overlong tensor names,
 * shapes whose byte size overflows, rows that are not whole blocks). */
#include "gguf_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_write copies values in host byte order, which must be little-endian as GGUF is"
#endif

#define GGUF_MAGIC "GGUF"
enum { GGUF_WRITE_VERSION = 3, MAX_ALIGNMENT = 1 << 24 };

/* A growable byte buffer. */
typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

typedef struct wkv {
    char *key;
    gguf_vtype type;
    bytes val;        /* encoded value: what follows the type tag on disk */
} wkv;

typedef struct wtensor {
    char *name;
    qt_type type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t row_bytes, n_rows, nbytes;
    const void *data;          /* borrowed, or NULL when fill produces the bytes */
    gguf_writer_fill_fn fill;
    void *ctx;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    err_info err;             /* first failure of a set/add call; err.code 0 when none */
};

/* Records the first failure; returns the writer's (first) code either way. */
static int fail(gguf_writer *w, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(gguf_writer *w, int code, const char *fmt, ...)
{
    if (w->err.code)
        return w->err.code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err.msg, sizeof w->err.msg, fmt, ap);
    va_end(ap);
    w->err.code = code;
    return code;
}

static int bytes_reserve(bytes *b, size_t more)
{
    if (more <= b->cap - b->len)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < more) {
        if (__builtin_mul_overflow(cap, 2, &cap))
            return -ENOMEM;
    }
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int bytes_add(bytes *b, const void *src, size_t n)
{
    int rc = bytes_reserve(b, n);
    if (!rc && n) {
        memcpy(b->p + b->len, src, n);
        b->len += n;
    }
    return rc;
}

static int bytes_u32(bytes *b, uint32_t v) { return bytes_add(b, &v, 4); }
static int bytes_u64(bytes *b, uint64_t v) { return bytes_add(b, &v, 8); }
static int bytes_str(bytes *b, const void *s, uint64_t len)
{
    if (len > SIZE_MAX - 8 || bytes_u64(b, len))
        return -ENOMEM;
    return bytes_add(b, s, (size_t)len);
}

int gguf_writer_new(gguf_writer **out, err_info *ei)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : err_set(ei, -ENOMEM, "out of memory for a GGUF writer");
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

/* arr (n used of *cap elements of size sz) with room for one more: arr itself, a larger
 * copy (*cap updated), or NULL when out of memory (arr untouched). */
static void *grow(void *arr, size_t *cap, size_t n, size_t sz)
{
    if (n < *cap)
        return arr;
    size_t ncap = *cap ? 2 * *cap : 16, nbytes;
    if (__builtin_mul_overflow(ncap, sz, &nbytes))
        return NULL;
    void *p = realloc(arr, nbytes);
    if (p)
        *cap = ncap;
    return p;
}

/* The entry for key, created at the end when absent, with its old value (if any) cleared.
 * NULL after recording a failure. */
static wkv *entry_for(gguf_writer *w, const char *key, gguf_vtype type)
{
    if (w->err.code)
        return NULL;
    if (!key || !*key) {
        fail(w, -EINVAL, "metadata key is empty");
        return NULL;
    }
    wkv *e = NULL;
    for (size_t i = 0; i < w->n_kv && !e; i++)
        if (strcmp(w->kv[i].key, key) == 0)
            e = &w->kv[i];
    if (!e) {
        char *k = strdup(key);
        wkv *kv = k ? grow(w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv) : NULL;
        if (!kv) {
            free(k);
            fail(w, -ENOMEM, "out of memory adding metadata key '%s'", key);
            return NULL;
        }
        w->kv = kv;
        e = &w->kv[w->n_kv++];
        *e = (wkv){.key = k};
    }
    e->type = type;
    e->val.len = 0;
    return e;
}

/* Turns the result of encoding a value (nonzero only when out of memory) into the writer's. */
static int stored(gguf_writer *w, const char *key, int rc)
{
    return rc ? fail(w, -ENOMEM, "out of memory storing metadata key '%s'", key) : 0;
}

int gguf_writer_set(gguf_writer *w, const char *key, gguf_vtype t, const void *value)
{
    size_t size = gguf_vtype_size(t);
    if (!size)
        return fail(w, -EINVAL, "metadata key '%s': %s is not a scalar type", key ? key : "", gguf_vtype_name(t));
    uint8_t one;
    if (t == GGUF_BOOL) { /* a C bool's representation is not fixed; the file's is 0/1 */
        one = *(const bool *)value ? 1 : 0;
        value = &one;
    }
    wkv *e = entry_for(w, key, t);
    return e ? stored(w, key, bytes_add(&e->val, value, size)) : w->err.code;
}

int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) { return gguf_writer_set(w, key, GGUF_U32, &v); }
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) { return gguf_writer_set(w, key, GGUF_I32, &v); }
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v) { return gguf_writer_set(w, key, GGUF_F32, &v); }
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) { return gguf_writer_set(w, key, GGUF_BOOL, &v); }

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *s)
{
    wkv *e = entry_for(w, key, GGUF_STR);
    return e ? stored(w, key, bytes_str(&e->val, s, strlen(s))) : w->err.code;
}

int gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem, uint64_t n, const void *data)
{
    size_t size = gguf_vtype_size(elem);
    uint64_t nbytes;
    if (!size)
        return fail(w, -EINVAL, "metadata key '%s': arrays of %s go through gguf_writer_set_arr_str or do not exist",
                    key ? key : "", gguf_vtype_name(elem));
    if (__builtin_mul_overflow(n, (uint64_t)size, &nbytes) || nbytes > SIZE_MAX)
        return fail(w, -ENOMEM, "metadata key '%s': array of %llu elements is too large", key ? key : "",
                    (unsigned long long)n);
    for (uint64_t i = 0; elem == GGUF_BOOL && i < n; i++)
        if (((const uint8_t *)data)[i] > 1)
            return fail(w, -EINVAL, "metadata key '%s': bool element %llu is %u, not 0 or 1", key ? key : "",
                        (unsigned long long)i, ((const uint8_t *)data)[i]);
    wkv *e = entry_for(w, key, GGUF_ARR);
    if (!e)
        return w->err.code;
    return stored(w, key, bytes_u32(&e->val, elem) || bytes_u64(&e->val, n) || bytes_add(&e->val, data, (size_t)nbytes));
}

int gguf_writer_set_arr_str(gguf_writer *w, const char *key, uint64_t n, const char *const *strs,
                            const uint64_t *lens)
{
    wkv *e = entry_for(w, key, GGUF_ARR);
    if (!e)
        return w->err.code;
    int rc = bytes_u32(&e->val, GGUF_STR) || bytes_u64(&e->val, n);
    for (uint64_t i = 0; i < n && !rc; i++)
        rc = bytes_str(&e->val, strs[i], lens ? lens[i] : strlen(strs[i]));
    return stored(w, key, rc);
}

/* Appends the encoding of kv's value (what follows its type tag on disk) to b. */
static int encode_copy(bytes *b, const gguf_kv *kv)
{
    switch (kv->type) {
    case GGUF_STR: return bytes_str(b, kv->v.s.ptr, kv->v.s.len);
    case GGUF_ARR: /* the reader's view covers the elements exactly as encoded, strings included */
        if (bytes_u32(b, kv->v.a.elem) || bytes_u64(b, kv->v.a.n))
            return -ENOMEM;
        return bytes_add(b, kv->v.a.data, (size_t)kv->v.a.nbytes);
    case GGUF_F32: { float f = (float)kv->v.f; return bytes_add(b, &f, 4); } /* exact: it was a float */
    case GGUF_F64: return bytes_add(b, &kv->v.f, 8);
    case GGUF_BOOL: { uint8_t v = kv->v.b; return bytes_add(b, &v, 1); }
    default: /* integers: v.u and v.i share their bits; the low bytes are the value */
        return bytes_add(b, &kv->v.u, gguf_vtype_size(kv->type));
    }
}

int gguf_writer_copy_kv(gguf_writer *w, const gguf_kv *kv)
{
    if (w->err.code)
        return w->err.code;
    if (kv->type >= GGUF_VTYPE_COUNT)
        return fail(w, -EINVAL, "metadata key '%.*s': unknown value type %u", (int)(kv->key.len > 64 ? 64 : kv->key.len),
                    kv->key.ptr, (unsigned)kv->type);
    if (memchr(kv->key.ptr, 0, kv->key.len)) /* keys are C strings here */
        return fail(w, -EINVAL, "metadata key '%s' holds a NUL byte", kv->key.ptr);
    char *key = strndup(kv->key.ptr, kv->key.len);
    if (!key)
        return fail(w, -ENOMEM, "out of memory copying a metadata key");
    wkv *e = entry_for(w, key, kv->type);
    int rc = e ? stored(w, key, encode_copy(&e->val, kv)) : w->err.code;
    free(key);
    return rc;
}

static int add_tensor(gguf_writer *w, const char *name, qt_type t, uint32_t n_dims, const uint64_t *ne,
                      const void *data, gguf_writer_fill_fn fill, void *ctx)
{
    if (w->err.code)
        return w->err.code;
    size_t name_len = name ? strlen(name) : 0;
    if (name_len == 0 || name_len >= GGUF_MAX_NAME)
        return fail(w, -EINVAL, "tensor name '%.40s' has length %zu, expected 1..%d", name ? name : "", name_len,
                    GGUF_MAX_NAME - 1);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return fail(w, -EINVAL, "tensor '%s' added twice", name);
    const qt_traits *tr = qt_get(t);
    if (!tr)
        return fail(w, -EINVAL, "tensor '%s': unknown type %d", name, (int)t);
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
        return fail(w, -EINVAL, "tensor '%s': n_dims is %u, expected 1..%d", name, n_dims, GGUF_MAX_DIMS);
    wtensor x = {.type = t, .n_dims = n_dims, .data = data, .fill = fill, .ctx = ctx};
    uint64_t nelems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        x.ne[d] = d < n_dims ? ne[d] : 1;
        if (x.ne[d] == 0 || x.ne[d] > INT64_MAX)
            return fail(w, -EINVAL, "tensor '%s': dimension %u is %llu, expected 1..INT64_MAX", name, d,
                        (unsigned long long)x.ne[d]);
        if (__builtin_mul_overflow(nelems, x.ne[d], &nelems) || nelems > INT64_MAX)
            return fail(w, -EINVAL, "tensor '%s': element count overflows", name);
    }
    x.n_rows = nelems / x.ne[0];
    if (x.ne[0] % tr->block_elems)
        return fail(w, -EINVAL, "tensor '%s': row length %llu is not a multiple of the %s block size %u", name,
                    (unsigned long long)x.ne[0], tr->name, tr->block_elems);
    if (__builtin_mul_overflow(x.ne[0] / tr->block_elems, (uint64_t)tr->block_bytes, &x.row_bytes) ||
        __builtin_mul_overflow(x.row_bytes, x.n_rows, &x.nbytes) || x.nbytes > INT64_MAX)
        return fail(w, -EINVAL, "tensor '%s': byte size overflows", name);
    wtensor *ts = (x.name = strdup(name)) ? grow(w->t, &w->cap_t, w->n_t, sizeof *w->t) : NULL;
    if (!ts) {
        free(x.name);
        return fail(w, -ENOMEM, "out of memory adding tensor '%s'", name);
    }
    w->t = ts;
    w->t[w->n_t++] = x;
    return 0;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, qt_type t, uint32_t n_dims, const uint64_t *ne,
                           const void *data)
{
    return add_tensor(w, name, t, n_dims, ne, data, NULL, NULL);
}

int gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, qt_type t, uint32_t n_dims,
                                const uint64_t *ne, gguf_writer_fill_fn fill, void *ctx)
{
    return add_tensor(w, name, t, n_dims, ne, NULL, fill, ctx);
}

/* ---- writing ------------------------------------------------------------------------ */

static uint64_t align_up(uint64_t x, uint32_t a) { return (x + a - 1) / a * a; }

static int alignment_of(const gguf_writer *w, uint32_t *out, err_info *ei)
{
    *out = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *e = &w->kv[i];
        if (strcmp(e->key, "general.alignment") != 0)
            continue;
        uint32_t a = 0;
        if (e->type == GGUF_U32)
            memcpy(&a, e->val.p, 4);
        if (e->type != GGUF_U32 || a == 0 || (a & (a - 1)) || a > MAX_ALIGNMENT)
            return err_set(ei, -EINVAL, "general.alignment must be a uint32 power of two up to %d (got %s %u)",
                           MAX_ALIGNMENT, gguf_vtype_name(e->type), a);
        *out = a;
    }
    return 0;
}

/* Header: magic, version, counts, metadata, tensor infos with their offsets, padding. */
static int encode_header(const gguf_writer *w, uint32_t align, bytes *h, err_info *ei)
{
    int rc = bytes_add(h, GGUF_MAGIC, 4) || bytes_u32(h, GGUF_WRITE_VERSION) || bytes_u64(h, w->n_t) ||
             bytes_u64(h, w->n_kv);
    for (size_t i = 0; i < w->n_kv && !rc; i++) {
        const wkv *e = &w->kv[i];
        rc = bytes_str(h, e->key, strlen(e->key)) || bytes_u32(h, e->type) || bytes_add(h, e->val.p, e->val.len);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_t && !rc; i++) {
        const wtensor *t = &w->t[i];
        rc = bytes_str(h, t->name, strlen(t->name)) || bytes_u32(h, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && !rc; d++)
            rc = bytes_u64(h, t->ne[d]);
        rc = rc || bytes_u32(h, t->type) || bytes_u64(h, offset);
        if (!rc && (t->nbytes > UINT64_MAX - align || offset > UINT64_MAX - align_up(t->nbytes, align)))
            return err_set(ei, -EINVAL, "tensor '%s': data section exceeds 2^64 bytes", t->name);
        offset += align_up(t->nbytes, align);
    }
    if (!rc) {
        size_t pad = (size_t)(align_up(h->len, align) - h->len);
        if (!(rc = bytes_reserve(h, pad))) {
            memset(h->p + h->len, 0, pad);
            h->len += pad;
        }
    }
    return rc ? err_set(ei, -ENOMEM, "out of memory encoding the GGUF header") : 0;
}

static int write_all(int fd, const void *buf, size_t n, const char *path, err_info *ei)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return err_set(ei, k < 0 ? -errno : -EIO, "%s: write failed: %s", path, k < 0 ? strerror(errno) : "no progress");
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int write_zeros(int fd, uint64_t n, const char *path, err_info *ei)
{
    static const uint8_t zeros[4096];
    int rc = 0;
    while (n && !rc) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        rc = write_all(fd, zeros, k, path, ei);
        n -= k;
    }
    return rc;
}

/* Rows per fill call: about GGUF_WRITER_CHUNK bytes, at least one row, at most all. */
static uint64_t chunk_rows(const wtensor *t)
{
    uint64_t rows = GGUF_WRITER_CHUNK / t->row_bytes;
    return rows == 0 ? 1 : rows < t->n_rows ? rows : t->n_rows;
}

/* Streams one tensor's bytes (then its padding): straight from a borrowed buffer, or chunk
 * by chunk through the staging buffer. */
static int write_tensor(int fd, const wtensor *t, uint8_t *stage, uint32_t align, const char *path, err_info *ei)
{
    int rc = 0;
    if (t->data) {
        rc = write_all(fd, t->data, (size_t)t->nbytes, path, ei);
    } else {
        uint64_t chunk = chunk_rows(t);
        for (uint64_t r = 0; r < t->n_rows && !rc; r += chunk) {
            uint64_t n = t->n_rows - r < chunk ? t->n_rows - r : chunk;
            if ((rc = t->fill(t->ctx, r, n, stage, ei)))
                break;
            rc = write_all(fd, stage, (size_t)(n * t->row_bytes), path, ei);
        }
    }
    return rc ? rc : write_zeros(fd, align_up(t->nbytes, align) - t->nbytes, path, ei);
}

/* Staging buffer size: the largest chunk of any filled tensor (0 when none is filled). */
static size_t stage_size(const gguf_writer *w)
{
    uint64_t cap = 0;
    for (size_t i = 0; i < w->n_t; i++)
        if (!w->t[i].data && chunk_rows(&w->t[i]) * w->t[i].row_bytes > cap)
            cap = chunk_rows(&w->t[i]) * w->t[i].row_bytes;
    return (size_t)cap; /* fits: add_tensor kept every tensor under INT64_MAX bytes */
}

/* Creates path.tmp.PID.N exclusively, mode 0666 minus the umask like any new file. */
static int open_temp(const char *path, char **tmp_out, int *fd_out, err_info *ei)
{
    static unsigned counter;
    size_t cap = strlen(path) + 48;
    char *tmp = malloc(cap);
    if (!tmp)
        return err_set(ei, -ENOMEM, "out of memory");
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(tmp, cap, "%s.tmp.%ld.%u", path, (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            *tmp_out = tmp;
            *fd_out = fd;
            return 0;
        }
        if (errno != EEXIST)
            break;
    }
    int rc = err_set(ei, -errno, "%s: cannot create a temporary file next to it: %s", path, strerror(errno));
    free(tmp);
    return rc;
}

int gguf_writer_write(gguf_writer *w, const char *path, err_info *ei)
{
    if (w->err.code) {
        if (ei)
            *ei = w->err;
        return w->err.code;
    }
    uint32_t align;
    bytes header = {0};
    uint8_t *stage = NULL;
    char *tmp = NULL;
    int fd = -1;
    int rc = alignment_of(w, &align, ei);
    if (rc || (rc = encode_header(w, align, &header, ei)))
        goto fail;
    size_t stage_cap = stage_size(w);
    if (stage_cap && !(stage = malloc(stage_cap))) {
        rc = err_set(ei, -ENOMEM, "out of memory for a %zu-byte staging buffer", stage_cap);
        goto fail;
    }
    if ((rc = open_temp(path, &tmp, &fd, ei)) || (rc = write_all(fd, header.p, header.len, tmp, ei)))
        goto fail;
    for (size_t i = 0; i < w->n_t && !rc; i++)
        rc = write_tensor(fd, &w->t[i], stage, align, tmp, ei);
    if (rc)
        goto fail;
    if (fsync(fd) != 0) {
        rc = err_set(ei, -errno, "%s: fsync failed: %s", tmp, strerror(errno));
        goto fail;
    }
    int close_rc = close(fd);
    fd = -1;
    if (close_rc != 0) {
        rc = err_set(ei, -errno, "%s: close failed: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = err_set(ei, -errno, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    free(tmp);
    free(stage);
    free(header.p);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(stage);
    free(header.p);
    return rc;
}
