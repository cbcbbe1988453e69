/* sdnotify — see sdnotify.h. The formats follow sd_notify(3), sd_watchdog_enabled(3) and
 * sd_listen_fds(3); only the AF_UNIX notification socket is supported (systemd's vsock
 * form is for virtual machines, which an edge gateway is not). */
#include "daemon/sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Parses a whole decimal unsigned number; -1 when text is not one. */
static int parse_u64(const char *text, uint64_t *out)
{
    if (!text || *text < '0' || *text > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* $NOTIFY_SOCKET as a socket address: "/path" or "@abstract". */
static int notify_address(const char *env, struct sockaddr_un *sa, socklen_t *len, err_info *ei)
{
    size_t n = strlen(env);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if ((env[0] != '/' && env[0] != '@') || n < 2 || n > sizeof sa->sun_path)
        return err_set(ei, -EINVAL, "NOTIFY_SOCKET='%s' is neither an absolute path nor an @abstract name", env);
    if (env[0] == '/' && n == sizeof sa->sun_path) /* a path needs room for its NUL */
        return err_set(ei, -EINVAL, "NOTIFY_SOCKET='%s' is too long", env);
    memcpy(sa->sun_path, env, n);
    if (env[0] == '@')
        sa->sun_path[0] = 0; /* abstract: the name is the bytes after the NUL, not terminated */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (env[0] == '/'));
    return 0;
}

static int send_state(const char *state, size_t len, err_info *ei)
{
    const char *env = getenv("NOTIFY_SOCKET");
    if (!env || !*env)
        return 0;
    struct sockaddr_un sa;
    socklen_t sa_len = 0;
    int rc = notify_address(env, &sa, &sa_len, ei);
    if (rc)
        return rc;
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return err_set(ei, -errno, "NOTIFY_SOCKET: socket: %s", strerror(errno));
    ssize_t sent = sendto(s, state, len, MSG_NOSIGNAL, (const struct sockaddr *)&sa, sa_len);
    rc = sent == (ssize_t)len ? 1 : sent < 0 ? -errno : -EMSGSIZE;
    close(s);
    if (rc < 0)
        return err_set(ei, rc, "NOTIFY_SOCKET=%s: %s", env, strerror(-rc));
    return rc;
}

int sysd_notify(err_info *ei, const char *fmt, ...)
{
    char state[SYSD_STATE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(state, sizeof state, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof state)
        return err_set(ei, -EMSGSIZE, "notification longer than %d bytes", SYSD_STATE_MAX - 1);
    return send_state(state, (size_t)n, ei);
}

int sysd_notify_reloading(const char *status, err_info *ei)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    return sysd_notify(ei, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64 "%s%s", usec, status ? "\nSTATUS=" : "",
                       status ? status : "");
}

int sysd_watchdog_usec(uint64_t *usec, err_info *ei)
{
    *usec = 0;
    const char *text = getenv("WATCHDOG_USEC");
    if (!text)
        return 0;
    uint64_t v, pid;
    if (parse_u64(text, &v) || v == 0)
        return err_set(ei, -EINVAL, "WATCHDOG_USEC='%s' is not a positive number of microseconds", text);
    const char *pid_text = getenv("WATCHDOG_PID");
    if (pid_text) {
        if (parse_u64(pid_text, &pid) || pid == 0)
            return err_set(ei, -EINVAL, "WATCHDOG_PID='%s' is not a process id", pid_text);
        if (pid != (uint64_t)getpid())
            return 0; /* meant for the process that exec'd us, e.g. a wrapper script */
    }
    *usec = v;
    return 1;
}

/* Fills one entry for fd after checking it is an open socket, and marks it close-on-exec
 * (systemd passes it inheritable; our children must not keep the listener alive). */
static int take_fd(int fd, const char *name, size_t name_len, sysd_listen_fd *out, err_info *ei)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0)
        return err_set(ei, -EBADF, "LISTEN_FDS: fd %d is not open", fd);
    if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
        return err_set(ei, -errno, "LISTEN_FDS: fd %d: cannot set FD_CLOEXEC: %s", fd, strerror(errno));
    int type, listening;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return err_set(ei, -errno, "LISTEN_FDS: fd %d is not a socket: %s", fd, strerror(errno));
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
        listening = 0;
    struct sockaddr_storage ss;
    len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return err_set(ei, -errno, "LISTEN_FDS: fd %d: getsockname: %s", fd, strerror(errno));
    if (name_len >= SYSD_FDNAME_MAX)
        return err_set(ei, -EINVAL, "LISTEN_FDNAMES: name of fd %d is longer than %d bytes", fd, SYSD_FDNAME_MAX - 1);
    *out = (sysd_listen_fd){.fd = fd, .family = ss.ss_family, .type = type, .listening = listening != 0};
    memcpy(out->name, name, name_len);
    out->name[name_len] = 0;
    return 0;
}

static int take_listen_fds(const char *pid_text, const char *fds_text, const char *names, sysd_listen_fd *out,
                           int max, int *n, err_info *ei)
{
    uint64_t pid, count;
    if (!pid_text || !fds_text)
        return 0;
    if (parse_u64(pid_text, &pid))
        return err_set(ei, -EINVAL, "LISTEN_PID='%s' is not a process id", pid_text);
    if (pid != (uint64_t)getpid())
        return 0; /* passed to the process that exec'd us */
    if (parse_u64(fds_text, &count) || count > (uint64_t)(INT32_MAX - SYSD_LISTEN_FDS_START))
        return err_set(ei, -EINVAL, "LISTEN_FDS='%s' is not a count of descriptors", fds_text);
    if (count > (uint64_t)max)
        return err_set(ei, -E2BIG, "LISTEN_FDS=%" PRIu64 ": more sockets than the %d expected", count, max);
    const char *rest = names; /* NULL when no names were passed: every fd is "unknown" */
    for (int i = 0; i < (int)count; i++) {
        const char *name = "unknown";
        size_t len = strlen(name);
        if (rest) {
            const char *end = strchr(rest, ':');
            if (!end && i + 1 < (int)count)
                return err_set(ei, -EINVAL, "LISTEN_FDNAMES='%s' names fewer than the %" PRIu64 " fds", names, count);
            name = rest;
            len = end ? (size_t)(end - rest) : strlen(rest);
            rest = end ? end + 1 : NULL;
        }
        int rc = take_fd(SYSD_LISTEN_FDS_START + i, name, len, &out[i], ei);
        if (rc)
            return rc;
    }
    if (count && rest)
        return err_set(ei, -EINVAL, "LISTEN_FDNAMES='%s' names more than the %" PRIu64 " fds", names, count);
    *n = (int)count;
    return 0;
}

int sysd_listen_fds(sysd_listen_fd *out, int max, int *n, err_info *ei)
{
    *n = 0;
    int rc = take_listen_fds(getenv("LISTEN_PID"), getenv("LISTEN_FDS"), getenv("LISTEN_FDNAMES"), out, max, n, ei);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (rc)
        *n = 0;
    return rc;
}
