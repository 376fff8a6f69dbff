/*
 * The service behind both proxies in the hold bench (bench/hold.ts), in C so
 * that its own cost per connection is small beside a proxy's: one epoll
 * loop, one TCP port; what a connection gets is decided by its first byte:
 * - 'B': BULK_BYTES bytes are sent back (a 1 MiB block over and over, with
 *   backpressure), then its side is shut (FIN);
 * - 'C': the first chunk echoed, then its side shut (the service closes
 *   first, as an HTTP/1.0 server does);
 * - anything else: an echo of every byte read, its side shut once the
 *   client's FIN has been read and everything echoed.
 * A connection is closed once both sides are over (half-close kept).
 * Usage: tcp-backend HOST PORT BULK_BYTES; prints "listening" when it listens.
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
#include <unistd.h>

#define BLOCK (1024 * 1024)
#define ECHO_MAX 65536

enum mode { UNKNOWN, BULK, ECHO_CLOSE, ECHO };

struct conn {
  int fd;
  enum mode mode;
  long long bulk_left;
  char *pending; /* echo bytes not yet written */
  size_t pending_len;
  int client_eof; /* the client's FIN has been read */
  int shut;       /* our FIN has been sent */
};

static char block[BLOCK];
static char scratch[ECHO_MAX];
static long long bulk_bytes;

static void finish(struct conn *c) {
  close(c->fd);
  free(c->pending);
  free(c);
}

static void shut(struct conn *c) {
  if (!c->shut) {
    c->shut = 1;
    shutdown(c->fd, SHUT_WR);
  }
}

/* Writes what is pending (echo) or the rest of the bulk; 0: blocked or done, -1: the connection failed. */
static int flush(struct conn *c) {
  while (c->pending_len > 0) {
    ssize_t n = write(c->fd, c->pending, c->pending_len);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    memmove(c->pending, c->pending + n, c->pending_len - (size_t)n);
    c->pending_len -= (size_t)n;
  }
  while (c->mode == BULK && c->bulk_left > 0) {
    size_t want = c->bulk_left < BLOCK ? (size_t)c->bulk_left : BLOCK;
    ssize_t n = write(c->fd, block, want);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->bulk_left -= n;
  }
  if (c->mode == BULK || c->mode == ECHO_CLOSE) shut(c);
  if (c->mode == ECHO && c->client_eof) shut(c);
  return 0;
}

static int queue(struct conn *c, const char *data, size_t len) {
  char *p = realloc(c->pending, c->pending_len + len);
  if (p == NULL) return -1;
  memcpy(p + c->pending_len, data, len);
  c->pending = p;
  c->pending_len += len;
  return 0;
}

/* Handles whatever the socket is ready for; returns -1 when the connection is over. */
static int serve(struct conn *c) {
  for (;;) {
    if (flush(c) < 0) return -1;
    /* Echo: no reading past what cannot be written (EPOLLOUT brings us back). */
    if (c->client_eof || c->pending_len > ECHO_MAX) break;
    ssize_t n = read(c->fd, scratch, sizeof scratch);
    if (n == 0) {
      c->client_eof = 1;
      continue;
    }
    if (n < 0) {
      if (errno == EAGAIN) break;
      return -1;
    }
    if (c->mode == UNKNOWN) {
      c->mode = scratch[0] == 'B' ? BULK : scratch[0] == 'C' ? ECHO_CLOSE : ECHO;
      if (c->mode == BULK) c->bulk_left = bulk_bytes;
      if (c->mode != BULK && queue(c, scratch, (size_t)n) < 0) return -1;
    } else if (c->mode == ECHO) {
      if (queue(c, scratch, (size_t)n) < 0) return -1;
    }
  }
  return c->shut && c->client_eof ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: tcp-backend HOST PORT BULK_BYTES\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  memset(block, 'a', sizeof block);
  bulk_bytes = atoll(argv[3]);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
    fprintf(stderr, "tcp-backend: %s is not an IPv4 address\n", argv[1]);
    return 2;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
    perror("tcp-backend: listen");
    return 1;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  printf("listening\n");
  fflush(stdout);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno != EINTR) return 1;
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c == NULL) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct conn *nc = calloc(1, sizeof *nc);
          if (nc == NULL) {
            close(fd);
            continue;
          }
          nc->fd = fd;
          struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
          if (serve(nc) < 0) finish(nc);
        }
        continue;
      }
      if (evs[i].events & EPOLLERR || serve(c) < 0) finish(c);
    }
  }
}
