/* sock — see sock.h. */
#include "sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Connections the kernel holds before the daemon accepts them; bursts of clients beyond
 * the connection limit wait here instead of being refused. */
enum { BACKLOG = 128 };

int sock_listen_tcp(const char *host, int port, int *fd, int *bound_port, err_info *ei)
{
    *fd = -1;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *list = NULL;
    int gai = getaddrinfo(host, service, &hints, &list);
    if (gai)
        return err_set(ei, -EINVAL, "--host %s: %s", host, gai_strerror(gai));
    int rc = -EADDRNOTAVAIL;
    for (struct addrinfo *a = list; a && *fd < 0; a = a->ai_next) {
        int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (s < 0) {
            rc = -errno;
            continue;
        }
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, a->ai_addr, a->ai_addrlen) == 0 && listen(s, BACKLOG) == 0)
            *fd = s;
        else {
            rc = -errno;
            close(s);
        }
    }
    freeaddrinfo(list);
    if (*fd < 0)
        return err_set(ei, rc, "cannot listen on %s:%d: %s", host, port, strerror(-rc));
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(*fd, (struct sockaddr *)&ss, &len);
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

/* True when something accepts connections at addr. */
static int socket_is_live(const struct sockaddr_un *addr)
{
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return 0;
    int live = connect(s, (const struct sockaddr *)addr, sizeof *addr) == 0;
    close(s);
    return live;
}

int sock_listen_unix(const char *path, int mode, int *fd, err_info *ei)
{
    *fd = -1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return err_set(ei, -ENAMETOOLONG, "--socket %s: longer than %zu bytes", path, sizeof addr.sun_path - 1);
    strcpy(addr.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return err_set(ei, -EEXIST, "--socket %s: exists and is not a socket", path);
        if (socket_is_live(&addr))
            return err_set(ei, -EADDRINUSE, "--socket %s: another process is serving on it", path);
        unlink(path); /* left behind by a daemon that did not exit cleanly */
    }
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return err_set(ei, -errno, "--socket %s: socket: %s", path, strerror(errno));
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(path, (mode_t)mode) < 0 || listen(s, BACKLOG) < 0) {
        int rc = -errno;
        close(s);
        return err_set(ei, rc, "--socket %s: %s", path, strerror(-rc));
    }
    *fd = s;
    return 0;
}
