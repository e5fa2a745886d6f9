/*
 * The resolver callback: C resolves the target's name; the call happens on the
 * forwarder's own threads with the userdata given; failures are counted and connections
 * closed; a reload brings a new callback; free waits for a call in progress. Also the
 * built-in resolvers.
 */
#include "test.h"

typedef struct {
    pthread_t main_thread;
    atomic_int calls;
    atomic_int wrong_thread;
    atomic_int fail;       /* return an error status */
    atomic_int no_address; /* return OK without adding an address */
    atomic_int block_ms;   /* sleep this long inside the call */
    atomic_int entered;
    atomic_int returned;
} resolver_state;

static uint32_t resolve(void *userdata, const char *host, proxy_resolution *r) {
    resolver_state *st = userdata;
    atomic_fetch_add(&st->calls, 1);
    atomic_store(&st->entered, 1);
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    if (pthread_equal(pthread_self(), st->main_thread) || strncmp(name, "proxy-ffi-", 10) != 0) {
        fprintf(stderr, "callback on thread \"%s\"\n", name);
        atomic_fetch_add(&st->wrong_thread, 1);
    }
    if (atomic_load(&st->block_ms) > 0) {
        sleep_ms(atomic_load(&st->block_ms));
    }
    uint32_t status = PROXY_STATUS_OK;
    if (strcmp(host, "echo.test") != 0) {
        status = PROXY_STATUS_INVALID_TARGET;
    } else if (atomic_load(&st->fail)) {
        status = PROXY_STATUS_RESOLVER;
    } else if (!atomic_load(&st->no_address)) {
        CHECK_STATUS(proxy_resolution_add(r, "not-an-ip"), PROXY_STATUS_INVALID_ADDRESS);
        OK(proxy_resolution_add(r, "127.0.0.1"));
        OK(proxy_resolution_add(r, "127.0.0.1")); /* kept once */
        OK(proxy_resolution_set_ttl(r, 60000));
    }
    atomic_store(&st->returned, 1);
    return status;
}

static void state_init(resolver_state *st) {
    memset(st, 0, sizeof *st);
    st->main_thread = pthread_self();
}

static proxy_forwarder *start_with_callback(proxy_transport transport, uint16_t port,
                                            resolver_state *st) {
    char target[64];
    snprintf(target, sizeof target, "echo.test:%u", (unsigned)port);
    proxy_config *c = config_to(transport, "127.0.0.1:0", target);
    OK(proxy_config_set_resolver_callback(c, resolve, st));
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);
    return f;
}

static void callback_resolves_the_target(void) {
    echo_server echo;
    echo_start(&echo);
    resolver_state st;
    state_init(&st);
    proxy_forwarder *f = start_with_callback(PROXY_TRANSPORT_BOTH, echo.port, &st);
    uint16_t port = port_of(f);
    tcp_roundtrip(port);
    tcp_roundtrip(port);
    udp_roundtrip(port);
    CHECK(atomic_load(&echo.tcp_connections) == 2);
    CHECK(atomic_load(&st.calls) >= 2); /* TCP and UDP each look the name up */
    CHECK(atomic_load(&st.calls) <= 4); /* and keep the answer (TTL 60 s) */
    CHECK(atomic_load(&st.wrong_thread) == 0);
    proxy_stats s = wait_idle(f);
    CHECK(s.resolve_refreshes >= 2);
    CHECK(s.resolve_failures == 0);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok callback_resolves_the_target");
}

static void failed_lookups_close_connections(void) {
    echo_server echo;
    echo_start(&echo);
    resolver_state st;
    state_init(&st);
    atomic_store(&st.fail, 1);
    proxy_forwarder *f = start_with_callback(PROXY_TRANSPORT_TCP, echo.port, &st);
    tcp_expect_closed(port_of(f));
    proxy_stats s;
    EVENTUALLY(f, s, s.upstream_unavailable >= 1);
    CHECK(s.resolve_failures >= 1);
    CHECK(s.resolve_refreshes == 0);
    proxy_forwarder_free(f);

    state_init(&st);
    atomic_store(&st.no_address, 1);
    f = start_with_callback(PROXY_TRANSPORT_TCP, echo.port, &st);
    tcp_expect_closed(port_of(f));
    EVENTUALLY(f, s, s.upstream_unavailable >= 1);
    CHECK(s.resolve_failures >= 1);
    proxy_forwarder_free(f);
    CHECK(atomic_load(&echo.tcp_connections) == 0);
    echo_stop(&echo);
    puts("ok failed_lookups_close_connections");
}

static void reload_brings_a_new_callback(void) {
    echo_server echo;
    echo_start(&echo);
    resolver_state broken, good;
    state_init(&broken);
    state_init(&good);
    atomic_store(&broken.fail, 1);
    proxy_forwarder *f = start_with_callback(PROXY_TRANSPORT_TCP, echo.port, &broken);
    uint16_t port = port_of(f);
    tcp_expect_closed(port);

    char target[64];
    snprintf(target, sizeof target, "echo.test:%u", (unsigned)echo.port);
    proxy_config *c = config_to(PROXY_TRANSPORT_TCP, "127.0.0.1:0", target);
    OK(proxy_config_set_resolver_callback(c, resolve, &good));
    OK(proxy_forwarder_reload(f, c));
    proxy_config_free(c);
    CHECK(port_of(f) == port);
    tcp_roundtrip(port);
    CHECK(atomic_load(&good.calls) >= 1);
    CHECK(atomic_load(&good.wrong_thread) == 0);
    CHECK(atomic_load(&echo.tcp_connections) == 1);
    proxy_forwarder_free(f);
    echo_stop(&echo);
    puts("ok reload_brings_a_new_callback");
}

static void free_waits_for_a_call_in_progress(void) {
    resolver_state st;
    state_init(&st);
    atomic_store(&st.block_ms, 300);
    proxy_forwarder *f = start_with_callback(PROXY_TRANSPORT_TCP, 9, &st);
    /* The forwarder looks the name up as it starts. */
    double deadline = now_seconds() + 5;
    while (!atomic_load(&st.entered) && now_seconds() < deadline) {
        sleep_ms(1);
    }
    CHECK(atomic_load(&st.entered));
    proxy_forwarder_free(f);
    /* `st` may go away now: the call has returned. */
    CHECK(atomic_load(&st.returned));
    puts("ok free_waits_for_a_call_in_progress");
}

static void built_in_resolvers(void) {
    echo_server echo;
    echo_start(&echo);
    char target[64];
    snprintf(target, sizeof target, "localhost:%u", (unsigned)echo.port);
    proxy_config *c = config_to(PROXY_TRANSPORT_TCP, "127.0.0.1:0", target);
    OK(proxy_config_set_resolver(c, PROXY_RESOLVER_SYSTEM));
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    tcp_roundtrip(port_of(f));
    proxy_stats s = wait_idle(f);
    CHECK(s.resolve_refreshes >= 1);
    proxy_forwarder_free(f);

    /* hickory reads /etc/resolv.conf as it starts; an IP target never asks it. */
    snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)echo.port);
    OK(proxy_config_set_target(c, target));
    OK(proxy_config_set_resolver(c, PROXY_RESOLVER_HICKORY));
    proxy_status st = proxy_forwarder_start(c, &f);
    if (st == PROXY_STATUS_RESOLVER) {
        puts("skip hickory: no usable /etc/resolv.conf here");
    } else {
        OK(st);
        tcp_roundtrip(port_of(f));
        proxy_forwarder_free(f);
    }
    proxy_config_free(c);
    echo_stop(&echo);
    puts("ok built_in_resolvers");
}

int main(void) {
    callback_resolves_the_target();
    failed_lookups_close_connections();
    reload_brings_a_new_callback();
    free_waits_for_a_call_in_progress();
    built_in_resolvers();
    return 0;
}
