/* sdnotify — the two systemd protocols a service speaks, implemented from their documented
 * wire formats without libsystemd:
 *   - readiness notification (sd_notify(3)): newline-separated KEY=VALUE lines sent as one
 *     datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the
 *     abstract namespace); plus the watchdog period from $WATCHDOG_USEC / $WATCHDOG_PID;
 *   - socket activation (sd_listen_fds(3)): listening sockets inherited from fd 3 on, counted
 *     by $LISTEN_FDS, addressed to the process $LISTEN_PID, named by $LISTEN_FDNAMES.
 * Outside systemd every call is a cheap no-op, so the daemon calls them unconditionally.
 *
 * Not here: deciding when the daemon is ready or reloading (edgellmd_main.c), serving the
 * inherited sockets (api/http.c). Never prints. */
#ifndef EDGELLM_SDNOTIFY_H
#define EDGELLM_SDNOTIFY_H

#include <stdint.h>

#include "engine/err.h"

/* Sends one notification: fmt (printf-style) expands to lines such as "READY=1\nSTATUS=serving
 * qwen2" or "STOPPING=1" (at most SYSD_STATE_MAX bytes). Returns 1 when sent, 0 when
 * $NOTIFY_SOCKET is unset (not run by systemd, or NotifyAccess does not reach us), or a
 * negative code (-EINVAL for a malformed $NOTIFY_SOCKET, -errno from the socket) with ei
 * naming the socket. Safe from any thread; opens and closes its own socket per call. */
enum { SYSD_STATE_MAX = 4096 };
int sysd_notify(err_info *ei, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Type=notify-reload (systemd 253+) wants RELOADING=1 together with the CLOCK_MONOTONIC time
 * of the request in microseconds; this sends both (and STATUS=status unless status is NULL).
 * Send "READY=1" when the reload is done. Same returns as sysd_notify. */
int sysd_notify_reloading(const char *status, err_info *ei);

/* The watchdog period systemd expects "WATCHDOG=1" within: 1 and *usec set when
 * $WATCHDOG_USEC is set for this process ($WATCHDOG_PID absent or equal to getpid()), 0 when
 * no watchdog applies, -EINVAL (ei names the variable) when a variable is malformed. Ping
 * at half the period, as sd_watchdog_enabled(3) advises. */
int sysd_watchdog_usec(uint64_t *usec, err_info *ei);

/* Socket activation: the first inherited descriptor (SD_LISTEN_FDS_START). */
enum { SYSD_LISTEN_FDS_START = 3, SYSD_FDNAME_MAX = 256 };

typedef struct sysd_listen_fd {
    int fd;                        /* owned by the caller from now on, FD_CLOEXEC set */
    int family;                    /* AF_UNIX, AF_INET, AF_INET6, ... (getsockname) */
    int type;                      /* SOCK_STREAM, SOCK_DGRAM, ... (SO_TYPE) */
    int listening;                 /* 1 if listen() was called on it (SO_ACCEPTCONN) */
    char name[SYSD_FDNAME_MAX];    /* FileDescriptorName=, "unknown" when none was passed */
} sysd_listen_fd;

/* Takes the sockets systemd passed to this process: fills out[0 .. *n) and returns 0; *n = 0
 * when none were passed to us ($LISTEN_PID unset or another process's). Every passed fd must
 * be an open socket: otherwise -ENOTSOCK / -EBADF naming the fd (the others stay open and
 * the caller should exit). -EINVAL for malformed variables or more names than fds, -E2BIG
 * when more than max fds were passed. Always unsets LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES, so children never take them for theirs. Call once, before any thread
 * starts (it edits the environment). */
int sysd_listen_fds(sysd_listen_fd *out, int max, int *n, err_info *ei);

#endif
