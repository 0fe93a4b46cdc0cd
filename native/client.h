/* The thin client's parsers, apart from its I/O: native/client.c, driven by the fuzzer
 * (native/fuzz.c) as by main(). */
#ifndef HOST_LOCAL_SQLITE_CLIENT_H
#define HOST_LOCAL_SQLITE_CLIENT_H
#include <stddef.h>

/* ipam.client's constants (MAX_STDIN: ipam.process's), which tests/test_native_client.py
 * checks against these. */
#define MAGIC "host-local-sqlite/2\n"
#define TAKE_TIMEOUT_MS 1000
#define ANSWER_MARGIN_MS 2000
#define MAX_BOUND 120.0
#define MAX_STDIN (64L * 1024 * 1024)
#define DAEMON_SOCKET "/run/host-local-sqlite/daemon.sock"
#define DAEMON_ENV "HOST_LOCAL_SQLITE_DAEMON"
/* The in-process plugin: this program's own path with this suffix. */
#define IN_PROCESS_SUFFIX ".in-process"
/* In a copy of the self-contained build, beside this program (ipam.install.frozen.IN_USE). */
#define IN_USE_FILE "IN-USE.lock"
/* What ipamctl install-plugin knows this program by (ipam.install.native.MARKER): a file at the
 * plugin's name that holds it is one install-plugin wrote, as the launcher's marker line
 * says of the launcher. */
#define INSTALL_MARKER "host-local-sqlite native thin client, installed by \"ipamctl install-plugin\""
/* The most a daemon's message may hold: its ANSWER's stdout and stderr together. A CNI
 * result is a few KiB; a daemon that sends more is no daemon of ours. */
#define MAX_MESSAGE (16U * 1024 * 1024)
/* The most paths a PROVE may name, in bytes: the daemon names a handful. */
#define MAX_PROVE (256U * 1024)
/* Python's json stops at its recursion limit; so does this parser, sooner. */
#define JSON_MAX_DEPTH 500

struct strbuf {
    size_t len;
    int overflow;  /* it held more than data does */
    int lone;      /* a lone surrogate escape (\ud800): no path */
    char data[8192];
};

enum {
    CHOICE_NONE,      /* not said: the next source says */
    CHOICE_FALSE,     /* never forward */
    CHOICE_TRUE,      /* the default socket, named */
    CHOICE_PATH,      /* this socket, named */
    CHOICE_UNUSABLE,  /* a path no socket can have: run in process, saying so */
};

struct choice_state {
    int ipam_kind, daemon_kind;
    struct strbuf path;
};

struct message {
    unsigned char kind, status;
    const unsigned char *part[2];
    size_t part_len[2];
};

int config_choice(const unsigned char *data, size_t len, struct strbuf *path);
int env_choice(const char *value, struct strbuf *path);
long parse_message(const unsigned char *buf, size_t len, struct message *m);
double parse_bound(const unsigned char *p, size_t n);
int view(const char *path, size_t n, struct strbuf *out);
#endif
