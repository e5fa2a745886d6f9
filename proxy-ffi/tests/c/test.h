/*
 * Helpers for the C tests of proxy.h: checks that print the library's last error, and
 * echo servers on 127.0.0.1 (TCP and UDP on one port) served by a thread each.
 */
#ifndef PROXY_TEST_H
#define PROXY_TEST_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "proxy.h"

static inline void print_last_error(void) {
    char buf[512];
    size_t n = 0;
    if (proxy_last_error(buf, sizeof buf, &n) == PROXY_STATUS_OK) {
        fprintf(stderr, "  last error: %s\n", buf);
    }
}

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            print_last_error();                                                         \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* `call` returns `expected`. */
#define CHECK_STATUS(call, expected)                                                    \
    do {                                                                                \
        proxy_status got_ = (call);                                                     \
        if (got_ != (proxy_status)(expected)) {                                         \
            fprintf(stderr, "%s:%d: %s returned %u, expected %s (%u)\n", __FILE__,      \
                    __LINE__, #call, (unsigned)got_, #expected, (unsigned)(expected));  \
            print_last_error();                                                         \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define OK(call) CHECK_STATUS(call, PROXY_STATUS_OK)

/* The calling thread's last error contains `needle`. */
#define CHECK_LAST_ERROR_HAS(needle)                                                    \
    do {                                                                                \
        char le_[512];                                                                  \
        size_t len_ = 0;                                                                \
        OK(proxy_last_error(le_, sizeof le_, &len_));                                   \
        if (strstr(le_, (needle)) == NULL) {                                            \
            fprintf(stderr, "%s:%d: last error \"%s\" lacks \"%s\"\n", __FILE__,        \
                    __LINE__, le_, (needle));                                           \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline struct sockaddr_in loopback(uint16_t port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static inline void set_timeouts(int fd) {
    struct timeval tv = {10, 0};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
}

/* ===== echo server ===== */

#define ECHO_MAX_CLIENTS 32

/* Echoes TCP and UDP on 127.0.0.1:port until stopped, counting what it serves. */
typedef struct {
    uint16_t port;
    int tcp_fd;
    int udp_fd;
    pthread_t thread;
    atomic_int stop;
    atomic_int tcp_connections;
    atomic_int udp_datagrams;
    char buf[65536];
} echo_server;

static inline void *echo_loop(void *arg) {
    echo_server *s = arg;
    int clients[ECHO_MAX_CLIENTS];
    int nclients = 0;
    char *buf = s->buf;
    while (!atomic_load(&s->stop)) {
        struct pollfd fds[2 + ECHO_MAX_CLIENTS];
        fds[0].fd = s->tcp_fd;
        fds[0].events = POLLIN;
        fds[1].fd = s->udp_fd;
        fds[1].events = POLLIN;
        for (int i = 0; i < nclients; i++) {
            fds[2 + i].fd = clients[i];
            fds[2 + i].events = POLLIN;
        }
        int polled = nclients;
        int ready = poll(fds, (nfds_t)(2 + polled), 50);
        if (ready <= 0) {
            continue;
        }
        if (fds[0].revents & POLLIN) {
            int c = accept(s->tcp_fd, NULL, NULL);
            if (c >= 0) {
                atomic_fetch_add(&s->tcp_connections, 1);
                if (nclients < ECHO_MAX_CLIENTS) {
                    set_timeouts(c);
                    clients[nclients++] = c;
                } else {
                    close(c);
                }
            }
        }
        if (fds[1].revents & POLLIN) {
            struct sockaddr_storage from;
            socklen_t fromlen = sizeof from;
            ssize_t n = recvfrom(s->udp_fd, buf, sizeof s->buf, 0, (struct sockaddr *)&from,
                                 &fromlen);
            if (n >= 0) {
                atomic_fetch_add(&s->udp_datagrams, 1);
                sendto(s->udp_fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fromlen);
            }
        }
        /* Backwards, so a client moved into a closed one's place was already served. */
        for (int i = polled - 1; i >= 0; i--) {
            if (!(fds[2 + i].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            ssize_t n = read(clients[i], buf, sizeof s->buf);
            size_t off = 0;
            while (n > 0 && off < (size_t)n) {
                ssize_t w = write(clients[i], buf + off, (size_t)n - off);
                if (w <= 0) {
                    n = -1;
                    break;
                }
                off += (size_t)w;
            }
            if (n <= 0) {
                close(clients[i]);
                clients[i] = clients[--nclients];
            }
        }
    }
    for (int i = 0; i < nclients; i++) {
        close(clients[i]);
    }
    return NULL;
}

/* Starts an echo server with TCP and UDP on one kernel-chosen port of 127.0.0.1. */
static inline void echo_start(echo_server *s) {
    memset(s, 0, sizeof *s);
    for (int attempt = 0; attempt < 20; attempt++) {
        s->tcp_fd = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(s->tcp_fd >= 0);
        struct sockaddr_in a = loopback(0);
        CHECK(bind(s->tcp_fd, (struct sockaddr *)&a, sizeof a) == 0);
        CHECK(listen(s->tcp_fd, 64) == 0);
        socklen_t alen = sizeof a;
        CHECK(getsockname(s->tcp_fd, (struct sockaddr *)&a, &alen) == 0);
        s->port = ntohs(a.sin_port);
        s->udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
        CHECK(s->udp_fd >= 0);
        if (bind(s->udp_fd, (struct sockaddr *)&a, sizeof a) == 0) {
            CHECK(pthread_create(&s->thread, NULL, echo_loop, s) == 0);
            return;
        }
        close(s->tcp_fd);
        close(s->udp_fd);
    }
    CHECK(!"no port free for both TCP and UDP");
}

static inline void echo_stop(echo_server *s) {
    atomic_store(&s->stop, 1);
    CHECK(pthread_join(s->thread, NULL) == 0);
    close(s->tcp_fd);
    close(s->udp_fd);
}

/* ===== clients ===== */

static inline int tcp_connect(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    set_timeouts(fd);
    struct sockaddr_in a = loopback(port);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

/* Sends `len` bytes of a pattern seeded by `seed` through `fd` and checks the echo. */
static inline void tcp_echo_check(int fd, size_t len, unsigned seed) {
    unsigned char *out = malloc(len);
    unsigned char *in = malloc(len);
    CHECK(out != NULL && in != NULL);
    for (size_t i = 0; i < len; i++) {
        out[i] = (unsigned char)((i * 31u + seed) & 0xff);
    }
    size_t sent = 0;
    size_t got = 0;
    /* Interleave writes and reads so neither side's buffers fill up. */
    while (got < len) {
        if (sent < len) {
            size_t chunk = len - sent < 16384 ? len - sent : 16384;
            ssize_t w = write(fd, out + sent, chunk);
            CHECK(w > 0);
            sent += (size_t)w;
        }
        while (got < sent) {
            ssize_t r = read(fd, in + got, len - got);
            CHECK(r > 0);
            got += (size_t)r;
        }
    }
    CHECK(memcmp(out, in, len) == 0);
    free(out);
    free(in);
}

/* One connection through `port`: a few messages and one large one, each echoed intact. */
static inline void tcp_roundtrip(uint16_t port) {
    int fd = tcp_connect(port);
    tcp_echo_check(fd, 5, 1);
    tcp_echo_check(fd, 1000, 2);
    tcp_echo_check(fd, 1 << 20, 3);
    close(fd);
}

/* The forwarder closed the connection without data (no upstream). */
static inline void tcp_expect_closed(uint16_t port) {
    int fd = tcp_connect(port);
    const char msg[] = "hello";
    (void)!write(fd, msg, sizeof msg);
    char c;
    ssize_t r = read(fd, &c, 1);
    CHECK(r <= 0);
    close(fd);
}

/* A UDP socket connected to 127.0.0.1:`port`, whose receives give up after `usec`. */
static inline int udp_connected(uint16_t port, long usec) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct timeval tv = {usec / 1000000, usec % 1000000};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    struct sockaddr_in a = loopback(port);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

/* Datagrams of several sizes through `port`, each echoed intact. */
static inline void udp_roundtrip(uint16_t port) {
    int fd = udp_connected(port, 1000000);
    static const size_t sizes[] = {1, 100, 1400, 9000, 60000};
    unsigned char *out = malloc(60000);
    unsigned char *in = malloc(65536);
    CHECK(out != NULL && in != NULL);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t len = sizes[k];
        for (size_t i = 0; i < len; i++) {
            out[i] = (unsigned char)((i * 7u + k) & 0xff);
        }
        /* UDP may drop: retry a few times. A late echo of an earlier datagram (another
         * size, after a timeout and a resend) is skipped, not taken for this one's. */
        int echoed = 0;
        for (int attempt = 0; attempt < 20 && !echoed; attempt++) {
            CHECK(send(fd, out, len, 0) == (ssize_t)len);
            ssize_t r;
            while ((r = recv(fd, in, 65536, 0)) >= 0) {
                if (r == (ssize_t)len && memcmp(out, in, len) == 0) {
                    echoed = 1;
                    break;
                }
            }
        }
        CHECK(echoed);
    }
    free(out);
    free(in);
    close(fd);
}

/* ===== forwarder helpers ===== */

static inline proxy_config *config_to(proxy_transport transport, const char *listen,
                                      const char *target) {
    proxy_config *c = proxy_config_new();
    CHECK(c != NULL);
    OK(proxy_config_set_transport(c, transport));
    OK(proxy_config_add_listen(c, listen));
    OK(proxy_config_set_target(c, target));
    return c;
}

static inline proxy_config *config_to_port(proxy_transport transport, uint16_t port) {
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)port);
    return config_to(transport, "127.0.0.1:0", target);
}

/* Starts a forwarder from 127.0.0.1:0 to 127.0.0.1:port. */
static inline proxy_forwarder *start_to_port(proxy_transport transport, uint16_t port) {
    proxy_config *c = config_to_port(transport, port);
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);
    return f;
}

static inline uint16_t port_of(const proxy_forwarder *f) {
    uint16_t port = 0;
    OK(proxy_forwarder_port(f, 0, &port));
    CHECK(port != 0);
    return port;
}

static inline proxy_stats stats_of(const proxy_forwarder *f) {
    proxy_stats s;
    OK(proxy_forwarder_stats(f, &s, sizeof s));
    return s;
}

/* Reads `f`'s stats into `s` until `cond` holds, for up to 5 s (counters are updated by
 * the forwarder's threads, a moment after the traffic they count). */
#define EVENTUALLY(f, s, cond)                                                          \
    do {                                                                                \
        double deadline_ = now_seconds() + 5;                                           \
        (s) = stats_of(f);                                                              \
        while (!(cond) && now_seconds() < deadline_) {                                  \
            sleep_ms(5);                                                                \
            (s) = stats_of(f);                                                          \
        }                                                                               \
        CHECK(cond);                                                                    \
    } while (0)

/* Waits up to 5 s for the forwarder to have no TCP connection open. */
static inline proxy_stats wait_idle(const proxy_forwarder *f) {
    double deadline = now_seconds() + 5;
    proxy_stats s = stats_of(f);
    while (s.connections_open != 0 && now_seconds() < deadline) {
        sleep_ms(5);
        s = stats_of(f);
    }
    CHECK(s.connections_open == 0);
    return s;
}

#endif /* PROXY_TEST_H */
