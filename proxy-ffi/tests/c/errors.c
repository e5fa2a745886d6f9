/*
 * Error paths: NULL for every pointer, bad strings, bad settings, ports in use, small
 * buffers; status messages and the per-thread last error; out-parameters untouched on
 * failure.
 */
#include "test.h"

#define NUL PROXY_STATUS_NULL_PARAMETER

static void null_everywhere(void) {
    proxy_config *c = config_to(PROXY_TRANSPORT_TCP, "127.0.0.1:0", "127.0.0.1:9");
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    char buf[64];
    size_t n = 0;
    uint16_t port = 0;
    proxy_stats s;

    proxy_config_free(NULL);
    proxy_forwarder_free(NULL);

    CHECK_STATUS(proxy_config_set_transport(NULL, PROXY_TRANSPORT_TCP), NUL);
    CHECK_LAST_ERROR_HAS("`config` must not be NULL");
    CHECK_STATUS(proxy_config_add_listen(NULL, "127.0.0.1:0"), NUL);
    CHECK_STATUS(proxy_config_add_listen(c, NULL), NUL);
    CHECK_LAST_ERROR_HAS("`address` must not be NULL");
    CHECK_STATUS(proxy_config_clear_listen(NULL), NUL);
    CHECK_STATUS(proxy_config_set_target(NULL, "a:1"), NUL);
    CHECK_STATUS(proxy_config_set_target(c, NULL), NUL);
    CHECK_STATUS(proxy_config_set_timeout(NULL, PROXY_TIMEOUT_IDLE, 1), NUL);
    CHECK_STATUS(proxy_config_set_resolver(NULL, PROXY_RESOLVER_SYSTEM), NUL);
    CHECK_STATUS(proxy_config_set_resolver_callback(NULL, NULL, NULL), NUL);
    CHECK_STATUS(proxy_config_set_resolver_callback(c, NULL, NULL), NUL);
    CHECK_LAST_ERROR_HAS("`callback` must not be NULL");
    CHECK_STATUS(proxy_config_set_worker_threads(NULL, 1), NUL);

    CHECK_STATUS(proxy_forwarder_start(NULL, &f), NUL);
    CHECK_STATUS(proxy_forwarder_start(c, NULL), NUL);
    CHECK_LAST_ERROR_HAS("`out` must not be NULL");
    CHECK_STATUS(proxy_forwarder_reload(NULL, c), NUL);
    CHECK_STATUS(proxy_forwarder_reload(f, NULL), NUL);
    CHECK_STATUS(proxy_forwarder_shutdown(NULL, 0), NUL);
    CHECK_STATUS(proxy_forwarder_address_count(NULL, &n), NUL);
    CHECK_STATUS(proxy_forwarder_address_count(f, NULL), NUL);
    CHECK_STATUS(proxy_forwarder_address(NULL, 0, buf, sizeof buf, &n), NUL);
    CHECK_STATUS(proxy_forwarder_address(f, 0, buf, sizeof buf, NULL), NUL);
    CHECK_STATUS(proxy_forwarder_address(f, 0, NULL, sizeof buf, &n), NUL);
    CHECK_STATUS(proxy_forwarder_port(NULL, 0, &port), NUL);
    CHECK_STATUS(proxy_forwarder_port(f, 0, NULL), NUL);
    CHECK_STATUS(proxy_forwarder_stats(NULL, &s, sizeof s), NUL);
    CHECK_STATUS(proxy_forwarder_stats(f, NULL, sizeof s), NUL);
    CHECK_STATUS(proxy_resolution_add(NULL, "10.0.0.1"), NUL);
    CHECK_STATUS(proxy_resolution_set_ttl(NULL, 1), NUL);
    CHECK_STATUS(proxy_status_message(PROXY_STATUS_OK, buf, sizeof buf, NULL), NUL);
    CHECK_STATUS(proxy_status_message(PROXY_STATUS_OK, NULL, sizeof buf, &n), NUL);
    CHECK_STATUS(proxy_last_error(buf, sizeof buf, NULL), NUL);
    CHECK_STATUS(proxy_last_error(NULL, 1, &n), NUL);

    /* None of it disturbed the forwarder. */
    OK(proxy_forwarder_address_count(f, &n));
    CHECK(n == 1);
    proxy_forwarder_free(f);
    proxy_config_free(c);
    puts("ok null_everywhere");
}

static void bad_strings(void) {
    proxy_config *c = proxy_config_new();
    CHECK(c != NULL);
    static const char *addresses[] = {"", "localhost:80", "127.0.0.1", "1.2.3.4:99999",
                                      "::1:80", "[::1]", "127.0.0.1:80 ", "[::1]:x"};
    for (size_t i = 0; i < sizeof addresses / sizeof addresses[0]; i++) {
        CHECK_STATUS(proxy_config_add_listen(c, addresses[i]), PROXY_STATUS_INVALID_ADDRESS);
    }
    CHECK_LAST_ERROR_HAS("[::1]:x");
    static const char *targets[] = {"", "host", "host:", "host:99999", "[::1", "::1:80",
                                    "bad host:80", "[nope]:80"};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        CHECK_STATUS(proxy_config_set_target(c, targets[i]), PROXY_STATUS_INVALID_TARGET);
    }
    CHECK_LAST_ERROR_HAS("nope");
    const char not_utf8[] = {'h', (char)0xff, 'x', ':', '8', '0', 0};
    CHECK_STATUS(proxy_config_set_target(c, not_utf8), PROXY_STATUS_INVALID_UTF8);
    CHECK_LAST_ERROR_HAS("`target` is not valid UTF-8");
    CHECK_STATUS(proxy_config_add_listen(c, not_utf8), PROXY_STATUS_INVALID_UTF8);

    /* Good ones, for contrast. */
    OK(proxy_config_add_listen(c, "[::1]:0"));
    OK(proxy_config_add_listen(c, "0.0.0.0:8080"));
    OK(proxy_config_set_target(c, "[fd00::1]:53"));
    OK(proxy_config_set_target(c, "kube-dns.kube-system.svc:53"));
    proxy_config_free(c);
    puts("ok bad_strings");
}

static void bad_settings(void) {
    proxy_config *c = proxy_config_new();
    proxy_forwarder *f = (proxy_forwarder *)(void *)0x1; /* must stay untouched */
    CHECK_STATUS(proxy_config_set_transport(c, 0), PROXY_STATUS_INVALID_SETTING);
    CHECK_STATUS(proxy_config_set_transport(c, 5), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("unknown transport 5");
    CHECK_STATUS(proxy_config_set_timeout(c, 0, 1000), PROXY_STATUS_INVALID_SETTING);
    CHECK_STATUS(proxy_config_set_timeout(c, 77, 1000), PROXY_STATUS_INVALID_SETTING);
    CHECK_STATUS(proxy_config_set_timeout(c, PROXY_TIMEOUT_CONNECT, 0),
                 PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("connect timeout cannot be off");
    CHECK_STATUS(proxy_config_set_timeout(c, PROXY_TIMEOUT_CONNECT_TOTAL, 0),
                 PROXY_STATUS_INVALID_SETTING);
    CHECK_STATUS(proxy_config_set_timeout(c, PROXY_TIMEOUT_IDLE, UINT64_MAX),
                 PROXY_STATUS_INVALID_SETTING);
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_MAX_LIFETIME, 315360000000ull));
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_IDLE, 0));
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_HALF_CLOSE, 0));
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_MAX_LIFETIME, 0));
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_UDP_SESSION_IDLE, 0));
    CHECK_STATUS(proxy_config_set_limit(NULL, PROXY_LIMIT_MAX_CONNECTIONS, 1),
                 PROXY_STATUS_NULL_PARAMETER);
    CHECK_STATUS(proxy_config_set_limit(c, 0, 1), PROXY_STATUS_INVALID_SETTING);
    CHECK_STATUS(proxy_config_set_limit(c, 9, 1), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("unknown limit kind 9");
    CHECK_STATUS(proxy_config_set_limit(c, PROXY_LIMIT_ACCEPT_RATE, 1ull << 32),
                 PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("4294967296 a second");
    OK(proxy_config_set_limit(c, PROXY_LIMIT_MAX_CONNECTIONS, UINT64_MAX));
    OK(proxy_config_set_limit(c, PROXY_LIMIT_MAX_CONNECTIONS, 0));
    OK(proxy_config_set_limit(c, PROXY_LIMIT_ACCEPT_BURST, 0));
    CHECK_STATUS(proxy_config_set_resolver(c, 0), PROXY_STATUS_INVALID_SETTING);
    CHECK_STATUS(proxy_config_set_resolver(c, 3), PROXY_STATUS_INVALID_SETTING);
    CHECK_STATUS(proxy_config_set_worker_threads(c, 0), PROXY_STATUS_INVALID_SETTING);
    CHECK_STATUS(proxy_config_set_worker_threads(c, 100000), PROXY_STATUS_INVALID_SETTING);

    /* Missing parts and inconsistent timers are found by start. */
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("target: `target` is not set");
    OK(proxy_config_set_target(c, "127.0.0.1:9"));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("no listen address");
    OK(proxy_config_add_listen(c, "127.0.0.1:0"));
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_CONNECT, 20000));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("connect timeout is longer than the total connect budget");
    OK(proxy_config_set_timeout(c, PROXY_TIMEOUT_CONNECT_TOTAL, 20000));
    OK(proxy_config_add_listen(c, "127.0.0.2:7"));
    OK(proxy_config_add_listen(c, "127.0.0.2:7"));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("given twice");
    CHECK(f == (proxy_forwarder *)(void *)0x1);

    OK(proxy_config_clear_listen(c));
    OK(proxy_config_add_listen(c, "127.0.0.1:0"));
    OK(proxy_forwarder_start(c, &f));
    CHECK(f != (proxy_forwarder *)(void *)0x1);
    proxy_forwarder_free(f);
    proxy_config_free(c);
    puts("ok bad_settings");
}

/* The TLS and SNI keys through the C API: the same table, the same checks. */
static void tls_and_sni_keys(void) {
    proxy_config *c = config_to(PROXY_TRANSPORT_TCP, "127.0.0.1:0", "127.0.0.1:9");
    proxy_forwarder *f = NULL;
    OK(proxy_config_set(c, "tls_cert", "/nonexistent/site.crt"));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("`tls_cert` needs `tls_key`");
    OK(proxy_config_set(c, "tls_key", "/nonexistent/site.key"));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("/nonexistent/site.crt");
    OK(proxy_config_set(c, "tls_cert", ""));
    OK(proxy_config_set(c, "tls_key", ""));
    CHECK_STATUS(proxy_config_set(c, "sni", "a.example"), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("an SNI route is NAME=TARGET");
    OK(proxy_config_set(c, "sni", "a.example=127.0.0.1:9,*.b.example=127.0.0.1:10"));
    OK(proxy_config_set(c, "upstream_tls", "true"));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("upstream_tls would wrap it in TLS again");
    OK(proxy_config_set(c, "upstream_tls", "false"));
    OK(proxy_forwarder_start(c, &f));
    proxy_forwarder_free(f);
    proxy_config_free(c);
    puts("ok tls_and_sni_keys");
}

/* Binds a socket of `type` on 127.0.0.1:*port (0: the kernel's choice, stored in *port);
 * returns the fd. TCP sets SO_REUSEADDR, as the forwarder does, so connections of other
 * tests in TIME_WAIT on the port do not count, while a listener still would. */
static int occupy(int type, uint16_t *port) {
    int fd = socket(AF_INET, type, 0);
    CHECK(fd >= 0);
    int one = 1;
    if (type == SOCK_STREAM) {
        CHECK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    }
    struct sockaddr_in a = loopback(*port);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    if (type == SOCK_STREAM) {
        CHECK(listen(fd, 1) == 0);
    }
    socklen_t len = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Whether TCP can bind 127.0.0.1:port now. */
static int tcp_port_free(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    int one = 1;
    CHECK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    struct sockaddr_in a = loopback(port);
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void port_in_use(proxy_transport transport, int type) {
    uint16_t port = 0;
    int fd = occupy(type, &port);
    /* A UDP port's TCP twin may be taken (TIME_WAIT of some connection): pick one whose
     * twin is free, to check below that the forwarder left it free. */
    while (type == SOCK_DGRAM && !tcp_port_free(port)) {
        close(fd);
        port = 0;
        fd = occupy(type, &port);
    }
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)port);
    proxy_config *c = config_to(transport, "127.0.0.1:0", "127.0.0.1:9");
    OK(proxy_config_add_listen(c, listen));
    proxy_forwarder *f = NULL;
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_ADDRESS_IN_USE);
    CHECK(f == NULL);
    CHECK_LAST_ERROR_HAS("failed to bind listen address");
    CHECK_LAST_ERROR_HAS(listen);
    CHECK_LAST_ERROR_HAS("in use");
    if (transport == PROXY_TRANSPORT_BOTH && type == SOCK_DGRAM) {
        /* TCP had bound the port before UDP failed: nothing of it stays bound. */
        CHECK(tcp_port_free(port));
    }
    close(fd);
    proxy_config_free(c);
}

static void ports_in_use(void) {
    port_in_use(PROXY_TRANSPORT_TCP, SOCK_STREAM);
    port_in_use(PROXY_TRANSPORT_UDP, SOCK_DGRAM);
    port_in_use(PROXY_TRANSPORT_BOTH, SOCK_STREAM);
    port_in_use(PROXY_TRANSPORT_BOTH, SOCK_DGRAM);

    /* A reload onto a busy port fails and changes nothing. */
    proxy_config *c = config_to(PROXY_TRANSPORT_TCP, "127.0.0.1:0", "127.0.0.1:9");
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    uint16_t before = port_of(f);
    uint16_t busy = 0;
    int fd = occupy(SOCK_STREAM, &busy);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)busy);
    OK(proxy_config_add_listen(c, listen));
    CHECK_STATUS(proxy_forwarder_reload(f, c), PROXY_STATUS_ADDRESS_IN_USE);
    CHECK_LAST_ERROR_HAS(listen);
    size_t n = 0;
    OK(proxy_forwarder_address_count(f, &n));
    CHECK(n == 1 && port_of(f) == before);
    close(fd);
    proxy_forwarder_free(f);
    proxy_config_free(c);

    /* An address this host does not have. */
    c = config_to(PROXY_TRANSPORT_TCP, "192.0.2.1:0", "127.0.0.1:9");
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_BIND_FAILED);
    CHECK_LAST_ERROR_HAS("192.0.2.1:0");
    proxy_config_free(c);
    puts("ok ports_in_use");
}

static void buffers_and_messages(void) {
    char buf[PROXY_ADDRESS_BUFFER_SIZE];
    size_t n = 12345;

    /* Every code has a message; unknown codes get one too. */
    static const proxy_status codes[] = {
        PROXY_STATUS_OK, PROXY_STATUS_NULL_PARAMETER, PROXY_STATUS_INVALID_UTF8,
        PROXY_STATUS_INVALID_ADDRESS, PROXY_STATUS_INVALID_TARGET,
        PROXY_STATUS_INVALID_SETTING, PROXY_STATUS_BUFFER_TOO_SMALL,
        PROXY_STATUS_INDEX_OUT_OF_RANGE, PROXY_STATUS_BIND_FAILED,
        PROXY_STATUS_ADDRESS_IN_USE, PROXY_STATUS_RELOAD_TRANSPORT_MISMATCH,
        PROXY_STATUS_NOT_RUNNING, PROXY_STATUS_RUNTIME, PROXY_STATUS_RESOLVER,
        PROXY_STATUS_IO, PROXY_STATUS_PANIC};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        OK(proxy_status_message(codes[i], buf, sizeof buf, &n));
        CHECK(n > 0 && n == strlen(buf));
    }
    /* The values are part of the ABI. */
    CHECK(PROXY_STATUS_OK == 0 && PROXY_STATUS_NULL_PARAMETER == 1 &&
          PROXY_STATUS_ADDRESS_IN_USE == 9 && PROXY_STATUS_PANIC == 100);
    OK(proxy_status_message(PROXY_STATUS_ADDRESS_IN_USE, buf, sizeof buf, &n));
    CHECK(strcmp(buf, "a listen address is already in use") == 0);
    OK(proxy_status_message(4242, buf, sizeof buf, &n));
    CHECK(strcmp(buf, "unknown status 4242") == 0);

    /* Length query, then a buffer too small by one: nothing written. */
    OK(proxy_status_message(PROXY_STATUS_OK, NULL, 0, &n));
    CHECK(n == strlen("success"));
    memset(buf, 'x', sizeof buf);
    size_t untouched = 999;
    CHECK_STATUS(proxy_status_message(PROXY_STATUS_OK, buf, n, &untouched),
                 PROXY_STATUS_BUFFER_TOO_SMALL);
    CHECK(untouched == 999 && buf[0] == 'x');
    OK(proxy_status_message(PROXY_STATUS_OK, buf, n + 1, &untouched));
    CHECK(untouched == n && strcmp(buf, "success") == 0);

    /* proxy_status_message and proxy_last_error leave the last error alone. */
    proxy_config *c = proxy_config_new();
    CHECK_STATUS(proxy_config_set_target(c, "no-port"), PROXY_STATUS_INVALID_TARGET);
    char le[256];
    OK(proxy_last_error(le, sizeof le, &n));
    CHECK_STATUS(proxy_last_error(le, 2, &n), PROXY_STATUS_BUFFER_TOO_SMALL);
    CHECK_STATUS(proxy_status_message(1, buf, 1, &n), PROXY_STATUS_BUFFER_TOO_SMALL);
    CHECK_LAST_ERROR_HAS("no-port");
    /* Successful calls leave it too, like errno. */
    OK(proxy_config_set_target(c, "ok:1"));
    CHECK_LAST_ERROR_HAS("no-port");

    /* Addresses: index out of range, buffers. */
    OK(proxy_config_add_listen(c, "127.0.0.1:0"));
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    uint16_t port = 7;
    CHECK_STATUS(proxy_forwarder_port(f, 1, &port), PROXY_STATUS_INDEX_OUT_OF_RANGE);
    CHECK(port == 7);
    CHECK_LAST_ERROR_HAS("address index 1");
    CHECK_STATUS(proxy_forwarder_address(f, 5, buf, sizeof buf, &n),
                 PROXY_STATUS_INDEX_OUT_OF_RANGE);
    OK(proxy_forwarder_address(f, 0, NULL, 0, &n));
    CHECK(n >= strlen("127.0.0.1:1"));
    CHECK_STATUS(proxy_forwarder_address(f, 0, buf, n, &n), PROXY_STATUS_BUFFER_TOO_SMALL);
    OK(proxy_forwarder_address(f, 0, buf, n + 1, &n));
    CHECK(strncmp(buf, "127.0.0.1:", 10) == 0);
    proxy_stats s;
    CHECK_STATUS(proxy_forwarder_stats(f, &s, 7), PROXY_STATUS_BUFFER_TOO_SMALL);
    proxy_forwarder_free(f);
    proxy_config_free(c);
    puts("ok buffers_and_messages");
}

static void *fail_on_another_thread(void *arg) {
    (void)arg;
    CHECK_STATUS(proxy_config_set_target(NULL, "x:1"), PROXY_STATUS_NULL_PARAMETER);
    CHECK_LAST_ERROR_HAS("`config` must not be NULL");
    return NULL;
}

static void last_error_is_per_thread(void) {
    proxy_config *c = proxy_config_new();
    CHECK_STATUS(proxy_config_set_target(c, "main-thread"), PROXY_STATUS_INVALID_TARGET);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fail_on_another_thread, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_LAST_ERROR_HAS("main-thread");
    proxy_config_free(c);
    puts("ok last_error_is_per_thread");
}

int main(void) {
    /* Before any failure, the last error is empty. */
    char le[8] = "x";
    size_t n = 99;
    OK(proxy_last_error(le, sizeof le, &n));
    CHECK(n == 0 && le[0] == 0);

    null_everywhere();
    bad_strings();
    bad_settings();
    tls_and_sni_keys();
    ports_in_use();
    buffers_and_messages();
    last_error_is_per_thread();
    return 0;
}
