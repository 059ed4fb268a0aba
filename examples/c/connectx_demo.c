/*
 * connectx_demo.c: Darwin's connectx(2) with TCP Fast Open, from C, on Linux.
 *
 * Build (from the repository root) and run as root (TUN devices and namespaces need it):
 *
 *     cargo build --release -p connectx-ffi
 *     cc -I connectx-ffi/include examples/c/connectx_demo.c -o connectx_demo \
 *        -L target/release -lconnectx -Wl,-rpath,"$PWD/target/release" -lpthread
 *     sudo ./connectx_demo
 *
 * Everything happens in a network namespace the program makes for itself (nothing on the host
 * changes): a TUN device cx0 carries the userspace stack at 192.0.2.2, the kernel's side of it
 * is 192.0.2.1, and a kernel echo server listens there with TCP Fast Open. The program then
 * connects twice the way curl does (CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT,
 * then write): the first connection gets a Fast Open cookie from the kernel, the second sends
 * its request inside the SYN.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* unshare() */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "connectx.h"

static void die(const char *what) {
    fprintf(stderr, "connectx_demo: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Write `value` to a file under /proc/sys (this namespace's copy of the setting). */
static void sysctl(const char *path, const char *value) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(value, f) < 0 || fclose(f) != 0)
        die(path);
}

/* The kernel's side: an echo server on 192.0.2.1:7 (a kernel socket, not the stack's). */
static void *kernel_echo(void *arg) {
    int listener = *(int *)arg;
    for (;;) {
        int c = accept(listener, NULL, NULL);
        if (c < 0)
            return NULL;
        char buf[512];
        ssize_t n;
        while ((n = read(c, buf, sizeof buf)) > 0)
            if (write(c, buf, (size_t)n) != n)
                break;
        close(c);
    }
}

/* A kernel counter of this namespace, from /proc/net/netstat. */
static long tcp_ext(const char *name) {
    FILE *f = fopen("/proc/net/netstat", "r");
    char names[4096], values[4096];
    long result = -1;
    while (f && fgets(names, sizeof names, f) && fgets(values, sizeof values, f)) {
        if (strncmp(names, "TcpExt:", 7) != 0)
            continue;
        char *ns = NULL, *vs = NULL;
        char *n = strtok_r(names, " \n", &ns), *v = strtok_r(values, " \n", &vs);
        for (; n && v; n = strtok_r(NULL, " \n", &ns), v = strtok_r(NULL, " \n", &vs))
            if (strcmp(n, name) == 0)
                result = atol(v);
    }
    if (f)
        fclose(f);
    return result;
}

/* One request the way curl sends it: connectx deferred, then write, then read the answer. */
static void request(const struct sockaddr_in *to, const char *text) {
    int s = cx_socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        die("cx_socket");
    sa_endpoints_t ep = {0};
    ep.sae_dstaddr = (const struct sockaddr *)to;
    ep.sae_dstaddrlen = sizeof *to;
    /* Nothing is sent yet: the SYN waits for the first write, so the data can ride in it. */
    if (connectx(s, &ep, SAE_ASSOCID_ANY, CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT,
                 NULL, 0, NULL, NULL) < 0)
        die("connectx");
    long before = tcp_ext("TCPFastOpenPassive");
    size_t len = strlen(text);
    if (cx_write(s, text, len) != (ssize_t)len)
        die("cx_write");
    char back[512];
    size_t got = 0;
    while (got < len) {
        ssize_t n = cx_read(s, back + got, len - got);
        if (n <= 0)
            die("cx_read");
        got += (size_t)n;
    }
    cx_close(s);
    int in_syn = tcp_ext("TCPFastOpenPassive") > before;
    printf("  sent %zu bytes, got them back; %s\n", len,
           in_syn ? "they rode in the SYN (TCP Fast Open, with the cached cookie)"
                  : "they went after the handshake (no cookie yet: this one fetched it)");
}

int main(void) {
    if (unshare(CLONE_NEWNET) < 0)
        die("unshare(CLONE_NEWNET) (run as root)");
    if (system("ip link set lo up") != 0)
        fprintf(stderr, "connectx_demo: could not bring lo up (is iproute2 installed?)\n");
    /* 1027: Fast Open for clients and servers, on every listener without the socket option. */
    sysctl("/proc/sys/net/ipv4/tcp_fastopen", "1027");

    cx_net *net = cx_net_new();
    cx_net_tun(net, "cx0");
    cx_net_address(net, "192.0.2.2/24");
    cx_net_peer(net, "192.0.2.1/24");
    if (cx_net_start(net) < 0) {
        fprintf(stderr, "connectx_demo: %s\n", cx_net_strerror(net));
        return 1;
    }
    printf("stack at 192.0.2.2 on cx0 (index %u); the kernel at 192.0.2.1\n",
           cx_if_nametoindex("cx0"));

    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons(7);
    inet_pton(AF_INET, "192.0.2.1", &to.sin_addr);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (listener < 0 || bind(listener, (struct sockaddr *)&to, sizeof to) < 0 ||
        listen(listener, 16) < 0)
        die("the kernel's echo server");
    pthread_t t;
    pthread_create(&t, NULL, kernel_echo, &listener);

    printf("first connection:\n");
    request(&to, "GET / HTTP/1.1\r\nHost: example.org\r\n\r\n");
    printf("second connection:\n");
    request(&to, "GET /again HTTP/1.1\r\nHost: example.org\r\n\r\n");

    cx_net_free(net);
    return 0;
}
