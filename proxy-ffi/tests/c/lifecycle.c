/*
 * Starts and stops forwarders in a loop (200 times unless argv[1] says otherwise),
 * cycling through TCP, UDP, both and HTTP, graceful shutdown and a plain free, with traffic now
 * and then. Run under valgrind by the test harness: every thread, socket and allocation
 * must be gone after each free.
 */
#include "test.h"

#include <dirent.h>

/* The number of entries in a /proc/self directory: open fds, or threads. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    CHECK(rounds > 0);
    echo_server echo;
    echo_start(&echo);
    static const proxy_transport transports[] = {PROXY_TRANSPORT_TCP, PROXY_TRANSPORT_UDP,
                                               PROXY_TRANSPORT_BOTH, PROXY_TRANSPORT_HTTP};
    int tcp_rounds = 0;
    /* The first runtime of the process makes tokio's process-wide signal socket pair,
     * kept for the life of the process: count from after one round. */
    proxy_config *warmup = config_to_port(PROXY_TRANSPORT_TCP, echo.port);
    proxy_forwarder *wf = NULL;
    OK(proxy_forwarder_start(warmup, &wf));
    proxy_forwarder_free(wf);
    proxy_config_free(warmup);
    int fds_before = count_entries("/proc/self/fd");
    int threads_before = count_entries("/proc/self/task");
    for (int i = 0; i < rounds; i++) {
        proxy_transport transport = transports[i % 4];
        proxy_config *c = config_to_port(transport, echo.port);
        OK(proxy_config_set_worker_threads(c, 1 + (size_t)(i % 2)));
        proxy_forwarder *f = NULL;
        OK(proxy_forwarder_start(c, &f));
        proxy_config_free(c);
        uint16_t port = port_of(f);
        /* Echoed traffic through TCP and both (the echo server does not speak HTTP). */
        if (i % 15 == 0 &&
            (transport == PROXY_TRANSPORT_TCP || transport == PROXY_TRANSPORT_BOTH)) {
            int fd = tcp_connect(port);
            tcp_echo_check(fd, 1000, (unsigned)i);
            close(fd);
            tcp_rounds++;
        }
        if (i % 5 == 0) { /* every transport in turn */
            OK(proxy_forwarder_shutdown(f, 10));
            size_t n = 1;
            OK(proxy_forwarder_address_count(f, &n));
            CHECK(n == 0);
        }
        proxy_forwarder_free(f);
    }
    CHECK(atomic_load(&echo.tcp_connections) == tcp_rounds);
    /* Every forwarder's sockets and threads are gone once it is freed. */
    CHECK(count_entries("/proc/self/fd") == fds_before);
    CHECK(count_entries("/proc/self/task") == threads_before);
    echo_stop(&echo);
    printf("ok %d starts and stops\n", rounds);
    return 0;
}
