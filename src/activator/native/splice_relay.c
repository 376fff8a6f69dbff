/*
 * jitsu's splice relay (src/activator/splice-relay.ts): the warm path of the
 * hold ports without JavaScript per connection. One epoll thread per engine
 * owns the hold ports' listening sockets and accepts on them:
 *
 * - while a listener is "fast" (its VM is ready: the activator said so with
 *   enable()), each connection is relayed here: a non-blocking connect to the
 *   VM, then bytes move socket -> pipe -> socket with splice(2), never through
 *   user space (as systemd-socket-proxyd does);
 * - otherwise, and when the VM refuses the connect (it stopped behind our
 *   back), the accepted socket is handed to JavaScript with its peer's
 *   address, and the listener stops being fast. The activator then either
 *   gives it back to be relayed here (relay(): the VM is ready), or holds it,
 *   summons, and relays it itself.
 *
 * A relay behaves as relay.ts does: reading stops while the pipe towards the
 * other side is full (backpressure through TCP's window: at most one pipe of
 * 256 KiB per direction), a FIN is passed on once the bytes before it are
 * written (half-close), and an error on either side resets both (RST by
 * SO_LINGER 0). Sockets are edge-triggered (EPOLLET) with readiness flags, so
 * no epoll_ctl per transfer. Counters per listener are read by JavaScript
 * with stats(); one mutex guards listeners, counters and the hand-off queue.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PIPE_BYTES (256 * 1024)
#define FREE_PIPES 64
#define MAX_EVENTS 128

enum tag_kind { TAG_WAKE, TAG_LISTENER, TAG_CONN };

struct tag {
  enum tag_kind kind;
  int side; /* TAG_CONN: 0 the client, 1 the VM */
  void *ptr;
};

struct listener {
  int id;
  int fd; /* -1 once closed */
  int fast;
  struct sockaddr_storage up;
  socklen_t up_len;
  /* Fast connections only (the ones handed to JavaScript are counted there). */
  double accepted, connected, closed, to_vm, from_vm, errors;
  double open;
  /* CLOCK_MONOTONIC ms of the last accept and the last close here (0: none yet): when the VM last had a connection. */
  double last_accept, last_close;
  struct tag tag;
};

/* One direction: bytes read from fd[d] wait in pipe[] before they are written to fd[1 - d]. */
struct half {
  int pipe[2];
  size_t in_pipe;
  size_t capacity;
  int eof;      /* fd[d] sent its FIN (or we gave up reading it) */
  int shut;     /* the FIN was passed on to fd[1 - d] */
};

struct conn {
  struct listener *l;
  int fd[2];
  int connecting;
  int can_read[2], can_write[2];
  struct half dir[2];
  struct tag tags[2];
  int dead; /* freed in this batch of events: later events for it are ignored */
  struct conn *prev, *next;
};

struct handoff {
  int listener;
  int fd;
  int refused; /* the VM refused it (else: the listener was not fast) */
  char peer[INET6_ADDRSTRLEN];
};

struct engine {
  int ep;
  int wake;
  pthread_t thread;
  int running;
  int stopping;
  pthread_mutex_t mu;
  struct listener **listeners;
  int n_listeners, cap_listeners;
  struct conn *conns;
  struct conn *dead; /* freed at the end of the batch (through ->next) */
  struct handoff *queue;
  int n_queue, cap_queue;
  int signalled; /* a call to JavaScript is on its way (one at a time) */
  int free_pipes[FREE_PIPES][3]; /* read end, write end, capacity */
  int n_free_pipes;
  struct tag wake_tag;
  napi_threadsafe_function tsfn;
};

/* ---- pipes ------------------------------------------------------------------ */

static int pipe_take(struct engine *e, struct half *h) {
  if (e->n_free_pipes > 0) {
    e->n_free_pipes--;
    h->pipe[0] = e->free_pipes[e->n_free_pipes][0];
    h->pipe[1] = e->free_pipes[e->n_free_pipes][1];
    h->capacity = (size_t)e->free_pipes[e->n_free_pipes][2];
  } else {
    if (pipe2(h->pipe, O_NONBLOCK | O_CLOEXEC) < 0) return -1;
    /* May be refused (pipe-max-size, or the user's pipe quota): the pipe keeps its size then. */
    int size = fcntl(h->pipe[1], F_SETPIPE_SZ, PIPE_BYTES);
    if (size < 0) size = fcntl(h->pipe[1], F_GETPIPE_SZ);
    h->capacity = size > 0 ? (size_t)size : 65536;
  }
  h->in_pipe = 0;
  return 0;
}

/* An empty pipe is kept for the next connection; one with bytes left in it (a reset) is closed. */
static void pipe_give(struct engine *e, struct half *h) {
  if (h->pipe[0] < 0) return;
  if (h->in_pipe == 0 && e->n_free_pipes < FREE_PIPES) {
    e->free_pipes[e->n_free_pipes][0] = h->pipe[0];
    e->free_pipes[e->n_free_pipes][1] = h->pipe[1];
    e->free_pipes[e->n_free_pipes][2] = (int)h->capacity;
    e->n_free_pipes++;
  } else {
    close(h->pipe[0]);
    close(h->pipe[1]);
  }
  h->pipe[0] = h->pipe[1] = -1;
}

/* ---- connections ------------------------------------------------------------ */

static void reset_fd(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

static void unlink_conn(struct engine *e, struct conn *c) {
  if (c->prev) c->prev->next = c->next;
  else e->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->dead = 1;
  c->prev = NULL;
  c->next = e->dead;
  e->dead = c;
}

static double monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void conn_free(struct engine *e, struct conn *c, int reset) {
  for (int i = 0; i < 2; i++) {
    if (c->fd[i] < 0) continue;
    /* close() takes it out of the epoll set (never dup'ed): no EPOLL_CTL_DEL. */
    if (reset) reset_fd(c->fd[i]);
    else close(c->fd[i]);
  }
  for (int d = 0; d < 2; d++) pipe_give(e, &c->dir[d]);
  unlink_conn(e, c);
  c->l->open--;
  c->l->closed++;
  c->l->last_close = monotonic_ms();
  if (reset) c->l->errors++;
}

static void queue_handoff(struct engine *e, int listener, int fd, int refused) {
  if (e->n_queue == e->cap_queue) {
    int cap = e->cap_queue ? e->cap_queue * 2 : 64;
    struct handoff *q = realloc(e->queue, (size_t)cap * sizeof *q);
    if (!q) {
      reset_fd(fd);
      return;
    }
    e->queue = q;
    e->cap_queue = cap;
  }
  struct handoff *h = &e->queue[e->n_queue++];
  h->listener = listener;
  h->fd = fd;
  h->refused = refused;
  h->peer[0] = '\0';
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0) {
    if (sa.ss_family == AF_INET)
      inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, h->peer, sizeof h->peer);
    else if (sa.ss_family == AF_INET6)
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, h->peer, sizeof h->peer);
  }
}

/* Moves what it can both ways; frees `c` when both directions are over (or on an error). */
static void pump(struct engine *e, struct conn *c) {
  int progress = 1;
  while (progress) {
    progress = 0;
    for (int d = 0; d < 2; d++) {
      struct half *h = &c->dir[d];
      int src = c->fd[d], dst = c->fd[1 - d];
      if (h->in_pipe > 0 && c->can_write[1 - d]) {
        ssize_t n = splice(h->pipe[0], NULL, dst, NULL, h->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
          h->in_pipe -= (size_t)n;
          progress = 1;
        } else if (n < 0 && errno == EAGAIN) {
          c->can_write[1 - d] = 0;
        } else if (n < 0 && errno != EINTR) {
          conn_free(e, c, 1);
          return;
        }
      }
      if (!h->eof && h->in_pipe < h->capacity && c->can_read[d]) {
        ssize_t n = splice(src, NULL, h->pipe[1], NULL, h->capacity - h->in_pipe,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
          h->in_pipe += (size_t)n;
          if (d == 0) c->l->to_vm += (double)n;
          else c->l->from_vm += (double)n;
          progress = 1;
        } else if (n == 0) {
          h->eof = 1;
          progress = 1;
        } else if (errno == EAGAIN) {
          c->can_read[d] = 0;
        } else if (errno != EINTR) {
          conn_free(e, c, 1);
          return;
        }
      }
      if (h->eof && h->in_pipe == 0 && !h->shut) {
        h->shut = 1;
        shutdown(dst, SHUT_WR);
      }
    }
  }
  if (c->dir[0].shut && c->dir[1].shut) conn_free(e, c, 0);
}

static void watch(struct engine *e, struct conn *c, int side) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &c->tags[side]};
  epoll_ctl(e->ep, EPOLL_CTL_ADD, c->fd[side], &ev);
}

/* The VM's connect finished: relay, or (refused, unreachable) hand the client to JavaScript. */
static void connected(struct engine *e, struct conn *c, int err) {
  socklen_t len = sizeof err;
  if (err == 0 && getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err != 0) {
    struct listener *l = c->l;
    l->fast = 0; /* the VM is not what it was: JavaScript holds this one and decides */
    close(c->fd[1]);
    c->fd[1] = -1;
    queue_handoff(e, l->id, c->fd[0], 1);
    c->fd[0] = -1;
    for (int d = 0; d < 2; d++) pipe_give(e, &c->dir[d]);
    unlink_conn(e, c);
    l->open--;
    l->accepted--; /* counted again by JavaScript as its own */
    return;
  }
  c->connecting = 0;
  c->l->connected++;
  watch(e, c, 0);
  c->can_read[0] = c->can_read[1] = c->can_write[0] = c->can_write[1] = 1;
  pump(e, c);
}

static void start_relay(struct engine *e, struct listener *l, int client) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c) {
    reset_fd(client);
    return;
  }
  c->l = l;
  c->fd[0] = client;
  c->dir[0].pipe[0] = c->dir[0].pipe[1] = c->dir[1].pipe[0] = c->dir[1].pipe[1] = -1;
  for (int i = 0; i < 2; i++) c->tags[i] = (struct tag){TAG_CONN, i, c};
  c->next = e->conns;
  if (e->conns) e->conns->prev = c;
  e->conns = c;
  l->accepted++;
  l->open++;
  l->last_accept = monotonic_ms();
  int one = 1;
  c->fd[1] = socket(l->up.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd[1] < 0 || pipe_take(e, &c->dir[0]) < 0 || pipe_take(e, &c->dir[1]) < 0) {
    conn_free(e, c, 1);
    return;
  }
  setsockopt(c->fd[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->connecting = 1;
  int r = connect(c->fd[1], (struct sockaddr *)&l->up, l->up_len);
  if (r < 0 && errno != EINPROGRESS) {
    connected(e, c, errno);
    return;
  }
  watch(e, c, 1);
  if (r == 0) connected(e, c, 0);
}

static void accept_all(struct engine *e, struct listener *l) {
  for (;;) {
    if (l->fd < 0) return;
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, or EMFILE and the like: tried again at the next event */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (l->fast) start_relay(e, l, fd);
    else queue_handoff(e, l->id, fd, 0);
  }
}

static void *run(void *arg) {
  struct engine *e = arg;
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(e->ep, evs, MAX_EVENTS, -1);
    if (n < 0 && errno != EINTR) break;
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
      pthread_mutex_unlock(&e->mu);
      break;
    }
    int queued = e->n_queue;
    for (int i = 0; i < n; i++) {
      struct tag *t = evs[i].data.ptr;
      uint32_t ev = evs[i].events;
      if (t->kind == TAG_WAKE) {
        uint64_t v;
        if (read(e->wake, &v, sizeof v) < 0) { /* nothing to do: it was a wake-up */
        }
      } else if (t->kind == TAG_LISTENER) {
        accept_all(e, t->ptr);
      } else {
        struct conn *c = t->ptr;
        if (c->dead) continue; /* freed earlier in this batch: its other socket's event */
        if (c->connecting) {
          connected(e, c, 0);
          continue;
        }
        if (ev & EPOLLERR) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(c->fd[t->side], SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {
            conn_free(e, c, 1);
            continue;
          }
        }
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->can_read[t->side] = 1;
        if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->can_write[t->side] = 1;
        pump(e, c);
      }
    }
    while (e->dead) {
      struct conn *c = e->dead;
      e->dead = c->next;
      free(c);
    }
    int signal = e->n_queue > queued && !e->signalled;
    if (signal) e->signalled = 1;
    pthread_mutex_unlock(&e->mu);
    if (signal) napi_call_threadsafe_function(e->tsfn, NULL, napi_tsfn_nonblocking);
  }
  return NULL;
}

/* ---- JavaScript ---------------------------------------------------------------- */

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char text[256];
  snprintf(text, sizeof text, "%s: %s", what, strerror(err));
  const char *name = NULL;
  switch (err) {
    case EADDRINUSE: name = "EADDRINUSE"; break;
    case EADDRNOTAVAIL: name = "EADDRNOTAVAIL"; break;
    case EACCES: name = "EACCES"; break;
    case EMFILE: name = "EMFILE"; break;
    default: break;
  }
  char code[32];
  if (name == NULL) snprintf(code, sizeof code, "E%d", err);
  napi_throw_error(env, name != NULL ? name : code, text);
  return NULL;
}

/* Hands the accepted sockets queued by the thread to the callback: [listener, fd, refused, peer, ...]. */
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  (void)data;
  struct engine *e = context;
  pthread_mutex_lock(&e->mu);
  e->signalled = 0;
  int n = e->n_queue;
  struct handoff *q = NULL;
  if (n > 0) {
    q = malloc((size_t)n * sizeof *q);
    if (q) memcpy(q, e->queue, (size_t)n * sizeof *q);
    else
      for (int i = 0; i < n; i++) reset_fd(e->queue[i].fd);
  }
  e->n_queue = 0;
  pthread_mutex_unlock(&e->mu);
  if (!q) return;
  if (env == NULL || cb == NULL) {
    for (int i = 0; i < n; i++) reset_fd(q[i].fd);
    free(q);
    return;
  }
  napi_value arr, undefined;
  napi_create_array_with_length(env, (size_t)n * 4, &arr);
  for (int i = 0; i < n; i++) {
    napi_value v[4];
    napi_create_int32(env, q[i].listener, &v[0]);
    napi_create_int32(env, q[i].fd, &v[1]);
    napi_get_boolean(env, q[i].refused, &v[2]);
    napi_create_string_utf8(env, q[i].peer, NAPI_AUTO_LENGTH, &v[3]);
    for (int k = 0; k < 4; k++) napi_set_element(env, arr, (uint32_t)(4 * i + k), v[k]);
  }
  free(q);
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, cb, 1, &arr, NULL);
}

static void engine_stop(struct engine *e) {
  if (!e->running) return;
  pthread_mutex_lock(&e->mu);
  e->stopping = 1;
  pthread_mutex_unlock(&e->mu);
  uint64_t one = 1;
  if (write(e->wake, &one, sizeof one) < 0) { /* the thread sees `stopping` at its next wake-up anyway */
  }
  pthread_join(e->thread, NULL);
  e->running = 0;
  while (e->conns) conn_free(e, e->conns, 1);
  while (e->dead) {
    struct conn *c = e->dead;
    e->dead = c->next;
    free(c);
  }
  for (int i = 0; i < e->n_listeners; i++) {
    if (e->listeners[i]->fd >= 0) close(e->listeners[i]->fd);
    e->listeners[i]->fd = -1;
  }
  for (int i = 0; i < e->n_queue; i++) reset_fd(e->queue[i].fd);
  e->n_queue = 0;
  for (int i = 0; i < e->n_free_pipes; i++) {
    close(e->free_pipes[i][0]);
    close(e->free_pipes[i][1]);
  }
  e->n_free_pipes = 0;
  close(e->ep);
  close(e->wake);
  napi_release_threadsafe_function(e->tsfn, napi_tsfn_abort);
}

static void engine_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct engine *e = data;
  engine_stop(e);
  for (int i = 0; i < e->n_listeners; i++) free(e->listeners[i]);
  free(e->listeners);
  free(e->queue);
  pthread_mutex_destroy(&e->mu);
  free(e);
}

static struct engine *get_engine(napi_env env, napi_value v) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "not a splice relay engine");
    return NULL;
  }
  struct engine *e = data;
  if (!e->running) {
    napi_throw_error(env, "ERR_CLOSED", "the splice relay engine is stopped");
    return NULL;
  }
  return e;
}

/* Parses host (an IPv4 or IPv6 literal) and port into `out`; 0, or -1 with a JS exception. */
static int get_address(napi_env env, napi_value host, napi_value port, struct sockaddr_storage *out,
                       socklen_t *len) {
  char text[64];
  size_t n = 0;
  int32_t p = 0;
  if (napi_get_value_string_utf8(env, host, text, sizeof text, &n) != napi_ok ||
      napi_get_value_int32(env, port, &p) != napi_ok || p < 0 || p > 65535) {
    napi_throw_type_error(env, NULL, "host must be an IP address and port a number from 0 to 65535");
    return -1;
  }
  memset(out, 0, sizeof *out);
  struct sockaddr_in *v4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)p);
    *len = sizeof *v4;
    return 0;
  }
  if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)p);
    *len = sizeof *v6;
    return 0;
  }
  napi_throw_type_error(env, NULL, "host must be an IPv4 or IPv6 address");
  return -1;
}

static struct listener *get_listener(napi_env env, struct engine *e, napi_value v) {
  int32_t id = -1;
  napi_get_value_int32(env, v, &id);
  if (id < 0 || id >= e->n_listeners) {
    napi_throw_range_error(env, NULL, "no such listener");
    return NULL;
  }
  return e->listeners[id];
}

#define ARGS(n)                                                              \
  size_t argc = n;                                                           \
  napi_value argv[n];                                                        \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) { \
    napi_throw_type_error(env, NULL, "wrong number of arguments");           \
    return NULL;                                                             \
  }

/* create(onAccepted: (pairs: number[]) => void): an engine, its thread running. */
static napi_value Create(napi_env env, napi_callback_info info) {
  ARGS(1)
  struct engine *e = calloc(1, sizeof *e);
  if (!e) return throw_errno(env, "splice relay", ENOMEM);
  pthread_mutex_init(&e->mu, NULL);
  e->ep = epoll_create1(EPOLL_CLOEXEC);
  e->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (e->ep < 0 || e->wake < 0) {
    int err = errno;
    if (e->ep >= 0) close(e->ep);
    if (e->wake >= 0) close(e->wake);
    free(e);
    return throw_errno(env, "splice relay: epoll", err);
  }
  e->wake_tag = (struct tag){TAG_WAKE, 0, e};
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &e->wake_tag};
  epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake, &ev);
  napi_value name;
  napi_create_string_utf8(env, "jitsu splice relay", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, e, call_js, &e->tsfn) !=
      napi_ok) {
    close(e->ep);
    close(e->wake);
    free(e);
    napi_throw_error(env, NULL, "splice relay: cannot create its callback");
    return NULL;
  }
  napi_unref_threadsafe_function(env, e->tsfn); /* the listeners do not keep the process alive */
  int err = pthread_create(&e->thread, NULL, run, e);
  if (err != 0) {
    napi_release_threadsafe_function(e->tsfn, napi_tsfn_abort);
    close(e->ep);
    close(e->wake);
    free(e);
    return throw_errno(env, "splice relay: thread", err);
  }
  e->running = 1;
  napi_value out;
  napi_create_external(env, e, engine_finalize, NULL, &out);
  return out;
}

/* listen(engine, host, port, backlog): a listener id; throws with code EADDRINUSE etc. */
static napi_value Listen(napi_env env, napi_callback_info info) {
  ARGS(4)
  struct engine *e = get_engine(env, argv[0]);
  if (!e) return NULL;
  struct sockaddr_storage addr;
  socklen_t len;
  if (get_address(env, argv[1], argv[2], &addr, &len) < 0) return NULL;
  int32_t backlog = 511;
  napi_get_value_int32(env, argv[3], &backlog);
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, backlog) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err == EADDRINUSE ? "address in use" : "listen", err);
  }
  struct listener *l = calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return throw_errno(env, "listen", ENOMEM);
  }
  pthread_mutex_lock(&e->mu);
  if (e->n_listeners == e->cap_listeners) {
    int cap = e->cap_listeners ? e->cap_listeners * 2 : 8;
    struct listener **ls = realloc(e->listeners, (size_t)cap * sizeof *ls);
    if (!ls) {
      pthread_mutex_unlock(&e->mu);
      close(fd);
      free(l);
      return throw_errno(env, "listen", ENOMEM);
    }
    e->listeners = ls;
    e->cap_listeners = cap;
  }
  l->id = e->n_listeners;
  l->fd = fd;
  l->tag = (struct tag){TAG_LISTENER, 0, l};
  e->listeners[e->n_listeners++] = l;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->tag};
  epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev);
  pthread_mutex_unlock(&e->mu);
  napi_value out;
  napi_create_int32(env, l->id, &out);
  return out;
}

/* port(engine, id): the port it listens on. */
static napi_value Port(napi_env env, napi_callback_info info) {
  ARGS(2)
  struct engine *e = get_engine(env, argv[0]);
  if (!e) return NULL;
  struct listener *l = get_listener(env, e, argv[1]);
  if (!l) return NULL;
  struct sockaddr_storage addr;
  socklen_t len = sizeof addr;
  int port = 0;
  if (l->fd >= 0 && getsockname(l->fd, (struct sockaddr *)&addr, &len) == 0)
    port = ntohs(addr.ss_family == AF_INET ? ((struct sockaddr_in *)&addr)->sin_port
                                           : ((struct sockaddr_in6 *)&addr)->sin6_port);
  napi_value out;
  napi_create_int32(env, port, &out);
  return out;
}

/* unlisten(engine, id): stops listening (its connections go on). */
static napi_value Unlisten(napi_env env, napi_callback_info info) {
  ARGS(2)
  struct engine *e = get_engine(env, argv[0]);
  if (!e) return NULL;
  struct listener *l = get_listener(env, e, argv[1]);
  if (!l) return NULL;
  pthread_mutex_lock(&e->mu);
  if (l->fd >= 0) {
    epoll_ctl(e->ep, EPOLL_CTL_DEL, l->fd, NULL);
    close(l->fd);
    l->fd = -1;
  }
  l->fast = 0;
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

/* enable(engine, id, host, port): relay its next connections to host:port here. */
static napi_value Enable(napi_env env, napi_callback_info info) {
  ARGS(4)
  struct engine *e = get_engine(env, argv[0]);
  if (!e) return NULL;
  struct listener *l = get_listener(env, e, argv[1]);
  if (!l) return NULL;
  struct sockaddr_storage addr;
  socklen_t len;
  if (get_address(env, argv[2], argv[3], &addr, &len) < 0) return NULL;
  pthread_mutex_lock(&e->mu);
  l->up = addr;
  l->up_len = len;
  l->fast = 1;
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

/*
 * disable(engine, id, seenAccepted): stops relaying its next connections here
 * (they go to JavaScript), but only if none is open and none was accepted
 * since JavaScript saw `seenAccepted` (-1: at once, whatever is open); true if
 * it is (now) not fast.
 */
static napi_value Disable(napi_env env, napi_callback_info info) {
  ARGS(3)
  struct engine *e = get_engine(env, argv[0]);
  if (!e) return NULL;
  struct listener *l = get_listener(env, e, argv[1]);
  if (!l) return NULL;
  double seen = -1;
  napi_get_value_double(env, argv[2], &seen);
  pthread_mutex_lock(&e->mu);
  if (seen < 0 || (l->open == 0 && l->accepted == seen)) l->fast = 0;
  int fast = l->fast;
  pthread_mutex_unlock(&e->mu);
  napi_value out;
  napi_get_boolean(env, !fast, &out);
  return out;
}

/*
 * relay(engine, id, fd): relays `fd` (a socket handed to JavaScript, not
 * wrapped by it) here, as if it had just been accepted while the listener
 * was fast; false (the fd untouched) if the listener is not fast.
 */
static napi_value Relay(napi_env env, napi_callback_info info) {
  ARGS(3)
  struct engine *e = get_engine(env, argv[0]);
  if (!e) return NULL;
  struct listener *l = get_listener(env, e, argv[1]);
  if (!l) return NULL;
  int32_t fd = -1;
  napi_get_value_int32(env, argv[2], &fd);
  pthread_mutex_lock(&e->mu);
  int fast = l->fast && fd >= 0;
  int queued = e->n_queue;
  if (fast) start_relay(e, l, fd);
  int signal = e->n_queue > queued && !e->signalled; /* refused at once: handed back */
  if (signal) e->signalled = 1;
  /* A relay that ended at once stays on `dead`: the thread frees it after its batch (it may hold an event for it). */
  pthread_mutex_unlock(&e->mu);
  if (signal) napi_call_threadsafe_function(e->tsfn, NULL, napi_tsfn_nonblocking);
  napi_value out;
  napi_get_boolean(env, fast, &out);
  return out;
}

/*
 * stats(engine, id): [fast, open, accepted, connected, toVm, fromVm, errors,
 * ms since the last accept, ms since the last close] of its relays here (-1:
 * none yet).
 */
static napi_value Stats(napi_env env, napi_callback_info info) {
  ARGS(2)
  struct engine *e = get_engine(env, argv[0]);
  if (!e) return NULL;
  struct listener *l = get_listener(env, e, argv[1]);
  if (!l) return NULL;
  double v[9];
  pthread_mutex_lock(&e->mu);
  double now = monotonic_ms();
  v[7] = l->last_accept > 0 ? now - l->last_accept : -1;
  v[8] = l->last_close > 0 ? now - l->last_close : -1;
  v[0] = l->fast;
  v[1] = l->open;
  v[2] = l->accepted;
  v[3] = l->connected;
  v[4] = l->to_vm;
  v[5] = l->from_vm;
  v[6] = l->errors;
  pthread_mutex_unlock(&e->mu);
  napi_value arr;
  napi_create_array_with_length(env, 9, &arr);
  for (uint32_t i = 0; i < 9; i++) {
    napi_value x;
    napi_create_double(env, v[i], &x);
    napi_set_element(env, arr, i, x);
  }
  return arr;
}

/* stop(engine): resets every relay here, closes every listener, ends the thread. */
static napi_value Stop(napi_env env, napi_callback_info info) {
  ARGS(1)
  void *data = NULL;
  if (napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) return NULL;
  engine_stop(data);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"create", NULL, Create, NULL, NULL, NULL, napi_default, NULL},
      {"listen", NULL, Listen, NULL, NULL, NULL, napi_default, NULL},
      {"port", NULL, Port, NULL, NULL, NULL, napi_default, NULL},
      {"unlisten", NULL, Unlisten, NULL, NULL, NULL, napi_default, NULL},
      {"enable", NULL, Enable, NULL, NULL, NULL, napi_default, NULL},
      {"disable", NULL, Disable, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, Stats, NULL, NULL, NULL, napi_default, NULL},
      {"relay", NULL, Relay, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, Stop, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
