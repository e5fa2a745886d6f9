/*
 * forward: a minimal program on proxy.h. Forwards TCP (or TCP and UDP) from a local
 * address to a target until Ctrl-C or SIGTERM (or for SECONDS), then drains connections
 * for up to 5 s and prints the counters. With --http it is an HTTP reverse proxy
 * instead: TARGET is the default route, and --route adds routes by host and path
 * (`[HOST]/PATH=TARGET,...`); the counters are then printed by route.
 *
 *   cargo build --release -p proxy-ffi
 *   cc -std=c11 -Wall -I proxy-ffi/include proxy-ffi/examples/forward.c \
 *      target/release/libproxy_ffi.a -lpthread -ldl -lm -o forward
 *   ./forward 127.0.0.1:8080 example.com:80
 *   ./forward --both 127.0.0.1:5353 127.0.0.53:53 60
 *   ./forward --http --route 'shop.example/=127.0.0.1:8001,/api=127.0.0.1:8002' \
 *      127.0.0.1:8080 127.0.0.1:8000
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy.h"

/* Prints what failed and the library's detail, and exits. */
static void die(const char *what, proxy_status status) {
    char detail[512] = "";
    size_t n = 0;
    proxy_last_error(detail, sizeof detail, &n);
    fprintf(stderr, "forward: %s failed (status %u): %s\n", what, (unsigned)status, detail);
    exit(1);
}

#define TRY(call)                                                                       \
    do {                                                                                \
        proxy_status s_ = (call);                                                       \
        if (s_ != PROXY_STATUS_OK) {                                                    \
            die(#call, s_);                                                             \
        }                                                                               \
    } while (0)

int main(int argc, char **argv) {
    proxy_transport transport = PROXY_TRANSPORT_TCP;
    const char *routes = NULL;
    int arg = 1;
    if (arg < argc && strcmp(argv[arg], "--both") == 0) {
        transport = PROXY_TRANSPORT_BOTH;
        arg++;
    } else if (arg < argc && strcmp(argv[arg], "--http") == 0) {
        transport = PROXY_TRANSPORT_HTTP;
        arg++;
        if (arg + 1 < argc && strcmp(argv[arg], "--route") == 0) {
            routes = argv[arg + 1];
            arg += 2;
        }
    }
    if (argc - arg < 2 || argc - arg > 3) {
        fprintf(stderr,
                "usage: %s [--both | --http [--route ROUTES]] LISTEN_ADDR:PORT "
                "TARGET_HOST:PORT [SECONDS]\n",
                argv[0]);
        return 2;
    }
    const char *listen = argv[arg];
    const char *target = argv[arg + 1];
    long seconds = argc - arg == 3 ? atol(argv[arg + 2]) : -1;

    /* Block the signals before the forwarder starts its threads, so they inherit the mask
     * and the signals reach sigtimedwait below. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigprocmask(SIG_BLOCK, &signals, NULL);

    proxy_config *config = proxy_config_new();
    if (config == NULL) {
        die("proxy_config_new", PROXY_STATUS_PANIC);
    }
    TRY(proxy_config_set_transport(config, transport));
    TRY(proxy_config_add_listen(config, listen));
    TRY(proxy_config_set_target(config, target));
    /* Any setting of the CLI's flags and config file, by key and text value (see
     * proxy_key_name): here TCP connections and UDP sessions idle for 10 minutes end. */
    TRY(proxy_config_set(config, "idle_timeout", "10m"));
    if (routes != NULL) {
        TRY(proxy_config_set(config, "route", routes));
    }

    proxy_forwarder *forwarder = NULL;
    TRY(proxy_forwarder_start(config, &forwarder));
    proxy_config_free(config);

    size_t count = 0;
    TRY(proxy_forwarder_address_count(forwarder, &count));
    for (size_t i = 0; i < count; i++) {
        char addr[PROXY_ADDRESS_BUFFER_SIZE];
        size_t n = 0;
        TRY(proxy_forwarder_address(forwarder, i, addr, sizeof addr, &n));
        printf("Forwarding from %s -> %s\n", addr, target);
    }
    fflush(stdout);

    if (seconds < 0) {
        int sig = 0;
        sigwait(&signals, &sig);
    } else if (seconds > 0) {
        struct timespec timeout = {seconds, 0};
        sigtimedwait(&signals, NULL, &timeout);
    }

    TRY(proxy_forwarder_shutdown(forwarder, 5000));
    /* An HTTP forwarder counts by route, the last one (`-`) the requests no route served;
     * a TCP or UDP forwarder has none. */
    TRY(proxy_forwarder_route_count(forwarder, &count));
    for (size_t i = 0; i < count; i++) {
        char route[512];
        size_t n = 0;
        proxy_route_stats r;
        TRY(proxy_forwarder_route(forwarder, i, route, sizeof route, &n, &r, sizeof r));
        printf("route %s: %llu requests (2xx %llu, 4xx %llu, 5xx %llu), bytes in: %llu, "
               "out: %llu\n",
               route,
               (unsigned long long)r.latency_buckets[PROXY_LATENCY_BUCKETS - 1],
               (unsigned long long)r.requests_2xx, (unsigned long long)r.requests_4xx,
               (unsigned long long)r.requests_5xx, (unsigned long long)r.bytes_in,
               (unsigned long long)r.bytes_out);
    }
    if (count > 0) {
        proxy_forwarder_free(forwarder);
        return 0;
    }
    proxy_stats stats;
    TRY(proxy_forwarder_stats(forwarder, &stats, sizeof stats));
    printf("connections: %llu, bytes up: %llu, down: %llu, udp sessions: %llu\n",
           (unsigned long long)stats.connections_total,
           (unsigned long long)stats.bytes_to_upstream,
           (unsigned long long)stats.bytes_to_downstream,
           (unsigned long long)stats.udp_sessions_total);
    proxy_forwarder_free(forwarder);
    return 0;
}
