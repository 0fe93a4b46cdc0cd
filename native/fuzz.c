/* libFuzzer's entry for the thin client's parsers (make fuzz; clang -fsanitize=fuzzer):
 * the first byte picks what the rest is fed to, as the client gets it from outside. */
#define CLIENT_NO_MAIN
#include "client.c"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
    static struct strbuf out;
    if (len == 0) return 0;
    const unsigned char *p = data + 1;
    size_t n = len - 1;
    switch (data[0] % 4) {
    case 0:  /* the network config on stdin */
        config_choice(p, n, &out);
        break;
    case 1: {  /* HOST_LOCAL_SQLITE_DAEMON: a C string */
        char *s = malloc(n + 1);
        if (!s) return 0;
        memcpy(s, p, n);
        s[n] = 0;
        env_choice(s, &out);
        free(s);
        break;
    }
    case 2: {  /* the daemon's byte stream: messages one after another */
        struct message m;
        long got;
        while (n && (got = parse_message(p, n, &m)) > 0) {
            if (m.kind == 'T') parse_bound(m.part[0], m.part_len[0]);
            p += got;
            n -= (size_t)got;
        }
        break;
    }
    default:  /* a PROVE's path: what this process sees there */
        view((const char *)p, n, &out);
        break;
    }
    return 0;
}
