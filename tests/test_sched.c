/* test_sched — daemon/sched.c: the queue is bounded (one running + capacity waiting), FIFO,
 * drops items past their deadline (on sched_expire and when the worker reaches them), lets
 * a waiting item be removed, and refuses/drops everything after sched_stop. The run callback
 * blocks on a gate the test opens, so what is queued and what is running is under control. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/sched.h"

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;             /* items the gate still lets through */
    int running;          /* item id inside run, 0 if none */
    int ran[64], n_ran;
    int dropped[64], drop_code[64], n_dropped;
    int sleep_ms;         /* run takes this long once through the gate */
} rec;

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void run(void *ud, void *item)
{
    rec *r = ud;
    int id = (int)(intptr_t)item;
    pthread_mutex_lock(&r->mu);
    r->running = id;
    pthread_cond_broadcast(&r->cv);
    while (!r->open)
        pthread_cond_wait(&r->cv, &r->mu);
    r->open--;
    pthread_mutex_unlock(&r->mu);
    if (r->sleep_ms)
        nanosleep(&(struct timespec){0, r->sleep_ms * 1000000L}, NULL);
    pthread_mutex_lock(&r->mu);
    r->ran[r->n_ran++] = id;
    r->running = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void drop(void *ud, void *item, int code)
{
    rec *r = ud;
    pthread_mutex_lock(&r->mu);
    r->dropped[r->n_dropped] = (int)(intptr_t)item;
    r->drop_code[r->n_dropped++] = code;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void open_gate(rec *r, int n)
{
    pthread_mutex_lock(&r->mu);
    r->open += n;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Waits until item id is inside run (the worker took it). */
static void wait_running(rec *r, int id)
{
    pthread_mutex_lock(&r->mu);
    while (r->running != id)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

/* Waits until n items ran or were dropped in total. */
static void wait_settled(rec *r, int n)
{
    pthread_mutex_lock(&r->mu);
    while (r->n_ran + r->n_dropped < n)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

/* Waits until the scheduler itself has counted n items served: `run` records an item just
 * before it returns, so the worker's own bookkeeping (busy, served) lags a little behind. */
static void wait_served(sched *s, uint64_t n)
{
    sched_stats st;
    for (sched_get_stats(s, &st); st.served < n || st.busy; sched_get_stats(s, &st))
        nanosleep(&(struct timespec){0, 1000000L}, NULL);
}

#define ITEM(i) ((void *)(intptr_t)(i))

/* A scheduler of the given capacity whose worker is busy with item 1 (held at the gate). */
static sched *start_busy(rec *r, int capacity)
{
    rec_init(r);
    sched *s;
    err_info ei = {0};
    ck_assert_int_eq(sched_new(&s, capacity, run, drop, r, &ei), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(1), INT64_MAX), 0);
    wait_running(r, 1);
    return s;
}

START_TEST(bounded_and_fifo)
{
    rec r;
    sched *s = start_busy(&r, 4);
    for (int i = 2; i <= 5; i++)
        ck_assert_int_eq(sched_submit(s, ITEM(i), INT64_MAX), 0);
    /* one running + four waiting: the sixth is refused */
    ck_assert_int_eq(sched_submit(s, ITEM(6), INT64_MAX), -ERR_BUSY);
    sched_stats st;
    sched_get_stats(s, &st);
    ck_assert_int_eq(st.depth, 4);
    ck_assert(st.busy);
    open_gate(&r, 5);
    wait_settled(&r, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(r.ran[i], i + 1);
    ck_assert_int_eq(r.n_dropped, 0);
    wait_served(s, 5);
    sched_get_stats(s, &st);
    ck_assert_uint_eq(st.served, 5);
    sched_free(s);
}
END_TEST

START_TEST(capacity_zero_serves_one_at_a_time)
{
    rec r;
    sched *s = start_busy(&r, 0);
    ck_assert_int_eq(sched_submit(s, ITEM(2), INT64_MAX), -ERR_BUSY);
    open_gate(&r, 1);
    wait_served(s, 1); /* the worker is free again: one may be submitted */
    ck_assert_int_eq(sched_submit(s, ITEM(3), INT64_MAX), 0);
    open_gate(&r, 1);
    wait_settled(&r, 2);
    ck_assert_int_eq(r.ran[1], 3);
    sched_free(s);
}
END_TEST

START_TEST(deadline_expiry)
{
    rec r;
    sched *s = start_busy(&r, 8);
    int64_t now = sched_now_ns();
    ck_assert_int_eq(sched_submit(s, ITEM(2), now + 50000000), 0);  /* +50 ms */
    ck_assert_int_eq(sched_submit(s, ITEM(3), INT64_MAX), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(4), now + 20000000), 0);  /* +20 ms */
    ck_assert_int_eq(sched_next_deadline(s), now + 20000000);
    ck_assert_int_eq(sched_expire(s, now), 0);
    ck_assert_int_eq(sched_expire(s, now + 30000000), 1);
    ck_assert_int_eq(r.dropped[0], 4);
    ck_assert_int_eq(r.drop_code[0], -ERR_TIMEOUT);
    ck_assert_int_eq(sched_next_deadline(s), now + 50000000);
    /* item 2 expires while the worker is busy; the worker skips it when it gets there */
    nanosleep(&(struct timespec){0, 60000000}, NULL);
    open_gate(&r, 2);
    wait_settled(&r, 4);
    ck_assert_int_eq(r.n_ran, 2);
    ck_assert_int_eq(r.ran[0], 1);
    ck_assert_int_eq(r.ran[1], 3);
    ck_assert_int_eq(r.dropped[1], 2);
    ck_assert_int_eq(r.drop_code[1], -ERR_TIMEOUT);
    ck_assert_int_eq(sched_next_deadline(s), INT64_MAX);
    sched_free(s);
}
END_TEST

START_TEST(remove_while_queued)
{
    rec r;
    sched *s = start_busy(&r, 2);
    ck_assert_int_eq(sched_submit(s, ITEM(2), INT64_MAX), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(3), INT64_MAX), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(4), INT64_MAX), -ERR_BUSY);
    ck_assert(!sched_remove(s, ITEM(1)));  /* running: not in the queue */
    ck_assert(sched_remove(s, ITEM(2)));
    ck_assert(!sched_remove(s, ITEM(2)));
    ck_assert_int_eq(sched_submit(s, ITEM(4), INT64_MAX), 0); /* its slot is free again */
    open_gate(&r, 3);
    wait_settled(&r, 3);
    ck_assert_int_eq(r.ran[1], 3);
    ck_assert_int_eq(r.ran[2], 4);
    ck_assert_int_eq(r.n_dropped, 0); /* removal is silent */
    sched_free(s);
}
END_TEST

typedef struct seen {
    int item[8], pos[8], n;
} seen;

static void visit(void *ctx, void *item, int position)
{
    seen *v = ctx;
    v->item[v->n] = (int)(intptr_t)item;
    v->pos[v->n++] = position;
}

START_TEST(visit_positions_and_retry_after)
{
    rec r;
    rec_init(&r);
    r.sleep_ms = 30;
    sched *s;
    ck_assert_int_eq(sched_new(&s, 4, run, drop, &r, NULL), 0);
    ck_assert_int_eq(sched_retry_after_s(s), 1); /* nothing measured yet */
    ck_assert_int_eq(sched_submit(s, ITEM(1), INT64_MAX), 0);
    open_gate(&r, 1);
    wait_settled(&r, 1);
    ck_assert_int_eq(sched_submit(s, ITEM(2), INT64_MAX), 0);
    wait_running(&r, 2);
    ck_assert_int_eq(sched_submit(s, ITEM(3), INT64_MAX), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(4), INT64_MAX), 0);
    seen v = {0};
    sched_visit(s, visit, &v);
    ck_assert_int_eq(v.n, 3);
    ck_assert_int_eq(v.item[0], 2);
    ck_assert_int_eq(v.pos[0], 0);
    ck_assert_int_eq(v.item[1], 3);
    ck_assert_int_eq(v.pos[1], 1);
    ck_assert_int_eq(v.item[2], 4);
    ck_assert_int_eq(v.pos[2], 2);
    sched_stats st;
    sched_get_stats(s, &st);
    ck_assert_double_ge(st.service_ms_ewma, 25);
    ck_assert_int_ge(sched_retry_after_s(s), 1);
    open_gate(&r, 3);
    wait_settled(&r, 4);
    sched_free(s);
}
END_TEST

START_TEST(retry_after_scales_with_queue)
{
    rec r;
    rec_init(&r);
    r.sleep_ms = 400;
    sched *s;
    ck_assert_int_eq(sched_new(&s, 8, run, drop, &r, NULL), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(1), INT64_MAX), 0);
    open_gate(&r, 1);
    wait_settled(&r, 1); /* ewma = ~400 ms */
    ck_assert_int_eq(sched_submit(s, ITEM(2), INT64_MAX), 0);
    wait_running(&r, 2);
    for (int i = 3; i <= 8; i++)
        ck_assert_int_eq(sched_submit(s, ITEM(i), INT64_MAX), 0);
    /* 1 running + 6 waiting at ~0.4 s each: about 3 s */
    int ra = sched_retry_after_s(s);
    ck_assert_int_ge(ra, 3);
    ck_assert_int_le(ra, 5);
    sched_stop(s, true);
    open_gate(&r, 1);
    wait_settled(&r, 8);
    sched_free(s);
}
END_TEST

START_TEST(stop_drops_queue_and_refuses)
{
    rec r;
    sched *s = start_busy(&r, 4);
    ck_assert_int_eq(sched_submit(s, ITEM(2), INT64_MAX), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(3), INT64_MAX), 0);
    sched_stop(s, false); /* drain: the queue stays, new items are refused */
    ck_assert_int_eq(sched_submit(s, ITEM(4), INT64_MAX), -ERR_CANCELLED);
    ck_assert_int_eq(r.n_dropped, 0);
    sched_stop(s, true);
    ck_assert_int_eq(r.n_dropped, 2);
    ck_assert_int_eq(r.dropped[0], 2);
    ck_assert_int_eq(r.drop_code[0], -ERR_CANCELLED);
    ck_assert_int_eq(r.dropped[1], 3);
    open_gate(&r, 1);
    wait_settled(&r, 3);
    ck_assert_int_eq(r.n_ran, 1); /* the running item finished normally */
    sched_free(s);
}
END_TEST

START_TEST(free_drops_what_waits)
{
    rec r;
    sched *s = start_busy(&r, 4);
    ck_assert_int_eq(sched_new(&(sched *){NULL}, -1, run, drop, &r, NULL), -EINVAL);
    ck_assert_int_eq(sched_submit(s, ITEM(2), INT64_MAX), 0);
    open_gate(&r, 2); /* item 2 may still reach the worker before the stop: let it through */
    sched_free(s);
    ck_assert_int_eq(r.n_ran + r.n_dropped, 2);
}
END_TEST

/* SIGHUP's new queue size: growing admits more at once; shrinking keeps what waits and
 * refuses new items until the queue is back under the new size. */
START_TEST(capacity_changes_live)
{
    rec r;
    sched *s = start_busy(&r, 1);
    err_info ei = {0};
    ck_assert_int_eq(sched_submit(s, ITEM(2), INT64_MAX), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(3), INT64_MAX), -ERR_BUSY);
    ck_assert_int_eq(sched_set_capacity(s, 3, &ei), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(3), INT64_MAX), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(4), INT64_MAX), 0);
    ck_assert_int_eq(sched_submit(s, ITEM(5), INT64_MAX), -ERR_BUSY);
    ck_assert_int_eq(sched_set_capacity(s, 1, &ei), 0);
    sched_stats st;
    sched_get_stats(s, &st);
    ck_assert_int_eq(st.capacity, 1);
    ck_assert_int_eq(st.depth, 3); /* nothing waiting was dropped */
    ck_assert_int_eq(sched_submit(s, ITEM(5), INT64_MAX), -ERR_BUSY);
    ck_assert_int_eq(sched_set_capacity(s, -1, &ei), -EINVAL);
    open_gate(&r, 4);
    wait_settled(&r, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(r.ran[i], i + 1);
    wait_served(s, 4);
    ck_assert_int_eq(sched_submit(s, ITEM(6), INT64_MAX), 0);
    open_gate(&r, 1);
    wait_settled(&r, 5);
    sched_free(s);
}
END_TEST

typedef struct chore_rec {
    int calls;
    int running_at_call;   /* the item inside run when the chore ran: must be 0 */
} chore_rec;

static chore_rec chores;

static void chore(void *ud)
{
    rec *r = ud;
    pthread_mutex_lock(&r->mu);
    chores.calls++;
    chores.running_at_call |= r->running;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* The chore runs on the worker between items, once per burst of pokes. */
START_TEST(chore_runs_between_items)
{
    rec r;
    chores = (chore_rec){0};
    sched *s = start_busy(&r, 4);
    sched_set_chore(s, chore);
    ck_assert_int_eq(sched_submit(s, ITEM(2), INT64_MAX), 0);
    sched_poke(s);
    sched_poke(s);
    nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    ck_assert_int_eq(chores.calls, 0); /* item 1 still runs */
    open_gate(&r, 2);
    wait_settled(&r, 2);
    wait_served(s, 2);
    ck_assert_int_eq(chores.calls, 1);
    ck_assert_int_eq(chores.running_at_call, 0);
    sched_poke(s); /* an idle worker does it at once */
    pthread_mutex_lock(&r.mu);
    while (chores.calls < 2)
        pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    sched_free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("sched");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bounded_and_fifo);
    tcase_add_test(tc, capacity_zero_serves_one_at_a_time);
    tcase_add_test(tc, deadline_expiry);
    tcase_add_test(tc, remove_while_queued);
    tcase_add_test(tc, visit_positions_and_retry_after);
    tcase_add_test(tc, retry_after_scales_with_queue);
    tcase_add_test(tc, stop_drops_queue_and_refuses);
    tcase_add_test(tc, free_drops_what_waits);
    tcase_add_test(tc, capacity_changes_live);
    tcase_add_test(tc, chore_runs_between_items);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
