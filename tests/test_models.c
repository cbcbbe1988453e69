/* test_models — daemon/models.c on the reference models, without HTTP: naming (the default
 * model, the directory's files, a file added later, unknown names), loading on activation
 * with one started session at a time, the keep-alive sweep (never the default model, never a
 * leased or busy one), the memory budget (refusal, eviction of the least recently used),
 * retirement, and failed loads tried again after models_forget_failures. The test thread
 * plays the worker. Files are mapped (no_shm) except where the shared copies are the point. */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/models.h"
#include "daemon/sched.h"
#include "testutil.h"

static cfg conf;
static char dir[300];

static void teardown(void)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* in/NAME.gguf: a link to the reference model REF (its absolute path: a relative target
 * would be read from the link's directory). */
static void link_model(const char *in, const char *name, const char *ref)
{
    char shared[PATH_MAX], from[PATH_MAX + 64], to[512];
    ck_assert_ptr_nonnull(realpath(shared_dir(), shared));
    snprintf(from, sizeof from, "%s/models/%s.gguf", shared, ref);
    snprintf(to, sizeof to, "%s/%s.gguf", in, name);
    ck_assert_int_eq(symlink(from, to), 0);
}

/* tmp_dir/models with qwen (13.3 MB), llama (13.0 MB) and big (19.8 MB): links to the
 * reference models. */
static void setup(void)
{
    static const char *const links[][2] = {{"qwen", "qwen2-gpt2.q4_k_m"}, {"llama", "llama-spm.q4_k_m"},
                                           {"big", "llama-spm.q8_0"}};
    snprintf(dir, sizeof dir, "%s", tmp_path("models"));
    teardown(); /* what a failed test left */
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    for (size_t i = 0; i < 3; i++)
        link_model(dir, links[i][0], links[i][1]);
    err_info ei = {0};
    ck_assert_int_eq(cfg_load(&conf, 1, (char *[]){"edgellmd"}, &ei), 0);
    snprintf(conf.models_dir, sizeof conf.models_dir, "%s", dir);
    conf.no_shm = 1;
    conf.threads = 1;
    conf.ctx = 256;
}

static models *open_models(void)
{
    models *ms;
    err_info ei = {0};
    int rc = models_new(&ms, &conf, NULL, &ei);
    ck_assert_msg(rc == 0, "models_new: %s", ei.msg);
    return ms;
}

static models_entry *find(models *ms, const char *id)
{
    models_entry *e;
    err_info ei = {0};
    int rc = models_find(ms, id, &e, &ei);
    ck_assert_msg(rc == 0, "find %s: %s", id ? id : "(default)", ei.msg);
    return e;
}

static infer *activate(models *ms, models_entry *e)
{
    infer *in;
    err_info ei = {0};
    int rc = models_activate(ms, e, &in, NULL, &ei);
    ck_assert_msg(rc == 0, "activate %s: %s", models_entry_id(e), ei.msg);
    return in;
}

static models_state state(models *ms, const char *id) { return models_state_of(ms, find(ms, id), NULL, 0); }

START_TEST(names)
{
    snprintf(conf.model, sizeof conf.model, "qwen"); /* a name in the directory */
    models *ms = open_models();
    err_info ei = {0};
    models_entry *e;
    ck_assert_ptr_eq(find(ms, NULL), models_default(ms));
    ck_assert_ptr_eq(find(ms, ""), find(ms, "qwen"));
    ck_assert_ptr_eq(find(ms, "llama.gguf"), find(ms, "llama"));
    ck_assert_int_eq(models_find(ms, "nope", &e, &ei), -ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(ei.msg, "model 'nope' does not exist; available: qwen, big, llama"));
    ck_assert_ptr_null(e);
    link_model(dir, "late", "llama-spm.q4_0");
    ck_assert_str_eq(models_entry_id(find(ms, "late")), "late"); /* looked again */
    ck_assert(models_any(ms));
    models_free(ms);
    /* no default: the only model of a directory is the obvious one; several need a name */
    conf.model[0] = 0;
    ms = open_models();
    ck_assert_int_eq(models_find(ms, NULL, &e, &ei), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "'model' is required"));
    models_free(ms);
    char only[400];
    snprintf(only, sizeof only, "%s/only", dir);
    ck_assert_int_eq(mkdir(only, 0700), 0);
    link_model(only, "one", "llama-spm.q4_0");
    snprintf(conf.models_dir, sizeof conf.models_dir, "%s", only);
    ms = open_models();
    ck_assert_str_eq(models_entry_id(find(ms, NULL)), "one");
    models_free(ms);
    snprintf(conf.models_dir, sizeof conf.models_dir, "%s/missing", dir);
    ck_assert_int_eq(models_new(&ms, &conf, NULL, &ei), -ENOENT);
    ck_assert_ptr_nonnull(strstr(ei.msg, "not a directory"));
}
END_TEST

/* One started session at a time; switching keeps the previous model open. */
START_TEST(activate_switches_sessions)
{
    models *ms = open_models();
    ck_assert_int_eq(state(ms, "llama"), MODELS_UNLOADED);
    infer *llama = activate(ms, find(ms, "llama"));
    ck_assert(infer_started(llama));
    ck_assert_int_eq(state(ms, "llama"), MODELS_LOADED);
    ck_assert_ptr_eq(models_current(ms), find(ms, "llama"));
    infer *qwen = activate(ms, find(ms, "qwen"));
    ck_assert(infer_started(qwen));
    ck_assert(!infer_started(llama)); /* its session went; the model stays open */
    ck_assert_int_eq(state(ms, "llama"), MODELS_LOADED);
    ck_assert_ptr_eq(activate(ms, find(ms, "llama")), llama);
    ck_assert(!infer_started(qwen));
    models_free(ms);
}
END_TEST

/* Keep-alive: due models go at the sweep; the default one, a leased one and one with a job
 * waiting do not. */
START_TEST(keep_alive)
{
    snprintf(conf.model, sizeof conf.model, "qwen");
    models *ms = open_models();
    models_entry *def = find(ms, NULL), *llama = find(ms, "llama"), *big = find(ms, "big");
    activate(ms, def);
    activate(ms, llama);
    activate(ms, big);
    ck_assert(models_next_sweep(ms) > sched_now_ns() + 290 * 1000000000LL); /* 300 s from the loads */
    models_job_queued(ms, llama);
    models_job_done(ms, llama, 0);       /* "keep_alive": 0 */
    models_job_queued(ms, big);          /* still waiting */
    models_job_queued(ms, def);
    models_job_done(ms, def, 0);         /* the default model ignores it */
    ck_assert_int_le(models_next_sweep(ms), sched_now_ns());
    ck_assert_ptr_nonnull(models_lease(ms, llama, NULL));
    models_sweep(ms);
    ck_assert_int_eq(state(ms, "llama"), MODELS_LOADED); /* leased */
    models_unlease(ms, llama);
    models_sweep(ms);
    ck_assert_int_eq(state(ms, "llama"), MODELS_UNLOADED);
    ck_assert_ptr_null(models_lease(ms, llama, NULL));
    ck_assert_int_eq(state(ms, "big"), MODELS_LOADED);   /* a job waits for it */
    ck_assert_int_eq(state(ms, "qwen"), MODELS_LOADED);  /* the default */
    models_job_done(ms, big, -1);        /* for ever */
    ck_assert_int_eq(models_next_sweep(ms), INT64_MAX);
    models_job_queued(ms, big);
    models_job_done(ms, big, MODELS_KEEP_ALIVE_DEFAULT);
    int64_t next = models_next_sweep(ms);
    ck_assert(next > sched_now_ns() + 290 * 1000000000LL && next <= sched_now_ns() + 300 * 1000000000LL);
    models_free(ms);
}
END_TEST

typedef struct lease_hold {
    models *ms;
    models_entry *e;
} lease_hold;

static void *release_later(void *arg)
{
    lease_hold *h = arg;
    nanosleep(&(struct timespec){0, 200000000L}, NULL);
    models_unlease(h->ms, h->e);
    return NULL;
}

/* 16 MiB holds qwen or llama, not both, and never big. */
START_TEST(budget)
{
    conf.memory_budget_mb = 16;
    models *ms = open_models();
    err_info ei = {0};
    infer *in;
    ck_assert_int_eq(models_admit(ms, find(ms, "big"), &ei), -ENOMEM);
    ck_assert_ptr_nonnull(strstr(ei.msg, "model 'big' is 18.9 MiB, over the memory budget of 16.0 MiB"));
    ck_assert_int_eq(models_activate(ms, find(ms, "big"), &in, NULL, &ei), -ENOMEM);
    ck_assert_int_eq(state(ms, "big"), MODELS_FAILED);
    ck_assert_int_eq(models_admit(ms, find(ms, "llama"), &ei), 0);
    activate(ms, find(ms, "qwen"));
    activate(ms, find(ms, "llama"));
    ck_assert_int_eq(state(ms, "qwen"), MODELS_UNLOADED); /* made room */
    /* a connection thread reading llama: the eviction waits for its lease to end */
    lease_hold h = {ms, find(ms, "llama")};
    ck_assert_ptr_nonnull(models_lease(ms, h.e, NULL));
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, release_later, &h), 0);
    int64_t t0 = sched_now_ns();
    activate(ms, find(ms, "qwen"));
    ck_assert_int_ge(sched_now_ns() - t0, 150000000);
    pthread_join(t, NULL);
    ck_assert_int_eq(state(ms, "qwen"), MODELS_LOADED);
    ck_assert_int_eq(state(ms, "llama"), MODELS_UNLOADED);
    /* a failed load is remembered until a reload forgets it */
    ck_assert_int_eq(models_forget_failures(ms), 1);
    ck_assert_int_eq(state(ms, "big"), MODELS_UNLOADED);
    models_free(ms);
}
END_TEST

/* The mapped file changed under a loaded model: retired with the message, closed by the
 * sweep, refused by activate, and not revived by a reload. */
START_TEST(retire)
{
    models *ms = open_models();
    models_entry *e = find(ms, "llama");
    activate(ms, e);
    ck_assert(models_retire(ms, e, "the model file x was truncated"));
    ck_assert(!models_retire(ms, e, "again")); /* once */
    char msg[ERR_MSG_MAX];
    ck_assert_int_eq(models_state_of(ms, e, msg, sizeof msg), MODELS_RETIRED);
    ck_assert_str_eq(msg, "the model file x was truncated");
    ck_assert_ptr_null(models_lease(ms, e, NULL));
    ck_assert_int_le(models_next_sweep(ms), sched_now_ns());
    models_sweep(ms);
    ck_assert_int_eq(models_next_sweep(ms), INT64_MAX); /* closed */
    infer *in;
    err_info ei = {0};
    ck_assert_int_eq(models_activate(ms, e, &in, NULL, &ei), -ERR_IO);
    ck_assert_ptr_nonnull(strstr(ei.msg, "truncated"));
    ck_assert_int_eq(models_forget_failures(ms), 0);
    ck_assert_int_eq(models_state_of(ms, e, NULL, 0), MODELS_RETIRED);
    models_free(ms);
}
END_TEST

static int listed;
static void count_listed(void *ctx, const models_info *m)
{
    (void)ctx;
    ck_assert(m->bytes > 1000000);
    listed += m->state == MODELS_LOADED ? 100 : 1;
}

/* With the shared copies: the hash comes from the copy, and an unloaded model keeps it (the
 * next load is warm) until the budget needs its room, which removes it. */
START_TEST(shared_copies)
{
    conf.no_shm = 0;
    conf.memory_budget_mb = 16;
    models *ms = open_models();
    const uint8_t *sha = NULL;
    infer *in;
    err_info ei = {0};
    models_entry *llama = find(ms, "llama");
    ck_assert_int_eq(models_activate(ms, llama, &in, &sha, &ei), 0);
    ck_assert_ptr_nonnull(sha);
    ck_assert_ptr_nonnull(strstr(infer_source(in), "shared memory"));
    models_job_queued(ms, llama);
    models_job_done(ms, llama, 0);
    models_sweep(ms);
    ck_assert_int_eq(state(ms, "llama"), MODELS_UNLOADED);
    in = activate(ms, llama);
    ck_assert_str_eq(infer_source(in), "shared memory, attached (warm)");
    models_job_queued(ms, llama);
    models_job_done(ms, llama, 0);
    models_sweep(ms);
    activate(ms, find(ms, "qwen")); /* the budget wants llama's copy now */
    listed = 0;
    models_list(ms, count_listed, NULL);
    ck_assert_int_eq(listed, 102); /* qwen loaded, llama and big unloaded */
    in = activate(ms, llama);
    ck_assert_str_eq(infer_source(in), "shared memory, copied now (cold)");
    models_free(ms);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("models");
    TCase *tc = tcase_create("models");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, names);
    tcase_add_test(tc, activate_switches_sessions);
    tcase_add_test(tc, keep_alive);
    tcase_add_test(tc, budget);
    tcase_add_test(tc, retire);
    tcase_add_test(tc, shared_copies);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
