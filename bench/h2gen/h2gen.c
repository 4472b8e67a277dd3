/*
 * h2gen: the benchmark's load generator — an HTTP/2 (h2c) client on nghttp2 and epoll.
 *
 * Why C: on a two-core machine the Python gRPC client spent 330-670 us of CPU per call, as
 * much as the servers it measured, so every workload (the echo baseline included) was
 * measured while the generator took a core from the system under test. This one spends a few
 * microseconds per call. The Python bench prepares requests, runs this, and records the
 * latencies it writes into HDR histograms.
 *
 *   h2gen --host H --port P --requests FILE --mode closed|open --seconds S
 *         [--concurrency C] [--rate R] [--connections N] [--grpc] [--max-in-flight M]
 *         [--latencies OUT] [--completions TIMES]
 *
 * FILE holds the requests to send round-robin, each as
 *   u16 path length (big-endian), path, u32 body length (big-endian), body.
 * With --grpc a request is a POST with content-type application/grpc and succeeds when the
 * trailers carry grpc-status 0 (the body must already be length-prefixed gRPC framing);
 * without it a request is a GET (POST when it has a body) and succeeds on a 2xx status.
 *
 * closed: C streams in flight, each replaced as it completes, for S seconds; a latency is
 *         counted from the request's send.
 * open:   R requests per second on a fixed schedule for S seconds; a latency is counted from
 *         the request's *intended* start, so queueing is never hidden (no coordinated
 *         omission). A request due while M are already in flight is counted as an error.
 *
 * SIGTERM ends the run early: no new requests, those in flight finish, the report is written.
 *
 * stdout: one JSON line {"done", "errors", "dropped", "elapsed_s"}; OUT: the latency of every
 * successful request in microseconds as little-endian u32; TIMES: when each of them completed,
 * CLOCK_MONOTONIC nanoseconds as little-endian i64 (Python's time.monotonic_ns clock).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  char *path;
  size_t path_len;
  uint8_t *body;
  size_t body_len;
} request_t;

typedef struct conn conn_t;

typedef struct {
  conn_t *conn;
  const request_t *req;
  size_t body_off;
  int64_t started_ns; /* intended (open) or actual (closed) start */
  int http_status;
  int grpc_status; /* -1 until seen */
} stream_t;

struct conn {
  int fd;
  nghttp2_session *session;
  int in_flight;
  int want_out; /* EPOLLOUT registered */
  char authority[300];
};

static request_t *requests;
static size_t n_requests, next_request;
static int grpc_mode;
static int closed_mode;
static int64_t deadline_ns;
static long done, errors, dropped;
static uint32_t *latencies;
static int64_t *completions; /* CLOCK_MONOTONIC ns of each success, with --completions */
static size_t n_latencies, cap_latencies;
static int keep_completions;
static int total_in_flight;
static int epfd;
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

static void record(int64_t latency_ns, int64_t at_ns) {
  if (n_latencies == cap_latencies) {
    cap_latencies = cap_latencies ? cap_latencies * 2 : 1 << 16;
    latencies = realloc(latencies, cap_latencies * sizeof *latencies);
    if (!latencies) die("realloc");
    if (keep_completions) {
      completions = realloc(completions, cap_latencies * sizeof *completions);
      if (!completions) die("realloc");
    }
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
  char v[16] = {0};
  memcpy(v, value, valuelen < sizeof v - 1 ? valuelen : sizeof v - 1);
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) st->http_status = atoi(v);
  if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) st->grpc_status = atoi(v);
  return 0;
}

static int submit(conn_t *c, int64_t started_ns);

static int close_cb(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user) {
  conn_t *c = user;
  stream_t *st = nghttp2_session_get_stream_user_data(s, stream_id);
  if (!st) return 0;
  int64_t t = now_ns();
  int ok = error_code == 0 && st->http_status >= 200 && st->http_status < 300 &&
           (!grpc_mode || st->grpc_status == 0);
  if (ok) {
    done++;
    record(t - st->started_ns, t);
  } else {
    errors++;
  }
  c->in_flight--;
  total_in_flight--;
  free(st);
  if (closed_mode && t < deadline_ns) submit(c, t);
  return 0;
}

static int submit(conn_t *c, int64_t started_ns) {
  const request_t *r = &requests[next_request++ % n_requests];
  stream_t *st = calloc(1, sizeof *st);
  if (!st) die("calloc");
  st->conn = c;
  st->req = r;
  st->started_ns = started_ns;
  st->grpc_status = -1;
  int post = grpc_mode || r->body_len > 0;
#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv nva[] = {
      NV(":method", post ? "POST" : "GET", post ? 4 : 3),
      NV(":scheme", "http", 4),
      NV(":authority", c->authority, strlen(c->authority)),
      NV(":path", r->path, r->path_len),
      NV("content-type", grpc_mode ? "application/grpc" : "application/json",
         grpc_mode ? 16 : 16),
      NV("te", "trailers", 8),
  };
#undef NV
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_cb};
  int32_t id = nghttp2_submit_request(c->session, NULL, nva, sizeof nva / sizeof *nva,
                                      post ? &prd : NULL, st);
  if (id < 0) {
    free(st);
    errors++;
    return -1;
  }
  c->in_flight++;
  total_in_flight++;
  return 0;
}

static void flush(conn_t *c) {
  if (nghttp2_session_send(c->session) != 0) {
    fprintf(stderr, "h2gen: connection lost while sending\n");
    exit(3);
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
  for (;;) {
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      die("recv");
    }
    if (n == 0) {
      fprintf(stderr, "h2gen: server closed the connection\n");
      exit(3);
    }
    if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0) {
      fprintf(stderr, "h2gen: protocol error\n");
      exit(3);
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
    r.path = malloc(r.path_len + 1);
    if (fread(r.path, 1, r.path_len, f) != r.path_len || fread(h, 1, 4, f) != 4) {
      fprintf(stderr, "h2gen: truncated requests file\n");
      exit(2);
    }
    r.path[r.path_len] = 0;
    r.body_len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    r.body = malloc(r.body_len + 1);
    if (fread(r.body, 1, r.body_len, f) != r.body_len) {
      fprintf(stderr, "h2gen: truncated requests file\n");
      exit(2);
    }
    if (n_requests == cap) {
      cap = cap ? cap * 2 : 64;
      requests = realloc(requests, cap * sizeof *requests);
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
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
  if (getaddrinfo(host, port, &hints, &res) != 0) die("getaddrinfo");
  int fd = socket(res->ai_family, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) die("connect");
  freeaddrinfo(res);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *port = NULL, *file = NULL, *out = NULL, *times = NULL;
  double seconds = 5, rate = 0;
  int concurrency = 32, connections = 4, max_in_flight = 4000;
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
    else if (!strcmp(a, "--mode")) closed_mode = !strcmp(v, "closed");
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
  if (!port || !file || connections < 1 || (!closed_mode && rate <= 0)) {
    fprintf(stderr, "h2gen: --port, --requests and (open) --rate are required\n");
    return 2;
  }
  load_requests(file);
  keep_completions = times != NULL;

  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
  nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, close_cb);

  epfd = epoll_create1(0);
  conn_t *conns = calloc((size_t)connections, sizeof *conns);
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
  deadline_ns = start + (int64_t)(seconds * 1e9);
  long total = closed_mode ? 0 : (long)(rate * seconds);
  long sent = 0;
  int started = 0;
  size_t turn = 0;
  struct itimerspec its = {0};
  its.it_value.tv_sec = start / 1000000000LL;
  its.it_value.tv_nsec = start % 1000000000LL;
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);

  struct sigaction sa = {.sa_handler = on_sigterm};
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct epoll_event events[64];
  for (;;) {
    int64_t t = now_ns();
    if (stop_requested) {
      stop_requested = 0;
      if (closed_mode) deadline_ns = t;
      else total = sent;
      started = 1;
    }
    if (closed_mode ? (started && total_in_flight == 0 && t >= deadline_ns)
                    : (sent == total && total_in_flight == 0))
      break;
    int n = epoll_wait(epfd, events, 64, 1000);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      conn_t *c = events[i].data.ptr;
      if (!c) { /* the timer: start, or the open loop's next sends are due */
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd");
        t = now_ns();
        if (closed_mode && !started) {
          started = 1;
          for (int k = 0; k < concurrency; k++) submit(&conns[k % connections], t);
        } else if (!closed_mode) {
          started = 1;
          while (sent < total) {
            int64_t due = start + (int64_t)((double)sent * 1e9 / rate);
            if (due > t) {
              its.it_value.tv_sec = due / 1000000000LL;
              its.it_value.tv_nsec = due % 1000000000LL;
              timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
              break;
            }
            if (total_in_flight >= max_in_flight) dropped++;
            else submit(&conns[turn++ % (size_t)connections], due);
            sent++;
          }
        }
        continue;
      }
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
    }
    for (int k = 0; k < connections; k++) flush(&conns[k]);
  }
  double elapsed = (double)(now_ns() - start) / 1e9;
  printf("{\"done\": %ld, \"errors\": %ld, \"dropped\": %ld, \"elapsed_s\": %.6f}\n", done,
         errors, dropped, elapsed);
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
