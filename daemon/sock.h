/* sock — the daemon's listening sockets, created here rather than by libmicrohttpd so that
 * every listener, TCP, Unix or (later) inherited from systemd via LISTEN_FDS, reaches the
 * HTTP layer the same way: as a listening descriptor.
 * Not here: accepting or serving connections (api/http.c). */
#ifndef EDGELLM_SOCK_H
#define EDGELLM_SOCK_H

#include "engine/err.h"

/* Binds host:port (IPv4 or IPv6 literal or name; port 0 picks a free one) and listens.
 * *fd is the caller's to close; *bound_port is the port actually bound. */
int sock_listen_tcp(const char *host, int port, int *fd, int *bound_port, err_info *ei);
/* Binds a Unix stream socket at path with permission bits mode and listens. A stale socket
 * file (nothing accepting on it) is replaced; a live one or a non-socket file is an error. */
int sock_listen_unix(const char *path, int mode, int *fd, err_info *ei);

#endif
