/* test_sdnotify — the systemd protocols against fakes of systemd's side: a datagram socket
 * in the temp dir (and one in the abstract namespace) stands in for $NOTIFY_SOCKET and the
 * test reads what arrives; for socket activation a child process dup2()s bound sockets onto
 * fds 3, 4, ... and sets LISTEN_* as systemd would before exec. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/sdnotify.h"
#include "tests/testutil.h"

/* ---- notification -------------------------------------------------------------------- */

/* A datagram socket bound at name ("/path" or "@abstract"), as systemd listens. */
static int fake_systemd(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    ck_assert_uint_lt(n, sizeof sa.sun_path);
    memcpy(sa.sun_path, name, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (name[0] == '@')
        sa.sun_path[0] = 0;
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s, 0);
    ck_assert_msg(bind(s, (struct sockaddr *)&sa, len) == 0, "bind %s: %s", name, strerror(errno));
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
    return s;
}

/* The next datagram, NUL-terminated, without blocking (sysd_notify has already returned). */
static const char *received(int s)
{
    static char buf[SYSD_STATE_MAX + 1];
    ssize_t n = recv(s, buf, sizeof buf - 1, MSG_DONTWAIT);
    ck_assert_msg(n >= 0, "nothing arrived: %s", strerror(errno));
    buf[n] = 0;
    return buf;
}

START_TEST(notify_without_socket_is_a_noop)
{
    unsetenv("NOTIFY_SOCKET");
    err_info ei = {0};
    ck_assert_int_eq(sysd_notify(&ei, "READY=1"), 0);
    ck_assert_int_eq(sysd_notify_reloading(NULL, &ei), 0);
    ck_assert_int_eq(ei.code, 0);
}
END_TEST

START_TEST(notify_path_socket)
{
    const char *path = tmp_path("notify");
    int s = fake_systemd(path);
    err_info ei = {0};
    ck_assert_int_eq(sysd_notify(&ei, "READY=1\nSTATUS=serving %s", "qwen2"), 1);
    ck_assert_str_eq(received(s), "READY=1\nSTATUS=serving qwen2");
    ck_assert_int_eq(sysd_notify(&ei, "WATCHDOG=1"), 1);
    ck_assert_str_eq(received(s), "WATCHDOG=1");
    ck_assert_int_eq(sysd_notify(&ei, "STOPPING=1"), 1);
    ck_assert_str_eq(received(s), "STOPPING=1");
    close(s);
    unlink(path);
    /* the socket is gone: the send fails and says where it went */
    ck_assert_int_lt(sysd_notify(&ei, "WATCHDOG=1"), 0);
    ck_assert_ptr_nonnull(strstr(ei.msg, path));
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

START_TEST(notify_abstract_socket)
{
    char name[64];
    snprintf(name, sizeof name, "@edgellm-test-notify-%d", (int)getpid());
    int s = fake_systemd(name);
    err_info ei = {0};
    ck_assert_int_eq(sysd_notify(&ei, "READY=1"), 1);
    ck_assert_str_eq(received(s), "READY=1");
    close(s);
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

static uint64_t monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

START_TEST(notify_reloading_carries_monotonic_time)
{
    const char *path = tmp_path("notify-reload");
    int s = fake_systemd(path);
    err_info ei = {0};
    uint64_t before = monotonic_usec();
    ck_assert_int_eq(sysd_notify_reloading("reloading configuration", &ei), 1);
    uint64_t after = monotonic_usec(), usec = 0;
    const char *got = received(s);
    int used = 0;
    ck_assert_msg(sscanf(got, "RELOADING=1\nMONOTONIC_USEC=%" SCNu64 "\n%n", &usec, &used) == 1 && used > 0, "%s", got);
    ck_assert_str_eq(got + used, "STATUS=reloading configuration");
    ck_assert(before <= usec && usec <= after);
    ck_assert_int_eq(sysd_notify_reloading(NULL, &ei), 1);
    got = received(s);
    ck_assert_int_eq(sscanf(got, "RELOADING=1\nMONOTONIC_USEC=%" SCNu64 "%n", &usec, &used), 1);
    ck_assert_int_eq(got[used], 0);
    close(s);
    unlink(path);
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

START_TEST(notify_rejects_bad_addresses)
{
    err_info ei = {0};
    const char *bad[] = {"relative/path", "@", "/", ""};
    for (size_t i = 0; i < 3; i++) {
        setenv("NOTIFY_SOCKET", bad[i], 1);
        ck_assert_int_eq(sysd_notify(&ei, "READY=1"), -EINVAL);
        ck_assert_ptr_nonnull(strstr(ei.msg, "NOTIFY_SOCKET"));
    }
    setenv("NOTIFY_SOCKET", bad[3], 1); /* empty: as if unset */
    ck_assert_int_eq(sysd_notify(&ei, "READY=1"), 0);
    char long_path[200];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[0] = '/';
    long_path[sizeof long_path - 1] = 0;
    setenv("NOTIFY_SOCKET", long_path, 1);
    ck_assert_int_eq(sysd_notify(&ei, "READY=1"), -EINVAL);
    char huge[SYSD_STATE_MAX + 1];
    memset(huge, 'x', sizeof huge - 1);
    huge[sizeof huge - 1] = 0;
    ck_assert_int_eq(sysd_notify(&ei, "STATUS=%s", huge), -EMSGSIZE);
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

/* ---- watchdog ------------------------------------------------------------------------ */

START_TEST(watchdog_period)
{
    err_info ei = {0};
    uint64_t usec = 7;
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    ck_assert_int_eq(sysd_watchdog_usec(&usec, &ei), 0);
    ck_assert_uint_eq(usec, 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    ck_assert_int_eq(sysd_watchdog_usec(&usec, &ei), 1);
    ck_assert_uint_eq(usec, 30000000);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(sysd_watchdog_usec(&usec, &ei), 1);
    ck_assert_uint_eq(usec, 30000000);
    snprintf(pid, sizeof pid, "%d", (int)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(sysd_watchdog_usec(&usec, &ei), 0); /* someone else's watchdog */
    ck_assert_uint_eq(usec, 0);
    setenv("WATCHDOG_PID", "12x", 1);
    ck_assert_int_eq(sysd_watchdog_usec(&usec, &ei), -EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.msg, "WATCHDOG_PID"));
    unsetenv("WATCHDOG_PID");
    const char *bad[] = {"0", "-5", "", "1e6", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("WATCHDOG_USEC", bad[i], 1);
        ck_assert_msg(sysd_watchdog_usec(&usec, &ei) == -EINVAL, "WATCHDOG_USEC='%s' accepted", bad[i]);
        ck_assert_ptr_nonnull(strstr(ei.msg, "WATCHDOG_USEC"));
    }
    unsetenv("WATCHDOG_USEC");
}
END_TEST

/* ---- socket activation --------------------------------------------------------------- */

/* The child cannot use ck_assert: fds 3.. are about to be replaced, and Check may have its
 * own descriptors there. It reports the first failed expectation through a pipe placed far
 * above them, and its exit status. */
static int report_fd = -1;
static char child_msg[512];

static int child_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int child_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(child_msg, sizeof child_msg, fmt, ap);
    va_end(ap);
    return 1;
}
#define EXPECT(cond, ...) \
    do { if (!(cond)) return child_fail(__VA_ARGS__); } while (0)

/* Runs body in a child and asserts that it succeeded; its failure message becomes ours. */
static void in_child(int (*body)(void))
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        report_fd = fcntl(p[1], F_DUPFD_CLOEXEC, 200);
        close(p[1]);
        int rc = body();
        if (rc && write(report_fd, child_msg, strlen(child_msg)) < 0)
            rc = 2;
        _exit(rc);
    }
    close(p[1]);
    char msg[sizeof child_msg + 1] = "";
    ssize_t n = read(p[0], msg, sizeof msg - 1);
    msg[n > 0 ? n : 0] = 0;
    close(p[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: %s", msg[0] ? msg : "crashed");
}

/* fd moved to a number >= 100, out of the way of 3, 4, ... */
static int high(int fd)
{
    int h = fcntl(fd, F_DUPFD, 100);
    close(fd);
    return h;
}

/* Puts fd at target (closing what was there) and keeps it inheritable, as systemd passes it. */
static void place(int fd, int target)
{
    if (fd != target) {
        dup2(fd, target);
        close(fd);
    }
    fcntl(target, F_SETFD, 0);
}

static int tcp_listener(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4))
        return -1;
    return s;
}

static int unix_listener(const char *path)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    unlink(path);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4))
        return -1;
    return s;
}

/* Environment as systemd sets it for this process. */
static void set_listen_env(int n, const char *names)
{
    char v[32];
    snprintf(v, sizeof v, "%d", (int)getpid());
    setenv("LISTEN_PID", v, 1);
    snprintf(v, sizeof v, "%d", n);
    setenv("LISTEN_FDS", v, 1);
    if (names)
        setenv("LISTEN_FDNAMES", names, 1);
    else
        unsetenv("LISTEN_FDNAMES");
}

static int env_cleared(void)
{
    return !getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES");
}

static int three_sockets(void)
{
    int tcp = tcp_listener(), uds = unix_listener(tmp_path("activated.sock")), udp = socket(AF_INET6, SOCK_DGRAM, 0);
    EXPECT(tcp >= 0 && uds >= 0 && udp >= 0, "cannot create the sockets: %s", strerror(errno));
    /* through high numbers first, so that placing one cannot clobber another */
    tcp = high(tcp), uds = high(uds), udp = high(udp);
    place(tcp, 3), place(uds, 4), place(udp, 5);
    set_listen_env(3, "http:edgellmd.socket:metrics");
    sysd_listen_fd fds[4];
    int n = -1;
    err_info ei = {0};
    int rc = sysd_listen_fds(fds, 4, &n, &ei);
    unlink(tmp_path("activated.sock"));
    EXPECT(rc == 0, "sysd_listen_fds: %d %s", rc, ei.msg);
    EXPECT(n == 3, "n = %d", n);
    EXPECT(env_cleared(), "LISTEN_* still set");
    static const struct { int family, type, listening; const char *name; } want[] = {
        {AF_INET, SOCK_STREAM, 1, "http"}, {AF_UNIX, SOCK_STREAM, 1, "edgellmd.socket"},
        {AF_INET6, SOCK_DGRAM, 0, "metrics"}};
    for (int i = 0; i < 3; i++) {
        EXPECT(fds[i].fd == 3 + i, "fd %d at %d", fds[i].fd, i);
        EXPECT(fds[i].family == want[i].family && fds[i].type == want[i].type,
               "fd %d: family %d type %d", fds[i].fd, fds[i].family, fds[i].type);
        EXPECT(fds[i].listening == want[i].listening, "fd %d: listening %d", fds[i].fd, fds[i].listening);
        EXPECT(!strcmp(fds[i].name, want[i].name), "fd %d: name '%s'", fds[i].fd, fds[i].name);
        EXPECT(fcntl(fds[i].fd, F_GETFD) & FD_CLOEXEC, "fd %d: FD_CLOEXEC not set", fds[i].fd);
    }
    /* a second call finds nothing: the variables are gone */
    rc = sysd_listen_fds(fds, 4, &n, &ei);
    EXPECT(rc == 0 && n == 0, "second call: rc %d, n %d", rc, n);
    return 0;
}

START_TEST(listen_fds_typed_and_named)
{
    in_child(three_sockets);
}
END_TEST

static int names_default_to_unknown(void)
{
    place(high(tcp_listener()), 3);
    set_listen_env(1, NULL);
    sysd_listen_fd fd;
    int n;
    err_info ei = {0};
    int rc = sysd_listen_fds(&fd, 1, &n, &ei);
    EXPECT(rc == 0 && n == 1, "rc %d (%s), n %d", rc, ei.msg, n);
    EXPECT(!strcmp(fd.name, "unknown") && fd.family == AF_INET && fd.listening, "name '%s' family %d", fd.name,
           fd.family);
    return 0;
}

START_TEST(listen_fds_without_names)
{
    in_child(names_default_to_unknown);
}
END_TEST

static int other_pid_is_ignored(void)
{
    place(high(tcp_listener()), 3);
    set_listen_env(1, "http");
    char v[32];
    snprintf(v, sizeof v, "%d", (int)getppid());
    setenv("LISTEN_PID", v, 1);
    sysd_listen_fd fd;
    int n = -1;
    err_info ei = {0};
    int rc = sysd_listen_fds(&fd, 1, &n, &ei);
    EXPECT(rc == 0 && n == 0, "rc %d n %d", rc, n);
    EXPECT(env_cleared(), "LISTEN_* still set");
    EXPECT(!(fcntl(3, F_GETFD) & FD_CLOEXEC), "fd 3 was touched although it is not ours");
    return 0;
}

START_TEST(listen_fds_for_another_process)
{
    in_child(other_pid_is_ignored);
}
END_TEST

/* One bad environment: sysd_listen_fds must fail with want and a message containing what. */
typedef struct bad_case {
    int n_sockets;      /* listening TCP sockets placed at 3.. */
    int pipe_at;        /* > 0: a pipe's read end at this fd */
    const char *fds, *names;
    int max;
    int want;
    const char *what;
} bad_case;

static const bad_case bad_cases[] = {
    {1, 4, "2", NULL, 4, -ENOTSOCK, "fd 4 is not a socket"},
    {1, 0, "2", NULL, 4, -EBADF, "fd 4 is not open"},
    {2, 0, "2", "http", 4, -EINVAL, "names fewer"},
    {1, 0, "1", "http:unix", 4, -EINVAL, "names more"},
    {3, 0, "3", NULL, 2, -E2BIG, "more sockets than the 2"},
    {1, 0, "one", NULL, 4, -EINVAL, "LISTEN_FDS='one'"},
};
static int bad_index;

static int bad_environment(void)
{
    const bad_case *c = &bad_cases[bad_index];
    close(4); /* whatever was inherited there: case 2 needs fd 4 closed */
    for (int i = 0; i < c->n_sockets; i++)
        place(high(tcp_listener()), 3 + i);
    if (c->pipe_at) {
        int p[2];
        EXPECT(pipe(p) == 0, "pipe");
        place(high(p[0]), c->pipe_at);
    }
    set_listen_env(0, c->names);
    setenv("LISTEN_FDS", c->fds, 1);
    sysd_listen_fd fds[4];
    int n = -1;
    err_info ei = {0};
    int rc = sysd_listen_fds(fds, c->max, &n, &ei);
    EXPECT(rc == c->want, "case %d: rc %d, want %d (%s)", bad_index, rc, c->want, ei.msg);
    EXPECT(n == 0, "case %d: n %d after a failure", bad_index, n);
    EXPECT(strstr(ei.msg, c->what), "case %d: message '%s' lacks '%s'", bad_index, ei.msg, c->what);
    EXPECT(env_cleared(), "case %d: LISTEN_* still set", bad_index);
    return 0;
}

START_TEST(listen_fds_refuses_bad_environment)
{
    bad_index = _i;
    in_child(bad_environment);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sdnotify");
    TCase *tc = tcase_create("notify");
    tcase_add_test(tc, notify_without_socket_is_a_noop);
    tcase_add_test(tc, notify_path_socket);
    tcase_add_test(tc, notify_abstract_socket);
    tcase_add_test(tc, notify_reloading_carries_monotonic_time);
    tcase_add_test(tc, notify_rejects_bad_addresses);
    tcase_add_test(tc, watchdog_period);
    suite_add_tcase(s, tc);
    tc = tcase_create("listen_fds");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, listen_fds_typed_and_named);
    tcase_add_test(tc, listen_fds_without_names);
    tcase_add_test(tc, listen_fds_for_another_process);
    tcase_add_loop_test(tc, listen_fds_refuses_bad_environment, 0, sizeof bad_cases / sizeof bad_cases[0]);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
