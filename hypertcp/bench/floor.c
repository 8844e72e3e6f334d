/*
 * The wire contract's own cost: HyperTCP's frames (PROTOCOL.md sections 1-3)
 * served by one thread of C on epoll, with the system calls the Twisted
 * server makes for each message and nothing else -- one recv() per readable
 * event, the delivery and the sender's answer each sent at once, the
 * receiver's acknowledgement read and dropped.  `hypertcp bench --peer
 * floor` builds and runs it beside the real server, so that the share of a
 * message's CPU owed to the protocol is measured, not guessed.
 *
 * It checks no token, keeps no limits or deadlines, logs nothing, and scans
 * JSON only as far as routing needs.  A benchmark's yardstick, not a server.
 *
 *   cc -O2 -o floor floor.c && ./floor PORT     (0: any free port)
 *
 * Prints "floor listening on 127.0.0.1:PORT" once listening; on SIGTERM or
 * SIGINT, its counts of system calls and frames, then exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { T_RESPONSE = 0, T_PING = 6, T_LOGIN = 29, T_JSON = 30, T_BROADCAST = 50 };
enum { S_ILLEGAL = 2, S_NOAUTH = 5, S_NOTIN = 7, S_BODY = 11, S_OK = 200 };

#define HDR 5
#define RECV_SIZE 65536
#define INBUF (RECV_SIZE + HDR + 65535 + 16)
#define MAXFD 65536
#define NBUCKET 4096
#define MAXID 256

typedef struct buf { char *p; size_t len, cap; } buf;

typedef struct conn {
    int fd;
    int dead;
    int wantout;           /* EPOLLOUT registered */
    unsigned msg_id;       /* last msg_id this server used towards the peer */
    char id[MAXID];        /* device id (JSON-escaped form, as it came); "" before login */
    size_t idlen;
    char *in;              /* received, not yet a whole frame */
    size_t inlen;
    buf out;               /* what send() did not take, in order */
    buf held;              /* frames held during a multi-frame read */
    int isheld;
    struct conn *hnext;    /* next in its id bucket */
    struct conn *dnext;    /* next on the dead list */
} conn;

static conn *byfd[MAXFD];
static conn *bucket[NBUCKET];
static conn *heldlist[MAXFD];
static int nheld;
/* A read that completes several frames holds its writes and sends each peer
 * one buffer when done, as the server's WriteBatch does; a read of one frame
 * (nearly every read at a moderate rate) writes each frame at once. */
static int holding;
static conn *deadlist;
static int ep;
static volatile sig_atomic_t stopping;

/* counters, printed at exit */
static unsigned long long c_wait, c_recv, c_send, c_sendpart, c_ctl, c_accept;
static unsigned long long c_in[256], c_out[256];

static void die(const char *what) { perror(what); exit(1); }

static void grow(buf *b, size_t need)
{
    if (b->len + need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) die("realloc");
    b->cap = cap;
}

static void append(buf *b, const void *p, size_t n)
{
    grow(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static unsigned hash(const char *s, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h & (NBUCKET - 1);
}

static void map_add(conn *c)
{
    unsigned h = hash(c->id, c->idlen);
    c->hnext = bucket[h];
    bucket[h] = c;
}

static void map_del(conn *c)
{
    if (!c->idlen) return;
    conn **pp = &bucket[hash(c->id, c->idlen)];
    while (*pp && *pp != c) pp = &(*pp)->hnext;
    if (*pp) *pp = c->hnext;
}

static void kill_conn(conn *c)
{
    if (c->dead) return;
    c->dead = 1;
    c->dnext = deadlist;
    deadlist = c;
}

static void set_out(conn *c, int on)
{
    struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.fd = c->fd };
    c_ctl++;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->wantout = on;
}

/* Bytes for the wire: straight to send() unless something is queued ahead. */
static void emit(conn *c, const char *p, size_t n)
{
    if (c->dead) return;
    if (c->out.len) { append(&c->out, p, n); return; }
    c_send++;
    ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { kill_conn(c); return; }
        k = 0;
    }
    if ((size_t)k < n) {
        c_sendpart++;
        append(&c->out, p + k, n - k);
        if (!c->wantout) set_out(c, 1);
    }
}

static void flush_out(conn *c)
{
    while (c->out.len && !c->dead) {
        c_send++;
        ssize_t k = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            kill_conn(c);
            return;
        }
        memmove(c->out.p, c->out.p + k, c->out.len - k);
        c->out.len -= k;
    }
    if (!c->dead && !c->out.len && c->wantout) set_out(c, 0);
}

/* One outgoing frame whose payload is the concatenation of up to 3 pieces. */
static void frame(conn *c, int type, unsigned msg_id,
                  const char *a, size_t na, const char *b, size_t nb, const char *d, size_t nd)
{
    size_t len = na + nb + nd;
    char stack[4096], *f = len + HDR <= sizeof stack ? stack : malloc(len + HDR);
    if (!f) die("malloc");
    f[0] = (char)type;
    f[1] = (char)(msg_id >> 8); f[2] = (char)msg_id;
    f[3] = (char)(len >> 8);    f[4] = (char)len;
    if (na) memcpy(f + HDR, a, na);
    if (nb) memcpy(f + HDR + na, b, nb);
    if (nd) memcpy(f + HDR + na + nb, d, nd);
    c_out[type]++;
    if (holding) {
        if (!c->dead) {
            append(&c->held, f, len + HDR);
            if (!c->isheld) { c->isheld = 1; heldlist[nheld++] = c; }
        }
    } else {
        emit(c, f, len + HDR);
    }
    if (f != stack) free(f);
}

static void respond(conn *c, unsigned msg_id, int status)
{
    char s = (char)status;
    frame(c, T_RESPONSE, msg_id, &s, status == S_OK ? 0 : 1, 0, 0, 0, 0);
}

static unsigned next_id(conn *c)
{
    c->msg_id = c->msg_id >= 65535 ? 1 : c->msg_id + 1;
    return c->msg_id;
}

/* ---- the minimal JSON scan: top-level keys of one object, values as spans ---- */

static size_t ws(const char *p, size_t i, size_t n)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
    return i;
}

/* p[i] is '"': the index after the closing quote, or n+1 if unterminated. */
static size_t skip_string(const char *p, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (p[i] == '\\') i++;
        else if (p[i] == '"') return i + 1;
    }
    return n + 1;
}

/* The end of the value starting at p[i] (object/array by bracket matching). */
static size_t skip_value(const char *p, size_t i, size_t n)
{
    if (i >= n) return n + 1;
    if (p[i] == '"') return skip_string(p, i, n);
    if (p[i] == '{' || p[i] == '[') {
        int depth = 0;
        while (i < n) {
            char ch = p[i];
            if (ch == '"') { i = skip_string(p, i, n); continue; }
            if (ch == '{' || ch == '[') depth++;
            else if (ch == '}' || ch == ']') { if (--depth == 0) return i + 1; }
            i++;
        }
        return n + 1;
    }
    while (i < n && p[i] != ',' && p[i] != '}' && p[i] != ']' &&
           p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') i++;
    return i;
}

typedef struct { const char *key; size_t klen; const char *v; size_t vlen; } field;

/* Fill the spans of the named top-level keys of the object p[0..n); 0 if not an object. */
static int scan(const char *p, size_t n, field *f, int nf)
{
    size_t i = ws(p, 0, n);
    if (i >= n || p[i] != '{') return 0;
    i = ws(p, i + 1, n);
    if (i < n && p[i] == '}') return 1;
    while (i < n) {
        if (p[i] != '"') return 0;
        size_t ke = skip_string(p, i, n);
        if (ke > n) return 0;
        const char *k = p + i + 1;
        size_t kl = ke - i - 2;
        i = ws(p, ke, n);
        if (i >= n || p[i] != ':') return 0;
        i = ws(p, i + 1, n);
        size_t ve = skip_value(p, i, n);
        if (ve > n || ve == i) return 0;
        for (int j = 0; j < nf; j++)
            if (f[j].klen == kl && !memcmp(f[j].key, k, kl)) { f[j].v = p + i; f[j].vlen = ve - i; }
        i = ws(p, ve, n);
        if (i < n && p[i] == ',') { i = ws(p, i + 1, n); continue; }
        return i < n && p[i] == '}';
    }
    return 0;
}

/* A JSON string value's contents (still escaped, as it came), or 0. */
static int string_of(const field *f, const char **s, size_t *n)
{
    if (!f->v || f->vlen < 2 || f->v[0] != '"') return 0;
    *s = f->v + 1;
    *n = f->vlen - 2;
    return 1;
}

/* ---- the commands ---- */

static void on_login(conn *c, unsigned msg_id, const char *p, size_t n)
{
    if (c->idlen) { respond(c, msg_id, S_ILLEGAL); return; }
    size_t i = ws(p, 0, n);
    const char *id = 0;
    size_t idlen = 0;
    if (i < n && p[i] == '{') {
        field f[2] = { { "token", 5, 0, 0 }, { "device_id", 9, 0, 0 } };
        const char *tok;
        size_t toklen;
        if (!scan(p, n, f, 2) || !string_of(&f[0], &tok, &toklen) || !toklen) {
            respond(c, msg_id, S_BODY);
            return;
        }
        if (f[1].v && (!string_of(&f[1], &id, &idlen) || idlen >= MAXID)) {
            respond(c, msg_id, S_BODY);
            return;
        }
    } else if (i >= n) {
        respond(c, msg_id, S_BODY);
        return;
    }
    if (idlen) {
        memcpy(c->id, id, idlen);
        c->idlen = idlen;
    } else {
        struct sockaddr_in a;
        socklen_t al = sizeof a;
        char ip[INET_ADDRSTRLEN] = "?";
        if (getpeername(c->fd, (struct sockaddr *)&a, &al) == 0)
            inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
        c->idlen = snprintf(c->id, MAXID, "device_%s_%u", ip, ntohs(a.sin_port));
    }
    map_add(c);
    char ok = (char)S_OK;
    frame(c, T_RESPONSE, msg_id, &ok, 1, 0, 0, 0, 0);  /* the LOGIN answer carries the byte */
}

static void deliver(conn *to, int type, const conn *from, const char *payload, size_t plen)
{
    static const char head[] = "{\"from\":\"", mid[] = "\",\"payload\":";
    char pre[sizeof head + MAXID + sizeof mid];
    size_t k = 0;
    memcpy(pre, head, sizeof head - 1); k += sizeof head - 1;
    memcpy(pre + k, from->id, from->idlen); k += from->idlen;
    memcpy(pre + k, mid, sizeof mid - 1); k += sizeof mid - 1;
    if (k + plen + 1 > 65535) { return; }  /* cannot be framed; caller refuses */
    frame(to, type, next_id(to), pre, k, payload, plen, "}", 1);
}

/* {"command":"ping","timestamp":N} to "server" -> pong from "server". */
static void to_server(conn *c, unsigned msg_id, const char *payload, size_t plen)
{
    field f[2] = { { "command", 7, 0, 0 }, { "timestamp", 9, 0, 0 } };
    const char *cmd;
    size_t cl;
    scan(payload, plen, f, 2);
    if (string_of(&f[0], &cmd, &cl) && cl == 4 && !memcmp(cmd, "ping", 4)) {
        static const char a[] = "{\"from\":\"server\",\"payload\":{\"command\":\"pong\"";
        static const char ts[] = ",\"timestamp\":";
        char tail[64 + 16];
        size_t tl = 0;
        if (f[1].v && f[1].vlen < 64) {
            memcpy(tail, ts, sizeof ts - 1); tl = sizeof ts - 1;
            memcpy(tail + tl, f[1].v, f[1].vlen); tl += f[1].vlen;
        }
        tail[tl++] = '}'; tail[tl++] = '}';
        frame(c, T_JSON, next_id(c), a, sizeof a - 1, tail, tl, 0, 0);
    }
    respond(c, msg_id, S_OK);
}

static void on_send(conn *c, int type, unsigned msg_id, const char *p, size_t n)
{
    field f[2] = { { "targetId", 8, 0, 0 }, { "payload", 7, 0, 0 } };
    const char *target = "broadcast";
    size_t tlen = 9;
    if (!scan(p, n, f, 2) || !f[1].v || f[1].v[0] != '{' ||
        (type == T_JSON && (!string_of(&f[0], &target, &tlen) || !tlen))) {
        respond(c, msg_id, S_BODY);
        return;
    }
    const char *payload = f[1].v;
    size_t plen = f[1].vlen;
    if (c->idlen + plen + 24 > 65535) { respond(c, msg_id, S_BODY); return; }
    if (tlen == 6 && !memcmp(target, "server", 6)) { to_server(c, msg_id, payload, plen); return; }
    if (tlen == 9 && !memcmp(target, "broadcast", 9)) {
        for (int fd = 0; fd < MAXFD; fd++) {
            conn *t = byfd[fd];
            if (t && t != c && t->idlen && !t->dead) deliver(t, T_BROADCAST, c, payload, plen);
        }
        respond(c, msg_id, S_OK);
        return;
    }
    int found = 0;
    for (conn *t = bucket[hash(target, tlen)]; t; t = t->hnext)
        if (t->idlen == tlen && !memcmp(t->id, target, tlen) && !t->dead) {
            deliver(t, T_JSON, c, payload, plen);
            found = 1;
        }
    respond(c, msg_id, found ? S_OK : S_NOTIN);
}

static void on_frame(conn *c, int type, unsigned msg_id, const char *p, size_t n)
{
    c_in[type]++;
    switch (type) {
    case T_RESPONSE:
        return;  /* a receiver's acknowledgement: consumed, never answered */
    case T_PING:
        respond(c, msg_id, S_OK);
        return;
    case T_LOGIN:
        on_login(c, msg_id, p, n);
        return;
    case T_JSON:
    case T_BROADCAST:
        if (!c->idlen) respond(c, msg_id, S_NOAUTH);
        else on_send(c, type, msg_id, p, n);
        return;
    default:
        respond(c, msg_id, c->idlen ? S_ILLEGAL : S_NOAUTH);
    }
}

/* ---- connections ---- */

static void reap(void)
{
    while (deadlist) {
        conn *c = deadlist;
        deadlist = c->dnext;
        map_del(c);
        c_ctl++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, 0);
        close(c->fd);
        byfd[c->fd] = 0;
        free(c->in);
        free(c->out.p);
        free(c->held.p);
        free(c);
    }
}

static void on_readable(conn *c)
{
    c_recv++;
    ssize_t k = recv(c->fd, c->in + c->inlen, RECV_SIZE, 0);
    if (k <= 0) {
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        kill_conn(c);
        return;
    }
    size_t end = c->inlen + (size_t)k, off = 0;
    /* How many whole frames this read completes decides whether writes are held. */
    int frames = 0;
    for (size_t o = 0; end - o >= HDR && frames < 2; frames++) {
        size_t len = ((unsigned char)c->in[o + 3] << 8) | (unsigned char)c->in[o + 4];
        if (end - o < HDR + len) break;
        o += HDR + len;
    }
    holding = frames > 1;
    while (end - off >= HDR && !c->dead) {
        const unsigned char *h = (const unsigned char *)c->in + off;
        size_t len = (h[3] << 8) | h[4];
        if (end - off < HDR + len) break;
        on_frame(c, h[0], (h[1] << 8) | h[2], c->in + off + HDR, len);
        off += HDR + len;
    }
    if (holding) {
        holding = 0;
        for (int i = 0; i < nheld; i++) {
            conn *t = heldlist[i];
            t->isheld = 0;
            if (t->held.len) emit(t, t->held.p, t->held.len);
            t->held.len = 0;
        }
        nheld = 0;
    }
    if (off) memmove(c->in, c->in + off, end - off);
    c->inlen = end - off;
}

static void on_accept(int lfd)
{
    for (;;) {
        c_accept++;
        int fd = accept4(lfd, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            if (errno == EMFILE || errno == ENFILE) { perror("accept"); return; }
            return;
        }
        if (fd >= MAXFD) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (!c || !(c->in = malloc(INBUF))) die("malloc");
        c->fd = fd;
        byfd[fd] = c;
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        c_ctl++;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    }
}

static void on_signal(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    /* No SA_RESTART: the signal ends epoll_wait, and the loop sees stopping. */
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, 0);
    sigaction(SIGINT, &sa, 0);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    if (getsockname(lfd, (struct sockaddr *)&a, &al) < 0) die("getsockname");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl listen");
    printf("floor listening on 127.0.0.1:%u\n", ntohs(a.sin_port));
    fflush(stdout);

    struct epoll_event evs[256];
    while (!stopping) {
        c_wait++;
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) { on_accept(lfd); continue; }
            conn *c = byfd[fd];
            if (!c || c->dead) continue;
            if ((evs[i].events & EPOLLOUT) && c->out.len) flush_out(c);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
        reap();
    }
    unsigned long long in_msgs = c_in[T_JSON] + c_in[T_BROADCAST];
    fprintf(stderr,
            "floor: epoll_wait %llu recv %llu send %llu (partial %llu) epoll_ctl %llu accept %llu\n"
            "floor: frames in: response %llu ping %llu login %llu json %llu broadcast %llu\n"
            "floor: frames out: response %llu json %llu broadcast %llu\n",
            c_wait, c_recv, c_send, c_sendpart, c_ctl, c_accept,
            c_in[T_RESPONSE], c_in[T_PING], c_in[T_LOGIN], c_in[T_JSON], c_in[T_BROADCAST],
            c_out[T_RESPONSE], c_out[T_JSON], c_out[T_BROADCAST]);
    if (in_msgs)
        fprintf(stderr, "floor: per message in: %.3f recv %.3f send %.3f epoll_wait\n",
                (double)c_recv / in_msgs, (double)c_send / in_msgs, (double)c_wait / in_msgs);
    return 0;
}
