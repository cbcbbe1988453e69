/* mstore — see mstore.h for the layout and the protocol. The creator's exclusive flock is
 * what tells a live copy from an abandoned one: the kernel drops it when the creator dies,
 * however it dies, whereas its pid (recorded for messages) may be reused by then. Locks are
 * released explicitly: a mapping keeps the open file description, and so the lock, alive. */
#include "engine/mstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define SHM_DIR "/dev/shm"         /* where glibc keeps shm_open objects */
#define NAME_PREFIX "edgellm-m2-"  /* m2: MSTORE_LAYOUT */
#define OLD_PREFIX "edgellm-m1-"   /* layout 1's copies, removed with ours (remove_versions) */
static const char MAGIC[8] = {'E', 'D', 'G', 'L', 'L', 'M', 'S', 'G'};

enum {
    SEG_CREATING = 1,
    SEG_COMPLETE = 2,
    HASH_DIGITS = 16,                 /* hex digits of each half of the name */
    COPY_CHUNK = 4 << 20,             /* read() size: large enough for full readahead */
    POLL_MS = 10,                     /* how often a waiter looks at the creator's progress */
    EMPTY_STALE_MS = 1000,            /* an empty, unlocked object older than this was abandoned */
    MAX_STALE_ROUNDS = 8,             /* stale objects removed in one open before giving up */
};

/* What names a version of a file. Fixed-size and zero-filled, so it hashes reproducibly. */
typedef struct seg_identity {
    uint64_t dev, ino, size;
    int64_t mtime_ns;
    char path[PATH_MAX];              /* realpath, NUL-padded */
} seg_identity;

typedef struct seg_header {
    char magic[8];
    uint32_t layout;                  /* MSTORE_LAYOUT */
    uint32_t state;                   /* SEG_*: stored last by the creator (release) */
    uint64_t data_offset;             /* where the file's bytes start, a multiple of the page size */
    uint64_t copied;                  /* bytes copied so far: waiters watch it advance */
    int32_t creator_pid;              /* for messages only; the flock decides liveness */
    uint32_t prepared;                /* 1: the creator's prepare rearranged the bytes */
    uint8_t sha256[SHA256_BYTES];     /* of the file's bytes, before prepare; valid once complete */
    seg_identity id;
} seg_header;

struct mstore {
    void *base;                       /* the whole segment, read-only */
    size_t map_size;
    const uint8_t *data;              /* base + data_offset: the file's bytes, maybe rearranged */
    size_t size;
    uint8_t hash[SHA256_BYTES];
    bool created, prepared;
    char name[MSTORE_NAME_MAX];
};

/* What one look at the segment found; negative values are errors. */
enum { ATTACHED = 0, ABSENT, BUSY, STALE, LOST_RACE };

void mstore_opts_default(mstore_opts *o)
{
    memset(o, 0, sizeof *o);
    o->create = true;
}

static size_t header_bytes(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (sizeof(seg_header) + page - 1) / page * page;
}

static int64_t now_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mib(uint64_t bytes) { return bytes / 1048576.0; }

static int identity_of(int fd, const char *path, seg_identity *id, struct stat *st, err_info *ei)
{
    memset(id, 0, sizeof *id);
    if (fstat(fd, st) != 0)
        return err_set(ei, -errno, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st->st_mode))
        return err_set(ei, -EINVAL, "%s: not a regular file", path);
    if (st->st_size == 0)
        return err_set(ei, -ERR_FORMAT, "%s: file is empty", path);
    if (!realpath(path, id->path))
        return err_set(ei, -errno, "%s: %s", path, strerror(errno));
    id->dev = st->st_dev;
    id->ino = st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    return 0;
}

static bool same_version(const seg_identity *a, const seg_identity *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns;
}

/* The first HASH_DIGITS hex digits of SHA-256(n bytes at p). */
static void short_hash(const void *p, size_t n, char out[HASH_DIGITS + 1])
{
    uint8_t d[SHA256_BYTES];
    char hex[SHA256_HEX];
    sha256(p, n, d);
    sha256_hex(d, hex);
    memcpy(out, hex, HASH_DIGITS);
    out[HASH_DIGITS] = 0;
}

/* "edgellm-m2-P-" for the file at realpath: the prefix every version's name starts with. */
static void path_prefix(const char *real, char out[MSTORE_NAME_MAX])
{
    char p[HASH_DIGITS + 1];
    short_hash(real, strlen(real), p);
    snprintf(out, MSTORE_NAME_MAX, NAME_PREFIX "%s-", p);
}

static void segment_name(const seg_identity *id, char out[MSTORE_NAME_MAX])
{
    char prefix[MSTORE_NAME_MAX], v[HASH_DIGITS + 1];
    path_prefix(id->path, prefix);
    short_hash(id, sizeof *id, v);
    snprintf(out, MSTORE_NAME_MAX, "/%s%s", prefix, v);
}

static int mem_available(uint64_t *bytes)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -errno;
    char line[128];
    unsigned long long kb = 0;
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
    fclose(f);
    *bytes = (uint64_t)kb * 1024;
    return found ? 0 : -ENOENT;
}

/* Unlinks every other segment holding a version of the file at real (keep: a name to leave,
 * or NULL), layout 1's copies of it included: after an upgrade nothing else would remove
 * them before a reboot. Best effort: a segment another user owns stays. Returns how many
 * went. */
static int remove_versions(const char *real, const char *keep)
{
    char prefix[MSTORE_NAME_MAX], old[MSTORE_NAME_MAX];
    path_prefix(real, prefix);
    snprintf(old, sizeof old, OLD_PREFIX "%s", prefix + strlen(NAME_PREFIX)); /* the same P */
    DIR *d = opendir(SHM_DIR);
    if (!d)
        return -errno;
    int removed = 0;
    seg_header *h = malloc(sizeof *h);
    for (struct dirent *e; h && (e = readdir(d));) {
        char name[MSTORE_NAME_MAX + 1];
        if ((strncmp(e->d_name, prefix, strlen(prefix)) && strncmp(e->d_name, old, strlen(old))) ||
            strlen(e->d_name) >= MSTORE_NAME_MAX)
            continue;
        snprintf(name, sizeof name, "/%s", e->d_name);
        if (keep && !strcmp(name, keep))
            continue;
        int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
            continue;
        /* the prefix is a 64-bit hash: confirm the path before removing. Magic and path sit
         * where they did in layout 1, whose header differs only in its layout field */
        bool ours = pread(fd, h, sizeof *h, 0) == (ssize_t)sizeof *h && !memcmp(h->magic, MAGIC, sizeof MAGIC) &&
                    !strncmp(h->id.path, real, sizeof h->id.path);
        close(fd);
        if (ours && shm_unlink(name) == 0)
            removed++;
    }
    free(h);
    closedir(d);
    return h ? removed : -ENOMEM;
}

/* Unlinks name if it still names the object open as fd (another process may have replaced
 * it meanwhile, and that one must stay). */
static int remove_stale(const char *name, int fd, const char *why, err_info *ei)
{
    struct stat a, b;
    int again = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (again < 0)
        return errno == ENOENT ? STALE : err_set(ei, -errno, "shared memory %s: %s", name, strerror(errno));
    bool same = fstat(fd, &a) == 0 && fstat(again, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    close(again);
    if (same && shm_unlink(name) != 0 && errno != ENOENT)
        return err_set(ei, -errno, "shared memory %s is stale (%s) but cannot be removed: %s", name, why,
                       strerror(errno));
    return STALE;
}

/* Hashes the segment's copy again and compares with what the creator recorded. */
static bool copy_intact(const seg_header *h, const uint8_t *data)
{
    uint8_t d[SHA256_BYTES];
    sha256(data, h->id.size, d);
    return !memcmp(d, h->sha256, sizeof d);
}

/* Why the segment mapped at h (size bytes, unlocked) cannot serve as the copy of file
 * version id, or NULL when it can. */
static const char *unusable(const seg_header *h, uint64_t size, const seg_identity *id, bool verify)
{
    size_t hdr = header_bytes();
    if (memcmp(h->magic, MAGIC, sizeof MAGIC) || h->layout != MSTORE_LAYOUT || h->data_offset != hdr)
        return "not an edgellm model segment of this layout";
    if (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != SEG_COMPLETE)
        return "its creator died while copying";
    if (!same_version(&h->id, id) || strncmp(h->id.path, id->path, sizeof id->path))
        return "it holds another version of the file";
    if (size != hdr + id->size)
        return "its size does not match the file";
    if (verify && h->prepared)
        return "it was rearranged, and cannot be checked against the file";
    if (verify && !copy_intact(h, (const uint8_t *)h + hdr))
        return "its content hash does not match";
    return NULL;
}

/* One look at the segment called name: attach to it if it is a complete copy of the file
 * version id (filling s), else say whether to wait (creator at work), retry (stale object
 * removed) or create (absent). *copied reports the creator's progress while BUSY. */
static int try_attach(const char *name, const seg_identity *id, const mstore_opts *o, mstore *s, uint64_t *copied,
                      int *creator, err_info *ei)
{
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? ABSENT : err_set(ei, -errno, "shared memory %s: %s", name, strerror(errno));
    int rc;
    void *base = MAP_FAILED;
    struct stat st;
    size_t hdr = header_bytes();
    if (fstat(fd, &st) != 0) {
        rc = err_set(ei, -errno, "shared memory %s: %s", name, strerror(errno));
        goto done;
    }
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) { /* a creator is at work: report its progress */
        rc = errno == EWOULDBLOCK ? BUSY : err_set(ei, -errno, "shared memory %s: flock: %s", name, strerror(errno));
        seg_header h;
        size_t head = offsetof(seg_header, sha256); /* the fields up to the hash */
        if (rc == BUSY && (size_t)st.st_size >= hdr && pread(fd, &h, head, 0) == (ssize_t)head) {
            *copied = h.copied;
            *creator = h.creator_pid;
        }
        goto done;
    }
    if ((size_t)st.st_size < hdr) { /* the creator has not reserved the memory yet, or died first */
        int64_t age = now_ms(CLOCK_REALTIME) - ((int64_t)st.st_ctim.tv_sec * 1000 + st.st_ctim.tv_nsec / 1000000);
        rc = age < EMPTY_STALE_MS ? BUSY : remove_stale(name, fd, "empty", ei);
        goto done;
    }
    base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = err_set(ei, -errno, "shared memory %s: mmap: %s", name, strerror(errno));
        goto done;
    }
    const seg_header *h = base;
    const char *why = unusable(h, (uint64_t)st.st_size, id, o->verify);
    if (why) {
        rc = remove_stale(name, fd, why, ei);
        goto done;
    }
    s->base = base;
    s->map_size = (size_t)st.st_size;
    s->data = (const uint8_t *)base + hdr;
    s->size = id->size;
    memcpy(s->hash, h->sha256, sizeof s->hash);
    s->prepared = h->prepared;
    base = MAP_FAILED;
    rc = ATTACHED;
done:
    if (base != MAP_FAILED)
        munmap(base, (size_t)st.st_size);
    flock(fd, LOCK_UN); /* explicitly: a mapping keeps the open file, and with it the lock */
    close(fd);
    return rc;
}

/* The copy is hashed a little behind the reader, on a thread of its own: on an SD card the
 * read is the bottleneck, and hashing in its shadow makes the content hash nearly free. */
typedef struct hasher {
    pthread_mutex_t mu;
    pthread_cond_t more;
    const uint8_t *data;
    uint64_t ready;                   /* bytes copied so far, under mu */
    bool finished;                    /* no more will come, under mu */
    sha256_ctx sha;                   /* the hashing thread's alone until joined */
} hasher;

static void *hash_behind(void *arg)
{
    hasher *hs = arg;
    for (uint64_t done = 0;;) {
        pthread_mutex_lock(&hs->mu);
        while (hs->ready == done && !hs->finished)
            pthread_cond_wait(&hs->more, &hs->mu);
        uint64_t upto = hs->ready;
        pthread_mutex_unlock(&hs->mu);
        if (upto == done)
            return NULL;
        sha256_update(&hs->sha, hs->data + done, upto - done);
        done = upto;
    }
}

static void hasher_feed(hasher *hs, uint64_t ready, bool finished)
{
    pthread_mutex_lock(&hs->mu);
    hs->ready = ready;
    hs->finished = finished;
    pthread_cond_signal(&hs->more);
    pthread_mutex_unlock(&hs->mu);
}

/* Reads the file's id->size bytes into dst, publishing the count in *copied for waiters,
 * and puts their SHA-256 in digest. */
static int copy_file(int file_fd, uint8_t *dst, const seg_identity *id, uint64_t *copied, uint8_t digest[SHA256_BYTES],
                     err_info *ei)
{
    hasher hs = {.mu = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER, .data = dst};
    sha256_init(&hs.sha);
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, hash_behind, &hs);
    if (rc)
        return err_set(ei, -rc, "cannot start the hashing thread: %s", strerror(rc));
    /* sequential read-ahead; pages already copied are dropped from the page cache, so the
     * model does not sit in RAM twice (the copy is what everyone uses from now on) */
    posix_fadvise(file_fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint64_t off = 0;
    while (off < id->size && !rc) {
        size_t want = id->size - off < COPY_CHUNK ? (size_t)(id->size - off) : COPY_CHUNK;
        ssize_t n = pread(file_fd, dst + off, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? err_set(ei, -errno, "%s: read: %s", id->path, strerror(errno))
                       : err_set(ei, -ERR_IO, "%s: file shrank while being copied", id->path);
            break;
        }
        posix_fadvise(file_fd, (off_t)off, n, POSIX_FADV_DONTNEED);
        off += (uint64_t)n;
        hasher_feed(&hs, off, false);
        __atomic_store_n(copied, off, __ATOMIC_RELAXED);
    }
    hasher_feed(&hs, off, true);
    pthread_join(thread, NULL);
    if (!rc)
        sha256_final(&hs.sha, digest);
    return rc;
}

/* Allocates every page of the new segment (size total, mapped writable at base) before the
 * copy, so that a full /dev/shm is an error now and not a SIGBUS halfway through it, and
 * asks for 2 MiB pages. Decode reads every weight page once a token: in 4 KiB pages a
 * 600 MiB model is 150,000 TLB misses a token, and TinyLlama Q4_0 on 2 cores decoded at
 * 64-72 t/s from them against 71-76 from 2 MiB ones (same bandwidth). The kernel gives
 * them where the tmpfs allows: mounted huge=within_size or huge=always, or huge=advise with
 * this hint, which is why the pages are faulted in through the hinted mapping
 * (MADV_POPULATE_WRITE, Linux 5.14) rather than by posix_fallocate, which has no mapping
 * to take the hint from and remains the way on older kernels. Processes that attach later
 * map the 2 MiB pages as they are (mstore_huge_bytes tells). */
static int reserve(int fd, uint8_t *base, size_t total, const char *name, err_info *ei)
{
    madvise(base, total, MADV_HUGEPAGE); /* a hint: EINVAL where the kernel has no THP */
    int e = madvise(base, total, MADV_POPULATE_WRITE) == 0 ? 0 : errno;
    if (e == EINVAL)
        e = posix_fallocate(fd, 0, (off_t)total);
    if (e == EFAULT) /* a page populating could not get: what would have been a SIGBUS */
        e = ENOSPC;
    return e ? err_set(ei, -e, "shared memory %s: reserving %.1f MiB: %s", name, mib(total), strerror(e)) : 0;
}

/* Copies the file into the new segment fd (ours, locked exclusively), lets o->prepare
 * rearrange it, and publishes it. */
static int fill(int fd, const char *name, int file_fd, const seg_identity *id, mode_t file_mode, const mstore_opts *o,
                mstore *s, err_info *ei)
{
    size_t hdr = header_bytes(), total;
    if (__builtin_add_overflow(hdr, id->size, &total) || total > (size_t)SSIZE_MAX)
        return err_set(ei, -EFBIG, "%s: %.1f MiB does not fit the address space", id->path, mib(id->size));
    /* whoever may read the file may read its copy; only the owner may write */
    if (fchmod(fd, (file_mode & 0444) | 0600) != 0)
        return err_set(ei, -errno, "shared memory %s: fchmod: %s", name, strerror(errno));
    struct statvfs vfs;
    if (fstatvfs(fd, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < total)
        return err_set(ei, -ENOMEM, "%s needs %.1f MiB of shared memory but %s has %.1f MiB free (tmpfs size= limit)",
                       id->path, mib(total), SHM_DIR, mib((uint64_t)vfs.f_bavail * vfs.f_frsize));
    if (ftruncate(fd, (off_t)total) != 0)
        return err_set(ei, -errno, "shared memory %s: ftruncate: %s", name, strerror(errno));
    uint8_t *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return err_set(ei, -errno, "shared memory %s: mmap: %s", name, strerror(errno));
    int rc = reserve(fd, base, total, name, ei);
    if (rc) {
        munmap(base, total);
        return rc;
    }
    seg_header *h = (seg_header *)base;
    memcpy(h->magic, MAGIC, sizeof MAGIC);
    h->layout = MSTORE_LAYOUT;
    h->data_offset = hdr;
    h->creator_pid = (int32_t)getpid();
    h->id = *id;
    __atomic_store_n(&h->state, SEG_CREATING, __ATOMIC_RELEASE);
    rc = copy_file(file_fd, base + hdr, id, &h->copied, h->sha256, ei);
    seg_identity after;
    struct stat st;
    if (!rc && (identity_of(file_fd, id->path, &after, &st, ei) != 0 || !same_version(&after, id)))
        rc = err_set(ei, -ERR_IO, "%s: file changed while being copied", id->path);
    /* not for a verifying process: it wants a copy it can check against the file's hash */
    if (!rc && o->prepare && !o->verify) {
        int changed = o->prepare(base + hdr, id->size, ei);
        h->prepared = changed > 0;
        rc = changed < 0 ? changed : 0;
    }
    if (rc) {
        munmap(base, total);
        return rc;
    }
    __atomic_store_n(&h->state, SEG_COMPLETE, __ATOMIC_RELEASE);
    mprotect(base, total, PROT_READ); /* a stray write must not corrupt what others share */
    s->base = base;
    s->map_size = total;
    s->data = base + hdr;
    s->size = id->size;
    memcpy(s->hash, h->sha256, sizeof s->hash);
    s->created = true;
    s->prepared = h->prepared;
    return 0;
}

/* Becomes the creator of name if nobody else is (LOST_RACE otherwise) and fills it. */
static int create(const char *name, int file_fd, const seg_identity *id, mode_t file_mode, const mstore_opts *o,
                  mstore *s, err_info *ei)
{
    uint64_t avail = 0;
    if (mem_available(&avail) == 0 && id->size > avail)
        return err_set(ei, -ENOMEM, "%s needs %.1f MiB of memory but only %.1f MiB is available (MemAvailable)",
                       id->path, mib(id->size), mib(avail));
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? LOST_RACE : err_set(ei, -errno, "shared memory %s: %s", name, strerror(errno));
    int rc;
    while ((rc = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    rc = rc ? err_set(ei, -errno, "shared memory %s: flock: %s", name, strerror(errno))
            : fill(fd, name, file_fd, id, file_mode, o, s, ei);
    if (rc)
        shm_unlink(name);
    else
        remove_versions(id->path, name);
    flock(fd, LOCK_UN); /* our mapping would otherwise hold it until mstore_close */
    close(fd);
    return rc;
}

static int lock_in_ram(mstore *s, err_info *ei)
{
    if (mlock(s->data, s->size) == 0)
        return 0;
    int e = errno;
    struct rlimit rl = {0};
    getrlimit(RLIMIT_MEMLOCK, &rl);
    char limit[32] = "unlimited";
    if (rl.rlim_cur != RLIM_INFINITY)
        snprintf(limit, sizeof limit, "%.1f MiB", mib(rl.rlim_cur));
    return err_set(ei, -e, "mlock of %.1f MiB failed: %s (RLIMIT_MEMLOCK is %s; raise it, e.g. LimitMEMLOCK=infinity)",
                   mib(s->size), strerror(e), limit);
}

int mstore_open(mstore **out, const char *path, const mstore_opts *o, err_info *ei)
{
    *out = NULL;
    mstore_opts def;
    if (!o) {
        mstore_opts_default(&def);
        o = &def;
    }
    mstore *s = calloc(1, sizeof *s);
    seg_identity *id = malloc(sizeof *id);
    int rc = 0, file_fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (!s || !id) {
        rc = err_set(ei, -ENOMEM, "out of memory");
        goto fail;
    }
    if (file_fd < 0) {
        rc = err_set(ei, -errno, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if ((rc = identity_of(file_fd, path, id, &st, ei)))
        goto fail;
    if (o->budget_bytes && id->size > o->budget_bytes) {
        rc = err_set(ei, -ENOMEM, "%s is %.1f MiB, over the memory budget of %.1f MiB", path, mib(id->size),
                     mib(o->budget_bytes));
        goto fail;
    }
    segment_name(id, s->name);
    int wait_ms = o->wait_ms > 0 ? o->wait_ms : MSTORE_WAIT_MS_DEFAULT, stale_rounds = 0, creator = 0;
    uint64_t copied = 0, last_copied = UINT64_MAX;
    int64_t last_progress = now_ms(CLOCK_MONOTONIC);
    for (;;) {
        rc = try_attach(s->name, id, o, s, &copied, &creator, ei);
        if (rc == ABSENT)
            rc = o->create ? create(s->name, file_fd, id, st.st_mode, o, s, ei)
                           : err_set(ei, -ERR_NOT_FOUND, "%s has no shared copy yet", path);
        if (rc == ATTACHED || rc < 0)
            break;
        if (rc == STALE && ++stale_rounds > MAX_STALE_ROUNDS) {
            rc = err_set(ei, -ERR_BUSY, "shared memory %s: found stale %d times in a row", s->name, stale_rounds);
            break;
        }
        if (rc != BUSY)
            continue; /* stale object removed, or another process won the race to create */
        if (copied != last_copied) {
            last_copied = copied;
            last_progress = now_ms(CLOCK_MONOTONIC);
        } else if (now_ms(CLOCK_MONOTONIC) - last_progress > wait_ms) {
            rc = err_set(ei, -ERR_TIMEOUT, "shared memory %s: process %d has copied %.1f of %.1f MiB and made no "
                         "progress for %d ms", s->name, creator, mib(copied), mib(id->size), wait_ms);
            break;
        }
        nanosleep(&(struct timespec){0, POLL_MS * 1000000L}, NULL);
    }
    if (rc == 0 && o->mlock)
        rc = lock_in_ram(s, ei);
    if (rc)
        goto fail;
    close(file_fd);
    free(id);
    *out = s;
    return 0;
fail:
    if (file_fd >= 0)
        close(file_fd);
    free(id);
    mstore_close(s);
    return rc;
}

void mstore_close(mstore *s)
{
    if (!s)
        return;
    if (s->base)
        munmap(s->base, s->map_size);
    free(s);
}

const void *mstore_data(const mstore *s) { return s->data; }
size_t mstore_size(const mstore *s) { return s->size; }
const uint8_t *mstore_hash(const mstore *s) { return s->hash; }
bool mstore_created(const mstore *s) { return s->created; }
bool mstore_prepared(const mstore *s) { return s->prepared; }
const char *mstore_name(const mstore *s) { return s->name; }

int64_t mstore_huge_bytes(const mstore *s)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -errno;
    const uintptr_t lo = (uintptr_t)s->base, hi = lo + s->map_size;
    char line[512];
    bool ours = false; /* inside an entry of the segment (mlock splits it in two) */
    unsigned long long total_kb = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long start, end, kb;
        if (sscanf(line, "%llx-%llx ", &start, &end) == 2) /* an entry's first line */
            ours = start < hi && end > lo;
        else if (ours && sscanf(line, "ShmemPmdMapped: %llu kB", &kb) == 1)
            total_kb += kb;
    }
    fclose(f);
    return (int64_t)total_kb * 1024;
}

int mstore_remove(const char *path, err_info *ei)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        return err_set(ei, -errno, "%s: %s", path, strerror(errno));
    int n = remove_versions(real, NULL);
    return n < 0 ? err_set(ei, n, "%s: %s", SHM_DIR, strerror(-n)) : n;
}
