/* test_mstore — the shared-memory model store: a cold open copies the file and records its
 * SHA-256, a warm open attaches to the same segment, concurrent openers copy once, stale
 * segments (dead creator, empty, garbage, corrupted with verify) are replaced, a changed
 * file gets a new segment and the old one is removed, the memory budget and MemAvailable
 * refuse what does not fit, mlock reports its limit, a model keeps working after its file
 * is truncated (where a plain mapping dies of SIGBUS), and two processes running the same
 * model share its pages (PSS). A creator's prepare rearranges the copy once, everyone
 * learns that it did, the recorded hash stays the file's, and verify replaces such a copy by
 * a plain one; creating a copy removes layout 1's copies of the same file. Every file lives
 * in the run's temp dir, so the segments are this run's own; a fixture removes them even
 * when a test fails. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/model.h"
#include "engine/mstore.h"
#include "engine/sha256.h"
#include "tests/testutil.h"

#define SMALL_MODEL "llama-spm.q8_0.gguf"

/* AddressSanitizer replaces mlock with a no-op that always succeeds. */
#if defined(__SANITIZE_ADDRESS__)
#define MLOCK_IS_REAL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MLOCK_IS_REAL 0
#endif
#endif
#ifndef MLOCK_IS_REAL
#define MLOCK_IS_REAL 1
#endif

/* Every file a test makes, so the fixture can remove their segments after a failure. */
static const char *const test_files[] = {"m.gguf", "m2.gguf", "rand.bin", "big.bin", "sparse.bin", "new.bin"};

static void remove_leftovers(void)
{
    for (size_t i = 0; i < sizeof test_files / sizeof test_files[0]; i++) {
        const char *p = tmp_path(test_files[i]);
        if (access(p, F_OK) == 0) {
            mstore_remove(p, NULL);
            unlink(p);
        }
    }
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    uint8_t *buf = slurp(from, &n);
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
    close(fd);
    free(buf);
}

static const char *model_copy(const char *name)
{
    char from[1024];
    snprintf(from, sizeof from, "%s/models/%s", shared_dir(), SMALL_MODEL);
    const char *to = tmp_path(name);
    copy_file(from, to);
    return to;
}

/* mib MiB of seeded noise at path. */
static void random_file(const char *path, int mib, uint64_t seed)
{
    enum { MIB = 1 << 20 };
    uint64_t *buf = malloc(MIB);
    ck_assert_ptr_nonnull(buf);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    for (int m = 0; m < mib; m++) {
        for (size_t i = 0; i < MIB / 8; i++)
            buf[i] = rng_next(&seed);
        ck_assert_int_eq(write(fd, buf, MIB), MIB);
    }
    close(fd);
    free(buf);
}

static mstore *store_open_ok(const char *path, const mstore_opts *o)
{
    mstore *s = NULL;
    err_info ei = {0};
    int rc = mstore_open(&s, path, o, &ei);
    ck_assert_msg(rc == 0, "mstore_open %s: %d %s", path, rc, ei.msg);
    return s;
}

static void file_hash(const char *path, uint8_t out[SHA256_BYTES])
{
    err_info ei = {0};
    ck_assert_msg(sha256_file(path, out, &ei) == 0, "%s", ei.msg);
}

/* The segment's file under /dev/shm. */
static const char *seg_file(const char *name)
{
    static char p[128];
    snprintf(p, sizeof p, "/dev/shm%s", name);
    return p;
}

static bool seg_exists(const char *name) { return access(seg_file(name), F_OK) == 0; }

/* The copy is the file, byte for byte, and its recorded hash is the file's SHA-256. */
static void assert_copy_of(const mstore *s, const char *path)
{
    size_t n;
    uint8_t *want = slurp(path, &n), hash[SHA256_BYTES];
    ck_assert_uint_eq(mstore_size(s), n);
    ck_assert_msg(memcmp(mstore_data(s), want, n) == 0, "segment differs from %s", path);
    free(want);
    file_hash(path, hash);
    ck_assert_msg(memcmp(mstore_hash(s), hash, SHA256_BYTES) == 0, "recorded hash is not the file's SHA-256");
}

/* Logits of the last of a few fixed tokens. */
static float *run_model(model *m)
{
    model_session_params sp;
    model_session_params_default(&sp);
    sp.n_ctx = 32;
    model_session *ses;
    err_info ei = {0};
    ck_assert_msg(model_session_new(&ses, m, &sp, &ei) == 0, "%s", ei.msg);
    int32_t toks[] = {1, 450, 4996, 17354, 1701};
    int32_t n_vocab = model_hparams_of(m)->n_vocab;
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    ck_assert_msg(model_session_eval(ses, toks, 5, logits, false, NULL, &ei) == 0, "%s", ei.msg);
    model_session_free(ses);
    return logits;
}

START_TEST(cold_copy_then_warm_attach)
{
    const char *path = model_copy("m.gguf");
    mstore *cold = store_open_ok(path, NULL);
    ck_assert(mstore_created(cold));
    ck_assert_msg(!strncmp(mstore_name(cold), "/edgellm-m2-", 12), "name %s", mstore_name(cold));
    ck_assert_uint_eq((uintptr_t)mstore_data(cold) % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
    assert_copy_of(cold, path);
    struct stat st;
    ck_assert_int_eq(stat(seg_file(mstore_name(cold)), &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0644); /* the file's read bits, owner write */

    mstore *warm = store_open_ok(path, NULL);
    ck_assert(!mstore_created(warm));
    ck_assert_str_eq(mstore_name(warm), mstore_name(cold));
    ck_assert(memcmp(mstore_hash(warm), mstore_hash(cold), SHA256_BYTES) == 0);
    assert_copy_of(warm, path);

    /* the model over the segment computes exactly what it computes over the file */
    model *from_file, *from_shm;
    err_info ei = {0};
    ck_assert_msg(model_open(&from_file, path, &ei) == 0, "%s", ei.msg);
    ck_assert_msg(model_open_mem(&from_shm, mstore_data(warm), mstore_size(warm), &ei) == 0, "%s", ei.msg);
    float *a = run_model(from_file), *b = run_model(from_shm);
    ck_assert(memcmp(a, b, (size_t)model_hparams_of(from_file)->n_vocab * sizeof *a) == 0);
    free(a);
    free(b);
    model_close(from_file);
    model_close(from_shm);

    char name[MSTORE_NAME_MAX];
    snprintf(name, sizeof name, "%s", mstore_name(cold));
    mstore_close(cold);
    mstore_close(warm);
    ck_assert_msg(seg_exists(name), "closing removed the segment: the next process would start cold");
    ck_assert_int_eq(mstore_remove(path, &ei), 1);
    ck_assert(!seg_exists(name));
    unlink(path);
}
END_TEST

START_TEST(attach_only_never_copies)
{
    const char *path = model_copy("m.gguf");
    mstore_opts o;
    mstore_opts_default(&o);
    o.create = false;
    mstore *s = NULL;
    err_info ei = {0};
    ck_assert_int_eq(mstore_open(&s, path, &o, &ei), -ERR_NOT_FOUND);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(mstore_remove(path, &ei), 0); /* nothing was left behind */
    mstore_close(store_open_ok(path, NULL));
    s = store_open_ok(path, &o);
    ck_assert(!mstore_created(s));
    assert_copy_of(s, path);
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, &ei), 1);
    unlink(path);
}
END_TEST

/* ---- several processes --------------------------------------------------------------- */

typedef struct child_report {
    int rc;
    bool created, intact;
    uint8_t hash[SHA256_BYTES];
    char msg[ERR_MSG_MAX];
} child_report;

START_TEST(concurrent_openers_copy_once)
{
    enum { N = 4 };
    const char *path = tmp_path("rand.bin");
    random_file(path, 48, 11);
    size_t n;
    uint8_t *want = slurp(path, &n);
    int go[2], res[2];
    ck_assert(pipe(go) == 0 && pipe(res) == 0);
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) < 0) /* returns at EOF: everyone starts together */
                _exit(3);
            child_report r = {0};
            err_info ei = {0};
            mstore *s;
            r.rc = mstore_open(&s, path, NULL, &ei);
            if (r.rc == 0) {
                r.created = mstore_created(s);
                r.intact = mstore_size(s) == n && !memcmp(mstore_data(s), want, n);
                memcpy(r.hash, mstore_hash(s), SHA256_BYTES);
                mstore_close(s);
            }
            snprintf(r.msg, sizeof r.msg, "%s", ei.msg);
            _exit(write(res[1], &r, sizeof r) == sizeof r ? 0 : 2);
        }
    }
    close(go[0]);
    close(go[1]);
    close(res[1]);
    uint8_t hash[SHA256_BYTES];
    file_hash(path, hash);
    int created = 0;
    for (int i = 0; i < N; i++) {
        child_report r;
        ck_assert_int_eq(read(res[0], &r, sizeof r), sizeof r);
        ck_assert_msg(r.rc == 0, "child: %d %s", r.rc, r.msg);
        ck_assert_msg(r.intact, "a child saw a copy that differs from the file");
        ck_assert(memcmp(r.hash, hash, SHA256_BYTES) == 0);
        created += r.created;
    }
    close(res[0]);
    for (int i = 0; i < N; i++) {
        int status;
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ck_assert_int_eq(created, 1);
    err_info ei = {0};
    ck_assert_int_eq(mstore_remove(path, &ei), 1); /* and there was one segment */
    free(want);
    unlink(path);
}
END_TEST

/* The segment's name for path (learned from a copy that is then removed). */
static void name_of(const char *path, char name[MSTORE_NAME_MAX])
{
    mstore *s = store_open_ok(path, NULL);
    snprintf(name, MSTORE_NAME_MAX, "%s", mstore_name(s));
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
}

static bool creator_is_copying(const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return false;
    struct stat st;
    bool busy = fstat(fd, &st) == 0 && st.st_size > 0 && flock(fd, LOCK_SH | LOCK_NB) != 0;
    close(fd);
    return busy;
}

START_TEST(dead_creator_is_replaced)
{
    const char *path = tmp_path("big.bin");
    random_file(path, 128, 12);
    char name[MSTORE_NAME_MAX];
    name_of(path, name);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        mstore *s;
        _exit(mstore_open(&s, path, NULL, NULL) == 0 ? 0 : 1);
    }
    bool caught = false;
    for (int i = 0; i < 20000 && !caught; i++) {
        caught = creator_is_copying(name);
        if (!caught)
            nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    ck_assert_msg(caught && WIFSIGNALED(status), "the creator was not caught in the middle of its copy");
    ck_assert_msg(seg_exists(name), "the dead creator's segment should still be there");

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mstore *s = store_open_ok(path, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert(mstore_created(s));
    ck_assert_str_eq(mstore_name(s), name);
    assert_copy_of(s, path);
    /* no waiting for a creator that cannot make progress any more */
    ck_assert_int_lt(t1.tv_sec - t0.tv_sec, MSTORE_WAIT_MS_DEFAULT / 1000 / 2);
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

/* An object under our name that an edgellm creator did not finish: empty (its creator died
 * right after shm_open) or full of zeros. Both are replaced by a good copy. */
START_TEST(abandoned_objects_are_replaced)
{
    const char *path = model_copy("m.gguf");
    char name[MSTORE_NAME_MAX];
    name_of(path, name);
    for (int garbage = 0; garbage < 2; garbage++) {
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        ck_assert_int_ge(fd, 0);
        struct stat st;
        ck_assert_int_eq(stat(path, &st), 0);
        if (garbage)
            ck_assert_int_eq(ftruncate(fd, st.st_size + 65536), 0);
        close(fd);
        mstore *s = store_open_ok(path, NULL);
        ck_assert(mstore_created(s));
        assert_copy_of(s, path);
        mstore_close(s);
        ck_assert_int_eq(mstore_remove(path, NULL), 1);
    }
    unlink(path);
}
END_TEST

START_TEST(verify_catches_a_corrupted_copy)
{
    const char *path = model_copy("m.gguf");
    mstore *s = store_open_ok(path, NULL);
    char name[MSTORE_NAME_MAX];
    snprintf(name, sizeof name, "%s", mstore_name(s));
    mstore_close(s);
    /* flip the last byte of the copy (the data ends where the object ends) */
    int fd = shm_open(name, O_RDWR, 0);
    ck_assert_int_ge(fd, 0);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    uint8_t byte;
    ck_assert_int_eq(pread(fd, &byte, 1, st.st_size - 1), 1);
    byte ^= 0xff;
    ck_assert_int_eq(pwrite(fd, &byte, 1, st.st_size - 1), 1);
    close(fd);

    size_t n;
    uint8_t *want = slurp(path, &n);
    s = store_open_ok(path, NULL); /* without verify, identity alone is checked: attached as is */
    ck_assert(!mstore_created(s));
    ck_assert(memcmp(mstore_data(s), want, n) != 0);
    mstore_close(s);
    mstore_opts o;
    mstore_opts_default(&o);
    o.verify = true;
    s = store_open_ok(path, &o);
    ck_assert(mstore_created(s));
    assert_copy_of(s, path);
    mstore_close(s);
    s = store_open_ok(path, &o); /* an intact copy passes verification */
    ck_assert(!mstore_created(s));
    mstore_close(s);
    free(want);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

/* ---- prepare: the creator rearranges the copy ------------------------------------------ */

enum { REARRANGED = 64 }; /* bytes at the start of the copy that invert_head changes */
static int prepare_calls;  /* per test: each runs in a process of its own */

/* A stand-in for model_prepare_shared: inverts the first REARRANGED bytes. */
static int invert_head(void *data, size_t size, err_info *ei)
{
    (void)ei;
    prepare_calls++;
    ck_assert_uint_gt(size, REARRANGED);
    for (size_t i = 0; i < REARRANGED; i++)
        ((uint8_t *)data)[i] ^= 0xff;
    return 1;
}

static int leave_as_is(void *data, size_t size, err_info *ei)
{
    (void)data, (void)size, (void)ei;
    prepare_calls++;
    return 0;
}

/* Says it rearranged the copy but left it as it is: a copy that is marked rearranged yet
 * would pass verification. */
static int claim_rearranged(void *data, size_t size, err_info *ei)
{
    (void)data, (void)size, (void)ei;
    prepare_calls++;
    return 1;
}

static int refuse(void *data, size_t size, err_info *ei)
{
    (void)data;
    prepare_calls++;
    return err_set(ei, -ERR_UNSUPPORTED, "no faster layout for %zu bytes", size);
}

/* Default options with prepare set, and its call count reset. */
static mstore_opts prepare_opts(int (*prepare)(void *data, size_t size, err_info *ei))
{
    mstore_opts o;
    mstore_opts_default(&o);
    o.prepare = prepare;
    prepare_calls = 0;
    return o;
}

/* The copy is the file with its first REARRANGED bytes inverted, and its recorded hash is
 * still the file's SHA-256. */
static void assert_rearranged_copy_of(const mstore *s, const char *path)
{
    size_t n;
    uint8_t *want = slurp(path, &n), hash[SHA256_BYTES];
    for (size_t i = 0; i < REARRANGED; i++)
        want[i] ^= 0xff;
    ck_assert_uint_eq(mstore_size(s), n);
    ck_assert_msg(memcmp(mstore_data(s), want, n) == 0, "segment is not the rearranged %s", path);
    free(want);
    file_hash(path, hash);
    ck_assert_msg(memcmp(mstore_hash(s), hash, SHA256_BYTES) == 0, "recorded hash is not the file's SHA-256");
}

START_TEST(prepare_rearranges_the_copy_once)
{
    const char *path = model_copy("m.gguf");
    mstore_opts o = prepare_opts(invert_head);
    mstore *cold = store_open_ok(path, &o);
    ck_assert(mstore_created(cold) && mstore_prepared(cold));
    ck_assert_int_eq(prepare_calls, 1);
    assert_rearranged_copy_of(cold, path);

    mstore *warm = store_open_ok(path, &o); /* attaches: prepare is for the creator only */
    ck_assert(!mstore_created(warm) && mstore_prepared(warm));
    ck_assert_int_eq(prepare_calls, 1);
    assert_rearranged_copy_of(warm, path);
    mstore_close(warm);
    warm = store_open_ok(path, NULL); /* a process without prepare learns it too */
    ck_assert(!mstore_created(warm) && mstore_prepared(warm));
    assert_rearranged_copy_of(warm, path);
    mstore_close(warm);

    pid_t pid = fork(); /* and so does another process */
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        mstore *s;
        if (mstore_open(&s, path, &o, NULL))
            _exit(3);
        bool ok = !mstore_created(s) && mstore_prepared(s) && prepare_calls == 1 &&
                  !memcmp(mstore_data(s), mstore_data(cold), mstore_size(s));
        _exit(ok ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "another process: status %#x", status);
    mstore_close(cold);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

START_TEST(prepare_may_leave_the_copy_as_is)
{
    const char *path = model_copy("m.gguf");
    mstore_opts o = prepare_opts(leave_as_is);
    mstore *s = store_open_ok(path, &o);
    ck_assert(mstore_created(s) && !mstore_prepared(s));
    ck_assert_int_eq(prepare_calls, 1);
    assert_copy_of(s, path);
    mstore_close(s);
    s = store_open_ok(path, NULL);
    ck_assert(!mstore_created(s) && !mstore_prepared(s));
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

START_TEST(failing_prepare_fails_the_open)
{
    const char *path = model_copy("m.gguf");
    mstore_opts o = prepare_opts(refuse);
    mstore *s = NULL;
    err_info ei = {0};
    ck_assert_int_eq(mstore_open(&s, path, &o, &ei), -ERR_UNSUPPORTED);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(prepare_calls, 1);
    ck_assert_msg(strstr(ei.msg, "no faster layout for"), "message: %s", ei.msg);
    ck_assert_int_eq(mstore_remove(path, &ei), 0); /* the half-made copy went with it */
    s = store_open_ok(path, NULL);
    ck_assert(mstore_created(s));
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

/* A rearranged copy cannot match the file's hash: a verifying process replaces it by a copy
 * of the file as it is, and does not rearrange that one. */
START_TEST(verify_replaces_a_rearranged_copy)
{
    const char *path = model_copy("m.gguf");
    mstore_opts o = prepare_opts(invert_head);
    mstore *s = store_open_ok(path, &o);
    ck_assert(mstore_prepared(s));
    char name[MSTORE_NAME_MAX];
    snprintf(name, sizeof name, "%s", mstore_name(s));
    mstore_close(s);

    o.verify = true;
    s = store_open_ok(path, &o);
    ck_assert(mstore_created(s) && !mstore_prepared(s));
    ck_assert_int_eq(prepare_calls, 1);
    ck_assert_str_eq(mstore_name(s), name);
    assert_copy_of(s, path);
    mstore_close(s);
    o.verify = false; /* the plain copy serves a process with prepare as it is */
    s = store_open_ok(path, &o);
    ck_assert(!mstore_created(s) && !mstore_prepared(s));
    ck_assert_int_eq(prepare_calls, 1);
    mstore_close(s);

    /* the mark decides, not the hash: a marked copy whose bytes would pass is replaced too */
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    o.prepare = claim_rearranged;
    mstore_close(store_open_ok(path, &o));
    o.verify = true;
    s = store_open_ok(path, &o);
    ck_assert(mstore_created(s) && !mstore_prepared(s));
    ck_assert_int_eq(prepare_calls, 2);
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

/* ---- an upgrade from layout 1 ------------------------------------------------------------ */

/* Layout 1's header (mstore.c's seg_header before `prepared`): what an old copy starts with. */
typedef struct layout1_header {
    char magic[8];
    uint32_t layout, state;
    uint64_t data_offset, copied;
    int32_t creator_pid;
    uint32_t reserved;
    uint8_t sha256[SHA256_BYTES];
    uint64_t dev, ino, size;
    int64_t mtime_ns;
    char path[PATH_MAX];
} layout1_header;

/* A complete-looking layout-1 copy called name whose header names the file at real. */
static void make_layout1_copy(const char *name, const char *real)
{
    layout1_header h = {.magic = "EDGLLMSG", .layout = 1, .state = 2};
    snprintf(h.path, sizeof h.path, "%s", real);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    h.data_offset = (sizeof h + page - 1) / page * page;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)(h.data_offset + page)), 0);
    ck_assert_int_eq(pwrite(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    close(fd);
}

START_TEST(layout1_copies_of_the_file_are_removed)
{
    const char *path = model_copy("m.gguf");
    char name[MSTORE_NAME_MAX], real[PATH_MAX], old[MSTORE_NAME_MAX], other[MSTORE_NAME_MAX];
    name_of(path, name);
    ck_assert_ptr_nonnull(realpath(path, real));
    /* the same P (the second part of the name), layout 1 */
    const char *p = name + strlen("/edgellm-m2-");
    snprintf(old, sizeof old, "/edgellm-m1-%.16s-0123456789abcdef", p);
    snprintf(other, sizeof other, "/edgellm-m1-%.16s-fedcba9876543210", p);
    make_layout1_copy(old, real);
    make_layout1_copy(other, "/elsewhere/m.gguf"); /* P collided: another file's copy stays */

    /* look before asserting, so that a failure still removes the other file's copy */
    mstore *s = NULL;
    err_info ei = {0};
    int rc = mstore_open(&s, path, NULL, &ei);
    bool old_stayed = seg_exists(old), other_stayed = seg_exists(other);
    shm_unlink(other);
    ck_assert_msg(rc == 0, "mstore_open %s: %d %s", path, rc, ei.msg);
    ck_assert(mstore_created(s));
    ck_assert_str_eq(mstore_name(s), name);
    ck_assert_msg(!old_stayed, "the file's layout-1 copy %s was not removed", old);
    ck_assert_msg(other_stayed, "another file's layout-1 copy was removed");
    mstore_close(s);

    make_layout1_copy(old, real); /* and mstore_remove removes both layouts */
    ck_assert_int_eq(mstore_remove(path, NULL), 2);
    ck_assert(!seg_exists(old) && !seg_exists(name));
    unlink(path);
}
END_TEST

/* ---- the file changes ---------------------------------------------------------------- */

START_TEST(changed_file_gets_a_new_segment)
{
    const char *path = tmp_path("rand.bin"), *replacement = tmp_path("new.bin");
    random_file(path, 2, 21);
    size_t n;
    uint8_t *old_bytes = slurp(path, &n);
    mstore *v1 = store_open_ok(path, NULL);
    char name1[MSTORE_NAME_MAX];
    snprintf(name1, sizeof name1, "%s", mstore_name(v1));

    /* rewritten in place: same inode, new content and mtime */
    random_file(path, 2, 22);
    struct timespec times[2] = {{0, UTIME_OMIT}, {1700000000, 123456789}};
    ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
    mstore *v2 = store_open_ok(path, NULL);
    ck_assert(mstore_created(v2));
    ck_assert_str_ne(mstore_name(v2), name1);
    assert_copy_of(v2, path);
    ck_assert_msg(!seg_exists(name1), "the old version's segment was not removed");
    /* a process still using the old version keeps it intact */
    ck_assert(memcmp(mstore_data(v1), old_bytes, n) == 0);

    /* replaced by rename: a new inode */
    random_file(replacement, 2, 23);
    ck_assert_int_eq(rename(replacement, path), 0);
    mstore *v3 = store_open_ok(path, NULL);
    ck_assert(mstore_created(v3));
    ck_assert_str_ne(mstore_name(v3), mstore_name(v2));
    assert_copy_of(v3, path);
    ck_assert(!seg_exists(mstore_name(v2)));
    /* same path, so same first half of the name */
    ck_assert(!strncmp(mstore_name(v3), name1, strlen("/edgellm-m2-") + 16));
    mstore_close(v1);
    mstore_close(v2);
    mstore_close(v3);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    free(old_bytes);
    unlink(path);
}
END_TEST

/* ---- memory limits --------------------------------------------------------------------- */

START_TEST(budget_refuses_what_does_not_fit)
{
    const char *path = model_copy("m.gguf");
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    mstore_opts o;
    mstore_opts_default(&o);
    o.budget_bytes = (uint64_t)st.st_size - 1;
    mstore *s = NULL;
    err_info ei = {0};
    ck_assert_int_eq(mstore_open(&s, path, &o, &ei), -ENOMEM);
    ck_assert_msg(strstr(ei.msg, "budget") && strstr(ei.msg, "MiB"), "message: %s", ei.msg);
    ck_assert_int_eq(mstore_remove(path, &ei), 0);
    o.budget_bytes = (uint64_t)st.st_size;
    s = store_open_ok(path, &o);
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, &ei), 1);
    unlink(path);

    /* a (sparse) file larger than the memory left is refused before anything is copied */
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    unsigned long long avail_kb = 0;
    while (fgets(line, sizeof line, f) && sscanf(line, "MemAvailable: %llu kB", &avail_kb) != 1)
        ;
    fclose(f);
    ck_assert_uint_gt(avail_kb, 0);
    path = tmp_path("sparse.bin");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_eq(ftruncate(fd, (off_t)(avail_kb * 1024 + (1ull << 30))), 0);
    close(fd);
    ck_assert_int_eq(mstore_open(&s, path, NULL, &ei), -ENOMEM);
    ck_assert_msg(strstr(ei.msg, "MemAvailable"), "message: %s", ei.msg);
    ck_assert_int_eq(mstore_remove(path, &ei), 0);
    unlink(path);
}
END_TEST

/* Drops CAP_IPC_LOCK, which lets root lock memory beyond RLIMIT_MEMLOCK. */
static int drop_ipc_lock(void)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d))
        return -1;
    d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
    return (int)syscall(SYS_capset, &h, d);
}

START_TEST(mlock_locks_or_names_the_limit)
{
    const char *path = model_copy("m.gguf");
    mstore_opts o;
    mstore_opts_default(&o);
    o.mlock = true;
    pid_t pid = MLOCK_IS_REAL ? fork() : -2;
    ck_assert_int_ge(pid, MLOCK_IS_REAL ? 0 : -2);
    if (pid == 0) { /* a process whose limit is 64 KiB: mlock must fail, and say why */
        struct rlimit rl = {65536, 65536};
        mstore *s;
        err_info ei = {0};
        if (setrlimit(RLIMIT_MEMLOCK, &rl) || drop_ipc_lock())
            _exit(3);
        int rc = mstore_open(&s, path, &o, &ei);
        _exit(rc < 0 && strstr(ei.msg, "RLIMIT_MEMLOCK is 0.1 MiB") ? 0 : 1);
    }
    int status;
    if (MLOCK_IS_REAL) {
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "mlock over the limit: status %d", status);
    } else {
        mstore_close(store_open_ok(path, NULL)); /* the copy the child would have made */
    }
    /* the copy itself was fine, and within the limit locking works */
    struct rlimit rl;
    getrlimit(RLIMIT_MEMLOCK, &rl);
    struct stat st;
    stat(path, &st);
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= (rlim_t)st.st_size || geteuid() == 0) {
        mstore *s = store_open_ok(path, &o);
        ck_assert(!mstore_created(s));
        mstore_close(s);
    }
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

/* ---- the reasons for copying --------------------------------------------------------- */

START_TEST(truncated_file_does_not_break_a_shared_model)
{
    /* first, why: a model over a plain mapping of the file dies when the file is truncated */
    const char *plain = model_copy("m2.gguf");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        model *m;
        signal(SIGBUS, SIG_DFL); /* a sanitizer's handler would turn the signal into exit(1) */
        if (model_open(&m, plain, NULL) || truncate(plain, 0))
            _exit(3);
        free(run_model(m));
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "plain mapping: status %#x, expected SIGBUS",
                  status);
    unlink(plain);

    const char *path = model_copy("m.gguf");
    mstore *s = store_open_ok(path, NULL);
    model *m;
    err_info ei = {0};
    ck_assert_msg(model_open_mem(&m, mstore_data(s), mstore_size(s), &ei) == 0, "%s", ei.msg);
    float *before = run_model(m);
    ck_assert_int_eq(truncate(path, 0), 0);
    float *after = run_model(m);
    ck_assert(memcmp(before, after, (size_t)model_hparams_of(m)->n_vocab * sizeof *before) == 0);
    free(before);
    free(after);
    model_close(m);
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

/* Rss, Pss and the part of Rss mapped in 2 MiB pages (kB) of the mapping of /dev/shm/NAME in
 * process pid, from /proc/pid/smaps. */
static void mapping_memory(pid_t pid, const char *name, long *rss, long *pss, long *pmd)
{
    char p[64], line[512];
    snprintf(p, sizeof p, "/proc/%d/smaps", (int)pid);
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    bool in = false;
    *rss = *pss = *pmd = -1;
    while (fgets(line, sizeof line, f)) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        size_t len = strlen(line), want = strlen(seg_file(name));
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) /* a mapping's first line ends with its file */
            in = len >= want && !strcmp(line + len - want, seg_file(name));
        else if (in)
            sscanf(line, "Rss: %ld kB", rss), sscanf(line, "Pss: %ld kB", pss),
                sscanf(line, "ShmemPmdMapped: %ld kB", pmd);
    }
    fclose(f);
    ck_assert_msg(*rss >= 0 && *pss >= 0 && *pmd >= 0, "no mapping of %s in pid %d", name, (int)pid);
}

START_TEST(two_processes_share_the_pages)
{
    const char *path = model_copy("m.gguf");
    mstore_close(store_open_ok(path, NULL));
    int ready[2], done[2];
    ck_assert(pipe(ready) == 0 && pipe(done) == 0);
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            close(done[1]);
            mstore *s;
            model *m;
            char ok = 1, c;
            if (mstore_open(&s, path, NULL, NULL) || model_open_mem(&m, mstore_data(s), mstore_size(s), NULL))
                ok = 0;
            else
                free(run_model(m)); /* touches every weight */
            if (write(ready[1], &ok, 1) != 1 || read(done[0], &c, 1) < 0) /* hold the mapping until told */
                _exit(2);
            _exit(0);
        }
    }
    close(ready[1]);
    close(done[0]);
    for (int i = 0; i < 2; i++) {
        char ok = 0;
        ck_assert_int_eq(read(ready[0], &ok, 1), 1);
        ck_assert_msg(ok, "a child could not open the model");
    }
    mstore *s = store_open_ok(path, NULL);
    long rss[2], pss[2], pmd[2], weights_kb = (long)(mstore_size(s) / 1024);
    for (int i = 0; i < 2; i++) {
        mapping_memory(pids[i], mstore_name(s), &rss[i], &pss[i], &pmd[i]);
        /* each touched most of the model (all but the unused rows of token_embd), and is
         * charged half of what it touched. Where /dev/shm gives 2 MiB pages (mstore.h), the
         * segment's last one is mapped in part, in 4 KiB entries, and the kernel charges such
         * a page's entries from its average share, not each entry's: that page, at most
         * 2 MiB of what is mapped beside the 2 MiB entries, is allowed its own error. */
        const long partial = pmd[i] > 0 && rss[i] - pmd[i] < 2048 ? rss[i] - pmd[i] : 0;
        ck_assert_msg(rss[i] > weights_kb * 4 / 10, "rss %ld kB of %ld", rss[i], weights_kb);
        ck_assert_msg(labs(2 * pss[i] - rss[i]) <= rss[i] / 50 + 8 + 2 * partial,
                      "pid %d: rss %ld kB (%ld in 2 MiB entries), pss %ld kB", (int)pids[i], rss[i], pmd[i], pss[i]);
    }
    close(done[1]);
    for (int i = 0; i < 2; i++)
        waitpid(pids[i], NULL, 0);
    close(ready[0]);
    mstore_close(s);
    ck_assert_int_eq(mstore_remove(path, NULL), 1);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mstore");
    TCase *tc = tcase_create("mstore");
    tcase_set_timeout(tc, 300);
    tcase_add_unchecked_fixture(tc, NULL, remove_leftovers);
    tcase_add_test(tc, cold_copy_then_warm_attach);
    tcase_add_test(tc, attach_only_never_copies);
    tcase_add_test(tc, concurrent_openers_copy_once);
    tcase_add_test(tc, dead_creator_is_replaced);
    tcase_add_test(tc, abandoned_objects_are_replaced);
    tcase_add_test(tc, verify_catches_a_corrupted_copy);
    tcase_add_test(tc, prepare_rearranges_the_copy_once);
    tcase_add_test(tc, prepare_may_leave_the_copy_as_is);
    tcase_add_test(tc, failing_prepare_fails_the_open);
    tcase_add_test(tc, verify_replaces_a_rearranged_copy);
    tcase_add_test(tc, layout1_copies_of_the_file_are_removed);
    tcase_add_test(tc, changed_file_gets_a_new_segment);
    tcase_add_test(tc, budget_refuses_what_does_not_fit);
    tcase_add_test(tc, mlock_locks_or_names_the_limit);
    tcase_add_test(tc, truncated_file_does_not_break_a_shared_model);
    tcase_add_test(tc, two_processes_share_the_pages);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
