/*
 * A PROXY_TRANSPORT_BOTH forwarder on port 0 serves TCP and UDP on one port, searching
 * when UDP finds the port TCP got taken, a bounded number of times; a failed search
 * holds no port. Runs in a network namespace of its own (c_api.rs starts it with
 * `unshare --net`), where it narrows the ephemeral port range to make the kernel's
 * choices collide.
 */
#include "test.h"

#define FIRST_PORT 40000

static void set_port_range(int first, int last) {
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "w");
    CHECK(f != NULL);
    CHECK(fprintf(f, "%d %d\n", first, last) > 0);
    CHECK(fclose(f) == 0);
}

/* A socket of `type` bound to 127.0.0.1:port, or -1 when the port is taken. */
static int bind_port(int type, int port) {
    int fd = socket(AF_INET, type, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        CHECK(errno == EADDRINUSE);
        close(fd);
        return -1;
    }
    return fd;
}

static proxy_config *both_on_port_0(void) {
    proxy_config *config = proxy_config_new();
    CHECK(config != NULL);
    OK(proxy_config_set_transport(config, PROXY_TRANSPORT_BOTH));
    OK(proxy_config_add_listen(config, "127.0.0.1:0"));
    OK(proxy_config_set_target(config, "127.0.0.1:9"));
    return config;
}

/* No TCP port of the range is held any more. */
static void check_tcp_ports_free(int last) {
    for (int port = FIRST_PORT; port <= last; port++) {
        int fd = bind_port(SOCK_STREAM, port);
        if (fd < 0) {
            fprintf(stderr, "TCP port %d is still held\n", port);
            exit(1);
        }
        close(fd);
    }
}

int main(void) {
    int udp[12];

    /* Four ports, three taken for UDP: the one left serves both. */
    set_port_range(FIRST_PORT, FIRST_PORT + 3);
    for (int i = 0; i < 3; i++) {
        udp[i] = bind_port(SOCK_DGRAM, FIRST_PORT + i);
        CHECK(udp[i] >= 0);
    }
    proxy_config *config = both_on_port_0();
    proxy_forwarder *f = NULL;
    OK(proxy_forwarder_start(config, &f));
    uint16_t port = 0;
    OK(proxy_forwarder_port(f, 0, &port));
    CHECK(port == FIRST_PORT + 3);
    CHECK(bind_port(SOCK_STREAM, port) < 0);
    CHECK(bind_port(SOCK_DGRAM, port) < 0);
    OK(proxy_forwarder_shutdown(f, 1000));
    proxy_forwarder_free(f);
    check_tcp_ports_free(FIRST_PORT + 3);

    /* All four taken: no port serves both; nothing is left bound. */
    udp[3] = bind_port(SOCK_DGRAM, FIRST_PORT + 3);
    CHECK(udp[3] >= 0);
    f = NULL;
    CHECK_STATUS(proxy_forwarder_start(config, &f), PROXY_STATUS_ADDRESS_IN_USE);
    CHECK(f == NULL);
    check_tcp_ports_free(FIRST_PORT + 3);

    /* Twelve ports, all taken for UDP: the search gives up after 10 tries, on UDP's
     * error, holding no port. */
    set_port_range(FIRST_PORT, FIRST_PORT + 11);
    for (int i = 4; i < 12; i++) {
        udp[i] = bind_port(SOCK_DGRAM, FIRST_PORT + i);
        CHECK(udp[i] >= 0);
    }
    CHECK_STATUS(proxy_forwarder_start(config, &f), PROXY_STATUS_ADDRESS_IN_USE);
    CHECK_LAST_ERROR_HAS("127.0.0.1:4");
    check_tcp_ports_free(FIRST_PORT + 11);

    proxy_config_free(config);
    for (int i = 0; i < 12; i++) {
        close(udp[i]);
    }
    printf("same_port: ok\n");
    return 0;
}
