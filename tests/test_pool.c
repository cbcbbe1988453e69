/* test_pool — the fork-join pool: every item runs exactly once per loop, slots are exclusive,
 * loops finish when threads outnumber cores (workers the OS does not schedule must not stall
 * the loop), and idle workers sleep instead of spinning. */
#include <check.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "engine/pool.h"
#include "tests/testutil.h"

enum { MAX_ITEMS = 5000, MAX_SLOTS = 16 };

typedef struct count_job {
    _Atomic int hits[MAX_ITEMS];
    _Atomic int busy[MAX_SLOTS];   /* chunks a slot is running right now */
    _Atomic int overlap;           /* times a slot ran two chunks at once */
    _Atomic int chunk_too_big;
    int grain;
} count_job;

static void count_items(void *ctx, int begin, int end, int slot)
{
    count_job *j = ctx;
    if (atomic_fetch_add(&j->busy[slot], 1) != 0)
        atomic_fetch_add(&j->overlap, 1);
    if (end - begin > j->grain)
        atomic_fetch_add(&j->chunk_too_big, 1);
    for (int i = begin; i < end; i++)
        atomic_fetch_add(&j->hits[i], 1);
    atomic_fetch_sub(&j->busy[slot], 1);
}

static void run_loops(int threads, int loops)
{
    pool *p;
    ck_assert_int_eq(pool_new(&p, threads, NULL), 0);
    ck_assert_int_eq(pool_size(p), threads);
    static count_job j;
    uint64_t seed = (uint64_t)threads;
    for (int loop = 0; loop < loops; loop++) {
        memset(&j, 0, sizeof j);
        int n = 1 + (int)(rng_next(&seed) % MAX_ITEMS);
        j.grain = 1 + (int)(rng_next(&seed) % 64);
        pool_for(p, n, j.grain, count_items, &j);
        for (int i = 0; i < n; i++)
            ck_assert_msg(atomic_load(&j.hits[i]) == 1, "loop %d: item %d ran %d times", loop, i, atomic_load(&j.hits[i]));
        for (int i = n; i < MAX_ITEMS; i++)
            ck_assert_int_eq(atomic_load(&j.hits[i]), 0);
        ck_assert_int_eq(atomic_load(&j.overlap), 0);
        ck_assert_int_eq(atomic_load(&j.chunk_too_big), 0);
    }
    pool_free(p);
}

START_TEST(every_item_exactly_once)
{
    run_loops(1, 200);
    run_loops(2, 2000);
    run_loops(3, 1000);
}
END_TEST

/* Eight threads on a two-core machine: most workers are descheduled at any moment; the
 * loops must still complete (and fast: this test has a timeout). */
START_TEST(oversubscribed_pool_finishes)
{
    run_loops(8, 500);
}
END_TEST

START_TEST(null_pool_runs_inline)
{
    static count_job j;
    memset(&j, 0, sizeof j);
    j.grain = 10;
    pool_for(NULL, 105, 10, count_items, &j);
    for (int i = 0; i < 105; i++)
        ck_assert_int_eq(atomic_load(&j.hits[i]), 1);
    ck_assert_int_eq(atomic_load(&j.chunk_too_big), 0);
    ck_assert_int_eq(pool_size(NULL), 1);
    pool_for(NULL, 0, 10, count_items, &j); /* empty loop: no call */
}
END_TEST

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* After a loop, workers spin for microseconds and then sleep: half a second of idleness
 * must cost (almost) no CPU. */
START_TEST(idle_workers_sleep)
{
    pool *p;
    ck_assert_int_eq(pool_new(&p, 2, NULL), 0);
    static count_job j;
    memset(&j, 0, sizeof j);
    j.grain = 1;
    pool_for(p, 1000, 1, count_items, &j);
    usleep(100 * 1000); /* let the spin phase end */
    double before = cpu_seconds();
    usleep(500 * 1000);
    double used = cpu_seconds() - before;
    ck_assert_msg(used < 0.02, "idle pool used %.3f s of CPU in 0.5 s", used);
    pool_free(p);
}
END_TEST

START_TEST(default_threads_is_positive)
{
    int n = pool_default_threads();
    ck_assert_int_ge(n, 1);
    ck_assert_int_le(n, (int)sysconf(_SC_NPROCESSORS_ONLN));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_item_exactly_once);
    tcase_add_test(tc, oversubscribed_pool_finishes);
    tcase_add_test(tc, null_pool_runs_inline);
    tcase_add_test(tc, idle_workers_sleep);
    tcase_add_test(tc, default_threads_is_positive);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
