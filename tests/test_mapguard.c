/* test_mapguard — daemon/mapguard.c: a file mapping whose file is truncated underneath it.
 * Reads of the guarded range past the new end give zeros and are counted (on any thread,
 * and again without a second fault, against the right range when several are guarded);
 * the pages still in the file keep their bytes; the table of ranges is bounded and its
 * slots are reused; a SIGBUS outside every guarded range, after disarming, or sent by kill
 * still kills the process with SIGBUS (checked in a child). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/mapguard.h"
#include "testutil.h"

enum { PAGES = 8, KEPT = 2 };

typedef struct mapped {
    int fd;
    uint8_t *p;
    size_t size, page;
    const char *path;
} mapped;

/* A file of PAGES pages of 0xAB, mapped read-only. */
static mapped map_file(const char *name)
{
    mapped m = {.page = (size_t)sysconf(_SC_PAGESIZE), .path = tmp_path(name)};
    m.size = PAGES * m.page;
    m.fd = open(m.path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(m.fd, 0);
    uint8_t *buf = malloc(m.size);
    memset(buf, 0xAB, m.size);
    ck_assert_int_eq(write(m.fd, buf, m.size), (ssize_t)m.size);
    free(buf);
    m.p = mmap(NULL, m.size, PROT_READ, MAP_SHARED, m.fd, 0);
    ck_assert(m.p != MAP_FAILED);
    return m;
}

static void unmap_file(mapped *m)
{
    munmap(m->p, m->size);
    close(m->fd);
    unlink(m->path);
}

static volatile uint8_t sink;

/* Sums every byte, so each page is read. */
static uint64_t read_all(const mapped *m)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < m->size; i++)
        sum += m->p[i];
    sink = (uint8_t)sum;
    return sum;
}

START_TEST(truncated_pages_read_as_zeros)
{
    mapped m = map_file("guarded");
    err_info ei = {0};
    mapguard *g;
    ck_assert_msg(mapguard_arm(&g, m.p, m.size, &ei) == 0, "%s", ei.msg);
    ck_assert_uint_eq(read_all(&m), 0xABull * m.size);
    ck_assert_int_eq(ftruncate(m.fd, (off_t)(KEPT * m.page)), 0);
    ck_assert_uint_eq(read_all(&m), 0xABull * KEPT * m.page); /* the rest are zeros now */
    ck_assert_uint_eq(mapguard_faults(g), PAGES - KEPT);
    ck_assert_uint_eq(read_all(&m), 0xABull * KEPT * m.page);
    ck_assert_uint_eq(mapguard_faults(g), PAGES - KEPT); /* each page faulted once */
    mapguard_disarm(g);
    ck_assert_uint_eq(mapguard_faults(NULL), 0);
    unmap_file(&m);
}
END_TEST

static void *read_in_thread(void *arg)
{
    return (void *)(uintptr_t)read_all(arg);
}

START_TEST(a_fault_on_another_thread_is_handled_too)
{
    mapped m = map_file("threaded");
    err_info ei = {0};
    mapguard *g;
    ck_assert_int_eq(mapguard_arm(&g, m.p, m.size, &ei), 0);
    ck_assert_int_eq(ftruncate(m.fd, 0), 0);
    pthread_t t;
    void *sum;
    pthread_create(&t, NULL, read_in_thread, &m);
    pthread_join(t, &sum);
    ck_assert_uint_eq((uintptr_t)sum, 0);
    ck_assert_uint_eq(mapguard_faults(g), PAGES);
    mapguard_disarm(g);
    unmap_file(&m);
}
END_TEST

START_TEST(faults_count_against_their_own_range)
{
    mapped a = map_file("first"), b = map_file("second");
    err_info ei = {0};
    mapguard *ga, *gb;
    ck_assert_int_eq(mapguard_arm(&ga, a.p, a.size, &ei), 0);
    ck_assert_int_eq(mapguard_arm(&gb, b.p, b.size, &ei), 0);
    ck_assert_int_eq(ftruncate(b.fd, (off_t)(KEPT * b.page)), 0);
    ck_assert_uint_eq(read_all(&a), 0xABull * a.size);
    ck_assert_uint_eq(read_all(&b), 0xABull * KEPT * b.page);
    ck_assert_uint_eq(mapguard_faults(ga), 0);
    ck_assert_uint_eq(mapguard_faults(gb), PAGES - KEPT);
    mapguard_disarm(gb);
    mapguard_disarm(ga);
    unmap_file(&b);
    unmap_file(&a);
}
END_TEST

START_TEST(the_table_is_bounded_and_its_slots_reused)
{
    mapped m = map_file("busy");
    err_info ei = {0};
    mapguard *g[MAPGUARD_MAX], *more;
    for (int i = 0; i < MAPGUARD_MAX; i++)
        ck_assert_int_eq(mapguard_arm(&g[i], m.p, m.size, &ei), 0);
    ck_assert_int_eq(mapguard_arm(&more, m.p, m.size, &ei), -EBUSY);
    ck_assert_ptr_null(more);
    mapguard_disarm(g[3]);
    ck_assert_int_eq(mapguard_arm(&more, m.p, m.size, &ei), 0);
    ck_assert_ptr_eq(more, g[3]);
    for (int i = 0; i < MAPGUARD_MAX; i++)
        mapguard_disarm(g[i]);
    unmap_file(&m);
}
END_TEST

typedef enum child_case { GUARD_OTHER_RANGE, DISARM_FIRST, KILL_BUS } child_case;

/* The wait status of a child that guards an unrelated range (or the victim's, then disarms
 * it), truncates the victim file and reads its mapping; or one that guards the victim's
 * range and is sent SIGBUS by kill. */
static int status_of_child(child_case what)
{
    mapped other = map_file("victim");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        err_info ei = {0};
        static uint8_t unrelated[1 << 16];
        mapguard *g;
        if (what == GUARD_OTHER_RANGE)
            mapguard_arm(&g, unrelated, sizeof unrelated, &ei);
        else
            mapguard_arm(&g, other.p, other.size, &ei);
        if (what == DISARM_FIRST)
            mapguard_disarm(g);
        if (what == KILL_BUS) {
            kill(getpid(), SIGBUS); /* delivered before kill returns */
            _exit(4);               /* survived: the test fails */
        }
        if (ftruncate(other.fd, 0) < 0)
            _exit(3);
        read_all(&other);
        _exit(0); /* survived: the test fails */
    }
    int status;
    waitpid(pid, &status, 0);
    unmap_file(&other);
    return status;
}

START_TEST(a_fault_outside_the_range_still_kills)
{
    int status = status_of_child(GUARD_OTHER_RANGE);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "the child ended with status %#x", status);
}
END_TEST

START_TEST(a_fault_after_disarming_still_kills)
{
    int status = status_of_child(DISARM_FIRST);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "the child ended with status %#x", status);
}
END_TEST

START_TEST(a_sigbus_sent_by_kill_still_kills)
{
    int status = status_of_child(KILL_BUS);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "the child ended with status %#x", status);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mapguard");
    TCase *tc = tcase_create("mapguard");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, truncated_pages_read_as_zeros);
    tcase_add_test(tc, a_fault_on_another_thread_is_handled_too);
    tcase_add_test(tc, faults_count_against_their_own_range);
    tcase_add_test(tc, the_table_is_bounded_and_its_slots_reused);
    tcase_add_test(tc, a_fault_outside_the_range_still_kills);
    tcase_add_test(tc, a_fault_after_disarming_still_kills);
    tcase_add_test(tc, a_sigbus_sent_by_kill_still_kills);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
