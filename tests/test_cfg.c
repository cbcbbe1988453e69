/* test_cfg — config/cfg.c: defaults, flags, environment, JSON file, precedence, and that
 * every bad value is refused with a message naming where it came from; --check-config's
 * explanations, and which settings a reload (SIGHUP) may change. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/cfg.h"

static int load(cfg *c, err_info *ei, int argc, char **argv)
{
    memset(ei, 0, sizeof *ei);
    return cfg_load(c, argc, argv, ei);
}

#define ARGV(...) (char *[]){"edgellmd", __VA_ARGS__}
#define ARGC(...) (int)(sizeof((char *[]){"edgellmd", __VA_ARGS__}) / sizeof(char *))
#define LOAD(c, ei, ...) load(c, ei, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static void clear_env(void)
{
    unsetenv("EDGELLM_PORT");
    unsetenv("EDGELLM_QUEUE");
    unsetenv("EDGELLM_CONFIG");
    unsetenv("EDGELLM_CHAT_TEMPLATE");
    unsetenv("EDGELLM_NO_CACHE");
    unsetenv("EDGELLM_OFFLOAD_MODE");
}

START_TEST(defaults)
{
    cfg c;
    err_info ei;
    clear_env();
    ck_assert_int_eq(load(&c, &ei, 1, (char *[]){"edgellmd"}), 0);
    ck_assert_str_eq(c.host, "127.0.0.1");
    ck_assert_int_eq(c.port, 8080);
    ck_assert_int_eq(c.queue, 16);
    ck_assert_int_eq(c.body_limit, 1 << 20);
    ck_assert_str_eq(c.model, "");
    ck_assert_str_eq(c.socket_path, "");
    ck_assert_int_eq(c.socket_mode, 0660);
}
END_TEST

START_TEST(flags_both_spellings)
{
    cfg c;
    err_info ei;
    clear_env();
    ck_assert_int_eq(LOAD(&c, &ei, "--model", "m.gguf", "--port=0", "--queue", "3", "--socket=/tmp/x.sock",
                          "--socket-mode", "600", "--body-limit", "3000000000", "--chat-template", "llama3"),
                     0);
    ck_assert_str_eq(c.model, "m.gguf");
    ck_assert_int_eq(c.port, 0);
    ck_assert_int_eq(c.queue, 3);
    ck_assert_str_eq(c.socket_path, "/tmp/x.sock");
    ck_assert_int_eq(c.socket_mode, 0600);
    ck_assert_int_eq(c.body_limit, 3000000000LL);
    ck_assert_str_eq(c.chat_template, "llama3");
}
END_TEST

START_TEST(bad_flags_name_the_flag)
{
    cfg c;
    err_info ei;
    clear_env();
    ck_assert_int_eq(LOAD(&c, &ei, "--port", "eighty"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "--port"));
    ck_assert_int_eq(LOAD(&c, &ei, "--port", "70000"), -ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(ei.msg, "--port"));
    ck_assert_int_eq(LOAD(&c, &ei, "--queue", "-1"), -ERR_RANGE);
    ck_assert_int_eq(LOAD(&c, &ei, "--threads", "4x"), -EINVAL);
    ck_assert_int_eq(LOAD(&c, &ei, "--bogus", "1"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "--bogus"));
    ck_assert_int_eq(LOAD(&c, &ei, "--model"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "needs a value"));
    ck_assert_int_eq(LOAD(&c, &ei, "model.gguf"), -EINVAL);
    ck_assert_int_eq(LOAD(&c, &ei, "--socket-mode", "999"), -EINVAL); /* not octal */
    char long_path[200];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = 0;
    ck_assert_int_eq(LOAD(&c, &ei, "--socket", long_path), -ERR_RANGE);
    ck_assert_int_eq(LOAD(&c, &ei, "--host", "", "--socket", ""), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "nothing to listen on"));
}
END_TEST

START_TEST(env_between_file_and_flags)
{
    cfg c;
    err_info ei;
    clear_env();
    setenv("EDGELLM_PORT", "9000", 1);
    setenv("EDGELLM_CHAT_TEMPLATE", "gemma", 1);
    ck_assert_int_eq(LOAD(&c, &ei, "--queue", "2"), 0);
    ck_assert_int_eq(c.port, 9000);
    ck_assert_str_eq(c.chat_template, "gemma");
    ck_assert_int_eq(LOAD(&c, &ei, "--port", "9001"), 0);
    ck_assert_int_eq(c.port, 9001);
    setenv("EDGELLM_QUEUE", "lots", 1);
    ck_assert_int_eq(LOAD(&c, &ei, "--port", "1"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "EDGELLM_QUEUE"));
    clear_env();
}
END_TEST

static char *write_file(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/test_cfg_XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

START_TEST(json_file)
{
    cfg c;
    err_info ei;
    clear_env();
    char *path = write_file("{\"port\": 7000, \"queue\": 5, \"chat_template\": \"llama3\", \"socket_mode\": 384,"
                            " \"model\": \"/m/x.gguf\", \"threads\": \"2\"}");
    ck_assert_int_eq(LOAD(&c, &ei, "--config", path), 0);
    ck_assert_int_eq(c.port, 7000);
    ck_assert_int_eq(c.queue, 5);
    ck_assert_int_eq(c.threads, 2);
    ck_assert_int_eq(c.socket_mode, 0600); /* JSON numbers are the value itself (384 = 0600) */
    ck_assert_str_eq(c.model, "/m/x.gguf");
    /* environment beats the file, flags beat both */
    setenv("EDGELLM_PORT", "7001", 1);
    ck_assert_int_eq(LOAD(&c, &ei, "--config", path, "--queue", "6"), 0);
    ck_assert_int_eq(c.port, 7001);
    ck_assert_int_eq(c.queue, 6);
    clear_env();
    /* the file can also come from EDGELLM_CONFIG */
    setenv("EDGELLM_CONFIG", path, 1);
    ck_assert_int_eq(LOAD(&c, &ei, "--threads", "1"), 0);
    ck_assert_int_eq(c.port, 7000);
    clear_env();
    unlink(path);
}
END_TEST

START_TEST(json_file_errors)
{
    cfg c;
    err_info ei;
    clear_env();
    struct {
        const char *text;
        int code;
        const char *needle;
    } cases[] = {
        {"{\"prot\": 1}", -EINVAL, "\"prot\""},
        {"{\"port\": \"x\"}", -EINVAL, "\"port\""},
        {"{\"port\": 1.5}", -EINVAL, "\"port\""},
        {"{\"port\": true}", -ERR_TYPE, "\"port\""},
        {"{\"model\": 3}", -ERR_TYPE, "\"model\""},
        {"{\"queue\": 100000}", -ERR_RANGE, "\"queue\""},
        /* beyond any integer type: refused before the (undefined) conversion */
        {"{\"port\": 1e300}", -ERR_RANGE, "\"port\": 1e+300 is out of range"},
        {"{\"body_limit\": -1e19}", -ERR_RANGE, "out of range"},
        {"[1,2]", -ERR_FORMAT, "not a JSON object"},
        {"{\"port\": ", -ERR_FORMAT, "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_file(cases[i].text);
        ck_assert_int_eq(LOAD(&c, &ei, "--config", path), cases[i].code);
        ck_assert_msg(strstr(ei.msg, cases[i].needle), "case %zu: '%s'", i, ei.msg);
        unlink(path);
    }
    ck_assert_int_eq(LOAD(&c, &ei, "--config", "/nonexistent/edgellm.json"), -ENOENT);
    ck_assert_ptr_nonnull(strstr(ei.msg, "/nonexistent/edgellm.json"));
}
END_TEST

/* --no-cache takes no value; enums take their names; both also come from env and JSON. */
START_TEST(booleans_and_choices)
{
    cfg c;
    err_info ei;
    clear_env();
    ck_assert_int_eq(LOAD(&c, &ei), 0);
    ck_assert_int_eq(c.no_cache, 0);
    ck_assert_int_eq(c.offload_mode, CFG_OFFLOAD_FALLBACK);
    ck_assert_int_eq(c.cache_scope, CFG_CACHE_DETERMINISTIC);
    ck_assert_int_eq(LOAD(&c, &ei, "--no-cache", "--offload-mode", "prefer", "--cache-scope=all"), 0);
    ck_assert_int_eq(c.no_cache, 1);
    ck_assert_int_eq(c.offload_mode, CFG_OFFLOAD_PREFER);
    ck_assert_int_eq(c.cache_scope, CFG_CACHE_ALL);
    ck_assert_int_eq(LOAD(&c, &ei, "--no-cache=false", "--offload-mode=off"), 0);
    ck_assert_int_eq(c.no_cache, 0);
    ck_assert_int_eq(c.offload_mode, CFG_OFFLOAD_OFF);
    ck_assert_int_eq(LOAD(&c, &ei, "--offload-mode", "sometimes"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "--offload-mode"));
    ck_assert_ptr_nonnull(strstr(ei.msg, "off|fallback|prefer"));
    ck_assert_int_eq(LOAD(&c, &ei, "--no-cache=maybe"), -EINVAL);
    setenv("EDGELLM_NO_CACHE", "1", 1);
    setenv("EDGELLM_OFFLOAD_MODE", "prefer", 1);
    ck_assert_int_eq(LOAD(&c, &ei), 0);
    ck_assert_int_eq(c.no_cache, 1);
    ck_assert_int_eq(c.offload_mode, CFG_OFFLOAD_PREFER);
    clear_env();
    char path[] = "/tmp/edgellm-cfg-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *json = "{\"no_cache\": true, \"offload_mode\": \"off\", \"offload_url\": \"http://127.0.0.1:9/v1\"}";
    ck_assert_int_eq(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    ck_assert_int_eq(LOAD(&c, &ei, "--config", path), 0);
    ck_assert_int_eq(c.no_cache, 1);
    ck_assert_int_eq(c.offload_mode, CFG_OFFLOAD_OFF);
    ck_assert_str_eq(c.offload_url, "http://127.0.0.1:9/v1");
    unlink(path);
}
END_TEST

START_TEST(usage_lists_every_flag_with_default)
{
    char buf[8192];
    int n = cfg_usage(buf, sizeof buf);
    ck_assert_int_gt(n, 0);
    ck_assert_int_lt(n, (int)sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "--port"));
    ck_assert_ptr_nonnull(strstr(buf, "(default 8080)"));
    ck_assert_ptr_nonnull(strstr(buf, "--socket-mode"));
    ck_assert_ptr_nonnull(strstr(buf, "(default 0660)"));
    ck_assert_ptr_nonnull(strstr(buf, "--config"));
    ck_assert_ptr_nonnull(strstr(buf, "(default fallback, of off|fallback|prefer)"));
    ck_assert_ptr_nonnull(strstr(buf, "--no-cache"));
    char small[16];
    ck_assert_int_eq(cfg_usage(small, sizeof small), n); /* snprintf-like: full length */
    ck_assert_int_eq((int)strlen(small), 15);
}
END_TEST

START_TEST(model_settings)
{
    cfg c;
    err_info ei;
    clear_env();
    ck_assert_int_eq(LOAD(&c, &ei), 0);
    ck_assert_str_eq(c.models_dir, "");
    ck_assert_int_eq(c.model_keep_alive_s, 300);
    ck_assert_int_eq(c.no_shm, 0);
    ck_assert_int_eq(c.mlock, 0);
    ck_assert_int_eq(c.shm_verify, 0);
    ck_assert_int_eq(c.memory_budget_mb, 0);
    ck_assert_int_eq(LOAD(&c, &ei, "--models-dir", "/m", "--model-keep-alive-s", "-1", "--mlock", "--shm-verify",
                          "--memory-budget-mb=2048"),
                     0);
    ck_assert_str_eq(c.models_dir, "/m");
    ck_assert_int_eq(c.model_keep_alive_s, -1);
    ck_assert_int_eq(c.mlock, 1);
    ck_assert_int_eq(c.shm_verify, 1);
    ck_assert_int_eq(c.memory_budget_mb, 2048);
    ck_assert_int_eq(LOAD(&c, &ei, "--model-keep-alive-s", "-2"), -ERR_RANGE);
    ck_assert_int_eq(LOAD(&c, &ei, "--mlock", "--no-shm"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "no-shm"));
}
END_TEST

typedef struct reported {
    int n;
    char text[8][ERR_MSG_MAX];
} reported;

static void collect(void *ud, const char *problem)
{
    reported *r = ud;
    if (r->n < 8)
        snprintf(r->text[r->n], sizeof r->text[0], "%s", problem);
    r->n++;
}

/* --check-config goes on past a bad key and explains each: the nearest known key for a typo,
 * what type was expected and found, the range and purpose of a setting. */
START_TEST(check_file_explains_every_problem)
{
    cfg c;
    err_info ei = {0};
    reported r = {0};
    char *path = write_file("{\"qeue\": 3, \"port\": true, \"queue\": 99999, \"max-tokens\": 5,\n"
                            " \"no_cache\": \"maybe\", \"threads\": 2, \"frobnicate\": 1}");
    ck_assert_int_eq(cfg_check_file(&c, path, collect, &r, &ei), 6);
    ck_assert_int_eq(r.n, 6);
    ck_assert_ptr_nonnull(strstr(r.text[0], "\"qeue\" is not a setting; did you mean \"queue\"?"));
    ck_assert_ptr_nonnull(strstr(r.text[1], "\"port\": expected a number, got a boolean"));
    ck_assert_ptr_nonnull(strstr(r.text[2], "\"queue\": 99999 is outside [0, 4096] (requests allowed to wait"));
    ck_assert_ptr_nonnull(strstr(r.text[3], "did you mean \"max_tokens\"?"));
    ck_assert_ptr_nonnull(strstr(r.text[4], "'maybe' is not one of true|false"));
    ck_assert_ptr_nonnull(strstr(r.text[5], "\"frobnicate\" is not a setting (edgellmd --help"));
    ck_assert_int_eq(c.threads, 2); /* the good keys still apply */
    unlink(path);
    /* a whole-file problem is one more */
    r.n = 0;
    path = write_file("{\"host\": \"\", \"socket\": \"\"}");
    ck_assert_int_eq(cfg_check_file(&c, path, collect, &r, &ei), 1);
    ck_assert_ptr_nonnull(strstr(r.text[0], "nothing to listen on"));
    unlink(path);
    r.n = 0;
    path = write_file("{\"port\": 1, \"queue\": 2}");
    ck_assert_int_eq(cfg_check_file(&c, path, collect, &r, &ei), 0);
    ck_assert_int_eq(r.n, 0);
    unlink(path);
    /* unreadable, or not an object at all: an error, with the line */
    path = write_file("{\"port\": 1,\n \"queue\" 2}");
    ck_assert_int_eq(cfg_check_file(&c, path, collect, &r, &ei), -ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(ei.msg, "syntax error at line 2"));
    unlink(path);
    ck_assert_int_eq(cfg_check_file(&c, "/nonexistent/x.json", collect, &r, &ei), -ENOENT);
    /* cfg_load still stops at the first problem */
    path = write_file("{\"qeue\": 3, \"port\": true}");
    ck_assert_int_eq(LOAD(&c, &ei, "--config", path), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "did you mean \"queue\""));
    unlink(path);
}
END_TEST

typedef struct change {
    char name[32];
    bool live;
    char was[32], now[32];
} change;

typedef struct changes {
    int n;
    change c[8];
} changes;

static void changed(void *ud, const char *name, bool live, const char *was, const char *now)
{
    changes *ch = ud;
    ck_assert_int_lt(ch->n, 8);
    change *c = &ch->c[ch->n++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->live = live;
    snprintf(c->was, sizeof c->was, "%s", was);
    snprintf(c->now, sizeof c->now, "%s", now);
}

/* SIGHUP: live settings change, the others are reported and kept at their running value. */
START_TEST(reload_applies_live_settings_only)
{
    cfg running, next;
    err_info ei;
    clear_env();
    ck_assert_int_eq(LOAD(&running, &ei, "--queue", "16", "--port", "8080", "--offload-mode", "off"), 0);
    ck_assert_int_eq(LOAD(&next, &ei, "--queue", "2", "--port", "9090", "--offload-mode", "prefer",
                          "--model-keep-alive-s", "5", "--threads", "3"),
                     0);
    changes ch = {0};
    ck_assert_int_eq(cfg_reload(&next, &running, changed, &ch), 3);
    ck_assert_int_eq(ch.n, 5);
    ck_assert_int_eq(next.queue, 2);
    ck_assert_int_eq(next.offload_mode, CFG_OFFLOAD_PREFER);
    ck_assert_int_eq(next.model_keep_alive_s, 5);
    ck_assert_int_eq(next.port, 8080); /* needs a restart: back to what runs */
    ck_assert_int_eq(next.threads, 0);
    for (int i = 0; i < ch.n; i++) {
        const change *c = &ch.c[i];
        if (!strcmp(c->name, "queue"))
            ck_assert(c->live && !strcmp(c->was, "16") && !strcmp(c->now, "2"));
        else if (!strcmp(c->name, "offload-mode"))
            ck_assert(c->live && !strcmp(c->was, "off") && !strcmp(c->now, "prefer"));
        else if (!strcmp(c->name, "port") || !strcmp(c->name, "threads"))
            ck_assert(!c->live);
        else
            ck_assert_str_eq(c->name, "model-keep-alive-s");
    }
    /* nothing changed: nothing reported */
    ch.n = 0;
    ck_assert_int_eq(cfg_reload(&next, &next, changed, &ch), 0);
    ck_assert_int_eq(ch.n, 0);
    char buf[8192];
    cfg_usage(buf, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "(default 16) [reloadable]"));
    ck_assert_ptr_nonnull(strstr(buf, "(default 8080)\n"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cfg");
    TCase *tc = tcase_create("cfg");
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, flags_both_spellings);
    tcase_add_test(tc, bad_flags_name_the_flag);
    tcase_add_test(tc, env_between_file_and_flags);
    tcase_add_test(tc, json_file);
    tcase_add_test(tc, json_file_errors);
    tcase_add_test(tc, booleans_and_choices);
    tcase_add_test(tc, usage_lists_every_flag_with_default);
    tcase_add_test(tc, model_settings);
    tcase_add_test(tc, check_file_explains_every_problem);
    tcase_add_test(tc, reload_applies_live_settings_only);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
