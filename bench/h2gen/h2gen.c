/*
 * h2gen: the benchmark's load generator — an HTTP/2 (h2c) client on nghttp2 and epoll.
 *
 * Why C: on a two-core machine the Python gRPC client spent 330-670 us of CPU per call, as
 * much as the servers it measured, so every workload (the echo baseline included) was
 * measured while the generator took a core from the system under test. This one spends a few
 * tens of microseconds per call. The Python bench prepares requests, runs this, and records
 * the latencies it writes into HDR histograms.
 *
 *   h2gen --host H --port P --requests FILE --mode closed|open --seconds S
 *         [--concurrency C] [--rate R] [--connections N] [--grpc] [--max-in-flight M]
 *         [--latencies OUT] [--completions TIMES]
 *
 * FILE holds the requests to send round-robin, each as
 *   u16 path length (big-endian), path, u32 body length (big-endian), body.
 * With --grpc a request is a POST with content-type application/grpc and succeeds when the
 * response carries grpc-status 0 (the body must already be length-prefixed gRPC framing);
 * without it a request is a GET (POST when it has a body) and succeeds on a 2xx status.
 *
 * closed: C streams in flight, each replaced as it completes, for S seconds; a latency is
 *         counted from the request's send.
 * open:   R requests per second on a fixed schedule for S seconds; a latency is counted from
 *         the request's *intended* start, so queueing is never hidden (no coordinated
 *         omission). A request due while M are already in flight is dropped (an error).
 *
 * A stream the server resets or refuses is an error; a connection the server ends (GOAWAY,
 * close) takes no new requests and its unfinished streams are errors; requests go to the
 * connections still open. Streams unfinished DRAIN_S after the last send are errors.
 * SIGTERM ends the run early: no new requests, those in flight finish, the report is written.
 *
 * stdout: one JSON line {"done", "errors", "dropped", "elapsed_s", "cpu_s"}; OUT: the latency
 * of every successful request in microseconds as little-endian u32; TIMES: when each of them
 * completed, CLOCK_MONOTONIC nanoseconds as little-endian i64 (Python's time.monotonic_ns).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_S 10

typedef struct {
  char *path;
  size_t path_len;
  uint8_t *body;
  size_t body_len;
} request_t;

typedef struct conn conn_t;

typedef struct {
  const request_t *req;
  size_t body_off;
  int64_t started_ns; /* intended (open) or actual (closed) start */
  int http_status;
  int grpc_ok; /* grpc-status: 0 seen */
  int grpc_seen;
} stream_t;

struct conn {
  int fd;
  nghttp2_session *session;
  int in_flight;
  int want_out; /* EPOLLOUT registered */
  int ended;    /* GOAWAY received or socket closed: no new requests */
  char authority[300];
};

static request_t *requests;
static size_t n_requests, next_request;
static int grpc_mode;
static int closed_mode;
static long done, errors, dropped;
static uint32_t *latencies;
static int64_t *completions; /* CLOCK_MONOTONIC ns of each success, with --completions */
static size_t n_latencies, cap_latencies;
static int keep_completions;
static int total_in_flight;
static long refills; /* closed loop: completed streams to replace, outside nghttp2 callbacks */
static int epfd;
static conn_t *conns;
static int connections = 4;
static size_t turn;
static volatile sig_atomic_t stop_requested; /* SIGTERM: finish early, report as usual */

static void on_sigterm(int sig) {
  (void)sig;
  stop_requested = 1;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "h2gen: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void *grow(void *p, size_t size) {
  void *q = realloc(p, size);
  if (!q) die("out of memory");
  return q;
}

static void record(int64_t latency_ns, int64_t at_ns) {
  if (n_latencies == cap_latencies) {
    cap_latencies = cap_latencies ? cap_latencies * 2 : 1 << 16;
    latencies = grow(latencies, cap_latencies * sizeof *latencies);
    if (keep_completions) completions = grow(completions, cap_latencies * sizeof *completions);
  }
  if (keep_completions) completions[n_latencies] = at_ns;
  int64_t us = latency_ns / 1000;
  latencies[n_latencies++] = us < 1 ? 1 : (us > UINT32_MAX ? UINT32_MAX : (uint32_t)us);
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
                       void *user) {
  (void)s;
  (void)flags;
  conn_t *c = user;
  ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return NGHTTP2_ERR_WOULDBLOCK;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return n;
}

static ssize_t body_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)s;
  (void)stream_id;
  (void)user;
  stream_t *st = src->ptr;
  size_t left = st->req->body_len - st->body_off;
  size_t n = left < len ? left : len;
  memcpy(buf, st->req->body + st->body_off, n);
  st->body_off += n;
  if (st->body_off == st->req->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  (void)flags;
  (void)user;
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
  if (!st) return 0;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    char v[8] = {0};
    memcpy(v, value, valuelen < sizeof v - 1 ? valuelen : sizeof v - 1);
    st->http_status = atoi(v);
  }
  /* In the trailers, or in the one HEADERS frame of a trailers-only response. */
  if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    st->grpc_seen = 1;
    st->grpc_ok = valuelen == 1 && value[0] == '0';
  }
  return 0;
}

static int frame_cb(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
  (void)s;
  if (frame->hd.type == NGHTTP2_GOAWAY) ((conn_t *)user)->ended = 1;
  return 0;
}

static int close_cb(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user) {
  conn_t *c = user;
  stream_t *st = nghttp2_session_get_stream_user_data(s, stream_id);
  if (!st) return 0;
  int64_t t = now_ns();
  int ok = error_code == 0 && st->http_status >= 200 && st->http_status < 300 &&
           (!grpc_mode || (st->grpc_seen && st->grpc_ok));
  if (ok) {
    done++;
    record(t - st->started_ns, t);
  } else {
    errors++;
  }
  c->in_flight--;
  total_in_flight--;
  free(st);
  if (closed_mode) refills++; /* replaced from the main loop, never from inside nghttp2 */
  return 0;
}

/* The next connection still taking requests, round-robin; NULL when every one has ended. */
static conn_t *next_conn(void) {
  for (int k = 0; k < connections; k++) {
    conn_t *c = &conns[turn++ % (size_t)connections];
    if (!c->ended) return c;
  }
  return NULL;
}

static void submit(int64_t started_ns) {
  conn_t *c = next_conn();
  if (!c) {
    errors++; /* nowhere left to send it */
    return;
  }
  const request_t *r = &requests[next_request++ % n_requests];
  stream_t *st = calloc(1, sizeof *st);
  if (!st) die("calloc");
  st->req = r;
  st->started_ns = started_ns;
  int post = grpc_mode || r->body_len > 0;
#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv nva[] = {
      NV(":method", post ? "POST" : "GET", post ? 4 : 3),
      NV(":scheme", "http", 4),
      NV(":authority", c->authority, strlen(c->authority)),
      NV(":path", r->path, r->path_len),
      NV("te", "trailers", 8),
      NV("content-type", grpc_mode ? "application/grpc" : "application/json",
         grpc_mode ? 16 : 16),
  };
#undef NV
  size_t nvlen = sizeof nva / sizeof *nva - (post ? 0 : 1); /* no content-type on a GET */
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_cb};
  int32_t id = nghttp2_submit_request(c->session, NULL, nva, nvlen, post ? &prd : NULL, st);
  if (id < 0) {
    free(st);
    errors++;
    return;
  }
  c->in_flight++;
  total_in_flight++;
}

/* The connection is gone: its unfinished streams are errors, it takes no more requests. */
static void end_conn(conn_t *c) {
  if (c->fd < 0) return;
  errors += c->in_flight;
  total_in_flight -= c->in_flight;
  c->in_flight = 0;
  c->ended = 1;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  nghttp2_session_del(c->session); /* calls no callbacks; its streams' data is not freed */
  c->session = NULL;
}

static void flush(conn_t *c) {
  if (c->fd < 0) return;
  if (nghttp2_session_send(c->session) != 0) {
    end_conn(c);
    return;
  }
  if (c->ended && c->in_flight == 0) {
    end_conn(c); /* after GOAWAY, once its streams are done */
    return;
  }
  int want = nghttp2_session_want_write(c->session);
  if (want != c->want_out) {
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->want_out = want;
  }
}

static void on_readable(conn_t *c) {
  uint8_t buf[65536];
  while (c->fd >= 0) {
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0 || nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0) {
      end_conn(c); /* closed, reset, or a protocol error */
      return;
    }
  }
}

static void load_requests(const char *file) {
  FILE *f = fopen(file, "rb");
  if (!f) die(file);
  size_t cap = 0;
  for (;;) {
    uint8_t h[4];
    if (fread(h, 1, 2, f) != 2) break;
    request_t r = {0};
    r.path_len = (size_t)h[0] << 8 | h[1];
    r.path = grow(NULL, r.path_len + 1);
    if (fread(r.path, 1, r.path_len, f) != r.path_len || fread(h, 1, 4, f) != 4) {
      fprintf(stderr, "h2gen: truncated requests file\n");
      exit(2);
    }
    r.path[r.path_len] = 0;
    r.body_len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    r.body = grow(NULL, r.body_len + 1);
    if (fread(r.body, 1, r.body_len, f) != r.body_len) {
      fprintf(stderr, "h2gen: truncated requests file\n");
      exit(2);
    }
    if (n_requests == cap) {
      cap = cap ? cap * 2 : 64;
      requests = grow(requests, cap * sizeof *requests);
    }
    requests[n_requests++] = r;
  }
  fclose(f);
  if (!n_requests) {
    fprintf(stderr, "h2gen: no requests in %s\n", file);
    exit(2);
  }
}

static int connect_to(const char *host, const char *port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "h2gen: %s:%s: %s\n", host, port, gai_strerror(rc));
    exit(2);
  }
  int fd = -1;
  for (ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    if (fd >= 0) close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static void arm(int tfd, int64_t at_ns) {
  struct itimerspec its = {0};
  its.it_value.tv_sec = at_ns / 1000000000LL;
  its.it_value.tv_nsec = at_ns % 1000000000LL;
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

int main(int argc, char **argv) {
  /* First of all: a stop asked for at any point ends the run cleanly, never kills it. */
  struct sigaction sa = {.sa_handler = on_sigterm};
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  const char *host = "127.0.0.1", *port = NULL, *file = NULL, *out = NULL, *times = NULL;
  const char *mode = NULL;
  double seconds = 5, rate = 0;
  int concurrency = 32, max_in_flight = 4000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--grpc")) {
      grpc_mode = 1;
      continue;
    }
    if (!v) {
      fprintf(stderr, "h2gen: %s needs a value\n", a);
      return 2;
    }
    i++;
    if (!strcmp(a, "--host")) host = v;
    else if (!strcmp(a, "--port")) port = v;
    else if (!strcmp(a, "--requests")) file = v;
    else if (!strcmp(a, "--latencies")) out = v;
    else if (!strcmp(a, "--completions")) times = v;
    else if (!strcmp(a, "--mode")) mode = v;
    else if (!strcmp(a, "--seconds")) seconds = atof(v);
    else if (!strcmp(a, "--rate")) rate = atof(v);
    else if (!strcmp(a, "--concurrency")) concurrency = atoi(v);
    else if (!strcmp(a, "--connections")) connections = atoi(v);
    else if (!strcmp(a, "--max-in-flight")) max_in_flight = atoi(v);
    else {
      fprintf(stderr, "h2gen: unknown option %s\n", a);
      return 2;
    }
  }
  if (!mode || (strcmp(mode, "closed") && strcmp(mode, "open"))) {
    fprintf(stderr, "h2gen: --mode closed|open is required\n");
    return 2;
  }
  closed_mode = !strcmp(mode, "closed");
  if (!port || !file || connections < 1 || seconds <= 0 || (!closed_mode && rate <= 0) ||
      (closed_mode && concurrency < 1)) {
    fprintf(stderr, "h2gen: --port, --requests, --seconds > 0, and --rate > 0 (open) or "
                    "--concurrency > 0 (closed) are required\n");
    return 2;
  }
  load_requests(file);
  keep_completions = times != NULL;

  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
  nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, close_cb);

  epfd = epoll_create1(0);
  conns = calloc((size_t)connections, sizeof *conns);
  if (!conns) die("calloc");
  for (int i = 0; i < connections; i++) {
    conn_t *c = &conns[i];
    c->fd = connect_to(host, port);
    snprintf(c->authority, sizeof c->authority, "%s:%s", host, port);
    nghttp2_session_client_new(&c->session, cbs, c);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24},
                                   {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1 << 16}};
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 1 << 28);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    flush(c);
  }

  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);

  int64_t start = now_ns() + 20000000LL; /* settings exchanged first */
  int64_t deadline = start + (int64_t)(seconds * 1e9);
  long total = closed_mode ? 0 : (long)(rate * seconds);
  long sent = 0;
  int started = 0, sending = 1;
  int64_t sending_ended = 0;
  arm(tfd, start);

  struct epoll_event events[64];
  for (;;) {
    int64_t t = now_ns();
    if (stop_requested || (started && sending && (closed_mode ? t >= deadline : sent == total))) {
      stop_requested = 0;
      if (sending) sending_ended = t;
      sending = 0;
      started = 1;
    }
    if (!sending && total_in_flight == 0) break;
    if (!sending && t - sending_ended > DRAIN_S * 1000000000LL) {
      errors += total_in_flight; /* never answered */
      break;
    }
    int n = epoll_wait(epfd, events, 64, closed_mode && started ? 100 : 1000);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      conn_t *c = events[i].data.ptr;
      if (!c) { /* the timer: the start, or the open loop's next sends are due */
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd");
        if (!sending) continue;
        t = now_ns();
        if (closed_mode && !started) {
          started = 1;
          for (int k = 0; k < concurrency; k++) submit(t);
        } else if (!closed_mode) {
          started = 1;
          while (sent < total) {
            int64_t due = start + (int64_t)((double)sent * 1e9 / rate);
            if (due > t) {
              arm(tfd, due);
              break;
            }
            if (total_in_flight >= max_in_flight) dropped++;
            else submit(due);
            sent++;
          }
        }
        continue;
      }
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
    }
    t = now_ns();
    if (sending && started && !next_conn()) { /* every connection ended */
      if (!closed_mode) errors += total - sent;
      sent = total;
      sending = 0;
      sending_ended = t;
    }
    for (; refills > 0; refills--)
      if (sending && t < deadline) submit(t);
    for (int k = 0; k < connections; k++) flush(&conns[k]);
  }
  double elapsed = started ? (double)(now_ns() - start) / 1e9 : 0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  printf("{\"done\": %ld, \"errors\": %ld, \"dropped\": %ld, \"elapsed_s\": %.6f, "
         "\"cpu_s\": %.6f}\n",
         done, errors, dropped, elapsed < 0 ? 0 : elapsed, cpu);
  if (out) {
    FILE *f = fopen(out, "wb");
    if (!f) die(out);
    fwrite(latencies, sizeof *latencies, n_latencies, f);
    fclose(f);
  }
  if (times) {
    FILE *f = fopen(times, "wb");
    if (!f) die(times);
    fwrite(completions, sizeof *completions, n_latencies, f);
    fclose(f);
  }
  return 0;
}
