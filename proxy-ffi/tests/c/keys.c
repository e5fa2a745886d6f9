/*
 * Settings by key: every key proxy_key_name lists takes its example through
 * proxy_config_set and reads it back through proxy_config_get; unknown keys and bad
 * values are refused, naming them, and change nothing. Then forwarders configured only
 * through proxy_config_set do what their keys say, checked with real sockets: deny and
 * allow reset clients (and a reload lifts a deny), max_connections resets the one too
 * many, relay = copy splices nothing, a UDP deny drops datagrams, tcp,udp shares a port,
 * and rules between keys stop a start naming the key.
 */
#include "test.h"

/* The value of `key` in `c`, into `buf`. */
static void get(const proxy_config *c, const char *key, char *buf, size_t len) {
    size_t n = 0;
    OK(proxy_config_get(c, key, buf, len, &n));
    CHECK(n == strlen(buf));
}

static void every_key_is_set_and_read_back(void) {
    size_t count = proxy_key_count();
    CHECK(count >= 40);
    CHECK(proxy_key_name(count) == NULL);
    CHECK(proxy_key_example(count) == NULL);
    CHECK(proxy_key_help(count) == NULL);
    char value[512];
    char again[512];
    /* Every key in one config too, in the table's order, as the CLI applies them. */
    proxy_config *all = proxy_config_new();
    CHECK(all != NULL);
    for (size_t i = 0; i < count; i++) {
        const char *name = proxy_key_name(i);
        const char *example = proxy_key_example(i);
        const char *help = proxy_key_help(i);
        CHECK(name != NULL && example != NULL && help != NULL);
        CHECK(strlen(name) > 0 && strlen(help) > 0);
        proxy_config *c = proxy_config_new();
        CHECK(c != NULL);
        OK(proxy_config_set(c, name, example));
        get(c, name, value, sizeof value);
        if (strcmp(value, example) != 0) {
            fprintf(stderr, "%s = %s reads back as %s\n", name, example, value);
            exit(1);
        }
        /* What get reads, set takes, changing nothing. */
        OK(proxy_config_set(c, name, value));
        get(c, name, again, sizeof again);
        CHECK(strcmp(again, value) == 0);
        proxy_config_free(c);
        OK(proxy_config_set(all, name, example));
    }
    for (size_t i = 0; i < count; i++) {
        get(all, proxy_key_name(i), value, sizeof value);
        CHECK(strcmp(value, proxy_key_example(i)) == 0);
    }
    proxy_config_free(all);
    printf("ok every_key_is_set_and_read_back (%zu keys)\n", count);
}

static void bad_keys_and_values(void) {
    proxy_config *c = proxy_config_new();
    char value[256];
    OK(proxy_config_set(c, "idle_timeout", "30s"));
    CHECK_STATUS(proxy_config_set(c, "idle_timout", "1s"), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("idle_timout: is not a setting; did you mean `idle_timeout`?");
    CHECK_STATUS(proxy_config_set(c, "idle_timeout", "5x"), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("idle_timeout: `5x` is not a duration");
    get(c, "idle_timeout", value, sizeof value);
    CHECK(strcmp(value, "30s") == 0);
    CHECK_STATUS(proxy_config_set(c, "balance", "random"), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("balance: `random` is not one of round-robin");
    CHECK_STATUS(proxy_config_set(c, "deny", "10.0.0.0/8,nope"), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("deny: ");
    CHECK_LAST_ERROR_HAS("nope");
    get(c, "deny", value, sizeof value);
    CHECK(strcmp(value, "") == 0);
    CHECK_STATUS(proxy_config_set(c, "max_connections", "-1"), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("max_connections: `-1`");
    const char not_utf8[] = {'1', (char)0xff, 's', 0};
    CHECK_STATUS(proxy_config_set(c, "idle_timeout", not_utf8), PROXY_STATUS_INVALID_UTF8);
    CHECK_STATUS(proxy_config_set(c, NULL, "1s"), PROXY_STATUS_NULL_PARAMETER);
    CHECK_STATUS(proxy_config_set(c, "idle_timeout", NULL), PROXY_STATUS_NULL_PARAMETER);
    CHECK_STATUS(proxy_config_set(NULL, "idle_timeout", "1s"), PROXY_STATUS_NULL_PARAMETER);

    /* get: unknown keys, the length query, a buffer one byte short. */
    size_t n = 0;
    CHECK_STATUS(proxy_config_get(c, "nope", value, sizeof value, &n),
                 PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("nope: is not a setting");
    OK(proxy_config_get(c, "idle_timeout", NULL, 0, &n));
    CHECK(n == 3);
    size_t untouched = 99;
    CHECK_STATUS(proxy_config_get(c, "idle_timeout", value, n, &untouched),
                 PROXY_STATUS_BUFFER_TOO_SMALL);
    CHECK(untouched == 99);
    CHECK_STATUS(proxy_config_get(NULL, "idle_timeout", value, sizeof value, &n),
                 PROXY_STATUS_NULL_PARAMETER);
    CHECK_STATUS(proxy_config_get(c, NULL, value, sizeof value, &n),
                 PROXY_STATUS_NULL_PARAMETER);

    /* The typed setters and the keys are one setting. */
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_IDLE, 2000));
    get(c, "idle_timeout", value, sizeof value);
    CHECK(strcmp(value, "2s") == 0);
    OK(proxy_config_set_transport(c, PROXY_TRANSPORT_BOTH));
    get(c, "protocol", value, sizeof value);
    CHECK(strcmp(value, "tcp,udp") == 0);
    proxy_config_free(c);
    puts("ok bad_keys_and_values");
}

/* A config made through proxy_config_set only: `protocol` from 127.0.0.1:0 to the echo
 * server's port. */
static proxy_config *keyed(const char *protocol, uint16_t port) {
    proxy_config *c = proxy_config_new();
    CHECK(c != NULL);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)port);
    OK(proxy_config_set(c, "protocol", protocol));
    OK(proxy_config_set(c, "listen", "127.0.0.1:0"));
    OK(proxy_config_set(c, "target", target));
    return c;
}

static proxy_forwarder *start(const proxy_config *c) {
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    CHECK(f != NULL);
    return f;
}

/* A connection to `port` that the forwarder resets without a byte. */
static void tcp_expect_reset(uint16_t port) {
    int fd = tcp_connect(port);
    char byte;
    errno = 0;
    CHECK(read(fd, &byte, 1) == -1 && errno == ECONNRESET);
    close(fd);
}

static void deny_and_allow(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = keyed("tcp", echo.port);
    OK(proxy_config_set(c, "deny", "127.0.0.1"));
    proxy_forwarder *f = start(c);
    uint16_t port = port_of(f);
    tcp_expect_reset(port);
    tcp_expect_reset(port);
    proxy_stats s;
    EVENTUALLY(f, s, s.denied == 2);
    CHECK(atomic_load(&echo.tcp_connections) == 0);

    /* A reload without the deny serves the client, on the same port. */
    OK(proxy_config_set(c, "deny", ""));
    OK(proxy_forwarder_reload(f, c));
    CHECK(port_of(f) == port);
    tcp_roundtrip(port);
    CHECK(atomic_load(&echo.tcp_connections) == 1);

    /* allow: only the ranges listed. */
    OK(proxy_config_set(c, "allow", "10.0.0.0/8,192.168.0.0/16"));
    OK(proxy_forwarder_reload(f, c));
    tcp_expect_reset(port);
    OK(proxy_config_set(c, "allow", "10.0.0.0/8,127.0.0.0/8"));
    OK(proxy_forwarder_reload(f, c));
    tcp_roundtrip(port);
    /* deny wins over allow. */
    OK(proxy_config_set(c, "deny", "127.0.0.1/32"));
    OK(proxy_forwarder_reload(f, c));
    tcp_expect_reset(port);
    EVENTUALLY(f, s, s.denied == 4);
    CHECK(atomic_load(&echo.tcp_connections) == 2);
    proxy_forwarder_free(f);
    proxy_config_free(c);
    echo_stop(&echo);
    puts("ok deny_and_allow");
}

static void max_connections(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = keyed("tcp", echo.port);
    OK(proxy_config_set(c, "max_connections", "1"));
    proxy_forwarder *f = start(c);
    proxy_config_free(c);
    uint16_t port = port_of(f);
    int first = tcp_connect(port);
    tcp_echo_check(first, 100, 1);
    tcp_expect_reset(port);
    tcp_echo_check(first, 100, 2);
    close(first);
    proxy_stats s = wait_idle(f);
    CHECK(s.limited_connections == 1);
    tcp_roundtrip(port);
    s = wait_idle(f);
    CHECK(s.connections_total == 2 && s.limited_connections == 1);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok max_connections");
}

/* relay = copy moves every byte through user space: nothing spliced. With the other
 * settings of a busy forward, it forwards as ever. */
static void relay_copy_and_friends(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = keyed("tcp", echo.port);
    OK(proxy_config_set(c, "relay", "copy"));
    OK(proxy_config_set(c, "buffer_size", "4K"));
    OK(proxy_config_set(c, "balance", "least-connections"));
    OK(proxy_config_set(c, "eject_after", "3"));
    OK(proxy_config_set(c, "idle_timeout", "1m"));
    OK(proxy_config_set(c, "accept_rate", "1000"));
    OK(proxy_config_set(c, "accept_burst", "100"));
    OK(proxy_config_set(c, "backlog", "16"));
    proxy_forwarder *f = start(c);
    proxy_config_free(c);
    uint16_t port = port_of(f);
    tcp_roundtrip(port);
    tcp_roundtrip(port);
    proxy_stats s = wait_idle(f);
    CHECK(s.connections_total == 2);
    CHECK(s.bytes_to_upstream == 2 * (5 + 1000 + (1u << 20)));
    CHECK(s.bytes_spliced == 0);
    CHECK(s.limited_rate == 0 && s.ejections == 0);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok relay_copy_and_friends");
}

/* A UDP forward denying the client drops its datagrams and counts them. */
static void udp_deny(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = keyed("udp", echo.port);
    OK(proxy_config_set(c, "deny", "127.0.0.0/8"));
    OK(proxy_config_set(c, "batch_size", "4"));
    proxy_forwarder *f = start(c);
    uint16_t port = port_of(f);
    int fd = udp_connected(port, 200000);
    CHECK(send(fd, "ping", 4, 0) == 4);
    char buf[16];
    CHECK(recv(fd, buf, sizeof buf, 0) == -1);
    proxy_stats s;
    EVENTUALLY(f, s, s.denied >= 1);
    CHECK(s.udp_sessions_total == 0 && atomic_load(&echo.udp_datagrams) == 0);
    close(fd);

    OK(proxy_config_set(c, "deny", ""));
    OK(proxy_forwarder_reload(f, c));
    udp_roundtrip(port);
    CHECK(atomic_load(&echo.udp_datagrams) >= 5);
    proxy_forwarder_free(f);
    proxy_config_free(c);
    echo_stop(&echo);
    puts("ok udp_deny");
}

static void both_on_one_port(void) {
    echo_server echo;
    echo_start(&echo);
    proxy_config *c = keyed("tcp,udp", echo.port);
    proxy_forwarder *f = start(c);
    proxy_config_free(c);
    uint16_t port = port_of(f);
    tcp_roundtrip(port);
    udp_roundtrip(port);
    CHECK(atomic_load(&echo.tcp_connections) == 1);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok both_on_one_port");
}

/* Rules between keys stop a start; the last error names the key. */
static void rules_between_keys(void) {
    proxy_config *c = keyed("tcp", 9);
    proxy_forwarder *f = NULL;
    OK(proxy_config_set(c, "accept_burst", "10"));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("accept_burst: ");
    OK(proxy_config_set(c, "accept_rate", "100"));
    OK(proxy_config_set(c, "protocol", "udp"));
    OK(proxy_config_set(c, "proxy_protocol", "v1"));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("proxy_protocol: ");
    OK(proxy_config_set(c, "proxy_protocol", "v2"));
    OK(proxy_config_set(c, "target", ""));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("target: ");
    CHECK(f == NULL);
    OK(proxy_config_set(c, "target", "127.0.0.1:9"));
    f = start(c);
    proxy_forwarder_free(f);
    proxy_config_free(c);
    puts("ok rules_between_keys");
}

int main(void) {
    every_key_is_set_and_read_back();
    bad_keys_and_values();
    deny_and_allow();
    max_connections();
    relay_copy_and_friends();
    udp_deny();
    both_on_one_port();
    rules_between_keys();
    puts("keys: ok");
    return 0;
}
