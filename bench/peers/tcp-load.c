/*
 * The load client of the hold bench (bench/hold.ts), in C so that the client's
 * own cost per connection is small beside a proxy's (a Node client spent
 * more CPU per connection than either proxy, on the CPU the service shares).
 * Talks to bench/peers/tcp-backend.c, directly or through a proxy. Each mode
 * prints one line of JSON.
 *
 *   tcp-load cps HOST PORT SECONDS CONCURRENCY SERVICE_CLOSES
 *     short connections (connect, 64 bytes there, 64 back, close) with
 *     CONCURRENCY in flight for SECONDS: {"connections","seconds","cps"}.
 *     SERVICE_CLOSES 0: the client shuts its side once it has the reply and
 *     waits for the service's FIN; 1: the service shuts first, the client
 *     closes at its FIN.
 *   tcp-load latency HOST PORT COUNT SERVICE_CLOSES
 *     COUNT short connections one after another: percentiles (us) of
 *     connect -> reply ("reply") and connect -> closed ("closed").
 *   tcp-load warm HOST PORT COUNT
 *     COUNT 64-byte round trips on one connection: percentiles (us).
 *   tcp-load bulk HOST PORT BYTES
 *     asks for BYTES ('B') and reads them to the service's FIN: {"mbps"}.
 * A connection that fails, or gets a short reply, is an error (exit 1).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQ 64

static struct sockaddr_in target;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void die(const char *what) {
  fprintf(stderr, "tcp-load: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int open_socket(int nonblock) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void print_percentiles(const char *name, double *v, int n, int last) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int i50 = n / 2, i99 = (int)(0.99 * n);
  if (i99 >= n) i99 = n - 1;
  printf("\"%s\":{\"p50\":%.1f,\"p99\":%.1f}%s", name, v[i50], v[i99], last ? "" : ",");
}

/* ---- cps ------------------------------------------------------------------------ */

enum state { CONNECTING, REPLY, FIN };

struct conn {
  int fd;
  enum state state;
  int got;
};

static int service_closes;
static char request[REQ];

static void start(int ep, struct conn *c) {
  c->fd = open_socket(1);
  c->state = CONNECTING;
  c->got = 0;
  if (connect(c->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) die("connect");
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Moves one connection on; 1 when it is over (closed). */
static int step(struct conn *c, uint32_t events) {
  char buf[4096];
  if (events & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    errno = err;
    die("connection");
  }
  if (c->state == CONNECTING) {
    if (!(events & EPOLLOUT)) return 0;
    if (write(c->fd, request, REQ) != REQ) die("write");
    c->state = REPLY;
  }
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EAGAIN) return 0;
      die("read");
    }
    if (n == 0) {
      if (c->got < REQ) {
        fprintf(stderr, "tcp-load: the connection ended after %d of %d bytes\n", c->got, REQ);
        exit(1);
      }
      close(c->fd);
      return 1;
    }
    c->got += (int)n;
    if (c->state == REPLY && c->got >= REQ) {
      c->state = FIN;
      if (!service_closes) shutdown(c->fd, SHUT_WR);
    }
  }
}

static void cps(double seconds, int concurrency) {
  memset(request, service_closes ? 'C' : 'r', REQ);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct conn *conns = calloc((size_t)concurrency, sizeof *conns);
  struct epoll_event evs[256];
  double t0 = now_us(), end = t0 + seconds * 1e6;
  long done = 0;
  int open = 0;
  for (int i = 0; i < concurrency; i++, open++) start(ep, &conns[i]);
  while (open > 0) {
    int n = epoll_wait(ep, evs, 256, 10000);
    if (n == 0) {
      fprintf(stderr, "tcp-load: no progress in 10 s (%d connections open)\n", open);
      exit(1);
    }
    if (n < 0 && errno != EINTR) die("epoll_wait");
    double t = now_us();
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (!step(c, evs[i].events)) continue;
      done++;
      if (t < end) start(ep, c);
      else open--;
    }
  }
  double elapsed = (now_us() - t0) / 1e6;
  printf("{\"connections\":%ld,\"seconds\":%.3f,\"cps\":%.1f}\n", done, elapsed, (double)done / elapsed);
}

/* ---- one at a time -------------------------------------------------------------- */

static void read_exactly(int fd, int want) {
  char buf[4096];
  int got = 0;
  while (got < want) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("read");
    if (n == 0) {
      fprintf(stderr, "tcp-load: the connection ended after %d of %d bytes\n", got, want);
      exit(1);
    }
    got += (int)n;
  }
}

static void latency(int count) {
  double *reply = calloc((size_t)count, sizeof *reply), *closed = calloc((size_t)count, sizeof *closed);
  memset(request, service_closes ? 'C' : 'r', REQ);
  char buf[64];
  for (int i = 0; i < count; i++) {
    double t0 = now_us();
    int fd = open_socket(0);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) die("connect");
    if (write(fd, request, REQ) != REQ) die("write");
    read_exactly(fd, REQ);
    reply[i] = now_us() - t0;
    if (!service_closes) shutdown(fd, SHUT_WR);
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    }
    if (n < 0) die("read (waiting for the FIN)");
    close(fd);
    closed[i] = now_us() - t0;
  }
  printf("{");
  print_percentiles("reply", reply, count, 0);
  print_percentiles("closed", closed, count, 1);
  printf("}\n");
}

static void warm(int count) {
  double *times = calloc((size_t)count, sizeof *times);
  memset(request, 'r', REQ);
  int fd = open_socket(0);
  if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) die("connect");
  for (int i = 0; i < count; i++) {
    double t0 = now_us();
    if (write(fd, request, REQ) != REQ) die("write");
    read_exactly(fd, REQ);
    times[i] = now_us() - t0;
  }
  close(fd);
  printf("{");
  print_percentiles("roundTrip", times, count, 1);
  printf("}\n");
}

static void bulk(long long bytes) {
  static char buf[1 << 18];
  double t0 = now_us();
  int fd = open_socket(0);
  if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) die("connect");
  if (write(fd, "B", 1) != 1) die("write");
  long long got = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("read");
    if (n == 0) break;
    got += n;
  }
  close(fd);
  double seconds = (now_us() - t0) / 1e6;
  if (got != bytes) {
    fprintf(stderr, "tcp-load: bulk: got %lld of %lld bytes\n", got, bytes);
    exit(1);
  }
  printf("{\"mbps\":%.1f}\n", (double)bytes / 1e6 / seconds);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 5) {
    fprintf(stderr, "usage: tcp-load cps|latency|warm|bulk HOST PORT ...\n");
    return 2;
  }
  target.sin_family = AF_INET;
  target.sin_port = htons((uint16_t)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) {
    fprintf(stderr, "tcp-load: %s is not an IPv4 address\n", argv[2]);
    return 2;
  }
  const char *mode = argv[1];
  if (strcmp(mode, "cps") == 0 && argc == 7) {
    service_closes = atoi(argv[6]);
    cps(atof(argv[4]), atoi(argv[5]));
  } else if (strcmp(mode, "latency") == 0 && argc == 6) {
    service_closes = atoi(argv[5]);
    latency(atoi(argv[4]));
  } else if (strcmp(mode, "warm") == 0 && argc == 5) {
    warm(atoi(argv[4]));
  } else if (strcmp(mode, "bulk") == 0 && argc == 5) {
    bulk(atoll(argv[4]));
  } else {
    fprintf(stderr, "tcp-load: bad arguments for %s\n", mode);
    return 2;
  }
  return 0;
}
