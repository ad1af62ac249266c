/*
 * udpbench: the load side of `npm run bench`, in C so that the generator is never the bottleneck
 * of a Node.js relay under test (measured here: a C generator with recvmmsg/sendmmsg reaches
 * ~220k round trips/s direct on this machine, ~10x a Node relay).
 *
 *   udpbench echo IP PORT
 *       Echo server. A STUN Binding Request (type 0x0001) is answered with the same bytes as a
 *       Binding success (type 0x0101, same transaction id): enough for a relay that routes on the
 *       response type, as ice-ingress does (it cannot verify MESSAGE-INTEGRITY anyway). Anything
 *       else is echoed verbatim.
 *   udpbench load IP PORT SESSIONS SIZE SECONDS WINDOW [SETTLE_MS]
 *       SESSIONS sockets (distinct source ports on 127.0.0.1); each first sends a Binding Request
 *       with USERNAME "bNNNNNNN:cli" and a MESSAGE-INTEGRITY attribute (zeros: only its presence
 *       is checked by the relay), then keeps WINDOW datagrams of SIZE bytes in flight for SECONDS.
 *       Prints one JSON line: round trips, rate, RTT percentiles (µs), lost/re-primed windows.
 *       SETTLE_MS (default 0): a pause between the handshake and the load (a kernel fast path
 *       takes the sessions over meanwhile).
 *   udpbench sink IP PORT
 *       Answers Binding Requests like `echo`, drops everything else (the far end of a one-way run).
 *   udpbench blast IP PORT SESSIONS SIZE SECONDS
 *       The same handshake as `load`, then sends SIZE-byte datagrams round-robin over the sessions
 *       as fast as sendmmsg allows for SECONDS (one-way). Prints {"sent":N,"seconds":S}.
 *
 * Only ever talks to the address it is given (127.0.0.1 for `npm run bench`; addresses inside the
 * bench's own network namespaces for `npm run bench:fastpath`). Bounded in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAXSIZE 2048

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int udp_socket(const char *ip, int port, int bind_it) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (fd < 0) { perror("socket"); exit(1); }
  int buf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  if (bind_it) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
  }
  return fd;
}

static int run_echo(const char *ip, int port, int sink) {
  int fd = udp_socket(ip, port, 1);
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  static char bufs[BATCH][MAXSIZE];
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_in addrs[BATCH];
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = MAXSIZE;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &addrs[i];
      msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
    }
    int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
    if (n <= 0) continue;
    int keep = 0;
    for (int i = 0; i < n; i++) {
      iov[i].iov_len = msgs[i].msg_len;
      int stun = msgs[i].msg_len >= 20 && bufs[i][0] == 0x00 && bufs[i][1] == 0x01;
      if (stun) bufs[i][0] = 0x01;
      if (sink && !stun) continue;
      if (keep != i) {
        /* Compact the answers to send (sink mode sends only the Binding successes). */
        memcpy(bufs[keep], bufs[i], msgs[i].msg_len);
        iov[keep].iov_len = msgs[i].msg_len;
        addrs[keep] = addrs[i];
        msgs[keep].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen;
      }
      keep++;
    }
    int sent = 0;
    while (sent < keep) {
      int m = sendmmsg(fd, msgs + sent, keep - sent, 0);
      if (m <= 0) break;
      sent += m;
    }
  }
  return 0;
}

static size_t binding_request(unsigned char *b, int session) {
  /* RFC 8489 header + USERNAME + MESSAGE-INTEGRITY (20 zero bytes). */
  char user[32];
  int ulen = snprintf(user, sizeof user, "b%07d:cli", session);
  size_t upad = (ulen + 3) & ~3;
  size_t len = 20 + 4 + upad + 4 + 20;
  memset(b, 0, len);
  b[0] = 0x00; b[1] = 0x01;
  b[2] = (len - 20) >> 8; b[3] = (len - 20) & 0xff;
  b[4] = 0x21; b[5] = 0x12; b[6] = 0xa4; b[7] = 0x42;
  for (int i = 8; i < 20; i++) b[i] = (unsigned char)(rand() & 0xff);
  b[20] = 0x00; b[21] = 0x06; b[22] = 0; b[23] = ulen;
  memcpy(b + 24, user, ulen);
  size_t mi = 24 + upad;
  b[mi] = 0x00; b[mi + 1] = 0x08; b[mi + 2] = 0; b[mi + 3] = 20;
  return len;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int run_load(const char *ip, int port, int sessions, int size, double seconds, int window, int blast,
                    int settle_ms) {
  if (size < 16) size = 16;
  if (size > MAXSIZE) size = MAXSIZE;
  struct sockaddr_in to = {0};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, ip, &to.sin_addr);
  int *fds = calloc(sessions, sizeof(int));
  uint64_t *last_rx = calloc(sessions, sizeof(uint64_t));
  int ep = epoll_create1(0);
  unsigned char pkt[MAXSIZE];
  /* Handshake: every session's first datagram is a Binding Request; wait for its answer. */
  for (int s = 0; s < sessions; s++) {
    fds[s] = udp_socket("0.0.0.0", 0, 1);
    if (connect(fds[s], (struct sockaddr *)&to, sizeof to) < 0) { perror("connect"); return 1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)s};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[s], &ev);
  }
  int established = 0;
  char *done = calloc(sessions, 1);
  for (int attempt = 0; attempt < 20 && established < sessions; attempt++) {
    for (int s = 0; s < sessions; s++) {
      if (done[s]) continue;
      size_t len = binding_request(pkt, s);
      send(fds[s], pkt, len, 0);
    }
    uint64_t until = now_ns() + 100000000ull;
    struct epoll_event evs[256];
    while (now_ns() < until && established < sessions) {
      int n = epoll_wait(ep, evs, 256, 20);
      for (int i = 0; i < n; i++) {
        int s = (int)evs[i].data.u32;
        while (recv(fds[s], pkt, sizeof pkt, 0) > 0) {
          if (!done[s] && pkt[0] == 0x01 && pkt[1] == 0x01) { done[s] = 1; established++; }
        }
      }
    }
  }
  if (established < sessions) {
    printf("{\"error\":\"only %d of %d sessions answered the handshake\"}\n", established, sessions);
    return 1;
  }
  if (settle_ms > 0) {
    struct timespec ts = {.tv_sec = settle_ms / 1000, .tv_nsec = (long)(settle_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (blast) {
    /* One-way: sendmmsg batches round-robin over the connected sockets, nothing awaited. */
    memset(pkt, 0x80, sizeof pkt);
    struct mmsghdr msgs[BATCH];
    struct iovec iov = {.iov_base = pkt, .iov_len = (size_t)size};
    for (int i = 0; i < BATCH; i++) {
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov;
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t sent = 0, t0 = now_ns(), stop = t0 + (uint64_t)(seconds * 1e9);
    int s = 0;
    while (now_ns() < stop) {
      int m = sendmmsg(fds[s], msgs, BATCH, 0);
      if (m > 0) sent += (uint64_t)m;
      s = (s + 1) % sessions;
    }
    printf("{\"sent\":%llu,\"seconds\":%.3f}\n", (unsigned long long)sent, (now_ns() - t0) / 1e9);
    return 0;
  }
  /* Load: keep at most WINDOW datagrams in flight per session; payload carries the send time.
     A receipt frees one slot; a session silent for 100 ms is taken to have lost its window
     and is re-primed. In-flight never exceeds WINDOW, so late arrivals cannot grow the load. */
  size_t cap = 1 << 22;
  uint32_t *rtts = malloc(cap * sizeof(uint32_t));
  int *inflight = calloc(sessions, sizeof(int));
  size_t nrtt = 0;
  uint64_t count = 0, reprimed = 0;
  memset(pkt, 0x80, sizeof pkt); /* RTP-looking first byte (RFC 7983) */
  uint64_t start = now_ns();
  uint64_t end = start + (uint64_t)(seconds * 1e9);
  for (int s = 0; s < sessions; s++) {
    while (inflight[s] < window) {
      uint64_t t = now_ns();
      memcpy(pkt + 8, &t, 8);
      send(fds[s], pkt, size, 0);
      inflight[s]++;
    }
    last_rx[s] = start;
  }
  struct epoll_event evs[256];
  uint64_t next_check = start + 20000000ull;
  while (1) {
    uint64_t t = now_ns();
    if (t >= end) break;
    int n = epoll_wait(ep, evs, 256, 10);
    for (int i = 0; i < n; i++) {
      int s = (int)evs[i].data.u32;
      unsigned char in[MAXSIZE];
      ssize_t r;
      while ((r = recv(fds[s], in, sizeof in, 0)) > 0) {
        uint64_t now = now_ns();
        uint64_t sent;
        memcpy(&sent, in + 8, 8);
        if (nrtt < cap) rtts[nrtt++] = (uint32_t)((now - sent) / 1000);
        count++;
        last_rx[s] = now;
        if (inflight[s] > 0) inflight[s]--;
        while (inflight[s] < window) {
          memcpy(pkt + 8, &now, 8);
          send(fds[s], pkt, size, 0);
          inflight[s]++;
        }
      }
    }
    t = now_ns();
    if (t >= next_check) {
      for (int s = 0; s < sessions; s++) {
        if (t > last_rx[s] && t - last_rx[s] > 100000000ull) {
          inflight[s] = 0;
          while (inflight[s] < window) {
            memcpy(pkt + 8, &t, 8);
            send(fds[s], pkt, size, 0);
            inflight[s]++;
          }
          last_rx[s] = t;
          reprimed++;
        }
      }
      next_check = t + 20000000ull;
    }
  }
  double elapsed = (now_ns() - start) / 1e9;
  qsort(rtts, nrtt, sizeof(uint32_t), cmp_u32);
  uint32_t p50 = nrtt ? rtts[nrtt / 2] : 0, p99 = nrtt ? rtts[(size_t)(nrtt * 0.99)] : 0;
  printf("{\"roundTrips\":%llu,\"seconds\":%.3f,\"roundTripsPerSec\":%.0f,\"p50us\":%u,\"p99us\":%u,\"reprimed\":%llu}\n",
         (unsigned long long)count, elapsed, count / elapsed, p50, p99, (unsigned long long)reprimed);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "echo") == 0) return run_echo(argv[2], atoi(argv[3]), 0);
  if (argc >= 4 && strcmp(argv[1], "sink") == 0) return run_echo(argv[2], atoi(argv[3]), 1);
  if (argc >= 8 && strcmp(argv[1], "load") == 0) {
    double secs = atof(argv[6]);
    if (secs <= 0 || secs > 60) secs = 3;
    int settle = argc >= 9 ? atoi(argv[8]) : 0;
    if (settle < 0 || settle > 10000) settle = 0;
    return run_load(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), secs, atoi(argv[7]), 0, settle);
  }
  if (argc >= 7 && strcmp(argv[1], "blast") == 0) {
    double secs = atof(argv[6]);
    if (secs <= 0 || secs > 60) secs = 3;
    return run_load(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), secs, 1, 1, 500);
  }
  fprintf(stderr, "usage: udpbench echo|sink IP PORT | udpbench load IP PORT SESSIONS SIZE SECONDS WINDOW |"
                  " udpbench blast IP PORT SESSIONS SIZE SECONDS\n");
  return 2;
}
