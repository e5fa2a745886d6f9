/*
 * proxy_version(): the static version string, equal to argv[1] (what c_api.rs expects:
 * the crate version and the git revision), the same on every call and every thread.
 */
#include "test.h"

static void *version_on_a_thread(void *arg) {
    (void)arg;
    return (void *)proxy_version();
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    const char *v = proxy_version();
    CHECK(v != NULL);
    printf("proxy_version: %s\n", v);
    CHECK(strcmp(v, argv[1]) == 0);
    /* `MAJOR.MINOR.PATCH (REVISION)`, with a revision. */
    unsigned major, minor, patch;
    char revision[64];
    CHECK(sscanf(v, "%u.%u.%u (%63[^)])", &major, &minor, &patch, revision) == 4);
    CHECK(strlen(revision) > 0);
    CHECK(v[strlen(v) - 1] == ')');
    /* Static: the same pointer every time, from any thread. */
    CHECK(proxy_version() == v);
    pthread_t t;
    void *other = NULL;
    CHECK(pthread_create(&t, NULL, version_on_a_thread, NULL) == 0);
    CHECK(pthread_join(t, &other) == 0);
    CHECK(other == (const void *)v);
    puts("version: ok");
    return 0;
}
