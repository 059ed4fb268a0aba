/*
 * connectx.h: Darwin's connectx(2) and disconnectx(2) on Linux, over a userspace TCP/IP stack
 * on TUN devices (libconnectx, the connectx-ffi crate).
 *
 * connectx() and disconnectx() have Darwin's names, signatures, types and constants, so the
 * call sites of a program written for Darwin compile as they are. The other socket calls are
 * prefixed cx_ so that they never clash with libc's; each returns what the libc call of the
 * same name returns and sets errno as it would.
 *
 * A process runs one stack at a time:
 *
 *     cx_net *net = cx_net_new();
 *     cx_net_tun(net, "cx0");                  // a TUN device (needs CAP_NET_ADMIN)
 *     cx_net_address(net, "192.0.2.2/24");     // the stack's address on it
 *     cx_net_peer(net, "192.0.2.1/24");        // the kernel's side of it
 *     if (cx_net_start(net) < 0) { fprintf(stderr, "%s\n", cx_net_strerror(net)); ... }
 *     int s = cx_socket(AF_INET, SOCK_STREAM, 0);
 *     connectx(s, &endpoints, SAE_ASSOCID_ANY, CONNECT_DATA_IDEMPOTENT, &iov, 1, &len, NULL);
 *     ...
 *     cx_net_free(net);                         // stops the stack
 *
 * Descriptors: the stack's sockets are small integers of its own (from 3 up), NOT kernel file
 * descriptors. They cannot be put in a kernel poll(2), select(2) or epoll(7) set, nor passed
 * to read(2), write(2) or close(2): use cx_poll, cx_read, cx_write, cx_close. A program that
 * waits on kernel descriptors too runs cx_poll on its own thread.
 *
 * Threads: every call may be made from any thread; blocking calls block the calling thread
 * only. Calls made with no stack running fail with ENETDOWN.
 */
#ifndef CONNECTX_H
#define CONNECTX_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ----- Darwin's types and constants (sys/socket.h on Darwin), with Darwin's values ----- */

typedef uint32_t sae_associd_t;
#define SAE_ASSOCID_ANY 0
#define SAE_ASSOCID_ALL ((sae_associd_t)(-1ULL))

typedef uint32_t sae_connid_t;
#define SAE_CONNID_ANY 0
#define SAE_CONNID_ALL ((sae_connid_t)(-1ULL))

/* connectx() flags */
#define CONNECT_RESUME_ON_READ_WRITE 0x1 /* resume connect() on read/write */
#define CONNECT_DATA_IDEMPOTENT 0x2      /* data is idempotent (may go in the SYN) */
#define CONNECT_DATA_AUTHENTICATED 0x4   /* data includes security that replaces the TFO cookie */

typedef struct sa_endpoints {
    unsigned int sae_srcif;             /* optional source interface (cx_if_nametoindex) */
    const struct sockaddr *sae_srcaddr; /* optional source address */
    socklen_t sae_srcaddrlen;           /* size of source address */
    const struct sockaddr *sae_dstaddr; /* destination address */
    socklen_t sae_dstaddrlen;           /* size of destination address */
} sa_endpoints_t;

/* Darwin's connectx(2): connect `socket` to endpoints->sae_dstaddr, optionally from a given
 * interface and source address, with data (TCP Fast Open when CONNECT_DATA_IDEMPOTENT). */
int connectx(int socket, const sa_endpoints_t *endpoints, sae_associd_t associd,
             unsigned int flags, const struct iovec *iov, unsigned int iovcnt, size_t *len,
             sae_connid_t *connid);

/* Darwin's disconnectx(2), as XNU: connid is not looked at. A TCP socket ends as close ends
 * it (FIN after the queued data) and stays open but dead: reads give 0, writes EPIPE, and
 * connectx, bind or listen again give EINVAL; one that never connected returns 0 too. A UDP
 * socket loses its peer (ENOTCONN if it had none) and may associate again. UDP datagrams up to
 * 9216 bytes are sent, in fragments above the MTU, as XNU sends them. */
int disconnectx(int socket, sae_associd_t associd, sae_connid_t connid);

/* ----- the stack ----- */

typedef struct CxNet cx_net;

/* A stack to describe, then start (NULL, with errno set, if that fails). */
cx_net *cx_net_new(void);
/* A TUN device by name: created, or attached to if it exists. */
int cx_net_tun(cx_net *net, const char *name);
/* An open TUN device (or one end of a packet socketpair) by descriptor; the stack owns it. */
int cx_net_tun_fd(cx_net *net, int fd);
/* An address of the stack on the last device, "ADDRESS/LEN". */
int cx_net_address(cx_net *net, const char *cidr);
/* The kernel's address on the last (TUN) device, "ADDRESS/LEN". */
int cx_net_peer(cx_net *net, const char *cidr);
/* A route through the last device: "ADDRESS/LEN" or "default". */
int cx_net_route(cx_net *net, const char *cidr);
/* Open the devices and start the stack; the socket calls act on it from then on. EBUSY when
 * one runs already; EINVAL for a wrong description, ENODEV/EPERM/... for a device that cannot
 * be opened: cx_net_strerror says more. A handle starts once: after a failure, free it and
 * describe the stack again on a new one. */
int cx_net_start(cx_net *net);
/* Why the last call on net failed, in words ("" if none did); valid until the next call. */
const char *cx_net_strerror(cx_net *net);
/* Stop the stack net started (blocked calls return EINTR) and free net. NULL is ignored. */
void cx_net_free(cx_net *net);

/* ----- the socket calls, as libc's ----- */

/* AF_INET or AF_INET6; SOCK_STREAM or SOCK_DGRAM, with SOCK_NONBLOCK and SOCK_CLOEXEC. */
int cx_socket(int domain, int type, int protocol);
int cx_bind(int socket, const struct sockaddr *addr, socklen_t len);
int cx_connect(int socket, const struct sockaddr *addr, socklen_t len);
/* A negative backlog is the largest (4096), as on Linux. */
int cx_listen(int socket, int backlog);
int cx_accept(int socket, struct sockaddr *addr, socklen_t *len);
/* flags: 0 or MSG_NOSIGNAL (the stack never raises SIGPIPE); others EOPNOTSUPP. */
ssize_t cx_send(int socket, const void *buf, size_t len, int flags);
ssize_t cx_recv(int socket, void *buf, size_t len, int flags);
ssize_t cx_write(int socket, const void *buf, size_t len);
ssize_t cx_read(int socket, void *buf, size_t len);
/* More than 1024 (IOV_MAX) entries: EINVAL. */
ssize_t cx_writev(int socket, const struct iovec *iov, int iovcnt);
int cx_shutdown(int socket, int how);
int cx_close(int socket);
/* Not variadic: the third argument is always given (0 for F_GETFL). F_GETFL, F_SETFL
 * (O_NONBLOCK), F_GETFD, F_SETFD. */
int cx_fcntl(int socket, int cmd, int arg);
/* The stack's descriptors only; a negative timeout waits for ever. */
int cx_poll(struct pollfd *fds, nfds_t nfds, int timeout);
/* SOL_SOCKET: SO_ERROR (int), SO_RCVTIMEO and SO_SNDTIMEO (struct timeval); IPPROTO_TCP:
 * TCP_CONGESTION (the name, NUL-padded to 16 bytes). */
int cx_getsockopt(int socket, int level, int name, void *value, socklen_t *len);
/* SOL_SOCKET: SO_RCVTIMEO and SO_SNDTIMEO (struct timeval; zero waits for ever); IPPROTO_TCP:
 * TCP_CONGESTION ("cubic", "reno", "bbr" or "none"; ENOENT for another name): a connected
 * socket's from now on, a listener's for the connections it accepts. */
int cx_setsockopt(int socket, int level, int name, const void *value, socklen_t len);
int cx_getsockname(int socket, struct sockaddr *addr, socklen_t *len);
int cx_getpeername(int socket, struct sockaddr *addr, socklen_t *len);
/* The index of one of the stack's devices (what sae_srcif takes); 0 and ENODEV if none. */
unsigned int cx_if_nametoindex(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* CONNECTX_H */
