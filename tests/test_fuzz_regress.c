/* test_fuzz_regress — replays, for every fuzz target in tests/fuzz/targets.c, the committed
 * seed corpus (tests/fuzz/corpus/<target>/, which must not be empty) and every input a
 * fuzzer once failed on (tests/fuzz/regress/<target>/, optional), through the same code the
 * libFuzzer harnesses run. A plain build catches crashes and failed properties; `make asan`
 * adds the memory errors the fuzzer saw.
 *
 * Paths are relative to the repository root, where `make test` runs the suites; the tok
 * target reads its vocabs from $SHARED. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"

/* The targets are compiled into this test itself: the Makefile links a test with the
 * module libraries only, and the libFuzzer harnesses compile the same file. */
#include "fuzz/targets.c"

#define FUZZ_DIR "tests/fuzz"

static char replaying[1024]; /* the input being run, for failure messages */

static void fail_test(const char *msg)
{
    ck_abort_msg("%s: %s", replaying, msg);
}

static int not_hidden(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Runs every file of dir through t; returns how many. A missing dir counts 0 files. */
static int replay_dir(const fuzz_target *t, const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, not_hidden, alphasort);
    if (n < 0)
        return 0;
    for (int i = 0; i < n; i++) {
        snprintf(replaying, sizeof replaying, "%s/%s", dir, names[i]->d_name);
        size_t size;
        uint8_t *data = slurp(replaying, &size); /* exactly its size, as libFuzzer's buffers */
        t->run(data, size);
        free(data);
        free(names[i]);
    }
    free(names);
    return n;
}

static int n_targets(void)
{
    int n = 0;
    while (fuzz_targets[n])
        n++;
    return n;
}

START_TEST(replay_target)
{
    const fuzz_target *t = fuzz_targets[_i];
    fuzz_fail_handler = fail_test;
    snprintf(replaying, sizeof replaying, "set-up");
    fuzz_init_or_die(t);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/corpus/%s", FUZZ_DIR, t->name);
    int seeds = replay_dir(t, dir);
    ck_assert_msg(seeds > 0, "target %s: no seed inputs in %s (run from the repository root)", t->name, dir);
    snprintf(dir, sizeof dir, "%s/regress/%s", FUZZ_DIR, t->name);
    int regress = replay_dir(t, dir);
    fprintf(stderr, "fuzz target %s: %d seeds, %d regression inputs replayed\n", t->name, seeds, regress);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fuzz_regress");
    TCase *tc = tcase_create("replay");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, replay_target, 0, n_targets());
    suite_add_tcase(s, tc);
    return run_suite(s);
}
