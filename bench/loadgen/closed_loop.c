/* closed_loop: the benchmarks' native HTTP/1.1 load generator (what perf_analyzer and wrk are to
 * their servers). edgeds/bench/native_loadgen.py builds and runs it from a source checkout; it is not
 * installed with edgeds.
 *
 *   closed_loop HOST PORT REQUEST_FILE CONCURRENCY DURATION_S WARMUP_S MAX_QUERIES OUT_FILE
 *
 * One thread, epoll, CONCURRENCY keep-alive TCP connections (TCP_NODELAY) to HOST:PORT (an IPv4
 * address). Each connection sends the bytes of REQUEST_FILE (a whole HTTP/1.1 request) and, once
 * the whole response is in, the next one: a closed loop, the same as edgeds.bench.http_closed_loop.
 * No request is sent after WARMUP_S + DURATION_S or after MAX_QUERIES requests (< 0: no cap); the
 * program ends when every connection's last response is in.
 *
 * OUT_FILE gets one 24-byte little-endian record per request sent at or after WARMUP_S:
 * float64 start, float64 end (CLOCK_MONOTONIC seconds, the clock of Python's time.perf_counter on
 * Linux), int32 HTTP status (599: the connection failed or the answer was not HTTP), int32 zero.
 * A connection the server closes (or "Connection: close") is replaced by a new one while the run
 * goes on. Interim (1xx) responses are skipped. Sends block: while one request is being sent, the
 * other connections' answers wait to be read (their end times include that wait).
 *
 * Exit status: 0 done; 2 bad arguments or files; 3 no connection could be made; 4 no response
 * for 60 s (a stalled server).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    double start, end;
    int32_t status, zero;
} record_t;

typedef struct {
    int fd;
    int busy;     /* a request is outstanding */
    double began; /* when it was sent */
    char *buf;    /* the response so far */
    size_t len, cap;
} conn_t;

static struct sockaddr_in address;
static const char *request;
static size_t request_len;
static record_t *records;
static size_t n_records, records_cap;
static double t_end;      /* no request is sent after this */
static long long budget;  /* requests left to send; < 0: no cap */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void record(double start, double end, int status) {
    if (n_records == records_cap) {
        records_cap = records_cap ? 2 * records_cap : 65536;
        records = realloc(records, records_cap * sizeof *records);
        if (!records) {
            perror("closed_loop: realloc");
            exit(2);
        }
    }
    records[n_records++] = (record_t){start, end, status, 0};
}

static int connect_one(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Blocking send of the whole request; 0 on success. */
static int send_all(int fd) {
    size_t sent = 0;
    while (sent < request_len) {
        ssize_t n = send(fd, request + sent, request_len - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        sent += (size_t)n;
    }
    return 0;
}

/* Whether another request is to be sent (the time is not up and the budget not spent). */
static int run_goes_on(void) { return now() < t_end && budget != 0; }

/* Send the next request on c unless the run is over; sets and returns c->busy. A failed send
 * shows as the empty read that follows (a 599), as a reset would. */
static int send_next(conn_t *c) {
    double t = now();
    c->busy = 0;
    if (t < t_end && budget != 0) {
        if (budget > 0)
            budget--;
        c->began = t;
        c->len = 0;
        c->busy = 1;
        send_all(c->fd);
    }
    return c->busy;
}

/* A header's value if line (length len) is "name: value", else NULL. */
static const char *header_value(const char *line, size_t len, const char *name) {
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    const char *v = line + n + 1;
    while (v < line + len && (*v == ' ' || *v == '\t'))
        v++;
    return v;
}

/* Whether the response in c->buf is complete: 1 with *status and *close set, 0 if more is due,
 * -1 if it begins with an interim (1xx) response, which ends at the returned head's end. */
static int response_done(const conn_t *c, int *status, int *close_after) {
    const char *head_end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!head_end)
        return 0;
    size_t head_len = (size_t)(head_end - c->buf), body_at = head_len + 4;
    *close_after = 0;
    if (head_len < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0) {
        *status = 599;
        *close_after = 1;
        return 1;
    }
    *status = atoi(c->buf + 9);
    if (*status >= 100 && *status < 200)
        return -1; /* an interim response: skip it, the final one follows */
    long long length = 0;
    int chunked = 0;
    const char *line = memchr(c->buf, '\n', head_len);
    while (line && line < head_end) {
        line++;
        const char *eol = memchr(line, '\r', (size_t)(head_end - line) + 1);
        if (!eol)
            break;
        size_t len = (size_t)(eol - line);
        const char *v;
        if ((v = header_value(line, len, "content-length")))
            length = atoll(v);
        else if ((v = header_value(line, len, "transfer-encoding")))
            chunked = memmem(v, len - (size_t)(v - line), "chunked", 7) != NULL;
        else if ((v = header_value(line, len, "connection")))
            *close_after = strncasecmp(v, "close", 5) == 0;
        line = memchr(line, '\n', (size_t)(head_end - line));
    }
    if (chunked)
        return c->len >= body_at + 5 && memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5) == 0;
    if (length < 0) {
        *status = 599;
        *close_after = 1;
        return 1;
    }
    return c->len >= body_at + (size_t)length;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s HOST PORT REQUEST_FILE CONCURRENCY DURATION_S WARMUP_S MAX_QUERIES OUT_FILE\n",
                argv[0]);
        return 2;
    }
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) {
        fprintf(stderr, "closed_loop: HOST must be an IPv4 address, not %s\n", argv[1]);
        return 2;
    }
    FILE *f = fopen(argv[3], "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) < 0 || st.st_size == 0) {
        fprintf(stderr, "closed_loop: cannot read the request in %s\n", argv[3]);
        return 2;
    }
    request_len = (size_t)st.st_size;
    char *req = malloc(request_len);
    if (!req || fread(req, 1, request_len, f) != request_len) {
        fprintf(stderr, "closed_loop: cannot read the request in %s\n", argv[3]);
        return 2;
    }
    fclose(f);
    request = req;
    char *rest[4];
    long concurrency = strtol(argv[4], &rest[0], 10);
    double duration = strtod(argv[5], &rest[1]), warmup = strtod(argv[6], &rest[2]);
    budget = strtoll(argv[7], &rest[3], 10);
    if (*rest[0] || *rest[1] || *rest[2] || *rest[3] || concurrency < 1 || concurrency > 65536 || duration < 0 ||
        warmup < 0) {
        fprintf(stderr, "closed_loop: CONCURRENCY must be 1..65536, the times numbers >= 0, MAX_QUERIES an integer\n");
        return 2;
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    conn_t *conns = calloc((size_t)concurrency, sizeof *conns);
    if (ep < 0 || !conns) {
        perror("closed_loop: setup");
        return 2;
    }
    for (int i = 0; i < concurrency; i++) {
        conns[i].cap = 65536;
        conns[i].buf = malloc(conns[i].cap);
        if (!conns[i].buf) {
            perror("closed_loop: malloc");
            return 2;
        }
        conns[i].fd = connect_one();
        if (conns[i].fd < 0) {
            fprintf(stderr, "closed_loop: cannot connect to %s:%s: %s\n", argv[1], argv[2], strerror(errno));
            return 3;
        }
    }
    double start = now(), t_measure = start + warmup;
    t_end = start + warmup + duration;
    int live = 0;


    for (int i = 0; i < concurrency; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (send_next(&conns[i])) {
            if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) {
                perror("closed_loop: epoll_ctl");
                return 2;
            }
            live++;
        }
    }
    struct epoll_event events[64];
    while (live > 0) {
        int n = epoll_wait(ep, events, 64, 60000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("closed_loop: epoll_wait");
            return 2;
        }
        if (n == 0) {
            fprintf(stderr, "closed_loop: no response from %s:%s for 60 s\n", argv[1], argv[2]);
            return 4;
        }
        for (int e = 0; e < n; e++) {
            conn_t *c = &conns[events[e].data.u32];
            if (!c->busy)
                continue;
            if (c->cap - c->len < 4096) {
                c->cap *= 2;
                c->buf = realloc(c->buf, c->cap);
                if (!c->buf) {
                    perror("closed_loop: realloc");
                    return 2;
                }
            }
            ssize_t got = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
            if (got < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            int status = 599, close_after = 1;
            if (got > 0) {
                c->len += (size_t)got;
                int done;
                while ((done = response_done(c, &status, &close_after)) < 0) { /* drop interim heads */
                    char *head_end = memmem(c->buf, c->len, "\r\n\r\n", 4);
                    size_t skip = (size_t)(head_end - c->buf) + 4;
                    memmove(c->buf, c->buf + skip, c->len - skip);
                    c->len -= skip;
                }
                if (!done)
                    continue;
            }
            if (c->began >= t_measure)
                record(c->began, now(), status);
            if (close_after) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                if (run_goes_on()) {
                    c->fd = connect_one();
                    if (c->fd < 0) {
                        fprintf(stderr, "closed_loop: cannot reconnect to %s:%s: %s\n", argv[1], argv[2],
                                strerror(errno));
                        return 3;
                    }
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = events[e].data.u32};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
                        perror("closed_loop: epoll_ctl");
                        return 2;
                    }
                }
            }
            if (c->fd < 0 || !send_next(c)) { /* this connection is done: no more events from it */
                if (c->fd >= 0) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    c->fd = -1;
                }
                c->busy = 0;
                live--;
            }
        }
    }
    FILE *out = fopen(argv[8], "wb");
    if (!out || fwrite(records, sizeof *records, n_records, out) != n_records || fclose(out) != 0) {
        fprintf(stderr, "closed_loop: cannot write %s\n", argv[8]);
        return 2;
    }
    return 0;
}
