/*
 * cforward: a minimal single-threaded C UDP forwarder, the baseline that
 * rtcedge-load compares the Go media relay against (issue 8).
 *
 *   gcc -O2 -Wall -Wextra -o cforward cforward.c
 *   ./cforward -l 127.0.0.1:PORT -o ORIGIN_IP:PORT [-b sockbuf_bytes]
 *
 * It does what the relay's data plane does, minus everything that makes it a
 * relay (no STUN, no ICE credentials, no packet parsing at all):
 *
 *   - one public UDP socket (-l), read with recvmmsg in batches;
 *   - a session per client source address (IPv4 only), created on the
 *     first packet from a new source: a new UDP socket connect()ed to the
 *     origin (-o) and added to the same epoll set;
 *   - client -> origin: sendmmsg on the session socket, one call per run of
 *     consecutive packets of the same session in a batch;
 *   - origin -> client: a readable session socket is read with recvmmsg
 *     straight into an output queue; the queue goes out of the public
 *     socket with sendmmsg in batches across sessions, once per epoll
 *     iteration (or when full);
 *   - SO_RCVBUF/SO_SNDBUF of every socket set to -b (default 4 MiB; the
 *     FORCE variants first, which pass net.core.rmem_max as root).
 *
 * Sessions live until the process ends. SIGTERM or SIGINT make it exit
 * cleanly; it prints its counters to stderr. It prints "cforward listening
 * on IP:PORT" to stdout once it serves.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64          /* datagrams per recvmmsg on the public socket */
#define OUTQ 256          /* origin->client datagrams queued per flush */
#define BUFSZ 2048        /* bigger than any datagram we forward */
#define MAXEV 256         /* epoll events per wait */
#define PUB_ROUNDS 8      /* public recvmmsg rounds per epoll iteration */
#define MAX_SESSIONS (1 << 17)
#define HASH_BITS 18      /* open-addressing table, 2x MAX_SESSIONS slots */
#define HASH_SIZE (1u << HASH_BITS)

struct session {
    struct sockaddr_in client;
    int fd;
    uint64_t c2o, o2c;
};

static volatile sig_atomic_t stop;

static struct session *table[HASH_SIZE];
static unsigned nsessions;

/* Public socket receive batch. */
static unsigned char inbuf[BATCH][BUFSZ];
static struct mmsghdr inmsg[BATCH];
static struct iovec iniov[BATCH];
static struct sockaddr_in inaddr[BATCH];
static struct session *insess[BATCH];

/* Origin->client output queue. */
static unsigned char outbuf[OUTQ][BUFSZ];
static struct mmsghdr outmsg[OUTQ];
static struct iovec outiov[OUTQ];
static struct sockaddr_in outaddr[OUTQ];
static unsigned outn;

static uint64_t c2o_packets, o2c_packets, c2o_drops, o2c_drops, session_refused;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void usage(void) {
    fprintf(stderr, "usage: cforward -l LISTEN_IP:PORT -o ORIGIN_IP:PORT [-b sockbuf_bytes]\n");
    exit(2);
}

static int parse_addr(const char *s, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535) return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1) return -1;
    return 0;
}

static void set_buffers(int fd, int n) {
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &n, sizeof n) != 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &n, sizeof n);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &n, sizeof n) != 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof n);
}

static uint32_t hash_addr(const struct sockaddr_in *a) {
    uint64_t k = ((uint64_t)a->sin_addr.s_addr << 16) | a->sin_port;
    k *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(k >> (64 - HASH_BITS));
}

static int same_addr(const struct sockaddr_in *a, const struct sockaddr_in *b) {
    return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

/* lookup returns the session of client address a, creating it when create. */
static struct session *lookup(const struct sockaddr_in *a, int epfd,
                              const struct sockaddr_in *origin, int bufsz) {
    uint32_t h = hash_addr(a);
    for (uint32_t i = 0; i < HASH_SIZE; i++) {
        uint32_t slot = (h + i) & (HASH_SIZE - 1);
        struct session *s = table[slot];
        if (s == NULL) {
            if (nsessions >= MAX_SESSIONS) {
                session_refused++;
                return NULL;
            }
            int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                session_refused++;
                return NULL;
            }
            set_buffers(fd, bufsz);
            if (connect(fd, (const struct sockaddr *)origin, sizeof *origin) != 0) {
                close(fd);
                session_refused++;
                return NULL;
            }
            s = calloc(1, sizeof *s);
            if (s == NULL) {
                close(fd);
                session_refused++;
                return NULL;
            }
            s->client = *a;
            s->fd = fd;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
            if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
                close(fd);
                free(s);
                session_refused++;
                return NULL;
            }
            table[slot] = s;
            nsessions++;
            return s;
        }
        if (same_addr(&s->client, a)) return s;
    }
    return NULL;
}

static void reset_in(void) {
    for (int i = 0; i < BATCH; i++) {
        iniov[i].iov_base = inbuf[i];
        iniov[i].iov_len = BUFSZ;
        inmsg[i].msg_hdr.msg_name = &inaddr[i];
        inmsg[i].msg_hdr.msg_namelen = sizeof inaddr[i];
        inmsg[i].msg_hdr.msg_iov = &iniov[i];
        inmsg[i].msg_hdr.msg_iovlen = 1;
        inmsg[i].msg_hdr.msg_control = NULL;
        inmsg[i].msg_hdr.msg_controllen = 0;
        inmsg[i].msg_hdr.msg_flags = 0;
        inmsg[i].msg_len = 0;
    }
}

/* read_public reads one batch from the public socket and forwards it;
 * it returns the number of datagrams read (0 when none was waiting). */
static int read_public(int pub, int epfd, const struct sockaddr_in *origin, int bufsz) {
    reset_in();
    int n = recvmmsg(pub, inmsg, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return 0;
    for (int i = 0; i < n; i++) {
        insess[i] = NULL;
        if (inmsg[i].msg_hdr.msg_namelen != sizeof(struct sockaddr_in) ||
            inaddr[i].sin_family != AF_INET)
            continue;
        insess[i] = lookup(&inaddr[i], epfd, origin, bufsz);
        /* Reuse the header for sending on the connected session socket. */
        iniov[i].iov_len = inmsg[i].msg_len;
        inmsg[i].msg_hdr.msg_name = NULL;
        inmsg[i].msg_hdr.msg_namelen = 0;
    }
    for (int i = 0; i < n;) {
        struct session *s = insess[i];
        int j = i + 1;
        while (j < n && insess[j] == s) j++;
        if (s == NULL) {
            c2o_drops += (uint64_t)(j - i);
            i = j;
            continue;
        }
        int off = i;
        while (off < j) {
            int sent = sendmmsg(s->fd, &inmsg[off], (unsigned)(j - off), MSG_DONTWAIT);
            if (sent <= 0) {
                if (sent < 0 && errno == EINTR) continue;
                /* Full buffer or refused: drop what remains of the run. */
                c2o_drops += (uint64_t)(j - off);
                break;
            }
            s->c2o += (uint64_t)sent;
            c2o_packets += (uint64_t)sent;
            off += sent;
        }
        i = j;
    }
    return n;
}

static void flush_out(int pub) {
    unsigned off = 0;
    while (off < outn) {
        int sent = sendmmsg(pub, &outmsg[off], outn - off, MSG_DONTWAIT);
        if (sent <= 0) {
            if (sent < 0 && errno == EINTR) continue;
            o2c_drops += outn - off;
            break;
        }
        o2c_packets += (uint64_t)sent;
        off += (unsigned)sent;
    }
    outn = 0;
}

/* read_session reads what the origin sent to s into the output queue. */
static void read_session(struct session *s, int pub) {
    for (int round = 0; round < 4; round++) {
        if (outn == OUTQ) flush_out(pub);
        unsigned room = OUTQ - outn;
        if (room > BATCH) room = BATCH;
        for (unsigned i = 0; i < room; i++) {
            unsigned k = outn + i;
            outiov[k].iov_base = outbuf[k];
            outiov[k].iov_len = BUFSZ;
            memset(&outmsg[k].msg_hdr, 0, sizeof outmsg[k].msg_hdr);
            outmsg[k].msg_hdr.msg_iov = &outiov[k];
            outmsg[k].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(s->fd, &outmsg[outn], room, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        for (int i = 0; i < n; i++) {
            unsigned k = outn + (unsigned)i;
            outiov[k].iov_len = outmsg[k].msg_len;
            outaddr[k] = s->client;
            outmsg[k].msg_hdr.msg_name = &outaddr[k];
            outmsg[k].msg_hdr.msg_namelen = sizeof outaddr[k];
        }
        outn += (unsigned)n;
        s->o2c += (uint64_t)n;
        if ((unsigned)n < room) return;
    }
}

int main(int argc, char **argv) {
    struct sockaddr_in listen_addr, origin;
    int have_l = 0, have_o = 0, bufsz = 4 << 20;
    int opt;
    while ((opt = getopt(argc, argv, "l:o:b:")) != -1) {
        switch (opt) {
        case 'l':
            if (parse_addr(optarg, &listen_addr) != 0) usage();
            have_l = 1;
            break;
        case 'o':
            if (parse_addr(optarg, &origin) != 0) usage();
            have_o = 1;
            break;
        case 'b':
            bufsz = atoi(optarg);
            if (bufsz <= 0) usage();
            break;
        default:
            usage();
        }
    }
    if (!have_l || !have_o) usage();

    /* One socket per session: raise the descriptor limit to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int pub = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (pub < 0) {
        perror("cforward: socket");
        return 1;
    }
    set_buffers(pub, bufsz);
    if (bind(pub, (struct sockaddr *)&listen_addr, sizeof listen_addr) != 0) {
        perror("cforward: bind");
        return 1;
    }
    socklen_t alen = sizeof listen_addr;
    getsockname(pub, (struct sockaddr *)&listen_addr, &alen);

    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("cforward: epoll_create1");
        return 1;
    }
    struct epoll_event pev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, pub, &pev) != 0) {
        perror("cforward: epoll_ctl");
        return 1;
    }

    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &listen_addr.sin_addr, ip, sizeof ip);
    printf("cforward listening on %s:%u\n", ip, ntohs(listen_addr.sin_port));
    fflush(stdout);

    struct epoll_event evs[MAXEV];
    while (!stop) {
        int n = epoll_wait(epfd, evs, MAXEV, 200);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("cforward: epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            struct session *s = evs[i].data.ptr;
            if (s == NULL) {
                for (int r = 0; r < PUB_ROUNDS; r++)
                    if (read_public(pub, epfd, &origin, bufsz) < BATCH) break;
            } else {
                read_session(s, pub);
            }
        }
        flush_out(pub);
    }

    fprintf(stderr,
            "cforward: sessions=%u c2o_packets=%llu o2c_packets=%llu c2o_drops=%llu "
            "o2c_drops=%llu sessions_refused=%llu\n",
            nsessions, (unsigned long long)c2o_packets, (unsigned long long)o2c_packets,
            (unsigned long long)c2o_drops, (unsigned long long)o2c_drops,
            (unsigned long long)session_refused);
    for (uint32_t i = 0; i < HASH_SIZE; i++) {
        if (table[i] != NULL) {
            close(table[i]->fd);
            free(table[i]);
        }
    }
    close(epfd);
    close(pub);
    return 0;
}
