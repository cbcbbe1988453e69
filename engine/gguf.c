/* gguf — see gguf.h. A bounds-checked cursor walks the header; every read either fits in
 * the bytes left or fails with a message naming what was being read. Nothing is allocated
 * before its count has been checked against the bytes that would have to back it. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qtype.h"

#define GGUF_MAGIC "GGUF"
/* Smallest on-disk footprint of one KV entry (key length, empty key, type, 1-byte value)
 * and one tensor info (name length, empty name, n_dims, one dim, type, offset): used to
 * refuse absurd counts before allocating. */
#define MIN_KV_BYTES (8 + 4 + 1)
#define MIN_TENSOR_BYTES (8 + 4 + 8 + 4 + 8)

struct gguf {
    const uint8_t *base;   /* whole file */
    size_t size;
    bool mapped;           /* base came from mmap and is ours to unmap */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    size_t n_kv;
    gguf_kv *kv;           /* n_kv entries, owned */
    size_t n_tensors;
    gguf_tensor *tensors;  /* n_tensors entries, owned */
};

typedef struct cursor {
    const uint8_t *p;
    size_t left;
    const uint8_t *base;   /* for offsets in messages */
    err_info *ei;
} cursor;

static uint64_t cur_offset(const cursor *c) { return (uint64_t)(c->p - c->base); }

static int take(cursor *c, void *dst, size_t n, const char *what)
{
    if (n > c->left)
        return err_set(c->ei, -ERR_FORMAT, "%s at offset %llu: needs %zu bytes, %zu left in file",
                       what, (unsigned long long)cur_offset(c), n, c->left);
    if (dst)
        memcpy(dst, c->p, n);
    c->p += n;
    c->left -= n;
    return 0;
}

static int take_u32(cursor *c, uint32_t *v, const char *what) { return take(c, v, 4, what); }
static int take_u64(cursor *c, uint64_t *v, const char *what) { return take(c, v, 8, what); }

static int take_str(cursor *c, gguf_str *s, const char *what)
{
    uint64_t len = 0;
    int rc = take_u64(c, &len, what);
    if (rc)
        return rc;
    if (len > c->left)
        return err_set(c->ei, -ERR_FORMAT, "%s at offset %llu: string length %llu exceeds the %zu bytes left",
                       what, (unsigned long long)cur_offset(c) - 8, (unsigned long long)len, c->left);
    s->ptr = (const char *)c->p;
    s->len = len;
    c->p += len;
    c->left -= (size_t)len;
    return 0;
}

size_t gguf_vtype_size(gguf_vtype t)
{
    static const uint8_t sizes[GGUF_VTYPE_COUNT] = {
        [GGUF_U8] = 1, [GGUF_I8] = 1, [GGUF_U16] = 2, [GGUF_I16] = 2, [GGUF_U32] = 4, [GGUF_I32] = 4,
        [GGUF_F32] = 4, [GGUF_BOOL] = 1, [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8,
    };
    return (unsigned)t < GGUF_VTYPE_COUNT ? sizes[t] : 0;
}

const char *gguf_vtype_name(uint32_t t)
{
    static const char *names[GGUF_VTYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string",
        "array", "uint64", "int64", "float64",
    };
    return t < GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

bool gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

/* Reads one scalar of fixed-size type t into kv->v. */
static int take_scalar(cursor *c, gguf_vtype t, gguf_kv *kv, const char *what)
{
    uint8_t raw[8] = {0};
    int rc = take(c, raw, gguf_vtype_size(t), what);
    if (rc)
        return rc;
    switch (t) {
    case GGUF_U8: kv->v.u = raw[0]; break;
    case GGUF_I8: kv->v.i = (int8_t)raw[0]; break;
    case GGUF_U16: { uint16_t x; memcpy(&x, raw, 2); kv->v.u = x; break; }
    case GGUF_I16: { int16_t x; memcpy(&x, raw, 2); kv->v.i = x; break; }
    case GGUF_U32: { uint32_t x; memcpy(&x, raw, 4); kv->v.u = x; break; }
    case GGUF_I32: { int32_t x; memcpy(&x, raw, 4); kv->v.i = x; break; }
    case GGUF_U64: memcpy(&kv->v.u, raw, 8); break;
    case GGUF_I64: memcpy(&kv->v.i, raw, 8); break;
    case GGUF_F32: { float x; memcpy(&x, raw, 4); kv->v.f = x; break; }
    case GGUF_F64: memcpy(&kv->v.f, raw, 8); break;
    case GGUF_BOOL:
        if (raw[0] > 1)
            return err_set(c->ei, -ERR_FORMAT, "%s: bool value %u is neither 0 nor 1", what, raw[0]);
        kv->v.b = raw[0];
        break;
    default: return err_set(c->ei, -ERR_FORMAT, "%s: not a scalar type", what);
    }
    return 0;
}

static int take_array(cursor *c, gguf_arr *a, const char *what)
{
    uint32_t elem;
    uint64_t n;
    int rc = take_u32(c, &elem, what);
    if (!rc)
        rc = take_u64(c, &n, what);
    if (rc)
        return rc;
    if (elem >= GGUF_VTYPE_COUNT || elem == GGUF_ARR)
        return err_set(c->ei, -ERR_FORMAT, "%s: array element type %u is %s", what, elem,
                       elem == GGUF_ARR ? "a nested array (unsupported)" : "unknown");
    a->elem = (gguf_vtype)elem;
    a->n = n;
    a->data = c->p;
    if (elem == GGUF_STR) {
        /* walk once so later indexing can trust every length */
        for (uint64_t i = 0; i < n; i++) {
            gguf_str s;
            if ((rc = take_str(c, &s, what))) {
                char detail[ERR_MSG_MAX];
                snprintf(detail, sizeof detail, "%s", c->ei ? c->ei->msg : "");
                return err_set(c->ei, rc, "string element %llu of %llu: %s", (unsigned long long)i,
                               (unsigned long long)n, detail);
            }
        }
    } else {
        uint64_t bytes;
        if (__builtin_mul_overflow(n, (uint64_t)gguf_vtype_size(a->elem), &bytes) || bytes > c->left)
            return err_set(c->ei, -ERR_FORMAT, "%s: array of %llu %s elements exceeds the %zu bytes left",
                           what, (unsigned long long)n, gguf_vtype_name(elem), c->left);
        take(c, NULL, (size_t)bytes, what);
    }
    a->nbytes = (uint64_t)(c->p - a->data);
    return 0;
}

void gguf_arr_strings(const gguf_arr *a, gguf_str *out)
{
    const uint8_t *p = a->data;
    for (uint64_t i = 0; i < a->n; i++) {
        uint64_t len;
        memcpy(&len, p, 8);
        out[i].ptr = (const char *)p + 8;
        out[i].len = len;
        p += 8 + len;
    }
}

/* Key text for messages: bounded and printable. */
static void key_for_msg(gguf_str s, char *buf, size_t cap)
{
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (s.ptr[i] >= 0x20 && s.ptr[i] < 0x7f) ? s.ptr[i] : '?';
    buf[n] = 0;
}

static bool str_same(gguf_str a, gguf_str b) { return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0; }

typedef struct named {
    gguf_str name;
    size_t index;
} named;

static int cmp_named(const void *a, const void *b)
{
    const named *x = a, *y = b;
    if (x->name.len != y->name.len)
        return x->name.len < y->name.len ? -1 : 1;
    int c = memcmp(x->name.ptr, y->name.ptr, x->name.len);
    return c ? c : (x->index < y->index ? -1 : x->index > y->index);
}

/* Refuses two equal names among n entries (`what` is "metadata key" or "tensor"). Sorting
 * keeps this O(n log n): a crafted file with a million tiny keys must not take minutes. */
static int check_unique(named *names, size_t n, const char *what, err_info *ei)
{
    qsort(names, n, sizeof *names, cmp_named);
    for (size_t i = 1; i < n; i++)
        if (str_same(names[i - 1].name, names[i].name)) {
            char key[64];
            key_for_msg(names[i].name, key, sizeof key);
            return err_set(ei, -ERR_FORMAT, "%s '%s' appears twice (entries %zu and %zu)", what, key,
                           names[i - 1].index, names[i].index);
        }
    return 0;
}

/* Both tables: keys and tensor names must each be unique. */
static int check_names_unique(const gguf *g, err_info *ei)
{
    size_t n = g->n_kv > g->n_tensors ? g->n_kv : g->n_tensors;
    named *names = malloc((n ? n : 1) * sizeof *names);
    if (!names)
        return err_set(ei, -ENOMEM, "out of memory checking %zu names", n);
    for (size_t i = 0; i < g->n_kv; i++)
        names[i] = (named){g->kv[i].key, i};
    int rc = check_unique(names, g->n_kv, "metadata key", ei);
    for (size_t i = 0; !rc && i < g->n_tensors; i++)
        names[i] = (named){g->tensors[i].name, i};
    if (!rc)
        rc = check_unique(names, g->n_tensors, "tensor", ei);
    free(names);
    return rc;
}

static int parse_kv(gguf *g, cursor *c)
{
    for (size_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        char what[96], key[64];
        snprintf(what, sizeof what, "metadata entry %zu key", i);
        int rc = take_str(c, &kv->key, what);
        if (rc)
            return rc;
        key_for_msg(kv->key, key, sizeof key);
        snprintf(what, sizeof what, "metadata key '%s'", key);
        uint32_t type;
        if ((rc = take_u32(c, &type, what)))
            return rc;
        if (type >= GGUF_VTYPE_COUNT)
            return err_set(c->ei, -ERR_FORMAT, "%s: unknown value type %u", what, type);
        kv->type = (gguf_vtype)type;
        if (type == GGUF_STR)
            rc = take_str(c, &kv->v.s, what);
        else if (type == GGUF_ARR)
            rc = take_array(c, &kv->v.a, what);
        else
            rc = take_scalar(c, kv->type, kv, what);
        if (rc)
            return rc;
    }
    return 0;
}

static int read_alignment(gguf *g, err_info *ei)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(g, "general.alignment");
    if (!kv)
        return 0;
    if (kv->type != GGUF_U32)
        return err_set(ei, -ERR_FORMAT, "metadata key 'general.alignment' has type %s, expected uint32",
                       gguf_vtype_name(kv->type));
    uint64_t a = kv->v.u;
    if (a == 0 || (a & (a - 1)) || a > (1u << 24))
        return err_set(ei, -ERR_FORMAT, "metadata key 'general.alignment' is %llu, expected a power of two up to 16 MiB",
                       (unsigned long long)a);
    g->alignment = (uint32_t)a;
    return 0;
}

static int parse_tensor_infos(gguf *g, cursor *c)
{
    for (size_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        char what[GGUF_MAX_NAME + 48], name[GGUF_MAX_NAME];
        snprintf(what, sizeof what, "tensor %zu name", i);
        int rc = take_str(c, &t->name, what);
        if (rc)
            return rc;
        if (t->name.len == 0 || t->name.len >= GGUF_MAX_NAME)
            return err_set(c->ei, -ERR_FORMAT, "tensor %zu: name length %llu is outside 1..%d", i,
                           (unsigned long long)t->name.len, GGUF_MAX_NAME - 1);
        key_for_msg(t->name, name, sizeof name);
        snprintf(what, sizeof what, "tensor '%s'", name);
        if ((rc = take_u32(c, &t->n_dims, what)))
            return rc;
        if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
            return err_set(c->ei, -ERR_FORMAT, "%s: n_dims is %u, expected 1..%d", what, t->n_dims, GGUF_MAX_DIMS);
        uint64_t nelems = 1;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d >= t->n_dims)
                continue;
            if ((rc = take_u64(c, &t->ne[d], what)))
                return rc;
            if (t->ne[d] == 0 || t->ne[d] > INT64_MAX)
                return err_set(c->ei, -ERR_FORMAT, "%s: dimension %u is %lld, expected a positive size", what, d,
                               (long long)t->ne[d]);
            if (__builtin_mul_overflow(nelems, t->ne[d], &nelems) || nelems > INT64_MAX)
                return err_set(c->ei, -ERR_FORMAT, "%s: element count overflows at dimension %u", what, d);
        }
        if ((rc = take_u32(c, &t->type, what)) || (rc = take_u64(c, &t->offset, what)))
            return rc;
        const qt_traits *tr = qt_get(t->type);
        if (!tr)
            return err_set(c->ei, -ERR_FORMAT, "%s: unknown tensor type %u", what, t->type);
        if (t->ne[0] % tr->block_elems)
            return err_set(c->ei, -ERR_FORMAT, "%s: row length %llu is not a multiple of the %s block size %u",
                           what, (unsigned long long)t->ne[0], tr->name, tr->block_elems);
        uint64_t rows = nelems / t->ne[0], row_bytes;
        if (__builtin_mul_overflow(t->ne[0] / tr->block_elems, (uint64_t)tr->block_bytes, &row_bytes) ||
            __builtin_mul_overflow(rows, row_bytes, &t->nbytes))
            return err_set(c->ei, -ERR_FORMAT, "%s: byte size overflows", what);
        if (t->offset % g->alignment)
            return err_set(c->ei, -ERR_FORMAT, "%s: data offset %llu is not a multiple of the alignment %u", what,
                           (unsigned long long)t->offset, g->alignment);
    }
    return 0;
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor's bytes must lie inside the data section and no two may overlap. */
static int check_tensor_data(gguf *g, err_info *ei)
{
    if (g->n_tensors == 0)
        return 0;
    if (g->data_offset > g->size)
        return err_set(ei, -ERR_FORMAT, "data section starts at %llu, past the end of the %zu-byte file",
                       (unsigned long long)g->data_offset, g->size);
    uint64_t data_size = g->size - g->data_offset;
    const gguf_tensor **order = malloc(g->n_tensors * sizeof *order);
    if (!order)
        return err_set(ei, -ENOMEM, "out of memory sorting %zu tensors", g->n_tensors);
    int rc = 0;
    for (size_t i = 0; i < g->n_tensors; i++)
        order[i] = &g->tensors[i];
    qsort(order, g->n_tensors, sizeof *order, cmp_tensor_offset);
    uint64_t end_prev = 0;
    const gguf_tensor *prev = NULL;
    for (size_t i = 0; i < g->n_tensors && !rc; i++) {
        const gguf_tensor *t = order[i];
        char name[GGUF_MAX_NAME];
        key_for_msg(t->name, name, sizeof name);
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            rc = err_set(ei, -ERR_FORMAT, "tensor '%s': data [%llu, +%llu) runs past the end of the file (data section holds %llu bytes)",
                         name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                         (unsigned long long)data_size);
        } else if (prev && t->offset < end_prev) {
            char pname[GGUF_MAX_NAME];
            key_for_msg(prev->name, pname, sizeof pname);
            rc = err_set(ei, -ERR_FORMAT, "tensor '%s': data at offset %llu overlaps tensor '%s'", name,
                         (unsigned long long)t->offset, pname);
        }
        end_prev = t->offset + t->nbytes;
        prev = t;
    }
    free(order);
    if (rc)
        return rc;
    for (size_t i = 0; i < g->n_tensors; i++)
        g->tensors[i].data = g->base + g->data_offset + g->tensors[i].offset;
    return 0;
}

static int parse(gguf *g, err_info *ei)
{
    cursor c = {g->base, g->size, g->base, ei};
    char magic[4];
    int rc = take(&c, magic, 4, "magic");
    if (rc)
        return err_set(ei, -ERR_FORMAT, "file is %zu bytes, too short to be GGUF", g->size);
    if (memcmp(magic, GGUF_MAGIC, 4) != 0)
        return err_set(ei, -ERR_FORMAT, "bad magic: not a GGUF file (first bytes %02x %02x %02x %02x)",
                       (uint8_t)magic[0], (uint8_t)magic[1], (uint8_t)magic[2], (uint8_t)magic[3]);
    if ((rc = take_u32(&c, &g->version, "version")))
        return rc;
    if (g->version == 1)
        return err_set(ei, -ERR_UNSUPPORTED, "GGUF version 1 is not supported; convert the model again");
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0 && g->version != 0)
            return err_set(ei, -ERR_UNSUPPORTED, "GGUF file is big-endian (version field %#x); only little-endian files are supported", g->version);
        return err_set(ei, -ERR_UNSUPPORTED, "GGUF version %u is not supported (2 and 3 are)", g->version);
    }
    uint64_t n_tensors, n_kv;
    if ((rc = take_u64(&c, &n_tensors, "tensor count")) || (rc = take_u64(&c, &n_kv, "metadata count")))
        return rc;
    if (n_kv > c.left / MIN_KV_BYTES)
        return err_set(ei, -ERR_FORMAT, "metadata count %llu cannot fit in the %zu bytes left",
                       (unsigned long long)n_kv, c.left);
    if (n_tensors > c.left / MIN_TENSOR_BYTES)
        return err_set(ei, -ERR_FORMAT, "tensor count %llu cannot fit in the %zu bytes left",
                       (unsigned long long)n_tensors, c.left);
    g->n_kv = (size_t)n_kv;
    g->n_tensors = (size_t)n_tensors;
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return err_set(ei, -ENOMEM, "out of memory for %zu metadata entries and %zu tensors", g->n_kv, g->n_tensors);
    if ((rc = parse_kv(g, &c)) || (rc = read_alignment(g, ei)) || (rc = parse_tensor_infos(g, &c)) ||
        (rc = check_names_unique(g, ei)))
        return rc;
    uint64_t hdr = cur_offset(&c);
    g->data_offset = (hdr + g->alignment - 1) / g->alignment * g->alignment;
    return check_tensor_data(g, ei);
}

static int open_common(gguf **out, gguf *g, err_info *ei)
{
    int rc = parse(g, ei);
    if (rc) {
        gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

int gguf_open_mem(gguf **out, const void *data, size_t size, err_info *ei)
{
    *out = NULL;
    gguf *g = calloc(1, sizeof *g);
    if (!g)
        return err_set(ei, -ENOMEM, "out of memory");
    g->base = data;
    g->size = size;
    return open_common(out, g, ei);
}

int gguf_open(gguf **out, const char *path, err_info *ei)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(ei, -errno, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int rc = S_ISREG(st.st_mode) ? -errno : -EINVAL;
        close(fd);
        return err_set(ei, rc, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return err_set(ei, -ERR_FORMAT, "%s: file is empty", path);
    }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (base == MAP_FAILED)
        return err_set(ei, -map_errno, "%s: mmap failed: %s", path, strerror(map_errno));
    gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(base, (size_t)st.st_size);
        return err_set(ei, -ENOMEM, "out of memory");
    }
    g->base = base;
    g->size = (size_t)st.st_size;
    g->mapped = true;
    int rc = open_common(out, g, ei);
    if (rc && ei) {
        /* prefix the path so the user knows which file was refused */
        char msg[ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s: %s", path, ei->msg);
        memcpy(ei->msg, msg, sizeof msg);
    }
    return rc;
}

void gguf_close(gguf *g)
{
    if (!g)
        return;
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g->kv);
    free(g->tensors);
    free(g);
}

uint32_t gguf_version(const gguf *g) { return g->version; }
uint32_t gguf_alignment(const gguf *g) { return g->alignment; }
const void *gguf_base(const gguf *g) { return g->base; }
size_t gguf_size(const gguf *g) { return g->size; }
uint64_t gguf_data_offset(const gguf *g) { return g->data_offset; }
size_t gguf_n_kv(const gguf *g) { return g->n_kv; }
const gguf_kv *gguf_kv_at(const gguf *g, size_t i) { return i < g->n_kv ? &g->kv[i] : NULL; }
size_t gguf_n_tensors(const gguf *g) { return g->n_tensors; }
const gguf_tensor *gguf_tensor_at(const gguf *g, size_t i) { return i < g->n_tensors ? &g->tensors[i] : NULL; }

const gguf_kv *gguf_find(const gguf *g, const char *key)
{
    for (size_t i = 0; i < g->n_kv; i++)
        if (gguf_str_eq(g->kv[i].key, key))
            return &g->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name)
{
    for (size_t i = 0; i < g->n_tensors; i++)
        if (gguf_str_eq(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

uint64_t gguf_tensor_nelems(const gguf_tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; /* checked not to overflow at open */
}

/* Finds key and checks its type against a predicate; shared by the typed getters. */
static int find_typed(const gguf *g, const char *key, bool (*ok)(gguf_vtype), const char *expected,
                      const gguf_kv **kv, err_info *ei)
{
    *kv = gguf_find(g, key);
    if (!*kv)
        return err_set(ei, -ERR_NOT_FOUND, "missing metadata key '%s'", key);
    if (!ok((*kv)->type))
        return err_set(ei, -ERR_TYPE, "metadata key '%s' has type %s, expected %s", key,
                       gguf_vtype_name((*kv)->type), expected);
    return 0;
}

static bool is_unsigned(gguf_vtype t) { return t == GGUF_U8 || t == GGUF_U16 || t == GGUF_U32 || t == GGUF_U64; }
static bool is_signed(gguf_vtype t) { return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64; }
static bool is_integer(gguf_vtype t) { return is_unsigned(t) || is_signed(t); }
static bool is_float(gguf_vtype t) { return t == GGUF_F32 || t == GGUF_F64; }
static bool is_bool(gguf_vtype t) { return t == GGUF_BOOL; }
static bool is_str(gguf_vtype t) { return t == GGUF_STR; }
static bool is_arr(gguf_vtype t) { return t == GGUF_ARR; }

int gguf_get_int(const gguf *g, const char *key, int64_t *out, err_info *ei)
{
    const gguf_kv *kv;
    int rc = find_typed(g, key, is_integer, "an integer", &kv, ei);
    if (rc)
        return rc;
    if (is_unsigned(kv->type) && kv->v.u > INT64_MAX)
        return err_set(ei, -ERR_RANGE, "metadata key '%s' = %llu is too large", key, (unsigned long long)kv->v.u);
    *out = is_unsigned(kv->type) ? (int64_t)kv->v.u : kv->v.i;
    return 0;
}

int gguf_get_u32(const gguf *g, const char *key, uint32_t *out, err_info *ei)
{
    int64_t v;
    int rc = gguf_get_int(g, key, &v, ei);
    if (rc)
        return rc;
    if (v < 0 || v > UINT32_MAX)
        return err_set(ei, -ERR_RANGE, "metadata key '%s' = %lld is outside 0..4294967295", key, (long long)v);
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_float(const gguf *g, const char *key, double *out, err_info *ei)
{
    const gguf_kv *kv;
    int rc = find_typed(g, key, is_float, "float32 or float64", &kv, ei);
    if (!rc)
        *out = kv->v.f;
    return rc;
}

int gguf_get_bool(const gguf *g, const char *key, bool *out, err_info *ei)
{
    const gguf_kv *kv;
    int rc = find_typed(g, key, is_bool, "bool", &kv, ei);
    if (!rc)
        *out = kv->v.b;
    return rc;
}

int gguf_get_str(const gguf *g, const char *key, gguf_str *out, err_info *ei)
{
    const gguf_kv *kv;
    int rc = find_typed(g, key, is_str, "string", &kv, ei);
    if (!rc)
        *out = kv->v.s;
    return rc;
}

int gguf_get_arr(const gguf *g, const char *key, gguf_vtype elem, gguf_arr *out, err_info *ei)
{
    const gguf_kv *kv;
    int rc = find_typed(g, key, is_arr, "array", &kv, ei);
    if (rc)
        return rc;
    if (kv->v.a.elem != elem)
        return err_set(ei, -ERR_TYPE, "metadata key '%s' is an array of %s, expected an array of %s", key,
                       gguf_vtype_name(kv->v.a.elem), gguf_vtype_name(elem));
    *out = kv->v.a;
    return 0;
}
