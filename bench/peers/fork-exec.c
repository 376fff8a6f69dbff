/*
 * The summon rows' peer: the least a server can do to answer a query for a
 * cold "VM" whose command it must start. For each DNS query on its UDP port
 * it fork()s, the child execvp()s the command in a session of its own
 * (setsid, as jitsu's process backend runs a VM), and once the exec has
 * succeeded (a close-on-exec pipe reaches EOF) it answers the query with an A
 * record, 127.0.0.1, exactly as jitsu answers a cold name once its VM runs.
 * The started commands are left running: the bench kills them by process
 * group (their pids are printed, one a line, on standard output).
 *
 *   fork-exec COMMAND [ARG...]    prints "ready PORT" (a free 127.0.0.1 port)
 *
 * No parsing beyond the header: the question is echoed back as sent.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: fork-exec COMMAND [ARG...]\n");
    return 2;
  }
  /* Children are reaped by the kernel: no zombies, no SIGCHLD handler. */
  signal(SIGCHLD, SIG_IGN);
  int sock = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (sock < 0 || bind(sock, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      getsockname(sock, (struct sockaddr *)&addr, &len) != 0) {
    perror("fork-exec: socket");
    return 1;
  }
  printf("ready %d\n", ntohs(addr.sin_port));
  fflush(stdout);
  unsigned char buf[512 + 16];
  for (;;) {
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(sock, buf, 512, 0, (struct sockaddr *)&from, &flen);
    if (n < 12) continue;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) continue;
    pid_t pid = fork();
    if (pid == 0) {
      setsid();
      execvp(argv[1], argv + 1);
      int e = errno;
      (void)!write(p[1], &e, sizeof e);
      _exit(127);
    }
    close(p[1]);
    int err = 0;
    ssize_t got = pid < 0 ? -1 : read(p[0], &err, sizeof err);
    close(p[0]);
    if (got != 0) continue; /* no answer: the fork or the exec failed */
    printf("%d\n", pid);
    fflush(stdout);
    /* The query with QR and AA set, one answer: name pointer to the question, A, IN, TTL 60, 127.0.0.1. */
    static const unsigned char answer[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1};
    buf[2] = (unsigned char)((buf[2] & 0x01) | 0x84);
    buf[3] = 0x00;
    buf[6] = 0;
    buf[7] = 1;
    buf[8] = buf[9] = buf[10] = buf[11] = 0;
    memcpy(buf + n, answer, sizeof answer);
    sendto(sock, buf, (size_t)n + sizeof answer, 0, (struct sockaddr *)&from, flen);
  }
}
