/*
 * Batched UDP for jitsu's DNS sockets (src/dns/native-udp.ts): recvmmsg(2) and
 * sendmmsg(2), so a burst of queries costs one system call and one call into
 * JavaScript per batch instead of Node's dgram machinery per datagram (a send
 * wrap, a lookup, a 'message' event and an rinfo object each). The sockets are
 * plain non-blocking descriptors watched by a uv_poll_t on Node's own loop.
 *
 * Memory shared with JavaScript (init(), allocated there, never moved):
 *  - recv data: BATCH slots of SLOT bytes (a slot holds any UDP datagram);
 *  - recv meta: BATCH x 8 int32: length, port, family (4/6), IPv6 scope id, then
 *    the address (IPv4: one int32 in host order; IPv6: its 16 bytes as they are);
 *  - recv text: BATCH x 64 bytes: an IPv6 address as text (length, then bytes);
 *  - send data: the datagrams to send, one after the other;
 *  - send meta: per datagram the same 8 int32 as recv meta (the length first).
 * JavaScript reads a batch inside the callback and copies what it keeps, so one
 * area serves every socket. Errors are thrown with the errno name as `code`
 * (EADDRINUSE, ...) and `syscall`, as Node's own socket errors are.
 */
#define NAPI_VERSION 8
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define SLOT 65536
#define META 8
#define TEXT 64
/* recvmmsg rounds per readiness event: a flood cannot starve timers and other sockets. */
#define ROUNDS 4

static uint8_t *recv_data;
static int32_t *recv_meta;
static uint8_t *recv_text;
static uint8_t *send_data;
static size_t send_data_len;
static int32_t *send_meta;
static size_t send_meta_len;
static napi_ref areas[5];

static struct mmsghdr rmsgs[BATCH];
static struct iovec riov[BATCH];
static struct sockaddr_storage raddr[BATCH];

typedef struct {
  uv_poll_t poll;
  int fd;
  int closed;
  napi_env env;
  napi_ref callback;
  napi_async_context ctx;
} sock_t;

static napi_value throw_errno(napi_env env, const char *syscall, int err, const char *where) {
  const char *name = uv_err_name(-err);
  char text[512];
  if (where != NULL && where[0] != '\0')
    snprintf(text, sizeof text, "%s %s %s (%s)", syscall, name, where, strerror(err));
  else
    snprintf(text, sizeof text, "%s %s (%s)", syscall, name, strerror(err));
  napi_value msg, code, error, sys, num;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  napi_create_int32(env, -err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_throw(env, error);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "udp_io: too few arguments");
    return 0;
  }
  return 1;
}

static int32_t int_arg(napi_env env, napi_value v) {
  int32_t out = 0;
  napi_get_value_int32(env, v, &out);
  return out;
}

static int arraybuffer(napi_env env, napi_value v, void **data, size_t *len) {
  if (napi_get_arraybuffer_info(env, v, data, len) != napi_ok) {
    napi_throw_type_error(env, NULL, "udp_io: init() takes ArrayBuffers");
    return 0;
  }
  return 1;
}

/* init(recvData, recvMeta, recvText, sendData, sendMeta): the shared areas (sizes checked). */
static napi_value Init(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  void *p[5];
  size_t len[5];
  for (int i = 0; i < 5; i++)
    if (!arraybuffer(env, argv[i], &p[i], &len[i])) return NULL;
  if (len[0] < (size_t)BATCH * SLOT || len[1] < BATCH * META * 4 || len[2] < BATCH * TEXT ||
      len[3] < SLOT || len[4] < BATCH * META * 4) {
    napi_throw_range_error(env, NULL, "udp_io: init() areas too small");
    return NULL;
  }
  for (int i = 0; i < 5; i++) {
    if (areas[i] != NULL) napi_delete_reference(env, areas[i]);
    napi_create_reference(env, argv[i], 1, &areas[i]);
  }
  recv_data = p[0];
  recv_meta = p[1];
  recv_text = p[2];
  send_data = p[3];
  send_data_len = len[3];
  send_meta = p[4];
  send_meta_len = len[4] / (META * 4);
  for (int i = 0; i < BATCH; i++) {
    riov[i].iov_base = recv_data + (size_t)i * SLOT;
    riov[i].iov_len = SLOT;
  }
  napi_value out;
  napi_create_int32(env, BATCH, &out);
  return out;
}

/* Fills `sa` from (family, address text with optional %scope, port); 0 or an errno. */
static int parse_address(int family, const char *text, int port, struct sockaddr_storage *sa, socklen_t *len) {
  memset(sa, 0, sizeof *sa);
  if (family == 4) {
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, text, &in->sin_addr) != 1) return EINVAL;
    *len = sizeof *in;
    return 0;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons((uint16_t)port);
  char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  snprintf(host, sizeof host, "%s", text);
  char *pct = strchr(host, '%');
  if (pct != NULL) {
    *pct++ = '\0';
    char *end = NULL;
    unsigned long n = strtoul(pct, &end, 10);
    in6->sin6_scope_id = (end != pct && *end == '\0') ? (uint32_t)n : if_nametoindex(pct);
    if (in6->sin6_scope_id == 0) return ENXIO;
  }
  if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) return EINVAL;
  *len = sizeof *in6;
  return 0;
}

static int nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return errno;
  if (fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno;
  return 0;
}

/*
 * open(family, address, port, receiveBuffer, connectTo?, connectPort?): a new
 * non-blocking UDP socket bound to address:port (a wildcard and port 0 for an
 * upstream socket), connected when connectTo is given. Returns the descriptor.
 */
static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "open(family, address, port, receiveBuffer[, peer, peerPort])");
    return NULL;
  }
  int family = int_arg(env, argv[0]);
  char address[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  size_t alen = 0;
  if (napi_get_value_string_utf8(env, argv[1], address, sizeof address, &alen) != napi_ok) {
    napi_throw_type_error(env, NULL, "address must be a string");
    return NULL;
  }
  int port = int_arg(env, argv[2]);
  int rcvbuf = int_arg(env, argv[3]);
  char where[sizeof address + 8];
  snprintf(where, sizeof where, "%s:%d", address, port);
  struct sockaddr_storage sa;
  socklen_t salen = 0;
  int err = parse_address(family, address, port, &sa, &salen);
  if (err != 0) return throw_errno(env, "bind", err, where);
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno, NULL);
  if (rcvbuf > 0) (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
    err = errno;
    close(fd);
    return throw_errno(env, "bind", err, where);
  }
  if (argc >= 6) {
    char peer[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    if (napi_get_value_string_utf8(env, argv[4], peer, sizeof peer, &alen) != napi_ok) {
      close(fd);
      napi_throw_type_error(env, NULL, "peer must be a string");
      return NULL;
    }
    int peer_port = int_arg(env, argv[5]);
    snprintf(where, sizeof where, "%s:%d", peer, peer_port);
    err = parse_address(family, peer, peer_port, &sa, &salen);
    if (err == 0 && connect(fd, (struct sockaddr *)&sa, salen) < 0) err = errno;
    if (err != 0) {
      close(fd);
      return throw_errno(env, "connect", err, where);
    }
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

/* adopt(fd, receiveBuffer): a UDP socket passed by systemd made non-blocking; returns [family, port, address]. */
static napi_value Adopt(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int fd = int_arg(env, argv[0]);
  int rcvbuf = int_arg(env, argv[1]);
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) return throw_errno(env, "getsockname", errno, NULL);
  int err = nonblocking(fd);
  if (err != 0) return throw_errno(env, "fcntl", err, NULL);
  if (rcvbuf > 0) (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  napi_value out, fam, port, text;
  napi_create_array_with_length(env, 3, &out);
  int is4 = sa.ss_family == AF_INET;
  char buf[INET6_ADDRSTRLEN];
  if (inet_ntop(sa.ss_family, is4 ? (void *)&((struct sockaddr_in *)&sa)->sin_addr
                                  : (void *)&((struct sockaddr_in6 *)&sa)->sin6_addr,
                buf, sizeof buf) == NULL)
    buf[0] = '\0';
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &text);
  napi_create_int32(env, is4 ? 4 : 6, &fam);
  napi_create_int32(
      env, ntohs(is4 ? ((struct sockaddr_in *)&sa)->sin_port : ((struct sockaddr_in6 *)&sa)->sin6_port), &port);
  napi_set_element(env, out, 0, fam);
  napi_set_element(env, out, 1, port);
  napi_set_element(env, out, 2, text);
  return out;
}

/* localPort(fd): the port the socket is bound to. */
static napi_value LocalPort(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  if (getsockname(int_arg(env, argv[0]), (struct sockaddr *)&sa, &len) < 0)
    return throw_errno(env, "getsockname", errno, NULL);
  napi_value out;
  napi_create_int32(
      env,
      ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *)&sa)->sin_port
                                    : ((struct sockaddr_in6 *)&sa)->sin6_port),
      &out);
  return out;
}

static void fill_meta(int i) {
  int32_t *m = recv_meta + i * META;
  m[0] = (int32_t)rmsgs[i].msg_len;
  uint8_t *text = recv_text + i * TEXT;
  text[0] = 0;
  if (raddr[i].ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&raddr[i];
    m[1] = ntohs(in->sin_port);
    m[2] = 4;
    m[3] = 0;
    m[4] = (int32_t)ntohl(in->sin_addr.s_addr);
    return;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&raddr[i];
  m[1] = ntohs(in6->sin6_port);
  m[2] = 6;
  m[3] = (int32_t)in6->sin6_scope_id;
  memcpy(m + 4, &in6->sin6_addr, 16);
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  if (inet_ntop(AF_INET6, &in6->sin6_addr, buf, INET6_ADDRSTRLEN) == NULL) return;
  size_t n = strlen(buf);
  char ifname[IF_NAMESIZE];
  if (in6->sin6_scope_id != 0) {
    if (if_indextoname(in6->sin6_scope_id, ifname) != NULL)
      snprintf(buf + n, sizeof buf - n, "%%%s", ifname);
    else
      snprintf(buf + n, sizeof buf - n, "%%%u", in6->sin6_scope_id);
    n = strlen(buf);
  }
  if (n > TEXT - 1) n = TEXT - 1;
  text[0] = (uint8_t)n;
  memcpy(text + 1, buf, n);
}

static void call_back(sock_t *s, int32_t value) {
  napi_env env = s->env;
  napi_value cb, arg, global, result;
  if (napi_get_reference_value(env, s->callback, &cb) != napi_ok || cb == NULL) return;
  napi_get_global(env, &global);
  napi_create_int32(env, value, &arg);
  if (napi_make_callback(env, s->ctx, global, cb, 1, &arg, &result) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  sock_t *s = handle->data;
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  if (status < 0) {
    /*
     * libuv reports POLLERR as UV_EBADF and stops watching. On a connected
     * socket it is the pending ICMP error (ECONNREFUSED: the upstream's port is
     * closed): pass that on instead.
     */
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0) err = -status;
    call_back(s, -err);
  } else {
    for (int round = 0; round < ROUNDS && !s->closed; round++) {
      for (int i = 0; i < BATCH; i++) {
        rmsgs[i].msg_hdr.msg_name = &raddr[i];
        rmsgs[i].msg_hdr.msg_namelen = sizeof raddr[i];
        rmsgs[i].msg_hdr.msg_iov = &riov[i];
        rmsgs[i].msg_hdr.msg_iovlen = 1;
        rmsgs[i].msg_hdr.msg_control = NULL;
        rmsgs[i].msg_hdr.msg_controllen = 0;
        rmsgs[i].msg_hdr.msg_flags = 0;
      }
      int n = recvmmsg(s->fd, rmsgs, BATCH, MSG_DONTWAIT, NULL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) call_back(s, -errno);
        break;
      }
      if (n == 0) break;
      for (int i = 0; i < n; i++) fill_meta(i);
      call_back(s, n);
      if (n < BATCH) break;
    }
  }
  napi_close_handle_scope(s->env, scope);
}

static sock_t *get_sock(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "udp_io: not a socket handle");
    return NULL;
  }
  return p;
}

static void on_closed(uv_handle_t *handle);

/* start(fd, callback(countOrMinusErrno)): watches the socket; returns its handle. */
static napi_value Start(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  uv_loop_t *loop = NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
  sock_t *s = calloc(1, sizeof *s);
  if (s == NULL) return throw_errno(env, "calloc", ENOMEM, NULL);
  s->fd = int_arg(env, argv[0]);
  s->env = env;
  int rc = uv_poll_init_socket(loop, &s->poll, s->fd);
  if (rc != 0) {
    free(s);
    return throw_errno(env, "uv_poll_init", -rc, NULL);
  }
  s->poll.data = s;
  napi_create_reference(env, argv[1], 1, &s->callback);
  napi_value name;
  napi_create_string_utf8(env, "jitsu:udp", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &s->ctx);
  rc = uv_poll_start(&s->poll, UV_READABLE, on_readable);
  if (rc != 0) {
    s->closed = 1;
    s->fd = -1; /* the caller still owns the descriptor */
    uv_close((uv_handle_t *)&s->poll, on_closed);
    return throw_errno(env, "uv_poll_start", -rc, NULL);
  }
  napi_value out;
  napi_create_external(env, s, NULL, NULL, &out);
  return out;
}

/* ref(handle, keepAlive): whether the socket keeps the process alive. */
static napi_value Ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  if (s == NULL || s->closed) return NULL;
  bool keep = false;
  napi_get_value_bool(env, argv[1], &keep);
  if (keep) uv_ref((uv_handle_t *)&s->poll);
  else uv_unref((uv_handle_t *)&s->poll);
  return NULL;
}

/* After uv_close: never inside this socket's own callback, so its async context can go. */
static void on_closed(uv_handle_t *handle) {
  sock_t *s = handle->data;
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  napi_delete_reference(s->env, s->callback);
  napi_async_destroy(s->env, s->ctx);
  napi_close_handle_scope(s->env, scope);
  if (s->fd >= 0) close(s->fd);
  free(s);
}

/* close(handle): stops watching and closes the descriptor (once). */
static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  if (s == NULL || s->closed) return NULL;
  s->closed = 1;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_closed);
  return NULL;
}

/* closeFd(fd): a descriptor never started (a failed set-up). */
static napi_value CloseFd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  close(int_arg(env, argv[0]));
  return NULL;
}

static struct mmsghdr smsgs[BATCH];
static struct iovec siov[BATCH];
static struct sockaddr_storage saddr[BATCH];

/*
 * sendBatch(fd, count): sends the `count` datagrams of the send area, each to
 * its address, with sendmmsg(2), never blocking. Returns how many could not be
 * sent: with the socket's buffer full (EAGAIN) the rest is dropped, as the
 * kernel would drop them further on; a datagram the kernel refuses (no route)
 * is skipped. Throws on a bad descriptor.
 */
static napi_value SendBatch(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int fd = int_arg(env, argv[0]);
  int count = int_arg(env, argv[1]);
  if (count < 0 || count > BATCH || (size_t)count > send_meta_len) {
    napi_throw_range_error(env, NULL, "sendBatch: count out of range");
    return NULL;
  }
  size_t off = 0;
  for (int i = 0; i < count; i++) {
    int32_t *m = send_meta + i * META;
    size_t len = (size_t)(uint32_t)m[0];
    if (off + len > send_data_len) {
      napi_throw_range_error(env, NULL, "sendBatch: lengths past the send area");
      return NULL;
    }
    siov[i].iov_base = send_data + off;
    siov[i].iov_len = len;
    off += len;
    memset(&saddr[i], 0, sizeof saddr[i]);
    socklen_t salen;
    if (m[2] == 4) {
      struct sockaddr_in *in = (struct sockaddr_in *)&saddr[i];
      in->sin_family = AF_INET;
      in->sin_port = htons((uint16_t)m[1]);
      in->sin_addr.s_addr = htonl((uint32_t)m[4]);
      salen = sizeof *in;
    } else {
      struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&saddr[i];
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons((uint16_t)m[1]);
      in6->sin6_scope_id = (uint32_t)m[3];
      memcpy(&in6->sin6_addr, m + 4, 16);
      salen = sizeof *in6;
    }
    memset(&smsgs[i].msg_hdr, 0, sizeof smsgs[i].msg_hdr);
    smsgs[i].msg_hdr.msg_name = &saddr[i];
    smsgs[i].msg_hdr.msg_namelen = salen;
    smsgs[i].msg_hdr.msg_iov = &siov[i];
    smsgs[i].msg_hdr.msg_iovlen = 1;
  }
  int sent = 0, failed = 0;
  while (sent + failed < count) {
    int n = sendmmsg(fd, smsgs + sent + failed, (unsigned)(count - sent - failed), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EBADF) return throw_errno(env, "sendmmsg", errno, NULL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
      failed = count - sent;
      break;
    }
    failed++; /* this one datagram is refused: skip it */
  }
  napi_value out;
  napi_create_int32(env, failed, &out);
  return out;
}

/* send(fd, buffer): one datagram on a connected socket; 0, or the errno it failed with. */
static napi_value Send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int fd = int_arg(env, argv[0]);
  void *data = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "send: a Buffer");
    return NULL;
  }
  ssize_t n;
  do n = send(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  napi_value out;
  napi_create_int32(env, n < 0 ? errno : 0, &out);
  return out;
}

/* errnoName(errno): "ECONNREFUSED", ... (for errors passed to a callback as -errno). */
static napi_value ErrnoName(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int err = int_arg(env, argv[0]);
  napi_value out;
  napi_create_string_utf8(env, uv_err_name(err > 0 ? -err : err), NAPI_AUTO_LENGTH, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"init", NULL, Init, NULL, NULL, NULL, napi_default, NULL},
      {"open", NULL, Open, NULL, NULL, NULL, napi_default, NULL},
      {"adopt", NULL, Adopt, NULL, NULL, NULL, napi_default, NULL},
      {"localPort", NULL, LocalPort, NULL, NULL, NULL, napi_default, NULL},
      {"start", NULL, Start, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, Ref, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
      {"closeFd", NULL, CloseFd, NULL, NULL, NULL, napi_default, NULL},
      {"sendBatch", NULL, SendBatch, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, Send, NULL, NULL, NULL, napi_default, NULL},
      {"errnoName", NULL, ErrnoName, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
