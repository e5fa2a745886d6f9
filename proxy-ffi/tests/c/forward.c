/*
 * Traffic through started forwarders: TCP, UDP and both on one port, with content
 * checks against echo servers; addresses and stats; reload to a new target; graceful
 * shutdown; two forwarders in one process.
 */
#include "test.h"

static void tcp_forwarding(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = config_to_port(PROXY_TRANSPORT_TCP, echo.port);
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_IDLE, 60000));
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    CHECK(f != NULL);
    proxy_config_free(c); /* the forwarder keeps what it needs */

    size_t count = 0;
    OK(proxy_forwarder_address_count(f, &count));
    CHECK(count == 1);
    char addr[PROXY_ADDRESS_BUFFER_SIZE];
    size_t n = 0;
    OK(proxy_forwarder_address(f, 0, addr, sizeof addr, &n));
    CHECK(n == strlen(addr));
    uint16_t port = port_of(f);
    char expected[PROXY_ADDRESS_BUFFER_SIZE];
    snprintf(expected, sizeof expected, "127.0.0.1:%u", (unsigned)port);
    CHECK(strcmp(addr, expected) == 0);
    CHECK(port != echo.port);

    tcp_roundtrip(port);
    tcp_roundtrip(port);
    proxy_stats s = wait_idle(f);
    CHECK(s.connections_total == 2);
    size_t per_connection = 5 + 1000 + (1 << 20);
    CHECK(s.bytes_to_upstream == 2 * per_connection);
    CHECK(s.bytes_to_downstream == 2 * per_connection);
    CHECK(s.udp_sessions_total == 0);
    CHECK(atomic_load(&echo.tcp_connections) == 2);
    /* Ejection, PROXY headers and access rules are off: nothing counted there. */
    CHECK(s.ejections == 0 && s.all_ejected == 0);
    CHECK(s.proxy_headers_rejected == 0 && s.denied == 0);

    OK(proxy_forwarder_shutdown(f, 1000));
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok tcp_forwarding");
}

static void udp_forwarding(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = config_to_port(PROXY_TRANSPORT_UDP, echo.port);
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_UDP_SESSION_IDLE, 5000));
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);

    uint16_t port = port_of(f);
    udp_roundtrip(port);
    proxy_stats s;
    /* Counters are bumped after each send returns, so an echo may reach the client
     * before the count of what it echoes: wait for both. */
    EVENTUALLY(f, s,
               s.udp_datagrams_to_downstream >= 5 && s.udp_datagrams_to_upstream >= 5 &&
                   s.bytes_to_upstream >= 1 + 100 + 1400 + 9000 + 60000);
    CHECK(s.udp_sessions_total >= 1);
    CHECK(s.connections_total == 0);

    OK(proxy_forwarder_shutdown(f, 0));
    s = stats_of(f); /* the final counts stay readable */
    CHECK(s.udp_sessions_total >= 1);
    CHECK(s.udp_sessions_open == 0);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok udp_forwarding");
}

static void both_protocols_on_one_port(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = config_to_port(PROXY_TRANSPORT_BOTH, echo.port);
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);

    uint16_t port = port_of(f);
    tcp_roundtrip(port);
    udp_roundtrip(port);
    proxy_stats s = wait_idle(f);
    CHECK(s.connections_total == 1);
    EVENTUALLY(f, s,
               s.udp_datagrams_to_downstream >= 5 && s.bytes_to_upstream >= (1 << 20) + 60000);
    CHECK(s.udp_sessions_total >= 1);

    OK(proxy_forwarder_shutdown(f, 100));
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok both_protocols_on_one_port");
}

static void reload_to_a_new_target(void) {
    echo_server a, b;
    echo_start(&a);
    echo_start(&b);
    proxy_config *c = config_to_port(PROXY_TRANSPORT_TCP, a.port);
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    uint16_t port = port_of(f);

    /* A connection open across the reload stays with the old target. */
    int before = tcp_connect(port);
    tcp_echo_check(before, 100, 7);
    CHECK(atomic_load(&a.tcp_connections) == 1);

    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)b.port);
    OK(proxy_config_set_target(c, target));
    OK(proxy_forwarder_reload(f, c));
    CHECK(port_of(f) == port); /* the same config keeps the port 0 listener */

    tcp_roundtrip(port);
    CHECK(atomic_load(&b.tcp_connections) == 1);
    CHECK(atomic_load(&a.tcp_connections) == 1);
    tcp_echo_check(before, 100, 8);
    close(before);

    /* Another listen address: bound by the reload, after the kept one. */
    OK(proxy_config_add_listen(c, "127.0.0.1:0"));
    OK(proxy_forwarder_reload(f, c));
    size_t count = 0;
    OK(proxy_forwarder_address_count(f, &count));
    CHECK(count == 2);
    CHECK(port_of(f) == port);
    uint16_t second = 0;
    OK(proxy_forwarder_port(f, 1, &second));
    CHECK(second != 0 && second != port);
    tcp_roundtrip(second);
    CHECK(atomic_load(&b.tcp_connections) == 2);

    /* The transport cannot change; nothing else does then. */
    OK(proxy_config_set_transport(c, PROXY_TRANSPORT_UDP));
    CHECK_STATUS(proxy_forwarder_reload(f, c), PROXY_STATUS_RELOAD_TRANSPORT_MISMATCH);
    CHECK_LAST_ERROR_HAS("serves TCP");
    OK(proxy_forwarder_address_count(f, &count));
    CHECK(count == 2);

    proxy_stats s = wait_idle(f);
    CHECK(s.connections_total == 3);

    OK(proxy_forwarder_shutdown(f, 100));
    CHECK_STATUS(proxy_forwarder_reload(f, c), PROXY_STATUS_RELOAD_TRANSPORT_MISMATCH);
    OK(proxy_config_set_transport(c, PROXY_TRANSPORT_TCP));
    CHECK_STATUS(proxy_forwarder_reload(f, c), PROXY_STATUS_NOT_RUNNING);
    OK(proxy_forwarder_address_count(f, &count));
    CHECK(count == 0);
    OK(proxy_forwarder_shutdown(f, 100)); /* a second shutdown does nothing */
    proxy_forwarder_free(f);
    proxy_config_free(c);
    echo_stop(&a);
    echo_stop(&b);
    puts("ok reload_to_a_new_target");
}

static void reload_both_protocols(void) {
    echo_server a, b;
    echo_start(&a);
    echo_start(&b);
    proxy_config *c = config_to_port(PROXY_TRANSPORT_BOTH, a.port);
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    uint16_t port = port_of(f);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)b.port);
    OK(proxy_config_set_target(c, target));
    OK(proxy_forwarder_reload(f, c));
    CHECK(port_of(f) == port);
    tcp_roundtrip(port);
    udp_roundtrip(port);
    CHECK(atomic_load(&b.tcp_connections) == 1);
    CHECK(atomic_load(&b.udp_datagrams) >= 5);
    CHECK(atomic_load(&a.tcp_connections) == 0);
    CHECK(atomic_load(&a.udp_datagrams) == 0);
    proxy_forwarder_free(f); /* free without shutdown stops it at once */
    proxy_config_free(c);
    echo_stop(&a);
    echo_stop(&b);
    puts("ok reload_both_protocols");
}

static void graceful_shutdown_lets_connections_finish(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = config_to_port(PROXY_TRANSPORT_TCP, echo.port);
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);
    uint16_t port = port_of(f);
    int fd = tcp_connect(port);
    tcp_echo_check(fd, 10, 1);
    shutdown(fd, SHUT_WR); /* the client is done: the connection drains within the grace */
    char ch;
    CHECK(read(fd, &ch, 1) == 0);
    double start = now_seconds();
    OK(proxy_forwarder_shutdown(f, 5000));
    CHECK(now_seconds() - start < 4.0);
    close(fd);
    proxy_forwarder_free(f);

    /* A connection still open when the grace ends is closed. */
    c = config_to_port(PROXY_TRANSPORT_TCP, echo.port);
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);
    fd = tcp_connect(port_of(f));
    tcp_echo_check(fd, 10, 2);
    start = now_seconds();
    OK(proxy_forwarder_shutdown(f, 200));
    double took = now_seconds() - start;
    CHECK(took >= 0.15 && took < 4.0);
    CHECK(read(fd, &ch, 1) <= 0);
    close(fd);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok graceful_shutdown_lets_connections_finish");
}

static void two_forwarders_in_one_process(void) {
    echo_server a, b;
    echo_start(&a);
    echo_start(&b);
    proxy_config *ca = config_to_port(PROXY_TRANSPORT_TCP, a.port);
    proxy_config *cb = config_to_port(PROXY_TRANSPORT_BOTH, b.port);
    proxy_forwarder *fa = NULL, *fb = NULL;
    OK(proxy_forwarder_start(ca, &fa));
    OK(proxy_forwarder_start(cb, &fb));
    uint16_t pa = port_of(fa), pb = port_of(fb);
    CHECK(pa != pb);
    for (int i = 0; i < 3; i++) {
        tcp_roundtrip(pa);
        tcp_roundtrip(pb);
    }
    udp_roundtrip(pb);
    CHECK(atomic_load(&a.tcp_connections) == 3);
    CHECK(atomic_load(&b.tcp_connections) == 3);
    CHECK(wait_idle(fa).connections_total == 3);
    CHECK(wait_idle(fb).connections_total == 3);
    CHECK(stats_of(fa).udp_sessions_total == 0);

    /* Stopping one leaves the other alone. */
    OK(proxy_forwarder_shutdown(fa, 0));
    proxy_forwarder_free(fa);
    tcp_roundtrip(pb);
    udp_roundtrip(pb);
    CHECK(atomic_load(&b.tcp_connections) == 4);
    proxy_forwarder_free(fb);
    proxy_config_free(ca);
    proxy_config_free(cb);
    echo_stop(&a);
    echo_stop(&b);
    puts("ok two_forwarders_in_one_process");
}

static void stats_struct_prefix(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = config_to_port(PROXY_TRANSPORT_TCP, echo.port);
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);
    tcp_roundtrip(port_of(f));
    wait_idle(f);
    /* A caller knowing only the first two fields gets those and nothing more. */
    uint64_t old[3] = {0, 0, 0xdeadbeef};
    OK(proxy_forwarder_stats(f, (proxy_stats *)(void *)old, 2 * sizeof(uint64_t)));
    CHECK(old[0] == 0 && old[1] == 1 && old[2] == 0xdeadbeef);
    /* The same for a program built before the last four fields (ejections to denied)
     * were added: the struct ended at limited_rate. */
    size_t before_ejections = offsetof(proxy_stats, ejections);
    CHECK(before_ejections == offsetof(proxy_stats, limited_rate) + sizeof(uint64_t));
    /* Then ejections to denied, then the two SNI counters and the TLS one, then the
     * two of the socket map. */
    CHECK(offsetof(proxy_stats, sni_no_route) == before_ejections + 4 * sizeof(uint64_t));
    CHECK(offsetof(proxy_stats, bytes_in_kernel) ==
          offsetof(proxy_stats, tls_handshakes_failed) + sizeof(uint64_t));
    CHECK(sizeof(proxy_stats) == offsetof(proxy_stats, sockmap_fallbacks) + sizeof(uint64_t));
    proxy_stats now;
    memset(&now, 0xab, sizeof now);
    OK(proxy_forwarder_stats(f, &now, before_ejections));
    CHECK(now.connections_total == 1 && now.limited_rate == 0);
    CHECK(now.ejections == 0xabababababababab && now.denied == 0xabababababababab);
    CHECK(now.sni_hello_failed == 0xabababababababab);
    OK(proxy_forwarder_stats(f, &now, sizeof now));
    CHECK(now.denied == 0 && now.sni_no_route == 0 && now.sni_hello_failed == 0);
    CHECK(now.tls_handshakes_failed == 0);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok stats_struct_prefix");
}

/* Two connections open fill PROXY_LIMIT_MAX_CONNECTIONS: a third is reset at once and
 * counted, the two keep working, and once one closes a new one is served. */
static void connection_limit(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = config_to_port(PROXY_TRANSPORT_TCP, echo.port);
    OK(proxy_config_set_limit(c, PROXY_LIMIT_MAX_CONNECTIONS, 2));
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);
    uint16_t port = port_of(f);
    int a = tcp_connect(port);
    int b = tcp_connect(port);
    tcp_echo_check(a, 100, 1);
    tcp_echo_check(b, 100, 2);
    int refused = tcp_connect(port);
    char byte;
    errno = 0;
    CHECK(read(refused, &byte, 1) == -1 && errno == ECONNRESET);
    close(refused);
    tcp_echo_check(a, 1000, 3);
    close(a);
    double deadline = now_seconds() + 5;
    while (stats_of(f).connections_open != 1 && now_seconds() < deadline) {
        sleep_ms(5);
    }
    int again = tcp_connect(port);
    tcp_echo_check(again, 100, 4);
    close(again);
    close(b);
    proxy_stats s = wait_idle(f);
    CHECK(s.limited_connections == 1);
    CHECK(s.limited_per_source == 0 && s.limited_rate == 0);
    CHECK(s.connections_total == 3);
    CHECK(atomic_load(&echo.tcp_connections) == 3);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok connection_limit");
}

/* Reads endpoint 0 of `f` into `e` and its address into `addr` until `cond` holds, for up
 * to 5 s. */
#define ENDPOINT_EVENTUALLY(f, addr, e, cond)                                           \
    do {                                                                                \
        double deadline_ = now_seconds() + 5;                                           \
        size_t n_ = 0;                                                                  \
        for (;;) {                                                                      \
            proxy_status s_ =                                                           \
                proxy_forwarder_endpoint(f, 0, addr, sizeof addr, &n_, &(e), sizeof(e)); \
            if ((s_ == PROXY_STATUS_OK && (cond)) || now_seconds() > deadline_) {       \
                OK(s_);                                                                 \
                break;                                                                  \
            }                                                                           \
            sleep_ms(5);                                                                \
        }                                                                               \
        CHECK(cond);                                                                    \
        CHECK(n_ == strlen(addr));                                                      \
    } while (0)

/* Per-address stats: the echo server's address with the TCP connections and the UDP
 * session made to it, added up; a closed port's with its failures; the buffer and struct
 * size contract. */
static void endpoint_stats(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_forwarder *f = start_to_port(PROXY_TRANSPORT_BOTH, echo.port);
    size_t count = 1;
    OK(proxy_forwarder_endpoint_count(f, &count));
    CHECK(count == 0); /* no address tried yet */
    uint16_t port = port_of(f);
    tcp_roundtrip(port);
    tcp_roundtrip(port);
    udp_roundtrip(port);
    wait_idle(f);
    char addr[PROXY_ADDRESS_BUFFER_SIZE];
    proxy_endpoint_stats e;
    ENDPOINT_EVENTUALLY(f, addr, e, e.connects == 3);
    char expected[PROXY_ADDRESS_BUFFER_SIZE];
    snprintf(expected, sizeof expected, "127.0.0.1:%u", (unsigned)echo.port);
    CHECK(strcmp(addr, expected) == 0);
    CHECK(e.failures == 0 && e.consecutive_failures == 0);
    CHECK(e.ejections == 0 && e.checked_down == 0);
    OK(proxy_forwarder_endpoint_count(f, &count));
    CHECK(count == 1);

    size_t n = 0;
    CHECK_STATUS(proxy_forwarder_endpoint(f, 1, addr, sizeof addr, &n, &e, sizeof e),
                 PROXY_STATUS_INDEX_OUT_OF_RANGE);
    CHECK_LAST_ERROR_HAS("endpoint index 1, but the forwarder has 1 endpoints");
    /* A buffer too small for the address: nothing is written, not even the stats. */
    char tiny[4] = "abc";
    proxy_endpoint_stats untouched;
    memset(&untouched, 0xab, sizeof untouched);
    CHECK_STATUS(proxy_forwarder_endpoint(f, 0, tiny, sizeof tiny, &n, &untouched,
                                          sizeof untouched),
                 PROXY_STATUS_BUFFER_TOO_SMALL);
    CHECK(strcmp(tiny, "abc") == 0 && untouched.connects == 0xabababababababab);
    CHECK_STATUS(proxy_forwarder_endpoint(f, 0, addr, sizeof addr, &n, &e, 4),
                 PROXY_STATUS_BUFFER_TOO_SMALL);
    CHECK_STATUS(proxy_forwarder_endpoint(f, 0, addr, sizeof addr, &n, NULL, sizeof e),
                 PROXY_STATUS_NULL_PARAMETER);
    CHECK_STATUS(proxy_forwarder_endpoint_count(f, NULL), PROXY_STATUS_NULL_PARAMETER);
    /* A caller knowing only the first field gets that one. */
    uint64_t old[2] = {0, 0xdeadbeef};
    OK(proxy_forwarder_endpoint(f, 0, addr, sizeof addr, &n,
                                (proxy_endpoint_stats *)(void *)old, sizeof(uint64_t)));
    CHECK(old[0] == 3 && old[1] == 0xdeadbeef);
    proxy_forwarder_free(f);
    echo_stop(&echo);

    /* A port nothing listens on: the address's failures, in a row. */
    int closed = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(closed >= 0);
    struct sockaddr_in a = loopback(0);
    CHECK(bind(closed, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t alen = sizeof a;
    CHECK(getsockname(closed, (struct sockaddr *)&a, &alen) == 0);
    f = start_to_port(PROXY_TRANSPORT_TCP, ntohs(a.sin_port));
    tcp_expect_closed(port_of(f));
    proxy_stats s = wait_idle(f);
    CHECK(s.connect_refused >= 1);
    ENDPOINT_EVENTUALLY(f, addr, e, e.failures == s.connect_refused);
    CHECK(e.connects == 0 && e.consecutive_failures == e.failures);
    proxy_forwarder_free(f);
    close(closed); /* bound, never listening: connects to it are refused */
    puts("ok endpoint_stats");
}

int main(void) {
    tcp_forwarding();
    udp_forwarding();
    both_protocols_on_one_port();
    reload_to_a_new_target();
    reload_both_protocols();
    graceful_shutdown_lets_connections_finish();
    two_forwarders_in_one_process();
    stats_struct_prefix();
    connection_limit();
    endpoint_stats();
    return 0;
}
