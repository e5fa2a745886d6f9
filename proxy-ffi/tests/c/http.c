/*
 * HTTP forwards (protocol = http) through the C API: two tiny HTTP upstreams, each
 * answering with its name; raw requests with different Host headers and paths go through
 * the forwarder to the route's upstream, which sees X-Forwarded-For; the per-route
 * counters; a reload with changed routes (and the reloads that are refused); an invalid
 * route refused naming the key and the route; graceful shutdown and free.
 */
#include "test.h"

/* ===== HTTP upstream ===== */

/* Answers every request on 127.0.0.1:port with 200 and its name as the body, one request
 * per connection (`Connection: close`), keeping the last request's head. */
typedef struct {
    const char *name;
    uint16_t port;
    int fd;
    pthread_t thread;
    atomic_int stop;
    atomic_int requests;
    pthread_mutex_t lock;
    char last[8192]; /* the last request head, under `lock` */
} http_upstream;

/* Reads from `fd` into `buf` (NUL-terminated) until the end of a request or response
 * head, EOF or an error; returns the bytes read. */
static size_t read_head(int fd, char *buf, size_t len) {
    size_t got = 0;
    while (got + 1 < len) {
        ssize_t r = read(fd, buf + got, len - 1 - got);
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
        buf[got] = 0;
        if (strstr(buf, "\r\n\r\n") != NULL) {
            break;
        }
    }
    buf[got] = 0;
    return got;
}

static void *upstream_loop(void *arg) {
    http_upstream *u = arg;
    while (!atomic_load(&u->stop)) {
        struct pollfd p = {u->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) {
            continue;
        }
        int c = accept(u->fd, NULL, NULL);
        if (c < 0) {
            continue;
        }
        set_timeouts(c);
        char head[8192];
        if (read_head(c, head, sizeof head) > 0 && strstr(head, "\r\n\r\n") != NULL) {
            pthread_mutex_lock(&u->lock);
            memcpy(u->last, head, sizeof head);
            pthread_mutex_unlock(&u->lock);
            atomic_fetch_add(&u->requests, 1);
            char response[256];
            int n = snprintf(response, sizeof response,
                             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                             strlen(u->name), u->name);
            CHECK(n > 0 && (size_t)n < sizeof response);
            CHECK(write(c, response, (size_t)n) == n);
        }
        close(c);
    }
    return NULL;
}

static void upstream_start(http_upstream *u, const char *name) {
    memset(u, 0, sizeof *u);
    u->name = name;
    CHECK(pthread_mutex_init(&u->lock, NULL) == 0);
    u->fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(u->fd >= 0);
    struct sockaddr_in a = loopback(0);
    CHECK(bind(u->fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(u->fd, 64) == 0);
    socklen_t alen = sizeof a;
    CHECK(getsockname(u->fd, (struct sockaddr *)&a, &alen) == 0);
    u->port = ntohs(a.sin_port);
    CHECK(pthread_create(&u->thread, NULL, upstream_loop, u) == 0);
}

static void upstream_stop(http_upstream *u) {
    atomic_store(&u->stop, 1);
    CHECK(pthread_join(u->thread, NULL) == 0);
    close(u->fd);
    pthread_mutex_destroy(&u->lock);
}

/* The last request `u` served has a header line `line` (names compare without case, as
 * HTTP's do). */
static int upstream_saw(http_upstream *u, const char *line) {
    pthread_mutex_lock(&u->lock);
    int found = strcasestr(u->last, line) != NULL;
    pthread_mutex_unlock(&u->lock);
    return found;
}

/* ===== client ===== */

/* A response: its status and body. */
typedef struct {
    int status;
    char body[512];
} http_response;

/* Reads one response from `fd`, its body by `Content-Length`. */
static http_response read_response(int fd) {
    char buf[4096];
    size_t got = read_head(fd, buf, sizeof buf);
    char *end = strstr(buf, "\r\n\r\n");
    CHECK(end != NULL);
    http_response r;
    memset(&r, 0, sizeof r);
    CHECK(sscanf(buf, "HTTP/1.1 %d", &r.status) == 1);
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    CHECK(cl != NULL && cl < end);
    size_t len = strtoul(cl + strlen("\r\ncontent-length:"), NULL, 10);
    CHECK(len < sizeof r.body);
    size_t have = got - (size_t)(end + 4 - buf);
    CHECK(have <= len);
    memcpy(r.body, end + 4, have);
    while (have < len) {
        ssize_t n = read(fd, r.body + have, len - have);
        CHECK(n > 0);
        have += (size_t)n;
    }
    r.body[len] = 0;
    return r;
}

/* Sends `GET path` for `host` on `fd`. */
static void send_get(int fd, const char *host, const char *path, const char *connection) {
    char request[512];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n", path, host,
                     connection);
    CHECK(n > 0 && (size_t)n < sizeof request);
    CHECK(write(fd, request, (size_t)n) == n);
}

/* One request through the forwarder on `port`, on a connection of its own. */
static http_response get(uint16_t port, const char *host, const char *path) {
    int fd = tcp_connect(port);
    send_get(fd, host, path, "close");
    http_response r = read_response(fd);
    close(fd);
    return r;
}

/* The request goes to the upstream named `name`, which sees the client in
 * X-Forwarded-For. */
static void expect_routed(uint16_t port, const char *host, const char *path,
                          http_upstream *to) {
    int before = atomic_load(&to->requests);
    http_response r = get(port, host, path);
    if (r.status != 200 || strcmp(r.body, to->name) != 0) {
        fprintf(stderr, "GET %s%s: %d %s, expected 200 %s\n", host, path, r.status, r.body,
                to->name);
        exit(1);
    }
    CHECK(atomic_load(&to->requests) == before + 1);
    CHECK(upstream_saw(to, "\r\nx-forwarded-for: 127.0.0.1\r\n"));
    char line[256];
    snprintf(line, sizeof line, "GET %s HTTP/1.1\r\n", path);
    CHECK(upstream_saw(to, line));
}

/* ===== forwarder ===== */

/* Sets `route` to `a`'s and `b`'s ports, formatted into `fmt` (two %u). */
static void set_routes(proxy_config *c, const char *fmt, uint16_t a, uint16_t b) {
    char routes[256];
    snprintf(routes, sizeof routes, fmt, (unsigned)a, (unsigned)b);
    OK(proxy_config_set(c, "route", routes));
}

/* Route `index` of `f`, its name into `name`. */
static proxy_route_stats route_of(const proxy_forwarder *f, size_t index, char *name,
                                  size_t len) {
    proxy_route_stats s;
    size_t n = 0;
    OK(proxy_forwarder_route(f, index, name, len, &n, &s, sizeof s));
    CHECK(n == strlen(name));
    return s;
}

/* Reads route `index` of `f` into `s` until `cond` holds, for up to 5 s (body bytes are
 * counted as a body ends, a moment after the client has it). */
#define ROUTE_EVENTUALLY(f, index, name, s, cond)                                       \
    do {                                                                                \
        double deadline_ = now_seconds() + 5;                                           \
        (s) = route_of(f, index, name, sizeof name);                                    \
        while (!(cond) && now_seconds() < deadline_) {                                  \
            sleep_ms(5);                                                                \
            (s) = route_of(f, index, name, sizeof name);                                \
        }                                                                               \
        CHECK(cond);                                                                    \
    } while (0)

static void routes_reload_and_stats(void) {
    http_upstream alpha, beta;
    upstream_start(&alpha, "alpha");
    upstream_start(&beta, "beta");
    proxy_config *c = proxy_config_new();
    CHECK(c != NULL);
    OK(proxy_config_set(c, "protocol", "http"));
    OK(proxy_config_set(c, "listen", "127.0.0.1:0"));
    set_routes(c, "shop.example/=127.0.0.1:%u,/api=127.0.0.1:%u", alpha.port, beta.port);
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    CHECK(f != NULL);
    size_t count = 0;
    OK(proxy_forwarder_address_count(f, &count));
    CHECK(count == 1);
    char addr[PROXY_ADDRESS_BUFFER_SIZE];
    size_t n = 0;
    OK(proxy_forwarder_address(f, 0, addr, sizeof addr, &n));
    CHECK(strncmp(addr, "127.0.0.1:", 10) == 0);
    uint16_t port = port_of(f);

    /* By host, then by path; the most specific host wins over a longer path. */
    expect_routed(port, "shop.example", "/", &alpha);
    expect_routed(port, "other.example", "/api/items?id=1", &beta);
    expect_routed(port, "Shop.Example:8080", "/api/items", &alpha);
    CHECK(get(port, "other.example", "/").status == 404);
    CHECK(atomic_load(&alpha.requests) == 2 && atomic_load(&beta.requests) == 1);

    /* Counters by route, in the config's order, then `-` for the unrouted. */
    OK(proxy_forwarder_route_count(f, &count));
    CHECK(count == 3);
    char name[256];
    char expected[256];
    proxy_route_stats s;
    ROUTE_EVENTUALLY(f, 0, name, s, s.bytes_out == 2 * strlen("alpha"));
    snprintf(expected, sizeof expected, "shop.example/=127.0.0.1:%u", (unsigned)alpha.port);
    CHECK(strcmp(name, expected) == 0);
    CHECK(s.requests_2xx == 2 && s.requests_1xx == 0 && s.requests_3xx == 0);
    CHECK(s.requests_4xx == 0 && s.requests_5xx == 0 && s.bytes_in == 0);
    CHECK(s.latency_buckets[PROXY_LATENCY_BUCKETS - 1] == 2);
    for (size_t i = 1; i < PROXY_LATENCY_BUCKETS; i++) {
        CHECK(s.latency_buckets[i - 1] <= s.latency_buckets[i]); /* cumulative */
    }
    CHECK(s.latency_sum_us > 0);
    ROUTE_EVENTUALLY(f, 1, name, s, s.bytes_out == strlen("beta"));
    snprintf(expected, sizeof expected, "/api=127.0.0.1:%u", (unsigned)beta.port);
    CHECK(strcmp(name, expected) == 0);
    CHECK(s.requests_2xx == 1);
    s = route_of(f, 2, name, sizeof name);
    CHECK(strcmp(name, "-") == 0);
    CHECK(s.requests_4xx == 1 && s.requests_2xx == 0);

    /* The route accessor's contract: the length alone, small buffers and structs, a bad
     * index, NULL. */
    OK(proxy_forwarder_route(f, 0, NULL, 0, &n, &s, sizeof s));
    snprintf(expected, sizeof expected, "shop.example/=127.0.0.1:%u", (unsigned)alpha.port);
    CHECK(n == strlen(expected));
    char tiny[4] = "abc";
    proxy_route_stats untouched;
    memset(&untouched, 0xab, sizeof untouched);
    CHECK_STATUS(proxy_forwarder_route(f, 0, tiny, sizeof tiny, &n, &untouched,
                                       sizeof untouched),
                 PROXY_STATUS_BUFFER_TOO_SMALL);
    CHECK(strcmp(tiny, "abc") == 0 && untouched.requests_2xx == 0xabababababababab);
    CHECK_STATUS(proxy_forwarder_route(f, 3, name, sizeof name, &n, &s, sizeof s),
                 PROXY_STATUS_INDEX_OUT_OF_RANGE);
    CHECK_LAST_ERROR_HAS("route index 3, but the forwarder has 3 routes");
    CHECK_STATUS(proxy_forwarder_route(f, 0, name, sizeof name, &n, &s, 4),
                 PROXY_STATUS_BUFFER_TOO_SMALL);
    CHECK_STATUS(proxy_forwarder_route(f, 0, name, sizeof name, &n, NULL, sizeof s),
                 PROXY_STATUS_NULL_PARAMETER);
    CHECK_STATUS(proxy_forwarder_route_count(f, NULL), PROXY_STATUS_NULL_PARAMETER);
    /* A caller knowing only the first two fields gets those. */
    uint64_t old[3] = {0, 0, 0xdeadbeef};
    OK(proxy_forwarder_route(f, 0, name, sizeof name, &n, (proxy_route_stats *)(void *)old,
                             2 * sizeof(uint64_t)));
    CHECK(old[0] == 0 && old[1] == 2 && old[2] == 0xdeadbeef);

    /* Per upstream address: both upstreams, tried. The TCP/UDP counters stay 0. */
    OK(proxy_forwarder_endpoint_count(f, &count));
    CHECK(count == 2);
    proxy_endpoint_stats e;
    OK(proxy_forwarder_endpoint(f, 0, addr, sizeof addr, &n, &e, sizeof e));
    CHECK(e.connects >= 1 && e.failures == 0);
    CHECK(stats_of(f).connections_total == 0);

    /* A reload with changed routes: the unchanged route keeps its counters, the changed
     * one starts anew; the port stays. */
    char routes[256];
    snprintf(routes, sizeof routes,
             "shop.example/=127.0.0.1:%u,/api=127.0.0.1:%u,/b=127.0.0.1:%u",
             (unsigned)alpha.port, (unsigned)alpha.port, (unsigned)beta.port);
    OK(proxy_config_set(c, "route", routes));
    OK(proxy_forwarder_reload(f, c));
    CHECK(port_of(f) == port);
    expect_routed(port, "other.example", "/api/items", &alpha);
    expect_routed(port, "other.example", "/b/1", &beta);
    expect_routed(port, "shop.example", "/b/1", &alpha);
    OK(proxy_forwarder_route_count(f, &count));
    CHECK(count == 4);
    ROUTE_EVENTUALLY(f, 0, name, s, s.requests_2xx == 3);
    ROUTE_EVENTUALLY(f, 1, name, s, s.requests_2xx == 1);
    snprintf(expected, sizeof expected, "/api=127.0.0.1:%u", (unsigned)alpha.port);
    CHECK(strcmp(name, expected) == 0);
    ROUTE_EVENTUALLY(f, 2, name, s, s.requests_2xx == 1);

    /* The bound address in place of port 0 is the same listener. */
    char bound[64];
    snprintf(bound, sizeof bound, "127.0.0.1:%u", (unsigned)port);
    OK(proxy_config_set(c, "listen", bound));
    OK(proxy_forwarder_reload(f, c));
    /* Another listen address needs a new forwarder; nothing changes. */
    OK(proxy_config_set(c, "listen", "127.0.0.1:0,127.0.0.2:0"));
    set_routes(c, "/=127.0.0.1:%u", beta.port, 0);
    CHECK_STATUS(proxy_forwarder_reload(f, c), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("listen: an HTTP forwarder keeps its listen addresses");
    OK(proxy_config_set(c, "listen", "127.0.0.1:0"));
    /* A setting out of range names its key; nothing changes. */
    OK(proxy_config_set(c, "max_header_size", "100"));
    CHECK_STATUS(proxy_forwarder_reload(f, c), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("max_header_size: ");
    OK(proxy_config_set(c, "max_header_size", "64K"));
    /* The transport cannot change. */
    OK(proxy_config_set(c, "protocol", "tcp"));
    CHECK_STATUS(proxy_forwarder_reload(f, c), PROXY_STATUS_RELOAD_TRANSPORT_MISMATCH);
    CHECK_LAST_ERROR_HAS("the forwarder serves HTTP; the config asks for TCP");
    OK(proxy_config_set_transport(c, PROXY_TRANSPORT_HTTP));
    expect_routed(port, "other.example", "/api/items", &alpha);

    /* Graceful shutdown: an idle keep-alive connection is closed at once. */
    int keep = tcp_connect(port);
    send_get(keep, "shop.example", "/", "keep-alive");
    http_response r = read_response(keep);
    CHECK(r.status == 200 && strcmp(r.body, "alpha") == 0);
    double start = now_seconds();
    OK(proxy_forwarder_shutdown(f, 5000));
    CHECK(now_seconds() - start < 4.0);
    char byte;
    CHECK(read(keep, &byte, 1) <= 0);
    close(keep);
    OK(proxy_forwarder_address_count(f, &count));
    CHECK(count == 0);
    CHECK_STATUS(proxy_forwarder_reload(f, c), PROXY_STATUS_NOT_RUNNING);
    OK(proxy_forwarder_shutdown(f, 0)); /* a second shutdown does nothing */
    /* The final counts stay readable. */
    OK(proxy_forwarder_route_count(f, &count));
    CHECK(count == 4);
    s = route_of(f, 0, name, sizeof name);
    CHECK(s.requests_2xx == 4);
    proxy_forwarder_free(f);
    proxy_config_free(c);
    upstream_stop(&alpha);
    upstream_stop(&beta);
    puts("ok routes_reload_and_stats");
}

/* The typed setters: PROXY_TRANSPORT_HTTP is `protocol = http`, and the target is the
 * default route. Freed while running: stopped at once. */
static void typed_setters_and_default_route(void) {
    http_upstream alpha;
    upstream_start(&alpha, "alpha");
    proxy_config *c = config_to_port(PROXY_TRANSPORT_HTTP, alpha.port);
    char value[64];
    size_t n = 0;
    OK(proxy_config_get(c, "protocol", value, sizeof value, &n));
    CHECK(strcmp(value, "http") == 0);
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);
    uint16_t port = port_of(f);
    expect_routed(port, "any.example", "/", &alpha);
    expect_routed(port, "127.0.0.1", "/x/y", &alpha);
    size_t count = 0;
    OK(proxy_forwarder_route_count(f, &count));
    CHECK(count == 2);
    char name[128];
    char expected[128];
    proxy_route_stats s;
    ROUTE_EVENTUALLY(f, 0, name, s, s.requests_2xx == 2);
    snprintf(expected, sizeof expected, "/=127.0.0.1:%u", (unsigned)alpha.port);
    CHECK(strcmp(name, expected) == 0);
    proxy_forwarder_free(f);

    /* A TCP forwarder has no routes. */
    f = start_to_port(PROXY_TRANSPORT_TCP, alpha.port);
    OK(proxy_forwarder_route_count(f, &count));
    CHECK(count == 0);
    CHECK_STATUS(proxy_forwarder_route(f, 0, name, sizeof name, &n, &s, sizeof s),
                 PROXY_STATUS_INDEX_OUT_OF_RANGE);
    proxy_forwarder_free(f);
    upstream_stop(&alpha);
    puts("ok typed_setters_and_default_route");
}

static uint32_t no_answer(void *userdata, const char *host, proxy_resolution *resolution) {
    (void)userdata;
    (void)host;
    (void)resolution;
    return 1;
}

/* Settings an HTTP forwarder refuses, each naming the key. */
static void invalid_settings(void) {
    proxy_config *c = proxy_config_new();
    OK(proxy_config_set(c, "protocol", "http"));
    OK(proxy_config_set(c, "listen", "127.0.0.1:0"));
    CHECK_STATUS(proxy_config_set(c, "route", "shop.example=web:80"),
                 PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS(
        "route: `shop.example=web:80`: HOST/PATH needs a path starting with /, e.g. "
        "shop.example/=web:80");
    char value[64];
    size_t n = 0;
    OK(proxy_config_get(c, "route", value, sizeof value, &n));
    CHECK(n == 0);
    proxy_forwarder *f = NULL;
    /* Neither a route nor a target. */
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("target: ");
    CHECK(f == NULL);
    OK(proxy_config_set(c, "route", "/=127.0.0.1:9"));
    /* Routes resolve with built-in resolvers only. */
    OK(proxy_config_set_resolver_callback(c, no_answer, NULL));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("resolver: a resolver callback cannot resolve an HTTP forward");
    OK(proxy_config_set_resolver(c, PROXY_RESOLVER_SYSTEM));
    OK(proxy_config_set(c, "max_request_body", "0"));
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("max_request_body: ");
    CHECK(f == NULL);
    OK(proxy_config_set(c, "max_request_body", "1M"));
    /* A port in use: nothing stays bound. */
    OK(proxy_forwarder_start(c, &f));
    char addr[PROXY_ADDRESS_BUFFER_SIZE];
    OK(proxy_forwarder_address(f, 0, addr, sizeof addr, &n));
    OK(proxy_config_set(c, "listen", addr));
    proxy_forwarder *g = NULL;
    CHECK_STATUS(proxy_forwarder_start(c, &g), PROXY_STATUS_ADDRESS_IN_USE);
    CHECK_LAST_ERROR_HAS(addr);
    CHECK(g == NULL);
    proxy_forwarder_free(f);
    proxy_config_free(c);
    puts("ok invalid_settings");
}

int main(void) {
    routes_reload_and_stats();
    typed_setters_and_default_route();
    invalid_settings();
    puts("http: ok");
    return 0;
}
