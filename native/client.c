/* The plugin's thin client in C: a forwarded call without starting an interpreter.
 *
 * ipam/client.py is the thin client in Python; this is the same client, rule for rule,
 * for the call's cost: an interpreter's start (about 6 ms of CPU) against an exec of a
 * small static program. It speaks the same wire format (ipam/client.py, "the wire
 * format"), chooses the same socket (the config's ipam.daemon, else
 * HOST_LOCAL_SQLITE_DAEMON, else the default socket if it exists), trusts only a daemon
 * run by root or this user (SO_PEERCRED), and keeps issue 18's deadlines: TAKE_TIMEOUT
 * for each of PROVE and TAKEN, the told bound and ANSWER_MARGIN for the answer.
 *
 * When no daemon takes the call, it execs the in-process plugin (the launcher, or the
 * self-contained build's plugin) with the same arguments, environment and stdin: the
 * bytes already read are handed over in a memfd (a pipe where memfd_create fails), so
 * the call runs exactly as it would have without this client. The in-process plugin is
 * the file beside this one's (/proc/self/exe) named with IN_PROCESS_SUFFIX.
 *
 * Its own failures are CNI error objects on stdout: code 11 when SIGINT, SIGTERM or
 * SIGHUP ends a call it waits for, code 5 when the in-process plugin cannot be run.
 * Everything it reads from outside (stdin's config, the environment, the daemon's
 * messages) is bounded and checked; native/fuzz.c drives the parsers below.
 *
 * libc only, and linked statically against musl for the shipped build (Debian 12's gcc
 * would tie it to glibc 2.34's symbols; the self-contained build promises 2.17).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

extern char **environ;

/* --- the config's ipam.daemon ------------------------------------------------------- */
/* A JSON parser that validates the whole document as Python's json (strict, no NaN or
 * Infinity) does, and keeps only the last top-level "ipam" key's last "daemon" value
 * (keys compared case-insensitively, as ipam.client's pairs hook lowercases them). */
struct json {
    const unsigned char *p, *end;
    int depth;
};

static void skip_ws(struct json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_u16(struct json *j, unsigned *out)
{
    unsigned v = 0;
    if (j->end - j->p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0) return -1;
        v = v * 16 + (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return 0;
}

static void put_utf8(struct strbuf *s, unsigned cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = 0xC0 | (cp >> 6); b[1] = 0x80 | (cp & 0x3F); n = 2; }
    else if (cp < 0x10000) {
        b[0] = 0xE0 | (cp >> 12); b[1] = 0x80 | ((cp >> 6) & 0x3F); b[2] = 0x80 | (cp & 0x3F);
        n = 3;
    } else {
        b[0] = 0xF0 | (cp >> 18); b[1] = 0x80 | ((cp >> 12) & 0x3F);
        b[2] = 0x80 | ((cp >> 6) & 0x3F); b[3] = 0x80 | (cp & 0x3F); n = 4;
    }
    for (size_t i = 0; i < n && s->len < sizeof s->data; i++)
        s->data[s->len++] = (char)b[i];
    if (s->len >= sizeof s->data) s->overflow = 1;
}

/* A string at j->p (its opening quote); its text into *s when s is not NULL (a lone
 * surrogate escape sets s->lone: Python would keep it, which no path can hold). */
static int json_string(struct json *j, struct strbuf *s)
{
    if (s) { s->len = 0; s->overflow = 0; s->lone = 0; }
    j->p++;
    while (j->p < j->end) {
        unsigned char c = *j->p++;
        if (c == '"') return 0;
        if (c < 0x20) return -1;  /* strict: raw control characters are errors */
        if (c != '\\') {
            if (s) {
                if (s->len < sizeof s->data) s->data[s->len++] = (char)c;
                else s->overflow = 1;
            }
            continue;
        }
        if (j->p >= j->end) return -1;
        c = *j->p++;
        unsigned cp;
        switch (c) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (read_u16(j, &cp)) return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF && j->end - j->p >= 6 && j->p[0] == '\\' &&
                j->p[1] == 'u') {
                struct json peek = *j;
                unsigned lo;
                peek.p += 2;
                if (read_u16(&peek, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
                    j->p = peek.p;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF && s) s->lone = 1;
            break;
        default:
            return -1;
        }
        if (s) put_utf8(s, cp);
    }
    return -1;
}

static int json_number(struct json *j)
{
    const unsigned char *p = j->p;
    if (p < j->end && *p == '-') p++;
    if (p >= j->end) return -1;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (p < j->end && *p >= '0' && *p <= '9') p++;
    else return -1;
    if (p < j->end && *p == '.' && p + 1 < j->end && p[1] >= '0' && p[1] <= '9') {
        p++;
        while (p < j->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        const unsigned char *q = p + 1;
        if (q < j->end && (*q == '+' || *q == '-')) q++;
        if (q < j->end && *q >= '0' && *q <= '9') {
            while (q < j->end && *q >= '0' && *q <= '9') q++;
            p = q;
        }
    }
    j->p = p;
    return 0;
}

static int literal(struct json *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n)) return -1;
    j->p += n;
    return 0;
}

static int ascii_ieq(const char *a, size_t n, const char *word)
{
    if (strlen(word) != n) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = a[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != word[i]) return 0;
    }
    return 1;
}

/* What a value is, for the one we keep. */
enum { V_OTHER, V_STRING, V_TRUE, V_FALSE, V_NULL, V_OBJECT };

/* The value at j->p. level 0: the document; 1: the top-level "ipam" object's value;
 * 2: its "daemon" value. found: where the choice goes. */
static int json_value(struct json *j, int level, struct choice_state *st);

static int json_object(struct json *j, int level, struct choice_state *st)
{
    struct strbuf key;
    j->p++;
    skip_ws(j);
    if (j->p < j->end && *j->p == '}') { j->p++; return 0; }
    for (;;) {
        skip_ws(j);
        if (j->p >= j->end || *j->p != '"') return -1;
        int want = level == 0 || level == 1;
        if (json_string(j, want ? &key : NULL)) return -1;
        skip_ws(j);
        if (j->p >= j->end || *j->p != ':') return -1;
        j->p++;
        skip_ws(j);
        int next = -1;
        if (want && !key.overflow) {
            if (level == 0 && ascii_ieq(key.data, key.len, "ipam")) next = 1;
            if (level == 1 && ascii_ieq(key.data, key.len, "daemon")) next = 2;
        }
        if (next == 1) st->ipam_kind = V_OTHER, st->daemon_kind = -1;
        if (json_value(j, next, st)) return -1;
        skip_ws(j);
        if (j->p >= j->end) return -1;
        if (*j->p == ',') { j->p++; continue; }
        if (*j->p == '}') { j->p++; return 0; }
        return -1;
    }
}

static int json_value(struct json *j, int level, struct choice_state *st)
{
    int r;
    if (j->p >= j->end) return -1;
    if (++j->depth > JSON_MAX_DEPTH) return -1;
    unsigned char c = *j->p;
    int kind = V_OTHER;
    if (c == '{') {
        kind = V_OBJECT;
        if (level == 1) st->ipam_kind = V_OBJECT, st->daemon_kind = -1;
        r = json_object(j, level == 0 ? 0 : level == 1 ? 1 : -1, st);
        /* an object nested below the top is no level of ours */
    } else if (c == '[') {
        j->p++;
        skip_ws(j);
        r = 0;
        if (j->p < j->end && *j->p == ']') j->p++;
        else for (;;) {
            skip_ws(j);
            if ((r = json_value(j, -1, st))) break;
            skip_ws(j);
            if (j->p >= j->end) { r = -1; break; }
            if (*j->p == ',') { j->p++; continue; }
            if (*j->p == ']') { j->p++; break; }
            r = -1;
            break;
        }
    } else if (c == '"') {
        kind = V_STRING;
        r = json_string(j, level == 2 ? &st->path : NULL);
    } else if (c == 't') { kind = V_TRUE; r = literal(j, "true"); }
    else if (c == 'f') { kind = V_FALSE; r = literal(j, "false"); }
    else if (c == 'n') { kind = V_NULL; r = literal(j, "null"); }
    else r = json_number(j);
    j->depth--;
    if (r) return r;
    if (level == 1 && kind != V_OBJECT) st->ipam_kind = kind;
    if (level == 2) st->daemon_kind = kind;
    return 0;
}

/* The json object level passed to json_object: 0 top, 1 inside ipam, -1 elsewhere. The
 * value levels: json_value's level 0 is the document itself. */
int config_choice(const unsigned char *data, size_t len, struct strbuf *path)
{
    /* Parsed only when the word is there at all (bytes.lower(), as the Python client). */
    static const char word[] = "daemon";
    int seen = 0;
    for (size_t i = 0; i + 6 <= len && !seen; i++) {
        size_t k = 0;
        while (k < 6) {
            unsigned char c = data[i + k];
            if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
            if (c != (unsigned char)word[k]) break;
            k++;
        }
        seen = k == 6;
    }
    if (!seen) return CHOICE_NONE;
    struct choice_state st;
    memset(&st, 0, sizeof st);
    st.ipam_kind = -1;
    st.daemon_kind = -1;
    struct json j = {data, data + len, 0};
    skip_ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        /* a document that is no object has no ipam key: validity does not matter */
        return CHOICE_NONE;
    }
    if (json_value(&j, 0, &st)) return CHOICE_NONE;
    skip_ws(&j);
    if (j.p != j.end) return CHOICE_NONE;  /* extra data: not one document */
    if (st.ipam_kind != V_OBJECT || st.daemon_kind < 0) return CHOICE_NONE;
    switch (st.daemon_kind) {
    case V_NULL: return CHOICE_NONE;
    case V_TRUE: return CHOICE_TRUE;
    case V_FALSE: return CHOICE_FALSE;
    case V_STRING:
        if (st.path.len == 0) return CHOICE_FALSE;
        if (st.path.overflow || st.path.lone) return CHOICE_UNUSABLE;
        *path = st.path;
        return CHOICE_PATH;
    default: return CHOICE_FALSE;
    }
}

/* --- the environment's choice ------------------------------------------------------- */
int env_choice(const char *value, struct strbuf *path)
{
    static const char *const off[] = {"false", "0", "off", "no"};
    if (value == NULL || *value == 0) return CHOICE_NONE;
    size_t n = strlen(value);
    for (size_t i = 0; i < sizeof off / sizeof *off; i++)
        if (ascii_ieq(value, n, off[i])) return CHOICE_FALSE;
    if (n > sizeof path->data) return CHOICE_UNUSABLE;
    memcpy(path->data, value, n);
    path->len = n;
    path->overflow = path->lone = 0;
    return CHOICE_PATH;
}

/* --- the daemon's messages ---------------------------------------------------------- */
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The message at the start of buf: its length (> 0) with *m filled in, 0 when it is cut
 * short (read more), -1 when it is not one (an unknown kind, or a blob longer than
 * MAX_MESSAGE: no daemon of ours sends one). */
long parse_message(const unsigned char *buf, size_t len, struct message *m)
{
    if (len == 0) return 0;
    m->kind = buf[0];
    size_t at = 1;
    int blobs;
    m->status = 0;
    switch (buf[0]) {
    case 'A':
        if (len < 2) return 0;
        m->status = buf[1];
        at = 2;
        blobs = 2;
        break;
    case 'P': case 'T': case 'N': case 'V':
        blobs = 1;
        break;
    default:
        return -1;
    }
    for (int i = 0; i < blobs; i++) {
        if (len - at < 4) return 0;
        uint32_t n = be32(buf + at);
        if (n > MAX_MESSAGE) return -1;
        at += 4;
        if (len - at < n) return 0;
        m->part[i] = buf + at;
        m->part_len[i] = n;
        at += n;
        if (at > MAX_MESSAGE) return -1;
    }
    return (long)at;
}

/* The call's bound in TAKEN: seconds in [0, MAX_BOUND], else -1 (as float() and the
 * range check in ipam.client.call; digits, a point and an exponent only). */
double parse_bound(const unsigned char *p, size_t n)
{
    char text[64];
    size_t a = 0, b = n;
    while (a < b && (p[a] == ' ' || p[a] == '\t' || p[a] == '\n' || p[a] == '\r')) a++;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t' || p[b - 1] == '\n' ||
                     p[b - 1] == '\r')) b--;
    if (b == a || b - a >= sizeof text) return -1;
    for (size_t i = a; i < b; i++) {
        unsigned char c = p[i];
        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' ||
              c == '-'))
            return -1;
    }
    memcpy(text, p + a, b - a);
    text[b - a] = 0;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (*end || end == text || !(v >= 0 && v <= MAX_BOUND)) return -1;
    return v;
}

/* What this process sees at path (ipam.client.view): "dev:ino:rest" of the path or its
 * nearest existing ancestor, "!errno" where it cannot look. The walk is the Python
 * one's: strip the trailing slashes, take off the last name, look again. */
int view(const char *path, size_t n, struct strbuf *out)
{
    char *at = malloc(n + 1), *rest = malloc(n + 1);
    size_t atlen = n, rpos = n;  /* the rest is rest[rpos:n], built from the end */
    struct stat st;
    int r = 0;
    out->len = 0;
    out->overflow = 0;
    if (!at || !rest) { r = -1; goto done; }
    memcpy(at, path, n);
    at[n] = 0;
    for (;;) {
        if (stat(atlen ? at : "/", &st) == 0) break;
        int e = errno;
        size_t k = 0;
        while (k < atlen && at[k] == '/') k++;
        if (e != ENOENT && e != ENOTDIR) {
            out->len = (size_t)snprintf(out->data, sizeof out->data, "!%d", e);
            goto done;
        }
        if (k == atlen) {
            out->len = (size_t)snprintf(out->data, sizeof out->data, "!2");
            goto done;
        }
        while (atlen && at[atlen - 1] == '/') atlen--;
        size_t slash = atlen;
        while (slash && at[slash - 1] != '/') slash--;
        size_t nl = atlen - slash;
        if (rpos < n) rest[--rpos] = '/';  /* never below 0: each name had a slash or
                                                was the path's first */
        rpos -= nl;
        memcpy(rest + rpos, at + slash, nl);
        atlen = slash ? slash - 1 : 0;
        at[atlen] = 0;
    }
    out->len = (size_t)snprintf(out->data, sizeof out->data, "%llu:%llu:",
                                (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    if (out->len + (n - rpos) > sizeof out->data) out->overflow = 1;
    else {
        memcpy(out->data + out->len, rest + rpos, n - rpos);
        out->len += n - rpos;
    }
done:
    free(at);
    free(rest);
    return r;
}

#ifndef CLIENT_NO_MAIN
/* Kept in the program's bytes, unreferenced: install-plugin looks for it (client.h). */
__attribute__((used)) static const char install_marker[] = INSTALL_MARKER;

/* --- the call ----------------------------------------------------------------------- */
static volatile sig_atomic_t caught;  /* the first of SIGINT, SIGTERM, SIGHUP */
static sigset_t run_mask;             /* the mask to wait with: theirs unblocked */
static sigset_t start_mask;           /* the mask this process started with */
static const int end_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void on_signal(int n)
{
    if (!caught) caught = n;
}

static const char *signal_name(int n)
{
    return n == SIGINT ? "SIGINT" : n == SIGTERM ? "SIGTERM" : n == SIGHUP ? "SIGHUP" : "?";
}

static int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void say(const char *text)
{
    write_all(2, text, strlen(text));
}

/* An error object as ipam.result.error_output writes it (Go's encoding/json: HTML-safe
 * escapes, invalid UTF-8 as U+FFFD), and exit 1. */
static void json_escaped(struct strbuf *o, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p && o->len + 16 < sizeof o->data) {
        unsigned char c = *p;
        size_t need = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        size_t ok = need > 0;
        for (size_t i = 1; ok && i < need; i++) ok = (p[i] & 0xC0) == 0x80;
        if (!ok) {
            o->len += (size_t)snprintf(o->data + o->len, 8, "\\ufffd");
            p++;
            continue;
        }
        if (need > 1) {
            if (need == 3 && c == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9))
                o->len += (size_t)snprintf(o->data + o->len, 8, "\\u%04x", p[2] == 0xA8 ? 0x2028 : 0x2029);
            else {
                memcpy(o->data + o->len, p, need);
                o->len += need;
            }
            p += need;
            continue;
        }
        if (c == '"' || c == '\\') { o->data[o->len++] = '\\'; o->data[o->len++] = (char)c; }
        else if (c == '\n') { o->data[o->len++] = '\\'; o->data[o->len++] = 'n'; }
        else if (c == '\r') { o->data[o->len++] = '\\'; o->data[o->len++] = 'r'; }
        else if (c == '\t') { o->data[o->len++] = '\\'; o->data[o->len++] = 't'; }
        else if (c < 0x20 || c == '<' || c == '>' || c == '&')
            o->len += (size_t)snprintf(o->data + o->len, 8, "\\u%04x", c);
        else o->data[o->len++] = (char)c;
        p++;
    }
}

static _Noreturn void fail(int code, const char *msg)
{
    static struct strbuf o;
    o.len = (size_t)snprintf(o.data, sizeof o.data, "{\n    \"code\": %d,\n    \"msg\": \"", code);
    json_escaped(&o, msg);
    o.len += (size_t)snprintf(o.data + o.len, sizeof o.data - o.len, "\"\n}");
    write_all(1, o.data, o.len);
    _exit(1);
}

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Why the daemon did not answer: said on stderr, then the call runs in process. */
static char why[1024];

struct conn {
    int fd;
    const char *path;  /* for the messages, printable */
    unsigned char *buf;
    size_t len, cap;
};

/* Wait for events on c->fd until deadline (ms); 1 ready, 0 late, -1 an error. A signal
 * of end_signals ends the call here with code 11. */
static int wait_for(struct conn *c, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left < 0) left = 0;
        struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000};
        struct pollfd p = {c->fd, events, 0};
        int r = ppoll(&p, 1, &ts, &run_mask);
        if (caught) {
            char msg[160];
            snprintf(msg, sizeof msg, "interrupted by %s while the node daemon ran the call; "
                     "try again", signal_name(caught));
            close(c->fd);  /* before COMMIT, the daemon rolls the call back */
            fail(11, msg);
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return left == 0 ? 0 : (now_ms() >= deadline ? 0 : 1);
        return 1;
    }
}

static int send_all(struct conn *c, const void *data, size_t n, long long deadline,
                    const char *late)
{
    const char *p = data;
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) { p += w; n -= (size_t)w; continue; }
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            int r = wait_for(c, POLLOUT, deadline);
            if (r == 0) { snprintf(why, sizeof why, "%s", late); return -1; }
            if (r > 0) continue;
        }
        snprintf(why, sizeof why, "the node daemon at %s went away mid-call (%s)", c->path,
                 strerror(errno));
        return -1;
    }
    return 0;
}

static int receive(struct conn *c, struct message *m, long long deadline, const char *late)
{
    for (;;) {
        long got = parse_message(c->buf, c->len, m);
        if (got > 0) return (int)got;
        if (got < 0) {
            snprintf(why, sizeof why, "the node daemon at %s stopped answering mid-call",
                     c->path);
            return -1;
        }
        /* room for the longest message parse_message takes, and a read past it */
        const size_t most = MAX_MESSAGE + 65536;
        if (c->cap - c->len < 65536 && c->cap < most) {
            size_t cap = c->cap ? c->cap * 2 : 131072;
            if (cap > most) cap = most;
            unsigned char *b = realloc(c->buf, cap);
            if (!b) { snprintf(why, sizeof why, "out of memory"); return -1; }
            c->buf = b;
            c->cap = cap;
        }
        if (c->cap == c->len) {  /* cannot happen: a message fits, and is consumed */
            snprintf(why, sizeof why, "the node daemon at %s sent more than a call's "
                     "answer can hold", c->path);
            return -1;
        }
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
        if (r > 0) { c->len += (size_t)r; continue; }
        if (r == 0) {
            snprintf(why, sizeof why, "the node daemon at %s stopped answering mid-call",
                     c->path);
            return -1;
        }
        if (errno == EAGAIN || errno == EINTR) {
            int w = wait_for(c, POLLIN, deadline);
            if (w == 0) { snprintf(why, sizeof why, "%s", late); return -1; }
            if (w > 0) continue;
        }
        snprintf(why, sizeof why, "the node daemon at %s went away mid-call (%s)", c->path,
                 strerror(errno));
        return -1;
    }
}

static void consume(struct conn *c, long n)
{
    memmove(c->buf, c->buf + n, c->len - (size_t)n);
    c->len -= (size_t)n;
}

/* The message expected, or NOT_SERVED's reason in why; -1 either way when not it. */
static int expect(struct conn *c, struct message *m, unsigned char kind)
{
    if (m->kind == 'N') {
        size_t n = snprintf(why, sizeof why, "the node daemon at %s did not take the call: ",
                            c->path);
        for (size_t i = 0; i < m->part_len[0] && n + 1 < sizeof why; i++) {
            unsigned char ch = m->part[0][i];
            why[n++] = (char)(ch < 0x20 || ch == 0x7f ? '?' : ch);
        }
        why[n] = 0;
        return -1;
    }
    if (m->kind != kind) {
        snprintf(why, sizeof why, "the node daemon at %s stopped answering mid-call", c->path);
        return -1;
    }
    return 0;
}

struct bytes {
    char *data;
    size_t len, cap;
};

static int append(struct bytes *b, const void *data, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) return -1;
            cap *= 2;
        }
        char *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return 0;
}

static int append_blob(struct bytes *b, const void *data, size_t n)
{
    unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    if (n > 0xFFFFFFFFu) return -1;
    return append(b, len, 4) || append(b, data, n);
}

struct entry {
    const char *text;
    size_t index, key_len;
};

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = memcmp(x->text, y->text, x->key_len < y->key_len ? x->key_len : y->key_len);
    if (c) return c;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;  /* the first in environ first */
}

/* The environment as posix.environ has it: KEY=VALUE entries with an "=", the first of
 * each key, in environ's order, NUL-separated. */
static int encode_environ(struct bytes *out)
{
    size_t n = 0, kept = 0;
    while (environ[n]) n++;
    struct entry *sorted = malloc((n + 1) * sizeof *sorted);
    unsigned char *skip = calloc(n + 1, 1);
    if (!sorted || !skip) { free(sorted); free(skip); return -1; }
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        if (eq) sorted[kept++] = (struct entry){environ[i], i, (size_t)(eq - environ[i])};
        else skip[i] = 1;
    }
    qsort(sorted, kept, sizeof *sorted, entry_cmp);
    for (size_t k = 1; k < kept; k++)
        if (sorted[k].key_len == sorted[k - 1].key_len &&
            !memcmp(sorted[k].text, sorted[k - 1].text, sorted[k].key_len))
            skip[sorted[k].index] = 1;
    struct bytes body = {0};
    int first = 1, r = 0;
    for (size_t i = 0; i < n && !r; i++) {
        if (skip[i]) continue;
        if (!first) r = append(&body, "", 1);
        first = 0;
        if (!r) r = append(&body, environ[i], strlen(environ[i]));
    }
    if (!r) r = append_blob(out, body.data ? body.data : "", body.len);
    free(body.data);
    free(sorted);
    free(skip);
    return r;
}

static int stdout_closed;  /* the runtime gave no stdout: writing the answer fails */
static struct bytes stdin_data;
static int stdin_read;  /* 1 once stdin's bytes are in stdin_data (else it is untouched) */

/* This program's path, as /proc/self/exe names it, into buf (PATH_MAX bytes and more):
 * its length, or -1. A program replaced since it started (install-plugin wrote another
 * over it) is named "<path> (deleted)" there: the path is what the rest says. */
static ssize_t self_path(char *buf)
{
    static const char deleted[] = " (deleted)";
    const size_t dn = sizeof deleted - 1;
    ssize_t n = readlink("/proc/self/exe", buf, PATH_MAX);
    if (n <= 0) return -1;
    buf[n] = 0;
    struct stat st;
    if ((size_t)n > dn && !memcmp(buf + n - dn, deleted, dn) && lstat(buf, &st)) {
        n -= (ssize_t)dn;
        buf[n] = 0;
    }
    return n;
}

/* Run the call in process: exec the in-process plugin, stdin as it was. */
static _Noreturn void in_process(char **argv)
{
    char self[PATH_MAX + 32];
    ssize_t n = self_path(self);
    if (n <= 0) {
        if (!argv[0] || !strchr(argv[0], '/') || strlen(argv[0]) >= PATH_MAX)
            fail(5, "host-local-sqlite: cannot find the in-process plugin: /proc/self/exe "
                    "is not readable and the program was not started by its path");
        n = (ssize_t)strlen(argv[0]);
        memcpy(self, argv[0], (size_t)n);
    }
    memcpy(self + n, IN_PROCESS_SUFFIX, sizeof IN_PROCESS_SUFFIX);
    sigset_t pending;
    sigpending(&pending);
    for (size_t i = 0; i < 3; i++)
        if (sigismember(&pending, end_signals[i]) && !caught) caught = end_signals[i];
    if (caught) {
        char msg[160];
        snprintf(msg, sizeof msg, "interrupted by %s before the call started; try again",
                 signal_name(caught));
        fail(11, msg);
    }
    if (stdin_read) {
        /* The bytes read, as stdin again: a memfd, else a pipe fed by a child. */
        int fd = memfd_create("stdin", 0);
        if (fd >= 0) {
            if (write_all(fd, stdin_data.data, stdin_data.len) || lseek(fd, 0, SEEK_SET)) {
                close(fd);
                fd = -1;
            }
        }
        if (fd < 0) {
            int p[2];
            if (pipe(p)) fail(5, "host-local-sqlite: cannot hand the config to the "
                                 "in-process plugin (no memfd, no pipe)");
            pid_t child = fork();
            if (child < 0) fail(5, "host-local-sqlite: cannot hand the config to the "
                                   "in-process plugin (fork failed)");
            if (child == 0) {
                close(p[0]);
                signal(SIGPIPE, SIG_IGN);
                write_all(p[1], stdin_data.data, stdin_data.len);
                _exit(0);
            }
            close(p[1]);
            fd = p[0];
        }
        if (fd != 0) {
            if (dup2(fd, 0) < 0) fail(5, "host-local-sqlite: cannot hand the config to the "
                                         "in-process plugin (dup2 failed)");
            close(fd);
        }
    }
    /* As the launcher's shell does first thing: these signals ignored until the plugin
     * sets its own guard (ipam.process.Guard); the rest as this process found them. */
    for (size_t i = 0; i < 3; i++) signal(end_signals[i], SIG_IGN);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &start_mask, NULL);
    char *saved = argv[0];
    argv[0] = self;
    execv(self, argv);
    int e = errno;
    argv[0] = saved;
    char msg[PATH_MAX + 256];
    snprintf(msg, sizeof msg, "host-local-sqlite: cannot run the in-process plugin %s (%s): "
             "run 'ipamctl install-plugin' again", self, strerror(e));
    fail(5, msg);
}

/* Try the call on the daemon at path (len bytes; a leading NUL: an abstract socket).
 * Returns the exit status when it answered (stdout and stderr written), -1 when not
 * (why says why; empty: say nothing). */
static int call(const char *path, size_t plen, int named)
{
    char shown[256];
    size_t sn = 0;
    for (size_t i = 0; i < plen && sn + 1 < sizeof shown; i++)
        shown[sn++] = (char)((unsigned char)path[i] < 0x20 ? '@' : path[i]);
    shown[sn] = 0;
    why[0] = 0;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (plen >= sizeof a.sun_path) {
        snprintf(why, sizeof why, "cannot reach the node daemon at %s (AF_UNIX path too long)",
                 shown);
        return -1;
    }
    memcpy(a.sun_path, path, plen);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
                                 (plen && path[0] ? 1 : 0));
    struct conn c = {socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), shown,
                     NULL, 0, 0};
    if (c.fd < 0) {
        snprintf(why, sizeof why, "cannot reach the node daemon at %s (%s)", shown,
                 strerror(errno));
        return -1;
    }
    int status = -1;
    struct bytes req = {0};
    if (connect(c.fd, (struct sockaddr *)&a, alen)) {
        if (named)
            snprintf(why, sizeof why, "cannot reach the node daemon at %s (%s)", shown,
                     strerror(errno));
        goto out;
    }
    struct ucred cred;
    socklen_t clen = sizeof cred;
    if (getsockopt(c.fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) || clen != sizeof cred) {
        snprintf(why, sizeof why, "cannot tell who runs the node daemon at %s (%s)", shown,
                 strerror(errno));
        goto out;
    }
    if (cred.uid != 0 && cred.uid != geteuid()) {
        snprintf(why, sizeof why, "the node daemon at %s runs as uid %u, neither root nor "
                 "this user: not trusting it", shown, (unsigned)cred.uid);
        goto out;
    }
    char untaken[512];
    snprintf(untaken, sizeof untaken, "the node daemon at %s did not take the call within "
             "1 s (stopped, or serving its most calls at once)", shown);
    char *cwd = getcwd(NULL, 0);
    if (append(&req, MAGIC "C", sizeof MAGIC) || encode_environ(&req) ||
        append_blob(&req, cwd ? cwd : "", cwd ? strlen(cwd) : 0) ||
        append_blob(&req, stdin_data.data ? stdin_data.data : "", stdin_data.len)) {
        free(cwd);
        snprintf(why, sizeof why, "out of memory");
        goto out;
    }
    free(cwd);
    long long deadline = now_ms() + TAKE_TIMEOUT_MS;
    if (send_all(&c, req.data, req.len, deadline, untaken)) goto out;
    struct message m;
    deadline = now_ms() + TAKE_TIMEOUT_MS;
    long got = receive(&c, &m, deadline, untaken);
    if (got < 0 || expect(&c, &m, 'P')) goto out;
    if (m.part_len[0] > MAX_PROVE) {
        snprintf(why, sizeof why, "the node daemon at %s asked about more paths than a call "
                 "touches", shown);
        goto out;
    }
    req.len = 0;
    struct bytes views = {0};
    int bad = 0;
    size_t count = 0;
    for (size_t i = 0; i < m.part_len[0] && !bad;) {
        const unsigned char *p = m.part[0] + i;
        const unsigned char *z = memchr(p, 0, m.part_len[0] - i);
        size_t n = z ? (size_t)(z - p) : m.part_len[0] - i;
        i += n + 1;
        if (n == 0) continue;
        static struct strbuf v;
        if (view((const char *)p, n, &v) || v.overflow ||
            (count++ && append(&views, "", 1)) || append(&views, v.data, v.len))
            bad = 1;
    }
    consume(&c, got);
    if (bad || append(&req, "V", 1) ||
        append_blob(&req, views.data ? views.data : "", views.len)) {
        free(views.data);
        snprintf(why, sizeof why, "out of memory");
        goto out;
    }
    free(views.data);
    if (send_all(&c, req.data, req.len, now_ms() + TAKE_TIMEOUT_MS, untaken)) goto out;
    got = receive(&c, &m, now_ms() + TAKE_TIMEOUT_MS, untaken);
    if (got < 0 || expect(&c, &m, 'T')) goto out;
    double bound = parse_bound(m.part[0], m.part_len[0]);
    if (bound < 0) {
        snprintf(why, sizeof why, "the node daemon at %s gave no bound for the call", shown);
        goto out;
    }
    consume(&c, got);
    char late[512];
    snprintf(late, sizeof late, "the node daemon at %s took the call but gave no answer "
             "within its bound (%g s) and 2 s more; gave up on it", shown, bound);
    got = receive(&c, &m, now_ms() + (long long)(bound * 1000) + ANSWER_MARGIN_MS, late);
    if (got < 0 || expect(&c, &m, 'A')) goto out;
    close(c.fd);
    c.fd = -1;
    int ok = stdout_closed ? m.part_len[0] == 0 : write_all(1, m.part[0], m.part_len[0]) == 0;
    write_all(2, m.part[1], m.part_len[1]);
    status = ok ? m.status : (m.status ? m.status : 1);
out:
    if (c.fd >= 0) close(c.fd);
    free(c.buf);
    free(req.data);
    return status;
}

/* Run from a copy of the self-contained build: a shared flock on the copy's IN_USE_FILE
 * for as long as this process runs, as each of the build's own processes holds one
 * (ipam.install.frozen): install-plugin removes no copy a call still runs from, and this one may
 * yet exec the in-process plugin there. Close-on-exec: that plugin takes its own. Beside
 * a launcher there is no such file; a failure changes nothing. */
static void hold_copy(void)
{
    char path[PATH_MAX + 32];
    if (self_path(path) <= 0) return;
    char *slash = strrchr(path, '/');
    if (!slash) return;
    memcpy(slash + 1, IN_USE_FILE, sizeof IN_USE_FILE);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0 && fd <= 2) {  /* stdin closed: not under its number, or it reads it */
        int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        fd = moved;
    }
    if (fd >= 0 && flock(fd, LOCK_SH | LOCK_NB)) close(fd);
}

int main(int argc, char **argv)
{
    (void)argc;
    sigset_t ends;
    sigemptyset(&ends);
    for (size_t i = 0; i < 3; i++) sigaddset(&ends, end_signals[i]);
    sigprocmask(SIG_BLOCK, &ends, &start_mask);
    run_mask = start_mask;
    for (size_t i = 0; i < 3; i++) sigdelset(&run_mask, end_signals[i]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < 3; i++) sigaction(end_signals[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);  /* EPIPE instead: as Python, which ignores it */

    /* stdout and stderr open, so that no socket of ours takes their numbers */
    for (int fd = 1; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            if (fd == 1) stdout_closed = 1;  /* an answer to write cannot be written */
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0 && null != fd) {
                dup2(null, fd);
                if (null > 2) close(null);
            }
        }
    hold_copy();  /* after: its descriptor must not take stdout's or stderr's number */
    const char *command = getenv("CNI_COMMAND");
    static const char *const forwarded[] = {"ADD", "DEL", "CHECK", "GC", "STATUS"};
    int forward = 0;
    for (size_t i = 0; command && i < 5; i++) forward |= !strcmp(command, forwarded[i]);
    if (!forward) in_process(argv);

    /* stdin, up to MAX_STDIN + 1 bytes (the in-process call says when it is too much) */
    for (;;) {
        if (stdin_data.cap - stdin_data.len < 65536) {
            size_t cap = stdin_data.cap ? stdin_data.cap * 2 : 65536 * 2;
            if (cap > (size_t)MAX_STDIN + 1) cap = (size_t)MAX_STDIN + 1;
            if (cap > stdin_data.cap) {
                char *d = realloc(stdin_data.data, cap);
                if (!d) fail(999, "out of memory");  /* as the in-process call says it */
                stdin_data.data = d;
                stdin_data.cap = cap;
            }
        }
        size_t room = stdin_data.cap - stdin_data.len;
        if (room == 0) break;
        ssize_t r = read(0, stdin_data.data + stdin_data.len, room);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) in_process(argv);  /* it reads again, and reports what is wrong */
        if (r == 0) break;
        stdin_data.len += (size_t)r;
        stdin_read = 1;
    }
    stdin_read = 1;

    static struct strbuf path;
    int named = 1;
    int choice = config_choice((unsigned char *)stdin_data.data, stdin_data.len, &path);
    if (choice == CHOICE_NONE) choice = env_choice(getenv(DAEMON_ENV), &path);
    if (choice == CHOICE_FALSE) in_process(argv);
    if (choice == CHOICE_UNUSABLE) {
        say("host-local-sqlite: the node daemon's socket named is no path a socket can "
            "have; running the call in process\n");
        in_process(argv);
    }
    if (choice == CHOICE_NONE || choice == CHOICE_TRUE) {
        named = choice == CHOICE_TRUE;
        path.len = strlen(DAEMON_SOCKET);
        memcpy(path.data, DAEMON_SOCKET, path.len);
        struct stat st;
        if (!named && stat(DAEMON_SOCKET, &st)) in_process(argv);
    }
    int status = call(path.data, path.len, named);
    if (status >= 0) _exit(status);
    if (why[0]) {
        say("host-local-sqlite: ");
        say(why);
        say("; running the call in process\n");
    }
    in_process(argv);
}
#endif
