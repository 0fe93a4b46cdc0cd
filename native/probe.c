/* The thin client's parsers as a program, for tests/test_native_client.py to compare
 * with ipam.client on the same inputs (and, built with sanitizers, to fuzz from Python
 * where libFuzzer is missing). Reads stdin; argv[1] says what it is:
 *   config  -> "none" | "false" | "true" | "unusable" | "path <hex>"
 *   env     -> the same, for the environment variable's value
 *   message -> per message: "<kind> <status> <len> <hex>..." then "more" or "bad"
 *   bound   -> the bound, or -1
 *   view    -> the view, or "overflow" */
#define CLIENT_NO_MAIN
#include "client.c"

static void hex(const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

int main(int argc, char **argv)
{
    static unsigned char in[MAX_MESSAGE + 1024];
    size_t n = fread(in, 1, sizeof in, stdin);
    static struct strbuf out;
    const char *what = argc > 1 ? argv[1] : "";
    static const char *const names[] = {"none", "false", "true", "path", "unusable"};
    if (!strcmp(what, "config") || !strcmp(what, "env")) {
        int c;
        if (what[0] == 'c') c = config_choice(in, n, &out);
        else {
            if (memchr(in, 0, n)) return 2;
            in[n] = 0;
            c = env_choice((char *)in, &out);
        }
        printf("%s", names[c]);
        if (c == CHOICE_PATH) { printf(" "); hex(out.data, out.len); }
        printf("\n");
    } else if (!strcmp(what, "message")) {
        struct message m;
        const unsigned char *p = in;
        long got;
        while ((got = parse_message(p, n, &m)) > 0) {
            printf("%c %u %ld", m.kind, m.status, got);
            for (int i = 0; i < (m.kind == 'A' ? 2 : 1); i++) { printf(" "); hex(m.part[i], m.part_len[i]); }
            printf("\n");
            p += got;
            n -= (size_t)got;
        }
        printf(got == 0 ? "more\n" : "bad\n");
    } else if (!strcmp(what, "bound")) {
        printf("%.17g\n", parse_bound(in, n));
    } else if (!strcmp(what, "view")) {
        if (view((char *)in, n, &out)) return 3;
        if (out.overflow) printf("overflow\n");
        else { fwrite(out.data, 1, out.len, stdout); printf("\n"); }
    } else return 2;
    return 0;
}
