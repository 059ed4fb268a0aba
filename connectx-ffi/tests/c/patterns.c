/* The connectx(2) patterns of C programs written for Darwin, through libconnectx, against the
 * kernel in the test's network namespace: its TCP Fast Open echo server at 192.0.2.1:7 and its
 * UDP echo at 192.0.2.1:9. Run by tests/c.rs; prints one line per check, exits 1 at the first
 * failure. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "connectx.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno));                      \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static struct sockaddr_in server(int port) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
    return sin;
}

/* Read exactly `want` bytes (the echo of what was sent). */
static void read_exactly(int s, char *buf, size_t want) {
    size_t got = 0;
    while (got < want) {
        ssize_t n = cx_read(s, buf + got, want - got);
        CHECK(n > 0, "read (%zu of %zu)", got, want);
        got += (size_t)n;
    }
}

/* curl: connectx with CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT and no data, then
 * the request with write(2): the request goes in the SYN once a cookie is cached. */
static void curl_pattern(const char *request) {
    struct sockaddr_in to = server(7);
    sa_endpoints_t ep = {0};
    ep.sae_dstaddr = (const struct sockaddr *)&to;
    ep.sae_dstaddrlen = sizeof to;
    int s = cx_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 3, "socket");
    sae_connid_t cid = 99;
    int r = connectx(s, &ep, SAE_ASSOCID_ANY,
                     CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT, NULL, 0, NULL, &cid);
    CHECK(r == 0, "curl: connectx deferred");
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    CHECK(cx_getsockname(s, (struct sockaddr *)&local, &len) == 0, "curl: getsockname");
    CHECK(len == sizeof local && local.sin_family == AF_INET, "curl: getsockname length");
    /* XNU defers only the SYN: the source address and port are known at once. */
    CHECK(local.sin_port != 0 && local.sin_addr.s_addr == htonl(0xc0000202),
          "curl: bound to 192.0.2.2 and a port before anything was sent");
    size_t n = strlen(request);
    CHECK(cx_write(s, request, n) == (ssize_t)n, "curl: write");
    char back[256];
    read_exactly(s, back, n);
    CHECK(memcmp(back, request, n) == 0, "curl: echo");
    int err = -1;
    len = sizeof err;
    CHECK(cx_getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0, "curl: SO_ERROR");
    CHECK(cx_close(s) == 0, "curl: close");
    printf("ok curl pattern (%zu bytes)\n", n);
}

/* Exim: connectx with CONNECT_DATA_IDEMPOTENT and the data in the iov; len says how much was
 * queued. */
static void exim_pattern(void) {
    struct sockaddr_in to = server(7);
    sa_endpoints_t ep = {0};
    ep.sae_dstaddr = (const struct sockaddr *)&to;
    ep.sae_dstaddrlen = sizeof to;
    int s = cx_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 3, "socket");
    char greeting[] = "EHLO example.org\r\n";
    struct iovec iov = {greeting, strlen(greeting)};
    size_t len = 0;
    sae_connid_t cid = 0;
    int r = connectx(s, &ep, SAE_ASSOCID_ANY, CONNECT_DATA_IDEMPOTENT, &iov, 1, &len, &cid);
    CHECK(r == 0, "exim: connectx");
    CHECK(len == strlen(greeting), "exim: len %zu", len);
    CHECK(cid != 0, "exim: connid");
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    CHECK(cx_getpeername(s, (struct sockaddr *)&peer, &plen) == 0 && peer.sin_port == htons(7),
          "exim: getpeername");
    char back[256];
    read_exactly(s, back, len);
    CHECK(memcmp(back, greeting, len) == 0, "exim: echo");
    CHECK(cx_shutdown(s, SHUT_WR) == 0, "exim: shutdown");
    CHECK(cx_read(s, back, sizeof back) == 0, "exim: the server closes after our FIN");
    CHECK(cx_close(s) == 0, "exim: close");
    printf("ok exim pattern\n");
}

/* A UDP association: connectx, send, recv the echo, a datagram above the MTU (sent in
 * fragments, as XNU sends up to 9216 bytes; the harness answers with its length and byte sum),
 * disconnectx, then send has no peer. */
static void udp_association(void) {
    struct sockaddr_in to = server(9);
    sa_endpoints_t ep = {0};
    ep.sae_dstaddr = (const struct sockaddr *)&to;
    ep.sae_dstaddrlen = sizeof to;
    int s = cx_socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(s >= 3, "udp socket");
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == 0, "udp: connectx");
    struct timeval tv = {5, 0};
    CHECK(cx_setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "udp: SO_RCVTIMEO");
    struct timeval back_tv;
    socklen_t tvlen = sizeof back_tv;
    CHECK(cx_getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &back_tv, &tvlen) == 0 &&
              back_tv.tv_sec == 5 && back_tv.tv_usec == 0,
          "udp: SO_RCVTIMEO read back");
    CHECK(cx_send(s, "ping", 4, 0) == 4, "udp: send");
    char buf[64];
    CHECK(cx_recv(s, buf, sizeof buf, 0) == 4 && memcmp(buf, "ping", 4) == 0, "udp: echo");

    static unsigned char big[9217];
    unsigned long sum = 0;
    for (size_t i = 0; i < 9216; i++) {
        big[i] = (unsigned char)(i * 7 + 3);
        sum += big[i];
    }
    CHECK(cx_send(s, big, 9216, 0) == 9216, "udp: 9216 bytes, above the MTU");
    ssize_t n = cx_recv(s, buf, sizeof buf - 1, 0);
    CHECK(n > 0, "udp: the answer to the big datagram");
    buf[n] = 0;
    char want[64];
    snprintf(want, sizeof want, "%d %lu", 9216, sum);
    CHECK(strcmp(buf, want) == 0, "udp: the kernel got it whole (%s, want %s)", buf, want);
    errno = 0;
    CHECK(cx_send(s, big, 9217, 0) == -1 && errno == EMSGSIZE, "udp: 9217 bytes");

    CHECK(disconnectx(s, SAE_ASSOCID_ANY, SAE_CONNID_ANY) == 0, "udp: disconnectx");
    CHECK(cx_send(s, "ping", 4, 0) == -1, "udp: send after disconnectx");
    CHECK(cx_close(s) == 0, "udp: close");
    printf("ok udp association\n");
}

/* TCP_CONGESTION, as Linux: the stack's default until set, a name in and out (NUL-padded to 16
 * bytes), ENOENT for a name it does not know, ENOPROTOOPT on a datagram socket; the connection
 * made afterwards runs what was set. */
static void tcp_congestion(void) {
    int s = cx_socket(AF_INET, SOCK_STREAM, 0);
    char name[16];
    socklen_t len = sizeof name;
    CHECK(cx_getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, name, &len) == 0 && len == 16 &&
              strcmp(name, "cubic") == 0,
          "cc: the default is cubic");
    CHECK(cx_setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "bbr", 3) == 0, "cc: set bbr");
    errno = 0;
    CHECK(cx_setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "vegas", 5) == -1 && errno == ENOENT,
          "cc: an unknown name is ENOENT");
    len = sizeof name;
    CHECK(cx_getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, name, &len) == 0 &&
              strcmp(name, "bbr") == 0,
          "cc: reads back bbr (%s)", name);
    struct sockaddr_in to = server(7);
    sa_endpoints_t ep = {0};
    ep.sae_dstaddr = (const struct sockaddr *)&to;
    ep.sae_dstaddrlen = sizeof to;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == 0, "cc: connectx");
    char back[2];
    CHECK(cx_write(s, "hi", 2) == 2, "cc: write");
    read_exactly(s, back, 2);
    CHECK(memcmp(back, "hi", 2) == 0, "cc: echo");
    CHECK(cx_setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) == 0, "cc: switch connected");
    len = sizeof name;
    CHECK(cx_getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, name, &len) == 0 &&
              strcmp(name, "reno") == 0,
          "cc: reads back reno (%s)", name);
    CHECK(cx_close(s) == 0, "cc: close");
    int u = cx_socket(AF_INET, SOCK_DGRAM, 0);
    errno = 0;
    CHECK(cx_setsockopt(u, IPPROTO_TCP, TCP_CONGESTION, "bbr", 3) == -1 && errno == ENOPROTOOPT,
          "cc: not on a datagram socket");
    CHECK(cx_close(u) == 0, "cc: close udp");
    printf("ok tcp congestion\n");
}

/* disconnectx on TCP, as XNU: any connid; the connection ends with a FIN and the socket is
 * dead (reads 0, writes EPIPE, no reconnect); one that never connected returns 0 too. */
static void tcp_disconnect(void) {
    struct sockaddr_in to = server(7);
    sa_endpoints_t ep = {0};
    ep.sae_dstaddr = (const struct sockaddr *)&to;
    ep.sae_dstaddrlen = sizeof to;
    int s = cx_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == 0, "tcp: connectx");
    char back[8];
    CHECK(cx_write(s, "bye", 3) == 3, "tcp: write");
    read_exactly(s, back, 3);
    CHECK(disconnectx(s, SAE_ASSOCID_ANY, 77) == 0, "tcp: disconnectx with any connid");
    CHECK(cx_read(s, back, sizeof back) == 0, "tcp: reads 0 after disconnectx");
    errno = 0;
    CHECK(cx_write(s, "x", 1) == -1 && errno == EPIPE, "tcp: writes EPIPE after disconnectx");
    struct pollfd p = {s, POLLIN | POLLOUT, 0};
    CHECK(cx_poll(&p, 1, 0) == 1 && p.revents == (POLLIN | POLLOUT | POLLHUP),
          "tcp: poll after disconnectx (revents %#x)", p.revents);
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == -1 && errno == EINVAL,
          "tcp: no reconnect");
    errno = 0;
    CHECK(disconnectx(s, SAE_ASSOCID_ANY, SAE_CONNID_ANY) == -1 && errno == EINVAL,
          "tcp: disconnectx twice");
    errno = 0;
    CHECK(disconnectx(s, 5, SAE_CONNID_ANY) == -1 && errno == EINVAL, "tcp: a bad associd");
    CHECK(cx_close(s) == 0, "tcp: close");
    s = cx_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(disconnectx(s, SAE_ASSOCID_ALL, SAE_CONNID_ALL) == 0, "tcp: never connected");
    CHECK(cx_close(s) == 0, "tcp: close");
    printf("ok tcp disconnectx\n");
}

/* Where XNU decides what the man page leaves open. */
static void darwin_rules(void) {
    struct sockaddr_in to = server(7);
    sa_endpoints_t ep = {0};
    ep.sae_dstaddr = (const struct sockaddr *)&to;
    ep.sae_dstaddrlen = sizeof to;
    /* CONNECT_DATA_IDEMPOTENT with nothing to send: a plain SYN (the harness counts the
     * kernel's cookie requests); an odd associd and unknown flags are ignored. */
    int s = cx_socket(AF_INET, SOCK_STREAM, 0);
    sae_connid_t cid = 0;
    CHECK(connectx(s, &ep, 42, CONNECT_DATA_IDEMPOTENT | 0x100, NULL, 0, NULL, &cid) == 0,
          "connectx with associd 42 and flag 0x100");
    CHECK(cid != 0, "connid");
    CHECK(cx_close(s) == 0, "close");
    /* A deferred connect reports at once what a connect would: a source not ours. */
    s = cx_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in not_ours = server(0);
    inet_pton(AF_INET, "192.0.2.77", &not_ours.sin_addr);
    ep.sae_srcaddr = (const struct sockaddr *)&not_ours;
    ep.sae_srcaddrlen = sizeof not_ours;
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, CONNECT_RESUME_ON_READ_WRITE, NULL, 0, NULL, NULL) ==
                  -1 &&
              errno == EADDRNOTAVAIL,
          "deferred connectx from an address not ours");
    ep.sae_srcaddr = NULL;
    ep.sae_srcaddrlen = 0;
    CHECK(cx_close(s) == 0, "close");
    /* *len and *connid are 0 after a failure. */
    s = cx_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in port0 = server(0);
    ep.sae_dstaddr = (const struct sockaddr *)&port0;
    char data[] = "data";
    struct iovec iov = {data, 4};
    size_t len = 9;
    cid = 9;
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, &iov, 1, &len, &cid) == -1 &&
              errno == EADDRNOTAVAIL && len == 0 && cid == 0,
          "failure writes 0 to len and connid");
    /* A second connectx during an attempt: EALREADY non-blocking, EISCONN blocking. */
    struct sockaddr_in silent = server(7);
    inet_pton(AF_INET, "192.0.2.99", &silent.sin_addr);
    ep.sae_dstaddr = (const struct sockaddr *)&silent;
    CHECK(cx_fcntl(s, F_SETFL, O_NONBLOCK) == 0, "non-blocking");
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == -1 && errno == EINPROGRESS,
          "non-blocking connectx");
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == -1 && errno == EALREADY,
          "second non-blocking connectx");
    CHECK(cx_fcntl(s, F_SETFL, 0) == 0, "blocking");
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == -1 && errno == EISCONN,
          "second blocking connectx");
    CHECK(cx_close(s) == 0, "close");
    /* A deferred connect to a peer that never answers: the first (non-blocking) write starts
     * it and takes the data; a second one before the handshake completes is ENOTCONN. */
    s = cx_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ep.sae_dstaddr = (const struct sockaddr *)&silent;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, CONNECT_RESUME_ON_READ_WRITE, NULL, 0, NULL, NULL) ==
              0,
          "deferred connectx");
    CHECK(cx_write(s, "first", 5) == 5, "first write");
    errno = 0;
    CHECK(cx_write(s, "second", 6) == -1 && errno == ENOTCONN, "second write during handshake");
    CHECK(cx_close(s) == 0, "close");
    /* Non-blocking with an iov: EINPROGRESS, and *len counts every byte queued. */
    s = cx_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ep.sae_dstaddr = (const struct sockaddr *)&silent;
    static char big[5000];
    struct iovec two[2] = {{big, 3000}, {big + 3000, 2000}};
    len = 0;
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, CONNECT_DATA_IDEMPOTENT, two, 2, &len, &cid) == -1 &&
              errno == EINPROGRESS && len == 5000 && cid != 0,
          "non-blocking connectx queues everything (len %zu)", len);
    CHECK(cx_close(s) == 0, "close");
    printf("ok darwin rules\n");
}

/* What a C caller can get wrong gets errno, not a crash. */
static void bad_input(void) {
    int s = cx_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 3, "socket");
    errno = 0;
    CHECK(connectx(s, NULL, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == -1 && errno == EINVAL,
          "NULL endpoints");
    struct sockaddr_in to = server(7);
    sa_endpoints_t ep = {0};
    ep.sae_dstaddr = (const struct sockaddr *)&to;
    ep.sae_dstaddrlen = 4;
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, NULL, 0, NULL, NULL) == -1 && errno == EINVAL,
          "short address");
    ep.sae_dstaddrlen = sizeof to;
    struct iovec iov = {NULL, 5};
    size_t len = 7;
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, &iov, 1, &len, NULL) == -1 && errno == EFAULT &&
              len == 0,
          "NULL iov_base");
    errno = 0;
    CHECK(connectx(s, &ep, SAE_ASSOCID_ANY, 0, &iov, 1025, &len, NULL) == -1 && errno == EINVAL,
          "more than IOV_MAX entries");
    errno = 0;
    CHECK(cx_send(999, "x", 1, 0) == -1 && errno == EBADF, "send on a descriptor not open");
    errno = 0;
    CHECK(cx_send(s, NULL, 1, 0) == -1 && errno == EFAULT, "send from NULL");
    errno = 0;
    CHECK(cx_getsockname(s, NULL, NULL) == -1 && errno == EFAULT, "getsockname into NULL");
    errno = 0;
    CHECK(cx_socket(AF_UNIX, SOCK_STREAM, 0) == -1 && errno == EAFNOSUPPORT, "AF_UNIX");
    CHECK(cx_fcntl(s, F_SETFL, O_NONBLOCK) == 0, "F_SETFL");
    CHECK(cx_fcntl(s, F_GETFL, 0) & O_NONBLOCK, "F_GETFL");
    CHECK(cx_close(s) == 0, "close");
    errno = 0;
    /* EBADF, or ENOTSOCK when the number happens to be a kernel descriptor of the process. */
    CHECK(cx_close(s) == -1 && (errno == EBADF || errno == ENOTSOCK), "close twice");
    printf("ok bad input\n");
}

int main(void) {
    /* Before a stack runs: ENETDOWN. */
    errno = 0;
    CHECK(cx_socket(AF_INET, SOCK_STREAM, 0) == -1 && errno == ENETDOWN, "no stack yet");
    cx_net *net = cx_net_new();
    CHECK(net != NULL, "cx_net_new");
    CHECK(cx_net_address(net, "192.0.2.2/24") == 0, "an address before a device is kept");
    errno = 0;
    CHECK(cx_net_start(net) == -1 && errno == EINVAL && strlen(cx_net_strerror(net)) > 0,
          "start without a device");
    cx_net_free(net);

    net = cx_net_new();
    CHECK(cx_net_tun(net, "cx0") == 0, "tun");
    CHECK(cx_net_address(net, "192.0.2.2/24") == 0, "address");
    CHECK(cx_net_peer(net, "192.0.2.1/24") == 0, "peer");
    CHECK(cx_net_start(net) == 0, "start: %s", cx_net_strerror(net));
    cx_net *second = cx_net_new();
    CHECK(cx_net_tun(second, "cx1") == 0, "second tun");
    errno = 0;
    CHECK(cx_net_start(second) == -1 && errno == EBUSY, "a second stack");
    cx_net_free(second);
    CHECK(cx_if_nametoindex("cx0") > 0, "if_nametoindex");

    darwin_rules();                          /* first: its plain SYN must not fetch a cookie */
    curl_pattern("GET / HTTP/1.1\r\n\r\n"); /* fetches the server's cookie */
    curl_pattern("GET /again HTTP/1.1\r\n\r\n"); /* the request in the SYN */
    exim_pattern();                                /* the greeting in the SYN */
    udp_association();
    tcp_disconnect();
    tcp_congestion();
    bad_input();

    cx_net_free(net);
    errno = 0;
    CHECK(cx_socket(AF_INET, SOCK_STREAM, 0) == -1 && errno == ENETDOWN, "stack stopped");
    printf("ok all\n");
    return 0;
}
