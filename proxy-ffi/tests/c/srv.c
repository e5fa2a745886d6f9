/*
 * `srv:` targets from C with the default resolver choice: hickory asks a real DNS server
 * (dnsmasq, started by c_api.rs) given with proxy_config_add_name_server for the SRV
 * records, which point at an echo server (TCP and UDP, also c_api.rs's) through
 * echo.srv.test. Usage: srv DNS_ADDR:PORT ECHO_PORT
 *
 * dnsmasq serves _echo._tcp.srv.test and _echo._udp.srv.test -> echo.srv.test:ECHO_PORT,
 * echo.srv.test -> 127.0.0.1, and NXDOMAIN for every other name under srv.test.
 */
#include "test.h"

static const char *dns;
static uint16_t echo_port;

static proxy_forwarder *start(proxy_transport transport, const char *target) {
    proxy_config *c = config_to(transport, "127.0.0.1:0", target);
    OK(proxy_config_add_name_server(c, dns));
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(c, &f));
    proxy_config_free(c);
    return f;
}

/* TCP and UDP through SRV records, the resolver left at its default (system): hickory
 * looks the SRV records up all the same. */
static void srv_targets(void) {
    proxy_forwarder *tcp = start(PROXY_TRANSPORT_TCP, "srv:_echo._tcp.srv.test");
    tcp_roundtrip(port_of(tcp));
    tcp_roundtrip(port_of(tcp));
    proxy_stats s = wait_idle(tcp);
    CHECK(s.connections_total == 2);
    CHECK(s.bytes_to_upstream == 2 * (5 + 1000 + (1 << 20)));
    CHECK(s.upstream_unavailable == 0);
    CHECK(s.resolve_refreshes >= 1 && s.resolve_failures == 0);
    proxy_forwarder_free(tcp);

    proxy_forwarder *udp = start(PROXY_TRANSPORT_UDP, "srv:_echo._udp.srv.test");
    udp_roundtrip(port_of(udp));
    EVENTUALLY(udp, s, s.udp_datagrams_to_downstream >= 5);
    CHECK(s.udp_sessions_total >= 1);
    CHECK(s.resolve_refreshes >= 1 && s.resolve_failures == 0);
    proxy_forwarder_free(udp);
    puts("ok srv_targets");
}

/* An SRV name the server does not have: connections are closed, the failure counted. */
static void missing_srv_name(void) {
    proxy_forwarder *f = start(PROXY_TRANSPORT_TCP, "srv:_none._tcp.srv.test");
    tcp_expect_closed(port_of(f));
    proxy_stats s = wait_idle(f);
    CHECK(s.upstream_unavailable == 1);
    CHECK(s.resolve_failures >= 1 && s.resolve_refreshes == 0);
    proxy_forwarder_free(f);
    puts("ok missing_srv_name");
}

/* Name servers serve host names: asking them means hickory, so with the system resolver
 * chosen (the default, which cannot ask them) hickory resolves the name, as in the CLI;
 * with PROXY_RESOLVER_HICKORY too. echo.srv.test is known to the name server only. */
static void name_servers_for_host_names(void) {
    char target[64];
    snprintf(target, sizeof target, "echo.srv.test:%u", (unsigned)echo_port);
    proxy_config *c = config_to(PROXY_TRANSPORT_TCP, "127.0.0.1:0", target);
    OK(proxy_config_add_name_server(c, dns));
    for (int round = 0; round < 2; round++) {
        proxy_forwarder *f = NULL;
        OK(proxy_forwarder_start(c, &f));
        tcp_roundtrip(port_of(f));
        proxy_stats s = wait_idle(f);
        CHECK(s.connections_total == 1 && s.resolve_refreshes >= 1);
        proxy_forwarder_free(f);
        OK(proxy_config_set_resolver(c, PROXY_RESOLVER_HICKORY));
    }
    proxy_config_free(c);
    puts("ok name_servers_for_host_names");
}

static uint32_t never_called(void *userdata, const char *host, proxy_resolution *r) {
    (void)userdata;
    (void)host;
    (void)r;
    CHECK(!"a resolver callback was asked about an SRV target");
    return PROXY_STATUS_RESOLVER;
}

static void bad_settings(void) {
    proxy_config *c = config_to(PROXY_TRANSPORT_TCP, "127.0.0.1:0", "srv:_echo._tcp.srv.test");
    CHECK_STATUS(proxy_config_add_name_server(c, "dns.example"), PROXY_STATUS_INVALID_ADDRESS);
    CHECK_LAST_ERROR_HAS("`dns.example`");
    CHECK_STATUS(proxy_config_add_name_server(c, "127.0.0.1:99999"),
                 PROXY_STATUS_INVALID_ADDRESS);
    CHECK_LAST_ERROR_HAS("127.0.0.1:99999");
    CHECK_STATUS(proxy_config_add_name_server(c, NULL), PROXY_STATUS_NULL_PARAMETER);
    CHECK_LAST_ERROR_HAS("`address`");
    CHECK_STATUS(proxy_config_add_name_server(NULL, dns), PROXY_STATUS_NULL_PARAMETER);
    CHECK_STATUS(proxy_config_clear_name_servers(NULL), PROXY_STATUS_NULL_PARAMETER);
    OK(proxy_config_add_name_server(c, "10.0.0.1"));    /* port 53 */
    OK(proxy_config_add_name_server(c, "[fd00::10]:53"));
    OK(proxy_config_clear_name_servers(c));

    /* A callback cannot answer SRV lookups: refused at the start, naming the target. */
    OK(proxy_config_set_resolver_callback(c, never_called, NULL));
    proxy_forwarder *f = NULL;
    CHECK_STATUS(proxy_forwarder_start(c, &f), PROXY_STATUS_INVALID_SETTING);
    CHECK_LAST_ERROR_HAS("srv:_echo._tcp.srv.test");
    CHECK(f == NULL);

    /* Back to a built-in resolver with the name server: it starts and forwards. */
    OK(proxy_config_set_resolver(c, PROXY_RESOLVER_SYSTEM));
    OK(proxy_config_add_name_server(c, dns));
    OK(proxy_forwarder_start(c, &f));
    tcp_roundtrip(port_of(f));
    proxy_forwarder_free(f);
    proxy_config_free(c);
    puts("ok bad_settings");
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    dns = argv[1];
    echo_port = (uint16_t)atoi(argv[2]);
    CHECK(echo_port != 0);
    srv_targets();
    missing_srv_name();
    name_servers_for_host_names();
    bad_settings();
    puts("srv: ok");
    return 0;
}
