/* test_mapguard — daemon/mapguard.c: a file mapping whose file is truncated underneath it.
 * Reads of the guarded range past the new end give zeros and are counted (on any thread,
 * and again without a second fault); the pages still in the file keep their bytes; a
 * SIGBUS outside the guarded range, or after disarming, still kills the process with SIGBUS
 * (checked in a child). */
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
    ck_assert_msg(mapguard_arm(m.p, m.size, &ei) == 0, "%s", ei.msg);
    ck_assert_uint_eq(read_all(&m), 0xABull * m.size);
    ck_assert_int_eq(ftruncate(m.fd, (off_t)(KEPT * m.page)), 0);
    ck_assert_uint_eq(read_all(&m), 0xABull * KEPT * m.page); /* the rest are zeros now */
    ck_assert_uint_eq(mapguard_faults(), PAGES - KEPT);
    ck_assert_uint_eq(read_all(&m), 0xABull * KEPT * m.page);
    ck_assert_uint_eq(mapguard_faults(), PAGES - KEPT); /* each page faulted once */
    mapguard_disarm();
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
    ck_assert_int_eq(mapguard_arm(m.p, m.size, &ei), 0);
    ck_assert_int_eq(ftruncate(m.fd, 0), 0);
    pthread_t t;
    void *sum;
    pthread_create(&t, NULL, read_in_thread, &m);
    pthread_join(t, &sum);
    ck_assert_uint_eq((uintptr_t)sum, 0);
    ck_assert_uint_eq(mapguard_faults(), PAGES);
    mapguard_disarm();
    unmap_file(&m);
}
END_TEST

START_TEST(one_range_at_a_time)
{
    mapped m = map_file("busy");
    err_info ei = {0};
    ck_assert_int_eq(mapguard_arm(m.p, m.size, &ei), 0);
    ck_assert_int_eq(mapguard_arm(m.p, m.size, &ei), -EBUSY);
    mapguard_disarm();
    ck_assert_int_eq(mapguard_arm(m.p, m.size, &ei), 0);
    mapguard_disarm();
    unmap_file(&m);
}
END_TEST

/* The wait status of a child that guards an unrelated range (or the victim's, then disarms),
 * truncates the victim file and reads its mapping. */
static int status_of_child_reading(bool guard_other_range, bool disarm_first)
{
    mapped other = map_file("victim");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        err_info ei = {0};
        static uint8_t unrelated[1 << 16];
        mapguard_arm(guard_other_range ? unrelated : other.p, guard_other_range ? sizeof unrelated : other.size, &ei);
        if (disarm_first)
            mapguard_disarm();
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
    int status = status_of_child_reading(true, false);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "the child ended with status %#x", status);
}
END_TEST

START_TEST(a_fault_after_disarming_still_kills)
{
    int status = status_of_child_reading(false, true);
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
    tcase_add_test(tc, one_range_at_a_time);
    tcase_add_test(tc, a_fault_outside_the_range_still_kills);
    tcase_add_test(tc, a_fault_after_disarming_still_kills);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
