/*
 * jitsu's sd_notify(3): one datagram to the unix socket named by $NOTIFY_SOCKET
 * (a path, or "@name" for the abstract namespace). Node's dgram has no unix
 * datagrams, and sd_notify needs them. The message is sent from this process, so the
 * unit can keep NotifyAccess=main; the kernel attaches our credentials
 * (systemd's socket has SO_PASSCRED). Never blocks: with systemd's queue full
 * (a unix datagram socket queues few), the message is dropped with EAGAIN
 * rather than stalling jitsu's event loop. See src/systemd/README.md.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char text[256];
  snprintf(text, sizeof text, "%s: %s", what, strerror(err));
  char code[32];
  snprintf(code, sizeof code, "E%d", err);
  napi_throw_error(env, code, text);
  return NULL;
}

/* send(socketPath: string, message: string): the bytes sent. */
static napi_value Send(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2) {
    napi_throw_type_error(env, NULL, "send(socketPath, message)");
    return NULL;
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t path_len = 0;
  if (napi_get_value_string_utf8(env, argv[0], addr.sun_path, sizeof addr.sun_path, &path_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "socketPath must be a string");
    return NULL;
  }
  if (path_len < 2 || path_len >= sizeof addr.sun_path - 1) {
    napi_throw_range_error(env, NULL, "NOTIFY_SOCKET is empty or too long for a unix socket address");
    return NULL;
  }
  if (addr.sun_path[0] != '/' && addr.sun_path[0] != '@') {
    napi_throw_range_error(env, NULL, "NOTIFY_SOCKET must be an absolute path or start with @");
    return NULL;
  }
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0'; /* abstract namespace: no trailing NUL */
  else addr_len += 1;

  char message[4096];
  size_t message_len = 0;
  if (napi_get_value_string_utf8(env, argv[1], message, sizeof message, &message_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "message must be a string");
    return NULL;
  }
  if (message_len >= sizeof message - 1) {
    napi_throw_range_error(env, NULL, "message longer than 4094 bytes");
    return NULL;
  }

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", errno);
  ssize_t sent;
  do {
    sent = sendto(fd, message, message_len, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&addr, addr_len);
  } while (sent < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (sent < 0) return throw_errno(env, "sendto(NOTIFY_SOCKET)", err);
  napi_value result;
  napi_create_int64(env, (int64_t)sent, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "send", NAPI_AUTO_LENGTH, Send, NULL, &fn);
  napi_set_named_property(env, exports, "send", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
